// SPDX-License-Identifier: GPL-2.0-only
//! A hand mirror of the parts of `<xtables.h>` (libxtables.so.12) the extension touches.
//!
//! Only `repr(C)` types and constants live here, so `build.rs` can include this file and check
//! every size and field offset against the installed header with C `_Static_assert`s: a header
//! that differs fails the build instead of producing a plugin that corrupts iptables' memory.
//! Fields the extension never reads are still mirrored, because libxtables writes them.

use core::ffi::{c_char, c_int, c_uint, c_void};

/// `XTABLES_VERSION`: libxtables refuses to register an extension that names another version.
pub const XTABLES_VERSION: &core::ffi::CStr = c"libxtables.so.12";

/// `NFPROTO_IPV4`.
pub const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`.
pub const NFPROTO_IPV6: u8 = 10;

/// `XTTYPE_STRING` of `enum xt_option_type`: the argument is handed over as text.
pub const XTTYPE_STRING: c_uint = 10;
/// `XTOPT_INVERT` of `enum xt_option_flags`: the option may follow `!`.
pub const XTOPT_INVERT: c_uint = 1 << 0;
/// `PARAMETER_PROBLEM` of `enum xtables_exittype`: a bad rule on the command line.
pub const PARAMETER_PROBLEM: c_int = 2;

/// `XT_EXTENSION_MAXNAMELEN` (with the NUL).
pub const XT_EXTENSION_MAXNAMELEN: usize = 29;

/// `XT_ALIGN(n)`: netfilter aligns match data to 8 bytes (`__alignof__(struct _xt_align)`).
pub const fn xt_align(n: usize) -> usize {
    (n + 7) & !7
}

/// `struct xt_entry_match` in its user-space view; the match data follows at offset 32
/// (`XT_ALIGN(sizeof(struct xt_entry_match))`). The kernel view shares `match_size` and puts a
/// pointer after it, which gives the union its 8-byte alignment.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct XtEntryMatch {
    /// Total size: this header plus the match data.
    pub match_size: u16,
    /// The match name, NUL-terminated.
    pub name: [c_char; XT_EXTENSION_MAXNAMELEN],
    /// The match revision.
    pub revision: u8,
}

/// `struct xt_option_entry`: one row of an extension's `x6_options` table.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XtOptionEntry {
    /// Long option name without dashes; NULL ends the table.
    pub name: *const c_char,
    /// `enum xt_option_type`.
    pub type_: c_uint,
    /// Option number within the extension, 0-31 (a bit of `xflags`).
    pub id: c_uint,
    /// Options this one excludes (bit mask of ids).
    pub excl: c_uint,
    /// Options this one requires (bit mask of ids).
    pub also: c_uint,
    /// `XTOPT_*` flags.
    pub flags: c_uint,
    /// Offset into the match data for `XTOPT_PUT`.
    pub ptroff: c_uint,
    /// Size of the `XTOPT_PUT` target.
    pub size: usize,
    /// Lower bound (integers) or minimum length (strings); 0 for none.
    pub min: c_uint,
    /// Upper bound (integers) or maximum length (strings); 0 for none.
    pub max: c_uint,
}

/// `struct xt_option_call`: what `x6_parse` receives for one option.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XtOptionCall {
    /// The option's argument as typed.
    pub arg: *const c_char,
    /// Name of the extension being parsed.
    pub ext_name: *const c_char,
    /// The `x6_options` row of this option.
    pub entry: *const XtOptionEntry,
    /// The match data (`struct seng_mt_info`, `size` bytes, zeroed before the first option).
    pub data: *mut c_void,
    /// Bit mask of option ids seen so far in this match instance.
    pub xflags: c_uint,
    /// `!` preceded the option (C `bool`, read as a byte so any value is defined).
    pub invert: u8,
    /// Number of values in `val`.
    pub nvals: u8,
    /// `val`: the union of parsed values of the typed options (unused for strings).
    pub val: [u64; 5],
    /// `struct xt_entry_match **` (union with the target pointer).
    pub match_: *mut *mut XtEntryMatch,
    /// The rule being built (`struct ipt_entry *` and the like).
    pub xt_entry: *mut c_void,
    /// The extension's private scratch area (`udata_size` bytes).
    pub udata: *mut c_void,
}

/// `struct xt_fcheck_call`: what `x6_fcheck` receives once all options of a match are parsed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XtFcheckCall {
    /// Name of the extension.
    pub ext_name: *const c_char,
    /// The match data.
    pub data: *mut c_void,
    /// The extension's private scratch area.
    pub udata: *mut c_void,
    /// Bit mask of option ids seen.
    pub xflags: c_uint,
}

/// `struct xtables_match`: an extension's registration record. libxtables links it into its
/// lists and writes the trailing fields, so it must live in writable memory for good.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XtablesMatch {
    /// Must be [`XTABLES_VERSION`].
    pub version: *const c_char,
    /// List link, owned by libxtables (NULL when registering).
    pub next: *mut XtablesMatch,
    /// Match name.
    pub name: *const c_char,
    /// Name of the kernel match if it differs.
    pub real_name: *const c_char,
    /// Match revision.
    pub revision: u8,
    /// `XTABLES_EXT_*` flags.
    pub ext_flags: u8,
    /// `NFPROTO_*` family.
    pub family: u16,
    /// Size of the match data, `XT_ALIGN`ed.
    pub size: usize,
    /// Bytes of match data compared when deleting a rule by specification.
    pub userspacesize: usize,
    /// Prints the option summary for `-m seng --help`.
    pub help: Option<unsafe extern "C" fn()>,
    /// Initialises fresh match data.
    pub init: Option<unsafe extern "C" fn(*mut XtEntryMatch)>,
    /// Old-style getopt parser (unused with `x6_parse`).
    pub parse: Option<
        unsafe extern "C" fn(
            c_int,
            *mut *mut c_char,
            c_int,
            *mut c_uint,
            *const c_void,
            *mut *mut XtEntryMatch,
        ) -> c_int,
    >,
    /// Old-style final check (unused with `x6_fcheck`).
    pub final_check: Option<unsafe extern "C" fn(c_uint)>,
    /// Prints the match for `iptables -L` (`ip`, match, `numeric`).
    pub print: Option<unsafe extern "C" fn(*const c_void, *const XtEntryMatch, c_int)>,
    /// Prints the match for `iptables-save` (`ip`, match).
    pub save: Option<unsafe extern "C" fn(*const c_void, *const XtEntryMatch)>,
    /// Name to print instead of `name`.
    pub alias: Option<unsafe extern "C" fn(*const XtEntryMatch) -> *const c_char>,
    /// Old-style `struct option` table (unused with `x6_options`).
    pub extra_opts: *const c_void,
    /// Parses one option.
    pub x6_parse: Option<unsafe extern "C" fn(*mut XtOptionCall)>,
    /// Checks the complete match.
    pub x6_fcheck: Option<unsafe extern "C" fn(*mut XtFcheckCall)>,
    /// The option table, ended by a row with a NULL name.
    pub x6_options: *const XtOptionEntry,
    /// iptables-to-nft translation (`struct xt_xlate *`, `struct xt_xlate_mt_params *`).
    pub xlate: Option<unsafe extern "C" fn(*mut c_void, *const c_void) -> c_int>,
    /// Size of the private scratch area libxtables allocates per match instance.
    pub udata_size: usize,
    /// Owned by libxtables.
    pub udata: *mut c_void,
    /// Owned by libxtables.
    pub option_offset: c_uint,
    /// Owned by libxtables: the match instance being built.
    pub m: *mut XtEntryMatch,
    /// Owned by libxtables.
    pub mflags: c_uint,
    /// Owned by libxtables.
    pub loaded: c_uint,
}

/// `struct xtables_globals`: the calling program's parameters; `xtables_error` is its
/// `exit_err`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XtablesGlobals {
    /// Base of the merged option numbers.
    pub option_offset: c_uint,
    /// `iptables`, `ip6tables-restore`, ...
    pub program_name: *const c_char,
    /// The iptables version.
    pub program_version: *const c_char,
    /// The program's own `struct option` table.
    pub orig_opts: *mut c_void,
    /// The merged `struct option` table.
    pub opts: *mut c_void,
    /// Prints a printf-style message and exits with the status (declared `noreturn`).
    pub exit_err: Option<unsafe extern "C" fn(status: c_int, fmt: *const c_char, ...)>,
    /// Asks the kernel whether a revision is supported.
    pub compat_rev: Option<unsafe extern "C" fn(*const c_char, u8, c_int) -> c_int>,
}
