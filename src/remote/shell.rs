//! How text reaches a worker's shell: quoting and the login-shell command
//! that carries a fixed script with positional arguments. Every remote
//! command string is built here, so a value is quoted exactly once.

use std::borrow::Cow;

/// `s` as one word for a POSIX shell.
pub(crate) fn quote(s: &str) -> Cow<'_, str> {
    shell_escape::unix::escape(Cow::Borrowed(s))
}

/// `sh -lc '<script>' rch <args>...`, every piece shell-quoted, as the remote
/// command string (which the user's login shell on the worker parses once).
pub(crate) fn login_shell_command(script: &str, args: &[&str]) -> String {
    let mut words: Vec<Cow<'_, str>> = vec!["sh".into(), "-lc".into(), quote(script), "rch".into()];
    words.extend(args.iter().map(|a| quote(a)));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_survive_one_shell_parse() {
        let cmd = login_shell_command("echo \"$1\"", &["it's $(x)", ""]);
        let words = shlex::split(&cmd).unwrap();
        assert_eq!(words, ["sh", "-lc", "echo \"$1\"", "rch", "it's $(x)", ""]);
    }
}
