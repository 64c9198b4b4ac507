//! The rch daemon: one per user, on a Unix socket.
//!
//! Its decisions live in [`fleet`], a synchronous state machine without IO
//! (breakers, slots, the wait queue, leases, flags). Everything here is the
//! shell around it: [`Shared::with_fleet`] runs one input on the core and
//! carries out its outputs (answers to queued requests, probes, persistence,
//! events); the timer task sleeps on the daemon's [`Clock`] until the core's
//! next deadline; [`server`] speaks the socket protocol; [`prober`] runs the
//! probes the core asks for. It never touches a build's bytes: the client
//! syncs, runs and streams; the daemon only hands out leases.

mod disk;
pub mod fleet;
pub mod holders;
pub mod metrics;
pub mod metrics_http;
pub mod prober;
pub mod server;
pub mod team;
pub mod trees;

use crate::clock::Clock;
use crate::config::{Config, DaemonFiles, FileStamp};
use crate::state::events::EventRecord;
use crate::state::store::{HeldLease, Holder, Store};
use anyhow::Context;
use fleet::{Decision, Fleet, Grant, Output, Persist, WaiterId};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

/// Reads the configuration the daemon should use from the given files (at
/// start, on reload, and when the files or what is in them changed).
pub type ConfigSource = Box<dyn Fn(&DaemonFiles) -> anyhow::Result<Config> + Send + Sync>;

/// How to build a daemon.
pub struct DaemonOptions {
    pub socket: PathBuf,
    pub db: PathBuf,
    pub clock: Arc<dyn Clock>,
    pub config: ConfigSource,
    /// The files of the configuration at start.
    pub files: DaemonFiles,
}

/// The files the running configuration came from, as they were then.
struct ConfigFiles {
    files: DaemonFiles,
    stamp: Vec<Option<FileStamp>>,
    /// They changed into something invalid: why (the previous
    /// configuration stays until they change again).
    error: Option<String>,
}

/// Where the shell carries out the core's [`Output::Persist`] and
/// [`Output::Emit`]. The SQLite [`Store`] is one; a shared store is another.
pub trait StateSink: Send {
    fn persist(&mut self, item: &Persist) -> anyhow::Result<()>;
    fn record_event(&mut self, at_ms: u64, event: &EventRecord) -> anyhow::Result<()>;
}

impl StateSink for Store {
    fn persist(&mut self, item: &Persist) -> anyhow::Result<()> {
        match item {
            Persist::Breaker { worker, breaker } => self.save_breaker(worker, breaker),
            Persist::Flags { worker, flags } => self.save_flags(worker, *flags),
            Persist::Lease { lease, held } => self.save_lease(*lease, held),
            Persist::LeaseEnded { lease } => self.delete_lease(*lease),
        }
    }

    fn record_event(&mut self, at_ms: u64, event: &EventRecord) -> anyhow::Result<()> {
        self.insert_event(at_ms, event)
    }
}

/// The answer a queued request gets through its reply handle.
#[derive(Debug)]
pub enum Answer {
    Granted(Grant),
    Local(String),
}

/// The core and the reply handles of its queued requests, under one lock so
/// an answer can never be produced before its handle is registered.
struct Driver {
    fleet: Fleet,
    replies: HashMap<WaiterId, oneshot::Sender<Answer>>,
    /// The deadline the timer task sleeps until (`None`: no deadline).
    armed: Option<u64>,
}

/// State shared by the server's tasks.
pub struct Shared {
    driver: Mutex<Driver>,
    store: Mutex<Store>,
    clock: Arc<dyn Clock>,
    config_source: ConfigSource,
    config_files: Mutex<ConfigFiles>,
    events: broadcast::Sender<EventRecord>,
    probes: mpsc::UnboundedSender<prober::Work>,
    timer_wake: Notify,
    /// Told each time a probe result reached the core.
    probe_done: Notify,
    shutdown: Notify,
    started_ms: u64,
    /// The team link, with `[team]`.
    team: Option<team::TeamLink>,
    /// The watch over project trees builds ask about.
    trees: trees::Trees,
}

/// Outputs to carry out once the core's lock is released.
#[derive(Default)]
struct Deferred {
    persist: Vec<Persist>,
    events: Vec<EventRecord>,
    probes: Vec<prober::Work>,
    team: Vec<fleet::TeamOp>,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Run `f` on the core, then carry out its outputs.
    pub fn with_fleet<R>(&self, f: impl FnOnce(&mut Fleet, u64) -> R) -> R {
        self.drive(|d, now| f(&mut d.fleet, now), false)
    }

