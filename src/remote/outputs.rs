//! What a build left on the worker, as the run script reports it in the
//! same remote command as the build: every file of the scope that comes
//! back (with size and mtime) and, for tools that write anywhere in the tree
//! (make, CMake, ninja, Meson, compilers), the paths the build deleted.
//!
//! From that listing the client pulls only the files that differ from its
//! own copies (none after a no-op build: no transfer, no round trip), and
//! deletes here what the build deleted there — but only a copy that is still
//! the one the worker had. A file changed here while the build ran (its
//! inode changed after the build began, by this machine's clock) is never
//! overwritten or deleted.
//! Without a complete listing (a worker without GNU find, a name holding a
//! newline) the build falls back to the full pull.

use super::failure::RemoteFailure;
use super::ssh::Connection;
use super::sync::{self, Pull};
use crate::tree::Snapshot;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the run script lists after a successful build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// `tree` (the whole tree, deletions too), `artifacts` (a cargo output
    /// dir without its bookkeeping) or `dir` (a whole directory).
    pub mode: &'static str,
    /// The listed directory, relative to the build's tree on the worker.
    pub rel: String,
}

impl Watch {
    /// The listing a pull needs; `None` when nothing comes back.
    pub fn for_pull(pull: &Pull) -> Option<Watch> {
        match pull {
            Pull::Nothing => None,
            Pull::Dir { from, complete, .. } => Some(Watch {
                mode: if *complete { "dir" } else { "artifacts" },
                rel: from.trim_matches('/').to_string(),
            }),
            Pull::Files { from, .. } => Some(Watch {
                mode: "artifacts",
                rel: from.trim_matches('/').to_string(),
            }),
            Pull::Tree => Some(Watch {
                mode: "tree",
                rel: String::new(),
            }),
        }
    }
}

/// One file of the listed scope on the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Relative to the listed directory.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// One path the build deleted, as it was before the build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gone {
    /// Relative to the tree.
    pub path: String,
    pub dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
}

/// The run script's complete listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<RemoteFile>,
    pub gone: Vec<Gone>,
}

/// Collects the listing from the script's records (bodies after the tag).
#[derive(Debug, Default)]
pub struct ListingBuilder {
    listing: Listing,
    ok: bool,
    bad: bool,
}

impl ListingBuilder {
    /// A `file:` record: `<size> <secs>.<fraction> <path>`.
    pub fn file(&mut self, body: &str) {
        match parse_file(body) {
            Some((size, mtime_ns, path)) => self.listing.files.push(RemoteFile {
                path: path.to_string(),
                size,
                mtime_ns,
            }),
            None => self.bad = true,
        }
    }

    /// A `gone:` record: `<type> <size> <secs>.<fraction> <path>`.
    pub fn gone(&mut self, body: &str) {
        let parsed = body
            .split_once(' ')
            .and_then(|(kind, rest)| Some((kind, parse_file(rest)?)));
        match parsed {
            Some((kind, (size, mtime_ns, path))) => self.listing.gone.push(Gone {
                path: path.to_string(),
                dir: kind == "d",
                size,
                mtime_ns,
            }),
            None => self.bad = true,
        }
    }

    /// `list:ok` (the listing is complete) or `list:bad` (it cannot be).
    pub fn end(&mut self, ok: bool) {
        if ok {
            self.ok = true;
        } else {
            self.bad = true;
        }
    }

    /// The listing, when the script finished it and every record made sense.
    pub fn finish(self) -> Option<Listing> {
        (self.ok && !self.bad).then_some(self.listing)
    }
}

/// `<size> <secs>.<fraction> <path>` (find's `%s %T@ %P`).
fn parse_file(body: &str) -> Option<(u64, i64, &str)> {
    let (size, rest) = body.split_once(' ')?;
    let (time, path) = rest.split_once(' ')?;
    Some((size.parse().ok()?, parse_mtime(time)?, path))
}

