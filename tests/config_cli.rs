//! `rch config` end to end: the built binary with an isolated home, XDG
//! directories and working directory, plus property tests of the parser.

mod support;

use support::formats;
use support::sandbox::Sandbox;

use proptest::prelude::*;
use std::path::Path;
use std::process::Output;

const STARTER: &str = include_str!("../config/config.toml");
const PROJECT_EXAMPLE: &str = include_str!("../config/project.toml");

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert a config error: exit 78 and exactly one stderr line with this prefix.
fn assert_config_error(out: &Output, expected_prefix: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(78), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    let wanted = format!("rch: config error: {expected_prefix}");
    assert!(err.starts_with(&wanted), "wanted {wanted:?}\n got {err:?}");
    formats::assert_printed(err.trim_end());
}

#[test]
fn show_origin_names_each_layer() {
    let sb = Sandbox::new();
    sb.write(
        &sb.user_file(),
        "[general]\nbuild_timeout_secs = 5\nfallback = \"never\"\n\n[circuit]\nfailure_threshold = 5\n\n[[workers]]\nid = \"w1\"\nhost = \"h1\"\n",
    );
    sb.write(&sb.project_file(), "[general]\nbuild_timeout_secs = 10\n");
    let out = sb.rch(&["config", "show", "--origin"], &[("RCH_DISABLE", "1")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let user = sb.user_file().display().to_string();
    let project = sb.project_file().display().to_string();
    for line in [
        format!("failure_threshold = 5  # {user}"),
        format!("build_timeout_secs = 10  # {project}"),
        format!("fallback = \"never\"  # {user}"),
        "enabled = false  # env RCH_DISABLE".to_string(),
        "success_threshold = 2  # default".to_string(),
        format!("[[workers]]  # {user}"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

#[test]
fn lab_file_is_a_layer_unless_rch_config_is_set() {
    let sb = Sandbox::new();
    sb.write(&sb.user_file(), "[[workers]]\nid = \"w1\"\nhost = \"h1\"\n");
    sb.write(
        &sb.lab_file(),
        "[[workers]]\nid = \"lab1\"\nhost = \"127.0.0.1\"\nport = 2201\n",
    );
    let out = sb.rch(&["config", "show", "--origin"], &[]);
    let text = stdout(&out);
    let lab_line = format!("[[workers]]  # lab {}", sb.lab_file().display());
    assert!(text.contains(&lab_line), "{text}");
    assert!(text.contains("id = \"lab1\""), "{text}");

    let path_out = stdout(&sb.rch(&["config", "path"], &[]));
    assert!(path_out.contains(&format!("lab: {}", sb.lab_file().display())));

    let named = sb.root().join("named.toml");
    sb.write(&named, "[[workers]]\nid = \"n1\"\nhost = \"hn\"\n");
    let named_str = named.to_str().expect("utf-8 path");
    let out = sb.rch(&["config", "show"], &[("RCH_CONFIG", named_str)]);
    let text = stdout(&out);
    assert!(
        text.contains("id = \"n1\"") && !text.contains("lab1"),
        "{text}"
    );
}

#[test]
fn flags_and_env_show_as_origins_in_json() {
    let sb = Sandbox::new();
    let out = sb.rch(
        &["config", "show", "--json", "--origin"],
        &[("RCH_REQUIRE_REMOTE", "true"), ("RCH_WORKER", "w2")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value["config"]["general"]["fallback"], "never");
    assert_eq!(
        value["origins"]["general.fallback"],
        "env RCH_REQUIRE_REMOTE"
    );
    assert_eq!(value["origins"]["requested_worker"], "env RCH_WORKER");
    assert_eq!(value["origins"]["circuit.window_secs"], "default");
}

#[test]
fn typo_in_user_file_names_file_line_and_key() {
    let sb = Sandbox::new();
    sb.write(
        &sb.user_file(),
        "[general]\nenabled = true\n\n[circuit]\nfailure_threshold = 3\n\nfailur_threshold = 5\n",
    );
    let out = sb.rch(&["config", "validate"], &[]);
    let prefix = format!(
        "{}:7: circuit.failur_threshold: unknown key (valid keys in [circuit]: failure_threshold, error_rate_threshold",
        sb.user_file().display()
    );
    assert_config_error(&out, &prefix);
}

#[test]
fn typo_in_project_file_names_the_project_file() {
    let sb = Sandbox::new();
    sb.write(&sb.user_file(), "[general]\nenabled = true\n");
    sb.write(&sb.project_file(), "# project\n[transfer]\nexclud = []\n");
    let out = sb.rch(&["config", "show"], &[]);
    let prefix = format!(
        "{}:3: transfer.exclud: unknown key",
        sb.project_file().display()
    );
    assert_config_error(&out, &prefix);
}

#[test]
fn bad_values_name_their_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[circuit]\nwindow_secs = 5\nerror_rate_threshold = 1.5\n",
            "3: circuit.error_rate_threshold: must be between 0 and 1, got 1.5",
        ),
        (
            "[[workers]]\nid = \"w1\"\nhost = \"a\"\n\n[[workers]]\nid = \"w1\"\nhost = \"b\"\n",
            "6: workers[1].id: duplicate worker id \"w1\"",
        ),
        (
            "[[workers]]\nid = \"w1\"\nhost = \"a\"\nslots = 0\n",
            "4: workers[0].slots: must be at least 1, got 0",
        ),
        (
            "\n\n[general]\nfallback = \"sometimes\"\n",
            "4: general.fallback: expected one of \"local\", \"never\", got \"sometimes\"",
        ),
        (
            "[circuit]\nfailure_threshold = \"three\"\n",
            "2: circuit.failure_threshold: expected an integer, got a string",
        ),
        (
            "[ssh]\nstrict_host_key_checking = \"no\"\n",
            "2: ssh.strict_host_key_checking: expected one of \"yes\", \"accept-new\", got \"no\"",
        ),
        (
            "[[workers]]\nid = \"w1\"\nhost = \"a\"\nport = 70000\n",
            "4: workers[0].port: must be at most 65535, got 70000",
        ),
        (
            "[[workers]]\nid = \"w 1\"\nhost = \"a\"\n",
            "2: workers[0].id: must be letters, digits",
        ),
        (
            "[[workers]]\nid = \"w1\"\nhost = \"a\"\ncompress = \"zstd\"\n",
            "4: workers[0].compress: expected",
        ),
        ("[general]\n[servers]\n", "2: servers: unknown section"),
        (
            "[daemon]\nmetrics_listen = \"everywhere\"\n",
            "2: daemon.metrics_listen: expected an address",
        ),
        ("[general]\nenabled = yes\n", "2: invalid TOML: "),
    ];
    let sb = Sandbox::new();
    for (text, expected) in cases {
        sb.write(&sb.user_file(), text);
        let out = sb.rch(&["config", "validate"], &[]);
        assert_config_error(&out, &format!("{}:{expected}", sb.user_file().display()));
    }
}

#[test]
fn bad_environment_value_names_the_variable() {
    let sb = Sandbox::new();
    let out = sb.rch(&["config", "show"], &[("RCH_DISABLE", "maybe")]);
    assert_config_error(&out, "env RCH_DISABLE: ");
}

#[test]
fn rch_config_naming_a_missing_file_is_an_error() {
    let sb = Sandbox::new();
    let missing = sb.root().join("nope.toml");
    let out = sb.rch(
        &["config", "validate"],
        &[("RCH_CONFIG", missing.to_str().expect("utf-8"))],
    );
    assert_config_error(&out, &format!("{}: not found", missing.display()));
}

#[test]
fn init_writes_once_and_never_clobbers() {
    let sb = Sandbox::new();
    let out = sb.rch(&["config", "init"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(sb.user_file()).expect("written"),
        STARTER
    );

    sb.write(&sb.user_file(), "# mine\n");
    let out = sb.rch(&["config", "init"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("exists, not touched"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(sb.user_file()).expect("kept"),
        "# mine\n"
    );
}

#[test]
fn init_honours_rch_config_and_creates_directories() {
    let sb = Sandbox::new();
    let target = sb.root().join("a/b/rch.toml");
    let out = sb.rch(
        &["config", "init"],
        &[("RCH_CONFIG", target.to_str().expect("utf-8"))],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(target.is_file());
}

#[test]
fn shipped_example_configs_validate() {
    let sb = Sandbox::new();
    sb.write(&sb.user_file(), STARTER);
    sb.write(&sb.project_file(), PROJECT_EXAMPLE);
    let out = sb.rch(&["config", "validate"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "ok: {}, {}",
            sb.user_file().display(),
            sb.project_file().display()
        )
    );
}

#[test]
fn validate_without_files_reports_defaults() {
    let sb = Sandbox::new();
    let out = sb.rch(&["config", "validate"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("ok: no config files"));
}

#[test]
fn path_lists_user_and_project_files() {
    let sb = Sandbox::new();
    sb.write(&sb.project_file(), "");
    let text = stdout(&sb.rch(&["config", "path"], &[]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("user: {} (not present)", sb.user_file().display()),
            format!("project: {}", sb.project_file().display()),
        ]
    );
}

#[test]
fn starter_config_left_untouched_is_all_defaults() {
    let config = rch::config::parse_str(STARTER, Path::new("config.toml")).expect("valid");
    assert_eq!(config, rch::config::Config::default());
    let project =
        rch::config::parse_str(PROJECT_EXAMPLE, Path::new("project.toml")).expect("valid");
    assert_eq!(project.general.build_timeout_secs, 10800);
}

/// An error from a file must start `<file>:<line>: `.
fn carries_a_line(message: &str, file: &str) -> bool {
    let Some(rest) = message.strip_prefix(file).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    !digits.is_empty() && rest[digits.len()..].starts_with(": ") && !message.contains('\n')
}

/// Small TOML documents mixing valid and invalid sections, keys and values.
fn toml_document() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "[general]",
        "[circuit]",
        "[ssh]",
        "[daemon]",
        "[transfer]",
        "[[workers]]",
        "[bogus]",
        "[general.sub]",
        "",
    ]);
    let key = prop::sample::select(vec![
        "enabled",
        "fallback",
        "build_timeout_secs",
        "failure_threshold",
        "error_rate_threshold",
        "window_secs",
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
        "slots",
        "priority",
        "workers",
        "general",
        "\"quoted key\"",
        "a.b",
    ]);
    let value = prop::sample::select(vec![
        "true",
        "0",
        "1",
        "-1",
        "70000",
        "9223372036854775807",
        "0.5",
        "1.5",
        "nan",
        "inf",
        "\"w1\"",
        "\"\"",
        "\"local\"",
        "\"accept-new\"",
        "\"127.0.0.1:9464\"",
        "[]",
        "[\"a\", 1]",
        "{ id = \"x\" }",
        "1979-05-27",
        "[{ id = \"a\", host = \"b\" }]",
    ]);
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}"));
    let block = (section, prop::collection::vec(line, 0..4))
        .prop_map(|(header, lines)| format!("{header}\n{}\n", lines.join("\n")));
    prop::collection::vec(block, 0..5).prop_map(|blocks| blocks.concat())
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_errors_carry_a_line(text in "\\PC{0,200}") {
        if let Err(e) = rch::config::parse_str(&text, Path::new("/f.toml")) {
            prop_assert!(carries_a_line(&e.message, "/f.toml"), "{}", e.message);
        }
    }

    #[test]
    fn small_documents_validate_or_fail_with_a_line(text in toml_document()) {
        match rch::config::parse_str(&text, Path::new("/f.toml")) {
            Err(e) => prop_assert!(carries_a_line(&e.message, "/f.toml"), "{}\n{}", e.message, text),
            Ok(config) => {
                let c = &config.circuit;
                prop_assert!(c.failure_threshold >= 1 && c.half_open_max_probes >= 1);
                prop_assert!(c.error_rate_threshold > 0.0 && c.error_rate_threshold <= 1.0);
                prop_assert!(config.ssh.connect_timeout_secs >= 1);
                for w in &config.workers {
                    prop_assert!(w.slots >= 1 && w.port != Some(0) && !w.id.is_empty());
                }
            }
        }
    }
}

#[test]
fn validate_checks_that_named_key_and_ssh_config_files_can_be_read() {
    let sb = Sandbox::new();
    let key = sb.home().join(".ssh/id_build");
    sb.write(&key, "not really a key\n");
    sb.write(
        &sb.user_file(),
        "[[workers]]\nid = \"w1\"\nhost = \"h1\"\nidentity_file = \"~/.ssh/id_build\"\n\n[[workers]]\nid = \"w2\"\nhost = \"h2\"\nidentity_file = \"~/.ssh/id_gone\"\n",
    );
    let out = sb.rch(&["config", "validate"], &[]);
    let user = sb.user_file().display().to_string();
    assert_config_error(
        &out,
        &format!("{user}:9: workers[1].identity_file: cannot read "),
    );
    let err = stderr(&out);
    assert!(
        err.contains("id_gone") && err.contains("No such file") && err.contains("fix the path"),
        "{err}"
    );

    sb.write(
        &sb.user_file(),
        "[ssh]\nconfig_file = \"~/.ssh/other_config\"\n\n[[workers]]\nid = \"w1\"\nhost = \"h1\"\nidentity_file = \"~/.ssh/id_build\"\n",
    );
    let out = sb.rch(&["config", "validate"], &[]);
    assert_config_error(&out, &format!("{user}:2: ssh.config_file: cannot read "));

    sb.write(&sb.home().join(".ssh/other_config"), "Host h1\n");
    let out = sb.rch(&["config", "validate"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
