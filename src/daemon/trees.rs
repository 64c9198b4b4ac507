//! The daemon's watch over project trees: it vouches that nothing under a
//! project's root changed since a mark it gave, so a warm build need not
//! walk its tree (stat every file) to find out.
//!
//! IO at the daemon's edge, apart from the fleet core: one inotify instance,
//! one thread reading its events in order, one watch per directory of each
//! root asked about (directories the push's exclude patterns match are never
//! sent and not watched). A mark names this daemon (random per start), the
//! watch of the root (a new one after any doubt) and how many changes that
//! watch had seen; any event under the root moves the count. The answer is
//! "unchanged" only when the client's mark is the current one, and:
//! - every change made before the question has been counted: a cookie file
//!   is created in the daemon's own watched directory and its event awaited
//!   (the kernel queues one instance's events in order);
//! - a directory created under a watched one is watched, then read for the
//!   subdirectories made before its watch existed;
//! - whatever the watch cannot follow ends it (the next question starts a
//!   new one, its first walk is not vouched for): an event queue overflow, a
//!   directory renamed or moved in or out, the root deleted or replaced, a
//!   directory on another device, a watch the kernel refuses, the budget of
//!   watches spent;
//! - only on local filesystems: a network filesystem changes without events
//!   here.
//!
//! Bounded: at most [`MAX_ROOTS`] roots (the least recently asked about is
//! dropped first), roots not asked about for [`IDLE`] are dropped, and the
//! watches of a root and of all roots are limited. Nothing here can fail a
//! build: any doubt answers "walk".

use crate::protocol::{TreeAnswer, TreeMark, TreeQuery};
use ignore::gitignore::Gitignore;
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Roots watched at once.
pub const MAX_ROOTS: usize = 32;
/// A root not asked about for this long is no longer watched.
pub const IDLE: Duration = Duration::from_secs(3600);
/// Directories watched under one root.
pub const MAX_WATCHES_PER_ROOT: usize = 20_000;
/// Directories watched in all (and at most half the kernel's per-user limit).
const MAX_WATCHES: usize = 100_000;
/// How long a question waits for its cookie before answering "walk".
const COOKIE_WAIT: Duration = Duration::from_millis(500);
/// How long the first question about a root waits for its watch to be set
/// up (a larger tree is set up meanwhile; a later build gets the mark).
const SETUP_WAIT: Duration = Duration::from_millis(50);

/// What a directory's watch reports: everything that changes a path's
/// bytes, metadata, name or existence; not reads or opens.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

/// Filesystems whose every change raises an event here (`statfs` magic).
const LOCAL_FILESYSTEMS: &[i64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x794C_7630, // overlay
    0xF2F5_2010, // f2fs
    0x2FC1_2FC1, // zfs
    0xCA45_1A4E, // bcachefs
];

/// The daemon's tree watch; without inotify it always answers "walk".
pub struct Trees {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    inotify: Inotify,
    /// This daemon's name in marks.
    daemon: String,
    /// The daemon's own watched directory for cookies.
    cookies: PathBuf,
    /// Watches allowed in all.
    budget: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By watch number.
    roots: HashMap<u64, Root>,
    /// Each watched directory: its root's watch number and its path.
    wds: HashMap<WatchDescriptor, (u64, PathBuf)>,
    cookie_wd: Option<WatchDescriptor>,
    /// Questions waiting for their cookie's event, by cookie number.
    waiting: HashMap<u64, oneshot::Sender<()>>,
    next_watch: u64,
    next_cookie: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its directories are being watched; no mark yet.
    Starting,
    Ready,
    /// Something was missed or cannot be followed: never vouched for again.
    Broken,
}

struct Root {
    path: PathBuf,
    excludes: Vec<String>,
    matcher: Arc<Gitignore>,
    /// The root directory's device and inode when the watch started.
    ident: (u64, u64),
    /// Changes seen under the root.
    seq: u64,
    phase: Phase,
    wds: HashSet<WatchDescriptor>,
    asked: Instant,
}

impl Trees {
    /// Start watching for the daemon on `socket`: its cookies live beside
    /// the socket. Without inotify (or its cookie directory) the watch is
    /// off and every question is answered "walk".
    pub fn start(socket: &Path) -> Trees {
        match Inner::start(socket) {
            Ok(inner) => Trees { inner: Some(inner) },
            Err(e) => {
                tracing::info!(error = %e, "project trees are not watched; builds walk them");
                Trees { inner: None }
            }
        }
    }

