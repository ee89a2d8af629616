//! End-to-end: a real `ser` process on loopback, driven with raw UDP, sipsak and sipp.
//! Each behaviour is checked on both I/O backends (io_uring and the portable one).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const BACKENDS: [&str; 2] = ["io_uring", "portable"];

const STATELESS: &str = r#"
debug=3
sip_warning=yes
loadmodule "modules/sl/sl.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/textops/textops.so"
route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        break;
    };
    if (len_gt(max_len)) {
        sl_send_reply("513", "Message too big");
        break;
    };
    if (uri==myself) {
        if (method=="OPTIONS") {
            sl_send_reply("200", "OK");
            break;
        };
    };
    forward(uri:host, uri:port);
}
"#;

#[test]
fn options_answered_with_warning_and_server() {
    for backend in BACKENDS {
        let ser = Ser::start(&format!("opt-{backend}"), STATELESS, 0, 2, backend);
        let port = ser.port;
        let peer = Peer::new();
        for i in 0..20 {
            let ruri = format!("sip:ser@127.0.0.1:{port}");
            let call_id = format!("opt-{backend}-{i}");
            peer.send(
                ser.addr(),
                request("OPTIONS", &ruri, peer.port(), &call_id, "").as_bytes(),
            );
            let reply = peer
                .recv()
                .unwrap_or_else(|| panic!("no reply ({backend})\n{}", ser.log_text()));
            assert_eq!(status(&reply), Some(200), "{reply}");
            assert!(reply.contains(&format!("Call-ID: {call_id}")), "{reply}");
            assert!(reply.contains("To: <sip:ser@127.0.0.1"), "{reply}");
            assert!(reply.contains(";tag="), "a To-tag: {reply}");
            assert!(reply.contains("Server: ser ("), "{reply}");
            assert!(
                reply.contains(&format!(
                    "Warning: 392 127.0.0.1:{port} \"Noisy feedback tells: pid="
                )),
                "{reply}"
            );
            assert!(reply.contains("via_cnt==1"), "{reply}");
        }
        assert!(
            ser.log_text().contains(if backend == "portable" {
                "Portable"
            } else {
                "IoUring"
            }),
            "the log names the backend: {}",
            ser.log_text()
        );
    }
}

#[test]
fn max_forwards_zero_gets_483_and_too_big_gets_513() {
    for backend in BACKENDS {
        let ser = Ser::start(&format!("mf-{backend}"), STATELESS, 0, 2, backend);
        let port = ser.port;
        let peer = Peer::new();
        let ruri = format!("sip:ser@127.0.0.1:{port}");
        let r = request("OPTIONS", &ruri, peer.port(), "mf0", "")
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        peer.send(ser.addr(), r.as_bytes());
        let reply = peer.recv().expect("reply to MF 0");
        assert_eq!(status(&reply), Some(483), "{reply}");
        assert!(
            reply.starts_with("SIP/2.0 483 Too Many Hops\r\n"),
            "{reply}"
        );

        let pad = format!("X-Pad: {}\r\n", "a".repeat(4000));
        let r = request("OPTIONS", &ruri, peer.port(), "big", &pad);
        peer.send(ser.addr(), r.as_bytes());
        let reply = peer.recv().expect("reply to big request");
        assert_eq!(status(&reply), Some(513), "{reply}");
    }
}

#[test]
fn sipsak_traceroute_shows_our_address() {
    if !have("sipsak") {
        panic!("sipsak is not installed (scripts/test.sh installs it)");
    }
    let ser = Ser::start_4digit("sipsak-t", STATELESS, 2, "auto");
    let port = ser.port;
    let lport = free_port();
    let (_ok, out) = run_bounded(
        Command::new("sipsak")
            .args(["-T", "-s", &format!("sip:ser@127.0.0.1:{port}")])
            .args(["-H", "127.0.0.1", "-l", &lport.to_string()]),
        Duration::from_secs(20),
    );
    // Hop 0 is us, answering 483 to Max-Forwards 0, and sipsak took our address from Warning.
    assert!(
        out.contains("0: 127.0.0.1"),
        "sipsak -T output:\n{out}\nser:\n{}",
        ser.log_text()
    );
    assert!(out.contains("483"), "{out}");
    assert!(out.contains("200 OK"), "the last hop answers 200:\n{out}");
}

