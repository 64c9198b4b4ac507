//! Printing the effective configuration (`rch config show`).
//!
//! The TOML form is itself a valid config file; with origins, each value
//! carries a trailing comment saying which layer set it.

use super::layers::{Loaded, Origin};
use serde_json::{json, Value as Json};
use toml_edit::{DocumentMut, Item};

/// The effective configuration as TOML, optionally annotated with origins.
pub fn to_toml(loaded: &Loaded, with_origins: bool) -> String {
    // `toml` writes sections as `[tables]`, the way people write config files;
    // it only fails on values TOML cannot hold, which validation rejects.
    let plain = toml::to_string(&shown(&loaded.config)).unwrap_or_default();
    let mut out = match plain.parse::<DocumentMut>() {
        Ok(mut doc) if with_origins => {
            annotate(&mut doc, loaded);
            doc.to_string()
        }
        _ => plain,
    };
    if let Some(worker) = &loaded.requested_worker {
        out.push_str(&request_line(
            "requested worker",
            worker,
            loaded,
            with_origins,
        ));
    }
    if loaded.quiet {
        out.push_str(&request_line("quiet", "yes", loaded, with_origins));
    }
    out
}

/// The effective configuration as JSON; with origins it is
/// `{"config": ..., "origins": {"key.path": "origin", ...}}`.
pub fn to_json(loaded: &Loaded, with_origins: bool) -> Json {
    let config = serde_json::to_value(shown(&loaded.config)).unwrap_or(Json::Null);
    if !with_origins {
        return config;
    }
    let origins: serde_json::Map<String, Json> = all_key_paths(&config)
        .into_iter()
        .chain(loaded.origins().map(|(k, _)| k.to_string()))
        .map(|path| {
            let origin = loaded.origin(&path).to_string();
            (path, Json::from(origin))
        })
        .collect();
    json!({ "config": config, "origins": origins })
}

/// The configuration as it may be printed: the team URL's password masked.
fn shown(config: &super::Config) -> super::Config {
    let mut config = config.clone();
    if let Some(url) = &mut config.team.redis_url {
        *url = crate::team::url::masked(url);
    }
    config
}

/// `section.key` for every scalar and list key, plus `workers`.
fn all_key_paths(config: &Json) -> Vec<String> {
    let mut paths = Vec::new();
    if let Some(sections) = config.as_object() {
        for (section, body) in sections {
            match body.as_object() {
                Some(keys) => paths.extend(keys.keys().map(|k| format!("{section}.{k}"))),
                None => paths.push(section.clone()),
            }
        }
    }
    paths
}

fn request_line(what: &str, value: &str, loaded: &Loaded, with_origins: bool) -> String {
    let key = if what == "quiet" {
        "quiet"
    } else {
        "requested_worker"
    };
    if with_origins {
        format!("# {what}: {value}  # {}\n", loaded.origin(key))
    } else {
        format!("# {what}: {value}\n")
    }
}

fn comment(origin: &Origin) -> String {
    format!("  # {origin}")
}

fn annotate(doc: &mut DocumentMut, loaded: &Loaded) {
    for (section, item) in doc.iter_mut() {
        let section = section.get().to_string();
        match item {
            Item::Table(table) => {
                for (key, value) in table.iter_mut() {
                    let origin = loaded.origin(&format!("{section}.{}", key.get()));
                    if let Item::Value(v) = value {
                        v.decor_mut().set_suffix(comment(&origin));
                    }
                }
            }
            Item::ArrayOfTables(tables) => {
                let origin = loaded.origin(&section);
                for table in tables.iter_mut() {
                    table.decor_mut().set_suffix(comment(&origin));
                }
            }
            Item::Value(v) => {
                v.decor_mut().set_suffix(comment(&loaded.origin(&section)));
            }
            Item::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_with, parse_str, Config, Sources, WorkerConfig};
    use std::path::Path;

    fn loaded_with(config: Config) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            user_file: dir.path().join("none.toml"),
            cwd: dir.path().to_path_buf(),
            ..Sources::default()
        };
        let mut loaded = load_with(&sources).unwrap();
        loaded.config = config;
        loaded
    }

    #[test]
    fn shown_toml_is_a_valid_config_that_reads_back_the_same() {
        let mut config = Config::default();
        config.workers.push(WorkerConfig::new("w1", "h1"));
        config.workers[0].port = Some(2222);
        config.transfer.exclude = vec!["*.log".into()];
        let loaded = loaded_with(config.clone());
        for with_origins in [false, true] {
            let text = to_toml(&loaded, with_origins);
            let back = parse_str(&text, Path::new("/shown.toml")).unwrap();
            assert_eq!(back, config, "{text}");
        }
    }

    #[test]
    fn empty_worker_list_still_reads_back() {
        let loaded = loaded_with(Config::default());
        let text = to_toml(&loaded, true);
        assert_eq!(
            parse_str(&text, Path::new("/s.toml")).unwrap(),
            Config::default()
        );
        assert!(text.contains("failure_threshold = 3  # default"), "{text}");
    }

    #[test]
    fn the_team_password_is_never_shown() {
        let mut config = Config::default();
        config.team.redis_url = Some("rediss://team:hunter2@r.example:6380/1".into());
        config.team.name = Some("backend".into());
        let loaded = loaded_with(config);
        let text = to_toml(&loaded, true);
        let json = to_json(&loaded, false).to_string();
        let debug = format!("{:?}", loaded.config);
        for shown in [&text, &json, &debug] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("rediss://team:***@r.example:6380/1"),
                "{shown}"
            );
        }
        let back = parse_str(&text, Path::new("/s.toml")).unwrap();
        assert_eq!(back.team.name.as_deref(), Some("backend"));
    }

    #[test]
    fn json_with_origins_lists_every_key() {
        let loaded = loaded_with(Config::default());
        let value = to_json(&loaded, true);
        assert_eq!(value["origins"]["circuit.window_secs"], "default");
        assert_eq!(value["config"]["general"]["enabled"], true);
    }
}
