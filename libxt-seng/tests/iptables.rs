// SPDX-License-Identifier: GPL-2.0-only
//! The built plugin under the host's real iptables binaries (legacy and nft, IPv4 and IPv6),
//! found through `XTABLES_LIBDIR`.
//!
//! Without seng.ko only parsing can be observed, so every rule goes through `-C` (check), which
//! never changes the ruleset: a rejected rule exits with status 2 and the message from
//! seng-core before the kernel is asked; an accepted one gets as far as the lookup and exits
//! with another status. Listing, saving and deleting are covered by the VM tests
//! (`vmtest/tests/xt-*.sh`). A binary that is not installed is reported and skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::plugin_dir;

const APP_SRC: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";
const APP_DST: &str = "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792";

/// `XTABLES_LIBDIR`: the plugin built with this test first, then the system's plugins (for
/// `-p tcp` and friends).
fn libdir() -> String {
    let built = plugin_dir();
    let system = Command::new("pkg-config")
        .args(["--variable=xtlibdir", "xtables"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/usr/lib/x86_64-linux-gnu/xtables".into());
    format!("{}:{system}", built.display())
}

/// The installed binaries of `family` ("iptables" or "ip6tables"), legacy and nft.
fn binaries(family: &str) -> Vec<PathBuf> {
    let found: Vec<PathBuf> = ["legacy", "nft"]
        .iter()
        .flat_map(|backend| {
            ["/usr/sbin", "/sbin"].map(|dir| PathBuf::from(format!("{dir}/{family}-{backend}")))
        })
        .filter(|p| p.exists())
        .fold(Vec::new(), |mut acc, p| {
            if !acc.iter().any(|q: &PathBuf| q.file_name() == p.file_name()) {
                acc.push(p);
            }
            acc
        });
    if found.is_empty() {
        eprintln!(
            "note: no {family}-legacy or {family}-nft installed; skipped (apt install iptables)"
        );
    }
    found
}

fn run(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .env("XTABLES_LIBDIR", libdir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()))
}

fn words(rule: &str) -> Vec<&str> {
    rule.split(' ').filter(|w| !w.is_empty()).collect()
}

/// Checks `rule` in `chain` with every binary of `family`; `want` is `Ok(())` or the message
/// iptables must print after its `<program> v<version> (<backend>): ` prefix.
fn check(family: &str, chain: &str, rule: &str, want: Result<(), &str>) {
    for binary in binaries(family) {
        let mut args = vec!["-C", chain];
        args.extend(words(rule));
        let out = run(&binary, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // "iptables v1.8.9 (legacy): <message>", the form of xtables_error.
        let problem = stderr
            .lines()
            .find(|l| l.starts_with(&format!("{family} v")) && l.contains("): "));
        let what = format!(
            "{} -C {chain} {rule}: status {:?}, stderr {stderr:?}",
            binary.display(),
            out.status.code()
        );
        match want {
            // Status 2 is PARAMETER_PROBLEM; after parsing, iptables may still fail for want of
            // the kernel module or of root, with another status and message.
            Ok(()) => assert!(
                out.status.code() != Some(2) && !problem.is_some_and(|l| l.contains("seng")),
                "accepted? {what}"
            ),
            Err(message) => {
                assert_eq!(out.status.code(), Some(2), "{what}");
                let line = problem.unwrap_or_default();
                assert!(line.ends_with(&format!("): {message}")), "message? {what}");
            }
        }
    }
}

#[test]
fn the_original_samples_parse_verbatim() {
    let samples = [
        ("INPUT", format!("-i tunFA --source 192.168.28.0/24 -p tcp --destination-port 8391 -m seng --src-app {APP_SRC} -j ACCEPT")),
        ("INPUT", "-i tunFA --source 192.168.28.0/24 -m seng ! --src-host 10.0.0.0/26 -j DROP".into()),
        ("INPUT", "-i tunFA --source 192.168.28.0/24 -p tcp --destination-port 443 -m seng --src-cat Browser -j ACCEPT".into()),
        ("OUTPUT", format!("-o tunFA --destination 192.168.28.0/24 -p tcp --destination-port 4711 -m seng --dst-app {APP_DST} -j ACCEPT")),
    ];
    for (chain, rule) in &samples {
        check("iptables", chain, rule, Ok(()));
    }
}

#[test]
fn every_option_and_negation_parses() {
    let rules = [
        (
            "iptables",
            format!(
                "-m seng ! --src-app {APP_SRC} --dst-app {}",
                APP_DST.to_uppercase()
            ),
        ),
        (
            "iptables",
            "-m seng --src-cat Browser ! --dst-cat 12345678901234567890".into(),
        ),
        (
            "iptables",
            "-m seng --src-host 10.0.0.1 ! --dst-host 10.1.0.0/255.255.0.0".into(),
        ),
        ("iptables", "-m seng --src-cat a -m seng --src-cat b".into()),
        (
            "ip6tables",
            "-m seng ! --src-host 2001:db8::/32 --dst-host ::ffff:10.0.0.0/122".into(),
        ),
        (
            "ip6tables",
            format!("-m seng --dst-app {APP_DST} ! --src-cat Mail"),
        ),
    ];
    for (family, rule) in &rules {
        check(family, "FORWARD", rule, Ok(()));
    }
}

#[test]
fn bad_rules_fail_with_seng_core_messages() {
    let cases: &[(&str, &str, &str)] = &[
        ("iptables", "-m seng --src-app abc", "seng: --src-app: bad application measurement \"abc\": must be exactly 64 hex digits, found 3 characters"),
        ("iptables", "-m seng --dst-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3bz", "seng: --dst-app: bad application measurement \"d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3bz\": 'z' at position 64 is not a hex digit"),
        ("iptables", "-m seng --src-cat 123456789012345678901", "seng: --src-cat: bad category \"123456789012345678901\": category name is 21 bytes, at most 20 are allowed"),
        ("iptables", "-m seng --src-host 10.0.0.0/33", "seng: --src-host: bad host \"10.0.0.0/33\": mask must be a prefix length 0-32 or an IPv4 address mask"),
        ("iptables", "-m seng --dst-host gateway.example", "seng: --dst-host: bad host \"gateway.example\": not a numeric IPv4 address"),
        ("iptables", "-m seng --dst-host 10.0.0.1/255.0.255", "seng: --dst-host: bad host \"10.0.0.1/255.0.255\": mask must be a prefix length 0-32 or an IPv4 address mask"),
        ("ip6tables", "-m seng --src-host 10.0.0.1", "seng: --src-host: bad host \"10.0.0.1\": not a numeric IPv6 address"),
        ("ip6tables", "-m seng --src-host 2001:db8::/129", "seng: --src-host: bad host \"2001:db8::/129\": mask must be a prefix length 0-128 or an IPv6 address mask"),
        ("iptables", "-m seng --src-cat a --src-cat b", "seng: --src-cat: may be given only once"),
        ("ip6tables", "-m seng ! --dst-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 --dst-app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0", "seng: --dst-app: may be given only once"),
        ("iptables", "-m seng", "seng match needs at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host"),
        ("ip6tables", "-m seng -j ACCEPT", "seng match needs at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host"),
    ];
    for (family, rule, message) in cases {
        check(family, "INPUT", rule, Err(message));
    }
}

#[test]
fn help_lists_the_options() {
    for binary in binaries("iptables")
        .into_iter()
        .chain(binaries("ip6tables"))
    {
        let out = run(&binary, &["-m", "seng", "--help"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", binary.display());
        let help = stdout
            .split_once("seng match options:\n")
            .map(|(_, h)| h)
            .unwrap_or_default();
        for flag in [
            "--src-app HEX",
            "--src-cat NAME",
            "--src-host ADDR[/MASK]",
            "--dst-app HEX",
            "--dst-cat NAME",
            "--dst-host ADDR[/MASK]",
        ] {
            assert!(
                help.contains(&format!("[!] {flag} ")),
                "{}: no {flag} in {stdout:?}",
                binary.display()
            );
        }
    }
}
