//! Worker capabilities: which build tools a worker's login environment finds
//! and their versions, what a build needs of a worker, and whether a worker
//! fits. Pure: the probe's output and the client's own answers come in as
//! text, typed values come out; running the commands is the caller's job.
//!
//! Fleets are not uniform. A worker without `cargo`, or with another rustc
//! than the client's, must not get a cargo build: the first fails it, the
//! second silently builds with a different compiler. Selection asks [`fit`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The build tools a probe looks for, in the order it reports them.
pub const TOOLS: &[&str] = &[
    "cargo", "rustc", "cc", "c++", "make", "cmake", "ninja", "meson",
];

/// Which rustc a worker must have for a cargo build (`toolchain`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolchainMatch {
    /// The client's commit hash and host triple.
    #[default]
    Exact,
    /// The client's release (e.g. 1.95.0) and host triple.
    SameRelease,
    /// Any rustc.
    Any,
}

/// Which C compiler a worker must have for a C/C++ build (`cc_toolchain`).
/// The target machine (`cc -dumpmachine`) always has to match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CcMatch {
    /// Any version for the client's machine.
    #[default]
    Any,
    /// The client's version too (`cc -dumpfullversion`).
    Exact,
}

/// How strictly one worker's toolchains must match the client's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    pub toolchain: ToolchainMatch,
    pub cc_toolchain: CcMatch,
}

/// A rustc as `rustc -vV` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rustc {
    pub release: String,
    pub commit_hash: String,
    pub host: String,
}

impl Rustc {
    /// Reads the `release`, `commit-hash` and `host` lines of `rustc -vV`.
    pub fn parse_verbose_version(text: &str) -> Option<Rustc> {
        let mut rustc = Rustc::default();
        for line in text.lines() {
            rustc.set(line);
        }
        (!rustc.release.is_empty() && !rustc.host.is_empty()).then_some(rustc)
    }

    fn set(&mut self, line: &str) {
        let Some((key, value)) = line.split_once(':') else {
            return;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "release" => self.release = value,
            "commit-hash" => self.commit_hash = value,
            "host" => self.host = value,
            _ => {}
        }
    }

    fn short_hash(&self) -> &str {
        self.commit_hash.get(..9).unwrap_or(&self.commit_hash)
    }
}

impl fmt::Display for Rustc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.release)
    }
}

/// A C compiler as `cc -dumpfullversion` and `cc -dumpmachine` describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cc {
    pub version: String,
    pub machine: String,
}

/// What a probe learned about one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// The tools of [`TOOLS`] found, with the first line of their version.
    pub tools: BTreeMap<String, String>,
    /// The default rustc (`rustc -vV` in the home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rustc: Option<Rustc>,
    /// Installed rustup toolchains by name, for projects that pin one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub toolchains: BTreeMap<String, Rustc>,
    /// Targets the default toolchain has a standard library for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rust_targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc: Option<Cc>,
    /// `tools` is the probe's full answer. False when all that is known is
    /// what builds found missing since.
    pub probed: bool,
    /// Commands a build found missing since the last probe.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub missing: BTreeSet<String>,
}

impl Capabilities {
    /// Whether the worker is known to lack `tool`.
    pub fn lacks(&self, tool: &str) -> bool {
        self.missing.contains(tool)
            || (self.probed && TOOLS.contains(&tool) && !self.tools.contains_key(tool))
    }

    /// A build found `tool` missing: remember it until the next probe.
    pub fn note_missing(&mut self, tool: &str) {
        self.tools.remove(tool);
        self.missing.insert(tool.to_string());
    }

