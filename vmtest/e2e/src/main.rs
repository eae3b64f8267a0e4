// SPDX-License-Identifier: GPL-2.0-only
//! `seng-e2e`: the host and guest helper of the end-to-end comparison of seng-sim with the
//! kernel (`vmtest/e2e/README.md` describes the whole procedure).
//!
//! - `seng-e2e gen NAME DIR` / `seng-e2e gen --all SCENARIOS`: write the generated files of a
//!   scenario (the committed captures, or the large scenario at test time);
//! - `seng-e2e net [SIM_ARGS]`: shell commands that build the guest network the simulator's
//!   options describe;
//! - `seng-e2e split-rules RULES V4 V6`: the rules file as `iptables-restore` and
//!   `ip6tables-restore` input;
//! - `seng-e2e place-events CAPTURE TEMPLATE`: an enclave script whose `@markN` times become
//!   those of the capture's marker datagrams (for captures of real programs, whose timing
//!   varies);
//! - `seng-e2e compare ...`: the verdict of one run;
//! - `seng-e2e random gen --seed N DIR`: the random scenario of seed N, in the corpus format;
//! - `seng-e2e random shrink --seed N --out DIR -- ORACLE...`: that scenario cut down to what
//!   keeps `ORACLE... CANDIDATE_DIR` exiting 0 (the difference persists), written into DIR.

mod compare;
mod net;
mod random;
mod save;
mod scenarios;
mod story;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "seng-e2e",
    about = "End-to-end comparison of seng-sim with the kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the generated files of scenario NAME into DIR (with --all: every committed one
    /// into `SCENARIOS/<name>/`).
    Gen {
        /// The scenario, or with --all the scenarios directory.
        name: String,
        /// Where to write.
        dir: Option<PathBuf>,
        /// Regenerate every committed generated file under the scenarios directory NAME.
        #[arg(long)]
        all: bool,
    },
    /// Print shell commands that build the network of a scenario's sim-args file.
    Net {
        /// The sim-args file (none: seng-sim's default network).
        sim_args: Option<PathBuf>,
    },
    /// Split a rules file into iptables-restore and ip6tables-restore input.
    SplitRules {
        /// The scenario's rules.txt.
        rules: PathBuf,
        /// Where the IPv4 filter table goes.
        ipv4: PathBuf,
        /// Where the IPv6 filter table goes.
        ipv6: PathBuf,
    },
    /// Print TEMPLATE with each `@markN` replaced by the time of the N-th marker datagram (UDP
    /// to port 9) of CAPTURE, in seconds after its first packet.
    PlaceEvents {
        /// The capture.
        capture: PathBuf,
        /// The enclave script with `@mark1`, `@mark2`, ... times.
        template: PathBuf,
    },
    /// Compare the kernel's counters with seng-sim's for one run; exit 1 on any difference.
    /// Print how many packets seng-sim says leave the gateway (forwarded or sent out, loopback
    /// included): the injector's `--expect-out`.
    ExpectOut {
        /// seng-sim's `--json` report.
        sim: PathBuf,
    },
    Compare {
        /// The scenario and backend, for the messages.
        #[arg(long)]
        name: String,
        /// `seng-sim replay --json` output.
        #[arg(long)]
        sim: PathBuf,
        /// `inject pcap --summary` output.
        #[arg(long)]
        inject: PathBuf,
        /// `iptables-save -c` output.
        #[arg(long)]
        ipv4: PathBuf,
        /// `ip6tables-save -c` output.
        #[arg(long)]
        ipv6: PathBuf,
    },
    /// Random scenarios: generate one from a seed, or shrink one that shows a difference.
    Random {
        #[command(subcommand)]
        command: RandomCommand,
    },
}

