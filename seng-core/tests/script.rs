// SPDX-License-Identifier: GPL-2.0-only
//! Property test of enclave scripts: the canonical printout of any script, of any origins, parses
//! back to it.

use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use seng_core::operation::{Operation, Registration};
use seng_core::script::{parse, print, ScriptLine};
use seng_core::{Category, GatewayName, Measurement, Origin};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

fn measurement() -> impl Strategy<Value = Measurement> {
    any::<[u8; 32]>().prop_map(Measurement)
}

fn category() -> impl Strategy<Value = Category> {
    // Any printable text, including quotes, backslashes, '#', '@' and non-ASCII letters.
    "[ -~äö€]{1,6}"
        .prop_filter_map("category bytes", |s| Category::new(s.as_bytes()).ok())
}

/// The local origin or a gateway.
fn origin() -> impl Strategy<Value = Origin> {
    let gateway = "[A-Za-z0-9][A-Za-z0-9._-]{0,31}".prop_filter_map("gateway name", |s| GatewayName::new(s.as_bytes()).ok());
    prop_oneof![Just(Origin::Local), gateway.prop_map(Origin::Gateway)]
}

/// An operation of one item, as a script line reads.
fn operation() -> impl Strategy<Value = Operation> {
    origin().prop_flat_map(|origin| {
        prop_oneof![
            (ip(), measurement(), ip(), prop::collection::vec(category(), 0..4))
                .prop_map(move |(addr, app, host, categories)| Operation::from(Registration { addr, app, host, categories, origin })),
            ip().prop_map(move |addr| Operation::Unregister { origin, addrs: vec![addr] }),
            (measurement(), category()).prop_map(move |(app, category)| Operation::Attach { origin, app, categories: vec![category] }),
            (measurement(), category()).prop_map(move |(app, category)| Operation::Detach { origin, app, categories: vec![category] }),
            Just(Operation::Flush { origin }),
        ]
    })
}

fn script() -> impl Strategy<Value = Vec<ScriptLine>> {
    prop::collection::vec((any::<bool>(), 0u64..5_000_000_000, operation()), 0..12).prop_map(|items| {
        // Timed lines must not go back in time: make the offsets cumulative.
        let mut now = Duration::ZERO;
        items
            .into_iter()
            .enumerate()
            .map(|(i, (timed, step_ns, operation))| {
                let at = timed.then(|| {
                    now += Duration::from_nanos(step_ns);
                    now
                });
                ScriptLine { line_no: i + 1, at, operation }
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn canonical_print_parses_back(lines in script()) {
        let text = print(&lines);
        let reparsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(reparsed, lines);
    }
}
