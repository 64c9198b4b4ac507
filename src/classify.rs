//! Which commands can be offloaded to a worker, and their kind.
//!
//! A command is offloaded only when running it on a worker and bringing back
//! its output and artifacts is indistinguishable from running it here: it
//! must be a build, read nothing from stdin, touch nothing outside the
//! project, and not be a query about the local toolchain (`--version`).
//! Anything else runs locally, with a short reason.
//!
//! Classification runs before every command, so it is a single pass over the
//! arguments with no parsing beyond what the decision needs.

use std::ffi::OsString;

use serde::{Deserialize, Serialize};

/// The build tool a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Cargo,
    Make,
    Cmake,
    Ninja,
    Meson,
    Cc,
}

impl Tool {
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Cargo => "cargo",
            Tool::Make => "make",
            Tool::Cmake => "cmake",
            Tool::Ninja => "ninja",
            Tool::Meson => "meson",
            Tool::Cc => "cc",
        }
    }
}

/// What an offloaded command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Build,
    Test,
    Check,
    Bench,
    Doc,
    Compile,
    /// `cargo run`: built on a worker, run here.
    Run,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Test => "test",
            Kind::Check => "check",
            Kind::Bench => "bench",
            Kind::Doc => "doc",
            Kind::Compile => "compile",
            Kind::Run => "run",
        }
    }
}

/// What to bring back from the worker after a successful run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Artifacts {
    None,
    /// A cargo output directory, relative to the project root
    /// (e.g. `target/release`, `target/x86_64-unknown-linux-gnu/debug`).
    CargoTarget {
        dir: String,
    },
    /// The project tree: make and compilers write their outputs anywhere in it.
    Tree,
}

/// How to run an offloadable command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offload {
    pub tool: Tool,
    pub kind: Kind,
    pub artifacts: Artifacts,
}

/// The verdict on a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Offload(Offload),
    /// Run it here; a short reason, e.g. "cargo run is not offloadable".
    Local(String),
}

impl Decision {
    pub fn is_offload(&self) -> bool {
        matches!(self, Decision::Offload(_))
    }
}

/// A reason quotes the user's words; control characters in them are escaped
/// so the reason stays one line (it ends up in the `rch: ran locally` line).
fn local(reason: impl Into<String>) -> Decision {
    let reason: String = reason.into();
    if !reason.contains(char::is_control) {
        return Decision::Local(reason);
    }
    let escaped = reason
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    Decision::Local(escaped)
}

fn offload(tool: Tool, kind: Kind, artifacts: Artifacts) -> Decision {
    Decision::Offload(Offload {
        tool,
        kind,
        artifacts,
    })
}

/// Classify a command given as its argument vector. `argv[0]` may be a path
/// (`/usr/bin/cargo`); cargo may carry a `+toolchain` first argument.
pub fn classify(argv: &[OsString]) -> Decision {
    let Some((program, args)) = argv.split_first() else {
        return local("empty command");
    };
    let Some(program) = program.to_str() else {
        return local("non-UTF-8 command name");
    };
    let Some(args) = args
        .iter()
        .map(|arg| arg.to_str())
        .collect::<Option<Vec<&str>>>()
    else {
        return local("non-UTF-8 argument");
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    match tool_named(name) {
        Some(Tool::Cargo) => classify_cargo(&args),
        Some(Tool::Make) => classify_make(&args),
        Some(Tool::Cmake) => classify_cmake(&args),
        Some(Tool::Ninja) => classify_ninja(&args),
        Some(Tool::Meson) => classify_meson(&args),
        Some(Tool::Cc) => classify_cc(name, &args),
        None => local(format!("{name} is not a build command")),
    }
}

fn tool_named(name: &str) -> Option<Tool> {
    match name {
        "cargo" => Some(Tool::Cargo),
        "make" | "gmake" => Some(Tool::Make),
        "cmake" => Some(Tool::Cmake),
        "ninja" | "ninja-build" => Some(Tool::Ninja),
        "meson" => Some(Tool::Meson),
        _ if is_compiler(name) => Some(Tool::Cc),
        _ => None,
    }
}

/// `cc`, `gcc`, `clang++`, ... optionally with a version suffix (`gcc-13`, `clang-17`).
fn is_compiler(name: &str) -> bool {
    const COMPILERS: [&str; 6] = ["cc", "c++", "gcc", "g++", "clang", "clang++"];
    let base = match name.split_once('-') {
        Some((base, version)) if is_version(version) => base,
        _ => name,
    };
    COMPILERS.contains(&base)
}

fn is_version(text: &str) -> bool {
    !text.is_empty()
        && text.starts_with(|c: char| c.is_ascii_digit())
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// Flags that make any tool print something about itself instead of building.
fn is_help_or_version(arg: &str) -> bool {
    matches!(arg, "--help" | "-h" | "--version")
}

/// A path the worker's copy of the project can resolve to the same place:
/// relative, and not climbing out of the project.
fn stays_in_project(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.starts_with('~')
        && !path.split('/').any(|component| component == "..")
}

/// The value of a short option given as `-C value` or `-Cvalue`, if `args[i]` is one.
fn short_option_value<'a>(args: &[&'a str], i: usize, name: &str) -> Option<&'a str> {
    match args[i].strip_prefix(name)? {
        "" => Some(args.get(i + 1).copied().unwrap_or("")),
        attached => Some(attached),
    }
}

