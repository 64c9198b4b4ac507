//! End-to-end: builds over a link-shaped worker, a lab worker whose sshd is
//! reached through a userspace proxy adding latency and limiting the rate
//! (`rch::lab::link`): the link is measured from the transfers themselves
//! and a slow one is compressed.

mod support;

use rch::lab::link::{LinkProxy, Shape};
use std::process::Output;
use support::{describe, TestEnv};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `rch exec -- cargo build` in the test's project, with rch's debug log.
fn build(env: &TestEnv) -> Output {
    env.rch()
        .args(["exec", "--", "cargo", "build"])
        .env("RCH_LOG", "rch=debug")
        .output()
        .expect("running rch")
}

/// The throughput rch keeps for `worker` (bytes per second).
fn measured(env: &TestEnv, worker: &str) -> Option<f64> {
    let file = env.path().join("cache/rch/links").join(worker);
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn a_slow_link_is_measured_from_its_transfers_and_then_compressed() {
    let env = TestEnv::new(1);
    let real = env.lab.workers()[0].port;
    // 10 ms round trip, 40 Mbit/s each way.
    let proxy = LinkProxy::start(real, Shape::new(10, 40)).expect("proxy");
    let alias = env.lab.alias_via("w1", proxy.port()).expect("alias");
    env.write_config(&format!("[[workers]]\nid = \"w1\"\nhost = \"{alias}\"\n"));
    // 6 MB that do not compress: the first push is a sample of the link.
    let noise: Vec<u8> = (0..6_000_000u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(env.project_dir.join("noise.bin"), noise).unwrap();

    let out = build(&env);
    assert!(out.status.success(), "{}", describe(&out));
    // Never measured: the first push goes plain; once it measured the link,
    // the pull of the same build may already compress.
    let text = stderr(&out);
    let measured_at = text.find("link measured").unwrap_or(usize::MAX);
    let compressed_at = text.find("rsync compresses").unwrap_or(usize::MAX);
    assert!(compressed_at > measured_at, "{}", describe(&out));
    let rate = measured(&env, "w1").unwrap_or_else(|| panic!("not measured: {}", describe(&out)));
    assert!(rate < 5.5e6, "40 Mbit/s measured as {rate} B/s");

    // The next transfers go compressed.
    std::fs::write(
        env.project_dir.join("src/main.rs"),
        "fn main() { println!(\"2\"); }\n",
    )
    .unwrap();
    let out = build(&env);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rsync compresses"),
        "{}",
        describe(&out)
    );

    // The worker's own setting wins over the measurement.
    env.write_config(&format!(
        "[[workers]]\nid = \"w1\"\nhost = \"{alias}\"\ncompress = false\n"
    ));
    std::fs::write(
        env.project_dir.join("src/main.rs"),
        "fn main() { println!(\"3\"); }\n",
    )
    .unwrap();
    let out = build(&env);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("rsync compresses"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );
}

/// On a terminal, a transfer that lasts over a second draws one progress
/// line (bytes, rate, files) and clears it before the build's own output.
#[test]
fn a_slow_push_on_a_terminal_draws_a_progress_line_and_clears_it() {
    let env = TestEnv::new(1);
    let real = env.lab.workers()[0].port;
    // 20 Mbit/s: 8 MB take over three seconds.
    let proxy = LinkProxy::start(real, Shape::new(2, 20)).expect("proxy");
    let alias = env.lab.alias_via("w1", proxy.port()).expect("alias");
    env.write_config(&format!("[[workers]]\nid = \"w1\"\nhost = \"{alias}\"\n"));
    let noise: Vec<u8> = (0..8_000_000u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(env.project_dir.join("noise.bin"), noise).unwrap();

    let line = format!("{} exec -- cargo build", support::rch_bin());
    let out = env.on_terminal(&env.project_dir, &line);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(text.contains("rch: ran on w1"), "{text:?}");
    let drawn = text
        .find("rch: push ")
        .unwrap_or_else(|| panic!("no progress line: {text:?}"));
    assert!(
        text[drawn..].contains(" files") || text[drawn..].contains(" file"),
        "{text:?}"
    );
    // Cleared (carriage return, erase line) before cargo's first line.
    let cleared = text[drawn..].find("\r\x1b[2K").map(|i| i + drawn);
    let compiling = text.find("Compiling").unwrap_or(usize::MAX);
    assert!(
        cleared.is_some_and(|c| c < compiling),
        "the line is not cleared before the build's output: {text:?}"
    );
}
