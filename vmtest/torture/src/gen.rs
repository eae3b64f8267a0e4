// SPDX-License-Identifier: GPL-2.0-only
//! The requests of the torture: valid ones written by seng-core's own encoders
//! ([`Operation::emit`], [`seng_core::genl::LegacyOp::emit`] through it, [`AttrWriter`]), mutations of them that
//! reach deep into the decoder, and random ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use seng_core::genl::{attr, cmd, AttrWriter, ReadScope};
use seng_core::operation::{Dialect, Operation, Registration};
use seng_core::{Category, GatewayName, Measurement, Origin};

/// A small, fast generator (xorshift64*): the torture needs many numbers, not good ones.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The addresses, applications, hosts, categories and origins one table's requests draw from:
/// few enough that requests meet each other's enclaves (of the same origin and of others), and
/// the categories more than an application may hold, so the limit is reached.
pub struct Universe {
    /// Enclave addresses, IPv4 then IPv6.
    pub addrs: Vec<IpAddr>,
    /// The IPv4 ones, sources of packets.
    pub v4: Vec<Ipv4Addr>,
    /// Application measurements.
    pub apps: Vec<Measurement>,
    hosts: Vec<IpAddr>,
    cats: Vec<Category>,
    /// The local origin and two gateways.
    origins: Vec<Origin>,
}

impl Universe {
    /// The universe of table `id` (distinct ids never share an address or application).
    pub fn new(id: u8) -> Universe {
        let v4: Vec<Ipv4Addr> = (1..=12).map(|i| Ipv4Addr::new(10, 77, id, i)).collect();
        let mut addrs: Vec<IpAddr> = v4.iter().copied().map(IpAddr::V4).collect();
        addrs.extend((1..=6).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, u16::from(id), i))));
        let apps = (0..4u8)
            .map(|i| {
                let mut m = [0x5e; 32];
                m[0] = id;
                m[1] = i;
                Measurement(m)
            })
            .collect();
        let hosts = vec![
            IpAddr::V4(Ipv4Addr::new(10, 99, id, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 99, id, 2)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, u16::from(id), 1)),
        ];
        let cats = (0..40).map(|i| format!("c{i}").parse().expect("a valid category name")).collect();
        let gateway = |suffix: char| Origin::Gateway(GatewayName::new(format!("gw{id}{suffix}").as_bytes()).expect("a valid gateway name"));
        let origins = vec![Origin::Local, gateway('a'), gateway('b')];
        Universe { addrs, v4, apps, hosts, cats, origins }
    }

    fn categories(&self, rng: &mut Rng, most: usize) -> Vec<Category> {
        (0..rng.below(most + 1)).map(|_| *rng.pick(&self.cats)).collect()
    }

    /// Mostly the local origin, as on a gateway whose peers are few.
    fn origin(&self, rng: &mut Rng) -> Origin {
        if rng.percent(60) {
            Origin::Local
        } else {
            *rng.pick(&self.origins)
        }
    }

    fn registration(&self, rng: &mut Rng, origin: Origin) -> Registration {
        // Mostly the first application, so its enclaves and categories pile up.
        let app = if rng.percent(50) { self.apps[0] } else { *rng.pick(&self.apps) };
        Registration { addr: *rng.pick(&self.addrs), app, host: *rng.pick(&self.hosts), categories: self.categories(rng, 3), origin }
    }

    fn operation(&self, rng: &mut Rng) -> Operation {
        let origin = self.origin(rng);
        match rng.below(20) {
            0..=7 => Operation::Register((0..1 + rng.below(4)).map(|_| self.registration(rng, origin)).collect()),
            8..=11 => Operation::Unregister { origin, addrs: (0..1 + rng.below(3)).map(|_| *rng.pick(&self.addrs)).collect() },
            12..=14 => Operation::Attach { origin, app: *rng.pick(&self.apps), categories: self.categories(rng, 12).into_iter().chain([*rng.pick(&self.cats)]).collect() },
            15..=17 => Operation::Detach { origin, app: *rng.pick(&self.apps), categories: self.categories(rng, 3).into_iter().chain([*rng.pick(&self.cats)]).collect() },
            _ => Operation::Flush { origin },
        }
    }

    /// A well-formed request of any command: an operation in any dialect (command 1 whenever
    /// it can say it), a GET, STATS, or the end of a replace transaction.
    pub fn valid(&self, rng: &mut Rng, flush_percent: usize) -> (u8, Vec<u8>) {
        match rng.below(100) {
            0..=5 => {
                let mut buf = vec![0u8; 64];
                let mut w = AttrWriter::new(&mut buf);
                w.put_addr(attr::ADDR, rng.pick(&self.addrs)).expect("an address fits");
                let scope = match rng.below(3) {
                    0 => ReadScope::Every,
                    _ => ReadScope::Origin(self.origin(rng)),
                };
                scope.emit(&mut w).expect("a scope fits");
                let len = w.len();
                buf.truncate(len);
                (cmd::GET, buf)
            }
            6..=8 => (cmd::STATS, Vec::new()),
            9..=13 => (cmd::REPLACE_COMMIT, Vec::new()),
            14..=15 => (cmd::REPLACE_ABORT, Vec::new()),
            _ => loop {
                let op = self.operation(rng);
                let dialect = *rng.pick(&[Dialect::Legacy, Dialect::Live, Dialect::Live, Dialect::Staged, Dialect::Staged]);
                // A staged flush begins a replace transaction: only live flushes are rationed.
                if matches!(op, Operation::Flush { .. }) && dialect != Dialect::Staged && !rng.percent(flush_percent) {
                    continue;
                }
                let mut buf = vec![0u8; 4096];
                let mut w = AttrWriter::new(&mut buf);
                // Command 1 cannot say everything: such an operation goes out in another dialect.
                let command = match op.emit(dialect, &mut w) {
                    Ok(command) => command,
                    Err(_) => {
                        let mut w = AttrWriter::new(&mut buf);
                        let command = op.emit(Dialect::Live, &mut w).expect("an operation fits 4 KiB");
                        let len = w.len();
                        buf.truncate(len);
                        break (command, buf);
                    }
                };
                let len = w.len();
                buf.truncate(len);
                break (command, buf);
            },
        }
    }
}