    /// Answer a build's question about its tree.
    pub async fn query(&self, q: TreeQuery) -> TreeAnswer {
        let Some(inner) = &self.inner else {
            return walk();
        };
        let answer = inner.query(q).await;
        tracing::debug!(answer = ?answer, "tree watch");
        answer
    }
}

fn walk() -> TreeAnswer {
    TreeAnswer::Walk { mark: None }
}

impl Inner {
    fn start(socket: &Path) -> Result<Arc<Inner>, String> {
        let name = socket
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "rch".into());
        let cookies = socket.with_file_name(format!("{name}.tree-cookies"));
        let _ = std::fs::remove_dir_all(&cookies);
        std::fs::create_dir_all(&cookies).map_err(|e| format!("{}: {e}", cookies.display()))?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| format!("inotify: {e}"))?;
        let cookie_wd = inotify
            .add_watch(
                &cookies,
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR,
            )
            .map_err(|e| format!("{}: {e}", cookies.display()))?;
        let inner = Arc::new(Inner {
            inotify,
            daemon: random_name(),
            cookies,
            budget: budget(),
            state: Mutex::new(State {
                cookie_wd: Some(cookie_wd),
                ..State::default()
            }),
        });
        let reader = inner.clone();
        std::thread::Builder::new()
            .name("rch-tree-watch".into())
            .spawn(move || reader.read_events())
            .map_err(|e| format!("thread: {e}"))?;
        // Idle roots are also dropped when no build asks about any tree.
        let sweeper = inner.clone();
        std::thread::Builder::new()
            .name("rch-tree-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(IDLE / 12);
                let mut s = sweeper.lock();
                s.drop_idle(&sweeper);
            })
            .map_err(|e| format!("thread: {e}"))?;
        Ok(inner)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn query(self: &Arc<Self>, q: TreeQuery) -> TreeAnswer {
        let root = PathBuf::from(&q.root);
        if !root.is_absolute() || !self.settle().await {
            return walk();
        }
        let Ok(meta) = std::fs::metadata(&root) else {
            return walk();
        };
        let ident = (meta.dev(), meta.ino());
        let id = {
            let mut s = self.lock();
            s.drop_idle(self);
            if let Some((id, r)) = s.roots.iter_mut().find(|(_, r)| r.path == root) {
                let same = r.excludes == q.excludes && r.ident == ident;
                if same && r.phase == Phase::Ready {
                    r.asked = Instant::now();
                    let mark = self.mark(*id, r.seq);
                    if q.since.as_ref() == Some(&mark) {
                        return TreeAnswer::Unchanged;
                    }
                    return TreeAnswer::Walk { mark: Some(mark) };
                }
                if same && r.phase == Phase::Starting {
                    return walk();
                }
                let id = *id;
                s.remove(self, id);
            }
            if !is_local(&root) {
                return walk();
            }
            let Ok(matcher) = crate::tree::excludes_matcher(&root, &q.excludes) else {
                return walk();
            };
            s.make_room(self, &root);
            s.next_watch += 1;
            let id = s.next_watch;
            s.roots.insert(
                id,
                Root {
                    path: root.clone(),
                    excludes: q.excludes,
                    matcher: Arc::new(matcher),
                    ident,
                    seq: 0,
                    phase: Phase::Starting,
                    wds: HashSet::new(),
                    asked: Instant::now(),
                },
            );
            id
        };
        let inner = self.clone();
        let mut setup = tokio::task::spawn_blocking(move || inner.set_up(id));
        if tokio::time::timeout(SETUP_WAIT, &mut setup).await.is_err() {
            return walk();
        }
        let s = self.lock();
        match s.roots.get(&id) {
            Some(r) if r.phase == Phase::Ready => TreeAnswer::Walk {
                mark: Some(self.mark(id, r.seq)),
            },
            _ => walk(),
        }
    }

    fn mark(&self, watch: u64, seq: u64) -> TreeMark {
        TreeMark {
            daemon: self.daemon.clone(),
            watch,
            seq,
        }
    }

    /// Wait until every event queued before now has been counted: create a
    /// cookie and wait for its own event, which the kernel queues after them.
    async fn settle(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        let n = {
            let mut s = self.lock();
            if s.cookie_wd.is_none() {
                return false;
            }
            s.next_cookie += 1;
            let n = s.next_cookie;
            s.waiting.insert(n, tx);
            n
        };
        let file = self.cookies.join(format!("c{n}"));
        let seen = match std::fs::File::create(&file) {
            Ok(_) => matches!(tokio::time::timeout(COOKIE_WAIT, rx).await, Ok(Ok(()))),
            Err(e) => {
                tracing::debug!(error = %e, "cannot create a tree-watch cookie");
                false
            }
        };
        let _ = std::fs::remove_file(&file);
        self.lock().waiting.remove(&n);
        seen
    }

    /// Watch every directory of a new root, then call it ready.
    fn set_up(&self, id: u64) {
        let Some(path) = self.lock().roots.get(&id).map(|r| r.path.clone()) else {
            return;
        };
        let started = Instant::now();
        self.watch_tree(id, path);
        let mut s = self.lock();
        if let Some(r) = s.roots.get_mut(&id) {
            if r.phase == Phase::Starting {
                r.phase = Phase::Ready;
            }
            tracing::debug!(root = %r.path.display(), dirs = r.wds.len(), phase = ?r.phase, took_ms = started.elapsed().as_millis() as u64, "tree watch set up");
        }
    }

    /// Watch `top` and every directory below it that is not excluded; each
    /// directory is watched before it is read, so a subdirectory made
    /// meanwhile is either read here or reported by the watch.
    fn watch_tree(&self, id: u64, top: PathBuf) {
        let Some((root, matcher, dev)) = self
            .lock()
            .roots
            .get(&id)
            .map(|r| (r.path.clone(), r.matcher.clone(), r.ident.0))
        else {
            return;
        };
        let mut queue = vec![top];
        while let Some(dir) = queue.pop() {
            if !self.watch_dir(id, &dir) {
                return;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Gone since: its parent's watch counted that.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return self.break_root(id, &format!("{}: {e}", dir.display())),
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                let rel = path.strip_prefix(&root).unwrap_or(&path);
                if matcher.matched(rel, true).is_ignore() {
                    continue;
                }
                match entry.metadata() {
                    Ok(m) if m.dev() != dev => {
                        let why = format!("{} is on another filesystem", path.display());
                        return self.break_root(id, &why);
                    }
                    Ok(_) => queue.push(path),
                    Err(_) => continue,
                }
            }
        }
    }

    /// Add the watch of one directory of root `id`; false when the root is
    /// gone or broken (nothing more to watch for it).
    fn watch_dir(&self, id: u64, dir: &Path) -> bool {
        let mut s = self.lock();
        let total = s.wds.len();
        let Some(r) = s.roots.get_mut(&id) else {
            return false;
        };
        if r.phase == Phase::Broken {
            return false;
        }
        if r.wds.len() >= MAX_WATCHES_PER_ROOT || total >= self.budget {
            r.phase = Phase::Broken;
            tracing::debug!(root = %r.path.display(), dirs = r.wds.len(), "too many directories to watch");
            return false;
        }
        let wd = match self.inotify.add_watch(dir, mask()) {
            Ok(wd) => wd,
            // Gone or replaced since it was listed: its parent's watch
            // counted that. Not so the root (a symlink, say): unwatched.
            Err(Errno::ENOENT | Errno::ENOTDIR) if dir != r.path => return true,
            Err(e) => {
                r.phase = Phase::Broken;
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch a directory");
                return false;
            }
        };
        // One directory under two names (a bind mount): its events would
        // count under one of them only.
        let twice = matches!(s.wds.get(&wd), Some((other, path)) if *other != id || path != dir);
        let Some(r) = s.roots.get_mut(&id) else {
            return false;
        };
        if twice {
            r.phase = Phase::Broken;
            return false;
        }
        r.wds.insert(wd);
        s.wds.insert(wd, (id, dir.to_path_buf()));
        true
    }

    fn break_root(&self, id: u64, why: &str) {
        if let Some(r) = self.lock().roots.get_mut(&id) {
            r.phase = Phase::Broken;
            tracing::debug!(root = %r.path.display(), why, "tree watch ended");
        }
    }

    /// The reader thread: count each event, in the order the kernel queued them.
    fn read_events(&self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "the tree watch stopped; builds walk their trees");
                    let mut s = self.lock();
                    s.cookie_wd = None;
                    s.roots.values_mut().for_each(|r| r.phase = Phase::Broken);
                    return;
                }
            };
            for event in events {
                if let Some((id, dir)) = self.count(event) {
                    self.watch_tree(id, dir);
                }
            }
        }
    }

    /// Count one event; a directory created under a root is returned, to
    /// be watched before the next event is read.
    fn count(&self, ev: nix::sys::inotify::InotifyEvent) -> Option<(u64, PathBuf)> {
        use AddWatchFlags as F;
        let mut s = self.lock();
        if ev.mask.contains(F::IN_Q_OVERFLOW) {
            tracing::debug!("tree watch queue overflowed; every watch ends");
            s.roots.values_mut().for_each(|r| r.phase = Phase::Broken);
            return None;
        }
        if Some(ev.wd) == s.cookie_wd {
            let n = ev
                .name
                .as_ref()
                .and_then(|n| n.to_str()?.strip_prefix('c')?.parse().ok());
            if let Some(tx) = n.and_then(|n| s.waiting.remove(&n)) {
                let _ = tx.send(());
            }
            return None;
        }
        let (id, dir) = s.wds.get(&ev.wd).cloned()?;
        if ev.mask.contains(F::IN_IGNORED) {
            s.wds.remove(&ev.wd);
        }
        let r = s.roots.get_mut(&id)?;
        if ev.mask.contains(F::IN_IGNORED) {
            r.wds.remove(&ev.wd);
        }
        r.seq += 1;
        let is_dir = ev.mask.contains(F::IN_ISDIR);
        let on_root = dir == r.path && ev.name.is_none();
        let lost = ev.mask.intersects(F::IN_UNMOUNT | F::IN_MOVE_SELF)
            || (is_dir && ev.mask.intersects(F::IN_MOVED_FROM | F::IN_MOVED_TO))
            || (on_root && ev.mask.intersects(F::IN_DELETE_SELF | F::IN_IGNORED));
        if lost {
            // A renamed directory's watch keeps its old path: give up.
            r.phase = Phase::Broken;
            return None;
        }
        if !(is_dir && ev.mask.contains(F::IN_CREATE)) || r.phase == Phase::Broken {
            return None;
        }
        let path = dir.join(ev.name?);
        let rel = path.strip_prefix(&r.path).unwrap_or(&path);
        (!r.matcher.matched(rel, true).is_ignore()).then_some((id, path))
    }
}

