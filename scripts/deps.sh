#!/usr/bin/env bash
# Install the system packages rch and its test suite use, with apt, when they
# are missing: ssh, rsync and sshd (the tests start real sshd workers on
# 127.0.0.1, each in a mount namespace of its own), redis-server (team
# fleets), CMake, Meson, Ninja, autoconf and automake (build-directory
# tests), tmux (`rch top` in a real terminal), script(1) and readelf. Safe to
# run again: it installs only what is missing. Needs root or sudo.
set -euo pipefail

missing=()
have_sshd() {
    command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || [ -x /usr/local/sbin/sshd ]
}
have_sshd || missing+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v rsync >/dev/null || missing+=(rsync)
command -v unshare >/dev/null || missing+=(util-linux)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v cmake >/dev/null || missing+=(cmake)
command -v meson >/dev/null || missing+=(meson)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v autoconf >/dev/null || missing+=(autoconf)
command -v automake >/dev/null || missing+=(automake)
command -v tmux >/dev/null || missing+=(tmux)
command -v script >/dev/null || missing+=(bsdutils)
command -v readelf >/dev/null || missing+=(binutils)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    apt_install() { $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
    # The package lists may be missing or stale: refresh them only when needed.
    apt_install || { $sudo apt-get update && apt_install; }
fi

# Optional: the wrapper tests also drive zsh and fish when they are present.
optional=()
command -v zsh >/dev/null || optional+=(zsh)
command -v fish >/dev/null || optional+=(fish)
if [ "${#optional[@]}" -gt 0 ]; then
    $sudo apt-get install -y --no-install-recommends "${optional[@]}" \
        || echo "deps: ${optional[*]} not installed; their wrapper tests are skipped"
fi
