//! A worker's link as its own transfers measured it, and whether rsync
//! compresses for it.
//!
//! Every push or pull that moves enough bytes to tell ([`MIN_SAMPLE`]) is a
//! sample: bytes on the wire over the transfer's time. Samples are averaged
//! per worker (each new one counts for a third) in a small file under the
//! client's cache dir, so the next build knows the link before it sends a
//! byte. With `compress = "auto"` (the default) rsync compresses when the
//! measured link is slower than [`SLOW_LINK`]: on a LAN or loopback the CPU
//! is the limit and compression only costs; at 100 Mbit/s and below the
//! link is, and a build's sources and binaries shrink well. `true` and
//! `false` decide for the worker whatever was measured.
//!
//! Compression is rsync's `-z`: rsync 3.2 and later on both sides agree on
//! the best algorithm both have (zstd first), older ones use zlib, so no
//! choice can fail on a worker whose rsync lacks it. Delta transfer stays on.

use crate::config::Compress;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Transfers moving fewer bytes than this say more about round trips and
/// process starts than about the link.
pub const MIN_SAMPLE: u64 = 4 * 1000 * 1000;

/// Below this many bytes per second (about 320 Mbit/s) rsync compresses.
pub const SLOW_LINK: f64 = 40.0 * 1000.0 * 1000.0;

/// A transfer moving less than this per file it sent is bound by per-file
/// work (stat, create, rename), not by the link: no sample. A first push of
/// a tree of many small files would otherwise measure a LAN as a modem.
pub const MIN_BYTES_PER_FILE: u64 = 256 * 1024;

/// How much a new sample counts in the average.
const WEIGHT: f64 = 1.0 / 3.0;

/// Whether transfers for a worker with this setting and this measured
/// throughput (bytes per second; `None`: never measured) are compressed.
pub fn compresses(setting: Compress, measured: Option<f64>) -> bool {
    match setting {
        Compress::Always => true,
        Compress::Never => false,
        Compress::Auto => measured.is_some_and(|rate| rate < SLOW_LINK),
    }
}

/// The bytes per second of one transfer, if it was large enough to tell.
pub fn sample(bytes: u64, took: Duration) -> Option<f64> {
    let secs = took.as_secs_f64();
    (bytes >= MIN_SAMPLE && secs > 0.0).then(|| bytes as f64 / secs)
}

/// The new average after `sample`.
pub fn averaged(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => old + WEIGHT * (sample - old),
        None => sample,
    }
}

/// The file holding one worker's measured throughput under `dir`.
fn file(dir: &Path, worker: &str) -> PathBuf {
    let safe: String = worker
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(safe)
}

/// Where measured links are kept.
pub fn default_dir() -> PathBuf {
    crate::paths::cache_dir().join("links")
}

/// The worker's measured throughput in bytes per second, if any.
pub fn measured(dir: &Path, worker: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file(dir, worker)).ok()?;
    text.trim()
        .parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0)
}

/// Add one transfer to the worker's average (best effort: a cache that
/// cannot be written only means the next build measures again).
pub fn record(dir: &Path, worker: &str, bytes: u64, took: Duration) {
    let Some(rate) = sample(bytes, took) else {
        return;
    };
    let rate = averaged(measured(dir, worker), rate);
    tracing::debug!(worker, bytes_per_sec = rate as u64, "link measured");
    let path = file(dir, worker);
    let tmp = path.with_extension("tmp");
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, format!("{rate:.0}\n")))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot keep the measured link");
    }
}

/// Wire bytes from rsync's `--info=stats2` summary
/// (`sent 1,234 bytes  received 56 bytes  2,580.00 bytes/sec`), when the
/// transfer says something about the link: enough bytes per file sent
/// (`Number of regular files transferred: N`, see [`MIN_BYTES_PER_FILE`]).
pub fn wire_bytes(stdout: &str) -> Option<u64> {
    let files: u64 = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Number of regular files transferred: "))?
        .trim()
        .replace(',', "")
        .parse()
        .ok()?;
    let line = stdout.lines().rev().find(|l| l.starts_with("sent "))?;
    let number = |after: &str| -> Option<u64> {
        let rest = line.split_once(after)?.1;
        rest.split_whitespace()
            .next()?
            .replace(',', "")
            .parse()
            .ok()
    };
    let bytes = number("sent ")? + number("received ")?;
    (files > 0 && bytes / files >= MIN_BYTES_PER_FILE).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_slow_measured_link_compresses_unless_the_worker_says() {
        assert!(!compresses(Compress::Auto, None));
        assert!(!compresses(Compress::Auto, Some(110e6)));
        assert!(compresses(Compress::Auto, Some(12e6)));
        assert!(compresses(Compress::Always, Some(1e9)));
        assert!(!compresses(Compress::Never, Some(1e3)));
    }

    #[test]
    fn small_transfers_are_no_sample_and_samples_average() {
        assert_eq!(sample(1_000, Duration::from_secs(1)), None);
        assert_eq!(sample(10_000_000, Duration::from_secs(2)), Some(5e6));
        assert_eq!(averaged(None, 9.0), 9.0);
        assert_eq!(averaged(Some(3.0), 9.0), 5.0);
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), "w/1", 8_000_000, Duration::from_secs(1));
        record(dir.path(), "w/1", 100, Duration::from_secs(1));
        record(dir.path(), "w/1", 20_000_000, Duration::from_secs(1));
        assert_eq!(measured(dir.path(), "w/1"), Some(12e6));
        assert_eq!(measured(dir.path(), "w2"), None);
    }

    #[test]
    fn rsync_summaries_give_the_bytes_on_the_wire() {
        let summary = |files: &str| {
            format!("\r  1,000 100%  1.00MB/s 0:00:00\nNumber of regular files transferred: {files}\nTotal bytes sent: 1,234,567\n\nsent 1,234,567 bytes  received 89 bytes  2,469,312.00 bytes/sec\ntotal size is 5  speedup is 1.00\n")
        };
        assert_eq!(wire_bytes(&summary("2")), Some(1_234_656));
        assert_eq!(
            wire_bytes(&summary("1,000")),
            None,
            "many small files: per-file work, not the link"
        );
        assert_eq!(wire_bytes(&summary("0")), None);
        assert_eq!(wire_bytes("nothing"), None);
    }
}
