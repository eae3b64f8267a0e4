// SPDX-License-Identifier: GPL-2.0-only
//! `seng restore`: reads a script and puts the parts of the table it describes in place with one
//! replace transaction: the part of `--origin` (the local part unless given) and the part of
//! every origin a line names (`--origin NAME`); the other origins' entries stay. A script
//! without origins, what every `seng save` before origins wrote, replaces the local part, as
//! restoring it always did.
//!
//! The script streams into the module's staging table as it is read: each command becomes the
//! same operation on the staging table (`enclave add/del`, `app cat add/del`, `flush`), so it
//! means exactly what it means on the live table, and memory stays flat however long the script
//! is. A line that does not parse, or that the module refuses (deleting an address the script
//! never added, say), is reported with its file and line; the transaction is then aborted and the
//! live table is untouched. `--test` runs the same replace transaction through seng-core's
//! request engine on a table in user space instead, so it checks a script without the module.

use std::fs::File;
use std::io::{self, BufRead, BufReader};

use seng_core::genl::{cmd, Scoped};
use seng_core::operation::Dialect;
use seng_core::script;
use seng_core::table::{LocalTable, MAX_CAPACITY};
use seng_nl::{Client, Error, Operation, Origin, ReplaceError};

use crate::Failure;

/// A script source: its name for messages and its lines.
struct Script {
    name: String,
    reader: Box<dyn BufRead>,
}

impl Script {
    /// Opens `file` (`-`: standard input).
    fn open(file: &str) -> Result<Script, Failure> {
        if file == "-" {
            return Ok(Script { name: "<stdin>".into(), reader: Box::new(io::stdin().lock()) });
        }
        let f = File::open(file).map_err(|e| Failure::Input(format!("cannot open {file}: {e}")))?;
        Ok(Script { name: file.into(), reader: Box::new(BufReader::with_capacity(1 << 20, f)) })
    }

    /// Calls `each(line_no, operation)` for every line's operation, in order, one line at a time
    /// (memory stays flat for million-line scripts). Stops at the first error.
    fn each_operation(&mut self, mut each: impl FnMut(usize, Operation) -> Result<(), Failure>) -> Result<(), Failure> {
        let name = &self.name;
        let mut text = String::new();
        let mut line_no = 0;
        loop {
            text.clear();
            line_no += 1;
            match self.reader.read_line(&mut text) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(Failure::Input(format!("{name}:{line_no}: cannot read: {e}"))),
            }
            let line = match text.strip_suffix('\n') {
                Some(line) => line.strip_suffix('\r').unwrap_or(line),
                None => &text,
            };
            let Some(line) = script::parse_line(line, line_no).map_err(|e| Failure::Input(format!("{name}:{e}")))? else {
                continue;
            };
            if line.at.is_some() {
                return Err(Failure::Input(format!(
                    "{name}:{line_no}: timed lines (@SECONDS) are for the simulator; restore takes plain commands"
                )));
            }
            each(line_no, line.operation)?;
        }
    }
}

/// Applies the script in `file` to an empty table in user space (`restore --test`), replacing
/// the part of `origin` and those the script names.
pub fn check(file: &str, origin: &Origin) -> Result<LocalTable, Failure> {
    apply(Script::open(file)?, origin)
}

fn apply(mut script: Script, origin: &Origin) -> Result<LocalTable, Failure> {
    // The module enforces its own capacity when the table is staged.
    let mut table = LocalTable::new(MAX_CAPACITY).map_err(|e| Failure::Op(format!("cannot build the table: {e}")))?;
    let name = script.name.clone();
    // The module's own steps, as `restore` drives them: one replace transaction that each
    // command changes as it changes the live table, then its commit.
    let step = |table: &mut LocalTable, command: u8, payload: &[u8]| Scoped::parse(command, payload).and_then(|request| table.execute(request).map(drop));
    let unexpected = |e| Failure::Op(format!("{name}: the table refused to {e}"));
    let (begin, scope) = Operation::Flush { origin: *origin }.to_request(Dialect::Staged).map_err(|e| unexpected(format!("start: {e}")))?;
    step(&mut table, begin, &scope).map_err(|e| unexpected(format!("start: {e}")))?;
    let mut payload = Vec::new();
    script.each_operation(|line_no, operation| {
        let refused = |e: &dyn std::fmt::Display| Failure::Input(format!("{name}:{line_no}: {operation}: {e}"));
        let staged = operation.emit_into(Dialect::Staged, &mut payload).map_err(|e| refused(&e))?;
        step(&mut table, staged, &payload).map_err(|e| refused(&e))
    })?;
    step(&mut table, cmd::REPLACE_COMMIT, &[]).map_err(|e| unexpected(format!("commit: {e}")))?;
    Ok(table)
}

