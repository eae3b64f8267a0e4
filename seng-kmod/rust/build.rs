// SPDX-License-Identifier: GPL-2.0-only
//! Build script of the Rust object: checks the C glue's view of it, `seng-kmod/seng_rs.h`,
//! against the Rust definitions, so the header cannot drift from seng-core and `src/abi.rs`.
//!
//! As libxt-seng checks its mirror of `<xtables.h>`: every constant, the size, alignment and
//! field offsets of each shared struct go into a C file of `_Static_assert`s that the C compiler
//! (`$CC`, else `cc`) reads against the header; the string constants are compared through the
//! preprocessor. A mismatch fails the build naming what differs. The header needs
//! `<linux/types.h>` from a kernel tree; a stand-in with the same fixed-width types is
//! generated, so the check runs without kernel headers.

use std::env;
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use seng_core::category::CATEGORY_MAX_LEN;
use seng_core::genl::{attr, cmd, EVENTS_MCGRP_NAME, FAMILY_NAME, FAMILY_VERSION, MCGRP_NAME};
use seng_core::matchinfo::MATCHINFO_LEN;
use seng_core::measurement::MEASUREMENT_LEN;
use seng_core::origin::GATEWAY_NAME_MAX_LEN;
use seng_core::Family;

// The build script only measures the structs; the object constructs and reads them.
#[allow(dead_code)]
#[path = "src/abi.rs"]
mod abi;

use abi::SengRequest;

/// The stand-in for the kernel's `<linux/types.h>`: the kernel's types, same sizes on x86_64.
const LINUX_TYPES: &str = "#include <stdbool.h>\n#include <stddef.h>\n#include <stdint.h>\n\
    typedef uint8_t u8;\ntypedef uint16_t u16;\ntypedef uint32_t u32;\ntypedef uint64_t u64;\n";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let header = manifest.parent().expect("seng-kmod/rust has a parent").join("seng_rs.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed=src/abi.rs");
    println!("cargo:rerun-if-env-changed=CC");
    // offset_of! measures the host: the layouts are the kernel's only on the kernel's arch.
    assert_eq!(
        env::var("CARGO_CFG_TARGET_ARCH").as_deref(),
        Ok(std::env::consts::ARCH),
        "the seng_rs.h layout check measures the host's layout: build the object on its target arch"
    );

    let include = out.join("include");
    std::fs::create_dir_all(include.join("linux")).expect("cannot create the include directory");
    std::fs::write(include.join("linux/types.h"), LINUX_TYPES).expect("cannot write linux/types.h");
    let checks = Checks { header: &header, include: &include, out: &out };
    checks.numbers();
    checks.strings();
}

/// Asserts a struct's size and alignment and the offset of each field (same name in C and Rust).
macro_rules! layout {
    ($c:ident, $cty:literal, $rty:ty, [$($field:ident),* $(,)?]) => {{
        let _ = writeln!($c, "_Static_assert(sizeof(struct {}) == {}, \"size of struct {}\");",
            $cty, size_of::<$rty>(), $cty);
        let _ = writeln!($c, "_Static_assert(_Alignof(struct {}) == {}, \"alignment of struct {}\");",
            $cty, align_of::<$rty>(), $cty);
        $(
            let _ = writeln!($c, "_Static_assert(offsetof(struct {}, {}) == {}, \"offset of {}.{}\");",
                $cty, stringify!($field), offset_of!($rty, $field), $cty, stringify!($field));
        )*
    }};
}

struct Checks<'a> {
    header: &'a Path,
    include: &'a Path,
    out: &'a Path,
}

