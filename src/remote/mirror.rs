//! Making a remote build see the client's paths: the command line that runs
//! a build on the worker at the client's own absolute path (a small fixed
//! wrapper script; arguments are positional parameters, never parsed by a
//! shell), and the cargo flags that map the worker's project dir back to the
//! client's in what rustc writes. The files stay where the worker keeps the
//! project ([`super::layout::build_dir`]); only what the build sees changes.
//!
//! Running at the client's path uses a mount namespace of the build's own
//! in which the worker's project dir is bound at that path: as root directly
//! (the path is created on the worker, empty), otherwise in an unprivileged
//! user namespace, where a missing path is made by covering its nearest
//! existing ancestor with a tmpfs that carries binds of everything that was
//! there. Nothing outside the build's namespace changes, so concurrent builds
//! of different clients at the same path never meet.
//!
//! The wrapper runs as the command, so it cannot report through the run
//! script's status records: before a mirrored build, [`preflight`] runs the
//! same wrapper once around `command -v <tool>`. A worker that cannot mirror
//! (no `unshare`, no user namespaces, not root) or lacks the tool is then a
//! routing fact ([`FailureKind::MirrorUnavailable`], [`FailureKind::MissingTool`]),
//! never the build's result and never a breaker charge.

use super::ssh::Connection;
use super::{FailureKind, RemoteFailure};
use std::ffi::OsString;
use std::path::Path;

/// `$1` the worker's project dir (relative paths are relative to the home),
/// `$2` the client's path, `$3` the working directory relative to it, then
/// the command. Chooses how to get a private mount namespace.
const AT_CLIENT_PATH: &str = r#"src=$1; at=$2; rel=$3; shift 3
case $src in /*) ;; *) src=$HOME/$src ;; esac
fail() { printf 'rch: cannot mirror the client path: %s\n' "$1" >&2; exit 125; }
command -v unshare >/dev/null 2>&1 || fail 'unshare not found on the worker'
if [ "$(id -u)" = 0 ]; then
  exec unshare --mount --propagation private sh -c "$RCH_BIND" rch-bind "$src" "$at" "$rel" - "$@"
fi
unshare --user --map-root-user --mount true 2>/dev/null ||
  fail 'the worker user is not root and user namespaces are not available'
exec unshare --user --map-root-user --mount --propagation private \
  sh -c "$RCH_BIND" rch-bind "$src" "$at" "$rel" "$(id -u):$(id -g)" "$@""#;

/// Runs as (namespace) root in the build's own mount namespace: make `$2`
/// exist, bind `$1` there, enter `$2/$3`, and run the command, back as the
/// worker user (`$4` = uid:gid) when a user namespace was needed.
const BIND: &str = r#"src=$1; at=$2; rel=$3; user=$4; shift 4
fail() { printf 'rch: cannot mirror the client path: %s\n' "$1" >&2; exit 125; }
if ! mkdir -p -- "$at" 2>/dev/null; then
  p=$at
  while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done
  [ "$p" = / ] && fail "cannot create $at on the worker"
  stage=$(mktemp -d) && mount -t tmpfs rch-mirror "$stage" || fail "cannot create $at on the worker"
  for e in "$p"/* "$p"/.[!.]* "$p"/..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=${e##*/}
    if [ -L "$e" ]; then ln -s -- "$(readlink -- "$e")" "$stage/$n"
    elif [ -d "$e" ]; then mkdir -- "$stage/$n" && mount --rbind -- "$e" "$stage/$n"
    else : > "$stage/$n" && mount --bind -- "$e" "$stage/$n"
    fi || fail "cannot map $e"
  done
  mount --rbind -- "$stage" "$p" && mkdir -p -- "$at" || fail "cannot create $at on the worker"
fi
mount --bind -- "$src" "$at" || fail "cannot bind the project at $at"
cd -- "$at/$rel" || fail "cannot enter $at/$rel"
PWD=$at/$rel; export PWD
unset RCH_BIND
if [ "$user" != - ] && unshare --user --map-user="${user%:*}" --map-group="${user#*:}" true 2>/dev/null; then
  exec unshare --user --map-user="${user%:*}" --map-group="${user#*:}" "$@"
fi
exec "$@""#;

/// The command that runs `argv` on the worker with the project dir
/// `remote_dir` seen at `client_root`, in `client_root/rel`. The remote run
/// script must start it in `remote_dir` itself.
pub fn at_client_path(
    argv: &[OsString],
    remote_dir: &str,
    client_root: &Path,
    rel: &Path,
) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        "env".into(),
        format!("RCH_BIND={BIND}").into(),
        "sh".into(),
        "-c".into(),
        AT_CLIENT_PATH.into(),
        "rch-mirror".into(),
        remote_dir.into(),
        client_root.as_os_str().to_owned(),
        rel_arg(rel),
    ];
    out.extend(argv.iter().cloned());
    out
}

