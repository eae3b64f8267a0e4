// SPDX-License-Identifier: GPL-2.0-only
//! The translation between libxtables' callbacks and seng-core, in safe code over bytes.
//!
//! The match data itself carries the rule between `x6_parse` calls: libxtables zeroes it before
//! the first option, every call decodes it into a [`Rule`], sets one option with [`Rule::set`]
//! and stores the canonical [`SengMtInfo::from`] encoding back. That keeps the state per match
//! instance (a rule may name `-m seng` twice), needs no `udata`, and leaves exactly the bytes
//! the kernel and `-D` comparisons expect after the last option. `crate::ffi` does the pointer
//! work around these functions.

use seng_core::matchinfo::{MatchInfoError, MATCHINFO_XT_SIZE};
use seng_core::rule::SengOption;
use seng_core::{Family, Rule, SengMtInfo};

/// The match data as libxtables allocates it: `XT_ALIGN(sizeof(struct seng_mt_info))` bytes.
pub type Blob = [u8; MATCHINFO_XT_SIZE];

/// The rule held by match data under construction. No flag set means no option parsed yet.
fn rule_in_progress(blob: &Blob, family: Family) -> Result<Rule, String> {
    let info = SengMtInfo::from_bytes(blob).map_err(|e| format!("seng: {e}"))?;
    if info.flags == 0 {
        return Ok(Rule::empty(family));
    }
    info.to_rule(family)
        .map_err(|e| format!("seng: match data under construction is invalid: {e}"))
}

/// `x6_parse`: sets option number `id` (its row in the option table, see [`SengOption::ALL`])
/// from its argument bytes and stores the updated rule in `blob`. The error is the complete
/// message for `xtables_error`; `blob` is unchanged then.
pub fn parse_option(
    blob: &mut Blob,
    family: Family,
    id: u32,
    negated: bool,
    arg: &[u8],
) -> Result<(), String> {
    let option = usize::try_from(id)
        .ok()
        .and_then(|i| SengOption::ALL.get(i))
        .copied()
        .ok_or_else(|| format!("seng: unknown option number {id}"))?;
    let mut rule = rule_in_progress(blob, family)?;
    // C strings carry bytes; seng-core reads text, so undecodable bytes stop here.
    let value = core::str::from_utf8(arg).map_err(|_| {
        format!(
            "seng: {option}: {:?} is not valid UTF-8",
            String::from_utf8_lossy(arg)
        )
    })?;
    rule.set(option, negated, value)
        .map_err(|e| format!("seng: {e}"))?;
    let info = SengMtInfo::from(&rule);
    // The XT_ALIGN tail stays zero so that rules compare equal byte for byte.
    blob.fill(0);
    for (dst, src) in blob.iter_mut().zip(info.as_bytes()) {
        *dst = *src;
    }
    Ok(())
}

/// `x6_fcheck`: the complete match must set at least one option.
pub fn final_check(blob: &Blob, family: Family) -> Result<(), String> {
    rule_in_progress(blob, family)?
        .check()
        .map_err(|e| e.to_string())
}

/// Match data handed back for printing: its bytes, or why they could not even be read.
pub type Shown<'a> = Result<&'a [u8], MatchInfoError>;

fn decode(data: Shown<'_>, family: Family) -> Result<Rule, MatchInfoError> {
    SengMtInfo::from_bytes(data?)?.to_rule(family)
}

/// `print`: the `iptables -L` text, with the leading space iptables expects between matches.
pub fn list_text(data: Shown<'_>, family: Family) -> String {
    match decode(data, family) {
        Ok(rule) => format!(" {}", rule.list_form()),
        Err(e) => format!(" seng [invalid match data: {e}]"),
    }
}

/// `save`: the `iptables-save` text, which `iptables-restore` reads back to the same match data.
/// Invalid data (only a foreign kernel module could hand it back) gives a bracketed note
/// instead, which restore rejects loudly rather than loading a different rule.
pub fn save_text(data: Shown<'_>, family: Family) -> String {
    match decode(data, family) {
        Ok(rule) => format!(" {}", rule.save_form()),
        Err(e) => format!(" [invalid seng match data: {e}]"),
    }
}

