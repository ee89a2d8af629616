//! Stateful proxying end to end: a real `ser` running tm/rr/acc scripts between real SIP
//! peers on loopback (sipp UACs and UASs, and raw UDP peers where a test must count exactly
//! what crosses the wire).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::sipp::*;
use common::*;

/// A record-routing stateful proxy: in-dialog requests follow their Route, the rest go to
/// their Request-URI.
const RR_PROXY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (loose_route()) { t_relay(); break; };
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); break; };
}
"#;

#[test]
fn call_with_record_routing_completes_through_t_relay() {
    require_sipp();
    let dir = temp_dir("tm-rr-call");
    let uas_port = free_port();
    let ser = Ser::start("tm-rr-call", RR_PROXY, 0, 2, "auto");
    let port = ser.port;
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 20, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &callee),
        port,
        20,
        20,
        Duration::from_secs(20),
    );
    assert!(ok, "UAC failed:\n{out}\n{}", ser.log_text());
    // The UAS scenario requires the ACK and the BYE: both came through ser.
    let (uas_ok, uas_log) = uas.finish(Duration::from_secs(20));
    assert!(uas_ok, "UAS failed:\n{uas_log}\n{}", ser.log_text());
}

fn count_starting(msgs: &[String], prefix: &str) -> usize {
    msgs.iter().filter(|m| m.starts_with(prefix)).count()
}