    /// Ask for a lease; a queued request gets the receiver of its answer.
    pub fn lease(
        &self,
        request: crate::protocol::LeaseRequest,
    ) -> (Decision, Option<oneshot::Receiver<Answer>>) {
        self.drive(
            |d, now| {
                let decision = d.fleet.handle_lease(now, request);
                let rx = match &decision {
                    Decision::Queued { waiter, .. } => {
                        let (tx, rx) = oneshot::channel();
                        d.replies.insert(*waiter, tx);
                        Some(rx)
                    }
                    _ => None,
                };
                (decision, rx)
            },
            false,
        )
    }

    /// A queued request's client left: take it out of the queue and give
    /// back a grant that raced in.
    pub fn cancel_wait(&self, waiter: WaiterId, rx: &mut oneshot::Receiver<Answer>) {
        self.drive(
            |d, now| {
                d.fleet.cancel_wait(waiter);
                d.replies.remove(&waiter);
                if let Ok(Answer::Granted(g)) = rx.try_recv() {
                    d.fleet.handle_abandon(now, g.lease);
                }
            },
            false,
        )
    }

    fn drive<R>(&self, f: impl FnOnce(&mut Driver, u64) -> R, timer: bool) -> R {
        let now = self.now_ms();
        let mut deferred = Deferred::default();
        let (result, wake_timer) = {
            let mut d = self.driver.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut d, now);
            if timer {
                d.fleet.handle_timeout(now);
            }
            while let Some(output) = d.fleet.poll_output() {
                match output {
                    Output::Grant { waiter, grant } => deliver(&mut d, now, waiter, grant),
                    Output::Refuse { waiter, reason } => {
                        if let Some(tx) = d.replies.remove(&waiter) {
                            let _ = tx.send(Answer::Local(reason));
                        }
                    }
                    Output::StartProbe(job) => deferred.probes.push(prober::Work::Probe(job)),
                    Output::Learn { worker } => deferred.probes.push(prober::Work::Learn(worker)),
                    Output::Persist(p) => deferred.persist.push(p),
                    Output::Emit(e) => deferred.events.push(e),
                    Output::Team(op) => deferred.team.push(op),
                }
            }
            let next = d.fleet.poll_timeout();
            let earlier = match (next, d.armed) {
                (Some(n), Some(a)) => n < a,
                (Some(_), None) => true,
                _ => false,
            };
            if timer {
                d.armed = next;
            }
            (result, earlier && !timer)
        };
        self.carry_out(deferred, now);
        if wake_timer {
            self.timer_wake.notify_one();
        }
        result
    }

    fn carry_out(&self, deferred: Deferred, now: u64) {
        for work in deferred.probes {
            let _ = self.probes.send(work);
        }
        if let Some(link) = &self.team {
            for op in deferred.team {
                let _ = link.work.send(team::Work::Op(op));
            }
        }
        if deferred.persist.is_empty() && deferred.events.is_empty() {
            return;
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let sink: &mut dyn StateSink = &mut *store;
        for item in &deferred.persist {
            if let Err(e) = sink.persist(item) {
                tracing::error!(error = %e, "saving state");
            }
        }
        for event in deferred.events {
            let line = event.to_json_line();
            tracing::info!(target: "rch::event", event = %line, "{}", event.event.name());
            if let Err(e) = sink.record_event(now, &event) {
                tracing::error!(error = %e, "saving event");
            }
            if let Some(link) = &self.team {
                let _ = link.work.send(team::Work::Publish(event.clone()));
            }
            let _ = self.events.send(event);
        }
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read the configuration files again (`rch daemon reload`, SIGHUP).
    pub fn reload(&self) -> anyhow::Result<()> {
        let mut current = self.config_files.lock().unwrap_or_else(|e| e.into_inner());
        let files = current.files.clone();
        self.load_config(&mut current, files)
    }

    /// Before answering: read the configuration again when its files (those
    /// the client names, else the daemon's own) are other files than the
    /// running configuration's, or changed since. An invalid change keeps
    /// the running configuration, with the error reported by `rch status`.
    pub fn follow_config(&self, client: Option<&DaemonFiles>) {
        let mut current = self.config_files.lock().unwrap_or_else(|e| e.into_inner());
        let files = client.unwrap_or(&current.files).clone();
        if files == current.files && files.stamp() == current.stamp {
            return;
        }
        tracing::info!(file = %files.user_file.display(), "configuration files changed; reading them again");
        if let Err(e) = self.load_config(&mut current, files) {
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the previous configuration");
        }
    }

    /// Why the configuration files could not be used, if they could not.
    pub fn config_error(&self) -> Option<String> {
        let current = self.config_files.lock().unwrap_or_else(|e| e.into_inner());
        current.error.clone()
    }

    fn load_config(&self, current: &mut ConfigFiles, files: DaemonFiles) -> anyhow::Result<()> {
        // Stamped before reading: an edit while reading is seen next time.
        current.stamp = files.stamp();
        let loaded = (self.config_source)(&files);
        current.files = files;
        match loaded {
            Ok(config) => {
                current.error = None;
                self.with_fleet(|f, now| f.reconfigure(config, now));
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                current.error = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// The team link as `rch status` shows it, with `[team]`.
    pub fn team_report(&self) -> Option<crate::team::TeamReport> {
        self.team
            .as_ref()
            .map(|l| l.team.report(crate::clock::rfc3339))
    }

    pub fn request_shutdown(&self) {
        self.shutdown.notify_waiters();
        self.shutdown.notify_one();
    }
}

/// Hand a grant to its waiting client; a client that is gone gets nothing and
/// the lease goes straight back.
fn deliver(d: &mut Driver, now: u64, waiter: WaiterId, grant: Grant) {
    let lease = grant.lease;
    let delivered = d
        .replies
        .remove(&waiter)
        .is_some_and(|tx| tx.send(Answer::Granted(grant)).is_ok());
    if !delivered {
        d.fleet.handle_abandon(now, lease);
    }
}

/// Sleeps on the daemon's clock until the core's next deadline (or until an
/// input brought it forward), then lets the core handle it.
async fn timer(shared: Arc<Shared>) {
    loop {
        let wake = shared.timer_wake.notified();
        shared.drive(|_, _| (), true);
        let deadline = shared
            .driver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .armed;
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = shared.clock.sleep_until(at) => {}
                    _ = wake => {}
                }
            }
            None => wake.await,
        }
    }
}

/// Holds the single-instance lock; the socket is removed on drop.
struct Listening {
    socket: PathBuf,
    _lock: std::fs::File,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Run the daemon until a shutdown request or SIGTERM/SIGINT.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let (listener, guard) = bind(&opts.socket)?;
    let (shared, probe_jobs, team_work, restored) = open_state(opts)?;
    let shared = Arc::new(shared);
    team::restore(&shared, &restored);
    for (lease, held) in restored {
        tokio::spawn(release_when_ended(shared.clone(), lease, held.holder));
    }
    tracing::info!(socket = %guard.socket.display(), pid = std::process::id(), "rch daemon listening");
    let timer = tokio::spawn(timer(shared.clone()));
    let prober = tokio::spawn(prober::run(shared.clone(), probe_jobs));
    let team = match (&shared.team, team_work) {
        (Some(link), Some(work)) => {
            Some(team::start(shared.clone(), link.team.clone(), work).await)
        }
        _ => None,
    };
    let metrics_listen = shared.with_fleet(|f, _| f.config().daemon.metrics_listen.clone());
    let http = metrics_listen.map(|addr| tokio::spawn(metrics_http::serve(addr, shared.clone())));
    let signals = tokio::spawn(watch_signals(shared.clone()));
    let disk = tokio::spawn(disk::enforce_disk_limits(shared.clone()));
    let result = server::accept_loop(listener, shared.clone()).await;
    shared.with_fleet(|f, now| f.flush_lazy(now));
    // Slots of builds that ended are not left to expire.
    team::send_released(&shared).await;
    timer.abort();
    prober.abort();
    signals.abort();
    disk.abort();
    if let Some(t) = team {
        t.abort();
    }
    if let Some(h) = http {
        h.abort();
    }
    drop(guard);
    tracing::info!("rch daemon stopped");
    result
}

/// A lease restored from the store goes back when its holder ends (its
/// connection went with the previous daemon: nothing else will end it).
async fn release_when_ended(shared: Arc<Shared>, lease: u64, holder: Holder) {
    holders::ended(holder).await;
    tracing::info!(
        lease,
        pid = holder.pid,
        "the holder of a restored lease ended"
    );
    shared.with_fleet(|f, now| f.handle_abandon(now, lease));
    team::release_slot(&shared, lease);
}

/// The leases saved by an earlier daemon whose holders still run; the
/// others are forgotten (their builds ended while no daemon ran).
fn live_leases(store: &Store) -> Vec<(u64, HeldLease)> {
    let saved = store.load_leases().unwrap_or_else(|e| {
        tracing::error!(error = %e, "reading saved leases");
        Vec::new()
    });
    let (live, gone): (Vec<_>, Vec<_>) = saved
        .into_iter()
        .partition(|(_, held)| holders::alive(&held.holder));
    for (lease, _) in gone {
        if let Err(e) = store.delete_lease(lease) {
            tracing::error!(error = %e, "forgetting a lease");
        }
    }
    live
}

/// The daemon's state, the prober's work queue, the team task's, and the
/// leases restored, as saved with their holders.
type Opened = (
    Shared,
    mpsc::UnboundedReceiver<prober::Work>,
    Option<mpsc::UnboundedReceiver<team::Work>>,
    Vec<(u64, HeldLease)>,
);

fn open_state(opts: DaemonOptions) -> anyhow::Result<Opened> {
    let stamp = opts.files.stamp();
    let config = (opts.config)(&opts.files)?;
    let (team, team_work) = match team::open(&config, &opts.socket) {
        Some((link, work)) => (Some(link), Some(work)),
        None => (None, None),
    };
    let opened = Store::open(&opts.db)?;
    if let Some(aside) = &opened.moved_aside {
        tracing::warn!(moved_to = %aside.display(), "state database was unreadable; started fresh");
    }
    let store = opened.store;
    let now = opts.clock.now_ms();
    let breakers = store.load_breakers().unwrap_or_default();
    let flags = store.load_flags().unwrap_or_default();
    let mut fleet = Fleet::new(config, breakers, flags, now);
    let ids: Vec<String> = fleet
        .config()
        .workers
        .iter()
        .map(|w| w.id.clone())
        .collect();
    for id in ids {
        if let Ok(Some(at)) = store.last_build_ms(&id) {
            fleet.last_build(&id, at);
        }
    }
    for (project, worker) in store.last_worker_per_project().unwrap_or_default() {
        fleet.remember_builder(&project, &worker);
    }
    let live = live_leases(&store);
    let saved: HashMap<u64, HeldLease> = live.iter().cloned().collect();
    let restored: Vec<(u64, HeldLease)> = fleet
        .restore(live)
        .into_iter()
        .filter_map(|id| saved.get(&id).map(|l| (id, l.clone())))
        .collect();
    if !restored.is_empty() {
        tracing::info!(
            leases = restored.len(),
            "kept the slots of builds still running from before the restart"
        );
    }
    let (probes, probe_jobs) = mpsc::unbounded_channel();
    let shared = Shared {
        driver: Mutex::new(Driver {
            fleet,
            replies: HashMap::new(),
            armed: None,
        }),
        store: Mutex::new(store),
        clock: opts.clock,
        config_source: opts.config,
        config_files: Mutex::new(ConfigFiles {
            files: opts.files,
            stamp,
            error: None,
        }),
        events: broadcast::channel(1024).0,
        probes,
        timer_wake: Notify::new(),
        probe_done: Notify::new(),
        shutdown: Notify::new(),
        started_ms: now,
        team,
        trees: trees::Trees::start(&opts.socket),
    };
    Ok((shared, probe_jobs, team_work, restored))
}

/// Take the single-instance lock and bind the socket (0700 dir, 0600 socket).
fn bind(socket: &Path) -> anyhow::Result<(tokio::net::UnixListener, Listening)> {
    let dir = socket.parent().context("socket path has no directory")?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let lock_path = PathBuf::from(format!("{}.lock", socket.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    if fs2::FileExt::try_lock_exclusive(&lock).is_err() {
        anyhow::bail!(
            "another rch daemon is already running on {}",
            socket.display()
        );
    }
    // We hold the lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok((
        listener,
        Listening {
            socket: socket.to_path_buf(),
            _lock: lock,
        },
    ))
}

async fn watch_signals(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = shared.reload() {
                    tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the previous configuration");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    shared.request_shutdown();
}
