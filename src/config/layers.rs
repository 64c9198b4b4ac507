//! Finding the configuration layers, merging them and remembering origins.
//!
//! Order, lowest first: defaults, user file, lab file, project
//! `.rch/config.toml`, environment, flags. Scalar keys override key by key; a
//! layer that lists any workers replaces the whole worker list below it, and
//! `transfer.exclude` is replaced as a whole too.

use super::file::{read_layer, Layer, Scope, Setting};
use super::{Config, ConfigError, Fallback, WorkerConfig};
use crate::paths;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Variable naming another user config file.
const ENV_CONFIG: &str = "RCH_CONFIG";
/// Run everything locally.
const ENV_DISABLE: &str = "RCH_DISABLE";
/// Fail closed: never fall back to local.
const ENV_REQUIRE_REMOTE: &str = "RCH_REQUIRE_REMOTE";
/// Ask for one worker by id.
const ENV_WORKER: &str = "RCH_WORKER";
/// Print nothing of rch's own.
const ENV_QUIET: &str = "RCH_QUIET";
/// A `tracing` filter for rch's own logs.
const ENV_LOG: &str = "RCH_LOG";

/// Key path of the requested worker in the origin map (not a config key).
const REQUESTED_WORKER: &str = "requested_worker";
/// Key path of quiet mode in the origin map (not a config key).
const QUIET: &str = "quiet";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Lab(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Lab(path) => write!(f, "lab {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Command-line flags that override every other layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--require-remote`: fail closed.
    pub require_remote: bool,
    /// `--local`: run locally.
    pub local: bool,
    /// `--worker ID`.
    pub worker: Option<String>,
    /// `-q`/`--quiet`.
    pub quiet: bool,
}

/// Everything loading reads, made explicit so it can be tested.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The user config file.
    pub user_file: PathBuf,
    /// The user file was named explicitly (`RCH_CONFIG`): missing is an error.
    pub user_file_required: bool,
    /// The lab file, read when it exists.
    pub lab_file: Option<PathBuf>,
    /// Where the walk up for `.rch/config.toml` starts.
    pub cwd: PathBuf,
    /// The `RCH_*` environment variables.
    pub env: BTreeMap<String, String>,
}

impl Sources {
    /// The sources of this process: its environment and the XDG paths.
    pub fn from_process(cwd: &Path) -> Sources {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
            .filter(|(k, _)| k.starts_with("RCH_"))
            .collect();
        Sources::from_env_map(env, cwd)
    }

