// SPDX-License-Identifier: GPL-2.0-only
//! The gateway's network, as far as filtering depends on it: interfaces with their addresses,
//! routes, and from these where a packet comes from, whether it is delivered, and where it goes.
//!
//! The rule (the capture does not say which way a packet went, so it is inferred):
//! - a packet whose source is a local address was sent by the gateway itself: OUTPUT, out the
//!   interface routing its destination; if the destination is local too, it goes through `lo`:
//!   OUTPUT (out `lo`) then INPUT (in `lo`);
//! - any other packet arrived on the interface its source routes to (reverse path), unless
//!   `--in-iface` forces one; if its destination is local, broadcast or multicast it is
//!   delivered: INPUT; otherwise it is forwarded: FORWARD, out the interface routing its
//!   destination (forwarding is assumed enabled, as on a SENG gateway).
//!
//! Local addresses are those of the interfaces, `--local` ones, and 127.0.0.0/8 and ::1 on `lo`.
//! Each interface's prefix is a connected route; `--route` adds more; everything else goes out
//! the default interface. Defaults: `tunFA` with 192.168.28.1/24 and fd00:28::1/64, default
//! interface `eth0` (no address).

use std::fmt;
use std::net::IpAddr;

use seng_core::{Family, HostMask};

use crate::packet::{from_ip, Addr};

/// An interface and its addresses with prefix lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Its name, e.g. `tunFA`.
    pub name: String,
    /// Its addresses.
    pub addrs: Vec<(IpAddr, u8)>,
}

/// The network configuration, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Interfaces with addresses (`--iface NAME=ADDR/LEN,...`).
    pub interfaces: Vec<Interface>,
    /// More local addresses (`--local ADDR`).
    pub locals: Vec<IpAddr>,
    /// Routes: prefix, length, interface (`--route PREFIX=IFACE`).
    pub routes: Vec<(IpAddr, u8, String)>,
    /// Where everything else is routed (`--default-iface`).
    pub default_iface: String,
    /// Arrival interface for every packet not sent by the gateway (`--in-iface`), instead of
    /// the reverse-path guess.
    pub in_iface: Option<String>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            interfaces: vec![Interface {
                name: "tunFA".into(),
                addrs: vec![(IpAddr::from([192, 168, 28, 1]), 24), (IpAddr::from([0xfd00, 0x28, 0, 0, 0, 0, 0, 1]), 64)],
            }],
            locals: Vec::new(),
            routes: Vec::new(),
            default_iface: "eth0".into(),
            in_iface: None,
        }
    }
}

/// A bad `--iface` / `--route` / `--local` value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{option} {value:?}: {message}")]
pub struct NetError {
    /// The option.
    pub option: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

fn prefix(text: &str, option: &'static str, value: &str) -> Result<(IpAddr, u8), NetError> {
    let err = |message: &str| NetError { option, value: value.into(), message: message.into() };
    let (addr, len) = text.split_once('/').ok_or_else(|| err("expected ADDR/LEN"))?;
    let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len.parse().ok().filter(|l| *l <= max).ok_or_else(|| err("bad prefix length"))?;
    Ok((addr, len))
}

fn check_name(name: &str, option: &'static str, value: &str) -> Result<(), NetError> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '+']) {
        return Err(NetError { option, value: value.into(), message: "interface names have 1 to 15 characters, no '/', ' ' or '+'".into() });
    }
    Ok(())
}

impl NetConfig {
    /// Applies `--iface NAME=ADDR/LEN[,ADDR/LEN...]`: defines the interface, replacing an
    /// earlier definition (the default `tunFA` included).
    pub fn set_interface(&mut self, value: &str) -> Result<(), NetError> {
        let (name, addrs) = value.split_once('=').unwrap_or((value, ""));
        check_name(name, "--iface", value)?;
        let addrs = addrs.split(',').filter(|a| !a.is_empty()).map(|a| prefix(a, "--iface", value)).collect::<Result<Vec<_>, _>>()?;
        self.interfaces.retain(|i| i.name != name);
        self.interfaces.push(Interface { name: name.into(), addrs });
        Ok(())
    }

