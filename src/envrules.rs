//! Which of the client's environment variables a remote build gets, by rule.
//! Pure: names, values and the `[env]` settings in, a plan out.
//!
//! A remote build must see what the local one would, so by default every
//! variable goes, except those that describe this machine (paths, the
//! terminal, the desktop session, the dynamic loader) and those that look
//! like secrets. `env.forward` names more to send (a secret-looking name
//! listed there is sent), `env.withhold` names more to keep (it wins over
//! everything). rch's own `RCH_*` variables never go.

use serde::{Deserialize, Serialize};

/// Variables that describe this machine or this session, not the build.
pub const MACHINE_LOCAL: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "TMPDIR",
    "TMP",
    "TEMP",
    "HOSTNAME",
    "SHLVL",
    "_",
    "MAIL",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "SESSION_MANAGER",
    "DESKTOP_SESSION",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "XDG_*",
    "SSH_*",
    "TERM*",
    "TMUX*",
    "STY",
    "WINDOWID",
    "VTE_*",
    "KONSOLE_*",
    "ITERM_*",
    "GPG_*",
    "SUDO_*",
    "LD_*",
    "DYLD_*",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "MOTD_SHOWN",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_TARGET_DIR",
];

/// Names that look like secrets (matched without regard to case).
pub const SECRET_LOOKING: &[&str] = &[
    "*SECRET*",
    "*TOKEN*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "*_KEY",
    "*PRIVATE*",
    "*APIKEY*",
    "*_AUTH*",
    "AWS_*",
    "GH_*",
    "GITHUB_*",
    "NPM_*",
];

/// What the client set but kept from the worker, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Withheld {
    /// rch's own (`RCH_*`).
    Rch,
    /// Named in `env.withhold`.
    Config,
    /// Describes this machine ([`MACHINE_LOCAL`]).
    MachineLocal,
    /// Looks like a secret ([`SECRET_LOOKING`]); `env.forward` can send it.
    Secret,
    /// Its name or value cannot be passed as text.
    NotText,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Withheld::Rch => "rch's own",
            Withheld::Config => "env.withhold",
            Withheld::MachineLocal => "machine-local",
            Withheld::Secret => "secret-looking",
            Withheld::NotText => "not text",
        }
    }
}

/// The `[env]` settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvConfig {
    /// Name patterns to send even if they look machine-local or secret.
    pub forward: Vec<String>,
    /// Name patterns never to send.
    pub withhold: Vec<String>,
    /// What to do when the build read a variable the worker did not get.
    pub on_mismatch: OnMismatch,
}

/// `env.on_mismatch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Run again with the variable sent, when it may be (not secret-looking,
    /// not withheld by config, set here); otherwise run locally.
    #[default]
    Rerun,
    /// Run the build locally.
    Local,
    /// Exit 75 naming the variable.
    Fail,
}

/// The decision for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPlan {
    /// Sent to the worker, sorted by name.
    pub forwarded: Vec<(String, String)>,
    /// Kept here, by name (never with the value), sorted.
    pub withheld: Vec<(String, Withheld)>,
}

