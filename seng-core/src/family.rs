// SPDX-License-Identifier: GPL-2.0-only
//! Address families a rule can belong to (`iptables` vs `ip6tables`).

use core::net::IpAddr;

/// The netfilter protocol family of a rule; it fixes the family of `--src-host`/`--dst-host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `iptables`, NFPROTO_IPV4.
    Ipv4,
    /// `ip6tables`, NFPROTO_IPV6.
    Ipv6,
}

impl Family {
    /// The kernel's NFPROTO_* number.
    pub const fn nfproto(self) -> u8 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }

    /// The family for an NFPROTO_* number, if it is one seng serves.
    pub const fn from_nfproto(nfproto: u8) -> Option<Family> {
        match nfproto {
            2 => Some(Family::Ipv4),
            10 => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// The family of an address.
    pub const fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Address length in bytes.
    pub const fn addr_len(self) -> usize {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        }
    }
}