/// The value of an option given as `--name value` or `--name=value`, if `args[i]` is one.
/// Returns the value and how many arguments the option used.
fn option_value<'a>(args: &[&'a str], i: usize, name: &str) -> Option<(&'a str, usize)> {
    let arg = args[i];
    let rest = arg.strip_prefix(name)?;
    if rest.is_empty() {
        return Some((args.get(i + 1).copied().unwrap_or(""), 2));
    }
    rest.strip_prefix('=').map(|value| (value, 1))
}

// ---------------------------------------------------------------- cargo

/// Cargo options that come before the subcommand and take a value.
const CARGO_GLOBAL_WITH_VALUE: [&str; 3] = ["--color", "--config", "-Z"];
/// Cargo options that come before the subcommand and take none.
const CARGO_GLOBAL_FLAGS: [&str; 6] = [
    "--verbose",
    "--quiet",
    "-q",
    "--locked",
    "--offline",
    "--frozen",
];

fn classify_cargo(args: &[&str]) -> Decision {
    match cargo_subcommand_at(args) {
        Ok(Some(i)) => classify_cargo_subcommand(args[i], &args[i + 1..]),
        Ok(None) => local("bare cargo is not a build"),
        Err(reason) => local(reason),
    }
}

/// Where the subcommand is in cargo's arguments (after an optional
/// `+toolchain` and the global options); `None` when there is none.
pub fn cargo_subcommand_at(args: &[&str]) -> Result<Option<usize>, String> {
    let mut i = usize::from(args.first().is_some_and(|a| a.starts_with('+')));
    while let Some(&arg) = args.get(i) {
        if !arg.starts_with('-') {
            return Ok(Some(i));
        }
        i += cargo_global_option_len(args, i)?;
    }
    Ok(None)
}

/// How many arguments the global option at `args[i]` uses, or why it means "run locally".
fn cargo_global_option_len(args: &[&str], i: usize) -> Result<usize, String> {
    let arg = args[i];
    if is_help_or_version(arg) || matches!(arg, "-V" | "--list") || arg.starts_with("--explain") {
        return Err(format!("cargo {arg} is not a build"));
    }
    if arg.starts_with("-C") {
        return Err("cargo -C is not supported".to_string());
    }
    if CARGO_GLOBAL_FLAGS.contains(&arg) || is_verbosity(arg) {
        return Ok(1);
    }
    for name in CARGO_GLOBAL_WITH_VALUE {
        if arg == name {
            return Ok(2);
        }
        // `--color=always`, `-Zflag`.
        if arg.starts_with(name) && (name == "-Z" || arg[name.len()..].starts_with('=')) {
            return Ok(1);
        }
    }
    Err(format!("unknown cargo option {arg}"))
}

/// `-v`, `-vv`, `-vvv`.
fn is_verbosity(arg: &str) -> bool {
    arg.len() > 1 && arg.starts_with('-') && arg[1..].bytes().all(|b| b == b'v')
}

