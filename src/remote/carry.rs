//! Small edits carried inside the run command: no push of their own.
//!
//! A one-file edit would otherwise cost a whole rsync run before the build
//! (a remote command, rsync's start and handshake, a round trip or more).
//! When every changed path is a regular file here, was one (or nothing) at
//! the last push, and all of them together are small, the client packs them
//! into a tar archive that travels on the run command's stdin right after
//! its first line; the run script unpacks it into the tree once the tree
//! check passed. The archive keeps each file's mode and its mtime to the
//! nanosecond (a pax `mtime` record), as rsync's push would, so a worker's
//! make or cargo sees exactly the times it would have seen. Anything else
//! (directories, symlinks, a type change, large files, names that are not
//! UTF-8) goes through rsync as before.
//!
//! A worker that cannot unpack (no tar) reports the tree as stale: the
//! client then pushes in full and runs again.

use crate::tree::{Kind, Snapshot};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// At most this many bytes of file content travel with the run command;
/// more is a transfer, which rsync does better (deltas, compression).
pub const MAX_BYTES: u64 = 512 * 1024;

/// At most this many files travel with the run command.
pub const MAX_FILES: usize = 256;

/// The archive of `changed` (relative to `root`), or `None` when they do
/// not all qualify (see the module comment). A path gone since the snapshot
/// is left out, as rsync's `--ignore-missing-args` would.
pub fn archive(
    root: &Path,
    changed: &[PathBuf],
    before: &Snapshot,
    now: &Snapshot,
) -> Option<Vec<u8>> {
    if changed.is_empty() || changed.len() > MAX_FILES {
        return None;
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    for rel in changed {
        let was_file = before.entry(rel).is_none_or(|e| e.kind == Kind::File);
        let is_file = now.entry(rel).is_some_and(|e| e.kind == Kind::File);
        if !(was_file && is_file) {
            return None;
        }
        let name = rel.to_str()?;
        let path = root.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            _ => return None,
        };
        total += meta.len();
        if total > MAX_BYTES {
            return None;
        }
        let data = std::fs::read(&path).ok()?;
        append(&mut builder, name, &meta, &data).ok()?;
    }
    builder.into_inner().ok()
}

/// One file: a pax header with its exact mtime (and its name when ustar's
/// fields cannot hold it), then the ustar entry itself.
fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    meta: &std::fs::Metadata,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(meta.mtime().max(0) as u64);
    let mut records = pax_record(
        "mtime",
        &format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()),
    );
    if header.set_path(name).is_err() {
        records.extend(pax_record("path", name));
        header.set_path("rch-long-name")?;
    }
    let mut pax = tar::Header::new_ustar();
    pax.set_entry_type(tar::EntryType::XHeader);
    pax.set_path("rch-pax")?;
    pax.set_size(records.len() as u64);
    pax.set_mode(0o644);
    pax.set_cksum();
    builder.append(&pax, records.as_slice())?;
    header.set_cksum();
    builder.append(&header, data)
}

/// `"<length> <key>=<value>\n"`, where the length counts the whole record,
/// its own digits included.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len();
    while len != body.len() + len.to_string().len() {
        len = body.len() + len.to_string().len();
    }
    format!("{len}{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{snapshot, Rules};

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record("mtime", "1.5"), b"13 mtime=1.5\n");
        let long = "x".repeat(95);
        let record = pax_record("path", &long);
        let text = String::from_utf8(record.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), record.len());
    }

    #[test]
    fn edited_files_are_packed_with_their_exact_times_and_anything_else_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
        let rules = Rules::new(root, &[], false).unwrap();
        let before = snapshot(&rules).unwrap();
        let long = format!("src/{}.rs", "n".repeat(150));
        std::fs::write(root.join("src/main.rs"), "fn main() { 1; }\n").unwrap();
        std::fs::write(root.join(&long), "// long\n").unwrap();
        let now = snapshot(&rules).unwrap();
        let changed = vec![PathBuf::from("src/main.rs"), PathBuf::from(&long)];
        let bytes = archive(root, &changed, &before, &now).expect("two small files are carried");

        let out = tempfile::tempdir().unwrap();
        let unpacked = std::process::Command::new("tar")
            .args(["-xpof", "-", "-C"])
            .arg(out.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut tar| {
                use std::io::Write;
                tar.stdin.take().unwrap().write_all(&bytes)?;
                tar.wait()
            })
            .unwrap();
        assert!(unpacked.success());
        for rel in [&PathBuf::from("src/main.rs"), &PathBuf::from(&long)] {
            let here = std::fs::metadata(root.join(rel)).unwrap();
            let there = std::fs::metadata(out.path().join(rel)).unwrap();
            assert_eq!(
                std::fs::read(root.join(rel)).unwrap(),
                std::fs::read(out.path().join(rel)).unwrap()
            );
            assert_eq!(
                (here.mtime(), here.mtime_nsec()),
                (there.mtime(), there.mtime_nsec())
            );
            assert_eq!(here.mode(), there.mode());
        }

        std::fs::create_dir(root.join("newdir")).unwrap();
        let with_dir = snapshot(&rules).unwrap();
        let dir_change = vec![PathBuf::from("newdir")];
        assert_eq!(
            archive(root, &dir_change, &now, &with_dir),
            None,
            "a directory goes by rsync"
        );
        std::fs::write(root.join("big.bin"), vec![7u8; MAX_BYTES as usize + 1]).unwrap();
        let with_big = snapshot(&rules).unwrap();
        assert_eq!(
            archive(root, &[PathBuf::from("big.bin")], &now, &with_big),
            None
        );
    }
}