/// The attributes of `payload` as (offset, length) pairs, following lengths as the decoder
/// does; stops at the first header that does not fit.
fn attr_spans(payload: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(header) = payload.get(at..at + 4) {
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        if len < 4 || at + len > payload.len() {
            break;
        }
        spans.push((at, len));
        at += (len + 3) & !3;
    }
    spans
}

/// One attribute with its header and padding.
pub fn raw_attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
    out
}

const NLA_F_NESTED: u16 = 0x8000;

/// `request` changed in one of the ways a broken or hostile client would: bit flips,
/// truncation, wrong lengths, nests inside nests, repeated and unknown attributes, another
/// command.
pub fn mutate(rng: &mut Rng, (command, mut payload): (u8, Vec<u8>)) -> (u8, Vec<u8>) {
    let spans = attr_spans(&payload);
    match rng.below(9) {
        0 if !payload.is_empty() => {
            for _ in 0..1 + rng.below(3) {
                let bit = rng.below(payload.len() * 8);
                payload[bit / 8] ^= 1 << (bit % 8);
            }
        }
        1 if !payload.is_empty() => payload.truncate(rng.below(payload.len())),
        2 if !spans.is_empty() => {
            // A length field that lies: short, long, or past the message.
            let (at, len) = *rng.pick(&spans);
            let lie = match rng.below(4) {
                0 => rng.below(4),
                1 => len.saturating_sub(1 + rng.below(4)),
                2 => len + 1 + rng.below(8),
                _ => rng.below(65536),
            } as u16;
            payload[at..at + 2].copy_from_slice(&lie.to_ne_bytes());
        }
        3 if !spans.is_empty() => {
            // An attribute said twice.
            let (at, len) = *rng.pick(&spans);
            let copy = payload[at..at + ((len + 3) & !3).min(payload.len() - at)].to_vec();
            let to = rng.pick(&spans).0;
            payload.splice(to..to, copy);
        }
        4 => {
            // An attribute the protocol does not know, or one of another command.
            let kind = match rng.below(3) {
                0 => 16 + rng.below(48) as u16,
                1 => 1 + rng.below(attr::MAX as usize) as u16,
                _ => rng.next() as u16,
            };
            let body: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            let to = if spans.is_empty() { 0 } else { rng.pick(&spans).0 };
            payload.splice(to..to, raw_attr(kind, &body));
        }
        5 => {
            // The whole request, or one attribute, wrapped in ENCLAVE nests, nests in nests.
            let mut inner = match spans.is_empty() {
                true => payload.clone(),
                false => {
                    let (at, len) = *rng.pick(&spans);
                    payload[at..at + len].to_vec()
                }
            };
            for _ in 0..1 + rng.below(4) {
                let kind = if rng.percent(80) { attr::ENCLAVE | NLA_F_NESTED } else { attr::ENCLAVE };
                inner = raw_attr(kind, &inner);
            }
            payload = if rng.percent(50) { inner } else { [payload, inner].concat() };
        }
        6 if !spans.is_empty() => {
            // An attribute dropped.
            let (at, len) = *rng.pick(&spans);
            payload.drain(at..(at + ((len + 3) & !3)).min(payload.len()));
        }
        7 => {
            // The payload of one command under another.
            return (1 + rng.below(usize::from(cmd::MAX) + 1) as u8, payload);
        }
        _ => {
            // Garbage appended.
            payload.extend((0..1 + rng.below(16)).map(|_| rng.next() as u8));
        }
    }
    (command, payload)
}