#[derive(Subcommand)]
enum RandomCommand {
    /// Write the scenario of SEED into DIR (rules.txt, enclaves.txt, capture.pcap).
    Gen {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Where to write.
        dir: PathBuf,
    },
    /// Cut the scenario of SEED down while `ORACLE... DIR` exits 0 (for a candidate written
    /// into DIR), and write the smallest into OUT, ready for the corpus.
    Shrink {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Where the shrunk scenario goes.
        #[arg(long)]
        out: PathBuf,
        /// The command that says whether the difference persists: exit 0 for yes.
        #[arg(required = true, last = true)]
        oracle: Vec<String>,
    },
}

fn write_scenario(dir: &Path, files: &random::Files) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    write(&dir.join("rules.txt"), files.rules.as_bytes())?;
    write(&dir.join("enclaves.txt"), files.enclaves.as_bytes())?;
    write(&dir.join("capture.pcap"), &files.capture)
}

/// `random shrink`: delta debugging with the oracle run on every candidate.
fn shrink(seed: u64, out: &Path, oracle: &[String]) -> Result<()> {
    let (program, args) = oracle.split_first().context("no oracle command")?;
    let candidate_dir = out.with_extension("candidate");
    let mut failure = None;
    let mut still_differs = |s: &random::Scenario| {
        if failure.is_some() {
            return false;
        }
        let result = write_scenario(&candidate_dir, &s.files("candidate")).and_then(|()| {
            std::process::Command::new(program)
                .args(args)
                .arg(&candidate_dir)
                .status()
                .with_context(|| format!("cannot run the oracle {program}"))
        });
        match result {
            Ok(status) => status.success(),
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    };
    let mut scenario = random::Scenario::generate(seed);
    let before = scenario.size();
    if !still_differs(&scenario) {
        if let Some(e) = failure {
            return Err(e);
        }
        bail!("seed {seed}: the oracle says the unshrunk scenario shows no difference");
    }
    let tries = scenario.shrink(&mut still_differs);
    if let Some(e) = failure {
        return Err(e);
    }
    let after = scenario.size();
    let header = format!(
        "Shrunk from random seed {seed} by `seng-e2e random shrink` ({tries} candidates tried):\n\
         {} rules, {} script lines, {} flows, {} packets, from {} rules, {} script lines, {} flows, {} packets.\n\
         Flows:\n{}",
        after.0, after.1, after.2, after.3, before.0, before.1, before.2, before.3,
        scenario.flow_summary()
    );
    write_scenario(out, &scenario.files(&header))?;
    let _ = fs::remove_dir_all(&candidate_dir);
    println!("seed {seed}: shrunk in {tries} tries to {after:?} (rules, script lines, flows, packets), written to {}", out.display());
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| path.display().to_string())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| path.display().to_string())
}

fn gen(name: &str, dir: Option<&Path>, all: bool) -> Result<()> {
    if all {
        let root = Path::new(name);
        for scenario in scenarios::GENERATED {
            for file in scenarios::generate(scenario)
                .into_iter()
                .flatten()
                .filter(|f| f.committed)
            {
                write(&root.join(scenario).join(file.name), &file.data)?;
            }
        }
        return Ok(());
    }
    let dir = dir.context("gen NAME needs a directory")?;
    let files = scenarios::generate(name).ok_or_else(|| {
        anyhow!(
            "no generated scenario {name:?}; there are {:?}",
            scenarios::GENERATED
        )
    })?;
    fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    for file in files {
        write(&dir.join(file.name), &file.data)?;
    }
    Ok(())
}

/// The port of the marker datagrams a capture session sends between its phases.
const MARK_PORT: u16 = 9;

