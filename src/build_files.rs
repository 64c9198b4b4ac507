//! Where a build's files are, here and on a worker: the directory synced
//! (for cargo, the workspace and its local path dependencies), where cargo's
//! artifacts come back to, whether the build must run at the client's own
//! absolute path, and the one function that says where a build lives on a
//! worker ([`remote_dir`], on top of [`crate::remote::layout`]).
//!
//! `rch exec` and `rch diagnose` both plan with [`plan`], so what diagnose
//! says is what a build does.

use crate::cargo_layout;
use crate::classify::{Artifacts, Offload, Tool};
use crate::config::{Loaded, MirrorPaths, WorkerConfig};
use crate::recorded::{self, Recorded};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where a cargo build writes here and on the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CargoDirs {
    /// The workspace root (the outermost `Cargo.toml` in the repository).
    pub workspace: PathBuf,
    /// The target directory local cargo would use.
    pub target: PathBuf,
}

/// The plan of one build's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The directory synced to the worker.
    pub root: PathBuf,
    /// Whether the root is wider than the project: to hold a cargo
    /// workspace's path dependencies, or an out-of-tree build dir's source tree.
    pub widened: bool,
    pub cargo: Option<CargoDirs>,
    /// A build file recording an absolute path under the root, if any.
    pub recorded: Option<Recorded>,
}

/// Where a build lives on one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDir {
    /// The worker's copy of the project (relative paths are under its home).
    pub dir: String,
    /// The client's path the build sees its files at, when mirrored.
    pub mirrored_at: Option<PathBuf>,
}

/// Plan the files of `argv` run in `cwd`; `Err` is why it must run locally.
pub fn plan(
    loaded: &Loaded,
    cwd: &Path,
    argv: &[OsString],
    offload: &Offload,
) -> Result<Layout, String> {
    let repo = cwd.ancestors().find(|d| d.join(".git").exists());
    let mut layout = Layout {
        root: crate::build::project_root(loaded, cwd, offload),
        widened: false,
        cargo: None,
        recorded: None,
    };
    if offload.tool == Tool::Cargo {
        if let Some(workspace) = cargo_workspace(cwd, repo) {
            let root = cargo_layout::sync_root(&workspace, repo)
                .map_err(|why| format!("cannot sync the cargo project: {why}"))?;
            layout.widened = root != workspace;
            layout.root = match &loaded.project_root {
                Some(configured) if root.starts_with(configured) => configured.clone(),
                Some(configured) => common_parent(configured, &root),
                None => root,
            };
            let target = cargo_layout::target_dir(&workspace, cwd, target_dir_flag(argv));
            layout.cargo = Some(CargoDirs { workspace, target });
        }
    } else {
        let dir = recorded::build_dir(argv, cwd);
        layout.recorded = recorded::find(&layout.root, &dir);
        if let Some(source) = layout.recorded.as_ref().and_then(recorded::source_dir) {
            let root = with_source_tree(&layout.root, &source, repo)
                .map_err(|why| format!("cannot sync the build's source tree: {why}"))?;
            layout.widened = root != layout.root;
            layout.root = root;
        }
    }
    Ok(layout)
}

/// The synced root widened to hold `source`, the source tree an
/// out-of-tree build dir was configured from (`../src/configure`,
/// `cmake -S ../src`): its Makefiles and ninja files read the sources there.
/// As for cargo's path dependencies, it stays inside the repository, or,
/// outside any, does not span `/` or the home directory.
fn with_source_tree(root: &Path, source: &Path, repo: Option<&Path>) -> Result<PathBuf, String> {
    if source.starts_with(root) {
        return Ok(root.to_path_buf());
    }
    let widened = common_parent(root, source);
    if let Some(repo) = repo.filter(|repo| !source.starts_with(repo)) {
        return Err(format!(
            "{} is outside the repository {}",
            source.display(),
            repo.display()
        ));
    }
    let home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
    if widened == Path::new("/") || Some(&widened) == home.as_ref() {
        return Err(format!(
            "{} and the build dir span {} (no repository bounds them)",
            source.display(),
            widened.display()
        ));
    }
    Ok(widened)
}

