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
    #[inline(always)]
    fn src_side(&self) -> SideFields<'_> {
        SideFields {
            app: &self.app_hash_src,
            cat: &self.category_name_src,
            host: &self.host_src,
            mask: &self.src_subnet,
            bits: self.flags & 0x3f,
        }
    }

    #[inline(always)]
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
    #[inline]
    pub fn needs_src(&self) -> bool {
        self.flags & flags::SRC_OPTIONS != 0
    }

    /// True when the rule has a condition on the destination address.
    #[inline]
    pub fn needs_dst(&self) -> bool {
        self.flags & flags::DST_OPTIONS != 0
    }
}

#[inline(always)]
fn side_holds<M: EnclaveMeta>(side: &SideFields<'_>, family: Family, meta: Option<&M>) -> bool {
    if side.bits & flags::SRC_OPTIONS == 0 {
        return true;
    }
    match meta {
        Some(meta) => conditions_hold(side, family, meta),
        None => false,
    }
}

/// Whether every condition of a side with at least one holds for the registered `meta`.
#[inline(always)]
fn conditions_hold<M: EnclaveMeta>(side: &SideFields<'_>, family: Family, meta: &M) -> bool {
    let has = |bit: u16| side.bits & bit != 0;
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
#[inline(always)]
pub fn match_packet<P: Platform>(info: &SengMtInfo, family: Family, table: &EnclaveTable<P>, src: &IpAddr, dst: &IpAddr) -> bool {
    match_addresses(info, family, table, || *src, || *dst)
}

/// [`match_packet`] for a packet whose addresses `src` and `dst` read, each called only if the
/// rule constrains its side (the kernel reads them from the packet's header).
///
/// A rule that compares only the application of one side (the usual one) is decided inline by
/// code that calls nothing and keeps nothing of the other side, so on the packet path it needs
/// no saved registers and no stack frame. Any other rule goes out of line, to the same decision
/// with every flag.
#[inline(always)]
pub fn match_addresses<P: Platform, S, D>(info: &SengMtInfo, family: Family, table: &EnclaveTable<P>, src: S, dst: D) -> bool
where
    S: FnOnce() -> IpAddr,
    D: FnOnce() -> IpAddr,
{
    let flags = info.flags;
    // Only one side's application bits set: the outlined decision with the other side's and
    // the category and host tests folded away, as their bits are known clear.
    if flags & !(flags::APP_SRC | flags::APP_SRC_INV) & flags::ALL == 0 {
        return flags & flags::APP_SRC == 0 || registered_holds(table, &info.src_side(), family, &src());
    }
    if flags & !(flags::APP_DST | flags::APP_DST_INV) & flags::ALL == 0 {
        return flags & flags::APP_DST == 0 || registered_holds(table, &info.dst_side(), family, &dst());
    }
    match_outlined(info, family, table, src, dst)
}

#[inline(never)]
fn match_outlined<P: Platform, S, D>(info: &SengMtInfo, family: Family, table: &EnclaveTable<P>, src: S, dst: D) -> bool
where
    S: FnOnce() -> IpAddr,
    D: FnOnce() -> IpAddr,
{
    let flags = info.flags;
    // An unregistered source fails the rule without a lookup of the destination.
    (flags & flags::SRC_OPTIONS == 0 || registered_holds(table, &info.src_side(), family, &src()))
        && (flags & flags::DST_OPTIONS == 0 || registered_holds(table, &info.dst_side(), family, &dst()))
}

/// Whether `addr` is registered and the side's conditions (at least one) hold for it.
#[inline(always)]
fn registered_holds<P: Platform>(table: &EnclaveTable<P>, side: &SideFields<'_>, family: Family, addr: &IpAddr) -> bool {
    match table.lookup(addr) {
        Some(meta) => conditions_hold(side, family, &meta),
        None => false,
    }
}

#[cfg(all(test, feature = "std"))]
mod test {
    use super::*;
    use crate::table::LocalTable;

    /// The packet path splits rules by their flags into inline and outlined cases: for every
    /// bit pattern (unknown bits included), from registered and unregistered addresses with
    /// metadata that satisfies or fails each condition, it decides as [`decide`] does on the
    /// looked-up metadata.
    #[test]
    fn packet_path_decides_as_decide_for_every_flag_pattern() {
        let (app, other_app) = (Measurement([0x11; 32]), Measurement([0x22; 32]));
        let web = Category::new(b"web").unwrap();
        let host: IpAddr = "10.1.0.1".parse().unwrap();
        let mut table = LocalTable::new(8).unwrap();
        let (good, bad, unregistered): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        table.register(good, &app, host, &[web]).unwrap();
        table.register(bad, &other_app, "10.2.0.1".parse().unwrap(), &[]).unwrap();
        let mut info = SengMtInfo::ZERO;
        info.app_hash_src = app.0;
        info.app_hash_dst = app.0;
        info.category_name_src = web.to_field();
        info.category_name_dst = web.to_field();
        info.host_src.0[..4].copy_from_slice(&[10, 1, 0, 0]);
        info.host_dst.0[..4].copy_from_slice(&[10, 1, 0, 0]);
        info.src_subnet.0[..4].copy_from_slice(&[255, 255, 0, 0]);
        info.dst_subnet.0[..4].copy_from_slice(&[255, 255, 0, 0]);
        let mut outcomes = [0usize; 2];
        for flags in 0..=u16::MAX {
            let info = SengMtInfo { flags, ..info };
            for src in [good, bad, unregistered] {
                for dst in [good, bad, unregistered] {
                    let want = decide(&info, Family::Ipv4, table.lookup(&src).as_ref(), table.lookup(&dst).as_ref());
                    assert_eq!(match_packet(&info, Family::Ipv4, &table, &src, &dst), want, "flags {flags:#x}, {src} -> {dst}");
                    outcomes[usize::from(want)] += 1;
                }
            }
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }
}
