//! nathelper with real processes on loopback (issue 19): phones "behind a NAT" are UAs on
//! 127.0.0.1 whose Contact, Via and SDP name a private address (192.168.1.20:5060) that
//! nobody can reach; only their source address and port reach them.
//!
//! - A sipp phone registers with a private Contact: nat_uac_test sees it (the 200 says
//!   X-Nat: yes) and, after fix_nated_register, a call from a sipp UAC reaches a sipp UAS
//!   listening on the port the REGISTER came from; the 200 lists the Contact unchanged.
//! - fix_nated_contact and fix_nated_sdp: the callee sees the caller's source address in the
//!   Contact, the `c=` lines, `a=direction:active`, and a right Content-Length.
//! - force_rport: a stateless reply and a relayed transaction's reply go to the source port
//!   of a request whose Via names another port without rport; without it they do not.
//! - add_contact_alias / handle_ruri_alias: the callee sees `;alias=127.0.0.1~port~1`; its
//!   in-dialog BYE to that Contact reaches the caller at its source port, alias removed.
//! - Keep-alives: 4-byte datagrams reach the NATed phones each round, spread and never closer
//!   than the rate allows, never the phone that is not NATed; OPTIONS keep-alives reach a
//!   phone that answers them, and one that does not is reported once (WARNING, metric) and
//!   removed after natping_max_failures.
//! - A NATed callee's 200 is fixed in the onreply_route (Contact and `c=` get its source).
//! - The source address of a NATed binding is kept in the database: db_mode 1 across a
//!   restart, db_mode 3 read back by lookup.
//! - Malformed Contacts, SDP and aliases are false tests and functions, never a crash.
//! - msilo's m_dump after fix_nated_register delivers to the phone's source address.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sipp::{require_sipp, sipp_dir, uac, Uas};
use common::*;

const MODULES: &str = r#"loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/textops/textops.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
loadmodule "modules/nathelper/nathelper.so"
"#;

/// The routing script of the tests (with `params` before the route block).
fn script(params: &str) -> String {
    format!(
        r#"{MODULES}{params}
route {{
    if (method == "REGISTER") {{
        if (nat_uac_test("19")) {{
            fix_nated_register();
            append_to_reply("X-Nat: yes");
        }} else {{
            append_to_reply("X-Nat: no");
        }};
        save("location");
        break;
    }};
    if (uri =~ "^sip:rport@") {{ force_rport(); sl_send_reply("200", "Forced"); break; }};
    if (uri =~ "^sip:norport@") {{ sl_send_reply("200", "Not Forced"); break; }};
    if (search("^X-Test: relay-rport")) {{ force_rport(); }};
    if (search("^X-Test: contact")) {{
        if (nat_uac_test("1")) {{ fix_nated_contact(); }};
        if (nat_uac_test("8")) {{ fix_nated_sdp("3"); }};
    }};
    if (search("^X-Test: alias")) {{ add_contact_alias(); }};
    if (search("^X-Test: reply")) {{ t_on_reply("1"); }};
    if (method == "BYE") {{ handle_ruri_alias(); }};
    if (uri =~ "^sip:phone") {{
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    }};
    t_relay();
}}
onreply_route[1] {{
    if (nat_uac_test("1")) {{ fix_nated_contact(); }};
    if (nat_uac_test("8")) {{ fix_nated_sdp("2"); }};
}}
"#
    )
}

/// A REGISTER from `peer` for `user` with a Contact at `contact` (host:port), its Via naming
/// `via` (host:port) with rport.
fn register(peer: &Peer, ser: SocketAddr, user: &str, contact: &str, via: &str) -> String {
    let cid = format!("reg-{user}-{}", peer.port());
    let msg = format!(
        "REGISTER sip:{ser} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch=z9hG4bK-{cid};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{ser}>;tag=r{cid}\r\n\
         To: <sip:{user}@{ser}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{contact}>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n"
    );
    peer.send(ser, msg.as_bytes());
    final_reply(peer, Duration::from_secs(3)).expect("REGISTER answered")
}

