//! Text for worker disk clean-up: `rch workers gc` per worker, and the
//! lines `rch exec -- cargo clean` prints for the workers it cleaned.

use crate::gc::{TargetCleaned, Why, WorkerGc};
use crate::remote::progress::human_bytes;
use crate::remote::RemoteFailure;

/// One worker's result: a summary line, then one line per removed directory
/// on a dry run or with `verbose`.
pub fn worker_text(result: &Result<WorkerGc, RemoteFailure>, verbose: bool) -> String {
    let done = match result {
        Ok(done) => done,
        Err(failure) => return format!("{failure}"),
    };
    let kept = format!("{} kept, {}", done.kept_dirs, human_bytes(done.kept_bytes));
    let mut text = if done.removed.is_empty() {
        format!("{}: nothing to remove ({kept})", done.worker)
    } else {
        let verb = if done.dry_run { "would free" } else { "freed" };
        format!(
            "{}: {verb} {} in {} project dir{} ({kept})",
            done.worker,
            human_bytes(done.freed_bytes),
            done.removed.len(),
            if done.removed.len() == 1 { "" } else { "s" }
        )
    };
    if done.dry_run || verbose {
        for r in &done.removed {
            let why = match r.why {
                Why::Unused => "unused",
                Why::OverLimit => "over max_disk_gb",
            };
            text.push_str(&format!("\n  {}  {}  {why}", r.name, human_bytes(r.bytes)));
        }
    }
    text
}

/// The `rch:` lines after `cargo clean` reached the workers.
pub fn clean_lines(
    cleaned: &[Result<TargetCleaned, RemoteFailure>],
    busy: &[String],
) -> Vec<String> {
    let mut lines: Vec<String> = cleaned
        .iter()
        .map(|r| match r {
            Ok(c) => format!(
                "rch: removed target/ on {} ({})",
                c.worker,
                human_bytes(c.freed_bytes)
            ),
            Err(f) => format!("rch: could not remove target/ on a worker: {f}"),
        })
        .collect();
    lines.extend(
        busy.iter()
            .map(|w| format!("rch: {w} is building this project now; its target/ stays")),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::Removal;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(248_300_000), "248.3 MB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }

    #[test]
    fn a_dry_run_lists_what_would_go() {
        let done = WorkerGc {
            worker: "w1".into(),
            removed: vec![Removal {
                name: "app-0123456789ab".into(),
                bytes: 2_000_000,
                last_used_ms: 0,
                why: Why::Unused,
            }],
            freed_bytes: 2_000_000,
            kept_bytes: 1_000,
            kept_dirs: 1,
            dry_run: true,
        };
        assert_eq!(
            worker_text(&Ok(done), false),
            "w1: would free 2.0 MB in 1 project dir (1 kept, 1.0 kB)\n  app-0123456789ab  2.0 MB  unused"
        );
    }
}
