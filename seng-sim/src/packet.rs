// SPDX-License-Identifier: GPL-2.0-only
//! Zero-copy views of IPv4 and IPv6 packets as netfilter sees them: addresses, the upper-layer
//! protocol after IPv6 extension headers, ports, TCP flags, ICMP type and code, fragment
//! information, and the length the kernel counts (the IP packet, no link-layer header).
//!
//! Headers are read by hand from the captured bytes (no per-packet allocation, no copies); this
//! is measurably cheaper than a general parser because only the fields filtering needs are read.
//! Packets the IP stack drops before netfilter (`ip_rcv` / `ipv6_rcv` checks) are reported as
//! [`Malformed`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use seng_core::Family;

/// IP protocol numbers used here.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// DCCP.
    pub const DCCP: u8 = 33;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// UDP-Lite.
    pub const UDPLITE: u8 = 136;
}

/// TCP flag bits.
pub mod tcp_flag {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// An address of either family as one integer: IPv4 in the low 32 bits. Rules compare masked
/// integers, which is the cheapest form of `(addr & mask) == net`.
pub type Addr = u128;

/// The [`IpAddr`] of an [`Addr`] of `family`.
pub fn to_ip(family: Family, addr: Addr) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(addr as u32)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(addr)),
    }
}

/// The [`Addr`] of an [`IpAddr`].
pub fn from_ip(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Why the IP stack drops a packet before netfilter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Malformed {
    /// Shorter than an IP header.
    TooShort,
    /// The version nibble does not fit the link layer's protocol.
    Version,
    /// IPv4 header length below 20 bytes or beyond the packet.
    HeaderLength,
    /// The IP length field is below the header or beyond what arrived.
    Length,
    /// Bad IPv4 header checksum.
    HeaderChecksum,
    /// IPv6 jumbogram (payload length 0), not modelled.
    Jumbogram,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::TooShort => "shorter than an IP header",
            Malformed::Version => "IP version does not match the link layer",
            Malformed::HeaderLength => "bad IPv4 header length",
            Malformed::Length => "IP length field larger than the packet (truncated on the wire) or below the header",
            Malformed::HeaderChecksum => "bad IPv4 header checksum",
            Malformed::Jumbogram => "IPv6 jumbogram (not modelled)",
        })
    }
}

/// How much of the transport header the packet has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// The header this protocol needs is present.
    Complete,
    /// The packet itself is too short for it: conntrack calls it INVALID and port matches drop
    /// the packet (`hotdrop`), as the kernel does.
    Truncated,
    /// The packet had it but the capture's snap length cut it off: cannot be evaluated.
    NotCaptured,
    /// A later fragment: no transport header at all (the simulator evaluates one only when
    /// reassembly passes it on as it is, see [`crate::defrag`]).
    Fragment,
}

/// A parsed IP packet. Fields that do not apply to its protocol are zero.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Length the kernel counts: the IP packet's own length field (link padding excluded).
    pub len: u32,
    /// IPv4 time to live or IPv6 hop limit.
    pub ttl: u8,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Part of a fragmented datagram.
    pub fragment: bool,
    /// Fragment offset in 8-byte units (0 for the first fragment).
    pub frag_offset: u16,
    /// What of the transport header is there.
    pub l4: L4,
    /// Source port (TCP, UDP, UDP-Lite, SCTP, DCCP).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP data offset in bytes.
    pub tcp_header_len: u8,
    /// ICMP / ICMPv6 type.
    pub icmp_type: u8,
    /// ICMP / ICMPv6 code.
    pub icmp_code: u8,
    /// ICMP echo identifier.
    pub icmp_id: u16,
    /// UDP length field.
    pub udp_len: u16,
    /// Transport bytes as captured (header and payload; shorter than [`Packet::l4_len`] when the
    /// capture was cut).
    pub payload: &'a [u8],
    /// Transport length per the IP header.
    pub l4_len: u32,
    /// The whole packet was captured, so checksums can be verified.
    pub complete: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn addr4(b: &[u8], at: usize) -> Addr {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u128::from(u32::from_be_bytes([w, x, y, z])),
        _ => 0,
    }
}

fn addr6(b: &[u8], at: usize) -> Addr {
    match b.get(at..at + 16).and_then(|s| <[u8; 16]>::try_from(s).ok()) {
        Some(bytes) => u128::from_be_bytes(bytes),
        None => 0,
    }
}

