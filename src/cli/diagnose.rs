//! `rch diagnose "CMD"`: would this command be offloaded, which settings
//! decide it, and where would it go right now. Never runs the command.

use super::{Global, UsageError};
use crate::classify::{self, Decision};
use crate::config::{self, Overrides};
use crate::diagnose::diagnose;
use crate::fleet_report::current_report;
use crate::ui::{self, Output};
use clap::Args;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What the diagnosis covers, for `rch diagnose --help`.
const DIAGNOSE_HELP: &str = "\
It prints whether the command is offloaded and why, the settings that decide
it with where each came from, what the build needs of a worker (the program,
for cargo the client's rustc release and host triple, a pinned toolchain or
--target, for C builds the client's cc machine), and one line per worker: it
admits the build, or why not (disabled, draining, busy, circuit open, or the
capability that excluded it: \"has no cargo\", \"has rustc 1.80.0\",
\"has cc for aarch64-linux-gnu\"). The verdict says where it would run now.

For an offloaded command it also lists the environment variables the worker
would get (\"env sent\") and those kept here with the rule that kept them
(\"env kept\": machine-local, secret-looking, env.withhold, rch's own): names
only, never values. `env.forward` and `env.withhold` change the lists; see
docs/environment.md.";

#[derive(Debug, Args)]
#[command(after_help = DIAGNOSE_HELP)]
pub struct DiagnoseArgs {
    /// Pretend `--worker ID` was given (as `rch exec --worker`).
    #[arg(long, value_name = "ID")]
    pub worker: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The command: one shell command line in quotes, or its words.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

pub fn run(args: DiagnoseArgs, global: &Global) -> anyhow::Result<i32> {
    let out = Output::detect(args.json, global.quiet, global.verbose);
    let cwd = std::env::current_dir()?;
    let (command, mut decision, dir) = classify_input(&args.command, &cwd);
    let argv = command_words(&args.command);
    let mut loaded = config::load(&dir)?;
    if let Decision::Offload(offload) = &decision {
        let sources = crate::cost::source_sizes(offload, &argv, &dir);
        if let Some(why) = crate::cost::keep_local(offload, &sources, &loaded.config.cost) {
            decision = Decision::Local(why);
        }
    }
    loaded.apply(&Overrides {
        worker: args.worker,
        ..Default::default()
    });
    if let Some(id) = &loaded.requested_worker {
        if loaded.config.worker(id).is_none() {
            let known = loaded.config.worker_ids().join(", ");
            return Err(UsageError(format!("unknown worker {id:?} (known: {known})")).into());
        }
    }
    let layout = match &decision {
        Decision::Offload(offload) => Some(crate::build_files::plan(&loaded, &dir, &argv, offload)),
        Decision::Local(_) => None,
    };
    let mut d = diagnose(&command, &decision, &loaded, |offload| {
        let report = super::block_on(current_report(&out))?;
        let project = match &layout {
            Some(Ok(layout)) => layout.root.clone(),
            _ => crate::build::project_root(&loaded, &dir, offload),
        };
        Ok(crate::diagnose::FleetView {
            report,
            project,
            needs: crate::needs::needs(&argv, &dir, offload.tool),
            env: crate::envrules::plan(std::env::vars_os(), &loaded.config.env),
        })
    })?;
    if let Some(layout) = &layout {
        crate::diagnose::with_layout(&mut d, layout, &loaded);
    }
    if out.json {
        ui::print_json(&d)?;
    } else {
        println!("{}", ui::diagnose::diagnosis_text(&d));
    }
    Ok(0)
}

/// One argument is a shell command line; several are an argument vector.
/// A leading `cd DIR &&` moves the directory whose config applies.
fn classify_input(words: &[String], cwd: &Path) -> (String, Decision, PathBuf) {
    if let [line] = words {
        let (cd, _) = classify::split_leading_cd(line);
        let dir = cd
            .map(|d| cwd.join(crate::paths::expand_tilde(&d)))
            .unwrap_or_else(|| cwd.to_path_buf());
        return (line.clone(), classify::classify_shell(line), dir);
    }
    let argv: Vec<OsString> = words.iter().map(OsString::from).collect();
    let shown =
        shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "));
    (shown, classify::classify(&argv), cwd.to_path_buf())
}

/// The command's words, after a leading `cd DIR &&` of a shell line.
fn command_words(words: &[String]) -> Vec<OsString> {
    if let [line] = words {
        let (_, rest) = classify::split_leading_cd(line);
        let words = shlex::split(rest).unwrap_or_default();
        return words.into_iter().map(OsString::from).collect();
    }
    words.iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_line_with_cd_uses_that_directory() {
        let (_, decision, dir) = classify_input(&["cd sub && cargo test".into()], Path::new("/p"));
        assert!(decision.is_offload());
        assert_eq!(dir, Path::new("/p/sub"));
        let (_, decision, _) = classify_input(&["cargo".into(), "fmt".into()], Path::new("/p"));
        assert!(!decision.is_offload());
    }
}
