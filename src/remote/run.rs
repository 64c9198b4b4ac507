//! Remote execution: run one command on a worker as if it ran here.
//!
//! The command runs in a login shell of the worker's user (so its `~/.profile`
//! PATH applies) through a fixed script. User arguments and environment travel
//! only as positional parameters and are never parsed by any shell. The script
//! starts the command in its own session with stdin from /dev/null, and a
//! watcher kills that whole process group when the ssh channel's stdin reaches
//! EOF: the client keeps stdin open for the whole run, so a timeout, a killed
//! client or a lost connection all leave nothing running on the worker.

use super::ssh::Connection;
use super::{FailureKind, RemoteFailure};
use std::borrow::Cow;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What to run, where, with which extra environment, for how long at most.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Remote working directory; relative paths are relative to the remote home.
    pub dir: String,
    pub argv: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// How a run ended. `result` is `Ok(code)` with the command's own exit code
/// (128+N if it died by signal N); `started` says whether the command may have
/// begun, which matters for whether it can simply be retried elsewhere.
#[derive(Debug)]
pub struct RunReport {
    pub started: bool,
    pub result: Result<i32, RemoteFailure>,
}

/// Variables forwarded by name.
const FORWARDED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "CARGO_TERM_COLOR",
    "CARGO_INCREMENTAL",
    "CARGO_BUILD_JOBS",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "MAKEFLAGS",
    "NO_COLOR",
    "CLICOLOR_FORCE",
];
/// Variables forwarded by prefix (per-profile cargo settings).
const FORWARDED_PREFIXES: &[&str] = &["CARGO_PROFILE_"];

/// The allow-listed part of our environment that a remote build should see.
/// Paths (PATH, HOME, CARGO_HOME, CARGO_TARGET_DIR) and rch's own variables
/// describe this machine and are never sent.
pub fn forwarded_env() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| is_forwarded(k))
        .collect();
    vars.sort();
    vars
}