    /// The configured `tools` this worker lacks.
    pub fn unmet<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .map(String::as_str)
            .filter(|t| !self.tools.contains_key(*t) || self.missing.contains(*t))
            .collect()
    }

    /// One short line: `cargo 1.95.0, rustc 1.95.0 (x86_64-unknown-linux-gnu), cc 12.2.0, make`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for tool in TOOLS {
            let Some(version) = self.tools.get(*tool) else {
                continue;
            };
            parts.push(match (*tool, &self.rustc, &self.cc) {
                ("rustc", Some(r), _) => format!("rustc {} ({})", r.release, r.host),
                ("cc", _, Some(cc)) => format!("cc {} ({})", cc.version, cc.machine),
                _ => match short_version(version) {
                    Some(v) => format!("{tool} {v}"),
                    None => tool.to_string(),
                },
            });
        }
        if parts.is_empty() {
            "no build tools".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// The first word of a version line that starts with a digit (`cmake version
/// 3.25.1` → `3.25.1`).
fn short_version(line: &str) -> Option<&str> {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
}

/// The probe's capability part: one line per fact, tab-separated, on stdout.
/// Runs in the worker's login shell, after the remote base check, with the
/// PATH a build gets (the run script puts `~/.cargo/bin` first too).
pub const PROBE_SCRIPT: &str = r#"if [ -d "$HOME/.cargo/bin" ]; then PATH=$HOME/.cargo/bin:$PATH; export PATH; fi
for t in cargo rustc cc c++ make cmake ninja meson; do
  command -v "$t" >/dev/null 2>&1 || continue
  case $t in
    cc|c++) v=$("$t" -dumpfullversion 2>/dev/null || "$t" -dumpversion 2>/dev/null) ;;
    *) v=$("$t" --version 2>/dev/null | head -n 1) ;;
  esac
  printf 'tool\t%s\t%s\n' "$t" "$v"
done
if command -v rustc >/dev/null 2>&1; then
  rustc -vV 2>/dev/null | while IFS= read -r l; do printf 'rustc\t%s\n' "$l"; done
  sysroot=$(rustc --print sysroot 2>/dev/null)
  for d in "$sysroot"/lib/rustlib/*/lib; do
    [ -d "$d" ] || continue
    d=${d%/lib}; printf 'target\t%s\n' "${d##*/}"
  done
fi
for tc in "${RUSTUP_HOME:-$HOME/.rustup}"/toolchains/*; do
  [ -x "$tc/bin/rustc" ] || continue
  "$tc/bin/rustc" -vV 2>/dev/null | while IFS= read -r l; do printf 'toolchain\t%s\t%s\n' "${tc##*/}" "$l"; done
done
if command -v cc >/dev/null 2>&1; then
  printf 'cc\tmachine\t%s\n' "$(cc -dumpmachine 2>/dev/null)"
fi
exit 0"#;

/// Reads what [`PROBE_SCRIPT`] printed.
pub fn parse_probe(text: &str) -> Capabilities {
    let mut caps = Capabilities {
        probed: true,
        ..Capabilities::default()
    };
    let mut rustc = Rustc::default();
    let mut toolchains: BTreeMap<String, Rustc> = BTreeMap::new();
    let mut machine = String::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, '\t');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("tool"), Some(tool), version) if TOOLS.contains(&tool) => {
                caps.tools
                    .insert(tool.to_string(), version.unwrap_or("").trim().to_string());
            }
            (Some("rustc"), Some(l), None) => rustc.set(l),
            (Some("target"), Some(t), None) if !t.is_empty() => {
                caps.rust_targets.push(t.to_string())
            }
            (Some("toolchain"), Some(name), Some(l)) => {
                toolchains.entry(name.to_string()).or_default().set(l)
            }
            (Some("cc"), Some("machine"), Some(m)) => machine = m.trim().to_string(),
            _ => {}
        }
    }
    caps.rustc = (!rustc.release.is_empty()).then_some(rustc);
    toolchains.retain(|_, r| !r.release.is_empty());
    caps.toolchains = toolchains;
    if let Some(version) = caps.tools.get("cc") {
        caps.cc = Some(Cc {
            version: version.clone(),
            machine,
        });
    }
    caps
}

/// What one build needs of a worker, as the client found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Needs {
    /// The command's program as typed (`cargo`, `make`, `./build.sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The client's rustc for this project (cargo builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rustc: Option<Rustc>,
    /// The project pins its toolchain (`rust-toolchain.toml`): any installed
    /// toolchain of the worker may be the one, not only its default.
    #[serde(default)]
    pub pinned: bool,
    /// `--target` (or `CARGO_BUILD_TARGET`) of a cargo build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The client's C compiler (C and C++ builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc: Option<Cc>,
}

impl Needs {
    /// One short line: `cargo, rustc 1.95.0 (x86_64-unknown-linux-gnu)`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.tool.iter().cloned().collect();
        if let Some(r) = &self.rustc {
            parts.push(format!("rustc {} ({})", r.release, r.host));
        }
        if self.pinned {
            parts.push("pinned toolchain".into());
        }
        if let Some(t) = &self.target {
            parts.push(format!("target {t}"));
        }
        if let Some(cc) = &self.cc {
            parts.push(format!("cc {} ({})", cc.version, cc.machine));
        }
        parts.join(", ")
    }
}

