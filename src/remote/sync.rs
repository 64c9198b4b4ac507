//! Project transfer with rsync over a worker's shared SSH master: the source
//! tree up before a build, artifacts (or the whole tree) back after it.
//!
//! rsync reaches the worker with `ssh -S <control socket>`, so a transfer costs
//! no new connection or authentication. Whether it compresses is the
//! worker's link's to say ([`super::link`]): each transfer's bytes and time
//! are a sample of it.

use super::failure::{classify_rsync, FailureKind, RemoteFailure};
use super::link;
use super::progress;
use super::shell::quote;
use super::ssh::{Connection, MUX_HOST};
use crate::tree;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;

/// Never sent to a worker, whatever the project says.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "target/",
    ".git/",
    "node_modules/",
    ".env*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    ".ssh/",
    ".aws/",
    ".npmrc",
    ".netrc",
];

/// Build by-products not worth bringing back with the artifacts.
const ARTIFACT_EXCLUDES: &[&str] = &["incremental/", ".fingerprint/", "build/", "deps/*.d"];

/// What to bring back from the worker after a build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Nothing: the command produces no artifacts (check, clippy, test).
    Nothing,
    /// One directory: `from` relative to the remote project dir (e.g.
    /// "target/release"), into the local directory `to`. `complete` brings
    /// back cargo's bookkeeping too (fingerprints, dep-info, build script
    /// outputs), so a local cargo finds the build fresh.
    Dir {
        from: String,
        to: PathBuf,
        complete: bool,
    },
    /// The named files of one directory (`from`, relative to the remote
    /// project dir) into `to`: the artifacts cargo reported.
    Files {
        from: String,
        to: PathBuf,
        files: Vec<PathBuf>,
    },
    /// The whole project (newer files only), for generic build tools.
    Tree,
}

/// The file in a build's tree on the worker that names the push that made
/// it; never sent, never deleted, never pulled.
pub const TOKEN_FILE: &str = ".rch-sync";

/// What decides which paths of `project_root` are pushed: the built-in and
/// configured excludes, `.rchignore`, and `.gitignore` files when asked.
pub fn rules(
    project_root: &Path,
    extra_excludes: &[String],
    respect_gitignore: bool,
) -> Result<tree::Rules, String> {
    let patterns = exclude_patterns(extra_excludes);
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    tree::Rules::new(project_root, &patterns, respect_gitignore)
}

/// Every exclude pattern a push applies: the built-in ones, the token file,
/// then the configured `extra_excludes`.
pub fn exclude_patterns(extra_excludes: &[String]) -> Vec<String> {
    DEFAULT_EXCLUDES
        .iter()
        .chain([&TOKEN_ANCHORED])
        .map(|p| p.to_string())
        .chain(extra_excludes.iter().cloned())
        .collect()
}

/// [`TOKEN_FILE`] as an exclude pattern anchored at the tree's root.
const TOKEN_ANCHORED: &str = "/.rch-sync";

/// Mirror the project to `remote_dir` (created if missing), as [`push_full`]
/// does, with the ignore rules of a default configuration.
pub async fn push(
    conn: &Connection,
    project_root: &Path,
    remote_dir: &str,
    extra_excludes: &[String],
) -> Result<(), RemoteFailure> {
    let snapshot = rules(project_root, extra_excludes, true)
        .ok()
        .and_then(|r| tree::snapshot(&r).ok());
    push_full(
        conn,
        project_root,
        remote_dir,
        extra_excludes,
        snapshot.as_ref(),
    )
    .await
}

/// Mirror the project to `remote_dir` (created if missing), deleting remote
/// files that no longer exist locally. Excluded paths are left alone there:
/// the exclude patterns, and each path `snapshot` found locally but left out
/// (ignored by `.gitignore` or `.rchignore`), so a build's outputs stay warm.
/// Without a snapshot only the patterns apply.
pub async fn push_full(
    conn: &Connection,
    project_root: &Path,
    remote_dir: &str,
    extra_excludes: &[String],
    snapshot: Option<&tree::Snapshot>,
) -> Result<(), RemoteFailure> {
    let mut args = rsync_base_args(conn);
    args.push("--delete".into());
    args.push(format!("--rsync-path=mkdir -p -- {} && rsync", quote(remote_dir)).into());
    push_excludes(&mut args, DEFAULT_EXCLUDES.iter().copied());
    push_excludes(&mut args, [TOKEN_ANCHORED].into_iter());
    push_excludes(&mut args, extra_excludes.iter().map(String::as_str));
    let mut list = Vec::new();
    if let Some(snapshot) = snapshot {
        args.push("--from0".into());
        args.push("--exclude-from=-".into());
        for path in &snapshot.ignored {
            list.extend_from_slice(&anchored_literal(path));
            list.push(0);
        }
    }
    args.push(dir_arg(project_root));
    args.push(remote_arg(remote_dir, ""));
    run_rsync(conn, args, &list, remote_dir, false, "push").await
}

