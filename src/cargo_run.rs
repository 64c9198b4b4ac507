//! `cargo run` the rch way: the program is built on a worker with `cargo
//! build`, comes back with the other artifacts, and runs here, in the user's
//! directory, environment, terminal and stdin, with its own exit status.
//!
//! The command line is split once: cargo's options go to the remote `cargo
//! build` (plus `--message-format=json-render-diagnostics`, so diagnostics
//! stay human on stderr while stdout carries cargo's artifact report), and
//! the program's arguments stay here. The binary to run is the one cargo's
//! report names (`compiler-artifact` messages with an `executable`), never a
//! path guessed from target names.

use crate::cargo_report::{Report, MESSAGE_FORMAT};
use cargo_metadata::{Artifact, TargetKind};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Options of `cargo run` that take a value (as `--opt value` or `--opt=value`).
const WITH_VALUE: &[&str] = &[
    "--bin",
    "--example",
    "--package",
    "-p",
    "--features",
    "-F",
    "--jobs",
    "-j",
    "--profile",
    "--target",
    "--target-dir",
    "--manifest-path",
    "--lockfile-path",
    "--color",
    "--config",
    "-Z",
];

/// Options of `cargo run` that take none.
const FLAGS: &[&str] = &[
    "--release",
    "-r",
    "--all-features",
    "--no-default-features",
    "--ignore-rust-version",
    "--timings",
    "--quiet",
    "-q",
    "--locked",
    "--offline",
    "--frozen",
    "--keep-going",
];

/// A `cargo run` command line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// `cargo [+toolchain] [global options] build [options] --message-format=…`.
    pub build_argv: Vec<OsString>,
    /// What the program gets: positionals after the options, and all after `--`.
    pub program_args: Vec<OsString>,
    /// `--bin NAME` or `--example NAME`, when given.
    pub wanted: Wanted,
}

/// Which executable `cargo run` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Whatever cargo would pick: the package's only binary or its `default-run`.
    Default,
    Bin(String),
    Example(String),
}

/// Split `cargo [globals] run ARGS` at `sub` (the index of `run` in `argv`).
pub fn split(argv: &[&str], sub: usize) -> Result<RunArgs, String> {
    let rest = &argv[sub + 1..];
    let options = options_len(rest)?;
    let mut build_argv: Vec<OsString> = argv[..sub].iter().map(OsString::from).collect();
    build_argv.push("build".into());
    build_argv.extend(rest[..options].iter().map(OsString::from));
    build_argv.push(MESSAGE_FORMAT.into());
    let mut wanted = Wanted::Default;
    for i in 0..options {
        if let Some(value) = value_of(&rest[..options], i, "--bin") {
            wanted = Wanted::Bin(value.to_string());
        }
        if let Some(value) = value_of(&rest[..options], i, "--example") {
            wanted = Wanted::Example(value.to_string());
        }
    }
    let program_from = match rest.get(options) {
        Some(&"--") => options + 1,
        _ => options,
    };
    Ok(RunArgs {
        build_argv,
        program_args: rest[program_from..].iter().map(OsString::from).collect(),
        wanted,
    })
}

/// How many of `cargo run`'s arguments (those after `run`) are cargo's own
/// options; the program's arguments start after them (and after a `--`).
/// An option rch does not know, or one that changes cargo's output format,
/// makes the command local (the reason is returned).
pub fn options_len(rest: &[&str]) -> Result<usize, String> {
    let mut i = 0;
    while let Some(&arg) = rest.get(i) {
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break;
        }
        if arg.starts_with("--message-format") || arg == "--unit-graph" {
            return Err(format!("cargo run {arg} is not offloadable"));
        }
        if matches!(arg, "--help" | "-h") {
            return Err(format!("cargo run {arg} is not a build"));
        }
        let used = option_len(rest, i)
            .ok_or_else(|| format!("cargo run with the unknown option {arg} is not offloadable"))?;
        i = (i + used).min(rest.len());
    }
    Ok(i)
}

/// How many arguments the option at `args[i]` uses; `None` if it is unknown.
fn option_len(args: &[&str], i: usize) -> Option<usize> {
    let arg = args[i];
    if FLAGS.contains(&arg) || is_verbosity(arg) || arg.starts_with("--timings=") {
        return Some(1);
    }
    for name in WITH_VALUE {
        if arg == *name {
            return Some(2);
        }
        let attached = arg.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with('=')
                || (name.len() == 2 && !name.starts_with("--") && !rest.is_empty())
        });
        if attached {
            return Some(1);
        }
    }
    None
}

