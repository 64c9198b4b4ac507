//! The files the daemon's configuration comes from (the user file, or the
//! one `RCH_CONFIG` names, and the lab file), and a stamp of them.
//!
//! A client names the files it reads with every lease request, and the
//! daemon compares them, and their stamp, with those of the configuration it
//! runs: a file edited, created or removed, or another `RCH_CONFIG`, makes
//! it read them again before it answers. No manual reload is needed.

use super::layers::{load_with, Sources};
use super::{Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The user and lab layers' files, as one process sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonFiles {
    pub user_file: PathBuf,
    /// Named by `RCH_CONFIG`: a missing file is an error.
    #[serde(default)]
    pub user_file_required: bool,
    #[serde(default)]
    pub lab_file: Option<PathBuf>,
}

/// What a file is now: changed when any part differs. `None`: no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DaemonFiles {
    /// The files this process reads (its environment, the XDG places).
    pub fn of_this_process() -> DaemonFiles {
        Sources::from_process(Path::new("/")).into()
    }

    /// A stamp of every file, in order.
    pub fn stamp(&self) -> Vec<Option<FileStamp>> {
        std::iter::once(&self.user_file)
            .chain(self.lab_file.as_ref())
            .map(|path| stamp(path))
            .collect()
    }

    /// The daemon's configuration from these files (and this process's
    /// `RCH_*` environment): the user and lab layers, no project's.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut sources = Sources::from_process(Path::new("/"));
        sources.user_file.clone_from(&self.user_file);
        sources.user_file_required = self.user_file_required;
        sources.lab_file.clone_from(&self.lab_file);
        Ok(load_with(&sources)?.config)
    }
}

impl From<Sources> for DaemonFiles {
    fn from(s: Sources) -> DaemonFiles {
        DaemonFiles {
            user_file: s.user_file,
            user_file_required: s.user_file_required,
            lab_file: s.lab_file,
        }
    }
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_changes_with_an_edit_a_new_file_and_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let files = DaemonFiles {
            user_file: dir.path().join("config.toml"),
            user_file_required: false,
            lab_file: Some(dir.path().join("lab.toml")),
        };
        let none = files.stamp();
        assert_eq!(none, vec![None, None]);
        std::fs::write(&files.user_file, "[general]\n").unwrap();
        let created = files.stamp();
        assert_ne!(created, none);
        assert_eq!(files.stamp(), created, "unchanged files, same stamp");
        std::fs::write(&files.user_file, "[general]\nenabled = true\n").unwrap();
        assert_ne!(files.stamp(), created);
        std::fs::remove_file(&files.user_file).unwrap();
        assert_eq!(files.stamp(), none);
    }
}
