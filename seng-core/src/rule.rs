// SPDX-License-Identifier: GPL-2.0-only
//! The `-m seng` rule: six options, each optional and negatable, at least one required.
//!
//! Parsing takes the option words as iptables hands them over (`--src-app HEX`, `! --src-host
//! 10.0.0.0/26`); printing gives the canonical `iptables-save` form, which parses back to the same
//! rule, and the `iptables -L` form.

use core::fmt;

use crate::category::CategoryError;
use crate::host::HostError;
use crate::measurement::HexError;
use crate::{Category, Family, HostMask, Measurement};

/// One of the six `-m seng` options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SengOption {
    /// `--src-app HEX`: the source enclave's application measurement.
    SrcApp,
    /// `--src-cat NAME`: a category of the source enclave's application.
    SrcCat,
    /// `--src-host ADDR[/MASK]`: the untrusted host of the source enclave.
    SrcHost,
    /// `--dst-app HEX`.
    DstApp,
    /// `--dst-cat NAME`.
    DstCat,
    /// `--dst-host ADDR[/MASK]`.
    DstHost,
}

impl SengOption {
    /// All options in canonical (save) order.
    pub const ALL: [SengOption; 6] = [
        SengOption::SrcApp,
        SengOption::SrcCat,
        SengOption::SrcHost,
        SengOption::DstApp,
        SengOption::DstCat,
        SengOption::DstHost,
    ];

    /// The option's name without dashes, as libxtables option tables spell it.
    pub const fn name(self) -> &'static str {
        match self {
            SengOption::SrcApp => "src-app",
            SengOption::SrcCat => "src-cat",
            SengOption::SrcHost => "src-host",
            SengOption::DstApp => "dst-app",
            SengOption::DstCat => "dst-cat",
            SengOption::DstHost => "dst-host",
        }
    }

    /// The option as typed on the command line, e.g. `--src-app`.
    pub const fn flag(self) -> &'static str {
        match self {
            SengOption::SrcApp => "--src-app",
            SengOption::SrcCat => "--src-cat",
            SengOption::SrcHost => "--src-host",
            SengOption::DstApp => "--dst-app",
            SengOption::DstCat => "--dst-cat",
            SengOption::DstHost => "--dst-host",
        }
    }

    /// The option for a command-line word such as `--src-app`.
    pub fn from_flag(word: &str) -> Option<SengOption> {
        SengOption::ALL.into_iter().find(|o| o.flag() == word)
    }

    /// The metavariable shown in help text.
    pub const fn metavar(self) -> &'static str {
        match self {
            SengOption::SrcApp | SengOption::DstApp => "HEX",
            SengOption::SrcCat | SengOption::DstCat => "NAME",
            SengOption::SrcHost | SengOption::DstHost => "ADDR[/MASK]",
        }
    }
}

impl fmt::Display for SengOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.flag())
    }
}

/// A condition: a value, possibly negated with `!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cond<T> {
    /// What the enclave's metadata is compared with.
    pub value: T,
    /// `!` given: the comparison must fail (the address must still be a registered enclave).
    pub negated: bool,
}

/// The conditions on one side (source or destination) of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Side {
    /// `--*-app`.
    pub app: Option<Cond<Measurement>>,
    /// `--*-cat`.
    pub cat: Option<Cond<Category>>,
    /// `--*-host`.
    pub host: Option<Cond<HostMask>>,
}

impl Side {
    /// True when no option constrains this side.
    pub fn is_empty(&self) -> bool {
        self.app.is_none() && self.cat.is_none() && self.host.is_none()
    }
}

/// A complete `-m seng` rule of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `iptables` or `ip6tables`: fixes the family of host conditions.
    pub family: Family,
    /// Conditions on the packet's source address.
    pub src: Side,
    /// Conditions on the packet's destination address.
    pub dst: Side,
}

/// What went wrong while reading rule options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// A measurement that is not 64 hex digits.
    Hex(HexError),
    /// A category name that is empty, too long or has bad bytes.
    Category(CategoryError),
    /// A host that is not an address[/mask] of the rule's family.
    Host(HostError),
    /// The option was already given.
    Duplicate,
    /// The option has no value after it.
    MissingValue,
    /// A word that is not a seng option.
    UnknownOption,
    /// `!` not followed by an option.
    StrayNegation,
    /// None of the six options was given.
    NoOption,
}

/// An error while reading rule options, naming the option and the offending text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleError<'a> {
    /// The option concerned, when there is one.
    pub option: Option<SengOption>,
    /// The offending text (the value, or the unexpected word).
    pub text: &'a str,
    /// What is wrong.
    pub kind: RuleErrorKind,
}

