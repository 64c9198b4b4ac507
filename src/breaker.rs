//! The per-worker circuit breaker: a pure state machine.
//!
//! Time is an argument (unix milliseconds), results are events; the breaker
//! never sleeps and never does IO, so every transition is testable.
//!
//! ```text
//! CLOSED --(failure_threshold consecutive failures, OR error rate >= error_rate_threshold
//!           over the last window_secs with >= window_min_samples results)--> OPEN
//! OPEN   --(open_cooldown_secs elapsed)--> HALF_OPEN
//! HALF   --(success_threshold consecutive successes)--> CLOSED
//! HALF   --(any failure)--> OPEN (cooldown restarts)
//! ```
//!
//! The window counts results per second of the clock: "the last
//! window_secs" are the current second and the window_secs - 1 before it.
//! Its size does not grow with the rate of builds.
//!
//! Every state change starts a new epoch. A permit carries the epoch it was
//! granted in, so a result that arrives after the breaker moved on (a slow
//! build from before the circuit opened, say) cannot disturb the new state.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Tuning of a breaker (`[circuit]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub error_rate_threshold: f64,
    pub window_secs: u64,
    pub window_min_samples: u32,
    pub open_cooldown_secs: u64,
    pub success_threshold: u32,
    pub half_open_max_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            error_rate_threshold: 0.5,
            window_secs: 60,
            window_min_samples: 4,
            open_cooldown_secs: 30,
            success_threshold: 2,
            half_open_max_probes: 1,
        }
    }
}

impl BreakerConfig {
    fn cooldown_ms(&self) -> u64 {
        self.open_cooldown_secs.saturating_mul(1000)
    }
}

/// The state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The name used in status output, events and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Compares with a state's name (`"open"`), as status output shows it.
impl PartialEq<&str> for State {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a request sent to the worker, as far as the worker's health goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// An infrastructure failure; the reason becomes `last_error`.
    Failure(String),
}

/// Leave to send one request to the worker; handed back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit {
    /// The epoch the permit was granted in.
    pub epoch: u64,
    /// Granted in HALF_OPEN: one of the limited probe permits.
    pub probe: bool,
}

/// Why the breaker would not admit a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub state: State,
    /// While OPEN: how long until the cooldown ends.
    pub retry_in_ms: Option<u64>,
    pub reason: String,
}

/// A state change, reported so the caller can persist it and emit an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// To OPEN; `failures` is the consecutive failure count at that moment.
    Opened {
        failures: u32,
        reason: String,
    },
    HalfOpened,
    /// Back to CLOSED after probes succeeded; `recovery_ms` is the time since
    /// the circuit first opened in this outage.
    Closed {
        recovery_ms: u64,
    },
    /// Forced to CLOSED by an operator.
    Reset,
}

/// The breaker of one worker. Serializable, so a restarted daemon resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub state: State,
    pub epoch: u64,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Time of the last state change.
    pub since_ms: u64,
    /// When the current OPEN period started (the cooldown runs from here).
    pub opened_at_ms: Option<u64>,
    /// When this outage began: the first CLOSED -> OPEN, kept through
    /// HALF_OPEN -> OPEN relapses so recovery time covers the whole outage.
    pub outage_started_ms: Option<u64>,
    pub probes_in_flight: u32,
    pub last_error: Option<String>,
    /// Results while CLOSED, counted per second of the clock, oldest first:
    /// at most `window_secs` + 1 buckets however many builds end, so the
    /// breaker stays small to save and to share.
    #[serde(deserialize_with = "deserialize_window")]
    window: VecDeque<Bucket>,
}

const REASON_OPEN: &str = "circuit open";
const REASON_PROBE_BUSY: &str = "half-open probe in flight";

impl Breaker {
    /// A closed breaker with no history.
    pub fn new(now_ms: u64) -> Self {
        Breaker {
            state: State::Closed,
            epoch: 0,
            consecutive_failures: 0,
            consecutive_successes: 0,
            since_ms: now_ms,
            opened_at_ms: None,
            outage_started_ms: None,
            probes_in_flight: 0,
            last_error: None,
            window: VecDeque::new(),
        }
    }

