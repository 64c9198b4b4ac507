//! `rch hook`: answer one agent PreToolUse event on stdin; and
//! `rch hook install|uninstall|status`: register it in the agent's settings.

use super::Global;
use crate::{hook, wrap};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HookArgs {
    #[command(subcommand)]
    pub action: Option<HookAction>,
}

#[derive(Debug, Subcommand)]
pub enum HookAction {
    /// Register `rch hook` for Bash calls in the agent's settings.json.
    Install(SettingsArg),
    /// Remove rch's hook from the agent's settings.json.
    Uninstall(SettingsArg),
    /// Show whether the hook is registered.
    Status {
        #[command(flatten)]
        settings: SettingsArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SettingsArg {
    /// The settings file (default: ~/.claude/settings.json, or
    /// $CLAUDE_CONFIG_DIR/settings.json).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

impl SettingsArg {
    fn file(self) -> PathBuf {
        self.settings.unwrap_or_else(hook::settings_path)
    }
}

pub fn run(args: HookArgs, global: &Global) -> anyhow::Result<i32> {
    match args.action {
        None => Ok(answer_event()),
        Some(HookAction::Install(s)) => install(s.file(), global),
        Some(HookAction::Uninstall(s)) => uninstall(s.file(), global),
        Some(HookAction::Status { settings, json }) => status(settings.file(), json),
    }
}

/// The hook itself: never fails, always exit 0.
fn answer_event() -> i32 {
    let word = match wrap::current_rch() {
        Ok(rch) => hook::rch_word(&rch),
        Err(_) => "rch".to_string(),
    };
    hook::respond(std::io::stdin().lock(), std::io::stdout().lock(), &word)
}

fn install(file: PathBuf, global: &Global) -> anyhow::Result<i32> {
    let command = hook::hook_command(&wrap::current_rch()?);
    let changed = hook::install(&file, &command)?;
    if !global.quiet {
        if changed {
            println!("rch: hook registered in {} ({command})", file.display());
            let backup = hook::backup_path(&file);
            if backup.exists() {
                println!("rch: previous settings saved to {}", backup.display());
            }
        } else {
            println!("rch: hook already registered in {}", file.display());
        }
    }
    Ok(0)
}

fn uninstall(file: PathBuf, global: &Global) -> anyhow::Result<i32> {
    let removed = hook::uninstall(&file)?;
    if !global.quiet {
        match removed {
            0 => println!("rch: no rch hook in {}", file.display()),
            _ => println!("rch: hook removed from {}", file.display()),
        }
    }
    Ok(0)
}

fn status(file: PathBuf, json: bool) -> anyhow::Result<i32> {
    let settings = hook::read_settings(&file)?;
    let commands = hook::registered(&settings);
    if json {
        crate::ui::print_json(&serde_json::json!({
            "settings": file.display().to_string(),
            "registered": !commands.is_empty(),
            "commands": commands,
        }))?;
        return Ok(0);
    }
    if commands.is_empty() {
        println!("hook: not registered in {}", file.display());
        return Ok(0);
    }
    println!("hook: registered in {}", file.display());
    for command in commands {
        let program = shlex::split(&command)
            .and_then(|w| w.into_iter().next())
            .map(PathBuf::from);
        let missing = program.is_some_and(|p| p.is_absolute() && !p.exists());
        let note = if missing {
            " (binary missing: the agent's commands run unchanged)"
        } else {
            ""
        };
        println!("  {command}{note}");
    }
    Ok(0)
}
