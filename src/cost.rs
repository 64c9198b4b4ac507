//! The cost rule: compiles too small to be worth a round trip stay local.
//!
//! A remote build pays a fixed price (lease, push, remote start, pull) of a
//! few hundred milliseconds; one small translation unit compiles here in a
//! few dozen. Configure scripts and CMake's try-compiles run hundreds of such
//! probes (`gcc -o conftest conftest.c`). So a compiler command with exactly
//! one source file that is either small (`cost.local_compile_max_bytes`) or
//! named like a probe (`cost.local_compile_patterns`) runs locally, and says
//! which setting kept it here. The decision is pure; [`source_sizes`] does the
//! one `stat` it needs.

use crate::classify::{self, Offload, Tool};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::Path;

/// The `[cost]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CostConfig {
    /// A single source file of at most this many bytes compiles locally; 0 turns the size rule off.
    pub local_compile_max_bytes: u64,
    /// File-name patterns (`*` and `?`) of probe sources that always compile locally.
    pub local_compile_patterns: Vec<String>,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            local_compile_max_bytes: 16 * 1024,
            local_compile_patterns: ["conftest*", "CMakeCCompilerId*", "CMakeCXXCompilerId*"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Extensions of the source files a compiler translates.
const SOURCE_EXTENSIONS: &[&str] = &[
    "c", "cc", "cp", "cpp", "cxx", "c++", "C", "CPP", "m", "mm", "i", "ii", "s", "S", "sx",
];

/// One source file on the command line and its size (`None` if unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    pub name: &'a str,
    pub bytes: Option<u64>,
}

/// Why an offloadable command should still run locally, if the rule says so.
/// `sources` are the command's source files (see [`source_sizes`]).
pub fn keep_local(offload: &Offload, sources: &[Source<'_>], cost: &CostConfig) -> Option<String> {
    if offload.tool != Tool::Cc {
        return None;
    }
    let [source] = sources else {
        return None;
    };
    let file_name = source.name.rsplit('/').next().unwrap_or(source.name);
    if let Some(pattern) = cost
        .local_compile_patterns
        .iter()
        .find(|p| glob_match(p, file_name))
    {
        return Some(format!(
            "tiny compile: {file_name} matches the probe pattern {pattern:?} (cost.local_compile_patterns)"
        ));
    }
    let bytes = source.bytes?;
    let small = cost.local_compile_max_bytes > 0 && bytes <= cost.local_compile_max_bytes;
    small.then(|| {
        format!(
            "tiny compile: one source file of {bytes} bytes (cost.local_compile_max_bytes = {})",
            cost.local_compile_max_bytes
        )
    })
}

/// The source files of a compiler command with their sizes, read relative to
/// `cwd`. Only compiler commands are looked at; anything else has none.
pub fn source_sizes<'a>(offload: &Offload, argv: &'a [OsString], cwd: &Path) -> Vec<Source<'a>> {
    if offload.tool != Tool::Cc {
        return Vec::new();
    }
    let Some(words) = argv
        .iter()
        .skip(1)
        .map(|a| a.to_str())
        .collect::<Option<Vec<&str>>>()
    else {
        return Vec::new();
    };
    classify::cc_inputs(&words)
        .into_iter()
        .filter(|input| is_source(input))
        .map(|name| Source {
            name,
            bytes: std::fs::metadata(cwd.join(name)).ok().map(|m| m.len()),
        })
        .collect()
}

fn is_source(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| SOURCE_EXTENSIONS.contains(&ext))
}

/// Shell-style match of a whole name: `*` any run of characters, `?` one.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                back = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match back {
                Some((star, matched)) => {
                    pi = star + 1;
                    ni = matched + 1;
                    back = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Artifacts, Kind};

    fn cc() -> Offload {
        Offload {
            tool: Tool::Cc,
            kind: Kind::Compile,
            artifacts: Artifacts::Tree,
        }
    }

    fn source(name: &str, bytes: u64) -> Source<'_> {
        Source {
            name,
            bytes: Some(bytes),
        }
    }

    #[test]
    fn probes_and_small_single_sources_stay_local() {
        let cost = CostConfig::default();
        let why = keep_local(&cc(), &[source("conftest.c", 900_000)], &cost).unwrap();
        assert!(why.contains("cost.local_compile_patterns"), "{why}");
        let why = keep_local(&cc(), &[source("src/tiny.c", 200)], &cost).unwrap();
        assert!(why.contains("200 bytes"), "{why}");
        assert!(
            why.contains("cost.local_compile_max_bytes = 16384"),
            "{why}"
        );
    }

    #[test]
    fn big_or_several_sources_and_other_tools_go_remote() {
        let cost = CostConfig::default();
        assert_eq!(keep_local(&cc(), &[source("big.c", 100_000)], &cost), None);
        let two = [source("a.c", 10), source("b.c", 10)];
        assert_eq!(keep_local(&cc(), &two, &cost), None);
        let unreadable = [Source {
            name: "gone.c",
            bytes: None,
        }];
        assert_eq!(keep_local(&cc(), &unreadable, &cost), None);
        let make = Offload {
            tool: Tool::Make,
            ..cc()
        };
        assert_eq!(keep_local(&make, &[source("a.c", 1)], &cost), None);
        let off = CostConfig {
            local_compile_max_bytes: 0,
            local_compile_patterns: vec![],
        };
        assert_eq!(keep_local(&cc(), &[source("conftest.c", 10)], &off), None);
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_match("conftest*", "conftest.c"));
        assert!(glob_match("*.c", "a.c"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*test*", "my_test_file.c"));
        assert!(!glob_match("conftest*", "myconftest.c"));
        assert!(!glob_match("*.c", "a.cc"));
    }

    #[test]
    fn only_source_files_count() {
        let argv: Vec<OsString> = [
            "gcc",
            "-o",
            "conftest",
            "conftest.c",
            "-lm",
            "x.o",
            "-I",
            "inc",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let sources = source_sizes(&cc(), &argv, Path::new("/nonexistent"));
        assert_eq!(
            sources,
            vec![Source {
                name: "conftest.c",
                bytes: None
            }]
        );
    }
}
