// SPDX-License-Identifier: GPL-2.0-only
//! The request engine against a plain model: a map of entries, each with its origin, plus the
//! set of addresses whose connections must end, and a replace transaction's staging table with
//! the origins it replaces. Random request sequences from three origins (the local one and two
//! gateways), through the explicit commands, the original command 1 and replace transactions,
//! and the same sequences with the Nth allocation failing for every N they reach.

use std::alloc::Layout;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ptr::NonNull;
use std::rc::Rc;

use proptest::prelude::*;
use seng_core::engine::{Ending, Engine, Handled, Refusal, Services};
use seng_core::genl::{attr, cmd, errno, AttrWriter, ReadScope, Request, Scoped};
use seng_core::table::{Platform, StdPlatform, MAX_CATEGORIES_PER_APP};
use seng_core::{Category, GatewayName, Measurement, Origin};

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

/// Origin 0 is the local one, 1 and 2 are gateways.
fn origin(o: u8) -> Origin {
    match o {
        0 => Origin::Local,
        o => Origin::Gateway(GatewayName::new(format!("gw-{o}").as_bytes()).unwrap()),
    }
}

/// One nest of a registration: address, application, host, categories.
type Nest = (u8, u8, u8, Vec<u8>);

/// One request, in terms the model and the encoder share; the first field is the origin.
#[derive(Clone, Debug)]
enum Op {
    Set(u8, Vec<Nest>),
    Del(u8, Vec<u8>),
    Flush(u8),
    CatAdd(u8, u8, Vec<u8>),
    CatDel(u8, u8, Vec<u8>),
    /// Command 1: register one IPv4 enclave with at most one category.
    LegacySet(u8, u8, u8, Option<u8>),
    LegacyDel(u8),
    LegacyFlush,
    Begin(u8),
    StagedSet(u8, Vec<Nest>),
    StagedDel(u8, Vec<u8>),
    Commit,
    Abort,
}

fn encode(op: &Op) -> (u8, Vec<u8>) {
    let mut buf = vec![0u8; 16384];
    let mut w = AttrWriter::new(&mut buf);
    let nests = |w: &mut AttrWriter<'_>, nests: &[Nest]| {
        for (ip, a, h, cs) in nests {
            let cats: Vec<Category> = cs.iter().map(|c| cat(*c)).collect();
            w.put_enclave(&addr(*ip), Some(&app(*a)), Some(&addr(100 + h)), &cats).unwrap();
        }
    };
    let deletions = |w: &mut AttrWriter<'_>, ips: &[u8]| ips.iter().for_each(|ip| w.put_enclave(&addr(*ip), None, None, &[]).unwrap());
    let command = match op {
        Op::Set(o, list) | Op::StagedSet(o, list) => {
            w.put_scope(&origin(*o)).unwrap();
            nests(&mut w, list);
            if matches!(op, Op::Set(..)) {
                cmd::ENCLAVE_SET
            } else {
                cmd::REPLACE_ADD
            }
        }
        Op::Del(o, ips) | Op::StagedDel(o, ips) => {
            w.put_scope(&origin(*o)).unwrap();
            deletions(&mut w, ips);
            if matches!(op, Op::Del(..)) {
                cmd::ENCLAVE_DEL
            } else {
                cmd::REPLACE_DEL
            }
        }
        Op::Flush(o) | Op::Begin(o) => {
            w.put_scope(&origin(*o)).unwrap();
            if matches!(op, Op::Flush(..)) {
                cmd::FLUSH
            } else {
                cmd::REPLACE_BEGIN
            }
        }
        Op::CatAdd(o, a, cs) | Op::CatDel(o, a, cs) => {
            w.put_scope(&origin(*o)).unwrap();
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
        Op::LegacySet(ip, a, h, c) => {
            let legacy = seng_core::genl::LegacyOp::Register {
                addr: Ipv4Addr::new(10, 0, 0, *ip),
                app: app(*a),
                host: Ipv4Addr::new(10, 0, 0, 100 + h),
                category: c.map(cat),
            };
            legacy.emit(&mut w).unwrap();
            cmd::LEGACY
        }
        Op::LegacyDel(ip) => {
            seng_core::genl::LegacyOp::Unregister { addr: Ipv4Addr::new(10, 0, 0, *ip) }.emit(&mut w).unwrap();
            cmd::LEGACY
        }
        Op::LegacyFlush => {
            seng_core::genl::LegacyOp::Flush.emit(&mut w).unwrap();
            cmd::LEGACY
        }
        Op::Commit => cmd::REPLACE_COMMIT,
        Op::Abort => cmd::REPLACE_ABORT,
    };
    let len = w.len();
    buf.truncate(len);
    (command, buf)
}

