// SPDX-License-Identifier: GPL-2.0-only
//! Connection tracking, modelled on Linux' nf_conntrack as far as `--ctstate` / `--state` can
//! observe it.
//!
//! - Entries hold an original and a reply tuple (addresses, protocol, ports; for ICMP the echo
//!   identifier and type/code). A packet matching the original tuple is NEW until a reply was
//!   seen, then ESTABLISHED; a packet matching the reply tuple is ESTABLISHED.
//! - A packet without an entry creates a tentative one, which is only *confirmed* (inserted)
//!   when the packet leaves the last hook accepted: a packet dropped by the filter leaves no
//!   entry, so its retransmission is NEW again ([`Conntrack::confirm`] / [`Conntrack::discard`]).
//!   Packets of a confirmed entry update it before filtering, whatever the filter then decides.
//! - TCP follows the kernel's state table (SYN_SENT … TIME_WAIT, CLOSE) with flag validity
//!   checks; packets the table calls invalid are INVALID. TCP picked up mid-stream (an ACK
//!   without an entry) starts an entry, as with `nf_conntrack_tcp_loose=1`. Sequence numbers
//!   and windows are not tracked (as with `nf_conntrack_tcp_be_liberal=1`). A SYN on a closed or
//!   TIME_WAIT connection replaces it with a new one.
//! - UDP (and UDP-Lite, SCTP, DCCP, tracked by ports without their state machines) is
//!   ESTABLISHED once a reply was seen. Other protocols are tracked by addresses alone.
//! - ICMP/ICMPv6 echo, timestamp, information and address-mask requests (node information for
//!   ICMPv6) start entries, their replies are ESTABLISHED; other informational messages without
//!   an entry (an echo reply out of nowhere, neighbour discovery) are INVALID. Errors (destination
//!   unreachable, time exceeded, …) quoting a tracked flow are RELATED, others INVALID.
//! - Malformed transport headers, bad checksums (verified for arriving packets only, as
//!   `nf_conntrack_checksum=1` does) and invalid TCP flag combinations are INVALID.
//! - Timeouts are Linux' defaults (TCP per state, e.g. 5 days ESTABLISHED, 2 min TIME_WAIT; UDP
//!   30 s, 120 s once replied; ICMP 30 s; others 10 min), applied when an entry is next looked
//!   up. Helpers, expectations and zones are not modelled. Fragments come reassembled
//!   ([`crate::defrag`]); one the kernel passes on as it is has no transport header to track
//!   unless it is a first fragment.
//! - NAT as nf_nat keeps it: a binding made for a connection's first packet rewrites its reply
//!   tuple ([`Conntrack::bind`]); every later packet of either direction, and the outer
//!   addresses of ICMP errors about it, are translated from the two tuples
//!   ([`Conntrack::translate`]). Each entry keeps a connection mark (CONNMARK, `-m connmark`).
//! - seng: [`Conntrack::end_connections`] deletes every entry whose original or reply tuple
//!   involves an address, which the kernel module does for every address whose connections a
//!   change ends (the engine's `Services::end_connections`).

use std::hash::{BuildHasher, Hash, Hasher};

use seng_core::Family;

use crate::packet::{proto, tcp_flag, Addr, Packet, L4};
use crate::rules::ct_state;

/// A tuple: what identifies one direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tuple {
    src: Addr,
    dst: Addr,
    /// Source port, or ICMP identifier.
    sport: u16,
    /// Destination port, or ICMP type << 8 | code.
    dport: u16,
    proto: u8,
    v6: bool,
}

impl Hash for Tuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.src);
        state.write_u128(self.dst);
        state.write_u64(u64::from(self.sport) << 32 | u64::from(self.dport) << 16 | u64::from(self.proto) << 1 | u64::from(self.v6));
    }
}

/// The tuple map's hasher: rustc-hash's FxHash (rustc's own, well kept), a multiply-add per
/// word. Tuples are not attacker-chosen in an offline replay, and SipHash would cost a large
/// share of the per-packet budget.
fn tuple_hash(t: &Tuple) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(t)
}

/// Tuple → entry index << 1 | direction (1 = reply), as a map whose keys are the entries' own
/// tuples: it stores only the 4-byte slot and compares a probed slot's tuple in the entry,
/// which the tracker reads next anyway. A map holding the tuples too would spend a 64-byte
/// bucket per tuple, and every packet's lookup would miss the cache on a table of every flow
/// the capture had (entries stay until looked up after they expire). Every slot stored names a
/// live entry, whose tuples do not change while it is in the map.
#[derive(Default)]
struct TupleIndex(hashbrown::HashTable<u32>);

/// The tuple a slot stands for.
fn tuple_of(conns: &[Conn], slot: u32) -> Option<&Tuple> {
    conns.get((slot >> 1) as usize).map(|c| &c.tuples[(slot & 1) as usize])
}

