// SPDX-License-Identifier: GPL-2.0-only
//! The revision-0 match data `struct seng_mt_info`, byte-identical to the original's ABI.
//!
//! iptables fills it from the rule options and hands it to the kernel, which validates it once in
//! `checkentry` ([`SengMtInfo::validate`]) and then reads it for every packet ([`crate::decide()`]).
//! Every field is plain bytes, so any bit pattern is a valid value of the struct: reading a
//! hostile blob is never undefined behaviour, only possibly [`MatchInfoError`].

use core::fmt;

use crate::category::{CategoryError, CATEGORY_FIELD_LEN};
use crate::rule::{Cond, Side};
use crate::{Category, Family, HostMask, Measurement, Rule};

/// `union nf_inet_addr`: 16 bytes, 4-byte aligned; IPv4 in the first four bytes, network order.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NfInetAddr(pub [u8; 16]);

/// `struct seng_mt_info` (x86_64 layout; see the offset tests).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SengMtInfo {
    /// Source application measurement.
    pub app_hash_src: [u8; 32],
    /// Source category, NUL-terminated.
    pub category_name_src: [u8; CATEGORY_FIELD_LEN],
    /// Alignment padding before `host_src`; zero when we write it.
    pub pad_src: [u8; 3],
    /// Source untrusted-host address.
    pub host_src: NfInetAddr,
    /// Source untrusted-host mask.
    pub src_subnet: NfInetAddr,
    /// Destination application measurement.
    pub app_hash_dst: [u8; 32],
    /// Destination category, NUL-terminated.
    pub category_name_dst: [u8; CATEGORY_FIELD_LEN],
    /// Alignment padding before `host_dst`.
    pub pad_dst: [u8; 3],
    /// Destination untrusted-host address.
    pub host_dst: NfInetAddr,
    /// Destination untrusted-host mask.
    pub dst_subnet: NfInetAddr,
    /// Which options are present and negated; see [`flags`].
    pub flags: u16,
    /// Tail padding to the struct's 4-byte alignment.
    pub pad_tail: [u8; 2],
}

/// Size of `struct seng_mt_info`.
pub const MATCHINFO_LEN: usize = 180;
/// `XT_ALIGN(sizeof(struct seng_mt_info))`: the match size iptables and the kernel agree on.
pub const MATCHINFO_XT_SIZE: usize = (MATCHINFO_LEN + 7) & !7;

const _: () = assert!(core::mem::size_of::<SengMtInfo>() == MATCHINFO_LEN);
const _: () = assert!(core::mem::align_of::<SengMtInfo>() == 4);
const _: () = assert!(MATCHINFO_XT_SIZE == 184);

/// Bits of [`SengMtInfo::flags`].
pub mod flags {
    /// `--src-app` present.
    pub const APP_SRC: u16 = 1 << 0;
    /// `--src-app` negated.
    pub const APP_SRC_INV: u16 = 1 << 1;
    /// `--src-cat` present.
    pub const CAT_SRC: u16 = 1 << 2;
    /// `--src-cat` negated.
    pub const CAT_SRC_INV: u16 = 1 << 3;
    /// `--src-host` present.
    pub const HOST_SRC: u16 = 1 << 4;
    /// `--src-host` negated.
    pub const HOST_SRC_INV: u16 = 1 << 5;
    /// `--dst-app` present.
    pub const APP_DST: u16 = 1 << 6;
    /// `--dst-app` negated.
    pub const APP_DST_INV: u16 = 1 << 7;
    /// `--dst-cat` present.
    pub const CAT_DST: u16 = 1 << 8;
    /// `--dst-cat` negated.
    pub const CAT_DST_INV: u16 = 1 << 9;
    /// `--dst-host` present.
    pub const HOST_DST: u16 = 1 << 10;
    /// `--dst-host` negated.
    pub const HOST_DST_INV: u16 = 1 << 11;
    /// Every defined bit.
    pub const ALL: u16 = (1 << 12) - 1;
    /// The option bits of the source side.
    pub const SRC_OPTIONS: u16 = APP_SRC | CAT_SRC | HOST_SRC;
    /// The option bits of the destination side.
    pub const DST_OPTIONS: u16 = APP_DST | CAT_DST | HOST_DST;
    /// Every option bit; each INV bit is its option bit shifted left by one.
    pub const OPTIONS: u16 = SRC_OPTIONS | DST_OPTIONS;
}

/// Why match data is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchInfoError {
    /// The blob is not exactly the struct's size (or its XT_ALIGN'ed size); holds the length.
    Size(usize),
    /// Flag bits outside the defined twelve.
    UnknownFlags(u16),
    /// Negation bits set for options that are absent.
    NegationWithoutOption(u16),
    /// No option at all.
    NoOption,
    /// The source or destination category field is unterminated, empty or has bad bytes.
    Category {
        /// True for the destination side.
        dst: bool,
        /// What is wrong with it.
        error: CategoryError,
    },
}

