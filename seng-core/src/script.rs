// SPDX-License-Identifier: GPL-2.0-only
//! Enclave table scripts: the text format of `seng save` / `seng restore` and of the simulator's
//! enclave event files.
//!
//! A script is a sequence of seng CLI commands without the leading `seng`, one a line, the way
//! `ipset save` output is a sequence of `ipset` commands:
//!
//! ```text
//! # comment
//! enclave add 192.168.28.10 --app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 --host 10.0.0.5 --cat Browser
//! enclave del 192.168.28.10
//! app cat add d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 "Web Mail"
//! app cat del d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 Browser
//! enclave add 192.168.29.7 --app d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0 --host 10.0.1.5 --origin gw-b
//! @1.250 flush
//! @2 flush --origin gw-b
//! ```
//!
//! Every command takes `--origin NAME`, the [origin](crate::origin) it acts for, as the CLI
//! does: a gateway's name, or `local`, which is what a line without it means. `enclave add`
//! takes it among its options; the other commands after their arguments. The canonical form
//! names the origin last, and only a gateway's.
//!
//! Words are separated by blanks; double quotes group a word, and a backslash takes the next
//! character literally (inside or outside quotes), so every name [`Category::save_form`] prints
//! reads back. A `#` starting a word outside quotes comments out the rest of the line. A leading
//! `seng` word is tolerated. An optional first word `@SECONDS` (decimal, at most nine fractional
//! digits) makes the line a timed event, relative to the first packet of a capture; untimed lines
//! apply before it, and times must not decrease through the script.
//!
//! A line is an [`Operation`] of one enclave, address or category. [`parse`] reads a script into
//! [`ScriptLine`]s and [`parse_line`] one line of it, [`print()`] writes the canonical form (what
//! `seng save` prints; parsing it gives the same lines back; an operation of several items prints
//! as a line for each), and [`apply`] performs an operation on a [`LocalTable`] as the request
//! [`Operation::emit`] writes, through the request engine the kernel module uses, so seng-sim
//! and `seng restore --test` end the same connections as the kernel.

use std::borrow::Cow;

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;

use crate::category::{CategoryError, CATEGORY_MAX_LEN};
use crate::host::HostError;
use crate::measurement::{HexError, MEASUREMENT_LEN};
use crate::genl::{ProtoError, Scoped};
use crate::operation::{Dialect, EmitError, Operation, Registration};
use crate::origin::GatewayNameError;
use crate::table::{LocalTable, Registered, Unregistered};
use crate::{Category, Family, GatewayName, Measurement, Origin};

/// An operation with where it came from and when it applies.
///
/// The lines of a script: `enclave add ADDR --app HEX --host ADDR [--cat NAME]...` (an
/// [`Operation::Register`]), `enclave del ADDR` ([`Operation::Unregister`]), `app cat add HEX
/// NAME` ([`Operation::Attach`]), `app cat del HEX NAME` ([`Operation::Detach`]) and `flush`,
/// each with an optional `--origin NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptLine {
    /// 1-based line number in the script text.
    pub line_no: usize,
    /// `@SECONDS` prefix: applies this long after the first packet; `None` applies before it.
    pub at: Option<Duration>,
    /// The operation.
    pub operation: Operation,
}

/// What is wrong with a script line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptErrorKind {
    /// A double quote is not closed on its line.
    UnterminatedQuote,
    /// A backslash ends the line.
    DanglingEscape,
    /// The words do not start a known command.
    UnknownCommand,
    /// The line ends where this is needed.
    Missing(&'static str),
    /// A word that no command of this form takes.
    UnexpectedWord,
    /// An option given twice.
    DuplicateOption,
    /// Not an origin: neither `local` nor a gateway's name.
    Origin(GatewayNameError),
    /// Not a numeric IPv4 or IPv6 address.
    Address(HostError),
    /// Not an application measurement.
    Hex(HexError),
    /// Not a category name.
    Category(CategoryError),
    /// `@` not followed by a decimal number of seconds with at most nine fractional digits.
    BadTime,
    /// The time is earlier than a previous line's.
    TimeDecreasing {
        /// The latest time seen before this line.
        previous: Duration,
    },
}

/// An error in a script, naming line, column and the offending word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in characters) of the offending word, or of the line's end when something
    /// is missing.
    pub column: usize,
    /// The offending word as read (after unquoting); empty when something is missing.
    pub word: String,
    /// What is wrong.
    pub kind: ScriptErrorKind,
}

impl fmt::Display for ScriptError {
    /// `LINE:COLUMN: message`, so a caller can prefix the file name the way compilers do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        let word = &self.word;
        match self.kind {
            ScriptErrorKind::UnterminatedQuote => f.write_str("unterminated double quote"),
            ScriptErrorKind::DanglingEscape => f.write_str("backslash at the end of the line"),
            ScriptErrorKind::UnknownCommand => write!(
                f,
                "unknown command {word:?}; expected \"enclave add\", \"enclave del\", \"app cat add\", \
                 \"app cat del\" or \"flush\""
            ),
            ScriptErrorKind::Missing(what) => write!(f, "missing {what}"),
            ScriptErrorKind::UnexpectedWord => write!(f, "unexpected {word:?}"),
            ScriptErrorKind::DuplicateOption => write!(f, "{word} given twice"),
            ScriptErrorKind::Address(e) => write!(f, "bad address {word:?}: {e}"),
            ScriptErrorKind::Hex(e) => write!(f, "bad application measurement {word:?}: {e}"),
            ScriptErrorKind::Category(e) => write!(f, "bad category {word:?}: {e}"),
            ScriptErrorKind::Origin(e) => write!(f, "bad origin {word:?}: {e}"),
            ScriptErrorKind::BadTime => write!(
                f,
                "bad time {word:?}: expected @SECONDS, e.g. @1.250 (at most nine fractional digits)"
            ),
            ScriptErrorKind::TimeDecreasing { previous } => write!(
                f,
                "time {word} is before the previous event's @{}; timed lines must not go back in time",
                Seconds(previous)
            ),
        }
    }
}

impl std::error::Error for ScriptError {}

