// SPDX-License-Identifier: GPL-2.0-only
//! The Rust-for-Linux flavour: a 6.12 kernel with `CONFIG_RUST` built here (Debian's kernels
//! cannot load Rust modules), and `seng.ko` from `seng-kmod-rfl/` built against it.
//!
//! The kernel is Debian's `linux-source-6.12` (downloaded through the private apt root, never
//! installed), patched with `seng-kmod-rfl/kernel/*.patch` (bindings for netfilter and generic
//! netlink), configured from `make tinyconfig` plus `seng-kmod-rfl/rfl.config`, and built with
//! LLVM 19 and the rustc on PATH. It is cached as `<cache>/kernels/rfl-6.12-<key>/`, laid out like
//! the Debian kernels of `kernel.rs` (`vmlinuz`, `build`, `modules/lib/modules/<release>`,
//! `kernel.info`); the key covers the source version, the fragment, the patches and the
//! toolchain (an out-of-tree Rust module must be built by the compiler that built the kernel).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::apt::AptRoot;
use crate::cmd::{tail, Cmd};
use crate::kernel::{fetch_deb, FetchOpts, Kernel, Series};
use crate::kmod::{check_panic_free, kbuild_cached};
use crate::paths::{mkdir, remove_all, write_if_changed, Paths};

/// The Debian package with the kernel source, and the release whose lists carry it.
const SOURCE_PACKAGE: &str = "linux-source-6.12";
const SOURCE_RELEASE: &str = "bookworm";

/// LLVM 19 as Debian installs it (`clang-19 lld-19 llvm-19 libclang-19-dev`); `SENG_LLVM_DIR`
/// overrides the directory of its programs.
const LLVM_DIR: &str = "/usr/lib/llvm-19/bin";

/// The flavour's directory in the repository.
fn flavour_dir(paths: &Paths) -> PathBuf {
    paths.root.join("seng-kmod-rfl")
}

/// The toolchain the kernel and the module are built with.
struct Toolchain {
    /// `LLVM=` for kbuild: the directory of clang, ld.lld and the llvm tools, with a final `/`.
    llvm: String,
    /// libclang for bindgen.
    libclang: PathBuf,
    /// What identifies the toolchain in the cache key.
    versions: String,
}

impl Toolchain {
    fn find() -> Result<Toolchain> {
        let dir = std::env::var("SENG_LLVM_DIR").unwrap_or_else(|_| LLVM_DIR.into());
        let dir = Path::new(&dir);
        let hint = "install LLVM 19 (apt-get install clang-19 lld-19 llvm-19 libclang-19-dev) and \
                    bindgen (cargo install --locked bindgen-cli)";
        for tool in ["clang", "ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy"] {
            ensure!(
                dir.join(tool).exists(),
                "{} is missing: {hint}",
                dir.join(tool).display()
            );
        }
        let libclang = dir
            .parent()
            .context("LLVM directory has no parent")?
            .join("lib");
        let mut versions = String::new();
        for cmd in [
            Cmd::new(dir.join("clang")).arg("--version"),
            Cmd::new("rustc").arg("--version"),
            Cmd::new("bindgen").arg("--version"),
        ] {
            let shown = cmd.shown().to_string();
            let out = cmd
                .stdout()
                .with_context(|| format!("`{shown}` failed: {hint}"))?;
            versions.push_str(out.lines().next().unwrap_or(""));
            versions.push('\n');
        }
        Ok(Toolchain {
            llvm: format!("{}/", dir.display()),
            libclang,
            versions,
        })
    }

    /// `make` in `dir` with this toolchain.
    fn make(&self, dir: &Path) -> Cmd {
        Cmd::new("make")
            .arg("-C")
            .arg(dir)
            .arg(format!("LLVM={}", self.llvm))
            .env("LIBCLANG_PATH", &self.libclang)
    }

    /// `make ARGS` in `dir` with its output going to `log` as it runs, so a build of minutes can
    /// be followed there; a failure quotes the log's tail.
    fn make_logged(&self, dir: &Path, args: &[&str], log: &Path) -> Result<()> {
        let file =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let status = std::process::Command::new("make")
            .arg("-C")
            .arg(dir)
            .arg(format!("LLVM={}", self.llvm))
            .args(args)
            .env("LIBCLANG_PATH", &self.libclang)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()
            .context("cannot start make")?;
        if !status.success() {
            let text = fs::read_to_string(log).unwrap_or_default();
            bail!(
                "`make {}` in {} failed ({status}); the end of {}:\n{}",
                args.join(" "),
                dir.display(),
                log.display(),
                tail(&text, 40)
            );
        }
        Ok(())
    }
}

