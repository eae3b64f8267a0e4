// SPDX-License-Identifier: GPL-2.0-only
//! Debian cloud kernels for the VM tests and module builds: resolving the newest kernel of a
//! series, downloading its image, headers and kbuild packages, and extracting them into
//! `<cache>/kernels/<release>/`:
//!
//! - `vmlinuz`: the bootable image;
//! - `build` -> `root/usr/src/linux-headers-<release>`: the KDIR for out-of-tree builds;
//! - `modules/lib/modules/<release>`: the image's whole module tree, decompressed, depmod'ed;
//! - `kernel.info`: what was installed (written last; the directory appears by rename only
//!   when complete, so an interrupted fetch never leaves a half tree behind).

use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::apt::AptRoot;
use crate::cmd::Cmd;
use crate::paths::{mkdir, remove_all, Paths};

/// A kernel series the project supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    /// Debian 11 (bullseye) 5.10 LTS.
    V5_10,
    /// Debian 12 (bookworm) 6.1 LTS.
    V6_1,
    /// Debian 12 backported 6.12 LTS.
    V6_12,
    /// 6.12 with CONFIG_RUST, built here from Debian's source (`source_kernel.rs`); not part
    /// of `all`.
    Rfl6_12,
    /// 6.12 with KASAN, lockdep, kmemleak and the other debugging checks, built here from
    /// Debian's source (`source_kernel.rs`) for the distro flavour; not part of `all`.
    Debug6_12,
}

impl Series {
    /// Every supported series, oldest first.
    pub const ALL: [Series; 3] = [Series::V5_10, Series::V6_1, Series::V6_12];

    /// Every series `--kernel` accepts by name.
    const KNOWN: [Series; 5] = [
        Series::V5_10,
        Series::V6_1,
        Series::V6_12,
        Series::Rfl6_12,
        Series::Debug6_12,
    ];

