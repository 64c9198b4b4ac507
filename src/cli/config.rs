//! `rch config`: show, validate, create and locate configuration.

use super::Global;
use crate::config::{self, render, Overrides, Sources};
use clap::Subcommand;
use std::io::Write;
use std::path::Path;

/// The commented starter user config written by `rch config init`.
pub const STARTER_CONFIG: &str = include_str!("../../config/config.toml");

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (all layers merged) as TOML.
    Show {
        /// Annotate each value with where it came from.
        #[arg(long)]
        origin: bool,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Check every configuration layer; exit 78 naming file, line and key on the first problem.
    Validate,
    /// Write a commented starter user config; an existing file is never touched.
    Init,
    /// Print the config files in use: user, project (if found), lab (if active).
    Path {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ConfigCommand, global: &Global) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir()?;
    let sources = Sources::from_process(&cwd);
    match cmd {
        ConfigCommand::Show { origin, json } => show(&sources, global, origin, json),
        ConfigCommand::Validate => validate(&sources),
        ConfigCommand::Init => init(&sources.user_file),
        ConfigCommand::Path { json } => path(&sources, json),
    }
}

fn show(sources: &Sources, global: &Global, origin: bool, json: bool) -> anyhow::Result<i32> {
    let mut loaded = config::load_with(sources)?;
    loaded.apply(&Overrides {
        quiet: global.quiet,
        ..Overrides::default()
    });
    if json {
        let value = render::to_json(&loaded, origin);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render::to_toml(&loaded, origin));
    }
    Ok(0)
}

fn validate(sources: &Sources) -> anyhow::Result<i32> {
    let loaded = config::load_with(sources)?;
    config::readable::check(&loaded)?;
    if let Some(id) = &loaded.requested_worker {
        if loaded.config.worker(id).is_none() {
            eprintln!("rch: note: env RCH_WORKER names \"{id}\", which is not a configured worker");
        }
    }
    if loaded.files.is_empty() {
        println!("ok: no config files, defaults in effect");
    } else {
        let files: Vec<String> = loaded
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        println!("ok: {}", files.join(", "));
    }
    Ok(0)
}

fn init(user_file: &Path) -> anyhow::Result<i32> {
    if user_file.exists() {
        println!("{}: exists, not touched", user_file.display());
        return Ok(0);
    }
    if let Some(dir) = user_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // create_new: a file appearing between the check and the write is not clobbered either.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(user_file);
    match file {
        Ok(mut f) => {
            f.write_all(STARTER_CONFIG.as_bytes())?;
            println!("{}: written", user_file.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            println!("{}: exists, not touched", user_file.display());
        }
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", user_file.display())),
    }
    Ok(0)
}

fn path(sources: &Sources, json: bool) -> anyhow::Result<i32> {
    if json {
        let shown = |p: Option<&Path>| p.map(|p| p.display().to_string());
        crate::ui::print_json(&serde_json::json!({
            "user": sources.user_file.display().to_string(),
            "user_present": sources.user_file.is_file(),
            "project": shown(sources.project_file().as_deref()),
            "lab": shown(sources.active_lab_file()),
        }))?;
        return Ok(0);
    }
    let presence = |p: &Path| if p.is_file() { "" } else { " (not present)" };
    println!(
        "user: {}{}",
        sources.user_file.display(),
        presence(&sources.user_file)
    );
    if let Some(project) = sources.project_file() {
        println!("project: {}", project.display());
    }
    if let Some(lab) = sources.active_lab_file() {
        println!("lab: {}", lab.display());
    }
    Ok(0)
}
