//! Reading one configuration file into a layer of settings.
//!
//! The file is parsed with `toml_edit`, which keeps byte spans, and walked
//! against the `schema`; the first problem found becomes one
//! error of the form `<file>:<line>: <key.path>: <problem>`. Each file is read
//! on its own so line numbers always refer to the file named.

use super::schema::{self, Kind};
use super::{ConfigError, WorkerConfig};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use toml_edit::{ImDocument, Item, Key, TableLike, Value};

/// One scalar or list setting, such as `circuit.window_secs = 60`.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// `section.key`.
    pub path: String,
    pub value: Json,
}

/// What one file (or the environment) contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    pub settings: Vec<Setting>,
    /// `Some` when the layer lists workers: it then replaces lower layers' list.
    pub workers: Option<Vec<WorkerConfig>>,
}

/// Which file a layer comes from, which decides the sections it may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's own config (or the lab's): every section.
    User,
    /// A project's `.rch/config.toml`: only what is safe for a repository to
    /// decide. Where builds go and how SSH authenticates stay the user's, so
    /// a cloned repository cannot redirect builds or swap the ssh config.
    Project,
}

/// Sections a project config may set.
const PROJECT_SECTIONS: &[&str] = &["general", "transfer", "env"];

/// Parse and validate one file's text.
pub fn read_layer(text: &str, file: &Path, scope: Scope) -> Result<Layer, ConfigError> {
    let reader = Reader { text, file, scope };
    let doc = ImDocument::parse(text).map_err(|e| reader.syntax_error(&e))?;
    reader.root(doc.as_table())
}

/// The 1-based line holding a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A key name as it appears in messages: quoted when not a bare TOML key.
fn shown_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.escape_default())
    }
}

/// How a TOML item is named in messages.
fn describe_item(item: &Item) -> &'static str {
    match item {
        Item::Value(value) => schema::describe(value),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::None => "nothing",
    }
}

/// One table of worker keys, with where its header (or inline table) starts.
struct WorkerEntry<'a> {
    table: &'a dyn TableLike,
    span: Option<Range<usize>>,
}

struct Reader<'a> {
    text: &'a str,
    file: &'a Path,
    scope: Scope,
}

