// SPDX-License-Identifier: GPL-2.0-only
//! The encoder against the decoder the kernel runs: every operation, in every dialect that can
//! carry it and for every origin, reads back as itself; so do the entries of replies and the
//! scopes of reads.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use seng_core::genl::{cmd, parse_entry, AttrWriter, LegacyOp, ReadScope, Request, Scoped};
use seng_core::operation::{Dialect, EmitError, Operation, Registration};
use seng_core::{Category, GatewayName, Measurement, Origin};

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

fn measurement() -> impl Strategy<Value = Measurement> {
    any::<[u8; 32]>().prop_map(Measurement)
}

fn category() -> impl Strategy<Value = Category> {
    // Short names with non-ASCII letters, and names up to the longest (20 bytes).
    prop_oneof!["[ -~äö€]{1,6}", "[ -~]{1,20}"].prop_filter_map("category bytes", |s| Category::new(s.as_bytes()).ok())
}

fn categories(max: usize) -> impl Strategy<Value = Vec<Category>> {
    prop::collection::vec(category(), 1..max)
}

/// The local origin or a gateway, with names up to the longest (32 bytes).
fn origin() -> impl Strategy<Value = Origin> {
    let gateway = prop_oneof!["[a-z][a-z0-9-]{0,6}", "[A-Za-z0-9][A-Za-z0-9._-]{0,31}"].prop_filter_map("gateway name", |s| GatewayName::new(s.as_bytes()).ok());
    prop_oneof![Just(Origin::Local), gateway.prop_map(Origin::Gateway)]
}

/// A registration of `origin`; its categories are distinct, as the nest carries them.
fn registration(origin: Origin) -> impl Strategy<Value = Registration> {
    (addr(), measurement(), addr(), prop::collection::vec(category(), 0..5)).prop_map(move |(addr, app, host, mut categories)| {
        let mut seen = Vec::new();
        categories.retain(|c| !seen.contains(c) && {
            seen.push(*c);
            true
        });
        Registration { addr, app, host, categories, origin }
    })
}

