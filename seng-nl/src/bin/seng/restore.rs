// SPDX-License-Identifier: GPL-2.0-only
//! `seng restore`: reads a script, works out the table it describes, and swaps that table in
//! with one replace transaction.
//!
//! The script is applied line by line to an empty [`LocalTable`], seng-core's own table, so every
//! command (`enclave add/del`, `app cat add/del`, `flush`) means exactly what it means to the
//! module, and a line that cannot apply (deleting an address the script never added, say) is
//! reported with its file and line before the kernel is touched. The resulting table goes to the
//! module in batched REPLACE_ADD messages and is committed atomically.

use std::fs::File;
use std::io::{self, BufRead, BufReader};

use seng_core::script;
use seng_core::table::{LocalTable, MAX_CAPACITY};
use seng_nl::Enclave;

use crate::Failure;

/// Reads the script in `file` (`-`: standard input) into the table it describes.
pub fn read(file: &str) -> Result<LocalTable, Failure> {
    let (name, reader): (&str, Box<dyn BufRead>) = if file == "-" {
        ("<stdin>", Box::new(io::stdin().lock()))
    } else {
        let f = File::open(file).map_err(|e| Failure::Input(format!("cannot open {file}: {e}")))?;
        (file, Box::new(BufReader::with_capacity(1 << 20, f)))
    };
    apply(name, reader)
}

/// Applies every line of `reader` (named `name` in messages) to an empty table.
pub fn apply(name: &str, mut reader: impl BufRead) -> Result<LocalTable, Failure> {
    // The module enforces its own capacity when the table is staged.
    let mut table = LocalTable::new(MAX_CAPACITY).map_err(|e| Failure::Op(format!("cannot build the table: {e}")))?;
    let mut text = String::new();
    let mut line_no = 0;
    loop {
        text.clear();
        line_no += 1;
        match reader.read_line(&mut text) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Failure::Input(format!("{name}:{line_no}: cannot read: {e}"))),
        }
        // One line at a time keeps memory flat for million-line scripts.
        let lines = script::parse(&text).map_err(|mut e| {
            e.line = line_no;
            Failure::Input(format!("{name}:{e}"))
        })?;
        for line in lines {
            if line.at.is_some() {
                return Err(Failure::Input(format!(
                    "{name}:{line_no}: timed lines (@SECONDS) are for the simulator; restore takes plain commands"
                )));
            }
            line.command
                .apply(&mut table)
                .map_err(|e| Failure::Input(format!("{name}:{line_no}: {}: {e}", line.command)))?;
        }
    }
    Ok(table)
}

/// The enclaves of `table`, as the library registers them.
pub fn enclaves(table: &LocalTable) -> impl Iterator<Item = Enclave> + '_ {
    table.enclaves_from(0).map(|e| Enclave { addr: e.ip(), app: *e.app(), host: e.host(), categories: e.categories().to_vec() })
}

#[cfg(test)]
mod test {
    use super::*;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";
    const APP2: &str = "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792";

    fn lines(table: &LocalTable) -> Vec<String> {
        let mut out: Vec<_> = enclaves(table).map(|e| e.to_command().to_string()).collect();
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
        let table = apply("t", text.as_bytes()).unwrap();
        assert_eq!(
            lines(&table),
            [
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat Mail"),
                format!("enclave add 192.168.28.13 --app {APP2} --host 10.0.0.7 --cat \"Web Mail\""),
                format!("enclave add fd00::12 --app {APP2} --host fd00::1 --cat \"Web Mail\""),
            ]
        );
        let flushed = apply("t", format!("enclave add 10.0.0.1 --app {APP} --host 10.0.0.5\nflush\n").as_bytes()).unwrap();
        assert!(flushed.is_empty());
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
            let Err(Failure::Input(got)) = apply("f", text.as_bytes()) else { panic!("{text:?} accepted") };
            assert!(got.starts_with(want), "{text:?}:\n got {got}\nwant {want}");
        }
        let Err(Failure::Input(got)) = apply("f", &b"flush\n\xff\n"[..]) else { panic!("invalid UTF-8 accepted") };
        assert!(got.starts_with("f:2: cannot read"), "{got}");
    }
}
