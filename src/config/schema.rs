//! The configuration schema: every section and key, its type and its bounds.
//!
//! Checking a value turns a TOML value into the JSON value the typed config is
//! built from, or into a one-line problem for the error message. The schema is
//! the single place that knows which keys exist, so unknown-key messages can
//! list the valid ones.

use serde_json::Value as Json;
use toml_edit::Value;

/// What a key accepts.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    /// An integer within `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// A number in (0, 1].
    Fraction,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A non-empty string.
    Text,
    /// A worker id: `[A-Za-z0-9._-]+`.
    Id,
    /// A socket address such as `127.0.0.1:9464`.
    Address,
    /// An array of strings.
    TextList,
    /// A number (integer or float) greater than 0.
    Positive,
    /// `true`, `false`, or the string `"auto"`.
    AutoBool,
    /// A `redis://` or `rediss://` URL.
    RedisUrl,
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key { name, kind }
}

const U32: i64 = u32::MAX as i64;
const U64: i64 = i64::MAX;

pub const GENERAL: &[Key] = &[
    key("enabled", Kind::Bool),
    key("fallback", Kind::Choice(&["local", "never"])),
    key("build_timeout_secs", Kind::Int { min: 1, max: U64 }),
    key("toolchain", TOOLCHAIN),
    key("cc_toolchain", CC_TOOLCHAIN),
    key("tools", Kind::TextList),
];

/// `toolchain`: how a worker's rustc must match the client's.
const TOOLCHAIN: Kind = Kind::Choice(&["exact", "same-release", "any"]);
/// `cc_toolchain`: whether a worker's C compiler version must match.
const CC_TOOLCHAIN: Kind = Kind::Choice(&["any", "exact"]);

pub const CIRCUIT: &[Key] = &[
    key("failure_threshold", Kind::Int { min: 1, max: U32 }),
    key("error_rate_threshold", Kind::Fraction),
    key("window_secs", Kind::Int { min: 1, max: U64 }),
    key("window_min_samples", Kind::Int { min: 1, max: U32 }),
    key("open_cooldown_secs", Kind::Int { min: 0, max: U64 }),
    key("success_threshold", Kind::Int { min: 1, max: U32 }),
    key("half_open_max_probes", Kind::Int { min: 1, max: U32 }),
];

pub const SSH: &[Key] = &[
    key("connect_timeout_secs", Kind::Int { min: 1, max: U64 }),
    key(
        "strict_host_key_checking",
        Kind::Choice(&["yes", "accept-new"]),
    ),
    key("config_file", Kind::Text),
];

pub const DAEMON: &[Key] = &[
    key("queue_timeout_secs", Kind::Int { min: 0, max: U64 }),
    key("metrics_listen", Kind::Address),
];

pub const ENV: &[Key] = &[
    key("forward", Kind::TextList),
    key("withhold", Kind::TextList),
    key("on_mismatch", Kind::Choice(&["rerun", "local", "fail"])),
];

pub const TRANSFER: &[Key] = &[
    key("exclude", Kind::TextList),
    key("respect_gitignore", Kind::Bool),
];

/// `[cost]`: when a build is too small to be worth a worker.
pub const COST: &[Key] = &[
    key("local_compile_max_bytes", Kind::Int { min: 0, max: U64 }),
    key("local_compile_patterns", Kind::TextList),
];

pub const TEAM: &[Key] = &[
    key("redis_url", Kind::RedisUrl),
    key("name", Kind::Id),
    key(
        "timeout_ms",
        Kind::Int {
            min: 1,
            max: 60_000,
        },
    ),
];

/// The keys of one `[[workers]]` entry.
pub const WORKER: &[Key] = &[
    key("id", Kind::Id),
    key("host", Kind::Text),
    key("port", Kind::Int { min: 1, max: 65535 }),
    key("user", Kind::Text),
    key("identity_file", Kind::Text),
    key("slots", Kind::Int { min: 1, max: U32 }),
    key(
        "priority",
        Kind::Int {
            min: i64::MIN,
            max: i64::MAX,
        },
    ),
    key("remote_base", Kind::Text),
    key("enabled", Kind::Bool),
    key("tools", Kind::TextList),
    key("toolchain", TOOLCHAIN),
    key("cc_toolchain", CC_TOOLCHAIN),
    key("max_disk_gb", Kind::Positive),
    key("mirror_paths", Kind::AutoBool),
    key("compress", Kind::AutoBool),
    key("agent", Kind::Bool),
];

/// Worker keys without which a worker entry is an error.
pub const WORKER_REQUIRED: &[&str] = &["id", "host"];

/// The table sections, in the order they are documented.
pub const SECTIONS: &[(&str, &[Key])] = &[
    ("general", GENERAL),
    ("circuit", CIRCUIT),
    ("ssh", SSH),
    ("daemon", DAEMON),
    ("transfer", TRANSFER),
    ("env", ENV),
    ("cost", COST),
    ("team", TEAM),
];

