// SPDX-License-Identifier: GPL-2.0-only
//! seng-torture: for a bounded time, at once,
//!
//! - *writers*, each in a network namespace of its own that it creates and, at the end of its
//!   life, destroys with its table, rules and open dumps still live, send valid, mutated and
//!   random requests of every command (the original command 1 too) and check every answer and,
//!   regularly, the whole table (`seng save`) against a model: seng-core's engine executing
//!   the same requests in user space. Some requests run with the kernel's allocations failing
//!   at random (failslab restricted to the writer's thread through `make-it-fail`): each must
//!   have failed cleanly or applied completely. Each writer also dumps, starts dumps it never
//!   reads, and sends packets from registered and unregistered sources through seng rules of
//!   both iptables backends;
//! - *chaos* processes do the same in the initial namespace, flushes and replaces included,
//!   all against one table and without a model (their answers are only checked for sanity),
//!   while packets flow through the rules the calling test set up there;
//! - the supervisor tries to unload the module, which the rules keep busy.
//!
//! It then prints how many requests of each kind were sent, accepted and refused, and the
//! other counts, and exits non-zero on any disagreement. Kernel reports (KASAN, lockdep, ...)
//! are the calling test's to find in the kernel log.
//!
//! Usage: `seng-torture [--seconds N] [--writers N] [--chaos N] [--seed N] [--failslab]
//! [--chaos-dev DEV --chaos-dst ADDR]`.

mod gen;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seng_core::genl::{cmd, errno, Request, Scoped};
use seng_core::operation::{Dialect, Operation, Registration};
use seng_core::table::LocalTable;
use seng_nl::{Client, Error};

use gen::{Rng, Universe};

const SENG: &str = "/usr/local/bin/seng";
const IP: &str = "/usr/sbin/ip";

/// What the supervisor and its children are told.
#[derive(Clone)]
struct Options {
    seconds: u64,
    writers: usize,
    chaos: usize,
    seed: u64,
    failslab: bool,
    chaos_dev: Option<String>,
    chaos_dst: Option<Ipv4Addr>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options { seconds: 150, writers: 3, chaos: 2, seed: 0, failslab: false, chaos_dev: None, chaos_dst: None };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| v.parse::<u64>().map_err(|_| format!("{name}: `{v}` is not a whole number"));
        match arg.as_str() {
            "--seconds" => o.seconds = number("--seconds", value("--seconds")?)?,
            "--writers" => o.writers = number("--writers", value("--writers")?)? as usize,
            "--chaos" => o.chaos = number("--chaos", value("--chaos")?)? as usize,
            "--seed" => o.seed = number("--seed", value("--seed")?)?,
            "--failslab" => o.failslab = true,
            "--chaos-dev" => o.chaos_dev = Some(value("--chaos-dev")?),
            "--chaos-dst" => {
                let v = value("--chaos-dst")?;
                o.chaos_dst = Some(v.parse().map_err(|_| format!("--chaos-dst: `{v}` is not an IPv4 address"))?);
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if o.writers > 200 {
        return Err("--writers: at most 200".into());
    }
    Ok(o)
}

/// Counters a process reports to the supervisor, by name.
#[derive(Default)]
struct Counts(BTreeMap<String, u64>);

impl Counts {
    fn add(&mut self, name: impl Into<String>, n: u64) {
        *self.0.entry(name.into()).or_default() += n;
    }

    /// One line `name=value ...`, as a child prints it at its end.
    fn line(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }

    fn merge_line(&mut self, line: &str) {
        for word in line.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                self.add(k, v.parse().unwrap_or(0));
            }
        }
    }

    fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }
}

/// How a request was made.
#[derive(Clone, Copy)]
enum Kind {
    Valid,
    Mutated,
    Random,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::Mutated => "mutated",
            Kind::Random => "random",
        }
    }

    fn draw(rng: &mut Rng) -> Kind {
        match rng.below(10) {
            0..=5 => Kind::Valid,
            6..=8 => Kind::Mutated,
            _ => Kind::Random,
        }
    }

    fn request(self, rng: &mut Rng, universe: &Universe, flush_percent: usize) -> (u8, Vec<u8>) {
        match self {
            Kind::Valid => universe.valid(rng, flush_percent),
            Kind::Mutated => {
                let valid = universe.valid(rng, flush_percent);
                gen::mutate(rng, valid)
            }
            Kind::Random => gen::random(rng),
        }
    }
}

