// SPDX-License-Identifier: GPL-2.0-only
//! Untrusted-host conditions: an address with a mask, `ADDR`, `ADDR/LEN` or `ADDR/MASK`.
//!
//! A rule's host family is the rule's family. An enclave's host of the other family is compared
//! through the IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), so an `ip6tables` rule can still select
//! enclaves whose untrusted host has an IPv4 address.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Family;

/// An address and mask of one family, the address stored masked (as `iptables -s` does).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostMask {
    addr: [u8; 16],
    mask: [u8; 16],
    family: Family,
}

/// Why a text is not a host condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The address part is not an address of the rule's family.
    Address(Family),
    /// The part after `/` is neither a prefix length in range nor a mask of the family.
    Mask(Family),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fam, max) = match self {
            HostError::Address(Family::Ipv4) | HostError::Mask(Family::Ipv4) => ("IPv4", 32),
            HostError::Address(Family::Ipv6) | HostError::Mask(Family::Ipv6) => ("IPv6", 128),
        };
        match self {
            HostError::Address(_) => write!(f, "not a numeric {fam} address"),
            HostError::Mask(_) => {
                write!(f, "mask must be a prefix length 0-{max} or an {fam} address mask")
            }
        }
    }
}

/// Compares an enclave's host with a rule's raw address and mask of `family`; the shared
/// primitive behind [`HostMask::contains`] and the packet-path decision.
pub fn masked_eq(family: Family, addr: &[u8; 16], mask: &[u8; 16], host: &IpAddr) -> bool {
    // Each arm compares whole words, in native byte order (XOR and AND work byte by byte, so
    // no operand needs swapping): this runs per seng rule per packet, and building one
    // 16-byte array from either arm first cost a load per byte.
    match (family, host) {
        (Family::Ipv4, IpAddr::V4(h)) => v4_masked_eq(addr, mask, h.octets()),
        (Family::Ipv4, IpAddr::V6(h)) => h.to_ipv4_mapped().is_some_and(|v4| v4_masked_eq(addr, mask, v4.octets())),
        (Family::Ipv6, IpAddr::V4(h)) => v6_masked_eq(addr, mask, h.to_ipv6_mapped().octets()),
        (Family::Ipv6, IpAddr::V6(h)) => v6_masked_eq(addr, mask, h.octets()),
    }
}

/// An IPv4 rule's address and mask are the fields' first four bytes.
fn v4_masked_eq(addr: &[u8; 16], mask: &[u8; 16], host: [u8; 4]) -> bool {
    let [a0, a1, a2, a3, ..] = *addr;
    let [m0, m1, m2, m3, ..] = *mask;
    (u32::from_ne_bytes([a0, a1, a2, a3]) ^ u32::from_ne_bytes(host)) & u32::from_ne_bytes([m0, m1, m2, m3]) == 0
}

fn v6_masked_eq(addr: &[u8; 16], mask: &[u8; 16], host: [u8; 16]) -> bool {
    (u128::from_ne_bytes(*addr) ^ u128::from_ne_bytes(host)) & u128::from_ne_bytes(*mask) == 0
}

