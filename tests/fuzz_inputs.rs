//! Fuzzing, by proptest, of everything rch reads from users: config files
//! (raw bytes, and arbitrary but valid TOML), the layered load with its
//! environment variables and project file, and the command classifier (argv
//! and shell lines). Nothing may panic; config errors are one line and name
//! `file:line` whenever the text is valid TOML.
//!
//! tests/config_cli.rs already fuzzes printable text and documents built from
//! known keys; this file adds what those leave out.

use proptest::prelude::*;
use rch::classify::{classify, classify_shell, split_leading_cd, Decision};
use rch::config::{load_with, parse_str, Sources};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

const FILE: &str = "/etc/rch/fuzz.toml";

/// One line: no line break of any kind.
fn is_one_line(message: &str) -> bool {
    !message.contains(['\n', '\r']) && !message.trim().is_empty()
}

/// `<file>:<line>: ...` on one line.
fn names_file_and_line(message: &str, file: &str) -> bool {
    let Some(rest) = message.strip_prefix(file).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && rest[digits..].starts_with(": ")
}

// ---------------------------------------------------------------- config text

/// Section names: the real ones, near misses, and arbitrary text.
fn section_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["general", "circuit", "ssh", "daemon", "transfer"])
            .prop_map(str::to_string),
        "[a-z_]{1,12}",
        "\\PC{1,8}",
        any::<String>(),
    ]
}

/// Key names: the real ones, and arbitrary text (control characters too).
fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "enabled",
            "fallback",
            "build_timeout_secs",
            "failure_threshold",
            "error_rate_threshold",
            "window_secs",
            "window_min_samples",
            "open_cooldown_secs",
            "success_threshold",
            "half_open_max_probes",
            "connect_timeout_secs",
            "strict_host_key_checking",
            "config_file",
            "queue_timeout_secs",
            "metrics_listen",
            "exclude",
            "id",
            "host",
            "port",
            "user",
            "identity_file",
            "slots",
            "priority",
            "remote_base",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

