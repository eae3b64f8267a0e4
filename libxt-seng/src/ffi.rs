// SPDX-License-Identifier: GPL-2.0-only
//! The C side of the plugin: the registration records, the callbacks libxtables calls, the
//! load-time constructor, and the two ways out to the C program (its stdout and
//! `xtables_error`).
//!
//! Each callback turns raw pointers into slices, hands them to [`crate::ext`] inside
//! `catch_unwind` (unwinding into C is undefined), and reports the result. Output goes through
//! C `printf`, never Rust's `stdout`, because iptables writes the rest of the line with buffered
//! stdio and the two buffers would interleave out of order.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::ptr::{addr_of, null, null_mut};
use std::panic::{catch_unwind, AssertUnwindSafe};

use seng_core::matchinfo::{MatchInfoError, MATCHINFO_LEN, MATCHINFO_XT_SIZE};
use seng_core::Family;

use crate::ext::{self, Blob, Shown};
use crate::xtables::*;

extern "C" {
    /// The calling program's globals; `xtables_error` is `xt_params->exit_err`.
    static mut xt_params: *mut XtablesGlobals;
    /// Adds extensions to libxtables' pending list (those of another family are ignored).
    /// Only the constructor calls it, and unit tests leave that out.
    #[cfg_attr(test, allow(dead_code))]
    fn xtables_register_matches(matches: *mut XtablesMatch, n: c_uint);
    fn printf(fmt: *const c_char, ...) -> c_int;
}

/// The family a callback instance serves: one registration per family, each with its own
/// monomorphised callbacks, since libxtables does not pass the family along. Evaluated at
/// compile time, so a record for another family does not build.
const fn family<const NFPROTO: u8>() -> Family {
    const {
        match Family::from_nfproto(NFPROTO) {
            Some(family) => family,
            None => panic!("seng serves NFPROTO_IPV4 and NFPROTO_IPV6 only"),
        }
    }
}

/// Writes `text` to the C program's stdout.
fn c_print(text: &str) {
    for chunk in text.as_bytes().chunks(c_int::MAX as usize) {
        // SAFETY: "%.*s" reads exactly `len` bytes from a live buffer (stopping early at a NUL).
        unsafe { printf(c"%.*s".as_ptr(), chunk.len() as c_int, chunk.as_ptr()) };
    }
}

/// `xtables_error(PARAMETER_PROBLEM, "%s", message)`: prints the program's prefix, the message
/// and the usage hint, and exits.
fn parameter_problem(message: &str) -> ! {
    let text: Vec<u8> = message
        .bytes()
        .map(|b| if b == 0 { b'?' } else { b })
        .chain([0])
        .collect();
    // SAFETY: xt_params is set by the program before it loads extensions (and checked for NULL);
    // exit_err is printf-like, and "%s" consumes the one NUL-terminated argument passed.
    unsafe {
        let params = addr_of!(xt_params).read();
        if let Some(exit_err) = params.as_ref().and_then(|p| p.exit_err) {
            exit_err(
                PARAMETER_PROBLEM,
                c"%s".as_ptr(),
                text.as_ptr().cast::<c_char>(),
            );
        }
    }
    // exit_err is declared noreturn; if a program's version returns anyway, still stop here.
    eprintln!("{message}");
    std::process::exit(PARAMETER_PROBLEM)
}

/// Runs `f`, turning a panic into an error message.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(format!("seng: internal error in {what}")))
}

/// The match data behind `data`, which libxtables allocates with the registered `size`.
///
/// # Safety
/// `data` is NULL or points to `MATCHINFO_XT_SIZE` writable bytes no one else accesses.
unsafe fn blob<'a>(data: *mut c_void) -> Result<&'a mut Blob, String> {
    // SAFETY: per the contract; a byte array needs no alignment.
    unsafe { data.cast::<Blob>().as_mut() }.ok_or_else(|| "seng: no match data".to_owned())
}

