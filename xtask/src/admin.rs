// SPDX-License-Identifier: GPL-2.0-only
//! `cargo xtask deb --test`: the packages tested as a gateway admin uses them, in a Debian 12
//! root (`root.rs`) with the 6.1 and 6.12 kernels xtask resolves, headers included:
//!
//! 1. `apt install` of the four packages; DKMS builds and signs seng.ko for both kernels;
//! 2. `man` renders the pages without a warning; the bash, zsh and fish completions load and
//!    complete; the C++ consumer of examples/seng-server builds against the installed -dev
//!    package through find_package and through pkg-config;
//! 3. DKMS for a kernel without headers fails with its usual message and changes nothing;
//! 4. the DKMS-built modules boot in the VM with the packaged CLI, plugin and library
//!    (`cargo xtask vmtest --installed`) and pass the module smoke tests;
//! 5. `apt purge` leaves no file behind.
//!
//! Every check prints `ok` or `FAILED`; any failure fails the command, and the root is kept for
//! a look (`<target>/deb-test/root`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::{combined, Cmd};
use crate::deb::PACKAGES;
use crate::installed;
use crate::kernel::{self, FetchOpts, Kernel, Series};
use crate::paths::{remove_all, Paths};
use crate::root::Root;

/// The kernels DKMS must build for.
const KERNELS: [Series; 2] = [Series::V6_1, Series::V6_12];

/// The module smoke tests run on the DKMS-built module: loading and unloading, the CLI over
/// netlink, the original library's protocol, the C and C++ consumers, the plugin with packets.
const SMOKE_TESTS: &[&str] = &[
    "kmod_load", "kmod_lifecycle", "nl-cli", "nl-libnl", "nl-capi", "nl-server", "xt-packets",
];

/// A kernel release DKMS has no headers for.
const NO_HEADERS: &str = "6.1.0-0-noheaders-amd64";

/// Paths the package test does not compare before and after: pseudo and scratch file systems,
/// logs and caches, apt's and dpkg's own bookkeeping (their per-package files in
/// /var/lib/dpkg/info are compared), and the key DKMS makes the first time it signs a module
/// (DKMS's, for every module it will build).
const VOLATILE: &[&str] = &[
    "proc/", "sys/", "dev/", "run/", "tmp/", "var/tmp/", "var/log/", "var/cache/", "var/lib/apt/",
    "var/lib/dkms/mok.key", "var/lib/dkms/mok.pub", "etc/ld.so.cache", "etc/resolv.conf",
];

/// The outcome of the checks so far.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str, detail: impl FnOnce() -> String) {
        if ok {
            println!("package test: ok - {what}");
        } else {
            let detail = detail();
            println!("package test: FAILED - {what}\n{detail}");
            self.failed.push(what.to_string());
        }
    }
}

/// Installs `debs` (the packages of [`PACKAGES`], in that order) in a fresh root and tests them.
pub fn run(paths: &Paths, debs: &[PathBuf]) -> Result<()> {
    let start = Instant::now();
    let kernels = KERNELS
        .iter()
        .map(|&s| kernel::fetch(paths, s, FetchOpts::default()))
        .collect::<Result<Vec<Kernel>>>()?;
    let dir = paths.target.join("deb-test/root");
    let root = Root::fresh(paths, &kernels, &dir)?;
    println!("package test: root ready in {:.0}s", start.elapsed().as_secs_f64());
    let mut checks = Checks::default();

    // What the packages depend on is there first, as on an admin's machine: purging them
    // afterwards must then leave exactly this.
    let debs_inside = copy_in(&root, debs)?;
    let deps = dependencies(debs)?;
    root.run(&format!("apt-get -q -y --no-install-recommends satisfy '{deps}'"))?;
    let before = manifest(root.dir())?;

    let t = Instant::now();
    let install = root.run_any(&format!(
        "apt-get -q -y --no-install-recommends install {}",
        debs_inside.join(" ")
    ))?;
    let install_text = combined(&install);
    checks.check(install.status.success(), "apt install of the packages", || install_text.clone());
    println!("package test: apt install took {:.1}s", t.elapsed().as_secs_f64());
    if !install.status.success() {
        bail!("the packages do not install (root kept in {})", dir.display());
    }
    for k in &kernels {
        check_module(&root, k, &mut checks)?;
    }
    check_docs(&root, &mut checks)?;
    check_consumer(paths, &root, &mut checks)?;
    check_no_headers(&root, &mut checks)?;

    let smoke = Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["xtask", "vmtest", "--kernel", "6.1,6.12", "--installed"])
        .arg(root.dir())
        .args(SMOKE_TESTS.iter().flat_map(|t| ["--filter", t]))
        .dir(&paths.root)
        .run();
    checks.check(smoke.is_ok(), "the DKMS-built modules pass the smoke tests in the VM", || {
        format!("{smoke:?}")
    });

    root.run("rm -f /usr/local/bin/seng-server-consumer-*")?;
    let purge = root.run_any(&format!("apt-get -q -y purge {}", PACKAGES.join(" ")))?;
    checks.check(purge.status.success(), "apt purge of the packages", || combined(&purge));
    let after = manifest(root.dir())?;
    let left: Vec<&String> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    let gone: Vec<&String> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    checks.check(left.is_empty() && gone.is_empty(), "apt purge leaves the system as before the install", || {
        format!("left behind: {left:?}\nremoved: {gone:?}")
    });

    println!("package test: {:.0}s in all", start.elapsed().as_secs_f64());
    if !checks.failed.is_empty() {
        bail!(
            "package test: {} checks failed ({}); the root is kept in {}",
            checks.failed.len(),
            checks.failed.join("; "),
            dir.display()
        );
    }
    remove_all(&dir)
}

