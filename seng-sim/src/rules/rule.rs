// SPDX-License-Identifier: GPL-2.0-only
//! Reading a rule's options (`-s`, `-p`, `-m NAME …`, `-j TARGET …`) into a [`RuleSpec`], with the
//! checks iptables makes (a match's protocol, options given twice, negation), and the list of
//! what is modelled.

use std::net::IpAddr;

use seng_core::rule::SengOption;
use seng_core::{Family, HostMask};

use super::names;
use super::{
    ct_state, ConnmarkSpec, Hook, LogSpec, MatchSpec, MultiportSpec, NatKind, NatSpec, Neg, PortDirection, PortRange, RuleSpec, TableKind, Target,
    TcpSpec, UdpSpec, BUILTIN_CHAINS,
};
use super::file::family_name;
use crate::tokenize::Word;

/// Matches the simulator models.
const MATCHES: &str = "tcp, udp, icmp, icmp6, multiport, conntrack, state, comment, mark, connmark, seng";

/// Targets the simulator models, for messages.
const TARGETS: &str = "ACCEPT, DROP, REJECT, RETURN, LOG, DNAT, SNAT, MASQUERADE, REDIRECT, CT --notrack, NOTRACK, MARK, CONNMARK and user chains";

/// Targets of netfilter that the simulator does not model; naming them gives a clear error
/// rather than "no such chain".
pub(super) const UNMODELLED_TARGETS: &[&str] = &[
    "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNSECMARK", "DNPT", "DSCP", "ECN", "HL", "HMARK", "IDLETIMER", "LED",
    "NETMAP", "NFLOG", "NFQUEUE", "RATEEST", "SECMARK", "SET", "SNPT", "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE", "TOS",
    "TPROXY", "TRACE", "TTL", "ULOG",
];


/// A rule being read: the parts that may come as lists, and the rest.
struct RuleParser<'w> {
    words: &'w [&'w Word],
    at: usize,
    family: Family,
    table: TableKind,
    spec: RuleSpec,
    sources: Option<(Vec<HostMask>, bool)>,
    destinations: Option<(Vec<HostMask>, bool)>,
    /// Seng options gathered per `-m seng` match, as (match index, option, negated, value).
    seng: Vec<(usize, SengOption, bool, String)>,
    target_set: bool,
    /// `CT --notrack` given.
    notrack: bool,
    /// The MARK / CONNMARK action given.
    mark_set: bool,
}

fn parse_ports(text: &str) -> Option<PortRange> {
    match text.split_once(':') {
        Some((a, b)) => {
            let min = if a.is_empty() { 0 } else { names::port(a)? };
            let max = if b.is_empty() { 0xffff } else { names::port(b)? };
            (min <= max).then_some(PortRange { min, max })
        }
        None => names::port(text).map(|p| PortRange { min: p, max: p }),
    }
}

/// A number as `xtables_strtoui` reads it: decimal, `0x` hex or `0` octal.
fn parse_u32(text: &str) -> Option<u32> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(&text[1..], 8).ok()
    } else {
        text.parse().ok()
    }
}

/// `VALUE[/MASK]`, the mask all ones when not given.
fn parse_mark(option: &str, text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{option} {text:?}: expected VALUE[/MASK] (numbers, 0x for hex)");
    match text.split_once('/') {
        Some((v, m)) => Ok((parse_u32(v).ok_or_else(bad)?, parse_u32(m).ok_or_else(bad)?)),
        None => Ok((parse_u32(text).ok_or_else(bad)?, u32::MAX)),
    }
}

/// The (value, mask) of a MARK or CONNMARK change option, in `--set-xmark` form: the mark
/// becomes `(mark & !mask) ^ value`.
fn parse_mark_change(option: &str, text: &str) -> Result<(u32, u32), String> {
    Ok(match option {
        "--set-xmark" => parse_mark(option, text)?,
        "--set-mark" => {
            let (value, mask) = parse_mark(option, text)?;
            (value, value | mask)
        }
        _ => {
            let value = parse_u32(text).ok_or_else(|| format!("{option} {text:?}: not a number"))?;
            match option {
                "--and-mark" => (0, !value),
                "--or-mark" => (value, value),
                _ => (value, 0),
            }
        }
    })
}

