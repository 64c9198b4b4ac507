//! Build files that record absolute paths: a CMake, Meson or autotools build
//! dir configured here names this machine's paths (`CMakeCache.txt`,
//! `build.ninja`, `meson-private/`, `config.status`, `compile_commands.json`,
//! a Makefile that configure generated), so it builds on a worker only at
//! the same absolute path.
//!
//! Only the directory the build tool works in and its parents up to the
//! synced root are looked at (a few `stat`s and reads), never the whole tree.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Files that, in a build dir, record where it was configured.
const RECORDING_FILES: &[&str] = &[
    "CMakeCache.txt",
    "build.ninja",
    "meson-info/meson-info.json",
    "config.status",
    "compile_commands.json",
    // Last: a generated Makefile names the paths too (automake's
    // `abs_srcdir`, `'<srcdir>/missing'`), also where config.status lives
    // elsewhere (libffi's in-tree build runs in a per-host subdirectory).
    "GNUmakefile",
    "makefile",
    "Makefile",
];

/// Files that, in a parent of the build dir, make it part of a configured tree.
const RECORDING_PARENT_FILES: &[&str] = &["CMakeCache.txt", "config.status", "build.ninja"];

/// How much of a file is read to find a recorded path.
const READ_LIMIT: u64 = 8 << 20;

/// A build file and the absolute path of this machine it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub file: PathBuf,
    pub path: PathBuf,
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records {}", self.file.display(), self.path.display())
    }
}

/// The directory a build command works in: `-C DIR` (make, ninja, meson
/// compile), `--directory=DIR`, `cmake --build DIR`, else `cwd`.
pub fn build_dir(argv: &[OsString], cwd: &Path) -> PathBuf {
    let words: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
    let program = words.first().map(|p| p.rsplit('/').next().unwrap_or(p));
    let mut dir: Option<&str> = None;
    let mut i = 1;
    while i < words.len() {
        let word = words[i];
        if word == "--" {
            break;
        }
        if program == Some("cmake") && word == "--build" {
            dir = words.get(i + 1).copied().filter(|d| !d.starts_with('-'));
        } else if word == "-C" || word == "--directory" {
            dir = words.get(i + 1).copied();
        } else if let Some(d) = word.strip_prefix("--directory=") {
            dir = Some(d);
        } else if let Some(d) = word.strip_prefix("-C").filter(|d| !d.is_empty()) {
            dir = Some(d);
        }
        i += 1;
    }
    match dir {
        Some(d) => cwd.join(d),
        None => cwd.to_path_buf(),
    }
}

/// The first build file in `build_dir` (or a parent of it within `root`)
/// that records the absolute path of `root` or of something inside it.
pub fn find(root: &Path, build_dir: &Path) -> Option<Recorded> {
    let own = RECORDING_FILES.iter().map(|f| build_dir.join(f));
    let parents = build_dir
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(root))
        .flat_map(|d| RECORDING_PARENT_FILES.iter().map(move |f| d.join(f)));
    own.chain(parents)
        .filter(|file| file.is_file())
        .find_map(|file| records(&file, root))
}

/// The source tree the build dir holding `recorded` was configured from,
/// when its build system records one (`srcdir` in autotools' `config.status`,
/// relative to the build dir or absolute; CMake's `CMAKE_HOME_DIRECTORY`;
/// Meson's `directories.source`) and it exists here. An out-of-tree build
/// dir reads its sources there, so they must reach the worker with it.
pub fn source_dir(recorded: &Recorded) -> Option<PathBuf> {
    let mut dir = recorded.file.parent()?;
    if dir.ends_with("meson-info") {
        dir = dir.parent()?;
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let source = if let Some(text) = read("config.status") {
        dir.join(shell_assignment(&text, "srcdir")?)
    } else if let Some(text) = read("CMakeCache.txt") {
        PathBuf::from(
            text.lines()
                .find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))?,
        )
    } else {
        let text = read("meson-info/meson-info.json")?;
        let info: serde_json::Value = serde_json::from_str(&text).ok()?;
        PathBuf::from(info["directories"]["source"].as_str()?)
    };
    let source = crate::cargo_layout::normalize(&source);
    source.is_dir().then_some(source)
}

/// The value of `name='value'` (or `name=value`) at the start of a line of
/// a shell script written by configure; `None` when it needs unquoting.
fn shell_assignment<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))?;
    let value = match value.strip_prefix('\'') {
        Some(quoted) => quoted.strip_suffix('\'')?,
        None => value,
    };
    (!value.contains(['\'', '"', '$', '\\', '`'])).then_some(value)
}

