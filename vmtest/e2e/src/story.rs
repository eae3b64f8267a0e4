// SPDX-License-Identifier: GPL-2.0-only
//! Writing synthetic captures: packets placed on a millisecond timeline, TCP connections that
//! keep real sequence and acknowledgement numbers (so nothing depends on conntrack's liberal
//! window mode), UDP and ICMP exchanges. Built on seng-sim's packet builder and pcap writer.

use seng_sim::capture::linktype;
use seng_sim::gen::{Builder, PcapWriter, Transport};
use seng_sim::packet::tcp_flag::{ACK, FIN, PSH, RST, SYN};

/// 2024-01-01 00:00:00 UTC in nanoseconds: the first packet of every generated capture.
const EPOCH_NS: u64 = 1_704_067_200_000_000_000;

/// Packets with times; written out in time order (stable for equal times).
#[derive(Default)]
pub struct Story {
    packets: Vec<(u64, Vec<u8>)>,
}

impl Story {
    /// Puts `packet` at `ms` milliseconds after the start.
    pub fn at(&mut self, ms: u64, packet: Vec<u8>) {
        self.at_us(ms * 1000, packet);
    }

    /// Puts `packet` at `us` microseconds after the start.
    pub fn at_us(&mut self, us: u64, packet: Vec<u8>) {
        self.packets.push((us, packet));
    }

    /// The capture: raw IP (what `tcpdump -i tunFA` writes), nanosecond timestamps.
    pub fn pcap(mut self) -> Vec<u8> {
        self.packets.sort_by_key(|(us, _)| *us);
        let mut w = PcapWriter::new(linktype::RAW, true, false);
        for (us, p) in &self.packets {
            w.packet(EPOCH_NS + us * 1000, p);
        }
        w.finish()
    }
}

/// A TCP connection from a client to a server with its sequence numbers.
pub struct Tcp {
    b: Builder,
    sport: u16,
    dport: u16,
    client_seq: u32,
    server_seq: u32,
    /// The connection as the server sees it when NAT sits between: (client to server, client
    /// port, server port); the server's segments are sent that way.
    server_view: Option<(Builder, u16, u16)>,
}

impl Tcp {
    /// A connection from `client`:`sport` to `server`:`dport`.
    pub fn new(client: &str, sport: u16, server: &str, dport: u16) -> Tcp {
        // Initial sequence numbers differ per connection, as real ones do.
        let isn = u32::from(sport).wrapping_mul(2_654_435_761);
        Tcp {
            b: Builder::new(ip(client), ip(server)),
            sport,
            dport,
            client_seq: isn,
            server_seq: isn ^ 0x5e9_5e9,
            server_view: None,
        }
    }

    /// The same connection with the server seeing it as from `client`:`sport` to
    /// `server`:`dport` (what NAT makes of it): its segments go that way.
    pub fn translated(mut self, client: &str, sport: u16, server: &str, dport: u16) -> Tcp {
        self.server_view = Some((Builder::new(ip(client), ip(server)), sport, dport));
        self
    }

    fn segment(&mut self, from_client: bool, flags: u8, data: &[u8]) -> Vec<u8> {
        let len = data.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        let (b, sport, dport, seq, ack) = match from_client {
            true => (
                self.b,
                self.sport,
                self.dport,
                self.client_seq,
                self.server_seq,
            ),
            false => {
                let (b, client_port, server_port) =
                    self.server_view.unwrap_or((self.b, self.sport, self.dport));
                (
                    b.reverse(),
                    server_port,
                    client_port,
                    self.server_seq,
                    self.client_seq,
                )
            }
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let p = b.build(Transport::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            data,
        });
        match from_client {
            true => self.client_seq = self.client_seq.wrapping_add(len),
            false => self.server_seq = self.server_seq.wrapping_add(len),
        }
        p
    }

    /// The client's SYN.
    pub fn syn(&mut self) -> Vec<u8> {
        self.segment(true, SYN, b"")
    }

