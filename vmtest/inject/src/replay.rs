// SPDX-License-Identifier: GPL-2.0-only
//! `inject pcap`: replays a capture into the gateway's stack in capture order, the way the
//! simulator replays it, so the kernel's counters can be compared with the simulator's.
//!
//! - A packet whose source is one of the gateway's own addresses (the kernel's routing says
//!   RTN_LOCAL) was sent by the gateway: it goes out through a raw socket and `ip_local_out`,
//!   i.e. OUTPUT (and, to a local destination, `lo` and INPUT).
//! - Any other packet arrives on the tun device its source address routes to (or `--in-dev`):
//!   PREROUTING, then INPUT or FORWARD.
//! - Timed lines (`@SECONDS`) of the enclave script are applied over netlink before the first
//!   packet at least that long after the first frame, exactly the simulator's rule; the lines
//!   left after the last packet are applied at the end. Untimed lines are not applied here:
//!   `seng restore` loads them before the replay.
//!
//! Replayed packets carry a firewall mark so that policy routing can blackhole everything else
//! the stack sends (TCP resets, ICMP errors and echo replies to the replayed traffic): those
//! are not in the capture, and the simulator does not send them either.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use seng_core::script::{self, ScriptLine};
use seng_nl::Client;
use seng_sim::capture::{self, Capture, Payload};
use seng_sim::packet;

use crate::raw::RawSender;
use crate::route::{Route, Router};
use crate::tun::Tun;
use inject::ReplaySummary as Summary;

/// What to replay and how.
#[derive(clap::Args)]
pub struct PcapArgs {
    /// The capture (pcap or pcapng, any link type seng-sim reads).
    pub capture: PathBuf,
    /// A tun device to attach (repeatable): every interface packets arrive on or leave through.
    /// Attaching also gives the device its carrier, so routes through it are usable.
    #[arg(long = "dev", required = true, value_name = "NAME")]
    pub devs: Vec<String>,
    /// The enclave script; its timed lines are applied during the replay.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Write every arriving packet into this device instead of the one its source routes to
    /// (as seng-sim's `--in-iface`).
    #[arg(long, value_name = "NAME")]
    pub in_dev: Option<String>,
    /// Firewall mark of the replayed packets sent through OUTPUT.
    #[arg(long, default_value = "0x5e9", value_parser = parse_mark)]
    pub mark: u32,
    /// Write the counts as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// How many packets should leave the gateway (forwarded or sent, loopback included), as the
    /// simulator predicts: the devices are read until that many have come out or
    /// [`SETTLE_LIMIT`] passes, so a transmission the loaded kernel deferred is not missed.
    #[arg(long, value_name = "N")]
    pub expect_out: Option<u64>,
}

fn parse_mark(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?}: {e}"))
}

/// Tun devices are drained this often (in packets), well before their 500-packet queue fills.
const DRAIN_EVERY: u64 = 32;

/// After the last packet, the devices are read until they have been quiet this long.
const SETTLE: Duration = Duration::from_millis(200);

/// The longest wait for packets that `--expect-out` says are still to come out.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The timed lines of the script at `path`, checked as the simulator checks them.
fn timed_events(path: &PathBuf) -> Result<Vec<ScriptLine>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let lines = script::parse(&text).map_err(|e| anyhow!("{}:{e}", path.display()))?;
    let mut timed = Vec::new();
    for line in lines {
        match line.at {
            Some(_) => timed.push(line),
            None if !timed.is_empty() => bail!(
                "{}:{}: untimed command after a timed one",
                path.display(),
                line.line_no
            ),
            None => {}
        }
    }
    Ok(timed)
}

struct Events {
    lines: Vec<ScriptLine>,
    next: usize,
    client: Option<Client>,
}

impl Events {
    /// Applies every line due at `since_first` (all of them with `all`); returns how many.
    fn due(&mut self, since_first: Duration, all: bool) -> Result<u64> {
        let mut applied = 0;
        while let Some(line) = self.lines.get(self.next) {
            if !all && line.at.is_some_and(|at| at > since_first) {
                break;
            }
            let client = match &mut self.client {
                Some(c) => c,
                None => self.client.insert(
                    Client::connect().context("cannot reach seng.ko for the timed events")?,
                ),
            };
            client.apply(&line.operation)
                .with_context(|| format!("event of line {} ({line}) failed", line.line_no))?;
            self.next += 1;
            applied += 1;
        }
        Ok(applied)
    }
}