impl TupleIndex {
    fn get(&self, conns: &[Conn], tuple: &Tuple) -> Option<u32> {
        self.0.find(tuple_hash(tuple), |&slot| tuple_of(conns, slot) == Some(tuple)).copied()
    }

    /// Maps `tuple` to `slot`, replacing what it mapped to (as `HashMap::insert` does), with
    /// `conns` already holding the entry of `slot`.
    fn insert(&mut self, conns: &[Conn], tuple: &Tuple, slot: u32) {
        let rehash = |s: &u32| tuple_of(conns, *s).map_or(0, tuple_hash);
        match self.0.entry(tuple_hash(tuple), |&s| tuple_of(conns, s) == Some(tuple), rehash) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(slot);
            }
        }
    }

    /// Unmaps `tuple` if it maps to entry `index`: an entry that timed out may have lost a
    /// tuple to a newer one (which found it expired, so not holding it) before it is removed.
    fn remove(&mut self, conns: &[Conn], tuple: &Tuple, index: u32) {
        if let Ok(e) = self.0.find_entry(tuple_hash(tuple), |&s| s >> 1 == index && tuple_of(conns, s) == Some(tuple)) {
            e.remove();
        }
    }

    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
}

/// TCP conntrack states, numbered as the kernel's table columns.
mod tcp {
    pub const NONE: u8 = 0;
    pub const SYN_SENT: u8 = 1;
    pub const SYN_RECV: u8 = 2;
    pub const ESTABLISHED: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const CLOSE_WAIT: u8 = 5;
    pub const LAST_ACK: u8 = 6;
    pub const TIME_WAIT: u8 = 7;
    pub const CLOSE: u8 = 8;
    pub const SYN_SENT2: u8 = 9;
    /// Not a state: the packet is invalid.
    pub const INVALID: u8 = 10;
    /// Not a state: the packet is accepted without changing the state.
    pub const IGNORE: u8 = 11;

    /// Timeouts per state in seconds.
    pub const TIMEOUT_S: [u64; 10] = [0, 120, 60, 432_000, 120, 60, 30, 120, 10, 120];

    const S_SS: u8 = SYN_SENT;
    const S_SR: u8 = SYN_RECV;
    const S_ES: u8 = ESTABLISHED;
    const S_FW: u8 = FIN_WAIT;
    const S_CW: u8 = CLOSE_WAIT;
    const S_LA: u8 = LAST_ACK;
    const S_TW: u8 = TIME_WAIT;
    const S_CL: u8 = CLOSE;
    const S_S2: u8 = SYN_SENT2;
    const S_IV: u8 = INVALID;
    const S_IG: u8 = IGNORE;

    /// The kernel's transition table: [direction][packet kind][state] → new state. Packet kinds:
    /// SYN, SYN+ACK, FIN, ACK, RST, none of these.
    pub const TABLE: [[[u8; 10]; 6]; 2] = [
        [
            [S_SS, S_SS, S_IG, S_IG, S_IG, S_IG, S_IG, S_SS, S_SS, S_S2],
            [S_IV, S_IV, S_SR, S_IV, S_IV, S_IV, S_IV, S_IV, S_IV, S_SR],
            [S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV],
            [S_ES, S_IV, S_ES, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IV],
            [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
            [S_IV; 10],
        ],
        [
            [S_IV, S_S2, S_IV, S_IV, S_IV, S_IV, S_IV, S_SS, S_IV, S_S2],
            [S_IV, S_SR, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_IG, S_SR],
            [S_IV, S_IV, S_FW, S_FW, S_LA, S_LA, S_LA, S_TW, S_CL, S_IV],
            [S_IV, S_IG, S_SR, S_ES, S_CW, S_CW, S_TW, S_TW, S_CL, S_IG],
            [S_IV, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL, S_CL],
            [S_IV; 10],
        ],
    ];

    /// The packet kind (row of [`TABLE`]) of a flag byte.
    pub fn kind(flags: u8) -> usize {
        use crate::packet::tcp_flag::{ACK, FIN, RST, SYN};
        if flags & RST != 0 {
            4
        } else if flags & SYN != 0 {
            if flags & ACK != 0 {
                1
            } else {
                0
            }
        } else if flags & FIN != 0 {
            2
        } else if flags & ACK != 0 {
            3
        } else {
            5
        }
    }
}

/// Flag combinations the kernel accepts (ECE, CWR and PSH aside); anything else is INVALID.
fn tcp_flags_valid(flags: u8) -> bool {
    use tcp_flag::{ACK, FIN, PSH, RST, SYN, URG};
    let f = flags & !(0x40 | 0x80 | PSH);
    matches!(f, x if x == SYN || x == SYN | URG || x == SYN | ACK || x == RST || x == RST | ACK
        || x == FIN | ACK || x == FIN | ACK | URG || x == ACK || x == ACK | URG)
}

/// The reply type of an ICMP / ICMPv6 request, if the type starts or answers a flow.
fn icmp_inverse(v6: bool, kind: u8) -> Option<u8> {
    match (v6, kind) {
        (false, 8) => Some(0),
        (false, 0) => Some(8),
        (false, 13) => Some(14),
        (false, 14) => Some(13),
        (false, 15) => Some(16),
        (false, 16) => Some(15),
        (false, 17) => Some(18),
        (false, 18) => Some(17),
        (true, 128) => Some(129),
        (true, 129) => Some(128),
        (true, 139) => Some(140),
        (true, 140) => Some(139),
        _ => None,
    }
}

fn icmp_starts_flow(v6: bool, kind: u8) -> bool {
    matches!((v6, kind), (false, 8 | 13 | 15 | 17) | (true, 128 | 139))
}

fn icmp_is_error(v6: bool, kind: u8) -> bool {
    matches!((v6, kind), (false, 3 | 4 | 5 | 11 | 12) | (true, 1..=4))
}

fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP)
}