/// The plain model of one table: address → (origin, app, host); (origin, app) → categories (an
/// application exists with its enclaves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Table {
    enclaves: BTreeMap<IpAddr, (u8, Measurement, IpAddr)>,
    apps: BTreeMap<(u8, Measurement), BTreeSet<Category>>,
}

impl Table {
    fn of_app(&self, o: u8, a: &Measurement) -> BTreeSet<IpAddr> {
        self.enclaves.iter().filter(|(_, (x, y, _))| (*x, y) == (o, a)).map(|(ip, _)| *ip).collect()
    }

    fn prune(&mut self) {
        let used: BTreeSet<(u8, Measurement)> = self.enclaves.values().map(|(o, a, _)| (*o, *a)).collect();
        self.apps.retain(|k, _| used.contains(k));
    }

    /// What the entry at `ip` looks like to a rule, and whose it is.
    fn entry(&self, ip: &IpAddr) -> Option<(u8, Measurement, IpAddr, &BTreeSet<Category>)> {
        self.enclaves.get(ip).map(|(o, a, h)| (*o, *a, *h, &self.apps[&(*o, *a)]))
    }

    /// The refusal of an `o` entry replacing the entry at `ip`: a gateway's never replaces
    /// another origin's.
    fn conflict(&self, o: u8, ip: &IpAddr) -> Result<(), i32> {
        match self.enclaves.get(ip) {
            Some((held, _, _)) if *held != o && o != 0 => Err(errno::EEXIST),
            _ => Ok(()),
        }
    }

    /// Registers `nests` for `o` in order, as ENCLAVE_SET does, into `ended`.
    fn register(&mut self, o: u8, nests: &[Nest], ended: &mut BTreeSet<IpAddr>) -> Result<(), i32> {
        for (ip, ..) in nests {
            self.conflict(o, &addr(*ip))?;
        }
        let mut grown = BTreeSet::new();
        for (ip, a, h, cs) in nests {
            let (ip, a, h) = (addr(*ip), app(*a), addr(100 + h));
            if let Some(old) = self.enclaves.insert(ip, (o, a, h)) {
                if old != (o, a, h) {
                    ended.insert(ip);
                }
            }
            let existed = self.apps.contains_key(&(o, a));
            let set = self.apps.entry((o, a)).or_default();
            let before = set.len();
            set.extend(cs.iter().map(|c| cat(*c)));
            if set.len() > MAX_CATEGORIES_PER_APP {
                return Err(errno::ENOSPC);
            }
            if existed && set.len() != before {
                grown.insert((o, a));
            }
            self.prune();
        }
        for (o, a) in grown {
            ended.extend(self.of_app(o, &a));
        }
        Ok(())
    }

    /// Unregisters `ips`, which must be `o`'s entries.
    fn unregister(&mut self, o: u8, ips: &[u8], ended: &mut BTreeSet<IpAddr>) -> Result<(), i32> {
        if ips.iter().any(|ip| self.enclaves.get(&addr(*ip)).is_none_or(|(held, _, _)| *held != o)) {
            return Err(errno::ENOENT);
        }
        for ip in ips {
            self.enclaves.remove(&addr(*ip));
            ended.insert(addr(*ip));
        }
        self.prune();
        Ok(())
    }

    fn flush(&mut self, o: u8, ended: &mut BTreeSet<IpAddr>) {
        self.enclaves.retain(|ip, (held, _, _)| {
            let goes = *held == o;
            if goes {
                ended.insert(*ip);
            }
            !goes
        });
        self.prune();
    }
}

/// A replace transaction: the staging table and the origins it replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Transaction {
    staged: Table,
    scope: BTreeSet<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    live: Table,
    transaction: Option<Transaction>,
}

impl Model {
    fn staged(&mut self) -> Result<&mut Transaction, i32> {
        self.transaction.as_mut().ok_or(errno::ENOENT)
    }