#[test]
fn request_retransmissions_are_absorbed_and_answered_with_the_last_reply() {
    let ser = Ser::start("tm-retrans", RR_PROXY, 0, 2, "auto");
    let caller = Peer::new();
    let callee = Peer::new();
    let ruri = format!("sip:bob@127.0.0.1:{}", callee.port());
    let invite = request("INVITE", &ruri, caller.port(), "retrans-1", "");
    caller.send(ser.addr(), invite.as_bytes());
    let first = callee
        .recv_timeout(2000)
        .expect("INVITE reaches the callee");
    assert!(first.starts_with("INVITE "), "{first}");
    // The caller gets our 100 at once.
    let trying = caller.recv_timeout(2000).expect("100 Trying");
    assert_eq!(status(&trying), Some(100), "{trying}");
    callee.send(
        ser.addr(),
        response_to(&first, 180, "Ringing", "callee1").as_bytes(),
    );
    let ringing = caller.recv_timeout(2000).expect("180");
    assert_eq!(status(&ringing), Some(180), "{ringing}");
    // Two retransmissions: each is answered with the last reply (180), none goes on.
    caller.send(ser.addr(), invite.as_bytes());
    caller.send(ser.addr(), invite.as_bytes());
    let again = drain(&caller, 600);
    assert_eq!(count_starting(&again, "SIP/2.0 180"), 2, "{again:?}");
    let at_callee = drain(&callee, 200);
    assert_eq!(count_starting(&at_callee, "INVITE"), 0, "{at_callee:?}");
    // The callee is busy: 486 up, ACK (ours, hop by hop) down.
    callee.send(
        ser.addr(),
        response_to(&first, 486, "Busy Here", "callee1").as_bytes(),
    );
    let busy = caller.recv_timeout(2000).expect("486");
    assert_eq!(status(&busy), Some(486), "{busy}");
    // A late INVITE retransmission gets the 486 again; then the caller's ACK is absorbed.
    caller.send(ser.addr(), invite.as_bytes());
    let late = drain(&caller, 400);
    assert_eq!(count_starting(&late, "SIP/2.0 486"), 1, "{late:?}");
    let to = busy
        .split("\r\n")
        .find(|l| l.starts_with("To:"))
        .expect("To")
        .to_string();
    let ack = invite
        .replacen("INVITE ", "ACK ", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .lines()
        .map(|l| if l.starts_with("To:") { to.as_str() } else { l })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    caller.send(ser.addr(), ack.as_bytes());
    // Acknowledged: no more 486 (timer G stopped), nothing new downstream.
    let after = drain(&caller, 1200);
    assert_eq!(count_starting(&after, "SIP/2.0 486"), 0, "{after:?}");
    let down = drain(&callee, 600);
    assert_eq!(count_starting(&down, "ACK"), 1, "{down:?}");
    assert_eq!(count_starting(&down, "INVITE"), 0, "{down:?}");
    let hop_ack = down.iter().find(|m| m.starts_with("ACK")).expect("ACK");
    assert!(hop_ack.contains("z9hG4bK"), "{hop_ack}");
    drop(ser);
}

/// Binds UDP ports that never answer (a dead next hop).
fn port_of(s: &std::net::UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// The seeds' forking script with its iptel.org destinations pointed at loopback.
fn seed_with(name: &str, map: &[(&str, String)]) -> String {
    let mut s = std::fs::read_to_string(repo_root().join("tests/data/seeds").join(name))
        .expect("seed script");
    for (from, to) in map {
        assert!(s.contains(from), "{name} has no {from}");
        s = s.replace(from, to);
    }
    s
}

/// The seed forks to two destinations; both are busy, so its failure route (or SER 0.8's
/// negative reply route) adds the third, which answers. The failure route after fr_timer
/// (a destination that never answers) is the same path on a timer: tm's virtual-clock tests
/// (`tm::sim_tests::serial_forking_through_the_failure_route_after_fr_timer`) drive it
/// without waiting the seed's 10 s.
fn seed_forks_on_after_both_destinations_fail(name: &str, tag: &str, marker: &str) {
    let dir = temp_dir(tag);
    // Raw busy destinations: 486 to every INVITE; the seed also routes the caller's ACK
    // (and BYE) to the first, which they ignore (a sipp UAS would abort on them).
    let (busy1, h1) = busy_destination();
    let (busy2, h2) = busy_destination();
    let uas_port = free_port();
    let script = seed_with(
        name,
        &[
            (
                "sip:nobody@iptel.org",
                format!("sip:nobody@127.0.0.1:{busy1}"),
            ),
            (
                "sip:parallel@iptel.org:9",
                format!("sip:parallel@127.0.0.1:{busy2}"),
            ),
            (
                "sip:nonsense@iptel.org",
                format!("sip:nonsense@127.0.0.1:{uas_port}"),
            ),
            ("sip:foo@iptel.org", "sip:foo@127.0.0.1:9".to_string()),
        ],
    );
    // -dd: debug=2, so the route's log(1, ...) lines show (the seed sets no debug level).
    let ser = Ser::start_with(tag, &script, 0, 2, "auto", &["-dd"]);
    let port = ser.port;
    let uas = Uas::start(&scenario(&dir, "uas-answer.xml", "x"), uas_port, 1, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-invite.xml", &format!("127.0.0.1:{uas_port}")),
        port,
        1,
        1,
        Duration::from_secs(15),
    );
    assert!(ok, "{name}: call failed:\n{out}\n{}", ser.log_text());
    for (i, h) in [h1, h2].into_iter().enumerate() {
        let (invites, acks) = h.join().expect("busy destination");
        assert!(invites >= 1, "{name}: destination {i} was never tried");
        assert!(
            acks >= 1,
            "{name}: the 486 of destination {i} was never ACKed"
        );
    }
    let (uas_ok, log) = uas.finish(Duration::from_secs(10));
    assert!(uas_ok, "{name}: UAS:\n{log}");
    let text = ser.log_text();
    assert!(
        text.contains(marker),
        "{name}: no '{marker}' in the log:\n{text}"
    );
}

/// A UDP destination that answers every INVITE 486 and counts INVITEs and ACKs until it has
/// been quiet for a second.
fn busy_destination() -> (u16, std::thread::JoinHandle<(usize, usize)>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = port_of(&sock);
    let h = std::thread::spawn(move || {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let (mut invites, mut acks) = (0, 0);
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    quiet_since = Instant::now();
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text.starts_with("INVITE ") {
                        invites += 1;
                        let resp = response_to(&text, 486, "Busy Here", "busy");
                        let _ = sock.send_to(resp.as_bytes(), from);
                    } else if text.starts_with("ACK ") {
                        acks += 1;
                    }
                }
                Err(_) if invites > 0 && quiet_since.elapsed() > Duration::from_secs(1) => break,
                Err(_) => {}
            }
        }
        (invites, acks)
    });
    (port, h)
}