/// The value of header `name` in `msg` (first one), without leading blanks.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn a_phone_registered_behind_a_nat_is_called_at_its_source_address() {
    require_sipp();
    let ser = Ser::start("nat-call", &script(""), 0, 2, "auto");
    let dir = temp_dir("nat-call");
    let phone_port = free_port();
    // The phone registers from 127.0.0.1:phone_port with a private Contact.
    let reg = sipp_dir().join("uac-register-nat.xml");
    let (ok, out) = run_bounded(
        Command::new("sipp")
            .arg("-sf")
            .arg(&reg)
            .arg(ser.addr().to_string())
            .args(["-i", "127.0.0.1", "-p", &phone_port.to_string()])
            .args(["-s", "phone", "-m", "1", "-timeout", "10", "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-error_file"])
            .arg(dir.path().join("reg-err.log")),
        Duration::from_secs(20),
    );
    let errs = std::fs::read_to_string(dir.path().join("reg-err.log")).unwrap_or_default();
    assert!(
        ok,
        "REGISTER with X-Nat: yes and the Contact unchanged: {out}\n{errs}"
    );
    // The same phone now answers calls on the port it registered from.
    let uas = Uas::start(
        &sipp_dir().join("uas-answer.xml"),
        phone_port,
        1,
        dir.path(),
    );
    // INVITE, 200, ACK (no BYE: uas-answer.xml ends after the ACK).
    let text = std::fs::read_to_string(sipp_dir().join("uac-invite.xml")).expect("scenario");
    let call = dir.path().join("uac-invite-phone.xml");
    let text = text
        .replace("@CALLEE@", &ser.addr().to_string())
        .replace("[service]", "phone");
    std::fs::write(&call, text).expect("write scenario");
    let (ok, out) = uac(&call, ser.port, 1, 1, Duration::from_secs(15));
    assert!(ok, "the call through ser: {out}\n{}", ser.log_text());
    let (ok, log) = uas.finish(Duration::from_secs(10));
    assert!(ok, "the phone took the call at its source port: {log}");
}

#[test]
fn the_callee_sees_the_callers_source_address_in_contact_and_sdp() {
    let ser = Ser::start("nat-contact", &script(""), 0, 1, "auto");
    let caller = Peer::new();
    let callee = Peer::new();
    let sdp = "v=0\r\no=u 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\n\
               t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "INVITE sip:callee@127.0.0.1:{cp} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-c1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@example.org>;tag=c1\r\n\
         To: <sip:callee@127.0.0.1:{cp}>\r\n\
         Call-ID: nat-contact-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@192.168.1.20:5060;transport=udp>\r\n\
         X-Test: contact\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        cp = callee.port()
    );
    caller.send(ser.addr(), invite.as_bytes());
    let got = recv_request(&callee, "INVITE");
    let src = format!("127.0.0.1:{}", caller.port());
    assert_eq!(
        header(&got, "Contact"),
        Some(format!("<sip:caller@{src};transport=udp>").as_str()),
        "{got}"
    );
    let (head, body) = got.split_once("\r\n\r\n").expect("body");
    assert!(body.contains("c=IN IP4 127.0.0.1\r\n"), "{body}");
    assert!(
        body.contains("o=u 1 1 IN IP4 192.168.1.20\r\n"),
        "o= stays without flag 8: {body}"
    );
    assert!(body.ends_with("a=direction:active\r\n"), "{body}");
    let len: usize = header(head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(len, body.len(), "Content-Length follows the new body");
    // The relayed Via got received/rport: the callee's reply reaches the caller's port.
    callee.send(
        ser.addr(),
        response_to(&got, 486, "Busy Here", "cal").as_bytes(),
    );
    let r = final_reply(&caller, Duration::from_secs(3)).expect("reply to the caller");
    assert_eq!(status(&r), Some(486), "{r}");
}

