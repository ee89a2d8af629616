//! msilo with real processes on loopback (issue 20): MESSAGEs to a user who is offline are
//! stored (202 Accepted) and delivered to the contact of the user's next REGISTER.
//!
//! - A sipp UAC's MESSAGE gets 202; a REGISTER binding a sipp UAS's address gets it
//!   delivered there, from the original sender, with the original body and the date.
//! - Raw UDP peers: two messages arrive in the order sent, each deleted only after its 2xx
//!   (serctl counts them down), with Date header and "[Offline message - ...]" prefix; the
//!   metrics count them.
//! - A ser killed with SIGKILL right after the 202 loses nothing: the next ser delivers it.
//! - A delivery answered 480, or not answered at all (tm's fr_timer), keeps the message
//!   for the next registration, which gets it.
//! - `expire_time` 2 s with `check_time` 1 s: the message is removed unsent and counted.
//! - `max_messages` 2: the third MESSAGE is refused (the script answers 480).
//! - serctl msilo list/count/rm; a body that is not UTF-8 is refused with a clear log line.
//! - `from_address`: the sender gets a notice at its Contact.
//! - A user registered over TCP gets it over that connection, not at its Contact.
//! - The example's failure route stores a MESSAGE the registered user's phone refused, and
//!   its 202 goes out only once the row is committed (killed at the 202, nothing is lost).
//! - The same store, refusal and delivery over a real MariaDB.
//!
//! The script is the msilo example of SER's README (store after t_newtran when lookup
//! fails, dump after save), with its module paths and addresses of this machine.

// Only in builds with the `msilo` feature, on SQLite (the default).
#![cfg(all(feature = "msilo", feature = "sqlite"))]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::sipp::{require_sipp, scenario, uac, Uas};
use common::*;

/// The seeds' msilo example, with `extra` module parameters.
fn script(fifo: &Path, db_url: &str, extra: &str, metrics: Option<SocketAddr>) -> String {
    let metrics = metrics.map_or(String::new(), |m| format!("metrics_listen=\"{m}\"\n"));
    format!(
        r#"fifo="{fifo}"
debug=2
{metrics}loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
loadmodule "modules/textops/textops.so"
loadmodule "modules/msilo/msilo.so"

modparam("usrloc", "db_mode", 0)
modparam("msilo", "db_url", "{db_url}")
modparam("tm", "fr_timer", 2)
{extra}
route{{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        break;
    }};
    if (uri==myself) {{
        if (method=="REGISTER") {{
            save("location");
            log("REGISTER received -> dumping messages with MSILO\n");
            if (m_dump()) {{
                log("MSILO: offline messages dumped - if they were\n");
            }} else {{
                log("MSILO: no offline messages dumped\n");
            }};
            break;
        }};
        if (!lookup("location")) {{
            if (!t_newtran()) {{
                sl_reply_error();
                break;
            }};
            if (!method=="MESSAGE") {{
                if (!t_reply("404", "Not found")) {{
                    sl_reply_error();
                }};
                break;
            }};
            log("MESSAGE received -> storing using MSILO\n");
            if (m_store("0")) {{
                log("MSILO: offline message stored\n");
                if (!t_reply("202", "Accepted")) {{
                    sl_reply_error();
                }};
            }} else {{
                log("MSILO: offline message NOT stored\n");
                if (!t_reply("480", "Temporarily Unavailable")) {{
                    sl_reply_error();
                }};
            }};
            break;
        }};
        # if the downstream UA does not support MESSAGE requests go to failure_route[1]
        t_on_failure("1");
        t_relay();
        break;
    }};
    t_relay();
}}

failure_route[1] {{
    # forwarding failed -- check if the request is a MESSAGE
    if (!method=="MESSAGE") {{
        break;
    }};
    log(1, "MSILO: the downstream UA doesn't support MESSAGEs\n");
    # we have changed the R-URI with the contact address, ignore it now
    if (m_store("1")) {{
        log("MSILO: offline message stored\n");
        t_reply("202", "Accepted");
    }} else {{
        log("MSILO: offline message NOT stored\n");
        t_reply("503", "Service Unavailable");
    }};
}}
"#,
        fifo = fifo.display(),
    )
}

