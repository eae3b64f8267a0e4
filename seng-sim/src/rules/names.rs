// SPDX-License-Identifier: GPL-2.0-only
//! The names iptables accepts and prints for protocols, ICMP types, REJECT replies, LOG levels,
//! TCP flags and a few well-known ports.

use seng_core::Family;

/// Protocol numbers by name, as `-p` accepts them (`/etc/protocols` names and iptables' own).
const PROTOCOLS: &[(&str, u8)] = &[
    ("all", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ipencap", 4),
    ("tcp", 6),
    ("udp", 17),
    ("ipv6", 41),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("mh", 135),
    ("ipv6-mh", 135),
    ("udplite", 136),
    ("dccp", 33),
];

/// The protocol number for a `-p` value: a name (any case) or a number 0-255.
pub fn protocol(text: &str) -> Option<u8> {
    if let Ok(n) = text.parse::<u8>() {
        return Some(n);
    }
    let lower = text.to_ascii_lowercase();
    PROTOCOLS.iter().find(|(name, _)| *name == lower).map(|(_, n)| *n)
}

/// The name `iptables-save` prints after `-p` (the `/etc/protocols` spelling), or the number.
pub fn protocol_save_name(proto: u8) -> String {
    match proto {
        58 => "ipv6-icmp".into(),
        135 => "ipv6-mh".into(),
        _ => match PROTOCOLS.iter().find(|(_, n)| *n == proto) {
            Some((name, _)) => (*name).into(),
            None => proto.to_string(),
        },
    }
}

/// The name `iptables -L -n` prints in the `prot` column: only iptables' built-in table is
/// consulted with `-n`, other protocols print as numbers.
pub fn protocol_list_name(proto: u8) -> String {
    match proto {
        0 => "all".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        135 => "mh".into(),
        136 => "udplite".into(),
        _ => proto.to_string(),
    }
}

/// An ICMP or ICMPv6 type with its code range; type 255 with codes 0-255 is iptables' `any`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpType {
    /// The type.
    pub kind: u8,
    /// Lowest code matched.
    pub code_min: u8,
    /// Highest code matched.
    pub code_max: u8,
}

impl IcmpType {
    /// iptables' `any`.
    pub const ANY: IcmpType = IcmpType { kind: 0xff, code_min: 0, code_max: 0xff };

    const fn all_codes(kind: u8) -> IcmpType {
        IcmpType { kind, code_min: 0, code_max: 0xff }
    }

    const fn code(kind: u8, code: u8) -> IcmpType {
        IcmpType { kind, code_min: code, code_max: code }
    }
}

const ICMP_NAMES: &[(&str, IcmpType)] = &[
    ("any", IcmpType::ANY),
    ("echo-reply", IcmpType::all_codes(0)),
    ("pong", IcmpType::all_codes(0)),
    ("destination-unreachable", IcmpType::all_codes(3)),
    ("network-unreachable", IcmpType::code(3, 0)),
    ("host-unreachable", IcmpType::code(3, 1)),
    ("protocol-unreachable", IcmpType::code(3, 2)),
    ("port-unreachable", IcmpType::code(3, 3)),
    ("fragmentation-needed", IcmpType::code(3, 4)),
    ("source-route-failed", IcmpType::code(3, 5)),
    ("network-unknown", IcmpType::code(3, 6)),
    ("host-unknown", IcmpType::code(3, 7)),
    ("network-prohibited", IcmpType::code(3, 9)),
    ("host-prohibited", IcmpType::code(3, 10)),
    ("TOS-network-unreachable", IcmpType::code(3, 11)),
    ("TOS-host-unreachable", IcmpType::code(3, 12)),
    ("communication-prohibited", IcmpType::code(3, 13)),
    ("host-precedence-violation", IcmpType::code(3, 14)),
    ("precedence-cutoff", IcmpType::code(3, 15)),
    ("source-quench", IcmpType::all_codes(4)),
    ("redirect", IcmpType::all_codes(5)),
    ("network-redirect", IcmpType::code(5, 0)),
    ("host-redirect", IcmpType::code(5, 1)),
    ("TOS-network-redirect", IcmpType::code(5, 2)),
    ("TOS-host-redirect", IcmpType::code(5, 3)),
    ("echo-request", IcmpType::all_codes(8)),
    ("ping", IcmpType::all_codes(8)),
    ("router-advertisement", IcmpType::all_codes(9)),
    ("router-solicitation", IcmpType::all_codes(10)),
    ("time-exceeded", IcmpType::all_codes(11)),
    ("ttl-exceeded", IcmpType::all_codes(11)),
    ("ttl-zero-during-transit", IcmpType::code(11, 0)),
    ("ttl-zero-during-reassembly", IcmpType::code(11, 1)),
    ("parameter-problem", IcmpType::all_codes(12)),
    ("ip-header-bad", IcmpType::code(12, 0)),
    ("required-option-missing", IcmpType::code(12, 1)),
    ("timestamp-request", IcmpType::all_codes(13)),
    ("timestamp-reply", IcmpType::all_codes(14)),
    ("address-mask-request", IcmpType::all_codes(17)),
    ("address-mask-reply", IcmpType::all_codes(18)),
];