/// Times (ns since the first frame) of the marker datagrams of a capture: UDP to port 9.
fn marks(capture: &Path) -> Result<Vec<u64>> {
    let bytes = fs::read(capture).with_context(|| capture.display().to_string())?;
    let name = capture.display().to_string();
    let c = seng_sim::capture::Capture::new(bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    let mut first = None;
    let mut marks = Vec::new();
    for frame in c.frames() {
        let frame = frame.map_err(|e| anyhow!("{name}: {e}"))?;
        let start = *first.get_or_insert(frame.ts_ns);
        if let Ok(seng_sim::capture::Payload::Ip {
            data,
            wire_len,
            family,
        }) = seng_sim::capture::payload(&frame)
        {
            if let Ok(p) = seng_sim::packet::parse(data, wire_len, family) {
                if p.proto == seng_sim::packet::proto::UDP && p.dport == MARK_PORT {
                    marks.push(frame.ts_ns - start);
                }
            }
        }
    }
    Ok(marks)
}

fn place_events(capture: &Path, template: &Path) -> Result<String> {
    let marks = marks(capture)?;
    let mut out = String::new();
    let text = read(template)?;
    let mut lines = text.lines().peekable();
    if let Some(spdx) = lines.next_if(|l| l.starts_with("# SPDX-License-Identifier:")) {
        out.push_str(spdx);
        out.push('\n');
    }
    out.push_str("# Generated from enclaves.in and capture.pcap by seng-e2e place-events: edit enclaves.in.\n");
    for line in lines {
        match line.trim_start().strip_prefix("@mark") {
            Some(rest) => {
                let (n, command) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let n: usize = n
                    .parse()
                    .with_context(|| format!("bad mark number in {line:?}"))?;
                let Some(at) = n.checked_sub(1).and_then(|i| marks.get(i)) else {
                    bail!(
                        "{}: {line:?} needs mark {n}, the capture has {} (UDP datagrams to port {MARK_PORT})",
                        template.display(),
                        marks.len()
                    );
                };
                out.push_str(&format!(
                    "@{}.{:09} {}\n",
                    at / 1_000_000_000,
                    at % 1_000_000_000,
                    command.trim_start()
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Gen { name, dir, all } => gen(&name, dir.as_deref(), all)?,
        Command::Random {
            command: RandomCommand::Gen { seed, dir },
        } => write_scenario(&dir, &random::Scenario::generate(seed).files(&format!("Random scenario of seed {seed} (seng-e2e random gen)")))?,
        Command::Random {
            command: RandomCommand::Shrink { seed, out, oracle },
        } => shrink(seed, &out, &oracle)?,
        Command::Net { sim_args } => {
            let text = match sim_args {
                Some(path) => read(&path)?,
                None => String::new(),
            };
            print!("{}", net::parse_sim_args(&text)?.shell());
        }
        Command::SplitRules { rules, ipv4, ipv6 } => {
            let (v4, v6) =
                net::split_rules(&read(&rules)?).with_context(|| rules.display().to_string())?;
            write(&ipv4, v4.as_bytes())?;
            write(&ipv6, v6.as_bytes())?;
        }
        Command::PlaceEvents { capture, template } => {
            print!("{}", place_events(&capture, &template)?)
        }
        Command::ExpectOut { sim } => {
            let report: compare::SimReport =
                serde_json::from_str(&read(&sim)?).context("reading the seng-sim report")?;
            println!("{}", compare::expected_out(&report));
        }
        Command::Compare {
            name,
            sim,
            inject,
            ipv4,
            ipv6,
        } => {
            let sim: compare::SimReport =
                serde_json::from_str(&read(&sim)?).context("reading the seng-sim report")?;
            let inject: compare::InjectSummary =
                serde_json::from_str(&read(&inject)?).context("reading the injector summary")?;
            let kernel = compare::Kernel {
                ipv4: save::parse_tables(&read(&ipv4)?).context("iptables-save output")?,
                ipv6: save::parse_tables(&read(&ipv6)?).context("ip6tables-save output")?,
            };
            let out = compare::compare(&sim, &inject, &kernel);
            println!("e2e {name}: {}", out.summary);
            for p in &out.replay_problems {
                println!("e2e {name}: REPLAY INCOMPLETE: {p}");
            }
            for d in &out.differences {
                println!("e2e {name}: DIFFERENCE: {d}");
            }
            if out.agrees() {
                println!(
                    "e2e {name}: kernel and seng-sim agree on all {} counters",
                    out.compared
                );
            }
            return Ok(out.agrees());
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("seng-e2e: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// The committed captures are what the generators make now.
    #[test]
    fn committed_captures_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        for scenario in scenarios::GENERATED {
            for file in scenarios::generate(scenario).into_iter().flatten() {
                let path = root.join(scenario).join(file.name);
                if file.committed {
                    let on_disk = fs::read(&path).unwrap_or_default();
                    assert!(
                        on_disk == file.data,
                        "{} is stale: run `cargo run -p seng-e2e -- gen --all vmtest/scenarios`",
                        path.display()
                    );
                } else {
                    assert!(
                        !path.exists(),
                        "{} is made at test time and must not be committed",
                        path.display()
                    );
                }
            }
        }
    }

    /// The sample-rules scenario is the shipped example, verbatim.
    #[test]
    fn sample_rules_is_the_example() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let scenario = root.join("vmtest/scenarios/sample-rules");
        for (example, copy) in [
            ("rules.txt", "rules.txt"),
            ("enclaves.txt", "enclaves.txt"),
            ("trace.pcap", "capture.pcap"),
        ] {
            let a = fs::read(root.join("examples").join(example)).unwrap();
            let b = fs::read(scenario.join(copy)).unwrap();
            assert!(
                a == b,
                "vmtest/scenarios/sample-rules/{copy} differs from examples/{example}"
            );
        }
    }

    /// The committed enclave scripts of the captured scenarios are their templates placed on
    /// their captures.
    #[test]
    fn captured_scenarios_are_consistent() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        for session in ["real-tcp", "real-udp", "real-icmp"] {
            let dir = root.join(session);
            let placed = place_events(&dir.join("capture.pcap"), &dir.join("enclaves.in")).unwrap();
            assert_eq!(
                placed,
                read(&dir.join("enclaves.txt")).unwrap(),
                "{session}: run vmtest/e2e/update-captures.sh"
            );
            assert_eq!(
                marks(&dir.join("capture.pcap")).unwrap().len(),
                2,
                "{session}: two marker datagrams"
            );
        }
    }

    #[test]
    fn events_go_to_the_marks() {
        use seng_sim::gen::{Builder, PcapWriter};
        let dir = std::env::temp_dir().join(format!("seng-e2e-mark-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut w = PcapWriter::new(seng_sim::capture::linktype::RAW, true, false);
        let b = Builder::v4("192.168.28.1", "192.168.28.10");
        for (ms, port) in [
            (1000u64, 53u16),
            (1100, 9),
            (1200, 53),
            (3300, 9),
            (3400, 53),
        ] {
            w.packet(ms * 1_000_000, &b.udp(40000, port, b"x"));
        }
        write(&dir.join("c.pcap"), &w.finish()).unwrap();
        let enclave = "enclave add 192.168.28.10 --app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 --host 10.0.0.5";
        write(
            &dir.join("t"),
            format!("# comment\n{enclave}\n@mark1 flush\n  @mark2   enclave del 192.168.28.10\n")
                .as_bytes(),
        )
        .unwrap();
        let out = place_events(&dir.join("c.pcap"), &dir.join("t")).unwrap();
        assert_eq!(
            out,
            format!("# Generated from enclaves.in and capture.pcap by seng-e2e place-events: edit enclaves.in.\n# comment\n{enclave}\n@0.100000000 flush\n@2.300000000 enclave del 192.168.28.10\n")
        );
        seng_core::script::parse(&out).unwrap();
        write(&dir.join("t"), b"@mark3 flush\n").unwrap();
        let err = place_events(&dir.join("c.pcap"), &dir.join("t")).unwrap_err();
        assert!(
            err.to_string().contains("needs mark 3, the capture has 2"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
