//! The breaker against a reference model: random operation sequences are fed
//! to both, and every observable (state, epoch, counters, admit decisions,
//! transitions, window) must agree after every step.
//!
//! The model keeps plain lists of every counted result and derives the
//! counters from them, so it shares no bookkeeping with the breaker itself.

use proptest::prelude::*;
use rch::breaker::{Breaker, BreakerConfig, Outcome, Permit, State, Transition};

const T0: u64 = 1_700_000_000_000;

/// The obviously-correct model.
struct Model {
    cfg: BreakerConfig,
    state: State,
    epoch: u64,
    /// Every result recorded while CLOSED since the breaker last became CLOSED.
    closed_results: Vec<(u64, bool)>,
    /// Every probe result of the current outage (HALF_OPEN periods).
    probe_results: Vec<bool>,
    /// Results since entering the current state.
    in_state: Vec<bool>,
    opened_at: u64,
    outage_start: u64,
    probes: u32,
}

impl Model {
    fn new(cfg: BreakerConfig) -> Self {
        Model {
            cfg,
            state: State::Closed,
            epoch: 0,
            closed_results: Vec::new(),
            probe_results: Vec::new(),
            in_state: Vec::new(),
            opened_at: 0,
            outage_start: 0,
            probes: 0,
        }
    }

    fn consecutive_failures(&self) -> u32 {
        let all = self
            .closed_results
            .iter()
            .map(|(_, ok)| *ok)
            .chain(self.probe_results.iter().copied());
        let all: Vec<bool> = all.collect();
        all.iter().rev().take_while(|ok| !**ok).count() as u32
    }

    fn consecutive_successes(&self) -> u32 {
        self.in_state.iter().rev().take_while(|ok| **ok).count() as u32
    }

    /// Results of the last `window_secs` seconds of the clock, the current
    /// one included (time only moves forward here).
    fn window(&self, now: u64) -> (u32, u32) {
        let live: Vec<bool> = self
            .closed_results
            .iter()
            .filter(|(at, _)| now / 1000 - at / 1000 < self.cfg.window_secs)
            .map(|(_, ok)| *ok)
            .collect();
        let failures = live.iter().filter(|ok| !**ok).count();
        (live.len() as u32, failures as u32)
    }

    fn cooldown_over(&self, now: u64) -> bool {
        now >= self.opened_at + self.cfg.open_cooldown_secs * 1000
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.epoch += 1;
        self.in_state.clear();
        self.probes = 0;
    }

    fn open(&mut self, now: u64, reason: &str) -> Transition {
        if self.state == State::Closed {
            self.outage_start = now;
        }
        self.enter(State::Open);
        self.opened_at = now;
        Transition::Opened {
            failures: self.consecutive_failures(),
            reason: reason.to_string(),
        }
    }

    fn close(&mut self) {
        self.enter(State::Closed);
        self.closed_results.clear();
        self.probe_results.clear();
    }

    fn can_admit(&self, now: u64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open => self.cooldown_over(now) && self.cfg.half_open_max_probes > 0,
            State::HalfOpen => self.probes < self.cfg.half_open_max_probes,
        }
    }

    fn tick(&mut self, now: u64) -> Option<Transition> {
        if self.state == State::Open && self.cooldown_over(now) {
            self.enter(State::HalfOpen);
            return Some(Transition::HalfOpened);
        }
        None
    }

    fn take_permit(&mut self) -> Option<Permit> {
        match self.state {
            State::Closed => Some(Permit {
                epoch: self.epoch,
                probe: false,
            }),
            State::HalfOpen if self.probes < self.cfg.half_open_max_probes => {
                self.probes += 1;
                Some(Permit {
                    epoch: self.epoch,
                    probe: true,
                })
            }
            _ => None,
        }
    }

    fn try_admit(&mut self, now: u64) -> (Option<Permit>, Option<Transition>) {
        let t = self.tick(now);
        (self.take_permit(), t)
    }

    fn probe_now(&mut self) -> (Option<Permit>, Option<Transition>) {
        let t = (self.state == State::Open).then(|| {
            self.enter(State::HalfOpen);
            Transition::HalfOpened
        });
        (self.take_permit(), t)
    }

    fn record(&mut self, now: u64, permit: Permit, ok: bool) -> Option<Transition> {
        if permit.epoch != self.epoch {
            return None;
        }
        match self.state {
            State::Open => None,
            State::Closed => {
                self.closed_results.push((now, ok));
                self.in_state.push(ok);
                if ok {
                    return None;
                }
                let (total, failures) = self.window(now);
                let rate_trips = total >= self.cfg.window_min_samples
                    && failures as f64 / total as f64 >= self.cfg.error_rate_threshold;
                let streak_trips = self.consecutive_failures() >= self.cfg.failure_threshold;
                (rate_trips || streak_trips).then(|| self.open(now, "boom"))
            }
            State::HalfOpen => {
                self.probes -= 1;
                self.probe_results.push(ok);
                self.in_state.push(ok);
                if !ok {
                    return Some(self.open(now, "boom"));
                }
                if self.consecutive_successes() >= self.cfg.success_threshold {
                    let recovery_ms = now - self.outage_start;
                    self.close();
                    return Some(Transition::Closed { recovery_ms });
                }
                None
            }
        }
    }

    fn abandon(&mut self, permit: Permit) {
        if permit.probe && permit.epoch == self.epoch && self.state == State::HalfOpen {
            self.probes -= 1;
        }
    }

    fn reset(&mut self) -> Option<Transition> {
        self.close();
        Some(Transition::Reset)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Admit,
    Record { pick: usize, ok: bool },
    RecordStale { pick: usize, ok: bool },
    Abandon { pick: usize },
    Tick,
    Reset,
    ProbeNow,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Whole seconds, so window and cooldown edges are hit exactly.
        4 => (0u64..4).prop_map(|secs| Op::Advance(secs * 1000)),
        2 => (0u64..3_000).prop_map(Op::Advance),
        1 => (0u64..200_000).prop_map(Op::Advance),
        1 => (0u64..10_000_000_000).prop_map(Op::Advance),
        6 => Just(Op::Admit),
        8 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Op::Record { pick, ok }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Op::RecordStale { pick, ok }),
        1 => any::<usize>().prop_map(|pick| Op::Abandon { pick }),
        2 => Just(Op::Tick),
        1 => Just(Op::Reset),
        1 => Just(Op::ProbeNow),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (
        1u32..6,
        prop::sample::select(vec![0.25, 0.5, 0.75, 1.0]),
        1u64..8,
        0u32..7,
        0u64..8,
        1u32..4,
        0u32..3,
    )
        .prop_map(
            |(failure, rate, window, samples, cooldown, success, probes)| BreakerConfig {
                failure_threshold: failure,
                error_rate_threshold: rate,
                window_secs: window,
                window_min_samples: samples,
                open_cooldown_secs: cooldown,
                success_threshold: success,
                half_open_max_probes: probes,
            },
        )
}

