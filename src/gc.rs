//! Worker disk clean-up: project directories unused for long, and the
//! least recently used ones when a worker is over its `max_disk_gb`.
//!
//! What to remove is decided by [`plan`], a pure function of the worker's
//! listing (names, sizes, newest directory time), the last job of each
//! project on that worker (from the daemon's history) and the directories in
//! use by running builds, which are never removed. [`list`] and [`remove`]
//! are the two remote round trips; [`collect`] puts them together.
//!
//! Only directories named like rch's own project homes
//! (`<name>-<12 hex>`, and `<name>-<12 hex>.<k>` for a project's extra build
//! trees) are ever looked at, so anything else under `remote_base` is safe.

use crate::config::{Config, SshConfig, WorkerConfig};
use crate::remote::{self, Connection, FailureKind, RemoteFailure, Target};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;

/// One project directory on a worker, as listed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDir {
    pub name: String,
    pub bytes: u64,
    /// The newest modification time of the directory and its first levels
    /// (a build that wrote outputs touched them), in ms since the epoch.
    pub modified_ms: u64,
}

/// When a directory goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Unused for at least this long.
    pub older_than_ms: Option<u64>,
    /// Least recently used first until the worker's project dirs fit.
    pub max_bytes: Option<u64>,
}

/// Why a directory goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Unused for longer than `--older-than`.
    Unused,
    /// The worker was over `max_disk_gb`.
    OverLimit,
}

/// A directory [`plan`] removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub name: String,
    pub bytes: u64,
    pub last_used_ms: u64,
    pub why: Why,
}

/// What the daemon knows about a worker's projects: the last job of each
/// (by project dir name) and the ones running now.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub last_job_ms: HashMap<String, u64>,
    pub in_use: HashSet<String>,
}

/// The project home a directory belongs to: `app-0123456789ab.2` → `app-0123456789ab`.
fn home_of(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((home, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => home,
        _ => name,
    }
}

/// `<name>-<12 hex>` with an optional `.<k>`: a directory rch made.
pub fn is_project_dir(name: &str) -> bool {
    let home = home_of(name);
    match home.rsplit_once('-') {
        Some((stem, hash)) => {
            !stem.is_empty()
                && hash.len() == 12
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && !name.contains('/')
        }
        None => false,
    }
}

/// Which directories to remove: those unused for longer than the policy's
/// age, then, while the total is over the limit, the least recently used.
/// A directory whose project is in use is never chosen.
pub fn plan(dirs: &[RemoteDir], usage: &Usage, policy: Policy, now_ms: u64) -> Vec<Removal> {
    let mut candidates: Vec<Removal> = dirs
        .iter()
        .filter(|d| is_project_dir(&d.name) && !usage.in_use.contains(home_of(&d.name)))
        .map(|d| Removal {
            name: d.name.clone(),
            bytes: d.bytes,
            last_used_ms: usage
                .last_job_ms
                .get(home_of(&d.name))
                .map_or(d.modified_ms, |job| (*job).max(d.modified_ms)),
            why: Why::Unused,
        })
        .collect();
    candidates.sort_by(|a, b| (a.last_used_ms, &a.name).cmp(&(b.last_used_ms, &b.name)));
    let mut total: u64 = dirs
        .iter()
        .filter(|d| is_project_dir(&d.name))
        .map(|d| d.bytes)
        .sum();
    let mut chosen = Vec::new();
    for mut c in candidates {
        let unused = policy
            .older_than_ms
            .is_some_and(|age| now_ms.saturating_sub(c.last_used_ms) >= age);
        let over = policy.max_bytes.is_some_and(|max| total > max);
        if unused || over {
            c.why = if unused { Why::Unused } else { Why::OverLimit };
            total = total.saturating_sub(c.bytes);
            chosen.push(c);
        }
    }
    chosen
}

/// What clean-up did (or would do, on a dry run) on one worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerGc {
    pub worker: String,
    pub removed: Vec<Removal>,
    pub freed_bytes: u64,
    /// Bytes left in project dirs afterwards.
    pub kept_bytes: u64,
    pub kept_dirs: usize,
    pub dry_run: bool,
}