/// A command's name in the counts.
fn command_name(command: u8) -> String {
    let names = ["", "legacy", "enclave-set", "enclave-del", "flush", "cat-add", "cat-del", "get", "stats", "replace-begin", "replace-add", "replace-commit", "replace-abort", "replace-del", "replace-cat-add", "replace-cat-del"];
    names.get(usize::from(command)).filter(|n| !n.is_empty()).map_or_else(|| "unknown".to_string(), |n| n.to_string())
}

/// The kernel's answer to one request.
enum Answer {
    Accepted,
    Refused { errno: i32, message: Option<String> },
    /// No answer came (the kernel could not allocate the ack, or the request itself): the
    /// request may or may not have been carried out.
    Lost(String),
}

fn ask(client: &mut Client, command: u8, payload: &[u8]) -> Answer {
    match client.request_raw(command, payload) {
        Ok(()) => Answer::Accepted,
        Err(Error::Kernel(k)) => Answer::Refused { errno: k.errno, message: k.message },
        Err(Error::PermissionDenied) => Answer::Refused { errno: libc::EPERM, message: None },
        Err(other) => Answer::Lost(other.to_string()),
    }
}

/// Fault injection for the calling thread: while armed, the kernel's slab allocations for
/// this thread fail as the failslab settings say (the test sets the probability, with
/// `task-filter`). Every armed request gets its own budget of failures (failslab's `times`,
/// shared by all processes, so armed requests take turns under a lock): a writer's one failure
/// lets the engine's undo of a half-done batch run on memory it can have, so the request must
/// fail cleanly; the chaos processes' several failures reach the undo paths' failures too.
struct Failslab {
    make_it_fail: File,
    lock: File,
}

/// failslab's budget of failures. A debugfs attribute is not seekable (no pread, no pwrite, one
/// read per open), so it is opened afresh for each write and read, never while armed.
const FAILSLAB_TIMES: &str = "/sys/kernel/debug/failslab/times";

impl Failslab {
    fn open(enabled: bool) -> Option<Failslab> {
        if !enabled {
            return None;
        }
        let write = |path: &str| OpenOptions::new().read(true).write(true).create(path.starts_with("/run")).open(path).ok();
        Some(Failslab { make_it_fail: write("/proc/thread-self/make-it-fail")?, lock: write("/run/seng-torture.failslab")? })
    }

    /// Runs `f` with at most `budget` allocation failures injected into this thread; returns
    /// its result and how many were.
    fn armed<R>(&self, budget: u64, f: impl FnOnce() -> R) -> Result<(R, u64), String> {
        // SAFETY: flock on a descriptor this struct owns.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX) };
        let outcome = (|| {
            std::fs::write(FAILSLAB_TIMES, budget.to_string()).map_err(|e| format!("cannot set {FAILSLAB_TIMES}: {e}"))?;
            // A write of one byte to a file opened earlier: nothing here allocates while armed.
            self.make_it_fail.write_at(b"1", 0).map_err(|e| format!("cannot arm make-it-fail: {e}"))?;
            let result = f();
            self.make_it_fail.write_at(b"0", 0).map_err(|e| format!("cannot disarm make-it-fail: {e}"))?;
            let left = std::fs::read_to_string(FAILSLAB_TIMES).map_err(|e| format!("cannot read {FAILSLAB_TIMES}: {e}"))?;
            let left: u64 = left.trim().parse().map_err(|_| format!("{FAILSLAB_TIMES} holds `{}`, not a count", left.trim()))?;
            Ok((result, budget.saturating_sub(left)))
        })();
        // SAFETY: as above.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
        outcome
    }
}

/// The model of one namespace's table: seng-core's engine in user space, fed the same
/// requests. The kernel's staging table belongs to the writer's one socket, as the model's
/// belongs to its port 0.
struct Model {
    table: LocalTable,
    capacity: usize,
}

/// What the model says of a request.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Accept,
    Refuse { errno: i32, message: String },
}