/// A NAT range `ADDR[-ADDR][:PORT[-PORT]]` (IPv6 addresses in brackets when ports follow).
/// A NAT range's addresses (first, last) and ports, either possibly absent.
type NatRange = (Option<(IpAddr, IpAddr)>, Option<PortRange>);

fn parse_nat_range(option: &str, text: &str, family: Family) -> Result<NatRange, String> {
    let bad = |why: &str| format!("{option} {text:?}: {why}");
    let (addrs, ports) = match family {
        Family::Ipv4 => match text.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        },
        Family::Ipv6 => {
            if let Some(rest) = text.strip_prefix('[') {
                let (a, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                match after.strip_prefix(':') {
                    Some(p) => (a, Some(p)),
                    None if after.is_empty() => (a, None),
                    None => return Err(bad("expected :PORT after ]")),
                }
            } else {
                (text, None)
            }
        }
    };
    let addr = |t: &str| -> Result<IpAddr, String> {
        let ip: IpAddr = t.parse().map_err(|_| bad(&format!("{t:?} is not an {} address", family_name(family))))?;
        if Family::of(&ip) != family {
            return Err(bad(&format!("{t:?} is not an {} address", family_name(family))));
        }
        Ok(ip)
    };
    let addrs = if addrs.is_empty() {
        None
    } else {
        let (min, max) = match addrs.split_once('-') {
            Some((a, b)) => (addr(a)?, addr(b)?),
            None => {
                let a = addr(addrs)?;
                (a, a)
            }
        };
        if crate::packet::from_ip(min) > crate::packet::from_ip(max) {
            return Err(bad("the range's first address is above its last"));
        }
        Some((min, max))
    };
    let ports = ports.map(|p| parse_nat_ports(option, p)).transpose()?;
    if addrs.is_none() && ports.is_none() {
        return Err(bad("no address or port"));
    }
    Ok((addrs, ports))
}

/// `PORT[-PORT]`.
fn parse_nat_ports(option: &str, text: &str) -> Result<PortRange, String> {
    let bad = || format!("{option} {text:?}: expected PORT[-PORT]");
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let min: u16 = a.parse().map_err(|_| bad())?;
    let max: u16 = b.parse().map_err(|_| bad())?;
    if min > max || min == 0 {
        return Err(bad());
    }
    Ok(PortRange { min, max })
}

fn parse_state_list(text: &str) -> Option<u8> {
    let mut mask = 0;
    for name in text.split(',') {
        mask |= ct_state::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?.1;
    }
    Some(mask)
}

fn check_iface(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("interface name {name:?} must be 1 to 15 characters"));
    }
    if name.bytes().any(|b| b == b'/' || b.is_ascii_whitespace() || b == 0) {
        return Err(format!("invalid interface name {name:?}"));
    }
    Ok(())
}

