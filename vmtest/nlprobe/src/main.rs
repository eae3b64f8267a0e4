// SPDX-License-Identifier: GPL-2.0-only
//! nlprobe: sends seng.ko what a well-behaved client never sends (malformed attributes, wrong
//! lengths, missing NULs, unknown commands) and requests from an unprivileged process, and
//! checks the kernel's answers. Each case prints `ok NAME` or `FAIL NAME: why`; the exit code is
//! the number of failures.
//!
//! Usage: `nlprobe malformed` (as root) and `nlprobe unprivileged UID` (drops to UID first).
//! `nlprobe listen UID` drops to UID, joins the event group and prints `refused` if the kernel
//! refuses the join, else `listening`, then, when its standard input ends, `events N`: the number
//! of events that reached it. `nlprobe refused-set ADDR` (as root) sends ENCLAVE_SET requests
//! whose first nests are valid and whose last one is refused, ADDR being a registered enclave of
//! [`APP`] with 30 categories, and checks that each reply blames the last nest. `nlprobe
//! old-client LOCAL REMOTE` reads the table as a client older than origins does (no ORIGIN, no
//! ALL_ORIGINS), LOCAL being a local enclave and REMOTE a gateway's, and checks that it sees the
//! local part only, and that the original protocol's unregistration of REMOTE (an IPv4
//! address) succeeds without removing it.

use seng_core::genl::{attr, cmd, AttrWriter};
use seng_core::{Category, Measurement};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use seng_nl::{Client, Error, LegacyOp, ReadScope, Subscription};

const NLA_F_NESTED: u16 = 0x8000;

/// Builds attribute bytes with seng-core's writer.
fn attrs(build: impl FnOnce(&mut AttrWriter<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = AttrWriter::new(&mut buf);
    build(&mut w);
    let len = w.len();
    buf.truncate(len);
    buf
}

/// One attribute from raw parts, for shapes the writer refuses to make.
fn raw_attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
    out
}

const APP: Measurement = Measurement([0x5e; 32]);

struct Case {
    name: &'static str,
    command: u8,
    attrs: Vec<u8>,
    /// The errno expected; policy length checks answer ERANGE on newer kernels, EINVAL on older.
    errno: i32,
    /// A substring the extended-ack message must contain, if any.
    message: &'static str,
}

