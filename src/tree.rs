//! The project tree as rch sends it to a worker: which paths belong to the
//! push, and a snapshot of them (path, size, mtime, inode, mode) that tells
//! what changed since the last push without reading file contents.
//!
//! What is sent, first rule that decides wins:
//! 1. the built-in excludes and `[transfer] exclude` (always apply);
//! 2. `.rchignore` at the project root, in `.gitignore` syntax; its `!pattern`
//!    lines re-include paths the project's `.gitignore` files leave out;
//! 3. `.gitignore` and `.ignore` files of the tree (when
//!    `transfer.respect_gitignore`), except build inputs: a configured tree's
//!    `Makefile`, `config.h`, `config.status`, and build directories that
//!    hold `CMakeCache.txt`, `build.ninja`, `meson-private/` or
//!    `config.status` are sent even when ignored, whole (no `.gitignore`
//!    applies inside them: meson writes one of `*` into its build dirs).
//!    So is an autotools source tree that `autoreconf` has run in
//!    (`configure` next to `configure.ac`): its generated `configure`,
//!    `Makefile.in`, `aclocal.m4` and helper scripts, commonly ignored, are
//!    what its build dirs run from, in place or out of tree.
//!
//! A file whose mtime lies within [`RACY_NS`] of the moment the snapshot was
//! taken may still change without its mtime moving on a coarse filesystem;
//! such files also get a content hash, compared on the next snapshot.

mod walk;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files newer than this at snapshot time also get a content hash: covers
/// filesystems with one- or two-second mtime granularity.
pub const RACY_NS: i64 = 2_000_000_000;

/// Racy files up to this size get a content hash; larger ones [`UNHASHED`].
const HASH_LIMIT: u64 = 1 << 20;

/// The hash of a racy file too large to read: it counts as changed.
const UNHASHED: [u8; 16] = [0xff; 16];

/// A project-local list of extra ignore patterns, `.gitignore` syntax.
pub const IGNORE_FILE: &str = ".rchignore";

/// Per-directory ignore files honoured with `transfer.respect_gitignore`.
const GIT_IGNORE_FILES: &[&str] = &[".gitignore", ".ignore"];

/// Ignored files that are still sent: what a configured tree builds from.
const BUILD_INPUT_FILES: &[&str] = &[
    "Makefile",
    "GNUmakefile",
    "makefile",
    "config.h",
    "config.status",
];

/// An ignored directory holding one of these is a build directory: sent.
const BUILD_DIR_MARKERS: &[&str] = &[
    "CMakeCache.txt",
    "build.ninja",
    "meson-private",
    "config.status",
];

/// Which paths of a project belong to the push.
pub struct Rules {
    root: PathBuf,
    excludes: Gitignore,
    rchignore: Gitignore,
    respect_gitignore: bool,
}

impl Rules {
    /// Rules for the tree at `root`: `excludes` are the built-in and
    /// configured patterns; `.rchignore` is read from `root`.
    pub fn new(root: &Path, excludes: &[&str], respect_gitignore: bool) -> Result<Rules, String> {
        let excludes = excludes_matcher(root, excludes)?;
        let rchignore = ignore_file(root, &root.join(IGNORE_FILE))?;
        Ok(Rules {
            root: root.to_path_buf(),
            excludes,
            rchignore,
            respect_gitignore,
        })
    }
}

/// The exclude patterns of a tree at `root` as one matcher: a path it
/// ignores (relative to `root`) is never sent, nor anything below it.
pub fn excludes_matcher<S: AsRef<str>>(root: &Path, excludes: &[S]) -> Result<Gitignore, String> {
    let mut builder = GitignoreBuilder::new(root);
    for pattern in excludes {
        let pattern = pattern.as_ref();
        builder
            .add_line(None, pattern)
            .map_err(|e| format!("exclude pattern {pattern:?}: {e}"))?;
    }
    builder.build().map_err(|e| e.to_string())
}

fn ignore_file(dir: &Path, file: &Path) -> Result<Gitignore, String> {
    if !file.is_file() {
        return Ok(Gitignore::empty());
    }
    let mut builder = GitignoreBuilder::new(dir);
    if let Some(e) = builder.add(file) {
        return Err(format!("{}: {e}", file.display()));
    }
    builder
        .build()
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// What a path of the tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One path of the snapshot, relative to the project root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    /// Content hash, for files that were racy when the snapshot was taken.
    pub hash: Option<[u8; 16]>,
}