#[test]
fn seed_failure_route_tries_the_next_destination() {
    require_sipp();
    seed_forks_on_after_both_destinations_fail(
        "failure-route.cfg",
        "tm-seed-failure",
        "first redirection",
    );
}

#[test]
fn seed_reply_route_tries_the_next_destination() {
    require_sipp();
    seed_forks_on_after_both_destinations_fail(
        "reply-route.cfg",
        "tm-seed-reply",
        "first redirection",
    );
}

#[test]
fn parallel_forking_busy_and_answer_gives_the_caller_the_200() {
    require_sipp();
    let dir = temp_dir("tm-fork");
    let busy_port = free_port();
    let ok_port = free_port();
    let script = format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
route {{
    if (loose_route()) {{ t_relay(); break; }};
    if (method=="INVITE") record_route();
    seturi("sip:busy@127.0.0.1:{busy_port}");
    append_branch("sip:answer@127.0.0.1:{ok_port}");
    if (!t_relay()) {{ sl_reply_error(); }};
}}
"#
    );
    let ser = Ser::start("tm-fork", &script, 0, 2, "auto");
    let port = ser.port;
    let busy = Uas::start(&scenario(&dir, "uas-busy.xml", "x"), busy_port, 5, &dir);
    let answer = Uas::start(&scenario(&dir, "uas-rr.xml", "x"), ok_port, 5, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &format!("127.0.0.1:{busy_port}")),
        port,
        5,
        5,
        Duration::from_secs(20),
    );
    assert!(ok, "caller failed:\n{out}\n{}", ser.log_text());
    let (b_ok, b_log) = busy.finish(Duration::from_secs(10));
    assert!(b_ok, "busy UAS:\n{b_log}");
    let (a_ok, a_log) = answer.finish(Duration::from_secs(20));
    assert!(a_ok, "answering UAS:\n{a_log}");
}

#[test]
fn cancel_of_a_ringing_call_ends_both_sides_with_487() {
    require_sipp();
    let dir = temp_dir("tm-cancel");
    let uas_port = free_port();
    let ser = Ser::start("tm-cancel", RR_PROXY, 0, 2, "auto");
    let port = ser.port;
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-ring.xml", &callee), uas_port, 5, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-cancel.xml", &callee),
        port,
        5,
        5,
        Duration::from_secs(20),
    );
    assert!(ok, "caller failed:\n{out}\n{}", ser.log_text());
    let (uas_ok, log) = uas.finish(Duration::from_secs(10));
    assert!(uas_ok, "callee failed:\n{log}\n{}", ser.log_text());
}