    /// The series as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Series::V5_10 => "5.10",
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
            Series::Rfl6_12 => "rfl-6.12",
            Series::Debug6_12 => "debug-6.12",
        }
    }

    fn parse(s: &str) -> Option<Series> {
        Series::KNOWN.into_iter().find(|k| k.name() == s)
    }

    /// The error for a name that is none of [`Series::KNOWN`]; `extra` names further choices.
    fn unknown(s: &str, extra: &str) -> String {
        let names: Vec<&str> = Series::KNOWN.iter().map(|k| k.name()).collect();
        format!("unknown kernel series `{s}` (expected {}{extra})", names.join(", "))
    }

    fn debian_release(self) -> &'static str {
        match self {
            Series::V5_10 => "bullseye",
            Series::V6_1 | Series::V6_12 | Series::Rfl6_12 | Series::Debug6_12 => "bookworm",
        }
    }

    /// The image package name up to the part that varies (the ABI number).
    fn image_prefix(self) -> &'static str {
        match self {
            Series::V5_10 => "linux-image-5.10.0-",
            Series::V6_1 => "linux-image-6.1.0-",
            Series::V6_12 | Series::Rfl6_12 | Series::Debug6_12 => "linux-image-6.12.",
        }
    }

    /// Whether `rest` (what follows the image prefix, e.g. `56` or `117+deb12`) is an ABI.
    fn valid_abi_rest(self, rest: &str) -> bool {
        let (number, suffix) = rest.split_at(rest.find('+').unwrap_or(rest.len()));
        let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        match self {
            Series::V5_10 | Series::V6_1 => digits && suffix.is_empty(),
            Series::V6_12 | Series::Rfl6_12 | Series::Debug6_12 => {
                digits && suffix.starts_with("+deb")
            }
        }
    }

    fn kbuild_package(self, abi: &str) -> String {
        match self {
            Series::V5_10 | Series::V6_1 => format!("linux-kbuild-{}", self.name()),
            Series::V6_12 | Series::Rfl6_12 | Series::Debug6_12 => format!("linux-kbuild-{abi}"),
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `--kernel`: a series, a comma-separated list of series, or `all`.
pub fn parse_selection(s: &str) -> Result<Vec<Series>, String> {
    if s == "all" {
        return Ok(Series::ALL.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let series = Series::parse(part.trim()).ok_or_else(|| Series::unknown(part, " or all"))?;
        if !out.contains(&series) {
            out.push(series);
        }
    }
    Ok(out)
}

/// One kernel series by name (`6.1`, ...).
pub fn parse_one(s: &str) -> Result<Series, String> {
    Series::parse(s.trim()).ok_or_else(|| Series::unknown(s, ""))
}

/// How to resolve kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchOpts {
    /// Use only what is cached (no apt at all).
    pub offline: bool,
    /// Refresh the package lists even if they are recent.
    pub refresh: bool,
}

/// An extracted kernel in the cache.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The series it belongs to.
    pub series: Series,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The Debian package version, e.g. `6.1.192-2`.
    pub version: String,
    /// The cache directory holding it.
    pub dir: PathBuf,
}

impl Kernel {
    /// The bootable image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The kbuild directory for out-of-tree modules (`make -C KDIR M=...`).
    pub fn kdir(&self) -> PathBuf {
        self.dir.join("build")
    }

    /// The depmod base directory: it holds `lib/modules/<release>`.
    pub fn modules_base(&self) -> PathBuf {
        self.dir.join("modules")
    }

    /// `lib/modules/<release>` inside [`Kernel::modules_base`].
    pub fn modules_dir(&self) -> PathBuf {
        self.modules_base().join("lib/modules").join(&self.release)
    }

    pub(crate) fn load(dir: &Path) -> Option<Kernel> {
        let info = fs::read_to_string(dir.join("kernel.info")).ok()?;
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        // The KDIR Makefile names the tree by absolute path: a moved cache is stale.
        if field("dir")? != dir.to_string_lossy() {
            return None;
        }
        Some(Kernel {
            series: Series::parse(&field("series")?)?,
            release: field("release")?,
            version: field("version")?,
            dir: dir.to_path_buf(),
        })
    }
}

/// A kernel ABI found in the package lists, e.g. `6.1.0-56` or `6.12.117+deb12`.
struct Candidate {
    abi: String,
}

impl Candidate {
    fn release(&self) -> String {
        format!("{}-cloud-amd64", self.abi)
    }
}

/// Compares version-like strings by their digit runs, so `6.1.0-9` < `6.1.0-56`.
fn version_cmp(a: &str, b: &str) -> Ordering {
    fn numbers(s: &str) -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    }
    numbers(a).cmp(&numbers(b))
}

/// The newest kernel of `series` already in the cache.
fn newest_cached(paths: &Paths, series: Series) -> Option<Kernel> {
    fs::read_dir(paths.kernels())
        .ok()?
        .filter_map(|e| Kernel::load(&e.ok()?.path()))
        .filter(|k| k.series == series)
        .max_by(|a, b| version_cmp(&a.release, &b.release))
}

/// Resolves the newest kernel of `series` and makes sure it is in the cache.
///
/// If the newest cannot be downloaded (mirrors do lag behind their lists), the next older ones
/// are tried, with a warning. If apt itself is unreachable, the newest cached kernel is used.
pub fn fetch(paths: &Paths, series: Series, opts: FetchOpts) -> Result<Kernel> {
    if let Some(recipe) = crate::source_kernel::Recipe::of(paths, series)? {
        return crate::source_kernel::kernel(paths, &recipe, opts);
    }
    if opts.offline {
        return newest_cached(paths, series)
            .with_context(|| format!("no cached {series} kernel for --offline; run `cargo xtask kernel fetch --kernel {series}`"));
    }
    let apt = AptRoot::new(&paths.cache, series.debian_release())?;
    let updated = match apt.update(opts.refresh) {
        Ok(updated) => updated,
        Err(e) => {
            if let Some(k) = newest_cached(paths, series) {
                eprintln!(
                    "warning: apt update failed, using cached {}: {e:#}",
                    k.release
                );
                return Ok(k);
            }
            return Err(e.context(format!("cannot look up {series} kernels")));
        }
    };
    // The answer only changes when the lists do: skip apt-cache (slow on big lists) otherwise.
    let resolved = apt.dir().join(format!("resolved-{series}"));
    if !updated && is_newer(&resolved, &apt.stamp()) {
        let release = fs::read_to_string(&resolved).unwrap_or_default();
        if let Some(k) = Kernel::load(&paths.kernels().join(release.trim())) {
            return Ok(k);
        }
    }
    let kernel = resolve(paths, &apt, series)?;
    fs::write(&resolved, &kernel.release).context("cannot record the resolved kernel")?;
    Ok(kernel)
}

