//! Cargo's layout on this machine: the directory a cargo build must sync (its
//! workspace plus every local path dependency, however far up they sit) and
//! the target directory local cargo would write to.
//!
//! Both are on every cargo build's path, so they read manifests and config
//! files directly (no `cargo metadata` process); the path-dependency closure
//! is cached by the manifests' modification times.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Dependency tables of a manifest whose entries may carry `path = "..."`.
const DEP_TABLES: &[&str] = &["dependencies", "dev-dependencies", "build-dependencies"];

/// The directory to sync for a cargo build whose workspace root is
/// `workspace`: the nearest common ancestor of the workspace and every local
/// path dependency it reaches. `Err` says why the closure cannot be synced
/// (a dependency outside `limit`, a symlink loop, an unreadable manifest).
pub fn sync_root(workspace: &Path, limit: Option<&Path>) -> Result<PathBuf, String> {
    let cache_file = crate::paths::cache_dir().join("cargo-closures.json");
    let mut cache = Cache::load(&cache_file);
    if let Some(root) = cache.fresh(workspace) {
        return Ok(root);
    }
    let closure = closure(workspace)?;
    let root = common_ancestor(closure.dirs.iter().map(PathBuf::as_path));
    check_inside(&root, &closure, limit)?;
    cache.store(workspace, &closure, &root);
    cache.save(&cache_file);
    Ok(root)
}

/// The manifests and package directories a workspace reaches through path
/// dependencies and workspace membership.
struct Closure {
    dirs: Vec<PathBuf>,
    manifests: Vec<PathBuf>,
}

fn closure(workspace: &Path) -> Result<Closure, String> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([normalize(workspace)]);
    let mut closure = Closure {
        dirs: Vec::new(),
        manifests: Vec::new(),
    };
    while let Some(dir) = queue.pop_front() {
        let real = canonical(&dir)?;
        if !seen.insert(real) {
            continue;
        }
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
        let doc: toml::Table = text
            .parse()
            .map_err(|e| format!("cannot parse {}: {e}", manifest.display()))?;
        for rel in local_paths(&doc, &dir) {
            queue.push_back(normalize(&dir.join(rel)));
        }
        closure.dirs.push(dir);
        closure.manifests.push(manifest);
    }
    Ok(closure)
}

/// The real path of a package directory; a symlink loop or a missing
/// directory is a reason not to sync.
fn canonical(dir: &Path) -> Result<PathBuf, String> {
    dir.canonicalize().map_err(|e| {
        if e.raw_os_error() == Some(40) {
            format!("symlink loop at {}", dir.display())
        } else {
            format!("path dependency {}: {e}", dir.display())
        }
    })
}

/// Directories (relative to the manifest's) this manifest points at: path
/// dependencies in every dependency table (target-specific and workspace
/// ones too), `[patch]` and `[replace]` entries, and workspace members.
fn local_paths(doc: &toml::Table, dir: &Path) -> Vec<PathBuf> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    for name in DEP_TABLES {
        tables.extend(doc.get(*name).and_then(|v| v.as_table()));
    }
    if let Some(targets) = doc.get("target").and_then(|v| v.as_table()) {
        for platform in targets.values().filter_map(|v| v.as_table()) {
            for name in DEP_TABLES {
                tables.extend(platform.get(*name).and_then(|v| v.as_table()));
            }
        }
    }
    let workspace = doc.get("workspace").and_then(|v| v.as_table());
    if let Some(ws) = workspace {
        tables.extend(ws.get("dependencies").and_then(|v| v.as_table()));
    }
    if let Some(patches) = doc.get("patch").and_then(|v| v.as_table()) {
        tables.extend(patches.values().filter_map(|v| v.as_table()));
    }
    tables.extend(doc.get("replace").and_then(|v| v.as_table()));
    let mut paths: Vec<PathBuf> = tables
        .iter()
        .flat_map(|t| t.values())
        .filter_map(|dep| dep.as_table()?.get("path")?.as_str())
        .map(PathBuf::from)
        .collect();
    if let Some(members) = workspace.and_then(|ws| ws.get("members")?.as_array().cloned()) {
        for member in members.iter().filter_map(|m| m.as_str()) {
            paths.extend(expand_member(dir, member));
        }
    }
    paths
}

