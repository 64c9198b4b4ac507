//! Worker choice, slot accounting and the FIFO wait queue; pure.
//!
//! The selector knows each worker's slots and how many are in use, which
//! worker last built each project, and who is waiting for a slot. Breaker
//! state is not kept here: the caller passes a peek (`admits`) so this module
//! stays free of time and IO. What each worker can build (its probed
//! capabilities) is part of the worker's input, what a build needs is part of
//! the request; [`crate::caps::fit`] decides whether they meet.

use std::collections::{HashMap, VecDeque};

use crate::caps::{self, Capabilities, Needs, Policy, Unfit};

use serde::{Deserialize, Serialize};

/// A worker as far as selection is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlots {
    pub id: String,
    pub slots: u32,
    pub priority: i64,
    pub enabled: bool,
    /// Finishing its current builds but taking no new ones.
    pub draining: bool,
    /// How strictly its toolchains must match the client's.
    #[serde(default)]
    pub policy: Policy,
    /// What its last probe found (and builds found missing since); `None`
    /// while never probed.
    #[serde(default)]
    pub caps: Option<Capabilities>,
}

/// What a build asks of a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub project: String,
    /// Only this worker may serve the request.
    pub worker: Option<String>,
    /// These workers may not serve it (they already failed this build).
    pub exclude: Vec<String>,
    /// The tools and toolchain the build needs.
    #[serde(default)]
    pub needs: Needs,
}

/// Why a worker cannot take a request right now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    Disabled,
    Draining,
    Excluded,
    NotRequested,
    /// Its breaker refused.
    Refused,
    /// All its slots are in use.
    Busy,
    /// It cannot build this command: a tool or toolchain does not match.
    Unfit(Unfit),
}

impl Why {
    /// Short words for the "ran locally: ..." line, e.g. "w2 busy".
    pub fn as_str(&self) -> &'static str {
        match self {
            Why::Disabled => "disabled",
            Why::Draining => "draining",
            Why::Excluded => "excluded",
            Why::NotRequested => "not requested",
            Why::Refused => "circuit open",
            Why::Busy => "busy",
            Why::Unfit(_) => "lacks a capability",
        }
    }
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    Worker(String),
    /// Some admissible worker exists but all of them are full.
    Wait,
    /// No worker could serve it now, each with its reason.
    Unavailable(Vec<(String, Why)>),
}

#[derive(Debug, Clone)]
struct Waiter {
    id: u64,
    request: LeaseRequest,
}

/// Slot accounting and worker choice for a set of workers.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    workers: Vec<WorkerSlots>,
    used: HashMap<String, u32>,
    last_builder: HashMap<String, String>,
    queue: VecDeque<Waiter>,
}

impl Selector {
    pub fn new(workers: Vec<WorkerSlots>) -> Self {
        Selector {
            workers,
            ..Selector::default()
        }
    }

    /// Replace the worker set (config reload). Surviving ids keep their used
    /// counts, even above a lowered slot count: running builds are not undone,
    /// new ones wait until usage falls below the new limit.
    pub fn reconfigure(&mut self, workers: Vec<WorkerSlots>) {
        self.used
            .retain(|id, _| workers.iter().any(|worker| &worker.id == id));
        self.workers = workers;
    }

    pub fn set_enabled(&mut self, id: &str, enabled: bool) {
        if let Some(worker) = self.worker_mut(id) {
            worker.enabled = enabled;
        }
    }

    pub fn set_draining(&mut self, id: &str, draining: bool) {
        if let Some(worker) = self.worker_mut(id) {
            worker.draining = draining;
        }
    }

    /// What a probe (or a build that found a tool missing) learned of `id`.
    pub fn set_capabilities(&mut self, id: &str, caps: Option<Capabilities>) {
        if let Some(worker) = self.worker_mut(id) {
            worker.caps = caps;
        }
    }

    /// Choose a worker for `req`. `admits` says whether a worker's breaker
    /// would let a request through. Does not take the slot: see `acquire`.
    pub fn pick(&self, req: &LeaseRequest, admits: &dyn Fn(&str) -> bool) -> Pick {
        let mut free = Vec::new();
        let mut refusals = Vec::new();
        for worker in &self.workers {
            match self.why_not(worker, req, admits) {
                None => free.push(worker),
                Some(why) => refusals.push((worker.id.clone(), why)),
            }
        }
        if let Some(best) = free.into_iter().max_by(|a, b| self.compare(req, a, b)) {
            return Pick::Worker(best.id.clone());
        }
        if refusals.iter().any(|(_, why)| matches!(why, Why::Busy)) {
            return Pick::Wait;
        }
        Pick::Unavailable(refusals)
    }

