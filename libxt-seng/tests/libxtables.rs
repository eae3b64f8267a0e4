// SPDX-License-Identifier: GPL-2.0-only
//! The built `libxt_seng.so` loaded and driven by the host's real libxtables, without iptables
//! and without a kernel.
//!
//! Each case runs in a child process (this binary again, with `--child`): it initialises
//! libxtables for a family, lets `xtables_find_match` dlopen the plugin from `XTABLES_LIBDIR`
//! (so the constructor registers it), feeds options through `xtables_option_mpcall` and
//! `xtables_option_mfcall` exactly as iptables does, and calls `save`, `print` or `help`. The
//! parent compares the child's stdout, stderr and exit status, which also covers
//! `xtables_error` (libxtables' default `exit_err` prints and exits).

#[allow(dead_code)] // Only some of the mirror is needed here.
#[path = "../src/xtables.rs"]
mod xtables;

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::process::{Command, ExitCode};
use std::ptr::{addr_of_mut, null, null_mut};

use xtables::*;

mod common;
use common::plugin_dir;

#[link(name = "xtables")]
extern "C" {
    fn xtables_init_all(xtp: *mut XtablesGlobals, nfproto: u8) -> c_int;
    fn xtables_find_match(
        name: *const c_char,
        tryload: c_int,
        matches: *mut *mut c_void,
    ) -> *mut XtablesMatch;
    fn xtables_option_mpcall(
        c: c_uint,
        argv: *mut *mut c_char,
        invert: bool,
        m: *mut XtablesMatch,
        fw: *mut c_void,
    );
    fn xtables_option_mfcall(m: *mut XtablesMatch);
    static mut optarg: *mut c_char;
    fn printf(fmt: *const c_char, ...) -> c_int;
    fn fflush(stream: *mut c_void) -> c_int;
}

/// `XTF_LOAD_MUST_SUCCEED`.
const LOAD_MUST_SUCCEED: c_int = 3;
const APP: &str = "d9237809ab399aa541e42ad54146a2a1bde310dd7dc9fccc1e964dacf4c5c3b0";

/// Revision checks would ask the running kernel; this test is about user space only.
unsafe extern "C" fn every_revision_supported(_: *const c_char, _: u8, _: c_int) -> c_int {
    1
}

fn c_out(text: &str) {
    let text = CString::new(text).unwrap();
    // SAFETY: "%s" with one C string.
    unsafe { printf(c"%s".as_ptr(), text.as_ptr()) };
}

/// The child: `--child <nfproto> parse WORDS... | data <match_size> <hex> | help`.
fn child(args: &[String]) {
    let nfproto: u8 = args[0].parse().unwrap();
    let globals = Box::leak(Box::new(XtablesGlobals {
        option_offset: 0,
        program_name: c"xt-test".as_ptr(),
        program_version: c"0".as_ptr(),
        orig_opts: null_mut(),
        opts: null_mut(),
        exit_err: None,
        compat_rev: Some(every_revision_supported),
    }));
    // SAFETY: libxtables' documented start-up sequence; every pointer stays alive until exit.
    let m = unsafe {
        assert_eq!(xtables_init_all(globals, nfproto), 0);
        &mut *xtables_find_match(c"seng".as_ptr(), LOAD_MUST_SUCCEED, null_mut())
    };
    c_out(&format!(
        "registered rev {} family {} size {} userspacesize {}\n",
        m.revision, m.family, m.size, m.userspacesize
    ));
    let header = std::mem::size_of::<XtEntryMatch>();
    let mut storage = vec![0u64; (header + m.size).div_ceil(8)];
    let entry = storage.as_mut_ptr().cast::<XtEntryMatch>();
    // SAFETY: storage is zeroed, 8-aligned and large enough for the header and the data.
    unsafe {
        (*entry).match_size = (header + m.size) as u16;
        for (dst, src) in (*entry).name.iter_mut().zip(c"seng".to_bytes()) {
            *dst = *src as c_char;
        }
    }
    m.m = entry;
    match args[1].as_str() {
        "help" => unsafe { m.help.unwrap()() },
        "data" => {
            let size: u16 = args[2].parse().unwrap();
            let bytes: Vec<u8> = (0..args[3].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&args[3][i..i + 2], 16).unwrap())
                .collect();
            // SAFETY: the bytes fit the storage (the cases stay within the registered size).
            unsafe {
                (*entry).match_size = size;
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    entry.cast::<u8>().add(header),
                    bytes.len(),
                );
            }
            show(m);
        }
        "parse" => {
            let mut words = args[2..].iter();
            let mut argv = [null_mut::<c_char>(); 1];
            while let Some(word) = words.next() {
                let invert = word == "!";
                let flag = if invert { words.next().unwrap() } else { word };
                let id = option_id(m, flag.strip_prefix("--").unwrap());
                let value = CString::new(words.next().unwrap().as_str())
                    .unwrap()
                    .into_raw();
                // SAFETY: what getopt leaves for libxtables: optarg points at the argument.
                unsafe {
                    addr_of_mut!(optarg).write(value);
                    xtables_option_mpcall(
                        m.option_offset + id,
                        argv.as_mut_ptr(),
                        invert,
                        m,
                        null_mut(),
                    );
                }
            }
            // SAFETY: the match instance is complete.
            unsafe { xtables_option_mfcall(m) };
            show(m);
        }
        other => panic!("unknown child mode {other}"),
    }
    // SAFETY: flushes all C streams.
    unsafe { fflush(null_mut()) };
}