    /// The sources for this environment map, with files at their XDG places.
    pub fn from_env_map(env: BTreeMap<String, String>, cwd: &Path) -> Sources {
        let named = env
            .get(ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let lab_file = match named {
            Some(_) => None,
            None => Some(paths::lab_config_file()),
        };
        Sources {
            user_file_required: named.is_some(),
            user_file: named.unwrap_or_else(|| paths::config_dir().join("config.toml")),
            lab_file,
            cwd: cwd.to_path_buf(),
            env,
        }
    }

    /// The project config file found walking up from `cwd`, if any.
    pub fn project_file(&self) -> Option<PathBuf> {
        find_project_root(&self.cwd).map(|root| project_config_file(&root))
    }

    /// The lab file, if it is in effect (exists and `RCH_CONFIG` is not set).
    pub fn active_lab_file(&self) -> Option<&Path> {
        self.lab_file.as_deref().filter(|p| p.is_file())
    }
}

/// `<root>/.rch/config.toml`.
pub fn project_config_file(root: &Path) -> PathBuf {
    root.join(".rch").join("config.toml")
}

/// The nearest directory at or above `cwd` holding `.rch/config.toml`.
pub fn find_project_root(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors()
        .find(|dir| project_config_file(dir).is_file())
        .map(Path::to_path_buf)
}

/// The effective configuration and how it came to be.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Worker asked for by `RCH_WORKER` or `--worker`; not checked against the list.
    pub requested_worker: Option<String>,
    pub quiet: bool,
    /// `RCH_LOG`: a `tracing` filter for rch's own logs.
    pub log_filter: Option<String>,
    /// Files read, lowest layer first.
    pub files: Vec<PathBuf>,
    /// The directory containing `.rch/`, if a project config was found.
    pub project_root: Option<PathBuf>,
    origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// Where the value at `key_path` came from. Any path inside the worker
    /// list answers for the whole list, and `transfer.exclude[2]` for the list.
    pub fn origin(&self, key_path: &str) -> Origin {
        let key = if key_path.starts_with("workers") {
            "workers"
        } else {
            key_path.split('[').next().unwrap_or(key_path)
        };
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Every key path set by some layer above the defaults, with its origin.
    pub fn origins(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.origins.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Apply command-line flags, the highest layer.
    pub fn apply(&mut self, o: &Overrides) {
        if o.require_remote {
            self.config.general.fallback = Fallback::Never;
            self.set_origin("general.fallback", Origin::Flag("--require-remote"));
        }
        if o.local {
            self.config.general.enabled = false;
            self.set_origin("general.enabled", Origin::Flag("--local"));
        }
        if let Some(worker) = &o.worker {
            self.requested_worker = Some(worker.clone());
            self.set_origin(REQUESTED_WORKER, Origin::Flag("--worker"));
        }
        if o.quiet {
            self.quiet = true;
            self.set_origin(QUIET, Origin::Flag("--quiet"));
        }
    }

    fn set_origin(&mut self, key_path: &str, origin: Origin) {
        self.origins.insert(key_path.to_string(), origin);
    }
}

/// Load all layers for this process, starting the project search at `cwd`.
pub fn load(cwd: &Path) -> Result<Loaded, ConfigError> {
    load_with(&Sources::from_process(cwd))
}

/// Load all layers from explicit sources.
pub fn load_with(sources: &Sources) -> Result<Loaded, ConfigError> {
    let mut merge = Merge::new();
    let mut files = Vec::new();

    if let Some(layer) = read_file(&sources.user_file, sources.user_file_required, Scope::User)? {
        merge.add(&layer, Origin::File(sources.user_file.clone()));
        files.push(sources.user_file.clone());
    }
    if let Some(lab) = &sources.lab_file {
        if let Some(layer) = read_file(lab, false, Scope::User)? {
            merge.add(&layer, Origin::Lab(lab.clone()));
            files.push(lab.clone());
        }
    }
    let project_root = find_project_root(&sources.cwd);
    if let Some(root) = &project_root {
        let path = project_config_file(root);
        if let Some(layer) = read_file(&path, false, Scope::Project)? {
            merge.add(&layer, Origin::File(path.clone()));
            files.push(path);
        }
    }
    let env = EnvLayer::read(&sources.env)?;
    for (setting, var) in &env.settings {
        merge.set(setting, Origin::Env(var));
    }

    let mut origins = merge.origins;
    if env.requested_worker.is_some() {
        origins.insert(REQUESTED_WORKER.into(), Origin::Env(ENV_WORKER));
    }
    if env.quiet {
        origins.insert(QUIET.into(), Origin::Env(ENV_QUIET));
    }
    let mut config: Config = serde_json::from_value(merge.config)
        .map_err(|e| ConfigError::new(format!("configuration does not fit its types: {e}")))?;
    config.workers = merge.workers;
    Ok(Loaded {
        config,
        requested_worker: env.requested_worker,
        quiet: env.quiet,
        log_filter: env.log_filter,
        files,
        project_root,
        origins,
    })
}

/// One file alone over the defaults.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let layer = read_layer(text, file, Scope::User)?;
    let mut merge = Merge::new();
    merge.add(&layer, Origin::File(file.to_path_buf()));
    let mut config: Config = serde_json::from_value(merge.config).map_err(|e| {
        ConfigError::new(format!(
            "{}: configuration does not fit its types: {e}",
            file.display()
        ))
    })?;
    config.workers = merge.workers;
    Ok(config)
}

/// Read and validate a file; `None` when it is absent and not required.
fn read_file(path: &Path, required: bool, scope: Scope) -> Result<Option<Layer>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => read_layer(&text, path, scope).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::new(format!(
            "{}: not found (named by {ENV_CONFIG})",
            path.display()
        ))),
        Err(e) => Err(ConfigError::new(format!(
            "{}: cannot read: {e}",
            path.display()
        ))),
    }
}