#[test]
fn sipsak_options_ping() {
    let ser = Ser::start_4digit("sipsak-o", STATELESS, 1, "auto");
    let port = ser.port;
    let lport = free_port();
    let (ok, out) = run_bounded(
        Command::new("sipsak")
            .args(["-v", "-s", &format!("sip:ser@127.0.0.1:{port}")])
            .args(["-H", "127.0.0.1", "-l", &lport.to_string()]),
        Duration::from_secs(20),
    );
    assert!(ok, "sipsak OPTIONS failed:\n{out}\n{}", ser.log_text());
    assert!(out.contains("200 OK"), "{out}");
}

#[test]
fn sipp_call_through_stateless_forward() {
    for backend in BACKENDS {
        let uas_port = free_port();
        let script = format!(
            "loadmodule \"modules/sl/sl.so\"\nroute {{\n    forward(\"127.0.0.1\", {uas_port});\n    break;\n}}\n"
        );
        let ser = Ser::start(&format!("sipp-{backend}"), &script, 0, 2, backend);
        let port = ser.port;
        let mut uas = Command::new("sipp")
            .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &uas_port.to_string()])
            .args(["-nostdin", "-timeout", "60", "-timeout_error"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sipp uas");
        std::thread::sleep(Duration::from_millis(300));
        // No -p: sipp binds a free port of its own.
        let (ok, out) = run_bounded(
            Command::new("sipp")
                .args(["-sn", "uac", &format!("127.0.0.1:{port}")])
                .args(["-i", "127.0.0.1"])
                .args([
                    "-m",
                    "50",
                    "-r",
                    "50",
                    "-timeout",
                    "20",
                    "-timeout_error",
                    "-nostdin",
                ])
                .args(["-trace_err", "-error_file", "/dev/null"]),
            Duration::from_secs(30),
        );
        stop_child(&mut uas, Duration::ZERO);
        assert!(
            ok,
            "sipp call through ser ({backend}) failed:\n{out}\n{}",
            ser.log_text()
        );
    }
}

#[test]
fn garbage_between_valid_requests_never_stops_a_shard() {
    for backend in BACKENDS {
        let ser = Ser::start(&format!("garbage-{backend}"), STATELESS, 0, 2, backend);
        let port = ser.port;
        let peer = Peer::new();
        let ruri = format!("sip:ser@127.0.0.1:{port}");
        let valid = request("OPTIONS", &ruri, peer.port(), "g-0", "");
        let mut junk: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"\x00\xff\xfe garbage".to_vec(),
            b"INVITE".to_vec(),
            b"SIP/2.0 200".to_vec(),
            vec![b'A'; 65_000],
        ];
        for cut in [10, 40, 80, valid.len() - 10] {
            junk.push(valid.as_bytes()[..cut].to_vec());
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..50 {
            let mut m = valid.clone().into_bytes();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = (x as usize) % m.len();
                m[i] = (x >> 8) as u8;
            }
            junk.push(m);
        }
        let mut answered = 0;
        for (i, j) in junk.iter().enumerate() {
            let _ = peer.sock.send_to(j, ser.addr());
            // Drain whatever the junk provoked (a 400, or nothing).
            while peer.recv_timeout(30).is_some() {}
            let call_id = format!("g-{backend}-{i}");
            peer.send(
                ser.addr(),
                request("OPTIONS", &ruri, peer.port(), &call_id, "").as_bytes(),
            );
            let mut got = false;
            while let Some(r) = peer.recv_timeout(2000) {
                if r.contains(&call_id) {
                    assert_eq!(status(&r), Some(200), "{r}");
                    got = true;
                    break;
                }
            }
            assert!(
                got,
                "valid OPTIONS after junk #{i} unanswered ({backend})\n{}",
                ser.log_text()
            );
            answered += 1;
        }
        assert_eq!(answered, junk.len());
    }
}