/// The flavour's kernel inputs: fragment and patches, read once.
struct Inputs {
    fragment: PathBuf,
    patches: Vec<PathBuf>,
    hash: u64,
}

impl Inputs {
    fn read(paths: &Paths, tools: &Toolchain) -> Result<Inputs> {
        let dir = flavour_dir(paths);
        let fragment = dir.join("rfl.config");
        let mut patches: Vec<PathBuf> = fs::read_dir(dir.join("kernel"))
            .with_context(|| format!("cannot list {}", dir.join("kernel").display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "patch"))
            .collect();
        patches.sort();
        let mut h = DefaultHasher::new();
        h.write(tools.versions.as_bytes());
        for file in std::iter::once(&fragment).chain(&patches) {
            h.write(file.file_name().unwrap_or_default().as_encoded_bytes());
            h.write(&fs::read(file).with_context(|| format!("cannot read {}", file.display()))?);
        }
        Ok(Inputs {
            fragment,
            patches,
            hash: h.finish(),
        })
    }

    /// The cache directory name for this input with the source at `version`.
    fn dir_name(&self, version: &str) -> String {
        let mut h = DefaultHasher::new();
        h.write_u64(self.hash);
        h.write(version.as_bytes());
        format!("rfl-6.12-{:016x}", h.finish())
    }
}

/// Resolves the Rust-for-Linux kernel, building it first if the cache has none for the current
/// source version, fragment, patches and toolchain.
pub fn kernel(paths: &Paths, opts: FetchOpts) -> Result<Kernel> {
    let tools = Toolchain::find()?;
    let inputs = Inputs::read(paths, &tools)?;
    let cached_version = || {
        let key = format!("{:016x}", inputs.hash);
        fs::read_dir(paths.kernels())
            .ok()?
            .filter_map(|e| Kernel::load(&e.ok()?.path()))
            .filter(|k| k.series == Series::Rfl6_12)
            .filter(|k| {
                fs::read_to_string(k.dir.join("kernel.info"))
                    .is_ok_and(|i| i.contains(&format!("inputs={key}\n")))
            })
            .max_by(|a, b| a.version.cmp(&b.version))
    };
    if opts.offline {
        return cached_version().context(
            "no Rust-for-Linux kernel for these inputs in the cache for --offline; run `cargo xtask kernel --rfl`",
        );
    }
    let apt = AptRoot::new(&paths.cache, SOURCE_RELEASE)?;
    let updated = match apt.update(opts.refresh) {
        Ok(updated) => updated,
        Err(e) => {
            if let Some(k) = cached_version() {
                eprintln!(
                    "warning: apt update failed, using the cached {}: {e:#}",
                    k.dir.display()
                );
                return Ok(k);
            }
            return Err(e.context("cannot look up the kernel source"));
        }
    };
    let version = source_version(&apt, updated)?;
    let dir = paths.kernels().join(inputs.dir_name(&version));
    if let Some(k) = Kernel::load(&dir) {
        return Ok(k);
    }
    let _lock = BuildLock::acquire(&dir)?;
    // Another xtask may have finished this kernel while we waited.
    if let Some(k) = Kernel::load(&dir) {
        return Ok(k);
    }
    let debs = paths.cache.join("debs");
    mkdir(&debs)?;
    let deb = fetch_deb(&apt, &debs, SOURCE_PACKAGE, &version)?;
    let kernel = build_kernel(&tools, &inputs, &deb, &version, &dir)?;
    remove_other_builds(paths, &dir)?;
    Ok(kernel)
}

/// The candidate version of the source package. The answer only changes with the lists, so it
/// is recorded and apt-cache (slow on the big lists) skipped until they are updated.
fn source_version(apt: &AptRoot, updated: bool) -> Result<String> {
    let resolved = apt.dir().join(format!("resolved-{SOURCE_PACKAGE}"));
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = matches!((mtime(&resolved), mtime(&apt.stamp())), (Some(r), Some(s)) if r > s);
    if !updated && fresh {
        if let Ok(version) = fs::read_to_string(&resolved) {
            return Ok(version.trim().to_string());
        }
    }
    let version = apt
        .version(SOURCE_PACKAGE)?
        .with_context(|| format!("{SOURCE_PACKAGE} is not in the {SOURCE_RELEASE} lists"))?;
    fs::write(&resolved, &version).context("cannot record the resolved source version")?;
    Ok(version)
}