fn malformed_cases() -> Vec<Case> {
    let put = |w: &mut AttrWriter<'_>, kind, payload: &[u8]| w.put(kind, payload).unwrap();
    let enc = [192, 168, 28, 77];
    vec![
        Case { name: "legacy-short-app", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| { put(w, attr::ENC, &enc); put(w, attr::APP, &[1; 31]); put(w, attr::HOST, &[10, 0, 0, 1]); put(w, attr::ADD, &[]); }) },
        Case { name: "legacy-long-app", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| { put(w, attr::ENC, &enc); put(w, attr::APP, &[1; 33]); put(w, attr::HOST, &[10, 0, 0, 1]); put(w, attr::ADD, &[]); }) },
        Case { name: "legacy-cat-without-nul", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| { put(w, attr::APP, &APP.0); put(w, attr::CAT, b"Browser"); put(w, attr::ADD, &[]); }) },
        Case { name: "legacy-cat-too-long", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| { put(w, attr::APP, &APP.0); put(w, attr::CAT, b"123456789012345678901\0"); put(w, attr::ADD, &[]); }) },
        Case { name: "legacy-short-enc", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| { put(w, attr::ENC, &[1, 2, 3]); put(w, attr::RMV, &[]); }) },
        Case { name: "legacy-flag-with-payload", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| put(w, attr::FLUSH, &[1, 0, 0, 0])) },
        Case { name: "legacy-add-and-rmv", command: cmd::LEGACY, errno: libc::EINVAL, message: "exactly one of the ADD, RMV and FLUSH",
            attrs: attrs(|w| { put(w, attr::ADD, &[]); put(w, attr::RMV, &[]); }) },
        Case { name: "legacy-no-attributes", command: cmd::LEGACY, errno: libc::EINVAL, message: "", attrs: Vec::new() },
        Case { name: "legacy-register-without-host", command: cmd::LEGACY, errno: libc::EINVAL, message: "needs APP and HOST",
            attrs: attrs(|w| { put(w, attr::ENC, &enc); put(w, attr::APP, &APP.0); put(w, attr::ADD, &[]); }) },
        Case { name: "unknown-attribute", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: [raw_attr(60, &[0; 4]), raw_attr(attr::FLUSH, &[])].concat() },
        Case { name: "attribute-overruns-message", command: cmd::LEGACY, errno: libc::EINVAL, message: "",
            attrs: { let mut a = raw_attr(attr::ENC, &enc); a[0] = 40; a } },
        Case { name: "unknown-command", command: 99, errno: libc::EOPNOTSUPP, message: "", attrs: Vec::new() },
        Case { name: "nest-without-nested-flag", command: cmd::ENCLAVE_SET, errno: libc::EINVAL, message: "",
            attrs: raw_attr(attr::ENCLAVE, &raw_attr(attr::ADDR, &enc)) },
        Case { name: "nest-missing-host", command: cmd::ENCLAVE_SET, errno: libc::EINVAL, message: "needs ADDR, APP and HOST_ADDR",
            attrs: raw_attr(attr::ENCLAVE | NLA_F_NESTED, &[raw_attr(attr::ADDR, &enc), raw_attr(attr::APP, &APP.0)].concat()) },
        Case { name: "nest-five-byte-address", command: cmd::ENCLAVE_SET, errno: libc::EINVAL, message: "4 (IPv4) or 16 (IPv6)",
            attrs: raw_attr(attr::ENCLAVE | NLA_F_NESTED, &[raw_attr(attr::ADDR, &[1, 2, 3, 4, 5]), raw_attr(attr::APP, &APP.0), raw_attr(attr::HOST_ADDR, &[10, 0, 0, 1])].concat()) },
        Case { name: "set-without-enclaves", command: cmd::ENCLAVE_SET, errno: libc::EINVAL, message: "no ENCLAVE nest", attrs: Vec::new() },
        Case { name: "flush-with-attribute", command: cmd::FLUSH, errno: libc::EINVAL, message: "takes no attributes",
            attrs: raw_attr(attr::ADDR, &enc) },
        Case { name: "del-unregistered", command: cmd::ENCLAVE_DEL, errno: libc::ENOENT, message: "not a registered enclave",
            attrs: attrs(|w| w.put_enclave(&std::net::IpAddr::from(enc), None, None, &[]).unwrap()) },
        Case { name: "cat-add-unknown-app", command: cmd::CAT_ADD, errno: libc::ENOENT, message: "no enclave of this application",
            attrs: attrs(|w| { put(w, attr::APP, &APP.0); put(w, attr::CAT, b"Mail\0"); }) },
        Case { name: "replace-add-without-begin", command: cmd::REPLACE_ADD, errno: libc::ENOENT, message: "no replace transaction",
            attrs: attrs(|w| w.put_enclave(&std::net::IpAddr::from(enc), Some(&APP), Some(&std::net::IpAddr::from([10, 0, 0, 1])), &[]).unwrap()) },
        Case { name: "replace-commit-without-begin", command: cmd::REPLACE_COMMIT, errno: libc::ENOENT, message: "no replace transaction", attrs: Vec::new() },
        Case { name: "replace-del-without-begin", command: cmd::REPLACE_DEL, errno: libc::ENOENT, message: "no replace transaction",
            attrs: attrs(|w| w.put_enclave(&std::net::IpAddr::from(enc), None, None, &[]).unwrap()) },
        Case { name: "replace-del-with-app", command: cmd::REPLACE_DEL, errno: libc::EINVAL, message: "deletion nest takes only ADDR",
            attrs: attrs(|w| w.put_enclave(&std::net::IpAddr::from(enc), Some(&APP), None, &[]).unwrap()) },
        Case { name: "replace-cat-add-without-begin", command: cmd::REPLACE_CAT_ADD, errno: libc::ENOENT, message: "no replace transaction",
            attrs: attrs(|w| { put(w, attr::APP, &APP.0); put(w, attr::CAT, b"Mail\0"); }) },
        Case { name: "replace-cat-del-without-app", command: cmd::REPLACE_CAT_DEL, errno: libc::EINVAL, message: "APP is required",
            attrs: attrs(|w| put(w, attr::CAT, b"Mail\0")) },
        Case { name: "get-without-address", command: cmd::GET, errno: libc::EINVAL, message: "GET needs ADDR", attrs: Vec::new() },
        // Origins: the original protocol has none; ORIGIN names a gateway, first, NUL-terminated.
        Case { name: "legacy-with-origin", command: cmd::LEGACY, errno: libc::EINVAL, message: "attribute not valid for this command",
            attrs: attrs(|w| { put(w, attr::ORIGIN, b"gw-b\0"); put(w, attr::FLUSH, &[]); }) },
        Case { name: "origin-without-nul", command: cmd::FLUSH, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| put(w, attr::ORIGIN, b"gw-b")) },
        Case { name: "origin-too-long", command: cmd::FLUSH, errno: libc::EINVAL, message: "",
            attrs: attrs(|w| put(w, attr::ORIGIN, &[b"a".repeat(33), vec![0]].concat())) },
        Case { name: "origin-local", command: cmd::FLUSH, errno: libc::EINVAL, message: "leave it out for the local origin",
            attrs: attrs(|w| put(w, attr::ORIGIN, b"local\0")) },
        Case { name: "origin-bad-name", command: cmd::FLUSH, errno: libc::EINVAL, message: "ORIGIN must name a gateway",
            attrs: attrs(|w| put(w, attr::ORIGIN, b"gw b\0")) },
        Case { name: "origin-after-nests", command: cmd::ENCLAVE_DEL, errno: libc::EINVAL, message: "only ENCLAVE nests",
            attrs: attrs(|w| { w.put_enclave(&std::net::IpAddr::from(enc), None, None, &[]).unwrap(); put(w, attr::ORIGIN, b"gw-b\0"); }) },
        Case { name: "all-origins-on-flush", command: cmd::FLUSH, errno: libc::EINVAL, message: "takes no attributes",
            attrs: attrs(|w| put(w, attr::ALL_ORIGINS, &[])) },
        Case { name: "get-origin-and-all", command: cmd::GET, errno: libc::EINVAL, message: "once, not both",
            attrs: attrs(|w| { put(w, attr::ORIGIN, b"gw-b\0"); put(w, attr::ALL_ORIGINS, &[]); put(w, attr::ADDR, &enc); }) },
        Case { name: "stats-with-origin", command: cmd::STATS, errno: libc::EINVAL, message: "takes no attributes",
            attrs: attrs(|w| put(w, attr::ORIGIN, b"gw-b\0")) },
        Case { name: "gateway-del-unregistered", command: cmd::ENCLAVE_DEL, errno: libc::ENOENT, message: "not a registered enclave",
            attrs: attrs(|w| { put(w, attr::ORIGIN, b"gw-b\0"); w.put_enclave(&std::net::IpAddr::from(enc), None, None, &[]).unwrap(); }) },
    ]
}