    /// Applies `op`: `Err(errno)` and no change if refused (a staged request may have changed
    /// part of the staging table: the client aborts then), else the addresses whose
    /// connections end.
    fn apply(&mut self, op: &Op) -> Result<BTreeSet<IpAddr>, i32> {
        let mut next = self.clone();
        let mut ended = BTreeSet::new();
        match op {
            Op::Set(o, nests) => next.live.register(*o, nests, &mut ended)?,
            Op::Del(o, ips) => next.live.unregister(*o, ips, &mut ended)?,
            Op::Flush(o) => next.live.flush(*o, &mut ended),
            Op::LegacyFlush => next.live.flush(0, &mut ended),
            Op::CatAdd(o, a, cs) | Op::CatDel(o, a, cs) => {
                let a = app(*a);
                let set = next.live.apps.get_mut(&(*o, a)).ok_or(errno::ENOENT)?;
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
                    ended.extend(next.live.of_app(*o, &a));
                }
            }
            Op::LegacySet(ip, a, h, c) => next.live.register(0, &[(*ip, *a, *h, c.iter().copied().collect())], &mut ended)?,
            // Command 1 leaves what is not a local enclave alone, and says nothing.
            Op::LegacyDel(ip) => {
                if next.live.enclaves.get(&addr(*ip)).is_some_and(|(held, _, _)| *held == 0) {
                    next.live.unregister(0, &[*ip], &mut ended)?;
                }
            }
            Op::Begin(o) => match &mut next.transaction {
                Some(t) => {
                    t.staged.flush(*o, &mut BTreeSet::new());
                    t.scope.insert(*o);
                }
                None => next.transaction = Some(Transaction { staged: Table::default(), scope: [*o].into() }),
            },
            Op::StagedSet(o, nests) => {
                let t = next.staged()?;
                t.scope.insert(*o);
                // Nest by nest: a refused one leaves the earlier ones staged.
                for nest in nests {
                    t.staged.register(*o, std::slice::from_ref(nest), &mut BTreeSet::new())?;
                }
            }
            Op::StagedDel(o, ips) => next.staged()?.staged.unregister(*o, ips, &mut BTreeSet::new())?,
            Op::Commit => {
                let t = next.transaction.take().ok_or(errno::ENOENT)?;
                let old = &next.live;
                for (ip, (o, ..)) in &t.staged.enclaves {
                    if old.enclaves.get(ip).is_some_and(|(held, _, _)| !t.scope.contains(held)) {
                        old.conflict(*o, ip)?;
                    }
                }
                let mut new = old.clone();
                new.enclaves.retain(|ip, (held, _, _)| !t.scope.contains(held) && !t.staged.enclaves.contains_key(ip));
                new.apps.retain(|(held, _), _| !t.scope.contains(held));
                new.enclaves.extend(t.staged.enclaves.clone());
                new.apps.extend(t.staged.apps.clone());
                new.prune();
                for ip in old.enclaves.keys() {
                    let replaced = t.scope.contains(&old.enclaves[ip].0) || t.staged.enclaves.contains_key(ip);
                    if replaced && old.entry(ip) != new.entry(ip) {
                        ended.insert(*ip);
                    }
                }
                next.live = new;
            }
            Op::Abort => {
                next.transaction.take().ok_or(errno::ENOENT)?;
            }
        }
        *self = next;
        Ok(ended)
    }

    /// The gateways the engine must still have names for.
    fn named_gateways(&self) -> BTreeSet<u8> {
        let mut named: BTreeSet<u8> = self.live.enclaves.values().map(|(o, _, _)| *o).collect();
        if let Some(t) = &self.transaction {
            named.extend(t.staged.enclaves.values().map(|(o, _, _)| *o));
            named.extend(&t.scope);
        }
        named.remove(&0);
        named
    }
}

fn contents<P: Platform + Clone>(engine: &Engine<P>) -> Table {
    let table = engine.live();
    let mut m = Table::default();
    let number = |o: Origin| (0..3).find(|i| origin(*i) == o).expect("an origin of the test");
    for e in table.enclaves_from(0) {
        let o = number(engine.origins().origin(e.origin()));
        m.enclaves.insert(e.addr(), (o, *e.app(), e.host()));
        m.apps.insert((o, *e.app()), e.categories().iter().copied().collect());
    }
    m
}

