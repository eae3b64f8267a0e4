// SPDX-License-Identifier: GPL-2.0-only
//! The Rust-for-Linux flavour: `seng.ko` from `seng-kmod-rfl/`, built against the `rfl-6.12`
//! kernel (a 6.12 with `CONFIG_RUST` built here, see `source_kernel.rs`: Debian's kernels cannot
//! load Rust modules) by the LLVM and rustc that built that kernel.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::kernel::Kernel;
use crate::kmod::{check_panic_free, kbuild_cached};
use crate::paths::{mkdir, write_if_changed, Paths};
use crate::source_kernel::Toolchain;

/// Builds `seng.ko` of `seng-kmod-rfl/` for `kernel`; returns `<target>/kmod/<release>/seng.ko`.
///
/// kbuild builds in the directory it is given, so the sources are mirrored into
/// `<target>/kmod/<release>/build/` in the repository's layout (the module reaches seng-core and
/// the shared files of `seng-kmod/rust/src` by relative path). Any warning fails the build.
pub fn build_module(paths: &Paths, kernel: &Kernel) -> Result<PathBuf> {
    let tools = Toolchain::llvm()?;
    let out = paths.kmod_out(&kernel.release);
    let build = out.join("build");
    let mut inputs = Vec::new();
    for (dir, filter) in [
        (
            "seng-kmod-rfl",
            (|rel: &str| rel == "Kbuild" || (rel.starts_with("src/") && rel.ends_with(".rs")))
                as fn(&str) -> bool,
        ),
        ("seng-kmod/rust/src", |rel: &str| rel.ends_with(".rs")),
        ("seng-core/src", |rel: &str| rel.ends_with(".rs")),
    ] {
        mirror(&paths.root.join(dir), &build.join(dir), filter, &mut inputs)?;
    }
    let module_dir = build.join("seng-kmod-rfl");
    let make = tools
        .make(&kernel.kdir())
        .arg(format!("M={}", module_dir.display()))
        .args(["-j2", "modules"]);
    let mut h = DefaultHasher::new();
    h.write(make.shown().as_bytes());
    h.write(fs::read(kernel.dir.join("kernel.info"))?.as_slice());
    for file in &inputs {
        h.write(file.as_os_str().as_encoded_bytes());
        h.write(&fs::read(file)?);
    }
    let key = format!("{:016x}", h.finish());
    let ko = kbuild_cached(make, &kernel.release, &key, &out, &build, &module_dir)?;
    // As the distro flavour's Rust object: kernel code must not panic.
    check_panic_free(&ko)?;
    Ok(ko)
}

/// Copies the files under `src` that `keep` accepts (by path relative to `src`) to `dst`,
/// leaving unchanged files alone (kbuild then rebuilds nothing) and removing files that are gone
/// from `src`. Appends the mirrored files to `files`.
fn mirror(src: &Path, dst: &Path, keep: fn(&str) -> bool, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut wanted = Vec::new();
    crate::kernel::walk(src, &mut |p| wanted.push(p.to_path_buf()))?;
    let mut kept = Vec::new();
    for file in wanted {
        let rel = file
            .strip_prefix(src)
            .context("walk left its root")?
            .to_string_lossy()
            .into_owned();
        if !keep(&rel) {
            continue;
        }
        let to = dst.join(&rel);
        mkdir(to.parent().context("mirrored file without parent")?)?;
        write_if_changed(
            &to,
            &fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
        )?;
        files.push(to);
        kept.push(rel);
    }
    if dst.is_dir() {
        let mut stale = Vec::new();
        crate::kernel::walk(dst, &mut |p| stale.push(p.to_path_buf()))?;
        for file in stale {
            let rel = file
                .strip_prefix(dst)
                .context("walk left its root")?
                .to_string_lossy()
                .into_owned();
            if keep(&rel) && !kept.contains(&rel) {
                fs::remove_file(&file)
                    .with_context(|| format!("cannot remove {}", file.display()))?;
            }
        }
    }
    Ok(())
}