fn is_forwarded(name: &str) -> bool {
    FORWARDED_VARS.contains(&name) || FORWARDED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether `name` may be exported remotely: a plain shell name, and never rch's own.
fn is_exportable(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("RCH_")
}

/// Marks a line the script writes to stderr when it could not start the
/// command; it begins with a control character no build output starts with.
const SETUP_MARKER: &[u8] = b"\x1erch-setup\x1e";

/// The fixed script: `$1` is the directory, then `K=V` pairs, `--`, the command.
/// It marks the command as running under rch (`RCH_INSIDE=1`), so build-tool
/// wrappers on the worker run the real tool instead of calling rch again.
/// When it cannot start the command it writes [`SETUP_MARKER`] and a reason to
/// stderr and exits 125; a command the worker does not have is such a case
/// (`tool:<name>`), told apart from a command that itself exits 127.
///
/// fd 3 keeps the channel's stdin for the watcher, because a background job of
/// a non-interactive shell otherwise gets /dev/null. The watcher ignores TERM
/// once it has fired so the script's own clean-up cannot cut the escalation to
/// KILL short; before that, TERM ends it at once (it sits in the `read` builtin).
/// When it fires right at the start, it first waits for the command to have
/// made its own process group, which setsid does just after the fork.
const RUN_SCRIPT: &str = r#"dir=$1; shift
while [ "$#" -gt 0 ]; do
  if [ "$1" = -- ]; then shift; break; fi
  export "$1"; shift
done
RCH_INSIDE=1; export RCH_INSIDE
if [ -d "$HOME/.cargo/bin" ]; then PATH=$HOME/.cargo/bin:$PATH; export PATH; fi
setup_failed() { printf '\036rch-setup\036%s:%s\n' "$1" "$2" >&2; exit 125; }
case $dir in /*) ;; *) dir=$HOME/$dir ;; esac
if ! cd -- "$dir" 2>/dev/null; then
  if [ ! -e "$dir" ]; then setup_failed dir 'No such file or directory'
  elif [ ! -d "$dir" ]; then setup_failed dir 'Not a directory'
  else setup_failed dir 'Permission denied'; fi
fi
command -v setsid >/dev/null 2>&1 || setup_failed other 'setsid not found on worker'
command -v "$1" >/dev/null 2>&1 || setup_failed tool "$1"
exec 3<&0
setsid "$@" </dev/null 3<&- &
child=$!
(
  while read -r _; do :; done
  trap '' TERM
  n=0
  while [ "$n" -lt 20 ] && ! kill -0 -"$child" && kill -0 "$child"; do sleep 0.1; n=$((n + 1)); done
  kill -TERM -"$child"
  n=0
  while [ "$n" -lt 20 ] && kill -0 -"$child"; do sleep 0.1; n=$((n + 1)); done
  kill -KILL -"$child" "$child"
) <&3 >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status""#;

/// `sh -lc '<script>' rch <args>...`, every piece shell-quoted, as the remote
/// command string (which the user's login shell on the worker parses once).
pub(crate) fn login_shell_command(script: &str, args: &[&str]) -> String {
    let mut words: Vec<Cow<'_, str>> = vec!["sh".into(), "-lc".into(), quote(script), "rch".into()];
    words.extend(args.iter().map(|a| quote(a)));
    words.join(" ")
}

fn quote(s: &str) -> Cow<'_, str> {
    shell_escape::unix::escape(Cow::Borrowed(s))
}

/// Run `spec` on the worker behind `conn`, streaming its stdout and stderr
/// live to ours. Dropping the returned future ends the remote command too.
pub async fn run(conn: &Connection, spec: &RunSpec) -> RunReport {
    run_to(conn, spec, tokio::io::stdout(), tokio::io::stderr()).await
}

/// [`run`], with the command's stdout and stderr streamed to the given writers.
pub async fn run_to(
    conn: &Connection,
    spec: &RunSpec,
    stdout: impl AsyncWrite + Unpin,
    stderr: impl AsyncWrite + Unpin,
) -> RunReport {
    let command = match remote_command(spec) {
        Ok(c) => c,
        Err(detail) => {
            return RunReport {
                started: false,
                result: Err(RemoteFailure::new(
                    FailureKind::Other,
                    conn.worker_id(),
                    detail,
                )),
            }
        }
    };
    let execution = execute(conn, command, &spec.dir, stdout, stderr);
    match tokio::time::timeout(spec.timeout, execution).await {
        Ok(report) => report,
        // The timed-out future held the ssh child; dropping it killed the
        // client, which closes the channel and sets off the remote watcher.
        Err(_) => RunReport {
            started: true,
            result: Err(RemoteFailure::new(
                FailureKind::Timeout,
                conn.worker_id(),
                format!("timed out after {}s", spec.timeout.as_secs()),
            )),
        },
    }
}

/// The full remote command string, or why the spec cannot be sent verbatim.
fn remote_command(spec: &RunSpec) -> Result<String, String> {
    if spec.argv.is_empty() {
        return Err("empty command".to_string());
    }
    let mut args: Vec<String> = vec![spec.dir.clone()];
    args.extend(
        spec.env
            .iter()
            .filter(|(k, _)| is_exportable(k))
            .map(|(k, v)| format!("{k}={v}")),
    );
    args.push("--".to_string());
    for arg in &spec.argv {
        let arg = arg
            .to_str()
            .ok_or_else(|| format!("argument {arg:?} is not valid UTF-8"))?;
        args.push(arg.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(login_shell_command(RUN_SCRIPT, &refs))
}

async fn execute(
    conn: &Connection,
    command: String,
    dir: &str,
    out: impl AsyncWrite + Unpin,
    err: impl AsyncWrite + Unpin,
) -> RunReport {
    let spawned = conn
        .session()
        .raw_command(command)
        .stdin(openssh::Stdio::piped())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped())
        .spawn()
        .await;
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return RunReport {
                started: false,
                result: Err(RemoteFailure::new(
                    FailureKind::Other,
                    conn.worker_id(),
                    format!("cannot start ssh: {e}"),
                )),
            }
        }
    };
    // Held open until the end: its EOF is the remote watcher's kill signal.
    let stdin = child.stdin().take();
    let stdout = child.stdout().take();
    let stderr = child.stderr().take();
    let (_, setup_failure, status) =
        tokio::join!(pump(stdout, out), pump_stderr(stderr, err), child.wait(),);
    drop(stdin);
    if let Some(line) = setup_failure {
        return RunReport {
            started: false,
            result: Err(setup_failure_report(conn.worker_id(), dir, &line)),
        };
    }
    RunReport {
        started: true,
        result: exit_result(conn, status).await,
    }
}

/// Turns the script's setup line (`dir:<reason>` or `other:<reason>`) into a failure.
fn setup_failure_report(worker: &str, dir: &str, line: &str) -> RemoteFailure {
    match line.split_once(':') {
        Some(("dir", reason)) => RemoteFailure::new(
            FailureKind::RemoteDir,
            worker,
            format!("remote dir {dir} not usable: {reason}"),
        ),
        Some(("tool", program)) => RemoteFailure::new(
            FailureKind::MissingTool,
            worker,
            format!("{program}: command not found on the worker"),
        ),
        Some((_, reason)) => RemoteFailure::new(FailureKind::Other, worker, reason),
        None => RemoteFailure::new(FailureKind::Other, worker, line),
    }
}

/// Maps how the ssh client ended to the command's exit code or a failure.
async fn exit_result(
    conn: &Connection,
    status: Result<ExitStatus, openssh::Error>,
) -> Result<i32, RemoteFailure> {
    let worker = conn.worker_id();
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Ok(code),
            (None, Some(signal)) => Err(RemoteFailure::new(
                FailureKind::Killed,
                worker,
                format!("ssh client killed by signal {signal}"),
            )),
            (None, None) => Err(RemoteFailure::new(
                FailureKind::Other,
                worker,
                "unknown exit status",
            )),
        },
        // openssh reports the command's own 127 ("command not found") as an error.
        Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(127),
        // 255 is either the command's own code or ssh losing the channel; a
        // master that still answers means the command itself said 255.
        Err(openssh::Error::RemoteProcessTerminated) => {
            if conn.session().check().await.is_ok() {
                Ok(255)
            } else {
                Err(RemoteFailure::new(
                    FailureKind::ConnectionLost,
                    worker,
                    "connection lost during the build",
                ))
            }
        }
        Err(e) => Err(RemoteFailure::new(
            FailureKind::Other,
            worker,
            e.to_string(),
        )),
    }
}

/// Copies a remote stream to a local one chunk by chunk, flushing each chunk
/// so output appears as it is produced. A closed local side stops the copy.
async fn pump(from: Option<impl AsyncRead + Unpin>, mut to: impl AsyncWrite + Unpin) {
    let Some(mut from) = from else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Like [`pump`], but recognises the script's setup-failure line at the very
/// start of stderr. Only bytes that could still be that marker are held back,
/// so ordinary output is never delayed. Returns the setup line, if any.
async fn pump_stderr(
    from: Option<impl AsyncRead + Unpin>,
    mut to: impl AsyncWrite + Unpin,
) -> Option<String> {
    let mut from = from?;
    let mut head: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        match classify_head(&head) {
            Head::Undecided => continue,
            Head::Setup => continue,
            Head::Output => {
                if to.write_all(&head).await.is_ok() && to.flush().await.is_ok() {
                    pump(Some(from), to).await;
                }
                return None;
            }
        }
    }
    match classify_head(&head) {
        Head::Setup => {
            let line = String::from_utf8_lossy(&head[SETUP_MARKER.len()..]);
            Some(line.trim().to_string())
        }
        _ => {
            let _ = to.write_all(&head).await;
            let _ = to.flush().await;
            None
        }
    }
}

enum Head {
    /// Too short to tell.
    Undecided,
    /// The script's setup-failure marker.
    Setup,
    /// Anything else: the command's own output.
    Output,
}

fn classify_head(head: &[u8]) -> Head {
    if head.starts_with(SETUP_MARKER) {
        Head::Setup
    } else if SETUP_MARKER.starts_with(head) {
        Head::Undecided
    } else {
        Head::Output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_keeps_build_settings_only() {
        assert!(is_forwarded("RUSTFLAGS"));
        assert!(is_forwarded("CARGO_PROFILE_RELEASE_LTO"));
        for name in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RCH_WORKER",
            "SSH_AUTH_SOCK",
        ] {
            assert!(!is_forwarded(name), "{name}");
        }
    }

    #[test]
    fn exportable_names_are_plain_and_not_rch() {
        assert!(is_exportable("RUSTFLAGS"));
        assert!(is_exportable("_X1"));
        assert!(!is_exportable("RCH_QUIET"));
        assert!(!is_exportable("1X"));
        assert!(!is_exportable("A B"));
        assert!(!is_exportable(""));
    }

    #[test]
    fn hostile_arguments_are_quoted_as_single_words() {
        let spec = RunSpec {
            dir: "d".into(),
            argv: vec![
                "printf".into(),
                "%s\n".into(),
                "$(touch x)".into(),
                "it's".into(),
            ],
            env: vec![("RCH_X".into(), "1".into()), ("A".into(), "b c".into())],
            timeout: Duration::from_secs(1),
        };
        let cmd = remote_command(&spec).unwrap();
        let words = shlex::split(&cmd).unwrap();
        assert_eq!(&words[..2], ["sh", "-lc"]);
        assert_eq!(words[2], RUN_SCRIPT);
        assert_eq!(
            &words[3..],
            [
                "rch",
                "d",
                "A=b c",
                "--",
                "printf",
                "%s\n",
                "$(touch x)",
                "it's"
            ]
        );
    }

    #[test]
    fn marker_detection_holds_back_only_possible_prefixes() {
        assert!(matches!(classify_head(b"\x1erch"), Head::Undecided));
        assert!(matches!(
            classify_head(b"\x1erch-setup\x1edir:x"),
            Head::Setup
        ));
        assert!(matches!(classify_head(b"error: x"), Head::Output));
    }

    #[tokio::test]
    async fn stderr_pump_passes_output_and_catches_marker() {
        let mut out = Vec::new();
        let setup = pump_stderr(Some(&b"warning: x\n"[..]), &mut out).await;
        assert!(setup.is_none());
        assert_eq!(out, b"warning: x\n");

        let mut out = Vec::new();
        let setup = pump_stderr(
            Some(&b"\x1erch-setup\x1edir:Permission denied\n"[..]),
            &mut out,
        )
        .await;
        assert_eq!(setup.as_deref(), Some("dir:Permission denied"));
        assert!(out.is_empty());
    }
}
