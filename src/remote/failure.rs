//! What went wrong on the remote side, typed: a [`FailureKind`] the breaker
//! and the fallback logic act on, plus one line for humans naming the worker.
//!
//! This is also the one place that reads the words of ssh and rsync to decide
//! a kind: their error text is the only report they give, so it is read here,
//! where the failure is born, and never again further up.

use serde::{Deserialize, Serialize};

/// Why an attempt failed around the build (never the build's own exit code).
///
/// Every kind but `Local`, `MissingTool` and `MirrorUnavailable` is a fault of the worker or the
/// way to it; `Local` is a problem on this machine (rsync or ssh missing here,
/// an unusable local path), which no worker is charged for and no other worker
/// would fix.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Local,
    ConnectRefused,
    ConnectTimeout,
    Auth,
    HostKey,
    Transfer,
    RemoteDir,
    ConnectionLost,
    Killed,
    Timeout,
    /// The command is not installed there: a routing fact, not a fault.
    MissingTool,
    /// The worker cannot run the build at the client's path: a routing
    /// fact (the build goes elsewhere), never a breaker charge.
    MirrorUnavailable,
    #[default]
    Other,
}

impl FailureKind {
    /// Every kind, for tables and metrics that list them all.
    pub const ALL: [FailureKind; 13] = [
        FailureKind::Local,
        FailureKind::ConnectRefused,
        FailureKind::ConnectTimeout,
        FailureKind::Auth,
        FailureKind::HostKey,
        FailureKind::Transfer,
        FailureKind::RemoteDir,
        FailureKind::ConnectionLost,
        FailureKind::Killed,
        FailureKind::Timeout,
        FailureKind::MissingTool,
        FailureKind::MirrorUnavailable,
        FailureKind::Other,
    ];

    /// Whether the worker is to blame: only such failures touch its breaker.
    /// A tool the worker lacks, or a client path it cannot provide, is a
    /// routing fact, not a fault.
    pub fn is_worker_fault(self) -> bool {
        !matches!(
            self,
            FailureKind::Local | FailureKind::MissingTool | FailureKind::MirrorUnavailable
        )
    }

    /// The snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Local => "local",
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Auth => "auth",
            FailureKind::HostKey => "host_key",
            FailureKind::Transfer => "transfer",
            FailureKind::RemoteDir => "remote_dir",
            FailureKind::ConnectionLost => "connection_lost",
            FailureKind::Killed => "killed",
            FailureKind::Timeout => "timeout",
            FailureKind::MissingTool => "missing_tool",
            FailureKind::MirrorUnavailable => "mirror_unavailable",
            FailureKind::Other => "other",
        }
    }
}

/// An infrastructure failure; `message` is one line naming the worker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct RemoteFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl RemoteFailure {
    /// A failure on `worker`; the message becomes `"<worker>: <detail>"`, folded to one line.
    pub fn new(kind: FailureKind, worker: &str, detail: impl AsRef<str>) -> Self {
        RemoteFailure {
            kind,
            message: format!("{worker}: {}", one_line(detail.as_ref())),
        }
    }
}

/// Joins the non-empty lines of `text` with "; " so a message stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first non-empty line of a tool's error output, trimmed.
pub(crate) fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

/// The last non-empty line of a tool's error output, trimmed (where ssh puts
/// its own verdict after any banner or warning).
pub(crate) fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// A RemoteDir failure for `dir`, with the reason taken from the last line of
/// the remote error output (e.g. "Permission denied").
pub(crate) fn remote_dir_failure(worker: &str, dir: &str, stderr: &str) -> RemoteFailure {
    let last = last_line(stderr).unwrap_or("failed");
    let reason = last.rsplit(": ").next().unwrap_or(last);
    RemoteFailure::new(
        FailureKind::RemoteDir,
        worker,
        format!("remote dir {dir} not writable: {reason}"),
    )
}