    /// Applies `--route PREFIX=IFACE` (`default=IFACE` sets the default interface).
    pub fn add_route(&mut self, value: &str) -> Result<(), NetError> {
        let err = |message: &str| NetError { option: "--route", value: value.into(), message: message.into() };
        let (net, iface) = value.split_once('=').ok_or_else(|| err("expected PREFIX=IFACE"))?;
        check_name(iface, "--route", value)?;
        if net == "default" {
            self.default_iface = iface.into();
            return Ok(());
        }
        let (addr, len) = prefix(net, "--route", value)?;
        self.routes.push((addr, len, iface.into()));
        Ok(())
    }

    /// Applies `--local ADDR`.
    pub fn add_local(&mut self, value: &str) -> Result<(), NetError> {
        let addr = value.parse().map_err(|_| NetError { option: "--local", value: value.into(), message: "not an IP address".into() })?;
        self.locals.push(addr);
        Ok(())
    }

    /// Checks `--default-iface` / `--in-iface` names.
    pub fn check_names(&self) -> Result<(), NetError> {
        check_name(&self.default_iface, "--default-iface", &self.default_iface)?;
        if let Some(name) = &self.in_iface {
            check_name(name, "--in-iface", name)?;
        }
        Ok(())
    }
}

struct Route {
    net: Addr,
    mask: Addr,
    iface: u8,
}

/// The compiled configuration: answers [`Router::arrival`], [`Router::delivered`] and [`Router::route`] per packet without allocating.
pub struct Router {
    names: Vec<String>,
    /// Per interface id: its addresses with their masks, in the order given.
    iface_addrs: Vec<Vec<(Family, Addr, Addr)>>,
    local: [Vec<Addr>; 2],
    broadcast: Vec<Addr>,
    /// Per family, longest prefix first.
    routes: [Vec<Route>; 2],
    default_iface: u8,
    in_iface: Option<u8>,
}

/// Interface id of `lo`.
pub const LO: u8 = 1;