/// The merge in progress: config as JSON (so a key path can be set without a
/// match over every field), the worker list, and origins.
struct Merge {
    config: Json,
    workers: Vec<WorkerConfig>,
    origins: BTreeMap<String, Origin>,
}

impl Merge {
    fn new() -> Self {
        Merge {
            config: serde_json::to_value(Config::default()).unwrap_or(Json::Null),
            workers: Vec::new(),
            origins: BTreeMap::new(),
        }
    }

    fn add(&mut self, layer: &Layer, origin: Origin) {
        for setting in &layer.settings {
            self.set(setting, origin.clone());
        }
        if let Some(workers) = &layer.workers {
            self.workers = workers.clone();
            self.origins.insert("workers".into(), origin);
        }
    }

    fn set(&mut self, setting: &Setting, origin: Origin) {
        let Some((section, key)) = setting.path.split_once('.') else {
            return;
        };
        if let Some(table) = self.config.get_mut(section).and_then(Json::as_object_mut) {
            table.insert(key.to_string(), setting.value.clone());
            self.origins.insert(setting.path.clone(), origin);
        }
    }
}

/// What the environment contributes.
#[derive(Debug, Default)]
struct EnvLayer {
    /// Settings with the variable that set them.
    settings: Vec<(Setting, &'static str)>,
    requested_worker: Option<String>,
    quiet: bool,
    log_filter: Option<String>,
}

impl EnvLayer {
    fn read(env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut layer = EnvLayer::default();
        if truthy(env, ENV_DISABLE)? {
            layer.push("general.enabled", Json::Bool(false), ENV_DISABLE);
        }
        if truthy(env, ENV_REQUIRE_REMOTE)? {
            layer.push("general.fallback", Json::from("never"), ENV_REQUIRE_REMOTE);
        }
        layer.requested_worker = non_empty(env, ENV_WORKER);
        layer.quiet = truthy(env, ENV_QUIET)?;
        layer.log_filter = non_empty(env, ENV_LOG);
        Ok(layer)
    }