/// A word of a line with the column it starts at; borrowed from the line unless unquoting
/// changed it (most words of a million-line restore need no copy).
struct Word<'a> {
    text: Cow<'a, str>,
    column: usize,
    quoted: bool,
}

fn split_words(line: &str, line_no: usize) -> Result<Vec<Word<'_>>, ScriptError> {
    // Plain ASCII without quotes, escapes or comments (every line `seng save` writes for
    // ordinary names): split on bytes, columns are byte offsets.
    if line.bytes().all(|b| b.is_ascii() && !matches!(b, b'"' | b'\\' | b'#')) {
        let column = |word: &str| word.as_ptr() as usize - line.as_ptr() as usize + 1;
        return Ok(line
            .split_ascii_whitespace()
            .map(|word| Word { text: Cow::Borrowed(word), column: column(word), quoted: false })
            .collect());
    }
    let mut words = Vec::with_capacity(8);
    let mut chars = line.char_indices().enumerate().peekable();
    let err = |column: usize, kind| ScriptError { line: line_no, column, word: String::new(), kind };
    while let Some(&(start, (start_byte, c))) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            break;
        }
        let mut owned: Option<String> = None;
        let mut end_byte = start_byte;
        let mut quoted = false;
        let mut in_quotes = false;
        while let Some(&(at, (byte, c))) = chars.peek() {
            if !in_quotes && c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' | '\\' => {
                    // From here on the word differs from the line: copy what came before.
                    let text = owned.get_or_insert_with(|| line.get(start_byte..byte).unwrap_or_default().to_owned());
                    if c == '"' {
                        in_quotes = !in_quotes;
                        quoted = true;
                    } else {
                        match chars.next() {
                            Some((_, (_, escaped))) => text.push(escaped),
                            None => return Err(err(at + 1, ScriptErrorKind::DanglingEscape)),
                        }
                    }
                }
                _ => match &mut owned {
                    Some(text) => text.push(c),
                    None => end_byte = byte + c.len_utf8(),
                },
            }
        }
        if in_quotes {
            return Err(err(start + 1, ScriptErrorKind::UnterminatedQuote));
        }
        let text = match owned {
            Some(text) => Cow::Owned(text),
            None => Cow::Borrowed(line.get(start_byte..end_byte).unwrap_or_default()),
        };
        words.push(Word { text, column: start + 1, quoted });
    }
    Ok(words)
}

/// Reads the words of one line into a command.
struct LineParser<'w, 'l> {
    words: core::slice::Iter<'w, Word<'l>>,
    line_no: usize,
    end_column: usize,
}

impl<'w, 'l> LineParser<'w, 'l> {
    fn error(&self, word: Option<&Word<'_>>, kind: ScriptErrorKind) -> ScriptError {
        match word {
            Some(w) => ScriptError { line: self.line_no, column: w.column, word: w.text.clone().into_owned(), kind },
            None => ScriptError { line: self.line_no, column: self.end_column, word: String::new(), kind },
        }
    }

    fn next(&mut self, what: &'static str) -> Result<&'w Word<'l>, ScriptError> {
        self.words.next().ok_or_else(|| self.error(None, ScriptErrorKind::Missing(what)))
    }

    fn keyword(&mut self, expected: &[&'static str], what: &'static str) -> Result<&'static str, ScriptError> {
        let word = self.next(what)?;
        expected
            .iter()
            .find(|k| !word.quoted && **k == word.text)
            .copied()
            .ok_or_else(|| self.error(Some(word), ScriptErrorKind::UnknownCommand))
    }

    fn addr(&mut self, what: &'static str) -> Result<IpAddr, ScriptError> {
        let word = self.next(what)?;
        word.text.parse().map_err(|_| {
            let family = if word.text.contains(':') { Family::Ipv6 } else { Family::Ipv4 };
            self.error(Some(word), ScriptErrorKind::Address(HostError::Address(family)))
        })
    }

    fn app(&mut self, what: &'static str) -> Result<Measurement, ScriptError> {
        let word = self.next(what)?;
        Measurement::parse_hex(&word.text).map_err(|e| self.error(Some(word), ScriptErrorKind::Hex(e)))
    }

    fn category(&mut self, what: &'static str) -> Result<Category, ScriptError> {
        let word = self.next(what)?;
        Category::new(word.text.as_bytes()).map_err(|e| self.error(Some(word), ScriptErrorKind::Category(e)))
    }

    fn origin_value(&mut self, option: &Word<'_>, origin: &mut Option<Origin>) -> Result<(), ScriptError> {
        if origin.is_some() {
            return Err(self.error(Some(option), ScriptErrorKind::DuplicateOption));
        }
        let word = self.next("the origin after --origin")?;
        *origin = Some(word.text.parse().map_err(|e| self.error(Some(word), ScriptErrorKind::Origin(e)))?);
        Ok(())
    }

    /// The end of a command after its arguments: an optional `--origin NAME`, then nothing.
    fn end(&mut self) -> Result<Origin, ScriptError> {
        let mut origin = None;
        while let Some(word) = self.words.next() {
            match word.text.as_ref() {
                "--origin" if !word.quoted => self.origin_value(word, &mut origin)?,
                _ => return Err(self.error(Some(word), ScriptErrorKind::UnexpectedWord)),
            }
        }
        Ok(origin.unwrap_or_default())
    }

    fn enclave_add(&mut self) -> Result<Operation, ScriptError> {
        let addr = self.addr("the enclave address")?;
        let mut app = None;
        let mut host = None;
        let mut categories = Vec::new();
        let mut origin = None;
        while let Some(word) = self.words.next() {
            match word.text.as_ref() {
                "--app" if !word.quoted => {
                    if app.is_some() {
                        return Err(self.error(Some(word), ScriptErrorKind::DuplicateOption));
                    }
                    app = Some(self.app("the measurement after --app")?);
                }
                "--host" if !word.quoted => {
                    if host.is_some() {
                        return Err(self.error(Some(word), ScriptErrorKind::DuplicateOption));
                    }
                    host = Some(self.addr("the host address after --host")?);
                }
                "--cat" if !word.quoted => categories.push(self.category("the category after --cat")?),
                "--origin" if !word.quoted => self.origin_value(word, &mut origin)?,
                _ => return Err(self.error(Some(word), ScriptErrorKind::UnexpectedWord)),
            }
        }
        let app = app.ok_or_else(|| self.error(None, ScriptErrorKind::Missing("--app HEX")))?;
        let host = host.ok_or_else(|| self.error(None, ScriptErrorKind::Missing("--host ADDR")))?;
        Ok(Operation::Register(vec![Registration { addr, app, host, categories, origin: origin.unwrap_or_default() }]))
    }

