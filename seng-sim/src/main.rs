// SPDX-License-Identifier: GPL-2.0-only
//! The `seng-sim` command: `seng-sim replay TRACE.pcap RULES.txt [--enclaves FILE]` replays a
//! capture through iptables/ip6tables rules with the seng match and prints the counters as
//! `iptables -L -v -n -x` would; `seng-sim gen-example` regenerates the shipped example capture.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use clap::Parser;

mod cli;

use cli::{BackendArg, Cli, Command, Replay};
use seng_sim::capture::Capture;
use seng_sim::engine::{Backend, Options, Simulator};
use seng_sim::net::NetConfig;
use seng_sim::report::{self, Inputs};
use seng_sim::rules::parse_rules;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| path.display().to_string())
}

fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read(path)?).map_err(|e| anyhow!("{}: not UTF-8 text ({e})", path.display()))
}

fn replay(args: &Replay) -> Result<()> {
    let rules_name = args.rules.display().to_string();
    let rules = parse_rules(&read_text(&args.rules)?, &rules_name)?;
    let script = match &args.enclaves {
        Some(path) => seng_core::script::parse(&read_text(path)?).map_err(|e| anyhow!("{}:{e}", path.display()))?,
        None => Vec::new(),
    };
    let enclaves_name = args.enclaves.as_ref().map(|p| p.display().to_string());
    let mut net = NetConfig::default();
    if !args.ifaces.is_empty() {
        net.interfaces.clear();
    }
    for iface in &args.ifaces {
        net.set_interface(iface)?;
    }
    for local in &args.locals {
        net.add_local(local)?;
    }
    for route in &args.routes {
        net.add_route(route)?;
    }
    net.default_iface = args.default_iface.clone();
    net.in_iface = args.in_iface.clone();
    let backend = match args.backend {
        BackendArg::Legacy => Backend::Legacy,
        BackendArg::Nft => Backend::Nft,
    };
    let options = Options { net, checksum: !args.no_checksum, capacity: args.capacity, backend };
    let event_error = |e: seng_sim::engine::SimError| match (&e, &enclaves_name) {
        (seng_sim::engine::SimError::Event { .. }, Some(file)) => anyhow!("{file}:{e}"),
        _ => anyhow!(e),
    };
    let mut sim = Simulator::new(&rules, &script, &options).map_err(event_error)?;
    let capture_name = args.capture.display().to_string();
    let capture = Capture::new(read(&args.capture)?).map_err(|e| anyhow!("{capture_name}: {e}"))?;

    // A progress bar only for long replays, and only for a person watching.
    let bar = (io::stderr().is_terminal() && capture.size() >= 64 << 20).then(|| {
        let bar = indicatif::ProgressBar::new(capture.size() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |offset: usize| {
        if let Some(bar) = &bar {
            bar.set_position(offset as u64);
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let started = Instant::now();
    let trace: Option<&mut dyn Write> = if args.trace { Some(&mut out) } else { None };
    seng_sim::replay(&capture, &mut sim, trace, &mut progress).map_err(|e| match e {
        seng_sim::engine::SimError::Capture(c) => anyhow!("{capture_name}: {c}"),
        other => event_error(other),
    })?;
    let elapsed = started.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let inputs = Inputs { capture: capture_name, rules: rules_name, enclaves: enclaves_name };
    let written = (|| {
        if args.trace {
            writeln!(out)?;
        }
        if args.json {
            writeln!(out, "{}", report::json(&inputs, &rules, &sim))?;
        } else {
            write!(out, "{}", report::text(&inputs, &rules, &sim))?;
        }
        out.flush()
    })();
    written.context("writing the report")?;
    let frames = sim.stats().frames;
    let seconds = elapsed.as_secs_f64();
    eprintln!(
        "seng-sim: {frames} frames in {:.3} s ({:.2} M packets/s)",
        seconds,
        if seconds > 0.0 { frames as f64 / seconds / 1e6 } else { 0.0 }
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Replay(args) => replay(args),
        Command::GenExample { out } => std::fs::write(out, seng_sim::gen::example_capture()).with_context(|| out.display().to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`| head`) is not worth a message.
            if e.chain().any(|cause| cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)) {
                return ExitCode::SUCCESS;
            }
            eprintln!("seng-sim: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