/// Why a worker cannot build this command, capability-wise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "lacks", rename_all = "snake_case")]
pub enum Unfit {
    /// The command's program is not found there.
    Tool { tool: String },
    /// Its rustc is not the client's; `have` is its default rustc.
    Rustc { want: Box<Rustc>, have: Box<Rustc> },
    /// Its toolchain has no standard library for this `--target`.
    Target { target: String },
    /// Its C compiler builds for another machine.
    CcMachine { want: String, have: String },
    /// Its C compiler is another version (`cc_toolchain = "exact"`).
    CcVersion { want: String, have: String },
}

impl Unfit {
    /// What the worker has instead, after its id: `w1 has rustc 1.80.0`.
    pub fn describe(&self, worker: &str) -> String {
        format!("{worker} {}", self.detail())
    }

    /// What the worker has instead: `has rustc 1.80.0`.
    pub fn detail(&self) -> String {
        match self {
            Unfit::Tool { tool } => format!("has no {tool}"),
            Unfit::Rustc { want, have } => format!("has rustc {}", rustc_label(have, want)),
            Unfit::Target { target } => format!("has no {target} target"),
            Unfit::CcMachine { have, .. } => format!("has cc for {have}"),
            Unfit::CcVersion { have, .. } => format!("has cc {have}"),
        }
    }

    /// What no worker had, for the summary line: `rustc 1.95.0`.
    pub fn wanted(&self) -> String {
        match self {
            Unfit::Tool { tool } => tool.clone(),
            Unfit::Rustc { want, have } => format!("rustc {}", rustc_label(want, have)),
            Unfit::Target { target } => format!("the {target} target"),
            Unfit::CcMachine { want, .. } => format!("cc for {want}"),
            Unfit::CcVersion { want, .. } => format!("cc {want}"),
        }
    }
}

/// A rustc as shown next to `other`: the release, plus what tells them apart
/// when the release alone does not (host triple, commit).
fn rustc_label(r: &Rustc, other: &Rustc) -> String {
    if r.release != other.release {
        r.release.clone()
    } else if r.host != other.host {
        format!("{} for {}", r.release, r.host)
    } else {
        format!("{} ({})", r.release, r.short_hash())
    }
}

/// Whether a worker with `caps` can build what `needs` describes under
/// `policy`. A worker never probed fits: what it lacks shows at run time.
pub fn fit(needs: &Needs, caps: Option<&Capabilities>, policy: &Policy) -> Result<(), Unfit> {
    let Some(caps) = caps else { return Ok(()) };
    if let Some(tool) = &needs.tool {
        if caps.lacks(tool) {
            return Err(Unfit::Tool { tool: tool.clone() });
        }
    }
    if let Some(want) = &needs.rustc {
        fit_rustc(want, needs, caps, policy.toolchain)?;
    }
    if let Some(want) = &needs.cc {
        fit_cc(want, caps, policy.cc_toolchain)?;
    }
    Ok(())
}

fn fit_rustc(
    want: &Rustc,
    needs: &Needs,
    caps: &Capabilities,
    policy: ToolchainMatch,
) -> Result<(), Unfit> {
    if policy == ToolchainMatch::Any || !caps.probed {
        return Ok(());
    }
    let Some(have) = &caps.rustc else {
        return Err(Unfit::Tool {
            tool: "rustc".into(),
        });
    };
    let same = |r: &Rustc| match policy {
        ToolchainMatch::Exact => r.commit_hash == want.commit_hash && r.host == want.host,
        ToolchainMatch::SameRelease => r.release == want.release && r.host == want.host,
        ToolchainMatch::Any => true,
    };
    let matched = same(have) || (needs.pinned && caps.toolchains.values().any(same));
    if !matched {
        return Err(Unfit::Rustc {
            want: Box::new(want.clone()),
            have: Box::new(have.clone()),
        });
    }
    // A pinned toolchain's targets are not probed; only the default's are.
    if let Some(target) = &needs.target {
        let default_matches = same(have);
        if default_matches && *target != have.host && !caps.rust_targets.contains(target) {
            return Err(Unfit::Target {
                target: target.clone(),
            });
        }
    }
    Ok(())
}

fn fit_cc(want: &Cc, caps: &Capabilities, policy: CcMatch) -> Result<(), Unfit> {
    let Some(have) = &caps.cc else {
        // No cc at all matters only when the command is cc itself, which
        // the tool check above already covered.
        return Ok(());
    };
    if !want.machine.is_empty() && !have.machine.is_empty() && have.machine != want.machine {
        return Err(Unfit::CcMachine {
            want: want.machine.clone(),
            have: have.machine.clone(),
        });
    }
    if policy == CcMatch::Exact && have.version != want.version {
        return Err(Unfit::CcVersion {
            want: want.version.clone(),
            have: have.version.clone(),
        });
    }
    Ok(())
}