impl Reader<'_> {
    fn error(&self, span: Option<Range<usize>>, key_path: &str, problem: &str) -> ConfigError {
        let line = span.map(|s| line_at(self.text, s.start)).unwrap_or(1);
        ConfigError::new(format!(
            "{}:{line}: {key_path}: {problem}",
            self.file.display()
        ))
    }

    fn syntax_error(&self, err: &toml_edit::TomlError) -> ConfigError {
        let line = err.span().map(|s| line_at(self.text, s.start)).unwrap_or(1);
        // The parser's message can span several lines; the contract is one line.
        let message = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError::new(format!(
            "{}:{line}: invalid TOML: {message}",
            self.file.display()
        ))
    }

    fn root(&self, root: &toml_edit::Table) -> Result<Layer, ConfigError> {
        let mut layer = Layer::default();
        for (name, _) in root.iter() {
            let Some((key, item)) = root.get_key_value(name) else {
                continue;
            };
            if self.scope == Scope::Project && !PROJECT_SECTIONS.contains(&name) {
                let problem = format!(
                    "not allowed in a project config (it may set [{}]); put it in your user config",
                    PROJECT_SECTIONS.join("], [")
                );
                return Err(self.error(key.span(), &shown_key(name), &problem));
            }
            if name == schema::WORKERS {
                layer.workers = Some(self.workers(key, item)?);
            } else if let Some(keys) = schema::section(name) {
                self.section(name, key, item, keys, &mut layer)?;
            } else {
                let what = if item.is_table_like() {
                    "unknown section"
                } else {
                    "unknown key"
                };
                let problem = format!("{what} (valid sections: {})", schema::section_names());
                return Err(self.error(key.span(), &shown_key(name), &problem));
            }
        }
        Ok(layer)
    }

    fn section(
        &self,
        name: &str,
        key: &Key,
        item: &Item,
        keys: &'static [schema::Key],
        layer: &mut Layer,
    ) -> Result<(), ConfigError> {
        let Some(table) = item.as_table_like() else {
            let problem = format!("expected a table, got {}", describe_item(item));
            return Err(self.error(key.span(), name, &problem));
        };
        for (child_name, _) in table.iter() {
            let Some((child_key, child)) = table.get_key_value(child_name) else {
                continue;
            };
            let path = format!("{name}.{}", shown_key(child_name));
            let Some(spec) = schema::find(keys, child_name) else {
                let problem = format!(
                    "unknown key (valid keys in [{name}]: {})",
                    schema::names(keys)
                );
                return Err(self.error(child_key.span(), &path, &problem));
            };
            let value = self.value(&path, child_key, child, spec.kind)?;
            layer.settings.push(Setting { path, value });
        }
        if name == "team" && table.contains_key("redis_url") && !table.contains_key("name") {
            let problem = "redis_url needs a name (the team's namespace), e.g. name = \"backend\"";
            return Err(self.error(key.span(), "team.name", problem));
        }
        Ok(())
    }

    /// Check one key's item against its kind.
    fn value(&self, path: &str, key: &Key, item: &Item, kind: Kind) -> Result<Json, ConfigError> {
        let span = key.span().or_else(|| item.span());
        let Some(value) = item.as_value() else {
            let problem = format!(
                "expected {}, got {}",
                schema::expectation(kind),
                describe_item(item)
            );
            return Err(self.error(span, path, &problem));
        };
        schema::check(kind, value).map_err(|problem| match problem.element {
            Some(index) => {
                let element_span = value
                    .as_array()
                    .and_then(|a| a.get(index))
                    .and_then(Value::span)
                    .or(span);
                self.error(element_span, &format!("{path}[{index}]"), &problem.message)
            }
            None => self.error(span, path, &problem.message),
        })
    }

    fn workers(&self, key: &Key, item: &Item) -> Result<Vec<WorkerConfig>, ConfigError> {
        let entries = self.worker_entries(key, item)?;
        let mut first_index_of_id: HashMap<String, usize> = HashMap::new();
        let mut workers = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let worker = self.worker(index, entry.table, entry.span.clone().or(key.span()))?;
            if first_index_of_id.contains_key(&worker.id) {
                let id_span = entry.table.key("id").and_then(Key::span);
                let problem = format!("duplicate worker id \"{}\"", worker.id);
                return Err(self.error(id_span, &format!("workers[{index}].id"), &problem));
            }
            first_index_of_id.insert(worker.id.clone(), index);
            workers.push(worker);
        }
        Ok(workers)
    }

    /// The worker tables, written either as `[[workers]]` or as an inline array.
    fn worker_entries<'d>(
        &self,
        key: &Key,
        item: &'d Item,
    ) -> Result<Vec<WorkerEntry<'d>>, ConfigError> {
        match item {
            Item::ArrayOfTables(tables) => Ok(tables
                .iter()
                .map(|t| WorkerEntry {
                    table: t as &dyn TableLike,
                    span: t.span(),
                })
                .collect()),
            Item::Value(Value::Array(array)) => array
                .iter()
                .enumerate()
                .map(|(index, value)| match value.as_inline_table() {
                    Some(t) => Ok(WorkerEntry {
                        table: t as &dyn TableLike,
                        span: t.span(),
                    }),
                    None => {
                        let problem = format!("expected a table, got {}", schema::describe(value));
                        let path = format!("workers[{index}]");
                        Err(self.error(value.span().or(key.span()), &path, &problem))
                    }
                })
                .collect(),
            other => {
                let problem = format!(
                    "expected an array of tables ([[workers]]), got {}",
                    describe_item(other)
                );
                Err(self.error(key.span(), schema::WORKERS, &problem))
            }
        }
    }

    fn worker(
        &self,
        index: usize,
        table: &dyn TableLike,
        span: Option<Range<usize>>,
    ) -> Result<WorkerConfig, ConfigError> {
        let mut fields = worker_defaults();
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            let path = format!("workers[{index}].{}", shown_key(name));
            let Some(spec) = schema::find(schema::WORKER, name) else {
                let problem = format!(
                    "unknown key (valid keys in [[workers]]: {})",
                    schema::names(schema::WORKER)
                );
                return Err(self.error(key.span(), &path, &problem));
            };
            let value = self.value(&path, key, item, spec.kind)?;
            fields.insert(name.to_string(), value);
        }
        for required in schema::WORKER_REQUIRED {
            if !table.contains_key(required) {
                let path = format!("workers[{index}].{required}");
                let problem = format!(
                    "missing (every worker needs {})",
                    schema::WORKER_REQUIRED.join(" and ")
                );
                return Err(self.error(span, &path, &problem));
            }
        }
        serde_json::from_value(Json::Object(fields))
            .map_err(|e| self.error(span, &format!("workers[{index}]"), &e.to_string()))
    }
}