/// `x6_parse`: one option into the match data.
///
/// # Safety
/// libxtables' contract: `cb` is a valid call whose `data` has the registered size.
unsafe extern "C" fn x6_parse<const NFPROTO: u8>(cb: *mut XtOptionCall) {
    let result = guarded("option parsing", || {
        // SAFETY: per the contract; entry and arg point into libxtables' and getopt's data.
        let cb = unsafe { cb.as_mut() }.ok_or("seng: no option call")?;
        let entry = unsafe { cb.entry.as_ref() }.ok_or("seng: option call without option")?;
        let arg = match cb.arg.is_null() {
            true => &[][..],
            false => unsafe { CStr::from_ptr(cb.arg) }.to_bytes(),
        };
        let data = unsafe { blob(cb.data) }?;
        ext::parse_option(data, family::<NFPROTO>(), entry.id, cb.invert != 0, arg)?;
        // What libxtables' own option parser would record for its generic checks.
        cb.xflags |= 1u32.checked_shl(entry.id).unwrap_or(0);
        Ok(())
    });
    if let Err(message) = result {
        parameter_problem(&message);
    }
}

/// `x6_fcheck`: the complete match.
///
/// # Safety
/// libxtables' contract: `cb` is a valid call whose `data` has the registered size.
unsafe extern "C" fn x6_fcheck<const NFPROTO: u8>(cb: *mut XtFcheckCall) {
    let result = guarded("the final check", || {
        // SAFETY: per the contract.
        let cb = unsafe { cb.as_ref() }.ok_or("seng: no final check call")?;
        let data = unsafe { blob(cb.data) }?;
        ext::final_check(data, family::<NFPROTO>())
    });
    if let Err(message) = result {
        parameter_problem(&message);
    }
}

/// The data of a match as iptables hands it back from the kernel: readable only when
/// `match_size` says it holds a whole `struct seng_mt_info`; any other size is reported without
/// reading past the header.
///
/// # Safety
/// `m` is NULL or points to a match entry of `match_size` readable bytes.
unsafe fn shown<'a>(m: *const XtEntryMatch) -> Shown<'a> {
    // SAFETY: per the contract.
    let Some(header) = (unsafe { m.as_ref() }) else {
        return Err(MatchInfoError::Size(0));
    };
    let len = usize::from(header.match_size).saturating_sub(size_of::<XtEntryMatch>());
    if len != MATCHINFO_LEN && len != MATCHINFO_XT_SIZE {
        return Err(MatchInfoError::Size(len));
    }
    // SAFETY: the data follows the header, and match_size covers it.
    Ok(unsafe { core::slice::from_raw_parts(m.cast::<u8>().add(size_of::<XtEntryMatch>()), len) })
}

/// `print`: the `iptables -L` form.
///
/// # Safety
/// libxtables' contract: `m` is a match entry of `match_size` bytes.
unsafe extern "C" fn print<const NFPROTO: u8>(
    _ip: *const c_void,
    m: *const XtEntryMatch,
    _numeric: c_int,
) {
    // SAFETY: per the contract.
    let text = guarded("printing", || {
        Ok(ext::list_text(unsafe { shown(m) }, family::<NFPROTO>()))
    });
    c_print(&text.unwrap_or_else(|e| format!(" [{e}]")));
}

/// `save`: the `iptables-save` form.
///
/// # Safety
/// libxtables' contract: `m` is a match entry of `match_size` bytes.
unsafe extern "C" fn save<const NFPROTO: u8>(_ip: *const c_void, m: *const XtEntryMatch) {
    // SAFETY: per the contract.
    let text = guarded("saving", || {
        Ok(ext::save_text(unsafe { shown(m) }, family::<NFPROTO>()))
    });
    c_print(&text.unwrap_or_else(|e| format!(" [{e}]")));
}

/// `help`.
unsafe extern "C" fn help() {
    c_print(&guarded("help", || Ok(ext::help_text())).unwrap_or_else(|e| format!("{e}\n")));
}

/// Static data holding C pointers, which libxtables only reads or owns once registered.
#[repr(transparent)]
struct CShared<T>(UnsafeCell<T>);