/// A workspace member entry: a path, or a glob whose last component has `*`
/// (`crates/*`), expanded to the directories holding a `Cargo.toml`.
fn expand_member(dir: &Path, member: &str) -> Vec<PathBuf> {
    if !member.contains('*') {
        return vec![PathBuf::from(member)];
    }
    let (parent, pattern) = member.rsplit_once('/').unwrap_or(("", member));
    let Some((prefix, suffix)) = pattern.split_once('*') else {
        return Vec::new();
    };
    if parent.contains('*') || suffix.contains('*') {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir.join(parent)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .map(|n| Path::new(parent).join(n))
        .collect()
}

/// `a/b/../c` → `a/c`, without touching the filesystem (symlinks keep the
/// names the user gave them).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn common_ancestor<'a>(mut dirs: impl Iterator<Item = &'a Path>) -> PathBuf {
    let Some(first) = dirs.next() else {
        return PathBuf::from("/");
    };
    let mut common = first.to_path_buf();
    for dir in dirs {
        while !dir.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common
}

/// The synced root must stay inside the repository (or, outside any
/// repository, below the home directory and not be it or `/`), and no
/// package may resolve, through symlinks, to somewhere else.
fn check_inside(root: &Path, closure: &Closure, limit: Option<&Path>) -> Result<(), String> {
    let outside = |dir: &Path, bound: &Path| {
        format!(
            "path dependency {} is outside the repository {}",
            dir.display(),
            bound.display()
        )
    };
    if let Some(bound) = limit {
        let real_bound = bound.canonicalize().unwrap_or_else(|_| bound.to_path_buf());
        for dir in &closure.dirs {
            let real = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            if !dir.starts_with(bound) || !real.starts_with(&real_bound) {
                return Err(outside(dir, bound));
            }
        }
        return Ok(());
    }
    let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
    if root == Path::new("/") || Some(root) == home.as_deref() {
        return Err(format!(
            "path dependencies span {} (no repository bounds them)",
            root.display()
        ));
    }
    Ok(())
}

/// Closures already computed, valid while no manifest in them changed.
#[derive(Default, Serialize, Deserialize)]
struct Cache {
    entries: BTreeMap<PathBuf, CacheEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    /// Each manifest with its modification time (ns since the epoch).
    manifests: Vec<(PathBuf, u128)>,
    root: PathBuf,
}

fn mtime(path: &Path) -> Option<u128> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_nanos())
}

impl Cache {
    fn load(file: &Path) -> Cache {
        std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn fresh(&self, workspace: &Path) -> Option<PathBuf> {
        let entry = self.entries.get(workspace)?;
        let unchanged = entry
            .manifests
            .iter()
            .all(|(path, time)| mtime(path) == Some(*time));
        unchanged.then(|| entry.root.clone())
    }

    fn store(&mut self, workspace: &Path, closure: &Closure, root: &Path) {
        let manifests = closure
            .manifests
            .iter()
            .filter_map(|m| Some((m.clone(), mtime(m)?)))
            .collect();
        let entry = CacheEntry {
            manifests,
            root: root.to_path_buf(),
        };
        self.entries.insert(workspace.to_path_buf(), entry);
    }

    /// Best effort: a cache that cannot be written only costs time.
    fn save(&self, file: &Path) {
        let Ok(bytes) = serde_json::to_vec(self) else {
            return;
        };
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, file);
        }
    }
}

// ---------------------------------------------------------------- target dir

/// The target directory local cargo would use for a build in `cwd` of the
/// workspace at `workspace`: `--target-dir`, else `CARGO_TARGET_DIR`, else
/// `CARGO_BUILD_TARGET_DIR`, else `build.target-dir` from the nearest
/// `.cargo/config.toml` (then `$CARGO_HOME/config.toml`), else
/// `<workspace>/target`.
pub fn target_dir(workspace: &Path, cwd: &Path, flag: Option<&str>) -> PathBuf {
    if let Some(dir) = flag {
        return normalize(&cwd.join(dir));
    }
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return normalize(&cwd.join(dir));
        }
    }
    configured_target_dir(cwd).unwrap_or_else(|| workspace.join("target"))
}

