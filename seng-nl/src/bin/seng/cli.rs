// SPDX-License-Identifier: GPL-2.0-only
//! The `seng` command line: subcommands in the style of `ip` and `ipset`, parsed by clap.

use std::net::IpAddr;

use clap::{Parser, Subcommand};
use seng_nl::{Category, Measurement, Origin};

/// Manage seng's enclave table: which attested application (and untrusted host) each enclave
/// address belongs to, for `iptables -m seng` rules.
#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "seng",
    version,
    after_help = "Every entry has an origin: the local SENG server (`local`, what a command means\n\
                  without --origin) or the gateway it came from. A command changes only its\n\
                  origin's entries; list, get and save show every origin's.\n\n\
                  Exit status: 0 on success, 1 when the operation failed, 2 on bad usage or input.\n\
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
    /// List every registered enclave, one per line (or as JSON), with its origin unless local.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Only this origin's enclaves (`local` or a gateway's name).
        #[arg(long, value_name = "NAME", value_parser = parse_origin)]
        origin: Option<Origin>,
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
    /// Unregister every enclave of an origin, by default the local ones (their connections end).
    Flush {
        /// Whose enclaves: `local` or a gateway's name.
        #[arg(long, value_name = "NAME", value_parser = parse_origin, default_value = "local")]
        origin: Origin,
    },
    /// Print the table as a script that `seng restore` reads back.
    Save {
        /// Only this origin's part (`local` or a gateway's name).
        #[arg(long, value_name = "NAME", value_parser = parse_origin)]
        origin: Option<Origin>,
    },
    /// Replace parts of the table atomically with what a script describes: the part of
    /// --origin (the local part by default) and of every origin the script's lines name; the
    /// other origins' entries stay.
    Restore {
        /// The script (`seng save` output); `-` or nothing for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// An origin whose part is replaced even if no line names it.
        #[arg(long, value_name = "NAME", value_parser = parse_origin, default_value = "local")]
        origin: Origin,
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
    /// Share the table with other gateways through etcd: publish the local part, apply the
    /// others' parts (see "Several gateways" in README.md).
    Agent(AgentArgs),
}

/// `seng agent`: one per gateway (network namespace), for as long as the gateway runs.
#[derive(clap::Args, Debug, PartialEq)]
#[command(after_help = "Keys: <prefix><name>/owner, <prefix><name>/enclave/<addr> = {\"app\":HEX,\"host\":ADDR},\n\
                        <prefix><name>/app/<HEX> = {\"categories\":[..]}, all on the agent's lease. Remote\n\
                        entries are installed with the publishing gateway's name as their origin; a\n\
                        local entry always wins. Without contact to etcd for the lease's time the\n\
                        remote entries are removed (fail closed). SIGTERM or SIGINT revokes the lease\n\
                        and removes the remote entries.")]
pub struct AgentArgs {
    /// This gateway's name, the origin its entries have at the other gateways.
    #[arg(long, value_name = "NAME", value_parser = parse_gateway)]
    pub name: seng_nl::GatewayName,
    /// etcd endpoints, comma-separated (`http://HOST:PORT`, or `https://` for TLS).
    #[arg(long, value_name = "URL,..", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// The key prefix shared by all gateways (must end with `/`).
    #[arg(long, value_name = "PREFIX", default_value = "/seng/v1/", value_parser = parse_prefix)]
    pub prefix: String,
    /// Seconds the agent's entries outlive its last contact with etcd.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=3600))]
    pub lease_ttl: u16,
    /// The network namespace (`ip netns` name) whose table the agent serves, entered before any
    /// socket is opened (etcd is then reached from inside it too).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// CA certificate (PEM) to verify etcd's server certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<String>,
    /// Client certificate (PEM) for etcd's client-certificate authentication.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<String>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<String>,
    /// etcd user name for password authentication.
    #[arg(long, value_name = "USER", requires = "password_file")]
    pub user: Option<String>,
    /// File holding the user's password (its first line).
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<String>,
    /// File the agent keeps its status in, as JSON (rewritten atomically when it changes).
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<String>,
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
        /// Whose entry it is: `local` or a gateway's name.
        #[arg(long, value_name = "NAME", value_parser = parse_origin, default_value = "local")]
        origin: Origin,
    },
    /// Unregister an enclave (its connections end).
    Del {
        /// The enclave's address.
        #[arg(value_name = "ADDR")]
        addr: IpAddr,
        /// Whose entry it is: `local` or a gateway's name.
        #[arg(long, value_name = "NAME", value_parser = parse_origin, default_value = "local")]
        origin: Origin,
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
        /// Whose application it is: `local` or a gateway's name.
        #[arg(long, value_name = "NAME", value_parser = parse_origin, default_value = "local")]
        origin: Origin,
    },
    /// Detach a category from an application.
    Del {
        /// The application measurement: 64 hex digits.
        #[arg(value_name = "HEX", value_parser = parse_app)]
        app: Measurement,
        /// The category.
        #[arg(value_name = "NAME", value_parser = parse_category)]
        category: Category,
        /// Whose application it is: `local` or a gateway's name.
        #[arg(long, value_name = "NAME", value_parser = parse_origin, default_value = "local")]
        origin: Origin,
    },
}

fn parse_app(text: &str) -> Result<Measurement, String> {
    Measurement::parse_hex(text).map_err(|e| e.to_string())
}

fn parse_category(text: &str) -> Result<Category, String> {
    Category::new(text.as_bytes()).map_err(|e| e.to_string())
}

