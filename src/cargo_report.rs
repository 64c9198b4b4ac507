//! cargo's own report of what a build produced, for builds on a worker.
//!
//! The remote cargo runs with `--message-format=json-render-diagnostics`:
//! diagnostics stay rendered on stderr, and stdout carries one JSON message
//! a line. [`ReportFilter`] keeps those lines off the terminal while anything
//! else on stdout passes as it comes; [`Report`] reads them once for every
//! use: the artifacts the user gets (what comes back after the build), the
//! program `cargo run` runs, the `Executable` lines `cargo test --no-run`
//! prints without the JSON format. A report that cannot be trusted says
//! why, and the build brings back its whole output directory instead.

use crate::classify::Kind;
use cargo_metadata::{Artifact, Message, TargetKind};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// The message format asked of a remote cargo.
pub const MESSAGE_FORMAT: &str = "--message-format=json-render-diagnostics";

/// Whether a remote cargo command is asked for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Add [`MESSAGE_FORMAT`] after the subcommand at this index of argv.
    At(usize),
    /// The report would not say what the build wrote: bring back the whole
    /// output directory (the reason goes to the debug log).
    Not(String),
}

/// Options after which cargo's report does not cover what the build wrote,
/// or which change cargo's output on stdout.
const UNTRUSTED_OPTIONS: &[&str] = &[
    "--message-format",
    "--out-dir",
    "--artifact-dir",
    "--build-plan",
    "--unit-graph",
];

/// Whether `argv` (a cargo build whose outputs come back, of `kind`) gets
/// the report, and where the option goes. `cargo run` is split by
/// [`crate::cargo_run`], which asks for it itself.
pub fn ask(argv: &[OsString], kind: Kind) -> Ask {
    let words: Option<Vec<&str>> = argv.iter().map(|a| a.to_str()).collect();
    let Some(words) = words else {
        return Ask::Not("an argument is not UTF-8".into());
    };
    let Ok(Some(sub)) = crate::classify::cargo_subcommand_at(&words[1..]) else {
        return Ask::Not("no cargo subcommand found".into());
    };
    let options = words.iter().take_while(|w| **w != "--");
    for word in options {
        if let Some(option) = UNTRUSTED_OPTIONS.iter().find(|o| word.starts_with(**o)) {
            return Ask::Not(format!("{option} given"));
        }
    }
    match kind {
        Kind::Build | Kind::Test | Kind::Bench => Ask::At(sub + 2),
        other => Ask::Not(format!("cargo {} has no artifact report", other.as_str())),
    }
}

/// `argv` with the report asked for as `ask` says.
pub fn with_report(argv: &[OsString], ask: &Ask) -> Vec<OsString> {
    let mut out = argv.to_vec();
    if let Ask::At(at) = ask {
        out.insert((*at).min(out.len()), MESSAGE_FORMAT.into());
    }
    out
}

/// cargo's messages from one build, read once.
#[derive(Debug, Default)]
pub struct Report {
    messages: Vec<Message>,
    /// Why it cannot be trusted, if so.
    broken: Option<String>,
}

impl Report {
    /// Read the JSON lines cargo printed (non-JSON lines were passed on).
    pub fn parse(bytes: &[u8]) -> Report {
        let mut report = Report::default();
        for message in Message::parse_stream(bytes) {
            match message {
                Ok(Message::TextLine(_)) => {}
                Ok(m) => report.messages.push(m),
                Err(e) => {
                    report.broken = Some(format!("cargo's report cannot be read: {e}"));
                }
            }
        }
        let finished = report
            .messages
            .iter()
            .any(|m| matches!(m, Message::BuildFinished(f) if f.success));
        if !finished && report.broken.is_none() {
            report.broken = Some("cargo's report has no successful build-finished".into());
        }
        report
    }

    /// The compiler artifacts, in the order cargo reported them.
    pub fn artifacts(&self) -> impl Iterator<Item = &Artifact> {
        self.messages.iter().filter_map(|m| match m {
            Message::CompilerArtifact(a) => Some(a),
            _ => None,
        })
    }

