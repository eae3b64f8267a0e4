// SPDX-License-Identifier: GPL-2.0-only
//! Build script of libxt_seng.so: links libxtables and checks the hand mirror of `<xtables.h>`
//! (`src/xtables.rs`) against the installed header.
//!
//! The check writes every size, alignment, field offset and constant of the mirror into a C file
//! of `_Static_assert`s and has the C compiler read it against the real header, so a different
//! libxtables fails the build with the field that moved. The version string is compared through
//! the preprocessor. Needs `cc`, `pkg-config` and libxtables-dev.

use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

// The build script only measures the mirror; the extern-facing items are used by the library.
#[allow(dead_code)]
#[path = "src/xtables.rs"]
mod xtables;

use xtables::*;

fn main() {
    println!("cargo:rerun-if-changed=src/xtables.rs");
    for var in [
        "CC",
        "CFLAGS",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_SYSROOT_DIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let cflags = pkg_config("--cflags");
    for word in pkg_config("--libs") {
        if let Some(dir) = word.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = word.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    check_layout(&out, &cflags);
    check_version(&out, &cflags);
}

/// `pkg-config <what> xtables`, split into words.
fn pkg_config(what: &str) -> Vec<String> {
    let tool = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&tool)
        .args([what, "xtables"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} (apt install pkg-config libxtables-dev): {e}")
        });
    assert!(
        out.status.success(),
        "`{tool} {what} xtables` failed (apt install libxtables-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Runs the C compiler with `args`; returns stdout, panics with its stderr on failure.
fn cc(cflags: &[String], args: &[&str]) -> String {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&compiler)
        .args(cflags)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {compiler} (apt install gcc): {e}"));
    assert!(
        out.status.success(),
        "the hand mirror src/xtables.rs does not match <xtables.h>:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a struct's size and alignment and, for each `c_field => rust_field`, its offset.
macro_rules! layout {
    ($c:ident, $cty:literal, $rty:ty, { $($cf:literal => $rf:ident),* $(,)? }) => {{
        let _ = writeln!($c, "_Static_assert(sizeof(struct {}) == {}, \"size of struct {}\");",
            $cty, size_of::<$rty>(), $cty);
        let _ = writeln!($c, "_Static_assert(_Alignof(struct {}) == {}, \"alignment of struct {}\");",
            $cty, align_of::<$rty>(), $cty);
        $(
            let _ = writeln!($c, "_Static_assert(offsetof(struct {}, {}) == {}, \"offset of {}.{}\");",
                $cty, $cf, offset_of!($rty, $rf), $cty, $cf);
        )*
    }};
}

fn check_layout(out: &std::path::Path, cflags: &[String]) {
    let mut c = String::from("#include <stddef.h>\n#include <xtables.h>\n");
    layout!(c, "xt_entry_match", XtEntryMatch, {
        "u.user.match_size" => match_size,
        "u.user.name" => name,
        "u.user.revision" => revision,
    });
    let _ = writeln!(
        c,
        "_Static_assert(offsetof(struct xt_entry_match, data) == {}, \"match data offset\");",
        size_of::<XtEntryMatch>()
    );
    layout!(c, "xt_option_entry", XtOptionEntry, {
        "name" => name, "type" => type_, "id" => id, "excl" => excl, "also" => also,
        "flags" => flags, "ptroff" => ptroff, "size" => size, "min" => min, "max" => max,
    });
    layout!(c, "xt_option_call", XtOptionCall, {
        "arg" => arg, "ext_name" => ext_name, "entry" => entry, "data" => data,
        "xflags" => xflags, "invert" => invert, "nvals" => nvals, "val" => val,
        "match" => match_, "xt_entry" => xt_entry, "udata" => udata,
    });
    let _ = writeln!(
        c,
        "_Static_assert(sizeof(((struct xt_option_call *)0)->val) == {}, \"size of val\");",
        size_of::<[u64; 5]>()
    );
    layout!(c, "xt_fcheck_call", XtFcheckCall, {
        "ext_name" => ext_name, "data" => data, "udata" => udata, "xflags" => xflags,
    });
    layout!(c, "xtables_match", XtablesMatch, {
        "version" => version, "next" => next, "name" => name, "real_name" => real_name,
        "revision" => revision, "ext_flags" => ext_flags, "family" => family, "size" => size,
        "userspacesize" => userspacesize, "help" => help, "init" => init, "parse" => parse,
        "final_check" => final_check, "print" => print, "save" => save, "alias" => alias,
        "extra_opts" => extra_opts, "x6_parse" => x6_parse, "x6_fcheck" => x6_fcheck,
        "x6_options" => x6_options, "xlate" => xlate, "udata_size" => udata_size,
        "udata" => udata, "option_offset" => option_offset, "m" => m, "mflags" => mflags,
        "loaded" => loaded,
    });
    layout!(c, "xtables_globals", XtablesGlobals, {
        "option_offset" => option_offset, "program_name" => program_name,
        "program_version" => program_version, "orig_opts" => orig_opts, "opts" => opts,
        "exit_err" => exit_err, "compat_rev" => compat_rev,
    });
    for (name, value) in [
        ("XTTYPE_STRING", u64::from(XTTYPE_STRING)),
        ("XTOPT_INVERT", u64::from(XTOPT_INVERT)),
        ("PARAMETER_PROBLEM", PARAMETER_PROBLEM as u64),
        ("XT_EXTENSION_MAXNAMELEN", XT_EXTENSION_MAXNAMELEN as u64),
        ("NFPROTO_IPV4", u64::from(NFPROTO_IPV4)),
        ("NFPROTO_IPV6", u64::from(NFPROTO_IPV6)),
        ("XT_ALIGN(180)", xt_align(180) as u64),
    ] {
        let _ = writeln!(c, "_Static_assert({name} == {value}, \"value of {name}\");");
    }
    let file = out.join("xtables_layout.c");
    std::fs::write(&file, c).expect("cannot write the layout check");
    cc(
        cflags,
        &["-std=gnu11", "-fsyntax-only", &file.to_string_lossy()],
    );
}

fn check_version(out: &std::path::Path, cflags: &[String]) {
    let file = out.join("xtables_version.c");
    std::fs::write(
        &file,
        "#include <xtables-version.h>\nseng_xtables_version XTABLES_VERSION\n",
    )
    .expect("cannot write the version check");
    let text = cc(cflags, &["-E", "-P", &file.to_string_lossy()]);
    let found = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("seng_xtables_version"))
        .map(str::trim)
        .unwrap_or("(none)");
    let want = format!("\"{}\"", XTABLES_VERSION.to_string_lossy());
    assert_eq!(
        found, want,
        "<xtables-version.h> defines XTABLES_VERSION {found}, the mirror in src/xtables.rs is for {want}"
    );
}
