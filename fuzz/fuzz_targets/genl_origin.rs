// SPDX-License-Identifier: GPL-2.0-only
//! Fuzzes what origins add to decoding: the ORIGIN that starts a change ([`Scoped::parse`], what
//! the module runs on every request), the scope of a read ([`ReadScope::parse`], what a dump
//! runs) and the ORIGIN that starts a reply's nest ([`parse_entry`]). No panic on any input; a
//! request accepted for a gateway decodes after its ORIGIN as [`Request::parse`] decodes it
//! there, and its ORIGIN re-encodes byte for byte but for its type's flag bits and its padding
//! (which the kernel's nla_parse ignores too); an accepted scope or entry re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seng_core::genl::{cmd, parse_entry, AttrWriter, ReadScope, Request, Scoped};
use seng_core::Origin;

fn written(build: impl FnOnce(&mut AttrWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = AttrWriter::new(&mut buf);
    build(&mut w);
    let len = w.len();
    buf.truncate(len);
    buf
}

fuzz_target!(|data: &[u8]| {
    let Some((&command, payload)) = data.split_first() else { return };
    let command = command % (cmd::MAX + 2);
    if let Ok(scoped) = Scoped::parse(command, payload) {
        let base = scoped.base();
        assert_eq!(base == 0, scoped.origin == Origin::Local, "only a gateway's request has an ORIGIN");
        assert!(Request::parse(command, &payload[base..]).is_ok(), "the request after the ORIGIN decodes by itself");
        if let Origin::Gateway(name) = &scoped.origin {
            let again = written(|w| w.put_origin(name).unwrap());
            let declared = usize::from(u16::from_ne_bytes([payload[0], payload[1]]));
            assert_eq!(again.len().min(payload.len()), base, "the ORIGIN re-encodes to the same length, padding cut as sent");
            // The type's flag bits (NLA_F_NESTED, NLA_F_NET_BYTEORDER) are ignored on input.
            assert_eq!(again[..2], payload[..2], "the ORIGIN re-encodes its length");
            assert_eq!(again[4..declared], payload[4..declared], "the ORIGIN re-encodes its name");
        }
    }
    if let Ok(scope) = ReadScope::parse(payload) {
        let again = written(|w| scope.emit(w).unwrap());
        assert_eq!(ReadScope::parse(&again), Ok(scope), "a scope re-encodes to itself");
    }
    if let Ok((origin, spec)) = parse_entry(payload) {
        if let (Some(app), Some(host)) = (spec.app, spec.host) {
            let categories = spec.with_categories(|c| c.to_vec());
            let nest = written(|w| w.put_entry(origin.gateway(), &spec.addr, &app, &host, &categories).unwrap());
            let (again, read) = parse_entry(&nest[4..]).expect("a written entry decodes");
            assert_eq!((again, read.addr, read.app, read.host), (origin, spec.addr, spec.app, spec.host));
            assert_eq!(read.with_categories(|c| c.to_vec()), categories);
        }
    }
});