fn common_parent(a: &Path, b: &Path) -> PathBuf {
    a.ancestors()
        .find(|d| b.starts_with(d))
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// The outermost directory with a `Cargo.toml` from `cwd` up, within the repository.
fn cargo_workspace(cwd: &Path, repo: Option<&Path>) -> Option<PathBuf> {
    let limit = repo.unwrap_or(Path::new("/"));
    cwd.ancestors()
        .take_while(|d| d.starts_with(limit))
        .filter(|d| d.join("Cargo.toml").is_file())
        .last()
        .map(Path::to_path_buf)
}

/// The value of `--target-dir` before `--`.
fn target_dir_flag(argv: &[OsString]) -> Option<&str> {
    let words: Vec<&str> = argv.iter().map_while(|a| a.to_str()).collect();
    let mut found = None;
    for (i, word) in words.iter().enumerate() {
        if *word == "--" {
            break;
        }
        if *word == "--target-dir" {
            found = words.get(i + 1).copied();
        } else if let Some(v) = word.strip_prefix("--target-dir=") {
            found = Some(v);
        }
    }
    found
}

impl Layout {
    /// Whether a build on `worker` runs at the client's own path.
    pub fn mirrors_on(&self, worker: &WorkerConfig) -> bool {
        match worker.mirror_paths {
            MirrorPaths::Always => true,
            MirrorPaths::Never => false,
            MirrorPaths::Auto => self.recorded.is_some(),
        }
    }

    /// Why no configured worker can take this build, if none can: the tree
    /// must run at the client's path and every worker has `mirror_paths = false`.
    pub fn unplaceable(&self, workers: &[WorkerConfig]) -> Option<String> {
        let recorded = self.recorded.as_ref()?;
        let any = workers
            .iter()
            .any(|w| w.enabled && w.mirror_paths != MirrorPaths::Never);
        (!any).then(|| format!("{recorded}; no worker may mirror it (mirror_paths = false)"))
    }

    /// Workers that must not take this build (they may not mirror its paths).
    pub fn refused_by(&self, workers: &[WorkerConfig]) -> Vec<String> {
        if self.recorded.is_none() {
            return Vec::new();
        }
        workers
            .iter()
            .filter(|w| w.mirror_paths == MirrorPaths::Never)
            .map(|w| w.id.clone())
            .collect()
    }

    /// What comes back after a successful build: cargo's output dir into the
    /// local target dir (complete, fingerprints included, when mirrored, so a
    /// local cargo finds it fresh); for other tools the tree.
    pub fn pull(&self, artifacts: &Artifacts, mirrored: bool) -> crate::remote::Pull {
        use crate::remote::Pull;
        match (artifacts, &self.cargo) {
            (Artifacts::None, _) => Pull::Nothing,
            (Artifacts::CargoTarget { dir }, Some(cargo)) => {
                let sub = cargo_output_subdir(dir);
                Pull::Dir {
                    from: rel_path(&self.root, &cargo.workspace.join("target").join(&sub)),
                    to: cargo.target.join(sub),
                    complete: mirrored,
                }
            }
            (Artifacts::CargoTarget { dir }, None) => Pull::Dir {
                from: dir.clone(),
                to: self.root.join(dir),
                complete: mirrored,
            },
            (Artifacts::Tree, _) => Pull::Tree,
        }
    }

    /// Where a file the worker names (absolute, in the build's tree at
    /// `remote_dir`) is here: under the synced root, or, below the worker's
    /// target dir, under the local target dir. `None`: outside the tree.
    pub fn local_path(&self, remote: &str, remote_dir: &str) -> Option<PathBuf> {
        let local = crate::cargo_report::local_path(remote, remote_dir, &self.root)?;
        if let Some(cargo) = &self.cargo {
            if let Ok(rest) = local.strip_prefix(cargo.workspace.join("target")) {
                return Some(cargo.target.join(rest));
            }
        }
        Some(local)
    }

    /// What comes back when cargo's report names the user's `files` (paths
    /// on the worker): those files alone, from the build's output dir.
    /// `Err` when one lies outside it (the report does not describe the
    /// output dir: bring it back whole).
    pub fn reported_pull(
        &self,
        artifacts: &Artifacts,
        remote_dir: &str,
        files: &[String],
    ) -> Result<crate::remote::Pull, String> {
        use crate::remote::Pull;
        let Pull::Dir { from, to, .. } = self.pull(artifacts, false) else {
            return Err("the build has no output directory".into());
        };
        let mut wanted = Vec::with_capacity(files.len());
        for file in files {
            let rel = self
                .local_path(file, remote_dir)
                .and_then(|local| local.strip_prefix(&to).ok().map(Path::to_path_buf))
                .ok_or_else(|| format!("{file} is outside the output directory"))?;
            wanted.push(rel);
        }
        Ok(Pull::Files {
            from,
            to,
            files: wanted,
        })
    }

    /// The environment a remote cargo build needs: its target dir inside the
    /// worker's copy of the workspace, relative to the build's directory.
    pub fn remote_env(&self, cwd: &Path) -> Vec<(String, String)> {
        let Some(cargo) = &self.cargo else {
            return Vec::new();
        };
        let Ok(below) = cwd.strip_prefix(&cargo.workspace) else {
            return Vec::new();
        };
        let up = "../".repeat(below.components().count());
        vec![("CARGO_TARGET_DIR".into(), format!("{up}target"))]
    }
}

/// `target/x86_64-unknown-linux-gnu/release` → `x86_64-unknown-linux-gnu/release`:
/// the part of classify's output dir below the target dir.
fn cargo_output_subdir(dir: &str) -> PathBuf {
    let path = Path::new(dir);
    let mut parts = path.components();
    parts.next();
    parts.as_path().to_path_buf()
}

/// `path` relative to `root`, as a string for the worker.
fn rel_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The command as the worker runs it: without `--target-dir` (the worker's
/// target dir is always inside its copy of the workspace, set by
/// [`Layout::remote_env`]).
pub fn remote_argv(argv: &[OsString], layout: &Layout) -> Vec<OsString> {
    if layout.cargo.is_none() {
        return argv.to_vec();
    }
    let mut out = Vec::with_capacity(argv.len());
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        match word.to_str() {
            Some("--") => {
                out.push(word.clone());
                out.extend(words.by_ref().cloned());
            }
            Some("--target-dir") => {
                words.next();
            }
            Some(w) if w.starts_with("--target-dir=") => {}
            _ => out.push(word.clone()),
        }
    }
    out
}

/// Where a build in `slot` lives on `worker`: the worker's copy of the
/// synced root (the build's own tree, [`crate::remote::layout::build_dir`]),
/// and the client path it is seen at when the build is mirrored. Mirroring
/// never moves the files; the build only sees them at the client's path.
pub fn remote_dir(worker: &WorkerConfig, layout: &Layout, slot: u32) -> RemoteDir {
    RemoteDir {
        dir: crate::remote::layout::build_dir(&worker.remote_base, &layout.root, slot),
        mirrored_at: layout.mirrors_on(worker).then(|| layout.root.clone()),
    }
}

/// One line per fact about the build's paths, for `rch diagnose`.
pub fn describe(layout: &Layout, workers: &[WorkerConfig]) -> Vec<String> {
    let mut lines = vec![format!("synced root: {}", layout.root.display())];
    if layout.widened && layout.cargo.is_some() {
        lines.push("  (widened to hold the crate's local path dependencies)".into());
    } else if layout.widened {
        lines.push("  (widened to hold the source tree the build dir was configured from)".into());
    }
    if let Some(cargo) = &layout.cargo {
        lines.push(format!("artifacts return to: {}", cargo.target.display()));
    }
    if let Some(recorded) = &layout.recorded {
        let mirrored = workers.iter().any(|w| w.enabled && layout.mirrors_on(w));
        let how = if mirrored {
            "builds run at that path on workers"
        } else {
            "it builds only at that path"
        };
        lines.push(format!("{recorded}: {how}"));
    }
    for w in workers.iter().filter(|w| w.enabled) {
        let how = match (layout.mirrors_on(w), layout.recorded.is_some()) {
            (true, _) => "at the client's path",
            (false, true) => "refuses (mirror_paths = false)",
            (false, false) => "in its own project dir",
        };
        lines.push(format!("  {}: {how}", w.id));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_argv_drops_target_dir_before_the_separator_only() {
        let layout = Layout {
            root: "/p".into(),
            widened: false,
            cargo: Some(CargoDirs {
                workspace: "/p".into(),
                target: "/t".into(),
            }),
            recorded: None,
        };
        let argv: Vec<OsString> = [
            "cargo",
            "build",
            "--target-dir",
            "x",
            "--target-dir=y",
            "--",
            "--target-dir",
            "z",
        ]
        .map(OsString::from)
        .to_vec();
        let out: Vec<String> = remote_argv(&argv, &layout)
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        assert_eq!(out, ["cargo", "build", "--", "--target-dir", "z"]);
        assert_eq!(
            layout.remote_env(Path::new("/p/a/b")),
            vec![("CARGO_TARGET_DIR".to_string(), "../../target".to_string())]
        );
        assert_eq!(
            cargo_output_subdir("out/x86/release"),
            Path::new("x86/release")
        );
    }

    #[test]
    fn reported_files_come_back_from_the_output_dir_into_the_local_target_dir() {
        use crate::remote::Pull;
        let layout = Layout {
            root: "/p".into(),
            widened: false,
            cargo: Some(CargoDirs {
                workspace: "/p/ws".into(),
                target: "/t".into(),
            }),
            recorded: None,
        };
        let artifacts = Artifacts::CargoTarget {
            dir: "target/release".into(),
        };
        let remote = "/h/b/p-1";
        let pull = layout.reported_pull(
            &artifacts,
            remote,
            &[
                "/h/b/p-1/ws/target/release/app".into(),
                "/h/b/p-1/ws/sub/../target/release/examples/ex".into(),
            ],
        );
        assert_eq!(
            pull,
            Ok(Pull::Files {
                from: "ws/target/release".into(),
                to: "/t/release".into(),
                files: vec!["app".into(), "examples/ex".into()],
            })
        );
        assert_eq!(
            layout.local_path("/h/b/p-1/ws/Cargo.toml", remote),
            Some(PathBuf::from("/p/ws/Cargo.toml"))
        );
        let outside = ["/h/b/p-1/ws/out/app".to_string()];
        assert!(layout.reported_pull(&artifacts, remote, &outside).is_err());
    }
}
