//! Keeps the documentation true to the binary.
//!
//! - Every `rch …` command line in README.md, docs/*.md and runbooks/*.md
//!   parses with rch's own command line definition: in shell code blocks
//!   (`sh`, `bash`, `console`, …) and in inline code. Output is shown in
//!   `text` blocks, which are not read as commands. Inline code may name a
//!   command without its arguments (`rch workers reset`): the subcommands
//!   must exist, the arguments may be left out. Inline code quoting rch's
//!   output (`rch: ran on w1`, `rch lab: ...`) is not a command.
//! - Every TOML block in those files, and every file in config/*.toml, is
//!   accepted by the configuration validator; a block (or file) that is a
//!   project `.rch/config.toml` is checked with the project rules.
//! - docs/configuration.md names every configuration key and environment
//!   variable.
//! - Every sample line of rch's output (a line, in a block or inline code,
//!   starting with `rch:` or `<worker id>: failed:`) has a format the binary
//!   prints (`tests/fixtures/output-lines.txt`, which the tests that run rch
//!   check real lines against).
//!
//! A failure names the file and line of each offending example.

mod support;

use support::formats;

use clap::Parser;
use rch::cli::Cli;
use rch::config::{load_with, parse_str, Config, Sources, WorkerConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Languages of fenced blocks whose lines are shell commands.
const SHELL_LANGS: &[&str] = &["sh", "bash", "shell", "console", "zsh", "fish"];

/// Words that stand for a value in examples, and the value tried instead.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("ID", "w1"),
    ("<id>", "w1"),
    ("<ID>", "w1"),
    ("<worker>", "w1"),
    ("WORKER", "w1"),
    ("SHELL", "bash"),
];

