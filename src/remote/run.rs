//! Remote execution: run one command on a worker as if it ran here.
//!
//! The command runs in a login shell of the worker's user (so its `~/.profile`
//! PATH applies) through a fixed script. User arguments and environment travel
//! only as positional parameters and are never parsed by any shell. The script
//! starts the command in its own session with stdin from /dev/null, or from
//! the client's stdin when that is the build's input ([`input`]), relayed
//! in frames over the channel; and a watcher kills that whole process group
//! when the ssh channel's stdin reaches EOF: the client keeps the channel
//! open for the whole run (also after its own stdin ended), so a timeout, a
//! killed client or a lost connection all leave nothing running on the worker.

use super::agent;
use super::failure::{FailureKind, RemoteFailure};
use super::input::{self, Input};
use super::outputs::{Listing, ListingBuilder, Watch};
use super::shell::login_shell_command;
use super::ssh::Connection;
use super::status::{self, Record, SetupFault, StatusFilter};
use super::upload::TreeCheck;
use crate::agent::wire::{Frame, Request};
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
    /// Checked and written before the command starts, in the same remote
    /// command: whether the worker still holds the tree we pushed.
    pub tree: Option<TreeCheck>,
    /// The build's stdin, when it has one to read (else /dev/null).
    pub input: Option<Input>,
    /// Listed after the command exits 0, in the same remote command: what
    /// of the tree (see [`TreeCheck::dir`]) comes back ([`super::outputs`]).
    pub watch: Option<Watch>,
    /// A cargo output directory (relative to the tree) whose dep-info and
    /// build-script env reads the script reports after the command.
    pub env_reads: Option<String>,
}

/// How a run ended. `result` is `Ok(code)` with the command's own exit code
/// (128+N if it died by signal N); `started` says whether the command may have
/// begun, which matters for whether it can simply be retried elsewhere.
#[derive(Debug)]
pub struct RunReport {
    pub started: bool,
    pub result: Result<i32, RemoteFailure>,
    /// The build's stderr ended without a newline (rch's own line must start
    /// on a fresh one).
    pub stderr_mid_line: bool,
    /// The command did not start: the worker does not hold the tree the
    /// [`TreeCheck`] expected (push it in full and run again).
    pub stale_tree: bool,
    /// What [`RunSpec::watch`] found, when the script could list all of it.
    pub listing: Option<Listing>,
    /// The env-dep lines [`RunSpec::env_reads`] found, one a line.
    pub env_reads: String,
}

impl RunReport {
    fn failed(started: bool, failure: RemoteFailure) -> RunReport {
        RunReport {
            started,
            result: Err(failure),
            stderr_mid_line: false,
            stale_tree: false,
            listing: None,
            env_reads: String::new(),
        }
    }
}

/// Whether `name` may be exported remotely: a plain shell name, and never rch's own.
fn is_exportable(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("RCH_")
}