/// `<dir>.<suffix>` (`with_extension` would cut the name at its version dots).
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// `<dir>.lock` while a kernel is built into `dir`: it names the building process. A second
/// xtask waits for the first; a lock whose process is gone is taken over.
struct BuildLock(PathBuf);

impl BuildLock {
    fn acquire(dir: &Path) -> Result<BuildLock> {
        let lock = sibling(dir, "lock");
        let pid = std::process::id();
        // Written aside and linked into place, so the lock never exists without its owner.
        let mine = sibling(dir, &format!("lock.{pid}"));
        fs::write(&mine, pid.to_string())
            .with_context(|| format!("cannot write {}", mine.display()))?;
        let mut waiting = false;
        let result = loop {
            match fs::hard_link(&mine, &lock) {
                Ok(()) => break Ok(BuildLock(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&lock).unwrap_or_default();
                    let owner = owner.trim();
                    if owner.is_empty() || !Path::new("/proc").join(owner).exists() {
                        remove_all(&lock)?;
                        continue;
                    }
                    if !waiting {
                        eprintln!("kernel rfl-6.12: waiting for process {owner}, which builds the same kernel");
                        waiting = true;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
                Err(e) => {
                    break Err(e).with_context(|| format!("cannot create {}", lock.display()))
                }
            }
        };
        fs::remove_file(&mine).ok();
        result
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        fs::remove_file(&self.0).ok();
    }
}

/// Builds the kernel in `dir`: extract, patch, configure, build, install the module metadata,
/// and write `kernel.info` last. The tree is built where it stays (kbuild records absolute
/// paths), so an interrupted build leaves a directory without `kernel.info` that the next run
/// continues incrementally.
fn build_kernel(
    tools: &Toolchain,
    inputs: &Inputs,
    deb: &Path,
    version: &str,
    dir: &Path,
) -> Result<Kernel> {
    let src = dir.join("src");
    let log = dir.join("build.log");
    mkdir(dir)?;
    if !src.join(".seng-patched").exists() {
        eprintln!("kernel rfl-6.12: unpacking {SOURCE_PACKAGE} {version}");
        remove_all(&src)?;
        let unpacked = dir.join("deb");
        remove_all(&unpacked)?;
        Cmd::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&unpacked)
            .output()?;
        let tarball = unpacked
            .join("usr/src")
            .join(format!("{SOURCE_PACKAGE}.tar.xz"));
        mkdir(&src)?;
        Cmd::new("tar")
            .args(["-xJf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1")
            .output()?;
        remove_all(&unpacked)?;
        for patch in &inputs.patches {
            Cmd::new("patch")
                .args(["-p1", "--batch", "--forward", "-i"])
                .arg(patch)
                .dir(&src)
                .output()
                .with_context(|| format!("cannot apply {}", patch.display()))?;
        }
        fs::write(src.join(".seng-patched"), b"").context("cannot mark the tree patched")?;
    }

    tools
        .make(&src)
        .arg("rustavailable")
        .output()
        .context("the Rust toolchain does not suit this kernel")?;
    tools.make(&src).arg("tinyconfig").output()?;
    Cmd::new(src.join("scripts/kconfig/merge_config.sh"))
        .args(["-m", ".config"])
        .arg(&inputs.fragment)
        .dir(&src)
        .output()?;
    tools.make(&src).arg("olddefconfig").output()?;
    check_config(&src.join(".config"), &inputs.fragment)?;

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "kernel rfl-6.12: building {version} with CONFIG_RUST on {jobs} cores (about 5 minutes on 2; log in {})",
        log.display()
    );
    tools.make_logged(&src, &[&format!("-j{jobs}"), "bzImage", "modules"], &log)?;
    let release = tools
        .make(&src)
        .args(["-s", "kernelrelease"])
        .stdout()?
        .trim()
        .to_string();

    let modules = dir.join("modules");
    remove_all(&modules)?;
    tools
        .make(&src)
        .arg(format!("INSTALL_MOD_PATH={}", modules.display()))
        .arg("modules_install")
        .output()?;
    let modules_dir = modules.join("lib/modules").join(&release);
    for link in ["build", "source"] {
        remove_all(&modules_dir.join(link))?;
    }
    fs::copy(src.join("arch/x86/boot/bzImage"), dir.join("vmlinuz"))
        .context("cannot copy bzImage")?;
    remove_all(&dir.join("build"))?;
    std::os::unix::fs::symlink("src", dir.join("build")).context("cannot link build")?;

    let info = format!(
        "series={}\nrelease={release}\nversion={version}\ninputs={:016x}\ndir={}\n",
        Series::Rfl6_12,
        inputs.hash,
        dir.display()
    );
    fs::write(dir.join("kernel.info"), info).context("cannot write kernel.info")?;
    Kernel::load(dir).context("the new kernel.info does not read back")
}

/// Fails if an option of the fragment did not survive `olddefconfig` (a missing dependency).
fn check_config(config: &Path, fragment: &Path) -> Result<()> {
    let have =
        fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let want = fs::read_to_string(fragment)
        .with_context(|| format!("cannot read {}", fragment.display()))?;
    let lost = lost_options(&have, &want);
    ensure!(
        lost.is_empty(),
        "{} asks for options the configuration lacks (a dependency is off): {}",
        fragment.display(),
        lost.join(", ")
    );
    Ok(())
}

/// The `CONFIG_...=...` lines of `fragment` that `config` does not have.
fn lost_options<'a>(config: &str, fragment: &'a str) -> Vec<&'a str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter(|l| !config.lines().any(|h| h == *l))
        .collect()
}

