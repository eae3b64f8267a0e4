// SPDX-License-Identifier: GPL-2.0-only
//! Fuzzes rule option text: parsing never panics, and whatever parses prints to a canonical form
//! that parses back to the same rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seng_core::{Family, Rule, SengMtInfo};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let family = if selector & 1 == 0 { Family::Ipv4 } else { Family::Ipv6 };
    let Ok(rule) = Rule::parse(text, family) else { return };
    let saved = rule.save_form().to_string();
    // Names needing quotes cannot go through the whitespace splitter; the matchinfo path covers them.
    if rule.src.cat.iter().chain(rule.dst.cat.iter()).all(|c| !c.value.save_form().to_string().starts_with('"')) {
        assert_eq!(Rule::parse(&saved, family), Ok(rule), "{saved}");
    }
    let info = SengMtInfo::from(&rule);
    assert_eq!(info.to_rule(family), Ok(rule));
    let _ = rule.list_form().to_string();
});