fn widen(v4: &[u8; 4]) -> [u8; 16] {
    let [a, b, c, d] = *v4;
    [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

fn prefix_mask(family: Family, len: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut bits = u32::from(len);
    for byte in out.iter_mut().take(family.addr_len()) {
        let take = bits.min(8);
        *byte = !(0xffu16 >> take) as u8;
        bits -= take;
    }
    out
}

impl HostMask {
    /// A condition from an address and prefix length (clamped to the family's width).
    pub fn with_prefix(addr: IpAddr, len: u8) -> HostMask {
        let family = Family::of(&addr);
        let len = len.min(8 * family.addr_len() as u8);
        HostMask::from_raw(family, &ip_bytes(&addr), &prefix_mask(family, len))
    }

    /// A condition from raw ABI fields; bytes beyond the family's width are zeroed and the
    /// address is masked.
    pub fn from_raw(family: Family, addr: &[u8; 16], mask: &[u8; 16]) -> HostMask {
        let mut a = [0u8; 16];
        let mut m = [0u8; 16];
        let len = family.addr_len();
        for i in 0..len {
            if let (Some(da), Some(dm), Some(sa), Some(sm)) = (a.get_mut(i), m.get_mut(i), addr.get(i), mask.get(i)) {
                *dm = *sm;
                *da = *sa & *sm;
            }
        }
        HostMask { addr: a, mask: m, family }
    }

    /// Parses `ADDR`, `ADDR/LEN` or `ADDR/MASK` for `family`. A bare address means the full
    /// prefix. Host names are not resolved.
    pub fn parse(text: &str, family: Family) -> Result<HostMask, HostError> {
        // By position and get rather than split_once, whose searcher can panic on a slice index.
        let (addr_text, mask_text) = match text.bytes().position(|b| b == b'/') {
            Some(at) => (text.get(..at).unwrap_or_default(), text.get(at + 1..)),
            None => (text, None),
        };
        let addr = parse_addr(addr_text, family).ok_or(HostError::Address(family))?;
        let max = 8 * family.addr_len() as u8;
        let mask = match mask_text {
            None => prefix_mask(family, max),
            Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
                // By hand rather than u8::from_str, whose inlined copy can panic on a slice index.
                let len = m.bytes().fold(0u32, |n, b| n.saturating_mul(10).saturating_add(u32::from(b - b'0')));
                match u8::try_from(len) {
                    Ok(len) if len <= max => prefix_mask(family, len),
                    _ => return Err(HostError::Mask(family)),
                }
            }
            Some(m) => ip_bytes(&parse_addr(m, family).ok_or(HostError::Mask(family))?),
        };
        Ok(HostMask::from_raw(family, &ip_bytes(&addr), &mask))
    }

    /// The rule's family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The masked address as an ABI field (`union nf_inet_addr`).
    pub fn addr_field(&self) -> [u8; 16] {
        self.addr
    }

    /// The mask as an ABI field.
    pub fn mask_field(&self) -> [u8; 16] {
        self.mask
    }

    /// The masked address.
    pub fn addr(&self) -> IpAddr {
        to_ip(self.family, &self.addr)
    }

    /// The mask as an address.
    pub fn mask(&self) -> IpAddr {
        to_ip(self.family, &self.mask)
    }

    /// The prefix length, if the mask is contiguous.
    pub fn prefix_len(&self) -> Option<u8> {
        let len = self.family.addr_len();
        let ones: u32 = self.mask.iter().take(len).map(|b| b.count_ones()).sum();
        let ones = ones as u8;
        (prefix_mask(self.family, ones) == self.mask).then_some(ones)
    }

    /// Whether an enclave's untrusted host lies inside this address and mask.
    pub fn contains(&self, host: &IpAddr) -> bool {
        masked_eq(self.family, &self.addr, &self.mask, host)
    }

    /// Display adapter for `iptables -L` (a full-length prefix is left out, like `-s`).
    pub fn human(&self) -> Human<'_> {
        Human(self)
    }
}

impl fmt::Display for HostMask {
    /// The `iptables-save` form: `ADDR/LEN`, or `ADDR/MASK` for a non-contiguous mask.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(len) => write!(f, "{}/{len}", self.addr()),
            None => write!(f, "{}/{}", self.addr(), self.mask()),
        }
    }
}

impl fmt::Debug for HostMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostMask({self})")
    }
}

/// `iptables -L` form of a [`HostMask`]; see [`HostMask::human`].
pub struct Human<'a>(&'a HostMask);

