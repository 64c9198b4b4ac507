//! Shell wrappers ("shims"): small POSIX sh scripts named after build tools
//! that send the command through `rch exec`, and the PATH logic around them.
//!
//! A shim is deliberately dumb and cheap: it finds the real tool on PATH with
//! its own directory removed (at run time, because PATH changes), runs that
//! directly whenever rch must stay out of the way (inside rch, `RCH_DISABLE`,
//! no rch binary, an obviously local cargo subcommand), and otherwise hands
//! the command to `rch exec`, which classifies it before anything else.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The tools wrapped when `rch wrap install` is given no `--tools`.
pub const DEFAULT_TOOLS: &[&str] = &[
    "cargo", "make", "cmake", "ninja", "meson", "cc", "gcc", "g++", "clang", "clang++",
];

/// The second line of every shim; files without it are never touched.
pub const SHIM_MARKER: &str =
    "# rch-shim: written by `rch wrap install`; `rch wrap uninstall` removes it.";

/// Cargo subcommands that never build anything a worker could do for us: the
/// cargo shim runs them directly without even starting rch. Each of them is
/// also local for `rch exec`, so this only saves a process, never changes
/// where a command runs.
pub const CARGO_LOCAL_SUBCOMMANDS: &[&str] = &[
    "fmt",
    "install",
    "uninstall",
    "new",
    "init",
    "add",
    "remove",
    "update",
    "publish",
    "login",
    "logout",
    "search",
    "help",
    "--version",
    "-V",
    "--help",
    "-h",
    "--list",
];

/// Errors of `rch wrap` that are the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    #[error("not a tool name: {0:?} (expected a plain file name such as cargo or g++)")]
    BadToolName(String),
    #[error("path {0:?} is not valid UTF-8; shims cannot name it")]
    NonUtf8Path(PathBuf),
}

/// `<data dir>/shims`: where the wrappers live.
pub fn shims_dir() -> PathBuf {
    crate::paths::data_dir().join("shims")
}

/// Check that `name` can be a file name in the shims dir and a word in sh.
pub fn validate_tool(name: &str) -> Result<(), WrapError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name != "rch"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
        && !name.starts_with('-');
    if plain {
        Ok(())
    } else {
        Err(WrapError::BadToolName(name.to_string()))
    }
}

fn utf8(path: &Path) -> Result<&str, WrapError> {
    path.to_str()
        .ok_or_else(|| WrapError::NonUtf8Path(path.to_path_buf()))
}

/// Quote one word for POSIX sh.
fn sh_quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| format!("'{}'", word.replace('\'', r"'\''")))
}

/// The text of the shim for `tool`, which calls `rch` (absolute path, with a
/// PATH lookup as fallback) and lives in `shims`.
pub fn shim_script(tool: &str, rch: &Path, shims: &Path) -> Result<String, WrapError> {
    validate_tool(tool)?;
    let rch = sh_quote(utf8(rch)?);
    let shims = sh_quote(utf8(shims)?.trim_end_matches('/'));
    let shortcut = if tool == "cargo" {
        cargo_shortcut()
    } else {
        String::new()
    };
    Ok(SHIM_TEMPLATE
        .replace("@MARKER@", SHIM_MARKER)
        .replace("@TOOL@", tool)
        .replace("@RCH@", &rch)
        .replace("@SHIMS@", &shims)
        .replace("@SHORTCUT@", &shortcut))
}

/// The `case` that runs obviously local cargo subcommands without rch.
fn cargo_shortcut() -> String {
    let alternatives = CARGO_LOCAL_SUBCOMMANDS.join(" | ");
    format!(
        "# Obviously local cargo subcommands: skip starting rch at all.\n\
         case ${{1-}} in\n\
         {alternatives}) exec \"$_rch_real\" \"$@\" ;;\n\
         esac\n\n"
    )
}

/// The shim, with `@…@` placeholders. Variables are prefixed `_rch_` so that
/// none can clash with (and leak into) the environment the tool sees.
const SHIM_TEMPLATE: &str = r#"#!/bin/sh
@MARKER@
# Sends `@TOOL@ ...` through `rch exec` so it can build on a remote worker;
# runs the real @TOOL@ directly whenever rch should stay out of the way.
_rch_tool=@TOOL@
_rch_bin=@RCH@
_rch_shims=@SHIMS@

# PATH without this directory, computed now because PATH changes. The real
# tool is the first one on it, and everything started from here gets it, so
# no wrapper can run twice for one command.
_rch_path=
_rch_real=
_rch_ifs=$IFS
IFS=:
set -f
for _rch_dir in $PATH; do
	case $_rch_dir in
	"$_rch_shims" | "$_rch_shims/") continue ;;
	esac
	_rch_path=${_rch_path:+$_rch_path:}$_rch_dir
	if [ -z "$_rch_real" ] && [ -f "${_rch_dir:-.}/$_rch_tool" ] && [ -x "${_rch_dir:-.}/$_rch_tool" ]; then
		_rch_real=${_rch_dir:-.}/$_rch_tool
	fi