#[test]
fn a_downstream_that_never_answers_costs_a_timer_not_a_thread() {
    require_sipp();
    let dir = temp_dir("tm-black");
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let uas_port = free_port();
    let script = format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
route {{
    if (loose_route()) {{ t_relay(); break; }};
    if (method=="INVITE") record_route();
    if (uri=~"^sip:black@") {{ rewritehostport("127.0.0.1:{}"); }};
    if (!t_relay()) {{ sl_reply_error(); }};
}}
"#,
        port_of(&hole)
    );
    // One shard: every pending transaction and every call share one thread.
    let ser = Ser::start("tm-black", &script, 0, 1, "auto");
    let port = ser.port;
    let caller = Peer::new();
    // Collect the caller's replies while the calls run (they would overflow its buffer).
    let sock = caller.sock.try_clone().expect("clone");
    let collector = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    quiet_since = Instant::now();
                }
                Err(_) if quiet_since.elapsed() > Duration::from_secs(1) => break,
                Err(_) => {}
            }
        }
        got
    });
    let n = 200;
    for i in 0..n {
        let inv = request(
            "INVITE",
            "sip:black@127.0.0.1",
            caller.port(),
            &format!("black-{i}"),
            "",
        );
        caller.send(ser.addr(), inv.as_bytes());
        // In bursts of 25: 200 at once can overflow ser's default UDP receive buffer while
        // a loaded machine keeps its shard off the CPU, and a lost INVITE (a UAC would
        // retransmit it) is not what this test is about.
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 20, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &callee),
        port,
        20,
        20,
        Duration::from_secs(15),
    );
    assert!(
        ok,
        "calls stalled behind dead transactions:\n{out}\n{}",
        ser.log_text()
    );
    let (uas_ok, log) = uas.finish(Duration::from_secs(10));
    assert!(uas_ok, "{log}");
    // Each dead one is a transaction of its own, answered 100 at once and left to its
    // fr_timer (30 s here, never waited for: the 408 it ends with is the virtual-clock test
    // tm::sim_tests::fr_timer_ends_an_unanswered_invite_with_408_and_timer_a_retransmits_until_then).
    let got = collector.join().expect("collector");
    let mut trying: Vec<&str> = got
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 100"))
        .filter_map(|m| m.lines().find(|l| l.starts_with("Call-ID:")))
        .collect();
    trying.sort_unstable();
    trying.dedup();
    assert_eq!(trying.len(), n, "{} replies\n{}", got.len(), ser.log_text());
    assert_eq!(count_starting(&got, "SIP/2.0 408"), 0, "{got:?}");
}