    /// The server's SYN-ACK.
    pub fn syn_ack(&mut self) -> Vec<u8> {
        self.segment(false, SYN | ACK, b"")
    }

    /// A bare ACK from the client (`true`) or the server.
    pub fn ack(&mut self, from_client: bool) -> Vec<u8> {
        self.segment(from_client, ACK, b"")
    }

    /// Data with PSH from the client or the server.
    pub fn data(&mut self, from_client: bool, data: &[u8]) -> Vec<u8> {
        self.segment(from_client, PSH | ACK, data)
    }

    /// A FIN from the client or the server.
    pub fn fin(&mut self, from_client: bool) -> Vec<u8> {
        self.segment(from_client, FIN | ACK, b"")
    }

    /// A RST from the client or the server.
    pub fn rst(&mut self, from_client: bool) -> Vec<u8> {
        self.segment(from_client, RST | ACK, b"")
    }

    /// A segment with any flags from the client or the server.
    pub fn flags(&mut self, from_client: bool, flags: u8) -> Vec<u8> {
        self.segment(from_client, flags, b"")
    }

    /// Puts a whole connection on `story` from `ms` on, one packet per millisecond:
    /// handshake, a request and an answer, teardown. Returns the time after it.
    pub fn exchange(&mut self, story: &mut Story, ms: u64) -> u64 {
        let packets = [
            self.syn(),
            self.syn_ack(),
            self.ack(true),
            self.data(true, b"GET / HTTP/1.0\r\n\r\n"),
            self.data(false, b"HTTP/1.0 200 OK\r\n\r\nhello"),
            self.fin(true),
            self.fin(false),
            self.ack(true),
        ];
        let n = packets.len() as u64;
        for (i, p) in packets.into_iter().enumerate() {
            story.at(ms + i as u64, p);
        }
        ms + n
    }
}

/// Parses an address of the generators' fixed text.
pub fn ip(text: &str) -> std::net::IpAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("generator address {text:?} is not an IP address"))
}

/// Packets between two addresses (UDP, ICMP), client first.
pub fn between(client: &str, server: &str) -> Builder {
    Builder::new(ip(client), ip(server))
}

#[cfg(test)]
mod test {
    use super::*;
    use seng_sim::packet::parse;

    #[test]
    fn tcp_numbers_follow_the_data() {
        let mut t = Tcp::new("192.168.28.10", 40000, "192.168.28.1", 443);
        let syn = t.syn();
        let syn_ack = t.syn_ack();
        let ack = t.ack(true);
        let data = t.data(true, b"abc");
        let reply = t.ack(false);
        let seq = |p: &[u8]| u32::from_be_bytes(p[24..28].try_into().unwrap());
        let ack_of = |p: &[u8]| u32::from_be_bytes(p[28..32].try_into().unwrap());
        assert_eq!(ack_of(&syn_ack), seq(&syn) + 1);
        assert_eq!(seq(&ack), seq(&syn) + 1);
        assert_eq!(ack_of(&ack), seq(&syn_ack) + 1);
        assert_eq!(seq(&data), seq(&ack));
        assert_eq!(ack_of(&reply), seq(&data) + 3);
        assert_eq!(ack_of(&syn), 0, "no ACK flag, no acknowledgement number");
        for p in [syn, syn_ack, ack, data, reply] {
            let parsed = parse(&p, p.len(), None).unwrap();
            assert!(parsed.complete);
        }
    }

    #[test]
    fn story_is_in_time_order() {
        let mut s = Story::default();
        let b = between("192.168.28.10", "192.168.28.1");
        s.at(5, b.udp(1, 2, b"late"));
        s.at(1, b.udp(1, 2, b"early"));
        let pcap = s.pcap();
        let capture = seng_sim::capture::Capture::new(pcap).unwrap();
        let times: Vec<u64> = capture.frames().map(|f| f.unwrap().ts_ns).collect();
        assert_eq!(times, [EPOCH_NS + 1_000_000, EPOCH_NS + 5_000_000]);
    }
}
