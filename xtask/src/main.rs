// SPDX-License-Identifier: GPL-2.0-only
//! `cargo xtask`: the seng build and test helper.
//!
//! - `kernel fetch`: resolve and cache Debian cloud kernels (image, headers, modules);
//! - `kernel --rfl`: build and cache the Rust-for-Linux 6.12 kernel (`rfl-6.12`, see
//!   `source_kernel.rs`; `kernel fetch --kernel debug-6.12` builds the debug kernel likewise);
//! - `build-kmod`: build the kernel-independent Rust object once, then `seng.ko` per kernel;
//! - `vmtest`: boot each kernel under QEMU with a generated initramfs and run `vmtest/tests`
//!   (or, with `--bench`, the scripts of `vmtest/bench`);
//! - `test`: everything CI checks (lints, tests, docs, fuzz smoke run, VM tests);
//! - `assets`: the man pages and shell completions of `seng` and `seng-sim` (see `assets.rs`);
//! - `deb`: the Debian packages, linted, and with `--test` tested as an admin installs them.

mod admin;
mod apt;
mod assets;
mod cmd;
mod cpio;
mod deb;
mod initramfs;
mod installed;
mod kernel;
mod kmod;
mod paths;
mod rfl;
mod root;
mod source_kernel;
mod test;
mod timing;
mod vm;

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use kernel::{FetchOpts, Series};
use paths::Paths;
use timing::Timings;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "seng build and test helper")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Debian cloud kernels used for module builds and VM tests.
    #[command(args_conflicts_with_subcommands = true)]
    Kernel {
        /// Build (or find in the cache) the Rust-for-Linux kernel `rfl-6.12` instead.
        #[arg(long)]
        rfl: bool,
        #[command(subcommand)]
        command: Option<KernelCommand>,
    },
    /// Build seng.ko for each kernel: the Rust object once, then kbuild per kernel.
    BuildKmod(BuildKmodArgs),
    /// Boot each kernel under QEMU and run the guest tests (or benchmarks).
    Vmtest(VmtestArgs),
    /// Everything CI checks: clippy, unit/property tests, rustdoc, a fuzz smoke run, VM tests.
    Test(TestArgs),
    /// Render the man pages and shell completions of `seng` and `seng-sim` into a directory.
    Assets {
        /// Where to write them (`man/`, `completions/`); replaced.
        out: PathBuf,
    },
    /// Build the Debian packages into target/deb and lint them.
    Deb {
        /// Then install them in a Debian 12 root and test them as an admin would (needs root;
        /// boots the DKMS-built modules of 6.1 and 6.12).
        #[arg(long)]
        test: bool,
    },
}

#[derive(Args)]
struct TestArgs {
    /// Kernels for the VM tests (as `vmtest --kernel`): Debian's three, the Rust-for-Linux one
    /// (its build, about 14 minutes on two cores, is cached) and the debug one (KASAN, lockdep,
    /// kmemleak and more; about 25 minutes to build once, cached), which runs the suite at a
    /// smaller scale (`--debug-light`) and the torture.
    #[arg(long, default_value = "5.10,6.1,6.12,rfl-6.12,debug-6.12")]
    kernel: String,
    /// Seconds each fuzz target runs.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    fuzz_seconds: u32,
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Resolve the newest kernel of each series and cache it under ~/.cache/seng/kernels.
    Fetch(KernelArgs),
}

/// Which kernels to work on and how to resolve them.
#[derive(Args, Clone)]
struct KernelArgs {
    /// Kernel series: 5.10, 6.1, 6.12, rfl-6.12, debug-6.12, a comma-separated list, or all
    /// (Debian's three).
    // The path is spelled out so clap takes the parser's list as the value instead of treating
    // the option as repeatable.
    #[arg(long, default_value = "all", value_parser = kernel::parse_selection)]
    kernel: std::vec::Vec<Series>,
    /// Use only cached kernels; never run apt.
    #[arg(long)]
    offline: bool,
    /// Refresh the package lists even if they are less than a day old.
    #[arg(long, conflicts_with = "offline")]
    refresh: bool,
}

impl KernelArgs {
    fn fetch_opts(&self) -> FetchOpts {
        FetchOpts {
            offline: self.offline,
            refresh: self.refresh,
        }
    }
}