fn is_icmp(p: u8) -> bool {
    p == proto::ICMP || p == proto::ICMPV6
}

impl Tuple {
    fn of(p: &Packet<'_>) -> Tuple {
        let v6 = p.family == Family::Ipv6;
        let (sport, dport) = if has_ports(p.proto) {
            (p.sport, p.dport)
        } else if is_icmp(p.proto) {
            (p.icmp_id, u16::from(p.icmp_type) << 8 | u16::from(p.icmp_code))
        } else {
            (0, 0)
        };
        Tuple { src: p.src, dst: p.dst, sport, dport, proto: p.proto, v6 }
    }

    /// The tuple of the other direction, if there is one (not for ICMP errors and unknown
    /// ICMP types).
    fn invert(&self) -> Option<Tuple> {
        let (sport, dport) = if has_ports(self.proto) {
            (self.dport, self.sport)
        } else if is_icmp(self.proto) {
            let kind = icmp_inverse(self.v6, (self.dport >> 8) as u8)?;
            (self.sport, u16::from(kind) << 8 | (self.dport & 0xff))
        } else {
            (0, 0)
        };
        Some(Tuple { src: self.dst, dst: self.src, sport, dport, proto: self.proto, v6: self.v6 })
    }
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    tuples: [Tuple; 2],
    seen_reply: bool,
    tcp_state: u8,
    expires_ns: u64,
    /// The connection mark.
    mark: u32,
    /// NAT manips set up (bits of [`Manip`]), for an entry not yet confirmed.
    nat_done: u8,
    /// What the bindings changed ([`ct_state::SNAT`], [`ct_state::DNAT`]), kept from
    /// [`Conntrack::bind`] so the packets of an untranslated connection skip the rewrite.
    nat_status: u8,
    /// In the table: confirmed and not removed since (a removed entry's slot waits for reuse).
    live: bool,
}

/// Which address a NAT binding or translation rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manip {
    /// The source (SNAT, MASQUERADE; done at POSTROUTING and INPUT).
    Src = 1,
    /// The destination (DNAT, REDIRECT; done at PREROUTING and OUTPUT).
    Dst = 2,
}

/// The connection of the packet tracked last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    /// The pending entry: this is the connection's first packet.
    Pending,
    /// A confirmed entry, the packet's direction (true: reply), and whether the packet is an
    /// ICMP error about it (RELATED).
    Entry(u32, bool, bool),
}

impl Conn {
    fn timeout_s(&self) -> u64 {
        match self.tuples[0].proto {
            proto::TCP => tcp::TIMEOUT_S[usize::from(self.tcp_state.min(9))],
            proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP if self.seen_reply => 120,
            proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP => 30,
            proto::ICMP | proto::ICMPV6 => 30,
            _ => 600,
        }
    }

    fn refresh(&mut self, now_ns: u64) {
        self.expires_ns = now_ns.saturating_add(self.timeout_s() * 1_000_000_000);
    }
}

/// Counts describing the tracker's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConntrackStats {
    /// Entries confirmed (created by an accepted packet).
    pub confirmed: u64,
    /// Entries deleted because an enclave was unregistered or re-assigned.
    pub deleted_by_events: u64,
    /// Entries that timed out, found so by a packet of theirs before the garbage collection
    /// reached them.
    pub expired: u64,
    /// Entries that timed out, removed by the garbage collection (a packet of theirs coming
    /// later finds none).
    pub collected: u64,
    /// Entries replaced by a SYN reopening a closed connection.
    pub reopened: u64,
    /// Arriving packets whose transport checksum was wrong.
    pub bad_checksums: u64,
    /// First packets dropped at confirmation: another entry held their connection's reply
    /// tuple (a NAT binding that found no free tuple, or a destination NAT onto a taken one).
    pub clashes: u64,
}

/// Entry slots the garbage collection looks at per tracked packet: at least one packet tracks
/// each new entry, so two a packet visit every slot while the table at most doubles.
const GC_SLOTS_PER_PACKET: usize = 2;