#[test]
fn bad_request_gets_400() {
    let ser = Ser::start("bad400", STATELESS, 0, 1, "auto");
    let port = ser.port;
    let peer = Peer::new();
    let ruri = format!("sip:ser@127.0.0.1:{port}");
    let r = request("OPTIONS", &ruri, peer.port(), "cl", "")
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")
        .replace("branch=z9hG4bK-cl", "branch=z9hG4bK-cl;rport");
    peer.send(ser.addr(), r.as_bytes());
    let reply = peer
        .recv()
        .unwrap_or_else(|| panic!("no 400\n{}", ser.log_text()));
    assert_eq!(status(&reply), Some(400), "{reply}");
    assert!(
        reply.contains(&format!(";rport={}", peer.port())),
        "rport filled in: {reply}"
    );
}

#[test]
fn broken_script_refused_with_line_and_column() {
    let dir = temp_dir("broken");
    let cases = [
        (
            "syntax.cfg",
            "route {\n    forward(\"127.0.0.1\", 5070)\n    if (\n}\n",
            "syntax.cfg:3:",
        ),
        (
            "unknown.cfg",
            "route {\n    frobnicate(\"x\");\n}\n",
            "unknown.cfg:2:5:",
        ),
        (
            "option.cfg",
            "debug=3\nno_such_option=1\nroute { break; }\n",
            "option.cfg:2:1:",
        ),
        (
            "module.cfg",
            "loadmodule \"modules/nope/nope.so\"\nroute { break; }\n",
            "module.cfg:1:1:",
        ),
        (
            "noroute.cfg",
            "loadmodule \"tm\"\nroute {\n  t_on_failure(\"3\");\n  t_relay();\n}\n",
            "noroute.cfg:3:",
        ),
        (
            "failonly.cfg",
            "loadmodule \"tm\"\nroute {\n  t_relay();\n}\nfailure_route[1] {\n  forward(\"127.0.0.1\", 5070);\n}\n",
            "failonly.cfg:6:",
        ),
        ("flag.cfg", "route {\n  setflag(99);\n}\n", "flag.cfg:2:"),
        (
            "regex.cfg",
            "route {\n  if (uri=~\"(unclosed\") { break; };\n}\n",
            "regex.cfg:2:",
        ),
    ];
    for (name, text, expect) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = Command::new(SER)
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .expect("run ser -c");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} accepted");
        assert!(
            err.contains(expect),
            "{name}: expected '{expect}' in:\n{err}"
        );
    }
}

#[test]
fn module_function_without_loadmodule_loads_the_module_with_a_warning() {
    let dir = temp_dir("notloaded");
    let path = dir.join("notloaded.cfg");
    std::fs::write(&path, "route {\n  sl_send_reply(\"404\", \"x\");\n}\n").expect("write");
    let out = Command::new(SER)
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("run ser -c");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("notloaded.cfg:2:3:") && err.contains("loading module 'sl' implicitly"),
        "{err}"
    );
}

#[test]
fn embedded_default_script_checks() {
    let dir = temp_dir("default");
    let out = Command::new(SER)
        .current_dir(&dir)
        .args(["-c"])
        .output()
        .expect("ser -c");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>"));
}

#[test]
fn loadgen_options_against_ser() {
    // scripts/test.sh builds every binary first; loadgen sits next to ser.
    let loadgen = std::path::Path::new(SER).with_file_name("loadgen");
    assert!(loadgen.exists(), "build loadgen first (cargo build --bins)");
    let ser = Ser::start("loadgen", STATELESS, 0, 2, "auto");
    let port = ser.port;
    let (ok, out) = run_bounded(
        Command::new(&loadgen)
            .args(["options", &format!("127.0.0.1:{port}")])
            .args(["--rate", "400", "--count", "400", "--timeout", "3000"]),
        Duration::from_secs(30),
    );
    assert!(ok, "loadgen failed:\n{out}\n{}", ser.log_text());
    assert!(out.contains("attempted 400 ok 400 failed 0"), "{out}");
}

