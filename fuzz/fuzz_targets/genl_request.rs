// SPDX-License-Identifier: GPL-2.0-only
//! Fuzzes the decoding of generic netlink requests, the bytes the module takes from user space:
//! no panic on any command and payload, every enclave list reads back the way it was counted and
//! re-encodes to the same enclaves, and a replace transaction's additions (decoded one nest at a
//! time) accept exactly the payloads an ENCLAVE_SET accepts, enclave for enclave.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seng_core::genl::{cmd, AttrWriter, Attrs, EnclaveList, EnclaveSpec, Request};

fuzz_target!(|data: &[u8]| {
    let Some((&command, payload)) = data.split_first() else { return };
    let command = command % (cmd::MAX + 2);
    match Request::parse(command, payload) {
        Ok(Request::Register(list) | Request::Unregister(list) | Request::StagedUnregister(list)) => check_list(payload, &list),
        Ok(Request::StagedRegister(additions)) => {
            let staged: Vec<_> = additions.iter_at().collect();
            let mut previous = None;
            for item in &staged {
                let (Ok((at, _)) | Err((at, _))) = item;
                assert!(previous < Some(*at) && *at < payload.len(), "nest offsets increase inside the payload");
                assert!(item.is_err() || at + 4 <= payload.len(), "an accepted nest has its header");
                previous = Some(*at);
            }
            assert!(staged.iter().rev().skip(1).all(Result::is_ok), "iteration ends at the first refusal");
            match Request::parse(cmd::ENCLAVE_SET, payload) {
                Ok(Request::Register(list)) => {
                    let whole: Vec<_> = list.iter_at().collect();
                    assert_eq!(whole.len(), staged.len());
                    for ((at, spec), item) in whole.iter().zip(&staged) {
                        let Ok((staged_at, staged_spec)) = item else { panic!("a nest ENCLAVE_SET accepts was refused") };
                        assert_eq!(at, staged_at);
                        assert_eq!(fields(spec), fields(staged_spec));
                    }
                }
                _ => assert!(staged.is_empty() || staged.iter().any(Result::is_err), "a payload ENCLAVE_SET refuses was accepted"),
            }
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

/// A validated list: its count, offsets and contents agree, and each enclave re-encodes to itself.
fn check_list(payload: &[u8], list: &EnclaveList<'_>) {
    assert_eq!(list.iter().count(), list.len());
    let mut buf = vec![0u8; 4096];
    for (at, spec) in list.iter_at() {
        let nest = Attrs::new(&payload[at..]).next().expect("an attribute at a nest offset").expect("a whole attribute");
        assert_eq!(fields(&EnclaveSpec::parse(nest.payload).expect("a validated nest decodes")), fields(&spec));
        let categories = spec.with_categories(|c| c.to_vec());
        let mut w = AttrWriter::new(&mut buf);
        w.put_enclave(&spec.addr, spec.app.as_ref(), spec.host.as_ref(), &categories).expect("room for one enclave");
        let len = w.len();
        let again = Attrs::new(&buf[..len]).next().expect("one nest").expect("a whole nest");
        assert_eq!(fields(&EnclaveSpec::parse(again.payload).expect("a written nest decodes")), fields(&spec));
    }
}
