// SPDX-License-Identifier: GPL-2.0-only
//! The guest initramfs of the VM tests, generated per kernel into `<target>/vmtest/<release>/`:
//!
//! - static busybox (`/bin`), `vmtest/init.sh` as `/init`;
//! - copies of the host's `ip`, `xtables-legacy-multi`, `xtables-nft-multi` (with the
//!   iptables/ip6tables/-save/-restore names of both backends), the xtables plugins, `kmod` (as
//!   modprobe, insmod, ...), `conntrack`, `tcpdump`, `ipset`, `nft`, `etcd` and `etcdctl`, and
//!   every shared library they load (found with `ldd`);
//! - the guest kernel's networking modules plus `extra/seng.ko`, with fresh `modules.*` from
//!   depmod;
//! - `vmtest/lib.sh`, `vmtest/lib-agent.sh`, `vmtest/tests/`, `vmtest/bench/`, `vmtest/data/`,
//!   `vmtest/e2e/`, `vmtest/scenarios/`, `vmtest/xt/` under `/vmtest`, the test plan
//!   (`/vmtest/plan`), and the project binaries named in `vmtest/guest-bins.txt`.
//!
//! The archive is named by a fingerprint of its content and reused when nothing changed.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::cpio::Archive;
use crate::kernel::{walk, Kernel};
use crate::paths::{mkdir, remove_all, Paths};

/// Where the guest finds the test harness files.
pub const GUEST_VMTEST: &str = "/vmtest";

const BUSYBOX: &str = "/bin/busybox";
const XTABLES_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// Host tools copied into the guest: candidate host paths (first existing wins), guest path.
const HOST_TOOLS: &[(&[&str], &str)] = &[
    (
        &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"],
        "/usr/sbin/ip",
    ),
    (
        &[
            "/usr/sbin/xtables-legacy-multi",
            "/sbin/xtables-legacy-multi",
        ],
        "/usr/sbin/xtables-legacy-multi",
    ),
    (
        &["/usr/sbin/xtables-nft-multi", "/sbin/xtables-nft-multi"],
        "/usr/sbin/xtables-nft-multi",
    ),
    (&["/usr/bin/kmod", "/bin/kmod"], "/usr/bin/kmod"),
    (
        &["/usr/sbin/conntrack", "/sbin/conntrack"],
        "/usr/sbin/conntrack",
    ),
    (
        &["/usr/bin/tcpdump", "/usr/sbin/tcpdump"],
        "/usr/bin/tcpdump",
    ),
    // The peers of the benchmarks: ipset's hash:ip and nftables' sets.
    (&["/usr/sbin/ipset", "/sbin/ipset"], "/usr/sbin/ipset"),
    (&["/usr/sbin/nft", "/sbin/nft"], "/usr/sbin/nft"),
    // The store `seng agent` shares gateways' tables through (Debian's etcd-server and
    // etcd-client), started by the agent tests themselves.
    (&["/usr/bin/etcd"], "/usr/bin/etcd"),
    (&["/usr/bin/etcdctl"], "/usr/bin/etcdctl"),
];

/// Host configuration files the tools read (protocol and service names), copied if present.
const HOST_ETC: &[&str] = &["/etc/protocols", "/etc/services", "/etc/ethertypes"];

/// One project binary for the guest, from `vmtest/guest-bins.txt`.
pub struct GuestBin {
    /// The cargo package directory, relative to the workspace root.
    pub package_dir: String,
    /// The binary target name.
    pub bin: String,
    /// The guest directory it goes to (`/usr/local/bin` unless the line says otherwise;
    /// `/vmtest/tests` makes it a test program).
    pub dest: String,
}

/// Reads `vmtest/guest-bins.txt`: lines `<package dir> <binary> [<guest dir>]`, `#` comments.
pub fn read_guest_bins(root: &Path) -> Result<Vec<GuestBin>> {
    let path = root.join("vmtest/guest-bins.txt");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bins = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (package_dir, bin, dest) = match words[..] {
            [p, b] => (p, b, "/usr/local/bin"),
            [p, b, d] if d.starts_with('/') => (p, b, d),
            _ => bail!(
                "{}:{}: expected `<package dir> <binary> [/guest/dir]`",
                path.display(),
                n + 1
            ),
        };
        bins.push(GuestBin {
            package_dir: package_dir.into(),
            bin: bin.into(),
            dest: dest.into(),
        });
    }
    Ok(bins)
}