/// The connection tracker. No allocation per packet apart from growing its tables.
#[derive(Default)]
pub struct Conntrack {
    /// Tuple → entry index << 1 | direction (1 = reply).
    map: TupleIndex,
    conns: Vec<Conn>,
    free: Vec<u32>,
    /// The entry the current packet would create, pending confirmation.
    pending: Option<Conn>,
    current: Option<Current>,
    /// The time of the packet tracked last: entries expired by then hold no tuple.
    now_ns: u64,
    /// The next entry slot the garbage collection looks at.
    gc_next: usize,
    stats: ConntrackStats,
}

impl Conntrack {
    /// An empty tracker.
    pub fn new() -> Conntrack {
        Conntrack::default()
    }

    /// Counts so far.
    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// Entries held: confirmed and not removed (timed-out ones not collected yet included).
    pub fn len(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&mut self, index: u32) {
        let Some(conn) = self.conns.get(index as usize).filter(|c| c.live) else { return };
        for t in &conn.tuples {
            self.map.remove(&self.conns, t, index);
        }
        self.conns[index as usize].live = false;
        self.free.push(index);
    }

    /// The kernel's garbage collection, spread over the packets: each tracked packet looks at
    /// the next [`GC_SLOTS_PER_PACKET`] entry slots and removes those timed out, so that a long
    /// capture's table holds its live connections, not every connection it ever had.
    fn collect(&mut self, now_ns: u64) {
        for _ in 0..GC_SLOTS_PER_PACKET {
            if self.gc_next >= self.conns.len() {
                self.gc_next = 0;
                return;
            }
            let index = self.gc_next;
            self.gc_next += 1;
            if self.conns[index].live && self.conns[index].expires_ns < now_ns {
                self.remove(index as u32);
                self.stats.collected += 1;
            }
        }
    }

    /// Whether a live entry holds `tuple` in either direction, as nf_conntrack_tuple_taken and
    /// __nf_conntrack_confirm ask (the kernel's garbage collection takes expired ones away).
    fn held(&self, tuple: &Tuple) -> bool {
        self.map.get(&self.conns, tuple).is_some_and(|slot| self.conns[(slot >> 1) as usize].expires_ns >= self.now_ns)
    }

    /// Finds the live entry of `tuple`: (index, reply direction). Expired entries are removed.
    fn find(&mut self, tuple: &Tuple, now_ns: u64) -> Option<(u32, bool)> {
        let slot = self.map.get(&self.conns, tuple)?;
        let index = slot >> 1;
        if self.conns[index as usize].expires_ns < now_ns {
            self.remove(index);
            self.stats.expired += 1;
            return None;
        }
        Some((index, slot & 1 == 1))
    }

    /// Tracks `p` at the conntrack hook (PREROUTING for arriving packets, OUTPUT for the
    /// gateway's own) and returns its state as a [`ct_state`] bit. `verify_checksum` is true at
    /// PREROUTING. A packet that would start a connection leaves it pending: call
    /// [`Conntrack::confirm`] if the packet was accepted, [`Conntrack::discard`] otherwise.
    pub fn track(&mut self, p: &Packet<'_>, now_ns: u64, verify_checksum: bool) -> u8 {
        self.pending = None;
        self.current = None;
        self.now_ns = now_ns;
        self.collect(now_ns);
        let v6 = p.family == Family::Ipv6;
        // A later fragment passed on unreassembled carries no transport header to track.
        if p.l4 != L4::Complete {
            return ct_state::INVALID;
        }
        if verify_checksum && !p.checksum_ok() {
            self.stats.bad_checksums += 1;
            return ct_state::INVALID;
        }
        match p.proto {
            proto::TCP => {
                let header = usize::from(p.tcp_header_len);
                if header < 20 || header > p.l4_len as usize || !tcp_flags_valid(p.tcp_flags) {
                    return ct_state::INVALID;
                }
            }
            proto::UDP if usize::from(p.udp_len) < 8 || u32::from(p.udp_len) > p.l4_len => {
                return ct_state::INVALID;
            }
            proto::ICMP | proto::ICMPV6 => {
                if !v6 && p.icmp_type > 18 {
                    return ct_state::INVALID;
                }
                if icmp_is_error(v6, p.icmp_type) {
                    return self.related(p, now_ns);
                }
            }
            _ => {}
        }
        let tuple = Tuple::of(p);
        let Some((index, reply)) = self.find(&tuple, now_ns) else {
            return self.start(p, tuple, now_ns);
        };
        self.current = Some(Current::Entry(index, reply, false));
        let conn = &mut self.conns[index as usize];
        if p.proto == proto::TCP {
            let new_state = tcp::TABLE[usize::from(reply)][tcp::kind(p.tcp_flags)][usize::from(conn.tcp_state.min(9))];
            match new_state {
                tcp::INVALID => {
                    self.current = None;
                    return ct_state::INVALID;
                }
                tcp::IGNORE => {}
                tcp::SYN_SENT if !reply && conn.tcp_state >= tcp::TIME_WAIT => {
                    // Reopening a closed connection: the kernel kills the old entry and the
                    // SYN starts a new one.
                    self.remove(index);
                    self.stats.reopened += 1;
                    self.current = None;
                    return self.start(p, tuple, now_ns);
                }
                state => conn.tcp_state = state,
            }
        }
        if reply {
            conn.seen_reply = true;
        }
        conn.refresh(now_ns);
        if reply || conn.seen_reply {
            ct_state::ESTABLISHED
        } else {
            ct_state::NEW
        }
    }

