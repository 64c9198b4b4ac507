//! The socket server: accepts connections of the same user and answers
//! requests. A lease belongs to the connection that took it; when the
//! connection ends without a release, the lease is abandoned (slot freed, no
//! breaker effect).

use super::fleet::{Decision, ProbeJob};
use super::metrics::{Gauges, WorkerGauge};
use super::{Answer, Shared};
use crate::protocol::{
    read_line, write_line, Envelope, JobReport, LeaseRequest, Request, Response, WireError,
    PROTOCOL_VERSION,
};
use crate::state::report::{DaemonInfo, FleetReport, ProbeResult, WorkerHistory};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::net::{UnixListener, UnixStream};

pub async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    let my_uid = nix::unistd::getuid().as_raw();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == my_uid => {
                        let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
                        tokio::spawn(serve_connection(stream, pid, shared.clone()));
                    }
                    Ok(cred) => tracing::warn!(uid = cred.uid(), "refused a connection from another user"),
                    Err(e) => tracing::warn!(error = %e, "refused a connection without credentials"),
                }
            }
            _ = shared.shutdown.notified() => return Ok(()),
        }
    }
}

struct Conn {
    reader: BufReader<ReadHalf<UnixStream>>,
    writer: WriteHalf<UnixStream>,
    buf: String,
    /// The lease this connection holds, if any.
    lease: Option<u64>,
    /// The client's pid, as the kernel reports it for the socket.
    pid: Option<u32>,
}

impl Conn {
    async fn send(&mut self, r: &Response) -> Result<(), WireError> {
        write_line(&mut self.writer, r).await
    }
}

async fn serve_connection(stream: UnixStream, pid: Option<u32>, shared: Arc<Shared>) {
    let (r, w) = tokio::io::split(stream);
    let mut conn = Conn {
        reader: BufReader::new(r),
        writer: w,
        buf: String::new(),
        lease: None,
        pid,
    };
    loop {
        let envelope: Envelope = match read_line(&mut conn.reader, &mut conn.buf).await {
            Ok(e) => e,
            Err(WireError::Decode(e)) => {
                let msg = format!("bad request: {e} (is the client of another rch version? protocol {PROTOCOL_VERSION})");
                let _ = conn.send(&error(msg)).await;
                break;
            }
            Err(_) => break,
        };
        if envelope.v != PROTOCOL_VERSION {
            let msg = format!(
                "protocol mismatch: daemon speaks {PROTOCOL_VERSION}, client {}; restart the daemon with `rch daemon stop`",
                envelope.v
            );
            let _ = conn.send(&error(msg)).await;
            break;
        }
        if handle(&mut conn, envelope.request, &shared).await.is_err() {
            break;
        }
    }
    if let Some(lease) = conn.lease.take() {
        shared.with_fleet(|f, now| f.handle_abandon(now, lease));
        super::team::release_slot(&shared, lease);
    }
}

fn error(message: String) -> Response {
    Response::Error {
        message,
        known_workers: Vec::new(),
        unknown_worker: None,
    }
}

fn unknown(e: super::fleet::UnknownWorker) -> Response {
    Response::Error {
        message: e.to_string(),
        known_workers: e.known,
        unknown_worker: Some(e.id),
    }
}

