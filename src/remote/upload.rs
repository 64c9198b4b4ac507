//! Getting a build's tree to the worker with as little work as it takes.
//!
//! The client remembers, per worker and build directory, the snapshot of its
//! last successful push and a random token; the push wrote that token into
//! the tree on the worker ([`super::sync::TOKEN_FILE`]). A build then:
//! - pushes nothing when the snapshot is unchanged, and the run script
//!   checks, in the same remote command as the build, that the worker still
//!   holds the token (the tree there is ours, as we left it);
//! - pushes only the changed and deleted paths when it changed, checked the
//!   same way; small edited files ride in the run command itself
//!   ([`super::carry`]) instead of a push of their own;
//! - pushes the whole tree (rsync `--delete`) without a remembered push, or
//!   when the check finds another tree there (another machine built the same
//!   path, the directory was cleaned up), and then runs again.
//!
//! The remembered snapshot is forgotten before any push starts, so a push
//! that fails half-way leaves "unknown" (the next build pushes in full),
//! never a wrong "unchanged".
//!
//! When the daemon vouches that nothing under the root changed since the
//! walk that matched the remembered push ([`crate::tree_marks`]), the tree
//! is not walked at all: the plan is a skip, checked by the token as ever.

use super::outputs::Listing;
use super::ssh::Connection;
use super::sync;
use super::RemoteFailure;
use crate::tree::{self, Changes, Snapshot};
use crate::tree_marks::Marks;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// How this build's tree gets to the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The whole tree, deleting what is gone.
    Full,
    /// Only these paths; the worker must hold our last push.
    Changes(Changes),
    /// Nothing; the worker must hold our last push.
    Skip,
}

/// What the run script checks and writes before it starts the command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeCheck {
    /// The tree's directory on the worker.
    pub dir: String,
    /// Run only when the worker holds this token (else report a stale tree).
    pub expect: Option<String>,
    /// Write this token once the check passed.
    pub set: Option<String>,
    /// Paths of the tree to delete once the check passed (gone locally).
    pub delete: Vec<String>,
    /// A tar archive of edited files to unpack into the tree once the check
    /// passed ([`super::carry`]); it follows the run command's first line.
    pub carried: Vec<u8>,
}

/// One build's upload to one build directory of one worker.
pub struct Upload<'a> {
    root: &'a Path,
    remote_dir: &'a str,
    state: PathBuf,
    snapshot: Option<Snapshot>,
    last: Option<(String, Snapshot)>,
    plan: Plan,
    token: String,
    /// The planned changes, packed to ride in the run command.
    carried: Option<Vec<u8>>,
    /// The daemon's word on the tree, and the mark to keep after the build.
    marks: Marks,
}