/// One ser with the msilo script, its database in `db`.
fn start(tag: &str, fifo: &Path, db: &Path, extra: &str, metrics: Option<SocketAddr>) -> Ser {
    let url = format!("sqlite://{}", db.display());
    start_url(tag, fifo, &url, extra, metrics)
}

/// [`start`] with the silo at `db_url`.
fn start_url(
    tag: &str,
    fifo: &Path,
    db_url: &str,
    extra: &str,
    metrics: Option<SocketAddr>,
) -> Ser {
    let ser = Ser::start(tag, &script(fifo, db_url, extra, metrics), 0, 2, "auto");
    wait_fifo(fifo, &ser);
    ser
}

/// A MESSAGE from Alice's peer to `user` at ser, with `body`.
fn message(ser: &Ser, peer: &Peer, user: &str, call_id: &str, body: &[u8]) -> Vec<u8> {
    let port = ser.port;
    let mut m = format!(
        "MESSAGE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@127.0.0.1>;tag=a-{call_id}\r\n\
         To: <sip:{user}@127.0.0.1:{port}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Contact: <sip:alice@127.0.0.1:{p}>\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\
         Content-Length: {len}\r\n\r\n",
        p = peer.port(),
        len = body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

/// Sends a MESSAGE and returns the final status ser answered.
fn send_message(ser: &Ser, alice: &Peer, user: &str, call_id: &str, body: &str) -> u16 {
    send_raw_message(ser, alice, user, call_id, body.as_bytes())
}

fn send_raw_message(ser: &Ser, alice: &Peer, user: &str, call_id: &str, body: &[u8]) -> u16 {
    alice.send(ser.addr(), &message(ser, alice, user, call_id, body));
    let r = final_reply(alice, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no final reply to {call_id}:\n{}", ser.log_text()));
    status(&r).unwrap_or(0)
}

/// A REGISTER of `user` binding `contact_port` (on 127.0.0.1); returns its final status.
fn register(ser: &Ser, from: &Peer, user: &str, contact_port: u16, call_id: &str) -> u16 {
    let port = ser.port;
    let r = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1:{port}>;tag=r-{call_id}\r\n\
         To: <sip:{user}@127.0.0.1:{port}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:{contact_port}>\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n",
        p = from.port()
    );
    from.send(ser.addr(), r.as_bytes());
    let reply = final_reply(from, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no reply to REGISTER:\n{}", ser.log_text()));
    status(&reply).unwrap_or(0)
}

/// The next MESSAGE `peer` receives within `ms` (None when none comes).
fn next_message(peer: &Peer, ms: u64) -> Option<String> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        if let Some(m) = peer.recv_timeout(100) {
            if m.starts_with("MESSAGE ") {
                return Some(m);
            }
        }
    }
    None
}

/// Answers a request ser sent to `peer`.
fn answer(ser: &Ser, peer: &Peer, req: &str, code: u16, reason: &str) {
    peer.send(
        ser.addr(),
        response_to(req, code, reason, "bob-tag").as_bytes(),
    );
}

fn body_of(m: &str) -> &str {
    m.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    m.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `serctl msilo count <user>`'s number.
fn stored(fifo: &Path, user: &str) -> u64 {
    let (code, out) = serctl_joined(fifo, &["msilo", "count", user]);
    assert_eq!(code, 0, "{out}");
    out.trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("count: {out}"))
}

/// Waits (bounded) until `user` has `n` messages stored.
fn wait_stored(fifo: &Path, user: &str, n: u64, ser: &Ser) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if stored(fifo, user) == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{user} has {} stored, not {n}:\n{}",
        stored(fifo, user),
        ser.log_text()
    );
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    http_get_body(addr, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn sipp_message_to_an_offline_user_is_delivered_when_it_registers() {
    require_sipp();
    let dir = temp_dir("msilo-sipp");
    let fifo = fifo_path("msilo-sipp");
    let ser = start("msilo-sipp", &fifo, &dir.join("silo.db"), "", None);
    let scen = scenario(dir.path(), "uac-message.xml", "bob");
    let (ok, out) = uac(&scen, ser.port, 1, 1, Duration::from_secs(10));
    assert!(ok, "sipp UAC did not get 202:\n{out}\n{}", ser.log_text());
    assert_eq!(stored(&fifo, "bob"), 1);
    // Bob's phone: a sipp UAS at a port of its own, registered by a raw REGISTER.
    let port = free_port();
    let uas = Uas::start(
        &scenario(dir.path(), "uas-msilo.xml", "bob"),
        port,
        1,
        dir.path(),
    );
    let reg = Peer::new();
    assert_eq!(register(&ser, &reg, "bob", port, "reg-sipp-1"), 200);
    let (ok, log) = uas.finish(Duration::from_secs(15));
    assert!(
        ok,
        "sipp UAS did not take the message:\n{log}\n{}",
        ser.log_text()
    );
    wait_stored(&fifo, "bob", 0, &ser);
}

#[test]
fn messages_are_delivered_in_order_and_deleted_after_their_2xx() {
    let dir = temp_dir("msilo-order");
    let fifo = fifo_path("msilo-order");
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let ser = start("msilo-order", &fifo, &dir.join("silo.db"), "", Some(maddr));
    let alice = Peer::new();
    assert_eq!(
        send_message(&ser, &alice, "bob", "m1", "first h\u{e9}llo"),
        202
    );
    assert_eq!(send_message(&ser, &alice, "bob", "m2", "second"), 202);
    assert_eq!(stored(&fifo, "bob"), 2);
    // Bob is not registered: nothing goes anywhere yet. He registers from his phone.
    let bob = Peer::new();
    assert_eq!(register(&ser, &bob, "bob", bob.port(), "reg-order-1"), 200);
    let m1 = next_message(&bob, 5000).unwrap_or_else(|| panic!("no MESSAGE:\n{}", ser.log_text()));
    assert!(
        m1.starts_with(&format!("MESSAGE sip:bob@127.0.0.1:{} ", bob.port())),
        "to the contact that registered: {m1}"
    );
    let from = header(&m1, "From").expect("From");
    assert!(
        from.starts_with("\"Alice\" <sip:alice@127.0.0.1>;tag="),
        "{from}"
    );
    assert_eq!(
        header(&m1, "Content-Type"),
        Some("text/plain; charset=UTF-8")
    );
    assert!(
        header(&m1, "Date").is_some_and(|d| d.ends_with(" GMT")),
        "{m1}"
    );
    let b1 = body_of(&m1);
    assert!(
        b1.starts_with("[Offline message - ") && b1.ends_with("] first h\u{e9}llo"),
        "{b1}"
    );
    // Not deleted before its 2xx; the second waits for the first.
    assert_eq!(stored(&fifo, "bob"), 2);
    assert!(
        next_message(&bob, 300).is_none_or(|m| body_of(&m) == b1),
        "one at a time"
    );
    answer(&ser, &bob, &m1, 200, "OK");
    let m2 = next_message(&bob, 5000).expect("the second MESSAGE");
    assert!(body_of(&m2).ends_with("] second"), "{m2}");
    answer(&ser, &bob, &m2, 200, "OK");
    wait_stored(&fifo, "bob", 0, &ser);
    assert_eq!(metric(maddr, "ser_msilo_stored_total"), 2);
    assert_eq!(metric(maddr, "ser_msilo_delivered_total"), 2);
    assert_eq!(metric(maddr, "ser_msilo_failed_total"), 0);
    // Registering again delivers nothing more.
    assert_eq!(register(&ser, &bob, "bob", bob.port(), "reg-order-2"), 200);
    assert!(next_message(&bob, 800).is_none());
}

#[test]
fn the_sender_is_told_the_message_was_stored_when_from_address_is_set() {
    let dir = temp_dir("msilo-notice");
    let fifo = fifo_path("msilo-notice");
    let extra = "modparam(\"msilo\", \"from_address\", \"sip:registrar@127.0.0.1\")\n\
                 modparam(\"msilo\", \"offline_message\", \"*** $rU is offline\")\n";
    let ser = start("msilo-notice", &fifo, &dir.join("silo.db"), extra, None);
    let alice = Peer::new();
    alice.send(
        ser.addr(),
        &message(&ser, &alice, "bob", "n1", b"are you there?"),
    );
    // The 202, and the notice at Alice's Contact (use_contact, the default).
    let mut got_202 = false;
    let mut notice = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (!got_202 || notice.is_none()) && Instant::now() < deadline {
        match alice.recv_timeout(100) {
            Some(m) if status(&m) == Some(202) => got_202 = true,
            Some(m) if m.starts_with("MESSAGE ") => notice = Some(m),
            _ => {}
        }
    }
    assert!(got_202, "{}", ser.log_text());
    let n = notice.unwrap_or_else(|| panic!("no notice:\n{}", ser.log_text()));
    assert!(
        n.starts_with(&format!("MESSAGE sip:alice@127.0.0.1:{} ", alice.port())),
        "{n}"
    );
    assert!(header(&n, "From").is_some_and(|f| f.starts_with("<sip:registrar@127.0.0.1>;tag=")));
    assert_eq!(header(&n, "Content-Type"), Some("text/plain"));
    assert_eq!(body_of(&n), "*** bob is offline");
    answer(&ser, &alice, &n, 200, "OK");
}

#[test]
fn a_stored_message_survives_kill_9() {
    let dir = temp_dir("msilo-kill");
    let fifo = fifo_path("msilo-kill");
    let db = dir.join("silo.db");
    let mut ser = start("msilo-kill", &fifo, &db, "", None);
    let alice = Peer::new();
    assert_eq!(
        send_message(&ser, &alice, "carol", "k1", "before the crash"),
        202
    );
    // SIGKILL right after the 202: no shutdown, no flush.
    assert!(signal(ser.child.id(), "KILL"));
    let _ = ser.child.wait();
    drop(ser);
    let _ = std::fs::remove_file(&*fifo);
    let ser = start("msilo-kill2", &fifo, &db, "", None);
    assert_eq!(stored(&fifo, "carol"), 1);
    let carol = Peer::new();
    assert_eq!(
        register(&ser, &carol, "carol", carol.port(), "reg-kill"),
        200
    );
    let m = next_message(&carol, 5000).unwrap_or_else(|| panic!("lost:\n{}", ser.log_text()));
    assert!(body_of(&m).ends_with("] before the crash"), "{m}");
    answer(&ser, &carol, &m, 200, "OK");
    wait_stored(&fifo, "carol", 0, &ser);
}

#[test]
fn a_failed_delivery_keeps_the_message_for_the_next_registration() {
    let dir = temp_dir("msilo-fail");
    let fifo = fifo_path("msilo-fail");
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let ser = start("msilo-fail", &fifo, &dir.join("silo.db"), "", Some(maddr));
    let alice = Peer::new();
    assert_eq!(send_message(&ser, &alice, "dave", "f1", "try again"), 202);
    let dave = Peer::new();
    // 1: the phone refuses it.
    assert_eq!(
        register(&ser, &dave, "dave", dave.port(), "reg-fail-1"),
        200
    );
    let m = next_message(&dave, 5000).expect("first try");
    answer(&ser, &dave, &m, 480, "Temporarily Unavailable");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stored(&fifo, "dave"), 1, "kept after a 480");
    // 2: the phone does not answer at all (tm gives up after fr_timer, 2 s).
    assert_eq!(
        register(&ser, &dave, "dave", dave.port(), "reg-fail-2"),
        200
    );
    let _ = next_message(&dave, 5000).expect("second try");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(maddr, "ser_msilo_failed_total") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(maddr, "ser_msilo_failed_total"),
        2,
        "{}",
        ser.log_text()
    );
    assert_eq!(stored(&fifo, "dave"), 1, "kept after a timeout");
    // Try 2's retransmissions still waiting in the phone's socket are not try 3.
    let _ = drain(&dave, 300);
    // 3: answered; gone. (The retransmissions of try 2 are over: tm stopped them.)
    assert_eq!(
        register(&ser, &dave, "dave", dave.port(), "reg-fail-3"),
        200
    );
    let m = next_message(&dave, 5000).expect("third try");
    assert!(body_of(&m).ends_with("] try again"));
    answer(&ser, &dave, &m, 200, "OK");
    wait_stored(&fifo, "dave", 0, &ser);
    assert_eq!(metric(maddr, "ser_msilo_delivered_total"), 1);
}

