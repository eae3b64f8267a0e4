// SPDX-License-Identifier: GPL-2.0-only
//! Kernels built here from Debian's `linux-source-6.12` (downloaded through the private apt
//! root, never installed), for what Debian's own kernels cannot do:
//!
//! - `rfl-6.12`: `CONFIG_RUST`, for the Rust-for-Linux flavour (`rfl.rs`), built with LLVM 19
//!   and the rustc on PATH, patched with `seng-kmod-rfl/kernel/*.patch`;
//! - `debug-6.12`: KASAN, KFENCE, lockdep, RCU checking, kmemleak, failslab and UBSAN, for the
//!   distro flavour (`seng-kmod/`), built with gcc as Debian builds its kernels.
//!
//! Each is a [`Recipe`]: `make tinyconfig`, then its configuration fragments merged in order (a
//! later one overrides an option of an earlier one), then `olddefconfig`. It is cached as
//! `<cache>/kernels/<series>-<key>/`, laid out like the Debian kernels of `kernel.rs` (`vmlinuz`,
//! `build`, `modules/lib/modules/<release>`, `kernel.info`); the key covers the source version,
//! the fragments, the patches and the compiler (an out-of-tree module must be built by the
//! compiler that built the kernel). A lock makes a second xtask wait for a build under way.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::apt::AptRoot;
use crate::cmd::{tail, Cmd};
use crate::kernel::{fetch_deb, FetchOpts, Kernel, Series};
use crate::paths::{mkdir, remove_all, Paths};

/// The Debian package with the kernel source, and the release whose lists carry it.
const SOURCE_PACKAGE: &str = "linux-source-6.12";
const SOURCE_RELEASE: &str = "bookworm";

/// LLVM 19 as Debian installs it (`clang-19 lld-19 llvm-19 libclang-19-dev`); `SENG_LLVM_DIR`
/// overrides the directory of its programs.
const LLVM_DIR: &str = "/usr/lib/llvm-19/bin";

/// The compiler a kernel (and every module built against it) is built with.
pub enum Compiler {
    /// LLVM with Rust: `LLVM=` for kbuild (the directory of clang, ld.lld and the llvm tools,
    /// with a final `/`) and libclang for bindgen.
    Llvm { llvm: String, libclang: PathBuf },
    /// The host's gcc and binutils, kbuild's default.
    Gcc,
}

/// A compiler with what identifies it in the cache key.
pub struct Toolchain {
    compiler: Compiler,
    versions: String,
}

impl Toolchain {
    /// LLVM 19 with rustc and bindgen, for `CONFIG_RUST`.
    pub fn llvm() -> Result<Toolchain> {
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
        let versions = first_lines(
            [
                Cmd::new(dir.join("clang")).arg("--version"),
                Cmd::new("rustc").arg("--version"),
                Cmd::new("bindgen").arg("--version"),
            ],
            hint,
        )?;
        Ok(Toolchain {
            compiler: Compiler::Llvm {
                llvm: format!("{}/", dir.display()),
                libclang,
            },
            versions,
        })
    }

    /// The host's gcc.
    pub fn gcc() -> Result<Toolchain> {
        let versions = first_lines(
            [Cmd::new("gcc").arg("--version")],
            "install gcc (run .ci/setup-host.sh)",
        )?;
        Ok(Toolchain {
            compiler: Compiler::Gcc,
            versions,
        })
    }

    /// Whether the kernel gets `CONFIG_RUST` (checked with `make rustavailable`).
    fn rust(&self) -> bool {
        matches!(self.compiler, Compiler::Llvm { .. })
    }

    /// `make` in `dir` with this toolchain.
    pub fn make(&self, dir: &Path) -> Cmd {
        let make = Cmd::new("make").arg("-C").arg(dir);
        match &self.compiler {
            Compiler::Llvm { llvm, libclang } => make
                .arg(format!("LLVM={llvm}"))
                .env("LIBCLANG_PATH", libclang),
            Compiler::Gcc => make,
        }
    }

