// SPDX-License-Identifier: GPL-2.0-only
//! The `seng` command line: subcommands in the style of `ip` and `ipset`, parsed by clap.

use std::net::IpAddr;

use clap::{Parser, Subcommand};
use seng_nl::{Category, Measurement};

/// Manage seng's enclave table: which attested application (and untrusted host) each enclave
/// address belongs to, for `iptables -m seng` rules.
#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "seng",
    version,
    after_help = "Exit status: 0 on success, 1 when the operation failed, 2 on bad usage or input.\n\
                  Every command needs CAP_NET_ADMIN."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Subcommand, Debug, PartialEq)]
pub enum Cmd {
    /// Register or unregister an enclave.
    Enclave {
        /// add or del.
        #[command(subcommand)]
        action: EnclaveCmd,
    },
    /// Attach categories to an application or detach them.
    App {
        /// cat.
        #[command(subcommand)]
        action: AppCmd,
    },
    /// List every registered enclave, one per line (or as JSON).
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show the enclave registered at an address.
    Get {
        /// The enclave's address.
        #[arg(value_name = "ADDR")]
        addr: IpAddr,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Unregister every enclave (their connections end).
    Flush,
    /// Print the table as a script that `seng restore` reads back.
    Save,
    /// Replace the whole table atomically with what a script describes.
    Restore {
        /// The script (`seng save` output); `-` or nothing for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Only read and check the script and say what table it describes; the module is not
        /// needed and not touched (as `iptables-restore --test`).
        #[arg(long, short)]
        test: bool,
    },
    /// Print every change of the table as a script line, as it happens.
    Monitor,
    /// Show the table's counters.
    Stats {
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `seng enclave ...`.
#[derive(Subcommand, Debug, PartialEq)]
pub enum EnclaveCmd {
    /// Register an enclave, or change its application or host (its connections then end).
    Add {
        /// The enclave's address (IPv4 or IPv6).
        #[arg(value_name = "ADDR")]
        addr: IpAddr,
        /// The application measurement (MRENCLAVE): 64 hex digits.
        #[arg(long, value_name = "HEX", value_parser = parse_app)]
        app: Measurement,
        /// The untrusted host the enclave runs on.
        #[arg(long, value_name = "ADDR")]
        host: IpAddr,
        /// A category to attach to the application (repeatable).
        #[arg(long = "cat", value_name = "NAME", value_parser = parse_category)]
        categories: Vec<Category>,
    },
    /// Unregister an enclave (its connections end).
    Del {
        /// The enclave's address.
        #[arg(value_name = "ADDR")]
        addr: IpAddr,
    },
}

/// `seng app ...`.
#[derive(Subcommand, Debug, PartialEq)]
pub enum AppCmd {
    /// Categories of an application.
    Cat {
        /// add or del.
        #[command(subcommand)]
        action: CatCmd,
    },
}

/// `seng app cat ...`.
#[derive(Subcommand, Debug, PartialEq)]
pub enum CatCmd {
    /// Attach a category to an application that has a registered enclave.
    Add {
        /// The application measurement: 64 hex digits.
        #[arg(value_name = "HEX", value_parser = parse_app)]
        app: Measurement,
        /// The category (1-20 bytes).
        #[arg(value_name = "NAME", value_parser = parse_category)]
        category: Category,
    },
    /// Detach a category from an application.
    Del {
        /// The application measurement: 64 hex digits.
        #[arg(value_name = "HEX", value_parser = parse_app)]
        app: Measurement,
        /// The category.
        #[arg(value_name = "NAME", value_parser = parse_category)]
        category: Category,
    },
}

fn parse_app(text: &str) -> Result<Measurement, String> {
    Measurement::parse_hex(text).map_err(|e| e.to_string())
}

fn parse_category(text: &str) -> Result<Category, String> {
    Category::new(text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod test {
    use clap::error::ErrorKind;

    use super::*;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

    fn parse(line: &str) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("seng").chain(line.split_whitespace())).map(|c| c.command)
    }

    #[test]
    fn parses_each_command() {
        let app = Measurement::parse_hex(APP).unwrap();
        let cat = |n: &str| Category::new(n.as_bytes()).unwrap();
        let cases: Vec<(String, Cmd)> = vec![
            (
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5"),
                Cmd::Enclave { action: EnclaveCmd::Add { addr: "192.168.28.10".parse().unwrap(), app, host: "10.0.0.5".parse().unwrap(), categories: vec![] } },
            ),
            (
                format!("enclave add fd00:28::10 --cat Browser --host 2001:db8::5 --app {} --cat Mail", APP.to_uppercase()),
                Cmd::Enclave {
                    action: EnclaveCmd::Add { addr: "fd00:28::10".parse().unwrap(), app, host: "2001:db8::5".parse().unwrap(), categories: vec![cat("Browser"), cat("Mail")] },
                },
            ),
            ("enclave del 192.168.28.10".into(), Cmd::Enclave { action: EnclaveCmd::Del { addr: "192.168.28.10".parse().unwrap() } }),
            (format!("app cat add {APP} Browser"), Cmd::App { action: AppCmd::Cat { action: CatCmd::Add { app, category: cat("Browser") } } }),
            (format!("app cat del {APP} Browser"), Cmd::App { action: AppCmd::Cat { action: CatCmd::Del { app, category: cat("Browser") } } }),
            ("list".into(), Cmd::List { json: false }),
            ("list --json".into(), Cmd::List { json: true }),
            ("get 10.1.1.1 --json".into(), Cmd::Get { addr: "10.1.1.1".parse().unwrap(), json: true }),
            ("flush".into(), Cmd::Flush),
            ("save".into(), Cmd::Save),
            ("restore".into(), Cmd::Restore { file: "-".into(), test: false }),
            ("restore /tmp/table".into(), Cmd::Restore { file: "/tmp/table".into(), test: false }),
            ("restore --test /tmp/table".into(), Cmd::Restore { file: "/tmp/table".into(), test: true }),
            ("monitor".into(), Cmd::Monitor),
            ("stats".into(), Cmd::Stats { json: false }),
        ];
        for (line, want) in cases {
            assert_eq!(parse(&line).unwrap_or_else(|e| panic!("{line}: {e}")), want, "{line}");
        }
    }

    #[test]
    fn refuses_bad_input_naming_it() {
        // (command line, clap error kind, text the message must contain)
        let cases: Vec<(String, ErrorKind, &str)> = vec![
            (format!("enclave add 192.168.28.300 --app {APP} --host 10.0.0.5"), ErrorKind::ValueValidation, "192.168.28.300"),
            ("enclave add 192.168.28.10 --app abc --host 10.0.0.5".into(), ErrorKind::ValueValidation, "must be exactly 64 hex digits"),
            (format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat 123456789012345678901"), ErrorKind::ValueValidation, "at most 20"),
            (format!("enclave add 192.168.28.10 --app {APP}"), ErrorKind::MissingRequiredArgument, "--host"),
            ("enclave add 192.168.28.10 --host 10.0.0.5".into(), ErrorKind::MissingRequiredArgument, "--app"),
            (format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --app {APP}"), ErrorKind::ArgumentConflict, "--app"),
            ("enclave del".into(), ErrorKind::MissingRequiredArgument, "<ADDR>"),
            ("enclave remove 10.0.0.1".into(), ErrorKind::InvalidSubcommand, "remove"),
            (format!("app cat add {APP}"), ErrorKind::MissingRequiredArgument, "<NAME>"),
            ("app cat add 12 Browser".into(), ErrorKind::ValueValidation, "found 2 characters"),
            ("get".into(), ErrorKind::MissingRequiredArgument, "<ADDR>"),
            ("list --xml".into(), ErrorKind::UnknownArgument, "--xml"),
            ("flush now".into(), ErrorKind::UnknownArgument, "now"),
            ("firewall".into(), ErrorKind::InvalidSubcommand, "firewall"),
        ];
        for (line, kind, text) in cases {
            let e = parse(&line).expect_err(&line);
            assert_eq!(e.kind(), kind, "{line}: {e}");
            assert!(e.to_string().contains(text), "{line}: {e}");
            assert_eq!(e.exit_code(), 2, "{line}");
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