#[test]
fn accounting_seed_reports_each_transaction_once() {
    require_sipp();
    let dir = temp_dir("tm-acc");
    let uas_port = free_port();
    let seed = repo_root().join("tests/data/seeds/accounting.cfg");
    // The seed reports at log_level 1; -dd lets level 1 through (it sets no debug level).
    let ser = Ser::start_file_with("tm-acc", &seed, 0, 2, "auto", &["-dd"]);
    let port = ser.port;
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 10, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &callee),
        port,
        10,
        10,
        Duration::from_secs(20),
    );
    assert!(ok, "{out}\n{}", ser.log_text());
    let (uas_ok, log) = uas.finish(Duration::from_secs(10));
    assert!(uas_ok, "{log}");
    // A busy callee and a caller that retransmits: one report for that transaction.
    let busy = Peer::new();
    let caller = Peer::new();
    let invite = request(
        "INVITE",
        &format!("sip:busy@127.0.0.1:{}", busy.port()),
        caller.port(),
        "acc-retrans",
        "",
    );
    for _ in 0..3 {
        caller.send(ser.addr(), invite.as_bytes());
    }
    let inv = busy.recv_timeout(2000).expect("INVITE");
    busy.send(
        ser.addr(),
        response_to(&inv, 486, "Busy Here", "b1").as_bytes(),
    );
    caller.send(ser.addr(), invite.as_bytes());
    let replies = drain(&caller, 800);
    assert!(count_starting(&replies, "SIP/2.0 486") >= 1, "{replies:?}");
    let text = ser.log_text();
    let reports: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ACC: transaction answered"))
        .collect();
    let invites = reports
        .iter()
        .filter(|l| l.contains("method=INVITE"))
        .count();
    let byes = reports.iter().filter(|l| l.contains("method=BYE")).count();
    // The seed sets the flag after loose_route: in-dialog requests (ACK, BYE) go unreported.
    assert_eq!(invites, 11, "{text}");
    assert_eq!(byes, 0, "{text}");
    assert_eq!(
        reports
            .iter()
            .filter(|l| l.contains("call_id=acc-retrans") && l.contains("status=486"))
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn missed_calls_are_reported_once_when_negative() {
    let busy = Peer::new();
    let script = format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/acc/acc.so"
modparam("acc", "log_missed_flag", 3)
route {{
    if (uri=~"^sip:offline@") {{
        if ((method=="INVITE" || method=="ACK") && t_newtran()) {{
            t_reply("404", "Not Found");
            acc_request("404 Not Found");
            break;
        }};
        sl_send_reply("404", "Not Found");
        break;
    }};
    setflag(3);
    rewritehostport("127.0.0.1:{}");
    t_relay();
}}
"#,
        busy.port()
    );
    let ser = Ser::start_with("tm-missed", &script, 0, 2, "auto", &["-dd"]);
    let caller = Peer::new();
    // Offline: t_newtran + t_reply + acc_request; the retransmission is absorbed.
    let off = request(
        "INVITE",
        "sip:offline@127.0.0.1",
        caller.port(),
        "missed-off",
        "",
    );
    caller.send(ser.addr(), off.as_bytes());
    caller.send(ser.addr(), off.as_bytes());
    let r = drain(&caller, 600);
    // The first answer and the retransmission's (plus, unacknowledged, timer G's).
    assert!(count_starting(&r, "SIP/2.0 404") >= 2, "{r:?}");
    // Online but busy: missed-call report from log_missed_flag.
    let inv = request(
        "INVITE",
        "sip:bob@127.0.0.1",
        caller.port(),
        "missed-busy",
        "",
    );
    caller.send(ser.addr(), inv.as_bytes());
    let got = recv_request(&busy, "INVITE");
    busy.send(
        ser.addr(),
        response_to(&got, 486, "Busy Here", "b2").as_bytes(),
    );
    caller.send(ser.addr(), inv.as_bytes());
    let r = drain(&caller, 600);
    assert!(count_starting(&r, "SIP/2.0 486") >= 1, "{r:?}");
    // Online and answered: no report (only the missed flag is set).
    let inv = request(
        "INVITE",
        "sip:carol@127.0.0.1",
        caller.port(),
        "missed-ok",
        "",
    );
    caller.send(ser.addr(), inv.as_bytes());
    let got = recv_request(&busy, "INVITE");
    busy.send(ser.addr(), response_to(&got, 200, "OK", "b3").as_bytes());
    let r = drain(&caller, 600);
    assert!(count_starting(&r, "SIP/2.0 200") >= 1, "{r:?}");
    let text = ser.log_text();
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("ACC: request accounted"), 1, "{text}");
    assert_eq!(count("ACC: call missed"), 1, "{text}");
    assert_eq!(count("call_id=missed-ok"), 0, "{text}");
    assert!(text.contains("call_id=missed-busy"), "{text}");
}

#[test]
fn past_max_transactions_a_new_request_gets_503_with_retry_after() {
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let script = format!(
        r#"
loadmodule "modules/tm/tm.so"
modparam("tm", "max_transactions", 5)
modparam("tm", "retry_after", 7)
route {{
    rewritehostport("127.0.0.1:{}");
    t_relay();
}}
"#,
        port_of(&hole)
    );
    let ser = Ser::start("tm-full", &script, 0, 1, "auto");
    let caller = Peer::new();
    for i in 0..8 {
        let inv = request(
            "INVITE",
            "sip:x@127.0.0.1",
            caller.port(),
            &format!("full-{i}"),
            "",
        );
        caller.send(ser.addr(), inv.as_bytes());
    }
    let got = drain(&caller, 800);
    assert_eq!(count_starting(&got, "SIP/2.0 100"), 5, "{got:?}");
    let unavailable: Vec<&String> = got
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 503"))
        .collect();
    assert_eq!(unavailable.len(), 3, "{got:?}");
    assert!(
        unavailable.iter().all(|m| m.contains("Retry-After: 7")),
        "{unavailable:?}"
    );
    drop(ser);
}