/// Builds the guest binaries (release profile, one cargo run per package; a package directory
/// with a CMakeLists.txt and no Cargo.toml is a CMake project, see [`build_cmake`]) and returns
/// each as (host file, guest path).
pub fn build_guest_bins(paths: &Paths, bins: &[GuestBin]) -> Result<Vec<(PathBuf, String)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let packages: BTreeSet<&str> = bins.iter().map(|b| b.package_dir.as_str()).collect();
    let mut outputs = std::collections::BTreeMap::new();
    for package in packages {
        let dir = paths.root.join(package);
        if !dir.join("Cargo.toml").exists() && dir.join("CMakeLists.txt").exists() {
            outputs.insert(package, build_cmake(paths, package)?);
            continue;
        }
        // --manifest-path works whether or not the package is a workspace member yet.
        let mut build = Cmd::new(&cargo)
            .args(["build", "--quiet", "--release", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&paths.target);
        for b in bins.iter().filter(|b| b.package_dir == package) {
            // A shared object (an iptables plugin) is the package's library target.
            build = match b.bin.ends_with(".so") {
                true => build.arg("--lib"),
                false => build.args(["--bin", &b.bin]),
            };
        }
        build.run()?;
        outputs.insert(package, paths.target.join("release"));
    }
    Ok(bins
        .iter()
        .map(|b| {
            (
                outputs[b.package_dir.as_str()].join(&b.bin),
                format!("{}/{}", b.dest, b.bin),
            )
        })
        .collect())
}

/// Configures (once) and builds the CMake project in `package` under `<target>/cmake/`, with
/// user-library's tests on and its cargo build sharing the workspace's target directory; returns
/// the directory its programs land in.
fn build_cmake(paths: &Paths, package: &str) -> Result<PathBuf> {
    let build = paths.target.join("cmake").join(package.replace('/', "-"));
    let bin = build.join("bin");
    if !build.join("CMakeCache.txt").exists() {
        Cmd::new("cmake")
            .arg("-S")
            .arg(paths.root.join(package))
            .arg("-B")
            .arg(&build)
            .args(["-DCMAKE_BUILD_TYPE=Release", "-DSENGNETFILTER_BUILD_TESTS=ON"])
            .arg(format!(
                "-DSENGNETFILTER_CARGO_TARGET_DIR={}",
                paths.target.display()
            ))
            .arg(format!("-DCMAKE_RUNTIME_OUTPUT_DIRECTORY={}", bin.display()))
            .output()?;
    }
    Cmd::new("cmake").arg("--build").arg(&build).output()?;
    Ok(bin)
}

/// The kernel-independent files of the guest: host tools, xtables plugins, configuration,
/// project binaries, and the shared libraries of all of them, as (guest path, host file).
pub struct HostFiles {
    files: Vec<(String, PathBuf)>,
}

impl HostFiles {
    /// Finds the host tools and libraries for the guest, with `bins` (host file, guest path).
    pub fn collect(paths: &Paths, bins: &[(PathBuf, String)]) -> Result<Self> {
        let mut files = Vec::new();
        let mut elfs = Vec::new();
        for (candidates, guest_path) in HOST_TOOLS {
            let host = candidates
                .iter()
                .map(Path::new)
                .find(|p| p.exists())
                .with_context(|| {
                    format!("host tool {guest_path} not found (run .ci/setup-host.sh)")
                })?;
            files.push((guest_path.to_string(), host.to_path_buf()));
            elfs.push(host.to_path_buf());
        }
        let plugins = fs::read_dir(XTABLES_PLUGINS)
            .with_context(|| format!("cannot list {XTABLES_PLUGINS}"))?;
        for entry in plugins {
            let path = entry?.path();
            let name = path
                .file_name()
                .context("plugin without name")?
                .to_string_lossy()
                .into_owned();
            files.push((format!("{XTABLES_PLUGINS}/{name}"), path.clone()));
            if name.ends_with(".so") {
                elfs.push(path);
            }
        }
        for etc in HOST_ETC.iter().map(Path::new).filter(|p| p.exists()) {
            files.push((etc.to_string_lossy().into_owned(), etc.to_path_buf()));
        }
        for (host, guest_path) in bins {
            // The project's own build wins over an installed copy (e.g. libxt_seng.so).
            files.retain(|(g, _)| g != guest_path);
            files.push((guest_path.clone(), host.clone()));
            elfs.push(host.clone());
        }
        for lib in shared_libraries(&paths.target.join("vmtest/ldd.cache"), &elfs)? {
            // The project's own libraries (e.g. libsengnetfilter.so.1) go where the loader looks
            // by default: their build path may be hidden in the guest (a clone under /tmp lies
            // beneath the guest's tmpfs).
            let guest_path = match (lib.starts_with(&paths.target), lib.file_name()) {
                (true, Some(name)) => format!("/usr/lib/{}", name.to_string_lossy()),
                _ => lib.to_string_lossy().into_owned(),
            };
            if !files.iter().any(|(g, _)| *g == guest_path) {
                files.push((guest_path, lib));
            }
        }
        Ok(HostFiles { files })
    }
}

