//! The team link against a real redis-server: shared slots as expiring
//! leases with a wake-up on release, probe permits that die with their
//! holder, and fail-open when Redis is killed (then reconnect).

mod support;

use rch::breaker::{BreakerConfig, Outcome, Permit, State};
use rch::team::{BreakerOp, Health, Notice, Slot, SlotAnswer, Team, Unavailable, LEASE_TTL_MS};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::redis::RedisServer;

const T0: u64 = 1_700_000_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn team(redis: &RedisServer, timeout_ms: u64) -> Arc<Team> {
    Team::new(&redis.url(), "t", Duration::from_millis(timeout_ms)).unwrap()
}

async fn next_notice(
    rx: &mut tokio::sync::broadcast::Receiver<Notice>,
    want: impl Fn(&Notice) -> bool,
) -> Notice {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(n) if want(&n) => return n,
                Ok(_) => {}
                Err(e) => panic!("notices ended: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("notice within 10 s")
}

#[test]
fn slots_are_leases_and_a_release_wakes_the_team() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let team = team(&redis, 1_000);
        let mut notices = team.notices();
        team.start(T0).await;
        // Subscribed: from here on no release is missed.
        next_notice(&mut notices, |n| matches!(n, Notice::Resync)).await;
        assert_eq!(
            team.acquire_slot("w1", 2, "a", &[], T0).await,
            Ok(SlotAnswer::Taken { held: 1 })
        );
        assert_eq!(
            team.acquire_slot("w1", 2, "b", &[], T0 + 5).await,
            Ok(SlotAnswer::Taken { held: 2 })
        );
        assert_eq!(
            team.acquire_slot("w1", 2, "c", &[], T0 + 10).await,
            Ok(SlotAnswer::Full {
                until_ms: T0 + LEASE_TTL_MS
            })
        );
        // Asking again with a held token renews, it does not take a second slot.
        assert_eq!(
            team.acquire_slot("w1", 2, "a", &[], T0 + 20).await,
            Ok(SlotAnswer::Taken { held: 2 })
        );
        team.release_slot("w1", "b", T0 + 30).await.unwrap();
        next_notice(
            &mut notices,
            |n| matches!(n, Notice::SlotFreed(w) if w == "w1"),
        )
        .await;
        assert_eq!(
            team.acquire_slot("w1", 2, "c", &[], T0 + 40).await,
            Ok(SlotAnswer::Taken { held: 2 })
        );
        // A holder that stops renewing loses its slot at the expiry, never before.
        team.renew_slot("w1", "c", T0 + 1_000).await.unwrap();
        let a_expires = T0 + 20 + LEASE_TTL_MS;
        assert!(matches!(
            team.acquire_slot("w1", 2, "d", &[], a_expires - 1).await,
            Ok(SlotAnswer::Full { until_ms }) if until_ms == a_expires
        ));
        assert_eq!(
            team.acquire_slot("w1", 2, "d", &[], a_expires).await,
            Ok(SlotAnswer::Taken { held: 2 })
        );
        // A build that runs already (restored after a daemon restart) holds
        // its slot whatever the count: nobody else may take it meanwhile.
        team.restore_slot("w1", "r", a_expires + 1).await.unwrap();
        assert!(matches!(
            team.acquire_slot("w1", 2, "e", &[], a_expires + 2).await,
            Ok(SlotAnswer::Full { .. })
        ));
        assert_eq!(redis.cli(&["ZCARD", "rch:{t}:slots:w1"]).trim(), "3");
        let keys = redis.cli(&["KEYS", "*"]);
        assert!(keys.lines().all(|k| k.starts_with("rch:{t}:")), "{keys}");
        // A take first gives back the slots sent along, in the same call
        // (announced: "e" was refused).
        let slot = |token: &str| Slot {
            worker: "w1".into(),
            token: token.into(),
        };
        assert_eq!(
            team.acquire_slot("w1", 2, "f", &[slot("d"), slot("r")], a_expires + 3)
                .await,
            Ok(SlotAnswer::Taken { held: 2 })
        );
        next_notice(
            &mut notices,
            |n| matches!(n, Notice::SlotFreed(w) if w == "w1"),
        )
        .await;
        // Several slots given back in one call.
        team.release_slots(&[slot("c"), slot("f")], a_expires + 4)
            .await
            .unwrap();
        assert_eq!(redis.cli(&["ZCARD", "rch:{t}:slots:w1"]).trim(), "0");
    });
}

