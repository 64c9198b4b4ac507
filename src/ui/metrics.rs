//! Prometheus text exposition turned into JSON samples (`rch metrics --json`).

use serde_json::{json, Map, Value};

/// Every sample line as `{"name", "labels", "value"}`; comments are skipped.
pub fn samples(text: &str) -> Vec<Value> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(sample)
        .collect()
}

fn sample(line: &str) -> Option<Value> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)),
        None => (series, Map::new()),
    };
    Some(json!({ "name": name, "labels": labels, "value": value }))
}

/// `a="x",b="y"` → `{"a": "x", "b": "y"}` (rch's label values hold no commas or quotes).
fn labels(text: &str) -> Map<String, Value> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                Value::String(v.trim_matches('"').to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_and_values() {
        let text = "# HELP x y\n# TYPE x gauge\nrch_queue_depth 0\nrch_builds_total{outcome=\"success\",placement=\"remote\"} 3\n";
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            json!({"name": "rch_queue_depth", "labels": {}, "value": 0.0})
        );
        assert_eq!(s[1]["labels"]["placement"], "remote");
        assert_eq!(s[1]["value"], 3.0);
    }
}
