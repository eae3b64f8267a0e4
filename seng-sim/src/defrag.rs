// SPDX-License-Identifier: GPL-2.0-only
//! IP fragment reassembly as Linux does it before any table sees a packet: with conntrack in
//! use, nf_defrag_ipv4 and nf_defrag_ipv6 gather fragments at PREROUTING and OUTPUT (priority
//! -400, before raw and conntrack), so every table sees a fragmented datagram once, whole, when
//! its last fragment arrives; fragments of a datagram that never completes are held and never
//! evaluated. This module owns that step and follows Linux 6.1 (`ip_fragment.c`,
//! `inet_fragment.c`, `nf_conntrack_reasm.c`):
//!
//! - Datagrams are keyed as the kernel keys them: the defrag user (arriving or sent by the
//!   gateway), source, destination, identification, and for IPv4 the protocol, for IPv6 the
//!   interface (nf_conntrack_reasm keys on it; IPv4 only on an l3mdev master, which the model
//!   has none of).
//! - Fragments are kept as the kernel's runs: one arriving right after the highest fragment
//!   extends its run, any other starts a run. A fragment inside one run is a duplicate (dropped,
//!   the datagram kept), one that covers data held otherwise overlaps: the whole datagram is
//!   discarded (RFC 5722 for IPv6, and IPv4 since Linux 4.19).
//! - IPv4 (`ip_frag_queue`): a last fragment that ends before data held, or elsewhere than an
//!   earlier last fragment, data beyond the end a last fragment set, an empty fragment: the
//!   datagram is discarded. A non-last fragment whose length is not a multiple of 8 is cut
//!   down to one. A datagram longer than 65535 bytes is discarded when it completes.
//! - IPv6 (`nf_ct_frag6_queue`): the same end checks drop only the fragment and keep the
//!   datagram; a fragment ending beyond 65535 is dropped; a non-last fragment whose length is
//!   not a multiple of 8 discards the datagram and is itself passed on as it is (to be refused
//!   by the IPv6 stack after PREROUTING), as is a first fragment without the whole upper-layer
//!   header (RFC 8200, 4.5). A datagram without the fragment header is longer than 65535
//!   bytes: discarded.
//! - ECN codepoints that cannot be mixed (not-ECT with any other) discard the datagram when it
//!   completes. A datagram expires 30 s (IPv4, `ipfrag_time`) or 60 s (IPv6,
//!   `nf_conntrack_frag6_timeout`) after its first fragment.
//! - The reassembled datagram has the first fragment's header (IPv6: with its unfragmentable
//!   extension headers, without the fragment header), the length of the whole, and the
//!   fragments' data in place. Sent on, it leaves fragmented again after POSTROUTING, which no
//!   rule sees, as the fragments it came as: `ip_do_fragment` and `ip6_fragment` keep the
//!   received fragments (their geometry always fits, as they came through an interface of the
//!   same MTU).
//!
//! Not modelled: the memory thresholds (`ipfrag_high_thresh`, 4 MB), `ipfrag_max_dist` (a
//! datagram whose source sent more than 64 other fragments between two of its own starts
//! over) and forwarding to an interface of a smaller MTU than the fragments came by.

use std::collections::{BTreeMap, HashMap};

use seng_core::Family;

use crate::packet::{self, Addr, Packet};

/// How long an IPv4 datagram may take to complete (`ipfrag_time`), in ns.
pub const IPV4_TIMEOUT_NS: u64 = 30_000_000_000;
/// How long an IPv6 datagram may take to complete (`nf_conntrack_frag6_timeout`), in ns.
pub const IPV6_TIMEOUT_NS: u64 = 60_000_000_000;

/// IPv4 "more fragments" flag and offset mask.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// IPv6 fragment header: next header value and "more fragments" flag.
const NEXTHDR_FRAGMENT: u8 = 44;
const IP6_MF: u16 = 0x0001;

/// Why reassembly dropped a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refused {
    /// All its data is already held.
    Duplicate,
    /// It overlaps data held.
    Overlap,
    /// A last fragment ending before data held, or elsewhere than an earlier last fragment.
    EndMismatch,
    /// Data beyond the end a last fragment set.
    BeyondEnd,
    /// No data.
    Empty,
    /// The datagram would be longer than 65535 bytes.
    TooLong,
    /// ECN codepoints that cannot be mixed (not-ECT with ECT or CE).
    Ecn,
    /// Shorter than its own fragment header.
    Truncated,
}

