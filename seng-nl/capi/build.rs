// SPDX-License-Identifier: GPL-2.0-only
//! Compiles the C test program test/api_test.c with the host's C compiler (`$CC`, else `cc`)
//! against include/seng_netfilter_api.h, and links it into the `seng-capi-test` target against
//! the libseng_netfilter.so this package builds (found, and found again at run time through the
//! rpath, in cargo's `deps` directory).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = manifest.join("test/api_test.c");
    let include = manifest.join("include");
    let object = out.join("api_test.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", include.join("seng_netfilter_api.h").display());
    println!("cargo:rerun-if-env-changed=CC");

    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic", "-pthread", "-c"])
        .arg("-I")
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "{cc} failed to compile {}", source.display());

    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out; the library lands in
    // <target>/<profile>/deps.
    let deps = out.ancestors().nth(3).expect("OUT_DIR has the usual depth").join("deps");
    for arg in [
        object.display().to_string(),
        format!("-L{}", deps.display()),
        "-lseng_netfilter".into(),
        // DT_RPATH, not DT_RUNPATH: it wins over an LD_LIBRARY_PATH (`cargo run` sets one to
        // target/debug), so the library found at run time, and by ldd, is the one linked here.
        format!("-Wl,--disable-new-dtags,-rpath,{}", deps.display()),
        "-pthread".into(),
    ] {
        println!("cargo:rustc-link-arg-bin=seng-capi-test={arg}");
    }
}