impl<'w> RuleParser<'w> {
    fn value(&mut self, option: &str) -> Result<&'w str, String> {
        let word = self.words.get(self.at).ok_or_else(|| format!("option {option:?} requires an argument"))?;
        self.at += 1;
        Ok(word.text.as_str())
    }

    fn addresses(&mut self, option: &str) -> Result<Vec<HostMask>, String> {
        let text = self.value(option)?;
        text.split(',')
            .map(|part| {
                HostMask::parse(part, self.family).map_err(|e| {
                    format!("{option} {part:?}: {e} (host names are not resolved; give {} addresses)", family_name(self.family))
                })
            })
            .collect()
    }

    /// Index of the last loaded match for which `accepts` holds (libxtables puts a new match's
    /// options before the older ones, so `-m mark --mark 1 -m connmark --mark 2` gives each
    /// its own), loading the protocol's own match when the option belongs to it (iptables'
    /// implicit `-p tcp` → `-m tcp`).
    fn match_for(&mut self, option: &str) -> Option<usize> {
        let index = self.spec.matches.iter().rposition(|m| accepts(m, option));
        if index.is_some() {
            return index;
        }
        let proto = self.spec.proto.as_ref().filter(|p| !p.negated)?.value;
        let implicit = match proto {
            6 => MatchSpec::Tcp(TcpSpec::default()),
            17 => MatchSpec::Udp(UdpSpec::default()),
            1 if self.family == Family::Ipv4 => MatchSpec::Icmp(None),
            58 if self.family == Family::Ipv6 => MatchSpec::Icmp6(None),
            _ => return None,
        };
        if !accepts(&implicit, option) {
            return None;
        }
        self.spec.matches.push(implicit);
        Some(self.spec.matches.len() - 1)
    }

    fn load_match(&mut self, name: &str) -> Result<(), String> {
        let m = match name {
            "tcp" => MatchSpec::Tcp(TcpSpec::default()),
            "udp" => MatchSpec::Udp(UdpSpec::default()),
            "icmp" if self.family == Family::Ipv4 => MatchSpec::Icmp(None),
            "icmp6" | "icmpv6" | "ipv6-icmp" if self.family == Family::Ipv6 => MatchSpec::Icmp6(None),
            "icmp" => return Err("match \"icmp\" is IPv4 only; ip6tables uses -m icmp6 --icmpv6-type".into()),
            "icmp6" | "icmpv6" | "ipv6-icmp" => return Err(format!("match {name:?} is IPv6 only; iptables uses -m icmp --icmp-type")),
            "multiport" => MatchSpec::Multiport(None),
            "conntrack" => MatchSpec::Conntrack(None),
            "state" => MatchSpec::State(None),
            "comment" => MatchSpec::Comment(None),
            "mark" => MatchSpec::Mark(None),
            "connmark" => MatchSpec::Connmark(None),
            "seng" => MatchSpec::Seng(seng_core::Rule::empty(self.family)),
            other => return Err(format!("match {other:?} is not modelled by seng-sim (modelled: {MATCHES})")),
        };
        self.spec.matches.push(m);
        Ok(())
    }

    fn target(&mut self, name: &str, goto: bool) -> Result<(), String> {
        if self.target_set {
            return Err("only one -j or -g per rule".into());
        }
        self.target_set = true;
        if name == "DROP" && self.table == TableKind::Nat {
            return Err(super::apply::nat_drop());
        }
        if goto {
            if BUILTIN_CHAINS.contains(&name) {
                return Err(format!("-g {name}: cannot go to a built-in chain"));
            }
            self.spec.target = Target::Goto(name.into());
            return Ok(());
        }
        self.spec.target = match name {
            "ACCEPT" => Target::Accept,
            "DROP" => Target::Drop,
            "RETURN" => Target::Return,
            "REJECT" => Target::Reject(names::reject_default(self.family)),
            "LOG" => Target::Log(LogSpec { prefix: String::new(), level: 4, flags: 0 }),
            "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" => {
                let kind = match name {
                    "DNAT" => NatKind::Dnat,
                    "SNAT" => NatKind::Snat,
                    "MASQUERADE" => NatKind::Masquerade,
                    _ => NatKind::Redirect,
                };
                Target::Nat(NatSpec { kind, addrs: None, ports: None, random: false, random_fully: false, persistent: false })
            }
            "NOTRACK" => Target::Notrack { alias: true },
            // CT takes --notrack (checked when the rule is complete); this marks it as unset.
            "CT" => Target::Notrack { alias: false },
            "MARK" => Target::Mark { value: 0, mask: 0 },
            "CONNMARK" => Target::Connmark(ConnmarkSpec::Save { nfmask: 0, ctmask: 0 }),
            _ if UNMODELLED_TARGETS.contains(&name) || name == "QUEUE" => {
                return Err(format!("target {name} is not modelled by seng-sim (modelled: {TARGETS})"))
            }
            _ if BUILTIN_CHAINS.contains(&name) => return Err(format!("-j {name}: cannot jump to a built-in chain")),
            _ => Target::Jump(name.into()),
        };
        Ok(())
    }

    fn target_option(&mut self, option: &str, negated: bool) -> Result<bool, String> {
        let family = self.family;
        match (&mut self.spec.target, option) {
            (Target::Reject(_), "--reject-with") => {
                let value = self.value(option)?;
                let with = names::reject_with(value, family)
                    .ok_or_else(|| format!("--reject-with {value:?} is not a {} REJECT type", family_name(family)))?;
                self.spec.target = Target::Reject(with);
            }
            (Target::Log(_), "--log-prefix") => {
                let value = self.value(option)?;
                if value.len() > 29 {
                    return Err(format!("--log-prefix {value:?} is longer than 29 characters"));
                }
                if let Target::Log(log) = &mut self.spec.target {
                    log.prefix = value.into();
                }
            }
            (Target::Log(_), "--log-level") => {
                let value = self.value(option)?;
                let level = names::log_level(value).ok_or_else(|| format!("--log-level {value:?}: not a syslog level"))?;
                if let Target::Log(log) = &mut self.spec.target {
                    log.level = level;
                }
            }
            (Target::Log(log), flag) => match super::LOG_FLAGS.iter().find(|(o, _)| *o == flag) {
                Some((_, bit)) => log.flags |= bit,
                None => return Ok(false),
            },
            (Target::Nat(_), "--to-destination" | "--to-source" | "--to" | "--to-ports") => {
                let value = self.value(option)?;
                let Target::Nat(n) = &mut self.spec.target else { return Ok(false) };
                let wanted = match (n.kind, option) {
                    (NatKind::Dnat, "--to-destination" | "--to") | (NatKind::Snat, "--to-source" | "--to") => true,
                    (NatKind::Masquerade | NatKind::Redirect, "--to-ports") => true,
                    _ => return Err(format!("{} takes no {option}", n.kind.name())),
                };
                if wanted && (n.addrs.is_some() || n.ports.is_some()) {
                    return Err(format!("{option} given twice (several ranges are not supported by the kernel since 2.6.11)"));
                }
                if option == "--to-ports" {
                    n.ports = Some(parse_nat_ports(option, value)?);
                } else {
                    let (addrs, ports) = parse_nat_range(option, value, family)?;
                    n.addrs = addrs;
                    n.ports = ports;
                }
            }
            (Target::Nat(n), "--random") => n.random = true,
            (Target::Nat(n), "--random-fully") => n.random_fully = true,
            (Target::Nat(n), "--persistent") if matches!(n.kind, NatKind::Snat | NatKind::Dnat) => n.persistent = true,
            (Target::Notrack { alias: false }, "--notrack") => self.notrack = true,
            (Target::Notrack { alias: false }, other) if other.starts_with("--") => {
                return Err(format!("CT option {other} is not modelled (only --notrack)"));
            }
            (Target::Mark { .. }, "--set-xmark" | "--set-mark" | "--and-mark" | "--or-mark" | "--xor-mark") => {
                if self.mark_set {
                    return Err("MARK takes one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark".into());
                }
                self.mark_set = true;
                let (value, mask) = parse_mark_change(option, self.value(option)?)?;
                self.spec.target = Target::Mark { value, mask };
            }
            (Target::Connmark(_), "--set-xmark" | "--set-mark" | "--and-mark" | "--or-mark" | "--xor-mark" | "--save-mark" | "--restore-mark") => {
                if self.mark_set {
                    return Err("CONNMARK takes one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark, --save-mark, --restore-mark".into());
                }
                self.mark_set = true;
                let c = match option {
                    "--save-mark" => ConnmarkSpec::Save { nfmask: u32::MAX, ctmask: u32::MAX },
                    "--restore-mark" => ConnmarkSpec::Restore { nfmask: u32::MAX, ctmask: u32::MAX },
                    _ => {
                        let (value, mask) = parse_mark_change(option, self.value(option)?)?;
                        ConnmarkSpec::Set { value, mask }
                    }
                };
                self.spec.target = Target::Connmark(c);
            }
            (Target::Connmark(_), "--nfmask" | "--ctmask" | "--mask") => {
                let value = self.value(option)?;
                let v = parse_u32(value).ok_or_else(|| format!("{option} {value:?}: not a number"))?;
                let mark_set = self.mark_set;
                match &mut self.spec.target {
                    Target::Connmark(ConnmarkSpec::Save { nfmask, ctmask } | ConnmarkSpec::Restore { nfmask, ctmask }) if mark_set => match option {
                        "--nfmask" => *nfmask = v,
                        "--ctmask" => *ctmask = v,
                        _ => (*nfmask, *ctmask) = (v, v),
                    },
                    _ => return Err(format!("{option} needs --save-mark or --restore-mark before it")),
                }
            }
            _ => return Ok(false),
        }
        if negated {
            return Err(format!("{option} cannot be negated"));
        }
        Ok(true)
    }

    fn match_option(&mut self, index: usize, option: &str, negated: bool) -> Result<(), String> {
        let family = self.family;
        let value_needed = !matches!(option, "--syn");
        let value = if value_needed { Some(self.value(option)?) } else { None };
        let text = value.unwrap_or_default();
        let port = |text: &str| parse_ports(text).ok_or_else(|| format!("{option} {text:?}: not a port or port range"));
        let once = |taken: bool| if taken { Err(format!("{option} given twice")) } else { Ok(()) };
        let m = &mut self.spec.matches[index];
        match m {
            MatchSpec::Tcp(t) => match option {
                "--sport" | "--source-port" => {
                    once(t.sport.is_some())?;
                    t.sport = Some(Neg { value: port(text)?, negated });
                }
                "--dport" | "--destination-port" => {
                    once(t.dport.is_some())?;
                    t.dport = Some(Neg { value: port(text)?, negated });
                }
                "--syn" => {
                    once(t.flags.is_some())?;
                    t.flags = Some(Neg { value: (0x17, 0x02), negated });
                }
                "--tcp-flags" => {
                    once(t.flags.is_some())?;
                    let comp_text = self.value(option)?;
                    let mask = names::tcp_flags(text).ok_or_else(|| format!("--tcp-flags: unknown flag in {text:?}"))?;
                    let comp = names::tcp_flags(comp_text).ok_or_else(|| format!("--tcp-flags: unknown flag in {comp_text:?}"))?;
                    if let MatchSpec::Tcp(t) = &mut self.spec.matches[index] {
                        t.flags = Some(Neg { value: (mask, comp), negated });
                    }
                }
                _ => return Err(format!("tcp option {option} is not modelled")),
            },
            MatchSpec::Udp(u) => match option {
                "--sport" | "--source-port" => {
                    once(u.sport.is_some())?;
                    u.sport = Some(Neg { value: port(text)?, negated });
                }
                _ => {
                    once(u.dport.is_some())?;
                    u.dport = Some(Neg { value: port(text)?, negated });
                }
            },
            MatchSpec::Icmp(t) | MatchSpec::Icmp6(t) => {
                once(t.is_some())?;
                let kind = names::icmp_type(text, family).ok_or_else(|| format!("{option} {text:?}: unknown ICMP type"))?;
                *t = Some(Neg { value: kind, negated });
            }
            MatchSpec::Multiport(m) => {
                if m.is_some() {
                    return Err("multiport takes one of --sports, --dports, --ports per match".into());
                }
                let direction = match option {
                    "--sports" | "--source-ports" => PortDirection::Source,
                    "--dports" | "--destination-ports" => PortDirection::Destination,
                    _ => PortDirection::Either,
                };
                let ports = text.split(',').map(port).collect::<Result<Vec<_>, _>>()?;
                let slots: usize = ports.iter().map(|p| if p.min == p.max { 1 } else { 2 }).sum();
                if slots > 15 {
                    return Err(format!("{option} {text:?}: too many ports (at most 15, a range counting two)"));
                }
                *m = Some(MultiportSpec { direction, ports, negated });
            }
            MatchSpec::Conntrack(s) | MatchSpec::State(s) => {
                once(s.is_some())?;
                let mask = parse_state_list(text).ok_or_else(|| format!("{option} {text:?}: unknown state"))?;
                *s = Some(Neg { value: mask, negated });
            }
            MatchSpec::Comment(c) => {
                once(c.is_some())?;
                if text.len() > 255 {
                    return Err("--comment is longer than 255 characters".into());
                }
                if negated {
                    return Err("--comment cannot be negated".into());
                }
                *c = Some(text.into());
            }
            MatchSpec::Mark(m) | MatchSpec::Connmark(m) => {
                once(m.is_some())?;
                *m = Some(Neg { value: parse_mark(option, text)?, negated });
            }
            MatchSpec::Seng(_) => {
                let option = SengOption::from_flag(option).ok_or_else(|| format!("unknown seng option {option:?}"))?;
                self.seng.push((index, option, negated, text.into()));
            }
        }
        Ok(())
    }

    fn finish(mut self, chain: &str) -> Result<Vec<RuleSpec>, String> {
        for (index, option, negated, value) in std::mem::take(&mut self.seng) {
            if let MatchSpec::Seng(rule) = &mut self.spec.matches[index] {
                rule.set(option, negated, &value).map_err(|e| format!("seng: {e}"))?;
            }
        }
        let proto = self.spec.proto.as_ref().filter(|p| !p.negated).map(|p| p.value);
        for m in &self.spec.matches {
            let (needs, what): (&[u8], &str) = match m {
                MatchSpec::Tcp(_) => (&[6], "-p tcp"),
                MatchSpec::Udp(_) => (&[17], "-p udp"),
                MatchSpec::Icmp(_) => (&[1], "-p icmp"),
                MatchSpec::Icmp6(_) => (&[58], "-p icmpv6"),
                MatchSpec::Multiport(_) => (&[6, 17, 33, 132, 136], "-p tcp, -p udp, -p udplite, -p sctp or -p dccp"),
                MatchSpec::Seng(rule) => {
                    rule.check().map_err(|e| format!("seng: {e}"))?;
                    continue;
                }
                _ => continue,
            };
            if !proto.is_some_and(|p| needs.contains(&p)) {
                return Err(format!("match {} needs {what} (not negated)", m.name()));
            }
        }
        for m in &self.spec.matches {
            let empty = match m {
                MatchSpec::Multiport(None) => Some("one of --sports, --dports or --ports"),
                MatchSpec::Icmp(None) => Some("--icmp-type"),
                MatchSpec::Icmp6(None) => Some("--icmpv6-type"),
                MatchSpec::Conntrack(None) => Some("--ctstate (the only conntrack option modelled)"),
                MatchSpec::State(None) => Some("--state"),
                MatchSpec::Comment(None) => Some("--comment"),
                MatchSpec::Mark(None) | MatchSpec::Connmark(None) => Some("--mark"),
                _ => None,
            };
            if let Some(what) = empty {
                return Err(format!("match {} needs {what}", m.name()));
            }
        }
        if let Target::Reject(r) = &self.spec.target {
            if r.tcp_reset && proto != Some(6) {
                return Err("--reject-with tcp-reset needs -p tcp (not negated)".into());
            }
        }
        match &self.spec.target {
            Target::Notrack { alias: false } if !self.notrack => return Err("CT needs --notrack (the only CT option modelled)".into()),
            Target::Mark { .. } | Target::Connmark(_) if !self.mark_set => {
                return Err(format!("{} needs an action such as --set-xmark", self.spec.target.list_name()))
            }
            Target::Nat(n) if matches!(n.kind, NatKind::Snat | NatKind::Dnat) && n.addrs.is_none() && n.ports.is_none() => {
                return Err(format!("{} needs {}", n.kind.name(), if n.kind == NatKind::Snat { "--to-source" } else { "--to-destination" }))
            }
            Target::Nat(n) if n.ports.is_some() && !proto.is_some_and(|p| [6, 17, 33, 132, 136].contains(&p)) => {
                return Err(format!("{} with ports needs -p tcp, udp, udplite, sctp or dccp (not negated)", n.kind.name()))
            }
            _ => {}
        }
        let (hooks, table) = self.spec.target.allowed();
        if let Some(table) = table.filter(|t| *t != self.table) {
            return Err(format!("target {} is only valid in the {} table, not {}", self.spec.target.list_name(), table.name(), self.table.name()));
        }
        if let Some(hook) = Hook::of_name(chain).filter(|h| self.table.hooks().contains(h)) {
            if hooks & hook.bit() == 0 {
                return Err(format!("target {} is not valid in the {} chain", self.spec.target.list_name(), chain));
            }
            match hook {
                Hook::Output | Hook::Postrouting if self.spec.in_iface.is_some() => return Err(format!("can't use -i with {chain}")),
                Hook::Prerouting | Hook::Input if self.spec.out_iface.is_some() => return Err(format!("can't use -o with {chain}")),
                _ => {}
            }
        }
        let expand = |list: Option<(Vec<HostMask>, bool)>| -> Vec<Option<Neg<HostMask>>> {
            match list {
                None => vec![None],
                // iptables drops an address matching everything: `-s 0.0.0.0/0` is no -s.
                Some((list, negated)) => list
                    .into_iter()
                    .map(|a| (negated || a.prefix_len() != Some(0)).then_some(Neg { value: a, negated }))
                    .collect(),
            }
        };
        let mut rules = Vec::new();
        let destinations = expand(self.destinations.take());
        for src in expand(self.sources.take()) {
            for dst in &destinations {
                let mut rule = self.spec.clone();
                rule.src = src.clone();
                rule.dst = dst.clone();
                rules.push(rule);
            }
        }
        Ok(rules)
    }
}