#[derive(Args)]
struct BuildKmodArgs {
    #[command(flatten)]
    kernels: KernelArgs,
    /// Build and check only the kernel-independent Rust object.
    #[arg(long)]
    rust_only: bool,
    /// Also copy the Rust object here (for `make` in seng-kmod/ or a DKMS source tree).
    #[arg(long, value_name = "FILE")]
    rust_out: Option<PathBuf>,
}

#[derive(Args)]
struct VmtestArgs {
    #[command(flatten)]
    kernels: KernelArgs,
    /// Run only the tests (with --bench: the benchmarks) whose name contains this text
    /// (repeatable: any of them).
    #[arg(long, value_name = "TEXT")]
    filter: Vec<String>,
    /// After the run, keep the VM up with a shell on this terminal; exit the shell to power off.
    #[arg(long)]
    keep: bool,
    /// Run the benchmark scripts of vmtest/bench instead of the tests.
    #[arg(long)]
    bench: bool,
    /// Kill a VM that has not finished after this many seconds [default: 1200, with --bench
    /// 2400; six times that on the debug kernel, plus the --soak time].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Print the whole guest console.
    #[arg(long, short)]
    verbose: bool,
    /// Kernels to run at the same time (default: one per CPU core).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Kill a guest test that has not finished after this many seconds (six times that on
    /// the debug kernel, whose checks slow everything down, plus the --soak time).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    test_timeout: u64,
    /// Run the torture test (on debug-6.12) this many minutes instead of its CI length of
    /// two and a half; e.g. `vmtest --kernel debug-6.12 --filter torture --soak 60`.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<u64>,
    /// Run the longest tests at a smaller scale on debug-6.12, as CI does (`vmtest.light=1`:
    /// the same code paths, fewer times; see vmtest/README.md).
    #[arg(long)]
    debug_light: bool,
    /// Run the tests whose subject is user space in full on this kernel only (none in a light
    /// run): the agent tests, and iptables' rule-by-rule protocol and refusals of the xt tests.
    /// The other kernels run the kernel's side of them (`vmtest.userspace=0`). CI passes 6.1,
    /// which also runs the agent benchmark.
    #[arg(long, value_name = "KERNEL", value_parser = kernel::parse_one)]
    user_space_on: Option<Series>,
    /// Seeds of the random differential test (`e2e-random`): seeds and ranges A..B, separated
    /// by commas (default 1..8).
    #[arg(long, value_name = "A..B,N", value_parser = parse_seeds)]
    seeds: Option<String>,
    /// Test what the packages installed in this Debian root instead of this checkout's builds:
    /// the seng.ko DKMS built there for each kernel, the packaged CLI, plugin and library.
    #[arg(long, value_name = "ROOT")]
    installed: Option<PathBuf>,
}

/// Seeds as a comma-separated list of seeds `N` and ranges `A..B` with A <= B.
fn parse_seeds(text: &str) -> Result<String, String> {
    let item = |part: &str| -> Result<String, String> {
        let (a, b) = part.split_once("..").unwrap_or((part, part));
        match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) if a <= b => Ok(if a == b { a.to_string() } else { format!("{a}..{b}") }),
            (Ok(_), Ok(_)) => Err(format!("{text}: in {part}, the first seed is after the last")),
            _ => Err(format!("{text}: {part} is not a seed or a range of whole numbers, as in 1..1000 or 126,246")),
        }
    };
    Ok(text.split(',').map(item).collect::<Result<Vec<_>, _>>()?.join(","))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut timings = Timings::new();
    let result = Paths::discover().and_then(|paths| match cli.command {
        Command::Kernel {
            command: Some(KernelCommand::Fetch(args)),
            ..
        } => fetch_all(&paths, &args, &mut timings).map(|_| true),
        Command::Kernel { rfl: true, .. } => {
            let series = Series::Rfl6_12;
            let k = timings.measure(series.name(), "fetch", || {
                kernel::fetch(&paths, series, FetchOpts::default())
            })?;
            println!("kernel {series}: {} in {}", k.release, k.dir.display());
            Ok(true)
        }
        Command::Kernel { .. } => Err(anyhow::anyhow!("`kernel` needs `fetch` or `--rfl`")),
        Command::BuildKmod(args) => build_kmod(&paths, &args, &mut timings).map(|()| true),
        Command::Vmtest(args) => vmtest(&paths, &args, &mut timings),
        Command::Test(args) => test::run(&paths, &args.kernel, args.fuzz_seconds),
        Command::Assets { out } => assets::write(&out).map(|()| true),
        Command::Deb { test } => deb::build(&paths)
            .and_then(|debs| if test { admin::run(&paths, &debs) } else { Ok(()) })
            .map(|()| true),
    });
    timings.print();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fetch_all(
    paths: &Paths,
    args: &KernelArgs,
    timings: &mut Timings,
) -> Result<Vec<kernel::Kernel>> {
    args.kernel
        .iter()
        .map(|&series| {
            let k = timings.measure(series.name(), "fetch", || {
                kernel::fetch(paths, series, args.fetch_opts())
            })?;
            println!(
                "kernel {series}: {} ({}) in {}",
                k.release,
                k.version,
                k.dir.display()
            );
            Ok(k)
        })
        .collect()
}

