// SPDX-License-Identifier: GPL-2.0-only
//! Property tests: damaged captures, rule files and enclave scripts give errors, never panics.

use proptest::prelude::*;
use seng_sim::capture::Capture;
use seng_sim::engine::{Options, Simulator};
use seng_sim::rules::parse_rules;

fn example_capture() -> Vec<u8> {
    seng_sim::gen::example_capture()
}

const RULES: &str = include_str!("../../examples/rules.txt");
const ENCLAVES: &str = include_str!("../../examples/enclaves.txt");

/// Replays `bytes` as a capture; returns whether it was read to the end without error.
fn replay(bytes: Vec<u8>) -> bool {
    let rules = parse_rules(RULES, "rules").expect("example rules");
    let script = seng_core::script::parse(ENCLAVES).expect("example enclaves");
    let mut sim = Simulator::new(&rules, &script, &Options::default()).expect("simulator");
    match Capture::new(bytes) {
        Ok(capture) => seng_sim::replay(&capture, &mut sim, Some(&mut std::io::sink()), &mut |_| {}).is_ok(),
        Err(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn damaged_captures_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut bytes = example_capture();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep.max(bytes.len() / 2));
        replay(bytes);
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..400), pcapng in any::<bool>()) {
        // Give the random body a valid header half of the time, so the frame reader is reached.
        let header: &[u8] = if pcapng { &[0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a] } else { &example_capture()[..24] };
        let mut file = header.to_vec();
        file.append(&mut bytes);
        replay(file);
    }

    #[test]
    fn rule_and_script_text_never_panics(lines in prop::collection::vec("[ -~]{0,60}", 0..6)) {
        let text = lines.join("\n");
        let _ = parse_rules(&text, "fuzz");
        let _ = parse_rules(&format!("iptables {text}"), "fuzz");
        let _ = parse_rules(&format!("*filter\n{text}\nCOMMIT\n"), "fuzz");
        let _ = seng_core::script::parse(&text);
    }
}

#[test]
fn example_replays_cleanly() {
    assert!(replay(example_capture()));
}
