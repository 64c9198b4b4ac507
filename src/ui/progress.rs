//! Spinners, one per worker, while the daemon works on them (`rch workers
//! probe`). Only on a terminal; piped or `--json` output gets just the results.

use super::Output;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::time::Duration;

pub struct Spinners {
    bars: HashMap<String, ProgressBar>,
    /// Keeps the bars drawn together; `None` when not on a terminal.
    _multi: Option<MultiProgress>,
    show_plain: bool,
}

impl Spinners {
    /// One spinner per id, each showing `doing` until it finishes.
    pub fn start(out: &Output, ids: &[String], doing: &str) -> Spinners {
        if !out.tty || out.json {
            return Spinners {
                bars: HashMap::new(),
                _multi: None,
                show_plain: !out.json,
            };
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{spinner} {prefix:<12} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars = ids
            .iter()
            .map(|id| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(id.clone());
                bar.set_message(doing.to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                (id.clone(), bar)
            })
            .collect();
        Spinners {
            bars,
            _multi: Some(multi),
            show_plain: false,
        }
    }

    /// Remove `id`'s spinner without a result line (its error is reported elsewhere).
    pub fn clear(&self, id: &str) {
        if let Some(bar) = self.bars.get(id) {
            bar.finish_and_clear();
        }
    }

    /// Replace `id`'s spinner by its result line (or print the line when piped).
    pub fn finish(&self, id: &str, mark: &str, line: &str) {
        match self.bars.get(id) {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix:<14} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(format!("{mark} {id}"));
                bar.finish_with_message(line.to_string());
            }
            None if self.show_plain => println!("{id}: {line}"),
            None => {}
        }
    }
}
