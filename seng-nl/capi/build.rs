// SPDX-License-Identifier: GPL-2.0-only
//! Build script of libsengnetfilter.so: gives it its SONAME, and checks the C headers in
//! include/ against seng-core's definitions, so the C view of the protocol and of the match data
//! cannot drift from the Rust one.
//!
//! The check writes every constant, the match data's size and every field offset into a C file
//! of `_Static_assert`s and has the C compiler (`$CC`, else `cc`) read it against the headers;
//! the string constants are compared through the preprocessor. A mismatch fails the build
//! naming the constant.

use std::env;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use seng_core::category::CATEGORY_FIELD_LEN;
use seng_core::genl::{attr, cmd, EVENTS_MCGRP_NAME, FAMILY_NAME, MCGRP_NAME};
use seng_core::matchinfo::{flags, SengMtInfo, MATCHINFO_LEN};
use seng_core::measurement::MEASUREMENT_LEN;

const HEADERS: [&str; 3] = ["seng_netfilter_api.h", "xt_seng_genl.h", "xt_seng.h"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let include = manifest.join("include");
    for header in HEADERS {
        println!("cargo:rerun-if-changed={}", include.join(header).display());
    }
    println!("cargo:rerun-if-env-changed=CC");

    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsengnetfilter.so.{major}");

    check_numbers(&out, &include);
    check_strings(&out, &include);
}

/// Runs the C compiler on `file` with the headers on the include path; returns stdout.
fn cc(include: &Path, args: &[&str], file: &Path) -> String {
    let compiler = env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&compiler)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(include)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {compiler} (apt install gcc): {e}"));
    assert!(
        out.status.success(),
        "the headers in {} do not match seng-core:\n{}",
        include.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn includes() -> String {
    let mut c = String::from("#include <stddef.h>\n");
    for header in HEADERS {
        let _ = writeln!(c, "#include \"{header}\"");
    }
    c
}

fn check_numbers(out: &Path, include: &Path) {
    let mut c = includes();
    let offsets = [
        ("app_hash_src", offset_of!(SengMtInfo, app_hash_src)),
        ("category_name_src", offset_of!(SengMtInfo, category_name_src)),
        ("host_src", offset_of!(SengMtInfo, host_src)),
        ("src_subnet", offset_of!(SengMtInfo, src_subnet)),
        ("app_hash_dst", offset_of!(SengMtInfo, app_hash_dst)),
        ("category_name_dst", offset_of!(SengMtInfo, category_name_dst)),
        ("host_dst", offset_of!(SengMtInfo, host_dst)),
        ("dst_subnet", offset_of!(SengMtInfo, dst_subnet)),
        ("flags", offset_of!(SengMtInfo, flags)),
    ];
    for (field, offset) in offsets {
        let _ = writeln!(c, "_Static_assert(offsetof(struct seng_mt_info, {field}) == {offset}, \"offset of seng_mt_info.{field}\");");
    }
    let values: [(&str, u64); 26] = [
        ("GENL_XT_SENG_MSG", cmd::LEGACY.into()),
        ("XT_SENG_ATTR_APP", attr::APP.into()),
        ("XT_SENG_ATTR_CAT", attr::CAT.into()),
        ("XT_SENG_ATTR_HOST", attr::HOST.into()),
        ("XT_SENG_ATTR_ENC", attr::ENC.into()),
        ("XT_SENG_ATTR_ADD", attr::ADD.into()),
        ("XT_SENG_ATTR_RMV", attr::RMV.into()),
        ("XT_SENG_ATTR_FLUSH", attr::FLUSH.into()),
        // The original protocol's attributes end at FLUSH; seng's own start after it.
        ("XT_SENG_ATTR_MAX", attr::FLUSH.into()),
        ("SGX_HASH_SIZE", MEASUREMENT_LEN as u64),
        ("SENG_HASH_SIZE", (2 * MEASUREMENT_LEN + 1) as u64),
        ("MAX_CAT_NAME_LENGTH", CATEGORY_FIELD_LEN as u64),
        ("sizeof(struct seng_mt_info)", MATCHINFO_LEN as u64),
        // The Rust struct spells out the tail padding the C compiler adds.
        ("sizeof(struct seng_mt_info)", size_of::<SengMtInfo>() as u64),
        ("XT_SENG_APP_SRC", flags::APP_SRC.into()),
        ("XT_SENG_APP_SRC_INV", flags::APP_SRC_INV.into()),
        ("XT_SENG_CAT_SRC", flags::CAT_SRC.into()),
        ("XT_SENG_CAT_SRC_INV", flags::CAT_SRC_INV.into()),
        ("XT_SENG_HOST_SRC", flags::HOST_SRC.into()),
        ("XT_SENG_HOST_SRC_INV", flags::HOST_SRC_INV.into()),
        ("XT_SENG_APP_DST", flags::APP_DST.into()),
        ("XT_SENG_APP_DST_INV", flags::APP_DST_INV.into()),
        ("XT_SENG_CAT_DST", flags::CAT_DST.into()),
        ("XT_SENG_CAT_DST_INV", flags::CAT_DST_INV.into()),
        ("XT_SENG_HOST_DST", flags::HOST_DST.into()),
        ("XT_SENG_HOST_DST_INV", flags::HOST_DST_INV.into()),
    ];
    for (name, value) in values {
        let _ = writeln!(c, "_Static_assert({name} == {value}, \"value of {name}\");");
    }
    let file = out.join("constants_check.c");
    std::fs::write(&file, c).expect("cannot write the constants check");
    cc(include, &["-fsyntax-only"], &file);
}

fn check_strings(out: &Path, include: &Path) {
    let names = [
        ("GENL_SENG_FAMILY_NAME", FAMILY_NAME),
        ("GENL_SENG_MCGRP_NAME", MCGRP_NAME),
        ("GENL_SENG_EVENTS_MCGRP_NAME", EVENTS_MCGRP_NAME),
    ];
    let mut c = includes();
    for (name, _) in names {
        let _ = writeln!(c, "seng_check_{name} {name}");
    }
    let file = out.join("strings_check.c");
    std::fs::write(&file, c).expect("cannot write the string check");
    let text = cc(include, &["-E", "-P"], &file);
    for (name, want) in names {
        let found = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("seng_check_{name}")))
            .map(str::trim)
            .unwrap_or("(none)");
        assert_eq!(found, format!("\"{want}\""), "{name} in the headers differs from seng-core's {want:?}");
    }
}
