//! What a cargo build read from its environment, and whether the worker saw
//! the same: rustc's dep-info files record each variable a crate read at
//! compile time (`# env-dep:NAME=VALUE`, or `# env-dep:NAME` when unset) and
//! build scripts name theirs (`cargo:rerun-if-env-changed=NAME`). A variable
//! the build read that differs from the client's is never silently absent.
//! Pure: the lines found on the worker, the client's environment and the
//! plan in, the differences out.

use crate::envrules::{self, EnvConfig, EnvPlan, Withheld};
use std::collections::BTreeMap;

/// The output directory of a cargo command, relative to the project:
/// `target/[<triple>/]<profile dir>`. Only this build's files count: another
/// profile's were built with another environment.
pub fn output_dir(argv: &[String], target: Option<&str>) -> String {
    let mut profile = if argv.get(1).map(String::as_str) == Some("bench") {
        "release".to_string()
    } else {
        "debug".to_string()
    };
    let mut words = argv.iter().map(String::as_str);
    while let Some(word) = words.next() {
        match word {
            "--" => break,
            "--release" | "-r" => profile = "release".into(),
            "--profile" => {
                if let Some(p) = words.next() {
                    profile = p.to_string();
                }
            }
            _ => {
                if let Some(p) = word.strip_prefix("--profile=") {
                    profile = p.to_string();
                }
            }
        }
    }
    if matches!(profile.as_str(), "dev" | "test") {
        profile = "debug".into();
    } else if profile == "bench" {
        profile = "release".into();
    }
    match target {
        Some(t) => format!("target/{t}/{profile}"),
        None => format!("target/{profile}"),
    }
}

/// A variable the build read: with the value the worker had, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub name: String,
    /// `Some(value)` from dep-info (`None` inside: unset there); `None` when
    /// only the name is known (build scripts).
    pub seen: Option<Option<String>>,
}

/// Reads the dep-info (`# env-dep:`) and build-script output
/// (`rerun-if-env-changed=`) lines the run script reported after a cargo
/// build; one entry per name, dep-info first.
pub fn parse(text: &str) -> Vec<Read> {
    let mut reads: BTreeMap<String, Option<Option<String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(dep) = line.strip_prefix("# env-dep:") {
            let (name, value) = match dep.split_once('=') {
                Some((n, v)) => (n, Some(unescape(v))),
                None => (dep, None),
            };
            reads.insert(name.to_string(), Some(value));
        } else if let Some((_, name)) = line.split_once("rerun-if-env-changed=") {
            reads.entry(name.trim().to_string()).or_insert(None);
        }
    }
    reads
        .into_iter()
        .map(|(name, seen)| Read { name, seen })
        .collect()
}

/// rustc escapes `\` and newlines in dep-info values.
fn unescape(value: &str) -> String {
    value.replace("\\n", "\n").replace("\\\\", "\\")
}

/// A variable the build read that the worker did not have as the client does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    /// Why it was not sent, if it was withheld.
    pub withheld: Option<Withheld>,
}

impl Mismatch {
    /// Whether sending it on a re-run is allowed (not secret, not withheld by config).
    pub fn may_forward(&self) -> bool {
        !matches!(
            self.withheld,
            Some(Withheld::Secret | Withheld::Config | Withheld::Rch | Withheld::NotText)
        )
    }
}

/// Variables cargo itself sets for each compilation (the package's
/// metadata, its paths, a build script's output dir): a crate
/// reading them with `env!` sees cargo's value on any machine, never the
/// client's environment, so they are no difference to report.
const SET_BY_CARGO: &[&str] = &[
    "CARGO",
    "CARGO_PKG_*",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_BIN_EXE_*",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "CARGO_CFG_*",
    "CARGO_FEATURE_*",
    "OUT_DIR",
];

fn set_by_cargo(name: &str) -> bool {
    SET_BY_CARGO.iter().any(|p| envrules::matches(p, name))
}

