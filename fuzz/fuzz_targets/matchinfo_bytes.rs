// SPDX-License-Identifier: GPL-2.0-only
//! Fuzzes match data blobs as checkentry and the packet path see them: validation and decisions
//! never panic, and a blob that validates canonicalises to a rule that decides the same way.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use seng_core::table::LocalTable;
use seng_core::{match_packet, Family, Measurement, SengMtInfo};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, blob)) = data.split_first() else { return };
    let Ok(info) = SengMtInfo::from_bytes(blob) else { return };
    let family = if selector & 1 == 0 { Family::Ipv4 } else { Family::Ipv6 };
    let mut table = LocalTable::new(4).unwrap();
    let (src, dst): (IpAddr, IpAddr) = match family {
        Family::Ipv4 => ("192.168.28.10".parse().unwrap(), "192.168.28.20".parse().unwrap()),
        Family::Ipv6 => ("fd00:28::10".parse().unwrap(), "fd00:28::20".parse().unwrap()),
    };
    // Register the source with the blob's own source app and host, so comparisons can succeed.
    let host: IpAddr = seng_core::host::to_ip(family, &info.host_src.0);
    table.register(src, &Measurement(info.app_hash_src), host, &[]).unwrap();
    if selector & 2 != 0 {
        table.register(dst, &Measurement(info.app_hash_dst), host, &[]).unwrap();
    }
    let decided = match_packet(&info, family, &table, &src, &dst);
    if let Ok(rule) = info.to_rule(family) {
        let canonical = SengMtInfo::from(&rule);
        assert_eq!(match_packet(&canonical, family, &table, &src, &dst), decided);
    }
});