fn index(family: Family) -> usize {
    match family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

fn mask_of(family: Family, len: u8) -> Addr {
    let bits = match family {
        Family::Ipv4 => 32,
        Family::Ipv6 => 128,
    };
    if len == 0 {
        return 0;
    }
    let ones = u128::MAX << (128 - u32::from(len));
    ones >> (128 - bits)
}

impl Router {
    /// Compiles `config`. At most 63 interfaces can be named (rules match them as bit sets).
    pub fn new(config: &NetConfig) -> Result<Router, NetError> {
        config.check_names()?;
        let mut router = Router {
            names: vec![String::new(), "lo".into()],
            iface_addrs: vec![Vec::new(), vec![(Family::Ipv4, from_ip(IpAddr::from([127, 0, 0, 1])), mask_of(Family::Ipv4, 8)), (Family::Ipv6, 1, u128::MAX)]],
            local: [vec![from_ip(IpAddr::from([127, 0, 0, 1]))], vec![1]],
            broadcast: vec![u128::from(u32::MAX)],
            routes: [Vec::new(), Vec::new()],
            default_iface: 0,
            in_iface: None,
        };
        let mut routes: Vec<(Family, Addr, u8, u8)> = vec![(Family::Ipv4, from_ip(IpAddr::from([127, 0, 0, 0])), 8, LO)];
        for iface in &config.interfaces {
            let id = router.intern(&iface.name)?;
            for (addr, len) in &iface.addrs {
                let family = Family::of(addr);
                let a = from_ip(*addr);
                router.local[index(family)].push(a);
                let mask = mask_of(family, *len);
                router.iface_addrs[usize::from(id)].push((family, a, mask));
                if family == Family::Ipv4 && *len < 31 {
                    router.broadcast.push((a & mask) | (!mask & 0xffff_ffff));
                }
                routes.push((family, a & mask, *len, id));
            }
        }
        for addr in &config.locals {
            router.local[index(Family::of(addr))].push(from_ip(*addr));
        }
        for (addr, len, name) in &config.routes {
            let id = router.intern(name)?;
            let family = Family::of(addr);
            routes.push((family, from_ip(*addr) & mask_of(family, *len), *len, id));
        }
        router.default_iface = router.intern(&config.default_iface)?;
        if let Some(name) = &config.in_iface {
            router.in_iface = Some(router.intern(name)?);
        }
        // Longest prefix first; equal lengths keep their order (interfaces before --route).
        routes.sort_by_key(|r| std::cmp::Reverse(r.2));
        for (family, net, len, iface) in routes {
            router.routes[index(family)].push(Route { net, mask: mask_of(family, len), iface });
        }
        Ok(router)
    }

    fn intern(&mut self, name: &str) -> Result<u8, NetError> {
        if let Some(id) = self.names.iter().position(|n| n == name) {
            return Ok(id as u8);
        }
        if self.names.len() >= 64 {
            return Err(NetError { option: "--iface", value: name.into(), message: "more than 63 interfaces".into() });
        }
        self.names.push(name.into());
        self.iface_addrs.push(Vec::new());
        Ok((self.names.len() - 1) as u8)
    }

    /// The name of interface `id` (empty for 0, "no interface").
    pub fn name(&self, id: u8) -> &str {
        self.names.get(usize::from(id)).map_or("", String::as_str)
    }

    /// Every interface name, indexed by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether `addr` is an address of the gateway.
    pub fn is_local(&self, family: Family, addr: Addr) -> bool {
        self.local[index(family)].contains(&addr) || (family == Family::Ipv4 && addr >> 24 == 127)
    }

    /// The interface that routes `addr`.
    pub fn route(&self, family: Family, addr: Addr) -> u8 {
        self.routes[index(family)].iter().find(|r| addr & r.mask == r.net).map_or(self.default_iface, |r| r.iface)
    }

    /// The address of interface `iface` that a packet toward `dst` leaves with (MASQUERADE):
    /// one whose prefix holds `dst`, else the first of its family; `None` if it has none.
    pub fn iface_addr(&self, iface: u8, family: Family, dst: Addr) -> Option<Addr> {
        let addrs = self.iface_addrs.get(usize::from(iface))?;
        let mut of_family = addrs.iter().filter(|(f, _, _)| *f == family);
        let first = of_family.clone().next().map(|(_, a, _)| *a);
        of_family.find(|(_, a, mask)| a & mask == dst & mask).map(|(_, a, _)| *a).or(first)
    }

    /// The source address MASQUERADE gives a packet to `dst` leaving through `iface`: the
    /// interface's own ([`Router::iface_addr`]), else, as `inet_select_addr` and IPv6 source
    /// selection fall back, the first global address of another interface in their order.
    pub fn masquerade_addr(&self, iface: u8, family: Family, dst: Addr) -> Option<Addr> {
        self.iface_addr(iface, family, dst).or_else(|| {
            self.iface_addrs.iter().skip(usize::from(LO) + 1).flatten().find(|(f, _, _)| *f == family).map(|(_, a, _)| *a)
        })
    }

    /// The first address of `family` on interface `iface` (REDIRECT's target).
    pub fn first_addr(&self, iface: u8, family: Family) -> Option<Addr> {
        self.iface_addrs.get(usize::from(iface))?.iter().find(|(f, _, _)| *f == family).map(|(_, a, _)| *a)
    }

    /// The interface a packet from `src` arrived on, `None` when the gateway sent it (a local
    /// source); see the module documentation.
    pub fn arrival(&self, family: Family, src: Addr) -> Option<u8> {
        if self.is_local(family, src) {
            return None;
        }
        Some(self.in_iface.unwrap_or_else(|| self.route(family, src)))
    }

    /// Whether a packet to `dst` is delivered to the gateway (local, broadcast or multicast).
    pub fn delivered(&self, family: Family, dst: Addr) -> bool {
        match family {
            Family::Ipv4 => self.is_local(family, dst) || dst >> 28 == 0xe || self.broadcast.contains(&dst),
            Family::Ipv6 => self.is_local(family, dst) || dst >> 120 == 0xff,
        }
    }

    /// Whether interface pattern `pattern` (`eth0`, `eth+`, `+`) names interface `id`.
    pub fn iface_matches(&self, pattern: &str, id: u8) -> bool {
        let name = self.name(id);
        match pattern.strip_suffix('+') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        }
    }
}

