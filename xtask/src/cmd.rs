// SPDX-License-Identifier: GPL-2.0-only
//! Running external programs so that a failure names the command line, its exit status and the
//! tail of what it printed.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// How many trailing output lines an error message carries.
const TAIL_LINES: usize = 40;

/// A command line to run, remembered in printable form for error messages.
pub struct Cmd {
    command: Command,
    shown: String,
}

impl Cmd {
    /// Starts a command line with `program`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Cmd {
            command: Command::new(program),
            shown: quote(program),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(' ');
        self.shown.push_str(&quote(arg.as_ref()));
        self.command.arg(arg);
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    /// Sets an environment variable for the child (shown in error messages).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.shown = format!("{key}={} {}", quote(value.as_ref()), self.shown);
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable for the child.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs the child in `dir`.
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.shown = format!("(cd {} && {})", dir.as_ref().display(), self.shown);
        self.command.current_dir(dir);
        self
    }

    /// The printable command line.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs with inherited stdio (the user sees progress); fails on a non-zero exit.
    pub fn run(mut self) -> Result<()> {
        let status = self
            .command
            .status()
            .with_context(|| format!("cannot start `{}`", self.shown))?;
        if !status.success() {
            bail!("`{}` failed ({status}); its output is above", self.shown);
        }
        Ok(())
    }

    /// Runs with captured output and returns it without judging the exit status.
    pub fn output_any(mut self) -> Result<Output> {
        self.command.stdin(Stdio::null());
        self.command
            .output()
            .with_context(|| format!("cannot start `{}`", self.shown))
    }

    /// Runs with captured output; fails on a non-zero exit with the tail of stdout and stderr.
    pub fn output(self) -> Result<Output> {
        let shown = self.shown.clone();
        let out = self.output_any()?;
        if !out.status.success() {
            bail!("{}", failure_message(&shown, &out));
        }
        Ok(out)
    }

    /// Runs with captured output and returns stdout as text; fails like [`Cmd::output`].
    pub fn stdout(self) -> Result<String> {
        let out = self.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The error text for a finished command: command line, exit status, tail of its output.
pub fn failure_message(shown: &str, out: &Output) -> String {
    let mut msg = format!("`{shown}` failed ({})", out.status);
    let text = combined(out);
    let tail = tail(&text, TAIL_LINES);
    if !tail.is_empty() {
        let _ = write!(msg, "\n--- last lines of its output ---\n{tail}");
    }
    msg
}

/// stdout followed by stderr, as text.
pub fn combined(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
