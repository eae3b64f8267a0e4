// SPDX-License-Identifier: GPL-2.0-only
//! Trace output: how one packet's way through the hooks is put into words (the decider, the
//! rules passed, a tcpdump-style description of the packet).

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use seng_core::Family;

use super::compile::Compiled;
use super::traverse::Decider;
use super::Verdict;
use crate::net::Router;
use crate::packet::{proto, to_ip, Addr, Packet, L4};
use crate::rules::ct_state;

/// An interface id's name, `*` for none.
pub(super) fn iface_name(router: &Router, id: u8) -> &str {
    match router.name(id) {
        "" => "*",
        name => name,
    }
}

/// The name of a conntrack state bit.
pub fn ct_name(ct: u8) -> &'static str {
    match ct {
        ct_state::NEW => "NEW",
        ct_state::ESTABLISHED => "ESTABLISHED",
        ct_state::RELATED => "RELATED",
        ct_state::UNTRACKED => "UNTRACKED",
        _ => "INVALID",
    }
}

pub(super) fn describe_decision(out: &mut String, table: &Compiled, verdict: Verdict, decider: Decider) {
    let rule_text = |chain: u16, rule: u32| {
        let index = (table.chains[usize::from(chain)].start + rule) as usize;
        &table.texts[index]
    };
    for step in &table.steps {
        let text = rule_text(step.chain, step.rule);
        let verb = if text.contains(" -j LOG") { "LOG" } else if text.contains(" -j ") || text.contains(" -g ") { "via" } else { "counted by" };
        let _ = write!(out, "{verb} {} rule {} ({text}); ", table.names[usize::from(step.chain)], step.rule + 1);
    }
    match decider {
        Decider::Rule(chain, rule) => {
            let name = table.nat_of(decider).map_or(verdict.name(), |n| n.kind.name());
            let _ = write!(out, "{name} by {} rule {} ({})", table.names[usize::from(chain)], rule + 1, rule_text(chain, rule));
        }
        Decider::Policy(chain) => {
            let _ = write!(out, "{} by {} policy", verdict.name(), table.names[usize::from(chain)]);
        }
        Decider::Hotdrop(chain, rule) => {
            let _ = write!(
                out,
                "DROP by a match of {} rule {} (transport header truncated or an evil fragment) ({})",
                table.names[usize::from(chain)],
                rule + 1,
                rule_text(chain, rule)
            );
        }
    }
}

/// A one-line description of a packet, tcpdump style.
pub struct Describe<'p, 'a>(pub &'p Packet<'a>);

impl fmt::Display for Describe<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        let addr = |a: Addr| to_ip(p.family, a);
        let with_port = |f: &mut fmt::Formatter<'_>, a: Addr, port: u16| match addr(a) {
            IpAddr::V4(v4) => write!(f, "{v4}:{port}"),
            IpAddr::V6(v6) => write!(f, "[{v6}]:{port}"),
        };
        let ports = matches!(p.proto, proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP) && p.l4 == L4::Complete;
        if ports {
            with_port(f, p.src, p.sport)?;
            f.write_str(" > ")?;
            with_port(f, p.dst, p.dport)?;
        } else {
            write!(f, "{} > {}", addr(p.src), addr(p.dst))?;
        }
        match p.proto {
            proto::TCP if p.l4 == L4::Complete => {
                let mut flags = String::new();
                for (bit, c) in [(0x02, 'S'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P'), (0x20, 'U')] {
                    if p.tcp_flags & bit != 0 {
                        flags.push(c);
                    }
                }
                if p.tcp_flags & 0x10 != 0 {
                    flags.push('.');
                }
                if flags.is_empty() {
                    flags.push_str("none");
                }
                write!(f, " TCP [{flags}]")?;
            }
            proto::UDP => f.write_str(" UDP")?,
            proto::ICMP | proto::ICMPV6 if p.l4 == L4::Complete => {
                let name = if p.proto == proto::ICMP { "ICMP" } else { "ICMPv6" };
                let known = match (p.family, p.icmp_type) {
                    (Family::Ipv4, 8) | (Family::Ipv6, 128) => Some("echo-request"),
                    (Family::Ipv4, 0) | (Family::Ipv6, 129) => Some("echo-reply"),
                    _ => None,
                };
                match known {
                    Some(n) => write!(f, " {name} {n} id {}", p.icmp_id)?,
                    None => write!(f, " {name} type {} code {}", p.icmp_type, p.icmp_code)?,
                }
            }
            other => write!(f, " proto {}", crate::rules::names::protocol_save_name(other))?,
        }
        if p.fragment {
            write!(f, " (fragment at offset {})", u32::from(p.frag_offset) * 8)?;
        }
        Ok(())
    }
}
