// SPDX-License-Identifier: GPL-2.0-only
//! Fuzzes sequences of table operations: no panic, no memory error (run under ASan), and the
//! table's counts stay consistent with its contents.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use seng_core::table::LocalTable;
use seng_core::{Category, Measurement};

#[derive(Arbitrary, Debug)]
enum Op {
    Register { ip: u16, app: u8, host: u8, cats: Vec<u8> },
    Unregister { ip: u16 },
    Attach { app: u8, cat: u8 },
    Detach { app: u8, cat: u8 },
    Flush,
}

fn ip(i: u16) -> IpAddr {
    if i & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8))
    } else {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))
    }
}

fn app(i: u8) -> Measurement {
    Measurement([i % 16; 32])
}

fn cat(i: u8) -> Category {
    Category::new(format!("c{}", i % 40).as_bytes()).unwrap()
}

fuzz_target!(|ops: Vec<Op>| {
    let mut table = LocalTable::new(300).unwrap();
    for op in ops {
        let _ = match op {
            Op::Register { ip: i, app: a, host, cats } => {
                let cats: Vec<Category> = cats.into_iter().map(cat).collect();
                table.register(ip(i), &app(a), IpAddr::V4(Ipv4Addr::new(10, 9, 0, host)), &cats).map(drop)
            }
            Op::Unregister { ip: i } => table.unregister(&ip(i)).map(drop),
            Op::Attach { app: a, cat: c } => table.attach_category(&app(a), &cat(c)).map(drop),
            Op::Detach { app: a, cat: c } => table.detach_category(&app(a), &cat(c)),
            Op::Flush => {
                table.flush();
                Ok(())
            }
        };
        let stats = table.stats();
        assert_eq!(table.enclaves_from(0).count(), stats.enclaves);
        assert_eq!(table.apps().count(), stats.apps);
        assert!(stats.enclaves <= stats.capacity);
        assert!(2 * stats.enclaves <= stats.enclave_slots);
        for e in table.enclaves_from(0) {
            assert_eq!(table.lookup(&e.addr()).map(|f| f.addr()), Some(e.addr()));
        }
    }
});
