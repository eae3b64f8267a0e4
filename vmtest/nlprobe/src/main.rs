// SPDX-License-Identifier: GPL-2.0-only
//! nlprobe: talks raw generic netlink to seng.ko to check what a well-behaved client library
//! never sends: malformed attributes, wrong lengths, missing NULs, unknown commands, and requests
//! from an unprivileged process. Each case prints `ok NAME` or `FAIL NAME: why`; the exit code is
//! the number of failures.
//!
//! Usage: `nlprobe malformed` (as root) and `nlprobe unprivileged UID` (drops to UID first).

use std::io;
use std::mem::size_of;

use seng_core::genl::{attr, cmd, AttrWriter, FAMILY_NAME};
use seng_core::Measurement;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLM_F_CAPPED: u16 = 0x100;

struct Socket {
    fd: libc::c_int,
    seq: u32,
}

/// The kernel's answer to a request: errno (0 = success), the extended-ack message, and the
/// payload of the first non-error reply.
struct Answer {
    errno: i32,
    message: String,
    reply: Vec<u8>,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket calls with valid arguments.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let one: libc::c_int = 1;
            libc::setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one as *const _ as *const libc::c_void, size_of::<libc::c_int>() as u32);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_nl>() as u32) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Socket { fd, seq: 1 })
        }
    }

    /// Sends one genl message (family `family`, command `command`, raw attribute bytes) and
    /// reads until its ack.
    fn request(&mut self, family: u16, command: u8, attrs: &[u8]) -> io::Result<Answer> {
        self.seq += 1;
        let len = 16 + 4 + attrs.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[command, 1, 0, 0]);
        msg.extend_from_slice(attrs);
        // SAFETY: msg is a valid buffer of msg.len() bytes.
        if unsafe { libc::send(self.fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let mlen = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let mtype = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let flags = u16::from_ne_bytes(rest[6..8].try_into().unwrap());
                if mlen < 16 || mlen > rest.len() {
                    return Err(io::Error::other("truncated netlink reply"));
                }
                let body = &rest[16..mlen];
                if mtype == NLMSG_ERROR {
                    let errno = -i32::from_ne_bytes(body[0..4].try_into().unwrap());
                    let message = if flags & NLM_F_ACK_TLVS != 0 { ack_message(body, flags & NLM_F_CAPPED != 0) } else { String::new() };
                    return Ok(Answer { errno, message, reply });
                }
                if reply.is_empty() && body.len() >= 4 {
                    reply = body[4..].to_vec();
                }
                rest = &rest[(mlen + 3) & !3..];
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: fd is ours.
        unsafe { libc::close(self.fd) };
    }
}

/// The NLMSGERR_ATTR_MSG of an error ack carrying TLVs.
fn ack_message(body: &[u8], capped: bool) -> String {
    // errno (4), then the echoed request: its header only if capped, else all of it.
    let echoed = if capped { 16 } else { body.get(4..8).map_or(16, |l| u32::from_ne_bytes(l.try_into().unwrap()) as usize) };
    let tlvs = body.get(4 + ((echoed + 3) & !3)..).unwrap_or_default();
    seng_core::genl::Attrs::new(tlvs)
        .filter_map(Result::ok)
        .find(|a| a.kind == NLMSGERR_ATTR_MSG)
        .map(|a| String::from_utf8_lossy(a.payload.split(|&b| b == 0).next().unwrap_or_default()).into_owned())
        .unwrap_or_default()
}

fn family_id(sock: &mut Socket) -> io::Result<u16> {
    let mut buf = [0u8; 64];
    let mut w = AttrWriter::new(&mut buf);
    w.put(CTRL_ATTR_FAMILY_NAME, format!("{FAMILY_NAME}\0").as_bytes()).map_err(|_| io::Error::other("no room"))?;
    let len = w.len();
    let answer = sock.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, &buf[..len])?;
    if answer.errno != 0 {
        return Err(io::Error::other(format!("family {FAMILY_NAME} not found (errno {}): is seng.ko loaded?", answer.errno)));
    }
    seng_core::genl::Attrs::new(&answer.reply)
        .filter_map(Result::ok)
        .find(|a| a.kind == CTRL_ATTR_FAMILY_ID)
        .and_then(|a| a.payload.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])))
        .ok_or_else(|| io::Error::other("no family id in reply"))
}

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
        Case { name: "get-without-address", command: cmd::GET, errno: libc::EINVAL, message: "GET needs ADDR", attrs: Vec::new() },
    ]
}

fn run(cases: &[Case], sock: &mut Socket, family: u16) -> usize {
    let mut failures = 0;
    for case in cases {
        let verdict = match sock.request(family, case.command, &case.attrs) {
            Err(e) => Err(format!("I/O error: {e}")),
            Ok(a) if a.errno != case.errno && !(case.errno == libc::EINVAL && a.errno == libc::ERANGE) => {
                Err(format!("errno {} ({:?}), expected {}", a.errno, a.message, case.errno))
            }
            Ok(a) if !a.message.contains(case.message) => Err(format!("message {:?} lacks {:?}", a.message, case.message)),
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str);
    if let Some("unprivileged") = mode {
        let Some(uid) = args.get(2).and_then(|u| u.parse::<libc::uid_t>().ok()) else {
            eprintln!("usage: nlprobe unprivileged UID");
            std::process::exit(2);
        };
        // SAFETY: plain syscalls; dropping privileges for the rest of the process.
        if unsafe { libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(uid, uid, uid) != 0 || libc::setresuid(uid, uid, uid) != 0 } {
            eprintln!("nlprobe: cannot drop to uid {uid}: {}", io::Error::last_os_error());
            std::process::exit(2);
        }
    } else if mode != Some("malformed") {
        eprintln!("usage: nlprobe malformed | nlprobe unprivileged UID");
        std::process::exit(2);
    }
    let result = Socket::open().and_then(|mut sock| {
        let family = family_id(&mut sock)?;
        let cases = if mode == Some("malformed") {
            malformed_cases()
        } else {
            // Every command, even read-only ones, needs CAP_NET_ADMIN.
            (1..=cmd::MAX)
                .map(|command| Case { name: "unprivileged", command, attrs: Vec::new(), errno: libc::EPERM, message: "" })
                .collect()
        };
        Ok(run(&cases, &mut sock, family))
    });
    match result {
        Ok(failures) => std::process::exit(failures.min(100) as i32),
        Err(e) => {
            eprintln!("nlprobe: {e}");
            std::process::exit(101);
        }
    }
}