done
set +f
IFS=$_rch_ifs
PATH=$_rch_path
export PATH
if [ -z "$_rch_real" ]; then
	echo "rch: $_rch_tool: not found on PATH (outside $_rch_shims)" >&2
	exit 127
fi

# Inside rch (a local run, or a worker that has these shims too): the real tool.
if [ -n "${RCH_INSIDE-}" ]; then
	exec "$_rch_real" "$@"
fi
# RCH_DISABLE=1 (or true, yes, on): this shell runs everything locally.
case ${RCH_DISABLE-} in
"" | 0 | [Ff][Aa][Ll][Ss][Ee] | [Nn][Oo] | [Oo][Ff][Ff]) ;;
*) exec "$_rch_real" "$@" ;;
esac

@SHORTCUT@# rch moved or gone: find it on PATH, else the tool runs as if unwrapped.
if [ ! -x "$_rch_bin" ]; then
	_rch_bin=$(command -v rch 2>/dev/null) || _rch_bin=
	if [ -z "$_rch_bin" ] || [ ! -x "$_rch_bin" ]; then
		exec "$_rch_real" "$@"
	fi
fi
exec "$_rch_bin" exec -- "$_rch_tool" "$@"
"#;

/// Whether the file at `path` is a shim rch wrote (its marker line is there).
pub fn is_shim(path: &Path) -> bool {
    let Ok(text) = fs::read(path) else {
        return false;
    };
    // The marker is on line 2; reading the head is enough and cheap.
    let head = &text[..text.len().min(512)];
    String::from_utf8_lossy(head)
        .lines()
        .take(3)
        .any(|line| line == SHIM_MARKER)
}

/// The tools that have an rch shim in `dir`, sorted.
pub fn installed(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut tools = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if is_shim(&entry.path()) {
                tools.push(name.to_string());
            }
        }
    }
    tools.sort();
    Ok(tools)
}

/// What `install` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Shims written (new or refreshed).
    pub written: Vec<String>,
    /// Shims of tools no longer in the set, removed.
    pub removed: Vec<String>,
    /// Tools left alone because a file rch did not write has their name.
    pub foreign: Vec<String>,
}

/// Make `dir` hold exactly the shims for `tools`, calling `rch`. Files rch did
/// not write are never overwritten or removed.
pub fn install(dir: &Path, tools: &[String], rch: &Path) -> anyhow::Result<InstallReport> {
    for tool in tools {
        validate_tool(tool)?;
    }
    fs::create_dir_all(dir)?;
    let mut report = InstallReport::default();
    for old in installed(dir)? {
        if !tools.contains(&old) {
            fs::remove_file(dir.join(&old))?;
            report.removed.push(old);
        }
    }
    for tool in tools {
        let target = dir.join(tool);
        if target.symlink_metadata().is_ok() && !is_shim(&target) {
            report.foreign.push(tool.clone());
            continue;
        }
        write_executable(&target, &shim_script(tool, rch, dir)?)?;
        report.written.push(tool.clone());
    }
    Ok(report)
}

/// Write a file atomically (temp file + rename) with mode 0755.
fn write_executable(target: &Path, text: &str) -> io::Result<()> {
    let name = target.file_name().unwrap_or_else(|| OsStr::new("shim"));
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    fs::write(&tmp, text)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, target).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Remove every shim rch wrote in `dir` (and `dir` itself once empty);
/// returns the tools unwrapped.
pub fn uninstall(dir: &Path) -> io::Result<Vec<String>> {
    let tools = installed(dir)?;
    for tool in &tools {
        fs::remove_file(dir.join(tool))?;
    }
    // Only succeeds when nothing else lives there, which is what we want.
    let _ = fs::remove_dir(dir);
    Ok(tools)
}

/// Whether two PATH entries name the same directory (ignoring trailing `/`).
fn same_dir(entry: &Path, dir: &Path) -> bool {
    let trim = |p: &Path| {
        let s = p.as_os_str().as_encoded_bytes();
        let mut end = s.len();
        while end > 1 && s[end - 1] == b'/' {
            end -= 1;
        }
        s[..end].to_vec()
    };
    trim(entry) == trim(dir)
}

/// `path` with every entry naming `dir` removed: what a shim sees as PATH.
pub fn path_without(path: &OsStr, dir: &Path) -> OsString {
    let kept: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|entry| !same_dir(entry, dir))
        .collect();
    std::env::join_paths(kept).unwrap_or_default()
}

/// The first executable file called `name` on `path`, like `command -v`.
pub fn resolve(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(name)
            } else {
                dir.join(name)
            }
        })
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where the shims dir sits on PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathPosition {
    Absent,
    First,
    /// On PATH, but after this many other entries.
    After(usize),
}

/// Where `dir` first appears on `path`.
pub fn position_on_path(dir: &Path, path: &OsStr) -> PathPosition {
    match std::env::split_paths(path).position(|entry| same_dir(&entry, dir)) {
        None => PathPosition::Absent,
        Some(0) => PathPosition::First,
        Some(n) => PathPosition::After(n),
    }
}