fn outcome(ok: bool) -> Outcome {
    if ok {
        Outcome::Success
    } else {
        Outcome::Failure("boom".to_string())
    }
}

fn assert_same(b: &Breaker, m: &Model, now: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(b.state, m.state);
    prop_assert_eq!(b.epoch, m.epoch);
    prop_assert_eq!(b.consecutive_failures, m.consecutive_failures());
    prop_assert_eq!(b.consecutive_successes, m.consecutive_successes());
    prop_assert_eq!(b.probes_in_flight, m.probes);
    prop_assert_eq!(b.can_admit(&m.cfg, now), m.can_admit(now));
    if m.state == State::Closed {
        prop_assert_eq!(b.window_counts(&m.cfg, now), m.window(now));
    }
    if m.state == State::Open {
        let left = (m.opened_at + m.cfg.open_cooldown_secs * 1000).saturating_sub(now);
        prop_assert_eq!(b.retry_in_ms(&m.cfg, now), Some(left));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn breaker_matches_reference_model(cfg in config(), ops in prop::collection::vec(op(), 1..120)) {
        let mut now = T0;
        let mut breaker = Breaker::new(now);
        let mut model = Model::new(cfg.clone());
        // Permits granted and not yet resolved, and every permit ever granted.
        let mut held: Vec<Permit> = Vec::new();
        let mut granted: Vec<Permit> = Vec::new();

        for op in ops {
            match op {
                Op::Advance(ms) => now += ms,
                Op::Admit => {
                    let (got, t) = breaker.try_admit(&cfg, now);
                    let (want, want_t) = model.try_admit(now);
                    prop_assert_eq!(got.clone().ok(), want);
                    prop_assert_eq!(t, want_t);
                    if let Err(refusal) = &got {
                        prop_assert_eq!(refusal.state, model.state);
                    }
                    if let Ok(p) = got {
                        held.push(p);
                        granted.push(p);
                    }
                }
                Op::Record { pick, ok } if !held.is_empty() => {
                    let permit = held.remove(pick % held.len());
                    let t = breaker.record(&cfg, now, permit, outcome(ok));
                    prop_assert_eq!(t, model.record(now, permit, ok));
                }
                Op::RecordStale { pick, ok } => {
                    let stale: Vec<Permit> =
                        granted.iter().copied().filter(|p| p.epoch < model.epoch).collect();
                    if let Some(&permit) = stale.get(pick % stale.len().max(1)) {
                        let before = breaker.clone();
                        prop_assert_eq!(breaker.record(&cfg, now, permit, outcome(ok)), None);
                        prop_assert_eq!(&breaker, &before);
                        prop_assert_eq!(model.record(now, permit, ok), None);
                    }
                }
                Op::Abandon { pick } if !held.is_empty() => {
                    let permit = held.remove(pick % held.len());
                    breaker.abandon(permit);
                    model.abandon(permit);
                }
                Op::Tick => prop_assert_eq!(breaker.tick(&cfg, now), model.tick(now)),
                Op::Reset => {
                    prop_assert_eq!(breaker.reset(now), model.reset());
                    prop_assert_eq!(breaker.since_ms, now);
                }
                Op::ProbeNow => {
                    let (got, t) = breaker.probe_now(&cfg, now);
                    let (want, want_t) = model.probe_now();
                    prop_assert_eq!(got.ok(), want);
                    prop_assert_eq!(t, want_t);
                    if let Some(p) = want {
                        held.push(p);
                        granted.push(p);
                    }
                }
                Op::Record { .. } | Op::Abandon { .. } => {}
            }
            assert_same(&breaker, &model, now)?;
        }
    }

    #[test]
    fn state_survives_a_restart(cfg in config(), ops in prop::collection::vec(op(), 1..60)) {
        // Persisting and reloading at any point changes nothing observable.
        let mut now = T0;
        let mut breaker = Breaker::new(now);
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Advance(ms) => now += ms,
                Op::Admit => {
                    if let Ok(p) = breaker.try_admit(&cfg, now).0 {
                        held.push(p);
                    }
                }
                Op::Record { pick, ok } if !held.is_empty() => {
                    let permit = held.remove(pick % held.len());
                    breaker.record(&cfg, now, permit, outcome(ok));
                }
                Op::Tick => {
                    breaker.tick(&cfg, now);
                }
                _ => {}
            }
            let json = serde_json::to_string(&breaker).unwrap();
            let back: Breaker = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &breaker);
        }
    }
}