/// What each option means, for `--help` (same order as [`SengOption::ALL`]).
const HELP_LINES: [&str; 6] = [
    "source is an enclave of the application with this measurement (64 hex digits)",
    "source enclave's application has this category (1-20 bytes)",
    "source enclave runs on an untrusted host in ADDR[/MASK]",
    "destination is an enclave of the application with this measurement",
    "destination enclave's application has this category",
    "destination enclave runs on an untrusted host in ADDR[/MASK]",
];

/// `help`: the option summary `iptables -m seng --help` prints.
pub fn help_text() -> String {
    let mut text = String::from("seng match options:\n");
    for (option, what) in SengOption::ALL.into_iter().zip(HELP_LINES) {
        let usage = format!("{} {}", option.flag(), option.metavar());
        text.push_str(&format!("[!] {usage:<24} {what}\n"));
    }
    text.push_str(
        "At least one option is required. An address that is not a registered enclave\n\
         satisfies no option, negated or not.\n",
    );
    text
}

#[cfg(test)]
mod test {
    use super::*;
    use seng_core::matchinfo::{flags, MATCHINFO_LEN};

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

    /// Options as libxtables hands them over, in command-line order.
    type Calls<'a> = &'a [(SengOption, bool, &'a str)];

    /// Feeds `(option, negated, value)` calls through [`parse_option`] as libxtables would.
    fn parse_all(family: Family, calls: Calls<'_>) -> Result<Blob, String> {
        let mut blob = [0u8; MATCHINFO_XT_SIZE];
        for &(option, negated, value) in calls {
            let id = SengOption::ALL.iter().position(|o| *o == option).unwrap() as u32;
            parse_option(&mut blob, family, id, negated, value.as_bytes())?;
        }
        final_check(&blob, family)?;
        Ok(blob)
    }

    #[test]
    fn options_become_canonical_data_and_text() {
        use SengOption::*;
        let app = APP.to_uppercase();
        let cases: &[(Family, Calls<'_>, &str, &str)] = &[
            (
                Family::Ipv4,
                &[(SrcApp, false, &app)],
                &format!(" --src-app {APP}"),
                &format!(" seng src-app {APP}"),
            ),
            (
                Family::Ipv4,
                &[(SrcHost, true, "10.0.0.5/26")],
                " ! --src-host 10.0.0.0/26",
                " seng ! src-host 10.0.0.0/26",
            ),
            (
                Family::Ipv4,
                &[
                    (DstHost, false, "10.0.0.7"),
                    (SrcCat, false, "Browser"),
                    (DstCat, true, "Mail"),
                ],
                " --src-cat Browser ! --dst-cat Mail --dst-host 10.0.0.7/32",
                " seng src-cat Browser ! dst-cat Mail dst-host 10.0.0.7",
            ),
            (
                Family::Ipv4,
                &[(DstApp, true, APP)],
                &format!(" ! --dst-app {APP}"),
                &format!(" seng ! dst-app {APP}"),
            ),
            (
                Family::Ipv6,
                &[(SrcHost, false, "2001:db8::1/64")],
                " --src-host 2001:db8::/64",
                " seng src-host 2001:db8::/64",
            ),
            (
                Family::Ipv4,
                &[(SrcCat, false, "My App")],
                " --src-cat \"My App\"",
                " seng src-cat \"My App\"",
            ),
        ];
        for (family, calls, save, list) in cases {
            let blob = parse_all(*family, calls).unwrap();
            assert_eq!(save_text(Ok(&blob), *family), *save, "{calls:?}");
            assert_eq!(list_text(Ok(&blob), *family), *list, "{calls:?}");
            // Carrying the rule in the data between calls loses nothing: the bytes are
            // seng-core's canonical encoding of the rule set directly.
            let mut rule = Rule::empty(*family);
            for &(option, negated, value) in *calls {
                rule.set(option, negated, value).unwrap();
            }
            assert_eq!(
                &blob[..MATCHINFO_LEN],
                SengMtInfo::from(&rule).as_bytes(),
                "{calls:?}"
            );
            assert_eq!(&blob[MATCHINFO_LEN..], &[0; 4], "XT_ALIGN tail");
        }
    }

    #[test]
    fn errors_carry_seng_core_messages_and_leave_data_alone() {
        use SengOption::*;
        let cases: &[(Family, Calls<'_>, &str)] = &[
            (Family::Ipv4, &[(SrcApp, false, "abc")], "seng: --src-app: bad application measurement \"abc\": must be exactly 64 hex digits, found 3 characters"),
            (Family::Ipv4, &[(DstApp, false, &APP.replace('d', "g"))], "seng: --dst-app: bad application measurement"),
            (Family::Ipv4, &[(SrcCat, false, "123456789012345678901")], "seng: --src-cat: bad category \"123456789012345678901\": category name is 21 bytes"),
            (Family::Ipv4, &[(DstHost, false, "10.0.0.300")], "seng: --dst-host: bad host \"10.0.0.300\": not a numeric IPv4 address"),
            (Family::Ipv4, &[(SrcHost, false, "10.0.0.0/33")], "seng: --src-host: bad host \"10.0.0.0/33\": mask must be a prefix length 0-32"),
            (Family::Ipv6, &[(SrcHost, false, "10.0.0.1")], "seng: --src-host: bad host \"10.0.0.1\": not a numeric IPv6 address"),
            (Family::Ipv4, &[(SrcCat, false, "a"), (SrcCat, true, "b")], "seng: --src-cat: may be given only once"),
            (Family::Ipv4, &[], "seng match needs at least one of --src-app"),
        ];
        for (family, calls, want) in cases {
            let got = parse_all(*family, calls).unwrap_err();
            assert!(got.starts_with(want), "{calls:?}: got {got:?}");
        }
        let mut blob = parse_all(Family::Ipv4, &[(SrcCat, false, "a")]).unwrap();
        let before = blob;
        assert!(parse_option(&mut blob, Family::Ipv4, 1, false, b"b").is_err());
        assert!(parse_option(&mut blob, Family::Ipv4, 0, false, b"\xff")
            .unwrap_err()
            .contains("not valid UTF-8"));
        assert!(parse_option(&mut blob, Family::Ipv4, 6, false, b"x")
            .unwrap_err()
            .contains("unknown option number 6"));
        assert_eq!(blob, before);
    }

    #[test]
    fn invalid_kernel_data_prints_a_note() {
        let with_flags = |f: u16| {
            let mut blob = [0u8; MATCHINFO_XT_SIZE];
            blob[176..178].copy_from_slice(&f.to_ne_bytes());
            blob
        };
        let cases: &[(Shown<'_>, &str)] = &[
            (
                Ok(&with_flags(flags::APP_SRC | 1 << 12)),
                "unknown flag bits 0x1000",
            ),
            (
                Ok(&with_flags(flags::APP_SRC_INV)),
                "negation flag bits 0x0002 set without their options",
            ),
            (
                Ok(&with_flags(flags::CAT_DST)),
                "destination category: category name is empty",
            ),
            (Ok(&with_flags(0)), "no seng option set"),
            (
                Ok(&[0u8; 17]),
                "match data is 17 bytes, expected 180 or 184",
            ),
            (
                Err(MatchInfoError::Size(0)),
                "match data is 0 bytes, expected 180 or 184",
            ),
        ];
        for (data, why) in cases {
            assert_eq!(
                list_text(*data, Family::Ipv4),
                format!(" seng [invalid match data: {why}]")
            );
            let save = save_text(*data, Family::Ipv4);
            assert!(
                save.starts_with(" [invalid seng match data: ") && save.contains(why),
                "{save}"
            );
            // iptables-restore must not mistake the note for options.
            assert!(Rule::parse(save.trim(), Family::Ipv4).is_err());
        }
    }

    #[test]
    fn help_names_every_option() {
        let help = help_text();
        for option in SengOption::ALL {
            let line = format!("[!] {} {}", option.flag(), option.metavar());
            assert!(
                help.lines().any(|l| l.starts_with(&line)),
                "{line} missing in\n{help}"
            );
        }
    }
}
