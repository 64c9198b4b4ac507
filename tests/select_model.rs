//! The selector under random operation sequences: slots are never
//! oversubscribed, picks agree with a plain reference ranking, waiters with
//! identical constraints are served strictly first come first served, and no
//! waiter is left waiting while a slot it could use is free. Capabilities
//! are part of the input: a worker known to lack the build's tool is never
//! picked, one never probed may be.

use std::collections::HashMap;

use proptest::prelude::*;
use rch::caps::{parse_probe, Capabilities, Needs};
use rch::select::{LeaseRequest, Pick, Selector, WorkerSlots};

const IDS: [&str; 3] = ["w0", "w1", "w2"];

#[derive(Debug, Clone)]
enum Op {
    /// Pick for a fresh request and take the slot if a worker was chosen.
    Lease(Req),
    AcquireDirect(usize),
    Release(usize),
    Enqueue(Req),
    Cancel(usize),
    Serve,
    SetEnabled(usize, bool),
    SetDraining(usize, bool),
    SetAdmits(usize, bool),
    /// What a probe found: `None` never probed, else whether cargo is there.
    SetCargo(usize, Option<bool>),
    RecordBuild(u8, usize),
    Reconfigure(Vec<(u32, i64)>),
}

/// A request drawn from a small space, so equal constraints recur.
#[derive(Debug, Clone, PartialEq)]
struct Req {
    project: u8,
    worker: Option<usize>,
    exclude: Vec<usize>,
    needs_cargo: bool,
}

impl Req {
    fn to_request(&self) -> LeaseRequest {
        LeaseRequest {
            project: format!("p{}", self.project),
            worker: self.worker.map(|i| IDS[i].to_string()),
            exclude: self.exclude.iter().map(|&i| IDS[i].to_string()).collect(),
            needs: Needs {
                tool: Some(if self.needs_cargo { "cargo" } else { "make" }.into()),
                ..Needs::default()
            },
        }
    }

    /// What decides which workers may serve it (the project only ranks them).
    fn constraints(&self) -> (Option<usize>, Vec<usize>, bool) {
        let mut exclude = self.exclude.clone();
        exclude.sort_unstable();
        exclude.dedup();
        (self.worker, exclude, self.needs_cargo)
    }
}