fn build_kmod(paths: &Paths, args: &BuildKmodArgs, timings: &mut Timings) -> Result<()> {
    let rust = timings.measure("all", "rust object", || kmod::build_rust(paths))?;
    println!("rust object: {}", rust.display());
    if let Some(out) = &args.rust_out {
        fs::copy(&rust, out)
            .with_context(|| format!("cannot copy the Rust object to {}", out.display()))?;
    }
    if args.rust_only {
        return Ok(());
    }
    for k in fetch_all(paths, &args.kernels, timings)? {
        let ko = timings.measure(k.series.name(), "build", || build_module(paths, &k, &rust))?;
        println!("kernel {}: {}", k.series, ko.display());
    }
    Ok(())
}

/// Builds seng.ko for `kernel`: the distro flavour (C glue and the Rust object) for Debian's
/// kernels, `seng-kmod-rfl/` for the Rust-for-Linux one.
fn build_module(paths: &Paths, kernel: &kernel::Kernel, rust: &Path) -> Result<PathBuf> {
    match kernel.series {
        Series::Rfl6_12 => rfl::build_module(paths, kernel),
        _ => kmod::build_module(paths, kernel, &kmod::rust_object_for(paths, kernel, rust)?),
    }
}

/// The tests to run: `vmtest/tests` files (`*.sh` and executables) plus guest binaries
/// installed into `/vmtest/tests`, filtered, in name order.
fn test_plan(
    paths: &Paths,
    bins: &[initramfs::GuestBin],
    filters: &[String],
) -> Result<Vec<String>> {
    let mut files = files_in(&paths.root.join("vmtest/tests"), |entry, name| {
        let exec =
            std::os::unix::fs::PermissionsExt::mode(&entry.metadata()?.permissions()) & 0o111 != 0;
        Ok(entry.file_type()?.is_file() && (name.ends_with(".sh") || exec))
    })?;
    let guest_tests = format!("{}/tests", initramfs::GUEST_VMTEST);
    files.extend(
        bins.iter()
            .filter(|b| b.dest == guest_tests)
            .map(|b| b.bin.clone()),
    );
    filtered(files, filters, "test")
}

/// The `vmtest/bench` scripts to run, filtered, in name order.
fn bench_plan(paths: &Paths, filters: &[String]) -> Result<Vec<String>> {
    let files = files_in(&paths.root.join("vmtest/bench"), |_, name| {
        Ok(name.ends_with(".sh"))
    })?;
    filtered(files, filters, "benchmark")
}

/// The names of the entries of `dir` that `keep` accepts.
fn files_in(
    dir: &Path,
    keep: impl Fn(&fs::DirEntry, &str) -> Result<bool>,
) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep(&entry, &name)? {
            files.push(name);
        }
    }
    Ok(files)
}

/// `files` that `--filter` selects, in name order; none is an error.
fn filtered(mut files: Vec<String>, filters: &[String], kind: &str) -> Result<Vec<String>> {
    files.sort();
    files.retain(|f| filters.is_empty() || filters.iter().any(|w| test_name(f).contains(w.as_str())));
    anyhow::ensure!(!files.is_empty(), "no {kind} matches --filter {filters:?}");
    Ok(files)
}

/// A test's name: its file name without `.sh`.
fn test_name(file: &str) -> &str {
    file.strip_suffix(".sh").unwrap_or(file)
}