/// The id of `--name` in the registered option table.
fn option_id(m: &XtablesMatch, name: &str) -> c_uint {
    let mut row = m.x6_options;
    // SAFETY: the table ends with a NULL name.
    unsafe {
        while !(*row).name.is_null() {
            if CStr::from_ptr((*row).name).to_str() == Ok(name) {
                return (*row).id;
            }
            row = row.add(1);
        }
    }
    panic!("no option --{name}");
}

fn show(m: &XtablesMatch) {
    // SAFETY: the registered callbacks with the instance libxtables filled.
    unsafe {
        c_out("save:");
        m.save.unwrap()(null(), m.m);
        c_out("\nprint:");
        m.print.unwrap()(null(), m.m, 0);
        c_out("\n");
    }
}


struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_child(nfproto: u8, mode: &[&str]) -> Outcome {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("--child")
        .arg(nfproto.to_string())
        .args(mode)
        .env("XTABLES_LIBDIR", plugin_dir())
        .output()
        .unwrap();
    Outcome {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One check: a name and a failure description, if any.
type Check = (String, Option<String>);

fn parse_ok(nfproto: u8, words: &str, save: &str, print: &str) -> Check {
    let mut mode = vec!["parse"];
    mode.extend(words.split(' ').filter(|w| !w.is_empty()));
    let o = run_child(nfproto, &mode);
    let want = format!("registered rev 0 family {nfproto} size 184 userspacesize 184\nsave:{save}\nprint:{print}\n");
    let failure = (o.status != Some(0) || o.stdout != want).then(|| {
        format!(
            "status {:?}\nstdout {:?}\nwanted {want:?}\nstderr {:?}",
            o.status, o.stdout, o.stderr
        )
    });
    (format!("parse {nfproto} `{words}`"), failure)
}

fn parse_fails(nfproto: u8, words: &str, message: &str) -> Check {
    let mut mode = vec!["parse"];
    mode.extend(words.split(' ').filter(|w| !w.is_empty()));
    let o = run_child(nfproto, &mode);
    // libxtables' default exit_err: "<program> v<version>: <message>\n", exit status.
    let want = format!("xt-test v0: {message}");
    let failure = (o.status != Some(2)
        || !o.stderr.starts_with(&want)
        || o.stdout.contains("save:"))
    .then(|| {
        format!(
            "status {:?}\nstderr {:?}\nwanted prefix {want:?}",
            o.status, o.stderr
        )
    });
    (format!("reject {nfproto} `{words}`"), failure)
}

fn data_shown(size: u16, flags: u16, save: &str, print: &str) -> Check {
    let mut data = [0u8; 184];
    data[176..178].copy_from_slice(&flags.to_ne_bytes());
    let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let o = run_child(NFPROTO_IPV4, &["data", &size.to_string(), &hex]);
    let want = format!("save:{save}\nprint:{print}\n");
    let failure = (o.status != Some(0) || !o.stdout.ends_with(&want)).then(|| {
        format!(
            "status {:?}\nstdout {:?}\nwanted suffix {want:?}",
            o.status, o.stdout
        )
    });
    (format!("data size {size} flags {flags:#x}"), failure)
}

fn help(nfproto: u8) -> Check {
    let o = run_child(nfproto, &["help"]);
    let missing: Vec<&str> = [
        "seng match options:",
        "[!] --src-app HEX",
        "[!] --dst-host ADDR[/MASK]",
    ]
    .into_iter()
    .filter(|l| !o.stdout.contains(l))
    .collect();
    let failure = (o.status != Some(0) || !missing.is_empty()).then(|| {
        format!(
            "status {:?}, missing {missing:?} in {:?}",
            o.status, o.stdout
        )
    });
    (format!("help {nfproto}"), failure)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return ExitCode::SUCCESS;
    }
    let (v4, v6) = (NFPROTO_IPV4, NFPROTO_IPV6);
    let checks = [
        parse_ok(v4, &format!("--src-app {APP}"), &format!(" --src-app {APP}"), &format!(" seng src-app {APP}")),
        parse_ok(v4, "! --src-host 10.0.0.0/26", " ! --src-host 10.0.0.0/26", " seng ! src-host 10.0.0.0/26"),
        parse_ok(v4, "--src-cat Browser", " --src-cat Browser", " seng src-cat Browser"),
        parse_ok(
            v4,
            &format!("--dst-host 10.1.2.3/255.0.255.0 ! --dst-app {} --src-cat web-2_0", APP.to_uppercase()),
            &format!(" --src-cat web-2_0 ! --dst-app {APP} --dst-host 10.0.2.0/255.0.255.0"),
            &format!(" seng src-cat web-2_0 ! dst-app {APP} dst-host 10.0.2.0/255.0.255.0"),
        ),
        parse_ok(v4, "! --dst-cat Mail --dst-host 10.0.0.7", " ! --dst-cat Mail --dst-host 10.0.0.7/32", " seng ! dst-cat Mail dst-host 10.0.0.7"),
        parse_ok(v6, "--src-host 2001:db8::1/64 ! --dst-host ::ffff:10.0.0.0/122", " --src-host 2001:db8::/64 ! --dst-host ::ffff:10.0.0.0/122", " seng src-host 2001:db8::/64 ! dst-host ::ffff:10.0.0.0/122"),
        parse_ok(v6, &format!("--dst-app {APP}"), &format!(" --dst-app {APP}"), &format!(" seng dst-app {APP}")),
        parse_fails(v4, "--src-app abc", "seng: --src-app: bad application measurement \"abc\": must be exactly 64 hex digits, found 3 characters"),
        parse_fails(v4, &format!("--dst-app {}x", &APP[..63]), "seng: --dst-app: bad application measurement"),
        parse_fails(v4, "--src-cat 123456789012345678901", "seng: --src-cat: bad category \"123456789012345678901\": category name is 21 bytes"),
        parse_fails(v4, "--src-host 10.0.0.256", "seng: --src-host: bad host \"10.0.0.256\": not a numeric IPv4 address"),
        parse_fails(v4, "--dst-host 10.0.0.0/33", "seng: --dst-host: bad host \"10.0.0.0/33\": mask must be a prefix length 0-32"),
        parse_fails(v6, "--src-host 10.0.0.1", "seng: --src-host: bad host \"10.0.0.1\": not a numeric IPv6 address"),
        parse_fails(v4, "--src-cat a ! --src-cat b", "seng: --src-cat: may be given only once"),
        parse_fails(v4, "", "seng match needs at least one of --src-app, --src-cat, --src-host, --dst-app, --dst-cat, --dst-host"),
        parse_fails(v6, "", "seng match needs at least one of"),
        data_shown(32 + 184, 1 << 12 | 1, " [invalid seng match data: unknown flag bits 0x1000]", " seng [invalid match data: unknown flag bits 0x1000]"),
        data_shown(32 + 184, 0, " [invalid seng match data: no seng option set]", " seng [invalid match data: no seng option set]"),
        data_shown(32 + 100, 1, " [invalid seng match data: match data is 100 bytes, expected 180 or 184]", " seng [invalid match data: match data is 100 bytes, expected 180 or 184]"),
        data_shown(32 + 180, 1 << 4 | 1 << 5, " ! --src-host 0.0.0.0/0", " seng ! src-host 0.0.0.0/0"),
        help(v4),
        help(v6),
    ];
    let mut failed = 0;
    for (name, failure) in &checks {
        match failure {
            None => println!("ok   {name}"),
            Some(why) => {
                failed += 1;
                println!("FAIL {name}\n{why}");
            }
        }
    }
    println!("libxtables: {} checks, {failed} failed", checks.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