/// `build.target-dir` from cargo's config files, nearest first; a relative
/// value is relative to the directory holding `.cargo/`.
fn configured_target_dir(cwd: &Path) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join(".cargo")));
    let mut configs: Vec<(PathBuf, PathBuf)> = cwd
        .ancestors()
        .flat_map(|d| {
            ["config.toml", "config"].map(|name| (d.join(".cargo").join(name), d.to_path_buf()))
        })
        .collect();
    if let Some(home) = cargo_home {
        let parent = home.parent().map(Path::to_path_buf).unwrap_or_default();
        configs.push((home.join("config.toml"), parent));
    }
    configs.into_iter().find_map(|(file, base)| {
        let text = std::fs::read_to_string(&file).ok()?;
        let doc: toml::Table = text.parse().ok()?;
        let dir = doc.get("build")?.as_table()?.get("target-dir")?.as_str()?;
        Some(normalize(&base.join(dir)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn package(dir: &Path, deps: &str) {
        let name = dir.file_name().unwrap().to_string_lossy();
        write(
            &dir.join("Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n\n{deps}"),
        );
    }

    #[test]
    fn closure_reaches_path_deps_beside_the_crate_and_their_own() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path();
        package(
            &repo.join("app"),
            "[dependencies]\nshared = { path = \"../shared\" }\n[target.'cfg(unix)'.dev-dependencies]\nu = { path = \"../libs/u\" }\n",
        );
        package(
            &repo.join("shared"),
            "[dependencies]\ncore2 = { path = \"../libs/core2\", version = \"1\" }\n",
        );
        package(&repo.join("libs/core2"), "");
        package(&repo.join("libs/u"), "");
        let c = closure(&repo.join("app")).unwrap();
        assert_eq!(c.dirs.len(), 4);
        assert_eq!(common_ancestor(c.dirs.iter().map(PathBuf::as_path)), repo);
        assert!(check_inside(repo, &c, Some(repo)).is_ok());
        let err = check_inside(repo, &c, Some(&repo.join("app"))).unwrap_err();
        assert!(err.contains("outside the repository"), "{err}");
    }

    #[test]
    fn workspace_members_and_globs_are_in_the_closure() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        write(
            &ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\", \"tool\"]\n",
        );
        package(&ws.join("crates/a"), "");
        package(
            &ws.join("crates/b"),
            "[dependencies]\nx = { path = \"../../../x\" }\n",
        );
        package(&ws.join("tool"), "");
        package(&t.path().join("x"), "");
        let c = closure(&ws).unwrap();
        assert_eq!(c.dirs.len(), 5, "{:?}", c.dirs);
        assert_eq!(
            common_ancestor(c.dirs.iter().map(PathBuf::as_path)),
            t.path()
        );
    }

    #[test]
    fn symlink_loops_and_missing_deps_are_reasons() {
        let t = tempfile::tempdir().unwrap();
        package(
            &t.path().join("app"),
            "[dependencies]\nl = { path = \"../loop\" }\n",
        );
        std::os::unix::fs::symlink(t.path().join("loop"), t.path().join("loop")).unwrap();
        let err = closure(&t.path().join("app")).err().unwrap();
        assert!(err.contains("symlink loop"), "{err}");
    }

    #[test]
    fn target_dir_follows_flag_then_config() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        let cwd = ws.join("app");
        std::fs::create_dir_all(&cwd).unwrap();
        assert_eq!(
            target_dir(&ws, &cwd, Some("../out")),
            ws.join("out"),
            "a flag is relative to the cwd"
        );
        if std::env::var_os("CARGO_TARGET_DIR").is_none()
            && std::env::var_os("CARGO_BUILD_TARGET_DIR").is_none()
        {
            write(
                &ws.join(".cargo/config.toml"),
                "[build]\ntarget-dir = \"build-out\"\n",
            );
            assert_eq!(target_dir(&ws, &cwd, None), ws.join("build-out"));
        }
    }
}