/// The JSON fields of a worker with every optional key at its default.
fn worker_defaults() -> Map<String, Json> {
    match serde_json::to_value(WorkerConfig::new("", "")) {
        Ok(Json::Object(fields)) => fields,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Layer, String> {
        read_layer(text, Path::new("/c.toml"), Scope::User).map_err(|e| e.message)
    }

    #[test]
    fn settings_keep_their_paths() {
        let layer = read("[circuit]\nwindow_secs = 9\n").unwrap();
        assert_eq!(
            layer.settings,
            vec![Setting {
                path: "circuit.window_secs".into(),
                value: Json::from(9)
            }]
        );
        assert_eq!(layer.workers, None);
    }

    #[test]
    fn unknown_key_names_line_and_valid_keys() {
        let err =
            read("[general]\nenabled = true\n\n[circuit]\nfailur_threshold = 5\n").unwrap_err();
        assert!(
            err.starts_with(
                "/c.toml:5: circuit.failur_threshold: unknown key (valid keys in [circuit]: failure_threshold, "
            ),
            "{err}"
        );
    }

    #[test]
    fn project_scope_keeps_ssh_and_workers_for_the_user() {
        let text = "[general]\nenabled = true\n\n[ssh]\nconfig_file = \"/tmp/evil\"\n";
        let err = read_layer(text, Path::new("/p/.rch/config.toml"), Scope::Project)
            .unwrap_err()
            .message;
        assert!(
            err.starts_with("/p/.rch/config.toml:4: ssh: not allowed in a project config"),
            "{err}"
        );
        let workers = "[[workers]]\nid = \"x\"\nhost = \"evil\"\n";
        assert!(read_layer(workers, Path::new("/p"), Scope::Project).is_err());
        assert!(read_layer(text, Path::new("/u"), Scope::User).is_ok());
    }

    #[test]
    fn unknown_section_is_named() {
        let err = read("\n[gneral]\nenabled = true\n").unwrap_err();
        assert!(
            err.starts_with("/c.toml:2: gneral: unknown section"),
            "{err}"
        );
    }

    #[test]
    fn dotted_and_inline_sections_are_accepted() {
        let layer = read("general.enabled = false\nssh = { connect_timeout_secs = 2 }\n").unwrap();
        assert_eq!(layer.settings.len(), 2);
    }

    #[test]
    fn workers_get_defaults_and_inline_form_works() {
        let layer = read("workers = [{ id = \"a\", host = \"h\", slots = 2 }]\n").unwrap();
        let workers = layer.workers.unwrap();
        assert_eq!(workers[0].slots, 2);
        assert_eq!(workers[0].priority, 100);
        assert_eq!(workers[0].remote_base, "~/.cache/rch/builds");
    }

    #[test]
    fn duplicate_worker_id_points_at_second_id() {
        let text =
            "[[workers]]\nid = \"w1\"\nhost = \"a\"\n\n[[workers]]\nhost = \"b\"\nid = \"w1\"\n";
        let err = read(text).unwrap_err();
        assert_eq!(err, "/c.toml:7: workers[1].id: duplicate worker id \"w1\"");
    }

    #[test]
    fn missing_host_points_at_header() {
        let err = read("[general]\n\n[[workers]]\nid = \"w1\"\n").unwrap_err();
        assert_eq!(
            err,
            "/c.toml:3: workers[0].host: missing (every worker needs id and host)"
        );
    }

    #[test]
    fn list_element_error_points_at_element() {
        let err = read("[transfer]\nexclude = [\n  \"a\",\n  7,\n]\n").unwrap_err();
        assert_eq!(
            err,
            "/c.toml:4: transfer.exclude[1]: expected a string, got an integer"
        );
    }

    #[test]
    fn syntax_errors_are_one_line_with_a_line_number() {
        let err = read("[general]\nenabled = \n").unwrap_err();
        assert!(err.starts_with("/c.toml:2: invalid TOML: "), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn odd_key_names_are_quoted() {
        let err = read("\"a b\" = 1\n").unwrap_err();
        assert!(err.starts_with("/c.toml:1: \"a b\": unknown key"), "{err}");
    }
}
