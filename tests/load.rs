//! Load, end to end: 64 concurrent `rch exec` clients on 4 lab workers with
//! 4 slots each. Slot limits are checked from the workers' side (a counter
//! every build keeps under a lock), queued clients are served in arrival
//! order, every client gets its own build's result, and a worker killed in
//! the middle of the load loses no build.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::{describe, wait_for, TestEnv};

const WORKERS: usize = 4;
const SLOTS: usize = 4;
const CLIENTS: usize = 64;
/// No client may take longer than this, whatever happens to the workers.
const CLIENT_BOUND: Duration = Duration::from_secs(90);

/// Clients queue (never fall back for lack of a slot); no cooldown ends.
const LOAD_CONFIG: &str = "[daemon]\nqueue_timeout_secs = 300\n\n\
                           [circuit]\nopen_cooldown_secs = 600\n";

/// The build every client runs: count itself in (per worker: `$HOME` is the
/// worker's own home; a local run counts apart), log its start, wait for the
/// gate, hold its slot briefly, count itself out, exit `N % 3`.
const JOB_SCRIPT: &str = r#"n=$1; dir=$2
case $HOME in "$3"/*) tally=$HOME ;; *) tally=$dir/local ;; esac
mkdir -p "$tally"
(
  flock 9
  c=$(( $(cat "$tally/count" 2>/dev/null || echo 0) + 1 ))
  echo "$c" > "$tally/count"
  if [ "$c" -gt "$(cat "$tally/max" 2>/dev/null || echo 0)" ]; then echo "$c" > "$tally/max"; fi
  echo "$n $tally" >> "$dir/starts.log"
) 9>>"$tally/lock"
while [ ! -e "$dir/open" ] && [ ! -e "$dir/go-$n" ]; do sleep 0.05; done
sleep 0.5
(
  flock 9
  echo $(( $(cat "$tally/count") - 1 )) > "$tally/count"
) 9>>"$tally/lock"
echo "job $n done"
exit $((n % 3))
"#;

struct Load<'a> {
    env: &'a TestEnv,
    /// Shared by all builds and the test (the exchange dir): script, gates,
    /// start log.
    dir: PathBuf,
}

impl<'a> Load<'a> {
    fn new(env: &'a TestEnv) -> Self {
        let mut config = LOAD_CONFIG.to_string();
        for w in env.lab.workers() {
            config.push_str(&format!(
                "\n[[workers]]\nid = \"{}\"\nslots = {SLOTS}\n",
                w.id
            ));
        }
        env.write_config(&config);
        let dir = env.exchange_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.sh"), JOB_SCRIPT).unwrap();
        let start = env.rch().args(["daemon", "start"]).output().unwrap();
        assert!(start.status.success(), "{}", describe(&start));
        Load { env, dir }
    }

    /// Client `n`'s project: a Makefile whose `job` target runs the script.
    fn project(&self, n: usize) -> PathBuf {
        let project = self.env.path().join("projects").join(format!("load{n}"));
        std::fs::create_dir_all(&project).unwrap();
        let makefile = format!(
            "job:\n\t@sh '{script}' $(N) '{dir}' '{lab}'\n",
            script = self.dir.join("job.sh").display(),
            dir = self.dir.display(),
            lab = self.env.lab.root().display(),
        );
        std::fs::write(project.join("Makefile"), makefile).unwrap();
        project
    }

    fn spawn(&self, n: usize) -> Child {
        let project = self.project(n);
        self.env
            .rch_in(&project)
            .args(["exec", "--", "make", "job", &format!("N={n}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning rch exec")
    }

    /// Client numbers in the order their builds started.
    fn starts(&self) -> Vec<usize> {
        std::fs::read_to_string(self.dir.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    fn wait_starts(&self, count: usize) {
        assert!(
            wait_for(Duration::from_secs(60), || self.starts().len() >= count),
            "only {} of {count} builds started",
            self.starts().len()
        );
    }

    fn release(&self, n: usize) {
        std::fs::write(self.dir.join(format!("go-{n}")), "").unwrap();
    }

    fn open_gate(&self) {
        std::fs::write(self.dir.join("open"), "").unwrap();
    }

    /// Highest and current count of concurrent builds, per worker.
    fn tally(&self, id: &str) -> (usize, usize) {
        let home = worker_home(self.env, id);
        let read = |name: &str| -> usize {
            std::fs::read_to_string(home.join(name))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        };
        (read("max"), read("count"))
    }
}

fn worker_home(env: &TestEnv, id: &str) -> PathBuf {
    env.lab
        .workers()
        .iter()
        .find(|w| w.id == id)
        .expect("lab worker")
        .home()
}

/// Wait for every client within [`CLIENT_BOUND`]; none may hang.
fn finish_all(children: Vec<(usize, Child)>) -> Vec<(usize, Output)> {
    let deadline = Instant::now() + CLIENT_BOUND;
    let mut done = Vec::new();
    for (n, mut child) in children {
        let left = deadline.saturating_duration_since(Instant::now());
        let exited = wait_for(left, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("client output");
        assert!(exited, "client {n} hung\n{}", describe(&out));
        done.push((n, out));
    }
    done
}

/// Client `n` got its own build's result: its output, and make's verdict on
/// `exit n % 3` (make exits 2 for a failed recipe and names its code).
fn assert_own_result(n: usize, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("job {n} done")),
        "client {n}\n{}",
        describe(out)
    );
    match n % 3 {
        0 => assert_eq!(out.status.code(), Some(0), "client {n}\n{}", describe(out)),
        code => {
            assert_eq!(out.status.code(), Some(2), "client {n}\n{}", describe(out));
            assert!(
                stderr.contains(&format!("Error {code}")),
                "client {n}\n{}",
                describe(out)
            );
        }
    }
    let placements = stderr.lines().filter(|l| l.starts_with("rch: ran")).count();
    assert_eq!(placements, 1, "client {n}\n{}", describe(out));
}

fn queue_len(env: &TestEnv) -> usize {
    env.fleet().queue.len()
}

#[test]
fn sixty_four_clients_never_oversubscribe_and_queue_in_arrival_order() {
    let env = TestEnv::new(WORKERS);
    let load = Load::new(&env);
    let capacity = WORKERS * SLOTS;
    let mut children = Vec::new();

    // Fill every slot; the builds hold them until released.
    for n in 0..capacity {
        children.push((n, load.spawn(n)));
    }
    load.wait_starts(capacity);
    // The rest queue, one by one, so their arrival order is known.
    for (position, n) in (capacity..CLIENTS).enumerate() {
        children.push((n, load.spawn(n)));
        assert!(
            wait_for(Duration::from_secs(20), || queue_len(&env) == position + 1),
            "client {n} did not queue"
        );
    }
    assert_eq!(load.starts().len(), capacity, "a queued client started");
    for w in env.lab.workers() {
        assert_eq!(load.tally(&w.id), (SLOTS, SLOTS), "{} is full", w.id);
    }

    // Free one slot at a time: the oldest waiter gets it, every time.
    const STEPS: usize = 6;
    let holders = load.starts();
    for (step, holder) in holders.iter().take(STEPS).enumerate() {
        load.release(*holder);
        load.wait_starts(capacity + step + 1);
        let started = load.starts()[capacity + step];
        assert_eq!(started, capacity + step, "FIFO: step {step}");
    }

    load.open_gate();
    let outputs = finish_all(children);
    for (n, out) in &outputs {
        assert_own_result(*n, out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("rch: ran on w"),
            "client {n}\n{}",
            describe(out)
        );
        if *n >= capacity {
            let queued = format!("waiting in queue (position {})", n - capacity + 1);
            assert!(stderr.contains(&queued), "client {n}\n{}", describe(out));
        }
    }
    for w in env.lab.workers() {
        assert_eq!(load.tally(&w.id), (SLOTS, 0), "{}: (max, now)", w.id);
    }
    let mut started = load.starts();
    started.sort_unstable();
    assert_eq!(started, (0..CLIENTS).collect::<Vec<_>>(), "each ran once");
}

#[test]
fn a_worker_killed_under_load_loses_no_build() {
    let env = TestEnv::new(WORKERS);
    let load = Load::new(&env);
    // The gate stays shut until w1 is killed, so w1's builds are surely in
    // flight then, however slowly this machine runs.
    let children: Vec<(usize, Child)> = (0..CLIENTS).map(|n| (n, load.spawn(n))).collect();
    let w1_home = worker_home(&env, "w1");
    let on_w1 = |load: &Load| {
        std::fs::read_to_string(load.dir.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .any(|l| Path::new(l.split_whitespace().nth(1).unwrap_or("")) == w1_home)
    };
    assert!(
        wait_for(Duration::from_secs(60), || on_w1(&load)),
        "no build started on w1"
    );
    env.lab.kill("w1").unwrap();
    load.open_gate();
    let outputs = finish_all(children);
    for (n, out) in &outputs {
        assert_own_result(*n, out);
    }
    let rerun = outputs
        .iter()
        .filter(|(_, out)| {
            String::from_utf8_lossy(&out.stderr).contains("re-running the build elsewhere")
        })
        .count();
    assert!(rerun >= 1, "the kill caught no build in flight on w1");
    for w in env.lab.workers() {
        let (max, _) = load.tally(&w.id);
        assert!(max <= SLOTS, "{} ran {max} builds at once", w.id);
    }
    let report = env.fleet();
    let w1 = report.workers.iter().find(|w| w.id == "w1").unwrap();
    assert!(w1.circuit.failures >= 1, "{:?}", w1.circuit);
    assert!(report.queue.is_empty() && report.leases.is_empty());
}
