// SPDX-License-Identifier: GPL-2.0-only
//! The guest side of a scenario's inputs: the network seng-sim's options describe, as shell
//! commands that build it from tun devices, and the rules file split into what
//! `iptables-restore` and `ip6tables-restore` each load.
//!
//! The network options are read by seng-sim's own [`NetConfig`] methods, so both sides of the
//! comparison mean the same by them. Every interface is a tun device the injector attaches to;
//! the default interface gets the default routes of both families.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use seng_sim::net::NetConfig;

/// A scenario's network, from the words of its `sim-args` file.
pub struct Network {
    /// seng-sim's view of it.
    pub config: NetConfig,
    /// `--no-checksum` was given.
    pub no_checksum: bool,
}

/// Reads `sim-args` words (`#` starts a comment to the end of its line). Only the options that
/// describe the network (and `--no-checksum`) may appear: anything else would change the
/// simulation in a way the kernel cannot be told about.
pub fn parse_sim_args(text: &str) -> Result<Network> {
    let words: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
        .collect();
    let mut config = NetConfig::default();
    let mut ifaces_given = false;
    let mut no_checksum = false;
    let mut it = words.iter();
    while let Some(&word) = it.next() {
        let (option, inline) = match word.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v)),
            _ => (word, None),
        };
        if option == "--no-checksum" {
            no_checksum = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .copied()
                .with_context(|| format!("sim-args: {option} needs a value"))?,
        };
        match option {
            "--iface" => {
                if !ifaces_given {
                    config.interfaces.clear();
                    ifaces_given = true;
                }
                config.set_interface(value)?;
            }
            "--local" => config.add_local(value)?,
            "--route" => config.add_route(value)?,
            "--default-iface" => config.default_iface = value.to_string(),
            "--in-iface" => config.in_iface = Some(value.to_string()),
            other => bail!("sim-args: {other} is not a network option the guest can reproduce"),
        }
    }
    config.check_names()?;
    Ok(Network {
        config,
        no_checksum,
    })
}

fn family_flag(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "-4"
    } else {
        "-6"
    }
}

impl Network {
    /// Every interface name, the default one included, in order of appearance.
    pub fn devices(&self) -> Vec<String> {
        let c = &self.config;
        let mut names: Vec<String> = Vec::new();
        let all = c
            .interfaces
            .iter()
            .map(|i| &i.name)
            .chain(c.routes.iter().map(|r| &r.2))
            .chain([&c.default_iface])
            .chain(c.in_iface.iter());
        for name in all {
            if name != "lo" && !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Shell commands (for `eval`, with `$IP` the ip binary) that create the devices, address
    /// and route them, and set `E2E_DEVS`, `E2E_IN_DEV` and `E2E_CHECKSUM`.
    pub fn shell(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let devices = self.devices();
        for dev in &devices {
            // No link-local address: nothing the kernel could send on its own from it.
            let _ = writeln!(
                s,
                "$IP tuntap add dev {dev} mode tun && $IP link set dev {dev} addrgenmode none &&"
            );
        }
        for iface in &c.interfaces {
            for (addr, len) in &iface.addrs {
                let extra = if addr.is_ipv4() { "brd +" } else { "nodad" };
                let _ = writeln!(
                    s,
                    "$IP {} addr add {addr}/{len} {extra} dev {} &&",
                    family_flag(addr),
                    iface.name
                );
            }
        }
        for addr in &c.locals {
            let len = if addr.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(
                s,
                "$IP {} addr add {addr}/{len} dev lo &&",
                family_flag(addr)
            );
        }
        for dev in &devices {
            let _ = writeln!(s, "$IP link set dev {dev} up &&");
        }
        for (addr, len, dev) in &c.routes {
            let _ = writeln!(
                s,
                "$IP {} route add {addr}/{len} dev {dev} &&",
                family_flag(addr)
            );
        }
        let _ = writeln!(
            s,
            "$IP -4 route add default dev {0} && $IP -6 route add default dev {0} &&",
            c.default_iface
        );
        let _ = writeln!(s, "E2E_DEVS=\"{}\" &&", devices.join(" "));
        let _ = writeln!(
            s,
            "E2E_IN_DEV=\"{}\" &&",
            c.in_iface.as_deref().unwrap_or("")
        );
        let _ = writeln!(s, "E2E_CHECKSUM={}", u8::from(!self.no_checksum));
        s
    }
}

/// The tables a scenario may load, as seng-sim models them.
const TABLES: [&str; 4] = ["raw", "mangle", "nat", "filter"];

/// Splits an `iptables-save`-format rules file into the IPv4 and IPv6 rulesets (`*raw`,
/// `*mangle`, `*nat` and `*filter` blocks). A block is IPv6 when the last `# Generated by`
/// comment before it names ip6tables-save, IPv4 when it names iptables-save; without such a
/// comment the first block of a table is IPv4 and the second IPv6, as seng-sim decides. A
/// family without a filter block gets an empty one with ACCEPT policies, so that the kernel
/// counts its policies as seng-sim does.
pub fn split_rules(text: &str) -> Result<(String, String)> {
    const EMPTY: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    // Per family, per table of TABLES.
    let mut blocks: [[Option<String>; 4]; 2] = Default::default();
    let mut marked: Option<usize> = None;
    let mut current: Option<(usize, usize, String)> = None;
    let mut unmarked = [0usize; 4];
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some((family, table, block)) = &mut current {
            block.push_str(line);
            block.push('\n');
            if trimmed == "COMMIT" {
                let (family, table) = (*family, *table);
                if blocks[family][table].is_some() {
                    bail!(
                        "line {}: a second {} {} table",
                        n + 1,
                        ["IPv4", "IPv6"][family],
                        TABLES[table]
                    );
                }
                blocks[family][table] = current.take().map(|(_, _, b)| b);
            }
            continue;
        }
        if let Some(generator) = trimmed.strip_prefix("# Generated by ") {
            marked = Some(usize::from(generator.starts_with("ip6tables")));
        } else if let Some(name) = trimmed.strip_prefix('*') {
            let table = TABLES.iter().position(|t| *t == name).with_context(|| {
                format!("line {}: table {name:?} is not one seng-sim models", n + 1)
            })?;
            let family = marked.take().unwrap_or_else(|| {
                unmarked[table] += 1;
                unmarked[table] - 1
            });
            if family > 1 {
                bail!("line {}: a third {name} table without a `# Generated by ip6tables-save` comment", n + 1);
            }
            current = Some((family, table, format!("{line}\n")));
        } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
            bail!(
                "line {}: {trimmed:?} outside a table; scenario rules are in iptables-save format",
                n + 1
            );
        }
    }
    if current.is_some() {
        bail!("the last table has no COMMIT");
    }
    let [v4, v6] = blocks.map(|tables| {
        let [raw, mangle, nat, filter] = tables;
        [raw, mangle, nat, Some(filter.unwrap_or_else(|| EMPTY.into()))]
            .into_iter()
            .flatten()
            .collect::<String>()
    });
    Ok((v4, v6))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn default_network() {
        let net = parse_sim_args("").unwrap();
        assert_eq!(net.devices(), ["tunFA", "eth0"]);
        let sh = net.shell();
        assert!(
            sh.contains("$IP -4 addr add 192.168.28.1/24 brd + dev tunFA &&"),
            "{sh}"
        );
        assert!(
            sh.contains("$IP -6 addr add fd00:28::1/64 nodad dev tunFA &&"),
            "{sh}"
        );
        assert!(
            sh.contains(
                "$IP -4 route add default dev eth0 && $IP -6 route add default dev eth0 &&"
            ),
            "{sh}"
        );
        assert!(
            sh.ends_with("E2E_DEVS=\"tunFA eth0\" &&\nE2E_IN_DEV=\"\" &&\nE2E_CHECKSUM=1\n"),
            "{sh}"
        );
    }