/// Whether `file` names `root` (or a path below it), and which path.
fn records(file: &Path, root: &Path) -> Option<Recorded> {
    use std::io::Read;
    let needle = root.to_str()?;
    let mut text = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .take(READ_LIMIT)
        .read_to_end(&mut text)
        .ok()?;
    let text = String::from_utf8_lossy(&text);
    let at = text.find(needle)?;
    let path = recorded_path(&text[at..]);
    Some(Recorded {
        file: file.to_path_buf(),
        path: PathBuf::from(path),
    })
}

/// The path starting at the front of `text`, up to a quote, a space or the end of the line.
fn recorded_path(text: &str) -> &str {
    let end = text
        .find(['"', '\'', '\n', ' ', '$', ';', ','])
        .unwrap_or(text.len());
    text[..end].trim_end_matches(['/', ':'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn build_dir_follows_the_tools_directory_options() {
        let cwd = Path::new("/p");
        assert_eq!(
            build_dir(&argv(&["make", "-C", "out"]), cwd),
            cwd.join("out")
        );
        assert_eq!(build_dir(&argv(&["ninja", "-Cb"]), cwd), cwd.join("b"));
        assert_eq!(
            build_dir(&argv(&["cmake", "--build", "out", "-j", "2"]), cwd),
            cwd.join("out")
        );
        assert_eq!(
            build_dir(&argv(&["meson", "compile", "-C", "builddir"]), cwd),
            cwd.join("builddir")
        );
        assert_eq!(build_dir(&argv(&["make"]), cwd), cwd);
    }

    #[test]
    fn a_cmake_cache_records_the_configured_dir() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("lib");
        std::fs::create_dir_all(root.join("out/sub")).unwrap();
        std::fs::write(
            root.join("out/CMakeCache.txt"),
            format!(
                "# cache\nCMAKE_HOME_DIRECTORY:INTERNAL={}\n",
                root.display()
            ),
        )
        .unwrap();
        let found = find(&root, &root.join("out/sub")).unwrap();
        assert_eq!(found.file, root.join("out/CMakeCache.txt"));
        assert_eq!(found.path, root);
        // A tree configured elsewhere (copied here) records nothing of ours.
        assert_eq!(find(&t.path().join("other"), &root.join("out")), None);
    }

    #[test]
    fn a_generated_makefile_records_the_tree_and_a_hand_written_one_does_not() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("ffi");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("Makefile"), "all:\n\tcc -o hello hello.c\n").unwrap();
        assert_eq!(find(&root, &root), None);
        let generated = format!(
            "ACLOCAL = ${{SHELL}} '{}/missing' aclocal-1.16\n",
            root.display()
        );
        std::fs::write(root.join("Makefile"), generated).unwrap();
        let found = find(&root, &root).unwrap();
        assert_eq!(found.file, root.join("Makefile"));
        assert_eq!(found.path, root.join("missing"));
    }

    #[test]
    fn an_out_of_tree_build_dir_names_the_source_tree_it_was_configured_from() {
        let t = tempfile::tempdir().unwrap();
        let (src, build) = (t.path().join("src"), t.path().join("build"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(build.join("meson-info")).unwrap();
        let at = |file: &str| Recorded {
            file: build.join(file),
            path: build.clone(),
        };
        // autotools: `../src/configure` run in the build dir.
        let status = format!(
            "#! /bin/sh\nac_pwd='{}'\nsrcdir='../src'\n",
            build.display()
        );
        std::fs::write(build.join("config.status"), &status).unwrap();
        assert_eq!(source_dir(&at("config.status")), Some(src.clone()));
        std::fs::write(build.join("config.status"), "srcdir=.\n").unwrap();
        assert_eq!(source_dir(&at("config.status")), Some(build.clone()));
        std::fs::write(build.join("config.status"), "srcdir='it'\\''s'\n").unwrap();
        assert_eq!(source_dir(&at("config.status")), None);
        std::fs::remove_file(build.join("config.status")).unwrap();
        // CMake, whatever file was found first.
        let cache = format!("CMAKE_HOME_DIRECTORY:INTERNAL={}\n", src.display());
        std::fs::write(build.join("CMakeCache.txt"), cache).unwrap();
        assert_eq!(source_dir(&at("build.ninja")), Some(src.clone()));
        std::fs::remove_file(build.join("CMakeCache.txt")).unwrap();
        // Meson.
        let info = serde_json::json!({"directories": {"source": src, "build": build}});
        std::fs::write(build.join("meson-info/meson-info.json"), info.to_string()).unwrap();
        assert_eq!(
            source_dir(&at("meson-info/meson-info.json")),
            Some(src.clone())
        );
        // A source tree that is gone here names nothing.
        std::fs::remove_dir(&src).unwrap();
        assert_eq!(source_dir(&at("build.ninja")), None);
    }
}
