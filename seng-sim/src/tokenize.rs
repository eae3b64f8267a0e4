// SPDX-License-Identifier: GPL-2.0-only
//! Splitting rule-file lines into words: the `iptables-restore` way for lines inside a
//! `*filter … COMMIT` block, the POSIX shell way for lines an admin types (`iptables -A …`).

use std::fmt;

/// How a line is split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `iptables-restore`: blanks separate words, double quotes group, and inside quotes a
    /// backslash takes the next character literally. Everything else is literal.
    Restore,
    /// A shell command line: additionally single quotes (fully literal), backslash escapes
    /// outside quotes, and `#` at the start of a word begins a comment.
    Shell,
}

/// A word and the 1-based character column it starts at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// The word with quotes and escapes removed.
    pub text: String,
    /// Where it starts in the line.
    pub column: usize,
}

/// Why a line cannot be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// A quote opened at this column is not closed.
    UnterminatedQuote(usize),
    /// The line ends in a lone backslash.
    DanglingEscape,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::UnterminatedQuote(column) => write!(f, "unterminated quote opened at column {column}"),
            SplitError::DanglingEscape => f.write_str("line ends in a backslash"),
        }
    }
}

/// Splits `line` into words.
pub fn split(line: &str, style: Style) -> Result<Vec<Word>, SplitError> {
    let shell = style == Style::Shell;
    let mut words = Vec::new();
    let mut chars = line.chars().enumerate().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_ascii_whitespace() {
            chars.next();
            continue;
        }
        if shell && c == '#' {
            break;
        }
        let mut text = String::new();
        // The quote character currently open and the column it opened at.
        let mut open: Option<(char, usize)> = None;
        while let Some(&(at, c)) = chars.peek() {
            if open.is_none() && c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            match (open, c) {
                (None, '"') => open = Some(('"', at + 1)),
                (None, '\'') if shell => open = Some(('\'', at + 1)),
                (Some((q, _)), c) if c == q => open = None,
                (Some(('\'', _)), c) => text.push(c),
                (Some(('"', _)), '\\') => match chars.next() {
                    // The shell keeps the backslash before characters it does not escape.
                    Some((_, e)) if shell && !matches!(e, '"' | '\\' | '$' | '`') => {
                        text.push('\\');
                        text.push(e);
                    }
                    Some((_, e)) => text.push(e),
                    None => return Err(SplitError::DanglingEscape),
                },
                (None, '\\') if shell => match chars.next() {
                    Some((_, e)) => text.push(e),
                    None => return Err(SplitError::DanglingEscape),
                },
                (_, c) => text.push(c),
            }
        }
        if let Some((_, column)) = open {
            return Err(SplitError::UnterminatedQuote(column));
        }
        words.push(Word { text, column: start + 1 });
    }
    Ok(words)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn splits_like_restore_and_shell() {
        let cases: &[(&str, Style, &[&str])] = &[
            ("-A INPUT  -j ACCEPT", Style::Restore, &["-A", "INPUT", "-j", "ACCEPT"]),
            (r#"--comment "two words""#, Style::Restore, &["--comment", "two words"]),
            (r#"--comment "a \"q\" \\ b""#, Style::Restore, &["--comment", r#"a "q" \ b"#]),
            (r#"--comment 'x y'"#, Style::Restore, &["--comment", "'x", "y'"]),
            (r"a\b", Style::Restore, &[r"a\b"]),
            ("# not a comment in restore", Style::Restore, &["#", "not", "a", "comment", "in", "restore"]),
            ("iptables -A X --comment 'x \"y'", Style::Shell, &["iptables", "-A", "X", "--comment", "x \"y"]),
            (r#"--comment "a\nb" c\ d"#, Style::Shell, &["--comment", r"a\nb", "c d"]),
            ("sudo iptables -L # list", Style::Shell, &["sudo", "iptables", "-L"]),
            ("a#b", Style::Shell, &["a#b"]),
            ("", Style::Shell, &[]),
        ];
        for (line, style, want) in cases {
            let got: Vec<String> = split(line, *style).unwrap().into_iter().map(|w| w.text).collect();
            assert_eq!(got, *want, "{line:?} {style:?}");
        }
    }

    #[test]
    fn reports_columns_and_errors() {
        let words = split("  -A  INPUT", Style::Restore).unwrap();
        assert_eq!(words.iter().map(|w| w.column).collect::<Vec<_>>(), [3, 7]);
        assert_eq!(split("-m comment --comment \"open", Style::Restore), Err(SplitError::UnterminatedQuote(22)));
        assert_eq!(split("x 'open", Style::Shell), Err(SplitError::UnterminatedQuote(3)));
        assert_eq!(split("x \\", Style::Shell), Err(SplitError::DanglingEscape));
    }
}