/// A callee behind a NAT: its 200's Contact and SDP are fixed in the onreply_route, with
/// the reply's source address.
#[test]
fn a_natted_callees_reply_is_fixed_in_the_onreply_route() {
    let ser = Ser::start("nat-reply", &script(""), 0, 1, "auto");
    let caller = Peer::new();
    let callee = Peer::new();
    let invite = request(
        "INVITE",
        &format!("sip:callee@127.0.0.1:{}", callee.port()),
        caller.port(),
        "nat-reply-1",
        "X-Test: reply\r\n",
    );
    caller.send(ser.addr(), invite.as_bytes());
    let got = recv_request(&callee, "INVITE");
    let sdp = "v=0\r\no=u 2 2 IN IP4 192.168.1.30\r\ns=-\r\nc=IN IP4 192.168.1.30\r\n\
               t=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    let ok = response_to(&got, 200, "OK", "cal").replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Contact: <sip:callee@192.168.1.30:5060>\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    );
    assert!(ok.contains("192.168.1.30:5060"), "{ok}");
    callee.send(ser.addr(), ok.as_bytes());
    let r = final_reply(&caller, Duration::from_secs(3)).expect("200 to the caller");
    let src = format!("127.0.0.1:{}", callee.port());
    assert_eq!(
        header(&r, "Contact"),
        Some(format!("<sip:callee@{src}>").as_str()),
        "{r}"
    );
    let (head, body) = r.split_once("\r\n\r\n").expect("body");
    assert!(body.contains("c=IN IP4 127.0.0.1\r\n"), "{body}");
    assert!(!body.contains("a=direction"), "flag 2 only: {body}");
    let len: usize = header(head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(len, body.len(), "Content-Length follows the new body");
}

#[test]
fn force_rport_sends_replies_to_the_source_port() {
    let ser = Ser::start("nat-rport", &script(""), 0, 1, "auto");
    let peer = Peer::new();
    // The Via names port 9 (discard) without rport: replies would go there.
    let req = |user: &str, cid: &str, extra: &str| {
        format!(
            "MESSAGE sip:{user}@{a} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-{cid}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:p@example.org>;tag={cid}\r\n\
             To: <sip:{user}@{a}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 MESSAGE\r\n\
             {extra}Content-Length: 0\r\n\r\n",
            a = ser.addr()
        )
    };
    peer.send(ser.addr(), req("norport", "r0", "").as_bytes());
    assert!(
        final_reply(&peer, Duration::from_millis(800)).is_none(),
        "without force_rport the reply goes to the Via's port"
    );
    peer.send(ser.addr(), req("rport", "r1", "").as_bytes());
    let r = final_reply(&peer, Duration::from_secs(3)).expect("stateless reply at the source port");
    assert!(r.starts_with("SIP/2.0 200 Forced"), "{r}");
    // Relayed statefully: the next hop sees rport=<source port>, its reply comes back there.
    let callee = Peer::new();
    let ruri = format!("sip:callee@127.0.0.1:{}", callee.port());
    let m = request("MESSAGE", &ruri, 9, "r2", "X-Test: relay-rport\r\n");
    peer.send(ser.addr(), m.as_bytes());
    let got = recv_request(&callee, "MESSAGE");
    let vias: Vec<&str> = got
        .split("\r\n")
        .filter(|l| l.starts_with("Via:"))
        .collect();
    let want = format!("received=127.0.0.1;rport={}", peer.port());
    assert!(
        vias.get(1).is_some_and(|v| v.contains(&want)),
        "{want} in {vias:?}"
    );
    callee.send(ser.addr(), response_to(&got, 200, "OK", "c2").as_bytes());
    let r = final_reply(&peer, Duration::from_secs(3)).expect("relayed reply at the source port");
    assert_eq!(status(&r), Some(200), "{r}");
}

#[test]
fn a_contact_alias_takes_the_in_dialog_bye_to_the_callers_source() {
    let ser = Ser::start("nat-alias", &script(""), 0, 1, "auto");
    let caller = Peer::new();
    let callee = Peer::new();
    let invite = format!(
        "INVITE sip:callee@127.0.0.1:{cp} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-a1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@example.org>;tag=a1\r\n\
         To: <sip:callee@127.0.0.1:{cp}>\r\n\
         Call-ID: nat-alias-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@192.168.1.20:5060>\r\n\
         X-Test: alias\r\n\
         Content-Length: 0\r\n\r\n",
        cp = callee.port()
    );
    caller.send(ser.addr(), invite.as_bytes());
    let got = recv_request(&callee, "INVITE");
    let contact = header(&got, "Contact").expect("Contact").to_string();
    let alias = format!(";alias=127.0.0.1~{}~1", caller.port());
    assert_eq!(
        contact,
        format!("<sip:caller@192.168.1.20:5060{alias}>"),
        "{got}"
    );
    callee.send(ser.addr(), response_to(&got, 200, "OK", "b1").as_bytes());
    let ok = final_reply(&caller, Duration::from_secs(3)).expect("200 to the caller");
    assert_eq!(status(&ok), Some(200));
    // The callee hangs up: its BYE goes to the Contact it saw, through ser.
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let bye = format!(
        "BYE {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{cp};branch=z9hG4bK-bye1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:callee@127.0.0.1:{cp}>;tag=b1\r\n\
         To: <sip:caller@example.org>;tag=a1\r\n\
         Call-ID: nat-alias-1\r\n\
         CSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        cp = callee.port()
    );
    callee.send(ser.addr(), bye.as_bytes());
    let got = recv_request(&caller, "BYE");
    assert!(
        got.starts_with("BYE sip:caller@192.168.1.20:5060 SIP/2.0\r\n"),
        "alias gone from the Request-URI: {got}"
    );
    caller.send(ser.addr(), response_to(&got, 200, "OK", "").as_bytes());
    let r = final_reply(&callee, Duration::from_secs(3)).expect("200 to the BYE");
    assert_eq!(status(&r), Some(200), "{r}");
}

/// When each keep-alive datagram reached which phone, over `window`.
fn collect_pings(phones: &[Peer], window: Duration) -> Vec<(Instant, usize, String)> {
    let mut got = Vec::new();
    let end = Instant::now() + window;
    for p in phones {
        p.sock.set_nonblocking(true).expect("nonblocking");
    }
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        for (i, p) in phones.iter().enumerate() {
            while let Ok((n, _)) = p.sock.recv_from(&mut buf) {
                got.push((
                    Instant::now(),
                    i,
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for p in phones {
        p.sock.set_nonblocking(false).expect("blocking");
    }
    got
}

#[test]
fn keepalive_datagrams_reach_natted_phones_at_the_interval_under_the_rate() {
    // Interval 2 s, at most 2 pings a second: 5 NATed phones take 2.5 s a round (0.5 s
    // apart, not the 0.4 s an even spread over 2 s would give).
    let ser = Ser::start(
        "nat-ping",
        &script(
            "modparam(\"nathelper\", \"natping_interval\", 2)\n\
             modparam(\"nathelper\", \"natping_rate\", 2)\n",
        ),
        0,
        2,
        "auto",
    );
    let phones: Vec<Peer> = (0..6).map(|_| Peer::new()).collect();
    for (i, p) in phones.iter().enumerate() {
        let user = format!("phone{i}");
        let r = if i == 5 {
            // Not behind a NAT: Contact and Via are its source address.
            let me = format!("127.0.0.1:{}", p.port());
            register(p, ser.addr(), &user, &me, &me)
        } else {
            register(
                p,
                ser.addr(),
                &user,
                "192.168.1.20:5060",
                "192.168.1.20:5060",
            )
        };
        assert_eq!(status(&r), Some(200), "{r}");
        let nat = if i == 5 { "no" } else { "yes" };
        assert_eq!(header(&r, "X-Nat"), Some(nat), "{r}");
    }
    let pings = collect_pings(&phones, Duration::from_millis(7500));
    assert!(
        pings.iter().all(|(_, _, d)| d == "\r\n\r\n"),
        "4-byte keep-alives only: {:?}",
        pings.iter().map(|(_, i, d)| (i, d)).collect::<Vec<_>>()
    );
    for i in 0..5 {
        let n = pings.iter().filter(|(_, p, _)| *p == i).count();
        assert!(
            (2..=4).contains(&n),
            "phone {i} got {n} keep-alives in 7.5 s: {:?}\n{}",
            pings.iter().map(|(_, i, d)| (i, d)).collect::<Vec<_>>(),
            ser.log_text()
        );
    }
    assert_eq!(
        pings.iter().filter(|(_, p, _)| *p == 5).count(),
        0,
        "the phone not behind a NAT is not pinged (ping_nated_only)"
    );
    // Spread, and never more than 2 a second: consecutive pings at least ~0.5 s apart.
    for w in pings.windows(2) {
        let gap = w[1].0.duration_since(w[0].0);
        assert!(gap >= Duration::from_millis(400), "pings {gap:?} apart");
    }
}

#[test]
fn options_keepalives_are_answered_and_a_silent_phone_is_reported_and_removed() {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("metrics port");
    let params = format!(
        "metrics_listen=\"{metrics}\"\n\
         modparam(\"tm\", \"fr_timer\", 1)\n\
         modparam(\"nathelper\", \"natping_interval\", 1)\n\
         modparam(\"nathelper\", \"natping_method\", \"OPTIONS\")\n\
         modparam(\"nathelper\", \"natping_from\", \"sip:keepalive@example.org\")\n\
         modparam(\"nathelper\", \"natping_max_failures\", 3)\n"
    );
    // Global parameters go before the modules.
    let s = script(&params.replace(&format!("metrics_listen=\"{metrics}\"\n"), ""));
    let s = format!("metrics_listen=\"{metrics}\"\n{s}");
    let ser = Ser::start("nat-options", &s, 0, 1, "auto");
    let good = Peer::new();
    let silent = Peer::new();
    for (p, user) in [(&good, "good"), (&silent, "silent")] {
        let r = register(
            p,
            ser.addr(),
            user,
            "192.168.1.20:5060",
            "192.168.1.20:5060",
        );
        assert_eq!(header(&r, "X-Nat"), Some("yes"), "{r}");
    }
    // The good phone answers every OPTIONS for 6 s; the silent one never does.
    let end = Instant::now() + Duration::from_secs(6);
    let mut answered = 0;
    while Instant::now() < end {
        let Some(m) = good.recv_timeout(200) else {
            continue;
        };
        if m.starts_with("OPTIONS ") {
            assert!(
                m.starts_with("OPTIONS sip:good@192.168.1.20:5060 SIP/2.0\r\n"),
                "{m}"
            );
            assert!(m.contains("From: <sip:keepalive@example.org>"), "{m}");
            good.send(ser.addr(), response_to(&m, 200, "OK", "g").as_bytes());
            answered += 1;
        }
    }
    assert!((4..=7).contains(&answered), "{answered} OPTIONS in 6 s");
    let mut silent_got = 0;
    while let Some(m) = silent.recv_timeout(50) {
        silent_got += usize::from(m.starts_with("OPTIONS "));
    }
    assert!(silent_got >= 3, "the silent phone was pinged: {silent_got}");
    let log = ser.log_text();
    assert_eq!(
        log.matches("silent@192.168.1.20:5060 of silent at 127.0.0.1")
            .count(),
        1,
        "one WARNING for the silent phone:\n{log}"
    );
    assert!(log.contains("does not answer its keep-alive"), "{log}");
    assert!(
        log.contains("sip:silent@192.168.1.20:5060 of silent removed: 3 keep-alives unanswered"),
        "{log}"
    );
    assert!(!log.contains("good@192.168.1.20:5060 of good at"), "{log}");
    let m = http_get_body(metrics, "/metrics");
    assert!(m.contains("ser_nathelper_bindings_removed_total 1"), "{m}");
    assert!(
        m.lines().any(|l| l
            .starts_with("ser_nathelper_keepalive_results_total{result=\"answered\"}")
            && !l.ends_with(" 0")),
        "{m}"
    );
}

/// A MESSAGE from `caller` to `user` through `ser`; what `phone` receives of it.
fn message_to(ser: &Ser, caller: &Peer, phone: &Peer, user: &str, cid: &str) -> Option<String> {
    let m = request(
        "MESSAGE",
        &format!("sip:{user}@{}", ser.addr()),
        caller.port(),
        cid,
        "",
    );
    caller.send(ser.addr(), m.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(got) = phone.recv_timeout(100) {
            if got.starts_with("MESSAGE ") {
                phone.send(ser.addr(), response_to(&got, 200, "OK", "ph").as_bytes());
                return Some(got);
            }
        }
    }
    None
}

/// fix_nated_register's source address lives in the database: with write-through it is
/// there after a restart, with database-only lookup reads it from there.
#[test]
fn the_source_address_of_a_nated_binding_is_kept_in_the_database() {
    let dir = temp_dir("nat-db");
    let db = dir.path().join("ul.db");
    for mode in [1, 3] {
        let params = format!(
            "modparam(\"usrloc\", \"db_mode\", {mode})\n\
             modparam(\"usrloc\", \"db_url\", \"sqlite://{}\")\n",
            db.display()
        );
        let s = script(&params);
        let phone = Peer::new();
        let caller = Peer::new();
        let user = format!("phonedb{mode}");
        {
            let mut ser = Ser::start(&format!("nat-db{mode}a"), &s, 0, 2, "auto");
            let r = register(
                &phone,
                ser.addr(),
                &user,
                "192.168.1.20:5060",
                "192.168.1.20:5060",
            );
            assert_eq!(header(&r, "X-Nat"), Some("yes"), "{r}");
            assert!(
                header(&r, "Contact").is_some_and(|c| c.contains("@192.168.1.20:5060>")),
                "the Contact is stored as registered: {r}"
            );
            if mode == 3 {
                let got = message_to(&ser, &caller, &phone, &user, "db3-1");
                let got = got.unwrap_or_else(|| panic!("db_mode 3: {}", ser.log_text()));
                assert!(
                    got.starts_with(&format!("MESSAGE sip:{user}@192.168.1.20:5060 SIP/2.0")),
                    "{got}"
                );
            }
            ser.stop();
        }
        // A new server on the same database (another port) reaches the phone where its
        // REGISTER came from.
        let ser = Ser::start(&format!("nat-db{mode}b"), &s, 0, 2, "auto");
        let got = message_to(&ser, &caller, &phone, &user, &format!("db{mode}-2"));
        let got =
            got.unwrap_or_else(|| panic!("db_mode {mode} after a restart: {}", ser.log_text()));
        assert!(
            got.starts_with(&format!("MESSAGE sip:{user}@192.168.1.20:5060 SIP/2.0")),
            "{got}"
        );
    }
}

/// Contacts, SDP bodies and aliases that do not parse are a false test or a false function,
/// never a crash: ser answers afterwards.
#[test]
fn malformed_contacts_sdp_and_aliases_do_not_stop_ser() {
    let ser = Ser::start("nat-bad", &script(""), 0, 1, "auto");
    let peer = Peer::new();
    let bodies = [
        ("<sip:a@192.168.1.20:5060", "c=IN IP4\r\nc=\r\no=\r\n"),
        ("sip:@", "v=0\r\nc=IN IP4 999.1.1.1/x/y\r\n"),
        ("<tel:+123>", "\u{1}\u{2}c=IN IP6 ::::\r\n"),
        ("*", "c=IN IP4 192.168.1.1"),
    ];
    for (i, (contact, body)) in bodies.iter().enumerate() {
        for test in ["contact", "alias"] {
            let m = format!(
                "INVITE sip:x@127.0.0.1:9 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-bad{i}{test};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:a@example.org>;tag=b{i}\r\n\
                 To: <sip:x@127.0.0.1:9>\r\n\
                 Call-ID: bad-{i}-{test}\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: {contact}\r\n\
                 X-Test: {test}\r\n\
                 Content-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            peer.send(ser.addr(), m.as_bytes());
        }
    }
    let bye = request(
        "BYE",
        "sip:x@127.0.0.1:9;alias=zz~1~1",
        peer.port(),
        "bad-bye",
        "",
    );
    peer.send(ser.addr(), bye.as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    let probe = request(
        "OPTIONS",
        &format!("sip:rport@{}", ser.addr()),
        9,
        "alive",
        "",
    );
    let _ = drain(&peer, 100);
    peer.send(ser.addr(), probe.as_bytes());
    let r = final_reply(&peer, Duration::from_secs(3)).expect("ser still answers");
    assert!(r.starts_with("SIP/2.0 200 Forced"), "{r}");
    assert!(!ser.log_text().contains("panicked"), "{}", ser.log_text());
}

/// msilo's m_dump after fix_nated_register delivers the stored message to where the phone's
/// REGISTER came from, not to its private Contact.
#[cfg(all(feature = "msilo", feature = "sqlite"))]
#[test]
fn offline_messages_reach_a_natted_phone_at_its_source_address() {
    let dir = temp_dir("nat-msilo");
    let s = format!(
        r#"loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
loadmodule "modules/nathelper/nathelper.so"
loadmodule "modules/msilo/msilo.so"
modparam("msilo", "db_url", "sqlite://{}/silo.db")
modparam("tm", "fr_timer", 2)
route {{
    if (method == "REGISTER") {{
        if (nat_uac_test("19")) {{ fix_nated_register(); }};
        save("location");
        m_dump();
        break;
    }};
    if (!lookup("location")) {{
        if (!t_newtran()) {{ sl_reply_error(); break; }};
        if (m_store("0")) {{ t_reply("202", "Accepted"); }} else {{ t_reply("503", "Not Stored"); }};
        break;
    }};
    t_relay();
}}
"#,
        dir.path().display()
    );
    let ser = Ser::start("nat-msilo", &s, 0, 2, "auto");
    let sender = Peer::new();
    let body = "hello behind the NAT";
    let m = format!(
        "MESSAGE sip:natmsg@{a} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-m1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:sender@example.org>;tag=m1\r\n\
         To: <sip:natmsg@{a}>\r\n\
         Call-ID: nat-msilo-1\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len(),
        a = ser.addr(),
        p = sender.port()
    );
    sender.send(ser.addr(), m.as_bytes());
    let r = final_reply(&sender, Duration::from_secs(3)).expect("MESSAGE answered");
    assert_eq!(status(&r), Some(202), "{r}\n{}", ser.log_text());
    let phone = Peer::new();
    let r = register(
        &phone,
        ser.addr(),
        "natmsg",
        "192.168.1.20:5060",
        "192.168.1.20:5060",
    );
    assert_eq!(status(&r), Some(200), "{r}");
    let got = recv_request(&phone, "MESSAGE");
    assert!(
        got.starts_with("MESSAGE sip:natmsg@192.168.1.20:5060 SIP/2.0\r\n"),
        "{got}"
    );
    assert!(got.contains(body), "{got}");
    phone.send(ser.addr(), response_to(&got, 200, "OK", "ph").as_bytes());
}