/// Whether match `m` takes `option`.
fn accepts(m: &MatchSpec, option: &str) -> bool {
    let options: &[&str] = match m {
        MatchSpec::Tcp(_) => &["--sport", "--source-port", "--dport", "--destination-port", "--syn", "--tcp-flags", "--tcp-option"],
        MatchSpec::Udp(_) => &["--sport", "--source-port", "--dport", "--destination-port"],
        MatchSpec::Icmp(_) => &["--icmp-type"],
        MatchSpec::Icmp6(_) => &["--icmpv6-type"],
        MatchSpec::Multiport(_) => &["--sports", "--source-ports", "--dports", "--destination-ports", "--ports"],
        MatchSpec::Conntrack(_) => &["--ctstate"],
        MatchSpec::State(_) => &["--state"],
        MatchSpec::Comment(_) => &["--comment"],
        MatchSpec::Mark(_) | MatchSpec::Connmark(_) => &["--mark"],
        MatchSpec::Seng(_) => return SengOption::from_flag(option).is_some(),
    };
    options.contains(&option)
}

/// Conntrack options that exist but are not modelled, for a precise error.
const CONNTRACK_UNMODELLED: &[&str] = &[
    "--ctproto", "--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst", "--ctorigsrcport", "--ctorigdstport",
    "--ctreplsrcport", "--ctrepldstport", "--ctstatus", "--ctexpire", "--ctdir",
];

