// SPDX-License-Identifier: GPL-2.0-only
//! Reading captures: pcap (either byte order, micro- or nanosecond timestamps) and pcapng
//! (sections of either byte order, several interfaces, enhanced/simple/obsolete packet blocks),
//! and peeling the link layer off each frame: Ethernet (with 802.1Q/802.1ad VLAN tags), raw IP
//! (101, 228, 229), Linux cooked SLL and SLL2, and BSD loopback (NULL and LOOP).
//!
//! The whole file is held in memory and frames are slices of it: nothing is copied or allocated
//! per packet. Damaged input is an error naming the frame number; frames that are not IP are
//! reported as such, which is not an error.

use std::fmt;

use seng_core::Family;

/// Link-layer header types (LINKTYPE_* numbers) the reader understands.
pub mod linktype {
    /// BSD loopback, address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet.
    pub const ETHERNET: u32 = 1;
    /// Raw IP, version from the first nibble.
    pub const RAW: u32 = 101;
    /// OpenBSD loopback, address family in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1.
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: u32 = 276;
    /// All of the above, for messages.
    pub const SUPPORTED: &str = "0 (BSD loopback), 1 (Ethernet), 101 (raw IP), 108 (OpenBSD loopback), 113 (Linux SLL), \
                                 228 (IPv4), 229 (IPv6), 276 (Linux SLL2)";

    /// Whether the reader understands `link`.
    pub fn is_supported(link: u32) -> bool {
        matches!(link, NULL | ETHERNET | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2)
    }
}

/// Damaged or unsupported capture input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureError {
    /// The 1-based number of the frame concerned, or `None` for the file header.
    pub frame: Option<u64>,
    /// Byte offset in the file.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frame {
            Some(n) => write!(f, "packet {n} (byte offset {}): {}", self.offset, self.message),
            None => write!(f, "byte offset {}: {}", self.offset, self.message),
        }
    }
}

impl std::error::Error for CaptureError {}

/// One captured frame.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// 1-based position in the capture.
    pub number: u64,
    /// Timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Its link-layer header type.
    pub link: u32,
    /// The captured bytes.
    pub data: &'a [u8],
    /// Its length on the wire.
    pub orig_len: usize,
}

/// What a frame carries.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// An IP packet: captured bytes, length on the wire, and the family the link layer
    /// announced (`None` for raw IP, where only the version nibble tells).
    Ip {
        /// Captured bytes from the IP header on.
        data: &'a [u8],
        /// Bytes of it on the wire.
        wire_len: usize,
        /// The family the link layer announced.
        family: Option<Family>,
    },
    /// Not IP: ARP, LLDP, …; the link layer's protocol number, if it has one.
    Other(Option<u32>),
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn by_ethertype(ethertype: u16, data: &[u8], wire_len: usize) -> Payload<'_> {
    match ethertype {
        ETHERTYPE_IPV4 => Payload::Ip { data, wire_len, family: Some(Family::Ipv4) },
        ETHERTYPE_IPV6 => Payload::Ip { data, wire_len, family: Some(Family::Ipv6) },
        other => Payload::Other(Some(u32::from(other))),
    }
}

/// Skips VLAN tags starting at `at` (the offset of an ethertype field) and dispatches.
fn ethertype_payload<'a>(frame: &Frame<'a>, mut at: usize) -> Result<Payload<'a>, String> {
    loop {
        let Some(&[hi, lo]) = frame.data.get(at..at + 2) else {
            return Err("link-layer header cut off".into());
        };
        let ethertype = u16::from_be_bytes([hi, lo]);
        if matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
            at += 4;
            continue;
        }
        if ethertype < 0x0600 {
            // An 802.3 length field: LLC/SNAP, not IP over Ethernet II.
            return Ok(Payload::Other(None));
        }
        let start = at + 2;
        return Ok(by_ethertype(ethertype, &frame.data[start..], frame.orig_len.saturating_sub(start)));
    }
}