/// Removes the Rust-for-Linux kernels of other inputs: each holds a whole built tree (about
/// 2 GB), and a changed fragment, patch or toolchain makes them stale.
fn remove_other_builds(paths: &Paths, keep: &Path) -> Result<()> {
    for entry in fs::read_dir(paths.kernels())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Trees another xtask is building (they have a lock) stay.
        let building = sibling(&path, "lock").exists();
        if name.starts_with("rfl-6.12-") && path.is_dir() && path != keep && !building {
            eprintln!(
                "kernel rfl-6.12: removing the outdated build {}",
                path.display()
            );
            remove_all(&path)?;
        }
    }
    Ok(())
}

/// Builds `seng.ko` of `seng-kmod-rfl/` for `kernel`; returns `<target>/kmod/<release>/seng.ko`.
///
/// kbuild builds in the directory it is given, so the sources are mirrored into
/// `<target>/kmod/<release>/build/` in the repository's layout (the module reaches seng-core and
/// the shared files of `seng-kmod/rust/src` by relative path). Any warning fails the build.
pub fn build_module(paths: &Paths, kernel: &Kernel) -> Result<PathBuf> {
    let tools = Toolchain::find()?;
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

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sibling_keeps_the_version_dots() {
        assert_eq!(
            sibling(Path::new("/c/kernels/rfl-6.12-00ff"), "lock"),
            Path::new("/c/kernels/rfl-6.12-00ff.lock")
        );
        assert_eq!(
            sibling(Path::new("/c/kernels/rfl-6.12-00ff"), "lock.42"),
            Path::new("/c/kernels/rfl-6.12-00ff.lock.42")
        );
    }

    #[test]
    fn lost_options_are_the_missing_lines() {
        let config = "CONFIG_RUST=y\n# CONFIG_MODVERSIONS is not set\nCONFIG_LOCALVERSION=\"-x\"\n";
        for (fragment, lost) in [
            ("CONFIG_RUST=y\n", vec![]),
            (
                "# comment\n\nCONFIG_RUST=y\nCONFIG_LOCALVERSION=\"-x\"\n",
                vec![],
            ),
            ("CONFIG_TUN=y\nCONFIG_RUST=y\n", vec!["CONFIG_TUN=y"]),
            ("CONFIG_RUST=m\n", vec!["CONFIG_RUST=m"]),
            (
                "CONFIG_LOCALVERSION=\"-y\"\n",
                vec!["CONFIG_LOCALVERSION=\"-y\""],
            ),
        ] {
            assert_eq!(lost_options(config, fragment), lost, "{fragment:?}");
        }
    }
}
