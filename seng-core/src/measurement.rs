// SPDX-License-Identifier: GPL-2.0-only
//! Application measurements: the 32-byte SGX MRENCLAVE that identifies an attested application,
//! written as exactly 64 hex digits.

use core::fmt;

/// Length of a measurement in bytes.
pub const MEASUREMENT_LEN: usize = 32;

/// An application measurement (SGX MRENCLAVE).
// Equality compares the same 32 bytes the derived Hash and Ord see, only word by word.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Clone, Copy, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Measurement(pub [u8; MEASUREMENT_LEN]);

impl Measurement {
    /// Compares with raw measurement bytes (a rule's field) as four words: on the packet path
    /// this stays inline instead of becoming a `memcmp` call. Measurements are digests, so
    /// different ones differ in the first word but once in 2^64: it alone decides a rule that
    /// names another application (most rules a packet meets), the other three only confirm.
    #[inline]
    pub fn eq_bytes(&self, other: &[u8; MEASUREMENT_LEN]) -> bool {
        let (a, b) = (words(&self.0), words(other));
        a[0] == b[0] && ((a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0
    }
}

#[inline]
fn words(bytes: &[u8; MEASUREMENT_LEN]) -> [u64; 4] {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7, c0, c1, c2, c3, c4, c5, c6, c7, d0, d1, d2, d3, d4, d5, d6, d7] = *bytes;
    [
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        u64::from_ne_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
        u64::from_ne_bytes([d0, d1, d2, d3, d4, d5, d6, d7]),
    ]
}

impl PartialEq for Measurement {
    #[inline]
    fn eq(&self, other: &Measurement) -> bool {
        self.eq_bytes(&other.0)
    }
}

/// Why a text is not a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexError {
    /// Not exactly 64 characters; holds the number found.
    Length(usize),
    /// A character that is not a hex digit, at a 0-based character position.
    Digit {
        /// 0-based position of the offending character.
        position: usize,
        /// The offending character.
        found: char,
    },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HexError::Length(n) => write!(
                f,
                "must be exactly {} hex digits, found {n} characters",
                2 * MEASUREMENT_LEN
            ),
            HexError::Digit { position, found } => {
                write!(f, "{found:?} at position {} is not a hex digit", position + 1)
            }
        }
    }
}

impl Measurement {
    /// Parses exactly 64 hex digits (either case).
    pub fn parse_hex(text: &str) -> Result<Measurement, HexError> {
        // Fast path for well-formed text (restores parse millions); errors take the slow path,
        // which finds the position to report.
        if let Some(m) = Self::parse_hex_bytes(text.as_bytes()) {
            return Ok(m);
        }
        let chars = text.chars().count();
        if chars != 2 * MEASUREMENT_LEN || text.len() != chars {
            // A non-ASCII character makes byte and char counts differ; report it as a digit error.
            if let Some((position, found)) = text.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
                if chars == 2 * MEASUREMENT_LEN {
                    return Err(HexError::Digit { position, found });
                }
            }
            return Err(HexError::Length(chars));
        }
        let mut out = [0u8; MEASUREMENT_LEN];
        let mut digits = text.chars().enumerate();
        for byte in out.iter_mut() {
            let mut value = 0u8;
            for _ in 0..2 {
                let Some((position, found)) = digits.next() else {
                    return Err(HexError::Length(chars));
                };
                let Some(nibble) = found.to_digit(16) else {
                    return Err(HexError::Digit { position, found });
                };
                value = (value << 4) | nibble as u8;
            }
            *byte = value;
        }
        Ok(Measurement(out))
    }
}

impl Measurement {
    /// Decodes exactly 64 hex digits (either case); `None` for anything else. Eight digits at a
    /// time: restores decode millions, and in an emulated guest every byte-sized step is dear.
    pub fn parse_hex_bytes(text: &[u8]) -> Option<Measurement> {
        let digits: &[u8; 2 * MEASUREMENT_LEN] = text.try_into().ok()?;
        let mut out = [0u8; MEASUREMENT_LEN];
        let mut bad = 0;
        // Indexed rather than chunks_exact, whose non-inlined constructor divides by its chunk size.
        for word in 0..MEASUREMENT_LEN / 4 {
            let chunk: [u8; 8] = digits.get(8 * word..8 * word + 8)?.try_into().ok()?;
            let (decoded, chunk_bad) = hex_word(u64::from_le_bytes(chunk));
            for (byte, d) in out.iter_mut().skip(4 * word).zip(decoded.to_le_bytes()) {
                *byte = d;
            }
            bad |= chunk_bad;
        }
        // One test for all 64 digits: bad text is rare.
        (bad == 0).then_some(Measurement(out))
    }
}