impl fmt::Display for RuleError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(option) = self.option {
            write!(f, "{option}: ")?;
        }
        match self.kind {
            RuleErrorKind::Hex(e) => write!(f, "bad application measurement {:?}: {e}", self.text),
            RuleErrorKind::Category(e) => write!(f, "bad category {:?}: {e}", self.text),
            RuleErrorKind::Host(e) => write!(f, "bad host {:?}: {e}", self.text),
            RuleErrorKind::Duplicate => f.write_str("may be given only once"),
            RuleErrorKind::MissingValue => f.write_str("needs a value"),
            RuleErrorKind::UnknownOption => write!(f, "unknown seng option {:?}", self.text),
            RuleErrorKind::StrayNegation => f.write_str("\"!\" must be followed by a seng option"),
            RuleErrorKind::NoOption => f.write_str(
                "seng match needs at least one of --src-app, --src-cat, --src-host, --dst-app, \
                 --dst-cat, --dst-host",
            ),
        }
    }
}

impl core::error::Error for RuleError<'_> {}

impl Rule {
    /// A rule with no conditions (not valid until one is set, see [`Rule::check`]).
    pub const fn empty(family: Family) -> Rule {
        Rule { family, src: Side { app: None, cat: None, host: None }, dst: Side { app: None, cat: None, host: None } }
    }

    /// Sets one option from its value text, as `x6_parse` receives it. Rejects an option given
    /// twice.
    pub fn set<'a>(&mut self, option: SengOption, negated: bool, value: &'a str) -> Result<(), RuleError<'a>> {
        let err = |kind| RuleError { option: Some(option), text: value, kind };
        let family = self.family;
        let (side, what) = match option {
            SengOption::SrcApp => (&mut self.src, 0),
            SengOption::SrcCat => (&mut self.src, 1),
            SengOption::SrcHost => (&mut self.src, 2),
            SengOption::DstApp => (&mut self.dst, 0),
            SengOption::DstCat => (&mut self.dst, 1),
            SengOption::DstHost => (&mut self.dst, 2),
        };
        let taken = match what {
            0 => side.app.is_some(),
            1 => side.cat.is_some(),
            _ => side.host.is_some(),
        };
        if taken {
            return Err(err(RuleErrorKind::Duplicate));
        }
        match what {
            0 => {
                let m = Measurement::parse_hex(value).map_err(|e| err(RuleErrorKind::Hex(e)))?;
                side.app = Some(Cond { value: m, negated });
            }
            1 => {
                let c = Category::new(value.as_bytes()).map_err(|e| err(RuleErrorKind::Category(e)))?;
                side.cat = Some(Cond { value: c, negated });
            }
            _ => {
                let h = HostMask::parse(value, family).map_err(|e| err(RuleErrorKind::Host(e)))?;
                side.host = Some(Cond { value: h, negated });
            }
        }
        Ok(())
    }

    /// Checks the rule is complete: at least one option (`x6_fcheck`).
    pub fn check(&self) -> Result<(), RuleError<'static>> {
        if self.src.is_empty() && self.dst.is_empty() {
            return Err(RuleError { option: None, text: "", kind: RuleErrorKind::NoOption });
        }
        Ok(())
    }

    /// Parses seng option words, e.g. `["!", "--src-host", "10.0.0.0/26", "--src-cat", "Browser"]`.
    pub fn parse_args<'a, I>(args: I, family: Family) -> Result<Rule, RuleError<'a>>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut rule = Rule::empty(family);
        let mut words = args.into_iter();
        while let Some(word) = words.next() {
            let (negated, flag) = if word == "!" {
                match words.next() {
                    Some(flag) => (true, flag),
                    None => {
                        return Err(RuleError { option: None, text: word, kind: RuleErrorKind::StrayNegation })
                    }
                }
            } else {
                (false, word)
            };
            let Some(option) = SengOption::from_flag(flag) else {
                let kind = if negated { RuleErrorKind::StrayNegation } else { RuleErrorKind::UnknownOption };
                return Err(RuleError { option: None, text: flag, kind });
            };
            let Some(value) = words.next() else {
                return Err(RuleError { option: Some(option), text: "", kind: RuleErrorKind::MissingValue });
            };
            rule.set(option, negated, value)?;
        }
        rule.check()?;
        Ok(rule)
    }

    /// Parses whitespace-separated seng option text (no quoting; see [`Rule::parse_args`]).
    pub fn parse(text: &str, family: Family) -> Result<Rule, RuleError<'_>> {
        Rule::parse_args(text.split_ascii_whitespace(), family)
    }

    /// Display adapter for the `iptables-save` form, e.g. `--src-app HEX ! --src-host 10.0.0.0/26`
    /// (options in canonical order, no leading space).
    pub fn save_form(&self) -> SaveForm<'_> {
        SaveForm(self)
    }

    /// Display adapter for the `iptables -L` form, e.g. `seng src-app HEX ! src-host 10.0.0.0/26`.
    pub fn list_form(&self) -> ListForm<'_> {
        ListForm(self)
    }

    /// Visits the options present, in canonical order.
    fn for_each(&self, mut visit: impl FnMut(SengOption, bool, Value<'_>) -> fmt::Result) -> fmt::Result {
        for (side, options) in [
            (&self.src, [SengOption::SrcApp, SengOption::SrcCat, SengOption::SrcHost]),
            (&self.dst, [SengOption::DstApp, SengOption::DstCat, SengOption::DstHost]),
        ] {
            let [app, cat, host] = options;
            if let Some(c) = &side.app {
                visit(app, c.negated, Value::App(&c.value))?;
            }
            if let Some(c) = &side.cat {
                visit(cat, c.negated, Value::Cat(&c.value))?;
            }
            if let Some(c) = &side.host {
                visit(host, c.negated, Value::Host(&c.value))?;
            }
        }
        Ok(())
    }
}