/// Peels the link layer off `frame`. An error means the frame is too short for its header.
pub fn payload<'a>(frame: &Frame<'a>) -> Result<Payload<'a>, String> {
    let header = |len: usize| -> Result<(&'a [u8], usize), String> {
        match frame.data.get(len..) {
            Some(rest) => Ok((rest, frame.orig_len.saturating_sub(len))),
            None => Err(format!("frame of {} bytes is shorter than its {len}-byte link-layer header", frame.data.len())),
        }
    };
    match frame.link {
        linktype::ETHERNET => ethertype_payload(frame, 12),
        linktype::LINUX_SLL => ethertype_payload(frame, 14),
        linktype::LINUX_SLL2 => ethertype_payload(frame, 0).map(|p| match p {
            // SLL2 has 18 more header bytes after its protocol field.
            Payload::Ip { data, wire_len, family } => match data.get(18..) {
                Some(rest) => Payload::Ip { data: rest, wire_len: wire_len.saturating_sub(18), family },
                None => Payload::Other(None),
            },
            other => other,
        }),
        linktype::RAW => {
            let (data, wire_len) = header(0)?;
            match data.first().map(|b| b >> 4) {
                Some(4) | Some(6) => Ok(Payload::Ip { data, wire_len, family: None }),
                _ => Ok(Payload::Other(None)),
            }
        }
        linktype::IPV4 => header(0).map(|(data, wire_len)| Payload::Ip { data, wire_len, family: Some(Family::Ipv4) }),
        linktype::IPV6 => header(0).map(|(data, wire_len)| Payload::Ip { data, wire_len, family: Some(Family::Ipv6) }),
        linktype::NULL | linktype::LOOP => {
            let (data, wire_len) = header(4)?;
            let raw = [frame.data[0], frame.data[1], frame.data[2], frame.data[3]];
            let af = match frame.link {
                linktype::LOOP => u32::from_be_bytes(raw),
                // Host byte order of the capturing machine: the family fits in the low bytes
                // one way round only.
                _ => match u32::from_le_bytes(raw) {
                    le if le <= 0xffff => le,
                    _ => u32::from_be_bytes(raw),
                },
            };
            Ok(match af {
                2 => Payload::Ip { data, wire_len, family: Some(Family::Ipv4) },
                10 | 24 | 28 | 30 => Payload::Ip { data, wire_len, family: Some(Family::Ipv6) },
                other => Payload::Other(Some(other)),
            })
        }
        other => Err(format!("unsupported link type {other}")),
    }
}

/// A capture file held in memory.
pub struct Capture {
    data: Vec<u8>,
    format: Format,
}

#[derive(Clone, Copy)]
enum Format {
    Pcap { big_endian: bool, nanos: bool, link: u32 },
    Pcapng,
}

/// Largest captured length accepted for one frame; anything above is a damaged file.
const MAX_FRAME: usize = 256 * 1024;

impl Capture {
    /// Checks the file header. `data` is the whole file.
    pub fn new(data: Vec<u8>) -> Result<Capture, CaptureError> {
        let header_error = |message: String| CaptureError { frame: None, offset: 0, message };
        let Some(magic) = data.get(..4) else {
            return Err(header_error(format!("file of {} bytes is too short for a capture header", data.len())));
        };
        let magic = [magic[0], magic[1], magic[2], magic[3]];
        let format = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => Format::Pcap { big_endian: false, nanos: false, link: 0 },
            [0xa1, 0xb2, 0xc3, 0xd4] => Format::Pcap { big_endian: true, nanos: false, link: 0 },
            [0x4d, 0x3c, 0xb2, 0xa1] => Format::Pcap { big_endian: false, nanos: true, link: 0 },
            [0xa1, 0xb2, 0x3c, 0x4d] => Format::Pcap { big_endian: true, nanos: true, link: 0 },
            [0x0a, 0x0d, 0x0d, 0x0a] => Format::Pcapng,
            _ => return Err(header_error("not a pcap or pcapng file (unknown magic number)".into())),
        };
        let format = match format {
            Format::Pcap { big_endian, nanos, .. } => {
                if data.len() < 24 {
                    return Err(header_error("pcap file header cut off".into()));
                }
                // The upper bits of the link type field carry FCS information; the type is the
                // low 16 bits.
                let link = read_u32(&data, 20, big_endian) & 0xffff;
                if !linktype::is_supported(link) {
                    return Err(header_error(format!("unsupported link type {link}; supported: {}", linktype::SUPPORTED)));
                }
                Format::Pcap { big_endian, nanos, link }
            }
            Format::Pcapng => Format::Pcapng,
        };
        Ok(Capture { data, format })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// The frames, in file order.
    pub fn frames(&self) -> Frames<'_> {
        let (offset, state) = match self.format {
            Format::Pcap { big_endian, nanos, link } => (24, State::Pcap { big_endian, nanos, link }),
            Format::Pcapng => (0, State::Pcapng { big_endian: false, interfaces: Vec::new() }),
        };
        Frames { data: &self.data, offset, number: 0, state, failed: false }
    }
}

