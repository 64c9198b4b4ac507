//! The path of one build: classify, lease, sync, run, bring artifacts back,
//! release, and fail over to the next worker or to local execution.
//!
//! Whatever fails around the build, its output and exit code reach the user:
//! a worker that fails as infrastructure is reported to the daemon and the
//! build moves on; only a build's own exit code is its answer.

use crate::build_files::{Layout, RemoteDir};
use crate::cargo_report::{self, Ask, Report};
use crate::cargo_run::{self, RunArgs};
use crate::classify::{self, Kind, Offload};
use crate::client::Client;
use crate::config::{Fallback, Loaded, WorkerConfig};
use crate::envrules::OnMismatch;
use crate::interrupt::{self, Interrupts};
use crate::phases::Phase;
use crate::protocol::{
    AttemptOutcome, Failover, JobOutcome, JobReport, LeaseRequest, Request, Response,
};
use crate::remote::{self, input::Input, upload::Upload, FailureKind, RemoteFailure, Target};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Set in the environment of every command rch runs locally (the remote
/// script sets it on the worker), so wrappers inside run the real tool
/// instead of calling rch again.
pub const INSIDE_VAR: &str = "RCH_INSIDE";

/// What the caller decided before the build (from config, env and flags).
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub argv: Vec<OsString>,
    pub cwd: PathBuf,
    pub quiet: bool,
    /// `-v`: also print where the build's time went.
    pub verbose: bool,
}

/// Where a build ran and why: the one stderr line of every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Remote(String),
    /// `cargo run`: built on the worker, the program (as shown) runs here.
    BuiltRemote {
        worker: String,
        program: String,
    },
    Local(String),
    /// Fail-closed: it ran nowhere (exit 75).
    Nowhere(String),
    /// The user interrupted it with this signal (and it was on this worker).
    Interrupted(i32, Option<String>),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Remote(worker) => write!(f, "rch: ran on {worker}"),
            Placement::BuiltRemote { worker, program } => {
                write!(f, "rch: built on {worker}, running locally: {program}")
            }
            Placement::Local(reason) => write!(f, "rch: ran locally: {reason}"),
            Placement::Nowhere(reason) => write!(f, "rch: could not run remotely: {reason}"),
            Placement::Interrupted(signal, Some(worker)) => {
                write!(
                    f,
                    "rch: interrupted by {} on {worker}",
                    interrupt::name(*signal)
                )
            }
            Placement::Interrupted(signal, None) => {
                write!(f, "rch: interrupted by {}", interrupt::name(*signal))
            }
        }
    }
}

/// Run an offloadable command the rch way and return its exit code.
pub async fn execute(loaded: &Loaded, req: &ExecRequest, offload: Offload) -> i32 {
    if !loaded.config.general.enabled {
        let why = match loaded.origin("general.enabled").to_string() {
            o if o.starts_with("env") => "disabled by RCH_DISABLE".to_string(),
            o => format!("rch disabled ({o})"),
        };
        return local_now(req, &why);
    }
    let layout = match crate::build_files::plan(loaded, &req.cwd, &req.argv, &offload) {
        Ok(layout) => layout,
        Err(why) => return no_remote(loaded, req, &why),
    };
    if let Some(why) = layout.unplaceable(&loaded.config.workers) {
        return no_remote(loaded, req, &why);
    }
    // Caught before anything else happens, so that an interrupt in any phase
    // ends the build as interrupted and is never taken for a worker's fault.
    let mut interrupts = Interrupts::catch();
    {
        use std::io::IsTerminal;
        remote::progress::enable(!req.quiet && std::io::stderr().is_terminal());
    }
    let mut build = Build::new(loaded, req, offload, layout);
    if req.verbose && !build.env.withheld.is_empty() {
        eprintln!("rch: env withheld: {}", build.env.withheld_line());
    }
    let span = tracing::info_span!("build", command = %build.job.command);
    let ended = tokio::select! {
        biased;
        signal = interrupts.next() => Err(signal),
        done = tracing::Instrument::instrument(build.run(), span) => Ok(done),
    };
    // An interrupted run future is dropped here: that kills its ssh and rsync
    // processes (the remote watcher then ends the command's process group) and
    // closes the daemon connection, which releases the lease with no verdict.
    let (code, placement) = match ended {
        Ok(done) => done,
        Err(signal) => build.interrupted(signal).await,
    };
    if build.stderr_mid_line && !req.quiet {
        eprintln!();
    }
    if let (Placement::Remote(worker), 0) = (&placement, code) {
        if let Some(run) = &build.run_args {
            return build.run_here(worker, run);
        }
    }
    announce(&placement, req.quiet);
    build.print_phases();
    code
}

/// Print where the build ran; a fail-closed refusal is printed even when quiet.
fn announce(placement: &Placement, quiet: bool) {
    if !quiet || matches!(placement, Placement::Nowhere(_)) {
        eprintln!("{placement}");
    }
}

/// The build's files rule out every worker: run here, or, fail-closed,
/// nowhere (exit 75).
fn no_remote(loaded: &Loaded, req: &ExecRequest, why: &str) -> i32 {
    if loaded.config.general.fallback == Fallback::Never {
        announce(&Placement::Nowhere(why.to_string()), req.quiet);
        return crate::EXIT_UNAVAILABLE;
    }
    local_now(req, why)
}