#[test]
fn second_transaction_for_one_request_is_refused() {
    let callee = Peer::new();
    let script = format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
route {{
    rewritehostport("127.0.0.1:{}");
    t_newtran();
    if (!t_relay()) {{ log(1, "relay refused\n"); }};
    if (!t_newtran()) {{ log(1, "second newtran refused\n"); }};
}}
"#,
        callee.port()
    );
    let ser = Ser::start_with("tm-second", &script, 0, 1, "auto", &["-dd"]);
    let port = ser.port;
    let caller = Peer::new();
    let inv = request("OPTIONS", "sip:x@127.0.0.1", caller.port(), "second-1", "");
    caller.send(ser.addr(), inv.as_bytes());
    let got = callee.recv_timeout(2000).expect("relayed once");
    assert!(got.starts_with("OPTIONS"), "{got}");
    std::thread::sleep(Duration::from_millis(300));
    let text = ser.log_text();
    assert!(!text.contains("relay refused"), "{text}");
    assert!(text.contains("second newtran refused"), "{text}");
    assert!(text.contains("transaction already in process"), "{text}");
    let _ = SocketAddr::from(([127, 0, 0, 1], port));
}

/// A dnsmasq serving `_sip._udp.svc.test`: priority 10 → `dead.test:dead_port`, priority
/// 20 → `live.test:live_port`, both 127.0.0.1.
fn srv_dns(dead_port: u16, live_port: u16) -> dnsmasq::Dnsmasq {
    dnsmasq::Dnsmasq::start(&[
        format!("--srv-host=_sip._udp.svc.test,dead.test,{dead_port},10,50"),
        format!("--srv-host=_sip._udp.svc.test,live.test,{live_port},20,50"),
        "--host-record=dead.test,127.0.0.1".to_string(),
        "--host-record=live.test,127.0.0.1".to_string(),
    ])
}

fn srv_proxy(dns: &dnsmasq::Dnsmasq) -> String {
    format!(
        r#"
dns_server = "{}"
dns_timeout = 500
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
modparam("tm", "fr_timer", 2)
route {{
    if (!t_relay()) {{ sl_reply_error(); }};
}}
"#,
        dns.addr
    )
}

// A first SRV target that never answers is given up after fr_timer and the next one tried:
// tm::sim_tests::a_timed_out_target_fails_over_to_the_next_one drives it on a virtual clock.

#[test]
fn srv_failover_on_503_moves_to_the_next_target_at_once() {
    let busy = Peer::new();
    let live = Peer::new();
    let dns = srv_dns(busy.port(), live.port());
    let ser = Ser::start("tm-srv503", &srv_proxy(&dns), 0, 1, "auto");
    let caller = Peer::new();
    let inv = request("INVITE", "sip:bob@svc.test", caller.port(), "srv-503", "");
    caller.send(ser.addr(), inv.as_bytes());
    let first = recv_request(&busy, "INVITE");
    busy.send(
        ser.addr(),
        response_to(&first, 503, "Service Unavailable", "s1").as_bytes(),
    );
    let second = recv_request(&live, "INVITE");
    live.send(ser.addr(), response_to(&second, 200, "OK", "s2").as_bytes());
    let got = drain(&caller, 800);
    assert_eq!(count_starting(&got, "SIP/2.0 503"), 0, "{got:?}");
    assert!(
        count_starting(&got, "SIP/2.0 200") >= 1,
        "{got:?}\n{}",
        ser.log_text()
    );
}

