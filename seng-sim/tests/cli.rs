// SPDX-License-Identifier: GPL-2.0-only
//! Runs the `seng-sim` binary: the example works, every capture format gives the same counts,
//! and bad input of every kind exits with status 2 and a message naming file and place.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use seng_sim::capture::linktype;
use seng_sim::gen::{link_frame, Builder, PcapWriter, PcapngWriter};
use seng_sim::packet::tcp_flag;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seng-sim")).args(args).current_dir(workspace()).output().expect("run seng-sim")
}

fn tmp(name: &str, bytes: &[u8]) -> String {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const EXAMPLE: [&str; 5] = ["replay", "examples/trace.pcap", "examples/rules.txt", "--enclaves", "examples/enclaves.txt"];

#[test]
fn shipped_example_is_reproducible_and_replays() {
    let shipped = std::fs::read(workspace().join("examples/trace.pcap")).expect("examples/trace.pcap");
    assert!(shipped == seng_sim::gen::example_capture(), "examples/trace.pcap differs from `seng-sim gen-example` output");
    let o = run(&EXAMPLE);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Chain INPUT (policy ACCEPT 9 packets, 402 bytes)"), "{out}");
    assert!(out.contains("       3      121 DROP       all  --  tunFA  *       192.168.28.0/24      0.0.0.0/0            seng ! src-host 10.0.0.0/26"), "{out}");
    assert!(stderr(&o).contains("M packets/s"));
}

#[test]
fn json_report_has_rule_counters_and_verdicts() {
    let mut args = EXAMPLE.to_vec();
    args.push("--json");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let input = &v["tables"][0]["chains"][0];
    assert_eq!(input["name"], "INPUT");
    assert_eq!(input["rules"][1]["index"], 2);
    assert_eq!(input["rules"][1]["packets"], 3);
    assert_eq!(input["rules"][1]["rule"], "-A INPUT -s 192.168.28.0/24 -i tunFA -m seng ! --src-host 10.0.0.0/26 -j DROP");
    assert_eq!(v["verdicts"]["drop"]["packets"], 3);
    assert_eq!(v["conntrack"]["deleted_by_events"], 7);
}

/// A small flow, in every capture format and link type: the counters must not depend on them.
#[test]
fn every_format_gives_the_same_counts() {
    let c = Builder::v4("192.168.28.10", "192.168.28.1");
    let ip = [
        c.tcp(1000, 443, tcp_flag::SYN, b""),
        c.reverse().tcp(443, 1000, tcp_flag::SYN | tcp_flag::ACK, b""),
        c.tcp(1000, 443, tcp_flag::ACK, b"hello"),
        Builder::v6("fd00:28::10", "fd00:28::1").udp(1, 53, b"q"),
    ];
    let rules = tmp("formats-rules.txt", b"iptables -A INPUT -p tcp --dport 443 -j ACCEPT\nip6tables -A INPUT -p udp -j DROP\n");
    let mut files = Vec::new();
    for link in [linktype::ETHERNET, linktype::RAW, linktype::LINUX_SLL, linktype::LINUX_SLL2, linktype::NULL, linktype::LOOP] {
        for (nanos, big) in [(false, false), (true, true)] {
            let mut w = PcapWriter::new(link, nanos, big);
            for (i, p) in ip.iter().enumerate() {
                w.packet(1_000_000_000 + i as u64 * 1000, &link_frame(link, p, usize::from(link == linktype::ETHERNET)));
            }
            files.push(tmp(&format!("fmt-{link}-{nanos}-{big}.pcap"), &w.finish()));
        }
        let mut w = PcapngWriter::new(link == linktype::NULL);
        w.interface(link, None);
        for (i, p) in ip.iter().enumerate() {
            w.packet(0, 1_000_000_000 + i as u64 * 1000, &link_frame(link, p, 0));
        }
        files.push(tmp(&format!("fmt-{link}.pcapng"), &w.finish()));
    }
    for file in files {
        let o = run(&["replay", &file, &rules]);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("       2       85 ACCEPT     tcp  --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:443"), "{file}:\n{out}");
        assert!(out.contains("       1       49 DROP       udp      *      *       ::/0                 ::/0"), "{file}:\n{out}");
    }
}