/// One's-complement sum of `data` (as big-endian 16-bit words) added to `sum`, unfolded.
pub fn checksum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum + u64::from(u32::from_be_bytes(tail))
}

/// Folds an unfolded sum into 16 bits (not inverted).
pub fn checksum_fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header sum of a transport checksum.
pub fn pseudo_header_sum(family: Family, src: Addr, dst: Addr, proto: u8, len: u32) -> u64 {
    let mut sum = u64::from(proto) + u64::from(len);
    match family {
        Family::Ipv4 => sum += (src & 0xffff_ffff) as u64 + (dst & 0xffff_ffff) as u64,
        Family::Ipv6 => {
            for a in [src, dst] {
                sum += (a >> 96) as u64 + ((a >> 64) as u64 & 0xffff_ffff) + ((a >> 32) as u64 & 0xffff_ffff) + (a as u64 & 0xffff_ffff);
            }
        }
    }
    sum
}

/// Parses one IP packet: `data` is what was captured from the IP header on, `wire_len` how long
/// it was on the wire (after the link-layer header). `family` is what the link layer said, if
/// it said.
pub fn parse(data: &[u8], wire_len: usize, family: Option<Family>) -> Result<Packet<'_>, Malformed> {
    let version = data.first().ok_or(Malformed::TooShort)? >> 4;
    match (version, family) {
        (4, None | Some(Family::Ipv4)) => parse_v4(data, wire_len),
        (6, None | Some(Family::Ipv6)) => parse_v6(data, wire_len),
        _ => Err(Malformed::Version),
    }
}

fn empty(family: Family, src: Addr, dst: Addr, len: u32, proto: u8) -> Packet<'static> {
    Packet {
        family,
        src,
        dst,
        len,
        ttl: 0,
        proto,
        fragment: false,
        frag_offset: 0,
        l4: L4::Complete,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_header_len: 0,
        icmp_type: 0,
        icmp_code: 0,
        icmp_id: 0,
        udp_len: 0,
        payload: &[],
        l4_len: 0,
        complete: true,
    }
}

fn parse_v4(data: &[u8], wire_len: usize) -> Result<Packet<'_>, Malformed> {
    if data.len() < 20 || wire_len < 20 {
        return Err(Malformed::TooShort);
    }
    let ihl = usize::from(data[0] & 0x0f) * 4;
    if ihl < 20 || data.len() < ihl {
        return Err(Malformed::HeaderLength);
    }
    let total = usize::from(be16(data, 2));
    if total < ihl || total > wire_len {
        return Err(Malformed::Length);
    }
    if checksum_fold(checksum_add(0, &data[..ihl])) != 0xffff {
        return Err(Malformed::HeaderChecksum);
    }
    let frag = be16(data, 6);
    let mut p = empty(Family::Ipv4, addr4(data, 12), addr4(data, 16), total as u32, data[9]);
    p.ttl = data[8];
    p.frag_offset = frag & 0x1fff;
    p.fragment = frag & 0x3fff != 0;
    let end = total.min(data.len());
    p.complete = data.len() >= total;
    p.payload = data.get(ihl..end).unwrap_or_default();
    p.l4_len = (total - ihl) as u32;
    transport(&mut p);
    Ok(p)
}

fn parse_v6(data: &[u8], wire_len: usize) -> Result<Packet<'_>, Malformed> {
    if data.len() < 40 || wire_len < 40 {
        return Err(Malformed::TooShort);
    }
    let payload_len = usize::from(be16(data, 4));
    if payload_len == 0 && data[6] == 0 {
        return Err(Malformed::Jumbogram);
    }
    let total = 40 + payload_len;
    if total > wire_len {
        return Err(Malformed::Length);
    }
    let end = total.min(data.len());
    let mut p = empty(Family::Ipv6, addr6(data, 8), addr6(data, 24), total as u32, data[6]);
    p.ttl = data[7];
    p.complete = data.len() >= total;
    // Walk extension headers to the upper-layer protocol, as ip6tables' -p does.
    let mut at = 40;
    loop {
        let header_len = match p.proto {
            0 | 43 | 60 => data.get(at + 1).map(|l| (usize::from(*l) + 1) * 8),
            51 => data.get(at + 1).map(|l| (usize::from(*l) + 2) * 4),
            44 => {
                let frag = be16(data, at + 2);
                p.fragment = true;
                p.frag_offset = frag >> 3;
                Some(8)
            }
            _ => break,
        };
        let (Some(len), Some(&next)) = (header_len, data.get(at)) else {
            // An extension header cut off: by the capture, or on the wire.
            p.l4 = if at < total { L4::NotCaptured } else { L4::Truncated };
            return Ok(p);
        };
        if at + len > total {
            p.l4 = L4::Truncated;
            return Ok(p);
        }
        p.proto = next;
        at += len;
        if p.fragment && p.frag_offset != 0 {
            break;
        }
    }
    p.payload = data.get(at..end).unwrap_or_default();
    p.l4_len = total.saturating_sub(at) as u32;
    transport(&mut p);
    Ok(p)
}