/// Replaces the part of the module's table of `origin`, and of every origin the script in `file`
/// names, with what the script describes.
pub fn restore(file: &str, origin: &Origin, client: &mut Client) -> Result<(), Failure> {
    stream(Script::open(file)?, origin, client)
}

fn stream(mut script: Script, origin: &Origin, client: &mut Client) -> Result<(), Failure> {
    let mut replace = client.begin_replace_of(origin).map_err(|e| Failure::Op(format!("restore: {e}")))?;
    // The script line of each operation, to name the line of a refused one.
    let mut op_lines: Vec<usize> = Vec::new();
    let name = script.name.clone();
    // On any failure the transaction is dropped, which aborts it.
    script.each_operation(|line_no, operation| {
        op_lines.push(line_no);
        // A script line is one item: one operation in the transaction's numbering.
        replace.apply(&operation).map_err(|e| refusal(&name, &op_lines, e))
    })?;
    replace.commit().map_err(|e| match e {
        // The module refused the commit itself (an address a gateway's entry may not take).
        Error::Kernel(k) => Failure::Op(format!("{name}: the module refused the commit: {k}; the live table is unchanged")),
        e => refusal(&name, &op_lines, e),
    })
}

/// Names the script line of a refused operation. A refusal that names something the table lacks
/// is the script's fault (exit status 2); anything else is the module's or the system's (1).
fn refusal(name: &str, op_lines: &[usize], e: Error) -> Failure {
    let Error::Replace(ReplaceError { ops, error }) = &e else {
        return Failure::Op(format!("restore: {e}"));
    };
    let first = op_lines.get(ops.start).copied().unwrap_or_default();
    let last = op_lines.get(ops.end.saturating_sub(1)).copied().unwrap_or(first);
    let place = match first == last {
        true => format!("{name}:{first}"),
        false => format!("{name}:{first}-{last}"),
    };
    let text = format!("{place}: {error}; the live table is unchanged");
    match error.errno {
        libc::ENOENT => Failure::Input(text),
        _ => Failure::Op(text),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";
    const APP2: &str = "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792";

    fn script(text: &str) -> Script {
        Script { name: "f".into(), reader: Box::new(io::Cursor::new(text.as_bytes().to_vec())) }
    }

    fn lines(table: &LocalTable) -> Vec<String> {
        let mut out: Vec<_> = table
            .enclaves_from(0)
            .map(|e| {
                let origin = table.origin(e.origin());
                Operation::from(seng_nl::Registration { addr: e.addr(), app: *e.app(), host: e.host(), categories: e.categories().to_vec(), origin }).to_string()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn folds_a_script_into_the_table_it_describes() {
        let text = format!(
            "# saved\n\
             enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat Browser\n\
             enclave add 192.168.28.11 --app {APP} --host 10.0.0.6\n\
             enclave add fd00::12 --app {APP2} --host fd00::1\n\
             app cat add {APP} Mail\n\
             enclave del 192.168.28.11\n\
             app cat del {APP} Browser\n\
             seng enclave add 192.168.28.13 --app {APP2} --host 10.0.0.7 --cat \"Web Mail\"\n"
        );
        let table = apply(script(&text), &Origin::Local).unwrap();
        assert_eq!(
            lines(&table),
            [
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat Mail"),
                format!("enclave add 192.168.28.13 --app {APP2} --host 10.0.0.7 --cat \"Web Mail\""),
                format!("enclave add fd00::12 --app {APP2} --host fd00::1 --cat \"Web Mail\""),
            ]
        );
        let flushed = apply(script(&format!("enclave add 10.0.0.1 --app {APP} --host 10.0.0.5\nflush\n")), &Origin::Local).unwrap();
        assert!(flushed.is_empty());
    }

    #[test]
    fn restores_the_parts_of_every_origin_it_names() {
        let text = format!(
            "enclave add 10.0.0.1 --app {APP} --host 10.0.0.5 --cat Browser\n\
             enclave add 10.0.0.2 --app {APP} --host 10.0.0.5 --origin gw-b\n\
             app cat add {APP} Mail --origin gw-b\n\
             enclave add 10.0.0.3 --app {APP2} --host 10.0.0.6 --origin gw-c\n\
             flush --origin gw-c\n"
        );
        let table = apply(script(&text), &Origin::Local).unwrap();
        assert_eq!(
            lines(&table),
            [
                format!("enclave add 10.0.0.1 --app {APP} --host 10.0.0.5 --cat Browser"),
                format!("enclave add 10.0.0.2 --app {APP} --host 10.0.0.5 --cat Mail --origin gw-b"),
            ]
        );
        let cases = [
            // A gateway's entry never replaces a local one, in a script as anywhere.
            (format!("enclave add 10.0.0.1 --app {APP} --host 10.0.0.5\nenclave add 10.0.0.1 --app {APP} --host 10.0.0.5 --origin gw-b\n"), "f:2: enclave add 10.0.0.1"),
            ("enclave del 10.0.0.1 --origin gw-b\n".to_string(), "f:1: enclave del 10.0.0.1 --origin gw-b: address is not a registered enclave"),
        ];
        for (text, want) in cases {
            let Err(Failure::Input(got)) = apply(script(&text), &"gw-b".parse().unwrap()) else { panic!("{text:?} accepted") };
            assert!(got.starts_with(want), "{text:?}:\n got {got}\nwant {want}");
        }
    }

    #[test]
    fn names_file_and_line_of_bad_input() {
        let cases: Vec<(String, &str)> = vec![
            (format!("\nenclave add 10.0.0.1 --app {APP} --host 10.0.0.300\n"), "f:2:100: bad address \"10.0.0.300\""),
            ("flush\n\nenclave del 10.0.0.1\n".into(), "f:3: enclave del 10.0.0.1: address is not a registered enclave"),
            (format!("app cat add {APP} Mail\n"), "f:1: app cat add"),
            ("@1 flush\n".into(), "f:1: timed lines (@SECONDS) are for the simulator"),
            ("enclave add\n".into(), "f:1:12: missing the enclave address"),
        ];
        for (text, want) in cases {
            let Err(Failure::Input(got)) = apply(script(&text), &Origin::Local) else { panic!("{text:?} accepted") };
            assert!(got.starts_with(want), "{text:?}:\n got {got}\nwant {want}");
        }
        let bytes = Script { name: "f".into(), reader: Box::new(&b"flush\n\xff\n"[..]) };
        let Err(Failure::Input(got)) = apply(bytes, &Origin::Local) else { panic!("invalid UTF-8 accepted") };
        assert!(got.starts_with("f:2: cannot read"), "{got}");
    }

    #[test]
    fn refusals_name_the_script_line() {
        let refused = |ops, errno| Error::Replace(ReplaceError { ops, error: seng_nl::KernelError { errno, message: Some("why".into()), offset: None } });
        let op_lines = [1, 2, 4, 5, 9];
        let Failure::Input(text) = refusal("f", &op_lines, refused(2..3, libc::ENOENT)) else { panic!("a missing address is the script's fault") };
        assert_eq!(text, "f:4: not found: why; the live table is unchanged");
        let Failure::Op(text) = refusal("f", &op_lines, refused(1..5, libc::ENOSPC)) else { panic!("a full table is the module's refusal") };
        assert!(text.starts_with("f:2-9: no room: why"), "{text}");
        let Failure::Op(text) = refusal("f", &op_lines, Error::PermissionDenied) else { panic!() };
        assert!(text.starts_with("restore: permission denied"), "{text}");
    }
}