fn parse_gateway(text: &str) -> Result<seng_nl::GatewayName, String> {
    match parse_origin(text)? {
        Origin::Gateway(name) => Ok(name),
        Origin::Local => Err("`local` is the local SENG server's origin, not a gateway's name".into()),
    }
}

fn parse_prefix(text: &str) -> Result<String, String> {
    match text.ends_with('/') {
        true => Ok(text.to_owned()),
        false => Err(format!("the prefix {text:?} must end with `/`")),
    }
}

fn parse_origin(text: &str) -> Result<Origin, String> {
    text.parse().map_err(|e: seng_nl::GatewayNameError| e.to_string())
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
        let gw: Origin = "gw-b".parse().unwrap();
        let cases: Vec<(String, Cmd)> = vec![
            (
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5"),
                Cmd::Enclave { action: EnclaveCmd::Add { addr: "192.168.28.10".parse().unwrap(), app, host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: Origin::Local } },
            ),
            (
                format!("enclave add 192.168.28.10 --origin gw-b --app {APP} --host 10.0.0.5"),
                Cmd::Enclave { action: EnclaveCmd::Add { addr: "192.168.28.10".parse().unwrap(), app, host: "10.0.0.5".parse().unwrap(), categories: vec![], origin: gw } },
            ),
            (
                format!("enclave add fd00:28::10 --cat Browser --host 2001:db8::5 --app {} --cat Mail", APP.to_uppercase()),
                Cmd::Enclave {
                    action: EnclaveCmd::Add {
                        addr: "fd00:28::10".parse().unwrap(),
                        app,
                        host: "2001:db8::5".parse().unwrap(),
                        categories: vec![cat("Browser"), cat("Mail")],
                        origin: Origin::Local,
                    },
                },
            ),
            ("enclave del 192.168.28.10".into(), Cmd::Enclave { action: EnclaveCmd::Del { addr: "192.168.28.10".parse().unwrap(), origin: Origin::Local } }),
            ("enclave del 192.168.28.10 --origin gw-b".into(), Cmd::Enclave { action: EnclaveCmd::Del { addr: "192.168.28.10".parse().unwrap(), origin: gw } }),
            (format!("app cat add {APP} Browser"), Cmd::App { action: AppCmd::Cat { action: CatCmd::Add { app, category: cat("Browser"), origin: Origin::Local } } }),
            (format!("app cat del {APP} Browser --origin gw-b"), Cmd::App { action: AppCmd::Cat { action: CatCmd::Del { app, category: cat("Browser"), origin: gw } } }),
            ("list".into(), Cmd::List { json: false, origin: None }),
            ("list --json --origin local".into(), Cmd::List { json: true, origin: Some(Origin::Local) }),
            ("get 10.1.1.1 --json".into(), Cmd::Get { addr: "10.1.1.1".parse().unwrap(), json: true }),
            ("flush".into(), Cmd::Flush { origin: Origin::Local }),
            ("flush --origin gw-b".into(), Cmd::Flush { origin: gw }),
            ("save".into(), Cmd::Save { origin: None }),
            ("save --origin gw-b".into(), Cmd::Save { origin: Some(gw) }),
            ("restore".into(), Cmd::Restore { file: "-".into(), origin: Origin::Local, test: false }),
            ("restore /tmp/table".into(), Cmd::Restore { file: "/tmp/table".into(), origin: Origin::Local, test: false }),
            ("restore --test /tmp/table --origin gw-b".into(), Cmd::Restore { file: "/tmp/table".into(), origin: gw, test: true }),
            ("monitor".into(), Cmd::Monitor),
            ("stats".into(), Cmd::Stats { json: false }),
            (
                "agent --name gw-a --etcd http://10.77.0.1:2379,http://10.77.0.2:2379 --lease-ttl 3 --netns gw-a --status-file /run/s.json".into(),
                Cmd::Agent(AgentArgs {
                    name: seng_nl::GatewayName::new(b"gw-a").unwrap(),
                    etcd: vec!["http://10.77.0.1:2379".into(), "http://10.77.0.2:2379".into()],
                    prefix: "/seng/v1/".into(),
                    lease_ttl: 3,
                    netns: Some("gw-a".into()),
                    ca: None,
                    cert: None,
                    key: None,
                    user: None,
                    password_file: None,
                    status_file: Some("/run/s.json".into()),
                }),
            ),
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
            ("flush --origin gw/b".into(), ErrorKind::ValueValidation, "at byte 3"),
            ("enclave del 10.0.0.1 --origin".into(), ErrorKind::InvalidValue, "--origin"),
            ("list --origin -x".into(), ErrorKind::UnknownArgument, "-x"),
            ("firewall".into(), ErrorKind::InvalidSubcommand, "firewall"),
            ("agent --etcd http://e:2379".into(), ErrorKind::MissingRequiredArgument, "--name"),
            ("agent --name gw-a".into(), ErrorKind::MissingRequiredArgument, "--etcd"),
            ("agent --name local --etcd http://e:2379".into(), ErrorKind::ValueValidation, "not a gateway's name"),
            ("agent --name gw-a --etcd http://e:2379 --prefix /seng".into(), ErrorKind::ValueValidation, "must end with `/`"),
            ("agent --name gw-a --etcd http://e:2379 --lease-ttl 1".into(), ErrorKind::ValueValidation, "2..=3600"),
            ("agent --name gw-a --etcd http://e:2379 --cert c.pem".into(), ErrorKind::MissingRequiredArgument, "--key"),
            ("agent --name gw-a --etcd http://e:2379 --user u".into(), ErrorKind::MissingRequiredArgument, "--password-file"),
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
