// SPDX-License-Identifier: GPL-2.0-only
//! Booting a kernel with the test initramfs under QEMU (TCG: KVM is not available here) and
//! reading the guest's serial console. The guest speaks a line protocol (see `vmtest/init.sh`):
//!
//! - `SENG-TEST <name> PASS|FAIL|SKIP <detail>`: one result per planned test;
//! - `SENG-LOG-BEGIN <name>` ... `SENG-LOG-END <name>`: a failed test's output;
//! - `SENG-BENCH-BEGIN <name>` ... `SENG-BENCH-END <name> <exit code>`: a bench script's output;
//! - `SENG-FILE-BEGIN <name>` base64 ... `SENG-FILE-END <name>`: a file sent back to the host;
//! - `SENG-DONE`: every planned test ran;
//! - `SENG-DMESG-BEGIN` ... `SENG-DMESG-END`: the kernel log, checked for oopses and warnings.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::kernel::{Kernel, Series};
use crate::paths::{mkdir, remove_all};

/// What the guest runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The planned tests of `vmtest/tests`.
    Test,
    /// The planned scripts of `vmtest/bench`, printing their output.
    Bench,
}

impl Mode {
    /// The QEMU options that differ by mode. Tests get 1 GiB, 2 GiB on the debug kernel (KASAN's
    /// shadow takes an eighth, its quarantine and kmemleak's metadata more). Benchmarks get
    /// 3 GiB (`nft -f` of a 1M-element set needs more than 1 GiB in user space) and instruction
    /// counting: with `-icount shift=0` the guest clock advances 1 ns per instruction, so a
    /// rate measured on it counts the work done rather than the host's speed and load;
    /// `sleep=off` jumps the clock over idle time instead of waiting for the host's clock.
    fn qemu_args(self, series: Series) -> &'static [&'static str] {
        match (self, series) {
            // Two CPUs: the torture's writers, dumps and packet path then really run at once,
            // so a reader can hold a node while a writer frees it.
            (Mode::Test, Series::Debug6_12) => &["-m", "2048", "-smp", "2"],
            (Mode::Test, _) => &["-m", "1024", "-smp", "1"],
            (Mode::Bench, _) => &["-m", "3072", "-smp", "1", "-icount", "shift=0,sleep=off"],
        }
    }
}

/// One boot.
pub struct Boot<'a> {
    /// The kernel to boot.
    pub kernel: &'a Kernel,
    /// Its initramfs.
    pub initrd: &'a Path,
    /// Tests or benchmarks.
    pub mode: Mode,
    /// The whole boot is killed after this long.
    pub timeout: Duration,
    /// Keep the guest running with a shell on the console after the run (interactive).
    pub keep: bool,
    /// Where the serial log and returned files go.
    pub out_dir: &'a Path,
    /// Print every console line as it arrives.
    pub verbose: bool,
    /// Seeds for the random differential test (`A..B`), passed on the kernel command line.
    pub seeds: Option<&'a str>,
    /// The guest kills a test that runs longer than this.
    pub test_timeout: Duration,
    /// How long the torture test runs (`--soak`), passed on the kernel command line.
    pub torture_seconds: Option<u64>,
    /// Run the longest tests at a smaller scale (`vmtest.light=1`).
    pub light: bool,
    /// Run the user-space tests in full (`vmtest.userspace=0` when not).
    pub user_space: bool,
}

/// The result of one test in the guest.
pub struct TestResult {
    /// The test name (file name without `.sh`).
    pub name: String,
    /// `PASS`, `FAIL` or `SKIP`.
    pub status: String,
    /// The rest of the result line.
    pub detail: String,
    /// The test's output, sent only for failures.
    pub log: Vec<String>,
}

/// What a boot produced.
#[derive(Default)]
pub struct Outcome {
    /// Test results in arrival order.
    pub results: Vec<TestResult>,
    /// Bench scripts with their exit codes (as the guest printed them).
    pub benches: Vec<(String, String)>,
    /// Kernel log lines that indicate a kernel problem.
    pub kernel_problems: Vec<String>,
    /// Whether the guest reported it finished (`SENG-DONE`) and dumped its kernel log.
    pub completed: bool,
    /// Why the boot ended early, if it did.
    pub aborted: Option<String>,
    /// The last console lines, for diagnosing a crash or hang.
    pub tail: Vec<String>,
    /// The full serial log.
    pub serial_log: PathBuf,
}

/// How long a guest that reported everything may take to power off before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// Kernel log words that fail a run wherever they appear: oopses, BUG and WARN, the reports of
/// the debug kernel's checkers (KASAN, KFENCE, UBSAN, lockdep, debug objects, RCU, kmemleak).
/// Lockdep's own reports are WARNINGs and BUGs; the word alone also appears in its banner.
const PROBLEM_WORDS: &[&str] = &["Oops", "BUG", "WARNING", "KASAN", "KFENCE", "UBSAN", "ODEBUG", "Call Trace"];
const PROBLEM_PHRASES: &[&str] = &[
    "lockdep is turned off",
    "possible circular locking",
    "general protection",
    "suspicious RCU usage",
    "suspected memory leak",
    "unreferenced object",
];