/// The cargo command `argv` and extra environment with the worker's
/// `remote_dir` (absolute) mapped to `client_root` in everything rustc writes
/// (debug info, `file!()`, panics). The same mapping on every build, so a
/// warm target dir stays warm. With `RUSTFLAGS` set (forwarded in `env`) the
/// mapping joins them as `CARGO_ENCODED_RUSTFLAGS`; otherwise it is a
/// `build.rustflags` entry, which joins those of the config files. The
/// command stays cargo itself, so the run script checks the real tool.
pub fn remapped(
    argv: &[OsString],
    env: &mut Vec<(String, String)>,
    remote_dir: &str,
    client_root: &Path,
) -> Vec<OsString> {
    let remap = format!("--remap-path-prefix={remote_dir}={}", client_root.display());
    if let Some(at) = env.iter().position(|(k, _)| k == "RUSTFLAGS") {
        let (_, flags) = env.remove(at);
        let mut words: Vec<&str> = flags.split_whitespace().collect();
        words.push(&remap);
        env.push(("CARGO_ENCODED_RUSTFLAGS".into(), words.join("\x1f")));
        return argv.to_vec();
    }
    if remap.contains(['"', '\\']) {
        return argv.to_vec();
    }
    let leading = match argv.get(1).and_then(|a| a.to_str()) {
        Some(toolchain) if toolchain.starts_with('+') => 2,
        _ => 1,
    };
    let mut out: Vec<OsString> = argv[..leading.min(argv.len())].to_vec();
    out.push("--config".into());
    out.push(format!("build.rustflags=[\"{remap}\"]").into());
    out.extend(argv[leading.min(argv.len())..].iter().cloned());
    out
}

/// The worker's home directory (where relative remote dirs live), asked
/// once and remembered in rch's cache dir.
pub async fn remote_home(conn: &Connection) -> Option<String> {
    let file = crate::paths::cache_dir()
        .join("worker-homes")
        .join(conn.worker_id());
    if let Ok(home) = std::fs::read_to_string(&file) {
        if home.starts_with('/') {
            return Some(home);
        }
    }
    let output = conn
        .session()
        .raw_command("printf %s \"$HOME\"")
        .stdin(openssh::Stdio::null())
        .output()
        .await
        .ok()?;
    let home = String::from_utf8(output.stdout).ok()?;
    if !home.starts_with('/') {
        return None;
    }
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&file, &home);
    Some(home)
}

/// Exit code of the preflight when the worker lacks the tool.
const NO_TOOL: i32 = 127;

/// Check, on the worker, that a build of `tool` can run at `client_root`:
/// the same wrapper as the build, around `command -v <tool>`.
pub async fn preflight(
    conn: &Connection,
    remote_dir: &str,
    client_root: &Path,
    rel: &Path,
    tool: &str,
) -> Result<(), RemoteFailure> {
    let probe: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        format!("command -v \"$1\" >/dev/null 2>&1 || exit {NO_TOOL}").into(),
        "sh".into(),
        tool.into(),
    ];
    let argv = at_client_path(&probe, remote_dir, client_root, rel);
    let mut args: Vec<String> = vec![remote_dir.to_string()];
    args.extend(argv.iter().map(|w| w.to_string_lossy().into_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let command = super::shell::login_shell_command(
        "dir=$1; shift; case $dir in /*) ;; *) dir=$HOME/$dir ;; esac; cd -- \"$dir\" && exec \"$@\"",
        &refs,
    );
    let worker = conn.worker_id();
    let output = conn
        .session()
        .raw_command(command)
        .stdin(openssh::Stdio::null())
        .stdout(openssh::Stdio::null())
        .stderr(openssh::Stdio::piped())
        .output()
        .await
        .map_err(|e| RemoteFailure::new(FailureKind::ConnectionLost, worker, e.to_string()))?;
    match output.status.code() {
        Some(0) => Ok(()),
        Some(NO_TOOL) => Err(RemoteFailure::new(
            FailureKind::MissingTool,
            worker,
            format!("{tool}: command not found on the worker"),
        )),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .find_map(|l| l.strip_prefix("rch: cannot mirror the client path: "))
                .unwrap_or("the mirror wrapper failed");
            Err(RemoteFailure::new(
                FailureKind::MirrorUnavailable,
                worker,
                format!("cannot mirror the client's paths: {reason}"),
            ))
        }
    }
}

fn rel_arg(rel: &Path) -> OsString {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.as_os_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[OsString]) -> Vec<String> {
        v.iter().map(|w| w.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn remap_goes_into_config_or_the_encoded_rustflags() {
        let argv: Vec<OsString> = ["cargo", "+stable", "build"].map(OsString::from).to_vec();
        let mut env = Vec::new();
        let cmd = words(&remapped(
            &argv,
            &mut env,
            "/w/p",
            Path::new("/home/me/p q"),
        ));
        assert_eq!(
            cmd,
            [
                "cargo",
                "+stable",
                "--config",
                "build.rustflags=[\"--remap-path-prefix=/w/p=/home/me/p q\"]",
                "build"
            ]
        );
        let mut env = vec![("RUSTFLAGS".to_string(), " -C  opt-level=1 ".to_string())];
        let cmd = remapped(&argv, &mut env, "/w/p", Path::new("/c"));
        assert_eq!(cmd, argv);
        assert_eq!(
            env,
            [(
                "CARGO_ENCODED_RUSTFLAGS".to_string(),
                "-C\x1fopt-level=1\x1f--remap-path-prefix=/w/p=/c".to_string()
            )]
        );
    }

    #[test]
    fn at_client_path_passes_the_command_verbatim() {
        let argv: Vec<OsString> = ["make", "-C", "a b"].map(OsString::from).to_vec();
        let cmd = words(&at_client_path(
            &argv,
            "d",
            Path::new("/c/p"),
            Path::new(""),
        ));
        assert_eq!(cmd[0], "env");
        assert!(cmd[1].starts_with("RCH_BIND="));
        assert_eq!(&cmd[6..9], ["d", "/c/p", "."]);
        assert_eq!(&cmd[9..], ["make", "-C", "a b"]);
    }
}