fn classify_cargo_subcommand(subcommand: &str, args: &[&str]) -> Decision {
    let (kind, args) = match subcommand {
        "build" | "b" => (Kind::Build, args),
        "check" | "c" | "clippy" => (Kind::Check, args),
        "test" | "t" => (Kind::Test, args),
        "bench" => (Kind::Bench, args),
        "doc" | "d" => (Kind::Doc, args),
        "run" | "r" => match crate::cargo_run::options_len(args) {
            Ok(options) => (Kind::Run, &args[..options]),
            Err(reason) => return local(reason),
        },
        "nextest" => match args.first() {
            Some(&"run") | Some(&"r") => (Kind::Test, &args[1..]),
            Some(other) if !other.starts_with('-') => {
                return local(format!("cargo nextest {other} is not offloadable"))
            }
            _ => return local("cargo nextest without run is not offloadable"),
        },
        _ => return local(format!("cargo {subcommand} is not offloadable")),
    };
    let flags = match CargoFlags::parse(args) {
        Ok(flags) => flags,
        Err(reason) => return local(reason),
    };
    if let Some(reason) = flags.refusal(subcommand) {
        return local(reason);
    }
    // `cargo test --no-run` builds test binaries for the user to run: they
    // come back; a test run's outputs stay on the worker.
    let is_test = matches!(subcommand, "test" | "t" | "bench");
    let artifacts = match kind {
        Kind::Build | Kind::Run => Artifacts::CargoTarget {
            dir: flags.output_dir(false),
        },
        Kind::Test | Kind::Bench if is_test && flags.no_run => Artifacts::CargoTarget {
            dir: flags.output_dir(kind == Kind::Bench),
        },
        _ => Artifacts::None,
    };
    offload(Tool::Cargo, kind, artifacts)
}

/// What rch needs to know from a cargo subcommand's arguments.
#[derive(Default)]
struct CargoFlags<'a> {
    release: bool,
    profile: Option<&'a str>,
    /// The first `--target`, and whether there were several.
    target: Option<&'a str>,
    several_targets: bool,
    target_dir: Option<&'a str>,
    fix: bool,
    open: bool,
    no_run: bool,
}