impl<'a> Upload<'a> {
    /// Decide the plan from the tree now (`walk`: `None` when it could not
    /// be walked) and what was remembered for `worker` and `remote_dir`,
    /// read while the tree is walked. When `marks` vouch for the tree,
    /// neither is read: nothing changed since the remembered push.
    pub fn prepare(
        root: &'a Path,
        worker: &str,
        remote_dir: &'a str,
        marks: Marks,
        walk: impl FnOnce() -> Option<Snapshot>,
    ) -> Upload<'a> {
        let state = state_file(worker, remote_dir);
        if let Some(token) = marks.vouched() {
            let token = token.to_string();
            return Upload {
                root,
                remote_dir,
                state,
                snapshot: None,
                last: Some((token.clone(), Snapshot::default())),
                plan: Plan::Skip,
                token,
                carried: None,
                marks,
            };
        }
        let (snapshot, last) = std::thread::scope(|scope| {
            let last = scope.spawn(|| tree::load(&state));
            let snapshot = walk();
            (snapshot, last.join().ok().flatten())
        });
        let last = last.filter(|_| snapshot.is_some());
        let plan = plan(root, last.as_ref(), snapshot.as_ref());
        let token = match (&plan, &last) {
            (Plan::Skip, Some((token, _))) => token.clone(),
            _ => new_token(),
        };
        let carried = match (&plan, &last, &snapshot) {
            (Plan::Changes(changes), Some((_, before)), Some(now)) => {
                super::carry::archive(root, &changes.changed, before, now)
            }
            _ => None,
        };
        Upload {
            root,
            remote_dir,
            state,
            snapshot,
            last,
            plan,
            token,
            carried,
            marks,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The tree as it was walked for this build.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Whether the tree was left unwalked because the daemon vouched for it.
    pub fn vouched(&self) -> bool {
        self.snapshot.is_none() && self.marks.vouched().is_some()
    }

    /// The tree walked after all (a full push follows a vouched skip).
    pub fn walked(&mut self, snapshot: Option<Snapshot>) {
        self.snapshot = snapshot;
    }

    /// Push as planned.
    pub async fn push(
        &self,
        conn: &Connection,
        extra_excludes: &[String],
    ) -> Result<(), RemoteFailure> {
        match &self.plan {
            Plan::Skip => Ok(()),
            Plan::Changes(_) if self.carried.is_some() => {
                self.forget();
                Ok(())
            }
            Plan::Changes(changes) => {
                self.forget();
                sync::push_changes(conn, self.root, self.remote_dir, &changes.changed).await
            }
            Plan::Full => self.push_full(conn, extra_excludes).await,
        }
    }

    /// The worker holds another tree than we thought: push all of it.
    pub async fn push_full(
        &self,
        conn: &Connection,
        extra_excludes: &[String],
    ) -> Result<(), RemoteFailure> {
        self.forget();
        let snapshot = self.snapshot.as_ref();
        sync::push_full(conn, self.root, self.remote_dir, extra_excludes, snapshot).await
    }

    /// What the run script checks: after a planned push or skip, that the
    /// worker holds our last token; after a full push nothing. `full` says a
    /// full push has just been made.
    pub fn check(&self, full: bool) -> TreeCheck {
        let expect = match (&self.plan, &self.last) {
            (Plan::Skip | Plan::Changes(_), Some((token, _))) if !full => Some(token.clone()),
            _ => None,
        };
        let set = (full || self.plan != Plan::Skip).then(|| self.token.clone());
        let delete = match &self.plan {
            Plan::Changes(changes) if !full => utf8_paths(&changes.deleted).unwrap_or_default(),
            _ => Vec::new(),
        };
        let carried = match &self.carried {
            Some(bytes) if !full => bytes.clone(),
            _ => Vec::new(),
        };
        TreeCheck {
            dir: self.remote_dir.to_string(),
            expect,
            set,
            delete,
            carried,
        }
    }

    /// The command ran on the tree we pushed: remember it for the next
    /// build. Errors only cost the next build a full push.
    /// `full` says a full push was made after a stale check.
    pub fn commit(&self, full: bool) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        if self.plan == Plan::Skip && !full && !self.settles_racy_files() {
            // Remembered as it is; this walk matched it.
            self.marks.remember(&self.token, snapshot.linked);
            return;
        }
        match tree::save(&self.state, &self.token, snapshot) {
            Ok(()) => self.marks.remember(&self.token, snapshot.linked),
            Err(e) => {
                tracing::debug!(error = %e, file = %self.state.display(), "cannot save the push snapshot")
            }
        }
    }

    /// A build that changed the tree itself (make & co) ran, and its
    /// listing's changes came back: remember the tree as it is here now
    /// (`now`, walked after the pull), keeping only what the worker is known
    /// to hold the same (the listing's size and mtime, which the transfers
    /// keep), so the next build sends only what differs instead of the
    /// whole tree. A path deleted here while the build ran (gone now, not
    /// deleted by the build) would stay on the worker unseen: then nothing
    /// is remembered and the next build pushes in full.
    ///
    /// Without a listing (the build failed, or listed a name it could not
    /// carry) the worker's tree changed in ways not known here: the
    /// remembered push is forgotten.
    pub fn commit_tree_build(
        &self,
        now: impl FnOnce() -> Option<Snapshot>,
        listing: Option<&Listing>,
    ) {
        let Some(listing) = listing else {
            self.forget();
            return;
        };
        self.marks.forget();
        let (Some(now), Some(before)) = (now(), self.snapshot.as_ref()) else {
            return;
        };
        let Some(kept) = tree_after_build(before, now, listing) else {
            tracing::debug!("a path was deleted here during the build; the next push sends it");
            return;
        };
        if let Err(e) = tree::save(&self.state, &self.token, &kept) {
            tracing::debug!(error = %e, file = %self.state.display(), "cannot save the push snapshot");
        }
    }

