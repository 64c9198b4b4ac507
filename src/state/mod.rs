//! The fleet's state as both sides read it: the daemon writes it, and the
//! client's commands read it through these types — from the daemon's answers
//! when it runs, from its store when it does not. Nothing here starts or
//! talks to the daemon, and nothing here depends on it.
//!
//! - [`events`]: the typed events (circuit transitions, fallbacks, probes).
//! - [`report`]: what `rch status`, `probe` and `history` show.
//! - [`store`]: the SQLite store (breakers, flags, jobs, events).
//! - [`offline`]: the fleet as the store saw it last, for a stopped daemon.

pub mod events;
pub mod offline;
pub mod report;
pub mod store;
