// SPDX-License-Identifier: GPL-2.0-only
//! What the host tests share: where the plugin under test was built.

use std::path::PathBuf;

/// The directory cargo put `libxt_seng.so` in: the parent of this test's `deps/`.
pub fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("tests run from <target>/<profile>/deps").to_path_buf();
    assert!(
        dir.join("libxt_seng.so").exists(),
        "no libxt_seng.so in {} (cargo test does not build cdylibs: run `cargo build -p libxt-seng` first)",
        dir.display()
    );
    dir
}