/// The summary line's reason when capabilities left no worker: `no worker
/// has rustc 1.95.0 (w1 has 1.80.0, w2 has no cargo)`. `unfit` pairs each
/// excluded worker with its reason; the first reason names what was wanted.
pub fn no_worker_line(unfit: &[(String, Unfit)]) -> Option<String> {
    let (_, first) = unfit.first()?;
    let details: Vec<String> = unfit
        .iter()
        .map(|(id, u)| match u {
            Unfit::Rustc { want, have } if matches!(first, Unfit::Rustc { .. }) => {
                format!("{id} has {}", rustc_label(have, want))
            }
            other => other.describe(id),
        })
        .collect();
    Some(format!(
        "no worker has {} ({})",
        first.wanted(),
        details.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTC_VV: &str = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860\ncommit-date: 2026-04-14\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\nLLVM version: 22.1.2\n";

    fn client() -> Rustc {
        Rustc::parse_verbose_version(RUSTC_VV).unwrap()
    }

    fn old() -> Rustc {
        Rustc {
            release: "1.80.0".into(),
            commit_hash: "051478957371ee0084a7c0913941d2a8c4757bb9".into(),
            host: "x86_64-unknown-linux-gnu".into(),
        }
    }

    fn probe_text(rustc: &Rustc) -> String {
        format!(
            "tool\tcargo\tcargo 1.95.0 (f2d3ce0bd 2026-03-21)\ntool\trustc\trustc {r}\ntool\tcc\t12.2.0\ntool\tmake\tGNU Make 4.3\n\
             rustc\trelease: {r}\nrustc\tcommit-hash: {h}\nrustc\thost: {host}\n\
             target\tx86_64-unknown-linux-gnu\ntarget\twasm32-unknown-unknown\n\
             toolchain\tnightly\trelease: 1.97.0-nightly\ntoolchain\tnightly\tcommit-hash: abc\ntoolchain\tnightly\thost: {host}\n\
             cc\tmachine\tx86_64-linux-gnu\n",
            r = rustc.release,
            h = rustc.commit_hash,
            host = rustc.host
        )
    }

    fn cargo_needs(rustc: Rustc) -> Needs {
        Needs {
            tool: Some("cargo".into()),
            rustc: Some(rustc),
            ..Needs::default()
        }
    }

    #[test]
    fn rustc_verbose_version_is_read() {
        let r = client();
        assert_eq!(r.release, "1.95.0");
        assert_eq!(r.host, "x86_64-unknown-linux-gnu");
        assert!(r.commit_hash.starts_with("59807616e"));
        assert_eq!(Rustc::parse_verbose_version("garbage"), None);
    }

    #[test]
    fn probe_output_is_read() {
        let caps = parse_probe(&probe_text(&client()));
        assert!(caps.probed);
        assert_eq!(caps.rustc, Some(client()));
        assert_eq!(caps.tools.len(), 4);
        assert!(caps.lacks("cmake"));
        assert!(!caps.lacks("make"));
        assert!(
            !caps.lacks("./configure"),
            "unknown programs are not judged"
        );
        assert_eq!(caps.rust_targets.len(), 2);
        assert_eq!(caps.toolchains["nightly"].release, "1.97.0-nightly");
        assert_eq!(caps.cc.as_ref().unwrap().machine, "x86_64-linux-gnu");
        assert_eq!(
            caps.summary(),
            "cargo 1.95.0, rustc 1.95.0 (x86_64-unknown-linux-gnu), cc 12.2.0 (x86_64-linux-gnu), make 4.3"
        );
    }

    #[test]
    fn exact_needs_the_same_commit_and_host() {
        let policy = Policy::default();
        let same = parse_probe(&probe_text(&client()));
        assert_eq!(fit(&cargo_needs(client()), Some(&same), &policy), Ok(()));
        let older = parse_probe(&probe_text(&old()));
        let err = fit(&cargo_needs(client()), Some(&older), &policy).unwrap_err();
        assert_eq!(err.describe("w1"), "w1 has rustc 1.80.0");
        let mut arm = client();
        arm.host = "aarch64-unknown-linux-gnu".into();
        let arm_caps = parse_probe(&probe_text(&arm));
        let err = fit(&cargo_needs(client()), Some(&arm_caps), &policy).unwrap_err();
        assert_eq!(
            err.describe("w3"),
            "w3 has rustc 1.95.0 for aarch64-unknown-linux-gnu"
        );
        let any = Policy {
            toolchain: ToolchainMatch::Any,
            ..policy
        };
        assert_eq!(fit(&cargo_needs(client()), Some(&older), &any), Ok(()));
    }

    #[test]
    fn same_release_ignores_the_commit() {
        let mut rebuilt = client();
        rebuilt.commit_hash = "0000000".into();
        let caps = parse_probe(&probe_text(&rebuilt));
        let exact = Policy::default();
        assert!(fit(&cargo_needs(client()), Some(&caps), &exact).is_err());
        let release = Policy {
            toolchain: ToolchainMatch::SameRelease,
            ..exact
        };
        assert_eq!(fit(&cargo_needs(client()), Some(&caps), &release), Ok(()));
    }

    #[test]
    fn a_pin_may_match_any_installed_toolchain() {
        let caps = parse_probe(&probe_text(&old()));
        let nightly = Rustc {
            release: "1.97.0-nightly".into(),
            commit_hash: "abc".into(),
            host: "x86_64-unknown-linux-gnu".into(),
        };
        let mut needs = cargo_needs(nightly);
        assert!(fit(&needs, Some(&caps), &Policy::default()).is_err());
        needs.pinned = true;
        assert_eq!(fit(&needs, Some(&caps), &Policy::default()), Ok(()));
    }

    #[test]
    fn targets_must_be_installed() {
        let caps = parse_probe(&probe_text(&client()));
        let mut needs = cargo_needs(client());
        needs.target = Some("wasm32-unknown-unknown".into());
        assert_eq!(fit(&needs, Some(&caps), &Policy::default()), Ok(()));
        needs.target = Some("aarch64-unknown-linux-gnu".into());
        let err = fit(&needs, Some(&caps), &Policy::default()).unwrap_err();
        assert_eq!(
            err.describe("w1"),
            "w1 has no aarch64-unknown-linux-gnu target"
        );
    }

    #[test]
    fn missing_tools_and_unprobed_workers() {
        let needs = cargo_needs(client());
        assert_eq!(fit(&needs, None, &Policy::default()), Ok(()));
        let mut seen = Capabilities::default();
        assert_eq!(fit(&needs, Some(&seen), &Policy::default()), Ok(()));
        seen.note_missing("cargo");
        let err = fit(&needs, Some(&seen), &Policy::default()).unwrap_err();
        assert_eq!(err.describe("w1"), "w1 has no cargo");
        let empty = parse_probe("");
        let err = fit(&needs, Some(&empty), &Policy::default()).unwrap_err();
        assert_eq!(
            err,
            Unfit::Tool {
                tool: "cargo".into()
            }
        );
        assert_eq!(
            empty.unmet(&["cargo".into(), "make".into()]),
            ["cargo", "make"]
        );
    }

    #[test]
    fn c_builds_need_the_same_machine() {
        let caps = parse_probe(&probe_text(&client()));
        let mut needs = Needs {
            tool: Some("make".into()),
            cc: Some(Cc {
                version: "14.1.0".into(),
                machine: "x86_64-linux-gnu".into(),
            }),
            ..Needs::default()
        };
        assert_eq!(fit(&needs, Some(&caps), &Policy::default()), Ok(()));
        let exact = Policy {
            cc_toolchain: CcMatch::Exact,
            ..Policy::default()
        };
        assert!(fit(&needs, Some(&caps), &exact).is_err());
        needs.cc.as_mut().unwrap().machine = "aarch64-linux-gnu".into();
        let err = fit(&needs, Some(&caps), &Policy::default()).unwrap_err();
        assert_eq!(err.describe("w1"), "w1 has cc for x86_64-linux-gnu");
    }

    #[test]
    fn the_summary_line_names_what_no_worker_had() {
        let want = client();
        let line = no_worker_line(&[
            (
                "w1".into(),
                Unfit::Rustc {
                    want: Box::new(want.clone()),
                    have: Box::new(old()),
                },
            ),
            (
                "w2".into(),
                Unfit::Tool {
                    tool: "cargo".into(),
                },
            ),
        ]);
        assert_eq!(
            line.as_deref(),
            Some("no worker has rustc 1.95.0 (w1 has 1.80.0, w2 has no cargo)")
        );
        assert_eq!(no_worker_line(&[]), None);
    }
}