fn req() -> impl Strategy<Value = Req> {
    (
        0u8..3,
        prop::option::weighted(0.2, 0usize..3),
        prop::collection::vec(0usize..3, 0..2),
        any::<bool>(),
    )
        .prop_map(|(project, worker, exclude, needs_cargo)| Req {
            project,
            worker,
            exclude,
            needs_cargo,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => req().prop_map(Op::Lease),
        1 => (0usize..4).prop_map(Op::AcquireDirect),
        5 => any::<usize>().prop_map(Op::Release),
        4 => req().prop_map(Op::Enqueue),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => Just(Op::Serve),
        1 => (0usize..3, any::<bool>()).prop_map(|(w, on)| Op::SetEnabled(w, on)),
        1 => (0usize..3, any::<bool>()).prop_map(|(w, on)| Op::SetDraining(w, on)),
        2 => (0usize..3, any::<bool>()).prop_map(|(w, on)| Op::SetAdmits(w, on)),
        2 => (0usize..3, prop::option::of(any::<bool>())).prop_map(|(w, c)| Op::SetCargo(w, c)),
        1 => (0u8..3, 0usize..3).prop_map(|(p, w)| Op::RecordBuild(p, w)),
        1 => prop::collection::vec((1u32..4, 0i64..3), 3).prop_map(Op::Reconfigure),
    ]
}

fn workers(shape: &[(u32, i64)]) -> Vec<WorkerSlots> {
    shape
        .iter()
        .zip(IDS)
        .map(|(&(slots, priority), id)| WorkerSlots {
            id: id.to_string(),
            slots,
            priority,
            enabled: true,
            draining: false,
            policy: Default::default(),
            caps: None,
        })
        .collect()
}

/// A probe's answer: make always, cargo when `cargo`.
fn caps(cargo: Option<bool>) -> Option<Capabilities> {
    let cargo = cargo?;
    let mut text = String::from("tool\tmake\tGNU Make 4.3\n");
    if cargo {
        text.push_str("tool\tcargo\tcargo 1.95.0\n");
    }
    Some(parse_probe(&text))
}

/// The test's own view of the world, kept independently of the selector.
struct World {
    shape: Vec<(u32, i64)>,
    enabled: [bool; 3],
    draining: [bool; 3],
    admits: [bool; 3],
    cargo: [Option<bool>; 3],
    warm: HashMap<u8, usize>,
    /// Leases held, by worker index.
    leases: Vec<usize>,
    /// Queued waiters in arrival order: (waiter id, request).
    queue: Vec<(u64, Req)>,
    next_waiter: u64,
}

impl World {
    fn held(&self, w: usize) -> u32 {
        self.leases.iter().filter(|&&l| l == w).count() as u32
    }

    /// The reference ranking: filter by eligibility, then sort by the
    /// documented preference and take the first.
    fn expected_pick(&self, req: &Req) -> Option<usize> {
        let mut candidates: Vec<usize> = (0..3)
            .filter(|&w| self.eligible(req, w) && self.held(w) < self.shape[w].0)
            .collect();
        candidates.sort_by_key(|&w| {
            (
                std::cmp::Reverse(self.warm.get(&req.project) == Some(&w)),
                std::cmp::Reverse(self.shape[w].1),
                std::cmp::Reverse(self.shape[w].0.saturating_sub(self.held(w))),
                IDS[w],
            )
        });
        candidates.first().copied()
    }

    fn eligible(&self, req: &Req, w: usize) -> bool {
        req.worker.is_none_or(|only| only == w)
            && !req.exclude.contains(&w)
            && self.enabled[w]
            && !self.draining[w]
            && self.admits[w]
            && !(req.needs_cargo && self.cargo[w] == Some(false))
    }

    fn expect(&self, req: &Req, got: &Pick) -> Result<(), TestCaseError> {
        match (self.expected_pick(req), got) {
            (Some(w), Pick::Worker(id)) => prop_assert_eq!(id.as_str(), IDS[w]),
            (None, Pick::Wait) => prop_assert!((0..3).any(|w| self.eligible(req, w))),
            (None, Pick::Unavailable(reasons)) => {
                prop_assert!(!(0..3).any(|w| self.eligible(req, w)));
                prop_assert_eq!(reasons.len(), 3);
            }
            (want, got) => prop_assert!(false, "expected {:?}, got {:?}", want, got),
        }
        Ok(())
    }
}

fn index_of(id: &str) -> usize {
    IDS.iter()
        .position(|known| *known == id)
        .expect("known worker")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn selector_keeps_its_promises(ops in prop::collection::vec(op(), 1..150)) {
        let shape = vec![(2, 1), (1, 2), (3, 0)];
        let mut selector = Selector::new(workers(&shape));
        let mut world = World {
            shape,
            enabled: [true; 3],
            draining: [false; 3],
            admits: [true; 3],
            cargo: [None; 3],
            warm: HashMap::new(),
            leases: Vec::new(),
            queue: Vec::new(),
            next_waiter: 0,
        };

        for op in ops {
            let admits = world.admits;
            let peek = move |id: &str| admits[index_of(id)];
            match op {
                Op::Lease(r) => {
                    let got = selector.pick(&r.to_request(), &peek);
                    world.expect(&r, &got)?;
                    if let Pick::Worker(id) = got {
                        prop_assert!(selector.acquire(&id));
                        world.leases.push(index_of(&id));
                    }
                }
                Op::AcquireDirect(w) => {
                    let id = IDS.get(w).copied().unwrap_or("unknown");
                    let free = w < 3 && world.held(w) < world.shape[w].0;
                    prop_assert_eq!(selector.acquire(id), free);
                    if free {
                        world.leases.push(w);
                    }
                }
                Op::Release(pick) if !world.leases.is_empty() => {
                    let w = world.leases.remove(pick % world.leases.len());
                    selector.release(IDS[w]);
                }
                Op::Release(_) => {}
                Op::Enqueue(r) => {
                    world.next_waiter += 1;
                    world.queue.push((world.next_waiter, r.clone()));
                    let position = selector.enqueue(world.next_waiter, r.to_request());
                    prop_assert_eq!(position, world.queue.len());
                }
                Op::Cancel(pick) => {
                    if world.queue.is_empty() {
                        prop_assert!(!selector.cancel(u64::MAX));
                    } else {
                        let (id, _) = world.queue.remove(pick % world.queue.len());
                        prop_assert!(selector.cancel(id));
                    }
                }
                Op::Serve => {
                    let served = selector.serve_waiters(&peek);
                    let mut position: HashMap<u64, usize> = HashMap::new();
                    for (i, (id, _)) in world.queue.iter().enumerate() {
                        position.insert(*id, i);
                    }
                    for (id, pick) in &served {
                        let at = position[id];
                        let constraints = world.queue[at].1.constraints();
                        // Strict FIFO within a constraint class: nobody older
                        // with the same constraints is left behind.
                        let older_left = world.queue[..at].iter().any(|(other, r)| {
                            r.constraints() == constraints
                                && !served.iter().any(|(s, _)| s == other)
                        });
                        prop_assert!(!older_left, "waiter {} overtook an older twin", id);
                        if let Pick::Worker(worker) = pick {
                            world.leases.push(index_of(worker));
                        } else {
                            prop_assert!(matches!(pick, Pick::Unavailable(_)));
                        }
                    }
                    world.queue.retain(|(id, _)| !served.iter().any(|(s, _)| s == id));
                    // Work-conserving: every waiter left could not be placed.
                    for (_, r) in &world.queue {
                        prop_assert_eq!(selector.pick(&r.to_request(), &peek), Pick::Wait);
                    }
                }
                Op::SetEnabled(w, on) => {
                    world.enabled[w] = on;
                    selector.set_enabled(IDS[w], on);
                }
                Op::SetDraining(w, on) => {
                    world.draining[w] = on;
                    selector.set_draining(IDS[w], on);
                }
                Op::SetAdmits(w, on) => world.admits[w] = on,
                Op::SetCargo(w, cargo) => {
                    world.cargo[w] = cargo;
                    selector.set_capabilities(IDS[w], caps(cargo));
                }
                Op::RecordBuild(project, w) => {
                    world.warm.insert(project, w);
                    selector.record_build(&format!("p{project}"), IDS[w]);
                }
                Op::Reconfigure(shape) => {
                    let mut fresh = workers(&shape);
                    for (i, worker) in fresh.iter_mut().enumerate() {
                        worker.enabled = world.enabled[i];
                        worker.draining = world.draining[i];
                        worker.caps = caps(world.cargo[i]);
                    }
                    selector.reconfigure(fresh);
                    world.shape = shape;
                }
            }

            // Accounting matches the leases actually held, and no acquisition
            // ever took a worker past its slots (shrinking by reload aside).
            for (w, id) in IDS.iter().enumerate() {
                prop_assert_eq!(selector.used(id), world.held(w));
            }
            prop_assert_eq!(selector.queue_len(), world.queue.len());
            let listed: Vec<u32> = selector.workers().map(|(_, used)| used).collect();
            prop_assert_eq!(listed, (0..3).map(|w| world.held(w)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn slots_are_never_oversubscribed(
        slots in prop::collection::vec(1u32..5, 3),
        ops in prop::collection::vec((0usize..3, any::<bool>()), 1..200),
    ) {
        let shape: Vec<(u32, i64)> = slots.iter().map(|&s| (s, 0)).collect();
        let mut selector = Selector::new(workers(&shape));
        let mut waiter = 0;
        for (w, take) in ops {
            if take {
                waiter += 1;
                let request = LeaseRequest { project: "p".into(), worker: None, exclude: vec![], needs: Needs::default() };
                match selector.pick(&request, &|_| true) {
                    Pick::Worker(id) => prop_assert!(selector.acquire(&id)),
                    Pick::Wait => {
                        selector.enqueue(waiter, request);
                    }
                    Pick::Unavailable(_) => prop_assert!(false, "all workers are usable"),
                }
            } else {
                selector.release(IDS[w]);
                selector.serve_waiters(&|_| true);
            }
            for (worker, used) in selector.workers() {
                prop_assert!(used <= worker.slots, "{} oversubscribed", worker.id);
            }
        }
    }
}
