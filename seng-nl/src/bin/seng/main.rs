// SPDX-License-Identifier: GPL-2.0-only
//! `seng`: the command-line front end of seng-nl (see `seng --help`).
//!
//! Exit status: 0 on success, 1 when an operation failed (the module refused it, the socket
//! failed), 2 on bad usage or bad input (clap's usage errors, unreadable or invalid scripts).

mod agent;
mod cli;
mod restore;

use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::process::ExitCode;

use clap::Parser;
use seng_nl::{Client, Error, EventStream, Operation, Origin, ReadScope, Registration, Stats};
use serde_json::json;

use cli::{AppCmd, CatCmd, Cli, Cmd, EnclaveCmd};

/// Why the command failed, which fixes the exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: exit status 2.
    Input(String),
    /// The operation failed: exit status 1.
    Op(String),
    /// Standard output was closed (`seng save | head`): stop quietly.
    ClosedOutput,
}

/// Prefixes a library error with what was being done.
fn op(context: impl std::fmt::Display) -> impl FnOnce(Error) -> Failure {
    move |e| Failure::Op(format!("{context}: {e}"))
}

fn connect() -> Result<Client, Failure> {
    Client::connect().map_err(|e| Failure::Op(e.to_string()))
}

fn written(result: io::Result<()>) -> Result<(), Failure> {
    result.map_err(|e| match e.kind() {
        io::ErrorKind::BrokenPipe => Failure::ClosedOutput,
        _ => Failure::Op(format!("cannot write to standard output: {e}")),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) | Err(Failure::ClosedOutput) => ExitCode::SUCCESS,
        Err(Failure::Op(msg)) => {
            eprintln!("seng: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Input(msg)) => {
            eprintln!("seng: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Cmd) -> Result<(), Failure> {
    let mut out = BufWriter::new(io::stdout().lock());
    match command {
        Cmd::Enclave { action: EnclaveCmd::Add { addr, app, host, categories, origin } } => {
            change(Operation::from(Registration { addr, app, host, categories, origin }), format_args!("enclave add {addr}"))?;
        }
        Cmd::Enclave { action: EnclaveCmd::Del { addr, origin } } => change(Operation::Unregister { origin, addrs: vec![addr] }, format_args!("enclave del {addr}"))?,
        Cmd::App { action: AppCmd::Cat { action: CatCmd::Add { app, category, origin } } } => {
            change(Operation::Attach { origin, app, categories: vec![category] }, format_args!("app cat add {app} {category}"))?;
        }
        Cmd::App { action: AppCmd::Cat { action: CatCmd::Del { app, category, origin } } } => {
            change(Operation::Detach { origin, app, categories: vec![category] }, format_args!("app cat del {app} {category}"))?;
        }
        Cmd::List { json, origin } => {
            let enclaves = sorted_table(origin)?;
            if json {
                let list: Vec<_> = enclaves.iter().map(enclave_json).collect();
                written(writeln!(out, "{}", serde_json::Value::Array(list)))?;
            } else {
                for e in &enclaves {
                    written(writeln!(out, "{e}"))?;
                }
            }
        }
        Cmd::Get { addr, json } => {
            let enclave = connect()?.get(addr).map_err(op(format_args!("get {addr}")))?;
            let enclave = enclave.ok_or_else(|| Failure::Op(format!("get {addr}: address is not a registered enclave")))?;
            match json {
                true => written(writeln!(out, "{}", enclave_json(&enclave)))?,
                false => written(writeln!(out, "{enclave}"))?,
            }
        }
        Cmd::Flush { origin } => change(Operation::Flush { origin }, "flush")?,
        Cmd::Save { origin } => {
            for e in sorted_table(origin)? {
                written(writeln!(out, "{}", Operation::from(e)))?;
            }
        }
        Cmd::Restore { file, origin, test: true } => {
            let table = restore::check(&file, &origin)?;
            let stats = table.stats();
            // The process ends here: freeing a million nodes one by one would be wasted work.
            std::mem::forget(table);
            written(writeln!(out, "{file}: a table of {} enclaves of {} applications", stats.enclaves, stats.apps))?;
        }
        Cmd::Restore { file, origin, test: false } => restore::restore(&file, &origin, &mut connect()?)?,
        Cmd::Monitor => monitor(&mut out)?,
        Cmd::Stats { json } => {
            let stats = connect()?.stats().map_err(op("stats"))?;
            print_stats(&mut out, &stats, json)?;
        }
        Cmd::Agent(args) => agent::run(args)?,
    }
    written(out.flush())
}

/// Performs `operation` on the module's live table; `context` names it in the error.
fn change(operation: Operation, context: impl std::fmt::Display) -> Result<(), Failure> {
    connect()?.apply(&operation).map_err(op(context))
}

/// The table (every origin's entries, or `origin`'s) from one consistent dump, sorted by origin
/// (the local one first) and address so output is stable.
fn sorted_table(origin: Option<Origin>) -> Result<Vec<Registration>, Failure> {
    let scope = origin.map_or(ReadScope::Every, ReadScope::Origin);
    let dump = connect()?.dump_scope(&scope).map_err(op("list"))?;
    let mut enclaves = dump.iter().collect::<Result<Vec<_>, _>>().map_err(op("list"))?;
    // IpAddr's order (IPv4 first) from a key that is cheap to compare, without moving whole
    // enclaves on every step of the sort.
    enclaves.sort_by_cached_key(|e| match e.addr {
        IpAddr::V4(a) => (e.origin, false, u128::from(a.to_bits())),
        IpAddr::V6(a) => (e.origin, true, a.to_bits()),
    });
    Ok(enclaves)
}

fn enclave_json(e: &Registration) -> serde_json::Value {
    let categories: Vec<&str> = e.categories.iter().map(|c| c.as_str()).collect();
    json!({ "addr": e.addr, "app": e.app.to_string(), "host": e.host, "categories": categories, "origin": e.origin.to_string() })
}

fn print_stats(out: &mut impl Write, s: &Stats, json: bool) -> Result<(), Failure> {
    if json {
        let value = json!({ "enclaves": s.enclaves, "apps": s.apps, "capacity": s.capacity, "slots": s.slots, "generation": s.generation });
        return written(writeln!(out, "{value}"));
    }
    let rows = [("enclaves", s.enclaves), ("apps", s.apps), ("capacity", s.capacity), ("slots", s.slots), ("generation", s.generation)];
    rows.iter().try_for_each(|(name, value)| written(writeln!(out, "{name} {value}")))
}

/// Prints events until interrupted, one flushed line each, from a tokio stream.
fn monitor(out: &mut impl Write) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Failure::Op(format!("cannot start the event loop: {e}")))?;
    // Events go only to listeners with CAP_NET_ADMIN. Where the kernel cannot refuse the join
    // (5.10) an unprivileged monitor would wait for nothing: ask for the capability up front,
    // with the message every other command gives.
    connect()?.stats().map_err(op("monitor"))?;
    runtime.block_on(async {
        let mut events = EventStream::connect().map_err(op("monitor"))?;
        loop {
            let next = std::future::poll_fn(|cx| futures_core::Stream::poll_next(std::pin::Pin::new(&mut events), cx)).await;
            match next {
                Some(Ok(event)) => {
                    written(writeln!(out, "{event}"))?;
                    written(out.flush())?;
                }
                Some(Err(e)) => return Err(Failure::Op(format!("monitor: {e}"))),
                None => return Ok(()),
            }
        }
    })
}

#[cfg(test)]
mod test {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn json_and_stats_shapes() {
        let e = Registration {
            addr: "192.168.28.10".parse::<IpAddr>().unwrap(),
            app: seng_nl::Measurement([0xd9; 32]),
            host: "fd00::5".parse().unwrap(),
            categories: vec!["Web \"Mail\"".parse().unwrap()],
            origin: "gw-b".parse().unwrap(),
        };
        assert_eq!(
            enclave_json(&e).to_string(),
            format!(r#"{{"addr":"192.168.28.10","app":"{}","categories":["Web \"Mail\""],"host":"fd00::5","origin":"gw-b"}}"#, "d9".repeat(32))
        );
        assert_eq!(e.to_string(), format!("192.168.28.10 app {} host fd00::5 cat \"Web \\\"Mail\\\"\" origin gw-b", "d9".repeat(32)));
        let mut text = Vec::new();
        print_stats(&mut text, &Stats { enclaves: 3, apps: 2, capacity: 8, slots: 16, generation: 9 }, false).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "enclaves 3\napps 2\ncapacity 8\nslots 16\ngeneration 9\n");
    }
}