impl Refused {
    /// Words for reports.
    pub fn text(self) -> &'static str {
        match self {
            Refused::Duplicate => "duplicate",
            Refused::Overlap => "overlapping",
            Refused::EndMismatch => "last fragment disagreeing with the datagram's end",
            Refused::BeyondEnd => "beyond the end a last fragment set",
            Refused::Empty => "empty",
            Refused::TooLong => "datagram longer than 65535 bytes",
            Refused::Ecn => "ECN codepoints that cannot be mixed",
            Refused::Truncated => "shorter than its fragment header",
        }
    }
}

/// Why a fragment went on unreassembled (IPv6 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassedOn {
    /// A non-last fragment whose length is not a multiple of 8: its datagram is discarded.
    Unaligned,
    /// A first fragment without the whole upper-layer header.
    HeadersSplit,
}

impl PassedOn {
    /// Words for reports.
    pub fn text(self) -> &'static str {
        match self {
            PassedOn::Unaligned => "non-last IPv6 fragment not a multiple of 8 bytes (its datagram discarded)",
            PassedOn::HeadersSplit => "first IPv6 fragment without the whole upper-layer header",
        }
    }
}

/// What reassembly made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a fragment: evaluate it.
    Whole,
    /// A fragment the kernel passes on as it is: evaluate it.
    PassedOn(PassedOn),
    /// Held until its datagram completes.
    Held {
        /// Fragments its datagram has now.
        fragments: u32,
    },
    /// Dropped; `discarded`: with its datagram and every fragment held for it.
    Dropped {
        /// Why.
        why: Refused,
        /// The whole datagram went.
        discarded: bool,
    },
    /// It completed its datagram, now in [`Defrag::datagram`]: evaluate that.
    Reassembled {
        /// Fragments it was made of: sent on, it leaves as as many again.
        fragments: u32,
    },
}

/// What reassembly counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DefragStats {
    /// Fragments held for a datagram (all but the one completing it).
    pub held: u64,
    /// Datagrams reassembled, each evaluated once.
    pub reassembled: u64,
    /// Fragments dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Datagrams discarded with the fragments held for them, by reason.
    pub discarded: BTreeMap<String, u64>,
    /// Fragments passed on as they are and evaluated, by reason.
    pub passed_on: BTreeMap<String, u64>,
    /// Datagrams whose time ran out.
    pub expired: u64,
    /// Reassembled datagrams that left the gateway (forwarded), fragmented again after
    /// POSTROUTING.
    pub refragmented: u64,
    /// The fragments those left as (the fragments they came as).
    pub fragments_out: u64,
    /// Datagrams still incomplete at the end.
    pub incomplete: u64,
}

impl DefragStats {
    /// Fragments taken in and not evaluated as packets of their own: held or dropped.
    pub fn consumed(&self) -> u64 {
        self.held + self.dropped.values().sum::<u64>()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    family: Family,
    /// The defrag user: PREROUTING (false) or OUTPUT (true).
    own: bool,
    src: Addr,
    dst: Addr,
    id: u32,
    /// IPv4: the protocol. IPv6: the interface.
    extra: u8,
}

/// A datagram being reassembled (the kernel's `inet_frag_queue`).
struct Queue {
    started_ns: u64,
    /// The fragmentable data, by offset.
    data: Vec<u8>,
    /// Runs of contiguous fragments, sorted, disjoint.
    runs: Vec<(u32, u32)>,
    /// The datagram's end as known so far.
    len: u32,
    last_in: bool,
    /// Data bytes held.
    meat: u32,
    fragments: u32,
    /// The longest fragment taken in (the kernel's `max_size`, for `frag_max_size`).
    largest: u32,
    /// ECN codepoints seen, one bit each.
    ecn: u8,
    /// The first fragment's header: IPv4's, or IPv6's with its unfragmentable extension
    /// headers (without the fragment header) and where its next-header byte is.
    head: Option<(Vec<u8>, usize)>,
    /// IPv6: the fragment header's next header (from the first fragment).
    next: u8,
}

enum Insert {
    Ok,
    Duplicate,
    Overlap,
}

/// `inet_frag_queue_insert`: where `[offset, end)` goes among the runs.
fn insert(runs: &mut Vec<(u32, u32)>, offset: u32, end: u32) -> Insert {
    match runs.last_mut() {
        None => {
            runs.push((offset, end));
            return Insert::Ok;
        }
        Some(last) if last.1 < end => {
            // The common case: after the highest fragment.
            if offset < last.1 {
                return Insert::Overlap;
            }
            if offset == last.1 {
                last.1 = end;
            } else {
                runs.push((offset, end));
            }
            return Insert::Ok;
        }
        Some(_) => {}
    }
    if let Some(&(start, run_end)) = runs.iter().find(|(start, run_end)| end > *start && offset < *run_end) {
        return if offset >= start && end <= run_end { Insert::Duplicate } else { Insert::Overlap };
    }
    let at = runs.partition_point(|(start, _)| *start < offset);
    runs.insert(at, (offset, end));
    Insert::Ok
}

/// One fragment as the reassembly reads it.
struct Fragment<'a> {
    key: Key,
    offset: u32,
    end: u32,
    more: bool,
    ecn: u8,
    /// Its whole length, headers included.
    len: u32,
    /// Its data (before any cut to a multiple of 8).
    data: &'a [u8],
    /// Its header up to the data (IPv6: up to the fragment header), and where the next-header
    /// byte pointing at the fragment header is (IPv6).
    head: &'a [u8],
    nhoff: usize,
    next: u8,
}