    /// `make ARGS` in `dir` with its output going to `log` as it runs, so a build of minutes can
    /// be followed there; a failure quotes the log's tail.
    fn make_logged(&self, dir: &Path, args: &[&str], log: &Path) -> Result<()> {
        let file =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut make = std::process::Command::new("make");
        make.arg("-C").arg(dir);
        if let Compiler::Llvm { llvm, libclang } = &self.compiler {
            make.arg(format!("LLVM={llvm}"))
                .env("LIBCLANG_PATH", libclang);
        }
        let status = make
            .args(args)
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

/// The first output line of each command, one a line; a failure names `hint`.
fn first_lines<const N: usize>(cmds: [Cmd; N], hint: &str) -> Result<String> {
    let mut versions = String::new();
    for cmd in cmds {
        let shown = cmd.shown().to_string();
        let out = cmd
            .stdout()
            .with_context(|| format!("`{shown}` failed: {hint}"))?;
        versions.push_str(out.lines().next().unwrap_or(""));
        versions.push('\n');
    }
    Ok(versions)
}

/// How one series is built: its compiler, configuration fragments and patches.
pub struct Recipe {
    /// The series it builds (it names the cache directory).
    pub series: Series,
    /// The compiler of the kernel and of the modules built against it.
    pub tools: Toolchain,
    /// Merged onto `tinyconfig` in this order.
    fragments: Vec<PathBuf>,
    /// Applied to the source with `patch -p1`, in name order.
    patches: Vec<PathBuf>,
    /// What the build prints it will take (measured on two cores).
    expected: &'static str,
}

impl Recipe {
    /// The recipe of a series built here; `None` for Debian's own kernels.
    pub fn of(paths: &Paths, series: Series) -> Result<Option<Recipe>> {
        let rfl = paths.root.join("seng-kmod-rfl");
        Ok(Some(match series {
            Series::Rfl6_12 => {
                let mut patches: Vec<PathBuf> = fs::read_dir(rfl.join("kernel"))
                    .with_context(|| format!("cannot list {}", rfl.join("kernel").display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "patch"))
                    .collect();
                patches.sort();
                Recipe {
                    series,
                    tools: Toolchain::llvm()?,
                    fragments: vec![rfl.join("rfl.config")],
                    patches,
                    expected: "about 5 minutes",
                }
            }
            // The Rust-for-Linux kernel's fragment is the guest's base (networking, netfilter,
            // the tools' needs): the suite runs on both, so both get the same.
            Series::Debug6_12 => Recipe {
                series,
                tools: Toolchain::gcc()?,
                fragments: vec![
                    rfl.join("rfl.config"),
                    paths.root.join("vmtest/kernel/debug.config"),
                ],
                patches: Vec::new(),
                expected: "about 12 minutes",
            },
            Series::V5_10 | Series::V6_1 | Series::V6_12 => return Ok(None),
        }))
    }

    /// A fingerprint of the toolchain, the fragments and the patches.
    fn hash(&self) -> Result<u64> {
        let mut h = DefaultHasher::new();
        h.write(self.tools.versions.as_bytes());
        for file in self.fragments.iter().chain(&self.patches) {
            h.write(file.file_name().unwrap_or_default().as_encoded_bytes());
            h.write(&fs::read(file).with_context(|| format!("cannot read {}", file.display()))?);
        }
        Ok(h.finish())
    }

    /// The cache directory name for these inputs (`hash`) with the source at `version`.
    fn dir_name(&self, hash: u64, version: &str) -> String {
        let mut h = DefaultHasher::new();
        h.write_u64(hash);
        h.write(version.as_bytes());
        format!("{}-{:016x}", self.series, h.finish())
    }
}

/// Resolves the kernel of `recipe`, building it first if the cache has none for the current
/// source version and the recipe's inputs.
pub fn kernel(paths: &Paths, recipe: &Recipe, opts: FetchOpts) -> Result<Kernel> {
    let series = recipe.series;
    let hash = recipe.hash()?;
    let cached_version = || {
        let key = format!("{hash:016x}");
        fs::read_dir(paths.kernels())
            .ok()?
            .filter_map(|e| Kernel::load(&e.ok()?.path()))
            .filter(|k| k.series == series)
            .filter(|k| {
                fs::read_to_string(k.dir.join("kernel.info"))
                    .is_ok_and(|i| i.contains(&format!("inputs={key}\n")))
            })
            .max_by(|a, b| a.version.cmp(&b.version))
    };
    if opts.offline {
        return cached_version().with_context(|| {
            format!("no {series} kernel for these inputs in the cache for --offline; run `cargo xtask kernel fetch --kernel {series}`")
        });
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
    let dir = paths.kernels().join(recipe.dir_name(hash, &version));
    if let Some(k) = Kernel::load(&dir) {
        return Ok(k);
    }
    let _lock = BuildLock::acquire(&dir, series)?;
    // Another xtask may have finished this kernel while we waited.
    if let Some(k) = Kernel::load(&dir) {
        return Ok(k);
    }
    let debs = paths.cache.join("debs");
    mkdir(&debs)?;
    let deb = fetch_deb(&apt, &debs, SOURCE_PACKAGE, &version)?;
    let kernel = build_kernel(recipe, hash, &deb, &version, &dir)?;
    remove_other_builds(paths, series, &dir)?;
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
    fn acquire(dir: &Path, series: Series) -> Result<BuildLock> {
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
                        eprintln!("kernel {series}: waiting for process {owner}, which builds the same kernel");
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
    recipe: &Recipe,
    hash: u64,
    deb: &Path,
    version: &str,
    dir: &Path,
) -> Result<Kernel> {
    let series = recipe.series;
    let tools = &recipe.tools;
    let src = dir.join("src");
    let log = dir.join("build.log");
    mkdir(dir)?;
    if !src.join(".seng-patched").exists() {
        eprintln!("kernel {series}: unpacking {SOURCE_PACKAGE} {version}");
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
        for patch in &recipe.patches {
            Cmd::new("patch")
                .args(["-p1", "--batch", "--forward", "-i"])
                .arg(patch)
                .dir(&src)
                .output()
                .with_context(|| format!("cannot apply {}", patch.display()))?;
        }
        fs::write(src.join(".seng-patched"), b"").context("cannot mark the tree patched")?;
    }

    if tools.rust() {
        tools
            .make(&src)
            .arg("rustavailable")
            .output()
            .context("the Rust toolchain does not suit this kernel")?;
    }
    tools.make(&src).arg("tinyconfig").output()?;
    Cmd::new(src.join("scripts/kconfig/merge_config.sh"))
        .args(["-m", ".config"])
        .args(&recipe.fragments)
        .dir(&src)
        .output()?;
    tools.make(&src).arg("olddefconfig").output()?;
    check_config(&src.join(".config"), &recipe.fragments)?;

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "kernel {series}: building {version} on {jobs} cores ({} on 2; log in {})",
        recipe.expected,
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
        "series={series}\nrelease={release}\nversion={version}\ninputs={hash:016x}\ndir={}\n",
        dir.display()
    );
    fs::write(dir.join("kernel.info"), info).context("cannot write kernel.info")?;
    Kernel::load(dir).context("the new kernel.info does not read back")
}

/// Fails if an option the fragments set did not survive `olddefconfig` (a missing dependency).
fn check_config(config: &Path, fragments: &[PathBuf]) -> Result<()> {
    let have =
        fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let mut texts = Vec::new();
    for fragment in fragments {
        texts.push(
            fs::read_to_string(fragment)
                .with_context(|| format!("cannot read {}", fragment.display()))?,
        );
    }
    let lost = lost_options(&have, &texts);
    let names: Vec<String> = fragments.iter().map(|f| f.display().to_string()).collect();
    ensure!(
        lost.is_empty(),
        "{} ask for options the configuration lacks (a dependency is off): {}",
        names.join(" + "),
        lost.join(", ")
    );
    Ok(())
}

/// The option of a fragment line: `CONFIG_X=...` and `# CONFIG_X is not set` both set `X`.
fn option_name(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("# ") {
        return rest
            .strip_suffix(" is not set")
            .filter(|n| n.starts_with("CONFIG_"));
    }
    line.starts_with("CONFIG_")
        .then(|| line.split('=').next())
        .flatten()
}

/// The settings of the merged `fragments` (the last word on an option wins) that `config` does
/// not have.
fn lost_options<'a>(config: &str, fragments: &'a [String]) -> Vec<&'a str> {
    let mut wanted: Vec<&str> = Vec::new();
    for line in fragments.iter().flat_map(|f| f.lines()).map(str::trim) {
        if let Some(name) = option_name(line) {
            wanted.retain(|w| option_name(w) != Some(name));
            wanted.push(line);
        }
    }
    wanted
        .into_iter()
        .filter(|w| {
            let name = option_name(w).unwrap_or_default();
            let present = config.lines().any(|h| h == *w);
            // `olddefconfig` leaves an option off by omitting it when its menu is hidden.
            let omitted = w.starts_with('#') && !config.lines().any(|h| option_name(h) == Some(name));
            !present && !omitted
        })
        .collect()
}

/// Removes the builds of `series` for other inputs: each holds a whole built tree (2 GB or
/// more), and a changed fragment, patch or toolchain makes them stale.
fn remove_other_builds(paths: &Paths, series: Series, keep: &Path) -> Result<()> {
    let prefix = format!("{series}-");
    for entry in fs::read_dir(paths.kernels())? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Trees another xtask is building (they have a lock) stay.
        let building = sibling(&path, "lock").exists();
        if name.starts_with(&prefix) && path.is_dir() && path != keep && !building {
            eprintln!(
                "kernel {series}: removing the outdated build {}",
                path.display()
            );
            remove_all(&path)?;
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
            ("# CONFIG_MODVERSIONS is not set\n", vec![]),
            ("# CONFIG_KASAN is not set\n", vec![]),
            ("# CONFIG_RUST is not set\n", vec!["# CONFIG_RUST is not set"]),
        ] {
            assert_eq!(
                lost_options(config, &[fragment.to_string()]),
                lost,
                "{fragment:?}"
            );
        }
    }

    #[test]
    fn a_later_fragment_overrides_an_earlier_one() {
        let config = "# CONFIG_RUST is not set\nCONFIG_KASAN=y\n";
        let fragments = [
            "CONFIG_RUST=y\nCONFIG_KASAN=y\n".to_string(),
            "# CONFIG_RUST is not set\n".to_string(),
        ];
        assert!(lost_options(config, &fragments).is_empty());
        let fragments = [
            "# CONFIG_KASAN is not set\n".to_string(),
            "CONFIG_KASAN=y\nCONFIG_KFENCE=y\n".to_string(),
        ];
        assert_eq!(lost_options(config, &fragments), ["CONFIG_KFENCE=y"]);
    }
}