/// find's `%T@` (seconds, a dot, up to ten digits) in nanoseconds.
fn parse_mtime(text: &str) -> Option<i64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: i64 = digits.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A relative path with plain components only: nothing the worker reports
/// may reach outside the directory it is applied to.
fn safe(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then_some(p)
}

/// The patterns a pull of the whole tree never brings back or deletes: the
/// built-in and configured excludes and the sync token.
pub fn tree_filter(root: &Path, extra_excludes: &[String]) -> Gitignore {
    let mut builder = GitignoreBuilder::new(root);
    let token = format!("/{}", sync::TOKEN_FILE);
    let patterns = sync::DEFAULT_EXCLUDES
        .iter()
        .copied()
        .chain([token.as_str()])
        .chain(extra_excludes.iter().map(String::as_str));
    for pattern in patterns {
        // A pattern the matcher cannot read was already refused by the push.
        let _ = builder.add_line(None, pattern);
    }
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}

fn excluded(filter: Option<&Gitignore>, path: &Path, dir: bool) -> bool {
    filter.is_some_and(|f| f.matched_path_or_any_parents(path, dir).is_ignore())
}

/// A local path as the pull sees it.
enum Local {
    Missing,
    /// Changed here since the build began: left alone.
    Touched,
    Present {
        size: u64,
        mtime_ns: i64,
    },
}

fn local(path: &Path, since_ns: i64) -> Local {
    match std::fs::symlink_metadata(path) {
        Err(_) => Local::Missing,
        Ok(m) if m.ctime() * 1_000_000_000 + m.ctime_nsec() >= since_ns => Local::Touched,
        Ok(m) => Local::Present {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        },
    }
}

/// Nanoseconds since the epoch.
fn epoch_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// The listed files whose local copy under `local_dir` is missing or
/// differs in size or mtime: what the pull must bring. `since`: when the
/// build began; a copy changed here after it stays as it is.
pub fn differing(
    listing: &Listing,
    local_dir: &Path,
    filter: Option<&Gitignore>,
    since: SystemTime,
) -> Vec<PathBuf> {
    let since = epoch_ns(since);
    listing
        .files
        .iter()
        .filter_map(|f| {
            let rel = safe(&f.path)?;
            if excluded(filter, rel, false) {
                return None;
            }
            let wanted = match local(&local_dir.join(rel), since) {
                Local::Missing => true,
                Local::Touched => false,
                Local::Present { size, mtime_ns } => size != f.size || mtime_ns != f.mtime_ns,
            };
            wanted.then(|| rel.to_path_buf())
        })
        .collect()
}

/// Delete under `root` what the build deleted on the worker, where the local
/// copy is still the one the worker had (same size and mtime, not changed
/// since the build began); directories only when empty, deepest first.
/// Returns the paths deleted.
pub fn apply_deletions(
    listing: &Listing,
    root: &Path,
    filter: Option<&Gitignore>,
    since: SystemTime,
) -> Vec<PathBuf> {
    let since = epoch_ns(since);
    let mut deleted = Vec::new();
    let mut dirs = Vec::new();
    for gone in &listing.gone {
        let Some(rel) = safe(&gone.path) else {
            continue;
        };
        if excluded(filter, rel, gone.dir) {
            continue;
        }
        let here = root.join(rel);
        if gone.dir {
            dirs.push(here);
        } else if matches!(local(&here, since), Local::Present { size, mtime_ns }
                if size == gone.size && mtime_ns == gone.mtime_ns)
            && std::fs::remove_file(&here).is_ok()
        {
            deleted.push(rel.to_path_buf());
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let is_real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if is_real_dir && std::fs::remove_dir(&dir).is_ok() {
            if let Ok(rel) = dir.strip_prefix(root) {
                deleted.push(rel.to_path_buf());
            }
        }
    }
    deleted
}

/// Keep of `wanted` the `files` cargo reported; a reported file the listing
/// does not show is sent anyway (rsync skips it if it is the same).
fn restrict(wanted: &mut Vec<PathBuf>, listing: &Listing, files: &[PathBuf]) {
    let listed: std::collections::HashSet<&Path> =
        listing.files.iter().filter_map(|f| safe(&f.path)).collect();
    wanted.retain(|p| files.contains(p));
    for file in files {
        if !listed.contains(file.as_path()) && !wanted.contains(file) {
            wanted.push(file.clone());
        }
    }
}

/// What came back: files pulled and paths deleted here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Returned {
    pub pulled: usize,
    pub listed: usize,
    pub deleted: usize,
}

