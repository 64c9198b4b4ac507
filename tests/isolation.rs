//! The test workers are really elsewhere: each sshd runs in a mount namespace
//! of its own where the client's files are invisible, so a build that reads a
//! path rch did not push fails here as it would on a real build machine.

mod support;

use support::{describe, TestEnv};

/// Whether `path` exists as seen from worker `id`.
fn worker_sees(env: &TestEnv, id: &str, path: &std::path::Path) -> bool {
    let quoted = shell_escape::escape(path.to_string_lossy());
    let out = env.ssh(id, &format!("test -e {quoted} && echo yes || echo no"));
    assert!(out.status.success(), "{}", describe(&out));
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn workers_see_their_own_files_and_toolchain_but_nothing_of_the_clients() {
    let env = TestEnv::new(2);
    if !env.lab.confinement().is_isolated() {
        eprintln!("skipped: {}", env.lab.confinement().describe());
        return;
    }
    let home = directories::BaseDirs::new()
        .unwrap()
        .home_dir()
        .to_path_buf();
    let client_paths = [
        env.project_dir.join("Cargo.toml"),
        env.config_file(),
        env.lab.client_key(),
        env.lab.workers()[1].dir.clone(),
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    ];
    for path in &client_paths {
        assert!(path.exists(), "{} exists on the client", path.display());
        assert!(!worker_sees(&env, "w1", path), "w1 sees {}", path.display());
    }
    let w1 = &env.lab.workers()[0];
    assert!(worker_sees(&env, "w1", &w1.remote_base));
    assert!(worker_sees(&env, "w1", &w1.home()));
    // The home is covered, the toolchain in it is not.
    let home_entries = env.ssh(
        "w1",
        &format!("ls -A {}", shell_escape::escape(home.to_string_lossy())),
    );
    let listed = String::from_utf8_lossy(&home_entries.stdout).to_string();
    for entry in listed.split_whitespace() {
        assert!(
            [".cargo", ".rustup"].contains(&entry),
            "w1 sees {entry} in the client's home: {listed}"
        );
    }
    let cargo = env.ssh("w1", "sh -lc 'cargo --version'");
    assert!(cargo.status.success(), "{}", describe(&cargo));
}