const ICMPV6_NAMES: &[(&str, IcmpType)] = &[
    ("destination-unreachable", IcmpType::all_codes(1)),
    ("no-route", IcmpType::code(1, 0)),
    ("communication-prohibited", IcmpType::code(1, 1)),
    ("beyond-scope", IcmpType::code(1, 2)),
    ("address-unreachable", IcmpType::code(1, 3)),
    ("port-unreachable", IcmpType::code(1, 4)),
    ("failed-policy", IcmpType::code(1, 5)),
    ("reject-route", IcmpType::code(1, 6)),
    ("packet-too-big", IcmpType::all_codes(2)),
    ("time-exceeded", IcmpType::all_codes(3)),
    ("ttl-exceeded", IcmpType::all_codes(3)),
    ("ttl-zero-during-transit", IcmpType::code(3, 0)),
    ("ttl-zero-during-reassembly", IcmpType::code(3, 1)),
    ("parameter-problem", IcmpType::all_codes(4)),
    ("bad-header", IcmpType::code(4, 0)),
    ("unknown-header-type", IcmpType::code(4, 1)),
    ("unknown-option", IcmpType::code(4, 2)),
    ("echo-request", IcmpType::all_codes(128)),
    ("ping", IcmpType::all_codes(128)),
    ("echo-reply", IcmpType::all_codes(129)),
    ("pong", IcmpType::all_codes(129)),
    ("mld-listener-query", IcmpType::all_codes(130)),
    ("mld-listener-report", IcmpType::all_codes(131)),
    ("mld-listener-done", IcmpType::all_codes(132)),
    ("router-solicitation", IcmpType::all_codes(133)),
    ("router-advertisement", IcmpType::all_codes(134)),
    ("neighbour-solicitation", IcmpType::all_codes(135)),
    ("neighbor-solicitation", IcmpType::all_codes(135)),
    ("neighbour-advertisement", IcmpType::all_codes(136)),
    ("neighbor-advertisement", IcmpType::all_codes(136)),
    ("redirect", IcmpType::all_codes(137)),
];

/// Parses an `--icmp-type` / `--icmpv6-type` value: a name, `TYPE` or `TYPE/CODE`.
pub fn icmp_type(text: &str, family: Family) -> Option<IcmpType> {
    let names = match family {
        Family::Ipv4 => ICMP_NAMES,
        Family::Ipv6 => ICMPV6_NAMES,
    };
    if let Some((_, t)) = names.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)) {
        if family == Family::Ipv6 && *t == IcmpType::ANY {
            return None;
        }
        return Some(*t);
    }
    match text.split_once('/') {
        Some((kind, code)) => {
            let code = code.parse().ok()?;
            Some(IcmpType::code(kind.parse().ok()?, code))
        }
        None => Some(IcmpType::all_codes(text.parse().ok()?)),
    }
}

/// A REJECT reply type: the name `--reject-with` takes and prints, and what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectWith {
    /// The canonical name, as `iptables-save` prints it.
    pub name: &'static str,
    /// True for `tcp-reset`, which needs `-p tcp`.
    pub tcp_reset: bool,
}

const REJECT_V4: &[(&str, &str)] = &[
    ("icmp-net-unreachable", "icmp-net-unreachable"),
    ("net-unreach", "icmp-net-unreachable"),
    ("icmp-host-unreachable", "icmp-host-unreachable"),
    ("host-unreach", "icmp-host-unreachable"),
    ("icmp-proto-unreachable", "icmp-proto-unreachable"),
    ("proto-unreach", "icmp-proto-unreachable"),
    ("icmp-port-unreachable", "icmp-port-unreachable"),
    ("port-unreach", "icmp-port-unreachable"),
    ("icmp-net-prohibited", "icmp-net-prohibited"),
    ("net-prohib", "icmp-net-prohibited"),
    ("icmp-host-prohibited", "icmp-host-prohibited"),
    ("host-prohib", "icmp-host-prohibited"),
    ("icmp-admin-prohibited", "icmp-admin-prohibited"),
    ("admin-prohib", "icmp-admin-prohibited"),
    ("tcp-reset", "tcp-reset"),
];

const REJECT_V6: &[(&str, &str)] = &[
    ("icmp6-no-route", "icmp6-no-route"),
    ("no-route", "icmp6-no-route"),
    ("icmp6-adm-prohibited", "icmp6-adm-prohibited"),
    ("adm-prohibited", "icmp6-adm-prohibited"),
    ("icmp6-addr-unreachable", "icmp6-addr-unreachable"),
    ("addr-unreach", "icmp6-addr-unreachable"),
    ("icmp6-port-unreachable", "icmp6-port-unreachable"),
    ("port-unreach", "icmp6-port-unreachable"),
    ("icmp6-policy-fail", "icmp6-policy-fail"),
    ("policy-fail", "icmp6-policy-fail"),
    ("icmp6-reject-route", "icmp6-reject-route"),
    ("reject-route", "icmp6-reject-route"),
    ("tcp-reset", "tcp-reset"),
];

