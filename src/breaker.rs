//! The per-worker circuit breaker: a pure state machine.
//!
//! Time is an argument (unix milliseconds), results are events; the breaker
//! never sleeps and never does IO, so every transition is testable.

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
