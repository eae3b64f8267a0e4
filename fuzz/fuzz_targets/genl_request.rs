// SPDX-License-Identifier: GPL-2.0-only
//! Fuzzes the decoding of generic netlink requests, the bytes the module takes from user space:
//! no panic on any command and payload; a registration's nests (decoded one at a time as they
//! are read) come at increasing offsets, as many as were counted when all are well formed, and
//! re-encode to the same enclaves; every deletion list reads back the way it was counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seng_core::genl::{cmd, AttrWriter, Attrs, EnclaveList, EnclaveSpec, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&command, payload)) = data.split_first() else { return };
    let command = command % (cmd::MAX + 2);
    match Request::parse(command, payload) {
        Ok(Request::Unregister(list) | Request::StagedUnregister(list)) => check_list(payload, &list),
        Ok(Request::Register(additions) | Request::StagedRegister(additions)) => {
            let read: Vec<_> = additions.iter_at().collect();
            let mut previous = None;
            for item in &read {
                let (Ok((at, _)) | Err((at, _))) = item;
                assert!(previous < Some(*at) && *at < payload.len(), "nest offsets increase inside the payload");
                previous = Some(*at);
                if let Ok((at, spec)) = item {
                    check_nest(payload, *at, spec);
                }
            }
            assert!(read.iter().rev().skip(1).all(Result::is_ok), "iteration ends at the first refusal");
            assert!(read.iter().any(Result::is_err) || read.len() == additions.len(), "every counted nest is read");
        }
        Ok(Request::Attach { categories, .. }
        | Request::Detach { categories, .. }
        | Request::StagedAttach { categories, .. }
        | Request::StagedDetach { categories, .. }) => assert!(categories.iter().count() > 0),
        Ok(_) | Err(_) => {}
    }
});

type Fields = (std::net::IpAddr, Option<[u8; 32]>, Option<std::net::IpAddr>, Vec<String>);

fn fields(spec: &EnclaveSpec<'_>) -> Fields {
    let categories = spec.with_categories(|c| c.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>());
    assert_eq!(categories.len(), spec.category_count());
    (spec.addr, spec.app.map(|m| m.0), spec.host, categories)
}

/// A validated list: its count, offsets and contents agree.
fn check_list(payload: &[u8], list: &EnclaveList<'_>) {
    assert_eq!(list.iter().count(), list.len());
    for (at, spec) in list.iter_at() {
        check_nest(payload, at, &spec);
    }
}

/// The accepted nest at `at` decodes to `spec`, which re-encodes to itself.
fn check_nest(payload: &[u8], at: usize, spec: &EnclaveSpec<'_>) {
    let nest = Attrs::new(&payload[at..]).next().expect("an attribute at a nest offset").expect("a whole attribute");
    assert_eq!(fields(&EnclaveSpec::parse(nest.payload).expect("an accepted nest decodes")), fields(spec));
    let categories = spec.with_categories(|c| c.to_vec());
    let mut buf = vec![0u8; 4096];
    let mut w = AttrWriter::new(&mut buf);
    w.put_enclave(&spec.addr, spec.app.as_ref(), spec.host.as_ref(), &categories).expect("room for one enclave");
    let len = w.len();
    let again = Attrs::new(&buf[..len]).next().expect("one nest").expect("a whole nest");
    assert_eq!(fields(&EnclaveSpec::parse(again.payload).expect("a written nest decodes")), fields(spec));
}