// SAFETY: Rust code never touches the contents after construction; libxtables uses them from
// the program's single thread.
unsafe impl<T> Sync for CShared<T> {}

/// An option row: `--NAME ARG`, negatable, id = its index in `SengOption::ALL`.
const fn option(name: &'static CStr, id: c_uint) -> XtOptionEntry {
    XtOptionEntry {
        name: name.as_ptr(),
        type_: XTTYPE_STRING,
        id,
        excl: 0,
        also: 0,
        flags: XTOPT_INVERT,
        ptroff: 0,
        size: 0,
        min: 0,
        max: 0,
    }
}

/// The `x6_options` table, in the order of `SengOption::ALL`, ended by a NULL name.
static OPTIONS: CShared<[XtOptionEntry; 7]> = CShared(UnsafeCell::new([
    option(c"src-app", 0),
    option(c"src-cat", 1),
    option(c"src-host", 2),
    option(c"dst-app", 3),
    option(c"dst-cat", 4),
    option(c"dst-host", 5),
    XtOptionEntry {
        name: null(),
        ..option(c"", 0)
    },
]));

/// The registration record of `seng` revision 0 for one family.
const fn seng_match<const NFPROTO: u8>() -> XtablesMatch {
    XtablesMatch {
        version: XTABLES_VERSION.as_ptr(),
        next: null_mut(),
        name: c"seng".as_ptr(),
        real_name: null(),
        revision: 0,
        ext_flags: 0,
        family: NFPROTO as u16,
        size: xt_align(MATCHINFO_LEN),
        // All of it: the encoding is canonical, so equal rules have equal bytes (`-D`).
        userspacesize: xt_align(MATCHINFO_LEN),
        help: Some(help),
        init: None,
        parse: None,
        final_check: None,
        print: Some(print::<NFPROTO>),
        save: Some(save::<NFPROTO>),
        alias: None,
        extra_opts: null(),
        x6_parse: Some(x6_parse::<NFPROTO>),
        x6_fcheck: Some(x6_fcheck::<NFPROTO>),
        x6_options: OPTIONS.0.get().cast_const().cast::<XtOptionEntry>(),
        xlate: None,
        udata_size: 0,
        udata: null_mut(),
        option_offset: 0,
        m: null_mut(),
        mflags: 0,
        loaded: 0,
    }
}

/// The records libxtables links into its lists (and writes to) for the life of the program.
static MATCHES: CShared<[XtablesMatch; 2]> = CShared(UnsafeCell::new([
    seng_match::<NFPROTO_IPV4>(),
    seng_match::<NFPROTO_IPV6>(),
]));

/// The plugin's `_init`: registers both families when iptables dlopens the library. Unit tests
/// leave out the constructor that calls it (see `INIT`).
#[cfg_attr(test, allow(dead_code))]
unsafe extern "C" fn register() {
    // SAFETY: reading the pointer value of libxtables' global.
    let params = unsafe { addr_of!(xt_params).read() };
    // Loaded by something other than an xtables program: libxtables has no family set up and
    // would crash on registration, so there is nothing to register with.
    if params.is_null() {
        return;
    }
    // SAFETY: the records are valid, 'static, and handed over exactly once (constructor).
    unsafe { xtables_register_matches(MATCHES.0.get().cast::<XtablesMatch>(), 2) };
}

/// The load-time constructor entry. Unit tests link this crate into a test binary that is no
/// xtables program, so they leave it out.
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: unsafe extern "C" fn() = register;

#[cfg(test)]
mod test {
    use super::*;
    use seng_core::rule::SengOption;