    fn command(&mut self) -> Result<Operation, ScriptError> {
        const COMMANDS: &[&str] = &["enclave", "app", "flush"];
        Ok(match self.keyword(COMMANDS, "a command")? {
            "enclave" => match self.keyword(&["add", "del"], "\"add\" or \"del\" after \"enclave\"")? {
                "add" => return self.enclave_add(),
                _ => {
                    let addrs = vec![self.addr("the enclave address")?];
                    Operation::Unregister { origin: self.end()?, addrs }
                }
            },
            "app" => {
                self.keyword(&["cat"], "\"cat\" after \"app\"")?;
                let add = self.keyword(&["add", "del"], "\"add\" or \"del\" after \"app cat\"")? == "add";
                let app = self.app("the application measurement")?;
                let categories = vec![self.category("the category name")?];
                let origin = self.end()?;
                match add {
                    true => Operation::Attach { origin, app, categories },
                    false => Operation::Detach { origin, app, categories },
                }
            }
            _ => Operation::Flush { origin: self.end()? },
        })
    }
}

fn parse_time(text: &str) -> Option<Duration> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 || (text.contains('.') && fraction.is_empty()) {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos = fraction.bytes().chain(core::iter::repeat(b'0')).take(9).fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    Some(Duration::new(secs, nanos))
}

/// Parses a whole script. Errors name the line, the column and the word.
pub fn parse(text: &str) -> Result<Vec<ScriptLine>, ScriptError> {
    let mut lines = Vec::new();
    let mut latest = None;
    for (index, line) in text.lines().enumerate() {
        if let Some(line) = read_line(line, index + 1, latest)? {
            latest = line.at.or(latest);
            lines.push(line);
        }
    }
    Ok(lines)
}

/// Parses one line of a script, numbered `line_no` (1-based) in what it reports: `Ok(None)` for a
/// blank or comment-only line.
///
/// `line` is a line as [`str::lines`] yields it, without its line ending; a `\r` or `\n` left in
/// it is a blank like any other. A line reads exactly as it does inside [`parse`], errors
/// included, except that a timed line is not checked against earlier ones: times must not
/// decrease through a script, and that takes the previous lines, which [`parse`] has.
///
/// The lines `seng save` writes (`enclave add IPV4 --app HEX --host ADDR [--cat NAME]...`,
/// single spaces, plain names) take a fast path that allocates nothing but the category list.
pub fn parse_line(line: &str, line_no: usize) -> Result<Option<ScriptLine>, ScriptError> {
    read_line(line, line_no, None)
}

/// [`parse_line`], with `latest` the time of the script's last timed line before this one.
fn read_line(line: &str, line_no: usize, latest: Option<Duration>) -> Result<Option<ScriptLine>, ScriptError> {
    // The fast path only takes untimed lines, so `latest` cannot matter to it.
    match plain_enclave_add(line) {
        Some(operation) => Ok(Some(ScriptLine { line_no, at: None, operation })),
        None => read_line_general(line, line_no, latest),
    }
}

/// Reads any line the format allows and reports what is wrong with any other.
fn read_line_general(line: &str, line_no: usize, latest: Option<Duration>) -> Result<Option<ScriptLine>, ScriptError> {
    let words = split_words(line, line_no)?;
    let mut rest = words.as_slice();
    let end_column = if line.is_ascii() { line.len() } else { line.chars().count() } + 1;
    let mut at = None;
    if let [first, tail @ ..] = rest {
        if let Some(seconds) = first.text.strip_prefix('@').filter(|_| !first.quoted) {
            let error = |kind| ScriptError { line: line_no, column: first.column, word: first.text.clone().into_owned(), kind };
            let time = parse_time(seconds).ok_or_else(|| error(ScriptErrorKind::BadTime))?;
            if let Some(previous) = latest.filter(|p| time < *p) {
                return Err(error(ScriptErrorKind::TimeDecreasing { previous }));
            }
            at = Some(time);
            rest = tail;
        }
    }
    if let [first, tail @ ..] = rest {
        if first.text == "seng" && !first.quoted {
            rest = tail;
        }
    }
    if rest.is_empty() {
        return match words.first() {
            Some(first) => Err(ScriptError { line: line_no, column: end_column, word: first.text.clone().into_owned(), kind: ScriptErrorKind::Missing("a command") }),
            None => Ok(None),
        };
    }
    let mut parser = LineParser { words: rest.iter(), line_no, end_column };
    Ok(Some(ScriptLine { line_no, at, operation: parser.command()? }))
}

/// The fast path of [`parse_line`]: `enclave add ADDR --app HEX --host ADDR [--cat NAME]...
/// [--origin GATEWAY]` exactly as `seng save` writes it, one space between words, no `@time`, no
/// leading `seng`, names of printable ASCII without quotes, backslashes or `#`. Every such line splits into the same
/// words for the general path, which reads them into the same command; anything else (errors
/// included) is `None`, for the general path to read and report.
fn plain_enclave_add(line: &str) -> Option<Operation> {
    // Each value's reader stops where the value does; the next literal, starting with its space,
    // or the end of the line then checks that the word ended there too.
    let rest = line.strip_prefix("enclave add ")?;
    let (addr, rest) = address(rest)?;
    let rest = rest.strip_prefix(" --app ")?;
    let (hex, rest) = rest.split_at_checked(2 * MEASUREMENT_LEN)?;
    let app = Measurement::parse_hex_bytes(hex.as_bytes())?;
    let rest = rest.strip_prefix(" --host ")?;
    let (host, mut rest) = address(rest)?;
    // One category is the common case; a capacity of 0 allocates nothing.
    let mut categories = Vec::with_capacity(usize::from(!rest.is_empty()));
    let mut origin = Origin::Local;
    while !rest.is_empty() {
        let Some(option) = rest.strip_prefix(" --cat ") else {
            // A gateway's name, last.
            let (name, tail) = plain_name(rest.strip_prefix(" --origin ")?)?;
            origin = Origin::Gateway(GatewayName::new(name.as_bytes()).ok()?);
            rest = tail;
            if !rest.is_empty() {
                return None;
            }
            break;
        };
        let (name, tail) = plain_name(option)?;
        // Printable ASCII is valid UTF-8 without control characters: only the length is left
        // for `Category::new` to check.
        if name.is_empty() || name.len() > CATEGORY_MAX_LEN {
            return None;
        }
        categories.push(Category::from_checked(name.as_bytes()));
        rest = tail;
    }
    Some(Operation::Register(vec![Registration { addr, app, host, categories, origin }]))
}