/// The reassembly state of both families.
#[derive(Default)]
pub struct Defrag {
    queues: HashMap<Key, Queue>,
    datagram: Vec<u8>,
    /// Whether `datagram`, sent on, leaves fragmented again.
    refragments: bool,
}

impl Defrag {
    /// An empty state.
    pub fn new() -> Defrag {
        Defrag::default()
    }

    /// The datagram the last [`Outcome::Reassembled`] completed.
    pub fn datagram(&self) -> &[u8] {
        &self.datagram
    }

    /// Whether that datagram, forwarded or sent, leaves as the fragments it came as. IPv4's
    /// ip_finish_output fragments every datagram that carries a `frag_max_size`; IPv6's
    /// __ip6_finish_output only one longer than its longest fragment, so a datagram whose
    /// fragment headers made up its excess (a short last fragment) leaves whole.
    pub fn refragments(&self) -> bool {
        self.refragments
    }

    /// Takes in packet `p` (parsed from `bytes`, the whole IP packet) at `now_ns`; `own` for
    /// the gateway's own (OUTPUT), `iface` the interface it arrived on (or leaves by).
    pub fn take(&mut self, p: &Packet<'_>, bytes: &[u8], own: bool, iface: u8, now_ns: u64, stats: &mut DefragStats) -> Outcome {
        if !p.fragment {
            return Outcome::Whole;
        }
        self.expire(now_ns, stats);
        let fragment = match p.family {
            Family::Ipv4 => v4_fragment(p, bytes, own),
            Family::Ipv6 => match v6_fragment(p, bytes, own, iface) {
                Ok(f) => f,
                Err(Some(why)) => return pass_on(why, stats),
                Err(None) => return dropped(Refused::Truncated, false, stats),
            },
        };
        let outcome = self.queue(fragment, p.family, now_ns, stats);
        if let Outcome::PassedOn(why) = outcome {
            return pass_on(why, stats);
        }
        outcome
    }

    /// At the end of the capture (`now_ns`): datagrams whose time ran out by then expired, the
    /// others are counted incomplete.
    pub fn finish(&mut self, now_ns: u64, stats: &mut DefragStats) {
        self.expire(now_ns, stats);
        stats.incomplete = self.queues.len() as u64;
    }

    fn expire(&mut self, now_ns: u64, stats: &mut DefragStats) {
        let before = self.queues.len();
        self.queues.retain(|key, q| {
            let timeout = match key.family {
                Family::Ipv4 => IPV4_TIMEOUT_NS,
                Family::Ipv6 => IPV6_TIMEOUT_NS,
            };
            now_ns.saturating_sub(q.started_ns) <= timeout
        });
        stats.expired += (before - self.queues.len()) as u64;
    }