impl Checks<'_> {
    /// Runs the C compiler with `args` on `file`; returns stdout.
    fn cc(&self, args: &[&str], file: &Path) -> String {
        let compiler = env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&compiler)
            .args(["-std=gnu11", "-Wall", "-Werror", "-I"])
            .arg(self.include)
            .args(args)
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler {compiler} (apt install gcc): {e}"));
        assert!(
            out.status.success(),
            "{} does not match the Rust definitions (seng-core, seng-kmod/rust/src/abi.rs):\n{}",
            self.header.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn prelude(&self) -> String {
        format!("#include <stddef.h>\n#include \"{}\"\n", self.header.display())
    }

    fn numbers(&self) {
        let mut c = self.prelude();
        layout!(c, "seng_request", SengRequest, [
            net, payload, payload_len, portid, cmd, notify, bad_attr_offset, reply, reply_cap,
            reply_len, errmsg,
        ]);
        let values: [(&str, u64); 41] = [
            ("SENG_FAMILY_VERSION", FAMILY_VERSION.into()),
            ("SENG_CMD_LEGACY", cmd::LEGACY.into()),
            ("SENG_CMD_ENCLAVE_SET", cmd::ENCLAVE_SET.into()),
            ("SENG_CMD_ENCLAVE_DEL", cmd::ENCLAVE_DEL.into()),
            ("SENG_CMD_FLUSH", cmd::FLUSH.into()),
            ("SENG_CMD_CAT_ADD", cmd::CAT_ADD.into()),
            ("SENG_CMD_CAT_DEL", cmd::CAT_DEL.into()),
            ("SENG_CMD_GET", cmd::GET.into()),
            ("SENG_CMD_STATS", cmd::STATS.into()),
            ("SENG_CMD_REPLACE_BEGIN", cmd::REPLACE_BEGIN.into()),
            ("SENG_CMD_REPLACE_ADD", cmd::REPLACE_ADD.into()),
            ("SENG_CMD_REPLACE_COMMIT", cmd::REPLACE_COMMIT.into()),
            ("SENG_CMD_REPLACE_ABORT", cmd::REPLACE_ABORT.into()),
            ("SENG_CMD_REPLACE_DEL", cmd::REPLACE_DEL.into()),
            ("SENG_CMD_REPLACE_CAT_ADD", cmd::REPLACE_CAT_ADD.into()),
            ("SENG_CMD_REPLACE_CAT_DEL", cmd::REPLACE_CAT_DEL.into()),
            ("SENG_CMD_MAX", cmd::MAX.into()),
            ("SENG_A_APP", attr::APP.into()),
            ("SENG_A_CAT", attr::CAT.into()),
            ("SENG_A_HOST", attr::HOST.into()),
            ("SENG_A_ENC", attr::ENC.into()),
            ("SENG_A_ADD", attr::ADD.into()),
            ("SENG_A_RMV", attr::RMV.into()),
            ("SENG_A_FLUSH", attr::FLUSH.into()),
            ("SENG_A_ENCLAVE", attr::ENCLAVE.into()),
            ("SENG_A_ADDR", attr::ADDR.into()),
            ("SENG_A_HOST_ADDR", attr::HOST_ADDR.into()),
            ("SENG_A_STAT_ENCLAVES", attr::STAT_ENCLAVES.into()),
            ("SENG_A_STAT_APPS", attr::STAT_APPS.into()),
            ("SENG_A_STAT_CAPACITY", attr::STAT_CAPACITY.into()),
            ("SENG_A_STAT_SLOTS", attr::STAT_SLOTS.into()),
            ("SENG_A_STAT_GENERATION", attr::STAT_GENERATION.into()),
            ("SENG_A_ORIGIN", attr::ORIGIN.into()),
            ("SENG_A_ALL_ORIGINS", attr::ALL_ORIGINS.into()),
            ("SENG_A_MAX", attr::MAX.into()),
            ("SENG_APP_LEN", MEASUREMENT_LEN as u64),
            ("SENG_CAT_MAX_LEN", CATEGORY_MAX_LEN as u64),
            ("SENG_ORIGIN_MAX_LEN", GATEWAY_NAME_MAX_LEN as u64),
            ("SENG_ADDR_MAX_LEN", Family::Ipv6.addr_len() as u64),
            ("SENG_MT_INFO_SIZE", MATCHINFO_LEN as u64),
            // The Rust struct spells out the tail padding the C compiler adds.
            ("SENG_MT_INFO_SIZE", size_of::<seng_core::SengMtInfo>() as u64),
        ];
        for (name, value) in values {
            let _ = writeln!(c, "_Static_assert({name} == {value}, \"value of {name}\");");
        }
        let file = self.out.join("seng_rs_check.c");
        std::fs::write(&file, c).expect("cannot write the seng_rs.h check");
        self.cc(&["-fsyntax-only"], &file);
    }

    fn strings(&self) {
        let names = [
            ("SENG_FAMILY_NAME", FAMILY_NAME),
            ("SENG_MCGRP_NAME", MCGRP_NAME),
            ("SENG_EVENTS_MCGRP_NAME", EVENTS_MCGRP_NAME),
        ];
        let mut c = self.prelude();
        for (name, _) in names {
            let _ = writeln!(c, "seng_check_{name} {name}");
        }
        let file = self.out.join("seng_rs_strings.c");
        std::fs::write(&file, c).expect("cannot write the seng_rs.h string check");
        let text = self.cc(&["-E", "-P"], &file);
        for (name, want) in names {
            let found = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("seng_check_{name}")))
                .map(str::trim)
                .unwrap_or("(none)");
            assert_eq!(
                found,
                format!("\"{want}\""),
                "{name} in {} differs from seng-core's {want:?}",
                self.header.display()
            );
        }
    }
}