impl Model {
    fn new(capacity: usize) -> Model {
        Model { table: LocalTable::new(capacity).expect("a model table"), capacity }
    }

    /// Executes the request on the model, as the module does.
    fn execute(&mut self, command: u8, payload: &[u8]) -> Verdict {
        let refuse = |e: seng_core::genl::ProtoError| Verdict::Refuse { errno: e.errno, message: e.msg.to_string_lossy().into_owned() };
        let scoped = match Scoped::parse(command, payload) {
            Ok(r) => r,
            Err(refusal) => return refuse(refusal.error),
        };
        match scoped.request {
            // Reads: answered from the table, without the engine's reply buffer.
            Request::Get { addr, scope } => match self.table.table().lookup(&addr) {
                Some(e) if scope.includes(&self.table.origin(e.origin())) => Verdict::Accept,
                _ => Verdict::Refuse { errno: errno::ENOENT, message: "address is not a registered enclave".into() },
            },
            Request::Stats => Verdict::Accept,
            _ => match self.table.execute(scoped) {
                Ok(_) => Verdict::Accept,
                Err(refusal) => refuse(refusal.error),
            },
        }
    }

    fn snapshot(&self) -> Vec<Registration> {
        let mut out: Vec<Registration> = self
            .table
            .table()
            .enclaves_from(0)
            .map(|e| Registration { addr: e.addr(), app: *e.app(), host: e.host(), categories: e.categories().to_vec(), origin: self.table.origin(e.origin()) })
            .collect();
        sort(&mut out);
        out
    }

    /// A model holding exactly `table` and no replace transaction.
    fn rebuild(&mut self, table: &[Registration]) {
        let mut fresh = LocalTable::new(self.capacity).expect("a model table");
        let mut payload = Vec::new();
        for r in table {
            // Through the engine, as a request of the entry's own origin.
            let command = Operation::Register(vec![r.clone()]).emit_into(Dialect::Live, &mut payload).expect("an enclave fits a request");
            let request = Scoped::parse(command, &payload).expect("seng-core decodes what it encodes");
            fresh.execute(request).expect("a table the kernel held fits the model");
        }
        self.table = fresh;
    }
}

/// `seng save`'s order: by origin (the local one first), then by address, IPv4 first.
fn sort(table: &mut [Registration]) {
    table.sort_by_key(|e| match e.addr {
        IpAddr::V4(a) => (e.origin, false, u128::from(a.to_bits())),
        IpAddr::V6(a) => (e.origin, true, a.to_bits()),
    });
}

/// The lines `seng save` prints for `table`.
fn save_lines(table: &[Registration]) -> Vec<String> {
    table.iter().map(|r| Operation::from(r.clone()).to_string()).collect()
}

/// The table as the kernel holds it, from one consistent dump.
fn kernel_table(client: &mut Client) -> Result<Vec<Registration>, String> {
    let mut table = client.list().map_err(|e| format!("dump failed: {e}"))?;
    sort(&mut table);
    Ok(table)
}

/// The table as `seng save` prints it in this process's namespace.
fn seng_save() -> Result<Vec<String>, String> {
    let out = Command::new(SENG).arg("save").output().map_err(|e| format!("cannot run seng save: {e}"))?;
    if !out.status.success() {
        return Err(format!("seng save failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// The first difference of two tables' lines, for a failure message.
fn difference(want: &[String], got: &[String]) -> String {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w != g {
            return format!("line {}: model `{w}`, kernel `{g}`", i + 1);
        }
    }
    format!("model has {} lines, kernel {}: first extra `{}`", want.len(), got.len(), want.get(got.len()).or(got.get(want.len())).map_or("", String::as_str))
}

/// A refusal of the kernel's own attribute policy (checked before seng's decoder runs): it
/// answers EINVAL or ERANGE with a message of its own.
fn policy_refusal(errno: i32, message: &Option<String>, model_message: Option<&str>) -> bool {
    (errno == libc::EINVAL || errno == libc::ERANGE) && message.as_deref() != model_message
}

/// The kernel's table capacity per namespace.
fn capacity() -> usize {
    std::fs::read_to_string("/sys/module/seng/parameters/capacity").ok().and_then(|c| c.trim().parse().ok()).unwrap_or(1 << 20)
}

/// Runs `program args` in this process's namespace; a failure names it.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// A tun device without packet information: what is written to it arrives on it.
struct Tun(File);

impl Tun {
    fn create(name: &str) -> Result<Tun, String> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun").map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, &byte) in ifr.ifr_name.iter_mut().zip(name.as_bytes().iter().take(15)) {
            *slot = byte as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
            return Err(format!("TUNSETIFF {name}: {}", std::io::Error::last_os_error()));
        }
        Ok(Tun(file))
    }

    /// Opens the existing device `name` (set up by the calling test).
    fn attach(name: &str) -> Result<Tun, String> {
        Tun::create(name)
    }

    fn send(&mut self, packet: &[u8]) -> bool {
        self.0.write(packet).is_ok()
    }
}

/// A UDP datagram in IPv4 (UDP checksum 0: none) from `src` to `dst`.
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&48u16.to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = p[..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&4711u16.to_be_bytes());
    p[24..26].copy_from_slice(&28u16.to_be_bytes());
    p
}