    /// A packet without an entry: NEW with a pending entry if it may start one, else INVALID.
    fn start(&mut self, p: &Packet<'_>, tuple: Tuple, now_ns: u64) -> u8 {
        let tcp_state = match p.proto {
            proto::TCP => match tcp::TABLE[0][tcp::kind(p.tcp_flags)][usize::from(tcp::NONE)] {
                tcp::INVALID | tcp::IGNORE => return ct_state::INVALID,
                state => state,
            },
            proto::ICMP | proto::ICMPV6 if !icmp_starts_flow(tuple.v6, p.icmp_type) => return ct_state::INVALID,
            _ => tcp::NONE,
        };
        let Some(reply) = tuple.invert() else {
            return ct_state::INVALID;
        };
        let mut conn = Conn { tuples: [tuple, reply], seen_reply: false, tcp_state, expires_ns: 0, mark: 0, nat_done: 0, nat_status: 0, live: false };
        conn.refresh(now_ns);
        self.pending = Some(conn);
        self.current = Some(Current::Pending);
        ct_state::NEW
    }

    /// An ICMP error: RELATED if it quotes a tracked flow sent to its destination.
    fn related(&mut self, p: &Packet<'_>, now_ns: u64) -> u8 {
        let Some(quoted) = p.quoted() else {
            return ct_state::INVALID;
        };
        if quoted.l4 != L4::Complete || (is_icmp(quoted.proto) && icmp_is_error(quoted.family == Family::Ipv6, quoted.icmp_type)) {
            return ct_state::INVALID;
        }
        // The quoted packet went from the error's destination; its answer direction is tracked.
        let Some(inverted) = Tuple::of(&quoted).invert() else {
            return ct_state::INVALID;
        };
        if quoted.src != p.dst {
            return ct_state::INVALID;
        }
        let Some((index, reply)) = self.find(&inverted, now_ns) else {
            return ct_state::INVALID;
        };
        self.current = Some(Current::Entry(index, reply, true));
        ct_state::RELATED
    }

    fn conn(&self) -> Option<&Conn> {
        match self.current? {
            Current::Pending => self.pending.as_ref(),
            Current::Entry(index, _, _) => self.conns.get(index as usize),
        }
    }

    fn conn_mut(&mut self) -> Option<&mut Conn> {
        match self.current? {
            Current::Pending => self.pending.as_mut(),
            Current::Entry(index, _, _) => self.conns.get_mut(index as usize),
        }
    }

    /// The connection mark of the packet tracked last; `None` without a connection.
    pub fn mark(&self) -> Option<u32> {
        self.conn().map(|c| c.mark)
    }

    /// Sets the connection mark of the packet tracked last (if it has a connection).
    pub fn set_mark(&mut self, mark: u32) {
        if let Some(c) = self.conn_mut() {
            c.mark = mark;
        }
    }

    /// Whether the packet tracked last is its connection's first and `manip` was not set up
    /// for it yet: the nat table decides (the kernel runs nat chains only then).
    pub fn needs_binding(&self, manip: Manip) -> bool {
        self.current == Some(Current::Pending) && self.pending.is_some_and(|c| c.nat_done & manip as u8 == 0)
    }

    /// The tuple the first packet has now (after the bindings made so far), in the pending
    /// entry's terms: (src, dst, sport, dport).
    fn translated_original(conn: &Conn) -> Tuple {
        let r = conn.tuples[1];
        let (sport, dport) = if has_ports(r.proto) { (r.dport, r.sport) } else { (conn.tuples[0].sport, conn.tuples[0].dport) };
        Tuple { src: r.dst, dst: r.src, sport, dport, ..r }
    }