/// The transport header length a protocol needs for matching and tracking.
fn needed(proto: u8) -> usize {
    match proto {
        proto::TCP => 20,
        proto::UDP | proto::UDPLITE | proto::ICMP | proto::ICMPV6 => 8,
        proto::SCTP => 12,
        proto::DCCP => 12,
        _ => 0,
    }
}

fn transport(p: &mut Packet<'_>) {
    if p.fragment && p.frag_offset != 0 {
        p.l4 = L4::Fragment;
        return;
    }
    let need = needed(p.proto);
    if (p.l4_len as usize) < need {
        p.l4 = L4::Truncated;
        return;
    }
    if p.payload.len() < need {
        p.l4 = L4::NotCaptured;
        return;
    }
    let h = p.payload;
    match p.proto {
        proto::TCP => {
            p.sport = be16(h, 0);
            p.dport = be16(h, 2);
            p.tcp_header_len = (h[12] >> 4) * 4;
            p.tcp_flags = h[13];
        }
        proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP => {
            p.sport = be16(h, 0);
            p.dport = be16(h, 2);
            p.udp_len = be16(h, 4);
        }
        proto::ICMP | proto::ICMPV6 => {
            p.icmp_type = h[0];
            p.icmp_code = h[1];
            p.icmp_id = be16(h, 4);
        }
        _ => {}
    }
}