/// Run the command here right away (not offloadable, disabled, `--local`).
///
/// rch says where it runs first and then becomes the command (exec): nothing
/// stays between the user and the tool, so signals, the exit status and the
/// cost (one process start) are exactly those of calling the tool directly.
/// Returns only when the command could not be started.
pub fn local_now(req: &ExecRequest, why: &str) -> i32 {
    use std::os::unix::process::CommandExt;
    announce(&Placement::Local(why.to_string()), req.quiet);
    let Some((program, args)) = req.argv.split_first() else {
        return crate::EXIT_USAGE;
    };
    let err = std::process::Command::new(program)
        .args(args)
        .current_dir(&req.cwd)
        .env(INSIDE_VAR, "1")
        .exec();
    cannot_start(program, &err)
}

/// Report a command that could not be started; 127 when it does not exist.
fn cannot_start(program: &OsString, err: &std::io::Error) -> i32 {
    eprintln!("rch: cannot run {}: {err}", program.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Run the command here, stdio inherited; 128+N when it dies by signal N.
pub fn run_local(argv: &[OsString], cwd: &Path) -> i32 {
    run_local_with(argv, cwd, None)
}

/// [`run_local`]; when rch already took from stdin for a remote attempt,
/// the command reads its input from rch, from the first byte.
fn run_local_with(argv: &[OsString], cwd: &Path, input: Option<&Input>) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        return crate::EXIT_USAGE;
    };
    let mut command = std::process::Command::new(program);
    command.args(args).current_dir(cwd).env(INSIDE_VAR, "1");
    let Some(input) = input.filter(|i| i.started()) else {
        return match command.status() {
            Ok(s) => exit_code(s),
            Err(e) => cannot_start(program, &e),
        };
    };
    let mut child = match command.stdin(std::process::Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return cannot_start(program, &e),
    };
    if let Some(pipe) = child.stdin.take() {
        let input = input.clone();
        // Detached: it may wait on a stdin that never ends; exit ends it.
        std::thread::spawn(move || input.copy_to(pipe));
    }
    match child.wait() {
        Ok(s) => exit_code(s),
        Err(e) => cannot_start(program, &e),
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Whether a cargo build saw the client's environment.
enum EnvCheck {
    Same,
    /// Run again: the variables it read are now sent.
    Rerun(String),
    /// Do not use this result: run locally, or fail (exit 75).
    Refuse {
        line: String,
        fail: bool,
    },
}

/// What one attempt on a worker came to.
enum Attempt {
    /// The command ran there; its exit code.
    Ran(i32),
    /// It failed around the build; `started` = the command had begun.
    Failed {
        failure: RemoteFailure,
        started: bool,
    },
    /// The build read a variable the worker did not get as set here.
    EnvMismatch { line: String, fail: bool },
}

struct Build<'a> {
    loaded: &'a Loaded,
    req: &'a ExecRequest,
    offload: Offload,
    root: PathBuf,
    layout: Layout,
    job: JobReport,
    exclude: Vec<String>,
    /// What a worker must have for this build.
    needs: crate::caps::Needs,
    /// The worker of the attempt under way.
    current: Option<String>,
    /// The remote build's stderr ended without a newline.
    stderr_mid_line: bool,
    /// Which of our variables the worker gets.
    env: crate::envrules::EnvPlan,
    /// `cargo run` taken apart: the remote build and the local program.
    run_args: Option<RunArgs>,
    /// Where the last attempt's build saw its project on the worker (the
    /// paths in cargo's report start there).
    remote_dir: String,
    /// Whether the remote cargo reports its artifacts, and where the option
    /// goes; `None` for commands that bring nothing back or are not cargo.
    ask: Option<Ask>,
    /// cargo's report of the last run, when asked for.
    report: Report,
    /// The build already ran again for a variable it read (once only).
    env_rerun: bool,
    /// Why the daemon chose the last granted worker (the job's reason).
    grant_why: String,
    /// The build's stdin, when it has one to read (a pipe or a file).
    input: Option<Input>,
    /// The last remote cargo coloured its status lines.
    colour: bool,
}

impl<'a> Build<'a> {
    fn new(loaded: &'a Loaded, req: &'a ExecRequest, offload: Offload, layout: Layout) -> Self {
        let root = layout.root.clone();
        let exclude = layout.refused_by(&loaded.config.workers);
        let job = JobReport {
            project: root.display().to_string(),
            command: display_command(&req.argv),
            ..Default::default()
        };
        let needs = crate::needs::needs(&req.argv, &req.cwd, offload.tool);
        let env = crate::envrules::plan(std::env::vars_os(), &loaded.config.env);
        let ask = report_ask(req, &offload);
        tracing::debug!(
            forwarded = %env.forwarded_names().join(" "),
            withheld = %env.withheld_line(),
            "environment for the worker"
        );
        // `cargo run`'s stdin is the program's, which runs here.
        let input = (offload.kind != Kind::Run).then(Input::detect).flatten();
        Build {
            input,
            loaded,
            req,
            run_args: (offload.kind == Kind::Run)
                .then(|| run_args(&req.argv))
                .flatten(),
            offload,
            root,
            layout,
            job,
            exclude,
            needs,
            current: None,
            stderr_mid_line: false,
            env,
            env_rerun: false,
            remote_dir: String::new(),
            ask,
            report: Report::default(),
            grant_why: String::new(),
            colour: false,
        }
    }

    /// With `-v`: where the build's time went, on one line.
    fn print_phases(&self) {
        if self.req.verbose && !self.job.phases.is_empty() {
            eprintln!("rch: {}", self.job.phases);
        }
    }

    /// `cargo run` built on `worker`: run the program here, from cargo's
    /// report. Becomes the program; returns only when it cannot start it.
    fn run_here(&self, worker: &str, run: &RunArgs) -> i32 {
        let map = |remote: &str| self.layout.local_path(remote, &self.remote_dir);
        let found = cargo_run::find_program(&self.report, &run.wanted, map);
        match found {
            Ok(program) => {
                let shown = program
                    .path
                    .strip_prefix(&self.root)
                    .unwrap_or(&program.path);
                let placement = Placement::BuiltRemote {
                    worker: worker.to_string(),
                    program: shown.display().to_string(),
                };
                announce(&placement, self.req.quiet);
                self.print_phases();
                cargo_run::exec(&program, &run.program_args, &self.req.cwd)
            }
            Err(why) => {
                let reason = format!("built on {worker}, but {why}");
                announce(&Placement::Local(reason), self.req.quiet);
                run_local(&self.req.argv, &self.req.cwd)
            }
        }
    }

    /// Why this build cannot be described to a worker exactly, if so: the
    /// remote command is text, and a directory or argument that is not UTF-8
    /// would arrive changed. Such a build runs here; no worker is involved.
    fn unsendable(&self) -> Option<String> {
        let rel = self
            .req
            .cwd
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(""));
        if rel.to_str().is_none() {
            return Some(format!(
                "the directory {} is not UTF-8",
                self.req.cwd.display()
            ));
        }
        let arg = self.req.argv.iter().find(|a| a.to_str().is_none())?;
        Some(format!(
            "the argument {} is not UTF-8",
            arg.to_string_lossy()
        ))
    }

    /// The user interrupted the build: record it (best effort, on a fresh
    /// connection; the build's own is gone) and say so.
    async fn interrupted(&mut self, signal: i32) -> (i32, Placement) {
        let code = interrupt::exit_code(signal);
        self.job.worker = self.current.clone();
        self.job.outcome = JobOutcome::Interrupted;
        self.job.exit_code = Some(code);
        self.job.reason = format!("interrupted by {}", interrupt::name(signal));
        let socket = crate::paths::socket_path();
        let report = async {
            if let Ok(mut client) = Client::connect(&socket).await {
                let _ = client.call(Request::Job(self.job.clone())).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), report).await;
        (code, Placement::Interrupted(signal, self.current.clone()))
    }

    async fn run(&mut self) -> (i32, Placement) {
        if let Some(why) = self.unsendable() {
            return self.no_worker(None, why).await;
        }
        let socket = crate::paths::socket_path();
        let mut client = match Client::connect_or_start(&socket).await {
            Ok(c) => c,
            Err(e) => {
                return self
                    .no_worker(None, format!("daemon unavailable: {e:#}"))
                    .await
            }
        };
        loop {
            let queued = Instant::now();
            let answer = match self.lease_again_if_gone(&mut client).await {
                Ok(a) => a,
                Err(e) => {
                    return self
                        .no_worker(None, format!("daemon unavailable: {e}"))
                        .await
                }
            };
            self.job.queue_ms += queued.elapsed().as_millis() as u64;
            self.job.phases.add(Phase::Lease, queued.elapsed());
            let worker = match answer {
                Lease::Granted(w, why) => {
                    self.grant_why = why;
                    w
                }
                Lease::Local(reason) => return self.no_worker(Some(&mut client), reason).await,
            };
            let id = worker.id.clone();
            self.current = Some(id.clone());
            let attempt = self.attempt(worker.clone()).await;
            self.current = None;
            match attempt {
                Attempt::Ran(code) => {
                    let outcome = AttemptOutcome::Success { exit_code: code };
                    return self
                        .settle(&mut client, id, outcome, JobOutcome::Success, code)
                        .await;
                }
                // A problem on this machine: no worker is to blame, and no
                // other worker would fare better.
                Attempt::Failed { failure, .. } if failure.kind == FailureKind::Local => {
                    let _ = client
                        .call(Request::Release {
                            outcome: AttemptOutcome::Unknown,
                        })
                        .await;
                    return self.no_worker(Some(&mut client), failure.message).await;
                }
                Attempt::EnvMismatch { line, fail } => {
                    let outcome = AttemptOutcome::Unknown;
                    let _ = client.call(Request::Release { outcome }).await;
                    if fail {
                        self.job.outcome = JobOutcome::Failed;
                        self.job.exit_code = Some(crate::EXIT_UNAVAILABLE);
                        self.job.reason = line.clone();
                        self.finish(&mut client).await;
                        return (crate::EXIT_UNAVAILABLE, Placement::Nowhere(line));
                    }
                    return self.no_worker(Some(&mut client), line).await;
                }
                Attempt::Failed { failure, .. } if failure.kind == FailureKind::MissingTool => {
                    self.missing_tool(&mut client, id).await;
                }
                Attempt::Failed { failure, .. }
                    if failure.kind == FailureKind::MirrorUnavailable =>
                {
                    self.unfit(&mut client, id, failure).await;
                }
                Attempt::Failed { failure, started } => {
                    let outcome = AttemptOutcome::Failure {
                        kind: failure.kind,
                        message: failure.message.clone(),
                    };
                    let release = client.call(Request::Release { outcome });
                    let _ = self.job.phases.time(Phase::Release, release).await;
                    if failure.kind == FailureKind::ConnectionLost {
                        // The shared master is broken: close it so the next
                        // build to this worker connects afresh. Other failures
                        // leave it alone; concurrent builds may be using it.
                        remote::ssh::disconnect(&Target {
                            worker,
                            ssh: self.loaded.config.ssh.clone(),
                            agent: None,
                        })
                        .await;
                    }
                    if started && !self.req.quiet {
                        eprintln!("rch: {failure}; re-running the build elsewhere");
                    }
                    self.job.failovers.push(Failover {
                        worker: id.clone(),
                        reason: failure.message.clone(),
                        kind: failure.kind,
                    });
                    self.exclude.push(id);
                }
            }
        }
    }

    /// The worker has no such command: not the build's answer and not the
    /// worker's fault. The daemon remembers it; the build goes elsewhere.
    async fn missing_tool(&mut self, client: &mut Client, worker: String) {
        let tool = self.needs.tool.clone().unwrap_or_default();
        let outcome = AttemptOutcome::MissingTool { tool: tool.clone() };
        let _ = client.call(Request::Release { outcome }).await;
        let unfit = crate::caps::Unfit::Tool { tool };
        self.job.failovers.push(Failover {
            worker: worker.clone(),
            reason: unfit.describe(&worker),
            kind: FailureKind::MissingTool,
        });
        self.exclude.push(worker);
    }

    /// The worker cannot take this build as it is (not its fault, not the
    /// build's answer): no breaker effect; the build goes elsewhere.
    async fn unfit(&mut self, client: &mut Client, worker: String, failure: RemoteFailure) {
        let outcome = AttemptOutcome::Unknown;
        let _ = client.call(Request::Release { outcome }).await;
        self.job.failovers.push(Failover {
            worker: worker.clone(),
            reason: failure.message,
            kind: failure.kind,
        });
        self.exclude.push(worker);
    }

    /// The command ran on `worker`: release, record, and say where.
    async fn settle(
        &mut self,
        client: &mut Client,
        worker: String,
        outcome: AttemptOutcome,
        label: JobOutcome,
        code: i32,
    ) -> (i32, Placement) {
        let release = client.call(Request::Release { outcome });
        let _ = self.job.phases.time(Phase::Release, release).await;
        self.job.worker = Some(worker.clone());
        self.job.outcome = label;
        self.job.exit_code = Some(code);
        self.finish(client).await;
        (code, Placement::Remote(worker))
    }

    async fn lease(&mut self, client: &mut Client) -> Result<Lease, LeaseError> {
        let request = Request::Lease(LeaseRequest {
            project: self.job.project.clone(),
            command: self.job.command.clone(),
            worker: self.loaded.requested_worker.clone(),
            exclude: self.exclude.clone(),
            needs: self.needs.clone(),
            ssh_auth_sock: std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
            config: Some(crate::config::DaemonFiles::of_this_process()),
        });
        let mut reply = client.call(request).await.map_err(LeaseError::Gone)?;
        loop {
            match reply {
                Response::Queued { position } => {
                    if !self.req.quiet {
                        eprintln!("rch: all workers busy; waiting in queue (position {position})");
                    }
                    reply = client.recv().await.map_err(LeaseError::Gone)?;
                }
                Response::Granted { worker, why, .. } => return Ok(Lease::Granted(worker, why)),
                Response::Local { reason } => return Ok(Lease::Local(reason)),
                Response::Error { message, .. } => return Err(LeaseError::Refused(message)),
                other => return Err(LeaseError::Refused(format!("unexpected answer {other:?}"))),
            }
        }
    }

    /// [`Self::lease`]; a daemon that went away before answering (it died
    /// between accepting the connection and answering, or while the build
    /// was queued) is started again and asked once more, as a client that
    /// came a moment later would have done.
    async fn lease_again_if_gone(&mut self, client: &mut Client) -> Result<Lease, String> {
        match self.lease(client).await {
            Err(LeaseError::Gone(e)) => {
                tracing::debug!(error = %e, "the daemon went away before answering; asking a new one");
                let socket = crate::paths::socket_path();
                *client = Client::connect_or_start(&socket)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                self.lease(client).await.map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }

    /// One attempt on one worker: connect, push, run, pull.
    async fn attempt(&mut self, worker: WorkerConfig) -> Attempt {
        let target = Target {
            worker,
            ssh: self.loaded.config.ssh.clone(),
            agent: None,
        };
        let failed = |failure, started| Attempt::Failed { failure, started };
        let connect = async {
            let mut conn = remote::ssh::connect(&target).await?;
            remote::agent::attach(&mut conn, target.worker.agent).await;
            Ok(conn)
        };
        let conn = match self.job.phases.time(Phase::Connect, connect).await {
            Ok(c) => c,
            Err(f) => return failed(f, false),
        };
        let home = remote::remote_project_dir(&target.worker.remote_base, &self.root);
        // Held until the attempt ends: overlapping builds of this project on
        // this worker each get their own tree there.
        let slot = claim_slot(&target.worker.id, &home);
        let index = slot.as_ref().map_or(0, |s| s.index);
        // The worker's path settings as this client configures them.
        let settings = self.loaded.config.worker(&target.worker.id);
        let place =
            crate::build_files::remote_dir(settings.unwrap_or(&target.worker), &self.layout, index);
        let remote_dir = place.dir.clone();
        let excludes = &self.loaded.config.transfer.exclude;
        let t = Instant::now();
        let root = self.root.clone();
        let marks = self.tree_marks(&target.worker.id, &remote_dir).await;
        let mut upload = Upload::prepare(&root, &target.worker.id, &remote_dir, marks, || {
            self.snapshot()
        });
        self.job.phases.add(Phase::Snapshot, t.elapsed());
        let size = match upload.plan() {
            remote::upload::Plan::Full => upload.snapshot().map(|s| s.largest_dirs(3)),
            _ => None,
        };
        if let Some((total, largest)) = size {
            let line = remote::progress::first_push_line(&target.worker.id, total, &largest);
            if let Some(line) = line.filter(|_| !self.req.quiet) {
                eprintln!("{line}");
            }
        }
        tracing::debug!(plan = upload.plan().label(), tree = if upload.vouched() { "unchanged" } else { "walked" }, dir = %remote_dir, "push plan");
        let push = upload.push(&conn, excludes);
        if let Err(f) = self.job.phases.time(Phase::Push, push).await {
            return failed(f, false);
        }
        self.job.sync_ms += t.elapsed().as_millis() as u64;
        if let Some(at) = &place.mirrored_at {
            let tool = self.req.argv[0].to_string_lossy();
            let rel = self
                .req
                .cwd
                .strip_prefix(&self.root)
                .unwrap_or(Path::new(""));
            let check = remote::mirror::preflight(&conn, &remote_dir, at, rel, &tool);
            if let Err(f) = check.await {
                return failed(f, false);
            }
        }
        let home = match (&place.mirrored_at, self.offload.tool) {
            (None, classify::Tool::Cargo) if !place.dir.starts_with('/') => {
                remote::mirror::remote_home(&conn).await
            }
            _ => None,
        };
        let mut full = false;
        let mirrored = place.mirrored_at.is_some();
        // What the run lists: the whole output dir (or tree); what comes
        // back of it is decided after the run (cargo's report).
        let whole = self.layout.pull(&self.offload.artifacts, mirrored);
        let mut listing;
        let mut began;
        let code = loop {
            let t = Instant::now();
            let report = loop {
                let mut spec = self.run_spec(&place, home.as_deref());
                spec.tree = Some(upload.check(full));
                spec.watch = remote::outputs::Watch::for_pull(&whole);
                spec.env_reads = self.env_reads_dir();
                let reads = self.reads_report();
                began = std::time::SystemTime::now();
                let run = run_command(&conn, &spec, reads);
                let (report, cargo) = self.job.phases.time(Phase::Run, run).await;
                self.report = Report::parse(&cargo);
                self.colour = cargo_colour(&spec.argv, &spec.env);
                if !report.stale_tree || full {
                    break report;
                }
                // Not the tree we left there (another machine, a clean-up):
                // nothing ran; send all of it and run again.
                tracing::debug!(dir = %remote_dir, "the worker holds another tree; pushing in full");
                if upload.vouched() {
                    upload.walked(self.snapshot());
                }
                let push = upload.push_full(&conn, excludes);
                if let Err(f) = self.job.phases.time(Phase::Push, push).await {
                    return failed(f, false);
                }
                full = true;
            };
            self.stderr_mid_line = report.stderr_mid_line;
            self.remote_dir = match &place.mirrored_at {
                Some(at) => at.to_string_lossy().into_owned(),
                None => remote_dir.clone(),
            };
            self.job.run_ms += t.elapsed().as_millis() as u64;
            let code = match report.result {
                Ok(code) => code,
                Err(f) => return failed(f, report.started),
            };
            listing = report.listing;
            match self.check_env(&report.env_reads) {
                EnvCheck::Same => break code,
                EnvCheck::Rerun(line) => {
                    if !self.req.quiet {
                        eprintln!("rch: {line}; running it again with it");
                    }
                }
                EnvCheck::Refuse { line, fail } => return Attempt::EnvMismatch { line, fail },
            }
        };
        // A build that may have changed the tree itself (make & co) is
        // remembered after its changes came back (below); a failed one
        // left changes there that are not known here.
        if !matches!(self.offload.artifacts, classify::Artifacts::Tree) {
            upload.commit(full);
        } else if code != 0 {
            upload.commit_tree_build(|| None, None);
        }
        if code == 0 {
            let t = Instant::now();
            let pull = self.artifact_pull(mirrored);
            let loaded = self.loaded;
            let excludes = &loaded.config.transfer.exclude;
            let pulled = pull_back(
                &conn,
                &self.root,
                &remote_dir,
                &pull,
                listing.as_ref(),
                excludes,
                remote::outputs::Began {
                    at: began,
                    tree: upload.snapshot(),
                },
            );
            let tree_build = matches!(self.offload.artifacts, classify::Artifacts::Tree);
            if let Err(f) = self.job.phases.time(Phase::Pull, pulled).await {
                if tree_build {
                    upload.commit_tree_build(|| None, None);
                }
                return failed(f, true);
            }
            self.job.return_ms += t.elapsed().as_millis() as u64;
            if tree_build {
                let t = Instant::now();
                upload.commit_tree_build(|| self.snapshot(), listing.as_ref());
                self.job.phases.add(Phase::Snapshot, t.elapsed());
            }
            self.print_test_executables();
        }
        Attempt::Ran(code)
    }

    /// Whether the remote command prints cargo's JSON report on stdout.
    fn reads_report(&self) -> bool {
        self.run_args.is_some() || matches!(self.ask, Some(Ask::At(_)))
    }

    /// What comes back after the build: the artifacts cargo reported, or,
    /// when its report cannot say (the user shaped cargo's output, a build
    /// script of the project ran, a mirrored build a local cargo reuses),
    /// the whole output directory.
    fn artifact_pull(&self, mirrored: bool) -> remote::Pull {
        let whole = self.layout.pull(&self.offload.artifacts, mirrored);
        if mirrored || !matches!(whole, remote::Pull::Dir { .. }) {
            return whole;
        }
        let reported = match &self.ask {
            Some(Ask::Not(why)) if self.run_args.is_none() => Err(why.clone()),
            _ => self.report.user_files().and_then(|files| {
                let artifacts = &self.offload.artifacts;
                self.layout
                    .reported_pull(artifacts, &self.remote_dir, &files)
            }),
        };
        match reported {
            Ok(pull) => pull,
            Err(why) => {
                tracing::debug!(reason = %why, "bringing back the whole output directory");
                whole
            }
        }
    }

    /// `cargo test --no-run` lists the test binaries it built; with its
    /// report on stdout it does not, so rch prints the same lines, with
    /// the paths here.
    fn print_test_executables(&self) {
        if !matches!(self.offload.kind, Kind::Test | Kind::Bench) || !self.reads_report() {
            return;
        }
        let (quiet, verbose) = cargo_verbosity(&self.req.argv);
        if quiet {
            return;
        }
        for test in self.report.test_executables() {
            let Some(local) = self.layout.local_path(&test.remote, &self.remote_dir) else {
                continue;
            };
            let line =
                cargo_report::executable_line(&test, &local, &self.req.cwd, verbose, self.colour);
            eprintln!("{line}");
        }
    }

    /// For a cargo build: its output directory, whose env reads the run
    /// script reports (relative to the tree).
    fn env_reads_dir(&self) -> Option<String> {
        if self.offload.tool != classify::Tool::Cargo {
            return None;
        }
        let argv: Vec<String> = self
            .req
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Some(crate::envcheck::output_dir(
            &argv,
            self.needs.target.as_deref(),
        ))
    }

    /// The tree as it would be pushed now; `None` when it cannot be walked
    /// (the push then applies the exclude patterns alone).
    /// The daemon's word on this project's tree since the walk that
    /// matched the push remembered for `worker` and `remote_dir`.
    async fn tree_marks(&self, worker: &str, remote_dir: &str) -> crate::tree_marks::Marks {
        let transfer = &self.loaded.config.transfer;
        let state = remote::upload::state_file(worker, remote_dir);
        let patterns = remote::sync::exclude_patterns(&transfer.exclude);
        let socket = crate::paths::socket_path();
        let respect = transfer.respect_gitignore;
        crate::tree_marks::Marks::ask(&socket, &state, &self.root, &patterns, respect).await
    }

    fn snapshot(&self) -> Option<crate::tree::Snapshot> {
        let transfer = &self.loaded.config.transfer;
        let walked = remote::sync::rules(&self.root, &transfer.exclude, transfer.respect_gitignore)
            .and_then(|rules| crate::tree::snapshot(&rules).map_err(|e| e.to_string()));
        match walked {
            Ok(snapshot) => Some(snapshot),
            Err(e) => {
                tracing::debug!(error = %e, "cannot walk the project tree");
                None
            }
        }
    }

    /// After a cargo build: did it read a variable the worker did not have as
    /// set here? Then its artifacts are not the local build's: run it again
    /// with the variable sent (once, when it may be sent), or refuse.
    /// `text`: the env-dep lines the run script reported.
    fn check_env(&mut self, text: &str) -> EnvCheck {
        if self.offload.tool != classify::Tool::Cargo {
            return EnvCheck::Same;
        }
        let reads = crate::envcheck::parse(text);
        let local = |name: &str| std::env::var(name).ok();
        let config = &self.loaded.config.env;
        let found = crate::envcheck::mismatches(&reads, &local, &self.env, config);
        if found.is_empty() {
            return EnvCheck::Same;
        }
        let line = crate::envcheck::line(&found);
        tracing::info!(names = %found.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" "), "environment mismatch");
        let sendable = found
            .iter()
            .all(|m| m.may_forward() && local(&m.name).is_some());
        match config.on_mismatch {
            OnMismatch::Rerun if sendable && !self.env_rerun => {
                self.env_rerun = true;
                for m in &found {
                    if let Some(value) = local(&m.name) {
                        self.env.withheld.retain(|(k, _)| *k != m.name);
                        self.env.forwarded.retain(|(k, _)| *k != m.name);
                        self.env.forwarded.push((m.name.clone(), value));
                    }
                }
                EnvCheck::Rerun(line)
            }
            OnMismatch::Fail => EnvCheck::Refuse { line, fail: true },
            _ => EnvCheck::Refuse { line, fail: false },
        }
    }

    /// What the worker runs: in its copy of the project, or, mirrored, at
    /// the client's own path; cargo builds not mirrored map the worker's
    /// paths back to the client's in what rustc writes.
    fn run_spec(&self, place: &RemoteDir, home: Option<&str>) -> remote::run::RunSpec {
        let rel = self
            .req
            .cwd
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(""));
        let base = match (&self.run_args, &self.ask) {
            (Some(run), _) => run.build_argv.clone(),
            (None, Some(ask)) => cargo_report::with_report(&self.req.argv, ask),
            (None, None) => self.req.argv.clone(),
        };
        let terminal = crate::colours::Terminal::detect();
        let argv = crate::colours::argv(self.offload.tool, terminal, &base);
        let argv = crate::build_files::remote_argv(&argv, &self.layout);
        let mut env = self.env.forwarded.clone();
        let is_set = |name: &str| std::env::var_os(name).is_some();
        env.extend(crate::colours::env(self.offload.tool, terminal, is_set));
        env.extend(self.layout.remote_env(&self.req.cwd));
        let (dir, argv) = match &place.mirrored_at {
            Some(at) => {
                let argv = remote::mirror::at_client_path(&argv, &place.dir, at, rel);
                (place.dir.clone(), argv)
            }
            None => {
                let absolute = match home {
                    _ if place.dir.starts_with('/') => Some(place.dir.clone()),
                    Some(home) => Some(format!("{home}/{}", place.dir)),
                    None => None,
                };
                let argv = match absolute {
                    Some(dir) if self.offload.tool == classify::Tool::Cargo => {
                        remote::mirror::remapped(&argv, &mut env, &dir, &self.root)
                    }
                    _ => argv,
                };
                (join_remote(&place.dir, rel), argv)
            }
        };
        remote::run::RunSpec {
            dir,
            argv,
            env,
            timeout: Duration::from_secs(self.loaded.config.general.build_timeout_secs),
            tree: None,
            input: self.input.clone(),
            watch: None,
            env_reads: None,
        }
    }

    /// No worker can take the build: run locally, or fail closed (exit 75).
    async fn no_worker(&mut self, client: Option<&mut Client>, reason: String) -> (i32, Placement) {
        let mut reason = self.with_failovers(reason);
        // Past what rch kept of it, the input cannot be given to the command
        // again: running it here would silently feed it the rest only.
        let spent = self.input.as_ref().is_some_and(|i| !i.whole());
        if spent && !reason.contains(remote::run::STDIN_SPENT) {
            reason = format!("{reason}; {}", remote::run::STDIN_SPENT);
        }
        let fail_closed = spent || self.loaded.config.general.fallback == Fallback::Never;
        let code = if fail_closed {
            self.job.outcome = JobOutcome::Failed;
            crate::EXIT_UNAVAILABLE
        } else {
            self.job.outcome = JobOutcome::Local;
            run_local_with(&self.req.argv, &self.req.cwd, self.input.as_ref())
        };
        self.job.exit_code = Some(code);
        self.job.reason = reason.clone();
        if let Some(c) = client {
            self.finish(c).await;
        }
        if fail_closed {
            (code, Placement::Nowhere(reason))
        } else {
            (code, Placement::Local(reason))
        }
    }

    fn with_failovers(&self, reason: String) -> String {
        if self.job.failovers.is_empty() {
            return reason;
        }
        let failed: Vec<&str> = self
            .job
            .failovers
            .iter()
            .map(|f| f.reason.as_str())
            .collect();
        format!("{}; {reason}", failed.join("; "))
    }

    async fn finish(&mut self, client: &mut Client) {
        if self.job.reason.is_empty() {
            self.job.reason = match self.job.failovers.last() {
                Some(f) => format!("after {} failed", f.worker),
                None if !self.grant_why.is_empty() => self.grant_why.clone(),
                None => "offloaded".into(),
            };
        }
        let _ = client.call(Request::Job(self.job.clone())).await;
    }
}