#[test]
fn non_ip_frames_are_counted_not_fatal() {
    let mut w = PcapWriter::new(linktype::ETHERNET, false, false);
    let mut arp = vec![0xffu8; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    w.packet(0, &arp);
    w.packet(1000, &link_frame(linktype::ETHERNET, &Builder::v4("192.168.28.10", "192.168.28.1").udp(1, 2, b""), 0));
    let file = tmp("arp.pcap", &w.finish());
    let o = run(&["replay", &file, "examples/rules.txt"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("not evaluated: 1 not IP (ethertype 0x0806)"), "{}", stdout(&o));
}

/// A gateway's whole `iptables-save` (nat, mangle and raw sections before filter) replays from
/// a pcap file: every table is listed with its counters, the JSON names each table.
#[test]
fn gateway_ruleset_with_every_table_replays() {
    let rules = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 123 -j CT --notrack\nCOMMIT\n\
                 *mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                 -A PREROUTING -i tunFA -j MARK --set-xmark 0x1/0xffffffff\nCOMMIT\n\
                 *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                 -A POSTROUTING -s 192.168.28.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -m mark --mark 0x1 -j ACCEPT\n-A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT\nCOMMIT\n";
    let rules_file = tmp("gateway-rules.txt", rules.as_bytes());
    let mut w = PcapWriter::new(linktype::RAW, false, false);
    let out = Builder::v4("192.168.28.10", "198.51.100.7");
    w.packet(0, &out.tcp(40000, 443, tcp_flag::SYN, b""));
    w.packet(1_000_000, &Builder::v4("198.51.100.7", "203.0.113.1").tcp(443, 40000, tcp_flag::SYN | tcp_flag::ACK, b""));
    w.packet(2_000_000, &out.tcp(40000, 443, tcp_flag::ACK, b""));
    w.packet(3_000_000, &out.udp(5000, 123, b"ntp"));
    let capture = tmp("gateway.pcap", &w.finish());
    let args = ["replay", &capture, &rules_file, "--iface", "tunFA=192.168.28.1/24", "--iface", "eth0=203.0.113.1/24"];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "# iptables -t raw -L -v -n -x\nChain PREROUTING (policy ACCEPT 4 packets, 151 bytes)",
        "# iptables -t nat -L -v -n -x\nChain PREROUTING (policy ACCEPT 1 packets, 40 bytes)",
        "       1       40 MASQUERADE  all  --  *      eth0    192.168.28.0/24      0.0.0.0/0           ",
        "       3      111 MARK       all  --  tunFA  *       0.0.0.0/0            0.0.0.0/0            MARK set 0x1",
        "# iptables -L -v -n -x\nChain INPUT",
        "       3      111 ACCEPT     all  --  *      *       0.0.0.0/0            0.0.0.0/0            mark match 0x1",
        "       1       40 ACCEPT     all  --  *      *       0.0.0.0/0            0.0.0.0/0            ctstate ESTABLISHED",
        "UNTRACKED 1",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let o = run(&json_args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let names: Vec<String> = v["tables"].as_array().expect("tables").iter().map(|t| format!("{} {}", t["family"], t["table"])).collect();
    assert_eq!(names, ["\"IPv4\" \"raw\"", "\"IPv4\" \"mangle\"", "\"IPv4\" \"nat\"", "\"IPv4\" \"filter\"", "\"IPv6\" \"filter\""]);
    assert_eq!(v["tables"][2]["chains"][3]["rules"][0]["packets"], 1);
}

#[test]
fn bad_input_exits_2_naming_file_and_place() {
    let garbage = tmp("garbage.pcap", b"this is not a capture at all");
    let example = std::fs::read(workspace().join("examples/trace.pcap")).expect("example");
    let truncated = tmp("truncated.pcap", &example[..example.len() - 10]);
    let mut bad_link = PcapWriter::new(147, false, false).finish();
    bad_link.truncate(24);
    let bad_link = tmp("badlink.pcap", &bad_link);
    let bad_rules = tmp("bad-rules.txt", b"# ok\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m limit --limit 3/s -j ACCEPT\nCOMMIT\n");
    let bad_script = tmp("bad-enclaves.txt", b"enclave add 192.168.28.10 --app 1234 --host 10.0.0.1\n");
    let bad_event = tmp("bad-event.txt", b"@0.5 enclave del 192.168.28.77\n");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["replay", &garbage, "examples/rules.txt"], format!("seng-sim: error: {garbage}: byte offset 0: not a pcap or pcapng file")),
        (vec!["replay", &truncated, "examples/rules.txt"], format!("seng-sim: error: {truncated}: packet 43 (byte offset 2537): record truncated: it says 40 bytes, the file has 30 left")),
        (vec!["replay", &bad_link, "examples/rules.txt"], format!("seng-sim: error: {bad_link}: byte offset 0: unsupported link type 147")),
        (vec!["replay", "examples/trace.pcap", &bad_rules], format!("seng-sim: error: {bad_rules}:4: match \"limit\" is not modelled")),
        (vec!["replay", "examples/trace.pcap", "examples/rules.txt", "--enclaves", &bad_script], format!("seng-sim: error: {bad_script}:1:33: bad application measurement \"1234\"")),
        (vec!["replay", "examples/trace.pcap", "examples/rules.txt", "--enclaves", &bad_event], format!("seng-sim: error: {bad_event}:1: enclave del 192.168.28.77: address is not a registered enclave")),
        (vec!["replay", "missing.pcap", "examples/rules.txt"], "seng-sim: error: missing.pcap: No such file".to_string()),
        (vec!["replay", "examples/trace.pcap", "examples/rules.txt", "--iface", "tun/0=1.2.3.4/8"], "seng-sim: error: --iface \"tun/0=1.2.3.4/8\"".to_string()),
        (vec!["replay", "examples/trace.pcap"], "error: the following required arguments were not provided".to_string()),
        (vec!["replay", "examples/trace.pcap", "examples/rules.txt", "--trace", "--json"], "error: the argument '--trace' cannot be used with '--json'".to_string()),
    ];
    for (args, want) in cases {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with(&want), "{args:?}:\n got {:?}\nwant {want:?}", stderr(&o));
    }
}

#[test]
fn a_closed_pipe_ends_quietly_and_a_failed_write_is_named() {
    let args = ["replay", "examples/trace.pcap", "examples/rules.txt", "--enclaves", "examples/enclaves.txt", "--trace"];
    // `| head`: the reader is gone before seng-sim writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_seng-sim"))
        .args(args)
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run seng-sim");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait for seng-sim");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("error"), "{}", stderr(&o));

    for (extra, want) in [(&[][..], "seng-sim: error: writing the report: No space left on device"), (&["--trace"][..], "seng-sim: error: writing the trace: No space left on device")] {
        let full = std::fs::File::create("/dev/full").expect("/dev/full");
        let o = Command::new(env!("CARGO_BIN_EXE_seng-sim"))
            .args(&args[..5])
            .args(extra)
            .current_dir(workspace())
            .stdout(full)
            .output()
            .expect("run seng-sim");
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with(want), "{extra:?}:\n got {:?}\nwant {want:?}", stderr(&o));
        assert_eq!(stderr(&o).matches("No space left").count(), 1, "{}", stderr(&o));
    }
}