/// Decodes eight ASCII hex digits, the first in the lowest byte, into four bytes, the first in
/// the lowest byte, working on all eight at once. The second value is nonzero if any byte is not a
/// hex digit, and the first is then meaningless.
fn hex_word(word: u64) -> (u32, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    // For a byte below 0x80, adding 0x80 - k sets its high bit exactly when it is at least k, and
    // carries into no other byte; the high bits of the sums for the bounds of a range differ
    // exactly inside it. A byte from 0x80 up is flagged by its own high bit, and makes the whole
    // word bad whatever its carry did to the next byte.
    let in_range = |x: u64, low: u8, high: u8| {
        (x.wrapping_add(ONES * u64::from(0x80 - low)) ^ x.wrapping_add(ONES * u64::from(0x7f - high))) & HIGH
    };
    let digit = in_range(word, b'0', b'9');
    // Clearing bit 5 folds 'a'..='f' onto 'A'..='F', and no other byte onto them.
    let letter = in_range(word & !(ONES * 0x20), b'A', b'F');
    let bad = (word | !(digit | letter)) & HIGH;
    // The low four bits are a digit's value, and a letter's value less 9; only letters have bit 6.
    let is_letter = (word >> 6) & ONES;
    let nibbles = (word & (ONES * 0x0f)) + ((is_letter << 3) | is_letter);
    // Pair up nibbles: byte 2i becomes nibble 2i << 4 | nibble 2i+1; then gather bytes 0, 2, 4, 6.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    ((quads | (quads >> 16)) as u32, bad)
}

impl fmt::Display for Measurement {
    /// Lower-case hex, the canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 2 * MEASUREMENT_LEN];
        for (pair, b) in text.chunks_exact_mut(2).zip(self.0) {
            for (slot, nibble) in pair.iter_mut().zip([b >> 4, b & 0xf]) {
                *slot = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
            }
        }
        // Only ASCII hex digits were written.
        f.write_str(core::str::from_utf8(&text).unwrap_or_default())
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({self})")
    }
}

impl core::str::FromStr for Measurement {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Measurement::parse_hex(s)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SAMPLE: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

    #[test]
    fn round_trips_lower_case() {
        let m = Measurement::parse_hex(SAMPLE).unwrap();
        assert_eq!(m.0[0], 0xd9);
        assert_eq!(m.0[31], 0xb0);
        assert_eq!(m.to_string(), SAMPLE);
        assert_eq!(Measurement::parse_hex(&SAMPLE.to_uppercase()).unwrap(), m);
    }

    #[test]
    fn round_trips_every_byte_value_in_every_position() {
        for k in 0..=255u8 {
            let m = Measurement(core::array::from_fn(|i| k.wrapping_add((i as u8).wrapping_mul(37))));
            assert_eq!(Measurement::parse_hex(&m.to_string()), Ok(m));
            assert_eq!(Measurement::parse_hex(&m.to_string().to_uppercase()), Ok(m));
        }
    }

    #[test]
    fn decodes_like_one_digit_at_a_time() {
        // Every byte value at every position, against the obvious decoder.
        let reference = |text: &[u8]| -> Option<[u8; MEASUREMENT_LEN]> {
            let nibble = |c: u8| char::from(c).to_digit(16);
            let mut out = [0u8; MEASUREMENT_LEN];
            for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
                *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
            }
            Some(out)
        };
        let base = SAMPLE.replace("ab", "AB").into_bytes();
        for position in 0..base.len() {
            for value in 0..=255u8 {
                let mut text = base.clone();
                text[position] = value;
                assert_eq!(Measurement::parse_hex_bytes(&text).map(|m| m.0), reference(&text), "{value:#x} at {position}");
            }
        }
    }

    #[test]
    fn rejects_bad_text_with_position() {
        let cases: &[(&str, HexError)] = &[
            ("", HexError::Length(0)),
            ("abc", HexError::Length(3)),
            (&SAMPLE[..63], HexError::Length(63)),
        ];
        for (text, want) in cases {
            assert_eq!(Measurement::parse_hex(text), Err(*want), "{text:?}");
        }
        let mut bad = SAMPLE.to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(Measurement::parse_hex(&bad), Err(HexError::Digit { position: 10, found: 'g' }));
        let mut wide = SAMPLE[..63].to_string();
        wide.push('é');
        assert_eq!(Measurement::parse_hex(&wide), Err(HexError::Digit { position: 63, found: 'é' }));
        assert_eq!(
            HexError::Digit { position: 10, found: 'g' }.to_string(),
            "'g' at position 11 is not a hex digit"
        );
    }
}