/// A request from nothing: a random command (unknown ones too) with random bytes, or with a
/// random sequence of attributes of the protocol's types.
pub fn random(rng: &mut Rng) -> (u8, Vec<u8>) {
    let command = if rng.percent(90) { 1 + rng.below(usize::from(cmd::MAX)) as u8 } else { rng.next() as u8 };
    let payload = if rng.percent(30) {
        (0..rng.below(96)).map(|_| rng.next() as u8).collect()
    } else {
        let mut out = Vec::new();
        for _ in 0..rng.below(6) {
            let kind = 1 + rng.below(usize::from(attr::MAX) + 2) as u16;
            let kind = if kind == attr::ENCLAVE && rng.percent(70) { kind | NLA_F_NESTED } else { kind };
            let odd = 1 + rng.below(40);
            let len = *rng.pick(&[0, 4, 16, 32, odd]);
            let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            out.extend(raw_attr(kind, &body));
        }
        out
    };
    (command, payload)
}

#[cfg(test)]
mod test {
    use super::*;
    use seng_core::genl::Scoped;

    #[test]
    fn valid_requests_decode() {
        let universe = Universe::new(3);
        let mut rng = Rng::new(1);
        for _ in 0..2000 {
            let (command, payload) = universe.valid(&mut rng, 10);
            assert!(Scoped::parse(command, &payload).is_ok(), "command {command} payload {payload:?}");
        }
    }

    #[test]
    fn mutations_change_the_request() {
        let universe = Universe::new(3);
        let mut rng = Rng::new(2);
        let mut changed = 0;
        for _ in 0..500 {
            let valid = universe.valid(&mut rng, 10);
            if mutate(&mut rng, valid.clone()) != valid {
                changed += 1;
            }
        }
        assert!(changed > 450, "only {changed} of 500 mutations changed anything");
    }

    #[test]
    fn spans_follow_the_lengths() {
        let payload = [raw_attr(attr::APP, &[1; 32]), raw_attr(attr::CAT, b"ab\0")].concat();
        assert_eq!(attr_spans(&payload), [(0, 36), (36, 7)]);
        assert_eq!(attr_spans(&payload[..10]), [] as [(usize, usize); 0]);
    }
}
