//! `rch shell-init bash|zsh|fish`: the lines a shell sources to put the
//! build-tool shims first on PATH, plus rch's completions.
//!
//! Sourcing the output twice leaves one shims entry on PATH, always first.

use super::{completions, Global};
use crate::wrap;
use clap::ValueEnum;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct ShellInitArgs {
    /// The shell that will source the output.
    pub shell: InitShell,
    /// Print only the PATH lines, without completions.
    #[arg(long)]
    pub no_completions: bool,
}

pub fn run(args: ShellInitArgs, global: &Global) -> anyhow::Result<i32> {
    let dir = wrap::shims_dir();
    let path_lines = match args.shell {
        InitShell::Bash | InitShell::Zsh => posix_path_lines(&dir),
        InitShell::Fish => fish_path_lines(&dir),
    };
    let mut out = std::io::stdout();
    out.write_all(path_lines.as_bytes())?;
    if !args.no_completions {
        write_completions(args.shell, global)?;
    }
    out.flush()?;
    Ok(0)
}

/// bash/zsh: drop every existing shims entry from PATH, then prepend one.
pub fn posix_path_lines(dir: &Path) -> String {
    let dir = shlex::try_quote(&dir.to_string_lossy())
        .map(|q| q.into_owned())
        .unwrap_or_default();
    format!(
        r#"# rch: build-tool wrappers first on PATH (sourcing twice adds nothing).
__rch_shims={dir}
__rch_path=":$PATH:"
while :; do
  case $__rch_path in
    *:"$__rch_shims":*) __rch_path=${{__rch_path%%:"$__rch_shims":*}}:${{__rch_path#*:"$__rch_shims":}} ;;
    *) break ;;
  esac
done
__rch_path=${{__rch_path#:}}
__rch_path=${{__rch_path%:}}
PATH="$__rch_shims${{__rch_path:+:$__rch_path}}"
export PATH
unset __rch_shims __rch_path
hash -r 2>/dev/null
"#
    )
}

/// fish: the same, with fish's list-valued PATH.
pub fn fish_path_lines(dir: &Path) -> String {
    let dir = fish_quote(&dir.to_string_lossy());
    format!(
        r#"# rch: build-tool wrappers first on PATH (sourcing twice adds nothing).
while set -l __rch_i (contains -i -- {dir} $PATH)
    set -e PATH[$__rch_i]
end
set -gx PATH {dir} $PATH
"#
    )
}

/// Quote a word for fish: in single quotes only `\` and `'` are special.
fn fish_quote(word: &str) -> String {
    format!("'{}'", word.replace('\\', r"\\").replace('\'', r"\'"))
}

/// rch's own completions, as `rch completions <shell>` prints them.
fn write_completions(shell: InitShell, global: &Global) -> anyhow::Result<()> {
    let completions_shell = match shell {
        InitShell::Bash => completions::Shell::Bash,
        InitShell::Zsh => completions::Shell::Zsh,
        InitShell::Fish => completions::Shell::Fish,
    };
    let mut out = std::io::stdout();
    writeln!(out, "# rch: completions")?;
    // The zsh script registers itself with compdef, which exists only once
    // the completion system is loaded (compinit).
    let zsh = shell == InitShell::Zsh;
    if zsh {
        writeln!(out, "if (( $+functions[compdef] )); then")?;
    }
    out.flush()?;
    completions::run(
        completions::CompletionsArgs {
            shell: completions_shell,
        },
        global,
    )?;
    if zsh {
        writeln!(out, "fi")?;
    }
    out.flush()?;
    Ok(())
}