    /// `ip_frag_queue` / `nf_ct_frag6_queue`, then the reassembly when complete.
    fn queue(&mut self, f: Fragment<'_>, family: Family, now_ns: u64, stats: &mut DefragStats) -> Outcome {
        let v4 = family == Family::Ipv4;
        let q = self.queues.entry(f.key).or_insert_with(|| Queue {
            started_ns: now_ns,
            data: Vec::new(),
            runs: Vec::new(),
            len: 0,
            last_in: false,
            meat: 0,
            fragments: 0,
            largest: 0,
            ecn: 0,
            head: None,
            next: 0,
        });
        let (offset, mut end) = (f.offset, f.end);
        // IPv4 datagrams are discarded by what only drops an IPv6 fragment.
        let refuse = |why: Refused| (why, v4);
        let checked = (|| {
            if !v4 && end > 65535 {
                return Err((Refused::TooLong, false));
            }
            if !f.more {
                if end < q.len || (q.last_in && end != q.len) {
                    return Err(refuse(Refused::EndMismatch));
                }
                q.last_in = true;
                q.len = end;
            } else {
                if end & 7 != 0 {
                    if !v4 {
                        return Ok(false);
                    }
                    end &= !7;
                }
                if end > q.len {
                    if q.last_in {
                        return Err(refuse(Refused::BeyondEnd));
                    }
                    q.len = end;
                }
            }
            if end == offset {
                return Err(refuse(Refused::Empty));
            }
            match insert(&mut q.runs, offset, end) {
                Insert::Ok => Ok(true),
                Insert::Duplicate => Err((Refused::Duplicate, false)),
                Insert::Overlap => Err((Refused::Overlap, true)),
            }
        })();
        // A datagram discarded before it held anything counts as no datagram.
        let held_some = q.fragments > 0;
        match checked {
            Ok(true) => {}
            Ok(false) => {
                self.queues.remove(&f.key);
                if held_some {
                    *stats.discarded.entry(PassedOn::Unaligned.text().to_string()).or_default() += 1;
                }
                return Outcome::PassedOn(PassedOn::Unaligned);
            }
            Err((why, discarded)) => {
                if discarded {
                    self.queues.remove(&f.key);
                }
                return dropped(why, discarded && held_some, stats);
            }
        }
        let (from, to) = (offset as usize, end as usize);
        if q.data.len() < to {
            q.data.resize(to, 0);
        }
        q.data[from..to].copy_from_slice(&f.data[..to - from]);
        q.meat += end - offset;
        q.fragments += 1;
        q.largest = q.largest.max(f.len);
        q.ecn |= f.ecn;
        if offset == 0 {
            q.head = Some((f.head.to_vec(), f.nhoff));
            q.next = f.next;
        }
        if !(q.last_in && q.head.is_some() && q.meat == q.len) {
            stats.held += 1;
            return Outcome::Held { fragments: q.fragments };
        }
        let Some(q) = self.queues.remove(&f.key) else { unreachable!("the queue was just used") };
        if q.ecn & 1 != 0 && q.ecn & !1 != 0 {
            return dropped(Refused::Ecn, true, stats);
        }
        let Some((head, nhoff)) = q.head else { unreachable!("checked above") };
        let whole = match family {
            Family::Ipv4 => head.len() + q.len as usize,
            Family::Ipv6 => head.len() - 40 + q.len as usize,
        };
        if whole > 65535 {
            return dropped(Refused::TooLong, true, stats);
        }
        let out = &mut self.datagram;
        out.clear();
        out.extend_from_slice(&head);
        out.extend_from_slice(&q.data[..q.len as usize]);
        match family {
            Family::Ipv4 => {
                out[2..4].copy_from_slice(&(whole as u16).to_be_bytes());
                out[6..8].copy_from_slice(&[0, 0]);
                out[10..12].copy_from_slice(&[0, 0]);
                let sum = !packet::checksum_fold(packet::checksum_add(0, &out[..head.len()]));
                out[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            Family::Ipv6 => {
                out[4..6].copy_from_slice(&(whole as u16).to_be_bytes());
                out[nhoff] = q.next;
            }
        }
        self.refragments = family == Family::Ipv4 || self.datagram.len() as u32 > q.largest;
        stats.reassembled += 1;
        Outcome::Reassembled { fragments: q.fragments }
    }
}

fn pass_on(why: PassedOn, stats: &mut DefragStats) -> Outcome {
    *stats.passed_on.entry(why.text().to_string()).or_default() += 1;
    Outcome::PassedOn(why)
}

fn dropped(why: Refused, discarded: bool, stats: &mut DefragStats) -> Outcome {
    *stats.dropped.entry(why.text().to_string()).or_default() += 1;
    if discarded {
        *stats.discarded.entry(why.text().to_string()).or_default() += 1;
    }
    Outcome::Dropped { why, discarded }
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn v4_fragment<'a>(p: &Packet<'_>, bytes: &'a [u8], own: bool) -> Fragment<'a> {
    let ihl = usize::from(bytes[0] & 0x0f) * 4;
    let frag = be16(bytes, 6);
    let offset = u32::from(frag & IP_OFFSET) * 8;
    let data = bytes.get(ihl..).unwrap_or_default();
    Fragment {
        key: Key { family: Family::Ipv4, own, src: p.src, dst: p.dst, id: u32::from(be16(bytes, 4)), extra: bytes[9] },
        offset,
        end: offset + data.len() as u32,
        more: frag & IP_MF != 0,
        ecn: 1 << (bytes[1] & 3),
        len: bytes.len() as u32,
        data,
        head: &bytes[..ihl],
        nhoff: 0,
        next: 0,
    }
}

/// The IPv6 fragment: `Err(Some(_))` when the kernel passes it on as it is, `Err(None)` when
/// it is too short for its fragment header.
fn v6_fragment<'a>(p: &Packet<'_>, bytes: &'a [u8], own: bool, iface: u8) -> Result<Fragment<'a>, Option<PassedOn>> {
    // find_prev_fhdr: the extension headers before the fragment header.
    let (mut nexthdr, mut nhoff, mut at) = (bytes[6], 6, 40);
    while nexthdr != NEXTHDR_FRAGMENT {
        let len = match nexthdr {
            51 => (usize::from(*bytes.get(at + 1).ok_or(None)?) + 2) * 4,
            0 | 43 | 60 => (usize::from(*bytes.get(at + 1).ok_or(None)?) + 1) * 8,
            // Not reached: the parser found the fragment header in this chain.
            _ => return Err(None),
        };
        nexthdr = bytes[at];
        nhoff = at;
        at += len;
    }
    let fhoff = at;
    if bytes.len() < fhoff + 8 {
        return Err(None);
    }
    let frag = be16(bytes, fhoff + 2);
    let offset = u32::from(frag & !7);
    let next = bytes[fhoff];
    if offset == 0 && headers_split(bytes, fhoff + 8, next) {
        return Err(Some(PassedOn::HeadersSplit));
    }
    let data = &bytes[fhoff + 8..];
    let id = u32::from_be_bytes([bytes[fhoff + 4], bytes[fhoff + 5], bytes[fhoff + 6], bytes[fhoff + 7]]);
    let tclass = ((bytes[0] & 0x0f) << 4) | (bytes[1] >> 4);
    Ok(Fragment {
        key: Key { family: Family::Ipv6, own, src: p.src, dst: p.dst, id, extra: iface },
        offset,
        end: offset + data.len() as u32,
        more: frag & IP6_MF != 0,
        ecn: 1 << (tclass & 3),
        len: bytes.len() as u32,
        data,
        head: &bytes[..fhoff],
        nhoff,
        next,
    })
}

/// `ipv6frag_thdr_truncated`: whether a first fragment, its data starting at `at` with header
/// `next`, lacks part of the upper-layer header (headers it cannot walk are not "truncated").
fn headers_split(bytes: &[u8], mut at: usize, mut next: u8) -> bool {
    loop {
        let len = match next {
            0 | 43 | 60 => bytes.get(at + 1).map(|l| (usize::from(*l) + 1) * 8),
            51 => bytes.get(at + 1).map(|l| (usize::from(*l) + 2) * 4),
            NEXTHDR_FRAGMENT => Some(8),
            _ => break,
        };
        let (Some(len), Some(&n)) = (len, bytes.get(at)) else { return false };
        if next == NEXTHDR_FRAGMENT && be16(bytes, at + 2) & !7 != 0 {
            return false;
        }
        next = n;
        at += len;
    }
    let need = match next {
        packet::proto::TCP => 20,
        packet::proto::UDP | packet::proto::ICMPV6 => 8,
        _ => 1,
    };
    at + need > bytes.len()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::gen::{fragments, Builder};

    /// A bare fragment: IPv4 or IPv6 (a fragment header right after the base header), UDP,
    /// `len` data bytes at byte `offset`, the ECN codepoint `ecn`.
    fn frag(v6: bool, id: u32, offset: u32, more: bool, len: usize, ecn: u8) -> Vec<u8> {
        let data = vec![0x55; len];
        let mut p = if v6 {
            let mut p = Builder::v6("fd00:28::10", "fd00:28::1").udp(1, 2, b"");
            p.truncate(40);
            p[1] = ecn << 4;
            p[6] = 44;
            p.extend_from_slice(&[17, 0]);
            p.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
            p.extend_from_slice(&id.to_be_bytes());
            p
        } else {
            let mut p = Builder::v4("192.168.28.10", "192.168.28.1").udp(1, 2, b"");
            p.truncate(20);
            p[1] = ecn;
            p[4..6].copy_from_slice(&(id as u16).to_be_bytes());
            p[6..8].copy_from_slice(&((offset / 8) as u16 | if more { 0x2000 } else { 0 }).to_be_bytes());
            p
        };
        p.extend_from_slice(&data);
        if v6 {
            let payload = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&payload.to_be_bytes());
        } else {
            let len = p.len() as u16;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            p[10..12].copy_from_slice(&[0, 0]);
            let sum = !packet::checksum_fold(packet::checksum_add(0, &p[..20]));
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// Feeds `packets` (one a second from 0, or at the given times) and returns the outcomes.
    fn feed(d: &mut Defrag, stats: &mut DefragStats, packets: &[(u64, Vec<u8>)]) -> Vec<Outcome> {
        packets
            .iter()
            .map(|(at_s, bytes)| {
                let p = packet::parse(bytes, bytes.len(), None).unwrap();
                d.take(&p, bytes, false, 1, at_s * 1_000_000_000, stats)
            })
            .collect()
    }

    /// What, the datagram, its cuts, unfragmentable bytes, the order sent, the outcomes.
    type Reassembly<'a> = (&'a str, &'a [u8], Vec<usize>, usize, Vec<usize>, Vec<Outcome>);
    /// What, IPv6, the fragments sent, the outcomes.
    type Refusal<'a> = (&'a str, bool, Vec<Vec<u8>>, Vec<Outcome>);

    const HELD1: Outcome = Outcome::Held { fragments: 1 };
    const HELD2: Outcome = Outcome::Held { fragments: 2 };

    fn dropped(why: Refused, discarded: bool) -> Outcome {
        Outcome::Dropped { why, discarded }
    }

    #[test]
    fn reassembles_in_and_out_of_order_with_duplicates() {
        let v4 = Builder::v4("192.168.28.10", "198.51.100.7").udp(5000, 53, &[7; 100]);
        let v6 = Builder::v6("fd00:28::10", "2001:db8::7").icmp_echo(true, 9, 1);
        // A hop-by-hop header before the fragment header stays in every fragment.
        let mut hbh = Builder::v6("fd00:28::10", "fd00:28::1").udp(5000, 53, &[9; 50]);
        hbh.splice(40..40, [17, 0, 1, 4, 0, 0, 0, 0]);
        hbh[6] = 0;
        let payload = (hbh.len() - 40) as u16;
        hbh[4..6].copy_from_slice(&payload.to_be_bytes());
        let cases: Vec<Reassembly<'_>> = vec![
            ("IPv4 in order", &v4, vec![32, 64], 0, vec![0, 1, 2], vec![HELD1, HELD2, Outcome::Reassembled { fragments: 3 }]),
            ("IPv4 out of order", &v4, vec![32, 64], 0, vec![2, 0, 1], vec![HELD1, HELD2, Outcome::Reassembled { fragments: 3 }]),
            ("IPv4 last first", &v4, vec![8], 0, vec![1, 0], vec![HELD1, Outcome::Reassembled { fragments: 2 }]),
            (
                "IPv4 duplicate",
                &v4,
                vec![40],
                0,
                vec![0, 0, 1],
                vec![HELD1, dropped(Refused::Duplicate, false), Outcome::Reassembled { fragments: 2 }],
            ),
            ("IPv6 out of order", &v6, vec![8, 16], 0, vec![1, 2, 0], vec![HELD1, HELD2, Outcome::Reassembled { fragments: 3 }]),
            (
                "IPv6 duplicate",
                &v6,
                vec![8],
                0,
                vec![1, 1, 0],
                vec![HELD1, dropped(Refused::Duplicate, false), Outcome::Reassembled { fragments: 2 }],
            ),
            ("IPv6 after a hop-by-hop header", &hbh, vec![16, 32], 8, vec![2, 1, 0], vec![HELD1, HELD2, Outcome::Reassembled { fragments: 3 }]),
        ];
        for (what, datagram, cuts, unfragmentable, order, want) in cases {
            let pieces = fragments(datagram, 0x1234, &cuts, unfragmentable);
            let (mut d, mut stats) = (Defrag::new(), DefragStats::default());
            let sent: Vec<(u64, Vec<u8>)> = order.iter().map(|i| (0, pieces[*i].clone())).collect();
            assert_eq!(feed(&mut d, &mut stats, &sent), want, "{what}");
            let whole = d.datagram();
            if datagram[0] >> 4 == 4 {
                // The header is the first fragment's, without DF.
                assert_eq!((&whole[..4], &whole[8..10], &whole[12..]), (&datagram[..4], &datagram[8..10], &datagram[12..]), "{what}");
            } else {
                assert_eq!(whole, datagram, "{what}");
            }
            let p = packet::parse(whole, whole.len(), None).unwrap();
            assert!(p.checksum_ok() && !p.fragment && p.l4 == crate::packet::L4::Complete, "{what}");
            d.finish(0, &mut stats);
            assert_eq!((stats.reassembled, stats.incomplete), (1, 0), "{what}");
            assert_eq!(stats.held + stats.reassembled + stats.dropped.values().sum::<u64>(), sent.len() as u64, "{what}");
        }
    }

    #[test]
    fn drops_what_the_kernel_drops() {
        let r = Outcome::Reassembled { fragments: 2 };
        let cases: Vec<Refusal<'_>> = vec![
            // Overlaps discard the datagram in both families; its later fragments start a new one.
            ("IPv4 overlap", false, vec![frag(false, 1, 0, true, 16, 0), frag(false, 1, 8, true, 16, 0), frag(false, 1, 16, false, 8, 0)], vec![HELD1, dropped(Refused::Overlap, true), HELD1]),
            ("IPv6 overlap", true, vec![frag(true, 1, 8, false, 16, 0), frag(true, 1, 0, true, 16, 0), frag(true, 1, 0, true, 8, 0)], vec![HELD1, dropped(Refused::Overlap, true), HELD1]),
            // A fragment across two runs overlaps, though its data is all there.
            (
                "IPv4 across two runs",
                false,
                vec![frag(false, 1, 16, false, 8, 0), frag(false, 1, 0, true, 8, 0), frag(false, 1, 8, true, 8, 0), frag(false, 1, 0, true, 16, 0)],
                vec![HELD1, HELD2, Outcome::Reassembled { fragments: 3 }, HELD1],
            ),
            (
                "IPv4 two runs, then across",
                false,
                vec![frag(false, 1, 0, true, 8, 0), frag(false, 1, 16, true, 8, 0), frag(false, 1, 8, true, 8, 0), frag(false, 1, 0, true, 24, 0)],
                vec![HELD1, HELD2, Outcome::Held { fragments: 3 }, dropped(Refused::Overlap, true)],
            ),
            // Ends that disagree: IPv4 discards the datagram, IPv6 drops the fragment.
            ("IPv4 second last fragment", false, vec![frag(false, 1, 8, false, 16, 0), frag(false, 1, 8, false, 24, 0)], vec![HELD1, dropped(Refused::EndMismatch, true)]),
            ("IPv6 second last fragment", true, vec![frag(true, 1, 8, false, 16, 0), frag(true, 1, 8, false, 24, 0), frag(true, 1, 0, true, 8, 0)], vec![HELD1, dropped(Refused::EndMismatch, false), r]),
            ("IPv4 beyond the end", false, vec![frag(false, 1, 8, false, 8, 0), frag(false, 1, 16, true, 8, 0)], vec![HELD1, dropped(Refused::BeyondEnd, true)]),
            ("IPv6 beyond the end", true, vec![frag(true, 1, 8, false, 8, 0), frag(true, 1, 16, true, 8, 0), frag(true, 1, 0, true, 8, 0)], vec![HELD1, dropped(Refused::BeyondEnd, false), r]),
            ("IPv4 empty", false, vec![frag(false, 1, 8, false, 8, 0), frag(false, 1, 0, true, 0, 0)], vec![HELD1, dropped(Refused::Empty, true)]),
            ("IPv6 empty", true, vec![frag(true, 1, 8, false, 8, 0), frag(true, 1, 16, true, 0, 0), frag(true, 1, 0, true, 8, 0)], vec![HELD1, dropped(Refused::Empty, false), r]),
            // Not a multiple of 8: IPv4 cuts the fragment down, IPv6 discards the datagram and
            // passes the fragment on.
            ("IPv4 unaligned", false, vec![frag(false, 1, 0, true, 12, 0), frag(false, 1, 8, false, 8, 0)], vec![HELD1, r]),
            ("IPv6 unaligned", true, vec![frag(true, 1, 8, false, 8, 0), frag(true, 1, 0, true, 12, 0)], vec![HELD1, Outcome::PassedOn(PassedOn::Unaligned)]),
            // Too long: IPv6 per fragment, IPv4 when complete.
            ("IPv6 beyond 65535", true, vec![frag(true, 1, 65528, false, 16, 0)], vec![dropped(Refused::TooLong, false)]),
            ("IPv4 beyond 65535", false, vec![frag(false, 1, 65512, false, 100, 0), frag(false, 1, 0, true, 65512, 0)], vec![HELD1, dropped(Refused::TooLong, true)]),
            // Not-ECT mixed with ECT(0).
            ("IPv4 ECN", false, vec![frag(false, 1, 8, false, 8, 2), frag(false, 1, 0, true, 8, 0)], vec![HELD1, dropped(Refused::Ecn, true)]),
            ("IPv6 ECN", true, vec![frag(true, 1, 8, false, 8, 0), frag(true, 1, 0, true, 8, 2)], vec![HELD1, dropped(Refused::Ecn, true)]),
            ("ECN CE with ECT", false, vec![frag(false, 1, 8, false, 8, 3), frag(false, 1, 0, true, 8, 2)], vec![HELD1, r]),
            // Keys: the IPv4 protocol and the identification tell datagrams apart.
            (
                "IPv4 keys",
                false,
                vec![frag(false, 1, 8, false, 8, 0), frag(false, 2, 0, true, 8, 0), {
                    let mut p = frag(false, 1, 0, true, 8, 0);
                    p[9] = 6;
                    p[10..12].copy_from_slice(&[0, 0]);
                    let sum = !packet::checksum_fold(packet::checksum_add(0, &p[..20]));
                    p[10..12].copy_from_slice(&sum.to_be_bytes());
                    p
                }],
                vec![HELD1, HELD1, HELD1],
            ),
        ];
        for (what, v6, packets, want) in cases {
            let (mut d, mut stats) = (Defrag::new(), DefragStats::default());
            let sent: Vec<(u64, Vec<u8>)> = packets.into_iter().map(|p| (0, p)).collect();
            assert_eq!(feed(&mut d, &mut stats, &sent), want, "{what}");
            let passed: u64 = stats.passed_on.values().sum();
            assert_eq!(stats.consumed() + stats.reassembled + passed, sent.len() as u64, "{what}: every fragment counted once");
            assert!(v6 == (sent[0].1[0] >> 4 == 6), "{what}");
        }
    }

    #[test]
    fn incomplete_datagrams_are_held_then_expire() {
        let (mut d, mut stats) = (Defrag::new(), DefragStats::default());
        let packets = vec![
            (0, frag(false, 1, 8, false, 8, 0)),
            (0, frag(true, 1, 8, false, 8, 0)),
            (10, frag(false, 2, 8, false, 8, 0)),
            // 31 s after the first: the IPv4 datagram 1 expired, the IPv6 one (60 s) not.
            (31, frag(false, 1, 0, true, 8, 0)),
            (31, frag(true, 1, 0, true, 8, 0)),
        ];
        assert_eq!(feed(&mut d, &mut stats, &packets), [HELD1, HELD1, HELD1, HELD1, Outcome::Reassembled { fragments: 2 }]);
        d.finish(31_000_000_000, &mut stats);
        assert_eq!((stats.expired, stats.incomplete, stats.held, stats.reassembled), (1, 2, 4, 1));
        // A first fragment without the whole UDP header is passed on (RFC 8200, 4.5).
        let mut split = frag(true, 3, 0, true, 8, 0);
        split[40] = 60;
        split[49] = 0;
        split[48] = 17;
        assert_eq!(feed(&mut d, &mut stats, &[(32, split)]), [Outcome::PassedOn(PassedOn::HeadersSplit)]);
    }
}
