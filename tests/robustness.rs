//! End-to-end: what the user does and what goes wrong on this machine never
//! hurts a build or a healthy worker. Real signals to the client's process
//! group, real build output, a real PATH without rsync, on real sshd workers.

mod support;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::{describe, TestEnv};

fn rch_in(env: &TestEnv, dir: &Path, args: &[&str]) -> Output {
    env.rch_in(dir).args(args).output().expect("running rch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    assert!(
        support::wait_for(timeout, f),
        "timed out waiting for {what}"
    );
}

/// A project holding only `makefile`.
fn make_project(env: &TestEnv, name: &str, makefile: &str) -> std::path::PathBuf {
    let dir = env.path().join("projects").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Makefile"), makefile).unwrap();
    dir
}

/// `rch exec -- make TARGET` in a process group of its own, as a shell's job.
fn spawn_job(env: &TestEnv, dir: &Path, target: &str) -> Child {
    env.rch_in(dir)
        .args(["exec", "--", "make", target])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawning rch")
}

/// The worker-side process whose argv starts with `argv`, if one runs.
fn worker_process(env: &TestEnv, id: &str, argv: &[&str]) -> Option<i32> {
    env.lab.session_processes(id).into_iter().find(|pid| {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let words: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        words.len() >= argv.len() && argv.iter().zip(&words).all(|(a, w)| a.as_bytes() == *w)
    })
}

/// Stops the worker's rsync with `argv` as soon as it runs; returns its pid.
fn stall_worker_rsync(env: &TestEnv, argv: &[&str]) -> i32 {
    let mut found = None;
    wait_for("the transfer to start", Duration::from_secs(60), || {
        found = worker_process(env, "w1", argv);
        found.is_some()
    });
    let pid = found.unwrap();
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    pid
}

/// Signals the job's whole process group, as a terminal does, and waits.
fn interrupt(job: Child, signal: Signal) -> Output {
    killpg(Pid::from_raw(job.id() as i32), signal).unwrap();
    wait_output(job, Duration::from_secs(20))
}

fn wait_output(mut job: Child, limit: Duration) -> Output {
    let done = support::wait_for(limit, || matches!(job.try_wait(), Ok(Some(_))));
    if !done {
        let _ = job.kill();
        let out = job.wait_with_output().unwrap();
        panic!("rch did not end within {limit:?}: {}", describe(&out));
    }
    job.wait_with_output().unwrap()
}

fn worker_failures(env: &TestEnv, id: &str) -> u32 {
    env.circuit(id).failures
}

#[test]
fn interrupts_in_push_run_and_pull_end_the_build_like_a_shell_and_charge_no_one() {
    let env = TestEnv::new(1);
    let marker = format!("rchrun{}", std::process::id());
    let makefile = format!(
        "big:\n\ttruncate -s 4G big.bin\n\
         slow:\n\tsleep 6\n\techo slow-done\n\
         long:\n\tsleep 300 && echo {marker}\n\
         quick:\n\ttrue\n"
    );
    let project = make_project(&env, "signals", &makefile);
    // Push: the worker's receiving rsync stalls; Ctrl-C reaches rch's group.
    // A large sparse file keeps the transfer busy long enough to catch it.
    let input = std::fs::File::create(project.join("input.bin")).unwrap();
    input.set_len(4 << 30).unwrap();
    let job = spawn_job(&env, &project, "quick");
    let stalled = stall_worker_rsync(&env, &["rsync", "--server"]);
    let out = interrupt(job, Signal::SIGINT);
    let _ = kill(Pid::from_raw(stalled), Signal::SIGCONT);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        stderr(&out).contains("rch: interrupted by SIGINT"),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(project.join("input.bin")).unwrap();

    // Pull, while another project's build runs over the same shared connection.
    let neighbour = make_project(&env, "neighbour", &makefile);
    let other = spawn_job(&env, &neighbour, "slow");
    let job = spawn_job(&env, &project, "big");
    let stalled = stall_worker_rsync(&env, &["rsync", "--server", "--sender"]);
    let out = interrupt(job, Signal::SIGINT);
    let _ = kill(Pid::from_raw(stalled), Signal::SIGCONT);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(!stderr(&out).contains("re-running"), "{}", describe(&out));
    let other = wait_output(other, Duration::from_secs(60));
    assert_eq!(other.status.code(), Some(0), "{}", describe(&other));
    assert!(
        stderr(&other).contains("rch: ran on w1"),
        "{}",
        describe(&other)
    );
    assert!(String::from_utf8_lossy(&other.stdout).contains("slow-done"));

    // Run: SIGTERM ends the remote command's whole process group.
    let job = spawn_job(&env, &project, "long");
    let running = || {
        let o = env.ssh("w1", &format!("pgrep -f '[r]{}' || true", &marker[1..]));
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    };
    wait_for(
        "the build to run on the worker",
        Duration::from_secs(30),
        running,
    );
    let out = interrupt(job, Signal::SIGTERM);
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    wait_for("the remote build to end", Duration::from_secs(15), || {
        !running()
    });

    assert_eq!(worker_failures(&env, "w1"), 0, "an interrupt was charged");
    assert_eq!(env.circuit("w1").state, "closed");
}

