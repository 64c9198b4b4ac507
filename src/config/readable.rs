//! Files the configuration names — each worker's `identity_file` and the
//! `[ssh] config_file` — must exist and be readable: ssh skips a key it
//! cannot read with a warning nobody sees and then fails to authenticate.
//! Checked by `rch config validate`, with file, line and key like every
//! other configuration error.

use super::{ConfigError, Loaded, Origin};
use std::path::{Path, PathBuf};

/// The first named file that cannot be read, as a configuration error.
pub fn check(loaded: &Loaded) -> Result<(), ConfigError> {
    if let Some(file) = &loaded.config.ssh.config_file {
        readable(loaded, "ssh.config_file", "config_file", file)?;
    }
    for (index, worker) in loaded.config.workers.iter().enumerate() {
        if let Some(key) = &worker.identity_file {
            let key_path = format!("workers[{index}].identity_file");
            readable(loaded, &key_path, "identity_file", key)?;
        }
    }
    Ok(())
}

fn readable(loaded: &Loaded, key_path: &str, key: &str, value: &Path) -> Result<(), ConfigError> {
    let raw = value.to_string_lossy();
    let path = crate::paths::expand_tilde(&raw);
    let problem = match std::fs::File::open(&path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => return Ok(()),
        Ok(_) => "is not a file".to_string(),
        Err(e) => format!("cannot read {}: {e}", path.display()),
    };
    let fix = match key {
        "identity_file" => "ssh would skip the key and fail to authenticate; fix the path, or remove the key to let ssh's own config choose",
        _ => "fix the path, or remove the key to use ~/.ssh/config",
    };
    let at = where_set(loaded, key_path, key, &raw);
    Err(ConfigError::new(format!(
        "{at}{key_path}: {problem} ({fix})"
    )))
}

/// `file:line: ` of the line setting `key` to `value`, when a file set it.
fn where_set(loaded: &Loaded, key_path: &str, key: &str, value: &str) -> String {
    let file: PathBuf = match loaded.origin(key_path) {
        Origin::File(p) | Origin::Lab(p) => p,
        other => return format!("{other}: "),
    };
    let line = std::fs::read_to_string(&file).ok().and_then(|text| {
        text.lines()
            .position(|l| {
                let l = l.trim_start();
                l.starts_with(key) && l.contains(value)
            })
            .map(|i| i + 1)
    });
    match line {
        Some(n) => format!("{}:{n}: ", file.display()),
        None => format!("{}: ", file.display()),
    }
}
