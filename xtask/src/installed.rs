// SPDX-License-Identifier: GPL-2.0-only
//! `cargo xtask vmtest --installed ROOT`: tests what the packages installed in a Debian root
//! (`cargo xtask deb --test` makes one) instead of this checkout's builds: per kernel the
//! seng.ko DKMS built there, and the packaged `seng`, `seng-sim`, iptables plugin and
//! libsengnetfilter, plus any program in the root's /usr/local/bin (the C++ consumer built
//! against the -dev package). The other guest programs (injector, probes) stay the checkout's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::Cmd;
use crate::kernel::Kernel;

/// Packaged files and where the guest has the checkout's builds of them.
const PACKAGED: &[(&str, &str)] = &[
    ("usr/bin/seng", "/usr/local/bin/seng"),
    ("usr/bin/seng-sim", "/usr/local/bin/seng-sim"),
    ("usr/lib/x86_64-linux-gnu/xtables/libxt_seng.so", "/usr/lib/x86_64-linux-gnu/xtables/libxt_seng.so"),
    // Where the guest has the checkout's library (see initramfs::HostFiles).
    ("usr/lib/x86_64-linux-gnu/libsengnetfilter.so.1", "/usr/lib/libsengnetfilter.so.1"),
];

/// Replaces the guest binaries `bins` (host file, guest path) with the packaged ones in `root`,
/// and adds the root's /usr/local/bin programs.
pub fn use_packaged(root: &Path, bins: &mut Vec<(PathBuf, String)>) -> Result<()> {
    for (inside, guest) in PACKAGED {
        let file = root.join(inside);
        anyhow::ensure!(file.exists(), "{} is not installed in {}", inside, root.display());
        bins.retain(|(_, g)| g != guest);
        bins.push((file, guest.to_string()));
    }
    let local = root.join("usr/local/bin");
    for entry in std::fs::read_dir(&local).with_context(|| format!("cannot list {}", local.display()))? {
        let path = entry?.path();
        let name = path.file_name().context("a file without a name")?.to_string_lossy().into_owned();
        let guest = format!("/usr/local/bin/{name}");
        bins.retain(|(_, g)| *g != guest);
        bins.push((path, guest));
    }
    Ok(())
}

/// The seng.ko DKMS built for `kernel` in `root`, decompressed into `out_dir` if DKMS
/// compressed it.
pub fn module(root: &Path, kernel: &Kernel, out_dir: &Path) -> Result<PathBuf> {
    let dir = root.join("lib/modules").join(&kernel.release).join("updates/dkms");
    let plain = dir.join("seng.ko");
    if plain.exists() {
        return Ok(plain);
    }
    let xz = dir.join("seng.ko.xz");
    anyhow::ensure!(xz.exists(), "DKMS built no seng.ko for {} in {}", kernel.release, root.display());
    crate::paths::mkdir(out_dir)?;
    let out = out_dir.join("dkms-seng.ko");
    let data = Cmd::new("xz").args(["-dc"]).arg(&xz).output()?.stdout;
    std::fs::write(&out, data).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}