#[test]
fn stateless_forwarding_details_and_reply_routing() {
    let peer = Peer::new();
    let script = |port: u16| {
        format!(
            r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/textops/textops.so"
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    # a second check (as a route(n) block would do) must not decrement again
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (search("^X-Loop-Test: yes")) {{ forward(127.0.0.1, {port}); break; }};
    if (is_present_hf("Subject")) {{ append_hf("X-Had-Subject: yes\r\n"); }};
    append_urihf("X-Orig-Uri: ", "\r\n");
    rewritehostport("127.0.0.1:{peer}");
    forward(uri:host, uri:port);
}}
"#,
            peer = peer.port()
        )
    };
    for backend in BACKENDS {
        // The loop test forwards to ser's own port: the script names it.
        let ser = Ser::start_picking(&format!("fwd-{backend}"), free_port, script, 2, backend);
        let port = ser.port;
        let call_id = format!("fwd-{backend}");
        let inv = request(
            "INVITE",
            "sip:bob@example.com",
            peer.port(),
            &call_id,
            "Subject: hi\r\n",
        )
        .replace(
            &format!("branch=z9hG4bK-{call_id}"),
            &format!("branch=z9hG4bK-{call_id};rport"),
        );
        peer.send(ser.addr(), inv.as_bytes());
        let fwd = peer
            .recv()
            .unwrap_or_else(|| panic!("nothing forwarded\n{}", ser.log_text()));
        assert!(
            fwd.starts_with(&format!(
                "INVITE sip:bob@127.0.0.1:{} SIP/2.0\r\n",
                peer.port()
            )),
            "{fwd}"
        );
        let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
        assert_eq!(vias.len(), 2, "{fwd}");
        assert!(
            vias[0].starts_with(&format!("Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK")),
            "{fwd}"
        );
        assert!(
            vias[1].contains(&format!(";rport={}", peer.port()))
                && vias[1].contains("received=127.0.0.1"),
            "{fwd}"
        );
        assert!(fwd.contains("Max-Forwards: 69\r\n"), "{fwd}");
        assert!(fwd.contains("X-Had-Subject: yes\r\n"), "{fwd}");
        assert!(fwd.contains("X-Orig-Uri: sip:bob@example.com\r\n"), "{fwd}");
        assert!(
            fwd.ends_with("Content-Length: 0\r\n\r\n") || fwd.contains("\r\n\r\n"),
            "{fwd}"
        );

        // The UAS answers along the Vias: ser takes its own off and sends the rest back.
        let mut lines: Vec<String> = Vec::new();
        lines.push("SIP/2.0 200 OK".to_string());
        for l in fwd.lines().skip(1) {
            if l.starts_with("Via:")
                || l.starts_with("From:")
                || l.starts_with("To:")
                || l.starts_with("Call-ID:")
                || l.starts_with("CSeq:")
            {
                lines.push(l.to_string());
            }
        }
        let ok = format!("{}\r\nContent-Length: 0\r\n\r\n", lines.join("\r\n"));
        peer.send(ser.addr(), ok.as_bytes());
        let back = peer
            .recv()
            .unwrap_or_else(|| panic!("reply not routed back\n{}", ser.log_text()));
        assert!(back.starts_with("SIP/2.0 200 OK\r\n"), "{back}");
        assert_eq!(
            back.lines().filter(|l| l.starts_with("Via:")).count(),
            1,
            "{back}"
        );

        // A request sent back to ourselves unchanged is a loop: 482.
        let lp = request(
            "OPTIONS",
            "sip:loop@example.com",
            peer.port(),
            &format!("loop-{backend}"),
            "X-Loop-Test: yes\r\n",
        );
        peer.send(ser.addr(), lp.as_bytes());
        let r = peer
            .recv()
            .unwrap_or_else(|| panic!("no 482\n{}", ser.log_text()));
        assert_eq!(status(&r), Some(482), "{r}");
        drop(ser);
    }
}