async fn handle(conn: &mut Conn, request: Request, shared: &Arc<Shared>) -> Result<(), WireError> {
    match request {
        Request::Ping => conn.send(&hello(shared)).await,
        Request::Lease(req) => {
            let span =
                tracing::debug_span!("lease", project = %req.project, command = %req.command);
            tracing::Instrument::instrument(lease(conn, req, shared), span).await
        }
        Request::Release { outcome } => {
            if let Some(lease) = conn.lease.take() {
                let span = tracing::debug_span!("release", outcome = ?outcome);
                span.in_scope(|| {
                    shared.with_fleet(|f, now| f.handle_release(now, lease, &outcome));
                    super::team::release_slot(shared, lease);
                });
            }
            conn.send(&Response::Ok).await
        }
        Request::Tree(query) => {
            let answer = shared.trees.query(query).await;
            conn.send(&Response::Tree(answer)).await
        }
        Request::Job(job) => {
            record_job(shared, &job);
            conn.send(&Response::Ok).await
        }
        Request::Status => {
            shared.follow_config(None);
            conn.send(&Response::Status(Box::new(status(shared)))).await
        }
        Request::Reset { worker } => {
            let r = shared.with_fleet(|f, now| f.reset(worker.as_deref(), now));
            conn.send(&r.map(|_| Response::Ok).unwrap_or_else(unknown))
                .await
        }
        Request::Probe { worker } => {
            let response = probe(shared, worker.as_deref()).await;
            conn.send(&response).await
        }
        Request::SetWorker { worker, action } => {
            let r = shared.with_fleet(|f, now| f.set_worker(&worker, action, now));
            conn.send(&r.map(|_| Response::Ok).unwrap_or_else(unknown))
                .await
        }
        Request::History { worker, limit } => {
            let response = history(shared, &worker, limit);
            conn.send(&response).await
        }
        Request::Events { follow, limit } => events(conn, shared, follow, limit).await,
        Request::Metrics => {
            let text = metrics(shared);
            conn.send(&Response::Metrics { text }).await
        }
        Request::Reload => {
            let response = match shared.reload() {
                Ok(()) => Response::Ok,
                Err(e) => error(format!("{e:#}")),
            };
            conn.send(&response).await
        }
        Request::Shutdown => {
            conn.send(&Response::Ok).await?;
            shared.request_shutdown();
            Ok(())
        }
    }
}

fn hello(shared: &Shared) -> Response {
    Response::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        uptime_secs: shared.now_ms().saturating_sub(shared.started_ms) / 1000,
    }
}

async fn lease(conn: &mut Conn, req: LeaseRequest, shared: &Arc<Shared>) -> Result<(), WireError> {
    if let Some(old) = conn.lease.take() {
        // One lease per connection: a new request ends the previous one.
        shared.with_fleet(|f, now| f.handle_abandon(now, old));
        super::team::release_slot(shared, old);
    }
    // A configuration changed since: in effect for this very request.
    shared.follow_config(req.config.as_ref());
    let answer = loop {
        let answer = match shared.lease(req.clone()) {
            (Decision::Granted(g), _) => Answer::Granted(g),
            (Decision::Refused(reason), _) => Answer::Local(reason),
            (Decision::Queued { waiter, position }, Some(rx)) => {
                conn.send(&Response::Queued { position }).await?;
                wait_in_queue(conn, shared, waiter, rx).await?
            }
            (Decision::Queued { .. }, None) => Answer::Local("queue unavailable".into()),
        };
        // With a team, the worker's slot must also be free team-wide.
        if let Answer::Granted(g) = &answer {
            if let super::team::SlotTake::Full { until_ms } =
                super::team::take_slot(shared, g).await
            {
                shared.with_fleet(|f, now| f.team_slot_full(now, g.lease, until_ms));
                continue;
            }
        }
        break answer;
    };
    let response = match answer {
        Answer::Granted(g) => {
            tracing::debug!(worker = %g.worker.id, why = g.why.as_str(), "granted");
            conn.lease = Some(g.lease);
            // Saved with its holder: a daemon restarted before the build
            // ends keeps the slot taken while the client runs.
            if let Some(holder) = conn.pid.and_then(super::holders::identify) {
                shared.with_fleet(|f, _| f.hold(g.lease, holder));
            }
            Response::Granted {
                worker: g.worker,
                epoch: g.epoch,
                why: g.why.as_str().to_string(),
            }
        }
        Answer::Local(reason) => {
            tracing::debug!(reason = %reason, "no worker: local");
            Response::Local { reason }
        }
    };
    conn.send(&response).await
}

/// Wait for the core's answer (a grant, or local when the queue time is up)
/// or the client leaving.
async fn wait_in_queue(
    conn: &mut Conn,
    shared: &Arc<Shared>,
    waiter: u64,
    mut rx: tokio::sync::oneshot::Receiver<Answer>,
) -> Result<Answer, WireError> {
    let mut probe = [0u8; 1];
    tokio::select! {
        answer = &mut rx => Ok(answer.unwrap_or_else(|_| Answer::Local("the daemon dropped the request".into()))),
        // A waiting client sends nothing; a read returning means it left.
        _ = tokio::io::AsyncReadExt::read(&mut conn.reader, &mut probe) => {
            shared.cancel_wait(waiter, &mut rx);
            Err(WireError::Closed)
        }
    }
}

