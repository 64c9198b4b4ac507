//! `rch wrap install|uninstall|status`: the build-tool shims.

use super::{Global, UsageError};
use crate::ui::{table, Output};
use crate::wrap::{self, PathPosition, WrapError};
use clap::Subcommand;
use std::ffi::OsString;

#[derive(Debug, Subcommand)]
pub enum WrapCommand {
    /// Write wrapper scripts that send build tools through `rch exec`.
    Install {
        /// The tools to wrap, comma separated (default: those of cargo, make,
        /// cmake, ninja, meson, cc, gcc, g++, clang, clang++ found on PATH). Replaces
        /// the wrapped set.
        #[arg(long, value_delimiter = ',', value_name = "TOOL,...")]
        tools: Option<Vec<String>>,
    },
    /// Remove the wrapper scripts rch wrote.
    Uninstall,
    /// Show the wrapped tools, the shims dir's place on PATH and the real tools.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: WrapCommand, global: &Global) -> anyhow::Result<i32> {
    match cmd {
        WrapCommand::Install { tools } => install(tools, global),
        WrapCommand::Uninstall => uninstall(global),
        WrapCommand::Status { json } => status(json),
    }
}

fn install(tools: Option<Vec<String>>, global: &Global) -> anyhow::Result<i32> {
    let dir = wrap::shims_dir();
    let (tools, absent) = match tools {
        Some(list) => (
            list.into_iter().map(|t| t.trim().to_string()).collect(),
            Vec::new(),
        ),
        None => default_tools_present(&dir),
    };
    if tools.is_empty() {
        return Err(UsageError("no tool to wrap".into()).into());
    }
    let rch = wrap::current_rch()?;
    let report = wrap::install(&dir, &tools, &rch).map_err(usage_if_bad_name)?;
    if !global.quiet {
        println!(
            "rch: wrapped {} in {}",
            report.written.join(", "),
            dir.display()
        );
        if !absent.is_empty() {
            println!("rch: not wrapped (not on PATH): {}", absent.join(", "));
        }
        if !report.removed.is_empty() {
            println!("rch: unwrapped {}", report.removed.join(", "));
        }
        for tool in &report.foreign {
            eprintln!(
                "rch: left {} alone: a file rch did not write has that name",
                dir.join(tool).display()
            );
        }
        print_path_hint(&dir);
    }
    Ok(0)
}

/// The default tools split into those installed here and those absent. A
/// shim for an absent tool would make configure scripts believe it exists.
fn default_tools_present(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let path = wrap::path_without(&std::env::var_os("PATH").unwrap_or_default(), dir);
    wrap::DEFAULT_TOOLS
        .iter()
        .map(|t| t.to_string())
        .partition(|t| wrap::resolve(t, &path).is_some())
}

/// A bad tool name is a usage error (exit 64), not a failure.
fn usage_if_bad_name(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<WrapError>() {
        Ok(e @ WrapError::BadToolName(_)) => UsageError(e.to_string()).into(),
        Ok(e) => e.into(),
        Err(e) => e,
    }
}

fn print_path_hint(dir: &std::path::Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if wrap::position_on_path(dir, &path) != PathPosition::First {
        println!("rch: to use the wrappers, put the shims dir first on PATH, e.g. in ~/.bashrc:");
        println!("       eval \"$(rch shell-init bash)\"");
    }
}

fn uninstall(global: &Global) -> anyhow::Result<i32> {
    let dir = wrap::shims_dir();
    let removed = wrap::uninstall(&dir)?;
    if !global.quiet {
        if removed.is_empty() {
            println!("rch: no wrappers installed in {}", dir.display());
        } else {
            println!("rch: removed wrappers for {}", removed.join(", "));
        }
    }
    Ok(0)
}

fn status(json: bool) -> anyhow::Result<i32> {
    let dir = wrap::shims_dir();
    let path: OsString = std::env::var_os("PATH").unwrap_or_default();
    let status = wrap::status(&dir, &path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
    } else {
        print_status(&status, &Output::detect(false, false, 0));
    }
    Ok(0)
}

fn position_text(position: PathPosition) -> String {
    match position {
        PathPosition::Absent => "not on PATH".into(),
        PathPosition::First => "first on PATH".into(),
        PathPosition::After(n) => format!("on PATH after {n} other entries"),
    }
}

fn status_json(status: &wrap::Status) -> serde_json::Value {
    let tools: Vec<_> = status
        .tools
        .iter()
        .map(|t| {
            serde_json::json!({
                "tool": t.tool,
                "real": t.real.as_ref().map(|p| p.display().to_string()),
                "active": t.active,
            })
        })
        .collect();
    serde_json::json!({
        "shims_dir": status.dir.display().to_string(),
        "on_path": status.position != PathPosition::Absent,
        "first_on_path": status.position == PathPosition::First,
        "rch": status.rch.as_ref().map(|p| p.display().to_string()),
        "tools": tools,
    })
}

fn print_status(status: &wrap::Status, out: &Output) {
    println!(
        "shims dir: {} ({})",
        status.dir.display(),
        position_text(status.position)
    );
    if status.tools.is_empty() {
        println!("no tools wrapped (rch wrap install)");
        return;
    }
    if let Some(rch) = &status.rch {
        let note = if rch.exists() {
            ""
        } else {
            " (missing: wrappers run the real tools)"
        };
        println!("rch binary: {}{note}", rch.display());
    }
    let mut tbl = table::new(out, &["tool", "wrapped on this PATH", "real tool"]);
    for t in &status.tools {
        let real = t
            .real
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "not found".into());
        tbl.add_row([t.tool.clone(), yes_no(t.active).into(), real]);
    }
    println!("{}", table::render(&tbl));
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
