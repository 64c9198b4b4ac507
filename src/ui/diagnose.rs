//! `rch diagnose` as text: the command, the settings that decide it with
//! their origins, each worker's answer and the verdict.

use crate::diagnose::Diagnosis;

/// The diagnosis as `label:   value` lines, with one line per worker.
pub fn diagnosis_text(d: &Diagnosis) -> String {
    let mut lines = vec![
        format!("command:   {}", d.command),
        format!(
            "offload:   {} ({})",
            if d.offload { "yes" } else { "no" },
            d.classification
        ),
        format!("enabled:   {} (from {})", d.enabled.value, d.enabled.origin),
        format!(
            "fallback:  {} (from {})",
            d.fallback.value, d.fallback.origin
        ),
    ];
    if let Some(w) = &d.requested_worker {
        lines.push(format!(
            "worker:    {} requested (from {})",
            w.value, w.origin
        ));
    }
    match d.daemon_running {
        Some(true) => lines.push("daemon:    running".into()),
        Some(false) => {
            lines.push("daemon:    not running (saved state; the build would start it)".into())
        }
        None => {}
    }
    if let Some(needs) = d.needs.as_ref().filter(|n| n != &&Default::default()) {
        lines.push(format!("needs:     {}", needs.summary()));
    }
    if d.offload && !(d.env_forwarded.is_empty() && d.env_withheld.is_empty()) {
        lines.push(format!(
            "env sent:  {}",
            or_none(&d.env_forwarded.join(" "))
        ));
        let withheld: Vec<String> = d
            .env_withheld
            .iter()
            .map(|w| format!("{} ({})", w.name, w.why.as_str()))
            .collect();
        lines.push(format!("env kept:  {}", or_none(&withheld.join(", "))));
    }
    for w in &d.workers {
        lines.push(format!("  {:<10} {}", w.worker, w.why));
    }
    for (i, line) in d.paths.iter().enumerate() {
        let label = if i == 0 { "paths:" } else { "" };
        lines.push(format!("{label:<10} {line}"));
    }
    lines.push(format!("verdict:   {}", d.verdict));
    lines.join("\n")
}

fn or_none(text: &str) -> &str {
    if text.is_empty() {
        "none"
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Setting, WorkerVerdict};

    fn setting(value: &str) -> Setting {
        Setting {
            value: value.into(),
            origin: "default".into(),
        }
    }

    #[test]
    fn shows_the_daemon_line_and_each_worker_before_the_verdict() {
        let d = Diagnosis {
            command: "cargo build".into(),
            offload: true,
            classification: "cargo build".into(),
            enabled: setting("true"),
            fallback: setting("local"),
            requested_worker: None,
            daemon_running: Some(false),
            needs: None,
            env_forwarded: Vec::new(),
            env_withheld: Vec::new(),
            workers: vec![WorkerVerdict {
                worker: "w1".into(),
                admits: false,
                why: "circuit open".into(),
            }],
            placement: "local".into(),
            verdict: "would run locally: w1 circuit open".into(),
            paths: Vec::new(),
        };
        let text = diagnosis_text(&d);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "command:   cargo build");
        assert_eq!(lines[2], "enabled:   true (from default)");
        assert!(lines[4].starts_with("daemon:    not running"));
        assert_eq!(lines[5], "  w1         circuit open");
        assert_eq!(lines[6], "verdict:   would run locally: w1 circuit open");
    }
}