fn record_job(shared: &Shared, job: &JobReport) {
    tracing::debug!(
        worker = job.worker.as_deref().unwrap_or("local"),
        outcome = %job.outcome,
        phases = %job.phases,
        "job recorded"
    );
    let now = shared.now_ms();
    if let Err(e) = shared.store().insert_job(now, job) {
        tracing::error!(error = %e, "saving job");
    }
    shared.with_fleet(|f, now| f.handle_job(now, job));
}

fn status(shared: &Shared) -> FleetReport {
    let mut report = shared.with_fleet(|f, now| f.report(now));
    report.team = shared.team_report();
    report.daemon = DaemonInfo {
        running: true,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: Some(std::process::id()),
        uptime_secs: Some(shared.now_ms().saturating_sub(shared.started_ms) / 1000),
        config_error: shared.config_error(),
    };
    report.recent_jobs = shared
        .store()
        .recent_jobs(None, crate::state::report::RECENT_JOBS)
        .unwrap_or_default();
    report
}

async fn probe(shared: &Arc<Shared>, worker: Option<&str>) -> Response {
    let ids = match shared.with_fleet(|f, _| f.targets(worker)) {
        Ok(ids) => ids,
        Err(e) => return unknown(e),
    };
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let start = match super::team::probe_now(&shared, &id).await {
                    Some(start) => start,
                    None => shared.with_fleet(|f, now| f.probe_now(&id, now)),
                };
                match start {
                    Ok(job) => run_probe(&shared, job).await,
                    Err(_) if shared.with_fleet(|f, _| f.probe_in_flight(&id)) => {
                        await_running_probe(&shared, id).await
                    }
                    Err(reason) => ProbeResult {
                        state: shared
                            .with_fleet(|f, _| f.state_of(&id))
                            .unwrap_or(crate::breaker::State::Closed),
                        worker: id,
                        ok: false,
                        latency_ms: None,
                        error: Some(format!("not probed: {reason}")),
                        capabilities: None,
                    },
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }
    Response::Probed { results }
}