/// Send only the `changed` paths to `remote_dir`, which holds the tree of
/// the last push, whatever their mtime says (`-I`: a same-size rewrite within
/// the mtime's granularity is sent too). A path gone meanwhile is skipped.
/// (Deletions are left to the run script: rsync's `--delete-missing-args` is
/// broken in some releases.)
pub async fn push_changes(
    conn: &Connection,
    project_root: &Path,
    remote_dir: &str,
    changed: &[PathBuf],
) -> Result<(), RemoteFailure> {
    if changed.is_empty() {
        return Ok(());
    }
    let mut args = rsync_base_args(conn);
    args.extend(
        [
            "--ignore-times",
            "--from0",
            "--files-from=-",
            "--ignore-missing-args",
        ]
        .map(OsString::from),
    );
    let mut list = Vec::new();
    for path in changed {
        list.extend_from_slice(path.as_os_str().as_encoded_bytes());
        list.push(0);
    }
    args.push(dir_arg(project_root));
    args.push(remote_arg(remote_dir, ""));
    run_rsync(conn, args, &list, remote_dir, false, "push").await
}

/// `/path` as an rsync pattern matching exactly that path from the root.
fn anchored_literal(path: &Path) -> Vec<u8> {
    let mut out = vec![b'/'];
    for &b in path.as_os_str().as_encoded_bytes() {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Bring results back from `remote_dir`; never deletes local files.
pub async fn pull(
    conn: &Connection,
    project_root: &Path,
    remote_dir: &str,
    what: &Pull,
    extra_excludes: &[String],
) -> Result<(), RemoteFailure> {
    let mut args = rsync_base_args(conn);
    let mut list = Vec::new();
    let local = match what {
        Pull::Nothing => return Ok(()),
        Pull::Files { files, .. } if files.is_empty() => return Ok(()),
        Pull::Files { from, to, files } => {
            args.extend(["--from0", "--files-from=-", "--ignore-missing-args"].map(OsString::from));
            for file in files {
                list.extend_from_slice(file.as_os_str().as_encoded_bytes());
                list.push(0);
            }
            args.push(remote_arg(remote_dir, from.trim_matches('/')));
            to.clone()
        }
        Pull::Dir { from, to, complete } => {
            if !complete {
                push_excludes(&mut args, ARTIFACT_EXCLUDES.iter().copied());
            }
            args.push(remote_arg(remote_dir, from.trim_matches('/')));
            to.clone()
        }
        Pull::Tree => {
            args.push("--update".into());
            push_excludes(&mut args, DEFAULT_EXCLUDES.iter().copied());
            push_excludes(&mut args, extra_excludes.iter().map(String::as_str));
            args.push(remote_arg(remote_dir, ""));
            project_root.to_path_buf()
        }
    };
    create_local_dir(conn, &local)?;
    args.push(dir_arg(&local));
    // A build that produced no such directory has nothing to return.
    let missing_ok = matches!(what, Pull::Dir { .. } | Pull::Files { .. });
    run_rsync(conn, args, &list, remote_dir, missing_ok, "pull").await
}

/// rsync's exit code for "some files vanished before they could be transferred".
const RSYNC_VANISHED: i32 = 24;

/// What rsync reports when the source directory does not exist.
const MISSING_SOURCE: &str = "No such file or directory";

/// `-a`, and ssh through the master's control socket (or the worker agent).
pub(crate) fn rsync_base_args(conn: &Connection) -> Vec<OsString> {
    // Through the worker agent when there is one: no login shell for rsync.
    let ssh = super::agent::rsync_shell(conn).unwrap_or_else(|| {
        let control = conn.control_path().to_string_lossy();
        format!(
            "ssh -S {} -o ControlMaster=no -o BatchMode=yes",
            quote(&control)
        )
    });
    // Compare mtimes to the nanosecond, both ways: an edit, or a relink on
    // the worker, that keeps a file's size within the same second must
    // still be sent.
    vec![
        "-a".into(),
        "--modify-window=-1".into(),
        "-e".into(),
        ssh.into(),
    ]
}

fn push_excludes<'a>(args: &mut Vec<OsString>, patterns: impl Iterator<Item = &'a str>) {
    for pattern in patterns {
        args.push(format!("--exclude={pattern}").into());
    }
}

/// Create the local directory a pull lands in; failing is a local fault.
pub(crate) fn create_local_dir(conn: &Connection, local: &Path) -> Result<(), RemoteFailure> {
    std::fs::create_dir_all(local).map_err(|e| {
        RemoteFailure::new(
            FailureKind::Local,
            conn.worker_id(),
            format!("cannot create {}: {e}", local.display()),
        )
    })
}

/// A local directory with a trailing slash: rsync copies its contents.
pub(crate) fn dir_arg(dir: &Path) -> OsString {
    let mut arg = PathBuf::from(dir).into_os_string();
    arg.push("/");
    arg
}

/// `rch-mux:<remote_dir>/<rel>/`; rsync escapes remote names itself.
pub(crate) fn remote_arg(remote_dir: &str, rel: &str) -> OsString {
    let dir = remote_dir.trim_end_matches('/');
    if rel.is_empty() {
        format!("{MUX_HOST}:{dir}/").into()
    } else {
        format!("{MUX_HOST}:{dir}/{rel}/").into()
    }
}

/// Runs rsync with `args`, `input` on its stdin (a file or filter list);
/// with `missing_ok`, a source that does not exist is no failure. On a
/// terminal its progress shows as the `what` ("push", "pull") line.
pub(crate) async fn run_rsync(
    conn: &Connection,
    mut args: Vec<OsString>,
    input: &[u8],
    remote_dir: &str,
    missing_ok: bool,
    what: &'static str,
) -> Result<(), RemoteFailure> {
    let shown = progress::enabled();
    if shown {
        args.insert(0, "--info=progress2".into());
    }
    // The summary gives the bytes on the wire and the files sent: a sample
    // of the link when the bytes, not the files, took the time.
    args.insert(0, "--info=stats2".into());
    let links = link::default_dir();
    let measured = link::measured(&links, conn.worker_id());
    if link::compresses(conn.compress(), measured) {
        tracing::debug!(worker = conn.worker_id(), measured, "rsync compresses");
        args.insert(0, "-z".into());
    }
    let started = std::time::Instant::now();
    let cannot = |e: std::io::Error| {
        RemoteFailure::new(
            FailureKind::Local,
            conn.worker_id(),
            format!("cannot run rsync here: {e}"),
        )
    };
    let mut child = Command::new("rsync")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: an interrupt is rch's to handle (see
        // `Connection::command`); dropping the transfer kills rsync.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(cannot)?;
    let stdin = child.stdin.take();
    let feed = async move {
        use tokio::io::AsyncWriteExt;
        // A write error shows up as rsync's own failure; dropping stdin is
        // the list's end.
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(input).await;
        }
    };
    let stdout = child.stdout.take();
    let show = async move {
        use tokio::io::AsyncReadExt;
        let mut text = Vec::new();
        let Some(mut stdout) = stdout else {
            return text;
        };
        let mut line = shown.then(|| progress::Line::new(what));
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Some(line) = line.as_mut() {
                line.feed(&buf[..n]);
            }
            // Keep the end only: the summary is rsync's last line.
            text.extend_from_slice(&buf[..n]);
            if text.len() > 64 * 1024 {
                text.drain(..text.len() - 4096);
            }
        }
        text
    };
    let (_, text, output) = tokio::join!(feed, show, child.wait_with_output());
    if let Some(bytes) = link::wire_bytes(&String::from_utf8_lossy(&text)) {
        link::record(&links, conn.worker_id(), bytes, started.elapsed());
    }
    let output = output.map_err(cannot)?;
    if output.status.success() {
        return Ok(());
    }
    // Files that vanished on the worker while being listed (a process the
    // build left behind, cleaning up) are the build's doing, never a fault of
    // the worker; everything else arrived.
    if output.status.code() == Some(RSYNC_VANISHED) {
        tracing::debug!(stderr = %String::from_utf8_lossy(&output.stderr), "files vanished during a transfer");
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if missing_ok && stderr.contains(MISSING_SOURCE) {
        return Ok(());
    }
    Err(classify_rsync(
        conn.worker_id(),
        remote_dir,
        output.status.code(),
        &stderr,
    ))
}
