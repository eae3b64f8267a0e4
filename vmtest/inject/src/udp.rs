// SPDX-License-Identifier: GPL-2.0-only
//! `inject udp`: a stream of UDP datagrams with valid IPv4 and UDP checksums.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const IPPROTO_UDP: u8 = 17;

/// What to send.
#[derive(clap::Args)]
pub struct UdpArgs {
    /// Source address (the first of `--sources`).
    #[arg(long)]
    pub src: Ipv4Addr,
    /// Spread the stream over this many consecutive source addresses from `--src`, packet by
    /// packet: a hash table's cost for one address depends on where its random seed puts it,
    /// for many it is the table's average.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub sources: u32,
    /// Destination address.
    #[arg(long)]
    pub dst: Ipv4Addr,
    /// Source port.
    #[arg(long, default_value_t = 40000)]
    pub sport: u16,
    /// Destination port.
    #[arg(long)]
    pub dport: u16,
    /// Number of packets.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Total IPv4 packet length in bytes (headers included, at least 28).
    #[arg(long, default_value_t = 60)]
    pub len: usize,
}

/// Packet number `seq` of a UDP stream: IPv4 header (ID = seq), UDP header, payload of
/// repeating bytes up to the requested total length.
pub fn udp_packet(args: &UdpArgs, seq: u32) -> Result<Vec<u8>> {
    let len = args.len;
    if !(IPV4_HEADER_LEN + UDP_HEADER_LEN..=usize::from(u16::MAX)).contains(&len) {
        bail!("--len must be between 28 and 65535, not {len}");
    }
    let mut p = vec![0u8; len];
    let (ip, udp) = p.split_at_mut(IPV4_HEADER_LEN);
    ip[0] = 0x45; // version 4, 5 words of header
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_UDP;
    let src = Ipv4Addr::from(u32::from(args.src).wrapping_add(seq % args.sources));
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&args.dst.octets());
    let ip_sum = checksum(&[ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let udp_len = (len - IPV4_HEADER_LEN) as u16;
    udp[0..2].copy_from_slice(&args.sport.to_be_bytes());
    udp[2..4].copy_from_slice(&args.dport.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    for (i, byte) in udp[UDP_HEADER_LEN..].iter_mut().enumerate() {
        *byte = b'a' + (i % 26) as u8;
    }
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&args.dst.octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    // A computed zero is sent as 0xffff: zero on the wire means "no checksum".
    let udp_sum = match checksum(&[&pseudo, udp]) {
        0 => 0xffff,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    Ok(p)
}

/// The RFC 1071 Internet checksum over the concatenation of `parts` (each of even length but
/// the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for w in words.by_ref() {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod test {
    use super::*;

    fn args(len: usize) -> UdpArgs {
        UdpArgs {
            src: Ipv4Addr::new(192, 168, 28, 2),
            sources: 1,
            dst: Ipv4Addr::new(192, 168, 28, 1),
            sport: 40000,
            dport: 4711,
            count: 1,
            len,
        }
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = udp_packet(&args(60), 7).unwrap();
        assert_eq!(p.len(), 60);
        assert_eq!(checksum(&[&p[..20]]), 0);
        assert_eq!(&p[4..6], &[0, 7]);
    }

    #[test]
    fn udp_checksum_verifies_with_pseudo_header() {
        for len in [28, 29, 60, 61, 1500] {
            let p = udp_packet(&args(len), 0).unwrap();
            let udp = &p[20..];
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&p[12..16]);
            pseudo[4..8].copy_from_slice(&p[16..20]);
            pseudo[9] = IPPROTO_UDP;
            pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
            assert_eq!(checksum(&[&pseudo, udp]), 0, "len {len}");
        }
    }

    #[test]
    fn known_header_checksum() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&header]), 0xb861);
    }

    #[test]
    fn sources_take_turns_packet_by_packet_and_checksums_follow() {
        let spread = UdpArgs { sources: 3, ..args(60) };
        let srcs: Vec<[u8; 4]> = (0..4).map(|seq| udp_packet(&spread, seq).unwrap()[12..16].try_into().unwrap()).collect();
        assert_eq!(srcs, [[192, 168, 28, 2], [192, 168, 28, 3], [192, 168, 28, 4], [192, 168, 28, 2]]);
        let p = udp_packet(&spread, 2).unwrap();
        assert_eq!(checksum(&[&p[..20]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&p[12..20]);
        pseudo[9] = IPPROTO_UDP;
        pseudo[10..12].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0);
    }

    #[test]
    fn rejects_short_length() {
        assert!(udp_packet(&args(27), 0).is_err());
    }
}