/// Name of the worker list at the top level.
pub const WORKERS: &str = "workers";

/// The keys of a table section, if it is one.
pub fn section(name: &str) -> Option<&'static [Key]> {
    SECTIONS
        .iter()
        .find(|(section, _)| *section == name)
        .map(|(_, keys)| *keys)
}

/// A key of a list of keys, by name.
pub fn find(keys: &'static [Key], name: &str) -> Option<&'static Key> {
    keys.iter().find(|k| k.name == name)
}

/// `a, b, c`: the valid key names, for unknown-key messages.
pub fn names(keys: &[Key]) -> String {
    keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// `general, circuit, ..., workers`: the valid top-level names.
pub fn section_names() -> String {
    let mut names: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    names.push(WORKERS);
    names.join(", ")
}

/// A problem with one value; `element` names the offending array element.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub element: Option<usize>,
    pub message: String,
}

impl Problem {
    fn whole(message: impl Into<String>) -> Self {
        Problem {
            element: None,
            message: message.into(),
        }
    }
}

/// "a string", "an integer", ...: how a TOML value is named in messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// What the kind expects, phrased to follow "expected".
pub fn expectation(kind: Kind) -> String {
    match kind {
        Kind::Bool => "a boolean (true or false)".to_string(),
        Kind::Int { .. } => "an integer".to_string(),
        Kind::Fraction => "a number".to_string(),
        Kind::Choice(options) => format!("one of {}", quoted_list(options)),
        Kind::Text | Kind::Id | Kind::Address => "a string".to_string(),
        Kind::RedisUrl => "a redis:// or rediss:// URL".to_string(),
        Kind::TextList => "an array of strings".to_string(),
        Kind::Positive => "a number greater than 0".to_string(),
        Kind::AutoBool => "\"auto\", true or false".to_string(),
    }
}

fn quoted_list(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check a value against its kind and convert it for the typed config.
pub fn check(kind: Kind, value: &Value) -> Result<Json, Problem> {
    let wrong_type = || {
        Problem::whole(format!(
            "expected {}, got {}",
            expectation(kind),
            describe(value)
        ))
    };
    match (kind, value) {
        (Kind::Bool, Value::Boolean(b)) => Ok(Json::Bool(*b.value())),
        (Kind::Int { min, max }, Value::Integer(i)) => check_int(*i.value(), min, max),
        (Kind::Fraction, Value::Float(f)) => check_fraction(*f.value()),
        (Kind::Fraction, Value::Integer(i)) => check_fraction(*i.value() as f64),
        (Kind::Choice(options), Value::String(s)) => check_choice(s.value(), options),
        (Kind::Text, Value::String(s)) => check_text(s.value()),
        (Kind::Id, Value::String(s)) => check_id(s.value()),
        (Kind::Address, Value::String(s)) => check_address(s.value()),
        (Kind::TextList, Value::Array(items)) => check_text_list(items),
        (Kind::Positive, Value::Float(f)) => check_positive(*f.value()),
        (Kind::Positive, Value::Integer(i)) => check_positive(*i.value() as f64),
        (Kind::AutoBool, Value::Boolean(b)) => Ok(Json::Bool(*b.value())),
        (Kind::AutoBool, Value::String(s)) => check_choice(s.value(), &["auto"]),
        (Kind::RedisUrl, Value::String(s)) => crate::team::url::check(s.value())
            .map(|_| Json::from(s.value().as_str()))
            .map_err(Problem::whole),
        _ => Err(wrong_type()),
    }
}

fn check_int(i: i64, min: i64, max: i64) -> Result<Json, Problem> {
    if i < min {
        return Err(Problem::whole(format!("must be at least {min}, got {i}")));
    }
    if i > max {
        return Err(Problem::whole(format!("must be at most {max}, got {i}")));
    }
    Ok(Json::from(i))
}

fn check_fraction(f: f64) -> Result<Json, Problem> {
    // NaN fails both comparisons, so test for the valid range rather than the invalid one.
    if f > 0.0 && f <= 1.0 {
        return Ok(Json::from(f));
    }
    let problem = if f > 1.0 {
        format!("must be between 0 and 1, got {f}")
    } else {
        format!("must be greater than 0 and at most 1, got {f}")
    };
    Err(Problem::whole(problem))
}

fn check_positive(f: f64) -> Result<Json, Problem> {
    if f > 0.0 && f.is_finite() {
        return Ok(Json::from(f));
    }
    Err(Problem::whole(format!("must be greater than 0, got {f}")))
}

fn check_choice(s: &str, options: &[&str]) -> Result<Json, Problem> {
    if options.contains(&s) {
        return Ok(Json::from(s));
    }
    Err(Problem::whole(format!(
        "expected one of {}, got \"{}\"",
        quoted_list(options),
        s.escape_default()
    )))
}

fn check_text(s: &str) -> Result<Json, Problem> {
    if s.trim().is_empty() {
        return Err(Problem::whole("must not be empty"));
    }
    Ok(Json::from(s))
}

/// Whether a string is a valid worker id.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_id(s: &str) -> Result<Json, Problem> {
    if is_valid_id(s) {
        return Ok(Json::from(s));
    }
    Err(Problem::whole(format!(
        "must be letters, digits, '.', '_' or '-' (at least one), got \"{}\"",
        s.escape_default()
    )))
}

fn check_address(s: &str) -> Result<Json, Problem> {
    match s.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(Json::from(s)),
        Err(_) => Err(Problem::whole(format!(
            "expected an address like \"127.0.0.1:9464\", got \"{}\"",
            s.escape_default()
        ))),
    }
}

