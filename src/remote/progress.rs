//! What a transfer shows while it runs: rsync's own progress report
//! (`--info=progress2`, one record per `\r`) read into [`Progress`], drawn
//! as one indicatif line on stderr once a transfer has taken a second, and
//! cleared when it ends. Only on a terminal and without `-q`
//! ([`enable`], decided once per build); piped output gets nothing.
//!
//! Also the one line a large first push prints (piped too): its size, its
//! largest directories and how to leave them out.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether transfers of this process draw their progress line.
static SHOWN: AtomicBool = AtomicBool::new(false);

/// How long a transfer runs before its line appears.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// A first push at least this large names its largest directories.
pub const LARGE_FIRST_PUSH: u64 = 100 * 1000 * 1000;

/// Draw transfer progress from now on (stderr is a terminal, not quiet).
pub fn enable(on: bool) {
    SHOWN.store(on, Ordering::Relaxed);
}

/// Whether transfers draw their progress line.
pub fn enabled() -> bool {
    SHOWN.load(Ordering::Relaxed)
}

/// One of rsync's progress records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes transferred so far.
    pub bytes: u64,
    /// The rate as rsync shows it (`38.75MB/s`).
    pub rate: String,
    /// Files transferred so far.
    pub files: u64,
}

/// Read one record: `  41,353,216  45%   38.75MB/s    0:00:01 (xfr#1, to-chk=1/3)`.
pub fn parse(record: &str) -> Option<Progress> {
    let mut words = record.split_whitespace();
    let bytes = words.next()?.replace(',', "").parse().ok()?;
    words.next().filter(|w| w.ends_with('%'))?;
    let rate = words.next().filter(|w| w.ends_with("/s"))?.to_string();
    let files = record
        .split_once("xfr#")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Progress { bytes, rate, files })
}

/// The line of one transfer on a terminal, cleared when dropped.
pub struct Line {
    bar: ProgressBar,
    what: &'static str,
    started: Instant,
    drawn: bool,
    /// Text of a record not yet ended by `\r` or `\n`.
    partial: String,
    last_files: u64,
}

impl Line {
    /// A hidden line for a transfer called `what` ("push", "pull").
    pub fn new(what: &'static str) -> Line {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{spinner} rch: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        Line {
            bar,
            what,
            started: Instant::now(),
            drawn: false,
            partial: String::new(),
            last_files: 0,
        }
    }

    /// Take a piece of rsync's stdout.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        while let Some(at) = self.partial.find(['\r', '\n']) {
            let record: String = self.partial.drain(..=at).collect();
            if let Some(progress) = parse(&record) {
                self.show(&progress);
            }
        }
    }

    fn show(&mut self, progress: &Progress) {
        // rsync's xfr# counts from the start; its last record may omit it.
        self.last_files = self.last_files.max(progress.files);
        let files = self.last_files;
        let plural = if files == 1 { "" } else { "s" };
        self.bar.set_message(format!(
            "{} {} at {}, {files} file{plural}",
            self.what,
            human_bytes(progress.bytes),
            progress.rate
        ));
        if !self.drawn && self.started.elapsed() >= QUIET_FOR {
            self.drawn = true;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(120));
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// `312.4 MB`, `1.2 kB`, `0 B`: bytes in decimal units, as rsync counts
/// its rates and `max_disk_gb` counts a worker's disk.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The line of a first push of `total` bytes to `worker` whose largest
/// directories are `largest` (path, bytes); `None` below [`LARGE_FIRST_PUSH`].
pub fn first_push_line(worker: &str, total: u64, largest: &[(String, u64)]) -> Option<String> {
    if total < LARGE_FIRST_PUSH || largest.is_empty() {
        return None;
    }
    let dirs: Vec<String> = largest
        .iter()
        .map(|(dir, size)| format!("{dir}/ {}", human_bytes(*size)))
        .collect();
    Some(format!(
        "rch: first push to {worker} is {}; largest: {}; leave out what the build does not need with .rchignore or [transfer] exclude",
        human_bytes(total),
        dirs.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_records_are_read() {
        assert_eq!(
            parse("     41,353,216  45%   38.75MB/s    0:00:01 (xfr#1, to-chk=1/3)"),
            Some(Progress {
                bytes: 41_353_216,
                rate: "38.75MB/s".into(),
                files: 1
            })
        );
        assert_eq!(
            parse("         32,768   0%    0.00kB/s    0:00:00  ").map(|p| p.files),
            Some(0)
        );
        assert_eq!(parse("sending incremental file list"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn records_split_across_reads_are_joined() {
        let mut line = Line::new("push");
        line.feed(b"\r      1,000  10%   1.00MB/s    0:00:01 (xf");
        line.feed(b"r#3, to-chk=1/9)\r   2,000 20%  1.00MB/s  0:00:01\r");
        assert_eq!(line.last_files, 3);
        assert!(line
            .bar
            .message()
            .starts_with("push 2.0 kB at 1.00MB/s, 3 files"));
        assert!(!line.drawn, "drawn before a second had passed");
    }

    #[test]
    fn only_a_large_first_push_is_named() {
        let largest = [
            ("data".to_string(), 300_000_000),
            ("src".to_string(), 1_200),
        ];
        assert_eq!(
            first_push_line("w1", 300_001_200, &largest).as_deref(),
            Some("rch: first push to w1 is 300.0 MB; largest: data/ 300.0 MB, src/ 1.2 kB; leave out what the build does not need with .rchignore or [transfer] exclude")
        );
        assert_eq!(first_push_line("w1", 5_000_000, &largest), None);
    }
}