#[test]
fn ipv6_listen_answers_and_names_itself_in_brackets() {
    let Ok(probe) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    };
    drop(probe);
    let dir = temp_dir("v6");
    let cfg = dir.join("v6.cfg");
    std::fs::write(&cfg, STATELESS).expect("cfg");
    let mut cmd = Command::new(SER);
    cmd.arg("-f")
        .arg(&cfg)
        .args(["-l", "::1", "-p", "0", "-n", "2", "-E", "-D"]);
    let ser = Ser::spawn(dir, "v6", cfg, &mut cmd, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = ser.listen("udp").port();
    assert_eq!(ser.addr(), ([0, 0, 0, 0, 0, 0, 0, 1], port).into());
    let sock = std::net::UdpSocket::bind("[::1]:0").expect("bind v6 peer");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let me = sock.local_addr().expect("addr").port();
    let req = format!(
        "OPTIONS sip:ser@[::1]:{port} SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:{me};branch=z9hG4bK-v6\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@[::1]>;tag=1\r\nTo: <sip:ser@[::1]:{port}>\r\n\
         Call-ID: v6-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let mut reply = None;
    for _ in 0..20 {
        let _ = sock.send_to(req.as_bytes(), ("::1", port));
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            reply = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            break;
        }
    }
    let reply = reply.unwrap_or_else(|| panic!("no reply over IPv6\n{}", ser.log_text()));
    assert_eq!(status(&reply), Some(200), "{reply}");
    assert!(
        reply.contains(&format!("Warning: 392 [::1]:{port} ")),
        "{reply}"
    );
}