/// Whether a kernel log line reports a kernel problem.
pub fn is_kernel_problem(line: &str) -> bool {
    PROBLEM_PHRASES.iter().any(|p| line.contains(p))
        || PROBLEM_WORDS.iter().any(|w| contains_word(line, w))
}

fn contains_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A printk line on the console: `[    1.234567] ...`.
fn is_console_printk(line: &str) -> bool {
    line.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .is_some_and(|(ts, _)| ts.trim().parse::<f64>().is_ok())
}

/// Boots the guest and collects what it reports.
pub fn run(boot: &Boot<'_>) -> Result<Outcome> {
    let mode = match boot.mode {
        Mode::Test => "test",
        Mode::Bench => "bench",
    };
    let mut append = format!(
        "console=ttyS0 panic=-1 quiet vmtest.mode={mode} vmtest.test_timeout={}",
        boot.test_timeout.as_secs()
    );
    if boot.keep {
        append.push_str(" vmtest.keep=1");
    }
    if let Some(seeds) = boot.seeds {
        append.push_str(&format!(" vmtest.seeds={seeds}"));
    }
    if boot.light {
        append.push_str(" vmtest.light=1");
    }
    if !boot.user_space {
        append.push_str(" vmtest.userspace=0");
    }
    if let Some(seconds) = boot.torture_seconds {
        append.push_str(&format!(" vmtest.torture_seconds={seconds}"));
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max"])
        .args(boot.mode.qemu_args(boot.kernel.series))
        // -nodefaults: no NIC (its option ROM), VGA or drives to probe; the console is all
        // the guest needs.
        .args([
            "-nographic",
            "-nodefaults",
            "-serial",
            "mon:stdio",
            "-no-reboot",
            "-kernel",
        ])
        .arg(boot.kernel.vmlinuz())
        .arg("-initrd")
        .arg(boot.initrd)
        .args(["-append", &append]);
    mkdir(boot.out_dir)?;
    if boot.keep {
        // Interactive: the console is the user's terminal; nothing is parsed.
        let status = qemu.status().context("cannot start qemu-system-x86_64")?;
        return Ok(Outcome {
            completed: status.success(),
            aborted: (!status.success()).then(|| format!("qemu exited with {status}")),
            ..Outcome::default()
        });
    }
    let qemu_err = boot.out_dir.join("qemu.stderr");
    qemu.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&qemu_err).context("cannot create qemu.stderr")?);
    let mut child = qemu.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = strip_terminal_controls(&String::from_utf8_lossy(&buf));
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });

    let serial_log = boot.out_dir.join("serial.log");
    let mut log = fs::File::create(&serial_log).context("cannot create serial.log")?;
    let files_dir = boot.out_dir.join("files");
    remove_all(&files_dir)?;
    let mut parser = Parser::new(files_dir);
    let mut deadline = Instant::now() + boot.timeout;
    let mut aborted = None;
    let mut kill = false;
    loop {
        if parser.outcome.completed {
            // The guest only has to power off now; do not let a stuck poweroff fail the run.
            deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if boot.verbose {
                    println!("[{}] | {line}", boot.kernel.series);
                }
                parser.line(&line, boot.kernel)?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !parser.outcome.completed {
                    aborted = Some(format!("timed out after {}s", boot.timeout.as_secs()));
                }
                kill = true;
                break;
            }
        }
    }
    finish(&mut child, kill)?;
    let mut outcome = parser.outcome;
    outcome.serial_log = serial_log;
    if aborted.is_none() && !outcome.completed {
        let err = fs::read_to_string(&qemu_err).unwrap_or_default();
        aborted = Some(format!(
            "the guest stopped before finishing{}",
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(" (qemu: {})", err.trim())
            }
        ));
    }
    outcome.aborted = aborted;
    Ok(outcome)
}

fn finish(child: &mut Child, kill: bool) -> Result<()> {
    if kill {
        child.kill().ok();
    }
    child.wait().context("cannot wait for qemu")?;
    Ok(())
}

enum Section {
    None,
    Log(String),
    Bench(String),
    File(String, String),
    Dmesg,
}

struct Parser {
    outcome: Outcome,
    section: Section,
    files_dir: PathBuf,
    dumped_dmesg: bool,
    done: bool,
}

impl Parser {
    fn new(files_dir: PathBuf) -> Self {
        Parser {
            outcome: Outcome::default(),
            section: Section::None,
            files_dir,
            dumped_dmesg: false,
            done: false,
        }
    }