fn read_u32(data: &[u8], at: usize, big_endian: bool) -> u32 {
    match data.get(at..at + 4) {
        Some(&[a, b, c, d]) if big_endian => u32::from_be_bytes([a, b, c, d]),
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn read_u16(data: &[u8], at: usize, big_endian: bool) -> u16 {
    match data.get(at..at + 2) {
        Some(&[a, b]) if big_endian => u16::from_be_bytes([a, b]),
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

/// A pcapng interface: its link type, snap length and timestamp unit.
#[derive(Clone, Copy)]
struct Interface {
    link: u32,
    snaplen: u32,
    /// Timestamp units per second as (base 10 exponent) or (base 2 exponent).
    resolution: Resolution,
    offset_s: u64,
}

#[derive(Clone, Copy)]
enum Resolution {
    Decimal(u8),
    Binary(u8),
}

impl Resolution {
    fn to_ns(self, units: u64) -> u64 {
        match self {
            Resolution::Decimal(e) if e <= 9 => units.saturating_mul(10u64.pow(u32::from(9 - e))),
            Resolution::Decimal(e) => (u128::from(units) / 10u128.pow(u32::from(e.min(38)) - 9)) as u64,
            Resolution::Binary(e) => ((u128::from(units) * 1_000_000_000) >> e.min(127)) as u64,
        }
    }
}

enum State {
    Pcap { big_endian: bool, nanos: bool, link: u32 },
    Pcapng { big_endian: bool, interfaces: Vec<Interface> },
}

/// Iterator over the frames of a [`Capture`]; stops after the first error.
pub struct Frames<'a> {
    data: &'a [u8],
    offset: usize,
    number: u64,
    state: State,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// Byte offset reached, for progress reporting.
    pub fn offset(&self) -> usize {
        self.offset
    }

    fn error(&mut self, frame: Option<u64>, offset: usize, message: String) -> Option<Result<Frame<'a>, CaptureError>> {
        self.failed = true;
        Some(Err(CaptureError { frame, offset, message }))
    }

    fn next_pcap(&mut self, big_endian: bool, nanos: bool, link: u32) -> Option<Result<Frame<'a>, CaptureError>> {
        let at = self.offset;
        let rest = self.data.len() - at;
        if rest == 0 {
            return None;
        }
        let number = self.number + 1;
        if rest < 16 {
            return self.error(Some(number), at, format!("record header cut off: {rest} of 16 bytes at the end of the file"));
        }
        let secs = u64::from(read_u32(self.data, at, big_endian));
        let frac = u64::from(read_u32(self.data, at + 4, big_endian));
        let caplen = read_u32(self.data, at + 8, big_endian) as usize;
        let orig_len = read_u32(self.data, at + 12, big_endian) as usize;
        if caplen > MAX_FRAME {
            return self.error(Some(number), at, format!("captured length {caplen} is implausible; the file is damaged"));
        }
        let Some(data) = self.data.get(at + 16..at + 16 + caplen) else {
            return self.error(
                Some(number),
                at,
                format!("record truncated: it says {caplen} bytes, the file has {} left", rest - 16),
            );
        };
        if (nanos && frac >= 1_000_000_000) || (!nanos && frac >= 1_000_000) {
            return self.error(Some(number), at, format!("timestamp fraction {frac} out of range; the file is damaged"));
        }
        self.offset = at + 16 + caplen;
        self.number = number;
        let ts_ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        Some(Ok(Frame { number, ts_ns, link, data, orig_len: orig_len.max(caplen) }))
    }

    fn next_pcapng(&mut self) -> Option<Result<Frame<'a>, CaptureError>> {
        loop {
            let at = self.offset;
            let rest = self.data.len() - at;
            if rest == 0 {
                return None;
            }
            let number = self.number + 1;
            if rest < 12 {
                return self.error(Some(number), at, format!("block header cut off: {rest} bytes at the end of the file"));
            }
            let raw_type = read_u32(self.data, at, false);
            if raw_type == 0x0a0d_0d0a {
                // A section header: its byte-order magic fixes the order of everything after.
                let big_endian = match self.data.get(at + 8..at + 12) {
                    Some([0x1a, 0x2b, 0x3c, 0x4d]) => true,
                    Some([0x4d, 0x3c, 0x2b, 0x1a]) => false,
                    _ => return self.error(Some(number), at, "pcapng section header has no valid byte-order magic".into()),
                };
                self.state = State::Pcapng { big_endian, interfaces: Vec::new() };
            }
            let State::Pcapng { big_endian, interfaces } = &self.state else {
                return None;
            };
            let big_endian = *big_endian;
            let described = interfaces.len();
            let snap0 = interfaces.first().map_or(usize::MAX, |i| if i.snaplen == 0 { usize::MAX } else { i.snaplen as usize });
            let block_type = read_u32(self.data, at, big_endian);
            let len = read_u32(self.data, at + 4, big_endian) as usize;
            if len < 12 || len % 4 != 0 || len > rest {
                return self.error(
                    Some(number),
                    at,
                    format!("pcapng block of type {block_type:#x} says {len} bytes, the file has {rest} left"),
                );
            }
            if read_u32(self.data, at + len - 4, big_endian) as usize != len {
                return self.error(Some(number), at, "pcapng block's trailing length does not match; the file is damaged".into());
            }
            let body = &self.data[at + 8..at + len - 4];
            self.offset = at + len;
            let (iface, ts, caplen, orig_len, data_at) = match block_type {
                // Interface description: link type, snap length, timestamp options.
                1 => {
                    if body.len() < 8 {
                        return self.error(Some(number), at, "interface description block too short".into());
                    }
                    let link = u32::from(read_u16(body, 0, big_endian));
                    if !linktype::is_supported(link) {
                        return self.error(
                            Some(number),
                            at,
                            format!("interface {described} has unsupported link type {link}; supported: {}", linktype::SUPPORTED),
                        );
                    }
                    let mut iface = Interface { link, snaplen: read_u32(body, 4, big_endian), resolution: Resolution::Decimal(6), offset_s: 0 };
                    let mut opt = 8;
                    while opt + 4 <= body.len() {
                        let code = read_u16(body, opt, big_endian);
                        let olen = usize::from(read_u16(body, opt + 2, big_endian));
                        let value = body.get(opt + 4..opt + 4 + olen).unwrap_or_default();
                        match (code, value) {
                            (0, _) => break,
                            (9, [r]) => {
                                iface.resolution = if r & 0x80 != 0 { Resolution::Binary(r & 0x7f) } else { Resolution::Decimal(*r) };
                            }
                            (14, v) if v.len() == 8 => {
                                let hi = u64::from(read_u32(v, 0, big_endian));
                                let lo = u64::from(read_u32(v, 4, big_endian));
                                iface.offset_s = if big_endian { hi << 32 | lo } else { lo << 32 | hi };
                            }
                            _ => {}
                        }
                        opt += 4 + olen.div_ceil(4) * 4;
                    }
                    if let State::Pcapng { interfaces, .. } = &mut self.state {
                        interfaces.push(iface);
                    }
                    continue;
                }
                // Enhanced packet.
                6 if body.len() >= 20 => (
                    read_u32(body, 0, big_endian) as usize,
                    u64::from(read_u32(body, 4, big_endian)) << 32 | u64::from(read_u32(body, 8, big_endian)),
                    read_u32(body, 12, big_endian) as usize,
                    read_u32(body, 16, big_endian) as usize,
                    20,
                ),
                // Obsolete packet block: 16-bit interface id and a drops count.
                2 if body.len() >= 20 => (
                    usize::from(read_u16(body, 0, big_endian)),
                    u64::from(read_u32(body, 4, big_endian)) << 32 | u64::from(read_u32(body, 8, big_endian)),
                    read_u32(body, 12, big_endian) as usize,
                    read_u32(body, 16, big_endian) as usize,
                    20,
                ),
                // Simple packet: interface 0, no timestamp, captured length implied.
                3 if body.len() >= 4 => {
                    let orig = read_u32(body, 0, big_endian) as usize;
                    (0, 0, orig.min(snap0).min(body.len() - 4), orig, 4)
                }
                2 | 3 | 6 => return self.error(Some(number), at, format!("pcapng packet block of {len} bytes is too short")),
                _ => continue,
            };
            let State::Pcapng { interfaces, .. } = &self.state else {
                return None;
            };
            let Some(interface) = interfaces.get(iface).copied() else {
                return self.error(Some(number), at, format!("packet refers to interface {iface}, which was not described"));
            };
            if caplen > MAX_FRAME {
                return self.error(Some(number), at, format!("captured length {caplen} is implausible; the file is damaged"));
            }
            let Some(data) = body.get(data_at..data_at + caplen) else {
                return self.error(Some(number), at, format!("packet data of {caplen} bytes overruns its block"));
            };
            self.number = number;
            let ts_ns = interface.resolution.to_ns(ts).saturating_add(interface.offset_s.saturating_mul(1_000_000_000));
            return Some(Ok(Frame { number, ts_ns, link: interface.link, data, orig_len: orig_len.max(caplen) }));
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.state {
            State::Pcap { big_endian, nanos, link } => self.next_pcap(big_endian, nanos, link),
            State::Pcapng { .. } => self.next_pcapng(),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::gen::{link_frame, Builder, PcapWriter, PcapngWriter};

    fn ip_packet() -> Vec<u8> {
        Builder::v4("192.168.28.10", "192.168.28.1").udp(1, 2, b"x")
    }

    fn first_payload(file: Vec<u8>) -> (u64, Option<Family>, usize) {
        let capture = Capture::new(file).unwrap();
        let frame = capture.frames().next().unwrap().unwrap();
        match payload(&frame).unwrap() {
            Payload::Ip { data, family, .. } => (frame.ts_ns, family, data.len()),
            Payload::Other(p) => panic!("not IP: {p:?}"),
        }
    }

    #[test]
    fn reads_every_format_and_link_type() {
        let ip = ip_packet();
        let links = [
            linktype::ETHERNET,
            linktype::RAW,
            linktype::IPV4,
            linktype::LINUX_SLL,
            linktype::LINUX_SLL2,
            linktype::NULL,
            linktype::LOOP,
        ];
        for link in links {
            for (big_endian, nanos) in [(false, false), (true, true), (false, true), (true, false)] {
                let mut w = PcapWriter::new(link, nanos, big_endian);
                w.packet(1_500_000_123_456, &link_frame(link, &ip, 0));
                let (ts, _, len) = first_payload(w.finish());
                assert_eq!(len, ip.len(), "link {link}");
                assert_eq!(ts, if nanos { 1_500_000_123_456 } else { 1_500_000_123_000 });
            }
            for big_endian in [false, true] {
                let mut w = PcapngWriter::new(big_endian);
                w.interface(link, Some(9));
                w.packet(0, 42_000_000_001, &link_frame(link, &ip, 0));
                let (ts, _, len) = first_payload(w.finish());
                assert_eq!((ts, len), (42_000_000_001, ip.len()), "pcapng link {link}");
            }
        }
        let vlan = link_frame(linktype::ETHERNET, &ip, 2);
        let mut w = PcapWriter::new(linktype::ETHERNET, false, false);
        w.packet(0, &vlan);
        assert_eq!(first_payload(w.finish()).1, Some(Family::Ipv4));
    }

    #[test]
    fn reports_damage_with_frame_numbers() {
        let ip = ip_packet();
        let mut w = PcapWriter::new(linktype::RAW, false, false);
        w.packet(0, &ip);
        w.packet(0, &ip);
        let whole = w.finish();
        let truncated = whole[..whole.len() - 3].to_vec();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage!garbage!garbage!".to_vec(), "byte offset 0: not a pcap or pcapng file"),
            (vec![0xd4, 0xc3], "byte offset 0: file of 2 bytes is too short"),
            (truncated, "packet 2 (byte offset 69): record truncated: it says 29 bytes, the file has 26 left"),
            (whole[..whole.len() - 40].to_vec(), "packet 2 (byte offset 69): record header cut off"),
        ];
        for (file, want) in cases {
            let result = Capture::new(file).and_then(|c| c.frames().collect::<Result<Vec<_>, _>>().map(|_| ()));
            let got = result.unwrap_err().to_string();
            assert!(got.starts_with(want), "got {got:?}, want {want:?}");
        }
        let mut bad_link = PcapWriter::new(105, false, false).finish();
        bad_link.truncate(24);
        assert!(Capture::new(bad_link).err().unwrap().message.starts_with("unsupported link type 105"));
    }

    #[test]
    fn non_ip_frames_are_reported_not_errors() {
        let mut arp = vec![0xffu8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        let frame = Frame { number: 1, ts_ns: 0, link: linktype::ETHERNET, data: &arp, orig_len: arp.len() };
        assert!(matches!(payload(&frame), Ok(Payload::Other(Some(0x0806)))));
        let short = Frame { number: 1, ts_ns: 0, link: linktype::ETHERNET, data: &arp[..5], orig_len: 5 };
        assert!(payload(&short).is_err());
    }
}
