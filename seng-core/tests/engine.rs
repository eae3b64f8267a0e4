// SPDX-License-Identifier: GPL-2.0-only
//! The request engine against a plain model: a HashMap table plus the set of addresses whose
//! connections must end. Random request sequences, and the same sequences with the Nth
//! allocation failing for every N they reach.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ptr::NonNull;
use std::rc::Rc;
use std::alloc::Layout;

use proptest::prelude::*;
use seng_core::engine::{Ending, Engine, Services};
use seng_core::genl::{attr, cmd, errno, AttrWriter, Request};
use seng_core::table::{Platform, StdPlatform, MAX_CATEGORIES_PER_APP};
use seng_core::{Category, Measurement};

/// The system allocator, failing the allocation numbered `fail_at` (counting from 1).
#[derive(Clone, Default)]
struct Faulty {
    count: Rc<Cell<u64>>,
    fail_at: Rc<Cell<u64>>,
}

// SAFETY: forwards to StdPlatform, which frees at once; the tests have no concurrent readers.
unsafe impl Platform for Faulty {
    fn alloc(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.count.set(self.count.get() + 1);
        if self.count.get() == self.fail_at.get() {
            return None;
        }
        StdPlatform.alloc(layout)
    }
    unsafe fn retire(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { StdPlatform.retire(ptr, layout) }
    }
    unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { StdPlatform.free(ptr, layout) }
    }
}

/// Records whose connections end, over the addresses the tests use, and the grace periods.
#[derive(Default)]
struct Recorder {
    ended: BTreeSet<IpAddr>,
    graces: usize,
}

impl Services for Recorder {
    fn seed(&mut self) -> u64 {
        7
    }
    fn grace_period(&mut self) {
        self.graces += 1;
    }
    fn end_connections<P: Platform>(&mut self, ending: &Ending<'_, P>) {
        assert!(self.graces > 0, "connections end only after a grace period");
        self.ended.extend(universe().filter(|ip| ending.contains(ip)));
    }
}

fn addr(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
}

fn universe() -> impl Iterator<Item = IpAddr> {
    (0..8).map(addr)
}

fn app(i: u8) -> Measurement {
    Measurement([i; 32])
}

fn cat(i: u8) -> Category {
    Category::new(format!("c{i}").as_bytes()).unwrap()
}

/// One request, in terms the model and the encoder share.
#[derive(Clone, Debug)]
enum Op {
    Set(Vec<(u8, u8, u8, Vec<u8>)>),
    Del(Vec<u8>),
    Flush,
    CatAdd(u8, Vec<u8>),
    CatDel(u8, Vec<u8>),
}

fn encode(op: &Op) -> (u8, Vec<u8>) {
    let mut buf = vec![0u8; 16384];
    let mut w = AttrWriter::new(&mut buf);
    let command = match op {
        Op::Set(nests) => {
            for (ip, a, h, cs) in nests {
                let cats: Vec<Category> = cs.iter().map(|c| cat(*c)).collect();
                w.put_enclave(&addr(*ip), Some(&app(*a)), Some(&addr(100 + h)), &cats).unwrap();
            }
            cmd::ENCLAVE_SET
        }
        Op::Del(ips) => {
            for ip in ips {
                w.put_enclave(&addr(*ip), None, None, &[]).unwrap();
            }
            cmd::ENCLAVE_DEL
        }
        Op::Flush => cmd::FLUSH,
        Op::CatAdd(a, cs) | Op::CatDel(a, cs) => {
            w.put(attr::APP, &app(*a).0).unwrap();
            for c in cs {
                w.put_category(attr::CAT, &cat(*c)).unwrap();
            }
            if matches!(op, Op::CatAdd(..)) {
                cmd::CAT_ADD
            } else {
                cmd::CAT_DEL
            }
        }
    };
    let len = w.len();
    buf.truncate(len);
    (command, buf)
}

/// The plain model: address → (app, host); app → categories (an app exists with its enclaves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    enclaves: BTreeMap<IpAddr, (Measurement, IpAddr)>,
    apps: BTreeMap<Measurement, BTreeSet<Category>>,
}

impl Model {
    fn of_app(&self, a: &Measurement) -> BTreeSet<IpAddr> {
        self.enclaves.iter().filter(|(_, (x, _))| x == a).map(|(ip, _)| *ip).collect()
    }

