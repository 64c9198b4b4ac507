//! The rch daemon: one per user, on a Unix socket.
//!
//! It owns worker state: the registry from config, one breaker per worker,
//! slots and the FIFO wait queue ([`fleet`]), the prober that tests open
//! workers when their cooldown ends ([`prober`]), the SQLite store ([`store`])
//! and the event stream ([`events`]). It never touches a build's bytes: the
//! client syncs, runs and streams; the daemon only hands out leases.

pub mod clock;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod metrics_http;
pub mod offline;
pub mod prober;
pub mod report;
pub mod server;
pub mod store;

use crate::config::Config;
use anyhow::Context;
use clock::Clock;
use fleet::{Effects, Fleet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::Store;
use tokio::sync::{broadcast, Notify};

/// Reads the configuration the daemon should use (at start and on reload).
pub type ConfigSource = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// How to build a daemon.
pub struct DaemonOptions {
    pub socket: PathBuf,
    pub db: PathBuf,
    pub clock: Arc<dyn Clock>,
    pub config: ConfigSource,
}

/// State shared by the server's tasks.
pub struct Shared {
    fleet: Mutex<Fleet>,
    store: Mutex<Store>,
    clock: Arc<dyn Clock>,
    config_source: ConfigSource,
    events: broadcast::Sender<serde_json::Value>,
    prober_wake: Notify,
    shutdown: Notify,
    started_ms: u64,
}

impl Shared {
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Run `f` on the fleet, then carry out its side effects (persist,
    /// log, stream events, wake the prober).
    pub fn with_fleet<R>(&self, f: impl FnOnce(&mut Fleet, u64) -> R) -> R {
        let now = self.now_ms();
        let (result, effects, breakers, flags) = {
            let mut fleet = self.fleet.lock().unwrap_or_else(|e| e.into_inner());
            let result = f(&mut fleet, now);
            let effects = fleet.take_effects(now);
            let breakers: Vec<_> = effects
                .breakers
                .iter()
                .filter_map(|id| fleet.breaker(id).map(|b| (id.clone(), b.clone())))
                .collect();
            let flags: Vec<_> = effects
                .flags
                .iter()
                .map(|id| (id.clone(), fleet.flags(id)))
                .collect();
            (result, effects, breakers, flags)
        };
        self.apply(effects, breakers, flags, now);
        result
    }

    fn apply(
        &self,
        effects: Effects,
        breakers: Vec<(String, crate::breaker::Breaker)>,
        flags: Vec<(String, store::WorkerFlags)>,
        now: u64,
    ) {
        if effects.learn {
            self.prober_wake.notify_one();
        }
        if effects.events.is_empty() && breakers.is_empty() && flags.is_empty() {
            return;
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        for (id, b) in &breakers {
            if let Err(e) = store.save_breaker(id, b) {
                tracing::error!(worker = %id, error = %e, "saving breaker state");
            }
        }
        for (id, f) in flags {
            if let Err(e) = store.save_flags(&id, f) {
                tracing::error!(worker = %id, error = %e, "saving worker flags");
            }
        }
        for event in &effects.events {
            let json = event.to_json();
            tracing::info!(target: "rch::event", event = %json, "{}", json["event"].as_str().unwrap_or(""));
            if let Err(e) = store.insert_event(now, event) {
                tracing::error!(error = %e, "saving event");
            }
            let _ = self.events.send(json);
        }
        drop(store);
        if !breakers.is_empty() {
            self.prober_wake.notify_one();
        }
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reload(&self) -> anyhow::Result<()> {
        let config = (self.config_source)()?;
        self.with_fleet(|f, now| f.reconfigure(config, now));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    pub fn request_shutdown(&self) {
        self.shutdown.notify_waiters();
        self.shutdown.notify_one();
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
    let shared = Arc::new(open_state(opts)?);
    tracing::info!(socket = %guard.socket.display(), pid = std::process::id(), "rch daemon listening");
    let prober = tokio::spawn(prober::run(shared.clone()));
    let metrics_listen = shared.with_fleet(|f, _| f.config().daemon.metrics_listen.clone());
    let http = metrics_listen.map(|addr| tokio::spawn(metrics_http::serve(addr, shared.clone())));
    let signals = tokio::spawn(watch_signals(shared.clone()));
    let disk = tokio::spawn(crate::gc::enforce_disk_limits(shared.clone()));
    let result = server::accept_loop(listener, shared.clone()).await;
    shared.with_fleet(|f, now| f.flush_lazy(now));
    prober.abort();
    signals.abort();
    disk.abort();
    if let Some(h) = http {
        h.abort();
    }
    drop(guard);
    tracing::info!("rch daemon stopped");
    result
}

fn open_state(opts: DaemonOptions) -> anyhow::Result<Shared> {
    let config = (opts.config)()?;
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
    Ok(Shared {
        fleet: Mutex::new(fleet),
        store: Mutex::new(store),
        clock: opts.clock,
        config_source: opts.config,
        events: broadcast::channel(1024).0,
        prober_wake: Notify::new(),
        shutdown: Notify::new(),
        started_ms: now,
    })
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
