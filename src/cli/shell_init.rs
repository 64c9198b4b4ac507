//! `rch shell-init bash|zsh|fish`: the lines a shell sources to put the
//! build-tool shims first on PATH, plus rch's completions.
//!
//! Sourcing the output twice leaves one shims entry on PATH, always first.

use super::{Cli, Global};
use crate::wrap;
use clap::{CommandFactory, ValueEnum};
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

pub fn run(args: ShellInitArgs, _global: &Global) -> anyhow::Result<i32> {
    let dir = wrap::shims_dir();
    let mut out = std::io::stdout().lock();
    match args.shell {
        InitShell::Bash | InitShell::Zsh => out.write_all(posix_path_lines(&dir).as_bytes())?,
        InitShell::Fish => out.write_all(fish_path_lines(&dir).as_bytes())?,
    }
    if !args.no_completions {
        write_completions(args.shell, &mut out)?;
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

/// rch's own completions for `shell`, generated from the argument definitions.
fn write_completions(shell: InitShell, out: &mut impl Write) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    let generator = match shell {
        InitShell::Bash => clap_complete::Shell::Bash,
        InitShell::Zsh => clap_complete::Shell::Zsh,
        InitShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "rch", &mut script);
    writeln!(out, "# rch: completions")?;
    if shell == InitShell::Zsh {
        // The zsh script registers itself with compdef, which exists only once
        // the completion system is loaded (compinit).
        writeln!(out, "if (( $+functions[compdef] )); then")?;
        out.write_all(&script)?;
        writeln!(out, "fi")?;
    } else {
        out.write_all(&script)?;
    }
    Ok(())
}