    /// Take a slot on `worker`; false if it is unknown or full.
    pub fn acquire(&mut self, worker: &str) -> bool {
        let Some(slots) = self.worker(worker).map(|w| w.slots) else {
            return false;
        };
        let used = self.used.entry(worker.to_string()).or_insert(0);
        if *used >= slots {
            return false;
        }
        *used += 1;
        true
    }

    /// Give back a slot on `worker`.
    pub fn release(&mut self, worker: &str) {
        if let Some(used) = self.used.get_mut(worker) {
            *used = used.saturating_sub(1);
        }
    }

    /// Remember that `worker` built `project`: its target dir is warm there.
    pub fn record_build(&mut self, project: &str, worker: &str) {
        self.last_builder
            .insert(project.to_string(), worker.to_string());
    }

    /// Which worker last built `project`, if any.
    pub fn last_builder(&self, project: &str) -> Option<&str> {
        self.last_builder.get(project).map(String::as_str)
    }

    /// Put a request at the back of the wait queue; returns its 1-based position.
    /// A waiter id already queued is moved to the back.
    pub fn enqueue(&mut self, waiter: u64, req: LeaseRequest) -> usize {
        self.cancel(waiter);
        self.queue.push_back(Waiter {
            id: waiter,
            request: req,
        });
        self.queue.len()
    }

    /// Remove a waiter (it timed out or went away); false if it was not queued.
    pub fn cancel(&mut self, waiter: u64) -> bool {
        let before = self.queue.len();
        self.queue.retain(|queued| queued.id != waiter);
        self.queue.len() != before
    }

    /// Serve the queue oldest first. A waiter that can be placed gets its slot
    /// acquired and is returned with `Pick::Worker`; a waiter no worker could
    /// serve any more is returned with `Pick::Unavailable`; both leave the
    /// queue. A waiter that must keep waiting stays, without blocking younger
    /// waiters that other workers can serve.
    pub fn serve_waiters(&mut self, admits: &dyn Fn(&str) -> bool) -> Vec<(u64, Pick)> {
        let mut served = Vec::new();
        let mut still_waiting = VecDeque::new();
        while let Some(waiter) = self.queue.pop_front() {
            match self.pick(&waiter.request, admits) {
                Pick::Wait => still_waiting.push_back(waiter),
                Pick::Worker(id) => {
                    let acquired = self.acquire(&id);
                    debug_assert!(acquired, "pick chose a worker without a free slot");
                    served.push((waiter.id, Pick::Worker(id)));
                }
                unavailable @ Pick::Unavailable(_) => served.push((waiter.id, unavailable)),
            }
        }
        self.queue = still_waiting;
        served
    }

    /// Serve the oldest waiter that need not keep waiting: its slot acquired
    /// for `Pick::Worker`, or `Pick::Unavailable`; it leaves the queue. One
    /// at a time, so the caller can take the breaker permit before `admits`
    /// is asked about the next waiter.
    pub fn serve_next(&mut self, admits: &dyn Fn(&str) -> bool) -> Option<(u64, Pick)> {
        let (index, pick) = self
            .queue
            .iter()
            .enumerate()
            .map(|(i, waiter)| (i, self.pick(&waiter.request, admits)))
            .find(|(_, pick)| *pick != Pick::Wait)?;
        let waiter = self.queue.remove(index)?;
        if let Pick::Worker(id) = &pick {
            let acquired = self.acquire(id);
            debug_assert!(acquired, "pick chose a worker without a free slot");
        }
        Some((waiter.id, pick))
    }

    /// 1-based position of a waiter in the queue.
    pub fn position(&self, waiter: u64) -> Option<usize> {
        self.queue
            .iter()
            .position(|queued| queued.id == waiter)
            .map(|index| index + 1)
    }

