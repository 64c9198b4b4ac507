#!/usr/bin/env bash
# Build rch in release mode, install it into $PREFIX/bin (default ~/.local/bin)
# with its manual pages in $PREFIX/share/man/man1, and create a starter config
# unless one exists. Safe to run again.
# --deps first installs the system packages rch and its tests use (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")"

if [ "${1-}" = "--deps" ]; then
    scripts/deps.sh
fi

prefix="${PREFIX:-$HOME/.local}"
bin_dir="$prefix/bin"

if ! command -v cargo >/dev/null; then
    echo "install.sh: cargo not found; install a Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

cargo install --path . --locked --force --root "$prefix"

man_dir="$prefix/share/man/man1"
"$bin_dir/rch" man --dir "$man_dir"
echo "install.sh: manual pages in $man_dir (man rch)"

config_file="${RCH_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/rch/config.toml}"
if [ -e "$config_file" ]; then
    echo "install.sh: keeping your config $config_file"
else
    "$bin_dir/rch" config init
fi

for tool in ssh rsync; do
    if ! command -v "$tool" >/dev/null; then
        echo "install.sh: rch needs $tool on this machine (e.g. sudo apt-get install openssh-client rsync)"
    fi
done

case ":$PATH:" in
    *":$bin_dir:"*) echo "install.sh: rch installed as $bin_dir/rch" ;;
    *)
        echo "install.sh: rch installed as $bin_dir/rch, which is not on your PATH."
        echo "  Add this line to your shell profile (~/.bashrc, ~/.zshrc, ...):"
        echo "    export PATH=\"$bin_dir:\$PATH\""
        ;;
esac

# Optional: plain `cargo build`, `make`, ... through rch without typing `rch exec`.
shell_name="$(basename "${SHELL:-bash}")"
case "$shell_name" in
    bash | zsh) rc_line="eval \"\$(rch shell-init $shell_name)\"" ;;
    fish) rc_line="rch shell-init fish | source" ;;
    *) rc_line="" ;;
esac
if [ -n "$rc_line" ]; then
    echo "install.sh: to send plain build commands through rch, run once:"
    echo "    rch wrap install"
    echo "  and add to your $shell_name start-up file:"
    echo "    $rc_line"
fi
