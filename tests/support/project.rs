//! Small cargo projects for tests: a bin crate that prints one line.

use std::path::{Path, PathBuf};

/// Create the project at `dir` unless it exists; returns `dir`.
pub fn create(dir: &Path) -> PathBuf {
    let package = package_name(dir);
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        std::fs::create_dir_all(dir.join("src")).expect("project dir");
        std::fs::write(
            &manifest,
            format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 # A project of its own, whatever directory it sits in.\n[workspace]\n"
            ),
        )
        .expect("Cargo.toml");
        std::fs::write(
            dir.join("src/main.rs"),
            format!("fn main() {{\n    println!(\"hello from {package}\");\n}}\n"),
        )
        .expect("main.rs");
    }
    dir.to_path_buf()
}

/// A valid cargo package name made from the directory name.
pub fn package_name(dir: &Path) -> String {
    let raw = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let name: String = raw
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    match name.chars().next() {
        None => "app".to_string(),
        Some(first) if !first.is_ascii_alphabetic() => format!("p{name}"),
        Some(_) => name,
    }
}