#[test]
fn an_unresolvable_next_hop_costs_that_request_only() {
    let dns = srv_dns(1, 2);
    let callee = Peer::new();
    let script = format!(
        r#"
dns_server = "{}"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
route {{
    if (uri=~"@nowhere") {{ rewritehost("nosuchhost.test"); }}
    else {{ rewritehostport("127.0.0.1:{}"); }};
    if (!t_relay()) {{ sl_reply_error(); }};
}}
"#,
        dns.addr,
        callee.port()
    );
    let ser = Ser::start("tm-nxdomain", &script, 0, 1, "auto");
    let caller = Peer::new();
    let bad = request("OPTIONS", "sip:x@nowhere", caller.port(), "nx-1", "");
    caller.send(ser.addr(), bad.as_bytes());
    let good = request("OPTIONS", "sip:y@somewhere", caller.port(), "nx-2", "");
    caller.send(ser.addr(), good.as_bytes());
    let got = recv_request(&callee, "OPTIONS");
    assert!(got.contains("Call-ID: nx-2"), "{got}");
    callee.send(ser.addr(), response_to(&got, 200, "OK", "c").as_bytes());
    let replies = drain(&caller, 1000);
    let by_call = |id: &str, code: &str| {
        replies
            .iter()
            .any(|m| m.starts_with(code) && m.contains(&format!("Call-ID: {id}")))
    };
    assert!(by_call("nx-2", "SIP/2.0 200"), "{replies:?}");
    // The failed name ends its own transaction with an error reply.
    assert!(
        replies
            .iter()
            .any(|m| m.contains("Call-ID: nx-1") && !m.starts_with("SIP/2.0 1")),
        "{replies:?}\n{}",
        ser.log_text()
    );
}

#[test]
fn branch_route_runs_per_branch_and_may_drop_one() {
    let a = Peer::new();
    let b = Peer::new();
    let c = Peer::new();
    let script = format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/textops/textops.so"
route {{
    seturi("sip:a@127.0.0.1:{}");
    append_branch("sip:b@127.0.0.1:{}");
    append_branch("sip:c@127.0.0.1:{}");
    t_on_branch("1");
    t_relay();
}}
branch_route[1] {{
    if (uri=~"^sip:c@") {{ drop; }};
    if (uri=~"^sip:b@") {{ rewriteuser("bee"); }};
    append_hf("X-Branch: yes\r\n");
}}
"#,
        a.port(),
        b.port(),
        c.port()
    );
    let ser = Ser::start("tm-branch", &script, 0, 1, "auto");
    let caller = Peer::new();
    let inv = request("INVITE", "sip:x@127.0.0.1", caller.port(), "branch-1", "");
    caller.send(ser.addr(), inv.as_bytes());
    let at_a = recv_request(&a, "INVITE");
    let at_b = recv_request(&b, "INVITE");
    assert!(at_a.starts_with("INVITE sip:a@"), "{at_a}");
    assert!(at_a.contains("X-Branch: yes"), "{at_a}");
    assert!(at_b.starts_with("INVITE sip:bee@"), "{at_b}");
    assert!(at_b.contains("X-Branch: yes"), "{at_b}");
    // One X-Branch each: the route's edits do not leak into the next branch.
    assert_eq!(at_b.matches("X-Branch").count(), 1, "{at_b}");
    assert!(c.recv_timeout(500).is_none(), "the dropped branch was sent");
    drop(ser);
}

#[test]
fn t_replicate_sends_a_copy_whose_replies_stay_here() {
    let backup = Peer::new();
    let script = format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
route {{
    if (method=="REGISTER") {{
        sl_send_reply("200", "OK");
        t_replicate("127.0.0.1", "{}");
        break;
    }};
}}
"#,
        backup.port()
    );
    let ser = Ser::start("tm-replicate", &script, 0, 1, "auto");
    let ua = Peer::new();
    let reg = request("REGISTER", "sip:127.0.0.1", ua.port(), "repl-1", "");
    ua.send(ser.addr(), reg.as_bytes());
    let copy = recv_request(&backup, "REGISTER");
    assert!(copy.contains("Call-ID: repl-1"), "{copy}");
    backup.send(
        ser.addr(),
        response_to(&copy, 200, "Replicated", "bk").as_bytes(),
    );
    let got = drain(&ua, 600);
    assert_eq!(count_starting(&got, "SIP/2.0 200 OK"), 1, "{got:?}");
    assert_eq!(
        got.iter().filter(|m| m.contains("Replicated")).count(),
        0,
        "the backup's reply went upstream: {got:?}"
    );
    drop(ser);
}
