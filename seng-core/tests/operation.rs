// SPDX-License-Identifier: GPL-2.0-only
//! The encoder against the decoder the kernel runs: every operation, in every dialect that can
//! carry it, reads back as itself.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use seng_core::genl::{cmd, AttrWriter, LegacyOp, Request};
use seng_core::operation::{Dialect, EmitError, Operation, Registration};
use seng_core::{Category, Measurement};

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

/// A registration; its categories are distinct, as the nest carries them.
fn registration() -> impl Strategy<Value = Registration> {
    (addr(), measurement(), addr(), prop::collection::vec(category(), 0..5)).prop_map(|(addr, app, host, mut categories)| {
        let mut seen = Vec::new();
        categories.retain(|c| !seen.contains(c) && {
            seen.push(*c);
            true
        });
        Registration { addr, app, host, categories }
    })
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        prop::collection::vec(registration(), 1..6).prop_map(Operation::Register),
        prop::collection::vec(addr(), 1..6).prop_map(Operation::Unregister),
        (measurement(), categories(6)).prop_map(|(app, categories)| Operation::Attach { app, categories }),
        (measurement(), categories(6)).prop_map(|(app, categories)| Operation::Detach { app, categories }),
        Just(Operation::Flush),
    ]
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
        let mut buf = [0u8; 128];
        let mut w = AttrWriter::new(&mut buf);
        op.emit(&mut w).unwrap();
        let len = w.len();
        let payload = &buf[..len];
        prop_assert_eq!(LegacyOp::parse(payload), Ok(op));
        let as_operation = Operation::from(op);
        prop_assert_eq!(Operation::parse(cmd::LEGACY, payload), Ok((Dialect::Legacy, as_operation.clone())));
        // The operation written in the legacy dialect is the same request.
        prop_assert_eq!(as_operation.to_request(Dialect::Legacy), Ok((cmd::LEGACY, payload.to_vec())));
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
}

#[test]
fn the_original_byte_layout() {
    // ENC is the address as a network-order u32, the flag comes last.
    let op = Operation::Unregister(vec!["1.2.3.4".parse().unwrap()]);
    assert_eq!(op.to_request(Dialect::Legacy), Ok((cmd::LEGACY, vec![8, 0, 4, 0, 1, 2, 3, 4, 4, 0, 6, 0])));
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
    };
    let (command, payload) = Operation::from(r.clone()).to_request(Dialect::Live).unwrap();
    let distinct = Registration { categories: vec![browser, mail], ..r };
    assert_eq!(Operation::parse(command, &payload), Ok((Dialect::Live, Operation::Register(vec![distinct]))));
}

#[test]
fn empty_lists_and_other_commands_are_refused() {
    for op in [Operation::Register(vec![]), Operation::Unregister(vec![]), Operation::Attach { app: Measurement([1; 32]), categories: vec![] }] {
        for dialect in [Dialect::Legacy, Dialect::Live, Dialect::Staged] {
            assert_eq!(op.to_request(dialect), Err(EmitError::Empty), "{op:?} in {dialect:?}");
        }
    }
    for command in [cmd::STATS, cmd::REPLACE_COMMIT, cmd::REPLACE_ABORT] {
        assert!(Operation::parse(command, &[]).unwrap_err().msg.to_str().unwrap().contains("not an operation"));
        assert_eq!(Operation::from_request(&Request::parse(command, &[]).unwrap()), Ok(None));
    }
    // A REPLACE_ADD nest without its application is found when read.
    let mut buf = [0u8; 64];
    let mut w = AttrWriter::new(&mut buf);
    w.put_enclave(&"10.0.0.1".parse().unwrap(), None, None, &[]).unwrap();
    let len = w.len();
    assert!(Operation::parse(cmd::REPLACE_ADD, &buf[..len]).is_err());
}
