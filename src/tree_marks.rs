//! The client's side of the daemon's tree watch ([`crate::daemon::trees`]):
//! a build asks the daemon whether its project tree changed since the mark
//! kept beside its remembered push, and walks the tree only when the daemon
//! cannot vouch that it did not.
//!
//! A mark file says: the daemon gave this mark before a walk, and the tree
//! then was the one the remembered push (its token) holds, under these
//! rules. It is written after the remembered push and removed before it,
//! so it never vouches for a push that is not remembered. A walk that found
//! a file with several names (hard links, changeable from outside the tree
//! without an event here) writes no mark.

use crate::protocol::{Request, Response, TreeAnswer, TreeMark, TreeQuery};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a build waits for the daemon's answer before walking anyway.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// What a mark file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    /// The token of the remembered push the walk matched.
    token: String,
    /// The rules the walk applied ([`Marks::rules`]).
    rules: String,
    mark: TreeMark,
}

/// One build's question about its tree, and what to remember after it.
#[derive(Debug)]
pub struct Marks {
    file: PathBuf,
    rules: String,
    saved: Option<Saved>,
    answer: TreeAnswer,
}

impl Marks {
    /// Ask the daemon on `socket` about the tree at `root` (pushed under the
    /// exclude `patterns`), since the mark kept beside the remembered push
    /// in `state_file`. Any failure is an answer of "walk".
    pub async fn ask(
        socket: &Path,
        state_file: &Path,
        root: &Path,
        patterns: &[String],
        respect_gitignore: bool,
    ) -> Marks {
        let file = mark_file(state_file);
        let rules = rules_key(root, patterns, respect_gitignore);
        let saved = load(&file).filter(|s| s.rules == rules);
        let walk = TreeAnswer::Walk { mark: None };
        let answer = match root.to_str() {
            Some(root) => {
                let query = TreeQuery {
                    root: root.to_string(),
                    excludes: patterns.to_vec(),
                    since: saved.as_ref().map(|s| s.mark.clone()),
                };
                let asked = tokio::time::timeout(ASK_TIMEOUT, call(socket, query)).await;
                asked.ok().flatten().unwrap_or(walk)
            }
            None => walk,
        };
        Marks {
            file,
            rules,
            saved,
            answer,
        }
    }

    /// Marks that vouch for nothing and remember nothing.
    pub fn none(state_file: &Path) -> Marks {
        Marks {
            file: mark_file(state_file),
            rules: String::new(),
            saved: None,
            answer: TreeAnswer::Walk { mark: None },
        }
    }

    /// The token of the remembered push, when the daemon vouches that the
    /// tree is still the one that push holds (no walk needed).
    pub fn vouched(&self) -> Option<&str> {
        match (&self.answer, &self.saved) {
            (TreeAnswer::Unchanged, Some(saved)) => Some(&saved.token),
            _ => None,
        }
    }

    /// One word for logs: `unchanged`, `walk` (watched: the walk gets a
    /// mark) or `unwatched`.
    pub fn label(&self) -> &'static str {
        match (&self.answer, self.vouched()) {
            (_, Some(_)) => "unchanged",
            (TreeAnswer::Walk { mark: Some(_) }, _) => "walk",
            _ => "unwatched",
        }
    }

    /// The remembered push (`token`) now matches the tree as walked after
    /// this question: keep the daemon's new mark for the next build, unless
    /// the walk found files with several names.
    pub fn remember(&self, token: &str, linked: bool) {
        let TreeAnswer::Walk { mark: Some(mark) } = &self.answer else {
            return;
        };
        if linked {
            forget(&self.file);
            return;
        }
        let saved = Saved {
            token: token.to_string(),
            rules: self.rules.clone(),
            mark: mark.clone(),
        };
        if let Err(e) = save(&self.file, &saved) {
            tracing::debug!(error = %e, file = %self.file.display(), "cannot save the tree mark");
        }
    }

    /// Drop the mark (the remembered push is about to stop being true).
    pub fn forget(&self) {
        forget(&self.file);
    }
}

async fn call(socket: &Path, query: TreeQuery) -> Option<TreeAnswer> {
    let mut client = crate::client::Client::connect(socket).await.ok()?;
    match client.call(Request::Tree(query)).await {
        Ok(Response::Tree(answer)) => Some(answer),
        _ => None,
    }
}

/// The mark file beside a remembered push.
fn mark_file(state_file: &Path) -> PathBuf {
    state_file.with_extension("mark")
}

/// What decides the walk besides the files: the root and the rules.
fn rules_key(root: &Path, patterns: &[String], respect_gitignore: bool) -> String {
    let mut hasher = Sha256::new();
    hasher.update(root.as_os_str().as_encoded_bytes());
    for p in patterns {
        hasher.update([0]);
        hasher.update(p.as_bytes());
    }
    hasher.update([u8::from(respect_gitignore)]);
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn load(file: &Path) -> Option<Saved> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

fn save(file: &Path, saved: &Saved) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("marktmp{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(saved).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, file)
}

fn forget(file: &Path) {
    let _ = std::fs::remove_file(file);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(file: &Path, answer: TreeAnswer, saved: Option<Saved>) -> Marks {
        Marks {
            file: file.to_path_buf(),
            rules: "r".into(),
            saved,
            answer,
        }
    }

    #[test]
    fn only_an_unchanged_answer_for_a_kept_mark_vouches_and_linked_files_keep_no_mark() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.mark");
        let mark = TreeMark {
            daemon: "d".into(),
            watch: 1,
            seq: 7,
        };
        let given = marks(
            &file,
            TreeAnswer::Walk {
                mark: Some(mark.clone()),
            },
            None,
        );
        assert_eq!(given.vouched(), None);
        given.remember("tok", false);
        let saved = load(&file).expect("kept");
        assert_eq!((saved.token.as_str(), &saved.mark), ("tok", &mark));
        assert_eq!(
            marks(&file, TreeAnswer::Unchanged, Some(saved.clone())).vouched(),
            Some("tok")
        );
        assert_eq!(
            marks(&file, TreeAnswer::Walk { mark: None }, Some(saved)).vouched(),
            None
        );
        given.remember("tok", true);
        assert!(
            !file.exists(),
            "a tree with hard links is never vouched for"
        );
        assert_ne!(
            rules_key(Path::new("/a"), &["x".into()], true),
            rules_key(Path::new("/a"), &["x".into()], false)
        );
    }
}