impl<'a> CargoFlags<'a> {
    /// Scan the arguments up to `--` (after it they belong to the test binary).
    fn parse(args: &[&'a str]) -> Result<Self, String> {
        let mut flags = CargoFlags::default();
        let mut i = 0;
        while let Some(&arg) = args.get(i) {
            if arg == "--" {
                break;
            }
            if is_help_or_version(arg) {
                return Err(format!("cargo {arg} is not a build"));
            }
            i += flags.take(args, i)?;
        }
        Ok(flags)
    }

    /// Note the argument at `args[i]`; returns how many arguments it used.
    fn take(&mut self, args: &[&'a str], i: usize) -> Result<usize, String> {
        match args[i] {
            "--release" | "-r" => self.release = true,
            "--fix" => self.fix = true,
            "--open" => self.open = true,
            "--no-run" => self.no_run = true,
            _ => {}
        }
        if let Some((value, used)) = option_value(args, i, "--profile") {
            self.profile = Some(value);
            return Ok(used);
        }
        if let Some((value, used)) = option_value(args, i, "--target-dir") {
            self.target_dir = Some(value);
            return in_project("--target-dir", value).map(|()| used);
        }
        if let Some((value, used)) = option_value(args, i, "--manifest-path") {
            return in_project("--manifest-path", value).map(|()| used);
        }
        if let Some((value, used)) = option_value(args, i, "--target") {
            self.several_targets |= self.target.is_some();
            self.target.get_or_insert(value);
            return Ok(used);
        }
        Ok(1)
    }

    /// Why these flags make the command unfit for a worker, if they do.
    fn refusal(&self, subcommand: &str) -> Option<String> {
        if self.fix {
            return Some(format!("cargo {subcommand} --fix edits sources"));
        }
        if self.open {
            return Some(format!("cargo {subcommand} --open opens a local browser"));
        }
        None
    }

    /// The directory a `cargo build` with these flags writes its outputs to
    /// (`bench`: a `cargo bench`, whose default profile is `bench`).
    fn output_dir(&self, bench: bool) -> String {
        let base = self.target_dir.map_or("target", normalize_dir);
        let profile = profile_dir(self.release || bench, self.profile);
        match (self.target, self.several_targets) {
            (Some(_), true) => base.to_string(),
            (Some(target), false) => format!("{base}/{}/{profile}", target_name(target)),
            (None, _) => format!("{base}/{profile}"),
        }
    }
}

fn in_project(option: &str, path: &str) -> Result<(), String> {
    if stays_in_project(path) {
        Ok(())
    } else {
        Err(format!(
            "cargo {option} outside the project is not supported"
        ))
    }
}

/// `./target/` → `target`.
fn normalize_dir(dir: &str) -> &str {
    let mut dir = dir.trim_end_matches('/');
    while let Some(rest) = dir.strip_prefix("./") {
        dir = rest.trim_start_matches('/');
    }
    dir
}

/// The directory name cargo uses for a profile: `dev` and `test` build into
/// `debug`, `release` and `bench` into `release`, custom profiles into their name.
fn profile_dir(release: bool, profile: Option<&str>) -> &str {
    match profile {
        Some("dev" | "test") => "debug",
        Some("release" | "bench") => "release",
        Some(custom) => custom,
        None if release => "release",
        None => "debug",
    }
}

/// The directory name of a target: a triple, or the stem of a target spec file.
fn target_name(target: &str) -> &str {
    match target.strip_suffix(".json") {
        Some(spec) => spec.rsplit('/').next().unwrap_or(spec),
        None => target,
    }
}

// ---------------------------------------------------------------- make, cmake, ninja

/// Targets that change the machine they run on rather than build the project.
fn is_install_target(arg: &str) -> bool {
    matches!(arg, "install" | "uninstall")
}

/// make options whose value is the next argument.
const MAKE_WITH_VALUE: [&str; 6] = ["-C", "-f", "-I", "-o", "-W", "-E"];

fn classify_make(args: &[&str]) -> Decision {
    let mut i = 0;
    while let Some(&arg) = args.get(i) {
        let next = args.get(i + 1).copied();
        if is_help_or_version(arg) || arg == "-v" {
            return local(format!("make {arg} is not a build"));
        }
        if reads_makefile_from_stdin(arg, next) {
            return local("make reading its makefile from stdin is not offloadable");
        }
        let dir = short_option_value(args, i, "-C")
            .or_else(|| option_value(args, i, "--directory").map(|(dir, _)| dir));
        if let Some(dir) = dir {
            if !stays_in_project(dir) {
                return local("make -C outside the project is not supported");
            }
        }
        if is_install_target(arg) {
            return local(format!("make {arg} is not a build"));
        }
        i += if MAKE_WITH_VALUE.contains(&arg) { 2 } else { 1 };
    }
    offload(Tool::Make, Kind::Build, Artifacts::Tree)
}

/// `-f -`, `-f-`, `--file=-`, `--makefile -`, or a flag cluster ending in `f` (`-sf -`).
fn reads_makefile_from_stdin(arg: &str, next: Option<&str>) -> bool {
    if matches!(arg, "-f-" | "--file=-" | "--makefile=-") {
        return true;
    }
    let takes_file = matches!(arg, "--file" | "--makefile")
        || (arg.len() > 1
            && !arg.starts_with("--")
            && arg.starts_with('-')
            && arg.ends_with('f')
            && arg[1..].bytes().all(|b| b.is_ascii_alphabetic()));
    takes_file && next == Some("-")
}

fn classify_cmake(args: &[&str]) -> Decision {
    let Some((&"--build", rest)) = args.split_first() else {
        return local("cmake without --build is not offloadable");
    };
    match rest.first() {
        Some(preset) if preset.starts_with("--preset") => {}
        Some(dir) if !dir.starts_with('-') && stays_in_project(dir) => {}
        Some(dir) if !dir.starts_with('-') => {
            return local("cmake --build outside the project is not supported")
        }
        _ => return local("cmake --build without a build directory"),
    }
    for &arg in &rest[1..] {
        if arg == "--" {
            break;
        }
        if is_help_or_version(arg) {
            return local(format!("cmake {arg} is not a build"));
        }
        if is_install_target(arg) {
            return local(format!("cmake --build --target {arg} is not a build"));
        }
    }
    offload(Tool::Cmake, Kind::Build, Artifacts::Tree)
}

/// `meson compile [-C DIR] [OPTIONS] [TARGETS]`: Meson's own build command.
/// Every other meson subcommand configures, installs or inspects.
fn classify_meson(args: &[&str]) -> Decision {
    match args.first() {
        Some(&"compile") => {}
        Some(other) => return local(format!("meson {other} is not a build")),
        None => return local("bare meson is not a build"),
    }
    let rest = &args[1..];
    for (i, &arg) in rest.iter().enumerate() {
        if is_help_or_version(arg) {
            return local(format!("meson compile {arg} is not a build"));
        }
        if let Some(dir) = short_option_value(rest, i, "-C") {
            if !stays_in_project(dir) {
                return local("meson compile -C outside the project is not supported");
            }
        }
    }
    offload(Tool::Meson, Kind::Build, Artifacts::Tree)
}

/// ninja options whose value is the next argument.
const NINJA_WITH_VALUE: [&str; 6] = ["-C", "-f", "-j", "-k", "-l", "-d"];

fn classify_ninja(args: &[&str]) -> Decision {
    let mut i = 0;
    while let Some(&arg) = args.get(i) {
        if is_help_or_version(arg) {
            return local(format!("ninja {arg} is not a build"));
        }
        if arg.starts_with("-t") {
            return local("ninja -t runs a tool, not a build");
        }
        if let Some(dir) = short_option_value(args, i, "-C") {
            if !stays_in_project(dir) {
                return local("ninja -C outside the project is not supported");
            }
        }
        if is_install_target(arg) {
            return local(format!("ninja {arg} is not a build"));
        }
        i += if NINJA_WITH_VALUE.contains(&arg) {
            2
        } else {
            1
        };
    }
    offload(Tool::Ninja, Kind::Build, Artifacts::Tree)
}

// ---------------------------------------------------------------- C and C++ compilers

/// Compiler options whose value is the next argument.
const CC_WITH_VALUE: [&str; 30] = [
    "-o",
    "-I",
    "-D",
    "-U",
    "-L",
    "-l",
    "-x",
    "-B",
    "-T",
    "-u",
    "-z",
    "-e",
    "-MF",
    "-MT",
    "-MQ",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-iprefix",
    "-iwithprefix",
    "-iwithprefixbefore",
    "-isysroot",
    "-Xlinker",
    "-Xassembler",
    "-Xpreprocessor",
    "-Xclang",
    "-target",
    "--param",
];

fn classify_cc(name: &str, args: &[&str]) -> Decision {
    let mut inputs = 0;
    let mut i = 0;
    while let Some(&arg) = args.get(i) {
        if let Some(reason) = cc_refusal(name, arg) {
            return local(reason);
        }
        if arg == "-o" {
            let output = args.get(i + 1).copied().unwrap_or("");
            if output != "-" && !stays_in_project(output) {
                return local(format!(
                    "{name} output outside the project is not supported"
                ));
            }
        }
        if !arg.starts_with('-') {
            if !arg.starts_with('@') && !stays_in_project(arg) {
                return local(format!("{name} input outside the project is not supported"));
            }
            inputs += 1;
        }
        i += if CC_WITH_VALUE.contains(&arg) { 2 } else { 1 };
    }
    if inputs == 0 {
        return local(format!("{name} without input files is not a build"));
    }
    offload(Tool::Cc, Kind::Compile, Artifacts::Tree)
}

/// The input files of a compiler command (its arguments without the program
/// name): the words that are neither options nor option values.
pub fn cc_inputs<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut inputs = Vec::new();
    let mut i = 0;
    while let Some(&arg) = args.get(i) {
        if !arg.starts_with('-') && !arg.starts_with('@') {
            inputs.push(arg);
        }
        i += if CC_WITH_VALUE.contains(&arg) { 2 } else { 1 };
    }
    inputs
}

/// Why a compiler argument means "run locally", if it does.
fn cc_refusal(name: &str, arg: &str) -> Option<String> {
    if arg == "-" {
        return Some(format!(
            "{name} reading source from stdin is not offloadable"
        ));
    }
    let asks_about_toolchain = is_help_or_version(arg)
        || arg == "-###"
        || arg.starts_with("-dump")
        || arg.starts_with("-print-")
        || arg.starts_with("--print-");
    asks_about_toolchain.then(|| format!("{name} {arg} is not a build"))
}

// ---------------------------------------------------------------- shell command lines

/// Shell syntax that makes a command line more than one simple command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShellOp {
    And,
    Or,
    Sequence,
    Pipe,
    Background,
    Redirect,
    Subshell,
    Substitution,
    Expansion,
}