/// Executes the request `op` encodes, from port 1.
fn execute<P: Platform + Clone>(engine: &Engine<P>, services: &mut Recorder, op: &Op) -> Result<Handled, Refusal> {
    let (command, payload) = encode(op);
    let request = Scoped::parse(command, &payload).expect("the encoder writes valid requests");
    // SAFETY: single-threaded; the platform frees at once with no concurrent readers.
    unsafe { engine.execute(services, request, 1, None) }
}

/// Runs `ops` on an engine and the model side by side, checking each step; returns the
/// allocations the run made. With an allocation failing, a request the engine refuses with
/// ENOMEM must leave the table as it was. A refused staged request aborts the transaction, as
/// clients do.
fn run(ops: &[Op], fail_at: u64) -> u64 {
    let platform = Faulty::default();
    platform.fail_at.set(fail_at);
    let Ok(engine) = Engine::new(platform.clone(), 64, 1) else {
        return platform.count.get();
    };
    let mut model = Model::default();
    for op in ops {
        let mut services = Recorder::default();
        let generation = engine.generation();
        let result = execute(&engine, &mut services, op);
        let before = model.clone();
        let refused = result.is_err();
        match (result, model.apply(op)) {
            (Ok(_), Ok(ended)) => {
                assert_eq!(services.ended, ended, "connections ended by {op:?}");
                if contents(&engine) != before.live {
                    assert_ne!(engine.generation(), generation, "{op:?} changed the table without a generation step");
                }
            }
            // A failed allocation may come before whatever else the request would be refused for.
            (Err(refusal), _) if refusal.error.errno == errno::ENOMEM => {
                assert!(fail_at > 0, "ENOMEM without an injected failure");
                model = before;
            }
            (Err(refusal), Err(expected)) => {
                assert_eq!(refusal.error.errno, expected, "refusal of {op:?}");
                assert_eq!(engine.generation(), generation, "a refused {op:?} steps no generation");
                assert!(services.ended.is_empty());
            }
            (engine_said, model_said) => panic!("{op:?}: engine {engine_said:?}, model {model_said:?}"),
        }
        if refused && matches!(op, Op::StagedSet(..) | Op::StagedDel(..)) && model.transaction.is_some() {
            execute(&engine, &mut Recorder::default(), &Op::Abort).expect("the transaction is open");
            model.transaction = None;
        }
        assert_eq!(contents(&engine), model.live, "table after {op:?}");
        let named: BTreeSet<u8> = engine.origins().ids().map(|id| (1..3).find(|i| engine.origins().origin(id) == origin(*i)).unwrap()).collect();
        assert_eq!(named, model.named_gateways(), "gateway names held after {op:?}");
    }
    platform.count.get()
}

fn nests() -> impl Strategy<Value = Vec<Nest>> {
    proptest::collection::vec((0u8..8, 0u8..3, 0u8..2, proptest::collection::vec(0u8..40, 0..4)), 1..5)
}