impl fmt::Display for MatchInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchInfoError::Size(n) => {
                write!(f, "match data is {n} bytes, expected {MATCHINFO_LEN} or {MATCHINFO_XT_SIZE}")
            }
            MatchInfoError::UnknownFlags(bits) => write!(f, "unknown flag bits {bits:#06x}"),
            MatchInfoError::NegationWithoutOption(bits) => {
                write!(f, "negation flag bits {bits:#06x} set without their options")
            }
            MatchInfoError::NoOption => f.write_str("no seng option set"),
            MatchInfoError::Category { dst, error } => {
                write!(f, "{} category: {error}", if *dst { "destination" } else { "source" })
            }
        }
    }
}

impl core::error::Error for MatchInfoError {}

impl SengMtInfo {
    /// All zero: no options.
    pub const ZERO: SengMtInfo = SengMtInfo {
        app_hash_src: [0; 32],
        category_name_src: [0; CATEGORY_FIELD_LEN],
        pad_src: [0; 3],
        host_src: NfInetAddr([0; 16]),
        src_subnet: NfInetAddr([0; 16]),
        app_hash_dst: [0; 32],
        category_name_dst: [0; CATEGORY_FIELD_LEN],
        pad_dst: [0; 3],
        host_dst: NfInetAddr([0; 16]),
        dst_subnet: NfInetAddr([0; 16]),
        flags: 0,
        pad_tail: [0; 2],
    };

    /// The struct's bytes in native layout (flags in host byte order, as the kernel sees them).
    pub fn as_bytes(&self) -> &[u8; MATCHINFO_LEN] {
        // SAFETY: repr(C) with explicit padding fields and no implicit padding (size is checked
        // above to equal the sum of the fields), so every byte is initialised; u8 arrays have
        // alignment 1.
        unsafe { &*(self as *const SengMtInfo as *const [u8; MATCHINFO_LEN]) }
    }

    /// Copies the struct out of a blob of exactly 180 or 184 bytes (the kernel and iptables use
    /// the XT_ALIGN'ed size; the trailing 4 bytes are ignored).
    pub fn from_bytes(bytes: &[u8]) -> Result<SengMtInfo, MatchInfoError> {
        if bytes.len() != MATCHINFO_LEN && bytes.len() != MATCHINFO_XT_SIZE {
            return Err(MatchInfoError::Size(bytes.len()));
        }
        let mut info = SengMtInfo::ZERO;
        // SAFETY: see as_bytes: all bit patterns are valid, and the view covers exactly the struct.
        let dst = unsafe { &mut *(&mut info as *mut SengMtInfo as *mut [u8; MATCHINFO_LEN]) };
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d = *s;
        }
        Ok(info)
    }

    /// The checks the kernel's `checkentry` applies: defined flags only, no negation without its
    /// option, at least one option, and each category present is a valid NUL-terminated name.
    pub fn validate(&self) -> Result<(), MatchInfoError> {
        let unknown = self.flags & !flags::ALL;
        if unknown != 0 {
            return Err(MatchInfoError::UnknownFlags(unknown));
        }
        let negations = self.flags & !flags::OPTIONS;
        let orphans = negations & !(self.flags << 1);
        if orphans != 0 {
            return Err(MatchInfoError::NegationWithoutOption(orphans));
        }
        if self.flags & flags::OPTIONS == 0 {
            return Err(MatchInfoError::NoOption);
        }
        for (bit, field, dst) in [
            (flags::CAT_SRC, &self.category_name_src, false),
            (flags::CAT_DST, &self.category_name_dst, true),
        ] {
            if self.flags & bit != 0 {
                Category::from_field(field).map_err(|error| MatchInfoError::Category { dst, error })?;
            }
        }
        Ok(())
    }

    /// Validates and converts to a [`Rule`] of `family`.
    pub fn to_rule(&self, family: Family) -> Result<Rule, MatchInfoError> {
        self.validate()?;
        let side = |app: &[u8; 32], cat: &[u8; CATEGORY_FIELD_LEN], host: &NfInetAddr, mask: &NfInetAddr, shift: u32, dst: bool| {
            let bits = self.flags >> shift;
            let cat = match bits & flags::CAT_SRC != 0 {
                true => Some(Category::from_field(cat).map_err(|error| MatchInfoError::Category { dst, error })?),
                false => None,
            };
            Ok(Side {
                app: cond(bits, flags::APP_SRC, Some(Measurement(*app))),
                cat: cond(bits, flags::CAT_SRC, cat),
                host: cond(bits, flags::HOST_SRC, Some(HostMask::from_raw(family, &host.0, &mask.0))),
            })
        };
        Ok(Rule {
            family,
            src: side(&self.app_hash_src, &self.category_name_src, &self.host_src, &self.src_subnet, 0, false)?,
            dst: side(&self.app_hash_dst, &self.category_name_dst, &self.host_dst, &self.dst_subnet, 6, true)?,
        })
    }
}

/// The condition for option bit `present` (its INV bit is the next one up) of a side's flags.
fn cond<T>(bits: u16, present: u16, value: Option<T>) -> Option<Cond<T>> {
    if bits & present == 0 {
        return None;
    }
    value.map(|value| Cond { value, negated: bits & (present << 1) != 0 })
}