impl fmt::Display for Router {
    /// One line per interface and route, for the report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (family, routes) in [(Family::Ipv4, &self.routes[0]), (Family::Ipv6, &self.routes[1])] {
            for r in routes {
                let len = match family {
                    Family::Ipv4 => (r.mask as u32).count_ones(),
                    Family::Ipv6 => r.mask.count_ones(),
                };
                let net = HostMask::with_prefix(crate::packet::to_ip(family, r.net), len as u8);
                writeln!(f, "  {net} dev {}", self.name(r.iface))?;
            }
        }
        write!(f, "  default dev {}", self.name(self.default_iface))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// The hooks a packet passes without NAT, with interface ids (0 is "no interface").
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Path {
        Input { iface: u8 },
        Forward { in_iface: u8, out_iface: u8 },
        Output { iface: u8 },
        Loopback,
    }

    impl Router {
        fn path(&self, family: Family, src: Addr, dst: Addr) -> Path {
            match self.arrival(family, src) {
                None if self.is_local(family, dst) => Path::Loopback,
                None => Path::Output { iface: self.route(family, dst) },
                Some(iface) if self.delivered(family, dst) => Path::Input { iface },
                Some(in_iface) => Path::Forward { in_iface, out_iface: self.route(family, dst) },
            }
        }
    }

    fn a(text: &str) -> (Family, Addr) {
        let ip: IpAddr = text.parse().unwrap();
        (Family::of(&ip), from_ip(ip))
    }

    #[test]
    fn default_paths() {
        let r = Router::new(&NetConfig::default()).unwrap();
        let tun = r.names().iter().position(|n| n == "tunFA").unwrap() as u8;
        let eth = r.names().iter().position(|n| n == "eth0").unwrap() as u8;
        let cases = [
            ("192.168.28.10", "192.168.28.1", Path::Input { iface: tun }),
            ("192.168.28.1", "192.168.28.10", Path::Output { iface: tun }),
            ("192.168.28.10", "198.51.100.7", Path::Forward { in_iface: tun, out_iface: eth }),
            ("198.51.100.7", "192.168.28.10", Path::Forward { in_iface: eth, out_iface: tun }),
            ("192.168.28.1", "127.0.0.1", Path::Loopback),
            ("192.168.28.10", "192.168.28.255", Path::Input { iface: tun }),
            ("192.168.28.10", "224.0.0.251", Path::Input { iface: tun }),
            ("fd00:28::10", "fd00:28::1", Path::Input { iface: tun }),
            ("fd00:28::10", "2001:db8::1", Path::Forward { in_iface: tun, out_iface: eth }),
            ("fd00:28::1", "ff02::1", Path::Output { iface: eth }),
        ];
        for (src, dst, want) in cases {
            let (family, s) = a(src);
            let (_, d) = a(dst);
            assert_eq!(r.path(family, s, d), want, "{src} -> {dst}");
        }
    }

    #[test]
    fn configured_paths() {
        let mut c = NetConfig::default();
        c.set_interface("wg0=10.8.0.1/24").unwrap();
        c.add_route("10.9.0.0/16=wg0").unwrap();
        c.add_route("default=ens3").unwrap();
        c.add_local("203.0.113.5").unwrap();
        c.in_iface = Some("ens3".into());
        let r = Router::new(&c).unwrap();
        let id = |n: &str| r.names().iter().position(|x| x == n).unwrap() as u8;
        let (f, s) = a("10.9.1.1");
        let (_, d) = a("203.0.113.5");
        assert_eq!(r.path(f, s, d), Path::Input { iface: id("ens3") });
        let (_, d) = a("8.8.8.8");
        let (_, local) = a("10.8.0.1");
        assert_eq!(r.path(f, local, d), Path::Output { iface: id("ens3") });
        assert_eq!(r.path(f, local, s), Path::Output { iface: id("wg0") });
        assert!(r.iface_matches("wg+", id("wg0")) && r.iface_matches("+", 0) && !r.iface_matches("wg0", 0));
        // ens3 has no address: MASQUERADE out of it takes tunFA's (the first interface's).
        let (_, tun_addr) = a("192.168.28.1");
        assert_eq!(r.masquerade_addr(id("ens3"), f, d), Some(tun_addr));
        assert_eq!(r.masquerade_addr(id("wg0"), f, d), Some(local));
        let (_, v6) = a("fd00:28::1");
        assert_eq!(r.masquerade_addr(id("ens3"), Family::Ipv6, 0), Some(v6));
        assert!(c.set_interface("bad/name=1.2.3.4/8").is_err());
        assert_eq!(c.add_route("10.0.0.0/33=x").unwrap_err().message, "bad prefix length");
    }
}