#[test]
fn a_probe_permit_dies_with_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let team = team(&redis, 1_000);
        let cfg = BreakerConfig {
            open_cooldown_secs: 0,
            ..BreakerConfig::default()
        };
        let closed = Permit {
            epoch: 0,
            probe: false,
        };
        for _ in 0..3 {
            let fail = Outcome::Failure("refused".into());
            let op = BreakerOp::Record {
                permit: closed,
                token: String::new(),
                outcome: fail,
            };
            team.breaker("w1", &cfg, op, T0).await.unwrap();
        }
        let admit = |token: &str| BreakerOp::Admit {
            token: token.into(),
            permit_ttl_ms: 1_000,
        };
        let first = team.breaker("w1", &cfg, admit("a"), T0).await.unwrap();
        assert_eq!(first.breaker.state, State::HalfOpen);
        assert_eq!(
            first.admission,
            Some(Ok(Permit {
                epoch: 2,
                probe: true
            }))
        );
        // The team has one probe: a second daemon is refused while it runs...
        let second = team
            .breaker("w1", &cfg, admit("b"), T0 + 999)
            .await
            .unwrap();
        assert!(matches!(second.admission, Some(Err(_))));
        // ...and gets it once the first holder's permit expired unreturned.
        let third = team
            .breaker("w1", &cfg, admit("c"), T0 + 1_000)
            .await
            .unwrap();
        assert_eq!(
            third.admission,
            Some(Ok(Permit {
                epoch: 2,
                probe: true
            }))
        );
        assert_eq!(third.breaker.probes_in_flight, 1);
    });
}

#[test]
fn a_dead_redis_costs_one_timeout_then_nothing_and_is_rejoined() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path());
    let rt = runtime();
    let team = rt.block_on(async {
        let team = team(&redis, 200);
        team.start(T0).await;
        assert_eq!(team.health(), Health::Connected);
        team
    });
    let mut notices = team.notices();
    redis.kill();
    rt.block_on(async {
        let cfg = BreakerConfig::default();
        let started = Instant::now();
        let first = team.breaker("w1", &cfg, BreakerOp::Get, T0).await;
        assert_eq!(first, Err(Unavailable));
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(team.health(), Health::Down { since_ms: T0 });
        let again = Instant::now();
        assert_eq!(
            team.acquire_slot("w1", 1, "x", &[], T0 + 1).await,
            Err(Unavailable)
        );
        assert!(
            again.elapsed() < Duration::from_millis(20),
            "{:?}",
            again.elapsed()
        );
    });
    redis.restart();
    rt.block_on(async {
        // The subscription and the command link each announce their return.
        next_notice(&mut notices, |n| {
            matches!(n, Notice::Resync) && team.health() == Health::Connected
        })
        .await;
        let back = team
            .breaker("w1", &BreakerConfig::default(), BreakerOp::Get, T0 + 2)
            .await;
        assert_eq!(back.unwrap().breaker.state, State::Closed);
    });
}

#[test]
fn a_rediss_url_makes_a_tls_link_that_fails_open_against_plain_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let rt = runtime();
    rt.block_on(async {
        // The scheme is accepted and a TLS client built (no "not supported").
        let url = format!("rediss://:secret@127.0.0.1:{}/0", redis.port);
        let team = Team::new(&url, "t", Duration::from_millis(300)).expect("TLS client");
        let report = team.report(|_| "then".into());
        assert_eq!(
            report.url,
            format!("rediss://:***@127.0.0.1:{}/0", redis.port)
        );
        // A plain-TCP server cannot complete the TLS handshake: unavailable,
        // within the timeout, never an error that stops the caller.
        team.start(T0).await;
        assert_eq!(team.health(), Health::Down { since_ms: T0 });
        let started = Instant::now();
        assert_eq!(
            team.breaker("w1", &BreakerConfig::default(), BreakerOp::Get, T0 + 1)
                .await
                .map(|r| r.breaker.state),
            Err(Unavailable)
        );
        assert!(started.elapsed() < Duration::from_millis(50));
    });
}