impl ShellOp {
    fn describe(self) -> &'static str {
        match self {
            ShellOp::And | ShellOp::Or | ShellOp::Sequence => "a command list",
            ShellOp::Pipe => "a pipeline",
            ShellOp::Background => "a background job",
            ShellOp::Redirect => "a redirection",
            ShellOp::Subshell => "a subshell",
            ShellOp::Substitution => "a command substitution",
            ShellOp::Expansion => "a variable expansion",
        }
    }
}

/// Classify a command line as a shell would run it (for hooks and `rch diagnose`).
/// Only a simple command, optionally after a leading `cd DIR &&`, can be offloaded.
pub fn classify_shell(command_line: &str) -> Decision {
    let (_, command) = split_leading_cd(command_line);
    if let Some((_, op)) = first_shell_op(command) {
        return local(format!("{} is not offloadable", op.describe()));
    }
    let Some(words) = shlex::split(command) else {
        return local("unbalanced quotes");
    };
    if words.first().is_some_and(|word| is_assignment(word)) {
        return local("a variable assignment before the command is not offloadable");
    }
    let argv: Vec<OsString> = words.into_iter().map(OsString::from).collect();
    classify(&argv)
}

/// Split `cd DIR && rest` into the directory and the rest; anything else is
/// returned whole, with no directory.
pub fn split_leading_cd(command_line: &str) -> (Option<String>, &str) {
    let whole = (None, command_line);
    if !command_line.trim_start().starts_with("cd") {
        return whole;
    }
    let Some((at, ShellOp::And)) = first_shell_op(command_line) else {
        return whole;
    };
    match shlex::split(&command_line[..at]).as_deref() {
        Some([cd, dir]) if cd == "cd" => (Some(dir.clone()), command_line[at + 2..].trim_start()),
        _ => whole,
    }
}

