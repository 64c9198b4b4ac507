//! The coding-agent hook: Claude Code's PreToolUse protocol, and the
//! `settings.json` entry that registers it.
//!
//! The agent runs `rch hook` before each Bash tool call with one JSON object
//! on stdin. An offloadable build command comes back rewritten to go through
//! `rch exec`; anything else gets no answer, which leaves the call exactly as
//! it was. The hook fails open: bad input, an error or a panic never blocks
//! the agent, it just leaves the command alone.

use crate::classify;
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The tool whose calls the hook looks at.
pub const BASH_TOOL: &str = "Bash";
/// The hook event rch answers.
pub const EVENT: &str = "PreToolUse";
/// Seconds the agent waits for the hook before going on without it.
const HOOK_TIMEOUT_SECS: u64 = 10;
/// Stdin beyond this is not a tool call rch would rewrite.
const MAX_INPUT_BYTES: u64 = 4 << 20;

/// Answer one hook call: read the event from `input`, write the answer (if
/// any) to `output`. Always returns exit code 0, whatever happens.
pub fn respond(input: impl Read, mut output: impl Write, rch_word: &str) -> i32 {
    let mut text = String::new();
    if input
        .take(MAX_INPUT_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return 0;
    }
    // A panic must not turn into a non-zero exit the agent could read as a
    // refusal: catch it, say nothing, and let the command run as it was.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let answer = std::panic::catch_unwind(|| answer(&text, rch_word))
        .ok()
        .flatten();
    std::panic::set_hook(previous);
    if let Some(answer) = answer {
        let _ = writeln!(output, "{answer}");
        let _ = output.flush();
    }
    0
}

/// The hook's JSON answer to one PreToolUse event, or `None` to leave the
/// tool call untouched (not Bash, not offloadable, unreadable).
pub fn answer(event: &str, rch_word: &str) -> Option<String> {
    if disabled_by_env() {
        return None;
    }
    let event: Value = serde_json::from_str(event).ok()?;
    if event.get("tool_name")?.as_str()? != BASH_TOOL {
        return None;
    }
    let tool_input = event.get("tool_input")?.as_object()?;
    let command = tool_input.get("command")?.as_str()?;
    let rewritten = rewrite_command(command, rch_word)?;
    let mut updated = tool_input.clone();
    updated.insert("command".into(), Value::String(rewritten));
    let out = json!({
        "hookSpecificOutput": {
            "hookEventName": EVENT,
            "permissionDecision": "allow",
            "permissionDecisionReason": "rch: build command routed through `rch exec`",
            "updatedInput": Value::Object(updated),
        }
    });
    serde_json::to_string(&out).ok()
}

/// `RCH_DISABLE` set to a true value: the agent's builds stay as typed.
fn disabled_by_env() -> bool {
    std::env::var("RCH_DISABLE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// `command` with `rch exec --` inserted before the build command, keeping a
/// leading `cd dir &&` in front of it; `None` when it is not offloadable.
pub fn rewrite_command(command: &str, rch_word: &str) -> Option<String> {
    if !classify::classify_shell(command).is_offload() {
        return None;
    }
    let (_, build) = classify::split_leading_cd(command);
    let cd_prefix = &command[..offset_within(command, build)?];
    Some(format!("{cd_prefix}{rch_word} exec -- {build}"))
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset_within(whole: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (offset + part.len() <= whole.len()).then_some(offset)
}

/// How the rewritten command names rch: plain `rch` when that is what PATH
/// finds, else the quoted absolute path of this binary.
pub fn rch_word(this_rch: &Path) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = crate::wrap::resolve("rch", &path)
        .and_then(|p| std::fs::canonicalize(p).ok())
        .is_some_and(|p| p == this_rch);
    if on_path {
        "rch".to_string()
    } else {
        quote(&this_rch.to_string_lossy())
    }
}

fn quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| word.to_string())
}

// ---------------------------------------------------------------------------
// settings.json

/// Errors editing the agent's settings file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{file}: not valid JSON ({source}); left unchanged")]
    Unreadable {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("{file}: {what} is not a JSON {expected}; left unchanged")]
    Shape {
        file: PathBuf,
        what: &'static str,
        expected: &'static str,
    },
}

/// The agent's user settings: `$CLAUDE_CONFIG_DIR/settings.json`, else
/// `~/.claude/settings.json`.
pub fn settings_path() -> PathBuf {
    match std::env::var_os("CLAUDE_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("settings.json"),
        _ => crate::paths::expand_tilde("~/.claude/settings.json"),
    }
}