impl State {
    /// Stop watching root `id`.
    fn remove(&mut self, inner: &Inner, id: u64) {
        let Some(r) = self.roots.remove(&id) else {
            return;
        };
        for wd in r.wds {
            let _ = inner.inotify.rm_watch(wd);
            self.wds.remove(&wd);
        }
    }

    fn drop_idle(&mut self, inner: &Inner) {
        let idle: Vec<u64> = self
            .roots
            .iter()
            .filter(|(_, r)| r.asked.elapsed() > IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.remove(inner, id);
        }
    }

    /// Before watching `root`: drop roots nested in it or holding it (one
    /// directory is watched for one root), then the least recently asked
    /// about while there are too many.
    fn make_room(&mut self, inner: &Inner, root: &Path) {
        let nested: Vec<u64> = self
            .roots
            .iter()
            .filter(|(_, r)| r.path.starts_with(root) || root.starts_with(&r.path))
            .map(|(id, _)| *id)
            .collect();
        for id in nested {
            self.remove(inner, id);
        }
        while self.roots.len() >= MAX_ROOTS {
            let Some(oldest) = self
                .roots
                .iter()
                .min_by_key(|(_, r)| r.asked)
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.remove(inner, oldest);
        }
    }
}

/// Whether every change under `root` raises an event on this machine.
fn is_local(root: &Path) -> bool {
    match nix::sys::statfs::statfs(root) {
        Ok(fs) => {
            // `fs_type_t` is not i64 on every platform.
            #[allow(clippy::unnecessary_cast)]
            let magic = fs.filesystem_type().0 as i64;
            LOCAL_FILESYSTEMS.contains(&magic)
        }
        Err(_) => false,
    }
}