/// One wrapped tool as the current PATH sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolStatus {
    pub tool: String,
    /// The real tool the shim runs (PATH without the shims dir).
    pub real: Option<PathBuf>,
    /// Whether typing the tool's name reaches the shim.
    pub active: bool,
}

/// The state `rch wrap status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub dir: PathBuf,
    pub position: PathPosition,
    pub tools: Vec<ToolStatus>,
    /// The rch binary baked into the shims, when one could be read.
    pub rch: Option<PathBuf>,
}

/// Inspect the shims in `dir` against `path`.
pub fn status(dir: &Path, path: &OsStr) -> io::Result<Status> {
    let plain_path = path_without(path, dir);
    let tools = installed(dir)?
        .into_iter()
        .map(|tool| {
            let active = resolve(&tool, path)
                .is_some_and(|p| p.parent().is_some_and(|parent| same_dir(parent, dir)));
            ToolStatus {
                real: resolve(&tool, &plain_path),
                active,
                tool,
            }
        })
        .collect::<Vec<_>>();
    let rch = tools.first().and_then(|t| baked_rch(&dir.join(&t.tool)));
    Ok(Status {
        dir: dir.to_path_buf(),
        position: position_on_path(dir, path),
        tools,
        rch,
    })
}

/// The rch path written into a shim (its `_rch_bin=` line).
pub fn baked_rch(shim: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(shim).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("_rch_bin="))?;
    let words = shlex::split(line)?;
    words.into_iter().next().map(PathBuf::from)
}

/// The absolute path of the running rch, for shims and the agent hook.
pub fn current_rch() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(fs::canonicalize(&exe).unwrap_or(exe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_plain_file_names() {
        for ok in DEFAULT_TOOLS {
            validate_tool(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "-x", "a b", "x;y", "$(id)", "rch"] {
            assert!(validate_tool(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn path_without_drops_every_spelling_of_the_dir() {
        let path = OsStr::new("/s:/usr/bin:/s/:/bin:/s//");
        assert_eq!(path_without(path, Path::new("/s")), "/usr/bin:/bin");
        assert_eq!(path_without(path, Path::new("/s/")), "/usr/bin:/bin");
    }

    #[test]
    fn position_reports_first_after_and_absent() {
        let dir = Path::new("/s");
        assert_eq!(
            position_on_path(dir, OsStr::new("/s:/bin")),
            PathPosition::First
        );
        assert_eq!(
            position_on_path(dir, OsStr::new("/bin:/usr/bin:/s/")),
            PathPosition::After(2)
        );
        assert_eq!(
            position_on_path(dir, OsStr::new("/bin")),
            PathPosition::Absent
        );
    }

    #[test]
    fn script_bakes_quoted_paths_and_marker() {
        let text =
            shim_script("g++", Path::new("/opt/my rch/rch"), Path::new("/d/shims/")).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"));
        assert_eq!(text.lines().nth(1), Some(SHIM_MARKER));
        assert!(text.contains("_rch_tool=g++\n"));
        assert!(text.contains("_rch_shims=/d/shims\n"));
        assert!(
            !text.contains("case ${1-}"),
            "only the cargo shim has the shortcut"
        );
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("g++");
        fs::write(&shim, &text).unwrap();
        assert_eq!(baked_rch(&shim), Some(PathBuf::from("/opt/my rch/rch")));
    }

    #[test]
    fn cargo_script_has_the_local_shortcut() {
        let text = shim_script("cargo", Path::new("/r"), Path::new("/d")).unwrap();
        assert!(text.contains("fmt | install"));
        for placeholder in ["@MARKER@", "@TOOL@", "@RCH@", "@SHIMS@", "@SHORTCUT@"] {
            assert!(!text.contains(placeholder), "{placeholder} left in: {text}");
        }
    }

    #[test]
    fn install_replaces_the_set_and_spares_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let shims = dir.path().join("shims");
        let rch = Path::new("/usr/local/bin/rch");
        let all: Vec<String> = ["cargo", "make", "cc"].map(String::from).to_vec();
        let first = install(&shims, &all, rch).unwrap();
        assert_eq!(first.written, all);
        fs::write(shims.join("ninja"), "#!/bin/sh\necho mine\n").unwrap();

        let second = install(&shims, &["cargo".into(), "ninja".into()], rch).unwrap();
        assert_eq!(second.written, vec!["cargo".to_string()]);
        assert_eq!(second.removed, vec!["cc".to_string(), "make".to_string()]);
        assert_eq!(second.foreign, vec!["ninja".to_string()]);
        assert_eq!(installed(&shims).unwrap(), vec!["cargo".to_string()]);
        let mode = fs::metadata(shims.join("cargo"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        assert_eq!(uninstall(&shims).unwrap(), vec!["cargo".to_string()]);
        assert!(
            shims.join("ninja").exists(),
            "a file rch did not write was removed"
        );
        assert!(!shims.join("cargo").exists());
    }
}
