//! Merging a test's extra TOML into the lab's rch config layer.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

/// `base` with `extra` laid over it (see `TestEnv::write_config`).
pub fn merge(base: &str, extra: &str) -> String {
    let mut doc: DocumentMut = base.parse().expect("the lab's config is TOML");
    let extra: DocumentMut = extra
        .parse()
        .unwrap_or_else(|e| panic!("extra test config is not TOML: {e}\n{extra}"));
    merge_tables(doc.as_table_mut(), extra.as_table());
    doc.to_string()
}

fn merge_tables(base: &mut Table, extra: &Table) {
    for (key, item) in extra.iter() {
        match (base.get_mut(key), item) {
            (Some(Item::Table(into)), Item::Table(from)) => merge_tables(into, from),
            (Some(Item::ArrayOfTables(into)), Item::ArrayOfTables(from)) => {
                merge_entries_by_id(into, from)
            }
            _ => {
                base.insert(key, item.clone());
            }
        }
    }
}

/// Entries with an `id` already present change that entry; others are added.
fn merge_entries_by_id(base: &mut ArrayOfTables, extra: &ArrayOfTables) {
    for entry in extra.iter() {
        let id = entry.get("id").and_then(|v| v.as_str());
        let existing = base
            .iter_mut()
            .find(|t| id.is_some() && t.get("id").and_then(|v| v.as_str()) == id);
        match existing {
            Some(table) => merge_tables(table, entry),
            None => base.push(entry.clone()),
        }
    }
}