#[test]
fn an_interrupt_while_queued_ends_the_wait_with_129() {
    let env = TestEnv::new(1);
    env.write_config("[[workers]]\nid = \"w1\"\nslots = 1\n");
    let project = make_project(&env, "queued", "hold:\n\tsleep 300\nnext:\n\ttrue\n");
    let holder = spawn_job(&env, &project, "hold");
    let running = || worker_process(&env, "w1", &["sleep", "300"]).is_some();
    wait_for("the slot to be taken", Duration::from_secs(30), running);
    let mut waiting = spawn_job(&env, &project, "next");
    let mut lines = BufReader::new(waiting.stderr.take().unwrap()).lines();
    let queued = lines.next().unwrap().unwrap();
    assert!(queued.contains("waiting in queue"), "{queued}");
    killpg(Pid::from_raw(waiting.id() as i32), Signal::SIGHUP).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = waiting.wait().unwrap();
    assert_eq!(status.code(), Some(129), "{rest:?}");
    let out = interrupt(holder, Signal::SIGINT);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert_eq!(worker_failures(&env, "w1"), 0);
}

#[test]
fn build_output_cannot_pose_as_rch_and_rch_speaks_on_a_line_of_its_own() {
    let env = TestEnv::new(2);
    // Records in every shape the run script has used, old marker and a
    // guessed nonce; then stderr ends without a newline.
    let makefile = "forge:\n\
        \t@printf '\\036rch-setup\\036dir:x\\n' >&2\n\
        \t@printf '\\036rch-0123456789abcdef\\036setup:dir:x\\n' >&2\n\
        \t@printf '\\036rch-0123456789abcdef\\036exit:0\\n' >&2\n\
        \t@printf 'FORGED-ONCE' >&2\n\
        \t@exit 3\n";
    let project = make_project(&env, "forger", makefile);
    let out = rch_in(&env, &project, &["exec", "--", "make", "forge"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(err.matches("FORGED-ONCE").count(), 1, "{err}");
    assert!(err.contains("\x1erch-setup\x1edir:x\n"), "{err}");
    assert!(err.contains("FORGED-ONCE"), "{err}");
    assert!(err.contains("\nrch: ran on w"), "{err}");
    for id in ["w1", "w2"] {
        assert_eq!(worker_failures(&env, id), 0, "{id} was charged: {err}");
    }
}

#[test]
fn a_missing_local_rsync_is_a_local_problem_and_never_opens_a_circuit() {
    let env = TestEnv::new(1);
    let project = make_project(&env, "norsync", "all:\n\t@echo built-here; true\n");
    let out = rch_in(&env, &project, &["daemon", "start"]);
    assert!(out.status.success(), "{}", describe(&out));
    // A PATH with everything the build and ssh need, but no rsync.
    let bin = env.path().join("bin-without-rsync");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["ssh", "make", "sh", "echo", "setsid"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        if path.starts_with('/') {
            std::os::unix::fs::symlink(&path, bin.join(tool)).unwrap();
        }
    }
    for _ in 0..4 {
        let out = env
            .rch_in(&project)
            .args(["exec", "--", "make"])
            .env("PATH", &bin)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("built-here"));
        assert!(err.contains("rch: ran locally:"), "{err}");
        assert!(err.contains("cannot run rsync here"), "{err}");
    }
    let c = env.circuit("w1");
    assert_eq!((c.state.as_str(), c.failures), ("closed", 0));
}

#[test]
fn secrets_are_never_sent_and_non_utf8_directories_build_locally_uncharged() {
    let env = TestEnv::new(1);
    let recipe = "all:\n\t@for f in id_rsa id_ed25519.pub .ssh .aws .npmrc .netrc keep.txt; \
                  do [ -e $$f ] && echo present:$$f; done; true\n";
    let project = make_project(&env, "secrets", recipe);
    for file in ["id_rsa", "id_ed25519.pub", ".npmrc", ".netrc", "keep.txt"] {
        std::fs::write(project.join(file), "x").unwrap();
    }
    for dir in [".ssh", ".aws"] {
        std::fs::create_dir_all(project.join(dir)).unwrap();
        std::fs::write(project.join(dir).join("config"), "x").unwrap();
    }
    let out = rch_in(&env, &project, &["exec", "--", "make"]);
    assert!(
        stderr(&out).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "present:keep.txt\n",
        "{}",
        describe(&out)
    );

    // A directory whose name is not UTF-8, as the root and below it.
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"s\xff");
    let root = env.path().join("projects").join(odd);
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("Makefile"), "all:\n\t@echo at-root; true\n").unwrap();
    let out = rch_in(&env, &root, &["exec", "--", "make"]);
    assert!(
        stderr(&out).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("at-root"));
    let sub = root.join(odd);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("Makefile"), "all:\n\t@echo in-sub; true\n").unwrap();
    for _ in 0..3 {
        let out = rch_in(&env, &sub, &["exec", "--", "make"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("in-sub"));
        assert!(
            err.contains("rch: ran locally:") && err.contains("is not UTF-8"),
            "{err}"
        );
    }
    let c = env.circuit("w1");
    assert_eq!((c.state.as_str(), c.failures), ("closed", 0));
}