    fn line(&mut self, line: &str, kernel: &Kernel) -> Result<()> {
        const TAIL: usize = 30;
        self.outcome.tail.push(line.to_string());
        if self.outcome.tail.len() > TAIL {
            self.outcome.tail.remove(0);
        }
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("");
        let arg = words.next().unwrap_or("").to_string();
        match (&mut self.section, tag) {
            (Section::Log(_), "SENG-LOG-END") => self.section = Section::None,
            (Section::Log(name), _) => {
                if let Some(r) = self
                    .outcome
                    .results
                    .iter_mut()
                    .rev()
                    .find(|r| r.name == *name)
                {
                    r.log.push(line.to_string());
                }
            }
            (Section::Bench(name), "SENG-BENCH-END") => {
                let rc = words.next().unwrap_or("?").to_string();
                println!("[{}] bench {name}: exit {rc}", kernel.series);
                self.outcome.benches.push((name.clone(), rc));
                self.section = Section::None;
            }
            (Section::Bench(name), _) => println!("[{}] {name}: {line}", kernel.series),
            (Section::File(name, data), "SENG-FILE-END") => {
                let bytes = base64_decode(data)
                    .with_context(|| format!("file {name} from the guest is not valid base64"))?;
                mkdir(&self.files_dir)?;
                let path = self.files_dir.join(name.replace('/', "_"));
                fs::write(&path, bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("[{}] received {}", kernel.series, path.display());
                self.section = Section::None;
            }
            (Section::File(_, data), _) => data.push_str(line.trim()),
            (Section::Dmesg, "SENG-DMESG-END") => {
                self.dumped_dmesg = true;
                self.outcome.completed = self.done;
                self.section = Section::None;
            }
            (Section::Dmesg, _) => self.problem(line),
            (Section::None, "SENG-TEST") => {
                let status = words.next().unwrap_or("?").to_string();
                let detail = words.collect::<Vec<_>>().join(" ");
                println!("[{}] {status} {arg} {detail}", kernel.series);
                self.outcome.results.push(TestResult {
                    name: arg,
                    status,
                    detail,
                    log: Vec::new(),
                });
            }
            (Section::None, "SENG-LOG-BEGIN") => self.section = Section::Log(arg),
            (Section::None, "SENG-BENCH-BEGIN") => self.section = Section::Bench(arg),
            (Section::None, "SENG-FILE-BEGIN") => self.section = Section::File(arg, String::new()),
            (Section::None, "SENG-DMESG-BEGIN") => self.section = Section::Dmesg,
            (Section::None, "SENG-DONE") => self.done = true,
            (Section::None, _) => {
                if is_console_printk(line) {
                    self.problem(line);
                }
            }
        }
        Ok(())
    }

    fn problem(&mut self, line: &str) {
        if is_kernel_problem(line) {
            self.outcome.kernel_problems.push(line.to_string());
        }
    }
}

/// The text of a console line without its line end and the terminal escape sequences that
/// the firmware and the guest's shell print (`ESC c`, `ESC [ ... letter`).
fn strip_terminal_controls(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next_if_eq(&'[').is_some() {
                    while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Decodes standard base64 (as busybox `base64` writes it), ignoring whitespace.
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = acc << 6
                | value(c).with_context(|| format!("invalid base64 character {:?}", c as char))?;
        }
        let bytes = (chunk.len() * 6) / 8;
        acc <<= 6 * (4 - chunk.len() as u32);
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + bytes]);
    }
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn problems_are_words() {
        assert!(is_kernel_problem(
            "[    3.1] WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 foo"
        ));
        assert!(is_kernel_problem(
            "[    3.1] BUG: kernel NULL pointer dereference"
        ));
        assert!(is_kernel_problem("[    3.1]  Call Trace:"));
        assert!(is_kernel_problem(
            "general protection fault, probably for non-canonical address"
        ));
        assert!(is_kernel_problem(
            "[   12.3] BUG: KASAN: slab-use-after-free in seng_rs_doit+0x1/0x2 [seng]"
        ));
        assert!(is_kernel_problem(
            "[   12.3] UBSAN: shift-out-of-bounds in net/foo.c:12:3"
        ));
        assert!(is_kernel_problem("[   12.3] ODEBUG: free active (active state 1) object"));
        assert!(is_kernel_problem("[   12.3] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"));
        assert!(!is_kernel_problem("[    0.0] kasan: KernelAddressSanitizer initialized (generic)"));
        assert!(!is_kernel_problem("[    0.0] kfence: initialized - using 2097152 bytes for 255 objects"));
        assert!(!is_kernel_problem("[    0.1] kmemleak: Kernel memory leak detector initialized (mem pool available: 15677)"));
        assert!(!is_kernel_problem("[    0.0] rcu: \tRCU lockdep checking is enabled."));
        assert!(is_kernel_problem("[   12.3] INFO: lockdep is turned off."));
        assert!(!is_kernel_problem("[    1.0] DEBUG_FOO enabled"));
        assert!(!is_kernel_problem(
            "[    1.0] seng: loading out-of-tree module taints kernel."
        ));
    }

    #[test]
    fn console_printk_lines() {
        assert!(is_console_printk(
            "[    1.234567] Run /init as init process"
        ));
        assert!(!is_console_printk("SENG-TEST tun PASS"));
    }

    #[test]
    fn terminal_controls_are_stripped() {
        let raw = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n";
        assert_eq!(strip_terminal_controls(raw), "SeaBIOS (version 1.16.2)");
        assert_eq!(
            strip_terminal_controls("SENG-TEST a PASS 0.1s\r\n"),
            "SENG-TEST a PASS 0.1s"
        );
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=\n").unwrap(), b"hello world");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("").unwrap(), b"");
    }
}
