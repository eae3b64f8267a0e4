// SPDX-License-Identifier: GPL-2.0-only
//! A Debian 12 root for testing the packages as an admin installs them. It is made once with
//! debootstrap, with what the test needs beside the packages' own dependencies (DKMS and
//! openssl for its signing key, man, the three shells, cmake, g++ and pkgconf) and with the
//! Debian kernels xtask resolves, images and headers, installed from the same cached `.deb`s the
//! VM tests boot. It is kept as a tarball under `<cache>/roots/` and unpacked fresh for every
//! run. Commands run chrooted in a mount namespace of their own (`unshare`), so the /proc, /sys
//! and /dev mounts vanish with them and nothing outside the root is touched.
//!
//! Needs root (debootstrap, chroot, mounts) and Debian's mirror (`SENG_DEBIAN_MIRROR`).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{bail, Context, Result};

use crate::cmd::{combined, failure_message, Cmd};
use crate::kernel::Kernel;
use crate::paths::{mkdir, remove_all, Paths};

/// What the test uses beside the packages: DKMS (and openssl, with which DKMS makes the key it
/// signs modules with), man and groff to render pages, the shells whose completions are
/// loaded, and what builds the C++ consumer against the -dev package.
const TOOLS: &[&str] = &[
    "dkms", "openssl", "kmod", "man-db", "bash-completion", "zsh", "fish", "cmake", "g++",
    "pkgconf", "iptables", "ca-certificates",
];

/// Bumped when the way the root is made changes, so cached roots are remade.
const RECIPE: u32 = 1;

/// A Debian root unpacked at a directory.
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// Unpacks a fresh root at `dir` (replacing what is there), making and caching the tarball
    /// first if needed.
    pub fn fresh(paths: &Paths, kernels: &[Kernel], dir: &Path) -> Result<Root> {
        if !is_root() {
            bail!("the package test needs root: debootstrap, chroot and mounts");
        }
        let tarball = tarball(paths, kernels)?;
        remove_all(dir)?;
        mkdir(dir)?;
        Cmd::new("tar")
            .args(["--zstd", "-xpf"])
            .arg(&tarball)
            .arg("-C")
            .arg(dir)
            .output()?;
        Ok(Root { dir: dir.to_path_buf() })
    }

    /// A path inside the root, given as in the root (`/usr/bin/seng`).
    pub fn path(&self, inside: &str) -> PathBuf {
        self.dir.join(inside.trim_start_matches('/'))
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `script` with `sh -e` in the root; its output whatever the exit status.
    pub fn run_any(&self, script: &str) -> Result<Output> {
        chroot(&self.dir, script).output_any()
    }

    /// Runs `script` with `sh -e` in the root; fails with its output if it fails.
    pub fn run(&self, script: &str) -> Result<String> {
        let out = self.run_any(script)?;
        if !out.status.success() {
            bail!("in the test root: {}", failure_message(script, &out));
        }
        Ok(combined(&out))
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `sh -e -c script` chrooted into `dir`, with /proc, /sys and /dev mounted in a private mount
/// namespace, the host's resolver configuration, and no services started by maintainer
/// scripts.
fn chroot(dir: &Path, script: &str) -> Cmd {
    const SETUP: &str = r#"set -e
root=$1
shift
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
	LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive /bin/sh -e -c "$1"
"#;
    Cmd::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", SETUP, "sh"])
        .arg(dir)
        .arg(script)
}

/// The cached tarball of the root for `kernels`, made if missing.
fn tarball(paths: &Paths, kernels: &[Kernel]) -> Result<PathBuf> {
    let roots = paths.cache.join("roots");
    mkdir(&roots)?;
    let mut debs = Vec::new();
    for k in kernels {
        debs.extend(k.debs(paths)?);
    }
    let mut h = DefaultHasher::new();
    h.write_u32(RECIPE);
    h.write(mirror().as_bytes());
    for tool in TOOLS {
        h.write(tool.as_bytes());
    }
    for deb in &debs {
        h.write(deb.file_name().unwrap_or_default().as_encoded_bytes());
    }
    let tarball = roots.join(format!("bookworm-{:016x}.tar.zst", h.finish()));
    if tarball.exists() {
        return Ok(tarball);
    }
    eprintln!("package test: making a Debian 12 root ({})", tarball.display());
    let tmp = roots.join(format!(".make-{}", std::process::id()));
    let result = make(&tmp, &debs).and_then(|()| {
        let partial = tarball.with_extension("partial");
        Cmd::new("tar")
            .args(["--zstd", "-cpf"])
            .arg(&partial)
            .arg("-C")
            .arg(&tmp)
            .arg(".")
            .output()?;
        fs::rename(&partial, &tarball).context("cannot move the root tarball in place")?;
        Ok(())
    });
    remove_all(&tmp)?;
    result?;
    // Roots made for other kernels or recipes are dead weight.
    for entry in fs::read_dir(&roots)? {
        let path = entry?.path();
        if path != tarball && path.to_string_lossy().ends_with(".tar.zst") {
            remove_all(&path)?;
        }
    }
    Ok(tarball)
}

fn mirror() -> String {
    std::env::var("SENG_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// debootstrap, the archive's updates and security suites, the tools, then the kernels.
fn make(dir: &Path, kernel_debs: &[PathBuf]) -> Result<()> {
    remove_all(dir)?;
    let mirror = mirror();
    Cmd::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(dir)
        .arg(&mirror)
        .output()?;
    let security = std::env::var("SENG_DEBIAN_SECURITY_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian-security".into());
    fs::write(
        dir.join("etc/apt/sources.list"),
        format!(
            "deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n\
             deb {security} bookworm-security main\n"
        ),
    )?;
    // Maintainer scripts must not start services in the root.
    let policy = dir.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
    let debs = dir.join("tmp/kernel-debs");
    mkdir(&debs)?;
    let mut inside = Vec::new();
    for deb in kernel_debs {
        let name = deb.file_name().context("a kernel .deb without a name")?;
        fs::copy(deb, debs.join(name))
            .with_context(|| format!("cannot copy {} into the root", deb.display()))?;
        inside.push(format!("/tmp/kernel-debs/{}", name.to_string_lossy()));
    }
    let script = format!(
        "apt-get -q update\n\
         apt-get -q -y upgrade\n\
         apt-get -q -y --no-install-recommends install {}\n\
         apt-get -q -y --no-install-recommends install {}\n\
         rm -rf /tmp/kernel-debs\n\
         apt-get clean\n",
        TOOLS.join(" "),
        inside.join(" ")
    );
    chroot(dir, &script).output()?;
    Ok(())
}