    /// Sets up `manip` for the first packet's connection as nf_nat's get_unique_tuple does: its
    /// source (or destination) becomes `addr`, keeping the packet's own port if that tuple is
    /// free and the port in `ports` (or no range was given), else with the first port of the
    /// range (without one, of the kernel's default class for a source port) that makes it
    /// free. When none does, the kernel keeps a taken tuple, and [`Conntrack::confirm`] drops
    /// the packet. Without a change of `addr` and without ports, a null binding.
    pub fn bind(&mut self, manip: Manip, addr: Addr, ports: Option<(u16, u16)>) {
        let Some(conn) = self.pending else { return };
        let mut candidate = Self::translated_original(&conn);
        match manip {
            Manip::Src => candidate.src = addr,
            Manip::Dst => candidate.dst = addr,
        }
        let with_port = |t: Tuple, port: u16| {
            let mut t = t;
            match manip {
                Manip::Src => t.sport = port,
                Manip::Dst => t.dport = port,
            }
            t
        };
        let taken = |t: &Tuple| t.invert().is_none_or(|reply| self.held(&reply));
        let chosen = if !has_ports(candidate.proto) {
            candidate
        } else {
            let own = if manip == Manip::Src { candidate.sport } else { candidate.dport };
            let (min, max) = match ports {
                Some(range) => range,
                // nf_nat's defaults when a source port must change: the class of the old port.
                None if manip == Manip::Src && own < 512 => (1, 511),
                None if manip == Manip::Src && own < 1024 => (600, 1023),
                None if manip == Manip::Src => (1024, u16::MAX),
                None => (own, own),
            };
            let in_range = ports.is_none() || (own >= min && own <= max);
            if in_range && !taken(&candidate) {
                candidate
            } else {
                // The kernel draws the ports at random; the first free one stands for its draw.
                let fallback = if in_range { candidate } else { with_port(candidate, min) };
                (min..=max).map(|port| with_port(candidate, port)).find(|t| !taken(t)).unwrap_or(fallback)
            }
        };
        let reply = chosen.invert();
        if let Some(pending) = self.pending.as_mut() {
            if let Some(reply) = reply {
                pending.tuples[1] = reply;
            }
            pending.nat_done |= manip as u8;
            pending.nat_status = Self::status_of(pending);
        }
    }

    /// Marks `manip` as set up by a null binding (no nat rule decided). nf_nat's null binding
    /// still makes the connection's reply unique: a source whose reply tuple another connection
    /// already holds moves to a free port of its port's class; a destination never moves.
    pub fn null_binding(&mut self, manip: Manip) {
        let Some(conn) = self.pending.as_mut() else { return };
        if manip == Manip::Src {
            let src = Self::translated_original(conn).src;
            self.bind(Manip::Src, src, None);
        } else {
            conn.nat_done |= manip as u8;
        }
    }

    /// NAT status bits of the packet's connection, as `--ctstate SNAT` / `DNAT` see them.
    pub fn nat_status(&self) -> u8 {
        self.conn().map_or(0, |c| c.nat_status)
    }

    /// The NAT status bits of `c`'s tuples: what its bindings changed of the original.
    fn status_of(c: &Conn) -> u8 {
        let t = Self::translated_original(c);
        let o = c.tuples[0];
        let snat = t.src != o.src || (has_ports(o.proto) && t.sport != o.sport);
        let dnat = t.dst != o.dst || (has_ports(o.proto) && t.dport != o.dport);
        (if snat { ct_state::SNAT } else { 0 }) | (if dnat { ct_state::DNAT } else { 0 })
    }

    /// Rewrites the packet tracked last as nf_nat does at a hook of `manip`: to what its
    /// connection's tuples say (nothing if it has no connection or no binding changes it).
    /// An ICMP error has only its outer addresses rewritten. Returns whether anything changed.
    /// Inline: every packet passes two to four nat hooks, most with nothing to rewrite.
    #[inline]
    pub fn translate(&self, p: &mut Packet<'_>, manip: Manip) -> bool {
        let Some(current) = self.current else { return false };
        let (conn, reply, related) = match current {
            Current::Pending => match self.pending.as_ref() {
                Some(c) => (c, false, false),
                None => return false,
            },
            Current::Entry(index, reply, related) => match self.conns.get(index as usize) {
                Some(c) => (c, reply, related),
                None => return false,
            },
        };
        // nf_nat_packet and nf_nat_icmp_reply_translation: only where this direction's manip
        // was changed by the binding (a reply's source manip undoes the destination NAT).
        let changed = if (manip == Manip::Src) != reply { ct_state::SNAT } else { ct_state::DNAT };
        if conn.nat_status & changed == 0 {
            return false;
        }
        // The packet becomes the inverse of the other direction's tuple.
        let other = conn.tuples[usize::from(!reply)];
        let before = (p.src, p.dst, p.sport, p.dport);
        let ports = has_ports(p.proto) && !related;
        match manip {
            Manip::Src => {
                p.src = other.dst;
                if ports {
                    p.sport = other.dport;
                }
            }
            Manip::Dst => {
                p.dst = other.src;
                if ports {
                    p.dport = other.sport;
                }
            }
        }
        before != (p.src, p.dst, p.sport, p.dport)
    }

    /// The packet of the last [`Conntrack::track`] passed its last hook: its pending entry is
    /// inserted. False if the packet is dropped instead, as a clash at confirmation.
    /// Inline: most packets have no pending entry, and the hooks confirm every one.
    #[inline]
    pub fn confirm(&mut self) -> bool {
        self.pending.is_none() || self.insert_pending()
    }