/// Half the kernel's per-user watch limit, at most [`MAX_WATCHES`]: other
/// programs of the user (editors, file managers) watch too.
fn budget() -> usize {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(8192);
    (limit / 2).min(MAX_WATCHES)
}

/// 16 random bytes in hex.
fn random_name() -> String {
    crate::random::hex::<16>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(root: &Path, since: Option<TreeMark>) -> TreeQuery {
        TreeQuery {
            root: root.display().to_string(),
            excludes: vec!["target/".into()],
            since,
        }
    }

    /// The current mark of `root`, once its watch is set up.
    async fn mark(trees: &Trees, root: &Path) -> TreeMark {
        for _ in 0..200 {
            if let TreeAnswer::Walk { mark: Some(m) } = trees.query(query(root, None)).await {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no mark for {}", root.display());
    }

    async fn unchanged(trees: &Trees, root: &Path, since: &TreeMark) -> bool {
        trees.query(query(root, Some(since.clone()))).await == TreeAnswer::Unchanged
    }

    #[tokio::test]
    async fn a_mark_is_vouched_for_until_anything_under_the_root_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        std::fs::create_dir_all(root.join("src/a")).unwrap();
        std::fs::create_dir_all(root.join("target/debug")).unwrap();
        let file = root.join("src/a/x.rs");
        std::fs::write(&file, "x").unwrap();
        let trees = Trees::start(&dir.path().join("rch.sock"));

        let m = mark(&trees, &root).await;
        assert!(unchanged(&trees, &root, &m).await);
        // Excluded directories are not watched.
        std::fs::write(root.join("target/debug/out"), "o").unwrap();
        assert!(unchanged(&trees, &root, &m).await);
        // Same size, mtime put back: the write itself is the event.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, "y").unwrap();
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(mtime).unwrap();
        assert!(!unchanged(&trees, &root, &m).await);

        // A directory made with its subdirectories at once is watched to
        // the bottom (watched, then read for what was made before).
        let m = mark(&trees, &root).await;
        std::fs::create_dir_all(root.join("n/e/w")).unwrap();
        assert!(!unchanged(&trees, &root, &m).await);
        let m = mark(&trees, &root).await;
        std::fs::write(root.join("n/e/w/f"), "f").unwrap();
        assert!(!unchanged(&trees, &root, &m).await);
        let m = mark(&trees, &root).await;
        std::fs::remove_file(root.join("n/e/w/f")).unwrap();
        assert!(!unchanged(&trees, &root, &m).await);

        // A renamed directory ends the watch: a new one, a new mark.
        let m = mark(&trees, &root).await;
        std::fs::rename(root.join("n"), root.join("m")).unwrap();
        assert!(!unchanged(&trees, &root, &m).await);
        let again = mark(&trees, &root).await;
        assert_ne!(again.watch, m.watch);
        std::fs::write(root.join("m/e/w/g"), "g").unwrap();
        assert!(!unchanged(&trees, &root, &again).await);

        // Other exclude patterns: another watch.
        let m = mark(&trees, &root).await;
        let other = TreeQuery {
            excludes: vec![],
            ..query(&root, Some(m.clone()))
        };
        assert_ne!(trees.query(other).await, TreeAnswer::Unchanged);

        // Another daemon (a restart) never vouches for this one's marks.
        let m = mark(&trees, &root).await;
        let restarted = Trees::start(&dir.path().join("other.sock"));
        assert!(!unchanged(&restarted, &root, &m).await);

        // A root that is a symlink is not watched: never vouched for.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        for _ in 0..3 {
            assert_eq!(trees.query(query(&link, None)).await, walk());
        }

        // The root replaced by another directory of the same name.
        let m = mark(&trees, &root).await;
        std::fs::rename(&root, dir.path().join("old")).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert!(!unchanged(&trees, &root, &m).await);
    }

    #[tokio::test]
    async fn roots_are_bounded_and_a_nested_root_replaces_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::start(&dir.path().join("rch.sock"));
        let root = |i: usize| {
            let p = dir.path().join(format!("r{i}"));
            std::fs::create_dir_all(p.join("sub")).unwrap();
            p
        };
        let first = mark(&trees, &root(0)).await;
        assert!(unchanged(&trees, &root(0), &first).await);
        for i in 1..MAX_ROOTS {
            mark(&trees, &root(i)).await;
        }
        assert!(unchanged(&trees, &root(0), &first).await, "32 roots fit");
        let last = mark(&trees, &root(MAX_ROOTS)).await;
        // r1 was asked about least recently: dropped, r0 kept.
        assert!(unchanged(&trees, &root(0), &first).await);
        assert_eq!(trees.inner.as_ref().unwrap().lock().roots.len(), MAX_ROOTS);
        assert!(unchanged(&trees, &root(MAX_ROOTS), &last).await);

        // A root inside a watched one takes its place, and back.
        let inside = root(0).join("sub");
        let m = mark(&trees, &inside).await;
        assert!(!unchanged(&trees, &root(0), &first).await);
        assert!(!unchanged(&trees, &inside, &m).await);
    }
}
