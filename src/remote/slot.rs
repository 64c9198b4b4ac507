//! Build slots: which of a project's directories on a worker a build may use.
//!
//! A build claims the lowest free slot of its project on its worker for the
//! whole attempt (push, run, pull) by holding an exclusive lock on a small
//! file on the client. The kernel drops the lock when the build ends, however
//! it ends, so a crashed client never strands a slot, and claiming costs no
//! round trip to the worker. Builds of one project that overlap get distinct
//! slots, hence distinct trees ([`super::layout::build_dir`]); a build alone
//! always gets slot 0, where the warm target dir is.

use fs2::FileExt;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

/// More overlapping builds of one project on one worker than any worker has slots.
const MAX_SLOTS: u32 = 256;

/// A claimed slot; the claim lasts as long as this value.
#[derive(Debug)]
pub struct Slot {
    pub index: u32,
    _lock: File,
}

/// Claim the lowest free slot of the project whose home on `worker` is
/// `project_home`, with lock files under `lock_dir`.
pub fn claim(lock_dir: &Path, worker: &str, project_home: &str) -> std::io::Result<Slot> {
    std::fs::create_dir_all(lock_dir)?;
    let key = lock_key(worker, project_home);
    for index in 0..MAX_SLOTS {
        let file = File::create(lock_path(lock_dir, &key, index))?;
        if file.try_lock_exclusive().is_ok() {
            return Ok(Slot { index, _lock: file });
        }
    }
    Err(std::io::Error::other(format!(
        "all {MAX_SLOTS} build slots of {project_home} on {worker} are taken"
    )))
}

/// Where the client keeps slot locks: the runtime dir, cleared at reboot.
pub fn default_lock_dir() -> PathBuf {
    crate::paths::runtime_dir().join("slots")
}

fn lock_key(worker: &str, project_home: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(worker.as_bytes());
    hasher.update([0]);
    hasher.update(project_home.as_bytes());
    hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lock_path(dir: &Path, key: &str, index: u32) -> PathBuf {
    dir.join(format!("{key}.{index}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_claims_get_distinct_slots_and_a_freed_slot_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = claim(dir.path(), "w1", "b/p-1").unwrap();
        let b = claim(dir.path(), "w1", "b/p-1").unwrap();
        let other = claim(dir.path(), "w2", "b/p-1").unwrap();
        assert_eq!((a.index, b.index, other.index), (0, 1, 0));
        drop(a);
        let c = claim(dir.path(), "w1", "b/p-1").unwrap();
        assert_eq!(c.index, 0);
    }
}