    fn insert_pending(&mut self) -> bool {
        let Some(mut conn) = self.pending.take() else { return true };
        // __nf_conntrack_confirm finds a clash when another entry holds either tuple. Only the
        // reply tuple can clash here: the original was free when the packet was tracked, and
        // nothing is inserted in between. The holder passed nf_nat's hooks as every entry does,
        // so nf_ct_resolve_clash cannot merge the two (no NAT_DONE bits, or equal tuples) and
        // nf_ct_resolve_clash_harder refuses a reply clash: the packet is dropped, whatever its
        // protocol.
        if self.held(&conn.tuples[1]) {
            self.stats.clashes += 1;
            if self.current == Some(Current::Pending) {
                self.current = None;
            }
            return false;
        }
        conn.live = true;
        let index = match self.free.pop() {
            Some(i) => {
                self.conns[i as usize] = conn;
                i
            }
            None => {
                self.conns.push(conn);
                (self.conns.len() - 1) as u32
            }
        };
        self.map.insert(&self.conns, &conn.tuples[0], index << 1);
        self.map.insert(&self.conns, &conn.tuples[1], index << 1 | 1);
        self.stats.confirmed += 1;
        // A packet of the loopback path passes the hooks again with its entry.
        if self.current == Some(Current::Pending) {
            self.current = Some(Current::Entry(index, false, false));
        }
        true
    }

    /// The packet of the last [`Conntrack::track`] was dropped: no entry is created.
    pub fn discard(&mut self) {
        self.pending = None;
        if self.current == Some(Current::Pending) {
            self.current = None;
        }
    }

