//! The team's Lua breaker against the pure breaker: random operation
//! sequences (admit, record, abandon, tick, reset, probe now, time passing)
//! run through `src/breaker.rs` and through the script on a real
//! redis-server; after every step the serialized state, the transition and
//! the admission must be identical. Batches of successes go in one call
//! with a second worker's batch, whose breaker must match its own pure
//! breaker fed the same successes.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use rch::breaker::{Breaker, BreakerConfig, Outcome, Permit};
use rch::team::{BreakerOp, SuccessBatch, Team};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::redis::RedisServer;

const T0: u64 = 1_700_000_000_000;
/// Probe permits never expire here: expiry is not part of the pure model.
const PERMIT_TTL: u64 = 1 << 40;

#[derive(Debug, Clone)]
enum Op {
    Admit,
    ProbeNow,
    /// Record the result of the held permit at this index (mod the count).
    Record(usize, bool),
    Abandon(usize),
    /// Successes of this many ordinary builds of the held permit at this
    /// index, counted in one call (probes are never counted so).
    Successes(usize, u32),
    Tick,
    Reset,
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Admit),
        1 => Just(Op::ProbeNow),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Record(i, ok)),
        1 => any::<usize>().prop_map(Op::Abandon),
        2 => (any::<usize>(), 2u32..50).prop_map(|(i, n)| Op::Successes(i, n)),
        1 => Just(Op::Tick),
        1 => Just(Op::Reset),
        3 => prop_oneof![
            Just(0u64), Just(1), Just(999), Just(10_000), Just(29_999), Just(30_000), Just(61_000)
        ]
        .prop_map(Op::Wait),
    ]
}

fn breaker_config() -> impl Strategy<Value = BreakerConfig> {
    (
        1u32..5,
        1u32..6,
        1u32..4,
        1u32..3,
        0u64..3,
        prop_oneof![Just(0.5), Just(0.25), Just(1.0)],
    )
        .prop_map(|(ft, min, st, probes, cd, rate)| BreakerConfig {
            failure_threshold: ft,
            error_rate_threshold: rate,
            window_secs: 60,
            window_min_samples: min,
            open_cooldown_secs: cd * 30,
            success_threshold: st,
            half_open_max_probes: probes,
        })
}

#[test]
fn lua_breaker_matches_the_pure_breaker() {
    let root = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&root.path().join("redis"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let team = Team::new(&redis.url(), "model", Duration::from_secs(5)).unwrap();
    let worker_seq = AtomicU64::new(0);
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 96,
        ..RunnerConfig::default()
    });
    let strategy = (breaker_config(), proptest::collection::vec(op(), 1..60));
    runner
        .run(&strategy, |(cfg, ops)| {
            let worker = format!("w{}", worker_seq.fetch_add(1, Ordering::Relaxed));
            rt.block_on(replay(&team, &worker, &cfg, &ops))
        })
        .unwrap();
    // Each worker's state lives under the team's namespace.
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(
        keys.lines().all(|k| k.starts_with("rch:{model}:")),
        "{keys}"
    );
}

async fn replay(
    team: &Team,
    worker: &str,
    cfg: &BreakerConfig,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut now = T0;
    let mut pure = Breaker::new(now);
    // The script creates the breaker at its first call, at that call's time.
    let first = team
        .breaker(worker, cfg, BreakerOp::Get, now)
        .await
        .unwrap();
    prop_assert_eq!(&first.breaker, &pure);
    // A second worker, only ever counting successes: the batch calls cover
    // several workers at once, each on its own breaker.
    let other = format!("{worker}-other");
    let mut other_pure = Breaker::new(now);
    let other_first = team
        .breaker(&other, cfg, BreakerOp::Get, now)
        .await
        .unwrap();
    prop_assert_eq!(&other_first.breaker, &other_pure);
    let mut held: Vec<(Permit, String)> = Vec::new();
    let mut tokens = 0u64;
    for (step, op) in ops.iter().enumerate() {
        let mut token = || {
            tokens += 1;
            format!("p{tokens}")
        };
        let (expected, shared_op) = match op {
            Op::Wait(ms) => {
                now += ms;
                continue;
            }
            Op::Admit => {
                let (admission, t) = pure.try_admit(cfg, now);
                let tok = token();
                if let Ok(p) = &admission {
                    held.push((*p, tok.clone()));
                }
                (
                    (t, Some(admission)),
                    BreakerOp::Admit {
                        token: tok,
                        permit_ttl_ms: PERMIT_TTL,
                    },
                )
            }
            Op::ProbeNow => {
                let (admission, t) = pure.probe_now(cfg, now);
                let tok = token();
                if let Ok(p) = &admission {
                    held.push((*p, tok.clone()));
                }
                (
                    (t, Some(admission)),
                    BreakerOp::ProbeNow {
                        token: tok,
                        permit_ttl_ms: PERMIT_TTL,
                    },
                )
            }
            Op::Record(..) | Op::Abandon(_) | Op::Successes(..) if held.is_empty() => continue,
            Op::Successes(i, _) if held[i % held.len()].0.probe => continue,
            Op::Successes(i, count) => {
                let (permit, _) = held.remove(i % held.len());
                let mut t = None;
                for _ in 0..*count {
                    t = t.or(pure.record(cfg, now, permit, Outcome::Success));
                }
                let (other_permit, _) = other_pure.try_admit(cfg, now);
                let other_permit = other_permit.expect("only successes: closed");
                for _ in 0..*count + 1 {
                    other_pure.record(cfg, now, other_permit, Outcome::Success);
                }
                let batches = [
                    SuccessBatch {
                        worker: worker.to_string(),
                        permit,
                        count: *count,
                    },
                    SuccessBatch {
                        worker: other.clone(),
                        permit: other_permit,
                        count: *count + 1,
                    },
                ];
                let replies = team.record_successes(cfg, &batches, now).await.unwrap();
                prop_assert_eq!(replies.len(), 2);
                prop_assert_eq!(
                    &replies[0].breaker,
                    &pure,
                    "state after step {} {:?}",
                    step,
                    op
                );
                prop_assert_eq!(&replies[0].transition, &t, "transition at step {}", step);
                prop_assert_eq!(
                    &replies[1].breaker,
                    &other_pure,
                    "other worker after step {}",
                    step
                );
                prop_assert_eq!(&replies[1].transition, &None);
                continue;
            }
            Op::Record(i, ok) => {
                let (permit, tok) = held.remove(i % held.len());
                let outcome = if *ok {
                    Outcome::Success
                } else {
                    Outcome::Failure(format!("fail {step}"))
                };
                let t = pure.record(cfg, now, permit, outcome.clone());
                (
                    (t, None),
                    BreakerOp::Record {
                        permit,
                        token: tok,
                        outcome,
                    },
                )
            }
            Op::Abandon(i) => {
                let (permit, tok) = held.remove(i % held.len());
                pure.abandon(permit);
                ((None, None), BreakerOp::Abandon { permit, token: tok })
            }
            Op::Tick => ((pure.tick(cfg, now), None), BreakerOp::Tick),
            Op::Reset => ((pure.reset(now), None), BreakerOp::Reset),
        };
        let reply = team.breaker(worker, cfg, shared_op, now).await.unwrap();
        prop_assert_eq!(&reply.breaker, &pure, "state after step {} {:?}", step, op);
        prop_assert_eq!(
            &reply.transition,
            &expected.0,
            "transition at step {} {:?}",
            step,
            op
        );
        prop_assert_eq!(
            &reply.admission,
            &expected.1,
            "admission at step {} {:?}",
            step,
            op
        );
    }
    Ok(())
}