    /// The files the user gets from this build, as the worker named them:
    /// executables and the filenames of libraries meant to be loaded or
    /// linked by other tools (cdylib, staticlib, dylib) of the project's own
    /// packages. `Err` is why the report does not cover what was written.
    pub fn user_files(&self) -> Result<Vec<String>, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if let Some(package) = self.own_build_script_ran() {
            return Err(format!(
                "the build script of {package} ran (it may write beyond what cargo reports)"
            ));
        }
        let mut files = Vec::new();
        for artifact in self.artifacts().filter(|a| is_own(a)) {
            if let Some(exe) = &artifact.executable {
                files.push(exe.to_string());
            }
            if is_loadable_library(artifact) {
                files.extend(artifact.filenames.iter().map(|f| f.to_string()));
            }
        }
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// A package of the project whose build script ran in this build: it
    /// had a build script, and cargo rebuilt the package (a build script
    /// that ran always makes its package build again).
    fn own_build_script_ran(&self) -> Option<String> {
        let scripted: Vec<&str> = self
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::BuildScriptExecuted(s) if s.package_id.repr.starts_with("path+") => {
                    Some(s.package_id.repr.as_str())
                }
                _ => None,
            })
            .collect();
        self.artifacts()
            .find(|a| !a.fresh && scripted.contains(&a.package_id.repr.as_str()))
            .map(|a| a.target.name.clone())
    }

    /// The test executables of `cargo test --no-run`, in cargo's order.
    pub fn test_executables(&self) -> Vec<TestExecutable> {
        let mut found: Vec<(u8, &Artifact)> = self
            .artifacts()
            .filter(|a| a.profile.test && is_own(a))
            .filter_map(|a| Some((kind_rank(a)?, a)))
            .filter(|(_, a)| a.executable.is_some())
            .collect();
        found.sort_by(|(ra, a), (rb, b)| {
            (package_name(a), *ra, &a.target.name).cmp(&(package_name(b), *rb, &b.target.name))
        });
        found
            .into_iter()
            .map(|(rank, a)| {
                let dir = a.manifest_path.parent().map(|p| p.as_str()).unwrap_or("");
                let src = a.target.src_path.as_str();
                let short = src
                    .strip_prefix(dir)
                    .map(|s| s.trim_start_matches('/'))
                    .unwrap_or(src);
                TestExecutable {
                    unittests: rank != RANK_TEST && rank != RANK_BENCH,
                    source: short.to_string(),
                    remote: a
                        .executable
                        .as_ref()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// One test binary built by `cargo test --no-run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestExecutable {
    /// A target's unit tests (`unittests src/lib.rs`), not a `tests/` or `benches/` file.
    pub unittests: bool,
    /// The target's source, relative to its package.
    pub source: String,
    /// The executable as the worker named it.
    pub remote: String,
}

/// The line cargo prints for a test binary it built with `--no-run` (its
/// status word right-aligned, green and bold when coloured): the
/// executable relative to `cwd` when below it; `verbose` shows the command.
pub fn executable_line(
    test: &TestExecutable,
    local: &Path,
    cwd: &Path,
    verbose: bool,
    colour: bool,
) -> String {
    let status = if colour {
        "\x1b[1m\x1b[92m  Executable\x1b[0m"
    } else {
        "  Executable"
    };
    if verbose {
        return format!("{status} `{}`", local.display());
    }
    let shown = local.strip_prefix(cwd).unwrap_or(local);
    let what = if test.unittests { "unittests " } else { "" };
    format!("{status} {what}{} ({})", test.source, shown.display())
}

const RANK_TEST: u8 = 2;
const RANK_BENCH: u8 = 3;

/// The order cargo lists a package's targets in.
fn kind_rank(artifact: &Artifact) -> Option<u8> {
    let kinds = &artifact.target.kind;
    let has = |k: TargetKind| kinds.contains(&k);
    if has(TargetKind::Bin) {
        Some(1)
    } else if has(TargetKind::Test) {
        Some(RANK_TEST)
    } else if has(TargetKind::Bench) {
        Some(RANK_BENCH)
    } else if has(TargetKind::Example) {
        Some(4)
    } else if has(TargetKind::CustomBuild) {
        None
    } else {
        Some(0)
    }
}

fn package_name(artifact: &Artifact) -> &str {
    let id = artifact.package_id.repr.as_str();
    let fragment = id.rsplit_once('#').map_or(id, |(_, f)| f);
    match fragment.split_once('@') {
        Some((name, _)) => name,
        None => id
            .rsplit_once('#')
            .and_then(|(url, _)| url.rsplit('/').next())
            .unwrap_or(id),
    }
}

/// A package of the project (a path package), not a registry or git one.
fn is_own(artifact: &Artifact) -> bool {
    artifact.package_id.repr.starts_with("path+")
}

/// A library meant for other tools: a cdylib, staticlib or dylib.
fn is_loadable_library(artifact: &Artifact) -> bool {
    artifact.target.kind.iter().any(|k| {
        matches!(
            k,
            TargetKind::CDyLib | TargetKind::StaticLib | TargetKind::DyLib
        )
    })
}

/// `remote` (an absolute path on the worker) under `local_root`: the part
/// after the project's directory on the worker (relative to the remote home
/// when `remote_dir` is relative).
pub fn local_path(remote: &str, remote_dir: &str, local_root: &Path) -> Option<PathBuf> {
    let dir = remote_dir.trim_end_matches('/');
    let dir = dir.strip_prefix("./").unwrap_or(dir);
    let rest = if dir.starts_with('/') {
        remote.strip_prefix(dir)?
    } else {
        let at = remote.find(&format!("/{dir}/"))?;
        &remote[at + dir.len() + 1..]
    };
    let rest = rest.strip_prefix('/')?;
    // cargo reports paths as the build spelled them (`src/../target/...`
    // when the target dir was given relative to a subdirectory): resolve
    // `..` by name, refusing any that climbs out of the project.
    let mut kept: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                kept.pop()?;
            }
            name => kept.push(name),
        }
    }
    Some(local_root.join(kept.join("/")))
}

