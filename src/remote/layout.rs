//! Where a build lives on a worker: the one place that turns a project and a
//! build slot into a remote directory.
//!
//! Each project has a home on every worker, `<base>/<name>-<hash>`. Builds of
//! one project that overlap in time each get a slot of their own — slot 0 is
//! that home, slot `k` a sibling `<home>.k` — so no build ever sees another's
//! push, generated files or half-written artifacts. Slots are claimed on the
//! client (see [`super::slot`]) and kept across builds, so sequential builds
//! always land in slot 0 and reuse its warm target dir, and a slot that
//! served a concurrent build stays warm for the next overlap.

use sha2::{Digest, Sha256};
use std::path::Path;

/// The remote directory a build in `slot` of the project at `project_root`
/// runs in: slot 0 is the project's home ([`remote_project_dir`]), slot `k`
/// its sibling `<home>.k`.
pub fn build_dir(remote_base: &str, project_root: &Path, slot: u32) -> String {
    let home = remote_project_dir(remote_base, project_root);
    match slot {
        0 => home,
        k => format!("{home}.{k}"),
    }
}

/// `<base>/<name>-<12 hex of sha256(absolute path)>`, the project's home on a worker.
///
/// The name is reduced to `[A-Za-z0-9._-]` so remote paths stay plain; a base
/// starting with `~/` becomes a path relative to the remote home directory.
pub fn remote_project_dir(remote_base: &str, project_root: &Path) -> String {
    let absolute = std::path::absolute(project_root).unwrap_or_else(|_| project_root.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let name = sanitized_name(&absolute);
    let base = remote_path(remote_base);
    let base = base.trim_end_matches('/');
    if base.is_empty() || base == "." {
        format!("{name}-{hash}")
    } else {
        format!("{base}/{name}-{hash}")
    }
}

/// A remote path as the worker's shell should see it: `~/x` and `~` become
/// relative to the home directory (where ssh commands start).
pub(crate) fn remote_path(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => rest.to_string(),
        None if path == "~" => ".".to_string(),
        None => path.to_string(),
    }
}

fn sanitized_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_string());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_dir_is_name_and_hash_under_home_relative_base() {
        let dir = remote_project_dir("~/.cache/rch/builds", Path::new("/home/me/my app"));
        let (base, leaf) = dir.rsplit_once('/').unwrap();
        assert_eq!(base, ".cache/rch/builds");
        let (name, hash) = leaf.rsplit_once('-').unwrap();
        assert_eq!(name, "my_app");
        assert_eq!(hash.len(), 12);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn project_dir_differs_by_absolute_path() {
        let a = remote_project_dir("/srv/b/", Path::new("/a/app"));
        let b = remote_project_dir("/srv/b", Path::new("/b/app"));
        assert!(a.starts_with("/srv/b/app-"));
        assert_ne!(a, b);
    }

    #[test]
    fn unusual_names_are_sanitized() {
        let dir = remote_project_dir("/b", Path::new("/x/ü$(x) y"));
        assert!(dir.starts_with("/b/_"));
        let leaf = dir.rsplit('/').next().unwrap();
        assert!(leaf
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    }

    #[test]
    fn slot_zero_is_the_project_home_and_others_are_siblings() {
        let root = Path::new("/a/app");
        let home = remote_project_dir("/srv", root);
        assert_eq!(build_dir("/srv", root, 0), home);
        assert_eq!(build_dir("/srv", root, 2), format!("{home}.2"));
    }
}
