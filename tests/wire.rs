//! Every event and report crosses the wire (and the store) as JSON: each
//! round-trips through its typed form unchanged, with the contract's names.

use rch::breaker::State;
use rch::protocol::{
    AttemptOutcome, Failover, JobOutcome, JobReport, Request, Response, WorkerAction,
};
use rch::remote::FailureKind;
use rch::state::events::{Event, EventRecord};
use rch::state::report::{
    CircuitReport, DaemonInfo, FleetReport, JobRow, LeaseReport, ProbeResult, QueuedReport,
    WorkerHistory, WorkerReport,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Serialize, read back, serialize again: the same JSON both times.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> Value {
    let first = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(first.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), first);
    first
}

fn events() -> Vec<Event> {
    vec![
        Event::CircuitOpened {
            worker: "w1".into(),
            failure_count: 3,
            threshold: 3,
            cooldown_seconds: 30,
            reason: "w1: ssh connect refused (h:22)".into(),
        },
        Event::CircuitHalfOpen {
            worker: "w1".into(),
            probe: true,
        },
        Event::CircuitClosed {
            worker: "w1".into(),
            recovery_time_seconds: 61,
        },
        Event::CircuitReset {
            worker: "w2".into(),
        },
        Event::BuildFallback {
            worker: "w1".into(),
            reason: "w1: connection lost during the build".into(),
            to: "local".into(),
            kind: FailureKind::ConnectionLost,
        },
        Event::LeaseQueued {
            reason: "all admissible workers are busy".into(),
            position: 3,
        },
        Event::WorkerChanged {
            worker: "w2".into(),
            action: WorkerAction::Disable,
        },
    ]
}

#[test]
fn every_event_round_trips_with_the_contract_names() {
    let expected = [
        (
            "circuit.opened",
            vec![
                "cooldown_seconds",
                "failure_count",
                "reason",
                "threshold",
                "worker",
            ],
        ),
        ("circuit.half_open", vec!["probe", "worker"]),
        ("circuit.closed", vec!["recovery_time_seconds", "worker"]),
        ("circuit.reset", vec!["worker"]),
        ("build.fallback", vec!["kind", "reason", "to", "worker"]),
        ("lease.queued", vec!["position", "reason"]),
        ("worker.changed", vec!["action", "worker"]),
    ];
    for (event, (name, fields)) in events().into_iter().zip(expected) {
        let record = EventRecord::new(event, 1_700_000_000_000);
        let v = round_trip(&record);
        assert_eq!(v["event"], name);
        assert_eq!(v["at"], "2023-11-14T22:13:20Z");
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.retain(|k| *k != "event" && *k != "at");
        keys.sort();
        assert_eq!(keys, fields, "{name}");
        let line: EventRecord = serde_json::from_str(&record.to_json_line()).unwrap();
        assert_eq!(line, record);
        round_trip(&Response::Event(record));
    }
}

fn circuit(state: State) -> CircuitReport {
    CircuitReport {
        state,
        failures: 2,
        since: Some("2023-11-14T22:13:20Z".into()),
        retry_in_secs: Some(12),
        last_error: Some("w1: ssh connect refused".into()),
        error_rate: Some(0.5),
        epoch: 4,
        admits: false,
    }
}

fn job_row(outcome: JobOutcome) -> JobRow {
    JobRow {
        id: 1,
        at: "2023-11-14T22:13:20Z".into(),
        project: "/p".into(),
        command: "cargo build".into(),
        placement: "w1".into(),
        outcome,
        exit_code: Some(0),
        reason: "last built this project".into(),
        queue_ms: 1,
        sync_ms: 2,
        run_ms: 3,
        return_ms: 4,
        phases: Default::default(),
    }
}

#[test]
fn every_report_round_trips() {
    let workers: Vec<WorkerReport> = [State::Closed, State::Open, State::HalfOpen]
        .into_iter()
        .enumerate()
        .map(|(i, state)| WorkerReport {
            id: format!("w{i}"),
            host: "h".into(),
            slots: 4,
            used: 1,
            priority: 100,
            enabled: true,
            draining: i == 2,
            circuit: circuit(state),
            last_build: None,
            latency_ms: Some(3),
            capabilities: None,
        })
        .collect();
    let report = FleetReport {
        daemon: DaemonInfo {
            running: true,
            version: "1".into(),
            pid: Some(7),
            uptime_secs: Some(9),
            config_error: None,
        },
        workers,
        leases: vec![LeaseReport {
            worker: "w0".into(),
            project: "/p".into(),
            command: "make".into(),
            since: "2023-11-14T22:13:20Z".into(),
            phase: Some("run".into()),
        }],
        queue: vec![QueuedReport {
            position: 1,
            project: "/p".into(),
            command: "make".into(),
            since: "2023-11-14T22:13:20Z".into(),
        }],
        recent_jobs: [
            JobOutcome::Success,
            JobOutcome::Failed,
            JobOutcome::Local,
            JobOutcome::Interrupted,
        ]
        .into_iter()
        .map(job_row)
        .collect(),
        team: Some(rch::team::TeamReport {
            name: "backend".into(),
            url: "redis://:***@r.example:6379/0".into(),
            connected: false,
            unavailable_since: Some("2023-11-14T22:13:20Z".into()),
            origin: "dev@box:42".into(),
        }),
    };
    let v = round_trip(&report);
    assert_eq!(v["team"]["connected"], false);
    assert_eq!(v["workers"][1]["circuit"]["state"], "open");
    assert_eq!(v["workers"][2]["circuit"]["state"], "half_open");
    assert_eq!(v["recent_jobs"][3]["outcome"], "interrupted");
    round_trip(&Response::Status(Box::new(report)));

    let probe = ProbeResult {
        worker: "w1".into(),
        ok: false,
        latency_ms: None,
        error: Some("w1: ssh connect refused".into()),
        state: State::Open,
        capabilities: None,
    };
    assert_eq!(round_trip(&probe)["state"], "open");
    round_trip(&Response::Probed {
        results: vec![probe],
    });
    let history = WorkerHistory {
        worker: "w1".into(),
        jobs: vec![job_row(JobOutcome::Success)],
        events: events()
            .into_iter()
            .map(|e| EventRecord::new(e, 0))
            .collect(),
    };
    round_trip(&Response::History(history));

    let job = JobReport {
        worker: Some("w2".into()),
        outcome: JobOutcome::Success,
        failovers: vec![Failover {
            worker: "w1".into(),
            reason: "w1: ssh connect refused".into(),
            kind: FailureKind::ConnectRefused,
        }],
        ..Default::default()
    };
    let v = round_trip(&Request::Job(job));
    assert_eq!(v["failovers"][0]["kind"], "connect_refused");
    for kind in FailureKind::ALL {
        round_trip(&AttemptOutcome::Failure {
            kind,
            message: "w1: x".into(),
        });
    }
}

#[test]
fn a_report_from_a_daemon_without_admission_reads_as_admitting() {
    let old = json!({"state": "closed", "failures": 0, "epoch": 0});
    let c: CircuitReport = serde_json::from_value(old).unwrap();
    assert!(c.admits);
    assert_eq!(c.state, State::Closed);
}