/// RFC 3261 16.11: the branch we add follows the upstream transaction (the received top Via),
/// so a stateful upstream proxy's CANCEL and ACK (which carry only its own Via) match the
/// INVITE downstream, and its retry (a new branch) is a new transaction.
#[test]
fn stateless_branch_follows_the_upstream_transaction() {
    let peer = Peer::new();
    let script = format!(
        "route {{\n    rewritehostport(\"127.0.0.1:{}\");\n    forward(uri:host, uri:port);\n}}\n",
        peer.port()
    );
    let ser = Ser::start("branch", &script, 0, 2, "auto");
    let p = peer.port();
    let msg = |method: &str, branch: &str, with_uac: bool, to_tag: &str| {
        let uac = if with_uac {
            "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKuac1\r\n"
        } else {
            ""
        };
        format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{p};branch={branch}\r\n{uac}\
             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=f1\r\nTo: <sip:bob@example.com>{to_tag}\r\n\
             Call-ID: br-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let ours = |m: &str| -> String {
        peer.send(ser.addr(), m.as_bytes());
        let f = peer
            .recv()
            .unwrap_or_else(|| panic!("not forwarded\n{}", ser.log_text()));
        let via = f
            .lines()
            .find(|l| l.starts_with("Via:"))
            .expect("Via")
            .to_string();
        via.split("branch=").nth(1).expect("branch").to_string()
    };
    let invite = ours(&msg("INVITE", "z9hG4bKproxyA", true, ""));
    let cancel = ours(&msg("CANCEL", "z9hG4bKproxyA", false, ""));
    let ack = ours(&msg("ACK", "z9hG4bKproxyA", false, ";tag=t9"));
    let again = ours(&msg("INVITE", "z9hG4bKproxyA", true, ""));
    let retry = ours(&msg("INVITE", "z9hG4bKproxyA2", true, ""));
    assert_eq!(invite, cancel, "CANCEL must match its INVITE");
    assert_eq!(
        invite, ack,
        "the ACK of a negative reply must match its INVITE"
    );
    assert_eq!(invite, again, "a retransmission gets the same branch");
    assert_ne!(
        invite, retry,
        "a new upstream transaction gets a new branch"
    );
}

/// The embedded default running (no -f) in `dir` (its `./ser-data`) on a port it picks.
fn default_ser(dir: &std::path::Path, n: u32) -> Ser {
    let log_dir = temp_dir("default-log");
    let mut cmd = Command::new(SER);
    cmd.current_dir(dir)
        .args(["-l", "127.0.0.1", "-p", "0", "-n", "2", "-E", "-D"]);
    Ser::spawn(
        log_dir,
        &format!("default-{n}"),
        std::path::PathBuf::from("<embedded default>"),
        &mut cmd,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn embedded_default_registers_finds_and_persists_users() {
    let dir = temp_dir("default-run");
    let mut ser = default_ser(&dir, 1);
    let (port, ser_addr) = (ser.port, ser.addr());
    let phone = Peer::new();
    let register = request(
        "REGISTER",
        &format!("sip:127.0.0.1:{port}"),
        phone.port(),
        "default-reg-1",
        &format!(
            "Contact: <sip:alice@127.0.0.1:{}>\r\nExpires: 600\r\n",
            phone.port()
        ),
    )
    .replace(
        &format!("To: <sip:127.0.0.1:{port}>"),
        "To: <sip:alice@127.0.0.1>",
    );
    phone.send(ser_addr, register.as_bytes());
    let ok = phone.recv_timeout(3000).expect("200 to REGISTER");
    assert_eq!(status(&ok), Some(200), "{ok}\n{}", ser.log_text());
    assert!(
        ok.contains(&format!("<sip:alice@127.0.0.1:{}>;q=", phone.port())),
        "{ok}"
    );

    let caller = Peer::new();
    let invite = |n: u32, port: u16| {
        request(
            "INVITE",
            &format!("sip:alice@127.0.0.1:{port}"),
            caller.port(),
            &format!("default-call-{n}"),
            "",
        )
    };
    caller.send(ser_addr, invite(1, port).as_bytes());
    let got = phone
        .recv_timeout(3000)
        .expect("the INVITE reaches alice's contact");
    assert!(
        got.starts_with(&format!(
            "INVITE sip:alice@127.0.0.1:{} SIP/2.0",
            phone.port()
        )),
        "{got}"
    );
    assert!(got.contains("Record-Route: <sip:127.0.0.1:"), "{got}");
    assert!(got.contains("P-hint: usrloc applied"), "{got}");
    // Nobody else is registered here.
    caller.send(
        ser_addr,
        request(
            "MESSAGE",
            &format!("sip:bob@127.0.0.1:{port}"),
            caller.port(),
            "default-404",
            "",
        )
        .as_bytes(),
    );
    let mut saw_404 = false;
    for _ in 0..4 {
        match caller.recv_timeout(2000) {
            Some(r) if status(&r) == Some(404) => {
                saw_404 = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(saw_404, "{}", ser.log_text());

    // The binding was in SQLite before its 200 went out: it survives kill -9. The new server
    // gets a port of its own.
    let _ = ser.child.kill();
    let _ = ser.child.wait();
    assert!(dir.join("ser-data/ser.db").exists());
    let ser = default_ser(&dir, 2);
    caller.send(ser.addr(), invite(2, ser.port).as_bytes());
    let got = phone
        .recv_timeout(3000)
        .unwrap_or_else(|| panic!("alice found after the restart:\n{}", ser.log_text()));
    assert!(got.starts_with("INVITE sip:alice@"), "{got}");
}

/// Without tm there is no transaction to find: a request stays on the shard it arrived on
/// (whatever its Call-ID), and a reply to a stateless forward is forwarded by the shard it
/// reaches. Calls from several callers through a 4-shard stateless proxy: no hand-off.
#[test]
fn stateless_traffic_never_changes_shard() {
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let callee = Peer::new();
    let script = format!(
        "metrics_listen = \"{metrics}\"\nloadmodule \"sl.so\"\nroute {{ forward(127.0.0.1, {}); }}\n",
        callee.port()
    );
    let ser = Ser::start("e2e-nohop", &script, 0, 4, "auto");
    let callers: Vec<Peer> = (0..6).map(|_| Peer::new()).collect();
    for i in 0..24 {
        let caller = &callers[i % callers.len()];
        let cid = format!("nohop-{i}");
        let ruri = format!("sip:callee@{}", ser.addr());
        caller.send(
            ser.addr(),
            request("OPTIONS", &ruri, caller.port(), &cid, "").as_bytes(),
        );
        let req = callee
            .recv_timeout(2000)
            .unwrap_or_else(|| panic!("{}", ser.log_text()));
        assert!(req.contains(&cid), "{req}");
        callee.send(
            ser.addr(),
            response_to(&req, 200, "OK", "callee").as_bytes(),
        );
        let r = final_reply(caller, Duration::from_secs(2)).expect("the 200 back");
        assert!(r.contains(&cid) && status(&r) == Some(200), "{r}");
    }
    let text = http_get_body(metrics, "/metrics");
    let handoffs: u64 = text
        .lines()
        .filter(|l| l.starts_with("ser_handoffs_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(text.contains("ser_handoffs_total"), "{text}");
    assert_eq!(handoffs, 0, "{text}");
}