/// Where a failed ssh connect was headed: enough to name the worker and the
/// command that fixes a host-key problem.
pub(crate) struct ConnectSite<'a> {
    /// The configured host (or ssh alias).
    pub host: &'a str,
    /// The configured port, if any.
    pub port: Option<u16>,
    /// The connect timeout in force, for the timeout message.
    pub timeout_secs: u64,
}

impl ConnectSite<'_> {
    /// `host:port` when the port is configured, else the host (alias) alone.
    fn address(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    /// The command that adds the worker's host key to known_hosts.
    fn keyscan(&self) -> String {
        let port = self.port.map(|p| format!("-p {p} ")).unwrap_or_default();
        format!("ssh-keyscan {port}{} >> ~/.ssh/known_hosts", self.host)
    }
}

/// The kind and detail of a failed ssh connect, from what ssh printed; host
/// key and key file problems name the command or setting that fixes them.
pub(crate) fn classify_connect(text: &str, site: &ConnectSite) -> (FailureKind, String) {
    let addr = site.address();
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return (
            FailureKind::HostKey,
            format!(
                "host key verification failed: host key of {addr} has changed; if the worker \
                 was reinstalled, drop the old key with `ssh-keygen -R {}` and add the new one \
                 with `{}`",
                site.host,
                site.keyscan()
            ),
        );
    }
    if text.contains("Host key verification failed") || text.contains("host key is known") {
        return (
            FailureKind::HostKey,
            format!(
                "host key verification failed ({addr}): its key is not in known_hosts; add it \
                 with `{}` or set strict_host_key_checking = \"accept-new\" in [ssh]",
                site.keyscan()
            ),
        );
    }
    if text.contains("Connection refused") {
        return (
            FailureKind::ConnectRefused,
            format!("ssh connect refused ({addr})"),
        );
    }
    if text.contains("timed out") {
        return (
            FailureKind::ConnectTimeout,
            format!(
                "ssh connect timed out after {}s ({addr})",
                site.timeout_secs
            ),
        );
    }
    let verdict = last_line(text).unwrap_or("unknown error");
    if text.contains("Permission denied") || text.contains("Too many authentication failures") {
        // ssh skips a key file it cannot read with only a warning: say so.
        let detail = match text.lines().find(|l| l.contains("Identity file")) {
            Some(unreadable) => format!(
                "{}; check identity_file (`rch config validate`)",
                unreadable.trim().trim_start_matches("Warning: ")
            ),
            None => verdict.to_string(),
        };
        return (
            FailureKind::Auth,
            format!("ssh authentication failed ({addr}): {detail}"),
        );
    }
    if text.contains("closed by remote host") || text.contains("Connection reset") {
        return (
            FailureKind::ConnectionLost,
            format!("ssh connection closed during connect ({addr})"),
        );
    }
    (
        FailureKind::Other,
        format!("ssh connect failed ({addr}): {verdict}"),
    )
}