/// Sends packets from the universe's addresses (registered or not) into `tun` until `stop`.
fn packets(mut tun: Tun, sources: Vec<Ipv4Addr>, dst: Ipv4Addr, seed: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut rng = Rng::new(seed);
    let mut id = 0u16;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..16 {
            id = id.wrapping_add(1);
            if tun.send(&udp_packet(*rng.pick(&sources), dst, id)) {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts a dump on a socket of its own and never reads it: the namespace (or the process)
/// ends with the dump open.
fn open_dump(family: u16) -> Option<i32> {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC);
        if fd < 0 {
            return None;
        }
        let mut msg = [0u8; 20];
        msg[0..4].copy_from_slice(&20u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&family.to_ne_bytes());
        msg[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        msg[16] = cmd::GET;
        msg[17] = seng_core::genl::FAMILY_VERSION;
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = libc::sendto(fd, msg.as_ptr().cast(), msg.len(), 0, (&addr as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32);
        (sent == 20).then_some(fd)
    }
}

/// Dumps the table, reads stats, and leaves dumps open, until `stop`; every dump must hold
/// each address once (mutated requests register addresses of any universe).
fn dumper(stop: Arc<AtomicBool>, dumps: Arc<AtomicU64>, failed: Arc<AtomicBool>) {
    let Ok(mut client) = Client::connect() else {
        failed.store(true, Ordering::Relaxed);
        eprintln!("FAIL dumper: cannot connect");
        return;
    };
    let mut open = Vec::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        match client.list() {
            Ok(table) => {
                dumps.fetch_add(1, Ordering::Relaxed);
                let mut seen = std::collections::HashSet::new();
                for e in &table {
                    if !seen.insert(e.addr) {
                        eprintln!("FAIL dumper: a dump holds {} twice", e.addr);
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            }
            // A dump restarted too often by concurrent changes is no fault of the module.
            Err(Error::DumpInterrupted { .. }) => {}
            Err(e) => {
                eprintln!("FAIL dumper: {e}");
                failed.store(true, Ordering::Relaxed);
                return;
            }
        }
        if client.stats().is_err() {
            eprintln!("FAIL dumper: stats failed");
            failed.store(true, Ordering::Relaxed);
        }
        if round % 8 == 0 && open.len() < 4 {
            open.extend(open_dump(client.family_id()));
        }
    }
    // The descriptors stay open: the process ends with them.
    std::mem::forget(open);
}

/// Counts one request's outcome.
fn count(counts: &mut Counts, kind: Kind, command: u8, outcome: &str) {
    counts.add(format!("{}.{}.{outcome}", kind.name(), command_name(command)), 1);
}

/// A writer: its own namespace, table, rules, dumps and packets, every answer checked against
/// the model. Returns its counts, or the first disagreement.
fn writer(o: &Options, id: u8, seconds: u64, seed: u64, counts: &mut Counts) -> Result<(), String> {
    // SAFETY: unshare takes no pointers; the process is still single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
    }
    let universe = Arc::new(Universe::new(id));
    let tun = Tun::create("tt0")?;
    run(IP, &["link", "set", "lo", "up"])?;
    run(IP, &["addr", "add", "10.200.0.1/24", "dev", "tt0"])?;
    run(IP, &["link", "set", "tt0", "up"])?;
    let app = |i: usize| universe.apps[i].to_string();
    run("/usr/sbin/iptables-legacy", &["-A", "INPUT", "-i", "tt0", "-m", "seng", "--src-app", &app(0), "-j", "ACCEPT"])?;
    run("/usr/sbin/iptables-legacy", &["-A", "INPUT", "-i", "tt0", "-m", "seng", "--src-cat", "c1", "-j", "ACCEPT"])?;
    run("/usr/sbin/iptables-nft", &["-A", "INPUT", "-i", "tt0", "-m", "seng", "--src-app", &app(1), "--src-cat", "c2", "-j", "ACCEPT"])?;
    run("/usr/sbin/iptables-nft", &["-A", "INPUT", "-i", "tt0", "-m", "seng", "!", "--src-app", &app(2), "-j", "ACCEPT"])?;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let dumps = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    {
        let (v4, stop, sent) = (universe.v4.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || packets(tun, v4, Ipv4Addr::new(10, 200, 0, 1), seed ^ 1, stop, sent));
    }
    {
        let (stop, dumps, failed) = (stop.clone(), dumps.clone(), failed.clone());
        std::thread::spawn(move || dumper(stop, dumps, failed));
    }

    let mut client = Client::connect().map_err(|e| format!("cannot connect: {e}"))?;
    let mut model = Model::new(capacity());
    let failslab = Failslab::open(o.failslab);
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let kind = Kind::draw(&mut rng);
        let (command, payload) = kind.request(&mut rng, &universe, 10);
        let before = model.snapshot();
        let verdict = model.execute(command, &payload);
        let armed = failslab.is_some() && rng.percent(20);
        let answer = match failslab.as_ref().filter(|_| armed) {
            Some(f) => {
                let (answer, injected) = f.armed(1, || ask(&mut client, command, &payload))?;
                counts.add("armed", 1);
                counts.add("injected", injected);
                answer
            }
            None => ask(&mut client, command, &payload),
        };
        counts.add("requests", 1);
        let shown = || format!("{} request, command {command} ({}), payload {payload:02x?}", kind.name(), command_name(command));
        // Whether the kernel's table must now be compared, and which tables it may be.
        let mut resync = false;
        match (&verdict, &answer) {
            (Verdict::Accept, Answer::Accepted) => count(counts, kind, command, "accepted"),
            (Verdict::Refuse { errno, message }, Answer::Refused { errno: got, message: got_message }) => {
                count(counts, kind, command, "refused");
                // Under injection any errno will do, and the two may have refused at different
                // nests of a staged message, which applies the nests before the refused one (a
                // client aborts its transaction on any error): the tables are compared and the
                // transaction dropped on both sides.
                let same = errno == got || policy_refusal(*got, got_message, Some(message)) || armed;
                if !same {
                    return Err(format!("{}: the model refuses with errno {errno} ({message}), the kernel with {got} ({got_message:?})", shown()));
                }
                resync = armed;
            }
            (Verdict::Accept, Answer::Refused { errno, message }) => {
                count(counts, kind, command, "refused");
                if armed {
                    counts.add("failed-under-injection", 1);
                } else if policy_refusal(*errno, message, None) {
                    counts.add("refused-by-policy", 1);
                } else {
                    return Err(format!("{}: the model accepts, the kernel refuses with errno {errno} ({message:?})", shown()));
                }
                resync = true;
            }
            (Verdict::Refuse { errno, message }, Answer::Accepted) => {
                return Err(format!("{}: the kernel accepts what the model refuses with errno {errno} ({message})", shown()));
            }
            (_, Answer::Lost(why)) => {
                count(counts, kind, command, "lost");
                if !armed {
                    return Err(format!("{}: no answer without injected failures: {why}", shown()));
                }
                resync = true;
            }
        }
        if resync {
            // Failed cleanly (the table as before) or applied completely (as the model has it);
            // a replace transaction is dropped on both sides, as its state is not compared.
            let got = kernel_table(&mut client)?;
            let after = model.snapshot();
            let lost = matches!(answer, Answer::Lost(_));
            if got == before {
                model.rebuild(&before);
            } else if !(lost && got == after) {
                return Err(format!("{}: after a refusal the table is neither as before nor as the model has it: {}", shown(), difference(&save_lines(&before), &save_lines(&got))));
            } else {
                model.rebuild(&after);
            }
            let _ = client.request_raw(cmd::REPLACE_ABORT, &[]);
            counts.add("resyncs", 1);
        } else if armed || verdict == Verdict::Accept || n % 16 == 0 {
            // Every change is checked at once, so a difference names the request that made it.
            let got = kernel_table(&mut client)?;
            let want = model.snapshot();
            if got != want {
                return Err(format!("after {}: {}", shown(), difference(&save_lines(&want), &save_lines(&got))));
            }
            counts.add("model-checks", 1);
        }
        if failed.load(Ordering::Relaxed) {
            return Err("a dump of this namespace failed (see above)".into());
        }
    }
    let want = save_lines(&model.snapshot());
    let got = seng_save()?;
    if got != want {
        return Err(format!("at the end, `seng save` differs from the model: {}", difference(&want, &got)));
    }
    counts.add("save-checks", 1);
    counts.add("table-entries-at-end", want.len() as u64);
    stop.store(true, Ordering::Relaxed);
    counts.add("packets", sent.load(Ordering::Relaxed));
    counts.add("dumps", dumps.load(Ordering::Relaxed));
    counts.add("namespaces", 1);
    Ok(())
}

/// A chaos process in the initial namespace: every kind of request, flushes and replaces
/// included, against the table the others share; only the answers' sanity is checked.
fn chaos(o: &Options, id: u8, seed: u64, counts: &mut Counts) -> Result<(), String> {
    let universe = Universe::new(id);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let dumps = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    // A tun device takes one queue: the first chaos process sends the packets.
    if let (Some(dev), Some(dst), 200) = (&o.chaos_dev, o.chaos_dst, id) {
        let tun = Tun::attach(dev)?;
        // Sources of every chaos universe, so the rules see each other's enclaves.
        let sources: Vec<Ipv4Addr> = (200..200 + o.chaos as u8).flat_map(|i| Universe::new(i).v4).collect();
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || packets(tun, sources, dst, seed ^ 1, stop, sent));
    }
    {
        let (stop, dumps, failed) = (stop.clone(), dumps.clone(), failed.clone());
        std::thread::spawn(move || dumper(stop, dumps, failed));
    }
    let mut client = Client::connect().map_err(|e| format!("cannot connect: {e}"))?;
    let failslab = Failslab::open(o.failslab);
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let known = [0, libc::EINVAL, libc::ERANGE, libc::ENOENT, libc::ENOSPC, libc::EBUSY, libc::ENOMEM, libc::EMSGSIZE, libc::EOPNOTSUPP, libc::EEXIST];
    while Instant::now() < deadline {
        let kind = Kind::draw(&mut rng);
        let (command, payload) = kind.request(&mut rng, &universe, 40);
        let armed = failslab.is_some() && rng.percent(10);
        let answer = match failslab.as_ref().filter(|_| armed) {
            Some(f) => {
                let (answer, injected) = f.armed(4, || ask(&mut client, command, &payload))?;
                counts.add("armed", 1);
                counts.add("injected", injected);
                answer
            }
            None => ask(&mut client, command, &payload),
        };
        counts.add("requests", 1);
        match answer {
            Answer::Accepted => count(counts, kind, command, "accepted"),
            Answer::Refused { errno, message } => {
                count(counts, kind, command, "refused");
                if !known.contains(&errno) && !armed {
                    return Err(format!("command {command} refused with the unexpected errno {errno} ({message:?})"));
                }
            }
            Answer::Lost(why) => {
                count(counts, kind, command, "lost");
                if !armed {
                    return Err(format!("command {command}: no answer without injected failures: {why}"));
                }
            }
        }
        if failed.load(Ordering::Relaxed) {
            return Err("a dump of the initial namespace failed (see above)".into());
        }
    }
    stop.store(true, Ordering::Relaxed);
    counts.add("packets", sent.load(Ordering::Relaxed));
    counts.add("dumps", dumps.load(Ordering::Relaxed));
    Ok(())
}

/// `delete_module("seng", O_NONBLOCK)`: true if the module went away.
fn try_unload() -> bool {
    let name = CString::new("seng").expect("no NUL in the name");
    // SAFETY: the name is a valid C string for the duration of the call.
    unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) == 0 }
}