enum Value<'a> {
    App(&'a Measurement),
    Cat(&'a Category),
    Host(&'a HostMask),
}

/// The `iptables-save` form of a rule; see [`Rule::save_form`].
pub struct SaveForm<'a>(&'a Rule);

impl fmt::Display for SaveForm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        self.0.for_each(|option, negated, value| {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            if negated {
                f.write_str("! ")?;
            }
            match value {
                Value::App(m) => write!(f, "{option} {m}"),
                Value::Cat(c) => write!(f, "{option} {}", c.save_form()),
                Value::Host(h) => write!(f, "{option} {h}"),
            }
        })
    }
}

/// The `iptables -L` form of a rule; see [`Rule::list_form`].
pub struct ListForm<'a>(&'a Rule);

impl fmt::Display for ListForm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("seng")?;
        self.0.for_each(|option, negated, value| {
            f.write_str(if negated { " ! " } else { " " })?;
            match value {
                Value::App(m) => write!(f, "{} {m}", option.name()),
                Value::Cat(c) => write!(f, "{} {}", option.name(), c.save_form()),
                Value::Host(h) => write!(f, "{} {}", option.name(), h.human()),
            }
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

    #[test]
    fn canonical_forms() {
        let cases: &[(&str, Family, &str, &str)] = &[
            (
                &["--src-app ", APP].concat(),
                Family::Ipv4,
                &["--src-app ", APP].concat(),
                &["seng src-app ", APP].concat(),
            ),
            ("! --src-host 10.0.0.0/26", Family::Ipv4, "! --src-host 10.0.0.0/26", "seng ! src-host 10.0.0.0/26"),
            (
                "--dst-host 10.0.0.7 --src-cat Browser ! --dst-cat Mail",
                Family::Ipv4,
                "--src-cat Browser ! --dst-cat Mail --dst-host 10.0.0.7/32",
                "seng src-cat Browser ! dst-cat Mail dst-host 10.0.0.7",
            ),
            ("--src-host 2001:db8::/32", Family::Ipv6, "--src-host 2001:db8::/32", "seng src-host 2001:db8::/32"),
        ];
        for (text, family, save, list) in cases {
            let rule = Rule::parse(text, *family).unwrap();
            assert_eq!(rule.save_form().to_string(), *save, "{text}");
            assert_eq!(rule.list_form().to_string(), *list, "{text}");
            assert_eq!(Rule::parse(save, *family), Ok(rule), "{save} reparses");
        }
    }

    #[test]
    fn errors_name_option_and_text() {
        let cases: &[(&str, &str)] = &[
            ("", "seng match needs at least one of"),
            ("--src-app abc", "--src-app: bad application measurement \"abc\": must be exactly 64 hex digits, found 3 characters"),
            ("--src-cat 123456789012345678901", "--src-cat: bad category \"123456789012345678901\": category name is 21 bytes"),
            ("--dst-host 10.0.0.1/40", "--dst-host: bad host \"10.0.0.1/40\": mask must be a prefix length 0-32"),
            ("--src-cat a --src-cat b", "--src-cat: may be given only once"),
            ("--src-cat", "--src-cat: needs a value"),
            ("--src-ip 1.2.3.4", "unknown seng option \"--src-ip\""),
            ("--src-cat a !", "\"!\" must be followed by a seng option"),
        ];
        for (text, want) in cases {
            let got = Rule::parse(text, Family::Ipv4).unwrap_err().to_string();
            assert!(got.starts_with(want), "{text:?}: got {got:?}");
        }
    }
}