/// A failed rsync run: ssh's 255 means the link went away; remote filesystem
/// errors mean the worker's build directory is unusable; anything else is a
/// transfer error.
pub(crate) fn classify_rsync(
    worker: &str,
    remote_dir: &str,
    code: Option<i32>,
    stderr: &str,
) -> RemoteFailure {
    let first = first_line(stderr).unwrap_or("no error output");
    if code == Some(255) {
        return RemoteFailure::new(
            FailureKind::ConnectionLost,
            worker,
            format!("connection lost during transfer: {first}"),
        );
    }
    let remote_dir_errors = [
        "Permission denied",
        "Not a directory",
        "No space left",
        "mkdir:",
    ];
    if let Some(line) = stderr
        .lines()
        .find(|l| remote_dir_errors.iter().any(|e| l.contains(e)))
    {
        return remote_dir_failure(worker, remote_dir, line);
    }
    let code = code.map_or_else(|| "signal".to_string(), |c| c.to_string());
    RemoteFailure::new(
        FailureKind::Transfer,
        worker,
        format!("rsync failed ({code}): {first}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_names_the_worker_on_one_line() {
        let f = RemoteFailure::new(FailureKind::Transfer, "w1", "rsync failed\n  code 12\n");
        assert_eq!(f.to_string(), "w1: rsync failed; code 12");
    }

    #[test]
    fn failure_kind_serializes_snake_case() {
        for kind in FailureKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<FailureKind>(&json).unwrap(), kind);
        }
    }

    const SITE: ConnectSite<'static> = ConnectSite {
        host: "127.0.0.1",
        port: Some(2222),
        timeout_secs: 5,
    };

    fn kind_of(text: &str) -> FailureKind {
        classify_connect(text, &SITE).0
    }

    #[test]
    fn host_key_and_auth_messages_name_the_fix() {
        let unknown = "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.";
        let (_, text) = classify_connect(unknown, &SITE);
        assert!(
            text.contains("ssh-keyscan -p 2222 127.0.0.1 >> ~/.ssh/known_hosts")
                && text.contains("strict_host_key_checking = \"accept-new\""),
            "{text}"
        );
        let changed = "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.";
        let (_, text) = classify_connect(changed, &SITE);
        assert!(text.contains("ssh-keygen -R 127.0.0.1"), "{text}");
        let no_key = "Warning: Identity file /home/u/.ssh/gone not accessible: No such file or directory.\nbuilder@127.0.0.1: Permission denied (publickey).";
        let (kind, text) = classify_connect(no_key, &SITE);
        assert_eq!(kind, FailureKind::Auth);
        assert!(
            text.contains("Identity file /home/u/.ssh/gone not accessible")
                && text.contains("rch config validate"),
            "{text}"
        );
    }

    #[test]
    fn ssh_texts_map_to_failure_kinds() {
        assert_eq!(
            kind_of("ssh: connect to host 127.0.0.1 port 2222: Connection refused"),
            FailureKind::ConnectRefused
        );
        assert_eq!(
            kind_of("Connection timed out during banner exchange\nConnection to 127.0.0.1 port 2222 timed out"),
            FailureKind::ConnectTimeout
        );
        assert_eq!(
            kind_of("builder@127.0.0.1: Permission denied (publickey)."),
            FailureKind::Auth
        );
        assert_eq!(
            kind_of("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed."),
            FailureKind::HostKey
        );
        assert_eq!(
            kind_of("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed."),
            FailureKind::HostKey
        );
    }

    #[test]
    fn refused_message_names_worker_and_address() {
        let (kind, detail) = classify_connect("Connection refused", &SITE);
        let f = RemoteFailure::new(kind, "w1", detail);
        assert_eq!(f.message, "w1: ssh connect refused (127.0.0.1:2222)");
    }

    #[test]
    fn remote_dir_failure_keeps_the_reason() {
        let f = remote_dir_failure(
            "w1",
            "~/.cache/rch/builds/app-1a2b",
            "mkdir: cannot create directory '/x': Permission denied\n",
        );
        assert_eq!(f.kind, FailureKind::RemoteDir);
        assert_eq!(
            f.message,
            "w1: remote dir ~/.cache/rch/builds/app-1a2b not writable: Permission denied"
        );
    }

    #[test]
    fn rsync_failures_are_classified() {
        let lost = classify_rsync(
            "w1",
            "d",
            Some(255),
            "rsync: connection unexpectedly closed",
        );
        assert_eq!(lost.kind, FailureKind::ConnectionLost);
        let dir = classify_rsync(
            "w1",
            "d",
            Some(12),
            "mkdir: cannot create directory 'd': Permission denied\nrsync: connection unexpectedly closed\n",
        );
        assert_eq!(dir.kind, FailureKind::RemoteDir);
        assert_eq!(
            dir.message,
            "w1: remote dir d not writable: Permission denied"
        );
        let other = classify_rsync("w1", "d", Some(23), "rsync: some error\n");
        assert_eq!(other.kind, FailureKind::Transfer);
    }

    #[test]
    fn first_and_last_lines_skip_blank_ones() {
        assert_eq!(first_line("\n  a \nb\n\n"), Some("a"));
        assert_eq!(last_line("\n  a \nb\n\n"), Some("b"));
        assert_eq!(first_line(" \n"), None);
    }
}