    #[test]
    fn configured_network() {
        let net = parse_sim_args("# enclaves behind tunFA\n--route 172.16.0.0/16=tunFA --iface=tunFA=192.168.28.1/24\n--iface wan0=203.0.113.1/24 --default-iface wan0 --local 10.9.9.9 --no-checksum\n").unwrap();
        assert_eq!(net.devices(), ["tunFA", "wan0"]);
        let sh = net.shell();
        assert!(
            sh.contains("$IP -4 route add 172.16.0.0/16 dev tunFA &&"),
            "{sh}"
        );
        assert!(sh.contains("$IP -4 addr add 10.9.9.9/32 dev lo &&"), "{sh}");
        assert!(
            !sh.contains("fd00:28::1"),
            "--iface replaces the default tunFA: {sh}"
        );
        assert!(sh.ends_with("E2E_CHECKSUM=0\n"), "{sh}");
        assert!(parse_sim_args("--trace").is_err());
        assert!(parse_sim_args("--route").is_err());
        assert!(parse_sim_args("--route 10.0.0.0/33=x").is_err());
    }

    #[test]
    fn splits_by_family() {
        let text = "# c\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n# Generated by ip6tables-save v1.8.9\n*filter\n:INPUT DROP [0:0]\nCOMMIT\n";
        let (v4, v6) = split_rules(text).unwrap();
        assert_eq!(
            v4,
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
        );
        assert_eq!(v6, "*filter\n:INPUT DROP [0:0]\nCOMMIT\n");
        let (v4, v6) = split_rules("# Generated by ip6tables-save\n*filter\nCOMMIT\n").unwrap();
        assert!(v4.contains(":INPUT ACCEPT") && v6 == "*filter\nCOMMIT\n");
        assert!(split_rules("*security\nCOMMIT\n").is_err());
        let (v4, v6) = split_rules("# Generated by ip6tables-save\n*nat\nCOMMIT\n*filter\nCOMMIT\n*raw\nCOMMIT\n*nat\nCOMMIT\n").unwrap();
        assert_eq!(v4, "*raw\nCOMMIT\n*nat\nCOMMIT\n*filter\nCOMMIT\n");
        assert_eq!(v6, "*nat\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
        assert!(split_rules("*nat\nCOMMIT\n*nat\nCOMMIT\n*nat\nCOMMIT\n").is_err());
        assert!(split_rules("iptables -A INPUT -j DROP\n").is_err());
        assert!(split_rules("*filter\nCOMMIT\n*filter\nCOMMIT\n*filter\nCOMMIT\n").is_err());
        assert!(split_rules("*filter\n-A INPUT -j DROP\n").is_err());
    }
}