impl fmt::Display for Human<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == Some(8 * self.0.family.addr_len() as u8) {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn parse_addr(text: &str, family: Family) -> Option<IpAddr> {
    match family {
        Family::Ipv4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Family::Ipv6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// An address as a 16-byte `union nf_inet_addr` (IPv4 in the first four bytes).
pub fn ip_bytes(addr: &IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => widen(&a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The address of `family` held in a 16-byte `union nf_inet_addr`.
pub fn to_ip(family: Family, field: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => {
            let [a, b, c, d, ..] = *field;
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*field)),
    }
}

#[cfg(test)]
mod test {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The word comparisons agree with the definition: the family's address bytes
        /// equal under the mask, an IPv4 rule never matching an IPv6 host that is not mapped.
        #[test]
        fn masked_eq_is_bytewise_equality_under_the_mask(addr: [u8; 16], mask: [u8; 16], host: [u8; 16], v4_host: bool, v4_rule: bool, copy: bool) {
            let host_ip = match v4_host {
                true => IpAddr::from([host[0], host[1], host[2], host[3]]),
                false => IpAddr::from(host),
            };
            let family = if v4_rule { Family::Ipv4 } else { Family::Ipv6 };
            // Half the cases share the host's bytes, so that equality is exercised too.
            let host_bytes = match host_ip {
                IpAddr::V4(h) if v4_rule => Some(widen(&h.octets())),
                IpAddr::V6(h) if v4_rule => h.to_ipv4_mapped().map(|v4| widen(&v4.octets())),
                IpAddr::V4(h) => Some(h.to_ipv6_mapped().octets()),
                IpAddr::V6(h) => Some(h.octets()),
            };
            let addr = match (copy, host_bytes) {
                (true, Some(h)) => h,
                _ => addr,
            };
            let want = host_bytes.is_some_and(|h| (0..family.addr_len()).all(|i| addr[i] & mask[i] == h[i] & mask[i]));
            prop_assert_eq!(masked_eq(family, &addr, &mask, &host_ip), want);
        }
    }

    #[test]
    fn parses_and_prints_canonically() {
        let cases: &[(&str, Family, &str, &str)] = &[
            ("10.0.0.0/26", Family::Ipv4, "10.0.0.0/26", "10.0.0.0/26"),
            ("10.0.0.5/26", Family::Ipv4, "10.0.0.0/26", "10.0.0.0/26"),
            ("10.0.0.5", Family::Ipv4, "10.0.0.5/32", "10.0.0.5"),
            ("10.0.0.5/255.255.255.0", Family::Ipv4, "10.0.0.0/24", "10.0.0.0/24"),
            ("10.1.2.3/255.0.255.0", Family::Ipv4, "10.0.2.0/255.0.255.0", "10.0.2.0/255.0.255.0"),
            ("0.0.0.0/0", Family::Ipv4, "0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::1/64", Family::Ipv6, "2001:db8::/64", "2001:db8::/64"),
            ("2001:db8::1", Family::Ipv6, "2001:db8::1/128", "2001:db8::1"),
            ("::ffff:10.0.0.0/122", Family::Ipv6, "::ffff:10.0.0.0/122", "::ffff:10.0.0.0/122"),
        ];
        for (text, family, save, human) in cases {
            let h = HostMask::parse(text, *family).unwrap();
            assert_eq!(h.to_string(), *save, "{text}");
            assert_eq!(h.human().to_string(), *human, "{text}");
            assert_eq!(HostMask::parse(&h.to_string(), *family), Ok(h), "{text} reparses");
        }
    }

    #[test]
    fn rejects_bad_text() {
        let cases: &[(&str, Family, HostError)] = &[
            ("10.0.0", Family::Ipv4, HostError::Address(Family::Ipv4)),
            ("host.example", Family::Ipv4, HostError::Address(Family::Ipv4)),
            ("2001:db8::1", Family::Ipv4, HostError::Address(Family::Ipv4)),
            ("10.0.0.1", Family::Ipv6, HostError::Address(Family::Ipv6)),
            ("10.0.0.1/33", Family::Ipv4, HostError::Mask(Family::Ipv4)),
            ("10.0.0.1/", Family::Ipv4, HostError::Mask(Family::Ipv4)),
            ("10.0.0.1/-1", Family::Ipv4, HostError::Mask(Family::Ipv4)),
            ("10.0.0.1/255.255.0", Family::Ipv4, HostError::Mask(Family::Ipv4)),
            ("::1/129", Family::Ipv6, HostError::Mask(Family::Ipv6)),
        ];
        for (text, family, want) in cases {
            assert_eq!(HostMask::parse(text, *family), Err(*want), "{text}");
        }
    }

    #[test]
    fn contains_across_families() {
        let v4 = HostMask::parse("10.0.0.0/26", Family::Ipv4).unwrap();
        let mapped = HostMask::parse("::ffff:10.0.0.0/122", Family::Ipv6).unwrap();
        let cases: &[(&str, bool)] = &[
            ("10.0.0.1", true),
            ("10.0.0.63", true),
            ("10.0.0.64", false),
            ("::ffff:10.0.0.1", true),
            ("2001:db8::1", false),
        ];
        for (host, want) in cases {
            let host: IpAddr = host.parse().unwrap();
            assert_eq!(v4.contains(&host), *want, "v4 rule, {host}");
            assert_eq!(mapped.contains(&host), *want, "mapped rule, {host}");
        }
    }
}
