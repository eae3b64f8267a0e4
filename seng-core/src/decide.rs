// SPDX-License-Identifier: GPL-2.0-only
//! The match decision: does a packet, given what the table knows about its addresses, satisfy a
//! rule?
//!
//! Semantics (the original's, kept as the default): every option present is one condition and the
//! rule matches only if all hold. A condition on the source holds only if the source address is a
//! registered enclave *and* the possibly negated comparison holds; likewise for the destination.
//! So an unregistered address satisfies no condition, negated or not: `! --src-host 10.0.0.0/26`
//! does not match traffic from an address that is not an enclave.

use core::net::IpAddr;

use crate::host::masked_eq;
use crate::matchinfo::{flags, NfInetAddr};
use crate::table::{EnclaveTable, Platform};
use crate::{Category, Family, Measurement, SengMtInfo};

/// What the table knows about a registered enclave address.
pub trait EnclaveMeta {
    /// The enclave's application measurement.
    fn app(&self) -> &Measurement;
    /// The untrusted host the enclave runs on.
    fn host(&self) -> IpAddr;
    /// Whether the enclave's application has a category equal to the NUL-terminated field.
    fn has_category_field(&self, field: &[u8; crate::category::CATEGORY_FIELD_LEN]) -> bool;

    /// Whether the enclave's application has `category`.
    fn has_category(&self, category: &Category) -> bool {
        self.has_category_field(&category.to_field())
    }
}

struct SideFields<'a> {
    app: &'a [u8; 32],
    cat: &'a [u8; crate::category::CATEGORY_FIELD_LEN],
    host: &'a NfInetAddr,
    mask: &'a NfInetAddr,
    /// The side's flag bits shifted down to the source positions.
    bits: u16,
}

impl SengMtInfo {
    fn src_side(&self) -> SideFields<'_> {
        SideFields {
            app: &self.app_hash_src,
            cat: &self.category_name_src,
            host: &self.host_src,
            mask: &self.src_subnet,
            bits: self.flags & 0x3f,
        }
    }

    fn dst_side(&self) -> SideFields<'_> {
        SideFields {
            app: &self.app_hash_dst,
            cat: &self.category_name_dst,
            host: &self.host_dst,
            mask: &self.dst_subnet,
            bits: (self.flags >> 6) & 0x3f,
        }
    }

    /// True when the rule has a condition on the source address.
    pub fn needs_src(&self) -> bool {
        self.flags & flags::SRC_OPTIONS != 0
    }

    /// True when the rule has a condition on the destination address.
    pub fn needs_dst(&self) -> bool {
        self.flags & flags::DST_OPTIONS != 0
    }
}

#[inline]
fn side_holds<M: EnclaveMeta>(side: &SideFields<'_>, family: Family, meta: Option<&M>) -> bool {
    let has = |bit: u16| side.bits & bit != 0;
    if !has(flags::SRC_OPTIONS) {
        return true;
    }
    let Some(meta) = meta else {
        return false;
    };
    // Each present condition: the comparison must differ from its negation bit.
    if has(flags::APP_SRC) && meta.app().eq_bytes(side.app) == has(flags::APP_SRC_INV) {
        return false;
    }
    if has(flags::CAT_SRC) && meta.has_category_field(side.cat) == has(flags::CAT_SRC_INV) {
        return false;
    }
    if has(flags::HOST_SRC) && masked_eq(family, &side.host.0, &side.mask.0, &meta.host()) == has(flags::HOST_SRC_INV) {
        return false;
    }
    true
}

/// The decision for a rule of `family` given the metadata of the packet's source and destination
/// (`None`: not a registered enclave). Total over any bit pattern of `info`; unknown flag bits are
/// ignored (`checkentry` rejects them before a rule is installed).
pub fn decide<M: EnclaveMeta>(info: &SengMtInfo, family: Family, src: Option<&M>, dst: Option<&M>) -> bool {
    side_holds(&info.src_side(), family, src) && side_holds(&info.dst_side(), family, dst)
}

/// The decision for a packet from `src` to `dst`, looking up in `table` only the sides the rule
/// constrains. Never allocates; call it from the packet path.
#[inline]
pub fn match_packet<P: Platform>(info: &SengMtInfo, family: Family, table: &EnclaveTable<P>, src: &IpAddr, dst: &IpAddr) -> bool {
    let src_meta = if info.needs_src() {
        match table.lookup(src) {
            Some(meta) => Some(meta),
            None => return false,
        }
    } else {
        None
    };
    if !side_holds(&info.src_side(), family, src_meta.as_ref()) {
        return false;
    }
    let dst_meta = if info.needs_dst() { table.lookup(dst) } else { None };
    side_holds(&info.dst_side(), family, dst_meta.as_ref())
}