/// The fixed script: `$1` is the directory, `$2` the tree's directory, `$3`
/// the token the tree must hold (or empty), `$4` the token to write there (or
/// empty), `$5` non-empty when the command's stdin follows on the channel in
/// [`input`]'s frames, `$6` and `$7` what to list after a successful command
/// (mode and directory, see [`Watch`]; empty: nothing), `$8` the cargo
/// output dir whose env reads to report (or empty), `$9` a count N and N
/// paths of the tree to delete, then `K=V` pairs, `--`, the command. A tree
/// without the expected token is reported as `setup:tree:stale` before
/// anything is touched. Everything a build needs from the worker besides
/// its output comes back in records of this one remote command: one shell
/// start per build.
/// The first line of its stdin is the run's nonce (never in argv or the
/// environment, which the build could read in /proc); it reports on stderr in
/// records only rch can tell apart from the build's output ([`status`]).
/// It marks the command as running under rch (`RCH_INSIDE=1`), so build-tool
/// wrappers on the worker run the real tool instead of calling rch again.
/// A command the worker does not have is reported as `setup:tool:<name>`,
/// told apart from a command that itself exits 127.
///
/// fd 3 keeps the channel's stdin for the watcher, because a background job of
/// a non-interactive shell otherwise gets /dev/null. The watcher ignores TERM
/// once it has fired so the script's own clean-up cannot cut the escalation to
/// KILL short; before that, TERM ends it at once (it sits in the `read` builtin).
/// When it fires right at the start, it first waits for the command to have
/// made its own process group, which setsid does just after the fork.
///
/// With input, the command reads a FIFO in a private temp dir, and the
/// watcher first relays the frames into it (one `dd` per frame, reading
/// exactly that many bytes), closes it at the end frame (the command reads
/// EOF) and only then watches for the channel's end. A command that does not
/// read its stdin is never held by it: when it ends, the relay is killed.
fn run_script() -> String {
    format!(
        "IFS= read -r RCH_nonce || exit 125\n{}\n{LIST_FUNCTIONS}\n{RUN_BODY}",
        status::SCRIPT_FUNCTIONS
    )
}

/// The listing functions of the run script (GNU find's `-printf`; without
/// it no `list:ok` record is sent and rch pulls in full).
/// `list_tree` prints the tree's paths before the build (type, size, mtime,
/// path); `report_outputs` reports each file of the watched directory
/// (`file:`), each listed path that is gone (`gone:`), then `list:ok`.
/// A cargo output dir is listed without cargo's bookkeeping and dep-info
/// files (`*.d`, which cargo may rewrite on a no-op build: they would cost
/// every build a pull, and no artifact report names them).
/// A name holding a newline cannot be listed: `list:bad`. `report_env`
/// reports the cargo output dir's env-dep lines (`env:`): dep-info's
/// `# env-dep:` lines and build scripts' `rerun-if-env-changed=`, read by
/// one `sed` (a warm build pays each process the script starts).
const LIST_FUNCTIONS: &str = r#"nl='
'
prune_tree() { find "$@" \( -name .git -o -name target -o -name node_modules \) -type d -prune -o -name "*$nl*" -prune -o -printf '%y %s %T@ %P\n'; }
list_tree() { prune_tree "$RCH_tree" -mindepth 1 2>/dev/null; }
report_outputs() {
  RCH_root=$RCH_tree/$RCH_watched
  if [ -d "$RCH_root" ]; then
    case $RCH_watch in
      tree) set -- \( -name .git -o -name target -o -name node_modules \) -type d -prune -o ;;
      artifacts) set -- \( -name incremental -o -name .fingerprint -o -name build \) -type d -prune -o -name '*.d' -prune -o ;;
      *) set -- ;;
    esac
    find "$RCH_root" -mindepth 1 "$@" -name "*$nl*" -printf '\036rch-'"$RCH_nonce"'\036list:bad\n' -prune -o ! -type d -printf '\036rch-'"$RCH_nonce"'\036file:%s %T@ %P\n' >&2 2>/dev/null || return 0
  fi
  if [ -n "$RCH_before" ]; then
    while IFS= read -r line; do
      p=${line#* * * }
      [ -e "$RCH_tree/$p" ] || [ -h "$RCH_tree/$p" ] || printf '\036rch-%s\036gone:%s\n' "$RCH_nonce" "$line" >&2
    done <"$RCH_before"
  fi
  printf '\036rch-%s\036list:ok\n' "$RCH_nonce" >&2
}
report_env() {
  d=$RCH_tree/$RCH_envdir
  [ -d "$d" ] || return 0
  pre=$(printf '\036rch-%s\036env:' "$RCH_nonce")
  sed -n "/^# env-dep:\\|rerun-if-env-changed=/s/^/$pre/p" -- "$d"/deps/*.d "$d"/build/*/output >&2 2>/dev/null
  return 0
}"#;

