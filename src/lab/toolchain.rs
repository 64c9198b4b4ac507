//! Lab workers whose Rust toolchain is not the client's, for trying (and
//! testing) a fleet that is not uniform: a worker without a toolchain (its
//! view of the rustup and cargo homes is empty) and a worker whose `rustc`
//! reports another release (a shim first on its login PATH that forwards
//! everything else to the real compiler).

use super::isolate::{toolchain_dirs, Isolation};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The Rust toolchain a lab worker offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LabToolchain {
    /// The client's own.
    #[default]
    Client,
    /// None: the rustup and cargo homes are hidden from the worker.
    Hidden,
    /// The client's, but `rustc -vV` reports `release` (and another commit).
    Reports { release: String },
}

/// The commit a shimmed rustc reports: not the client's.
const SHIM_COMMIT: &str = "051478957371ee0084a7c0913941d2a8c4757bb9";

/// Apply `toolchain` to a worker about to start: what its sessions may see
/// and what its login home (already written) puts on PATH.
pub fn apply(
    toolchain: &LabToolchain,
    home: &Path,
    mut isolation: Isolation,
) -> anyhow::Result<Isolation> {
    match toolchain {
        LabToolchain::Client => {}
        LabToolchain::Hidden => {
            let user_home = directories::BaseDirs::new().map(|b| b.home_dir().to_path_buf());
            let dirs = toolchain_dirs(user_home.as_deref());
            isolation.visible.retain(|v| !dirs.contains(v));
            isolation.hidden.extend(dirs);
        }
        LabToolchain::Reports { release } => write_rustc_shim(home, release)?,
    }
    Ok(isolation)
}

/// `$HOME/shim/rustc`, put first on PATH by the login profile.
fn write_rustc_shim(home: &Path, release: &str) -> anyhow::Result<()> {
    let dir = home.join("shim");
    std::fs::create_dir_all(&dir)?;
    let shim = dir.join("rustc");
    let text = format!(
        r#"#!/bin/sh
# rch lab: a rustc that says it is {release}; everything else goes to the real one.
real=$CARGO_HOME/bin/rustc
verbose=; version=
for a in "$@"; do
  case $a in -vV|-Vv) verbose=1; version=1 ;; -V|--version) version=1 ;; -v|--verbose) verbose=1 ;; esac
done
if [ -n "$version" ]; then
  echo "rustc {release} ({short} 2024-07-21)"
  if [ -n "$verbose" ]; then
    host=$("$real" -vV | sed -n 's/^host: //p')
    printf 'binary: rustc\ncommit-hash: {commit}\ncommit-date: 2024-07-21\nhost: %s\nrelease: {release}\n' "$host"
  fi
  exit 0
fi
exec "$real" "$@"
"#,
        short = &SHIM_COMMIT[..9],
        commit = SHIM_COMMIT,
    );
    std::fs::write(&shim, text).with_context(|| format!("writing {}", shim.display()))?;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    let profile = home.join(".profile");
    let mut text = std::fs::read_to_string(&profile).unwrap_or_default();
    text.push_str("export PATH=\"$HOME/shim:$PATH\"\n");
    std::fs::write(&profile, text).with_context(|| format!("writing {}", profile.display()))?;
    Ok(())
}