/// When the build began, and the tree as it was walked then (if it was).
#[derive(Clone, Copy, Debug)]
pub struct Began<'a> {
    pub at: SystemTime,
    pub tree: Option<&'a Snapshot>,
}

/// Bring back what `listing` shows differs, as `pull` says where it goes,
/// and, for a tree, apply the build's deletions. No differing file, no
/// transfer. A file changed here since the build began is never replaced
/// or deleted, and one deleted here since then is not brought back.
pub async fn pull_listed(
    conn: &Connection,
    root: &Path,
    remote_dir: &str,
    pull: &Pull,
    listing: &Listing,
    extra_excludes: &[String],
    began: Began<'_>,
) -> Result<Returned, RemoteFailure> {
    let since = began.at;
    let (rel, local, filter, update, only) = match pull {
        Pull::Nothing => return Ok(Returned::default()),
        Pull::Files { files, .. } if files.is_empty() => return Ok(Returned::default()),
        Pull::Files { from, to, files } => {
            (from.trim_matches('/'), to.clone(), None, false, Some(files))
        }
        Pull::Dir { from, to, .. } => (from.trim_matches('/'), to.clone(), None, false, None),
        Pull::Tree => (
            "",
            root.to_path_buf(),
            Some(tree_filter(root, extra_excludes)),
            true,
            None,
        ),
    };
    let mut wanted = differing(listing, &local, filter.as_ref(), since);
    if let (Pull::Tree, Some(start)) = (pull, began.tree) {
        // Here when the build began and gone now: deleted here meanwhile.
        wanted.retain(|p| start.entry(p).is_none() || local.join(p).symlink_metadata().is_ok());
    }
    if let Some(files) = only {
        restrict(&mut wanted, listing, files);
    }
    tracing::debug!(first = ?wanted.iter().take(5).collect::<Vec<_>>(), "files that differ here");
    let mut returned = Returned {
        pulled: wanted.len(),
        listed: listing.files.len(),
        deleted: 0,
    };
    if !wanted.is_empty() {
        sync::create_local_dir(conn, &local)?;
        let mut args = sync::rsync_base_args(conn);
        args.extend(
            [
                "--from0",
                "--files-from=-",
                "--ignore-missing-args",
                // cargo's binary and its copy in deps/ are one file: sent once.
                "--hard-links",
                // Whole nanoseconds: a rebuild within the same second and of
                // the same size still differs.
                "--modify-window=-1",
            ]
            .map(OsString::from),
        );
        if update {
            args.push("--update".into());
        }
        args.push(sync::remote_arg(remote_dir, rel));
        args.push(sync::dir_arg(&local));
        let mut list = Vec::new();
        for path in &wanted {
            list.extend_from_slice(path.as_os_str().as_encoded_bytes());
            list.push(0);
        }
        sync::run_rsync(conn, args, &list, remote_dir, false, "pull").await?;
    }
    if matches!(pull, Pull::Tree) {
        returned.deleted = apply_deletions(listing, root, filter.as_ref(), since).len();
    }
    Ok(returned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mtime_ns(path: &Path) -> i64 {
        let m = std::fs::symlink_metadata(path).unwrap();
        m.mtime() * 1_000_000_000 + m.mtime_nsec()
    }

    #[test]
    fn find_times_read_to_the_nanosecond() {
        assert_eq!(
            parse_mtime("1796302961.3494065650"),
            Some(1_796_302_961_349_406_565)
        );
        assert_eq!(parse_mtime("12.5"), Some(12_500_000_000));
        assert_eq!(parse_mtime("12"), Some(12_000_000_000));
        assert_eq!(parse_mtime("1x.5"), None);
        assert_eq!(parse_mtime("1.5e"), None);
    }

    #[test]
    fn records_make_a_listing_only_when_complete_and_sane() {
        let mut b = ListingBuilder::default();
        b.file("3 10.5 a b/c");
        b.gone("f 1 9.0 old.o");
        assert_eq!(ListingBuilder::default().finish(), None);
        let mut unfinished = ListingBuilder::default();
        unfinished.file("3 10.5 x");
        assert_eq!(unfinished.finish(), None);
        b.end(true);
        let listing = b.finish().unwrap();
        assert_eq!(listing.files[0].path, "a b/c");
        assert_eq!(listing.files[0].size, 3);
        assert_eq!(listing.gone[0].path, "old.o");
        let mut bad = ListingBuilder::default();
        bad.file("nonsense");
        bad.end(true);
        assert_eq!(bad.finish(), None);
    }

    #[test]
    fn only_missing_or_different_files_are_pulled_and_never_outside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("same"), "abc").unwrap();
        std::fs::write(dir.path().join("older"), "abc").unwrap();
        let same = mtime_ns(&dir.path().join("same"));
        let listing = Listing {
            files: vec![
                RemoteFile {
                    path: "same".into(),
                    size: 3,
                    mtime_ns: same,
                },
                RemoteFile {
                    path: "older".into(),
                    size: 3,
                    mtime_ns: same - 1,
                },
                RemoteFile {
                    path: "new/bin".into(),
                    size: 1,
                    mtime_ns: same,
                },
                RemoteFile {
                    path: "../escape".into(),
                    size: 1,
                    mtime_ns: same,
                },
                RemoteFile {
                    path: ".env".into(),
                    size: 1,
                    mtime_ns: same,
                },
            ],
            gone: Vec::new(),
        };
        let filter = tree_filter(dir.path(), &[]);
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        let got = differing(&listing, dir.path(), Some(&filter), later);
        assert_eq!(got, [PathBuf::from("older"), PathBuf::from("new/bin")]);
        // Changed here after the build began: never replaced.
        let got = differing(&listing, dir.path(), Some(&filter), UNIX_EPOCH);
        assert_eq!(got, [PathBuf::from("new/bin")]);
    }

    #[test]
    fn deletions_apply_only_to_the_copy_the_worker_had() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("obj")).unwrap();
        std::fs::write(root.join("obj/a.o"), "o").unwrap();
        std::fs::write(root.join("prog"), "p").unwrap();
        std::fs::write(root.join("edited"), "e").unwrap();
        std::fs::write(root.join("secret.pem"), "k").unwrap();
        let gone = |path: &str, dir: bool, size: u64, mtime_ns: i64| Gone {
            path: path.into(),
            dir,
            size,
            mtime_ns,
        };
        let listing = Listing {
            files: Vec::new(),
            gone: vec![
                gone("obj", true, 0, 0),
                gone("obj/a.o", false, 1, mtime_ns(&root.join("obj/a.o"))),
                gone("prog", false, 1, mtime_ns(&root.join("prog"))),
                // Changed here since: another mtime than the worker's copy.
                gone("edited", false, 1, mtime_ns(&root.join("edited")) - 5),
                gone("secret.pem", false, 1, mtime_ns(&root.join("secret.pem"))),
                gone("../outside", false, 0, 0),
            ],
        };
        let filter = tree_filter(root, &[]);
        // A build that began before every local change: nothing goes.
        let none = apply_deletions(&listing, root, Some(&filter), UNIX_EPOCH);
        assert!(none.is_empty(), "{none:?}");
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        let mut deleted = apply_deletions(&listing, root, Some(&filter), later);
        deleted.sort();
        assert_eq!(
            deleted,
            [
                PathBuf::from("obj"),
                PathBuf::from("obj/a.o"),
                PathBuf::from("prog")
            ]
        );
        assert!(root.join("edited").exists());
        assert!(root.join("secret.pem").exists());
    }
}