    fn records() -> &'static [XtablesMatch; 2] {
        // SAFETY: tests never register the records, so nothing else reads or writes them.
        unsafe { &*MATCHES.0.get() }
    }

    fn options() -> &'static [XtOptionEntry; 7] {
        // SAFETY: read-only.
        unsafe { &*OPTIONS.0.get() }
    }

    #[test]
    fn records_describe_seng_revision_0_for_both_families() {
        for (record, nfproto) in records().iter().zip([2u16, 10]) {
            // SAFETY: static C strings.
            let (version, name) =
                unsafe { (CStr::from_ptr(record.version), CStr::from_ptr(record.name)) };
            assert_eq!(version, c"libxtables.so.12");
            assert_eq!(name, c"seng");
            assert_eq!((record.revision, record.family), (0, nfproto));
            assert_eq!((record.size, record.userspacesize), (184, 184));
            assert!(
                record.x6_parse.is_some() && record.x6_fcheck.is_some() && record.save.is_some()
            );
            assert_eq!(record.x6_options, options().as_ptr());
        }
    }

    #[test]
    fn option_table_follows_seng_core() {
        let (rows, end) = options().split_at(6);
        for (row, (id, option)) in rows.iter().zip(SengOption::ALL.into_iter().enumerate()) {
            // SAFETY: static C string.
            let name = unsafe { CStr::from_ptr(row.name) };
            assert_eq!(name.to_str(), Ok(option.name()));
            assert_eq!(
                (row.id as usize, row.type_, row.flags),
                (id, XTTYPE_STRING, XTOPT_INVERT)
            );
        }
        assert!(end[0].name.is_null());
    }

    /// A match entry as iptables lays it out: the header, then the data.
    #[repr(C)]
    struct Entry {
        header: XtEntryMatch,
        data: Blob,
    }

    #[test]
    fn callbacks_fill_and_read_the_c_structs() {
        let mut entry = Entry {
            header: XtEntryMatch {
                match_size: 32 + 184,
                name: [0; 29],
                revision: 0,
            },
            data: [0; 184],
        };
        let mut call = XtOptionCall {
            arg: null(),
            ext_name: c"seng".as_ptr(),
            entry: null(),
            data: entry.data.as_mut_ptr().cast(),
            xflags: 0,
            invert: 0,
            nvals: 0,
            val: [0; 5],
            match_: null_mut(),
            xt_entry: null_mut(),
            udata: null_mut(),
        };
        for (row, arg, invert) in [(5, c"2001:db8::7", 0), (1, c"Mail", 1)] {
            call.entry = &options()[row];
            call.arg = arg.as_ptr();
            call.invert = invert;
            // SAFETY: the call points at live data of the registered size.
            unsafe { x6_parse::<NFPROTO_IPV6>(&mut call) };
        }
        assert_eq!(call.xflags, 1 << 5 | 1 << 1);
        let mut check = XtFcheckCall {
            ext_name: c"seng".as_ptr(),
            data: call.data,
            udata: null_mut(),
            xflags: call.xflags,
        };
        // SAFETY: as above; a complete rule passes without calling xtables_error.
        unsafe { x6_fcheck::<NFPROTO_IPV6>(&mut check) };

        // SAFETY: the entry's match_size covers its data.
        let data = unsafe { shown(&entry.header) };
        assert_eq!(
            ext::save_text(data, Family::Ipv6),
            " ! --src-cat Mail --dst-host 2001:db8::7/128"
        );
        assert_eq!(
            ext::list_text(data, Family::Ipv6),
            " seng ! src-cat Mail dst-host 2001:db8::7"
        );

        for (size, len) in [
            (0u16, 0usize),
            (31, 0),
            (32 + 17, 17),
            (u16::MAX, usize::from(u16::MAX) - 32),
        ] {
            entry.header.match_size = size;
            // SAFETY: sizes that do not fit are rejected before any data is read.
            assert_eq!(
                unsafe { shown(&entry.header) },
                Err(MatchInfoError::Size(len))
            );
        }
        entry.header.match_size = 32 + 180;
        // SAFETY: 180 bytes of data are present.
        assert_eq!(unsafe { shown(&entry.header) }.map(<[u8]>::len), Ok(180));
        // SAFETY: NULL is handled.
        assert_eq!(unsafe { shown(null()) }, Err(MatchInfoError::Size(0)));
    }
}