/// The remote cargo's stdout on its way to ours: cargo's JSON messages are
/// kept for the [`Report`], every other line passes at once (a line that
/// does not start with `{` is passed before its end arrives).
pub struct ReportFilter<W> {
    inner: W,
    /// The JSON lines, as received.
    pub report: Vec<u8>,
    /// The current line while it may still be a message.
    line: Vec<u8>,
    /// The current line is text: pass the rest of it.
    passing: bool,
    /// Text accepted but not yet written to `inner`.
    pending: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> ReportFilter<W> {
    pub fn new(inner: W) -> Self {
        ReportFilter {
            inner,
            report: Vec::new(),
            line: Vec::new(),
            passing: false,
            pending: Vec::new(),
        }
    }

    /// Sort `bytes` into report and text.
    fn take(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.passing {
                self.pending.push(b);
                if b == b'\n' {
                    self.passing = false;
                }
                continue;
            }
            if self.line.is_empty() && b != b'{' {
                self.pending.push(b);
                self.passing = b != b'\n';
                continue;
            }
            self.line.push(b);
            if b == b'\n' {
                self.end_line();
            }
        }
    }

    /// A whole line that began with `{`: a message of cargo's, or text.
    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if is_message(&line) {
            self.report.extend_from_slice(&line);
        } else {
            self.pending.extend_from_slice(&line);
        }
    }

    /// The stream ended: an unfinished line is decided as it stands.
    pub fn finish(&mut self) -> Vec<u8> {
        if !self.line.is_empty() {
            self.end_line();
        }
        std::mem::take(&mut self.pending)
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

/// A line of cargo's JSON report (every message names its `reason`).
fn is_message(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v.get("reason").is_some_and(|r| r.is_string()))
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ReportFilter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.take(buf);
        // Written now if the writer takes it, else at the next write or flush.
        let _ = this.poll_pending(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn os(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    /// A compiler-artifact message as cargo prints it.
    pub(crate) fn artifact(
        package: &str,
        name: &str,
        kind: &str,
        files: &[&str],
        exe: Option<&str>,
        test: bool,
        fresh: bool,
    ) -> String {
        let exe = exe.map_or("null".to_string(), |e| format!("\"{e}\""));
        let files: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
        format!(
            r#"{{"reason":"compiler-artifact","package_id":"{package}","manifest_path":"/r/p/Cargo.toml","target":{{"kind":["{kind}"],"crate_types":["{kind}"],"name":"{name}","src_path":"/r/p/src/{name}.rs","edition":"2021","doc":true,"doctest":false,"test":true}},"profile":{{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":{test}}},"features":[],"filenames":[{}],"executable":{exe},"fresh":{fresh}}}"#,
            files.join(",")
        )
    }

    const OWN: &str = "path+file:///r/p#app@0.1.0";
    const DEP: &str = "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0";
    const FINISHED: &str = r#"{"reason":"build-finished","success":true}"#;

    #[test]
    fn the_report_goes_after_the_subcommand_unless_the_user_shapes_the_output() {
        assert_eq!(ask(&os("cargo build --release"), Kind::Build), Ask::At(2));
        assert_eq!(
            ask(&os("cargo +nightly -q test --no-run"), Kind::Test),
            Ask::At(4)
        );
        let with = with_report(&os("cargo test --no-run -- --x"), &Ask::At(2));
        assert_eq!(
            with,
            os(&format!("cargo test {MESSAGE_FORMAT} --no-run -- --x"))
        );
        for untrusted in [
            "cargo build --message-format=short",
            "cargo build -Zunstable-options --artifact-dir out",
            "cargo build --out-dir=out",
        ] {
            assert!(
                matches!(ask(&os(untrusted), Kind::Build), Ask::Not(_)),
                "{untrusted}"
            );
        }
        // After `--` the words are the test binary's.
        assert_eq!(
            ask(&os("cargo test --no-run -- --out-dir"), Kind::Test),
            Ask::At(2)
        );
    }

    #[test]
    fn the_user_gets_executables_and_loadable_libraries_of_own_packages() {
        let report = [
            artifact(
                DEP,
                "serde",
                "lib",
                &["/r/p/target/debug/deps/libserde-1.rlib"],
                None,
                false,
                true,
            ),
            artifact(
                OWN,
                "app",
                "lib",
                &["/r/p/target/debug/deps/libapp-2.rlib"],
                None,
                false,
                false,
            ),
            artifact(
                OWN,
                "app",
                "bin",
                &["/r/p/target/debug/app"],
                Some("/r/p/target/debug/app"),
                false,
                false,
            ),
            artifact(
                OWN,
                "plug",
                "cdylib",
                &["/r/p/target/debug/libplug.so"],
                None,
                false,
                false,
            ),
            artifact(
                OWN,
                "ex",
                "example",
                &["/r/p/target/debug/examples/ex"],
                Some("/r/p/target/debug/examples/ex"),
                false,
                true,
            ),
            FINISHED.to_string(),
        ]
        .join("\n");
        let files = Report::parse(report.as_bytes()).user_files().unwrap();
        assert_eq!(
            files,
            [
                "/r/p/target/debug/app",
                "/r/p/target/debug/examples/ex",
                "/r/p/target/debug/libplug.so"
            ]
        );
    }

    #[test]
    fn a_report_that_does_not_cover_the_build_is_refused() {
        assert!(Report::parse(b"").user_files().is_err());
        let unfinished = artifact(
            OWN,
            "app",
            "bin",
            &[],
            Some("/r/p/target/debug/app"),
            false,
            false,
        );
        assert!(Report::parse(unfinished.as_bytes()).user_files().is_err());
        let script = r#"{"reason":"build-script-executed","package_id":"path+file:///r/p#app@0.1.0","linked_libs":[],"linked_paths":[],"cfgs":[],"env":[],"out_dir":"/r/p/target/debug/build/app-1/out"}"#;
        let bin = |fresh| {
            artifact(
                OWN,
                "app",
                "bin",
                &[],
                Some("/r/p/target/debug/app"),
                false,
                fresh,
            )
        };
        let ran = [script, &bin(false), FINISHED].join("\n");
        assert!(Report::parse(ran.as_bytes()).user_files().is_err());
        // All fresh: the script did not run this time.
        let fresh = [script, &bin(true), FINISHED].join("\n");
        assert!(Report::parse(fresh.as_bytes()).user_files().is_ok());
    }

    #[test]
    fn test_binaries_are_listed_as_cargo_lists_them() {
        let report = [
            artifact(
                OWN,
                "it",
                "test",
                &[],
                Some("/r/p/target/debug/deps/it-1"),
                true,
                false,
            ),
            artifact(
                OWN,
                "app",
                "bin",
                &[],
                Some("/r/p/target/debug/deps/app-2"),
                true,
                false,
            ),
            artifact(
                OWN,
                "app",
                "bin",
                &[],
                Some("/r/p/target/debug/app"),
                false,
                false,
            ),
            artifact(
                OWN,
                "app",
                "lib",
                &[],
                Some("/r/p/target/debug/deps/app-3"),
                true,
                false,
            ),
            FINISHED.to_string(),
        ]
        .join("\n");
        let tests = Report::parse(report.as_bytes()).test_executables();
        let shown: Vec<String> = tests
            .iter()
            .map(|t| {
                let local = Path::new("/l").join(t.remote.strip_prefix("/r/p/").unwrap());
                executable_line(t, &local, Path::new("/l"), false, false)
            })
            .collect();
        assert_eq!(
            shown,
            [
                "  Executable unittests src/app.rs (target/debug/deps/app-3)",
                "  Executable unittests src/app.rs (target/debug/deps/app-2)",
                "  Executable src/it.rs (target/debug/deps/it-1)",
            ]
        );
        let verbose = executable_line(&tests[2], Path::new("/l/x"), Path::new("/o"), true, true);
        assert_eq!(verbose, "\x1b[1m\x1b[92m  Executable\x1b[0m `/l/x`");
    }

    #[tokio::test]
    async fn json_lines_stay_in_the_report_and_text_passes() {
        let mut out = Vec::new();
        let mut filter = ReportFilter::new(&mut out);
        filter
            .write_all(b"hello from a proc macro\n{\"reason\":\"build-")
            .await
            .unwrap();
        filter
            .write_all(b"finished\",\"success\":true}\npartial")
            .await
            .unwrap();
        filter
            .write_all(b" line\n{not json}\n{\"reason\":")
            .await
            .unwrap();
        filter.flush().await.unwrap();
        let rest = filter.finish();
        let report = std::mem::take(&mut filter.report);
        drop(filter);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "hello from a proc macro\npartial line\n{not json}\n"
        );
        assert_eq!(rest, b"{\"reason\":");
        assert_eq!(
            report,
            b"{\"reason\":\"build-finished\",\"success\":true}\n"
        );
    }

    #[test]
    fn remote_paths_map_under_the_local_root() {
        let root = Path::new("/home/me/app");
        assert_eq!(
            local_path(
                "/home/w/.cache/rch/builds/app-0123/target/debug/app",
                ".cache/rch/builds/app-0123",
                root
            ),
            Some(root.join("target/debug/app"))
        );
        assert_eq!(
            local_path("/srv/b/app-1/target/x", "/srv/b/app-1/", root),
            Some(root.join("target/x"))
        );
        assert_eq!(local_path("/srv/b/other/x", "/srv/b/app-1", root), None);
        assert_eq!(local_path("/srv/b/app-1/../x", "/srv/b/app-1", root), None);
        assert_eq!(
            local_path("/srv/b/app-1/src/../target/x", "/srv/b/app-1", root),
            Some(root.join("target/x"))
        );
    }
}