/// Bring back what the build made: from the run's listing only what
/// differs here (and, for a tree, its deletions), else everything.
/// `began`: when the last run started (and the tree then); what changed
/// here since stays.
async fn pull_back(
    conn: &remote::Connection,
    root: &Path,
    remote_dir: &str,
    pull: &remote::Pull,
    listing: Option<&remote::outputs::Listing>,
    excludes: &[String],
    began: remote::outputs::Began<'_>,
) -> Result<(), RemoteFailure> {
    let Some(listing) = listing else {
        tracing::debug!("no listing of the build's outputs; pulling in full");
        return remote::sync::pull(conn, root, remote_dir, pull, excludes).await;
    };
    let returned =
        remote::outputs::pull_listed(conn, root, remote_dir, pull, listing, excludes, began)
            .await?;
    tracing::debug!(
        listed = returned.listed,
        pulled = returned.pulled,
        deleted = returned.deleted,
        "brought back what differs"
    );
    Ok(())
}

/// Claim a build slot; without one (an unusable local runtime dir) the build
/// still runs, in slot 0, unprotected from overlapping builds.
fn claim_slot(worker: &str, project_home: &str) -> Option<remote::slot::Slot> {
    let dir = remote::slot::default_lock_dir();
    match remote::slot::claim(&dir, worker, project_home) {
        Ok(slot) => Some(slot),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot claim a build slot");
            None
        }
    }
}