fn check_text_list(items: &toml_edit::Array) -> Result<Json, Problem> {
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => out.push(Json::from(s.value().as_str())),
            other => {
                return Err(Problem {
                    element: Some(index),
                    message: format!("expected a string, got {}", describe(other)),
                })
            }
        }
    }
    Ok(Json::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        text.parse().expect("test value parses")
    }

    #[test]
    fn integers_respect_bounds() {
        let kind = Kind::Int { min: 1, max: 10 };
        assert_eq!(check(kind, &value("5")), Ok(Json::from(5)));
        let low = check(kind, &value("0")).unwrap_err();
        assert_eq!(low.message, "must be at least 1, got 0");
        let high = check(kind, &value("11")).unwrap_err();
        assert_eq!(high.message, "must be at most 10, got 11");
    }

    #[test]
    fn fraction_accepts_one_and_rejects_zero_and_above_one() {
        assert!(check(Kind::Fraction, &value("1")).is_ok());
        assert!(check(Kind::Fraction, &value("0.5")).is_ok());
        assert!(check(Kind::Fraction, &value("0")).is_err());
        assert!(check(Kind::Fraction, &value("nan")).is_err());
        let above = check(Kind::Fraction, &value("1.5")).unwrap_err();
        assert_eq!(above.message, "must be between 0 and 1, got 1.5");
    }

    #[test]
    fn wrong_type_names_both_types() {
        let p = check(Kind::Int { min: 0, max: 1 }, &value("\"x\"")).unwrap_err();
        assert_eq!(p.message, "expected an integer, got a string");
    }

    #[test]
    fn choice_lists_options() {
        let p = check(Kind::Choice(&["local", "never"]), &value("\"sometimes\"")).unwrap_err();
        assert_eq!(
            p.message,
            "expected one of \"local\", \"never\", got \"sometimes\""
        );
    }

    #[test]
    fn text_list_names_the_bad_element() {
        let p = check(Kind::TextList, &value("[\"a\", 3]")).unwrap_err();
        assert_eq!(p.element, Some(1));
    }

    #[test]
    fn ids_are_restricted() {
        assert!(is_valid_id("w1.example_b-2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("w 1"));
        assert!(!is_valid_id("w/1"));
    }

    fn json_keys(value: &Json) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn schema_keys(keys: &[Key]) -> Vec<String> {
        let mut names: Vec<String> = keys.iter().map(|k| k.name.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn schema_matches_the_config_types_exactly() {
        let config = serde_json::to_value(crate::config::Config::default()).unwrap();
        for (section, keys) in SECTIONS {
            assert_eq!(
                json_keys(&config[section]),
                schema_keys(keys),
                "[{section}]"
            );
        }
        let mut top = json_keys(&config);
        top.retain(|k| k != WORKERS);
        let mut sections: Vec<String> = SECTIONS.iter().map(|(s, _)| s.to_string()).collect();
        sections.sort();
        assert_eq!(top, sections);
        let worker = serde_json::to_value(crate::config::WorkerConfig::new("a", "b")).unwrap();
        assert_eq!(json_keys(&worker), schema_keys(WORKER));
    }

    #[test]
    fn redis_urls_are_checked_without_echoing_the_password() {
        assert!(check(Kind::RedisUrl, &value("\"redis://r.example:6379/0\"")).is_ok());
        assert!(check(Kind::RedisUrl, &value("\"rediss://:pw@r.example\"")).is_ok());
        let bad = check(Kind::RedisUrl, &value("\"http://:secret@r.example\"")).unwrap_err();
        assert!(!bad.message.contains("secret"), "{}", bad.message);
    }

    #[test]
    fn addresses_must_parse() {
        assert!(check(Kind::Address, &value("\"127.0.0.1:9464\"")).is_ok());
        assert!(check(Kind::Address, &value("\"localhost\"")).is_err());
    }
}