/// The value of `--name value` / `--name=value` at `args[i]`.
fn value_of<'a>(args: &[&'a str], i: usize, name: &str) -> Option<&'a str> {
    let rest = args[i].strip_prefix(name)?;
    if rest.is_empty() {
        return args.get(i + 1).copied();
    }
    rest.strip_prefix('=')
}

fn is_verbosity(arg: &str) -> bool {
    arg.len() > 1 && arg.starts_with('-') && arg[1..].bytes().all(|b| b == b'v')
}

/// The program to run here, found in cargo's report and mapped to this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The executable, under the local project root.
    pub path: PathBuf,
    /// The package's manifest, under the local project root.
    pub manifest: PathBuf,
    pub package: String,
    pub version: String,
}

/// Find the executable `wanted` names in cargo's `report` of the remote
/// build. `map` turns a path on the worker into the path here (`None`: it is
/// outside the project).
pub fn find_program(
    report: &Report,
    wanted: &Wanted,
    map: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Program, String> {
    let runnable: Vec<&Artifact> = report
        .artifacts()
        .filter(|a| a.executable.is_some())
        .filter(|a| is_wanted(a, wanted))
        .collect();
    let chosen = match runnable.as_slice() {
        [one] => *one,
        [] => return Err("cargo reported no binary to run".into()),
        several => pick_default_run(several, &map)?,
    };
    let map = |remote: &str| {
        map(remote)
            .ok_or_else(|| format!("{remote} is outside the project's directory on the worker"))
    };
    let (package, version) = package_of(&chosen.package_id.repr);
    Ok(Program {
        path: map(chosen.executable.as_deref().map_or("", |p| p.as_str()))?,
        manifest: map(chosen.manifest_path.as_str())?,
        package: package.unwrap_or_else(|| chosen.target.name.clone()),
        version,
    })
}

fn is_wanted(artifact: &Artifact, wanted: &Wanted) -> bool {
    let kinds = &artifact.target.kind;
    match wanted {
        Wanted::Default => kinds.contains(&TargetKind::Bin),
        Wanted::Bin(name) => kinds.contains(&TargetKind::Bin) && &artifact.target.name == name,
        Wanted::Example(name) => {
            kinds.contains(&TargetKind::Example) && &artifact.target.name == name
        }
    }
}

/// Several binaries: cargo runs the package's `default-run`, if all come from
/// one package that names one.
fn pick_default_run<'a>(
    several: &[&'a Artifact],
    map: impl Fn(&str) -> Option<PathBuf>,
) -> Result<&'a Artifact, String> {
    let ambiguous = || {
        let names: Vec<&str> = several.iter().map(|a| a.target.name.as_str()).collect();
        format!(
            "several binaries ({}); name one with --bin",
            names.join(", ")
        )
    };
    let manifest = &several[0].manifest_path;
    if several.iter().any(|a| &a.manifest_path != manifest) {
        return Err(ambiguous());
    }
    let local = map(manifest.as_str()).ok_or_else(ambiguous)?;
    let default = default_run(&local).ok_or_else(ambiguous)?;
    several
        .iter()
        .find(|a| a.target.name == default)
        .copied()
        .ok_or_else(ambiguous)
}

/// `package.default-run` of a manifest.
fn default_run(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    let package = doc.get("package")?.as_table()?;
    Some(package.get("default-run")?.as_str()?.to_string())
}

/// Name and version from a package id: `path+file:///p/app#0.1.0` or
/// `path+file:///p/dir#app@0.1.0`; the name is `None` when the id only
/// implies it (the directory's name, which may differ from the package's).
fn package_of(id: &str) -> (Option<String>, String) {
    let Some((_, fragment)) = id.rsplit_once('#') else {
        return (None, String::new());
    };
    match fragment.split_once('@') {
        Some((name, version)) => (Some(name.to_string()), version.to_string()),
        None => (
            id.rsplit_once('#')
                .and_then(|(url, _)| url.rsplit('/').next())
                .map(str::to_string),
            fragment.to_string(),
        ),
    }
}