/// The variables the build read that differ between the client (`local`)
/// and the worker. Machine-local names and the ones cargo sets itself are
/// left out: they differ by design.
pub fn mismatches(
    reads: &[Read],
    local: &dyn Fn(&str) -> Option<String>,
    plan: &EnvPlan,
    config: &EnvConfig,
) -> Vec<Mismatch> {
    let sent = |name: &str| plan.forwarded.iter().any(|(k, _)| k == name);
    reads
        .iter()
        .filter(|read| !set_by_cargo(&read.name))
        .filter_map(|read| {
            let why = envrules::decide(&read.name, config);
            if why == Some(Withheld::MachineLocal) {
                return None;
            }
            let here = local(&read.name);
            let differs = match &read.seen {
                Some(there) => *there != here,
                None => here.is_some() && !sent(&read.name),
            };
            differs.then(|| Mismatch {
                name: read.name.clone(),
                withheld: why,
            })
        })
        .collect()
}

/// The one line that names the variables and the key that forwards them.
pub fn line(mismatches: &[Mismatch]) -> String {
    let names: Vec<String> = mismatches.iter().map(|m| m.name.clone()).collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "the build read {} which the worker did not get as set here (env.forward = [{}] sends it)",
        names.join(", "),
        quoted.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn output_dirs_follow_profile_and_target() {
        assert_eq!(output_dir(&words("cargo build"), None), "target/debug");
        assert_eq!(
            output_dir(&words("cargo build --release"), None),
            "target/release"
        );
        assert_eq!(output_dir(&words("cargo bench"), None), "target/release");
        assert_eq!(
            output_dir(&words("cargo test --profile=ci"), None),
            "target/ci"
        );
        assert_eq!(
            output_dir(
                &words("cargo build --profile dev"),
                Some("wasm32-unknown-unknown")
            ),
            "target/wasm32-unknown-unknown/debug"
        );
        assert_eq!(
            output_dir(&words("cargo run -- --release"), None),
            "target/debug"
        );
    }

    #[test]
    fn dep_info_and_build_script_lines_are_read() {
        let reads = parse(
            "# env-dep:BUILD_STAMP=42\n# env-dep:UNSET_ONE\n# env-dep:CARGO_PKG_NAME=app\ncargo:rerun-if-env-changed=CC\ncargo::rerun-if-env-changed=BUILD_STAMP\n",
        );
        assert_eq!(
            reads,
            vec![
                Read {
                    name: "BUILD_STAMP".into(),
                    seen: Some(Some("42".into()))
                },
                Read {
                    name: "CARGO_PKG_NAME".into(),
                    seen: Some(Some("app".into()))
                },
                Read {
                    name: "CC".into(),
                    seen: None
                },
                Read {
                    name: "UNSET_ONE".into(),
                    seen: Some(None)
                },
            ]
        );
    }

    #[test]
    fn differences_are_found_and_machine_local_ones_ignored() {
        let reads = parse("# env-dep:BUILD_STAMP\n# env-dep:HOME=/w\n# env-dep:SAME=1\n# env-dep:API_TOKEN\ncargo:rerun-if-env-changed=CC\n");
        let local = |n: &str| match n {
            "BUILD_STAMP" => Some("42".to_string()),
            "HOME" => Some("/home/me".to_string()),
            "SAME" => Some("1".to_string()),
            "API_TOKEN" => Some("x".to_string()),
            "CC" => Some("gcc".to_string()),
            _ => None,
        };
        let plan = EnvPlan {
            forwarded: vec![("CC".into(), "gcc".into()), ("SAME".into(), "1".into())],
            withheld: vec![],
        };
        let found = mismatches(&reads, &local, &plan, &EnvConfig::default());
        let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["API_TOKEN", "BUILD_STAMP"]);
        // What cargo sets for the crate is no difference, whatever is set here.
        let cargo_set = parse(
            "# env-dep:CARGO_PKG_VERSION_MAJOR=1\n# env-dep:OUT_DIR=/w/target/debug/build/x/out\n# env-dep:CARGO_MANIFEST_DIR=/w/x\n",
        );
        assert!(mismatches(&cargo_set, &local, &plan, &EnvConfig::default()).is_empty());
        assert!(!found[0].may_forward());
        assert!(found[1].may_forward());
        assert_eq!(
            line(&found[1..]),
            "the build read BUILD_STAMP which the worker did not get as set here (env.forward = [\"BUILD_STAMP\"] sends it)"
        );
    }
}