/// Per-kernel verdict of a vmtest run.
struct Verdict {
    series: Series,
    passed: usize,
    failed: Vec<String>,
}

/// What every kernel's run shares.
struct Shared<'a> {
    paths: &'a Paths,
    args: &'a VmtestArgs,
    rust: &'a Path,
    host: &'a initramfs::HostFiles,
    plan: &'a [String],
    mode: vm::Mode,
}

fn vmtest(paths: &Paths, args: &VmtestArgs, timings: &mut Timings) -> Result<bool> {
    let mode = if args.bench {
        vm::Mode::Bench
    } else {
        vm::Mode::Test
    };
    let bins = initramfs::read_guest_bins(&paths.root)?;
    let plan = match mode {
        vm::Mode::Test => test_plan(paths, &bins, &args.filter)?,
        vm::Mode::Bench => bench_plan(paths, &args.filter)?,
    };
    let mut built_bins = timings.measure("all", "guest bins", || {
        initramfs::build_guest_bins(paths, &bins)
    })?;
    if let Some(root) = &args.installed {
        installed::use_packaged(root, &mut built_bins)?;
    }
    let rust = timings.measure("all", "rust object", || kmod::build_rust(paths))?;
    let host = timings.measure("all", "host files", || {
        initramfs::HostFiles::collect(paths, &built_bins)
    })?;

    // Fetching stays sequential: kernels of one Debian release share an apt state directory.
    let mut verdicts = Vec::new();
    let mut kernels = Vec::new();
    for &series in &args.kernels.kernel {
        match timings.measure(series.name(), "fetch", || {
            kernel::fetch(paths, series, args.kernels.fetch_opts())
        }) {
            Ok(k) => kernels.push(k),
            Err(e) => {
                eprintln!("[{series}] error: {e:#}");
                verdicts.push(Verdict {
                    series,
                    passed: 0,
                    failed: vec![format!("{e:#}")],
                });
            }
        }
    }

    // Each VM runs one TCG vCPU thread, so kernels run side by side, one per core by default.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = if args.keep {
        1
    } else {
        args.jobs.unwrap_or(cores).clamp(1, kernels.len().max(1))
    };
    let shared = Shared {
        paths,
        args,
        rust: &rust,
        host: &host,
        plan: &plan,
        mode,
    };
    // The debug kernel's run is by far the longest: it starts first, the others beside it.
    let mut order: Vec<&kernel::Kernel> = kernels.iter().collect();
    order.sort_by_key(|k| k.series != Series::Debug6_12);
    let queue = Mutex::new(order.into_iter().collect::<VecDeque<_>>());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some(kernel) = queue.lock().expect("queue poisoned").pop_front() else {
                    break;
                };
                let mut t = Timings::new();
                let mut verdict = Verdict {
                    series: kernel.series,
                    passed: 0,
                    failed: Vec::new(),
                };
                if let Err(e) = vmtest_kernel(&shared, kernel, &mut t, &mut verdict) {
                    eprintln!("[{}] error: {e:#}", kernel.series);
                    verdict.failed.push(format!("{e:#}"));
                }
                done.lock().expect("results poisoned").push((verdict, t));
            });
        }
    });
    let mut done = done.into_inner().expect("results poisoned");
    done.sort_by_key(|(v, _)| v.series);
    for (verdict, t) in done {
        verdicts.push(verdict);
        timings.append(t);
    }
    verdicts.sort_by_key(|v| v.series);

    println!("summary:");
    let mut passed = 0;
    let mut failed = 0;
    for v in &verdicts {
        let state = if v.failed.is_empty() { "ok" } else { "FAILED" };
        println!(
            "  {:<5} {state}: {} passed, {} failed",
            v.series.name(),
            v.passed,
            v.failed.len()
        );
        for f in &v.failed {
            println!("        - {}", f.lines().next().unwrap_or(""));
        }
        passed += v.passed;
        failed += v.failed.len();
    }
    println!("vmtest: {passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Builds, packs and boots one kernel and judges what the guest reported.
fn vmtest_kernel(
    shared: &Shared<'_>,
    kernel: &kernel::Kernel,
    timings: &mut Timings,
    verdict: &mut Verdict,
) -> Result<()> {
    let Shared {
        paths,
        args,
        rust,
        host,
        plan,
        mode,
    } = *shared;
    let series = kernel.series;
    let name = series.name();
    let ko = match &args.installed {
        Some(root) => installed::module(root, kernel, &paths.vmtest_out(&kernel.release))?,
        None => timings.measure(name, "build", || build_module(paths, kernel, rust))?,
    };
    let guest = initramfs::Guest {
        kernel,
        seng_ko: &ko,
        host,
        plan,
    };
    let initrd = timings.measure(name, "initramfs", || initramfs::build(paths, &guest))?;
    match mode {
        vm::Mode::Test => println!(
            "[{series}] booting {} to run {} tests",
            kernel.release,
            plan.len()
        ),
        vm::Mode::Bench => println!(
            "[{series}] booting {} to run {} benchmarks",
            kernel.release,
            plan.len()
        ),
    }
    let out_dir = paths.vmtest_out(&kernel.release);
    // KASAN, lockdep and kmemleak make a test 5 to 25 times slower on the debug kernel (those
    // that allocate the most, the most): the whole suite takes over an hour there.
    let slowdown = if series == Series::Debug6_12 { 6 } else { 1 };
    let soak = args.soak.map(|minutes| minutes * 60);
    let light = args.debug_light && series == Series::Debug6_12;
    let boot = vm::Boot {
        kernel,
        initrd: &initrd,
        mode,
        timeout: Duration::from_secs(args.timeout.unwrap_or(match mode {
            vm::Mode::Test => 1200 * slowdown + soak.unwrap_or(0),
            vm::Mode::Bench => 2400 * slowdown,
        })),
        keep: args.keep,
        out_dir: &out_dir,
        verbose: args.verbose,
        seeds: args.seeds.as_deref(),
        test_timeout: Duration::from_secs(args.test_timeout * slowdown + soak.unwrap_or(0)),
        torture_seconds: soak,
        light,
        user_space: !light && args.user_space_on.is_none_or(|on| on == series),
    };
    let outcome = timings.measure(name, "boot+tests", || vm::run(&boot))?;

    for r in &outcome.results {
        match r.status.as_str() {
            "PASS" | "SKIP" => verdict.passed += 1,
            _ => {
                verdict
                    .failed
                    .push(format!("test {}: {}", r.name, r.detail));
                for l in &r.log {
                    println!("[{series}]   | {l}");
                }
            }
        }
    }
    for file in plan {
        let name = test_name(file);
        let (kind, reported) = match mode {
            vm::Mode::Test => ("test", outcome.results.iter().any(|r| r.name == name)),
            vm::Mode::Bench => ("bench", outcome.benches.iter().any(|(b, _)| b == name)),
        };
        if !reported && !args.keep {
            verdict.failed.push(format!("{kind} {name}: no result"));
        }
    }
    for (bench, rc) in &outcome.benches {
        if rc == "0" {
            verdict.passed += 1;
        } else {
            verdict.failed.push(format!("bench {bench}: exit {rc}"));
        }
    }
    for p in &outcome.kernel_problems {
        verdict.failed.push(format!("kernel log: {p}"));
    }
    if let Some(why) = &outcome.aborted {
        verdict.failed.push(format!(
            "VM: {why}; serial log {}",
            outcome.serial_log.display()
        ));
        println!("[{series}] last console lines:");
        for l in &outcome.tail {
            println!("[{series}]   | {l}");
        }
    }
    if !outcome.kernel_problems.is_empty() {
        println!(
            "[{series}] kernel problems (full log in {}):",
            outcome.serial_log.display()
        );
        for p in &outcome.kernel_problems {
            println!("[{series}]   ! {p}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod seeds_test {
    use super::parse_seeds;

    #[test]
    fn seeds_are_lists_of_seeds_and_ranges() {
        assert_eq!(parse_seeds("1..1000").unwrap(), "1..1000");
        assert_eq!(parse_seeds("126,246,600..610,7..7").unwrap(), "126,246,600..610,7");
        assert!(parse_seeds("9..3").unwrap_err().contains("in 9..3, the first seed is after the last"));
        assert!(parse_seeds("1,,2").unwrap_err().contains(" is not a seed"));
        assert!(parse_seeds("1..x").unwrap_err().contains("1..x is not a seed"));
    }
}