fn op() -> impl Strategy<Value = Op> {
    let ip = 0u8..8;
    let o = 0u8..3;
    prop_oneof![
        4 => (o.clone(), nests()).prop_map(|(o, n)| Op::Set(o, n)),
        2 => (o.clone(), proptest::collection::vec(ip.clone(), 1..3)).prop_map(|(o, ips)| Op::Del(o, ips)),
        1 => o.clone().prop_map(Op::Flush),
        2 => (o.clone(), 0u8..3, proptest::collection::vec(0u8..40, 1..4)).prop_map(|(o, a, c)| Op::CatAdd(o, a, c)),
        1 => (o.clone(), 0u8..3, proptest::collection::vec(0u8..6, 1..3)).prop_map(|(o, a, c)| Op::CatDel(o, a, c)),
        1 => (ip.clone(), 0u8..3, 0u8..2, proptest::option::of(0u8..6)).prop_map(|(ip, a, h, c)| Op::LegacySet(ip, a, h, c)),
        1 => ip.clone().prop_map(Op::LegacyDel),
        1 => Just(Op::LegacyFlush),
        1 => o.clone().prop_map(Op::Begin),
        2 => (o.clone(), nests()).prop_map(|(o, n)| Op::StagedSet(o, n)),
        1 => (o, proptest::collection::vec(ip, 1..3)).prop_map(|(o, ips)| Op::StagedDel(o, ips)),
        1 => Just(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..30)) {
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

/// An engine that has executed `ops`, each of which must succeed.
fn engine_after(ops: &[Op]) -> Engine<StdPlatform> {
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    for op in ops {
        execute(&engine, &mut Recorder::default(), op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    engine
}

/// What `op` ends on `engine`, or its refusal's errno and message.
fn outcome(engine: &Engine<StdPlatform>, op: &Op) -> Result<BTreeSet<IpAddr>, (i32, String)> {
    let mut services = Recorder::default();
    execute(engine, &mut services, op).map(|_| services.ended).map_err(|r| (r.error.errno, r.error.msg.to_str().unwrap().to_string()))
}

fn who(engine: &Engine<StdPlatform>, ip: u8) -> Option<Origin> {
    engine.live().lookup(&addr(ip)).map(|e| engine.origins().origin(e.origin()))
}

#[test]
fn a_gateway_never_replaces_another_origins_entry() {
    let engine = engine_after(&[Op::Set(0, vec![(1, 0, 0, vec![])]), Op::Set(1, vec![(2, 0, 0, vec![])])]);
    let refused = |o, ip| outcome(&engine, &Op::Set(o, vec![(3, 0, 0, vec![]), (ip, 1, 1, vec![])])).unwrap_err();
    assert_eq!(refused(1, 1), (errno::EEXIST, "the address is a local enclave: a gateway's entry never replaces the local SENG server's".into()));
    assert_eq!(refused(2, 2).0, errno::EEXIST);
    assert!(refused(2, 2).1.contains("another gateway's enclave"));
    assert_eq!(who(&engine, 3), None, "a refused batch registers none of its nests");
    // A local registration takes the gateway's address, ending its connections.
    assert_eq!(outcome(&engine, &Op::Set(0, vec![(2, 0, 0, vec![])])), Ok([addr(2)].into()));
    assert_eq!(who(&engine, 2), Some(Origin::Local));
    assert_eq!(engine.origins().ids().count(), 0, "gw-1 has no entry left: its name is forgotten");
    // Command 1 too.
    execute(&engine, &mut Recorder::default(), &Op::Set(1, vec![(4, 0, 0, vec![])])).unwrap();
    assert_eq!(outcome(&engine, &Op::LegacySet(4, 0, 0, None)), Ok([addr(4)].into()));
    assert_eq!(who(&engine, 4), Some(Origin::Local));
}

#[test]
fn flushes_and_unregistrations_are_scoped_to_their_origin() {
    let engine = engine_after(&[Op::Set(0, vec![(1, 0, 0, vec![]), (2, 0, 0, vec![])]), Op::Set(1, vec![(3, 0, 0, vec![]), (4, 1, 0, vec![])]), Op::Set(2, vec![(5, 0, 0, vec![])])]);
    // The original's flush_module, and a FLUSH without ORIGIN: the local entries only.
    assert_eq!(outcome(&engine, &Op::LegacyFlush), Ok([addr(1), addr(2)].into()));
    assert_eq!((who(&engine, 3), who(&engine, 5)), (Some(origin(1)), Some(origin(2))));
    assert_eq!(outcome(&engine, &Op::Flush(0)), Ok(BTreeSet::new()));
    // Command 1 leaves a gateway's entry alone and succeeds, as for an unknown address.
    assert_eq!(outcome(&engine, &Op::LegacyDel(3)), Ok(BTreeSet::new()));
    assert_eq!(outcome(&engine, &Op::Del(0, vec![3])), Err((errno::ENOENT, "the address is another origin's enclave".into())));
    assert_eq!(outcome(&engine, &Op::Del(2, vec![3])).unwrap_err().0, errno::ENOENT);
    assert_eq!(outcome(&engine, &Op::Flush(1)), Ok([addr(3), addr(4)].into()));
    assert_eq!(who(&engine, 5), Some(origin(2)));
    assert_eq!(engine.origins().ids().map(|id| engine.origins().origin(id)).collect::<Vec<_>>(), [origin(2)]);
}

#[test]
fn each_origin_gives_its_applications_their_own_categories() {
    let engine = engine_after(&[Op::Set(0, vec![(1, 0, 0, vec![1])]), Op::Set(1, vec![(2, 0, 0, vec![2])])]);
    let categories = |ip| engine.live().lookup(&addr(ip)).unwrap().categories().to_vec();
    assert_eq!((categories(1), categories(2)), (vec![cat(1)], vec![cat(2)]));
    // Attaching to the local application ends the local enclave's connections only.
    assert_eq!(outcome(&engine, &Op::CatAdd(0, 0, vec![3])), Ok([addr(1)].into()));
    assert_eq!(categories(2), [cat(2)]);
    assert_eq!(outcome(&engine, &Op::CatDel(2, 0, vec![2])).unwrap_err().0, errno::ENOENT, "gw-2 has no such application");
    assert_eq!(engine.live().stats().apps, 2);
}

#[test]
fn a_replace_transaction_replaces_the_parts_of_its_origins_only() {
    let engine = engine_after(&[Op::Set(0, vec![(1, 0, 0, vec![])]), Op::Set(1, vec![(2, 0, 0, vec![]), (3, 0, 0, vec![])]), Op::Set(2, vec![(4, 0, 0, vec![])])]);
    let live = engine.live() as *const _;
    // gw-1's part becomes {3 as before, 5}: 2 goes.
    for op in [Op::Begin(1), Op::StagedSet(1, vec![(3, 0, 0, vec![]), (5, 1, 1, vec![])])] {
        execute(&engine, &mut Recorder::default(), &op).unwrap();
    }
    assert_eq!(outcome(&engine, &Op::Commit), Ok([addr(2)].into()));
    assert_eq!((1..=5).map(|ip| who(&engine, ip)).collect::<Vec<_>>(), [Some(origin(0)), None, Some(origin(1)), Some(origin(2)), Some(origin(1))]);
    assert!(std::ptr::eq(live, engine.live()), "the other origins' entries stay in the live table");
    // A transaction naming every origin of the table swaps in a new table.
    for op in [Op::Begin(0), Op::StagedSet(2, vec![(6, 0, 0, vec![])]), Op::Begin(1)] {
        execute(&engine, &mut Recorder::default(), &op).unwrap();
    }
    assert_eq!(outcome(&engine, &Op::Commit), Ok([addr(1), addr(3), addr(4), addr(5)].into()));
    assert!(!std::ptr::eq(live, engine.live()));
    assert_eq!(contents(&engine).enclaves.keys().copied().collect::<Vec<_>>(), [addr(6)]);
}

#[test]
fn a_commit_keeps_a_local_entry_that_came_meanwhile() {
    let engine = engine_after(&[Op::Begin(1), Op::StagedSet(1, vec![(1, 0, 0, vec![]), (2, 0, 0, vec![])])]);
    execute(&engine, &mut Recorder::default(), &Op::Set(0, vec![(2, 1, 1, vec![])])).unwrap();
    let generation = engine.generation();
    assert_eq!(outcome(&engine, &Op::Commit).unwrap_err().0, errno::EEXIST);
    assert_eq!(engine.generation(), generation);
    assert!(engine.may_own_transaction(1), "a refused commit leaves the transaction open");
    // The client starts over without the address.
    for op in [Op::Begin(1), Op::StagedSet(1, vec![(1, 0, 0, vec![])]), Op::Commit] {
        execute(&engine, &mut Recorder::default(), &op).unwrap();
    }
    assert_eq!((who(&engine, 1), who(&engine, 2)), (Some(origin(1)), Some(Origin::Local)));
}

#[test]
fn reads_see_the_local_part_unless_they_name_another() {
    let engine = engine_after(&[Op::Set(0, vec![(1, 0, 0, vec![])]), Op::Set(1, vec![(2, 0, 0, vec![1])])]);
    let get = |ip: u8, scope: ReadScope| {
        let mut payload = vec![0u8; 64];
        let mut w = AttrWriter::new(&mut payload);
        scope.emit(&mut w).unwrap();
        w.put_addr(attr::ADDR, &addr(ip)).unwrap();
        let len = w.len();
        let request = Scoped::local(Request::parse(cmd::GET, &payload[..len]).unwrap());
        let mut reply = [0u8; 256];
        // SAFETY: single-threaded.
        let handled = unsafe { engine.execute(&mut Recorder::default(), request, 1, Some(&mut reply)) }.map_err(|r| r.error.errno)?;
        let (origin, spec) = seng_core::genl::parse_entry(&reply[4..handled.reply_len]).unwrap();
        Ok((origin, spec.addr))
    };
    assert_eq!(get(1, ReadScope::default()), Ok((Origin::Local, addr(1))));
    assert_eq!(get(2, ReadScope::default()), Err(errno::ENOENT), "a client that names no origin sees the local part");
    assert_eq!(get(2, ReadScope::Every), Ok((origin(1), addr(2))));
    assert_eq!(get(2, ReadScope::Origin(origin(1))), Ok((origin(1), addr(2))));
    assert_eq!(get(1, ReadScope::Origin(origin(2))), Err(errno::ENOENT));
    let dump = |scope: ReadScope| {
        let (mut cursor, mut buf) = (0, [0u8; 1024]);
        let len = engine.dump(&scope, &mut cursor, &mut buf).unwrap();
        let nests = seng_core::genl::Attrs::new(&buf[..len]).map(|a| seng_core::genl::parse_entry(a.unwrap().payload).map(|(o, s)| (o, s.addr)).unwrap());
        nests.collect::<BTreeSet<_>>()
    };
    assert_eq!(dump(ReadScope::default()), [(Origin::Local, addr(1))].into());
    assert_eq!(dump(ReadScope::Every), [(Origin::Local, addr(1)), (origin(1), addr(2))].into());
    assert_eq!(dump(ReadScope::Origin(origin(2))), BTreeSet::new());
}

#[test]
fn a_failing_multi_nest_request_changes_nothing() {
    let mut too_many = vec![(1, 0, 0, vec![40])];
    too_many.push((2, 0, 0, (0..MAX_CATEGORIES_PER_APP as u8).collect()));
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    let refusal = execute(&engine, &mut Recorder::default(), &Op::Set(1, too_many)).unwrap_err();
    assert_eq!(refusal.error.errno, errno::ENOSPC);
    // gw-1's ORIGIN takes 12 bytes, the first nest 64.
    assert_eq!(refusal.at, Some(12 + 64), "the second nest is blamed, counting from the payload's start");
    assert_eq!(engine.generation(), 0);
    assert!(engine.live().is_empty());
    assert_eq!(engine.origins().ids().count(), 0, "the gateway's name is not kept for nothing");
}

#[test]
fn a_category_change_ends_the_apps_connections() {
    let ops = [Op::Set(0, vec![(1, 0, 0, vec![1]), (2, 0, 1, vec![]), (3, 1, 0, vec![])]), Op::CatDel(0, 0, vec![1]), Op::CatAdd(0, 1, vec![2])];
    run(&ops, 0);
    let mut model = Model::default();
    model.apply(&ops[0]).unwrap();
    assert_eq!(model.apply(&ops[1]).unwrap(), [addr(1), addr(2)].into());
    assert_eq!(model.apply(&ops[2]).unwrap(), [addr(3)].into());
}

#[test]
fn restating_ends_nothing() {
    let set = Op::Set(2, vec![(1, 0, 0, vec![1]), (2, 0, 1, vec![1])]);
    run(&[set.clone(), set, Op::CatAdd(2, 0, vec![1])], 0);
}

#[test]
fn closing_a_socket_needs_the_lock_only_for_its_transaction() {
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    assert!(!engine.may_own_transaction(1));
    execute(&engine, &mut Recorder::default(), &Op::Begin(1)).unwrap();
    assert!(engine.may_own_transaction(1) && !engine.may_own_transaction(6));
    assert_eq!(engine.origins().ids().count(), 1, "an open transaction holds its gateway's name");
    // SAFETY: single-threaded.
    unsafe { engine.release(1) };
    assert!(!engine.may_own_transaction(1));
    assert_eq!(engine.origins().ids().count(), 0);
}

#[test]
fn dump_stamps_change_with_every_change_and_are_never_zero() {
    let engine = Engine::new(StdPlatform, 64, 1).unwrap();
    let before = engine.dump_stamp();
    assert_ne!(before, 0);
    execute(&engine, &mut Recorder::default(), &Op::Set(0, vec![(1, 0, 0, vec![1])])).unwrap();
    assert_eq!(engine.generation(), 1);
    assert_ne!(engine.dump_stamp(), before);
    assert_eq!(engine.dump_stamp(), engine.dump_stamp(), "no change under way: parts agree");
}
