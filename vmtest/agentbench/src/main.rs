// SPDX-License-Identifier: GPL-2.0-only
//! `seng-agent-bench`: the timing side of the agent benchmarks (`vmtest/bench/agent-*.sh`,
//! issue 16). One process holds sockets in several gateways' network namespaces, so both ends
//! of a measurement read the same monotonic clock.
//!
//! - `gen BASE COUNT`: a `seng restore` script of COUNT enclaves from the IPv4 address BASE on
//!   (16 applications with one category each, 64 hosts);
//! - `propagation --from NS --to NS BASE COUNT --rate R`: registers COUNT enclaves from BASE at
//!   NS `from` (its local SENG server's part), R per second, each acknowledged before the next,
//!   while listening to the events of `to`'s table; then unregisters them the same way. Prints
//!   the delay from each change's acknowledgement at `from` to its event at `to` (p50, p99,
//!   max) and how many never arrived;
//! - `late-join --netns NS --expect N -- CMD...`: starts CMD (the agent of NS), prints how long
//!   until NS's table holds N enclaves, then stops CMD with SIGTERM. CMD's log lines are
//!   printed with the time since its start, so the late join's phases (connection, snapshot,
//!   the module's replace) show where the time goes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use seng_nl::{
    Category, Client, Event, Measurement, Operation, Origin, Registration, Subscription,
};

#[derive(Parser)]
#[command(
    name = "seng-agent-bench",
    about = "Propagation delay and late join of seng agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a `seng restore` script of COUNT enclaves from BASE on.
    Gen { base: Ipv4Addr, count: u32 },
    /// Change enclaves at one gateway and time their arrival in another's table.
    Propagation {
        /// The namespace whose local part changes.
        #[arg(long)]
        from: String,
        /// The namespace whose table is watched.
        #[arg(long)]
        to: String,
        base: Ipv4Addr,
        count: u32,
        /// Changes per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// How long to wait for the last change to arrive.
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Start an agent and time until its namespace's table holds N enclaves.
    LateJoin {
        #[arg(long)]
        netns: String,
        #[arg(long)]
        expect: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Gen { base, count } => {
            gen(base, count);
            Ok(())
        }
        Cmd::Propagation {
            from,
            to,
            base,
            count,
            rate,
            wait_secs,
        } => propagation(
            &from,
            &to,
            base,
            count,
            rate,
            Duration::from_secs(wait_secs),
        ),
        Cmd::LateJoin {
            netns,
            expect,
            timeout_secs,
            command,
        } => late_join(&netns, expect, Duration::from_secs(timeout_secs), &command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seng-agent-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Enclave `i` from `base`: one of 16 applications (category `cat-N`), one of 64 hosts.
fn enclave(base: Ipv4Addr, i: u32) -> Registration {
    let app = (i % 16) as u8;
    let category =
        Category::new(format!("cat-{app}").as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    Registration {
        addr: IpAddr::V4(Ipv4Addr::from(u32::from(base).wrapping_add(i))),
        app: Measurement([app + 1; 32]),
        host: IpAddr::V4(Ipv4Addr::new(172, 16, (i % 64) as u8, 1)),
        categories: vec![category],
        origin: Origin::Local,
    }
}

fn gen(base: Ipv4Addr, count: u32) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..count {
        let _ = writeln!(out, "{}", Operation::Register(vec![enclave(base, i)]));
    }
}

/// Runs `f` in the network namespace `/run/netns/NAME` (the calling thread only): sockets it
/// opens stay there.
fn in_netns<T>(name: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    let own = File::open("/proc/thread-self/ns/net")
        .map_err(|e| format!("cannot open own namespace: {e}"))?;
    let path = format!("/run/netns/{name}");
    let target = File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let enter = |fd: &File, what: &str| {
        // SAFETY: setns on a namespace file descriptor we hold open.
        match unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } {
            0 => Ok(()),
            _ => Err(format!(
                "cannot enter {what}: {}",
                std::io::Error::last_os_error()
            )),
        }
    };
    enter(&target, &path)?;
    let value = f();
    enter(&own, "the initial namespace")?;
    Ok(value)
}

/// A change, as both ends see it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Change {
    Add(IpAddr),
    Del(IpAddr),
}

fn propagation(
    from: &str,
    to: &str,
    base: Ipv4Addr,
    count: u32,
    rate: u32,
    wait: Duration,
) -> Result<(), String> {
    let subscription =
        in_netns(to, Subscription::new)?.map_err(|e| format!("cannot listen in {to}: {e}"))?;
    let mut client =
        in_netns(from, Client::connect)?.map_err(|e| format!("cannot connect in {from}: {e}"))?;
    let (tx, rx) = mpsc::channel::<(Change, Instant)>();
    let (lost_tx, lost_rx) = mpsc::channel::<()>();
    // The listener stamps each event as it arrives; matching happens afterwards.
    let listened = to.to_string();
    thread::spawn(move || {
        for event in subscription {
            let now = Instant::now();
            let changes = match event {
                Ok(Event::Change(Operation::Register(list))) => {
                    list.iter().map(|r| Change::Add(r.addr)).collect()
                }
                Ok(Event::Change(Operation::Unregister { addrs, .. })) => {
                    addrs.into_iter().map(Change::Del).collect()
                }
                Ok(Event::Lost) => {
                    let _ = lost_tx.send(());
                    Vec::new()
                }
                Ok(_) => Vec::new(),
                Err(e) => {
                    eprintln!("seng-agent-bench: events of {listened}: {e}");
                    return;
                }
            };
            for c in changes {
                if tx.send((c, now)).is_err() {
                    return;
                }
            }
        }
    });
    let mut arrivals: HashMap<Change, Instant> = HashMap::new();
    for (phase, del) in [("registrations", false), ("unregistrations", true)] {
        let mut acks: Vec<(Change, Instant)> = Vec::with_capacity(count as usize);
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate.max(1)));
            if let Some(left) = due.checked_duration_since(Instant::now()) {
                thread::sleep(left);
            }
            let e = enclave(base, i);
            let change = match del {
                false => client.register(&e).map(|()| Change::Add(e.addr)),
                true => client.unregister(e.addr).map(|()| Change::Del(e.addr)),
            }
            .map_err(|err| format!("{phase} at {from}: {} : {err}", e.addr))?;
            acks.push((change, Instant::now()));
        }
        let took = start.elapsed();
        let deadline = Instant::now() + wait;
        let missing = |arrivals: &HashMap<Change, Instant>| {
            acks.iter()
                .filter(|(c, _)| !arrivals.contains_key(c))
                .count()
        };
        while missing(&arrivals) > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match rx.recv_timeout(left) {
                Ok((c, t)) => {
                    arrivals.entry(c).or_insert(t);
                }
                Err(_) => break,
            }
        }
        let mut delays: Vec<Duration> = acks
            .iter()
            .filter_map(|(c, ack)| arrivals.get(c).map(|t| t.saturating_duration_since(*ack)))
            .collect();
        delays.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pct = |p: f64| {
            delays
                .get(((p * delays.len() as f64).ceil() as usize).saturating_sub(1))
                .copied()
                .map(ms)
        };
        println!(
            "{phase}: {count} at {from} in {:.2} s ({:.0}/s); at {to}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, never arrived {}",
            took.as_secs_f64(),
            f64::from(count) / took.as_secs_f64(),
            pct(0.50).unwrap_or(f64::NAN),
            pct(0.99).unwrap_or(f64::NAN),
            pct(1.0).unwrap_or(f64::NAN),
            missing(&arrivals),
        );
    }
    if lost_rx.try_recv().is_ok() {
        println!("note: the listener at {to} lost events (receive buffer overrun)");
    }
    Ok(())
}