/// Whether `a` was modified after `b` (false if either is missing).
fn is_newer(a: &Path, b: &Path) -> bool {
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((mtime(a), mtime(b)), (Some(a), Some(b)) if a > b)
}

/// Picks the newest kernel of `series` in the lists that can be had, fetching it if needed.
fn resolve(paths: &Paths, apt: &AptRoot, series: Series) -> Result<Kernel> {
    let prefix = series.image_prefix();
    let mut abis: Vec<String> = apt
        .pkgnames(prefix)?
        .iter()
        .filter_map(|name| {
            let rest = name
                .strip_suffix("-cloud-amd64-unsigned")
                .or_else(|| name.strip_suffix("-cloud-amd64"))?
                .strip_prefix(prefix)?;
            series
                .valid_abi_rest(rest)
                .then(|| format!("{}{rest}", &prefix["linux-image-".len()..]))
        })
        .collect();
    abis.sort_by(|a, b| version_cmp(b, a));
    abis.dedup();
    if abis.is_empty() {
        bail!(
            "no {series} cloud kernel image in the {} package lists",
            series.debian_release()
        );
    }
    let mut failures = Vec::new();
    for abi in abis.into_iter().take(3) {
        let cand = Candidate { abi };
        let release = cand.release();
        let result = match Kernel::load(&paths.kernels().join(&release)) {
            Some(k) => Ok(k),
            None => install(paths, apt, series, &cand)
                .with_context(|| format!("cannot fetch kernel {release}")),
        };
        match result {
            Ok(k) => {
                if !failures.is_empty() {
                    eprintln!("warning: using the older {series} kernel {}", k.release);
                }
                return Ok(k);
            }
            Err(e) => {
                eprintln!("warning: {e:#}");
                failures.push(release);
            }
        }
    }
    bail!(
        "no {series} kernel could be fetched (tried {})",
        failures.join(", ")
    )
}