/// The command line registered in the settings: `<rch> hook`.
pub fn hook_command(rch: &Path) -> String {
    format!("{} hook", quote(&rch.to_string_lossy()))
}

/// Whether a hook command line is an rch hook (any rch binary, any path).
fn is_rch_hook_command(command: &str) -> bool {
    let Some(words) = shlex::split(command) else {
        return false;
    };
    match words.as_slice() {
        [program, sub] => sub == "hook" && Path::new(program).file_name() == Some("rch".as_ref()),
        _ => false,
    }
}

fn is_rch_hook(hook: &Value) -> bool {
    hook.get("command")
        .and_then(Value::as_str)
        .is_some_and(is_rch_hook_command)
}

/// The rch hook commands registered under PreToolUse in `settings`.
pub fn registered(settings: &Value) -> Vec<String> {
    let groups = settings
        .pointer("/hooks/PreToolUse")
        .and_then(Value::as_array);
    groups
        .into_iter()
        .flatten()
        .filter_map(|group| group.get("hooks").and_then(Value::as_array))
        .flatten()
        .filter(|hook| is_rch_hook(hook))
        .filter_map(|hook| hook.get("command").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Whether `settings` already hold exactly one rch hook, `command`, on Bash.
fn installed_as(settings: &Value, command: &str) -> bool {
    let Some(groups) = settings
        .pointer("/hooks/PreToolUse")
        .and_then(Value::as_array)
    else {
        return false;
    };
    let ours: Vec<&Value> = groups
        .iter()
        .filter(|g| {
            g.get("hooks")
                .and_then(Value::as_array)
                .is_some_and(|h| h.iter().any(is_rch_hook))
        })
        .collect();
    ours.len() == 1
        && ours[0].get("matcher").and_then(Value::as_str) == Some(BASH_TOOL)
        && registered(settings) == [command]
}

/// Register `command` as the PreToolUse hook for Bash in `settings`, keeping
/// everything else. Returns whether anything changed.
pub fn add_to(settings: &mut Value, command: &str, file: &Path) -> Result<bool, SettingsError> {
    if installed_as(settings, command) {
        return Ok(false);
    }
    remove_from(settings, file)?;
    let groups = pre_tool_use(settings, file)?;
    groups.push(json!({
        "matcher": BASH_TOOL,
        "hooks": [{ "type": "command", "command": command, "timeout": HOOK_TIMEOUT_SECS }],
    }));
    Ok(true)
}

/// Builds the error for a settings value that is not of the expected type.
fn shape_error(file: &Path) -> impl Fn(&'static str, &'static str) -> SettingsError + '_ {
    move |what, expected| SettingsError::Shape {
        file: file.to_path_buf(),
        what,
        expected,
    }
}

/// Remove every rch hook from `settings`, and the groups and tables that only
/// held it. Returns how many hooks were removed.
pub fn remove_from(settings: &mut Value, file: &Path) -> Result<usize, SettingsError> {
    let shape = shape_error(file);
    let root = settings
        .as_object_mut()
        .ok_or(shape("the file", "object"))?;
    let Some(hooks) = root.get_mut("hooks") else {
        return Ok(0);
    };
    let hooks = hooks.as_object_mut().ok_or(shape("\"hooks\"", "object"))?;
    let Some(groups) = hooks.get_mut(EVENT) else {
        return Ok(0);
    };
    let groups = groups
        .as_array_mut()
        .ok_or(shape("\"hooks.PreToolUse\"", "array"))?;
    let mut removed = 0;
    groups.retain_mut(|group| {
        let Some(list) = group.get_mut("hooks").and_then(Value::as_array_mut) else {
            return true;
        };
        let before = list.len();
        list.retain(|hook| !is_rch_hook(hook));
        removed += before - list.len();
        !(list.is_empty() && before > 0)
    });
    if groups.is_empty() && removed > 0 {
        hooks.remove(EVENT);
    }
    if hooks.is_empty() && removed > 0 {
        root.remove("hooks");
    }
    Ok(removed)
}

/// `settings.hooks.PreToolUse`, created when missing.
fn pre_tool_use<'a>(
    settings: &'a mut Value,
    file: &Path,
) -> Result<&'a mut Vec<Value>, SettingsError> {
    let shape = shape_error(file);
    let root = settings
        .as_object_mut()
        .ok_or(shape("the file", "object"))?;
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(shape("\"hooks\"", "object"))?;
    hooks
        .entry(EVENT)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or(shape("\"hooks.PreToolUse\"", "array"))
}