/// The part of the run script after the nonce and the report functions.
const RUN_BODY: &str = r#"RCH_dir=$1; RCH_tree=$2; expect=$3; token=$4; RCH_input=$5; RCH_watch=$6; RCH_watched=$7; RCH_envdir=$8; ndelete=$9; carried=${10}; shift 10
case $RCH_tree in /*|'') ;; *) RCH_tree=$HOME/$RCH_tree ;; esac
[ -n "$RCH_tree" ] || { RCH_watch=; RCH_envdir=; }
if [ -n "$expect" ]; then
  have=; read -r have 2>/dev/null <"$RCH_tree/.rch-sync"
  [ "$have" = "$expect" ] || setup_failed tree stale
fi
while [ "$ndelete" -gt 0 ]; do [ -n "$RCH_tree" ] && rm -rf -- "$RCH_tree/$1"; shift; ndelete=$((ndelete - 1)); done
full=
if [ "$carried" -gt 0 ] || [ -n "$RCH_input" ]; then dd iflag=fullblock count=0 </dev/null >/dev/null 2>&1 && full=1; fi
if [ "$carried" -gt 0 ]; then
  if [ -n "$full" ]; then dd bs="$carried" count=1 iflag=fullblock 2>/dev/null
  else dd bs=1 count="$carried" 2>/dev/null
  fi | (cd -- "$RCH_tree" && tar -xpof - 2>/dev/null) || setup_failed tree stale
fi
if [ -n "$token" ]; then
  printf '%s\n' "$token" 2>/dev/null >"$RCH_tree/.rch-sync" || setup_failed dir 'cannot write the sync token'
fi
while [ "$#" -gt 0 ]; do
  if [ "$1" = -- ]; then shift; break; fi
  export "$1"; shift
done
RCH_INSIDE=1; export RCH_INSIDE
if [ -d "$HOME/.cargo/bin" ]; then PATH=$HOME/.cargo/bin:$PATH; export PATH; fi
case $RCH_dir in /*) ;; *) RCH_dir=$HOME/$RCH_dir ;; esac
if ! cd -- "$RCH_dir" 2>/dev/null; then
  if [ ! -e "$RCH_dir" ]; then setup_failed dir 'No such file or directory'
  elif [ ! -d "$RCH_dir" ]; then setup_failed dir 'Not a directory'
  else setup_failed dir 'Permission denied'; fi
fi
command -v setsid >/dev/null 2>&1 || setup_failed other 'setsid not found on worker'
command -v "$1" >/dev/null 2>&1 || setup_failed tool "$1"
RCH_before=
if [ "$RCH_watch" = tree ]; then
  RCH_before=$(mktemp 2>/dev/null) && list_tree >"$RCH_before" || RCH_before=
fi
exec 3<&0
if [ -n "$RCH_input" ]; then
  pipedir=$(mktemp -d "${TMPDIR:-/tmp}/rch-in.XXXXXX" 2>/dev/null) && mkfifo "$pipedir/in" 2>/dev/null ||
    setup_failed other 'cannot make a pipe for stdin'
  setsid "$@" <"$pipedir/in" 3<&- &
else
  setsid "$@" </dev/null 3<&- &
fi
child=$!
(
  if [ -n "$RCH_input" ]; then
    relay=
    trap 'kill "$relay" 2>/dev/null; exit 0' TERM
    exec 4>"$pipedir/in"
    rm -rf "$pipedir"
    while IFS= read -r n; do
      case $n in 0|''|*[!0-9]*) break ;; esac
      if [ -n "$full" ]; then dd bs="$n" count=1 iflag=fullblock <&3 >&4 2>/dev/null &
      else dd bs=1 count="$n" <&3 >&4 2>/dev/null &
      fi
      relay=$!; wait "$relay"
    done
    exec 4>&-
    trap - TERM
  fi
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
[ -z "$RCH_input" ] || rm -rf "$pipedir"
[ -z "$RCH_envdir" ] || report_env
[ "$status" -ne 0 ] || [ -z "$RCH_watch" ] || report_outputs
[ -z "$RCH_before" ] || rm -f -- "$RCH_before"
report_exit "$status"
exit "$status""#;

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
    let local = |detail: String| {
        RunReport::failed(
            false,
            RemoteFailure::new(FailureKind::Local, conn.worker_id(), detail),
        )
    };
    let args = match script_args(spec) {
        Ok(a) => a,
        Err(detail) => return local(detail),
    };
    let reader = match spec.input.as_ref().map(Input::reader) {
        Some(None) => return local(STDIN_SPENT.to_string()),
        reader => reader.flatten(),
    };
    let carried = spec.tree.as_ref().map_or(&[][..], |t| t.carried.as_slice());
    let execution = execute(conn, &args, &spec.dir, (carried, reader), stdout, stderr);
    match tokio::time::timeout(spec.timeout, execution).await {
        Ok(report) => report,
        // The timed-out future held the ssh child (or the agent's
        // connection); dropping it closes the channel, which sets off the
        // remote watcher.
        Err(_) => RunReport::failed(
            true,
            RemoteFailure::new(
                FailureKind::Timeout,
                conn.worker_id(),
                format!("timed out after {}s", spec.timeout.as_secs()),
            ),
        ),
    }
}

/// Why a build cannot run again: it read more stdin than rch keeps.
pub const STDIN_SPENT: &str =
    "its stdin was already read past what rch keeps to give it again (64 MiB)";

/// The run script's positional arguments, or why the spec cannot be sent verbatim.
fn script_args(spec: &RunSpec) -> Result<Vec<String>, String> {
    if spec.argv.is_empty() {
        return Err("empty command".to_string());
    }
    let check = spec.tree.clone().unwrap_or_default();
    let mut args: Vec<String> = vec![
        spec.dir.clone(),
        check.dir,
        check.expect.unwrap_or_default(),
        check.set.unwrap_or_default(),
        if spec.input.is_some() { "1" } else { "" }.to_string(),
        spec.watch.as_ref().map_or("", |w| w.mode).to_string(),
        spec.watch
            .as_ref()
            .map(|w| w.rel.clone())
            .unwrap_or_default(),
        spec.env_reads.clone().unwrap_or_default(),
        check.delete.len().to_string(),
        check.carried.len().to_string(),
    ];
    args.extend(check.delete);
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
    Ok(args)
}

/// The remote command string for ssh: the script in a login shell.
fn ssh_command(args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    login_shell_command(&run_script(), &refs)
}

/// The request for the worker agent: the same script and arguments in
/// `sh` (the agent already has the login environment).
fn agent_request(args: &[String]) -> Request {
    let mut argv = vec![
        b"sh".to_vec(),
        b"-c".to_vec(),
        run_script().into_bytes(),
        b"rch".to_vec(),
    ];
    argv.extend(args.iter().map(|a| a.clone().into_bytes()));
    Request { argv }
}

/// Runs the script through the worker agent when the connection has one,
/// else (or when the agent cannot start it) through ssh. `feed` is what the
/// script reads after its nonce: the carried files' archive, then the
/// build's stdin when it has one.
async fn execute(
    conn: &Connection,
    args: &[String],
    dir: &str,
    (carried, mut input): (&[u8], Option<input::Reader>),
    mut out: impl AsyncWrite + Unpin,
    mut err: impl AsyncWrite + Unpin,
) -> RunReport {
    let nonce = status::nonce();
    let mut filter = StatusFilter::new(&nonce);
    if let Some(forward) = conn.agent_forward() {
        let request = agent_request(args);
        // The nonce line and the archive go with the request, in one write:
        // the agent feeds them to the script's stdin at once, no round trip.
        let early = [format!("{nonce}\n").as_bytes(), carried].concat();
        let mut opened = agent::open(forward, &request, &early).await;
        if let Err(agent::NotStarted(why)) = &opened {
            tracing::debug!(worker = conn.worker_id(), reason = %why, "the worker agent did not answer; starting it again");
            if agent::restart(conn).await {
                opened = agent::open(forward, &request, &early).await;
            }
        }
        match opened {
            Ok(opened) => {
                let ended = via_agent(opened, input, &mut out, &mut err, &mut filter).await;
                return report(conn, dir, &filter, ended).await;
            }
            Err(agent::NotStarted(why)) => {
                tracing::debug!(worker = conn.worker_id(), reason = %why, "running through a login shell instead");
            }
        }
    }
    let ended = via_ssh(
        conn,
        args,
        &nonce,
        (carried, input.take()),
        out,
        err,
        &mut filter,
    )
    .await;
    report(conn, dir, &filter, ended).await
}

/// How the channel that carried the script ended.
enum Ended {
    /// ssh exited (or could not be waited for).
    Ssh(std::io::Result<ExitStatus>),
    /// The agent reported the script's exit code.
    Agent(i32),
    /// The agent's connection ended before an exit code.
    AgentLost,
    /// ssh could not be started here.
    NoSsh(std::io::Error),
}

async fn via_ssh(
    conn: &Connection,
    args: &[String],
    nonce: &str,
    (carried, input): (&[u8], Option<input::Reader>),
    out: impl AsyncWrite + Unpin,
    err: impl AsyncWrite + Unpin,
    filter: &mut StatusFilter,
) -> (Ended, bool) {
    let mut child = match conn.command(&ssh_command(args)).spawn() {
        Ok(child) => child,
        Err(e) => return (Ended::NoSsh(e), false),
    };
    // Held open until the end: its EOF is the remote watcher's kill signal.
    let mut stdin = child.stdin.take();
    if let Some(stdin) = stdin.as_mut() {
        // A failed write shows up as a run without records below.
        let _ = stdin.write_all(format!("{nonce}\n").as_bytes()).await;
        let _ = stdin.flush().await;
    }
    let (from_out, from_err) = (child.stdout.take(), child.stderr.take());
    let pumps = async { tokio::join!(pump(from_out, out), pump_stderr(from_err, err, filter)) };
    // The archive and the input go along until the command's output ends
    // (the run is over): a command that never reads its input does not wait
    // for it. With neither, the channel's stdin just stays open.
    let feed = async {
        if let Some(pipe) = stdin.as_mut() {
            if !carried.is_empty() {
                // A failed write shows up as a stale tree or a run without records.
                let _ = pipe.write_all(carried).await;
                let _ = pipe.flush().await;
            }
            feed_input(input, pipe).await;
        }
        std::future::pending::<()>().await
    };
    let (_, mid_line) = tokio::select! {
        done = pumps => done,
        () = feed => unreachable!("the feed never ends"),
    };
    let status = child.wait().await;
    drop(stdin);
    (Ended::Ssh(status), mid_line)
}

/// The build's stdin, in frames, to the script (a failure shows as the
/// build's own reaction to a short input).
async fn feed_input(input: Option<input::Reader>, to: &mut (impl AsyncWrite + Unpin)) {
    if let Some(reader) = input {
        if let Err(e) = input::send(reader, to).await {
            tracing::debug!(error = %e, "sending stdin to the worker");
        }
    }
}

/// The script's frames from the agent, to our stdout and stderr; the input
/// goes along (the archive went with the request). The connection stays
/// open until the exit frame: its end is the watcher's kill signal.
async fn via_agent(
    mut opened: agent::Opened,
    input: Option<input::Reader>,
    out: &mut (impl AsyncWrite + Unpin),
    err: &mut (impl AsyncWrite + Unpin),
    filter: &mut StatusFilter,
) -> (Ended, bool) {
    let mut sink = StderrSink::new(err, filter);
    let mut out_open = true;
    let frames = async {
        loop {
            match agent::read_frame(&mut opened.frames).await {
                Ok(Some(Frame::Stdout(bytes))) => {
                    if out_open {
                        out_open = out.write_all(&bytes).await.is_ok() && out.flush().await.is_ok();
                    }
                }
                Ok(Some(Frame::Stderr(bytes))) => sink.feed(&bytes).await,
                Ok(Some(Frame::Exit(code))) => return Ended::Agent(code),
                Ok(Some(Frame::Started | Frame::Refused(_))) => {}
                Ok(None) | Err(_) => return Ended::AgentLost,
            }
        }
    };
    let feed = async {
        feed_input(input, &mut opened.stdin).await;
        std::future::pending::<()>().await
    };
    let ended = tokio::select! {
        ended = frames => ended,
        () = feed => unreachable!("the feed never ends"),
    };
    let mid_line = sink.finish().await;
    (ended, mid_line)
}

/// The report from the script's records and how its channel ended.
async fn report(
    conn: &Connection,
    dir: &str,
    filter: &StatusFilter,
    (ended, stderr_mid_line): (Ended, bool),
) -> RunReport {
    let worker = conn.worker_id();
    let (end, listing, env_reads) = read_records(filter.records());
    let stale_tree = end == Some(Record::Setup(SetupFault::StaleTree));
    let (started, result) = match end {
        Some(Record::Exit(code)) => (true, Ok(code)),
        Some(Record::Setup(fault)) => (false, Err(setup_failure(worker, dir, fault))),
        Some(_) | None => match ended {
            Ended::NoSsh(e) => (
                false,
                Err(RemoteFailure::new(
                    FailureKind::Local,
                    worker,
                    format!("cannot run ssh here: {e}"),
                )),
            ),
            ended => (true, Err(unreported_end(conn, ended).await)),
        },
    };
    RunReport {
        started,
        result,
        stderr_mid_line,
        stale_tree,
        listing,
        env_reads,
    }
}

/// The script's records taken apart: how the run ended (the first `exit`
/// or `setup` record), the listing when complete, the env-dep lines.
fn read_records(records: &[Record]) -> (Option<Record>, Option<Listing>, String) {
    let mut end = None;
    let mut listing = ListingBuilder::default();
    let mut env_reads = String::new();
    for record in records {
        match record {
            Record::Exit(_) | Record::Setup(_) => {
                end.get_or_insert_with(|| record.clone());
            }
            Record::File(body) => listing.file(body),
            Record::Gone(body) => listing.gone(body),
            Record::List(ok) => listing.end(*ok),
            Record::Env(line) => {
                env_reads.push_str(line);
                env_reads.push('\n');
            }
        }
    }
    (end, listing.finish(), env_reads)
}

/// The failure for a script that did not start the command.
fn setup_failure(worker: &str, dir: &str, fault: SetupFault) -> RemoteFailure {
    match fault {
        SetupFault::Dir(reason) => RemoteFailure::new(
            FailureKind::RemoteDir,
            worker,
            format!("remote dir {dir} not usable: {reason}"),
        ),
        SetupFault::Tool(program) => RemoteFailure::new(
            FailureKind::MissingTool,
            worker,
            format!("{program}: command not found on the worker"),
        ),
        SetupFault::StaleTree => RemoteFailure::new(
            FailureKind::Other,
            worker,
            format!("{dir}: not the tree this client pushed"),
        ),
        SetupFault::Other(reason) => RemoteFailure::new(FailureKind::Other, worker, reason),
    }
}

/// The script never reported how the run ended: the connection (or the
/// channel) went away, or the worker's shell could not run the script.
async fn unreported_end(conn: &Connection, ended: Ended) -> RemoteFailure {
    let worker = conn.worker_id();
    let code = match ended {
        Ended::NoSsh(e) => {
            return RemoteFailure::new(
                FailureKind::Local,
                worker,
                format!("cannot run ssh here: {e}"),
            )
        }
        Ended::Ssh(Err(e)) => {
            return RemoteFailure::new(FailureKind::Local, worker, format!("ssh: {e}"))
        }
        Ended::Ssh(Ok(status)) => {
            if let Some(signal) = status.signal() {
                return RemoteFailure::new(
                    FailureKind::Killed,
                    worker,
                    format!("ssh client killed by signal {signal}"),
                );
            }
            Some(status.code().unwrap_or(-1))
        }
        Ended::Agent(code) => Some(code),
        Ended::AgentLost => None,
    };
    if conn.session().check().await.is_err() {
        return RemoteFailure::new(
            FailureKind::ConnectionLost,
            worker,
            "connection lost during the build",
        );
    }
    match code {
        Some(code) => RemoteFailure::new(
            FailureKind::Other,
            worker,
            format!("the worker's shell ended without running the build (status {code})"),
        ),
        None => RemoteFailure::new(
            FailureKind::Other,
            worker,
            "the worker agent's connection ended during the build",
        ),
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

/// Like [`pump`], but passes the stream through the script's [`StatusFilter`]
/// ([`StderrSink`]). Returns whether the output written ends in the middle
/// of a line.
async fn pump_stderr(
    from: Option<impl AsyncRead + Unpin>,
    to: impl AsyncWrite + Unpin,
    filter: &mut StatusFilter,
) -> bool {
    let mut sink = StderrSink::new(to, filter);
    if let Some(mut from) = from {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.feed(&buf[..n]).await,
            };
        }
    }
    sink.finish().await
}

/// The remote stderr on its way to ours: the build's bytes go on at once,
/// the script's records stay in the filter. A closed local side stops the
/// writing, not the reading: the records still matter.
struct StderrSink<'f, W> {
    to: W,
    filter: &'f mut StatusFilter,
    writable: bool,
    last: Option<u8>,
}

impl<'f, W: AsyncWrite + Unpin> StderrSink<'f, W> {
    fn new(to: W, filter: &'f mut StatusFilter) -> Self {
        StderrSink {
            to,
            filter,
            writable: true,
            last: None,
        }
    }

    async fn feed(&mut self, chunk: &[u8]) {
        let output = self.filter.feed(chunk);
        self.write(&output).await;
    }

    async fn write(&mut self, output: &[u8]) {
        if self.writable && !output.is_empty() {
            self.writable =
                self.to.write_all(output).await.is_ok() && self.to.flush().await.is_ok();
            self.last = output.last().copied();
        }
    }

    /// Writes what the filter still held; whether the output written ends
    /// in the middle of a line.
    async fn finish(mut self) -> bool {
        let rest = self.filter.finish();
        self.write(&rest).await;
        self.last.is_some_and(|b| b != b'\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            tree: None,
            input: None,
            watch: None,
            env_reads: None,
        };
        let cmd = ssh_command(&script_args(&spec).unwrap());
        let words = shlex::split(&cmd).unwrap();
        assert_eq!(&words[..2], ["sh", "-lc"]);
        assert_eq!(words[2], run_script());
        assert_eq!(
            &words[3..],
            [
                "rch",
                "d",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "0",
                "0",
                "A=b c",
                "--",
                "printf",
                "%s\n",
                "$(touch x)",
                "it's"
            ]
        );
    }

    #[tokio::test]
    async fn stderr_pump_passes_output_and_keeps_records() {
        let mut filter = StatusFilter::new("n1");
        let mut out = Vec::new();
        let input = b"warning: x\n\x1erch-setup\x1edir:y\n\x1erch-n1\x1eexit:3\n";
        let mid_line = pump_stderr(Some(&input[..]), &mut out, &mut filter).await;
        assert!(!mid_line);
        assert_eq!(out, b"warning: x\n\x1erch-setup\x1edir:y\n");
        assert_eq!(filter.records(), [Record::Exit(3)]);
    }
}