    /// Would `try_admit` grant a permit now? Read-only, for worker selection.
    pub fn can_admit(&self, cfg: &BreakerConfig, now_ms: u64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open => self.cooldown_elapsed(cfg, now_ms) && cfg.half_open_max_probes > 0,
            State::HalfOpen => self.probes_in_flight < cfg.half_open_max_probes,
        }
    }

    /// Ask for a permit. An OPEN breaker whose cooldown has elapsed first moves
    /// to HALF_OPEN (reported as the transition) and then hands out a probe.
    pub fn try_admit(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
    ) -> (Result<Permit, Refusal>, Option<Transition>) {
        let transition = self.tick(cfg, now_ms);
        (self.admit_in_current_state(cfg, now_ms), transition)
    }

    /// Feed the result of a permitted request. Results of an earlier epoch are ignored.
    pub fn record(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        permit: Permit,
        outcome: Outcome,
    ) -> Option<Transition> {
        if permit.epoch != self.epoch {
            return None;
        }
        match self.state {
            State::Closed => self.record_while_closed(cfg, now_ms, outcome),
            State::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.record_probe(cfg, now_ms, outcome)
            }
            // No permit is granted while OPEN, so a current-epoch result cannot exist.
            State::Open => None,
        }
    }

    /// The request's outcome will never be known (its client vanished):
    /// give back a probe permit without counting anything.
    pub fn abandon(&mut self, permit: Permit) {
        if permit.probe && permit.epoch == self.epoch && self.state == State::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// Let time pass: an OPEN breaker whose cooldown has elapsed becomes HALF_OPEN.
    pub fn tick(&mut self, cfg: &BreakerConfig, now_ms: u64) -> Option<Transition> {
        if self.state == State::Open && self.cooldown_elapsed(cfg, now_ms) {
            self.enter_half_open(now_ms);
            return Some(Transition::HalfOpened);
        }
        None
    }

    /// Force CLOSED and forget all counters and history.
    pub fn reset(&mut self, now_ms: u64) -> Option<Transition> {
        self.enter_closed(now_ms);
        Some(Transition::Reset)
    }

    /// Take a permit for an operator-requested probe: an OPEN breaker skips
    /// its cooldown and becomes HALF_OPEN. Otherwise the same as `try_admit`.
    pub fn probe_now(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
    ) -> (Result<Permit, Refusal>, Option<Transition>) {
        let transition = if self.state == State::Open {
            self.enter_half_open(now_ms);
            Some(Transition::HalfOpened)
        } else {
            None
        };
        (self.admit_in_current_state(cfg, now_ms), transition)
    }

    /// While OPEN: the time left in the cooldown (0 once it has elapsed).
    pub fn retry_in_ms(&self, cfg: &BreakerConfig, now_ms: u64) -> Option<u64> {
        if self.state != State::Open {
            return None;
        }
        let opened = self.opened_at_ms.unwrap_or(self.since_ms);
        Some(
            opened
                .saturating_add(cfg.cooldown_ms())
                .saturating_sub(now_ms),
        )
    }

    /// Failed share of the results in the current window; `None` without results.
    pub fn error_rate(&self, cfg: &BreakerConfig, now_ms: u64) -> Option<f64> {
        let (total, failures) = self.window_counts(cfg, now_ms);
        (total > 0).then(|| f64::from(failures) / f64::from(total))
    }

    /// Closed with no failure streak and no failure in the window: a
    /// success now changes no state and no decision, only counters (a
    /// success can never trip a breaker, and with no failure counted there
    /// is no streak to end). Such successes may be counted a little later,
    /// several at once, with the same result as one by one.
    pub fn is_healthy(&self, cfg: &BreakerConfig, now_ms: u64) -> bool {
        self.state == State::Closed
            && self.consecutive_failures == 0
            && self.window_counts(cfg, now_ms).1 == 0
    }

    /// Results in the current window: (total, failures).
    pub fn window_counts(&self, cfg: &BreakerConfig, now_ms: u64) -> (u32, u32) {
        self.window
            .iter()
            .filter(|b| in_window(cfg, b.sec, now_ms))
            .fold((0, 0), |(total, failures), b| {
                (
                    total.saturating_add(b.ok).saturating_add(b.failed),
                    failures.saturating_add(b.failed),
                )
            })
    }

    fn cooldown_elapsed(&self, cfg: &BreakerConfig, now_ms: u64) -> bool {
        self.retry_in_ms(cfg, now_ms) == Some(0)
    }

    fn admit_in_current_state(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
    ) -> Result<Permit, Refusal> {
        match self.state {
            State::Closed => Ok(Permit {
                epoch: self.epoch,
                probe: false,
            }),
            State::Open => Err(Refusal {
                state: State::Open,
                retry_in_ms: self.retry_in_ms(cfg, now_ms),
                reason: REASON_OPEN.to_string(),
            }),
            State::HalfOpen if self.probes_in_flight < cfg.half_open_max_probes => {
                self.probes_in_flight += 1;
                Ok(Permit {
                    epoch: self.epoch,
                    probe: true,
                })
            }
            State::HalfOpen => Err(Refusal {
                state: State::HalfOpen,
                retry_in_ms: None,
                reason: REASON_PROBE_BUSY.to_string(),
            }),
        }
    }

    fn record_while_closed(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        outcome: Outcome,
    ) -> Option<Transition> {
        self.forget_expired(cfg, now_ms);
        match outcome {
            Outcome::Success => {
                self.count_success();
                count_in(&mut self.window, now_ms, true);
                None
            }
            Outcome::Failure(reason) => {
                self.count_failure(reason);
                count_in(&mut self.window, now_ms, false);
                // Only a failure can trip the breaker: a success never makes things worse.
                self.should_open(cfg, now_ms)
                    .then(|| self.enter_open(now_ms))
            }
        }
    }

    fn record_probe(
        &mut self,
        cfg: &BreakerConfig,
        now_ms: u64,
        outcome: Outcome,
    ) -> Option<Transition> {
        match outcome {
            Outcome::Success => {
                self.count_success();
                if self.consecutive_successes < cfg.success_threshold {
                    return None;
                }
                let outage_start = self.outage_started_ms.unwrap_or(self.since_ms);
                self.enter_closed(now_ms);
                Some(Transition::Closed {
                    recovery_ms: now_ms.saturating_sub(outage_start),
                })
            }
            Outcome::Failure(reason) => {
                self.count_failure(reason);
                Some(self.enter_open(now_ms))
            }
        }
    }

    fn count_success(&mut self) {
        self.consecutive_failures = 0;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
    }

    fn count_failure(&mut self, reason: String) {
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(reason);
    }

    fn should_open(&self, cfg: &BreakerConfig, now_ms: u64) -> bool {
        if self.consecutive_failures >= cfg.failure_threshold {
            return true;
        }
        let (total, failures) = self.window_counts(cfg, now_ms);
        total >= cfg.window_min_samples
            && total > 0
            && f64::from(failures) / f64::from(total) >= cfg.error_rate_threshold
    }

    fn forget_expired(&mut self, cfg: &BreakerConfig, now_ms: u64) {
        while let Some(b) = self.window.front() {
            if in_window(cfg, b.sec, now_ms) {
                break;
            }
            self.window.pop_front();
        }
    }

    fn enter_open(&mut self, now_ms: u64) -> Transition {
        self.change_state(State::Open, now_ms);
        self.opened_at_ms = Some(now_ms);
        self.outage_started_ms.get_or_insert(now_ms);
        Transition::Opened {
            failures: self.consecutive_failures,
            reason: self.last_error.clone().unwrap_or_default(),
        }
    }

    fn enter_half_open(&mut self, now_ms: u64) {
        self.change_state(State::HalfOpen, now_ms);
    }

    fn enter_closed(&mut self, now_ms: u64) {
        self.change_state(State::Closed, now_ms);
        self.consecutive_failures = 0;
        self.opened_at_ms = None;
        self.outage_started_ms = None;
        self.last_error = None;
        self.window.clear();
    }

    /// What every state change does: a new epoch, whose probes and success
    /// streak start from zero.
    fn change_state(&mut self, state: State, now_ms: u64) {
        self.state = state;
        self.epoch += 1;
        self.since_ms = now_ms;
        self.consecutive_successes = 0;
        self.probes_in_flight = 0;
    }
}