/// Arbitrary TOML values, nested a little.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(65536), 0i64..100]
            .prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        any::<String>().prop_map(toml::Value::String),
        prop::sample::select(vec!["local", "never", "yes", "accept-new", "w1", "~/x", ""])
            .prop_map(|s| toml::Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(key_name(), inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A whole document: tables of keys, top-level keys, and `[[workers]]`.
fn toml_document() -> impl Strategy<Value = String> {
    let table = || prop::collection::btree_map(key_name(), toml_value(), 0..5);
    let sections = prop::collection::btree_map(section_name(), table(), 0..4);
    let workers = prop::collection::vec(table(), 0..3);
    let top = prop::collection::btree_map(key_name(), toml_value(), 0..2);
    (sections, workers, top).prop_map(|(sections, workers, top)| {
        let mut doc = toml::map::Map::new();
        for (k, v) in top {
            doc.insert(k, v);
        }
        for (name, keys) in sections {
            doc.insert(name, toml::Value::Table(keys.into_iter().collect()));
        }
        if !workers.is_empty() {
            let entries = workers
                .into_iter()
                .map(|w| toml::Value::Table(w.into_iter().collect()))
                .collect();
            doc.insert("workers".into(), toml::Value::Array(entries));
        }
        toml::to_string(&toml::Value::Table(doc)).unwrap_or_default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn config_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = parse_str(&text, Path::new(FILE)) {
            prop_assert!(is_one_line(&e.message), "{:?}", e.message);
            prop_assert!(e.message.starts_with(FILE), "{:?}", e.message);
        }
    }

    #[test]
    fn config_parser_takes_toml_lookalikes(
        lines in prop::collection::vec(
            prop_oneof![
                "\\[{1,2}[a-z_. \"]{0,12}\\]{0,2}",
                "[a-z_\"']{0,12} ?= ?[-+0-9a-z_.\"'\\[\\]{}, ]{0,16}",
                "\\PC{0,20}",
            ],
            0..12,
        )
    ) {
        let text = lines.join("\n");
        if let Err(e) = parse_str(&text, Path::new(FILE)) {
            prop_assert!(is_one_line(&e.message), "{:?}\n{}", e.message, text);
            prop_assert!(names_file_and_line(&e.message, FILE), "{:?}\n{}", e.message, text);
        }
    }

    #[test]
    fn valid_toml_is_accepted_or_refused_at_a_line(text in toml_document()) {
        prop_assume!(text.parse::<toml::Table>().is_ok());
        match parse_str(&text, Path::new(FILE)) {
            Err(e) => {
                prop_assert!(is_one_line(&e.message), "{:?}\n{}", e.message, text);
                prop_assert!(names_file_and_line(&e.message, FILE), "{:?}\n{}", e.message, text);
            }
            Ok(config) => {
                prop_assert!(config.circuit.failure_threshold >= 1);
                prop_assert!(config.ssh.connect_timeout_secs >= 1);
                for w in &config.workers {
                    prop_assert!(w.slots >= 1 && !w.id.is_empty() && !w.host.is_empty());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- layered load

fn rch_variable() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "RCH_DISABLE",
            "RCH_QUIET",
            "RCH_REQUIRE_REMOTE",
            "RCH_WORKER",
            "RCH_LOG",
            "RCH_SOCKET",
        ])
        .prop_map(str::to_string),
        "RCH_[A-Z_]{1,10}",
    ]
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["1", "0", "true", "no", "on", "", "w1", "w9", "debug"])
            .prop_map(str::to_string),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn layered_load_takes_any_environment_and_project_file(
        env in prop::collection::btree_map(rch_variable(), env_value(), 0..5),
        user in toml_document(),
        project in toml_document(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let user_file = dir.path().join("config.toml");
        std::fs::write(&user_file, &user).unwrap();
        let project_dir = dir.path().join("project");
        std::fs::create_dir_all(project_dir.join(".rch")).unwrap();
        std::fs::write(project_dir.join(".rch/config.toml"), &project).unwrap();
        let mut env: BTreeMap<String, String> = env;
        env.remove("RCH_CONFIG");
        let sources = Sources {
            user_file,
            user_file_required: true,
            lab_file: None,
            cwd: project_dir,
            env,
        };
        if let Err(e) = load_with(&sources) {
            prop_assert!(is_one_line(&e.message), "{:?}", e.message);
        }
    }
}

// ---------------------------------------------------------------- classifier

fn os_word() -> impl Strategy<Value = OsString> {
    prop_oneof![
        prop::sample::select(vec![
            "cargo",
            "build",
            "test",
            "check",
            "clippy",
            "run",
            "make",
            "cc",
            "gcc",
            "clang",
            "cmake",
            "ninja",
            "--release",
            "-p",
            "-j4",
            "--",
            "+nightly",
            "-C",
            "-o",
            "--target-dir",
            "--manifest-path",
            "-c",
            "a.c",
            "/usr/bin/cargo",
        ])
        .prop_map(OsString::from),
        any::<String>().prop_map(OsString::from),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(OsString::from_vec),
    ]
}

fn check_decision(decision: &Decision) -> Result<(), TestCaseError> {
    if let Decision::Local(reason) = decision {
        prop_assert!(is_one_line(reason), "{reason:?}");
    }
    Ok(())
}

/// Words a shell would take literally once quoted (no NUL, which no argv holds).
fn plain_word() -> impl Strategy<Value = String> {
    prop_oneof!["[-a-zA-Z0-9_./=+,:@%]{1,12}", "[ -~]{0,12}", "\\PC{0,8}",]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn classify_takes_any_argv(argv in prop::collection::vec(os_word(), 0..8)) {
        let decision = classify(&argv);
        check_decision(&decision)?;
        if decision.is_offload() {
            prop_assert!(argv.iter().all(|a| a.to_str().is_some()), "{argv:?}");
        }
    }

    #[test]
    fn classify_shell_takes_any_line(line in prop_oneof![any::<String>(), "[ -~\\n]{0,60}"]) {
        check_decision(&classify_shell(&line))?;
        let (dir, rest) = split_leading_cd(&line);
        if dir.is_some() {
            prop_assert!(line.ends_with(rest), "{line:?} -> {rest:?}");
        } else {
            prop_assert_eq!(rest, line.as_str());
        }
    }

    /// A command quoted for the shell classifies as its argv does.
    #[test]
    fn quoting_an_argv_for_the_shell_keeps_its_classification(
        head in prop::sample::select(vec![
            vec!["cargo", "build"],
            vec!["cargo", "test"],
            vec!["cargo", "check"],
            vec!["make"],
            vec!["cc", "-c"],
        ]),
        tail in prop::collection::vec(plain_word(), 0..5),
    ) {
        let words: Vec<String> = head.iter().map(|s| s.to_string()).chain(tail).collect();
        let line = shlex::try_join(words.iter().map(String::as_str)).unwrap();
        let argv: Vec<OsString> = words.iter().map(OsString::from).collect();
        prop_assert_eq!(classify_shell(&line), classify(&argv), "line {:?}", line);
    }
}

#[test]
fn control_characters_in_a_command_stay_on_one_line() {
    let argv = [OsString::from("ls\nx\r")];
    assert_eq!(
        classify(&argv),
        Decision::Local("ls\\nx\\r is not a build command".into())
    );
}