/// Environment variables rch reads, each documented in docs/configuration.md.
const ENV_VARS: &[&str] = &[
    "RCH_CONFIG",
    "RCH_SOCKET",
    "RCH_LOG",
    "RCH_QUIET",
    "RCH_VERBOSE",
    "RCH_DISABLE",
    "RCH_REQUIRE_REMOTE",
    "RCH_WORKER",
    "RCH_REDIS_PASSWORD",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, docs/*.md and runbooks/*.md, relative to the repository.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    for dir in ["docs", "runbooks"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .unwrap_or_else(|e| panic!("reading {dir}/: {e}"))
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .map(|p| Path::new(dir).join(p.file_name().expect("file name")))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(repo().join(rel))
        .unwrap_or_else(|e| panic!("reading {}: {e}", rel.display()))
}

/// A piece of a document: where it starts and what it says.
#[derive(Debug)]
struct Snippet {
    line: usize,
    text: String,
}

/// A fenced block: its language and its body, whose first line is `line`.
#[derive(Debug)]
struct Block {
    lang: String,
    line: usize,
    body: Vec<String>,
}

/// The markdown split into fenced blocks and prose lines (with line numbers).
fn split_markdown(text: &str) -> (Vec<Block>, Vec<Snippet>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    lang: info.split_whitespace().next().unwrap_or("").to_string(),
                    line: number + 1,
                    body: Vec::new(),
                });
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => block.body.push(line.to_string()),
            (None, None) => prose.push(Snippet {
                line: number,
                text: line.to_string(),
            }),
        }
    }
    assert!(open.is_none(), "unclosed code block");
    (blocks, prose)
}

/// Command lines in a shell block: every line in `sh`-like blocks; in
/// `console` blocks only the lines after a `$ ` prompt.
fn block_commands(block: &Block) -> Vec<Snippet> {
    let prompt_only = block.lang == "console";
    block
        .body
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            let command = match line.strip_prefix("$ ") {
                Some(rest) => rest,
                None if prompt_only => return None,
                None => line,
            };
            Some(Snippet {
                line: block.line + i,
                text: command.to_string(),
            })
        })
        .collect()
}

/// Inline code spans of one prose line.
fn inline_code(line: &Snippet) -> Vec<Snippet> {
    line.text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|span| Snippet {
            line: line.line,
            text: span.to_string(),
        })
        .collect()
}

/// The `rch` invocations in one shell line, each as the words after `rch`:
/// comments dropped, a pipeline or list cut into its commands, leading
/// `VAR=value` assignments skipped.
fn rch_invocations(line: &str) -> Result<Vec<Vec<String>>, String> {
    let words = shlex::split(line).ok_or_else(|| format!("cannot split {line:?}"))?;
    let words: Vec<String> = words
        .into_iter()
        .take_while(|w| !w.starts_with('#'))
        .collect();
    let mut found = Vec::new();
    for command in words.split(|w| matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&")) {
        let mut rest = command
            .iter()
            .skip_while(|w| is_assignment(w) || w.as_str() == "sudo");
        if rest.next().map(String::as_str) == Some("rch") {
            found.push(rest.cloned().collect());
        }
    }
    Ok(found)
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
    })
}

/// Placeholders replaced by a real-looking value.
fn fill_placeholders(args: Vec<String>) -> Vec<String> {
    args.into_iter()
        .map(|w| match PLACEHOLDERS.iter().find(|(p, _)| *p == w) {
            Some((_, value)) => value.to_string(),
            None => w,
        })
        .collect()
}

/// How much of a command line must be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completeness {
    /// A command line to run: everything required is present.
    Full,
    /// A command named in prose: subcommands must exist, arguments may be missing.
    Name,
}

/// Parse `rch <args>` with the real CLI; help and version requests count as parsed.
fn parses_as(args: &[String], completeness: Completeness) -> Result<(), String> {
    use clap::error::ErrorKind;
    let argv = std::iter::once("rch".to_string()).chain(args.iter().cloned());
    let Err(e) = Cli::try_parse_from(argv) else {
        return Ok(());
    };
    let incomplete = matches!(
        e.kind(),
        ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(()),
        _ if incomplete && completeness == Completeness::Name => Ok(()),
        _ => Err(e.to_string().lines().next().unwrap_or("").to_string()),
    }
}

fn parses(args: &[String]) -> Result<(), String> {
    parses_as(args, Completeness::Full)
}

/// Inline code quoting rch's output: `rch: ...`, `rch lab: ...`.
fn is_quoted_output(span: &str) -> bool {
    span.split_whitespace()
        .take(2)
        .any(|word| word.ends_with(':'))
}

/// Every command line of one document, with the line it is on and how
/// complete it must be.
fn commands_of(text: &str) -> Vec<(Snippet, Completeness)> {
    let (blocks, prose) = split_markdown(text);
    let mut lines: Vec<(Snippet, Completeness)> = blocks
        .iter()
        .filter(|b| SHELL_LANGS.contains(&b.lang.as_str()))
        .flat_map(block_commands)
        .map(|s| (s, Completeness::Full))
        .collect();
    lines.extend(
        prose
            .iter()
            .flat_map(inline_code)
            .filter(|s| s.text.starts_with("rch ") || s.text.contains(" rch "))
            .filter(|s| !is_quoted_output(&s.text))
            .map(|s| (s, Completeness::Name)),
    );
    lines
}

#[test]
fn every_documented_rch_command_parses() {
    let mut failures = String::new();
    let mut checked = 0;
    for file in doc_files() {
        for (snippet, completeness) in commands_of(&read(&file)) {
            let invocations = match rch_invocations(&snippet.text) {
                Ok(found) => found,
                Err(e) => {
                    let _ = writeln!(failures, "{}:{}: {e}", file.display(), snippet.line);
                    continue;
                }
            };
            for args in invocations {
                checked += 1;
                if let Err(e) = parses_as(&fill_placeholders(args), completeness) {
                    let _ = writeln!(
                        failures,
                        "{}:{}: `{}`: {e}",
                        file.display(),
                        snippet.line,
                        snippet.text
                    );
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "documented commands rch does not accept:\n{failures}"
    );
    assert!(
        checked >= 50,
        "only {checked} rch commands found in the docs"
    );
}

/// Whether a TOML example is a project `.rch/config.toml`: it says so in its
/// first line.
fn is_project_example(body: &str) -> bool {
    body.lines()
        .next()
        .is_some_and(|first| first.starts_with('#') && first.contains(".rch/config.toml"))
}

/// Validate a project config: load it as the only layer, as rch would find
/// it. Messages name the example (`name`) instead of the temporary file.
fn check_project(text: &str, name: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rch_dir = dir.path().join(".rch");
    std::fs::create_dir_all(&rch_dir).map_err(|e| e.to_string())?;
    let file = rch_dir.join("config.toml");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    let sources = Sources {
        user_file: dir.path().join("no-user-config.toml"),
        user_file_required: false,
        lab_file: None,
        cwd: dir.path().to_path_buf(),
        env: BTreeMap::new(),
    };
    load_with(&sources)
        .map(|_| ())
        .map_err(|e| e.message.replace(&file.display().to_string(), name))
}

/// Validate one example; errors read `<name>:<line in the example>: ...`.
fn check_toml(text: &str, name: &str, project: bool) -> Result<(), String> {
    if project {
        check_project(text, name)
    } else {
        parse_str(text, Path::new(name))
            .map(|_| ())
            .map_err(|e| e.message)
    }
}

#[test]
fn every_documented_config_is_accepted() {
    let mut failures = String::new();
    let mut checked = 0;
    for file in doc_files() {
        let (blocks, _) = split_markdown(&read(&file));
        for block in blocks.iter().filter(|b| b.lang == "toml") {
            let body = block.body.join("\n");
            let name = format!("{} (toml block at line {})", file.display(), block.line);
            checked += 1;
            if let Err(e) = check_toml(&body, &name, is_project_example(&body)) {
                let _ = writeln!(failures, "{e}");
            }
        }
    }
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("config"))
        .expect("config/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    for path in examples {
        let text = std::fs::read_to_string(&path).expect("config example");
        let project = path.file_name().is_some_and(|n| n == "project.toml");
        checked += 1;
        if let Err(e) = check_toml(&text, &path.display().to_string(), project) {
            let _ = writeln!(failures, "{e}");
        }
    }
    assert!(
        failures.is_empty(),
        "documented configuration rch rejects:\n{failures}"
    );
    assert!(checked >= 8, "only {checked} TOML examples found");
}

/// `section.key` for every key of the configuration, and `workers.key`.
fn every_key() -> Vec<String> {
    let config = serde_json::to_value(Config::default()).expect("config as json");
    let mut keys = Vec::new();
    for (section, table) in config.as_object().expect("sections") {
        if let Some(table) = table.as_object() {
            keys.extend(table.keys().map(|k| format!("{section}.{k}")));
        }
    }
    let worker = serde_json::to_value(WorkerConfig::new("w", "h")).expect("worker as json");
    keys.extend(
        worker
            .as_object()
            .expect("worker keys")
            .keys()
            .map(|k| format!("workers.{k}")),
    );
    keys
}

#[test]
fn configuration_reference_names_every_key_and_variable() {
    let text = read(Path::new("docs/configuration.md"));
    let missing: Vec<String> = every_key()
        .into_iter()
        .filter(|path| {
            let (section, key) = path.split_once('.').expect("section.key");
            let header = if section == "workers" {
                "[[workers]]".to_string()
            } else {
                format!("[{section}]")
            };
            !(text.contains(&header) && text.contains(&format!("`{key}`")))
        })
        .chain(
            ENV_VARS
                .iter()
                .filter(|v| !text.contains(&format!("`{v}`")))
                .map(|v| v.to_string()),
        )
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {}",
        missing.join(", ")
    );
}

#[test]
fn the_extractor_finds_commands_where_they_are_written() {
    let doc = "Run `rch status --circuits` now.\n\n```sh\nrch lab up   # two workers\nRCH_QUIET=1 rch exec -- make | tail -1\n```\n\n```console\n$ rch workers probe w1\nw1: ok in 87ms\n```\n\n```text\n  rch workers probe w1    test now\n```\n";
    let found: Vec<(usize, Vec<Vec<String>>)> = commands_of(doc)
        .iter()
        .map(|(s, _)| (s.line, rch_invocations(&s.text).unwrap()))
        .collect();
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert_eq!(
        found,
        vec![
            (4, vec![words("lab up")]),
            (5, vec![words("exec -- make")]),
            (9, vec![words("workers probe w1")]),
            (1, vec![words("status --circuits")]),
        ]
    );
    assert!(parses(&words("workers probe --all")).is_ok());
    assert!(parses(&words("workers frobnicate w1")).is_err());
    assert!(parses(&fill_placeholders(words("workers reset ID"))).is_ok());
}

#[test]
fn named_commands_need_existing_subcommands_but_not_arguments() {
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    assert!(parses_as(&words("workers reset"), Completeness::Name).is_ok());
    assert!(parses_as(&words("lab"), Completeness::Name).is_ok());
    assert!(parses_as(&words("workers reset"), Completeness::Full).is_err());
    assert!(parses_as(&words("workers restart"), Completeness::Name).is_err());
    assert!(is_quoted_output("rch: ran on w1"));
    assert!(is_quoted_output("rch lab: already up in ..."));
    assert!(!is_quoted_output("rch lab up"));
}

/// A line the docs show as rch's output: `rch: ...` or `<id>: failed: ...`.
fn is_output_sample(line: &str) -> bool {
    if line.starts_with("rch: ") {
        return true;
    }
    line.split_once(": failed: ").is_some_and(|(id, _)| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    })
}

/// The sample with the docs' own placeholders (`<reason>`, `...`) filled in;
/// a trailing `...` makes it a prefix (`rch: ran locally: ...`).
fn sample_text(line: &str) -> (String, bool) {
    let trimmed = line.trim_end();
    let (body, prefix) = match trimmed
        .strip_suffix("...")
        .or_else(|| trimmed.strip_suffix('…'))
    {
        Some(body) => (body, true),
        None => (trimmed, false),
    };
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find(['<', '.', '…']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let skip = if tail.starts_with("...") {
            Some(3)
        } else if tail.starts_with('…') {
            Some('…'.len_utf8())
        } else if let Some(end) = tail.strip_prefix('<').and_then(|t| t.find('>')) {
            let word = &tail[1..=end];
            word.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
                .then_some(end + 2)
        } else {
            None
        };
        match skip {
            Some(n) => {
                out.push('x');
                rest = &tail[n..];
            }
            None => {
                let c = tail.chars().next().expect("non-empty");
                out.push(c);
                rest = &tail[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    (out, prefix)
}

/// Every output sample of one document: lines of fenced blocks that are not
/// commands, and inline code.
fn output_samples(text: &str) -> Vec<Snippet> {
    let (blocks, prose) = split_markdown(text);
    let mut samples = Vec::new();
    for block in &blocks {
        for (i, line) in block.body.iter().enumerate() {
            let line = line.trim();
            if is_output_sample(line) {
                samples.push(Snippet {
                    line: block.line + i,
                    text: line.to_string(),
                });
            }
        }
    }
    for line in &prose {
        samples.extend(
            inline_code(line)
                .into_iter()
                .filter(|s| is_output_sample(&s.text)),
        );
    }
    samples
}

#[test]
fn every_sample_output_line_is_one_the_binary_prints() {
    let formats = formats::formats();
    let mut problems = String::new();
    let mut checked = 0;
    for file in doc_files() {
        for sample in output_samples(&read(&file)) {
            checked += 1;
            let (text, prefix) = sample_text(&sample.text);
            let known = formats.iter().any(|f| {
                if prefix {
                    formats::could_start(f, &text)
                } else {
                    formats::matches(f, &text)
                }
            });
            if !known {
                let _ = writeln!(
                    problems,
                    "{}:{}: `{}` is not a line rch prints (tests/fixtures/output-lines.txt)",
                    file.display(),
                    sample.line,
                    sample.text
                );
            }
        }
    }
    assert!(problems.is_empty(), "{problems}");
    assert!(
        checked > 20,
        "only {checked} sample lines found: is the extractor broken?"
    );
}

#[test]
fn output_formats_tell_real_lines_from_false_ones() {
    for real in [
        "rch: ran on w1",
        "rch: ran locally: circuit open on w1 (retry in 30s)",
        "rch: lease 0.6ms · connect 0.7ms · push 161ms · run 91ms · pull 119ms · release 3ms",
        "w1: failed: ssh connect refused (rch-lab-w1); circuit open",
    ] {
        assert!(formats::format_of(real).is_some(), "{real}");
    }
    for false_line in [
        "w1: failed: w1: ssh connect refused (rch-lab-w1); circuit open",
        "rch: ran at w1",
        "rch: lease fast",
    ] {
        assert!(formats::format_of(false_line).is_none(), "{false_line}");
    }
    assert_eq!(
        sample_text("rch: config error: <file>:<line>: <key>: <problem>"),
        ("rch: config error: x:x: x: x".to_string(), false)
    );
    assert_eq!(
        sample_text("rch: ran locally: ..."),
        ("rch: ran locally: ".to_string(), true)
    );
}