    /// Whether the remembered push holds content hashes of files that were
    /// racy then and are not now: saving this build's snapshot (same token,
    /// same tree) spares every later build reading those files again.
    fn settles_racy_files(&self) -> bool {
        let Some((_, last)) = &self.last else {
            return false;
        };
        let racy = |snap: &Snapshot| snap.entries.iter().filter(|e| e.hash.is_some()).count();
        racy(last) > self.snapshot.as_ref().map_or(usize::MAX, racy)
    }

    /// Forget the remembered push (it is about to stop being true).
    fn forget(&self) {
        self.marks.forget();
        let _ = std::fs::remove_file(&self.state);
    }
}

impl Plan {
    /// One word for logs: `full`, `changes` or `skip`.
    pub fn label(&self) -> &'static str {
        match self {
            Plan::Full => "full",
            Plan::Changes(_) => "changes",
            Plan::Skip => "skip",
        }
    }
}

/// The plan for `now` given the last push; see [`Plan`]. Deletions travel
/// as arguments of the run script, so a deleted path that is not UTF-8 makes
/// the push a full one.
pub fn plan(root: &Path, last: Option<&(String, Snapshot)>, now: Option<&Snapshot>) -> Plan {
    let (Some((_, before)), Some(now)) = (last, now) else {
        return Plan::Full;
    };
    let changes = tree::changes(root, before, now);
    if changes.is_empty() {
        Plan::Skip
    } else if utf8_paths(&changes.deleted).is_none() {
        Plan::Full
    } else {
        Plan::Changes(changes)
    }
}

/// The paths as strings, or `None` if one is not UTF-8.
fn utf8_paths(paths: &[PathBuf]) -> Option<Vec<String>> {
    paths
        .iter()
        .map(|p| p.to_str().map(str::to_string))
        .collect()
}

/// Where the client remembers its last push to `remote_dir` on `worker`.
pub fn state_file(worker: &str, remote_dir: &str) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(worker.as_bytes());
    hasher.update([0]);
    hasher.update(remote_dir.as_bytes());
    let key: String = hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    crate::paths::cache_dir()
        .join("pushed")
        .join(format!("{key}.snap"))
}

/// 32 hex digits from the system's random source.
fn new_token() -> String {
    crate::random::hex::<16>()
}