/// Run `spec`, streaming its output; with `report`, cargo's JSON messages
/// on stdout are kept (and returned) instead of shown.
async fn run_command(
    conn: &remote::Connection,
    spec: &remote::RunSpec,
    report: bool,
) -> (remote::RunReport, Vec<u8>) {
    if !report {
        return (remote::run(conn, spec).await, Vec::new());
    }
    let mut filter = cargo_report::ReportFilter::new(tokio::io::stdout());
    let run = remote::run_to(conn, spec, &mut filter, tokio::io::stderr()).await;
    let rest = filter.finish();
    if !rest.is_empty() {
        use std::io::Write;
        let _ = std::io::stdout().write_all(&rest);
        let _ = std::io::stdout().flush();
    }
    (run, std::mem::take(&mut filter.report))
}

/// Whether a remote cargo build reports its artifacts (only builds whose
/// outputs come back, other than `cargo run`, which asks by itself).
fn report_ask(req: &ExecRequest, offload: &Offload) -> Option<Ask> {
    let builds = offload.tool == classify::Tool::Cargo
        && offload.kind != Kind::Run
        && matches!(offload.artifacts, classify::Artifacts::CargoTarget { .. });
    builds.then(|| cargo_report::ask(&req.argv, offload.kind))
}

/// Whether cargo coloured its status lines: its `--color`, else
/// `CARGO_TERM_COLOR` as the worker got it (on the worker stderr is no terminal).
fn cargo_colour(argv: &[OsString], env: &[(String, String)]) -> bool {
    let words: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
    let options = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let mut chosen = None;
    for (i, word) in words[..options].iter().enumerate() {
        if let Some(value) = word.strip_prefix("--color=") {
            chosen = Some(value);
        } else if *word == "--color" {
            chosen = words.get(i + 1).copied();
        }
    }
    let from_env = || {
        env.iter()
            .rev()
            .find(|(k, _)| k == "CARGO_TERM_COLOR")
            .map(|(_, v)| v.as_str())
    };
    chosen.or_else(from_env) == Some("always")
}