fn late_join(
    netns: &str,
    expect: u64,
    timeout: Duration,
    command: &[String],
) -> Result<(), String> {
    let mut client =
        in_netns(netns, Client::connect)?.map_err(|e| format!("cannot connect in {netns}: {e}"))?;
    let before = client.stats().map_err(|e| e.to_string())?.enclaves;
    let start = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", command[0]))?;
    let log = child.stderr.take().map(|stderr| {
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("late join: +{:.3} s: {line}", start.elapsed().as_secs_f64());
                eprintln!("{line}");
            }
        })
    });
    let mut first = None;
    let result = loop {
        let now = client.stats().map_err(|e| e.to_string())?.enclaves;
        if first.is_none() && now > before {
            first = Some(start.elapsed());
        }
        if now >= expect {
            break Ok((start.elapsed(), cpu_times(child.id()), peak_rss_kib(child.id())));
        }
        if start.elapsed() > timeout {
            break Err(format!(
                "{netns} holds {now} of {expect} enclaves after {} s",
                timeout.as_secs()
            ));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "the agent exited ({status}) with {now} of {expect} enclaves loaded"
            ));
        }
        thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    if let Some(log) = log {
        let _ = log.join();
    }
    let (all, cpu, hwm) = result?;
    println!(
        "late join at {netns}: {} entries in {:.3} s from the agent's start (first after {:.3} s)",
        expect - before.min(expect),
        all.as_secs_f64(),
        first.unwrap_or(all).as_secs_f64()
    );
    if let Some((user, system, faults)) = cpu {
        // The rest of the time is etcd's, the kernel's and the wait between them. Under TCG
        // each first touch of a page costs a fault and its zeroing: hence faults and peak RSS.
        let hwm = hwm.map_or_else(|| "?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!("late join at {netns}: the agent's CPU time by then: user {user:.2} s, system {system:.2} s; minor faults {faults}, VmHWM {hwm} MiB");
    }
    Ok(())
}

/// User and system CPU seconds and minor faults of process `pid` so far, from /proc/PID/stat.
fn cpu_times(pid: u32) -> Option<(f64, f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |n: usize| fields.get(n)?.parse::<f64>().ok().map(|t| t / ticks);
    // minflt, utime and stime are fields 10, 14 and 15 of stat(5); the state (field 3) is
    // fields[0].
    Some((field(11)?, field(12)?, fields.get(7)?.parse().ok()?))
}

/// Peak resident set of process `pid` in KiB, VmHWM of /proc/PID/status.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}