    fn push(&mut self, path: &str, value: Json, var: &'static str) {
        let setting = Setting {
            path: path.to_string(),
            value,
        };
        self.settings.push((setting, var));
    }
}

fn non_empty(env: &BTreeMap<String, String>, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A boolean variable: 1/true/yes/on set it; 0/false/no/off or empty leave it unset.
fn truthy(env: &BTreeMap<String, String>, var: &str) -> Result<bool, ConfigError> {
    let Some(raw) = env.get(var) else {
        return Ok(false);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(format!(
            "env {var}: expected 1, true, yes or on (or 0, false, no, off), got \"{}\"",
            raw.escape_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostKeyPolicy;

    struct Tree {
        dir: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            Tree {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }

        fn sources(&self, env: &[(&str, &str)]) -> Sources {
            let cwd = self.dir.path().join("proj/sub");
            std::fs::create_dir_all(&cwd).unwrap();
            Sources {
                user_file: self.dir.path().join("user.toml"),
                user_file_required: false,
                lab_file: Some(self.dir.path().join("lab.toml")),
                cwd,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        }
    }

    #[test]
    fn nothing_present_gives_defaults() {
        let tree = Tree::new();
        let loaded = load_with(&tree.sources(&[])).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.files.is_empty());
        assert_eq!(loaded.project_root, None);
        assert_eq!(loaded.origin("circuit.failure_threshold"), Origin::Default);
    }

    #[test]
    fn layers_override_key_by_key_in_order() {
        let tree = Tree::new();
        let user = tree.write(
            "user.toml",
            "[general]\nbuild_timeout_secs = 5\nfallback = \"never\"\nenabled = false\n",
        );
        let lab = tree.write(
            "lab.toml",
            "[general]\nfallback = \"local\"\nenabled = true\n",
        );
        let project = tree.write("proj/.rch/config.toml", "[general]\nenabled = false\n");
        let loaded = load_with(&tree.sources(&[])).unwrap();
        let g = &loaded.config.general;
        assert_eq!(
            (g.build_timeout_secs, g.fallback, g.enabled),
            (5, crate::config::Fallback::Local, false)
        );
        assert_eq!(
            loaded.origin("general.build_timeout_secs"),
            Origin::File(user.clone())
        );
        assert_eq!(loaded.origin("general.fallback"), Origin::Lab(lab.clone()));
        assert_eq!(
            loaded.origin("general.enabled"),
            Origin::File(project.clone())
        );
        assert_eq!(loaded.files, vec![user, lab, project]);
        assert_eq!(loaded.project_root, Some(tree.dir.path().join("proj")));
    }

    #[test]
    fn a_layer_with_workers_replaces_the_whole_list() {
        let tree = Tree::new();
        tree.write(
            "user.toml",
            "[[workers]]\nid = \"a\"\nhost = \"ha\"\n[[workers]]\nid = \"b\"\nhost = \"hb\"\n",
        );
        let lab = tree.write("lab.toml", "[[workers]]\nid = \"c\"\nhost = \"hc\"\n");
        let loaded = load_with(&tree.sources(&[])).unwrap();
        assert_eq!(loaded.config.worker_ids(), vec!["c"]);
        assert_eq!(loaded.origin("workers[0].slots"), Origin::Lab(lab));
        assert!(loaded.config.worker("a").is_none());
        assert_eq!(loaded.config.worker("c").unwrap().host, "hc");
    }

    #[test]
    fn a_layer_without_workers_keeps_the_list_below() {
        let tree = Tree::new();
        let user = tree.write("user.toml", "[[workers]]\nid = \"a\"\nhost = \"ha\"\n");
        tree.write("proj/.rch/config.toml", "[general]\nenabled = true\n");
        let loaded = load_with(&tree.sources(&[])).unwrap();
        assert_eq!(loaded.config.worker_ids(), vec!["a"]);
        assert_eq!(loaded.origin("workers"), Origin::File(user));
    }

    #[test]
    fn exclude_lists_are_replaced_not_joined() {
        let tree = Tree::new();
        tree.write("user.toml", "[transfer]\nexclude = [\"a\", \"b\"]\n");
        let project = tree.write("proj/.rch/config.toml", "[transfer]\nexclude = [\"c\"]\n");
        let loaded = load_with(&tree.sources(&[])).unwrap();
        assert_eq!(loaded.config.transfer.exclude, vec!["c"]);
        assert_eq!(loaded.origin("transfer.exclude[0]"), Origin::File(project));
    }

    #[test]
    fn environment_beats_files_and_flags_beat_environment() {
        let tree = Tree::new();
        tree.write(
            "proj/.rch/config.toml",
            "[general]\nenabled = true\nfallback = \"local\"\n",
        );
        let sources = tree.sources(&[
            ("RCH_DISABLE", "yes"),
            ("RCH_REQUIRE_REMOTE", "0"),
            ("RCH_WORKER", "w2"),
            ("RCH_LOG", "rch=debug"),
        ]);
        let mut loaded = load_with(&sources).unwrap();
        assert!(!loaded.config.general.enabled);
        assert_eq!(loaded.config.general.fallback, Fallback::Local);
        assert_eq!(loaded.origin("general.enabled"), Origin::Env("RCH_DISABLE"));
        assert_eq!(loaded.requested_worker.as_deref(), Some("w2"));
        assert_eq!(loaded.origin("requested_worker"), Origin::Env("RCH_WORKER"));
        assert_eq!(loaded.log_filter.as_deref(), Some("rch=debug"));
        assert!(!loaded.quiet);

        loaded.apply(&Overrides {
            require_remote: true,
            local: false,
            worker: Some("w3".into()),
            quiet: true,
        });
        assert_eq!(loaded.config.general.fallback, Fallback::Never);
        assert_eq!(
            loaded.origin("general.fallback").to_string(),
            "flag --require-remote"
        );
        assert_eq!(loaded.requested_worker.as_deref(), Some("w3"));
        assert!(loaded.quiet);
        assert_eq!(loaded.origin("quiet"), Origin::Flag("--quiet"));
    }

    #[test]
    fn bad_boolean_variable_names_the_variable() {
        let tree = Tree::new();
        let err = load_with(&tree.sources(&[("RCH_QUIET", "maybe")])).unwrap_err();
        assert!(
            err.message.starts_with("env RCH_QUIET: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_named_user_file_is_an_error_but_missing_default_is_not() {
        let tree = Tree::new();
        let mut sources = tree.sources(&[]);
        assert!(load_with(&sources).is_ok());
        sources.user_file_required = true;
        let err = load_with(&sources).unwrap_err();
        assert!(err.message.contains("RCH_CONFIG"), "{}", err.message);
    }

    #[test]
    fn named_config_disables_the_lab_file() {
        let env = BTreeMap::from([("RCH_CONFIG".to_string(), "/x/c.toml".to_string())]);
        let sources = Sources::from_env_map(env, Path::new("/"));
        assert_eq!(sources.user_file, PathBuf::from("/x/c.toml"));
        assert!(sources.user_file_required);
        assert_eq!(sources.lab_file, None);
    }

    #[test]
    fn project_errors_name_the_project_file() {
        let tree = Tree::new();
        tree.write(
            "user.toml",
            "[ssh]\nstrict_host_key_checking = \"accept-new\"\n",
        );
        let project = tree.write("proj/.rch/config.toml", "\n[general]\nenabeld = true\n");
        let err = load_with(&tree.sources(&[])).unwrap_err();
        let expected = format!("{}:3: general.enabeld: unknown key", project.display());
        assert!(err.message.starts_with(&expected), "{}", err.message);
    }

    #[test]
    fn parse_str_reads_every_section() {
        let text = "[general]\nbuild_timeout_secs = 60\n[ssh]\nstrict_host_key_checking = \"accept-new\"\nconfig_file = \"~/.ssh/other\"\n[daemon]\nmetrics_listen = \"127.0.0.1:9464\"\n";
        let config = parse_str(text, Path::new("/c.toml")).unwrap();
        assert_eq!(config.general.build_timeout_secs, 60);
        assert_eq!(
            config.ssh.strict_host_key_checking,
            HostKeyPolicy::AcceptNew
        );
        assert_eq!(config.ssh.config_file, Some(PathBuf::from("~/.ssh/other")));
        assert_eq!(
            config.daemon.metrics_listen.as_deref(),
            Some("127.0.0.1:9464")
        );
    }

    #[test]
    fn every_key_can_be_set() {
        let text = r#"
[general]
enabled = false
fallback = "never"
build_timeout_secs = 9
[circuit]
failure_threshold = 7
error_rate_threshold = 1
window_secs = 8
window_min_samples = 6
open_cooldown_secs = 0
success_threshold = 5
half_open_max_probes = 4
[ssh]
connect_timeout_secs = 3
strict_host_key_checking = "accept-new"
config_file = "/etc/rch/ssh_config"
[daemon]
queue_timeout_secs = 0
metrics_listen = "[::1]:9000"
[transfer]
exclude = ["x"]
[[workers]]
id = "w"
host = "h"
port = 2
user = "u"
identity_file = "/k"
slots = 1
priority = -3
remote_base = "/b"
enabled = false
"#;
        let c = parse_str(text, Path::new("/c.toml")).unwrap();
        assert!(!c.general.enabled && c.general.fallback == Fallback::Never);
        assert_eq!(c.general.build_timeout_secs, 9);
        assert_eq!(c.circuit.error_rate_threshold, 1.0);
        assert_eq!(
            (c.circuit.window_min_samples, c.circuit.open_cooldown_secs),
            (6, 0)
        );
        assert_eq!(c.ssh.connect_timeout_secs, 3);
        assert_eq!(c.daemon.queue_timeout_secs, 0);
        assert_eq!(c.transfer.exclude, vec!["x"]);
        let w = c.worker("w").unwrap();
        assert_eq!(
            (w.port, w.user.as_deref(), w.priority),
            (Some(2), Some("u"), -3)
        );
        assert_eq!(w.identity_file, Some(PathBuf::from("/k")));
        assert!(!w.enabled);
    }
}
