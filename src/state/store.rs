//! The daemon's SQLite store: breaker state, operator flags, leases held
//! by running builds, job history and events. WAL mode; history bounded. A database that cannot be opened or
//! fails its integrity check is moved aside and replaced by a fresh one, so a
//! broken file never keeps the daemon down.

use super::events::EventRecord;
use super::report::JobRow;
use crate::breaker::Breaker;
use crate::protocol::{JobOutcome, JobReport};
use anyhow::Context;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Jobs kept in history; older rows are pruned.
pub const MAX_JOBS: i64 = 100_000;
/// Events kept.
pub const MAX_EVENTS: i64 = 100_000;
/// Prune once every this many inserts, not on every one.
const PRUNE_EVERY: u64 = 1_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS breakers (
    worker TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_flags (
    worker TEXT PRIMARY KEY,
    enabled INTEGER,
    draining INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    project TEXT NOT NULL,
    command TEXT NOT NULL,
    placement TEXT NOT NULL,
    outcome TEXT NOT NULL,
    exit_code INTEGER,
    reason TEXT NOT NULL,
    queue_ms INTEGER NOT NULL,
    sync_ms INTEGER NOT NULL,
    run_ms INTEGER NOT NULL,
    return_ms INTEGER NOT NULL,
    phases TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_placement ON jobs(placement, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    event TEXT NOT NULL,
    worker TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_worker ON events(worker, id);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    worker TEXT NOT NULL,
    project TEXT NOT NULL,
    command TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    start INTEGER NOT NULL
);
";

/// Operator overrides of a worker, persisted across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerFlags {
    /// `Some(false)` after `rch workers disable`, `Some(true)` after `enable`.
    pub enabled: Option<bool>,
    pub draining: bool,
}

/// The process holding a lease: its pid and its start time (in clock ticks
/// since boot), which together name it even after the pid is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub start: u64,
}

/// A slot a running build holds, as saved so that a restarted daemon keeps
/// it taken while its holder runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub worker: String,
    pub project: String,
    pub command: String,
    pub since_ms: u64,
    pub holder: Holder,
}

pub struct Store {
    conn: Connection,
    inserts: u64,
}

/// What opening the store found.
pub struct Opened {
    pub store: Store,
    /// Where a broken database was moved, if one was.
    pub moved_aside: Option<PathBuf>,
}