#[test]
fn expired_messages_are_removed_and_counted() {
    let dir = temp_dir("msilo-exp");
    let fifo = fifo_path("msilo-exp");
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let extra = "modparam(\"msilo\", \"expire_time\", 2)\nmodparam(\"msilo\", \"check_time\", 1)\n";
    let ser = start("msilo-exp", &fifo, &dir.join("silo.db"), extra, Some(maddr));
    let alice = Peer::new();
    assert_eq!(send_message(&ser, &alice, "erin", "e1", "too late"), 202);
    assert_eq!(stored(&fifo, "erin"), 1);
    wait_stored(&fifo, "erin", 0, &ser);
    assert_eq!(metric(maddr, "ser_msilo_expired_total"), 1);
    let erin = Peer::new();
    assert_eq!(register(&ser, &erin, "erin", erin.port(), "reg-exp"), 200);
    assert!(
        next_message(&erin, 1000).is_none(),
        "an expired message is not delivered"
    );
}

#[test]
fn max_messages_refuses_the_next_one() {
    let dir = temp_dir("msilo-max");
    let fifo = fifo_path("msilo-max");
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let extra = "modparam(\"msilo\", \"max_messages\", 2)\n";
    let ser = start("msilo-max", &fifo, &dir.join("silo.db"), extra, Some(maddr));
    let alice = Peer::new();
    assert_eq!(send_message(&ser, &alice, "fred", "x1", "one"), 202);
    assert_eq!(send_message(&ser, &alice, "fred", "x2", "two"), 202);
    assert_eq!(send_message(&ser, &alice, "fred", "x3", "three"), 480);
    assert_eq!(send_message(&ser, &alice, "gina", "x4", "other user"), 202);
    assert_eq!(stored(&fifo, "fred"), 2);
    assert_eq!(metric(maddr, "ser_msilo_refused_total"), 1);
    assert!(
        ser.log_text().contains("max_messages"),
        "{}",
        ser.log_text()
    );
}