/// The address starting `text`, and what follows it.
// Inlined into its two uses, the result stays in registers instead of going through memory.
#[inline(always)]
fn address(text: &str) -> Option<(IpAddr, &str)> {
    if let Some((ip, rest)) = ipv4_prefix(text.as_bytes()) {
        // `rest` follows ASCII digits, so it starts on a character boundary.
        return Some((IpAddr::V4(ip), text.get(text.len() - rest.len()..)?));
    }
    // Other forms (IPv6) through the parser the general path uses, so they read the same.
    let (word, rest) = text.split_at_checked(text.find(' ').unwrap_or(text.len()))?;
    Some((word.parse().ok()?, rest))
}

/// The dotted-quad IPv4 address starting `bytes`, and what follows it: four decimal octets up to
/// 255 without leading zeros, the only form `Ipv4Addr::from_str` accepts. One pass over the bytes
/// instead of a search for the word's end and then the general parser.
fn ipv4_prefix(bytes: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let (a, rest) = octet(bytes)?;
    let (b, rest) = octet(rest.strip_prefix(b".")?)?;
    let (c, rest) = octet(rest.strip_prefix(b".")?)?;
    let (d, rest) = octet(rest.strip_prefix(b".")?)?;
    Some((Ipv4Addr::new(a, b, c, d), rest))
}

/// The decimal octet starting `bytes` (at most three digits, no leading zero), and what follows.
fn octet(bytes: &[u8]) -> Option<(u8, &[u8])> {
    let digit = |b: &u8| Some(b.wrapping_sub(b'0')).filter(|d| *d < 10);
    let (first, mut rest) = bytes.split_first()?;
    let mut value = u16::from(digit(first)?);
    // A leading 0 is the whole octet.
    if value != 0 {
        for _ in 0..2 {
            let Some((d, tail)) = rest.split_first().and_then(|(b, tail)| Some((digit(b)?, tail))) else { break };
            value = value * 10 + u16::from(d);
            rest = tail;
        }
    }
    Some((u8::try_from(value).ok()?, rest))
}

/// The plain category name starting `text` (printable ASCII without quotes, backslashes or `#`,
/// which the general path reads specially), and what follows it.
fn plain_name(text: &str) -> Option<(&str, &str)> {
    let plain = |b: u8| matches!(b, b'!'..=b'~') && !matches!(b, b'"' | b'\\' | b'#');
    text.split_at_checked(text.bytes().position(|b| !plain(b)).unwrap_or(text.len()))
}

/// The canonical text of a script: one line per item of each operation, no comments, times as
/// `@S[.F]` with trailing zeros dropped. [`parse`] of it gives `lines` back when their `line_no`s are 1, 2, ….
pub fn print(lines: &[ScriptLine]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// An address as `Display` prints it, with IPv4 written in one piece: `seng save` prints millions
/// of them, and std's formatter pads each octet separately.
struct Addr<'a>(&'a IpAddr);

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let IpAddr::V4(v4) = self.0 else { return self.0.fmt(f) };
        let mut text = [0u8; 15];
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            let digits = [octet / 100, octet / 10 % 10, octet % 10];
            let skip = match octet {
                100.. => 0,
                10.. => 1,
                _ => 2,
            };
            let dot = (i > 0).then_some(b'.');
            for b in dot.into_iter().chain(digits.into_iter().skip(skip).map(|d| b'0' + d)) {
                if let Some(slot) = text.get_mut(len) {
                    *slot = b;
                    len += 1;
                }
            }
        }
        // Only ASCII digits and dots were written.
        f.write_str(text.get(..len).and_then(|t| core::str::from_utf8(t).ok()).unwrap_or_default())
    }
}

/// Seconds of a duration, printed the canonical way.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.subsec_nanos();
        write!(f, "{}", self.0.as_secs())?;
        if nanos != 0 {
            let digits = format!("{nanos:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        Ok(())
    }
}

impl fmt::Display for ScriptLine {
    /// The canonical lines, without a final newline: one per enclave, address or category of the
    /// operation, each with the time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.map(Seconds);
        write_lines(f, &self.operation, |f| match &at {
            Some(at) => write!(f, "@{at} "),
            None => Ok(()),
        })
    }
}

/// `--origin NAME` after a command for a gateway; nothing for the local origin.
struct OriginOption<'a>(&'a Origin);

impl fmt::Display for OriginOption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Origin::Local => Ok(()),
            Origin::Gateway(name) => write!(f, " --origin {name}"),
        }
    }
}

/// The canonical text of `op` (options in the order `--app`, `--host`, `--cat`..., `--origin`):
/// a line for each item, each started by `prefix`, separated by newlines.
fn write_lines(f: &mut fmt::Formatter<'_>, op: &Operation, prefix: impl Fn(&mut fmt::Formatter<'_>) -> fmt::Result) -> fmt::Result {
    let mut first = true;
    let mut line = |f: &mut fmt::Formatter<'_>| {
        if !core::mem::take(&mut first) {
            f.write_str("\n")?;
        }
        prefix(f)
    };
    match op {
        Operation::Register(list) => list.iter().try_for_each(|r| {
            line(f)?;
            write!(f, "enclave add {} --app {} --host {}", Addr(&r.addr), r.app, Addr(&r.host))?;
            r.categories.iter().try_for_each(|c| write!(f, " --cat {}", c.save_form()))?;
            write!(f, "{}", OriginOption(&r.origin))
        }),
        Operation::Unregister { origin, addrs } => addrs.iter().try_for_each(|addr| {
            line(f)?;
            write!(f, "enclave del {}{}", Addr(addr), OriginOption(origin))
        }),
        Operation::Attach { origin, app, categories } | Operation::Detach { origin, app, categories } => {
            let verb = if matches!(op, Operation::Attach { .. }) { "add" } else { "del" };
            categories.iter().try_for_each(|c| {
                line(f)?;
                write!(f, "app cat {verb} {app} {}{}", c.save_form(), OriginOption(origin))
            })
        }
        Operation::Flush { origin } => {
            line(f)?;
            write!(f, "flush{}", OriginOption(origin))
        }
    }
}