impl From<&Rule> for SengMtInfo {
    /// The canonical encoding: unused fields and padding zero, hosts masked.
    fn from(rule: &Rule) -> SengMtInfo {
        let mut info = SengMtInfo::ZERO;
        let mut flag_bits = 0u16;
        for (side, shift, app, cat, host, mask) in [
            (&rule.src, 0, &mut info.app_hash_src, &mut info.category_name_src, &mut info.host_src, &mut info.src_subnet),
            (&rule.dst, 6, &mut info.app_hash_dst, &mut info.category_name_dst, &mut info.host_dst, &mut info.dst_subnet),
        ] {
            let mut set = |present: u16, negated: bool| {
                flag_bits |= present << shift;
                if negated {
                    flag_bits |= present << (shift + 1);
                }
            };
            if let Some(c) = &side.app {
                *app = c.value.0;
                set(flags::APP_SRC, c.negated);
            }
            if let Some(c) = &side.cat {
                *cat = c.value.to_field();
                set(flags::CAT_SRC, c.negated);
            }
            if let Some(c) = &side.host {
                host.0 = c.value.addr_field();
                mask.0 = c.value.mask_field();
                set(flags::HOST_SRC, c.negated);
            }
        }
        info.flags = flag_bits;
        info
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layout_matches_the_original_abi() {
        let offsets = [
            (offset_of!(SengMtInfo, app_hash_src), 0),
            (offset_of!(SengMtInfo, category_name_src), 32),
            (offset_of!(SengMtInfo, host_src), 56),
            (offset_of!(SengMtInfo, src_subnet), 72),
            (offset_of!(SengMtInfo, app_hash_dst), 88),
            (offset_of!(SengMtInfo, category_name_dst), 120),
            (offset_of!(SengMtInfo, host_dst), 144),
            (offset_of!(SengMtInfo, dst_subnet), 160),
            (offset_of!(SengMtInfo, flags), 176),
        ];
        for (got, want) in offsets {
            assert_eq!(got, want);
        }
        assert_eq!(core::mem::size_of::<SengMtInfo>(), 180);
        assert_eq!(MATCHINFO_XT_SIZE, 184);
        assert_eq!(core::mem::size_of::<NfInetAddr>(), 16);
        assert_eq!(core::mem::align_of::<NfInetAddr>(), 4);
    }

    #[test]
    fn encodes_sample_rule_at_the_right_bytes() {
        let rule = Rule::parse(
            "! --src-host 10.0.0.0/26 --src-cat Browser --dst-app d5876e37d31ad62d4eafd36997820b18fdea7b104a0e2d3f81873230be2af792",
            Family::Ipv4,
        )
        .unwrap();
        let info = SengMtInfo::from(&rule);
        let bytes = info.as_bytes();
        assert_eq!(&bytes[32..40], b"Browser\0");
        assert_eq!(&bytes[56..60], &[10, 0, 0, 0]);
        assert_eq!(&bytes[72..76], &[255, 255, 255, 192]);
        assert_eq!(&bytes[88..90], &[0xd5, 0x87]);
        let flag_bits = u16::from_ne_bytes([bytes[176], bytes[177]]);
        assert_eq!(flag_bits, flags::HOST_SRC | flags::HOST_SRC_INV | flags::CAT_SRC | flags::APP_DST);
        assert_eq!(info.to_rule(Family::Ipv4), Ok(rule));
        let mut blob = [0u8; MATCHINFO_XT_SIZE];
        blob[..MATCHINFO_LEN].copy_from_slice(bytes);
        assert_eq!(SengMtInfo::from_bytes(&blob), Ok(info));
    }

    #[test]
    fn validation_rejects_malformed_data() {
        let with_flags = |f: u16| SengMtInfo { flags: f, ..SengMtInfo::ZERO };
        let mut unterminated = with_flags(flags::CAT_DST);
        unterminated.category_name_dst = [b'x'; CATEGORY_FIELD_LEN];
        let cases = [
            (with_flags(0), Err(MatchInfoError::NoOption)),
            (with_flags(flags::APP_SRC | 1 << 12), Err(MatchInfoError::UnknownFlags(1 << 12))),
            (with_flags(flags::APP_SRC | flags::HOST_DST_INV), Err(MatchInfoError::NegationWithoutOption(flags::HOST_DST_INV))),
            (with_flags(flags::APP_SRC_INV), Err(MatchInfoError::NegationWithoutOption(flags::APP_SRC_INV))),
            (with_flags(flags::CAT_SRC), Err(MatchInfoError::Category { dst: false, error: CategoryError::Empty })),
            (unterminated, Err(MatchInfoError::Category { dst: true, error: CategoryError::Unterminated })),
            (with_flags(flags::HOST_SRC | flags::HOST_SRC_INV), Ok(())),
        ];
        for (info, want) in cases {
            assert_eq!(info.validate(), want, "{:#x}", info.flags);
        }
        assert_eq!(SengMtInfo::from_bytes(&[0; 179]), Err(MatchInfoError::Size(179)));
    }
}
