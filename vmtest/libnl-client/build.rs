// SPDX-License-Identifier: GPL-2.0-only
//! Compiles client.c with the host's C compiler (`$CC`, else `cc`) against libnl-genl-3 (found
//! through pkg-config; apt install libnl-genl-3-dev) and links it into `seng-libnl-client`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// `pkg-config <what> libnl-genl-3.0`, split into words.
fn pkg_config(what: &str) -> Vec<String> {
    let tool = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&tool)
        .args([what, "libnl-genl-3.0"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(out.status.success(), "`{tool} {what} libnl-genl-3.0` failed (apt install libnl-genl-3-dev)");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = manifest.join("client.c");
    let object = out.join("client.o");
    println!("cargo:rerun-if-changed={}", source.display());
    for var in ["CC", "PKG_CONFIG", "PKG_CONFIG_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-c"])
        .args(pkg_config("--cflags"))
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "{cc} failed to compile {}", source.display());
    println!("cargo:rustc-link-arg-bin=seng-libnl-client={}", object.display());
    for arg in pkg_config("--libs") {
        println!("cargo:rustc-link-arg-bin=seng-libnl-client={arg}");
    }
}