    /// Slots in use on `id` (0 for an unknown worker).
    pub fn used(&self, id: &str) -> u32 {
        self.used.get(id).copied().unwrap_or(0)
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Every worker with its slots in use, in configuration order.
    pub fn workers(&self) -> impl Iterator<Item = (&WorkerSlots, u32)> {
        self.workers
            .iter()
            .map(|worker| (worker, self.used(&worker.id)))
    }

    fn worker(&self, id: &str) -> Option<&WorkerSlots> {
        self.workers.iter().find(|worker| worker.id == id)
    }

    fn worker_mut(&mut self, id: &str) -> Option<&mut WorkerSlots> {
        self.workers.iter_mut().find(|worker| worker.id == id)
    }

    fn free_slots(&self, worker: &WorkerSlots) -> u32 {
        worker.slots.saturating_sub(self.used(&worker.id))
    }

    /// Why `worker` cannot serve `req` now; `None` if it can. Reasons that
    /// would still hold after a slot frees up are checked before `Busy`, so
    /// `Busy` means "worth waiting for".
    fn why_not(
        &self,
        worker: &WorkerSlots,
        req: &LeaseRequest,
        admits: &dyn Fn(&str) -> bool,
    ) -> Option<Why> {
        if req
            .worker
            .as_deref()
            .is_some_and(|wanted| wanted != worker.id)
        {
            Some(Why::NotRequested)
        } else if req.exclude.contains(&worker.id) {
            Some(Why::Excluded)
        } else if !worker.enabled {
            Some(Why::Disabled)
        } else if worker.draining {
            Some(Why::Draining)
        } else if let Err(unfit) = caps::fit(&req.needs, worker.caps.as_ref(), &worker.policy) {
            Some(Why::Unfit(unfit))
        } else if !admits(&worker.id) {
            Some(Why::Refused)
        } else if self.free_slots(worker) == 0 {
            Some(Why::Busy)
        } else {
            None
        }
    }

    /// Preference among workers that can serve `req`: the one that last built
    /// the project (warm target dir), then higher priority, then more free
    /// slots, then the smaller id. Greater is better.
    fn compare(&self, req: &LeaseRequest, a: &WorkerSlots, b: &WorkerSlots) -> std::cmp::Ordering {
        let warm = self.last_builder(&req.project);
        let is_warm = |worker: &WorkerSlots| warm == Some(worker.id.as_str());
        is_warm(a)
            .cmp(&is_warm(b))
            .then(a.priority.cmp(&b.priority))
            .then(self.free_slots(a).cmp(&self.free_slots(b)))
            .then(b.id.cmp(&a.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, slots: u32, priority: i64) -> WorkerSlots {
        WorkerSlots {
            id: id.to_string(),
            slots,
            priority,
            enabled: true,
            draining: false,
            policy: Policy::default(),
            caps: None,
        }
    }

    fn request(project: &str) -> LeaseRequest {
        LeaseRequest {
            project: project.to_string(),
            worker: None,
            exclude: Vec::new(),
            needs: Needs::default(),
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    fn pick(id: &str) -> Pick {
        Pick::Worker(id.to_string())
    }

    #[test]
    fn prefers_higher_priority() {
        let s = Selector::new(vec![worker("a", 2, 10), worker("b", 2, 100)]);
        assert_eq!(s.pick(&request("p"), &all), pick("b"));
    }

    #[test]
    fn prefers_the_worker_that_last_built_the_project() {
        let mut s = Selector::new(vec![worker("a", 2, 10), worker("b", 2, 100)]);
        s.record_build("p", "a");
        assert_eq!(s.pick(&request("p"), &all), pick("a"));
        assert_eq!(s.pick(&request("other"), &all), pick("b"));
    }

    #[test]
    fn warm_worker_that_is_full_is_skipped() {
        let mut s = Selector::new(vec![worker("a", 1, 10), worker("b", 2, 100)]);
        s.record_build("p", "a");
        assert!(s.acquire("a"));
        assert_eq!(s.pick(&request("p"), &all), pick("b"));
    }

    #[test]
    fn equal_priority_prefers_more_free_slots_then_smaller_id() {
        let mut s = Selector::new(vec![
            worker("b", 4, 1),
            worker("a", 4, 1),
            worker("c", 8, 1),
        ]);
        assert_eq!(s.pick(&request("p"), &all), pick("c"));
        for _ in 0..4 {
            assert!(s.acquire("c"));
        }
        assert_eq!(s.pick(&request("p"), &all), pick("a"));
    }

    #[test]
    fn requested_worker_only() {
        let mut s = Selector::new(vec![worker("a", 1, 10), worker("b", 1, 100)]);
        let mut req = request("p");
        req.worker = Some("a".into());
        assert_eq!(s.pick(&req, &all), pick("a"));
        assert!(s.acquire("a"));
        assert_eq!(s.pick(&req, &all), Pick::Wait);
        req.worker = Some("nope".into());
        assert_eq!(
            s.pick(&req, &all),
            Pick::Unavailable(vec![
                ("a".into(), Why::NotRequested),
                ("b".into(), Why::NotRequested)
            ])
        );
    }

    #[test]
    fn unavailable_lists_every_reason() {
        let mut s = Selector::new(vec![
            worker("off", 1, 0),
            worker("drain", 1, 0),
            worker("bad", 1, 0),
            worker("open", 1, 0),
        ]);
        s.set_enabled("off", false);
        s.set_draining("drain", true);
        let mut req = request("p");
        req.exclude = vec!["bad".into()];
        let admits = |id: &str| id != "open";
        assert_eq!(
            s.pick(&req, &admits),
            Pick::Unavailable(vec![
                ("off".into(), Why::Disabled),
                ("drain".into(), Why::Draining),
                ("bad".into(), Why::Excluded),
                ("open".into(), Why::Refused),
            ])
        );
    }

    #[test]
    fn refused_and_full_is_unavailable_not_wait() {
        let mut s = Selector::new(vec![worker("a", 1, 0)]);
        assert!(s.acquire("a"));
        assert_eq!(s.pick(&request("p"), &all), Pick::Wait);
        assert_eq!(
            s.pick(&request("p"), &|_| false),
            Pick::Unavailable(vec![("a".into(), Why::Refused)])
        );
    }

    #[test]
    fn no_workers_is_unavailable() {
        let s = Selector::new(Vec::new());
        assert_eq!(s.pick(&request("p"), &all), Pick::Unavailable(Vec::new()));
    }

    #[test]
    fn acquire_never_oversubscribes() {
        let mut s = Selector::new(vec![worker("a", 2, 0)]);
        assert!(s.acquire("a"));
        assert!(s.acquire("a"));
        assert!(!s.acquire("a"));
        assert!(!s.acquire("unknown"));
        assert_eq!(s.used("a"), 2);
        s.release("a");
        assert_eq!(s.used("a"), 1);
        s.release("a");
        s.release("a");
        assert_eq!(s.used("a"), 0);
    }

    #[test]
    fn reconfigure_keeps_used_counts_of_surviving_workers() {
        let mut s = Selector::new(vec![worker("a", 4, 0), worker("b", 4, 0)]);
        assert!(s.acquire("a"));
        assert!(s.acquire("a"));
        assert!(s.acquire("b"));
        s.reconfigure(vec![worker("a", 1, 0), worker("c", 1, 0)]);
        assert_eq!(s.used("a"), 2);
        assert_eq!(s.used("b"), 0);
        assert!(!s.acquire("a"));
        assert!(!s.acquire("b"));
        s.release("a");
        assert!(!s.acquire("a"));
        s.release("a");
        assert!(s.acquire("a"));
        let listed: Vec<(String, u32)> =
            s.workers().map(|(w, used)| (w.id.clone(), used)).collect();
        assert_eq!(listed, vec![("a".into(), 1), ("c".into(), 0)]);
    }

    #[test]
    fn queue_positions_and_cancel() {
        let mut s = Selector::new(vec![worker("a", 1, 0)]);
        assert_eq!(s.enqueue(1, request("p")), 1);
        assert_eq!(s.enqueue(2, request("p")), 2);
        assert_eq!(s.enqueue(3, request("p")), 3);
        assert!(s.cancel(2));
        assert!(!s.cancel(2));
        assert_eq!(s.position(3), Some(2));
        assert_eq!(s.queue_len(), 2);
    }

    #[test]
    fn release_wakes_the_oldest_waiter() {
        let mut s = Selector::new(vec![worker("a", 1, 0)]);
        assert!(s.acquire("a"));
        s.enqueue(7, request("p"));
        s.enqueue(8, request("p"));
        assert_eq!(s.serve_waiters(&all), Vec::new());
        s.release("a");
        assert_eq!(s.serve_waiters(&all), vec![(7, pick("a"))]);
        assert_eq!(s.used("a"), 1);
        assert_eq!(s.queue_len(), 1);
        s.release("a");
        assert_eq!(s.serve_waiters(&all), vec![(8, pick("a"))]);
        assert_eq!(s.queue_len(), 0);
    }

    #[test]
    fn a_waiting_waiter_does_not_block_younger_ones_with_other_constraints() {
        let mut s = Selector::new(vec![worker("a", 1, 0), worker("b", 1, 0)]);
        assert!(s.acquire("a"));
        assert!(s.acquire("b"));
        let mut wants_a = request("p");
        wants_a.worker = Some("a".into());
        s.enqueue(1, wants_a);
        s.enqueue(2, request("q"));
        s.release("b");
        assert_eq!(s.serve_waiters(&all), vec![(2, pick("b"))]);
        assert_eq!(s.position(1), Some(1));
    }

    #[test]
    fn waiters_that_became_unavailable_leave_the_queue() {
        let mut s = Selector::new(vec![worker("a", 1, 0)]);
        assert!(s.acquire("a"));
        s.enqueue(1, request("p"));
        s.set_draining("a", true);
        assert_eq!(
            s.serve_waiters(&all),
            vec![(1, Pick::Unavailable(vec![("a".into(), Why::Draining)]))]
        );
        assert_eq!(s.queue_len(), 0);
    }
}
