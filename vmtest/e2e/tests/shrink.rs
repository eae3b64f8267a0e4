// SPDX-License-Identifier: GPL-2.0-only
//! `seng-e2e random shrink` as the guest runs it: a real oracle process is asked about every
//! candidate written to disk, and the smallest scenario lands in the corpus format.

use std::process::Command;

fn seng_e2e() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seng-e2e"))
}

#[test]
fn shrinks_to_what_the_oracle_needs_and_writes_a_corpus_scenario() {
    let out = std::env::temp_dir().join(format!("seng-e2e-shrink-{}", std::process::id()));
    // The "difference" needs a rule with a --src-app option and an IPv6 packet in the capture
    // (its version nibble 6 at the start of a raw IP frame record).
    let oracle = r#"grep -q -- '--src-app' "$1/rules.txt" && od -An -tx1 -v "$1/capture.pcap" | tr -d ' \n' | grep -q '60000000'"#;
    let status = seng_e2e()
        .args(["random", "shrink", "--seed", "3", "--out"])
        .arg(&out)
        .args(["--", "sh", "-c", oracle, "oracle"])
        .status()
        .unwrap();
    assert!(status.success());
    let rules = std::fs::read_to_string(out.join("rules.txt")).unwrap();
    let appended: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ")).collect();
    assert_eq!(appended.len(), 1, "{rules}");
    assert!(appended[0].contains("--src-app"), "{rules}");
    assert!(rules.contains("Shrunk from random seed 3"), "{rules}");
    let enclaves = std::fs::read_to_string(out.join("enclaves.txt")).unwrap();
    assert_eq!(enclaves.lines().filter(|l| !l.starts_with('#')).count(), 0, "{enclaves}");
    let capture = seng_sim::capture::Capture::new(std::fs::read(out.join("capture.pcap")).unwrap()).unwrap();
    assert_eq!(capture.frames().count(), 1);
    assert!(!out.with_extension("candidate").exists(), "the candidate directory is left behind");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn refuses_a_scenario_the_oracle_does_not_fault() {
    let out = std::env::temp_dir().join(format!("seng-e2e-noshrink-{}", std::process::id()));
    let output = seng_e2e()
        .args(["random", "shrink", "--seed", "3", "--out"])
        .arg(&out)
        .args(["--", "false"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("seed 3: the oracle says the unshrunk scenario shows no difference"), "{stderr}");
    assert!(!out.exists());
}