impl Packet<'_> {
    /// Whether the transport checksum is right. Packets cut by the capture, fragments and
    /// protocols without a verified checksum count as right (nothing to verify).
    pub fn checksum_ok(&self) -> bool {
        if !self.complete || self.fragment || self.l4 != L4::Complete {
            return true;
        }
        let pseudo = |p: &Packet<'_>| pseudo_header_sum(p.family, p.src, p.dst, p.proto, p.l4_len);
        let sum = match (self.family, self.proto) {
            (_, proto::TCP) => pseudo(self),
            (Family::Ipv4, proto::UDP) if be16(self.payload, 6) == 0 => return true,
            (_, proto::UDP) => pseudo(self),
            (Family::Ipv4, proto::ICMP) => 0,
            (Family::Ipv6, proto::ICMPV6) => pseudo(self),
            _ => return true,
        };
        checksum_fold(checksum_add(sum, self.payload)) == 0xffff
    }

    /// The packet an ICMP error quotes (the bytes after the 8-byte ICMP header), if it is one.
    pub fn quoted(&self) -> Option<Packet<'_>> {
        let inner = self.payload.get(8..)?;
        let version = inner.first()? >> 4;
        // The quote is usually cut short, so its own length field is not checked against it.
        let mut q = match (self.family, version) {
            (Family::Ipv4, 4) if inner.len() >= 20 => {
                let ihl = usize::from(inner[0] & 0x0f) * 4;
                let mut q = empty(Family::Ipv4, addr4(inner, 12), addr4(inner, 16), u32::from(be16(inner, 2)), inner[9]);
                let frag = be16(inner, 6);
                q.frag_offset = frag & 0x1fff;
                q.payload = inner.get(ihl..)?;
                q
            }
            (Family::Ipv6, 6) if inner.len() >= 40 => {
                let mut q = empty(Family::Ipv6, addr6(inner, 8), addr6(inner, 24), 40 + u32::from(be16(inner, 4)), inner[6]);
                q.payload = inner.get(40..)?;
                q
            }
            _ => return None,
        };
        q.l4_len = q.payload.len() as u32;
        q.complete = false;
        // A quote needs only the first 8 transport bytes (ports, or ICMP type/code/id).
        if q.frag_offset != 0 {
            q.l4 = L4::Fragment;
            return Some(q);
        }
        let h = q.payload;
        if h.len() < 8 && matches!(q.proto, proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP | proto::ICMP | proto::ICMPV6) {
            q.l4 = L4::Truncated;
            return Some(q);
        }
        match q.proto {
            proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP => {
                q.sport = be16(h, 0);
                q.dport = be16(h, 2);
            }
            proto::ICMP | proto::ICMPV6 => {
                q.icmp_type = h[0];
                q.icmp_code = h[1];
                q.icmp_id = be16(h, 4);
            }
            _ => {}
        }
        Some(q)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::gen::{Builder, Transport};

    #[test]
    fn parses_generated_packets() {
        let b = Builder::v4("192.168.28.10", "192.168.28.1");
        let cases: Vec<(Vec<u8>, u8, u16, u16, u8)> = vec![
            (b.tcp(40000, 8391, tcp_flag::SYN, b""), proto::TCP, 40000, 8391, tcp_flag::SYN),
            (b.udp(5353, 53, b"q"), proto::UDP, 5353, 53, 0),
            (b.icmp_echo(true, 7, 1), proto::ICMP, 0, 0, 0),
        ];
        for (bytes, want_proto, sport, dport, flags) in cases {
            let p = parse(&bytes, bytes.len(), None).unwrap();
            assert_eq!((p.proto, p.sport, p.dport, p.tcp_flags), (want_proto, sport, dport, flags));
            assert_eq!(p.len as usize, bytes.len());
            assert_eq!(p.src, from_ip("192.168.28.10".parse().unwrap()));
            assert!(p.checksum_ok());
            assert_eq!(p.l4, L4::Complete);
        }
        let v6 = Builder::v6("fd00:28::10", "fd00:28::1").build(Transport::Icmp { kind: 128, code: 0, rest: [0, 9, 0, 1], data: b"" });
        let p = parse(&v6, v6.len(), Some(Family::Ipv6)).unwrap();
        assert_eq!((p.family, p.proto, p.icmp_type, p.icmp_id), (Family::Ipv6, proto::ICMPV6, 128, 9));
        assert!(p.checksum_ok());
    }

    #[test]
    fn detects_malformed_and_short_packets() {
        let good = Builder::v4("10.0.0.1", "10.0.0.2").tcp(1, 2, tcp_flag::ACK, b"data");
        let mut bad_sum = good.clone();
        bad_sum[10] ^= 0xff;
        let mut bad_tcp = good.clone();
        bad_tcp[20 + 16] ^= 0xff;
        let cases: Vec<(&[u8], usize, Result<L4, Malformed>)> = vec![
            (&good[..10], 10, Err(Malformed::TooShort)),
            (&bad_sum, bad_sum.len(), Err(Malformed::HeaderChecksum)),
            (&good, good.len() - 1, Err(Malformed::Length)),
            (&good[..30], good.len(), Ok(L4::NotCaptured)),
            (&good, good.len(), Ok(L4::Complete)),
        ];
        for (data, wire, want) in cases {
            assert_eq!(parse(data, wire, None).map(|p| p.l4), want, "{} of {wire}", data.len());
        }
        assert!(!parse(&bad_tcp, bad_tcp.len(), None).unwrap().checksum_ok());
        assert_eq!(parse(&good, good.len(), Some(Family::Ipv6)).map(|p| p.proto), Err(Malformed::Version));
        // A TCP header cut short inside the IP packet: truncated, not just uncaptured.
        let mut short = Builder::v4("10.0.0.1", "10.0.0.2").udp(1, 2, b"0123456789");
        short[9] = proto::TCP;
        short[10] = 0;
        short[11] = 0;
        let sum = !checksum_fold(checksum_add(0, &short[..20]));
        short[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse(&short, short.len(), None).unwrap().l4, L4::Truncated);
    }

    #[test]
    fn reads_icmp_error_quotes() {
        let inner = Builder::v4("10.0.0.1", "10.0.0.2").udp(5000, 53, b"query");
        let err = Builder::v4("10.0.0.2", "10.0.0.1").icmp_error(3, 3, &inner);
        let p = parse(&err, err.len(), None).unwrap();
        let q = p.quoted().unwrap();
        assert_eq!((q.src, q.dst, q.proto, q.sport, q.dport), (p.dst, p.src, proto::UDP, 5000, 53));
    }
}