    fn prune(&mut self) {
        let used: BTreeSet<Measurement> = self.enclaves.values().map(|(a, _)| *a).collect();
        self.apps.retain(|a, _| used.contains(a));
    }

    /// Applies `op`: `Err(errno)` and no change if refused, else the addresses whose connections
    /// end.
    fn apply(&mut self, op: &Op) -> Result<BTreeSet<IpAddr>, i32> {
        let mut next = self.clone();
        let mut ended = BTreeSet::new();
        match op {
            Op::Set(nests) => {
                let mut grown = BTreeSet::new();
                for (ip, a, h, cs) in nests {
                    let (ip, a, h) = (addr(*ip), app(*a), addr(100 + h));
                    if let Some(old) = next.enclaves.insert(ip, (a, h)) {
                        if old != (a, h) {
                            ended.insert(ip);
                        }
                    }
                    let existed = next.apps.contains_key(&a);
                    let set = next.apps.entry(a).or_default();
                    let before = set.len();
                    set.extend(cs.iter().map(|c| cat(*c)));
                    if set.len() > MAX_CATEGORIES_PER_APP {
                        return Err(errno::ENOSPC);
                    }
                    if existed && set.len() != before {
                        grown.insert(a);
                    }
                    next.prune();
                }
                for a in grown {
                    ended.extend(next.of_app(&a));
                }
            }
            Op::Del(ips) => {
                for ip in ips {
                    if !self.enclaves.contains_key(&addr(*ip)) {
                        return Err(errno::ENOENT);
                    }
                    next.enclaves.remove(&addr(*ip));
                    ended.insert(addr(*ip));
                }
                next.prune();
            }
            Op::Flush => {
                ended.extend(next.enclaves.keys());
                next = Model::default();
            }
            Op::CatAdd(a, cs) | Op::CatDel(a, cs) => {
                let a = app(*a);
                let set = next.apps.get_mut(&a).ok_or(errno::ENOENT)?;
                let before = set.clone();
                for c in cs.iter().map(|c| cat(*c)) {
                    if matches!(op, Op::CatAdd(..)) {
                        set.insert(c);
                    } else if !before.contains(&c) {
                        return Err(errno::ENOENT);
                    } else {
                        set.remove(&c);
                    }
                }
                if set.len() > MAX_CATEGORIES_PER_APP {
                    return Err(errno::ENOSPC);
                }
                if *set != before {
                    ended.extend(next.of_app(&a));
                }
            }
        }
        *self = next;
        Ok(ended)
    }
}

fn contents<P: Platform + Clone>(engine: &Engine<P>) -> Model {
    let table = engine.live();
    let mut m = Model::default();
    for e in table.enclaves_from(0) {
        m.enclaves.insert(e.addr(), (*e.app(), e.host()));
        m.apps.insert(*e.app(), e.categories().iter().copied().collect());
    }
    m
}

/// Runs `ops` on an engine and the model side by side, checking each step; returns the
/// allocations the run made. With an allocation failing, a request the engine refuses with
/// ENOMEM must leave the table as it was.
fn run(ops: &[Op], fail_at: u64) -> u64 {
    let platform = Faulty::default();
    platform.fail_at.set(fail_at);
    let Ok(engine) = Engine::new(platform.clone(), 64, 1) else {
        return platform.count.get();
    };
    let mut model = Model::default();
    for op in ops {
        let (command, payload) = encode(op);
        let request = Request::parse(command, &payload).expect("the encoder writes valid requests");
        let mut services = Recorder::default();
        let generation = engine.generation();
        // SAFETY: single-threaded; the platform frees at once with no concurrent readers.
        let result = unsafe { engine.execute(&mut services, request, 1, None) };
        let before = model.clone();
        match (result, model.apply(op)) {
            (Ok(_), Ok(ended)) => {
                assert_eq!(services.ended, ended, "connections ended by {op:?}");
                if contents(&engine) != before {
                    assert_ne!(engine.generation(), generation, "{op:?} changed the table without a generation step");
                }
            }
            (Err(refusal), Err(expected)) => {
                assert_eq!(refusal.error.errno, expected, "refusal of {op:?}");
                assert_eq!(engine.generation(), generation, "a refused {op:?} steps no generation");
                assert!(services.ended.is_empty());
            }
            (Err(refusal), Ok(_)) if refusal.error.errno == errno::ENOMEM => {
                assert!(fail_at > 0, "ENOMEM without an injected failure");
                model = before;
            }
            (engine_said, model_said) => panic!("{op:?}: engine {engine_said:?}, model {model_said:?}"),
        }
        assert_eq!(contents(&engine), model, "table after {op:?}");
    }
    platform.count.get()
}