/// `NAME=value` as the first word: an environment assignment, not a program.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// The first unquoted shell operator and its byte offset. Quoting follows
/// the shell: nothing is special inside single quotes, and only `$`, `` ` ``
/// and `\` are inside double quotes. A `#` starting a word begins a comment.
fn first_shell_op(line: &str) -> Option<(usize, ShellOp)> {
    let bytes = line.as_bytes();
    let mut in_single = false;
    let mut in_double = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let next = bytes.get(i + 1).copied();
        if in_single {
            in_single = byte != b'\'';
        } else if byte == b'\\' {
            i += 1; // the escaped byte is literal
        } else if let Some(op) = expansion_at(byte, next) {
            return Some((i, op));
        } else if in_double {
            in_double = byte != b'"';
        } else if byte == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return None;
        } else if let Some(op) = operator_at(byte, next) {
            return Some((i, op));
        } else {
            in_single = byte == b'\'';
            in_double = byte == b'"';
        }
        i += 1;
    }
    None
}

/// `$(...)`, `` `...` `` and `$NAME`: active both unquoted and in double quotes.
fn expansion_at(byte: u8, next: Option<u8>) -> Option<ShellOp> {
    match (byte, next) {
        (b'`', _) | (b'$', Some(b'(')) => Some(ShellOp::Substitution),
        (b'$', Some(next)) if starts_expansion(next) => Some(ShellOp::Expansion),
        _ => None,
    }
}

/// What may follow `$` to make it an expansion rather than a literal dollar.
fn starts_expansion(next: u8) -> bool {
    next.is_ascii_alphanumeric() || b"_{@*#?$!-".contains(&next)
}

/// Operators recognised outside quotes.
fn operator_at(byte: u8, next: Option<u8>) -> Option<ShellOp> {
    match (byte, next) {
        (b'&', Some(b'&')) => Some(ShellOp::And),
        (b'&', Some(b'>')) => Some(ShellOp::Redirect),
        (b'&', _) => Some(ShellOp::Background),
        (b'|', Some(b'|')) => Some(ShellOp::Or),
        (b'|', _) => Some(ShellOp::Pipe),
        (b';', _) | (b'\n', _) => Some(ShellOp::Sequence),
        (b'<', _) | (b'>', _) => Some(ShellOp::Redirect),
        (b'(', _) | (b')', _) => Some(ShellOp::Subshell),
        _ => None,
    }
}