fn operation() -> impl Strategy<Value = Operation> {
    origin().prop_flat_map(|origin| {
        prop_oneof![
            prop::collection::vec(registration(origin), 1..6).prop_map(Operation::Register),
            prop::collection::vec(addr(), 1..6).prop_map(move |addrs| Operation::Unregister { origin, addrs }),
            (measurement(), categories(6)).prop_map(move |(app, categories)| Operation::Attach { origin, app, categories }),
            (measurement(), categories(6)).prop_map(move |(app, categories)| Operation::Detach { origin, app, categories }),
            Just(Operation::Flush { origin }),
        ]
    })
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn legacy_op() -> impl Strategy<Value = LegacyOp> {
    prop_oneof![
        (ipv4(), measurement(), ipv4(), prop::option::of(category())).prop_map(|(addr, app, host, category)| LegacyOp::Register { addr, app, host, category }),
        ipv4().prop_map(|addr| LegacyOp::Unregister { addr }),
        (measurement(), category()).prop_map(|(app, category)| LegacyOp::Attach { app, category }),
        (measurement(), category()).prop_map(|(app, category)| LegacyOp::Detach { app, category }),
        Just(LegacyOp::Flush),
    ]
}

fn written(build: impl FnOnce(&mut AttrWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut w = AttrWriter::new(&mut buf);
    build(&mut w);
    let len = w.len();
    buf.truncate(len);
    buf
}

proptest! {
    #[test]
    fn operations_read_back_as_themselves(op in operation(), staged in any::<bool>()) {
        let dialect = if staged { Dialect::Staged } else { Dialect::Live };
        let (command, payload) = op.to_request(dialect).unwrap();
        prop_assert_eq!(command, op.command(dialect));
        prop_assert_eq!(Operation::parse(command, &payload), Ok((dialect, op)));
    }

    #[test]
    fn command_one_reads_back_as_itself(op in legacy_op()) {
        let payload = written(|w| op.emit(w).unwrap());
        prop_assert_eq!(LegacyOp::parse(&payload), Ok(op));
        let as_operation = Operation::from(op);
        prop_assert_eq!(Operation::parse(cmd::LEGACY, &payload), Ok((Dialect::Legacy, as_operation.clone())));
        // The operation written in the legacy dialect is the same request.
        prop_assert_eq!(as_operation.to_request(Dialect::Legacy), Ok((cmd::LEGACY, payload)));
    }

    #[test]
    fn what_command_one_cannot_say_is_refused(op in operation()) {
        match LegacyOp::try_from(&op) {
            Ok(legacy) => prop_assert_eq!(Operation::from(legacy), op),
            Err(e) => {
                prop_assert_eq!(e, EmitError::NotLegacy);
                prop_assert_eq!(op.to_request(Dialect::Legacy), Err(EmitError::NotLegacy));
            }
        }
    }

    #[test]
    fn reply_entries_read_back_with_their_origin(r in origin().prop_flat_map(registration)) {
        let nest = written(|w| w.put_entry(r.origin.gateway(), &r.addr, &r.app, &r.host, &r.categories).unwrap());
        // The nest's payload follows its 4-byte header.
        let (origin, spec) = parse_entry(&nest[4..]).unwrap();
        prop_assert_eq!(Registration::from_spec(&spec, origin), Some(r));
    }

    #[test]
    fn read_scopes_read_back(origin in origin(), every in any::<bool>()) {
        let scope = if every { ReadScope::Every } else { ReadScope::Origin(origin) };
        let payload = written(|w| scope.emit(w).unwrap());
        prop_assert_eq!(ReadScope::parse(&payload), Ok(scope));
        let get = written(|w| {
            scope.emit(w).unwrap();
            w.put_addr(seng_core::genl::attr::ADDR, &"10.0.0.1".parse().unwrap()).unwrap();
        });
        let Ok(Request::Get { scope: read, .. }) = Request::parse(cmd::GET, &get) else { panic!("GET refused") };
        prop_assert_eq!(read, scope);
    }
}

#[test]
fn the_original_byte_layout() {
    // ENC is the address as a network-order u32, the flag comes last.
    let op = Operation::Unregister { origin: Origin::Local, addrs: vec!["1.2.3.4".parse().unwrap()] };
    assert_eq!(op.to_request(Dialect::Legacy), Ok((cmd::LEGACY, vec![8, 0, 4, 0, 1, 2, 3, 4, 4, 0, 6, 0])));
}

#[test]
fn a_gateway_names_itself_first_and_command_one_cannot_carry_it() {
    let gw: Origin = "gw-b".parse().unwrap();
    let flush = Operation::Flush { origin: gw };
    // ORIGIN (16): "gw-b\0", padded to 8 bytes.
    assert_eq!(flush.to_request(Dialect::Live), Ok((cmd::FLUSH, vec![9, 0, 16, 0, b'g', b'w', b'-', b'b', 0, 0, 0, 0])));
    assert_eq!(Operation::FLUSH.to_request(Dialect::Live), Ok((cmd::FLUSH, vec![])));
    assert_eq!(flush.to_request(Dialect::Legacy), Err(EmitError::NotLegacy));
    let (command, mut payload) = Operation::Unregister { origin: gw, addrs: vec!["10.0.0.1".parse().unwrap()] }.to_request(Dialect::Live).unwrap();
    // Offsets the engine reports count from the start of the payload, ORIGIN included.
    assert_eq!(Scoped::parse(command, &payload).unwrap().base(), 12);
    payload.extend_from_slice(&[9, 0, 16, 0, b'g', b'w', b'-', b'b', 0, 0, 0, 0]);
    let refusal = Scoped::parse(command, &payload).unwrap_err();
    assert_eq!(refusal.at, Some(12 + 12), "an ORIGIN after the nests is blamed where it is");
    for (name, why) in [(&b"local\0"[..], "leave it out for the local origin"), (b"gw b\0", "ORIGIN must name a gateway"), (b"gw-b", "NUL-terminated")] {
        let mut payload = vec![(4 + name.len()) as u8, 0, 16, 0];
        payload.extend_from_slice(name);
        payload.resize(payload.len().next_multiple_of(4), 0);
        let refusal = Scoped::parse(cmd::FLUSH, &payload).unwrap_err();
        assert!(refusal.error.msg.to_str().unwrap().contains(why), "{name:?}: {refusal}");
    }
    let registrations = vec![
        Registration { addr: "10.0.0.1".parse().unwrap(), app: Measurement([1; 32]), host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: gw },
        Registration { addr: "10.0.0.2".parse().unwrap(), app: Measurement([1; 32]), host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: Origin::Local },
    ];
    assert_eq!(Operation::Register(registrations).to_request(Dialect::Live), Err(EmitError::MixedOrigins));
}

#[test]
fn a_registration_carries_each_category_once() {
    let browser = Category::new(b"Browser").unwrap();
    let mail = Category::new(b"Mail").unwrap();
    let r = Registration {
        addr: "192.168.28.10".parse().unwrap(),
        app: Measurement([7; 32]),
        host: "10.0.0.5".parse().unwrap(),
        categories: vec![browser, mail, browser, browser],
        origin: Origin::Local,
    };
    let (command, payload) = Operation::from(r.clone()).to_request(Dialect::Live).unwrap();
    let distinct = Registration { categories: vec![browser, mail], ..r };
    assert_eq!(Operation::parse(command, &payload), Ok((Dialect::Live, Operation::Register(vec![distinct]))));
}

#[test]
fn empty_lists_and_other_commands_are_refused() {
    let local = Origin::Local;
    for op in [Operation::Register(vec![]), Operation::Unregister { origin: local, addrs: vec![] }, Operation::Attach { origin: local, app: Measurement([1; 32]), categories: vec![] }] {
        for dialect in [Dialect::Legacy, Dialect::Live, Dialect::Staged] {
            assert_eq!(op.to_request(dialect), Err(EmitError::Empty), "{op:?} in {dialect:?}");
        }
    }
    for command in [cmd::STATS, cmd::REPLACE_COMMIT, cmd::REPLACE_ABORT] {
        assert!(Operation::parse(command, &[]).unwrap_err().msg.to_str().unwrap().contains("not an operation"));
        assert_eq!(Operation::from_request(&Scoped::parse(command, &[]).unwrap()), Ok(None));
    }
    // A REPLACE_ADD nest without its application is found when read.
    let payload = written(|w| w.put_enclave(&"10.0.0.1".parse().unwrap(), None, None, &[]).unwrap());
    assert!(Operation::parse(cmd::REPLACE_ADD, &payload).is_err());
}