/// What goes into one kernel's initramfs.
pub struct Guest<'a> {
    /// The guest kernel (its modules go in).
    pub kernel: &'a Kernel,
    /// The module under test, installed as `extra/seng.ko`.
    pub seng_ko: &'a Path,
    /// Host tools, libraries and project binaries.
    pub host: &'a HostFiles,
    /// Test files to run, in order (names under `/vmtest/tests`).
    pub plan: &'a [String],
}

/// Assembles the initramfs for `guest`; returns the archive, reused if its content is unchanged.
pub fn build(paths: &Paths, guest: &Guest<'_>) -> Result<PathBuf> {
    let kernel = guest.kernel;
    let mut a = Archive::default();
    for dir in ["dev", "proc", "sys", "tmp", "run", "root", "mnt", "var/run"] {
        a.dir(dir);
    }
    a.file("init", &paths.root.join("vmtest/init.sh"))?;
    add_busybox(&mut a)?;
    for (guest_path, host) in &guest.host.files {
        a.file(guest_path, host)?;
    }
    a.symlink("/usr/bin/ip", "/usr/sbin/ip");
    for cmd in ["modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo"] {
        a.symlink(&format!("/sbin/{cmd}"), "/usr/bin/kmod");
    }
    for backend in ["legacy", "nft"] {
        let multi = format!("xtables-{backend}-multi");
        for family in ["iptables", "ip6tables"] {
            for suffix in ["", "-save", "-restore"] {
                a.symlink(&format!("/usr/sbin/{family}-{backend}{suffix}"), &multi);
                if backend == "nft" {
                    // Debian's default alternative: the plain names are the nft backend.
                    a.symlink(&format!("/usr/sbin/{family}{suffix}"), &multi);
                }
            }
        }
    }
    a.data("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    a.data("etc/group", "root:x:0:\n", 0o644);

    let vmtest = paths.root.join("vmtest");
    for lib in ["lib.sh", "lib-agent.sh"] {
        a.file(&format!("{GUEST_VMTEST}/{lib}"), &vmtest.join(lib))?;
    }
    for sub in ["tests", "bench", "data", "e2e", "scenarios", "xt"] {
        add_tree(&mut a, &vmtest.join(sub), &format!("{GUEST_VMTEST}/{sub}"))?;
    }
    a.data(
        &format!("{GUEST_VMTEST}/plan"),
        guest.plan.join("\n") + "\n",
        0o644,
    );

    let modules = format!("/lib/modules/{}", kernel.release);
    let generated = add_modules(&mut a, kernel, &modules)?;
    a.file(&format!("{modules}/extra/seng.ko"), guest.seng_ko)?;

    // Everything above is input; the depmod output is derived from it, so it stays out of the
    // fingerprint and is only generated when the archive must be written.
    let out_dir = paths.vmtest_out(&kernel.release);
    mkdir(&out_dir)?;
    // Reading every input to hash its content takes longer than the rest of a warm run: a
    // metadata fingerprint recorded with the content fingerprint skips that when nothing moved.
    let stat_file = out_dir.join("initramfs.stat");
    let stat = format!("{:016x}", a.stat_fingerprint()?);
    let recorded = fs::read_to_string(&stat_file).unwrap_or_default();
    let content = match recorded.split_once(' ') {
        Some((s, c)) if s == stat => c.trim().to_string(),
        _ => format!("{:016x}", a.fingerprint()?),
    };
    let out = out_dir.join(format!("initramfs-{content}.cpio"));
    if out.exists() {
        fs::write(&stat_file, format!("{stat} {content}\n"))
            .context("cannot write initramfs.stat")?;
        return Ok(out);
    }
    for (name, data) in depmod(&out_dir, kernel, guest.seng_ko, &generated)? {
        a.data(&format!("{modules}/{name}"), data, 0o644);
    }
    // Older archives of this kernel are dead weight once a new one exists.
    for entry in fs::read_dir(&out_dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("initramfs-") && name.ends_with(".cpio") {
            remove_all(&path)?;
        }
    }
    a.write(&out)?;
    fs::write(&stat_file, format!("{stat} {content}\n")).context("cannot write initramfs.stat")?;
    Ok(out)
}

/// Static busybox in `/bin` with a link per applet; real tools elsewhere on PATH take
/// precedence for everything but busybox sh itself.
fn add_busybox(a: &mut Archive) -> Result<()> {
    a.file(BUSYBOX, Path::new(BUSYBOX))?;
    let list = Cmd::new(BUSYBOX).arg("--list").stdout()?;
    for applet in list.lines().filter(|l| !l.is_empty() && *l != "busybox") {
        a.symlink(&format!("/bin/{applet}"), "busybox");
    }
    Ok(())
}

/// Adds the files under `host` (if it exists) at `guest`, keeping modes.
fn add_tree(a: &mut Archive, host: &Path, guest: &str) -> Result<()> {
    if !host.is_dir() {
        return Ok(());
    }
    let mut files = Vec::new();
    walk(host, &mut |p| files.push(p.to_path_buf()))?;
    for file in files {
        let rel = file.strip_prefix(host).context("walk left its root")?;
        a.file(&format!("{guest}/{}", rel.display()), &file)?;
    }
    Ok(())
}

/// The shared libraries (and dynamic loader) of `elfs`, transitively, from one `ldd` run. The
/// answer is cached in `cache` under a fingerprint of the files' metadata: ldd runs the loader
/// once per file, which costs more than the rest of a warm initramfs build.
fn shared_libraries(cache: &Path, elfs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut h = DefaultHasher::new();
    for elf in elfs {
        let meta = fs::metadata(elf).with_context(|| format!("cannot read {}", elf.display()))?;
        h.write(elf.as_os_str().as_encoded_bytes());
        h.write_u64(meta.len());
        h.write_i64(meta.mtime());
        h.write_i64(meta.mtime_nsec());
        h.write_u64(meta.ino());
    }
    let key = format!("{:016x}", h.finish());
    if let Ok(text) = fs::read_to_string(cache) {
        let mut lines = text.lines();
        if lines.next() == Some(key.as_str()) {
            return Ok(lines.map(PathBuf::from).collect());
        }
    }
    let out = Cmd::new("ldd").args(elfs).output_any()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        // "\tlibfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)" or "\t/lib64/ld-linux-x86-64.so.2 (0x...)"
        let line = line.trim();
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/') && !p.ends_with(':')) {
            libs.insert(PathBuf::from(path));
        }
    }
    if libs.is_empty() {
        bail!(
            "ldd found no shared libraries for {elfs:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut record = key + "\n";
    for lib in &libs {
        record.push_str(&format!("{}\n", lib.display()));
    }
    mkdir(cache.parent().context("ldd cache has no parent")?)?;
    fs::write(cache, record).with_context(|| format!("cannot write {}", cache.display()))?;
    Ok(libs.into_iter().collect())
}

/// Module directories the guest gets (with everything they depend on): networking, the
/// network drivers for tun/veth/dummy, and the library and crypto modules they pull in. Taking
/// the whole tree would triple the archive and add about a second to every boot.
const MODULE_DIRS: &[&str] = &[
    "kernel/net/",
    "kernel/drivers/net/",
    "kernel/lib/",
    "kernel/crypto/",
];

/// Parts of [`MODULE_DIRS`] no test needs: hardware and radio drivers and stacks.
const MODULE_EXCLUDES: &[&str] = &[
    "kernel/net/wireless/",
    "kernel/net/mac80211/",
    "kernel/net/bluetooth/",
    "kernel/net/can/",
    "kernel/net/nfc/",
    "kernel/net/6lowpan/",
    "kernel/net/ieee802154/",
    "kernel/net/mac802154/",
    "kernel/net/rxrpc/",
    "kernel/net/ceph/",
    "kernel/net/sunrpc/",
    "kernel/net/9p/",
    "kernel/drivers/net/wireless/",
    "kernel/drivers/net/ethernet/",
    "kernel/drivers/net/wwan/",
    "kernel/drivers/net/can/",
    "kernel/drivers/net/usb/",
    "kernel/drivers/net/hyperv/",
    "kernel/drivers/net/ieee802154/",
    "kernel/drivers/net/phy/",
    "kernel/drivers/net/mdio/",
    "kernel/drivers/net/pcs/",
    "kernel/drivers/net/fddi/",
    "kernel/drivers/net/ppp/",
    "kernel/drivers/net/slip/",
    "kernel/drivers/net/arcnet/",
    "kernel/drivers/net/hamradio/",
    "kernel/drivers/net/plip/",
];

/// Adds the selected modules of the kernel (see [`MODULE_DIRS`]) and their dependencies, plus
/// depmod's inputs; returns the modules' paths relative to the module tree for [`depmod`].
fn add_modules(a: &mut Archive, kernel: &Kernel, guest_dir: &str) -> Result<Vec<String>> {
    let dir = kernel.modules_dir();
    let dep_file = dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_file)
        .with_context(|| format!("cannot read {}", dep_file.display()))?;
    let mut needs = std::collections::BTreeMap::new();
    for line in deps.lines() {
        if let Some((module, list)) = line.split_once(':') {
            needs.insert(module, list.split_whitespace().collect::<Vec<_>>());
        }
    }
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = needs
        .keys()
        .copied()
        .filter(|m| {
            MODULE_DIRS.iter().any(|d| m.starts_with(d))
                && !MODULE_EXCLUDES.iter().any(|d| m.starts_with(d))
        })
        .collect();
    while let Some(module) = todo.pop() {
        if wanted.insert(module) {
            todo.extend(needs.get(module).into_iter().flatten().copied());
        }
    }
    for module in &wanted {
        a.file(&format!("{guest_dir}/{module}"), &dir.join(module))?;
    }
    for name in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let path = dir.join(name);
        if path.exists() {
            a.file(&format!("{guest_dir}/{name}"), &path)?;
        }
    }
    Ok(wanted.into_iter().map(str::to_string).collect())
}