    /// Ends the connections of `addr`: deletes every entry whose original or reply tuple has it as
    /// source or destination. Returns how many.
    pub fn end_connections(&mut self, family: Family, addr: Addr) -> usize {
        let v6 = family == Family::Ipv6;
        let mut doomed: Vec<u32> = self
            .map
            .slots()
            .filter(|&slot| tuple_of(&self.conns, slot).is_some_and(|t| t.v6 == v6 && (t.src == addr || t.dst == addr)))
            .map(|slot| slot >> 1)
            .collect();
        doomed.sort_unstable();
        doomed.dedup();
        for index in &doomed {
            self.remove(*index);
        }
        self.stats.deleted_by_events += doomed.len() as u64;
        doomed.len()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::gen::Builder;
    use crate::packet::parse;
    use crate::rules::ct_state::{ESTABLISHED as E, INVALID as I, NEW as N, RELATED as R};

    /// Runs packets through the tracker; `accept` false drops the packet (no confirmation).
    fn run(steps: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let mut ct = Conntrack::new();
        steps
            .iter()
            .enumerate()
            .map(|(i, (bytes, accept))| {
                let p = parse(bytes, bytes.len(), None).unwrap();
                let state = ct.track(&p, i as u64 * 1_000_000, true);
                if *accept {
                    ct.confirm();
                } else {
                    ct.discard();
                }
                state
            })
            .collect()
    }

    #[test]
    fn tcp_handshake_teardown_and_reopen() {
        let c = Builder::v4("10.0.0.1", "10.0.0.2");
        let s = c.reverse();
        use tcp_flag::{ACK, FIN, PSH, RST, SYN};
        let steps = vec![
            (c.tcp(1000, 80, SYN, b""), true),
            (c.tcp(1000, 80, SYN, b""), true),
            (s.tcp(80, 1000, SYN | ACK, b""), true),
            (c.tcp(1000, 80, ACK, b""), true),
            (c.tcp(1000, 80, PSH | ACK, b"x"), true),
            (c.tcp(1000, 80, FIN | ACK, b""), true),
            (s.tcp(80, 1000, FIN | ACK, b""), true),
            (c.tcp(1000, 80, ACK, b""), true),
            (c.tcp(1000, 80, SYN, b""), true),
            (c.tcp(1000, 80, FIN, b""), true),
            (c.tcp(1000, 80, SYN | FIN, b""), true),
            (c.tcp(2000, 80, RST, b""), true),
            (c.tcp(2000, 80, SYN | ACK, b""), true),
        ];
        assert_eq!(run(&steps), [N, N, E, E, E, E, E, E, N, I, I, I, I]);
    }

    #[test]
    fn dropped_packets_leave_no_entry_and_mid_stream_is_picked_up() {
        let c = Builder::v4("10.0.0.1", "10.0.0.2");
        let steps = vec![
            (c.tcp(1000, 80, tcp_flag::SYN, b""), false),
            (c.tcp(1000, 80, tcp_flag::SYN, b""), true),
            (c.tcp(3000, 80, tcp_flag::ACK, b"mid"), true),
            (c.reverse().tcp(80, 3000, tcp_flag::ACK, b""), true),
            (c.tcp(3000, 80, tcp_flag::ACK, b"mid"), true),
        ];
        assert_eq!(run(&steps), [N, N, N, E, E]);
    }

    #[test]
    fn udp_icmp_and_related() {
        let c = Builder::v4("10.0.0.1", "10.0.0.2");
        let s = c.reverse();
        let query = c.udp(5000, 53, b"q");
        let mut bad = c.udp(5001, 53, b"q");
        let at = bad.len() - 1;
        bad[at] ^= 1;
        let steps = vec![
            (query.clone(), true),
            (query.clone(), true),
            (s.udp(53, 5000, b"a"), true),
            (query.clone(), true),
            (s.icmp_error(3, 3, &query), true),
            (s.icmp_error(3, 3, &c.udp(6000, 53, b"q")), true),
            (c.icmp_echo(true, 1, 1), true),
            (s.icmp_echo(false, 1, 1), true),
            (s.icmp_echo(false, 2, 1), true),
            (bad, true),
            (c.icmp_error(3, 3, &query), true),
        ];
        assert_eq!(run(&steps), [N, N, E, E, R, I, N, E, I, I, I]);
        let v6 = Builder::v6("fd00::1", "fd00::2");
        let steps6 = vec![(v6.icmp_echo(true, 3, 1), true), (v6.reverse().icmp_echo(false, 3, 1), true)];
        assert_eq!(run(&steps6), [N, E]);
    }

    #[test]
    fn an_expired_entry_removed_late_leaves_the_tuple_a_newer_entry_took() {
        let a = Builder::v4("10.0.0.1", "10.0.0.2");
        let mut ct = Conntrack::new();
        let query = a.udp(1000, 53, b"q");
        let p = parse(&query, query.len(), None).unwrap();
        assert_eq!(ct.track(&p, 0, true), N);
        ct.confirm();
        // 40 s on, that unreplied UDP entry (30 s) has timed out; another host's query is
        // masqueraded onto its address and port, so the new entry's reply tuple is the old one's.
        let at = 40_000_000_000;
        let other = Builder::v4("10.0.0.3", "10.0.0.2").udp(1000, 53, b"q");
        assert_eq!(ct.track(&parse(&other, other.len(), None).unwrap(), at, true), N);
        ct.bind(Manip::Src, p.src, None);
        assert!(ct.confirm());
        // The first host's query again finds its old entry expired, which goes; the packet is
        // dropped.
        assert_eq!(ct.track(&p, at + 1, true), N);
        ct.discard();
        // The answer still belongs to the masqueraded connection.
        let answer = a.reverse().udp(53, 1000, b"a");
        assert_eq!(ct.track(&parse(&answer, answer.len(), None).unwrap(), at + 2, true), E);
    }

    #[test]
    fn garbage_collection_keeps_the_table_to_its_live_connections() {
        let c = Builder::v4("10.0.0.1", "10.0.0.2");
        let mut ct = Conntrack::new();
        // A new unanswered UDP flow every second for 1000 s; each times out after 30 s.
        for second in 0..1000u64 {
            let query = c.udp(10_000 + second as u16, 53, b"q");
            assert_eq!(ct.track(&parse(&query, query.len(), None).unwrap(), second * 1_000_000_000, true), N);
            assert!(ct.confirm());
        }
        assert!(ct.len() <= 64, "{} entries live", ct.len());
        assert!(ct.conns.len() <= 64, "{} entry slots", ct.conns.len());
        assert_eq!(ct.stats().collected, 1000 - ct.len() as u64);
        // A flow whose entry was collected starts afresh.
        let first = c.udp(10_000, 53, b"q");
        assert_eq!(ct.track(&parse(&first, first.len(), None).unwrap(), 1_000_000_000_000, true), N);
        assert_eq!(ct.stats().expired, 0);
    }

    #[test]
    fn end_connections_deletes_both_directions_and_timeouts_expire() {
        let c = Builder::v4("10.0.0.1", "10.0.0.2");
        let mut ct = Conntrack::new();
        let syn = c.tcp(1000, 80, tcp_flag::SYN, b"");
        let p = parse(&syn, syn.len(), None).unwrap();
        ct.track(&p, 0, true);
        ct.confirm();
        let udp = c.udp(1, 2, b"");
        let u = parse(&udp, udp.len(), None).unwrap();
        ct.track(&u, 0, true);
        ct.confirm();
        assert_eq!(ct.len(), 2);
        let dst = p.dst;
        assert_eq!(ct.end_connections(Family::Ipv4, dst), 2);
        assert!(ct.is_empty());
        assert_eq!(ct.track(&p, 0, true), N);
        ct.confirm();
        // SYN_SENT times out after 120 s: the next SYN is NEW again (not a retransmission).
        assert_eq!(ct.track(&p, 121_000_000_000, true), N);
        assert_eq!(ct.stats().expired, 1);
    }
}