/// Parses the rule options of `-A`/`-I`/`-R`/`-D`; several rules when `-s`/`-d` list addresses.
pub(super) fn parse_rule(words: &[&Word], family: Family, table: TableKind, chain: &str, line: usize) -> Result<Vec<RuleSpec>, String> {
    let mut p = RuleParser {
        words,
        at: 0,
        family,
        table,
        notrack: false,
        mark_set: false,
        spec: RuleSpec::new(line),
        sources: None,
        destinations: None,
        seng: Vec::new(),
        target_set: false,
    };
    let mut negated = false;
    while let Some(word) = words.get(p.at) {
        p.at += 1;
        let option = word.text.as_str();
        if option == "!" {
            if negated {
                return Err("\"!\" given twice".into());
            }
            negated = true;
            continue;
        }
        let was_negated = std::mem::take(&mut negated);
        let no_negation = |what: &str| if was_negated { Err(format!("{what} cannot be negated")) } else { Ok(()) };
        match option {
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let list = Some((p.addresses(option)?, was_negated));
                let slot = if option.starts_with("-s") || option.starts_with("--s") { &mut p.sources } else { &mut p.destinations };
                if slot.is_some() {
                    return Err(format!("{option} given twice"));
                }
                if was_negated && list.as_ref().is_some_and(|(l, _)| l.len() > 1) {
                    return Err(format!("! {option} with a list of addresses is not allowed"));
                }
                *slot = list;
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let name = p.value(option)?;
                check_iface(name)?;
                let slot = if option.starts_with("-i") || option.starts_with("--i") { &mut p.spec.in_iface } else { &mut p.spec.out_iface };
                if slot.is_some() {
                    return Err(format!("{option} given twice"));
                }
                *slot = Some(Neg { value: name.into(), negated: was_negated });
            }
            "-p" | "--protocol" => {
                let text = p.value(option)?;
                if p.spec.proto.is_some() {
                    return Err("-p given twice".into());
                }
                let proto = names::protocol(text).ok_or_else(|| format!("unknown protocol {text:?} specified"))?;
                if proto != 0 || was_negated {
                    p.spec.proto = Some(Neg { value: proto, negated: was_negated });
                }
            }
            "-f" | "--fragment" => {
                if family == Family::Ipv6 {
                    return Err("-f is IPv4 only (ip6tables matches fragments with -m frag, which is not modelled)".into());
                }
                p.spec.fragment = Some(was_negated);
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                no_negation(option)?;
                let name = p.value(option)?;
                p.target(name, option.starts_with("-g") || option == "--goto")?;
            }
            "-m" | "--match" => {
                no_negation(option)?;
                let name = p.value(option)?;
                p.load_match(name)?;
            }
            "-c" | "--set-counters" => {
                no_negation(option)?;
                // Initial counters are accepted and ignored: the replay counts from zero.
                p.value(option)?;
                if !words.get(p.at - 1).is_some_and(|w| w.text.contains(':')) {
                    p.value(option)?;
                }
            }
            _ if option.starts_with('-') && option.len() > 1 => {
                if let Some(index) = p.match_for(option) {
                    if option == "--tcp-option" {
                        return Err("tcp option --tcp-option is not modelled".into());
                    }
                    p.match_option(index, option, was_negated)?;
                } else if p.target_option(option, was_negated)? {
                } else if CONNTRACK_UNMODELLED.contains(&option) && p.spec.matches.iter().any(|m| matches!(m, MatchSpec::Conntrack(_))) {
                    return Err(format!("conntrack option {option} is not modelled (only --ctstate)"));
                } else {
                    return Err(format!("unknown option {option:?} (is its match loaded with -m, or -p given before it?)"));
                }
            }
            _ => return Err(format!("bad argument {option:?}")),
        }
    }
    if negated {
        return Err("\"!\" at the end of the rule".into());
    }
    p.finish(chain)
}

