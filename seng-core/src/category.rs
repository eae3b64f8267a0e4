// SPDX-License-Identifier: GPL-2.0-only
//! Application categories: short names (at most 20 bytes) attached to an application, such as
//! `Browser`. In the kernel ABI they travel as NUL-terminated `char[21]`.

use core::fmt;

/// Longest category name in bytes, without the terminating NUL.
pub const CATEGORY_MAX_LEN: usize = 20;
/// Size of the NUL-terminated category field in the kernel ABI.
pub const CATEGORY_FIELD_LEN: usize = CATEGORY_MAX_LEN + 1;

/// A category name: 1 to 20 bytes of UTF-8 without control characters (so it survives
/// `iptables-save` lines and terminals). Stored zero-padded so equality is a fixed-size compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category {
    bytes: [u8; CATEGORY_FIELD_LEN],
}

/// Why bytes are not a category name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CategoryError {
    /// The name is empty.
    Empty,
    /// Longer than 20 bytes; holds the length found.
    TooLong(usize),
    /// A control character (NUL included) or a byte that is not UTF-8, at this 0-based byte
    /// position.
    BadByte(usize),
    /// The ABI field has no NUL within its 21 bytes.
    Unterminated,
}

impl fmt::Display for CategoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CategoryError::Empty => f.write_str("category name is empty"),
            CategoryError::TooLong(n) => {
                write!(f, "category name is {n} bytes, at most {CATEGORY_MAX_LEN} are allowed")
            }
            CategoryError::BadByte(at) => write!(
                f,
                "category name has a control character or invalid UTF-8 at byte {}",
                at + 1
            ),
            CategoryError::Unterminated => {
                write!(f, "category field has no NUL within its {CATEGORY_FIELD_LEN} bytes")
            }
        }
    }
}

impl Category {
    /// A category from its name bytes.
    pub fn new(name: &[u8]) -> Result<Category, CategoryError> {
        if name.is_empty() {
            return Err(CategoryError::Empty);
        }
        if name.len() > CATEGORY_MAX_LEN {
            return Err(CategoryError::TooLong(name.len()));
        }
        // Printable ASCII, what names nearly always are, needs no UTF-8 decoding.
        if !name.iter().all(|b| (0x20..0x7f).contains(b)) {
            let text = core::str::from_utf8(name).map_err(|e| CategoryError::BadByte(e.valid_up_to()))?;
            if let Some((at, _)) = text.char_indices().find(|(_, c)| c.is_control()) {
                return Err(CategoryError::BadByte(at));
            }
        }
        Ok(Category::from_checked(name))
    }

    /// A category from name bytes that [`Category::new`] accepted before (the checks are
    /// skipped; bytes beyond the 20th are ignored).
    pub(crate) fn from_checked(name: &[u8]) -> Category {
        let mut bytes = [0u8; CATEGORY_FIELD_LEN];
        let len = name.len().min(CATEGORY_MAX_LEN);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), name.get(..len)) {
            dst.copy_from_slice(src);
        }
        Category { bytes }
    }

    /// A category from a NUL-terminated ABI field; bytes after the NUL are ignored.
    pub fn from_field(field: &[u8; CATEGORY_FIELD_LEN]) -> Result<Category, CategoryError> {
        let Some(len) = field.iter().position(|&b| b == 0) else {
            return Err(CategoryError::Unterminated);
        };
        Category::new(field.get(..len).unwrap_or_default())
    }

    /// Compares with a NUL-terminated ABI field without validating it: an unterminated or
    /// empty field equals no category. Used on the packet path.
    pub fn eq_field(&self, field: &[u8; CATEGORY_FIELD_LEN]) -> bool {
        let len = self.len();
        // Equal iff the first `len` bytes agree and the field ends right there.
        field.get(len) == Some(&0) && field.get(..len) == self.bytes.get(..len)
    }

    /// The NUL-terminated, zero-padded ABI field.
    pub const fn to_field(&self) -> [u8; CATEGORY_FIELD_LEN] {
        self.bytes
    }

    /// The name bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len()).unwrap_or_default()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Construction guarantees UTF-8; the fallback is unreachable but keeps this panic-free.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Length of the name in bytes (1..=20).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.bytes.iter().position(|&b| b == 0).unwrap_or(CATEGORY_MAX_LEN)
    }

    /// Display adapter for the `iptables-save` spelling: bare when the name has only
    /// `_-0-9a-zA-Z`, otherwise in double quotes with `"`, `\` and `'` escaped by a backslash,
    /// the rule libxtables' `xtables_save_string` follows and `iptables-restore` reads back.
    pub fn save_form(&self) -> SaveForm<'_> {
        SaveForm(self)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Category({:?})", self.as_str())
    }
}

/// The `iptables-save` spelling of a category; see [`Category::save_form`].
pub struct SaveForm<'a>(&'a Category);

impl fmt::Display for SaveForm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.as_str();
        if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return f.write_str(name);
        }
        f.write_str("\"")?;
        for c in name.chars() {
            if matches!(c, '"' | '\\' | '\'') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

impl core::str::FromStr for Category {
    type Err = CategoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::new(s.as_bytes())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn validates_names() {
        let cases: &[(&[u8], Result<usize, CategoryError>)] = &[
            (b"Browser", Ok(7)),
            (b"12345678901234567890", Ok(20)),
            (b"123456789012345678901", Err(CategoryError::TooLong(21))),
            (b"", Err(CategoryError::Empty)),
            (b"a\0b", Err(CategoryError::BadByte(1))),
            (b"tab\there", Err(CategoryError::BadByte(3))),
            (b"ok\xff", Err(CategoryError::BadByte(2))),
            ("Bürosoftware".as_bytes(), Ok(13)),
        ];
        for (name, want) in cases {
            assert_eq!(Category::new(name).map(|c| c.len()), *want, "{name:?}");
        }
    }

    #[test]
    fn field_round_trip_and_compare() {
        let c = Category::new(b"Mail").unwrap();
        let field = c.to_field();
        assert_eq!(&field[..5], b"Mail\0");
        assert_eq!(Category::from_field(&field), Ok(c));
        assert!(c.eq_field(&field));
        let mut garbage_tail = field;
        garbage_tail[10] = b'x';
        assert!(c.eq_field(&garbage_tail), "bytes after the NUL do not matter");
        assert!(!c.eq_field(&Category::new(b"Mailer").unwrap().to_field()));
        assert!(!Category::new(b"Mailer").unwrap().eq_field(&field));
        assert_eq!(Category::from_field(&[b'a'; 21]), Err(CategoryError::Unterminated));
        assert!(!c.eq_field(&[b'a'; 21]));
    }

    #[test]
    fn save_form_quotes_like_xtables() {
        let cases = [
            ("Browser", "Browser"),
            ("web-2_0", "web-2_0"),
            ("My App", "\"My App\""),
            ("a\"b'c\\", "\"a\\\"b\\'c\\\\\""),
        ];
        for (name, want) in cases {
            assert_eq!(Category::new(name.as_bytes()).unwrap().save_form().to_string(), want);
        }
    }
}