/// The tree as it would be pushed now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Sorted by path.
    pub entries: Vec<Entry>,
    /// Paths present locally but left out by the rules (relative; not
    /// descended into), sorted.
    pub ignored: Vec<PathBuf>,
    /// Some file has more than one name (hard links): it can change through
    /// a name outside the tree, which no watch of the tree sees.
    pub linked: bool,
}

impl Snapshot {
    /// The entry of `path` (relative), if the snapshot has it.
    pub fn entry(&self, path: &Path) -> Option<&Entry> {
        let at = self
            .entries
            .binary_search_by(|e| e.path.as_path().cmp(path))
            .ok()?;
        self.entries.get(at)
    }

    /// The bytes of its files, and its `n` largest top-level directories
    /// with the bytes of the files under each, largest first.
    pub fn largest_dirs(&self, n: usize) -> (u64, Vec<(String, u64)>) {
        let mut total = 0;
        let mut dirs: std::collections::BTreeMap<String, u64> = Default::default();
        for entry in self.entries.iter().filter(|e| e.kind == Kind::File) {
            total += entry.size;
            let mut parts = entry.path.components();
            let top = parts.next();
            if let (Some(top), Some(_)) = (top, parts.next()) {
                let name = top.as_os_str().to_string_lossy().into_owned();
                *dirs.entry(name).or_default() += entry.size;
            }
        }
        let mut dirs: Vec<(String, u64)> = dirs.into_iter().collect();
        dirs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        dirs.truncate(n);
        (total, dirs)
    }
}

/// Walk the tree at the rules' root.
///
/// Directories are read by a few threads at once (stat calls dominate and
/// the kernel serves them in parallel); the entries are then put in path
/// order (what [`changes`] merges on) by walking the per-directory results.
pub fn snapshot(rules: &Rules) -> std::io::Result<Snapshot> {
    let now = now_ns();
    let root = DirJob {
        dir: rules.root.clone(),
        rel: PathBuf::new(),
        stack: Vec::new(),
        git: rules.respect_gitignore,
    };
    let mut listed = walk::run(root, |job| read_dir_job(rules, job, now))?;
    let mut snap = Snapshot::default();
    assemble(&mut listed, Path::new(""), &mut snap);
    snap.ignored.sort();
    Ok(snap)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One directory to read, with the ignore files that apply to it.
struct DirJob {
    dir: PathBuf,
    rel: PathBuf,
    /// `.gitignore`/`.ignore` of the directories above, outermost first.
    stack: Vec<std::sync::Arc<Gitignore>>,
    /// Whether `.gitignore` rules apply here.
    git: bool,
}

/// One directory's children as the push sees them, in name order.
#[derive(Default)]
struct Listed {
    entries: Vec<Entry>,
    ignored: Vec<PathBuf>,
    linked: bool,
}

/// Put the per-directory results in path order: each directory's entry is
/// followed by its own subtree.
fn assemble(
    listed: &mut std::collections::HashMap<PathBuf, Listed>,
    rel: &Path,
    snap: &mut Snapshot,
) {
    let Some(dir) = listed.remove(rel) else {
        return;
    };
    snap.ignored.extend(dir.ignored);
    snap.linked |= dir.linked;
    for entry in dir.entries {
        let sub = (entry.kind == Kind::Dir).then(|| entry.path.clone());
        snap.entries.push(entry);
        if let Some(sub) = sub {
            assemble(listed, &sub, snap);
        }
    }
}

/// Read one directory: its children's entries, and the jobs of its
/// subdirectories. `.gitignore` rules stop at a configured build directory:
/// meson writes a `.gitignore` of `*` into its own, and CMake's or ninja's
/// state files are what the worker's build runs from, so all of it is sent
/// (the excludes and `.rchignore` still apply).
fn read_dir_job(rules: &Rules, job: DirJob, now: i64) -> std::io::Result<(Listed, Vec<DirJob>)> {
    let DirJob {
        dir,
        rel,
        mut stack,
        mut git,
    } = job;
    if git && is_build_input(&dir, true) {
        git = false;
        stack.clear();
    }
    if git {
        for name in GIT_IGNORE_FILES {
            let file = dir.join(name);
            if file.is_file() {
                // A broken ignore file ignores nothing rather than failing the build.
                let rules = ignore_file(&dir, &file).unwrap_or_else(|_| Gitignore::empty());
                stack.push(std::sync::Arc::new(rules));
            }
        }
    }
    let mut children = std::fs::read_dir(&dir)?
        .map(|child| child.map(|c| (c.file_name(), c)))
        .collect::<std::io::Result<Vec<_>>>()?;
    children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut listed = Listed::default();
    let mut jobs = Vec::new();
    for (name, child) in children {
        let path = dir.join(&name);
        let rel_path = rel.join(&name);
        // Stat by the directory's handle (`fstatat`), not by the full path:
        // the kernel does not walk every component of every file again.
        let meta = match child.metadata() {
            Ok(m) => m,
            // Deleted while we looked: it is simply not part of this snapshot.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink
        } else if meta.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        if !is_sent(rules, &stack, (&path, &rel_path), kind == Kind::Dir) {
            listed.ignored.push(rel_path);
            continue;
        }
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let hash = if kind == Kind::File && mtime_ns > now - RACY_NS {
            // Reading a large fresh file on every build costs more than
            // sending it once more: it counts as changed next time instead.
            if meta.len() <= HASH_LIMIT {
                content_hash(&path).ok()
            } else {
                Some(UNHASHED)
            }
        } else {
            None
        };
        listed.linked |= kind == Kind::File && meta.nlink() > 1;
        if kind == Kind::Dir {
            jobs.push(DirJob {
                dir: path,
                rel: rel_path.clone(),
                stack: stack.clone(),
                git,
            });
        }
        listed.entries.push(Entry {
            path: rel_path,
            kind,
            size: meta.len(),
            mtime_ns,
            ino: meta.ino(),
            mode: meta.mode(),
            hash,
        });
    }
    Ok((listed, jobs))
}

/// Whether `path` belongs to the push (see the module comment for the order).
/// `rel` is `path` relative to the root: the root's matchers take it as it
/// is, without comparing the root's components again for every file.
fn is_sent(
    rules: &Rules,
    stack: &[std::sync::Arc<Gitignore>],
    (path, rel): (&Path, &Path),
    is_dir: bool,
) -> bool {
    if rules.excludes.matched(rel, is_dir).is_ignore() {
        return false;
    }
    let own = if rules.rchignore.is_empty() {
        ignore::Match::None
    } else {
        rules.rchignore.matched(rel, is_dir)
    };
    if own.is_ignore() {
        return false;
    }
    if own.is_whitelist() {
        return true;
    }
    let git = stack
        .iter()
        .rev()
        .map(|g| g.matched(path, is_dir))
        .find(|m| !m.is_none());
    match git {
        Some(m) if m.is_ignore() => is_build_input(path, is_dir),
        _ => true,
    }
}

fn is_build_input(path: &Path, is_dir: bool) -> bool {
    if is_dir {
        BUILD_DIR_MARKERS.iter().any(|m| path.join(m).exists()) || is_bootstrapped_autotools(path)
    } else {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| BUILD_INPUT_FILES.contains(&n))
    }
}