/// A child process of the supervisor in `role`.
struct Worker {
    child: Child,
    role: &'static str,
}

fn spawn(role: &'static str, id: u8, seconds: u64, seed: u64, args: &[String]) -> Result<Worker, String> {
    let child = Command::new("/proc/self/exe")
        .arg(format!("--role={role}"))
        .arg(format!("--id={id}"))
        .arg(format!("--life={seconds}"))
        .arg(format!("--child-seed={seed}"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start a {role}: {e}"))?;
    Ok(Worker { child, role })
}

/// Collects a finished worker's counts; false if it failed.
fn reap(mut w: Worker, counts: &mut Counts) -> bool {
    let status = w.child.wait().map(|s| s.success()).unwrap_or(false);
    let mut out = String::new();
    if let Some(mut stdout) = w.child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("counts ") {
            counts.merge_line(rest);
        }
    }
    if !status {
        eprintln!("FAIL: a {} failed", w.role);
    }
    status
}

fn supervise(o: &Options, args: &[String]) -> ExitCode {
    let start = Instant::now();
    let seed = if o.seed != 0 { o.seed } else { u64::from(std::process::id()) ^ start.elapsed().as_nanos() as u64 ^ 0x5e9 };
    println!("seng-torture: {} s, {} writers, {} chaos processes, seed {seed}, failslab {}", o.seconds, o.writers, o.chaos, if o.failslab { "on" } else { "off" });
    let mut rng = Rng::new(seed);
    let mut counts = Counts::default();
    let mut ok = true;
    let deadline = start + Duration::from_secs(o.seconds);
    let mut workers: Vec<Worker> = Vec::new();
    for i in 0..o.chaos {
        match spawn("chaos", 200 + i as u8, o.seconds, rng.next(), args) {
            Ok(w) => workers.push(w),
            Err(e) => {
                eprintln!("FAIL: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Writers live 10 to 40 seconds each, so namespaces come and go all the time.
    let mut writer_slots: Vec<Option<Worker>> = (0..o.writers).map(|_| None).collect();
    let mut next_id = 0u8;
    let mut unload_attempts = 0u64;
    let mut last_unload = Instant::now();
    while Instant::now() < deadline {
        for slot in writer_slots.iter_mut() {
            if let Some(w) = slot.as_mut() {
                if matches!(w.child.try_wait(), Ok(Some(_))) {
                    ok &= reap(slot.take().expect("a worker in the slot"), &mut counts);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            if slot.is_none() && left >= 5 {
                let life = (10 + rng.below(31) as u64).min(left);
                next_id = (next_id + 1) % 190;
                match spawn("writer", next_id + 1, life, rng.next(), args) {
                    Ok(w) => *slot = Some(w),
                    Err(e) => {
                        eprintln!("FAIL: {e}");
                        ok = false;
                    }
                }
            }
        }
        if last_unload.elapsed() > Duration::from_secs(3) {
            last_unload = Instant::now();
            unload_attempts += 1;
            if try_unload() {
                eprintln!("FAIL: seng.ko unloaded while rules used it");
                ok = false;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for w in workers.drain(..).chain(writer_slots.into_iter().flatten()) {
        ok &= reap(w, &mut counts);
    }
    counts.add("unload-attempts", unload_attempts);
    report(&counts, start.elapsed());
    if counts.get("requests") == 0 {
        eprintln!("FAIL: no request was sent");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The summary: requests by kind and command, then the other counts.
fn report(counts: &Counts, took: Duration) {
    println!("requests by kind (sent / accepted / refused / unanswered):");
    for kind in [Kind::Valid, Kind::Mutated, Kind::Random] {
        let mut total = [0u64; 3];
        let mut lines = Vec::new();
        for command in 0..=u8::MAX {
            let name = command_name(command);
            if name == "unknown" && command != 0 {
                continue;
            }
            let get = |o: &str| counts.get(&format!("{}.{name}.{o}", kind.name()));
            let (a, r, l) = (get("accepted"), get("refused"), get("lost"));
            if a + r + l > 0 {
                lines.push(format!("    {name:<16} {:>7} {:>7} {:>7} {:>5}", a + r + l, a, r, l));
                total[0] += a;
                total[1] += r;
                total[2] += l;
            }
        }
        println!("  {:<18} {:>7} {:>7} {:>7} {:>5}", kind.name(), total.iter().sum::<u64>(), total[0], total[1], total[2]);
        for l in lines {
            println!("{l}");
        }
    }
    for (name, what) in [
        ("requests", "requests in all"),
        ("armed", "requests sent with allocations failing at random"),
        ("injected", "allocation failures injected"),
        ("failed-under-injection", "requests the model accepts that failed cleanly under injection"),
        ("refused-by-policy", "requests the kernel's attribute policy refused before seng's decoder"),
        ("resyncs", "tables compared after a failure"),
        ("model-checks", "tables compared with the model"),
        ("save-checks", "`seng save` outputs compared with the model"),
        ("dumps", "dumps"),
        ("packets", "packets sent"),
        ("namespaces", "namespaces created and destroyed with live tables"),
        ("unload-attempts", "attempts to unload the busy module"),
    ] {
        println!("{:>9} {what}", counts.get(name));
    }
    println!("{:>9.1} s duration", took.as_secs_f64());
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut role = None;
    let (mut id, mut life, mut child_seed) = (0u8, 0u64, 0u64);
    args.retain(|a| {
        if let Some(v) = a.strip_prefix("--role=") {
            role = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--id=") {
            id = v.parse().unwrap_or(0);
        } else if let Some(v) = a.strip_prefix("--life=") {
            life = v.parse().unwrap_or(0);
        } else if let Some(v) = a.strip_prefix("--child-seed=") {
            child_seed = v.parse().unwrap_or(0);
        } else {
            return true;
        }
        false
    });
    let o = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("seng-torture: {e}");
            return ExitCode::from(2);
        }
    };
    let mut counts = Counts::default();
    let result = match role.as_deref() {
        None => return supervise(&o, &args),
        Some("writer") => writer(&o, id, life, child_seed, &mut counts),
        Some("chaos") => chaos(&o, id, child_seed, &mut counts),
        Some(other) => Err(format!("unknown role {other}")),
    };
    println!("counts {}", counts.line());
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => {
            // Ends with its threads, sockets, dumps and (for a writer) namespace still live.
            // SAFETY: _exit ends the process; nothing needs to run after the flush above.
            unsafe { libc::_exit(0) }
        }
        Err(e) => {
            eprintln!("FAIL {} {id} (seed {child_seed}): {e}", role.unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_rebuilt_model_holds_the_same_table() {
        let universe = Universe::new(7);
        let mut rng = Rng::new(11);
        let mut model = Model::new(4096);
        let mut accepted = 0;
        for _ in 0..3000 {
            let kind = Kind::draw(&mut rng);
            let (command, payload) = kind.request(&mut rng, &universe, 5);
            accepted += usize::from(model.execute(command, &payload) == Verdict::Accept);
            if rng.percent(5) {
                let before = model.snapshot();
                model.rebuild(&before);
                assert_eq!(model.snapshot(), before);
            }
        }
        assert!(accepted > 300, "only {accepted} requests were accepted");
    }

    #[test]
    fn counts_travel_as_a_line() {
        let mut a = Counts::default();
        a.add("valid.legacy.accepted", 3);
        a.add("packets", 10);
        let mut b = Counts::default();
        b.merge_line(&a.line());
        b.merge_line(&a.line());
        assert_eq!(b.get("valid.legacy.accepted"), 6);
        assert_eq!(b.get("packets"), 20);
    }

    #[test]
    fn policy_refusals_are_the_kernels_own() {
        assert!(policy_refusal(libc::EINVAL, &Some("Unsupported attribute".into()), Some("attribute not valid for this command")));
        assert!(policy_refusal(libc::ERANGE, &Some("Attribute failed policy validation".into()), None));
        assert!(!policy_refusal(libc::EINVAL, &Some("attribute given twice".into()), Some("attribute given twice")));
        assert!(!policy_refusal(libc::ENOENT, &None, None));
    }
}
