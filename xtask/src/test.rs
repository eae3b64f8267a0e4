// SPDX-License-Identifier: GPL-2.0-only
//! `cargo xtask test`: everything CI checks, in one command: lints, unit and property tests,
//! documentation, a short fuzzing smoke run, and the VM tests on every kernel. Every step runs
//! even after a failure, so one run reports all of them.

use std::time::Instant;

use anyhow::Result;

use crate::cmd::Cmd;
use crate::paths::Paths;

/// One check: a name and the command that performs it.
struct Step {
    name: &'static str,
    cmd: Cmd,
}

/// Runs the whole suite; `vm_kernels` is passed to `vmtest --kernel` (e.g. "all").
pub fn run(paths: &Paths, vm_kernels: &str, fuzz_seconds: u32) -> Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let steps = [
        Step {
            name: "clippy",
            cmd: Cmd::new(&cargo).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        },
        Step {
            // cargo test does not produce cdylibs, which host tests load (libxt_seng.so): build
            // every target first.
            name: "build",
            cmd: Cmd::new(&cargo).args(["build", "--workspace", "--all-targets"]),
        },
        Step {
            name: "unit and property tests",
            cmd: Cmd::new(&cargo).args(["test", "--workspace"]),
        },
        Step {
            name: "rustdoc",
            cmd: Cmd::new(&cargo)
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        },
        Step {
            name: "fuzz smoke",
            cmd: Cmd::new("bash")
                .arg(paths.root.join("fuzz/smoke.sh"))
                .env("SECONDS_PER_TARGET", fuzz_seconds.to_string()),
        },
        Step {
            name: "vmtest",
            cmd: Cmd::new(&cargo)
                .args(["xtask", "vmtest", "--kernel", vm_kernels, "--debug-light", "--user-space-on", "6.1"]),
        },
        Step {
            // Prints the agent's propagation and late-join figures at CI scale (issue 16); the
            // full-scale run is `vmtest --bench --kernel 6.1 --filter agent-propagation`.
            name: "agent benchmark",
            cmd: Cmd::new(&cargo).args(["xtask", "vmtest", "--bench", "--kernel", "6.1", "--filter", "agent-short"]),
        },
        Step {
            // Built, linted, installed in a Debian 12 root, DKMS-built modules booted.
            name: "packages",
            cmd: Cmd::new(&cargo).args(["xtask", "deb", "--test"]),
        },
    ];
    let mut report = Vec::new();
    for step in steps {
        println!("==> {}: {}", step.name, step.cmd.shown());
        let start = Instant::now();
        let result = step.cmd.dir(&paths.root).run();
        let secs = start.elapsed().as_secs_f64();
        if let Err(e) = &result {
            eprintln!("==> {} FAILED: {e:#}", step.name);
        }
        report.push((step.name, result.is_ok(), secs));
    }
    println!("test summary:");
    for (name, ok, secs) in &report {
        println!("  {:<24} {:>6} {secs:>8.1}s", name, if *ok { "ok" } else { "FAILED" });
    }
    Ok(report.iter().all(|(_, ok, _)| *ok))
}