/// Downloads and extracts one kernel into the cache.
fn install(paths: &Paths, apt: &AptRoot, series: Series, cand: &Candidate) -> Result<Kernel> {
    let release = cand.release();
    eprintln!("kernel {series}: fetching {release}");
    let debs_dir = paths.cache.join("debs");
    mkdir(&debs_dir)?;
    // Some mirrors lack the -unsigned image but carry the signed one: the same kernel, signed
    // for Secure Boot, which QEMU boots just as well.
    let mut image = None;
    let mut errors = Vec::new();
    for name in [
        format!("linux-image-{release}-unsigned"),
        format!("linux-image-{release}"),
    ] {
        let Some(version) = apt.version(&name)? else {
            continue;
        };
        match fetch_deb(apt, &debs_dir, &name, &version) {
            Ok(deb) => {
                if !name.ends_with("-unsigned") {
                    eprintln!(
                        "note: using the signed image {name} (the -unsigned one is unavailable)"
                    );
                }
                image = Some((name, version, deb));
                break;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let Some((image_pkg, version, image_deb)) = image else {
        bail!(
            "no image package could be downloaded: {}",
            errors.join("; ")
        );
    };
    let mut debs = vec![image_deb];
    for pkg in build_packages(series, &release, &cand.abi) {
        let v = apt
            .version(&pkg)?
            .with_context(|| format!("package {pkg} is not in the lists"))?;
        debs.push(fetch_deb(apt, &debs_dir, &pkg, &v)?);
    }
    extract(paths, series, &release, &version, &image_pkg, &debs)
}

/// The packages beside the image that out-of-tree modules build with: headers, common headers,
/// kbuild.
fn build_packages(series: Series, release: &str, abi: &str) -> [String; 3] {
    [
        format!("linux-headers-{release}"),
        format!("linux-headers-{abi}-common"),
        series.kbuild_package(abi),
    ]
}

impl Kernel {
    /// The cached `.deb`s this Debian kernel was extracted from (image, headers, common headers,
    /// kbuild), to install the same kernel into a Debian root.
    pub fn debs(&self, paths: &Paths) -> Result<Vec<PathBuf>> {
        let info = fs::read_to_string(self.dir.join("kernel.info"))?;
        let image = info
            .lines()
            .find_map(|l| l.strip_prefix("image="))
            .with_context(|| format!("{} names no image package", self.dir.display()))?;
        let abi = self
            .release
            .strip_suffix("-cloud-amd64")
            .with_context(|| format!("{} is not a Debian cloud kernel", self.release))?;
        let version = self.version.replace(':', "%3a");
        std::iter::once(image.to_string())
            .chain(build_packages(self.series, &self.release, abi))
            .map(|pkg| {
                let prefix = format!("{pkg}_{version}_");
                fs::read_dir(paths.cache.join("debs"))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
                    })
                    .with_context(|| format!("no {prefix}*.deb in the cache: run `cargo xtask kernel fetch --refresh`"))
            })
            .collect()
    }
}

/// The cached `.deb` of `pkg` at `version`, downloading it first if needed. Downloads land in a
/// private temporary directory and are renamed in only once apt has verified them.
pub(crate) fn fetch_deb(
    apt: &AptRoot,
    debs_dir: &Path,
    pkg: &str,
    version: &str,
) -> Result<PathBuf> {
    let prefix = format!("{pkg}_{}_", version.replace(':', "%3a"));
    let find = |dir: &Path| -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let name = e.file_name().into_string().ok()?;
                (name.starts_with(&prefix) && name.ends_with(".deb")).then(|| e.path())
            })
    };
    if let Some(deb) = find(debs_dir) {
        return Ok(deb);
    }
    remove_stale_temps(debs_dir)?;
    let tmp = debs_dir.join(format!(".partial-{}", std::process::id()));
    remove_all(&tmp)?;
    mkdir(&tmp)?;
    let result = apt
        .download(&[(pkg.to_string(), version.to_string())], &tmp)
        .and_then(|()| {
            let got =
                find(&tmp).with_context(|| format!("apt-get download left no {prefix}*.deb"))?;
            let deb = debs_dir.join(got.file_name().context("download has no file name")?);
            fs::rename(&got, &deb).with_context(|| format!("cannot move {}", got.display()))?;
            Ok(deb)
        });
    remove_all(&tmp)?;
    result
}

/// Removes the temporary directories (`.name-<pid>`) that interrupted runs left in `dir`; those
/// of live processes stay.
fn remove_stale_temps(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            remove_all(&dir.join(&name))?;
        }
    }
    Ok(())
}

