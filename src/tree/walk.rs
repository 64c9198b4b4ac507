//! Reading a tree's directories on a few threads at once.
//!
//! A snapshot is mostly stat calls, which the kernel serves in parallel; a
//! shared queue of directories keeps every thread busy however the tree is
//! shaped (one deep directory or many shallow ones). Results are keyed by
//! the directory's relative path; putting them in order is the caller's.

use super::{DirJob, Listed};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

/// At most this many threads read directories.
const MAX_THREADS: usize = 4;

/// The queue and what is still being read.
struct Queue {
    jobs: Vec<DirJob>,
    /// Jobs taken and not finished yet: while any is, more may come.
    busy: usize,
    done: HashMap<PathBuf, Listed>,
    error: Option<std::io::Error>,
}

/// Read `root` and every directory `read` returns below it; the first error
/// ends the walk.
pub(super) fn run<F>(root: DirJob, read: F) -> std::io::Result<HashMap<PathBuf, Listed>>
where
    F: Fn(DirJob) -> std::io::Result<(Listed, Vec<DirJob>)> + Sync,
{
    let queue = Mutex::new(Queue {
        jobs: vec![root],
        busy: 0,
        done: HashMap::new(),
        error: None,
    });
    let wake = Condvar::new();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| work(&queue, &wake, &read));
        }
        work(&queue, &wake, &read);
    });
    let queue = queue.into_inner().unwrap_or_else(|e| e.into_inner());
    match queue.error {
        Some(e) => Err(e),
        None => Ok(queue.done),
    }
}

/// Take jobs until none is left and none is being read.
fn work<F>(queue: &Mutex<Queue>, wake: &Condvar, read: &F)
where
    F: Fn(DirJob) -> std::io::Result<(Listed, Vec<DirJob>)>,
{
    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if q.error.is_some() {
            q.jobs.clear();
        }
        let Some(job) = q.jobs.pop() else {
            if q.busy == 0 {
                wake.notify_all();
                return;
            }
            q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        q.busy += 1;
        drop(q);
        let rel = job.rel.clone();
        let result = read(job);
        q = queue.lock().unwrap_or_else(|e| e.into_inner());
        q.busy -= 1;
        match result {
            Ok((listed, jobs)) => {
                q.done.insert(rel, listed);
                q.jobs.extend(jobs);
            }
            Err(e) => {
                q.error.get_or_insert(e);
            }
        }
        wake.notify_all();
    }
}