/// Runs depmod over a tree of links to the guest's modules plus seng.ko and returns the
/// generated `modules.*` files (name, content).
fn depmod(
    out_dir: &Path,
    kernel: &Kernel,
    seng_ko: &Path,
    kos: &[String],
) -> Result<Vec<(String, Vec<u8>)>> {
    let base = out_dir.join("depmod");
    remove_all(&base)?;
    let dir = base.join("lib/modules").join(&kernel.release);
    let src = kernel.modules_dir();
    let link = |from: &Path, to: &Path| -> Result<()> {
        mkdir(to.parent().context("link without parent")?)?;
        std::os::unix::fs::symlink(from, to)
            .with_context(|| format!("cannot link {}", to.display()))
    };
    for ko in kos {
        link(&src.join(ko), &dir.join(ko))?;
    }
    link(&fs::canonicalize(seng_ko)?, &dir.join("extra/seng.ko"))?;
    for name in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if src.join(name).exists() {
            link(&src.join(name), &dir.join(name))?;
        }
    }
    Cmd::new("depmod")
        .arg("-b")
        .arg(&base)
        .arg(&kernel.release)
        .output()?;
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let inputs = [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ];
        if name.starts_with("modules.") && !inputs.contains(&name.as_str()) {
            files.push((name, fs::read(entry.path())?));
        }
    }
    remove_all(&base)?;
    Ok(files)
}
