// SPDX-License-Identifier: GPL-2.0-only
//! Reading a rule's options (`-s`, `-p`, `-m NAME …`, `-j TARGET …`) into a [`RuleSpec`], with the
//! checks iptables makes (a match's protocol, options given twice, negation), and the list of
//! what is modelled.

use seng_core::rule::SengOption;
use seng_core::{Family, HostMask};

use super::names;
use super::{ct_state, LogSpec, MatchSpec, MultiportSpec, Neg, PortDirection, PortRange, RuleSpec, Target, TcpSpec, UdpSpec, BUILTIN_CHAINS};
use super::file::family_name;
use crate::tokenize::Word;

/// Matches the simulator models.
const MATCHES: &str = "tcp, udp, icmp, icmp6, multiport, conntrack, state, comment, seng";

/// Targets of netfilter that the simulator does not model; naming them gives a clear error
/// rather than "no such chain".
pub(super) const UNMODELLED_TARGETS: &[&str] = &[
    "AUDIT", "CHECKSUM", "CLASSIFY", "CLUSTERIP", "CONNMARK", "CONNSECMARK", "CT", "DNAT", "DNPT", "DSCP", "ECN", "HL",
    "HMARK", "IDLETIMER", "LED", "MARK", "MASQUERADE", "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK", "RATEEST", "REDIRECT",
    "SECMARK", "SET", "SNAT", "SNPT", "SYNPROXY", "TCPMSS", "TCPOPTSTRIP", "TEE", "TOS", "TPROXY", "TRACE", "TTL", "ULOG",
];


/// A rule being read: the parts that may come as lists, and the rest.
struct RuleParser<'w> {
    words: &'w [&'w Word],
    at: usize,
    family: Family,
    spec: RuleSpec,
    sources: Option<(Vec<HostMask>, bool)>,
    destinations: Option<(Vec<HostMask>, bool)>,
    /// Seng options gathered per `-m seng` match, as (match index, option, negated, value).
    seng: Vec<(usize, SengOption, bool, String)>,
    target_set: bool,
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

    /// Index of the last loaded match for which `accepts` holds, loading the protocol's own
    /// match when the option belongs to it (iptables' implicit `-p tcp` → `-m tcp`).
    fn match_for(&mut self, option: &str) -> Option<usize> {
        let index = self.spec.matches.iter().position(|m| accepts(m, option));
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
            _ if UNMODELLED_TARGETS.contains(&name) || name == "QUEUE" => {
                return Err(format!(
                    "target {name} is not modelled by seng-sim (modelled: ACCEPT, DROP, REJECT, RETURN, LOG and user chains)"
                ))
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
        match chain {
            "OUTPUT" if self.spec.in_iface.is_some() => return Err("can't use -i with OUTPUT".into()),
            "INPUT" if self.spec.out_iface.is_some() => return Err("can't use -o with INPUT".into()),
            _ => {}
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
pub(super) fn parse_rule(words: &[&Word], family: Family, chain: &str, line: usize) -> Result<Vec<RuleSpec>, String> {
    let mut p = RuleParser {
        words,
        at: 0,
        family,
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