/// Read a settings file; a missing file is an empty object.
pub fn read_settings(file: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(file) {
        Ok(text) if text.trim().is_empty() => Ok(Value::Object(Map::new())),
        Ok(text) => serde_json::from_str(&text).map_err(|source| {
            SettingsError::Unreadable {
                file: file.to_path_buf(),
                source,
            }
            .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Map::new())),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", file.display())),
    }
}

/// Write `settings` to `file`, first copying the current file to
/// `<file>.bak`, then replacing it atomically.
pub fn write_settings(file: &Path, settings: &Value) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if file.exists() {
        std::fs::copy(file, backup_path(file))?;
    }
    let mut text = serde_json::to_string_pretty(settings)?;
    text.push('\n');
    let tmp = file.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    if let Ok(meta) = std::fs::metadata(file) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

/// `settings.json.bak` next to `settings.json`.
pub fn backup_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    file.with_file_name(name)
}

/// Register the hook in `file`. Returns whether the file changed.
pub fn install(file: &Path, command: &str) -> anyhow::Result<bool> {
    let mut settings = read_settings(file)?;
    let changed = add_to(&mut settings, command, file)?;
    if changed {
        write_settings(file, &settings)?;
    }
    Ok(changed)
}

/// Remove the hook from `file`. Returns how many rch hooks were removed.
pub fn uninstall(file: &Path) -> anyhow::Result<usize> {
    if !file.exists() {
        return Ok(0);
    }
    let mut settings = read_settings(file)?;
    let removed = remove_from(&mut settings, file)?;
    if removed > 0 {
        write_settings(file, &settings)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> PathBuf {
        PathBuf::from("/home/u/.claude/settings.json")
    }

    #[test]
    fn rch_hook_commands_are_recognised_by_binary_name() {
        assert!(is_rch_hook_command("rch hook"));
        assert!(is_rch_hook_command("'/opt/my tools/rch' hook"));
        assert!(!is_rch_hook_command("rch hook status"));
        assert!(!is_rch_hook_command("/usr/bin/other hook"));
        assert!(!is_rch_hook_command("python3 check.py"));
    }

    #[test]
    fn add_keeps_other_settings_and_is_idempotent() {
        let mut s = json!({
            "model": "x",
            "hooks": {
                "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"}]}],
                "Stop": [{"hooks": [{"type": "command", "command": "done.sh"}]}]
            }
        });
        assert!(add_to(&mut s, "/bin/rch hook", &file()).unwrap());
        assert!(!add_to(&mut s, "/bin/rch hook", &file()).unwrap());
        assert_eq!(registered(&s), vec!["/bin/rch hook".to_string()]);
        assert_eq!(s["model"], "x");
        assert_eq!(
            s.pointer("/hooks/PreToolUse/0/hooks/0/command").unwrap(),
            "guard.sh"
        );
        assert!(s.pointer("/hooks/Stop").is_some());

        // A moved binary replaces the old entry instead of adding a second.
        assert!(add_to(&mut s, "/new/rch hook", &file()).unwrap());
        assert_eq!(registered(&s), vec!["/new/rch hook".to_string()]);

        assert_eq!(remove_from(&mut s, &file()).unwrap(), 1);
        assert_eq!(
            s,
            json!({
                "model": "x",
                "hooks": {
                    "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"}]}],
                    "Stop": [{"hooks": [{"type": "command", "command": "done.sh"}]}]
                }
            })
        );
    }

    #[test]
    fn remove_drops_tables_it_emptied() {
        let mut s = json!({"theme": "dark"});
        add_to(&mut s, "rch hook", &file()).unwrap();
        assert_eq!(remove_from(&mut s, &file()).unwrap(), 1);
        assert_eq!(s, json!({"theme": "dark"}));
    }

    #[test]
    fn odd_shapes_are_refused_not_clobbered() {
        let mut s = json!({"hooks": []});
        assert!(add_to(&mut s, "rch hook", &file()).is_err());
        assert_eq!(s, json!({"hooks": []}));
        let mut s = json!([1, 2]);
        assert!(remove_from(&mut s, &file()).is_err());
    }

    #[test]
    fn non_bash_and_malformed_events_get_no_answer() {
        assert_eq!(answer("not json", "rch"), None);
        assert_eq!(answer("{}", "rch"), None);
        assert_eq!(
            answer(
                r#"{"tool_name":"Read","tool_input":{"file_path":"/x"}}"#,
                "rch"
            ),
            None
        );
        assert_eq!(
            answer(r#"{"tool_name":"Bash","tool_input":{"command":7}}"#, "rch"),
            None
        );
    }
}