/// cargo's `-q` and `-v` (or `CARGO_TERM_QUIET`/`_VERBOSE`) in `argv`.
fn cargo_verbosity(argv: &[OsString]) -> (bool, bool) {
    let words: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
    let options = words.iter().take_while(|w| **w != "--");
    let (mut quiet, mut verbose) = (false, false);
    for word in options {
        quiet |= matches!(*word, "-q" | "--quiet");
        verbose |= *word == "--verbose"
            || (word.len() > 1 && word.starts_with('-') && word[1..].bytes().all(|b| b == b'v'));
    }
    let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "true");
    (
        quiet || set("CARGO_TERM_QUIET"),
        verbose || set("CARGO_TERM_VERBOSE"),
    )
}

/// `cargo run`'s arguments taken apart (the classification accepted them).
fn run_args(argv: &[OsString]) -> Option<RunArgs> {
    let words: Vec<&str> = argv.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    let sub = classify::cargo_subcommand_at(&words[1..]).ok()??;
    cargo_run::split(&words, sub + 1).ok()
}

enum Lease {
    /// A worker, and why the daemon chose it.
    Granted(WorkerConfig, String),
    Local(String),
}

/// Why a lease was not answered.
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    /// The connection ended or failed before an answer: the daemon is gone.
    #[error("{0}")]
    Gone(crate::protocol::WireError),
    /// The daemon answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// `<remote dir>/<rel>`, or the dir itself for an empty `rel`.
fn join_remote(dir: &str, rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{}", rel.display())
    }
}

/// The directory synced to the worker: the project's `.rch/` root when there
/// is one; for cargo the outermost `Cargo.toml` (the workspace) inside the
/// repository; otherwise the repository root; otherwise the current directory.
pub fn project_root(loaded: &Loaded, cwd: &Path, offload: &Offload) -> PathBuf {
    if let Some(root) = &loaded.project_root {
        return root.clone();
    }
    let repo = cwd.ancestors().find(|d| d.join(".git").exists());
    if offload.tool == classify::Tool::Cargo {
        let limit = repo.unwrap_or(Path::new("/"));
        let top = cwd
            .ancestors()
            .take_while(|d| d.starts_with(limit))
            .filter(|d| d.join("Cargo.toml").is_file())
            .last();
        if let Some(top) = top {
            return top.to_path_buf();
        }
    }
    repo.unwrap_or(cwd).to_path_buf()
}

/// The command as a shell would show it (for status and history).
pub fn display_command(argv: &[OsString]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}