/// The daemon's own probe of `id` is running: report its result instead of
/// refusing (an operator's probe and the prober often meet at a cooldown's end).
async fn await_running_probe(shared: &Shared, id: String) -> ProbeResult {
    let limit = shared.with_fleet(|f, _| f.config().ssh.connect_timeout_secs * 2 + 10);
    let wait = async {
        loop {
            let done = shared.probe_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !shared.with_fleet(|f, _| f.probe_in_flight(&id)) {
                return;
            }
            done.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(limit), wait).await;
    let (state, latency_ms, last_error) = shared.with_fleet(|f, _| {
        let b = f.breaker(&id);
        (
            f.state_of(&id),
            f.latency(&id),
            b.and_then(|b| b.last_error.clone()),
        )
    });
    let ok = !matches!(state, Some(crate::breaker::State::Open));
    let capabilities = shared.with_fleet(|f, _| f.capabilities(&id).cloned());
    ProbeResult {
        worker: id,
        ok,
        latency_ms: if ok { latency_ms } else { None },
        error: if ok { None } else { last_error },
        state: state.unwrap_or(crate::breaker::State::Closed),
        capabilities,
    }
}

/// Run one probe against the worker, feed its result to the core and keep
/// what it learned of the worker's tools. A configured tool the worker lacks
/// fails the probe's report but not the breaker: the machine is healthy.
pub async fn run_probe(shared: &Shared, job: ProbeJob) -> ProbeResult {
    let target = shared.with_fleet(|f, _| target_of(f, &job.worker));
    let (result, caps) = match target {
        Some(target) => match probe_target(&target).await {
            Ok((rtt, caps)) => (Ok(rtt), Some(caps)),
            // A problem on this machine says nothing about the worker.
            Err(failure) if !failure.kind.is_worker_fault() => {
                let state = shared.with_fleet(|f, now| {
                    f.abandon_probe(&job, now);
                    f.state_of(&job.worker)
                });
                shared.probe_done.notify_waiters();
                return ProbeResult {
                    worker: job.worker.clone(),
                    ok: false,
                    latency_ms: None,
                    error: Some(failure.message),
                    state: state.unwrap_or(crate::breaker::State::Closed),
                    capabilities: None,
                };
            }
            Err(failure) => (Err(failure.message), None),
        },
        None => (Err(format!("{}: no longer configured", job.worker)), None),
    };
    let unmet = caps.as_ref().and_then(|c| {
        let required = shared.with_fleet(|f, _| {
            f.config()
                .worker(&job.worker)
                .map(|w| f.config().required_tools(w).to_vec())
                .unwrap_or_default()
        });
        let missing = c.unmet(&required).join(", ");
        (!missing.is_empty()).then(|| format!("{}: missing tool: {missing}", job.worker))
    });
    let state = shared.with_fleet(|f, now| {
        f.finish_probe(&job, result.clone(), now);
        if let Some(caps) = &caps {
            f.learn(&job.worker, caps.clone(), now);
        }
        f.state_of(&job.worker)
    });
    shared.probe_done.notify_waiters();
    ProbeResult {
        worker: job.worker.clone(),
        ok: result.is_ok() && unmet.is_none(),
        latency_ms: result.as_ref().ok().copied(),
        error: result.err().or(unmet),
        state: state.unwrap_or(crate::breaker::State::Closed),
        capabilities: caps,
    }
}

/// How to reach `id`, if it is configured.
pub(super) fn target_of(f: &super::fleet::Fleet, id: &str) -> Option<crate::remote::Target> {
    Some(crate::remote::Target {
        worker: f.config().worker(id)?.clone(),
        ssh: f.config().ssh.clone(),
        agent: f.agent().map(std::path::Path::to_path_buf),
    })
}

/// The probe over ssh, bounded by its own timeout: the round trip in ms and
/// what it learned, or why it failed.
pub(super) async fn probe_target(
    target: &crate::remote::Target,
) -> Result<(u64, crate::caps::Capabilities), crate::remote::RemoteFailure> {
    use crate::remote::{FailureKind, RemoteFailure};
    let limit = Duration::from_secs(target.ssh.connect_timeout_secs * 2 + 10);
    match tokio::time::timeout(limit, crate::remote::probe(target)).await {
        Ok(Ok((rtt, caps))) => Ok((rtt.as_millis() as u64, caps)),
        Ok(Err(failure)) => {
            // Only a lost connection means the shared master is broken;
            // builds may be using it otherwise.
            if failure.kind == FailureKind::ConnectionLost {
                crate::remote::ssh::disconnect(target).await;
            }
            Err(failure)
        }
        Err(_) => Err(RemoteFailure {
            kind: FailureKind::Timeout,
            message: format!(
                "{}: probe timed out after {}s",
                target.worker.id,
                limit.as_secs()
            ),
        }),
    }
}

fn history(shared: &Shared, worker: &str, limit: usize) -> Response {
    if let Err(e) = shared.with_fleet(|f, _| f.known(worker)) {
        return unknown(e);
    }
    let store = shared.store();
    Response::History(WorkerHistory {
        worker: worker.to_string(),
        jobs: store.recent_jobs(Some(worker), limit).unwrap_or_default(),
        events: store.events(Some(worker), limit).unwrap_or_default(),
    })
}

async fn events(
    conn: &mut Conn,
    shared: &Shared,
    follow: bool,
    limit: usize,
) -> Result<(), WireError> {
    // Subscribe before reading the store so nothing falls between the two.
    let mut live = shared.events.subscribe();
    let stored = shared.store().events(None, limit).unwrap_or_default();
    for e in stored {
        conn.send(&Response::Event(e)).await?;
    }
    if !follow {
        return conn.send(&Response::Ok).await;
    }
    loop {
        match live.recv().await {
            Ok(e) => conn.send(&Response::Event(e)).await?,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "event follower lagged");
            }
            Err(_) => return Ok(()),
        }
    }
}

/// The Prometheus text of the daemon's counters and gauges.
pub fn metrics(shared: &Shared) -> String {
    shared.with_fleet(|f, _| {
        let workers = f
            .config()
            .workers
            .iter()
            .map(|w| WorkerGauge {
                id: w.id.clone(),
                state: f.state_of(&w.id).unwrap_or(crate::breaker::State::Closed),
                used: f.used(&w.id),
                slots: w.slots,
            })
            .collect();
        let gauges = Gauges {
            workers,
            queue_depth: f.queue_len(),
        };
        f.metrics.render(&gauges)
    })
}