/// The snapshot to remember after a build that changed the tree (see
/// [`Upload::commit_tree_build`]), or `None` when a path was deleted here
/// during the build.
fn tree_after_build(before: &Snapshot, now: Snapshot, listing: &Listing) -> Option<Snapshot> {
    use std::collections::{HashMap, HashSet};
    let present: HashSet<&Path> = now.entries.iter().map(|e| e.path.as_path()).collect();
    let gone_by_build: HashSet<&Path> = listing.gone.iter().map(|g| Path::new(&g.path)).collect();
    let deleted_here = before
        .entries
        .iter()
        .any(|e| !present.contains(e.path.as_path()) && !gone_by_build.contains(e.path.as_path()));
    if deleted_here {
        return None;
    }
    let on_worker: HashMap<&Path, (u64, i64)> = listing
        .files
        .iter()
        .map(|f| (Path::new(&f.path), (f.size, f.mtime_ns)))
        .collect();
    let had_dir: HashSet<&Path> = before
        .entries
        .iter()
        .filter(|e| e.kind == tree::Kind::Dir)
        .map(|e| e.path.as_path())
        .collect();
    let mut entries: Vec<tree::Entry> = now
        .entries
        .iter()
        .filter(|e| match e.kind {
            tree::Kind::Dir => had_dir.contains(e.path.as_path()),
            _ => on_worker.get(e.path.as_path()) == Some(&(e.size, e.mtime_ns)),
        })
        .cloned()
        .collect();
    // A directory the build made holds files the worker has: it is there too.
    let parents: HashSet<PathBuf> = entries
        .iter()
        .filter(|e| e.kind != tree::Kind::Dir)
        .flat_map(|e| {
            e.path
                .ancestors()
                .skip(1)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .collect();
    for e in &now.entries {
        if e.kind == tree::Kind::Dir
            && !had_dir.contains(e.path.as_path())
            && parents.contains(&e.path)
        {
            entries.push(e.clone());
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Some(Snapshot {
        entries,
        ignored: now.ignored,
        linked: now.linked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_full_without_a_last_push_skip_when_unchanged_changes_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "a").unwrap();
        let rules = tree::Rules::new(dir.path(), &[], true).unwrap();
        let snap = tree::snapshot(&rules).unwrap();
        assert_eq!(plan(dir.path(), None, Some(&snap)), Plan::Full);
        let last = ("t".to_string(), snap.clone());
        assert_eq!(plan(dir.path(), Some(&last), None), Plan::Full);
        assert_eq!(plan(dir.path(), Some(&last), Some(&snap)), Plan::Skip);
        std::fs::write(dir.path().join("b"), "b").unwrap();
        let now = tree::snapshot(&rules).unwrap();
        match plan(dir.path(), Some(&last), Some(&now)) {
            Plan::Changes(c) => assert_eq!(c.changed, [PathBuf::from("b")]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn after_a_tree_build_only_what_the_worker_holds_the_same_is_remembered() {
        use super::super::outputs::{Gone, RemoteFile};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.c"), "int a;").unwrap();
        std::fs::write(root.join("notes.txt"), "n").unwrap();
        let rules = tree::Rules::new(root, &[], true).unwrap();
        let before = tree::snapshot(&rules).unwrap();
        // The build made obj/a.o (pulled); here someone edited notes.txt.
        std::fs::create_dir(root.join("obj")).unwrap();
        std::fs::write(root.join("obj/a.o"), "o").unwrap();
        std::fs::write(root.join("notes.txt"), "edited").unwrap();
        let now = tree::snapshot(&rules).unwrap();
        let listed = |path: &str, snap: &Snapshot| {
            let e = snap.entry(Path::new(path)).unwrap();
            RemoteFile {
                path: path.to_string(),
                size: e.size,
                mtime_ns: e.mtime_ns,
            }
        };
        let listing = Listing {
            files: vec![
                listed("a.c", &before),
                listed("notes.txt", &before),
                listed("obj/a.o", &now),
            ],
            gone: Vec::new(),
        };
        let kept = tree_after_build(&before, now.clone(), &listing).unwrap();
        let paths: Vec<&Path> = kept.entries.iter().map(|e| e.path.as_path()).collect();
        assert_eq!(
            paths,
            [Path::new("a.c"), Path::new("obj"), Path::new("obj/a.o")]
        );
        // notes.txt differs from the worker's: left out, so the next build sends it.
        // A file deleted here while the build ran (not by the build): nothing kept.
        std::fs::remove_file(root.join("a.c")).unwrap();
        let later = tree::snapshot(&rules).unwrap();
        assert!(tree_after_build(&before, later.clone(), &listing).is_none());
        let by_build = Listing {
            gone: vec![Gone {
                path: "a.c".into(),
                dir: false,
                size: 6,
                mtime_ns: 0,
            }],
            ..listing
        };
        assert!(tree_after_build(&before, later, &by_build).is_some());
    }

    #[test]
    fn a_skipped_push_still_saves_a_snapshot_whose_racy_files_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, "a").unwrap();
        let rules = tree::Rules::new(dir.path(), &[], true).unwrap();
        let fresh = tree::snapshot(&rules).unwrap();
        assert!(
            fresh.entries[0].hash.is_some(),
            "just written: racy, hashed"
        );
        // Settled: the same file, its mtime well in the past.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let racy_then = tree::snapshot(&rules).unwrap();
        let mut last = racy_then.clone();
        last.entries[0].hash = fresh.entries[0].hash;
        let state = dir.path().join("state.snap");
        let upload = |last: Snapshot| Upload {
            root: dir.path(),
            remote_dir: "d",
            state: state.clone(),
            plan: plan(
                dir.path(),
                Some(&("t".to_string(), last.clone())),
                Some(&racy_then),
            ),
            snapshot: Some(racy_then.clone()),
            last: Some(("t".to_string(), last)),
            token: "t".to_string(),
            carried: None,
            marks: Marks::none(&state),
        };
        let settled = upload(last);
        assert_eq!(settled.plan, Plan::Skip, "same content: nothing to push");
        settled.commit(false);
        let (token, saved) = tree::load(&state).expect("saved with the same token");
        assert_eq!(token, "t");
        assert!(saved.entries.iter().all(|e| e.hash.is_none()));
        std::fs::remove_file(&state).unwrap();
        upload(racy_then.clone()).commit(false);
        assert!(
            !state.exists(),
            "nothing settled: the remembered push stays as it is"
        );
    }

    #[test]
    fn tokens_are_fresh() {
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