/// Count a result in the bucket of its second (a clock stepped back counts
/// it in the newest bucket).
fn count_in(window: &mut VecDeque<Bucket>, now_ms: u64, ok: bool) {
    let sec = now_ms / 1000;
    if window.back().is_none_or(|b| b.sec < sec) {
        window.push_back(Bucket {
            sec,
            ok: 0,
            failed: 0,
        });
    }
    if let Some(bucket) = window.back_mut() {
        if ok {
            bucket.ok = bucket.ok.saturating_add(1);
        } else {
            bucket.failed = bucket.failed.saturating_add(1);
        }
    }
}

/// The results of one second of the clock, saved as `[sec, ok, failed]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// Unix seconds.
    sec: u64,
    ok: u32,
    failed: u32,
}

impl Serialize for Bucket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.sec, self.ok, self.failed).serialize(s)
    }
}

/// A window as saved: buckets, or one entry per result (`[at_ms, ok]`) as
/// rch saved it before counting per second.
fn deserialize_window<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<VecDeque<Bucket>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Saved {
        Bucket(u64, u32, u32),
        Result(u64, bool),
    }
    let mut window = VecDeque::new();
    for entry in Vec::<Saved>::deserialize(d)? {
        match entry {
            Saved::Bucket(sec, ok, failed) => window.push_back(Bucket { sec, ok, failed }),
            Saved::Result(at_ms, ok) => count_in(&mut window, at_ms, ok),
        }
    }
    Ok(window)
}