/// Extracts the packages into a temporary directory, prepares it, and renames it into place.
fn extract(
    paths: &Paths,
    series: Series,
    release: &str,
    version: &str,
    image_pkg: &str,
    debs: &[PathBuf],
) -> Result<Kernel> {
    let kernels = paths.kernels();
    let dest = kernels.join(release);
    mkdir(&kernels)?;
    remove_stale_temps(&kernels)?;
    let tmp = kernels.join(format!(".tmp-{release}-{}", std::process::id()));
    remove_all(&tmp)?;
    let root = tmp.join("root");
    mkdir(&root)?;
    for deb in debs {
        Cmd::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&root)
            .output()?;
    }

    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    fs::rename(&vmlinuz, tmp.join("vmlinuz"))
        .with_context(|| format!("the image package has no {}", vmlinuz.display()))?;

    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(release))
        .find(|d| d.join("modules.order").exists())
        .context("the image package has no modules tree with modules.order")?;
    // The headers package adds build/source links to /usr/src, meaningless here.
    for link in ["build", "source"] {
        remove_all(&modules.join(link))?;
    }
    let modules_dir = tmp.join("modules/lib/modules").join(release);
    mkdir(modules_dir.parent().context("modules dir has no parent")?)?;
    fs::rename(&modules, &modules_dir).context("cannot move the modules tree")?;
    decompress_modules(&modules_dir)?;
    Cmd::new("depmod")
        .arg("-b")
        .arg(tmp.join("modules"))
        .arg(release)
        .output()?;

    let kdir_rel = format!("root/usr/src/linux-headers-{release}");
    fix_kdir(&tmp.join(&kdir_rel), &dest.join("root"))?;
    std::os::unix::fs::symlink(&kdir_rel, tmp.join("build")).context("cannot link build")?;

    let info = format!(
        "series={series}\nrelease={release}\nversion={version}\nimage={image_pkg}\ndir={}\n",
        dest.display()
    );
    fs::write(tmp.join("kernel.info"), info).context("cannot write kernel.info")?;
    if dest.exists() && Kernel::load(&dest).is_none() {
        // Not a tree this code completed (moved cache, manual edits): replace it.
        remove_all(&dest)?;
    }
    if let Err(e) = fs::rename(&tmp, &dest) {
        // Another xtask finished the same kernel first: keep its tree.
        remove_all(&tmp)?;
        if Kernel::load(&dest).is_none() {
            return Err(e)
                .with_context(|| format!("cannot move the kernel into {}", dest.display()));
        }
    }
    Kernel::load(&dest).context("the installed kernel.info does not read back")
}

/// Debian's KDIR Makefile includes the common headers tree by absolute `/usr/src/...` path (the
/// 5.10 and 6.1 packages at least); point it into the extracted tree at `final_root`.
fn fix_kdir(kdir: &Path, final_root: &Path) -> Result<()> {
    let makefile = kdir.join("Makefile");
    let text = fs::read_to_string(&makefile)
        .with_context(|| format!("cannot read {}", makefile.display()))?;
    let usr_src = format!("{}/usr/src/", final_root.display());
    let fixed: String = text
        .lines()
        .map(|l| match l.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include {usr_src}{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&makefile, fixed).with_context(|| format!("cannot write {}", makefile.display()))
}

/// Decompresses `.ko.xz`/`.ko.zst` modules in place (busybox and kmod without xz support need
/// plain `.ko`), on two processes since there are thousands of them.
fn decompress_modules(dir: &Path) -> Result<()> {
    let mut xz = Vec::new();
    let mut zst = Vec::new();
    walk(dir, &mut |path| {
        let name = path.to_string_lossy();
        if name.ends_with(".ko.xz") {
            xz.push(path.to_path_buf());
        } else if name.ends_with(".ko.zst") {
            zst.push(path.to_path_buf());
        }
    })?;
    let mut jobs: Vec<Cmd> = Vec::new();
    for half in xz.chunks(xz.len().div_ceil(2).max(1)) {
        jobs.push(Cmd::new("xz").args(["-d", "-q", "--"]).args(half));
    }
    for half in zst.chunks(zst.len().div_ceil(2).max(1)) {
        jobs.push(Cmd::new("zstd").args(["-d", "-q", "--rm", "--"]).args(half));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| s.spawn(move || job.output()))
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("decompression thread panicked").map(drop))
    })
}

/// Calls `f` on every file (not directory, not symlink) under `dir`.
pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), f)?;
        } else if kind.is_file() {
            f(&entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_parse_and_unknown_ones_list_the_choices() {
        assert_eq!(parse_one(" 6.1 "), Ok(Series::V6_1));
        assert_eq!(parse_selection("6.12,5.10,6.12"), Ok(vec![Series::V6_12, Series::V5_10]));
        assert_eq!(parse_selection("all"), Ok(Series::ALL.to_vec()));
        let one = parse_one("6.2").unwrap_err();
        assert_eq!(one, "unknown kernel series `6.2` (expected 5.10, 6.1, 6.12, rfl-6.12, debug-6.12)");
        let selection = parse_selection("6.1,7").unwrap_err();
        assert_eq!(selection, "unknown kernel series `7` (expected 5.10, 6.1, 6.12, rfl-6.12, debug-6.12 or all)");
    }
}