/// The IP packet without link padding: the length its header gives, when the header is sane.
fn ip_length(data: &[u8]) -> Option<usize> {
    let len = match data.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*data.get(4)?, *data.get(5)?])),
        _ => return None,
    };
    (len <= data.len()).then_some(len)
}

/// The source and destination of a packet whose addresses can be read at all.
fn addresses(data: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match data.first()? >> 4 {
        4 if data.len() >= 20 => {
            let a = |o: usize| IpAddr::from([data[o], data[o + 1], data[o + 2], data[o + 3]]);
            Some((a(12), a(16)))
        }
        6 if data.len() >= 40 => {
            let a =
                |o: usize| IpAddr::from(<[u8; 16]>::try_from(&data[o..o + 16]).unwrap_or_default());
            Some((a(8), a(24)))
        }
        _ => None,
    }
}

/// Runs `inject pcap`.
pub fn run(args: &PcapArgs) -> Result<()> {
    let name = args.capture.display().to_string();
    let bytes = std::fs::read(&args.capture).with_context(|| name.clone())?;
    let capture = Capture::new(bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    let mut events = Events {
        lines: match &args.events {
            Some(path) => timed_events(path)?,
            None => Vec::new(),
        },
        next: 0,
        client: None,
    };
    let mut tuns = args
        .devs
        .iter()
        .map(|d| Tun::open(d, true))
        .collect::<Result<Vec<_>>>()?;
    let forced = match &args.in_dev {
        Some(dev) => Some(
            tuns.iter()
                .position(|t| &t.name == dev)
                .with_context(|| format!("--in-dev {dev} is not one of the --dev devices"))?,
        ),
        None => None,
    };
    let received_before = tuns
        .iter()
        .map(Tun::rx_packets)
        .collect::<Result<Vec<_>>>()?;
    let mut router = Router::new(args.mark)?;
    let mut raw = RawSender::new(args.mark)?;
    let mut sum = Summary::default();
    let mut buf = vec![0u8; 65536];
    let mut first_ts = None;
    for frame in capture.frames() {
        let frame = frame.map_err(|e| anyhow!("{name}: {e}"))?;
        sum.frames += 1;
        let first = *first_ts.get_or_insert(frame.ts_ns);
        let since_first = Duration::from_nanos(frame.ts_ns.saturating_sub(first));
        sum.events_applied += events.due(since_first, false)?;
        let at = |what: String| anyhow!("{name}: packet {}: {what}", frame.number);
        let (data, wire_len, family) = match capture::payload(&frame).map_err(at)? {
            Payload::Ip {
                data,
                wire_len,
                family,
            } => (data, wire_len, family),
            Payload::Other(_) => {
                sum.non_ip += 1;
                continue;
            }
        };
        let (packet, malformed) = match packet::parse(data, wire_len, family) {
            Ok(p) if !p.complete => {
                return Err(at(format!("only {} of its {} bytes were captured; replay needs whole packets (capture with -s 0)", data.len(), p.len)));
            }
            Ok(p) => (&data[..p.len as usize], false),
            Err(_) => (ip_length(data).map_or(data, |len| &data[..len]), true),
        };
        let Some((src, dst)) = addresses(packet) else {
            return Err(at("not even its IP addresses can be read; the kernel could not be given it faithfully".into()));
        };
        let route = match forced {
            Some(_) => None,
            None => Some(router.route(src).map_err(|e| at(format!("{e:#}")))?),
        };
        match route {
            Some(Route::Local) => {
                if malformed {
                    // The kernel would repair its header before OUTPUT; the stack never sends one.
                    return Err(at(format!("sent by the gateway ({src}) but malformed; it cannot go through OUTPUT as it is")));
                }
                raw.send(packet, dst).map_err(|e| at(format!("{e:#}")))?;
                if router.route(dst).map_err(|e| at(format!("{e:#}")))? == Route::Local {
                    sum.loopback += 1;
                }
            }
            via => {
                let index = match (forced, via) {
                    (Some(i), _) => i,
                    (None, Some(Route::Via(ifindex))) => tuns.iter().position(|t| t.ifindex == ifindex).ok_or_else(|| {
                        at(format!("its source {src} routes to interface {ifindex}, which is none of the --dev devices {:?}", args.devs))
                    })?,
                    (None, _) => unreachable!("local routes are handled above"),
                };
                tuns[index]
                    .inject(packet)
                    .map_err(|e| at(format!("{e:#}")))?;
                if malformed {
                    sum.malformed_arriving += 1;
                }
            }
        }
        sum.ip_packets += 1;
        if sum.ip_packets % DRAIN_EVERY == 0 {
            for t in &mut tuns {
                t.drain(&mut buf)?;
            }
        }
    }
    sum.events_after_capture = events.due(Duration::MAX, true)?;
    let deadline = std::time::Instant::now() + SETTLE_LIMIT;
    loop {
        Tun::settle(&mut tuns, &mut buf, SETTLE)?;
        let out: u64 = tuns.iter().map(|t| t.sent_out).sum::<u64>() + sum.loopback;
        if args.expect_out.is_none_or(|expected| out >= expected) || std::time::Instant::now() >= deadline {
            break;
        }
    }
    // Every packet written must have been taken in by the kernel.
    for (t, before) in tuns.iter().zip(received_before) {
        let received = t.rx_packets()? - before;
        if received != t.written {
            bail!(
                "{} packets were written into {}, but the kernel counted {received} received",
                t.written,
                t.name
            );
        }
    }
    for t in &tuns {
        sum.arrived.insert(t.name.clone(), t.written);
        sum.sent_out.insert(t.name.clone(), t.sent_out);
    }
    sum.output_sent = raw.sent;
    sum.output_refused = raw.refused;
    let arrived: Vec<String> = sum
        .arrived
        .iter()
        .map(|(d, n)| format!("{n} into {d}"))
        .collect();
    let out: Vec<String> = sum
        .sent_out
        .iter()
        .map(|(d, n)| format!("{n} out of {d}"))
        .collect();
    println!(
        "inject: {} frames: {} IP packets replayed ({}; {} through OUTPUT, {} of them refused, {} to the gateway itself), \
         {} not IP; {} timed events applied, {} after the last packet; the kernel sent {}",
        sum.frames,
        sum.ip_packets,
        arrived.join(", "),
        sum.output_sent + sum.output_refused,
        sum.output_refused,
        sum.loopback,
        sum.non_ip,
        sum.events_applied,
        sum.events_after_capture,
        out.join(", "),
    );
    if let Some(path) = &args.summary {
        let text = serde_json::to_string_pretty(&sum)?;
        std::fs::write(path, text + "\n").with_context(|| path.display().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lengths_and_addresses() {
        let mut v4 = vec![0u8; 24];
        v4[0] = 0x45;
        v4[3] = 20;
        v4[12..16].copy_from_slice(&[192, 168, 28, 10]);
        v4[16..20].copy_from_slice(&[192, 168, 28, 1]);
        assert_eq!(ip_length(&v4), Some(20), "Ethernet padding is cut");
        assert_eq!(
            addresses(&v4),
            Some((
                "192.168.28.10".parse().unwrap(),
                "192.168.28.1".parse().unwrap()
            ))
        );
        v4[2] = 1;
        assert_eq!(
            ip_length(&v4),
            None,
            "a length beyond the data is not trusted"
        );
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        v6[23] = 0x10;
        v6[39] = 1;
        assert_eq!(ip_length(&v6), Some(48));
        assert_eq!(
            addresses(&v6).map(|(s, d)| (s.to_string(), d.to_string())),
            Some(("::10".into(), "::1".into()))
        );
        assert_eq!(addresses(&v6[..39]), None);
        assert_eq!(addresses(&[0x10]), None);
    }

    #[test]
    fn marks_and_timed_lines() {
        assert_eq!(parse_mark("0x5e9"), Ok(0x5e9));
        assert_eq!(parse_mark("17"), Ok(17));
        assert!(parse_mark("0xzz").is_err());
        let dir = std::env::temp_dir().join(format!("inject-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("script");
        let app = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";
        std::fs::write(&path, format!("enclave add 192.168.28.10 --app {app} --host 10.0.0.5\n@1.5 enclave del 192.168.28.10\n@2 flush\n")).unwrap();
        let timed = timed_events(&path).unwrap();
        assert_eq!(timed.iter().map(|l| l.line_no).collect::<Vec<_>>(), [2, 3]);
        std::fs::write(&path, "@1 flush\nflush\n").unwrap();
        assert!(timed_events(&path)
            .unwrap_err()
            .to_string()
            .contains(":2: untimed command after a timed one"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