/// A second's results still count at `now_ms` while that second is one of
/// the last `window_secs` seconds (the current one included). Results
/// stamped in the future (clock stepped back) count as fresh.
fn in_window(cfg: &BreakerConfig, sec: u64, now_ms: u64) -> bool {
    (now_ms / 1000).saturating_sub(sec) < cfg.window_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn fail(reason: &str) -> Outcome {
        Outcome::Failure(reason.to_string())
    }

    /// Admit and record one result at `now`, returning the transition of the record.
    fn run(b: &mut Breaker, cfg: &BreakerConfig, now: u64, outcome: Outcome) -> Option<Transition> {
        let (permit, _) = b.try_admit(cfg, now);
        b.record(cfg, now, permit.expect("admitted"), outcome)
    }

    /// A breaker opened at `T0` by `failure_threshold` consecutive failures.
    fn opened(cfg: &BreakerConfig) -> Breaker {
        let mut b = Breaker::new(T0);
        for _ in 0..cfg.failure_threshold {
            run(&mut b, cfg, T0, fail("ssh: connection refused"));
        }
        assert_eq!(b.state, State::Open);
        b
    }

    fn half_open(cfg: &BreakerConfig) -> Breaker {
        let mut b = opened(cfg);
        assert_eq!(b.tick(cfg, T0 + 30_000), Some(Transition::HalfOpened));
        b
    }

    #[test]
    fn new_breaker_is_closed_and_admits() {
        let b = Breaker::new(T0);
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.epoch, 0);
        assert!(b.can_admit(&cfg(), T0));
        assert_eq!(b.error_rate(&cfg(), T0), None);
        assert_eq!(b.retry_in_ms(&cfg(), T0), None);
    }

    #[test]
    fn state_names() {
        assert_eq!(State::Closed.as_str(), "closed");
        assert_eq!(State::Open.as_str(), "open");
        assert_eq!(State::HalfOpen.as_str(), "half_open");
        assert_eq!(
            serde_json::to_string(&State::HalfOpen).unwrap(),
            "\"half_open\""
        );
    }

    #[test]
    fn exactly_failure_threshold_consecutive_failures_open() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        assert_eq!(run(&mut b, &cfg, T0, fail("a")), None);
        assert_eq!(run(&mut b, &cfg, T0 + 1, fail("b")), None);
        assert_eq!(b.state, State::Closed);
        let t = run(&mut b, &cfg, T0 + 2, fail("c"));
        assert_eq!(
            t,
            Some(Transition::Opened {
                failures: 3,
                reason: "c".into()
            })
        );
        assert_eq!(b.state, State::Open);
        assert_eq!(b.epoch, 1);
        assert_eq!(b.since_ms, T0 + 2);
        assert_eq!(b.opened_at_ms, Some(T0 + 2));
        assert_eq!(b.last_error.as_deref(), Some("c"));
        assert!(!b.can_admit(&cfg, T0 + 2));
    }

    #[test]
    fn one_failure_short_of_threshold_stays_closed() {
        // A high rate floor so only the consecutive rule can trip.
        let cfg = BreakerConfig {
            window_min_samples: 100,
            ..cfg()
        };
        let mut b = Breaker::new(T0);
        for i in 0..cfg.failure_threshold - 1 {
            assert_eq!(run(&mut b, &cfg, T0 + u64::from(i), fail("x")), None);
        }
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.consecutive_failures, cfg.failure_threshold - 1);
    }

    #[test]
    fn success_resets_consecutive_failures() {
        let cfg = BreakerConfig {
            window_min_samples: 100,
            ..cfg()
        };
        let mut b = Breaker::new(T0);
        run(&mut b, &cfg, T0, fail("x"));
        run(&mut b, &cfg, T0, fail("x"));
        run(&mut b, &cfg, T0, Outcome::Success);
        assert_eq!(b.consecutive_failures, 0);
        run(&mut b, &cfg, T0, fail("x"));
        run(&mut b, &cfg, T0, fail("x"));
        assert_eq!(b.state, State::Closed);
        run(&mut b, &cfg, T0, fail("x"));
        assert_eq!(b.state, State::Open);
    }

    #[test]
    fn error_rate_at_threshold_with_exactly_min_samples_opens() {
        // S F S F: never 2 consecutive failures, 50% over 4 samples.
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        assert_eq!(run(&mut b, &cfg, T0, Outcome::Success), None);
        assert_eq!(run(&mut b, &cfg, T0 + 1, fail("x")), None);
        assert_eq!(run(&mut b, &cfg, T0 + 2, Outcome::Success), None);
        assert_eq!(b.error_rate(&cfg, T0 + 2), Some(1.0 / 3.0));
        let t = run(&mut b, &cfg, T0 + 3, fail("y"));
        assert_eq!(
            t,
            Some(Transition::Opened {
                failures: 1,
                reason: "y".into()
            })
        );
        assert_eq!(b.error_rate(&cfg, T0 + 3), Some(0.5));
    }

    #[test]
    fn error_rate_below_sample_floor_does_not_open() {
        // S F F: 67% but only 3 samples, and only 2 consecutive failures.
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        run(&mut b, &cfg, T0, Outcome::Success);
        run(&mut b, &cfg, T0, fail("x"));
        run(&mut b, &cfg, T0, fail("x"));
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.window_counts(&cfg, T0), (3, 2));
    }

    #[test]
    fn error_rate_just_below_threshold_does_not_open() {
        // S S F S S F S S F ... 1/3 failures forever stays closed.
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        for i in 0..30 {
            let outcome = if i % 3 == 2 {
                fail("x")
            } else {
                Outcome::Success
            };
            assert_eq!(run(&mut b, &cfg, T0 + i, outcome), None);
        }
        assert_eq!(b.state, State::Closed);
    }

    #[test]
    fn samples_older_than_window_expire() {
        let cfg = cfg();
        let window = cfg.window_secs * 1000;
        let mut b = Breaker::new(T0);
        // F S F at T0: 2 failures of 3.
        run(&mut b, &cfg, T0, fail("x"));
        run(&mut b, &cfg, T0, Outcome::Success);
        run(&mut b, &cfg, T0, fail("x"));
        assert_eq!(b.window_counts(&cfg, T0 + window - 1), (3, 2));
        assert_eq!(b.window_counts(&cfg, T0 + window), (0, 0));
        assert_eq!(b.error_rate(&cfg, T0 + window), None);
        // Had they still counted, this would be 3 of 5 over >= 4 samples.
        run(&mut b, &cfg, T0 + window, Outcome::Success);
        assert_eq!(run(&mut b, &cfg, T0 + window, fail("x")), None);
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.window_counts(&cfg, T0 + window), (2, 1));
    }

    #[test]
    fn cooldown_edge_is_exactly_open_cooldown_secs() {
        let cfg = cfg();
        let mut b = opened(&cfg);
        let cooldown = cfg.open_cooldown_secs * 1000;
        assert_eq!(b.retry_in_ms(&cfg, T0), Some(cooldown));
        assert_eq!(b.retry_in_ms(&cfg, T0 + cooldown - 1), Some(1));
        assert!(!b.can_admit(&cfg, T0 + cooldown - 1));
        assert_eq!(b.tick(&cfg, T0 + cooldown - 1), None);
        let (refused, t) = b.try_admit(&cfg, T0 + cooldown - 1);
        assert_eq!(t, None);
        assert_eq!(
            refused,
            Err(Refusal {
                state: State::Open,
                retry_in_ms: Some(1),
                reason: "circuit open".into()
            })
        );
        assert!(b.can_admit(&cfg, T0 + cooldown));
        assert_eq!(b.tick(&cfg, T0 + cooldown), Some(Transition::HalfOpened));
        assert_eq!(b.state, State::HalfOpen);
        assert_eq!(b.epoch, 2);
        assert_eq!(b.retry_in_ms(&cfg, T0 + cooldown), None);
    }

    #[test]
    fn try_admit_after_cooldown_half_opens_and_grants_a_probe() {
        let cfg = cfg();
        let mut b = opened(&cfg);
        let (permit, t) = b.try_admit(&cfg, T0 + 30_000);
        assert_eq!(t, Some(Transition::HalfOpened));
        assert_eq!(
            permit,
            Ok(Permit {
                epoch: 2,
                probe: true
            })
        );
        assert_eq!(b.probes_in_flight, 1);
    }

    #[test]
    fn second_concurrent_half_open_request_is_refused() {
        let cfg = cfg();
        let mut b = half_open(&cfg);
        let now = T0 + 30_000;
        assert!(b.try_admit(&cfg, now).0.is_ok());
        assert!(!b.can_admit(&cfg, now));
        let (refused, t) = b.try_admit(&cfg, now);
        assert_eq!(t, None);
        assert_eq!(
            refused,
            Err(Refusal {
                state: State::HalfOpen,
                retry_in_ms: None,
                reason: "half-open probe in flight".into()
            })
        );
    }

    #[test]
    fn half_open_admits_up_to_max_probes() {
        let cfg = BreakerConfig {
            half_open_max_probes: 2,
            ..cfg()
        };
        let mut b = half_open(&cfg);
        let now = T0 + 30_000;
        assert!(b.try_admit(&cfg, now).0.is_ok());
        assert!(b.try_admit(&cfg, now).0.is_ok());
        assert!(b.try_admit(&cfg, now).0.is_err());
    }

    #[test]
    fn success_threshold_successes_close_the_circuit() {
        let cfg = cfg();
        let mut b = half_open(&cfg);
        let now = T0 + 30_000;
        assert_eq!(run(&mut b, &cfg, now, Outcome::Success), None);
        assert_eq!(b.state, State::HalfOpen);
        assert_eq!(b.probes_in_flight, 0);
        let t = run(&mut b, &cfg, now + 500, Outcome::Success);
        assert_eq!(
            t,
            Some(Transition::Closed {
                recovery_ms: 30_500
            })
        );
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.epoch, 3);
        assert_eq!(b.consecutive_failures, 0);
        assert_eq!(b.consecutive_successes, 0);
        assert_eq!(b.last_error, None);
        assert_eq!(b.opened_at_ms, None);
        assert_eq!(b.error_rate(&cfg, now + 500), None);
    }

    #[test]
    fn failure_in_half_open_reopens_and_restarts_cooldown() {
        let cfg = cfg();
        let mut b = half_open(&cfg);
        let now = T0 + 30_000;
        run(&mut b, &cfg, now, Outcome::Success);
        let t = run(&mut b, &cfg, now + 100, fail("rsync: error 12"));
        assert_eq!(
            t,
            Some(Transition::Opened {
                failures: 1,
                reason: "rsync: error 12".into()
            })
        );
        assert_eq!(b.state, State::Open);
        assert_eq!(b.epoch, 3);
        assert_eq!(b.opened_at_ms, Some(now + 100));
        assert_eq!(b.retry_in_ms(&cfg, now + 100), Some(30_000));
        // Recovery time covers the whole outage, relapses included.
        let later = now + 100 + 30_000;
        b.tick(&cfg, later);
        run(&mut b, &cfg, later, Outcome::Success);
        let t = run(&mut b, &cfg, later, Outcome::Success);
        assert_eq!(
            t,
            Some(Transition::Closed {
                recovery_ms: later - T0
            })
        );
    }

    #[test]
    fn stale_epoch_results_change_nothing() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        let (old, _) = b.try_admit(&cfg, T0);
        let old = old.unwrap();
        for _ in 0..3 {
            run(&mut b, &cfg, T0, fail("x"));
        }
        b.tick(&cfg, T0 + 30_000);
        let before = b.clone();
        assert_eq!(b.record(&cfg, T0 + 30_000, old, fail("late")), None);
        assert_eq!(b.record(&cfg, T0 + 30_000, old, Outcome::Success), None);
        assert_eq!(b, before);
        // The same holds once the circuit has closed again.
        run(&mut b, &cfg, T0 + 30_000, Outcome::Success);
        run(&mut b, &cfg, T0 + 30_000, Outcome::Success);
        let before = b.clone();
        assert_eq!(b.record(&cfg, T0 + 30_001, old, fail("late")), None);
        assert_eq!(b, before);
    }

    #[test]
    fn stale_probe_cannot_close_a_reset_breaker_twice() {
        let cfg = cfg();
        let mut b = half_open(&cfg);
        let (probe, _) = b.try_admit(&cfg, T0 + 30_000);
        b.reset(T0 + 30_001);
        let before = b.clone();
        b.abandon(probe.clone().unwrap());
        assert_eq!(
            b.record(&cfg, T0 + 30_002, probe.unwrap(), Outcome::Success),
            None
        );
        assert_eq!(b, before);
    }

    #[test]
    fn abandon_frees_the_probe_permit_without_counting() {
        let cfg = cfg();
        let mut b = half_open(&cfg);
        let now = T0 + 30_000;
        let (permit, _) = b.try_admit(&cfg, now);
        assert!(!b.can_admit(&cfg, now));
        b.abandon(permit.unwrap());
        assert_eq!(b.probes_in_flight, 0);
        assert_eq!(b.consecutive_successes, 0);
        assert_eq!(b.state, State::HalfOpen);
        assert!(b.can_admit(&cfg, now));
    }

    #[test]
    fn abandon_of_a_closed_permit_changes_nothing() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        let (permit, _) = b.try_admit(&cfg, T0);
        let before = b.clone();
        b.abandon(permit.unwrap());
        assert_eq!(b, before);
    }

    #[test]
    fn reset_forces_closed_and_clears_counters() {
        let cfg = cfg();
        let mut b = opened(&cfg);
        assert_eq!(b.reset(T0 + 5), Some(Transition::Reset));
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.epoch, 2);
        assert_eq!(b.consecutive_failures, 0);
        assert_eq!(b.last_error, None);
        assert_eq!(b.since_ms, T0 + 5);
        assert_eq!(b.error_rate(&cfg, T0 + 5), None);
        assert!(b.can_admit(&cfg, T0 + 5));
        // Counting starts from scratch: two failures do not reopen it.
        run(&mut b, &cfg, T0 + 6, fail("x"));
        run(&mut b, &cfg, T0 + 6, fail("x"));
        assert_eq!(b.state, State::Closed);
    }

    #[test]
    fn probe_now_skips_the_cooldown() {
        let cfg = cfg();
        let mut b = opened(&cfg);
        let (permit, t) = b.probe_now(&cfg, T0 + 1);
        assert_eq!(t, Some(Transition::HalfOpened));
        assert_eq!(
            permit,
            Ok(Permit {
                epoch: 2,
                probe: true
            })
        );
        assert_eq!(b.state, State::HalfOpen);
        // A second probe while the first is in flight is refused.
        let (second, t) = b.probe_now(&cfg, T0 + 1);
        assert_eq!(t, None);
        assert!(second.is_err());
    }

    #[test]
    fn probe_now_on_a_closed_breaker_is_an_ordinary_permit() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        let (permit, t) = b.probe_now(&cfg, T0);
        assert_eq!(t, None);
        assert_eq!(
            permit,
            Ok(Permit {
                epoch: 0,
                probe: false
            })
        );
        assert_eq!(b.state, State::Closed);
    }

    #[test]
    fn a_big_time_jump_while_open_still_half_opens_once() {
        let cfg = cfg();
        let mut b = opened(&cfg);
        assert_eq!(b.tick(&cfg, u64::MAX), Some(Transition::HalfOpened));
        assert_eq!(b.tick(&cfg, u64::MAX), None);
        assert_eq!(b.state, State::HalfOpen);
    }

    #[test]
    fn the_window_holds_a_bucket_per_second_however_many_builds_end() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        for i in 0..10_000u64 {
            let outcome = if i % 10 == 0 {
                fail("x")
            } else {
                Outcome::Success
            };
            // A failure every tenth result, never three in a row: stays closed.
            run(&mut b, &cfg, T0 + i / 4, outcome);
        }
        assert_eq!(b.state, State::Closed);
        assert_eq!(b.window.len(), 3, "{:?}", b.window);
        assert_eq!(b.window_counts(&cfg, T0 + 2_500), (10_000, 1_000));
        assert!(serde_json::to_string(&b).unwrap().len() < 400);
        // The first second's results leave the window with that second.
        let (total, _) = b.window_counts(&cfg, T0 + 60_000);
        assert_eq!(total, 6_000);
    }

    #[test]
    fn healthy_means_closed_without_a_failure_counted() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        assert!(b.is_healthy(&cfg, T0));
        run(&mut b, &cfg, T0, Outcome::Success);
        assert!(b.is_healthy(&cfg, T0));
        // A failure in the window: a later success would end its streak.
        run(&mut b, &cfg, T0 + 10, fail("x"));
        assert!(!b.is_healthy(&cfg, T0 + 10));
        run(&mut b, &cfg, T0 + 20, Outcome::Success);
        assert!(
            !b.is_healthy(&cfg, T0 + 20),
            "the failure is still in the window"
        );
        assert!(
            b.is_healthy(&cfg, T0 + 60_000),
            "the failure left the window"
        );
        let mut open = Breaker::new(T0);
        for i in 0..3 {
            run(&mut open, &cfg, T0 + i, fail("x"));
        }
        assert_eq!(open.state, State::Open);
        assert!(!open.is_healthy(&cfg, T0 + 120_000));
    }

    #[test]
    fn a_window_saved_one_entry_per_result_is_read_as_buckets() {
        let cfg = cfg();
        let mut saved = serde_json::to_value(Breaker::new(T0)).unwrap();
        saved["window"] = serde_json::json!([[T0, true], [T0 + 10, false], [T0 + 1_500, true]]);
        let b: Breaker = serde_json::from_value(saved).unwrap();
        assert_eq!(b.window_counts(&cfg, T0 + 1_500), (3, 1));
        assert_eq!(b.window.len(), 2);
        let again: Breaker = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn survives_a_serde_round_trip() {
        let cfg = cfg();
        let mut b = Breaker::new(T0);
        run(&mut b, &cfg, T0, fail("x"));
        run(&mut b, &cfg, T0, Outcome::Success);
        let json = serde_json::to_string(&b).unwrap();
        let back: Breaker = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.window_counts(&cfg, T0), (2, 1));
    }
}