/// Copies the packages into the root's /tmp; returns their paths there.
fn copy_in(root: &Root, debs: &[PathBuf]) -> Result<Vec<String>> {
    let dir = root.path("/tmp/seng-debs");
    fs::create_dir_all(&dir)?;
    debs.iter()
        .map(|deb| {
            let name = deb.file_name().context("a .deb without a name")?.to_string_lossy().into_owned();
            fs::copy(deb, dir.join(&name))?;
            Ok(format!("/tmp/seng-debs/{name}"))
        })
        .collect()
}

/// The Depends of the packages, minus one another, as one `apt-get satisfy` argument.
fn dependencies(debs: &[PathBuf]) -> Result<String> {
    let mut deps = Vec::new();
    for deb in debs {
        let text = Cmd::new("dpkg-deb").arg("-f").arg(deb).args(["Pre-Depends", "Depends"]).stdout()?;
        for line in text.lines() {
            let list = line.split_once(": ").map_or(line, |(_, l)| l);
            deps.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty() && !PACKAGES.iter().any(|p| d.split_whitespace().next() == Some(p)))
                    .map(str::to_string),
            );
        }
    }
    deps.sort();
    deps.dedup();
    Ok(deps.join(", "))
}

/// Every path in the root outside [`VOLATILE`], with its size and modification time (files) or
/// link target (symlinks).
fn manifest(dir: &Path) -> Result<BTreeMap<String, String>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(base)?.to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path)?;
            let key = if meta.is_dir() { format!("{rel}/") } else { rel };
            if VOLATILE.iter().any(|v| key.starts_with(v)) {
                continue;
            }
            let value = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path)?.display())
            } else if meta.is_dir() {
                String::new()
            } else {
                format!("{} bytes, mtime {:?}", meta.len(), meta.modified()?)
            };
            let descend = meta.is_dir();
            out.insert(key, value);
            if descend {
                walk(base, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// DKMS built, installed and signed seng.ko for `kernel`; prints how long its make took.
fn check_module(root: &Root, kernel: &Kernel, checks: &mut Checks) -> Result<()> {
    let release = &kernel.release;
    let status = root.run(&format!("dkms status -m seng -k {release}"))?;
    checks.check(status.contains("installed"), &format!("DKMS built and installed seng.ko for {release}"), || status.clone());
    let info = match installed::module(root.dir(), kernel, &root.path("/tmp")) {
        Ok(ko) => {
            let field = |f: &str| Cmd::new("modinfo").args(["-F", f]).arg(&ko).stdout();
            format!("vermagic={}\nsigner={}", field("vermagic")?.trim(), field("signer")?.trim())
        }
        Err(e) => format!("{e:#}"),
    };
    checks.check(info.contains(&format!("vermagic={release} ")), &format!("the module is built for {release}"), || info.clone());
    checks.check(info.contains("signer=DKMS module signing key"), &format!("DKMS signed the module for {release}"), || info.clone());
    // make.log starts with the date the build began and was last written when it ended.
    let log = format!("/var/lib/dkms/seng/{}/{release}/x86_64/log/make.log", version(root)?);
    let elapsed = root
        .run(&format!("echo $(( $(stat -c %Y {log}) - $(date -d \"$(sed -n 2p {log})\" +%s) ))s"))
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    let elapsed = elapsed.trim();
    println!("package test: DKMS build for {release}: {elapsed}");
    Ok(())
}

/// The version DKMS knows the module by (dkms.conf's, from the package).
fn version(root: &Root) -> Result<String> {
    let conf = fs::read_to_string(root.path("/usr/src").join(first_seng_dir(root)?).join("dkms.conf"))?;
    conf.lines()
        .find_map(|l| l.strip_prefix("PACKAGE_VERSION=\""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("dkms.conf has no PACKAGE_VERSION")
}

fn first_seng_dir(root: &Root) -> Result<String> {
    fs::read_dir(root.path("/usr/src"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("seng-"))
        .context("no /usr/src/seng-* in the root")
}

/// Man pages render without warnings; each shell completes `seng enc` to `enclave`.
fn check_docs(root: &Root, checks: &mut Checks) -> Result<()> {
    for page in ["seng", "seng-enclave-add", "seng-sim", "libxt_seng"] {
        let out = root.run_any(&format!("MANWIDTH=80 man --warnings {page} 2>&1 >/tmp/page; echo lines=$(wc -l </tmp/page)"))?;
        let text = combined(&out);
        let lines: usize = text.lines().find_map(|l| l.strip_prefix("lines=")).and_then(|n| n.parse().ok()).unwrap_or(0);
        checks.check(out.status.success() && lines > 5 && text.lines().count() == 1, &format!("man {page} renders without warnings"), || text.clone());
    }
    // bash and fish complete `seng enc`; zsh's completion system finds and loads `_seng`. The
    // shells keep caches in $HOME: a scratch one, so they are not taken for the packages' files.
    let shells = [
        (
            "bash",
            "bash -c '. /usr/share/bash-completion/bash_completion; _completion_loader seng; \
             COMP_WORDS=(seng enc); COMP_CWORD=1; COMP_LINE=\"seng enc\"; COMP_POINT=8; \
             _seng seng enc seng; echo \"${COMPREPLY[*]}\"'",
            "enclave",
        ),
        (
            "zsh",
            "zsh -c 'autoload -U compinit && compinit -u && autoload -U +X ${_comps[seng]} && \
             (( $+functions[_seng] )) && echo _seng loaded'",
            "_seng loaded",
        ),
        ("fish", "fish -c 'complete -C\"seng enc\"'", "enclave"),
    ];
    for (shell, script, want) in shells {
        let out = root.run_any(&format!("export HOME=$(mktemp -d)\n{script}"))?;
        let text = combined(&out);
        checks.check(out.status.success() && text.contains(want), &format!("the {shell} completion loads"), || text.clone());
    }
    Ok(())
}

/// The C++ consumer builds against the installed -dev package through find_package and
/// through pkg-config; the programs go to /usr/local/bin for the VM tests.
fn check_consumer(paths: &Paths, root: &Root, checks: &mut Checks) -> Result<()> {
    let src = paths.root.join("examples/seng-server/double_tunnel_openssl");
    let dest = root.path("/tmp/consumer");
    remove_all(&dest)?;
    Cmd::new("cp").arg("-r").arg(&src).arg(&dest).output()?;
    let builds = [
        (
            "find_package(sengnetfilter)",
            "cmake",
            "cmake -S /tmp/consumer -B /tmp/consumer-build -DSENG_NETFILTER_INSTALLED=ON >/dev/null\n\
             cmake --build /tmp/consumer-build\n\
             install -m 755 /tmp/consumer-build/src/seng-server-consumer $out",
        ),
        (
            "pkg-config sengnetfilter",
            "pkgconfig",
            "g++ -std=c++17 -Wall -Wextra -Werror /tmp/consumer/src/consumer.cpp \
             $(pkg-config --cflags --libs sengnetfilter) -o $out",
        ),
    ];
    for (how, suffix, build) in builds {
        let out = root.run_any(&format!("out=/usr/local/bin/seng-server-consumer-{suffix}\n{build}\nldd $out"))?;
        let text = combined(&out);
        checks.check(
            out.status.success() && links_installed_library(&text),
            &format!("the C++ consumer builds with {how}"),
            || text.clone(),
        );
    }
    Ok(())
}

/// Whether `ldd` output shows the packaged library (/usr/lib or, merged, /lib).
fn links_installed_library(ldd: &str) -> bool {
    ldd.lines()
        .any(|l| l.contains("libsengnetfilter.so.1 => /") && l.contains("/x86_64-linux-gnu/libsengnetfilter.so.1 "))
}

/// DKMS for a kernel without headers fails with its usual message and leaves every file as it
/// was.
fn check_no_headers(root: &Root, checks: &mut Checks) -> Result<()> {
    let before = manifest(root.dir())?;
    let version = version(root)?;
    let out = root.run_any(&format!("dkms install seng/{version} -k {NO_HEADERS}"))?;
    let text = combined(&out);
    checks.check(
        !out.status.success() && text.contains(&format!("Your kernel headers for kernel {NO_HEADERS} cannot be found")),
        "DKMS without kernel headers fails with its usual message",
        || text.clone(),
    );
    let after = manifest(root.dir())?;
    let changed: Vec<&String> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p)
        .chain(before.keys().filter(|p| !after.contains_key(*p)))
        .collect();
    checks.check(changed.is_empty(), "the failed DKMS build changed nothing", || format!("changed: {changed:?}"));
    Ok(())
}