/// Become the program (exec): it gets this process's terminal, stdin,
/// signals and exit status, as under `cargo run`. The environment gets what
/// cargo sets for a program it runs. Returns only if it could not start.
pub fn exec(program: &Program, args: &[OsString], cwd: &Path) -> i32 {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&program.path);
    cmd.args(args).current_dir(cwd);
    for (name, value) in program_env(program) {
        cmd.env(name, value);
    }
    let err = cmd.exec();
    eprintln!("rch: cannot run {}: {err}", program.path.display());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The variables `cargo run` gives a program, and the library path that
/// finds dynamic libraries built next to it.
fn program_env(program: &Program) -> Vec<(&'static str, OsString)> {
    let mut env = Vec::new();
    if let Some(dir) = program.manifest.parent() {
        env.push(("CARGO_MANIFEST_DIR", dir.as_os_str().to_owned()));
    }
    env.push((
        "CARGO_MANIFEST_PATH",
        program.manifest.as_os_str().to_owned(),
    ));
    env.push(("CARGO_PKG_NAME", program.package.clone().into()));
    if !program.version.is_empty() {
        env.push(("CARGO_PKG_VERSION", program.version.clone().into()));
    }
    if let Some(dir) = program.path.parent() {
        let mut paths = vec![dir.join("deps"), dir.to_path_buf()];
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            env.push(("LD_LIBRARY_PATH", joined));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    fn strings(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn options_go_to_the_build_and_the_rest_to_the_program() {
        let argv = words("cargo +stable -q run --release --bin app -p x a -- b --release");
        let run = split(&argv, 3).unwrap();
        assert_eq!(
            strings(&run.build_argv),
            words("cargo +stable -q build --release --bin app -p x --message-format=json-render-diagnostics")
        );
        assert_eq!(strings(&run.program_args), words("a -- b --release"));
        assert_eq!(run.wanted, Wanted::Bin("app".into()));

        let argv = words("cargo r --example=demo --features=a,b -- --help");
        let run = split(&argv, 1).unwrap();
        assert_eq!(run.wanted, Wanted::Example("demo".into()));
        assert_eq!(strings(&run.program_args), vec!["--help"]);
        assert!(strings(&run.build_argv).contains(&"--features=a,b".to_string()));

        let run = split(&words("cargo run -j4 -Zx"), 1).unwrap();
        assert!(run.program_args.is_empty());
        assert_eq!(run.wanted, Wanted::Default);
    }

    #[test]
    fn unknown_options_and_output_formats_stay_local() {
        assert!(split(&words("cargo run --weird"), 1).is_err());
        assert!(split(&words("cargo run --message-format json"), 1).is_err());
    }

    #[test]
    fn the_report_names_the_program() {
        let artifact = |name: &str, kind: &str, exe: bool| {
            let exe = if exe {
                format!("\"/r/app-1/target/debug/{name}\"")
            } else {
                "null".into()
            };
            format!(
                r#"{{"reason":"compiler-artifact","package_id":"path+file:///r/app-1#app@0.2.0","manifest_path":"/r/app-1/Cargo.toml","target":{{"kind":["{kind}"],"crate_types":["{kind}"],"name":"{name}","src_path":"/r/app-1/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":true}},"profile":{{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false}},"features":[],"filenames":[],"executable":{exe},"fresh":false}}"#
            )
        };
        let report = [
            artifact("util", "lib", false),
            artifact("app", "bin", true),
            artifact("demo", "example", true),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
        ]
        .join("\n");
        let root = Path::new("/l");
        let map = |r: &str| crate::cargo_report::local_path(r, "/r/app-1", root);
        let report = Report::parse(report.as_bytes());
        let p = find_program(&report, &Wanted::Default, map).unwrap();
        assert_eq!(p.path, root.join("target/debug/app"));
        assert_eq!(p.manifest, root.join("Cargo.toml"));
        assert_eq!((p.package.as_str(), p.version.as_str()), ("app", "0.2.0"));
        let p = find_program(&report, &Wanted::Example("demo".into()), map).unwrap();
        assert_eq!(p.path, root.join("target/debug/demo"));
        assert!(find_program(&Report::parse(b""), &Wanted::Default, map).is_err());
    }

    #[test]
    fn package_ids_give_name_and_version() {
        assert_eq!(
            package_of("path+file:///p/app#0.1.0"),
            (Some("app".into()), "0.1.0".into())
        );
        assert_eq!(
            package_of("path+file:///p/dir#my-app@1.2.3"),
            (Some("my-app".into()), "1.2.3".into())
        );
    }
}