#[test]
fn serctl_lists_counts_and_deletes_and_bad_bodies_are_refused() {
    let dir = temp_dir("msilo-ctl");
    let fifo = fifo_path("msilo-ctl");
    let ser = start("msilo-ctl", &fifo, &dir.join("silo.db"), "", None);
    let alice = Peer::new();
    assert_eq!(send_message(&ser, &alice, "hank", "c1", "one"), 202);
    assert_eq!(send_message(&ser, &alice, "hank", "c2", "two"), 202);
    assert_eq!(send_message(&ser, &alice, "ivy", "c3", "three"), 202);
    let (code, out) = serctl_joined(&fifo, &["msilo", "list", "hank"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("user=hank") && lines[0].contains("from=\"Alice\" <sip:alice@127.0.0.1>"),
        "{out}"
    );
    assert!(
        lines[0].contains("type=text/plain; charset=UTF-8 bytes=3"),
        "{out}"
    );
    let (code, out) = serctl_joined(&fifo, &["msilo", "count"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["hank: 2", "ivy: 1"]);
    // One message by its mid, then the rest of the user's.
    let mid = lines[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mid="))
        .expect("mid");
    let (code, out) = serctl_joined(&fifo, &["msilo", "rm", "hank", mid]);
    assert_eq!((code, out.trim()), (0, "hank: 1 deleted"));
    let (code, out) = serctl_joined(&fifo, &["msilo", "rm", "sip:hank@127.0.0.1"]);
    assert_eq!((code, out.trim()), (0, "hank: 1 deleted"));
    assert_eq!(stored(&fifo, "hank"), 0);
    assert_eq!(stored(&fifo, "ivy"), 1);
    // A body that is not UTF-8 text, and an empty one: not stored, and the log says why.
    assert_eq!(
        send_raw_message(&ser, &alice, "ivy", "c4", b"\xff\xfe binary"),
        480
    );
    assert_eq!(send_message(&ser, &alice, "ivy", "c5", ""), 480);
    assert_eq!(stored(&fifo, "ivy"), 1);
    let log = ser.log_text();
    assert!(log.contains("is not UTF-8 text; not stored"), "{log}");
    assert!(log.contains("has no body; nothing stored"), "{log}");
}

/// The same over MariaDB (a private mariadbd, see common/mariadb.rs): the silo table made at
/// start, `max_messages`' single INSERT ... SELECT, delivery and deletion.
#[test]
fn mariadb_silo_stores_refuses_and_delivers() {
    let server = mariadb::shared();
    let url = server.database("msilo");
    let fifo = fifo_path("msilo-maria");
    let extra = "modparam(\"msilo\", \"max_messages\", 2)\n";
    let ser = start_url("msilo-maria", &fifo, &url, extra, None);
    let alice = Peer::new();
    assert_eq!(send_message(&ser, &alice, "jane", "d1", "eins"), 202);
    assert_eq!(
        send_message(&ser, &alice, "jane", "d2", "zwei \u{fc}ber"),
        202
    );
    assert_eq!(send_message(&ser, &alice, "jane", "d3", "drei"), 480);
    assert_eq!(stored(&fifo, "jane"), 2);
    let jane = Peer::new();
    assert_eq!(register(&ser, &jane, "jane", jane.port(), "reg-maria"), 200);
    for want in ["] eins", "] zwei \u{fc}ber"] {
        let m = next_message(&jane, 5000).unwrap_or_else(|| panic!("{}", ser.log_text()));
        assert!(body_of(&m).ends_with(want), "{m}");
        answer(&ser, &jane, &m, 200, "OK");
    }
    wait_stored(&fifo, "jane", 0, &ser);
}

/// Bad parameter values and arguments stop `ser -c` with the script's line.
#[test]
fn bad_parameters_and_arguments_are_refused_with_their_line() {
    let dir = temp_dir("msilo-check");
    let cfg = dir.join("bad.cfg");
    for (line, what) in [
        ("modparam(\"msilo\", \"max_messages\", -1)", "max_messages"),
        ("modparam(\"msilo\", \"db_table\", \"silo;x\")", "db_table"),
        ("modparam(\"msilo\", \"expire_time\", 0)", "expire_time"),
        (
            "modparam(\"msilo\", \"from_address\", \"not a uri\")",
            "from_address",
        ),
        ("route { m_store(\"7\"); }", "m_store"),
        ("route { m_dump(\"nobody\"); }", "SIP URI"),
    ] {
        let text = format!(
            "loadmodule \"modules/tm/tm.so\"\nloadmodule \"modules/msilo/msilo.so\"\n{line}\n"
        );
        std::fs::write(&cfg, text).expect("write cfg");
        let (ok, out) = run_bounded(
            std::process::Command::new(SER)
                .arg("-c")
                .arg("-f")
                .arg(&cfg),
            Duration::from_secs(10),
        );
        assert!(!ok, "{line} accepted:\n{out}");
        assert!(
            out.contains(&format!("{}:3:", cfg.display())) && out.contains(what),
            "{line}: {out}"
        );
    }
    // Kamailio's spellings load.
    let text = "loadmodule \"modules/tm/tm.so\"\nloadmodule \"modules/msilo/msilo.so\"\n\
                route { m_store(\"$tu\"); m_store(\"sip:bob@example.org\"); m_dump(\"$fu\"); }\n";
    std::fs::write(&cfg, text).expect("write cfg");
    let (ok, out) = run_bounded(
        std::process::Command::new(SER)
            .arg("-c")
            .arg("-f")
            .arg(&cfg),
        Duration::from_secs(10),
    );
    assert!(ok, "{out}");
}

/// A MESSAGE over `max_message_size` never reaches m_store: 513, and nothing stored.
#[test]
fn a_message_over_max_message_size_gets_513() {
    let dir = temp_dir("msilo-big");
    let fifo = fifo_path("msilo-big");
    let ser = start(
        "msilo-big",
        &fifo,
        &dir.join("silo.db"),
        "max_message_size=2048\n",
        None,
    );
    let alice = Peer::new();
    let big = "x".repeat(3000);
    assert_eq!(send_message(&ser, &alice, "kim", "big1", &big), 513);
    assert_eq!(send_message(&ser, &alice, "kim", "big2", "small"), 202);
    assert_eq!(stored(&fifo, "kim"), 1);
}

/// A user who registers over TCP gets the stored message over that connection, whatever
/// its Contact says (here a port where nothing listens).
#[test]
fn a_user_registered_over_tcp_gets_the_message_on_its_connection() {
    use common::stream::Wire;
    let dir = temp_dir("msilo-tcp");
    let fifo = fifo_path("msilo-tcp");
    let ser = start("msilo-tcp", &fifo, &dir.join("silo.db"), "", None);
    let alice = Peer::new();
    assert_eq!(send_message(&ser, &alice, "lee", "t1", "over tcp"), 202);
    let tcp = ser.listen("tcp");
    let mut w = Wire::connect(tcp);
    let local = w.s.local_addr().expect("local addr");
    let reg = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-regtcp\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:lee@127.0.0.1:{port}>;tag=r-tcp\r\n\
         To: <sip:lee@127.0.0.1:{port}>\r\n\
         Call-ID: reg-tcp\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:lee@127.0.0.1:9;transport=tcp>\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n",
        port = tcp.port()
    );
    assert!(w.send(reg.as_bytes()));
    let r = w.next(Duration::from_secs(5)).expect("REGISTER reply");
    assert_eq!(status(&r), Some(200), "{r}");
    let m = w
        .next(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no MESSAGE on the connection:\n{}", ser.log_text()));
    assert!(
        m.starts_with("MESSAGE sip:lee@127.0.0.1:9;transport=tcp "),
        "{m}"
    );
    assert!(
        header(&m, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TCP ")),
        "{m}"
    );
    assert!(body_of(&m).ends_with("] over tcp"), "{m}");
    assert!(w.send(response_to(&m, 200, "OK", "lee-tag").as_bytes()));
    wait_stored(&fifo, "lee", 0, &ser);
}

/// The example's failure route: a registered user whose phone refuses the MESSAGE (here
/// 415) gets it stored (`m_store("1")`: the Request-URI as received, not the contact) and
/// the sender gets 202; the next registration delivers it. Strictly: the 202 only goes out
/// once the row is committed (the failure route pauses for its INSERT). The test holds the
/// database's write lock while the phone refuses: no 202 may come while it is held; once it
/// is released the 202 comes, ser is killed with SIGKILL the moment it arrives, and the next
/// ser on the same database delivers the message.
#[test]
fn a_message_the_phone_refuses_is_stored_by_the_failure_route_before_the_202() {
    let dir = temp_dir("msilo-frt");
    let fifo = fifo_path("msilo-frt");
    let db = dir.join("silo.db");
    let mut ser = start("msilo-frt", &fifo, &db, "", None);
    let mona = Peer::new();
    assert_eq!(register(&ser, &mona, "mona", mona.port(), "reg-frt-1"), 200);
    let alice = Peer::new();
    alice.send(
        ser.addr(),
        &message(&ser, &alice, "mona", "fr1", b"plain text only?"),
    );
    let relayed = next_message(&mona, 5000).unwrap_or_else(|| panic!("{}", ser.log_text()));
    // A writer of our own holds the silo: ser's INSERT waits (its busy timeout is 5 s).
    let lock = rusqlite::Connection::open(&db).expect("open the silo");
    lock.execute_batch("BEGIN IMMEDIATE").expect("write lock");
    answer(&ser, &mona, &relayed, 415, "Unsupported Media Type");
    // The sender retransmits meanwhile: absorbed by the waiting transaction.
    std::thread::sleep(Duration::from_millis(200));
    alice.send(
        ser.addr(),
        &message(&ser, &alice, "mona", "fr1", b"plain text only?"),
    );
    if let Some(r) = final_reply(&alice, Duration::from_millis(800)) {
        panic!(
            "a final before the message was stored:\n{r}\n{}",
            ser.log_text()
        );
    }
    lock.execute_batch("ROLLBACK").expect("release");
    drop(lock);
    let r = final_reply(&alice, Duration::from_secs(5)).expect("final reply");
    // SIGKILL the moment the 202 is here: no shutdown, no flush.
    assert!(signal(ser.child.id(), "KILL"));
    let _ = ser.child.wait();
    assert_eq!(status(&r), Some(202), "{r}\n{}", ser.log_text());
    assert!(
        next_message(&mona, 200).is_none(),
        "the retransmission was not relayed again"
    );
    drop(ser);
    let _ = std::fs::remove_file(&*fifo);
    let ser = start("msilo-frt2", &fifo, &db, "", None);
    assert_eq!(
        stored(&fifo, "mona"),
        1,
        "the acknowledged message was lost"
    );
    assert_eq!(register(&ser, &mona, "mona", mona.port(), "reg-frt-2"), 200);
    let m = next_message(&mona, 5000).expect("delivered");
    assert!(body_of(&m).ends_with("] plain text only?"), "{m}");
    answer(&ser, &mona, &m, 200, "OK");
    wait_stored(&fifo, "mona", 0, &ser);
}