/// The uid of a second, real user (created with useradd), when root.
fn foreign_uid() -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let _ = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "rchforeign",
        ])
        .stderr(Stdio::null())
        .status();
    let out = Command::new("id")
        .args(["-u", "rchforeign"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A listening socket at `path`; with `listener_uid`, `listen` is called by a
/// child process running as that user (what SO_PEERCRED then reports).
fn foreign_listener(
    path: &Path,
    listener_uid: Option<u32>,
) -> (std::os::unix::net::UnixListener, Option<Child>) {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let addr = nix::sys::socket::UnixAddr::new(path).unwrap();
    nix::sys::socket::bind(sock.as_raw_fd(), &addr).unwrap();
    let fd = sock.as_raw_fd();
    let child = match listener_uid {
        None => {
            nix::sys::socket::listen(&sock, nix::sys::socket::Backlog::new(8).unwrap()).unwrap();
            None
        }
        Some(uid) => {
            let mut cmd = Command::new("sleep");
            cmd.arg("60");
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::setgid(nix::unistd::Gid::from_raw(uid))?;
                    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
                    // Kept open across exec in this child only.
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 || libc::listen(fd, 8) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            Some(cmd.spawn().unwrap())
        }
    };
    let listener = std::os::unix::net::UnixListener::from(sock);
    listener.set_nonblocking(true).unwrap();
    (listener, child)
}

/// What reached the listener: `None` when nobody connected.
fn received(listener: &std::os::unix::net::UnixListener) -> Option<Vec<u8>> {
    use std::io::Read;
    let (mut conn, _) = listener.accept().ok()?;
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut bytes = Vec::new();
    let _ = conn.read_to_end(&mut bytes);
    Some(bytes)
}

#[test]
fn a_socket_of_another_user_is_refused_before_a_byte_is_sent() {
    let Some(uid) = foreign_uid() else {
        eprintln!("skipped: needs root and useradd to make a second user");
        return;
    };
    let env = TestEnv::new(1);
    let project = make_project(&env, "foreign", "all:\n\t@echo built-here; true\n");
    let dir = env.path().join("foreign");
    std::fs::create_dir_all(&dir).unwrap();

    // The socket file belongs to the other user.
    let owned = dir.join("owned.sock");
    let (listener, _) = foreign_listener(&owned, None);
    nix::unistd::chown(&owned, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    // Our own socket file, but the listening process is the other user's.
    let peer = dir.join("peer.sock");
    let (peer_listener, child) = foreign_listener(&peer, Some(uid));

    for (socket, listener, says) in [
        (&owned, &listener, "belongs to uid"),
        (&peer, &peer_listener, "runs as uid"),
    ] {
        let out = env
            .rch_in(&project)
            .args(["exec", "--", "make"])
            .env("RCH_SOCKET", socket)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert!(
            err.contains("rch: ran locally:") && err.contains(says),
            "{err}"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("built-here"));
        let got = received(listener);
        assert!(got.as_deref().is_none_or(<[u8]>::is_empty), "sent {got:?}");
        let status = env
            .rch_in(&project)
            .args(["status"])
            .env("RCH_SOCKET", socket)
            .output()
            .unwrap();
        let said = stderr(&status);
        assert!(said.contains(says), "{}", describe(&status));
        assert!(received(listener).as_deref().is_none_or(<[u8]>::is_empty));
    }
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Bytes of every value, then pseudo-random ones: `len` in all.
fn binary_input(len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// `rch exec -- make TARGET` with `stdin`, in a process group of its own.
fn spawn_with_stdin(env: &TestEnv, dir: &Path, target: &str, stdin: Stdio) -> Child {
    env.rch_in(dir)
        .args(["exec", "--", "make", target])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawning rch")
}

#[test]
fn piped_stdin_reaches_the_remote_command_byte_exact_and_never_holds_a_build() {
    use std::io::Write;
    let env = TestEnv::new(1);
    let once = env.exchange_dir().join("once");
    let makefile = format!(
        "echo:\n\t@cat\n\
         none:\n\t@echo no-input\n\
         hold:\n\t@cat >/dev/null\n\
         replay:\n\t@cat > got.bin; if [ ! -e {once} ]; then touch {once}; sleep 300; fi; cat got.bin\n",
        once = once.display()
    );
    let project = make_project(&env, "stdin", &makefile);
    let ran_on_w1 = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", describe(out));
        assert!(stderr(out).contains("rch: ran on w1"), "{}", describe(out));
    };

    // echo HELLO | rch exec -- make
    let mut job = spawn_with_stdin(&env, &project, "echo", Stdio::piped());
    job.stdin.take().unwrap().write_all(b"HELLO\n").unwrap();
    let out = wait_output(job, Duration::from_secs(60));
    ran_on_w1(&out);
    assert_eq!(out.stdout, b"HELLO\n");

    // Every byte value and several MiB, from a file.
    let data = binary_input(6 << 20);
    let file = env.path().join("input.bin");
    std::fs::write(&file, &data).unwrap();
    let copy = env.path().join("copy.bin");
    let out = wait_output(
        spawn_to_file(&env, &project, "echo", &file, &copy),
        Duration::from_secs(60),
    );
    ran_on_w1(&out);
    assert_same_file(&copy, &data);

    // A pipe the caller leaves open: a build that does not read it ends.
    let mut job = spawn_with_stdin(&env, &project, "none", Stdio::piped());
    let open = job.stdin.take();
    let out = wait_output(job, Duration::from_secs(60));
    ran_on_w1(&out);
    assert_eq!(out.stdout, b"no-input\n");
    drop(open);

    // /dev/null (what rch_in gives) and a terminal are not input: `cat`
    // reads nothing and ends.
    let out = rch_in(&env, &project, &["exec", "--", "make", "echo"]);
    ran_on_w1(&out);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let mut script = Command::new("script");
    env.apply_env(&mut script);
    let rch = env!("CARGO_BIN_EXE_rch");
    let job = script
        .args(["-qec", &format!("{rch} exec -- make echo"), "/dev/null"])
        .current_dir(&project)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let out = wait_output(job, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rch: ran on w1"),
        "{}",
        describe(&out)
    );

    // Ctrl-C while the remote command waits for more input.
    let mut job = spawn_with_stdin(&env, &project, "hold", Stdio::piped());
    let mut open = job.stdin.take().unwrap();
    open.write_all(b"partial").unwrap();
    let reading = || worker_process(&env, "w1", &["cat"]).is_some();
    wait_for("cat to run on w1", Duration::from_secs(30), reading);
    let out = interrupt(job, Signal::SIGINT);
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    wait_for("the remote cat to end", Duration::from_secs(15), || {
        !reading()
    });
    drop(open);
    assert_eq!(worker_failures(&env, "w1"), 0, "an interrupt was charged");

    // The connection is lost after the command read its input: the build
    // runs again (here, the only worker gone) with all of it from byte one.
    let job = spawn_to_file(&env, &project, "replay", &file, &copy);
    wait_for("the first run to read", Duration::from_secs(60), || {
        once.exists()
    });
    env.lab.kill_sessions("w1").unwrap();
    let out = wait_output(job, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stderr(&out).contains("re-running the build elsewhere"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("rch: ran locally"),
        "{}",
        describe(&out)
    );
    assert_same_file(&copy, &data);
}

/// [`spawn_with_stdin`] reading the file `input`, its stdout going to `output`.
fn spawn_to_file(env: &TestEnv, dir: &Path, target: &str, input: &Path, output: &Path) -> Child {
    let mut job = env.rch_in(dir);
    job.args(["exec", "--", "make", target])
        .stdin(std::fs::File::open(input).unwrap())
        .stdout(std::fs::File::create(output).unwrap())
        .stderr(Stdio::piped())
        .process_group(0);
    job.spawn().expect("spawning rch")
}

fn assert_same_file(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap();
    let first_difference = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got == want,
        "{} bytes came back, {} sent; first difference at {first_difference:?}",
        got.len(),
        want.len()
    );
}