/// An autotools source tree with its generated files: `configure` made
/// from `configure.ac` (or the older `configure.in`).
fn is_bootstrapped_autotools(dir: &Path) -> bool {
    dir.join("configure").is_file()
        && (dir.join("configure.ac").is_file() || dir.join("configure.in").is_file())
}

fn content_hash(path: &Path) -> std::io::Result<[u8; 16]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize()[..16]);
    Ok(out)
}

/// How the tree changed between two snapshots: paths to send again and
/// paths gone locally (to delete on the worker), each sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub changed: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.deleted.is_empty()
    }
}

/// Compare `old` (the last push) with `new` (now) under `root`.
pub fn changes(root: &Path, old: &Snapshot, new: &Snapshot) -> Changes {
    let mut out = Changes::default();
    let (mut i, mut j) = (0, 0);
    while i < old.entries.len() || j < new.entries.len() {
        let (o, n) = (old.entries.get(i), new.entries.get(j));
        match (o, n) {
            (Some(o), Some(n)) if o.path == n.path => {
                if differs(root, o, n) {
                    out.changed.push(n.path.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.path < n.path => {
                out.deleted.push(o.path.clone());
                i += 1;
            }
            (Some(o), None) => {
                out.deleted.push(o.path.clone());
                i += 1;
            }
            (_, Some(n)) => {
                out.changed.push(n.path.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Whether an entry changed. Directories count by kind and mode only: their
/// mtime moves with every child added or removed, which is listed anyway.
fn differs(root: &Path, old: &Entry, new: &Entry) -> bool {
    if old.kind != new.kind || old.mode != new.mode {
        return true;
    }
    if new.kind == Kind::Dir {
        return false;
    }
    if (old.size, old.mtime_ns, old.ino) != (new.size, new.mtime_ns, new.ino) {
        return true;
    }
    match old.hash {
        Some(UNHASHED) => true,
        // Racy last time: the stat may be equal although the content is not.
        Some(before) => {
            let now = new
                .hash
                .or_else(|| content_hash(&root.join(&new.path)).ok());
            now != Some(before)
        }
        None => false,
    }
}

/// Magic first line of a saved snapshot; a different one means "no snapshot".
const SNAPSHOT_MAGIC: &[u8] = b"rch-snapshot-1\n";

/// Save a snapshot with the token of the push it describes.
pub fn save(path: &Path, token: &str, snap: &Snapshot) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 * snap.entries.len() + 64);
    buf.extend_from_slice(SNAPSHOT_MAGIC);
    put_bytes(&mut buf, token.as_bytes());
    buf.extend_from_slice(&(snap.entries.len() as u64).to_le_bytes());
    for e in &snap.entries {
        buf.push(match e.kind {
            Kind::File => 0,
            Kind::Dir => 1,
            Kind::Symlink => 2,
        });
        buf.extend_from_slice(&e.size.to_le_bytes());
        buf.extend_from_slice(&e.mtime_ns.to_le_bytes());
        buf.extend_from_slice(&e.ino.to_le_bytes());
        buf.extend_from_slice(&e.mode.to_le_bytes());
        match e.hash {
            Some(h) => {
                buf.push(1);
                buf.extend_from_slice(&h);
            }
            None => buf.push(0),
        }
        put_bytes(&mut buf, e.path.as_os_str().as_bytes());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written aside and renamed: a crash never leaves half a snapshot.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::File::create(&tmp)?.write_all(&buf)?;
    std::fs::rename(&tmp, path)
}

/// Load a saved snapshot and its token; `None` when missing or unreadable.
pub fn load(path: &Path) -> Option<(String, Snapshot)> {
    let data = std::fs::read(path).ok()?;
    let mut r = Reader {
        data: data.strip_prefix(SNAPSHOT_MAGIC)?,
    };
    let token = String::from_utf8(r.bytes()?.to_vec()).ok()?;
    let n = r.u64()?;
    let mut entries = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        let kind = match r.take(1)?[0] {
            0 => Kind::File,
            1 => Kind::Dir,
            _ => Kind::Symlink,
        };
        let size = r.u64()?;
        let mtime_ns = r.u64()? as i64;
        let ino = r.u64()?;
        let mode = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let hash = match r.take(1)?[0] {
            1 => Some(r.take(16)?.try_into().ok()?),
            _ => None,
        };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
        entries.push(Entry {
            path,
            kind,
            size,
            mtime_ns,
            ino,
            mode,
            hash,
        });
    }
    let snap = Snapshot {
        entries,
        ..Snapshot::default()
    };
    Some((token, snap))
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn paths(snap: &Snapshot) -> Vec<String> {
        snap.entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect()
    }

    #[test]
    fn entries_come_out_in_path_order_as_changes_merges_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in ["a-b", "a/b", "a.c", "a/b-c/d", "a/b/c", "b", "A", "a/b.x"] {
            write(root, &format!("{rel}/f"), "x");
        }
        let snap = snapshot(&Rules::new(root, &[], true).unwrap()).unwrap();
        let mut sorted = snap.entries.clone();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(snap.entries, sorted);
    }

    #[test]
    fn the_largest_top_level_directories_are_summed_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "data/a/b.bin", &"x".repeat(300));
        write(root, "data/c.bin", &"x".repeat(100));
        write(root, "src/main.rs", &"x".repeat(50));
        write(root, "docs/x.md", &"x".repeat(60));
        write(root, "top.txt", &"x".repeat(1000));
        let snap = snapshot(&Rules::new(root, &[], true).unwrap()).unwrap();
        let (total, largest) = snap.largest_dirs(2);
        assert_eq!(total, 1510);
        assert_eq!(
            largest,
            [("data".to_string(), 400), ("docs".to_string(), 60)]
        );
    }

    #[test]
    fn gitignore_is_honoured_except_build_inputs_and_rchignore_reincludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            ".gitignore",
            "data/\n*.o\nMakefile\nbuild/\nkeep.log\n",
        );
        write(root, ".rchignore", "!keep.log\nlocal.txt\n");
        for f in [
            "src/a.c",
            "data/big.bin",
            "a.o",
            "Makefile",
            "build/CMakeCache.txt",
            "keep.log",
            "local.txt",
            "target/x",
            "sub/.gitignore",
            "sub/gen.txt",
        ] {
            write(root, f, f);
        }
        write(root, "sub/.gitignore", "gen.txt\n");
        let rules = Rules::new(root, &["target/"], true).unwrap();
        let snap = snapshot(&rules).unwrap();
        assert_eq!(
            paths(&snap),
            [
                ".gitignore",
                ".rchignore",
                "Makefile",
                "build",
                "build/CMakeCache.txt",
                "keep.log",
                "src",
                "src/a.c",
                "sub",
                "sub/.gitignore"
            ]
        );
        let ignored: Vec<String> = snap
            .ignored
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            ignored,
            ["a.o", "data", "local.txt", "sub/gen.txt", "target"]
        );

        let plain = snapshot(&Rules::new(root, &["target/"], false).unwrap()).unwrap();
        assert!(paths(&plain).contains(&"data/big.bin".to_string()));
        assert!(!paths(&plain).contains(&"local.txt".to_string()));
    }

    #[test]
    fn a_bootstrapped_autotools_tree_sends_its_ignored_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "src/.gitignore",
            "/configure\n/Makefile.in\n/build-aux/\n*.log\n",
        );
        for f in [
            "src/configure.ac",
            "src/Makefile.am",
            "src/Makefile.in",
            "other/configure",
        ] {
            write(root, f, f);
        }
        write(root, "other/.gitignore", "/configure\n");
        // Before autoreconf the ignore rules hold; after it, the tree goes whole.
        let before = snapshot(&Rules::new(root, &[], true).unwrap()).unwrap();
        assert!(!paths(&before).contains(&"src/Makefile.in".to_string()));
        let generated = ["src/configure", "src/Makefile.in", "src/build-aux/missing"];
        for f in generated {
            write(root, f, f);
        }
        let snap = snapshot(&Rules::new(root, &[], true).unwrap()).unwrap();
        for sent in generated {
            assert!(paths(&snap).contains(&sent.to_string()), "{sent}");
        }
        // A `configure` that no configure.ac made is no autotools tree.
        assert!(!paths(&snap).contains(&"other/configure".to_string()));
    }

    #[test]
    fn a_build_dir_is_sent_whole_though_its_own_gitignore_says_star() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, ".gitignore", "*.o\n");
        for f in [
            "builddir/.gitignore",
            "builddir/build.ninja",
            "builddir/meson-private/coredata.dat",
            "builddir/hello.o",
        ] {
            write(root, f, f);
        }
        write(root, "builddir/.gitignore", "*\n");
        let snap = snapshot(&Rules::new(root, &[], true).unwrap()).unwrap();
        for sent in [
            "builddir/build.ninja",
            "builddir/meson-private/coredata.dat",
            "builddir/hello.o",
        ] {
            assert!(paths(&snap).contains(&sent.to_string()), "{sent}");
        }
    }

    #[test]
    fn changes_see_edits_deletes_and_same_stat_rewrites_of_racy_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.txt", "one");
        write(root, "gone/b.txt", "b");
        let rules = Rules::new(root, &[], true).unwrap();
        let before = snapshot(&rules).unwrap();
        assert!(changes(root, &before, &before).is_empty());

        // Same size, mtime put back: only the content hash can tell.
        let a = root.join("a.txt");
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::remove_dir_all(root.join("gone")).unwrap();
        write(root, "new.txt", "n");
        let after = snapshot(&rules).unwrap();
        let c = changes(root, &before, &after);
        assert_eq!(
            c.changed,
            [PathBuf::from("a.txt"), PathBuf::from("new.txt")]
        );
        assert_eq!(
            c.deleted,
            [PathBuf::from("gone"), PathBuf::from("gone/b.txt")]
        );
    }

    #[test]
    fn snapshots_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x/y.txt", "y");
        let snap = snapshot(&Rules::new(dir.path(), &[], true).unwrap()).unwrap();
        let file = dir.path().join("state/snap");
        save(&file, "tok", &snap).unwrap();
        let (token, loaded) = load(&file).unwrap();
        assert_eq!(token, "tok");
        assert_eq!(loaded.entries, snap.entries);
        std::fs::write(&file, "garbage").unwrap();
        assert!(load(&file).is_none());
    }
}