/// `nlprobe old-client`: a dump and GETs without ORIGIN or ALL_ORIGINS see the local part only,
/// `local` being a local enclave and `remote` a gateway's. Returns the number of failures.
fn old_client(client: &mut Client, local: &str, remote: &str) -> usize {
    let (local, remote): (IpAddr, IpAddr) = (local.parse().expect("LOCAL must be an address"), remote.parse().expect("REMOTE must be an address"));
    let dumped = client.dump_scope(&ReadScope::default()).and_then(|dump| dump.iter().collect::<Result<Vec<_>, _>>());
    let get = |client: &mut Client, addr: &IpAddr| answer(client.request_raw(cmd::GET, &attrs(|w| w.put_addr(attr::ADDR, addr).unwrap())));
    let checks: Vec<(&str, Result<(), String>)> = vec![
        (
            "old-client-dump",
            match dumped {
                Err(e) => Err(e.to_string()),
                Ok(list) if list.iter().any(|r| !r.origin.is_local()) => Err(format!("the dump has a gateway's entry: {list:?}")),
                Ok(list) if !list.iter().any(|r| r.addr == local) => Err(format!("the dump lacks {local}")),
                Ok(_) => Ok(()),
            },
        ),
        ("old-client-get-local", get(client, &local).and_then(|(errno, m)| if errno == 0 { Ok(()) } else { Err(format!("errno {errno} ({m:?})")) })),
        ("old-client-get-remote", get(client, &remote).and_then(|(errno, m)| if errno == libc::ENOENT { Ok(()) } else { Err(format!("errno {errno} ({m:?}), expected ENOENT")) })),
        ("old-client-legacy-unregister-remote", {
            let IpAddr::V4(addr) = remote else { panic!("REMOTE must be an IPv4 address") };
            match client.legacy(&LegacyOp::Unregister { addr }).and_then(|()| client.get(remote)) {
                Ok(Some(r)) if !r.origin.is_local() => Ok(()),
                Ok(other) => Err(format!("the gateway's entry is now {other:?}")),
                Err(e) => Err(e.to_string()),
            }
        }),
    ];
    let mut failures = 0;
    for (name, verdict) in checks {
        match verdict {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                failures += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    failures
}

/// The errno and extended-ack message of a refusal (0 and "" for success).
fn answer(result: Result<(), Error>) -> Result<(i32, String), String> {
    match result {
        Ok(()) => Ok((0, String::new())),
        Err(Error::Kernel(k)) => Ok((k.errno, k.message.unwrap_or_default())),
        Err(Error::PermissionDenied) => Ok((libc::EPERM, String::new())),
        Err(other) => Err(other.to_string()),
    }
}

/// Bytes of the netlink and genl headers before the attributes: the extended ack's offsets
/// count from the start of the netlink header.
const HEADERS_LEN: u32 = 20;

/// One ENCLAVE nest, as the client library writes it.
fn nest(addr: &str, host: &str, categories: &[&str]) -> Vec<u8> {
    let addr: IpAddr = addr.parse().expect("ADDR must be an IP address");
    let host: IpAddr = host.parse().expect("a literal address");
    let categories: Vec<Category> = categories.iter().map(|c| Category::new(c.as_bytes()).expect("a literal category")).collect();
    attrs(|w| w.put_enclave(&addr, Some(&APP), Some(&host), &categories).unwrap())
}

/// ENCLAVE_SET requests for `nlprobe refused-set`: each is two valid nests (a new enclave that
/// gives [`APP`] its 31st category, and `registered` moved to another host), then a nest the
/// module must refuse, with the errno and message expected for it.
fn refused_set_cases(registered: &str) -> Vec<(&'static str, Vec<Vec<u8>>, i32, &'static str)> {
    let valid = || vec![nest("10.9.0.1", "10.0.0.1", &["c31"]), nest(registered, "10.0.0.2", &[])];
    let with_last = |last: Vec<u8>| {
        let mut nests = valid();
        nests.push(last);
        nests
    };
    let addr = raw_attr(attr::ADDR, &[10, 9, 0, 3]);
    let app = raw_attr(attr::APP, &APP.0);
    let host = raw_attr(attr::HOST_ADDR, &[10, 0, 0, 1]);
    let nested = |parts: &[Vec<u8>]| raw_attr(attr::ENCLAVE | NLA_F_NESTED, &parts.concat());
    vec![
        ("past-32-categories", with_last(nest("fd00:9::3", "2001:db8::1", &["c32", "c33"])), libc::ENOSPC, "too many categories"),
        ("five-byte-address", with_last(nested(&[raw_attr(attr::ADDR, &[10, 9, 0, 3, 0]), app.clone(), host.clone()])), libc::EINVAL, "4 (IPv4) or 16 (IPv6)"),
        ("category-without-nul", with_last(nested(&[addr.clone(), app.clone(), host.clone(), raw_attr(attr::CAT, b"Browser")])), libc::EINVAL, "NUL-terminated"),
        ("nest-without-host", with_last(nested(&[addr, app])), libc::EINVAL, "needs ADDR, APP and HOST_ADDR"),
    ]
}

/// Sends each request of [`refused_set_cases`]; it must be refused with its errno and message,
/// the extended ack pointing at the last nest. Returns the number of failures.
fn refused_set(client: &mut Client, registered: &str) -> usize {
    let mut failures = 0;
    for (name, nests, errno, message) in refused_set_cases(registered) {
        let starts: Vec<u32> = nests.iter().scan(HEADERS_LEN, |at, n| {
            let start = *at;
            *at += n.len() as u32;
            Some(start)
        }).collect();
        let verdict = match client.request_raw(cmd::ENCLAVE_SET, &nests.concat()) {
            Ok(()) => Err("accepted".to_string()),
            Err(Error::Kernel(k)) => {
                let got = k.message.clone().unwrap_or_default();
                let blamed = k.offset.and_then(|o| starts.iter().position(|&s| s == o)).map(|i| i + 1);
                if k.errno != errno {
                    Err(format!("errno {} ({got:?}), expected {errno}", k.errno))
                } else if !got.contains(message) {
                    Err(format!("message {got:?} lacks {message:?}"))
                } else if blamed != Some(nests.len()) {
                    Err(format!("the reply blames offset {:?} (nest {blamed:?}), not nest #{} at {:?}", k.offset, nests.len(), starts.last()))
                } else {
                    Ok(format!("nest #{} of {} refused: {got}", nests.len(), nests.len()))
                }
            }
            Err(other) => Err(other.to_string()),
        };
        match verdict {
            Ok(what) => println!("ok {name}: {what}"),
            Err(why) => {
                failures += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    failures
}

fn run(cases: &[Case], client: &mut Client) -> usize {
    let mut failures = 0;
    for case in cases {
        let verdict = match answer(client.request_raw(case.command, &case.attrs)) {
            Err(e) => Err(e),
            Ok((errno, message)) if errno != case.errno && !(case.errno == libc::EINVAL && errno == libc::ERANGE) => {
                Err(format!("errno {errno} ({message:?}), expected {}", case.errno))
            }
            Ok((_, message)) if !message.contains(case.message) => Err(format!("message {message:?} lacks {:?}", case.message)),
            Ok(_) => Ok(()),
        };
        match verdict {
            Ok(()) => println!("ok {}", case.name),
            Err(why) => {
                failures += 1;
                println!("FAIL {}: {why}", case.name);
            }
        }
    }
    failures
}

/// Whether this kernel's genetlink can restrict a multicast group to CAP_NET_ADMIN (6.1 and
/// later in Debian; 5.10 cannot).
fn group_permissions_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (6, 1)
}

/// Drops every privilege: supplementary groups, then gid and uid, for the rest of the process.
fn drop_to(uid: Option<&String>) {
    let Some(uid) = uid.and_then(|u| u.parse::<libc::uid_t>().ok()) else {
        eprintln!("nlprobe: expected a numeric UID");
        std::process::exit(2);
    };
    // SAFETY: plain syscalls.
    if unsafe { libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(uid, uid, uid) != 0 || libc::setresuid(uid, uid, uid) != 0 } {
        eprintln!("nlprobe: cannot drop to uid {uid}: {}", std::io::Error::last_os_error());
        std::process::exit(2);
    }
}

/// `nlprobe listen`: counts the events that reach this (unprivileged) process until its
/// standard input ends.
fn listen() -> ! {
    let mut events = match Subscription::new() {
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
            println!("refused");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("nlprobe: {e}");
            std::process::exit(101);
        }
        Ok(events) => events,
    };
    println!("listening");
    let mut count = 0usize;
    let mut buf = [0u8; 64];
    let mut input_open = true;
    // An event is queued on the socket when its change is made: once the caller has seen its
    // changes announced elsewhere and closes our input, a last look finds anything sent to us.
    loop {
        let mut fds = [
            libc::pollfd { fd: events.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 },
        ];
        let watched = if input_open { 2 } else { 1 };
        let timeout = if input_open { -1 } else { 0 };
        // SAFETY: `fds` holds `watched` initialised pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), watched, timeout) } < 0 {
            eprintln!("nlprobe: poll: {}", std::io::Error::last_os_error());
            std::process::exit(101);
        }
        if fds[0].revents != 0 {
            match events.next() {
                Some(Ok(_)) => count += 1,
                Some(Err(e)) => {
                    eprintln!("nlprobe: {e}");
                    std::process::exit(101);
                }
                None => std::process::exit(101),
            }
        } else if !input_open {
            break;
        }
        if input_open && fds[1].revents != 0 {
            // SAFETY: reading into a local buffer.
            input_open = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) } > 0;
        }
    }
    println!("events {count}");
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str);
    match mode {
        Some("unprivileged") => drop_to(args.get(2)),
        Some("listen") => {
            drop_to(args.get(2));
            listen();
        }
        Some("malformed") => {}
        Some("refused-set") if args.len() == 3 => {}
        Some("old-client") if args.len() == 4 => {}
        _ => {
            eprintln!("usage: nlprobe malformed | nlprobe unprivileged UID | nlprobe listen UID | nlprobe refused-set ADDR | nlprobe old-client LOCAL REMOTE");
            std::process::exit(2);
        }
    }
    let result = Client::connect().map(|mut client| {
        let mut failures = if mode == Some("malformed") {
            run(&malformed_cases(), &mut client)
        } else if mode == Some("refused-set") {
            refused_set(&mut client, &args[2])
        } else if mode == Some("old-client") {
            old_client(&mut client, &args[2], &args[3])
        } else {
            // Every command, even read-only ones, needs CAP_NET_ADMIN.
            let cases: Vec<Case> = (1..=cmd::MAX)
                .map(|command| Case { name: "unprivileged", command, attrs: Vec::new(), errno: libc::EPERM, message: "" })
                .collect();
            run(&cases, &mut client)
        };
        if mode == Some("unprivileged") && group_permissions_supported() {
            match client.subscribe() {
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => println!("ok unprivileged-subscribe"),
                Err(other) => {
                    failures += 1;
                    println!("FAIL unprivileged-subscribe: {other}");
                }
                Ok(_) => {
                    failures += 1;
                    println!("FAIL unprivileged-subscribe: joined the event group without CAP_NET_ADMIN");
                }
            }
        }
        failures
    });
    match result {
        Ok(failures) => std::process::exit(failures.min(100) as i32),
        Err(e) => {
            eprintln!("nlprobe: {e}");
            std::process::exit(101);
        }
    }
}