/// Parses a `--reject-with` value of `family`.
pub fn reject_with(text: &str, family: Family) -> Option<RejectWith> {
    let table = match family {
        Family::Ipv4 => REJECT_V4,
        Family::Ipv6 => REJECT_V6,
    };
    table.iter().find(|(alias, _)| *alias == text).map(|(_, name)| RejectWith { name, tcp_reset: *name == "tcp-reset" })
}

/// REJECT's default reply.
pub fn reject_default(family: Family) -> RejectWith {
    let name = match family {
        Family::Ipv4 => "icmp-port-unreachable",
        Family::Ipv6 => "icmp6-port-unreachable",
    };
    RejectWith { name, tcp_reset: false }
}

const LOG_LEVELS: &[&str] = &["emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"];

/// Parses a `--log-level`: 0-7 or a syslog level name (`panic`, `err` and `warn` too).
pub fn log_level(text: &str) -> Option<u8> {
    if let Ok(n) = text.parse::<u8>() {
        return (n <= 7).then_some(n);
    }
    let lower = text.to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "panic" => "emerg",
        "err" => "error",
        "warn" => "warning",
        other => other,
    };
    LOG_LEVELS.iter().position(|l| *l == canonical).map(|n| n as u8)
}

/// TCP flag bits by name, in the order iptables prints them.
pub const TCP_FLAGS: &[(&str, u8)] = &[("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20)];

/// Parses a `--tcp-flags` list such as `SYN,ACK`, `ALL` or `NONE`.
pub fn tcp_flags(text: &str) -> Option<u8> {
    let mut bits = 0;
    for name in text.split(',') {
        bits |= match name.to_ascii_uppercase().as_str() {
            "ALL" => 0x3f,
            "NONE" => 0,
            upper => TCP_FLAGS.iter().find(|(n, _)| *n == upper)?.1,
        };
    }
    Some(bits)
}

/// A TCP flag set the way `iptables-save` spells it.
pub fn tcp_flags_name(bits: u8) -> String {
    if bits == 0 {
        return "NONE".into();
    }
    TCP_FLAGS.iter().filter(|(_, b)| bits & b != 0).map(|(n, _)| *n).collect::<Vec<_>>().join(",")
}

/// Well-known service names accepted for ports (a fixed subset of `/etc/services`, so results do
/// not depend on the machine).
const SERVICES: &[(&str, u16)] = &[
    ("ftp-data", 20),
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("domain", 53),
    ("bootps", 67),
    ("bootpc", 68),
    ("http", 80),
    ("pop3", 110),
    ("ntp", 123),
    ("imap", 143),
    ("snmp", 161),
    ("ldap", 389),
    ("https", 443),
    ("submission", 587),
    ("imaps", 993),
    ("pop3s", 995),
];

/// A port number or one of the well-known service names.
pub fn port(text: &str) -> Option<u16> {
    if let Ok(n) = text.parse::<u16>() {
        return Some(n);
    }
    SERVICES.iter().find(|(name, _)| *name == text).map(|(_, p)| *p)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reads_names_and_numbers() {
        assert_eq!(protocol("TCP"), Some(6));
        assert_eq!(protocol("ipv6-icmp"), Some(58));
        assert_eq!(protocol("255"), Some(255));
        assert_eq!(protocol("bogus"), None);
        assert_eq!(protocol_save_name(58), "ipv6-icmp");
        assert_eq!(protocol_list_name(47), "47");
        assert_eq!(icmp_type("echo-request", Family::Ipv4), Some(IcmpType { kind: 8, code_min: 0, code_max: 255 }));
        assert_eq!(icmp_type("3/3", Family::Ipv4), Some(IcmpType { kind: 3, code_min: 3, code_max: 3 }));
        assert_eq!(icmp_type("echo-request", Family::Ipv6).map(|t| t.kind), Some(128));
        assert_eq!(icmp_type("any", Family::Ipv6), None);
        assert_eq!(icmp_type("3/x", Family::Ipv4), None);
        assert_eq!(reject_with("port-unreach", Family::Ipv4).map(|r| r.name), Some("icmp-port-unreachable"));
        assert_eq!(reject_with("icmp-port-unreachable", Family::Ipv6), None);
        assert_eq!(log_level("warn"), Some(4));
        assert_eq!(log_level("8"), None);
        assert_eq!(tcp_flags("SYN,RST,ACK,FIN"), Some(0x17));
        assert_eq!(tcp_flags("ALL"), Some(0x3f));
        assert_eq!(tcp_flags("SYN,BOGUS"), None);
        assert_eq!(tcp_flags_name(0x17), "FIN,SYN,RST,ACK");
        assert_eq!(tcp_flags_name(0), "NONE");
        assert_eq!(port("https"), Some(443));
        assert_eq!(port("65536"), None);
    }
}
