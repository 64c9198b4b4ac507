//! Colour for remote builds: what a build on a worker needs to colour its
//! output as it would on this terminal, without a remote pty (so stdout and
//! stderr stay separate streams).
//!
//! Tools colour their output only when they write to a terminal; on a worker
//! they write to an ssh channel. So when our stderr is a terminal and
//! `NO_COLOR` is not set, rch tells them: cargo through `CARGO_TERM_COLOR`
//! and its progress bar through `CARGO_TERM_PROGRESS_WHEN`/`_WIDTH`, C and C++
//! compilers through `-fdiagnostics-color=always`, CMake and Ninja through
//! `CLICOLOR_FORCE`. Settings the user made (their own variables, their own
//! flags after ours) win.

use crate::classify::Tool;
use std::ffi::OsString;

/// What this side's terminal looks like, decided once per build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Terminal {
    /// Colour wanted: stderr is a terminal and `NO_COLOR` is unset or empty.
    pub colour: bool,
    /// The terminal's width in columns, when known.
    pub width: Option<u16>,
}

impl Terminal {
    /// Look at our stderr (where builds print) and the environment.
    pub fn detect() -> Terminal {
        let on_tty = is_tty(libc::STDERR_FILENO);
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Terminal {
            colour: on_tty && !no_colour,
            width: on_tty.then(|| width(libc::STDERR_FILENO)).flatten(),
        }
    }
}

fn is_tty(fd: libc::c_int) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's width from the kernel (TIOCGWINSZ), else `COLUMNS`.
fn width(fd: libc::c_int) -> Option<u16> {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass and nothing else.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        return Some(size.ws_col);
    }
    std::env::var("COLUMNS")
        .ok()?
        .parse()
        .ok()
        .filter(|c| *c > 0)
}

/// Variables that make a build by `tool` colour its output on the worker.
/// `is_set` says whether the user already set a variable (theirs wins).
pub fn env(tool: Tool, term: Terminal, is_set: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    if !term.colour {
        return Vec::new();
    }
    let mut vars: Vec<(&str, String)> = Vec::new();
    match tool {
        Tool::Cargo => {
            vars.push(("CARGO_TERM_COLOR", "always".into()));
            if let Some(width) = term.width {
                vars.push(("CARGO_TERM_PROGRESS_WHEN", "always".into()));
                vars.push(("CARGO_TERM_PROGRESS_WIDTH", width.to_string()));
            }
        }
        Tool::Cmake | Tool::Ninja | Tool::Meson | Tool::Make => {
            vars.push(("CLICOLOR_FORCE", "1".into()))
        }
        Tool::Cc => {}
    }
    vars.into_iter()
        .filter(|(name, _)| !is_set(name))
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The compiler flag that forces coloured diagnostics.
const CC_COLOUR_FLAG: &str = "-fdiagnostics-color=always";

/// The command to run on the worker: a compiler gets [`CC_COLOUR_FLAG`] right
/// after its name, so a colour flag of the user's, later on the line, wins.
pub fn argv(tool: Tool, term: Terminal, argv: &[OsString]) -> Vec<OsString> {
    if !term.colour || tool != Tool::Cc || argv.is_empty() {
        return argv.to_vec();
    }
    let mut with = Vec::with_capacity(argv.len() + 1);
    with.push(argv[0].clone());
    with.push(CC_COLOUR_FLAG.into());
    with.extend_from_slice(&argv[1..]);
    with
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTY: Terminal = Terminal {
        colour: true,
        width: Some(97),
    };

    #[test]
    fn cargo_gets_colour_and_the_progress_width() {
        let vars = env(Tool::Cargo, TTY, |_| false);
        assert_eq!(
            vars,
            vec![
                ("CARGO_TERM_COLOR".to_string(), "always".to_string()),
                ("CARGO_TERM_PROGRESS_WHEN".into(), "always".into()),
                ("CARGO_TERM_PROGRESS_WIDTH".into(), "97".into()),
            ]
        );
        let theirs = env(Tool::Cargo, TTY, |name| name == "CARGO_TERM_COLOR");
        assert!(theirs.iter().all(|(n, _)| n != "CARGO_TERM_COLOR"));
        assert!(env(Tool::Cargo, Terminal::default(), |_| false).is_empty());
    }

    #[test]
    fn compilers_get_the_flag_first_so_the_users_own_wins() {
        let cmd: Vec<OsString> = ["gcc", "-fno-diagnostics-color", "-c", "a.c"]
            .iter()
            .map(OsString::from)
            .collect();
        let with = argv(Tool::Cc, TTY, &cmd);
        assert_eq!(with[1], CC_COLOUR_FLAG);
        assert_eq!(with[2], "-fno-diagnostics-color");
        assert_eq!(argv(Tool::Cc, Terminal::default(), &cmd), cmd);
        assert_eq!(argv(Tool::Make, TTY, &cmd), cmd);
    }
}