impl fmt::Display for Operation {
    /// The canonical script text: a line for each enclave, address or category, separated by
    /// newlines (what `seng save` and `seng monitor` print).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, self, |_| Ok(()))
    }
}

/// What applying an operation did to the table, judged against the table before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// `enclave add`: how each registration went.
    Registered(Vec<Registered>),
    /// `enclave del`: the metadata each enclave had.
    Unregistered(Vec<Unregistered>),
    /// `app cat add`: how many of the categories the application did not have yet.
    CategoriesAttached(usize),
    /// `app cat del`.
    CategoriesDetached,
    /// `flush`: the addresses that were registered.
    Flushed(Vec<IpAddr>),
}

/// Why an operation was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// It cannot be written as a request.
    Emit(EmitError),
    /// The request engine refused it: the table is unchanged.
    Refused(ProtoError),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Emit(e) => e.fmt(f),
            ApplyError::Refused(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ApplyError {}

/// What `op` does to `table` if the engine accepts it.
fn effect(op: &Operation, table: &LocalTable) -> Applied {
    let of = |origin: &Origin| table.origin_id(origin);
    match op {
        Operation::Register(list) => Applied::Registered(
            list.iter()
                .map(|r| match table.lookup(&r.addr) {
                    None => Registered::New,
                    Some(e) if *e.app() == r.app && e.host() == r.host && Some(e.origin()) == of(&r.origin) => Registered::Unchanged,
                    Some(e) => Registered::Replaced { app: *e.app(), host: e.host(), origin: e.origin() },
                })
                .collect(),
        ),
        Operation::Unregister { addrs, .. } => Applied::Unregistered(
            addrs.iter().filter_map(|a| table.lookup(a)).map(|e| Unregistered { app: *e.app(), host: e.host(), origin: e.origin() }).collect(),
        ),
        Operation::Attach { origin, app, categories } => {
            let current = of(origin).and_then(|id| table.app(id, app)).map(|a| a.categories().to_vec()).unwrap_or_default();
            let mut fresh: Vec<&Category> = categories.iter().filter(|c| !current.contains(c)).collect();
            fresh.sort();
            fresh.dedup();
            Applied::CategoriesAttached(fresh.len())
        }
        Operation::Detach { .. } => Applied::CategoriesDetached,
        Operation::Flush { origin } => Applied::Flushed(table.enclaves_from(0).filter(|e| Some(e.origin()) == of(origin)).map(|e| e.addr()).collect()),
    }
}

/// Performs `op` on `table` as the request [`Operation::emit`] writes for the live table,
/// through the request engine; afterwards [`LocalTable::ended_connections`] lists the addresses whose
/// connections it ended. On error the table is unchanged.
pub fn apply(op: &Operation, table: &mut LocalTable) -> Result<Applied, ApplyError> {
    let (command, payload) = op.to_request(Dialect::Live).map_err(ApplyError::Emit)?;
    let request = Scoped::parse(command, &payload).map_err(|refusal| ApplyError::Refused(refusal.error))?;
    let applied = effect(op, table);
    table.execute(request).map_err(|r| ApplyError::Refused(r.error))?;
    Ok(applied)
}

#[cfg(test)]
mod test {
    use super::*;

    const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";
    const APP2: &str = "d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792";

    fn m(hex: &str) -> Measurement {
        Measurement::parse_hex(hex).unwrap()
    }

    fn cat(name: &str) -> Category {
        Category::new(name.as_bytes()).unwrap()
    }

    #[test]
    fn addresses_print_as_std_prints_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 250, 255];
        for a in octets {
            for b in octets {
                for c in octets {
                    for d in octets {
                        let ip = IpAddr::from([a, b, c, d]);
                        assert_eq!(Addr(&ip).to_string(), ip.to_string());
                    }
                }
            }
        }
        let v6: IpAddr = "fd00::1:0:0:2".parse().unwrap();
        assert_eq!(Addr(&v6).to_string(), "fd00::1:0:0:2");
    }

    fn gw(name: &str) -> Origin {
        name.parse().unwrap()
    }

    fn registration(addr: &str, host: &str, cats: &[&str]) -> Registration {
        Registration { addr: addr.parse().unwrap(), app: m(APP), host: host.parse().unwrap(), categories: cats.iter().map(|c| cat(c)).collect(), origin: Origin::Local }
    }

    fn del(addr: &str, origin: Origin) -> Operation {
        Operation::Unregister { origin, addrs: vec![addr.parse().unwrap()] }
    }

    #[test]
    fn parses_each_form_and_prints_it_canonically() {
        let add = |addr: &str, host: &str, cats: &[&str]| Operation::from(registration(addr, host, cats));
        // (input line, expected command, expected time in ms, canonical text)
        let cases: Vec<(String, Operation, Option<u64>, String)> = vec![
            (
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5"),
                add("192.168.28.10", "10.0.0.5", &[]),
                None,
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5"),
            ),
            (
                format!("  seng enclave add 192.168.28.10 --cat Browser --host 10.0.0.5 --app {} --cat \"Web Mail\"  # why", APP.to_uppercase()),
                add("192.168.28.10", "10.0.0.5", &["Browser", "Web Mail"]),
                None,
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat Browser --cat \"Web Mail\""),
            ),
            (
                format!("enclave add fd00:28::10 --app {APP} --host 2001:db8::5 --cat a\\\"b"),
                add("fd00:28::10", "2001:db8::5", &["a\"b"]),
                None,
                format!("enclave add fd00:28::10 --app {APP} --host 2001:db8::5 --cat \"a\\\"b\""),
            ),
            ("@1.250 enclave del 192.168.28.10".into(), del("192.168.28.10", Origin::Local), Some(1250), "@1.25 enclave del 192.168.28.10".into()),
            (format!("@2 app cat add {APP2} Browser"), Operation::Attach { origin: Origin::Local, app: m(APP2), categories: vec![cat("Browser")] }, Some(2000), format!("@2 app cat add {APP2} Browser")),
            (format!("app cat del {APP2} \"it's\""), Operation::Detach { origin: Origin::Local, app: m(APP2), categories: vec![cat("it's")] }, None, format!("app cat del {APP2} \"it\\'s\"")),
            ("@0.000000001 flush".into(), Operation::FLUSH, Some(0), "@0.000000001 flush".into()),
            // Origins: a gateway's name last, `local` left out.
            (
                format!("enclave add 192.168.28.10 --origin gw-b --app {APP} --host 10.0.0.5 --cat Browser"),
                Operation::from(Registration { origin: gw("gw-b"), ..registration("192.168.28.10", "10.0.0.5", &["Browser"]) }),
                None,
                format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat Browser --origin gw-b"),
            ),
            (format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --origin local"), add("192.168.28.10", "10.0.0.5", &[]), None, format!("enclave add 192.168.28.10 --app {APP} --host 10.0.0.5")),
            ("enclave del 192.168.28.10 --origin gw_2.dc1".into(), del("192.168.28.10", gw("gw_2.dc1")), None, "enclave del 192.168.28.10 --origin gw_2.dc1".into()),
            (
                format!("app cat add {APP2} --origin --origin gw-b"),
                Operation::Attach { origin: gw("gw-b"), app: m(APP2), categories: vec![cat("--origin")] },
                None,
                format!("app cat add {APP2} --origin --origin gw-b"),
            ),
            ("@3 flush --origin gw-b".into(), Operation::Flush { origin: gw("gw-b") }, Some(3000), "@3 flush --origin gw-b".into()),
            ("flush --origin local".into(), Operation::FLUSH, None, "flush".into()),
        ];
        for (text, command, at_ms, canonical) in cases {
            let lines = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(lines.len(), 1, "{text}");
            assert_eq!(lines[0].operation, command, "{text}");
            assert_eq!(lines[0].at.map(|d| d.as_millis() as u64), at_ms, "{text}");
            assert_eq!(lines[0].to_string(), canonical, "{text}");
            assert_eq!(parse(&canonical).unwrap(), lines, "{canonical} reparses");
        }
    }

    #[test]
    fn skips_comments_and_blank_lines_keeping_line_numbers() {
        let text = "# header\n\n   \nenclave del 10.1.1.1 # trailing\n@3 flush\n";
        let lines = parse(text).unwrap();
        assert_eq!(lines.iter().map(|l| l.line_no).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(lines[1].at, Some(Duration::from_secs(3)));
    }

    #[test]
    fn errors_name_line_column_and_problem() {
        let cases: Vec<(String, &str)> = vec![
            ("enclave add 192.168.28.300 --app x --host 1.2.3.4".into(), "1:13: bad address \"192.168.28.300\": not a numeric IPv4 address"),
            ("enclave add fd00::zz --app x".into(), "1:13: bad address \"fd00::zz\": not a numeric IPv6 address"),
            ("enclave add 10.0.0.1 --app abc --host 1.2.3.4".into(), "1:28: bad application measurement \"abc\": must be exactly 64 hex digits"),
            (format!("enclave add 10.0.0.1 --app {APP} --host 1.2.3.4 --cat 123456789012345678901"), "1:114: bad category \"123456789012345678901\": category name is 21 bytes"),
            (format!("enclave add 10.0.0.1 --app {APP}"), "1:92: missing --host ADDR"),
            (format!("enclave add 10.0.0.1 --host 1.2.3.4 --app {APP} --app {APP}"), "1:108: --app given twice"),
            ("enclave add 10.0.0.1 --hosts 1.2.3.4".into(), "1:22: unexpected \"--hosts\""),
            ("enclave del".into(), "1:12: missing the enclave address"),
            ("enclave del 10.0.0.1 10.0.0.2".into(), "1:22: unexpected \"10.0.0.2\""),
            ("enclave remove 10.0.0.1".into(), "1:9: unknown command \"remove\""),
            ("firewall flush".into(), "1:1: unknown command \"firewall\""),
            ("flush \"unterminated".into(), "1:7: unterminated double quote"),
            ("flush \\".into(), "1:7: backslash at the end of the line"),
            ("@1.2.3 flush".into(), "1:1: bad time \"@1.2.3\""),
            ("@1.0000000001 flush".into(), "1:1: bad time"),
            ("@-1 flush".into(), "1:1: bad time"),
            ("@2 flush\n@1.5 flush".into(), "2:1: time @1.5 is before the previous event's @2"),
            ("@2".into(), "1:3: missing a command"),
            (format!("app cat add {APP}"), "1:77: missing the category name"),
            ("\"flush\"".into(), "1:1: unknown command \"flush\""),
            ("flush --origin".into(), "1:15: missing the origin after --origin"),
            ("flush --origin -gw".into(), "1:16: bad origin \"-gw\": gateway name must start with an ASCII letter or digit"),
            ("enclave del 10.0.0.1 --origin gw-b --origin gw-c".into(), "1:36: --origin given twice"),
            (format!("enclave add 10.0.0.1 --origin a --app {APP} --host 1.2.3.4 --origin b"), "1:119: --origin given twice"),
            ("flush gw-b".into(), "1:7: unexpected \"gw-b\""),
            (format!("app cat add {APP} Mail --origin {}", "g".repeat(33)), "1:92: bad origin \"ggggggggggggggggggggggggggggggggg\": gateway name is 33 bytes"),
        ];
        for (text, want) in cases {
            let got = parse(&text).unwrap_err().to_string();
            assert!(got.starts_with(want), "{text:?}:\n got {got:?}\nwant {want:?}");
        }
    }

    #[test]
    fn parse_line_reads_one_line_as_parse_does() {
        let add = format!("enclave add 10.0.0.1 --app {APP} --host 172.16.0.1 --cat cat-0");
        // (line, whether the fast path takes it)
        let cases: Vec<(String, bool)> = vec![
            (add.clone(), true),
            (format!("enclave add 10.0.0.1 --app {APP} --host 172.16.0.1"), true),
            (format!("enclave add fd00::a --app {} --host ::ffff:1.2.3.4 --cat a --cat !'$%&()*+,-./:;<=>? --cat @[]^_`{{|}}~", APP.to_uppercase()), true),
            (format!("enclave add 0.0.0.0 --app {APP} --host 255.255.255.255 --cat --cat --cat --app"), true),
            (format!("{add} --origin gw-b"), true),
            (format!("enclave add 10.0.0.1 --app {APP} --host 172.16.0.1 --origin gw-b"), true),
            (format!("{add} --cat --origin --origin gw-b"), true),
            (format!("{add} --origin local"), false),
            (format!("{add} --origin gw-b --cat x"), false),
            (format!("{add} --origin gw-b "), false),
            (format!("{add} --origin -gw"), false),
            (format!("{add} --origin"), false),
            (format!("enclave add 10.0.0.1 --origin gw-b --app {APP} --host 172.16.0.1"), false),
            (format!("enclave add 10.0.0.1 --app {APP} --host 172.16.0.1 --cat \"Web Mail\""), false),
            (format!("seng {add}"), false),
            (format!("@1 {add}"), false),
            (format!("{add} # saved"), false),
            (format!("{add} "), false),
            (format!("{add}\r"), false),
            (add.replace("add ", "add  "), false),
            (add.replace(" --app", "\t--app"), false),
            (add.replace("10.0.0.1", "10.0.0.01"), false),
            (add.replace("10.0.0.1", "10.0.0.256"), false),
            (add.replace("10.0.0.1", "10.0.0.1.2"), false),
            (add.replace("10.0.0.1", "10.0.0"), false),
            (add.replace("10.0.0.1", "fd00::zz"), false),
            (add.replace("d923", "g923"), false),
            (add.replace("d923", "d92"), false),
            (add.replace("d923", "d9233"), false),
            (add.replace("cat-0", "123456789012345678901"), false),
            (add.replace("cat-0", "caté"), false),
            (add.replace(" --cat cat-0", " --cat"), false),
            (add.replace("--host", "--hosts"), false),
            (format!("{add} --app {APP}"), false),
            (format!("enclave add 10.0.0.1 --host 172.16.0.1 --app {APP}"), false),
            ("enclave del 10.0.0.1".into(), false),
            ("".into(), false),
            ("  # comment".into(), false),
        ];
        for (line, fast) in cases {
            assert_eq!(plain_enclave_add(&line).is_some(), fast, "{line:?}");
            let whole = parse(&line).map(|lines| lines.into_iter().next());
            assert_eq!(parse_line(&line, 1), whole, "{line:?}");
        }
        // Only `parse` sees the previous line.
        assert_eq!(parse_line("@1 flush", 2).unwrap().unwrap().at, Some(Duration::from_secs(1)));
        assert!(parse("@2 flush\n@1 flush").is_err());
    }

    mod fast_path {
        //! The fast path must read every line it takes exactly as the general path does; whatever
        //! it leaves, the general path reads anyway. Lines are made near the fast path's edges.

        use super::super::*;
        use core::net::Ipv6Addr;
        use proptest::prelude::*;

        fn octet() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => any::<u8>().prop_map(|o| o.to_string()),
                1 => prop::sample::select(vec!["256", "300", "999", "1000", "01", "00", "007", "", "-1", "+1", "0x1", "٣"]).prop_map(String::from),
            ]
        }

        fn address() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
                2 => any::<[u8; 16]>().prop_map(|o| Ipv6Addr::from(o).to_string()),
                2 => prop::collection::vec(octet(), 1..6).prop_map(|o| o.join(".")),
                1 => prop::sample::select(vec!["::", "::1", "::ffff:1.2.3.4", "fd00::zz", "1.2.3.4/24", "1.2.3.4:80", "1.2.3.4.", ".1.2.3.4", "localhost", ""]).prop_map(String::from),
            ]
        }

        fn hex() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => any::<[u8; 32]>().prop_map(|m| Measurement(m).to_string()),
                1 => any::<[u8; 32]>().prop_map(|m| Measurement(m).to_string().to_uppercase()),
                1 => "[0-9a-fA-F]{60,68}",
                // Digits with the bytes around their ranges, control bytes included.
                2 => "[0-9a-fA-F/:@G`g\x10\x19\x01é]{64}",
            ]
        }

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[A-Za-z0-9_-]{1,20}",
                2 => "[!-~]{0,22}",
                1 => "[ -~\t\r\u{1}\u{7f}\u{a0}é€]{0,22}",
            ]
        }

        fn option() -> impl Strategy<Value = [String; 2]> {
            prop_oneof![
                hex().prop_map(|h| ["--app".into(), h]),
                address().prop_map(|a| ["--host".into(), a]),
                name().prop_map(|n| ["--cat".into(), n]),
                name().prop_map(|n| ["--origin".into(), n]),
                name().prop_map(|n| [n, "x".into()]),
            ]
        }

        /// The words of an `enclave add` as `seng save` writes it.
        fn saved(ip: String, app: String, host: String, categories: Vec<String>) -> Vec<String> {
            let mut words = vec!["enclave".into(), "add".into(), ip, "--app".into(), app, "--host".into(), host];
            for category in categories {
                words.extend(["--cat".into(), category]);
            }
            words
        }

        fn plain_line() -> impl Strategy<Value = String> {
            let ip = prop_oneof![
                3 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
                1 => any::<[u8; 16]>().prop_map(|o| Ipv6Addr::from(o).to_string()),
            ];
            let app = prop_oneof![
                any::<[u8; 32]>().prop_map(|m| Measurement(m).to_string()),
                "[0-9a-fA-F]{64}",
            ];
            let origin = prop::option::of("[A-Za-z0-9][A-Za-z0-9._-]{0,31}".prop_filter("not local", |n| n != "local"));
            (ip.clone(), app, ip, prop::collection::vec("[!-~&&[^\"\\\\#]]{1,20}", 0..3), origin).prop_map(|(ip, app, host, categories, origin)| {
                let mut words = saved(ip, app, host, categories);
                words.extend(origin.into_iter().flat_map(|name| ["--origin".into(), name]));
                words.join(" ")
            })
        }

        fn any_line() -> impl Strategy<Value = String> {
            let options = prop_oneof![
                (hex(), address(), prop::collection::vec(name(), 0..3)).prop_map(|(app, host, categories)| saved(String::new(), app, host, categories).split_off(3)),
                prop::collection::vec(option(), 0..5).prop_map(|o| o.into_iter().flatten().collect()),
            ];
            let prefix = prop::sample::select(vec!["", "", "", "seng ", "@1 ", "@x ", " ", "\t", "#", "\"enclave\" "]);
            let separator = prop::sample::select(vec![" ", " ", " ", " ", " ", " ", "  ", "\t", "\u{a0}", "\r"]);
            let suffix = prop::sample::select(vec!["", "", "", " ", "\r", "\n", " # comment", "#x", " \"q\"", " \\"]);
            (prefix, address(), options, prop::collection::vec(separator, 12), suffix).prop_map(|(prefix, ip, options, separators, suffix)| {
                let mut line = format!("{prefix}enclave add {ip}");
                for (word, separator) in options.iter().zip(separators.iter().cycle()) {
                    line.push_str(separator);
                    line.push_str(word);
                }
                line + suffix
            })
        }

        /// A plain line with a few characters replaced, inserted or removed.
        fn mutated_line() -> impl Strategy<Value = String> {
            let edit = (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(vec![' ', '\t', '.', ':', '0', '1', '9', 'a', 'f', 'g', '-', '"', '\\', '#', '@', 'é', '\u{a0}']));
            (plain_line(), prop::collection::vec(edit, 1..4)).prop_map(|(line, edits)| {
                let mut chars: Vec<char> = line.chars().collect();
                for (at, kind, c) in edits {
                    let at = at.index(chars.len() + 1);
                    match kind {
                        0 if at < chars.len() => chars[at] = c,
                        1 if at < chars.len() => {
                            chars.remove(at);
                        }
                        _ => chars.insert(at, c),
                    }
                }
                chars.into_iter().collect()
            })
        }

        fn agree(line: &str) -> Result<(), TestCaseError> {
            prop_assert_eq!(parse_line(line, 3), read_line_general(line, 3, None), "{:?}", line);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn takes_plain_lines(line in plain_line()) {
                prop_assert!(plain_enclave_add(&line).is_some(), "{:?}", line);
                agree(&line)?;
            }

            #[test]
            fn agrees_on_variations(line in any_line()) {
                agree(&line)?;
            }

            #[test]
            fn agrees_on_mutations(line in mutated_line()) {
                agree(&line)?;
            }
        }
    }

    #[test]
    fn apply_reports_what_ends_flows() {
        let mut table = LocalTable::new(16).unwrap();
        let script = format!(
            "enclave add 192.168.28.10 --app {APP} --host 10.0.0.5 --cat Browser\n\
             enclave add 192.168.28.10 --app {APP} --host 10.0.0.5\n\
             enclave add 192.168.28.11 --app {APP} --host 10.0.0.6\n\
             app cat add {APP} Mail\n\
             app cat del {APP} Browser\n\
             enclave add 192.168.28.10 --app {APP2} --host 10.0.0.5\n\
             enclave del 192.168.28.11\n\
             flush\n"
        );
        let lines = parse(&script).unwrap();
        let ended: Vec<Vec<String>> = lines
            .iter()
            .map(|line| {
                apply(&line.operation, &mut table).unwrap();
                let mut ended: Vec<String> = table.ended_connections().iter().map(|ip| ip.to_string()).collect();
                ended.sort();
                ended
            })
            .collect();
        let none: Vec<String> = Vec::new();
        assert_eq!(
            ended,
            [
                // Registering, re-stating, a second enclave: nothing ends.
                none.clone(),
                none.clone(),
                none.clone(),
                // A category change ends the connections of every enclave of the application.
                vec!["192.168.28.10".to_string(), "192.168.28.11".into()],
                vec!["192.168.28.10".to_string(), "192.168.28.11".into()],
                // So do moving an address to another application, unregistering and flushing.
                vec!["192.168.28.10".to_string()],
                vec!["192.168.28.11".into()],
                vec!["192.168.28.10".into()],
            ]
        );
        assert!(table.is_empty());
        let refusal = |op: &Operation, table: &mut LocalTable| match apply(op, table) {
            Err(ApplyError::Refused(e)) => e.msg.to_str().unwrap().to_string(),
            other => panic!("{op:?}: {other:?}"),
        };
        let del = del("192.168.28.10", Origin::Local);
        assert_eq!(refusal(&del, &mut table), "address is not a registered enclave");
        let attach = Operation::Attach { origin: Origin::Local, app: m(APP), categories: vec![cat("Mail")] };
        assert_eq!(refusal(&attach, &mut table), "no enclave of this application is registered");
        assert_eq!(apply(&Operation::Unregister { origin: Origin::Local, addrs: vec![] }, &mut table), Err(ApplyError::Emit(EmitError::Empty)));
    }

    #[test]
    fn an_operation_of_several_items_prints_a_line_for_each() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "fd00::2".parse().unwrap());
        let line = ScriptLine { line_no: 1, at: Some(Duration::from_millis(1500)), operation: Operation::Unregister { origin: gw("gw-b"), addrs: vec![a, b] } };
        assert_eq!(line.to_string(), "@1.5 enclave del 10.0.0.1 --origin gw-b\n@1.5 enclave del fd00::2 --origin gw-b");
        let detach = Operation::Detach { origin: Origin::Local, app: m(APP), categories: vec![cat("a"), cat("b")] };
        assert_eq!(detach.to_string(), format!("app cat del {APP} a\napp cat del {APP} b"));
        let read: Vec<Operation> = parse(&detach.to_string()).unwrap().into_iter().map(|l| l.operation).collect();
        let one = |c: &str| Operation::Detach { origin: Origin::Local, app: m(APP), categories: vec![cat(c)] };
        assert_eq!(read, [one("a"), one("b")]);
    }
}