fn op() -> impl Strategy<Value = Op> {
    let ip = 0u8..8;
    let cats = proptest::collection::vec(0u8..40, 0..4);
    prop_oneof![
        4 => proptest::collection::vec((ip.clone(), 0u8..3, 0u8..2, cats.clone()), 1..5).prop_map(Op::Set),
        2 => proptest::collection::vec(ip, 1..3).prop_map(Op::Del),
        1 => Just(Op::Flush),
        2 => (0u8..3, proptest::collection::vec(0u8..40, 1..4)).prop_map(|(a, c)| Op::CatAdd(a, c)),
        2 => (0u8..3, proptest::collection::vec(0u8..6, 1..3)).prop_map(|(a, c)| Op::CatDel(a, c)),
    ]
}

proptest! {
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        run(&ops, 0);
    }

    #[test]
    fn every_allocation_failure_leaves_the_model(ops in proptest::collection::vec(op(), 1..12)) {
        let total = run(&ops, 0);
        for n in 1..=total {
            run(&ops, n);
        }
    }
}

#[test]
fn a_category_change_ends_the_apps_connections() {
    let ops = [Op::Set(vec![(1, 0, 0, vec![1]), (2, 0, 1, vec![]), (3, 1, 0, vec![])]), Op::CatDel(0, vec![1]), Op::CatAdd(1, vec![2])];
    run(&ops, 0);
    let mut model = Model::default();
    model.apply(&ops[0]).unwrap();
    assert_eq!(model.apply(&ops[1]).unwrap(), [addr(1), addr(2)].into());
    assert_eq!(model.apply(&ops[2]).unwrap(), [addr(3)].into());
}

#[test]
fn restating_ends_nothing() {
    let set = Op::Set(vec![(1, 0, 0, vec![1]), (2, 0, 1, vec![1])]);
    run(&[set.clone(), set, Op::CatAdd(0, vec![1])], 0);
}

#[test]
fn a_failing_multi_nest_request_changes_nothing() {
    let mut too_many = vec![(1, 0, 0, vec![40])];
    too_many.push((2, 0, 0, (0..MAX_CATEGORIES_PER_APP as u8).collect()));
    let (command, payload) = encode(&Op::Set(too_many));
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    let mut services = Recorder::default();
    // SAFETY: single-threaded.
    let refusal = unsafe { engine.execute(&mut services, Request::parse(command, &payload).unwrap(), 1, None) }.unwrap_err();
    assert_eq!(refusal.error.errno, errno::ENOSPC);
    assert!(refusal.at.is_some_and(|at| at > 0), "the second nest is blamed");
    assert_eq!(engine.generation(), 0);
    assert!(engine.live().is_empty());
}

#[test]
fn closing_a_socket_needs_the_lock_only_for_its_transaction() {
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    let mut services = Recorder::default();
    assert!(!engine.may_own_transaction(5));
    // SAFETY: single-threaded.
    unsafe { engine.execute(&mut services, Request::ReplaceBegin, 5, None) }.unwrap();
    assert!(engine.may_own_transaction(5) && !engine.may_own_transaction(6));
    // SAFETY: single-threaded.
    unsafe { engine.release(5) };
    assert!(!engine.may_own_transaction(5));
}

#[test]
fn dump_stamps_change_with_every_change_and_are_never_zero() {
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    let mut services = Recorder::default();
    let before = engine.dump_stamp();
    assert_ne!(before, 0);
    let (command, payload) = encode(&Op::Set(vec![(1, 0, 0, vec![1])]));
    // SAFETY: single-threaded.
    unsafe { engine.execute(&mut services, Request::parse(command, &payload).unwrap(), 1, None) }.unwrap();
    assert_eq!(engine.generation(), 1);
    assert_ne!(engine.dump_stamp(), before);
    assert_eq!(engine.dump_stamp(), engine.dump_stamp(), "no change under way: parts agree");
}
