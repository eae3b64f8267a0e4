// SPDX-License-Identifier: GPL-2.0-only
//! Snapshot tests pinning what `seng-sim` prints for the shipped example: the report, the
//! per-packet trace and the JSON (review changes with `cargo insta review`, or accept them with
//! `INSTA_UPDATE=always cargo test -p seng-sim --test snapshots`).

use std::path::Path;
use std::process::Command;

fn example(extra: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut args = vec!["replay", "examples/trace.pcap", "examples/rules.txt", "--enclaves", "examples/enclaves.txt"];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_seng-sim")).args(&args).current_dir(root).output().expect("run seng-sim");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

#[test]
fn example_report() {
    insta::assert_snapshot!(example(&[]));
}

#[test]
fn example_trace() {
    insta::assert_snapshot!(example(&["--trace"]));
}

#[test]
fn example_json() {
    insta::assert_snapshot!(example(&["--json"]));
}