impl Store {
    /// Open (or create) the database; a broken one is moved aside.
    pub fn open(path: &Path) -> anyhow::Result<Opened> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        match Self::open_checked(path) {
            Ok(store) => Ok(Opened {
                store,
                moved_aside: None,
            }),
            Err(err) => {
                let aside = aside_path(path);
                std::fs::rename(path, &aside)
                    .with_context(|| format!("moving broken {} aside ({err:#})", path.display()))?;
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                tracing::warn!(db = %path.display(), moved_to = %aside.display(), error = %format!("{err:#}"), "state database unusable; moved aside, starting fresh");
                Ok(Opened {
                    store: Self::open_checked(path)?,
                    moved_aside: Some(aside),
                })
            }
        }
    }

    /// Open an existing database read-only (status while the daemon is down).
    pub fn open_readonly(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        Ok(Store { conn, inserts: 0 })
    }

    fn open_checked(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        anyhow::ensure!(check == "ok", "integrity check: {check}");
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        add_phases_column(&conn)?;
        Ok(Store { conn, inserts: 0 })
    }

    pub fn load_breakers(&self) -> anyhow::Result<HashMap<String, Breaker>> {
        let mut stmt = self.conn.prepare("SELECT worker, state FROM breakers")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (worker, text) = row?;
            match serde_json::from_str(&text) {
                Ok(b) => {
                    out.insert(worker, b);
                }
                Err(e) => tracing::warn!(%worker, error = %e, "ignoring unreadable breaker state"),
            }
        }
        Ok(out)
    }

    pub fn save_breaker(&self, worker: &str, breaker: &Breaker) -> anyhow::Result<()> {
        let text = serde_json::to_string(breaker)?;
        self.conn.execute(
            "INSERT INTO breakers(worker, state) VALUES (?1, ?2)
             ON CONFLICT(worker) DO UPDATE SET state = excluded.state",
            params![worker, text],
        )?;
        Ok(())
    }

    pub fn load_flags(&self) -> anyhow::Result<HashMap<String, WorkerFlags>> {
        let mut stmt = self
            .conn
            .prepare("SELECT worker, enabled, draining FROM worker_flags")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                WorkerFlags {
                    enabled: r.get::<_, Option<bool>>(1)?,
                    draining: r.get::<_, bool>(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn save_flags(&self, worker: &str, flags: WorkerFlags) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO worker_flags(worker, enabled, draining) VALUES (?1, ?2, ?3)
             ON CONFLICT(worker) DO UPDATE SET enabled = excluded.enabled, draining = excluded.draining",
            params![worker, flags.enabled, flags.draining],
        )?;
        Ok(())
    }

    pub fn save_lease(&self, id: u64, lease: &HeldLease) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO leases(id, worker, project, command, since_ms, pid, start)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id as i64,
                lease.worker,
                lease.project,
                lease.command,
                lease.since_ms as i64,
                lease.holder.pid,
                lease.holder.start as i64
            ],
        )?;
        Ok(())
    }

    pub fn delete_lease(&self, id: u64) -> anyhow::Result<()> {
        self.conn
            .execute("DELETE FROM leases WHERE id = ?1", params![id as i64])?;
        Ok(())
    }

    /// The leases saved by the daemons before this one, by id.
    pub fn load_leases(&self) -> anyhow::Result<Vec<(u64, HeldLease)>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, worker, project, command, since_ms, pid, start FROM leases ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                HeldLease {
                    worker: r.get(1)?,
                    project: r.get(2)?,
                    command: r.get(3)?,
                    since_ms: r.get::<_, i64>(4)? as u64,
                    holder: Holder {
                        pid: r.get(5)?,
                        start: r.get::<_, i64>(6)? as u64,
                    },
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_job(&mut self, at_ms: u64, job: &JobReport) -> anyhow::Result<i64> {
        insert_job_row(&self.conn, at_ms, job)?;
        let id = self.conn.last_insert_rowid();
        self.maybe_prune(1)?;
        Ok(id)
    }

    /// Insert many jobs in one transaction (imports, benchmarks).
    pub fn insert_jobs(&mut self, at_ms: u64, jobs: &[JobReport]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        for job in jobs {
            insert_job_row(&tx, at_ms, job)?;
        }
        tx.commit()?;
        self.maybe_prune(jobs.len() as u64)
    }

    /// The newest jobs, newest first; only those of `worker` when given.
    pub fn recent_jobs(&self, worker: Option<&str>, limit: usize) -> anyhow::Result<Vec<JobRow>> {
        let sql = "SELECT id, at_ms, project, command, placement, outcome, exit_code, reason,
                          queue_ms, sync_ms, run_ms, return_ms, phases
                   FROM jobs WHERE (?1 IS NULL OR placement = ?1) ORDER BY id DESC LIMIT ?2";
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params![worker, limit as i64], |r| {
            Ok(JobRow {
                id: r.get(0)?,
                at: crate::clock::rfc3339(r.get::<_, i64>(1)? as u64),
                project: r.get(2)?,
                command: r.get(3)?,
                placement: r.get(4)?,
                outcome: JobOutcome::parse(&r.get::<_, String>(5)?).unwrap_or_default(),
                exit_code: r.get(6)?,
                reason: r.get(7)?,
                queue_ms: r.get::<_, i64>(8)? as u64,
                sync_ms: r.get::<_, i64>(9)? as u64,
                run_ms: r.get::<_, i64>(10)? as u64,
                return_ms: r.get::<_, i64>(11)? as u64,
                phases: serde_json::from_str(&r.get::<_, String>(12)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Time of the newest job that ran on `worker`.
    pub fn last_build_ms(&self, worker: &str) -> anyhow::Result<Option<u64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT at_ms FROM jobs WHERE placement = ?1 ORDER BY id DESC LIMIT 1",
                params![worker],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
    }

    /// For each project, the worker its newest remote job ran on (so a
    /// restarted daemon keeps sending projects to their warm worker).
    pub fn last_worker_per_project(&self) -> anyhow::Result<Vec<(String, String)>> {
        // SQLite takes the bare columns from the row that holds MAX(id).
        let mut stmt = self.conn.prepare(
            "SELECT project, placement, MAX(id) FROM jobs WHERE placement != 'local' GROUP BY project",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For each worker and project, when its newest job there was recorded
    /// (what `rch workers gc` and `max_disk_gb` call "last used").
    pub fn last_use_per_project(&self) -> anyhow::Result<Vec<(String, String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT placement, project, MAX(at_ms) FROM jobs WHERE placement != 'local' GROUP BY placement, project",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_event(&mut self, at_ms: u64, record: &EventRecord) -> anyhow::Result<()> {
        let body = serde_json::to_string(record)?;
        self.conn.execute(
            "INSERT INTO events(at_ms, event, worker, body) VALUES (?1, ?2, ?3, ?4)",
            params![
                at_ms as i64,
                record.event.name(),
                record.event.worker(),
                body
            ],
        )?;
        self.maybe_prune(1)?;
        Ok(())
    }

    /// The last `limit` events (of `worker` when given), oldest first. A row
    /// this version cannot read (written by a newer rch) is skipped.
    pub fn events(&self, worker: Option<&str>, limit: usize) -> anyhow::Result<Vec<EventRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT body FROM (SELECT id, body FROM events WHERE (?1 IS NULL OR worker = ?1)
             ORDER BY id DESC LIMIT ?2) ORDER BY id ASC",
        )?;
        let rows = stmt.query_map(params![worker, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            if let Ok(record) = serde_json::from_str(&body?) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Count `added` rows; prune once enough were added since the last time.
    fn maybe_prune(&mut self, added: u64) -> anyhow::Result<()> {
        self.inserts += added;
        if self.inserts < PRUNE_EVERY {
            return Ok(());
        }
        self.inserts = 0;
        self.conn.execute(
            "DELETE FROM jobs WHERE id <= (SELECT MAX(id) FROM jobs) - ?1",
            params![MAX_JOBS],
        )?;
        self.conn.execute(
            "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
            params![MAX_EVENTS],
        )?;
        Ok(())
    }
}

fn insert_job_row(conn: &Connection, at_ms: u64, job: &JobReport) -> rusqlite::Result<usize> {
    let placement = job.worker.as_deref().unwrap_or("local");
    conn.execute(
        "INSERT INTO jobs(at_ms, project, command, placement, outcome, exit_code, reason,
                          queue_ms, sync_ms, run_ms, return_ms, phases)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            at_ms as i64,
            job.project,
            job.command,
            placement,
            job.outcome.as_str(),
            job.exit_code,
            job.reason,
            job.queue_ms as i64,
            job.sync_ms as i64,
            job.run_ms as i64,
            job.return_ms as i64,
            serde_json::to_string(&job.phases).unwrap_or_else(|_| "[]".into())
        ],
    )
}

/// A database written before jobs kept their phases gets the column.
fn add_phases_column(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'phases'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE jobs ADD COLUMN phases TEXT NOT NULL DEFAULT '[]'")?;
    }
    Ok(())
}

fn aside_path(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("{}.corrupt-{stamp}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::write(&db, b"this is not a sqlite database, not at all, no").unwrap();
        let opened = Store::open(&db).unwrap();
        let aside = opened.moved_aside.expect("moved aside");
        assert!(aside.exists());
        let mut store = opened.store;
        store.insert_job(1, &JobReport::default()).unwrap();
        assert_eq!(store.recent_jobs(None, 10).unwrap().len(), 1);
    }

    #[test]
    fn flags_and_jobs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        {
            let mut store = Store::open(&db).unwrap().store;
            store
                .save_flags(
                    "w1",
                    WorkerFlags {
                        enabled: Some(false),
                        draining: true,
                    },
                )
                .unwrap();
            let job = JobReport {
                worker: Some("w1".into()),
                outcome: JobOutcome::Success,
                exit_code: Some(0),
                ..Default::default()
            };
            store.insert_job(5_000, &job).unwrap();
        }
        let store = Store::open(&db).unwrap().store;
        assert_eq!(
            store.load_flags().unwrap()["w1"],
            WorkerFlags {
                enabled: Some(false),
                draining: true
            }
        );
        assert_eq!(store.last_build_ms("w1").unwrap(), Some(5_000));
        assert_eq!(store.recent_jobs(Some("w1"), 5).unwrap()[0].placement, "w1");
    }
}