/// List, plan and (unless `dry_run`) remove on one worker.
pub async fn collect(
    target: &Target,
    usage: &Usage,
    policy: Policy,
    now_ms: u64,
    dry_run: bool,
) -> Result<WorkerGc, RemoteFailure> {
    let conn = remote::ssh::connect(target).await?;
    let dirs = list(&conn, &target.worker.remote_base).await?;
    let removed = plan(&dirs, usage, policy, now_ms);
    if !dry_run && !removed.is_empty() {
        let names: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
        remove(&conn, &target.worker.remote_base, &names).await?;
    }
    let freed_bytes = removed.iter().map(|r| r.bytes).sum();
    let total: u64 = dirs
        .iter()
        .filter(|d| is_project_dir(&d.name))
        .map(|d| d.bytes)
        .sum();
    let listed = dirs.iter().filter(|d| is_project_dir(&d.name)).count();
    Ok(WorkerGc {
        worker: target.worker.id.clone(),
        kept_bytes: total - freed_bytes,
        kept_dirs: listed - removed.len(),
        removed,
        freed_bytes,
        dry_run,
    })
}

/// Lists `$1` (the remote base; relative to the home unless absolute): one
/// line per directory, `KiB<TAB>newest mtime<TAB>name`. A missing base is empty.
const LIST_SCRIPT: &str = r#"base=$1
case $base in /*) ;; *) base=$HOME/$base ;; esac
[ -d "$base" ] || exit 0
cd -- "$base" || exit 3
for d in *; do
  if [ ! -d "$d" ] || [ -L "$d" ]; then continue; fi
  kb=$(du -sk -- "$d" 2>/dev/null | cut -f1)
  t=$(find "$d" -maxdepth 3 -type d -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1)
  printf '%s\t%s\t%s\n' "${kb:-0}" "${t%.*}" "$d"
done"#;

/// Removes the directories named after `$1` (the base) inside it.
const REMOVE_SCRIPT: &str = r#"base=$1; shift
case $base in /*) ;; *) base=$HOME/$base ;; esac
cd -- "$base" || exit 3
for d in "$@"; do rm -rf -- "./$d" || exit 4; done"#;

/// The project directories under `remote_base` on the worker.
pub async fn list(conn: &Connection, remote_base: &str) -> Result<Vec<RemoteDir>, RemoteFailure> {
    let base = remote::layout::remote_path(remote_base);
    let stdout = run_script(conn, LIST_SCRIPT, &[base.as_str()]).await?;
    Ok(parse_listing(&stdout))
}

/// Remove `names` (directories directly under `remote_base`) on the worker.
pub async fn remove(
    conn: &Connection,
    remote_base: &str,
    names: &[&str],
) -> Result<(), RemoteFailure> {
    let base = remote::layout::remote_path(remote_base);
    let mut args = vec![base.as_str()];
    args.extend(names.iter().copied().filter(|n| is_project_dir(n)));
    run_script(conn, REMOVE_SCRIPT, &args).await.map(|_| ())
}

/// Remove `rel` (e.g. `target`) inside each of the given project directories.
pub async fn remove_inside(
    conn: &Connection,
    remote_base: &str,
    homes: &[&str],
    rel: &str,
) -> Result<u64, RemoteFailure> {
    let dirs = list(conn, remote_base).await?;
    let wanted: Vec<&RemoteDir> = dirs
        .iter()
        .filter(|d| homes.contains(&home_of(&d.name)))
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    let base = remote::layout::remote_path(remote_base);
    let mut args = vec![base.as_str(), rel];
    args.extend(wanted.iter().map(|d| d.name.as_str()));
    let out = run_script(conn, REMOVE_INSIDE_SCRIPT, &args).await?;
    Ok(out.trim().parse::<u64>().unwrap_or(0) * 1024)
}

/// Removes `$2` inside each directory after `$2` under the base `$1`; prints
/// the KiB it held.
const REMOVE_INSIDE_SCRIPT: &str = r#"base=$1; rel=$2; shift 2
case $base in /*) ;; *) base=$HOME/$base ;; esac
cd -- "$base" || exit 3
total=0
for d in "$@"; do
  if [ -d "./$d/$rel" ]; then
    kb=$(du -sk -- "./$d/$rel" 2>/dev/null | cut -f1)
    rm -rf -- "./$d/$rel" || exit 4
    total=$((total + ${kb:-0}))
  fi
done
echo "$total""#;

async fn run_script(
    conn: &Connection,
    script: &str,
    args: &[&str],
) -> Result<String, RemoteFailure> {
    let command = remote::shell::login_shell_command(script, args);
    let output = conn
        .session()
        .raw_command(command)
        .output()
        .await
        .map_err(|e| {
            RemoteFailure::new(FailureKind::ConnectionLost, conn.worker_id(), e.to_string())
        })?;
    if !output.status.success() {
        return Err(RemoteFailure::new(
            FailureKind::RemoteDir,
            conn.worker_id(),
            format!(
                "clean-up failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn parse_listing(text: &str) -> Vec<RemoteDir> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let kib: u64 = parts.next()?.trim().parse().ok()?;
            let secs: u64 = parts.next()?.trim().parse().unwrap_or(0);
            let name = parts.next()?.to_string();
            Some(RemoteDir {
                name,
                bytes: kib * 1024,
                modified_ms: secs * 1000,
            })
        })
        .collect()
}

/// The directory name a project gets under any remote base.
pub fn home_name(project_root: &Path) -> String {
    let dir = remote::remote_project_dir("", project_root);
    dir.rsplit('/').next().unwrap_or(&dir).to_string()
}

/// `14d`, `12h`, `30m`, `90s`, `2w` (or plain seconds) as seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 14d, 12h or 30m, got {text:?}"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use s, m, h, d or w)"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

/// What the daemon's history and leases say, per worker: the last job of
/// each project (by its directory name) and the projects building now.
/// `history` is `(worker, project root, at_ms)`, `leases` `(worker, project root)`.
pub fn usage_by_worker(
    history: &[(String, String, u64)],
    leases: &[(String, String)],
) -> HashMap<String, Usage> {
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for (worker, project, at_ms) in history {
        let last = usage
            .entry(worker.clone())
            .or_default()
            .last_job_ms
            .entry(home_name(Path::new(project)))
            .or_default();
        *last = (*last).max(*at_ms);
    }
    for (worker, project) in leases {
        usage
            .entry(worker.clone())
            .or_default()
            .in_use
            .insert(home_name(Path::new(project)));
    }
    usage
}

/// The limit of `max_disk_gb` in bytes.
pub fn limit_bytes(max_disk_gb: Option<f64>) -> Option<u64> {
    max_disk_gb.map(|gb| (gb * 1e9) as u64)
}

/// Clean-up on each of `workers` at once; one result per worker, in order.
pub async fn collect_all(
    workers: &[WorkerConfig],
    ssh: &SshConfig,
    usage: &HashMap<String, Usage>,
    older_than_ms: Option<u64>,
    now_ms: u64,
    dry_run: bool,
) -> Vec<(String, Result<WorkerGc, RemoteFailure>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, worker) in workers.iter().enumerate() {
        let target = Target {
            worker: worker.clone(),
            ssh: ssh.clone(),
            agent: None,
        };
        let usage = usage.get(&worker.id).cloned().unwrap_or_default();
        let policy = Policy {
            older_than_ms,
            max_bytes: limit_bytes(worker.max_disk_gb),
        };
        tasks.spawn(async move {
            let result = collect(&target, &usage, policy, now_ms, dry_run).await;
            (index, target.worker.id, result)
        });
    }
    let mut results: Vec<(usize, String, Result<WorkerGc, RemoteFailure>)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(done) = joined {
            results.push(done);
        }
    }
    results.sort_by_key(|(index, _, _)| *index);
    results.into_iter().map(|(_, id, r)| (id, r)).collect()
}

/// Whether `argv` is a plain `cargo clean` (cargo's global options allowed,
/// nothing after `clean` but `-q`/`-v`): it cleans the whole target dir, so
/// the workers' copies go too. A narrower clean (`-p`, `--release`, ...)
/// stays local only.
pub fn is_whole_cargo_clean(argv: &[OsString]) -> bool {
    let Some(words) = argv
        .iter()
        .map(|a| a.to_str())
        .collect::<Option<Vec<&str>>>()
    else {
        return false;
    };
    let Some((program, args)) = words.split_first() else {
        return false;
    };
    if program.rsplit('/').next() != Some("cargo") {
        return false;
    }
    match crate::classify::cargo_subcommand_at(args) {
        Ok(Some(i)) if args[i] == "clean" => args[i + 1..].iter().all(|a| {
            matches!(*a, "-q" | "--quiet")
                || (a.len() > 1 && a.starts_with('-') && a[1..].bytes().all(|b| b == b'v'))
        }),
        _ => false,
    }
}

/// What `cargo clean` removed on one worker.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCleaned {
    pub worker: String,
    pub freed_bytes: u64,
}

/// Remove the project's `target/` on the workers whose history shows it,
/// except where it is building right now (named in the second list).
pub async fn clean_targets(
    config: &Config,
    project_root: &Path,
    history: &[(String, String, u64)],
    leases: &[(String, String)],
) -> (Vec<Result<TargetCleaned, RemoteFailure>>, Vec<String>) {
    let project = project_root.display().to_string();
    let home = home_name(project_root);
    let busy: Vec<String> = leases
        .iter()
        .filter(|(_, p)| *p == project)
        .map(|(w, _)| w.clone())
        .collect();
    let mut results = Vec::new();
    for worker in &config.workers {
        let built_here = history
            .iter()
            .any(|(w, p, _)| *w == worker.id && *p == project);
        if !built_here || busy.contains(&worker.id) {
            continue;
        }
        let target = Target {
            worker: worker.clone(),
            ssh: config.ssh.clone(),
            agent: None,
        };
        let result = async {
            let conn = remote::ssh::connect(&target).await?;
            let freed =
                remove_inside(&conn, &worker.remote_base, &[home.as_str()], "target").await?;
            Ok(TargetCleaned {
                worker: worker.id.clone(),
                freed_bytes: freed,
            })
        }
        .await;
        results.push(result);
    }
    (results, busy)
}

/// The history the daemon saved, `(worker, project root, last job ms)`;
/// empty when there is none yet.
pub fn saved_history() -> Vec<(String, String, u64)> {
    crate::state::store::Store::open_readonly(&crate::paths::state_db())
        .and_then(|store| store.last_use_per_project())
        .unwrap_or_default()
}

/// After a whole `cargo clean` here: remove the project's `target/` on the
/// workers that built it, except where it is building right now (returned
/// second). Reads the daemon's leases (or its saved state) and history.
pub async fn clean_after_cargo_clean(
    config: &Config,
    project_root: &Path,
    out: &crate::ui::Output,
) -> anyhow::Result<(Vec<Result<TargetCleaned, RemoteFailure>>, Vec<String>)> {
    let report = crate::fleet_report::current_report(out).await?;
    let leases: Vec<(String, String)> = report
        .leases
        .into_iter()
        .map(|l| (l.worker, l.project))
        .collect();
    Ok(clean_targets(config, project_root, &saved_history(), &leases).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn dir(name: &str, mb: u64, day: u64) -> RemoteDir {
        RemoteDir {
            name: name.into(),
            bytes: mb << 20,
            modified_ms: day * DAY,
        }
    }

    #[test]
    fn only_rch_project_dirs_count() {
        assert!(is_project_dir("app-0123456789ab"));
        assert!(is_project_dir("my.app-0123456789ab.3"));
        assert!(!is_project_dir("app-0123456789AB"));
        assert!(!is_project_dir("app-0123"));
        assert!(!is_project_dir("notes"));
        assert!(!is_project_dir("-0123456789ab"));
        assert_eq!(home_of("a-0123456789ab.2"), "a-0123456789ab");
    }

    #[test]
    fn old_dirs_go_and_dirs_in_use_or_recently_built_stay() {
        let dirs = [
            dir("old-000000000001", 10, 1),
            dir("old-000000000001.1", 5, 1),
            dir("busy-000000000002", 10, 1),
            dir("built-000000000003", 10, 1),
            dir("fresh-000000000004", 10, 29),
            dir("foreign", 500, 0),
        ];
        let mut usage = Usage::default();
        usage.in_use.insert("busy-000000000002".into());
        usage
            .last_job_ms
            .insert("built-000000000003".into(), 25 * DAY);
        let policy = Policy {
            older_than_ms: Some(14 * DAY),
            max_bytes: None,
        };
        let gone: Vec<String> = plan(&dirs, &usage, policy, 30 * DAY)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(gone, vec!["old-000000000001", "old-000000000001.1"]);
    }

    #[test]
    fn over_the_limit_the_least_recently_used_go_first() {
        let dirs = [
            dir("a-00000000000a", 40, 3),
            dir("b-00000000000b", 40, 1),
            dir("c-00000000000c", 40, 2),
            dir("d-00000000000d", 40, 0),
        ];
        let mut usage = Usage::default();
        usage.in_use.insert("d-00000000000d".into());
        let policy = Policy {
            older_than_ms: None,
            max_bytes: Some(100 << 20),
        };
        let removed = plan(&dirs, &usage, policy, 4 * DAY);
        let gone: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(gone, vec!["b-00000000000b", "c-00000000000c"]);
        assert!(removed.iter().all(|r| r.why == Why::OverLimit));
        assert!(plan(&dirs, &usage, Policy::default(), 4 * DAY).is_empty());
    }

    #[test]
    fn only_a_whole_cargo_clean_reaches_the_workers() {
        let argv =
            |s: &str| -> Vec<OsString> { s.split_whitespace().map(OsString::from).collect() };
        assert!(is_whole_cargo_clean(&argv("cargo clean")));
        assert!(is_whole_cargo_clean(&argv(
            "/usr/bin/cargo +stable -q clean -v"
        )));
        assert!(!is_whole_cargo_clean(&argv("cargo clean -p foo")));
        assert!(!is_whole_cargo_clean(&argv("cargo clean --release")));
        assert!(!is_whole_cargo_clean(&argv("cargo build")));
        assert!(!is_whole_cargo_clean(&argv("make clean")));
    }

    #[test]
    fn history_and_leases_become_usage_per_worker() {
        let history = vec![
            ("w1".to_string(), "/p/a".to_string(), 5),
            ("w1".to_string(), "/p/a".to_string(), 9),
            ("w2".to_string(), "/p/b".to_string(), 7),
        ];
        let leases = vec![("w2".to_string(), "/p/b".to_string())];
        let usage = usage_by_worker(&history, &leases);
        let a = home_name(Path::new("/p/a"));
        assert_eq!(usage["w1"].last_job_ms[&a], 9);
        assert!(usage["w2"].in_use.contains(&home_name(Path::new("/p/b"))));
        assert!(is_project_dir(&a), "{a}");
    }

    #[test]
    fn listings_and_durations_parse() {
        let dirs =
            parse_listing("12\t1700000000\tapp-0123456789ab\nbad line\n4\t\tx-0123456789ab\n");
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].bytes, 12 * 1024);
        assert_eq!(dirs[0].modified_ms, 1_700_000_000_000);
        assert_eq!(dirs[1].modified_ms, 0);
        assert_eq!(parse_duration("14d"), Ok(14 * 86_400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