impl EnvPlan {
    /// The names sent, for `diagnose` and logs.
    pub fn forwarded_names(&self) -> Vec<&str> {
        self.forwarded.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// `AWS_SECRET_ACCESS_KEY (secret-looking), HOME (machine-local)`.
    pub fn withheld_line(&self) -> String {
        self.withheld
            .iter()
            .map(|(name, why)| format!("{name} ({})", why.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Decide, for each variable, whether the worker gets it.
pub fn plan(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    config: &EnvConfig,
) -> EnvPlan {
    let mut plan = EnvPlan::default();
    for (name, value) in vars {
        let (Ok(name), Ok(value)) = (name.into_string(), value.into_string()) else {
            continue;
        };
        match decide(&name, config) {
            None if is_shell_name(&name) => plan.forwarded.push((name, value)),
            None => plan.withheld.push((name, Withheld::NotText)),
            Some(why) => plan.withheld.push((name, why)),
        }
    }
    plan.forwarded.sort();
    plan.withheld.sort();
    plan
}

/// Why `name` is withheld, or `None` when it is sent.
pub fn decide(name: &str, config: &EnvConfig) -> Option<Withheld> {
    if name.starts_with("RCH_") {
        Some(Withheld::Rch)
    } else if any_match(&config.withhold, name) {
        Some(Withheld::Config)
    } else if any_match(&config.forward, name) {
        None
    } else if MACHINE_LOCAL.iter().any(|p| matches(p, name)) {
        Some(Withheld::MachineLocal)
    } else if is_secret_looking(name) {
        Some(Withheld::Secret)
    } else {
        None
    }
}

/// Whether `name` looks like it holds a secret.
pub fn is_secret_looking(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_LOOKING.iter().any(|p| matches(p, &upper))
}

fn any_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| matches(p, name))
}

/// A name pattern: `*` matches any run of characters; otherwise exact.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A plain shell variable name (the remote script exports it as `K=V`).
fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn patterns() {
        assert!(matches("LC_*", "LC_ALL"));
        assert!(matches("*_KEY", "SIGNING_KEY"));
        assert!(!matches("*_KEY", "KEYBOARD"));
        assert!(matches("*TOKEN*", "CARGO_REGISTRY_TOKEN"));
        assert!(matches("A*B*C", "AxxBxxC"));
        assert!(!matches("A*B*C", "AxxC"));
        assert!(matches("PATH", "PATH"));
        assert!(!matches("PATH", "PATHS"));
    }

    #[test]
    fn builds_get_what_they_read_and_nothing_local_or_secret() {
        let p = plan(
            vars(&[
                ("BUILD_STAMP", "42"),
                ("CARGO_ENCODED_RUSTFLAGS", "--cfg\x1fstamped"),
                ("CC", "gcc"),
                ("PATH", "/usr/bin"),
                ("HOME", "/home/me"),
                ("XDG_RUNTIME_DIR", "/run/user/1"),
                ("LD_PRELOAD", "x.so"),
                ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
                ("GITHUB_TOKEN", "ghp_x"),
                ("DB_PASSWORD", "hunter2"),
                ("RCH_WORKER", "w1"),
            ]),
            &EnvConfig::default(),
        );
        assert_eq!(
            p.forwarded_names(),
            ["BUILD_STAMP", "CARGO_ENCODED_RUSTFLAGS", "CC"]
        );
        let why = |n: &str| p.withheld.iter().find(|(k, _)| k == n).map(|(_, w)| *w);
        assert_eq!(why("PATH"), Some(Withheld::MachineLocal));
        assert_eq!(why("AWS_SECRET_ACCESS_KEY"), Some(Withheld::Secret));
        assert_eq!(why("GITHUB_TOKEN"), Some(Withheld::Secret));
        assert_eq!(why("DB_PASSWORD"), Some(Withheld::Secret));
        assert_eq!(why("RCH_WORKER"), Some(Withheld::Rch));
        assert!(!p.withheld_line().contains("s3cr3t"));
    }

    #[test]
    fn config_forwards_and_withholds_by_pattern() {
        let config = EnvConfig {
            forward: vec!["MY_*".into(), "NPM_CONFIG_REGISTRY".into(), "RCH_X".into()],
            withhold: vec!["MY_PRIVATE".into()],
            ..EnvConfig::default()
        };
        assert_eq!(decide("MY_TOKEN", &config), None);
        assert_eq!(decide("NPM_CONFIG_REGISTRY", &config), None);
        assert_eq!(decide("MY_PRIVATE", &config), Some(Withheld::Config));
        assert_eq!(decide("RCH_X", &config), Some(Withheld::Rch));
        assert_eq!(decide("OTHER", &config), None);
    }
}
