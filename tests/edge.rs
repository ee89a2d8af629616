//! ser on a public address: loops answered 482 (RFC 3261 16.3 step 4) whether the request was
//! relayed statelessly or in a transaction, spirals let through, REGISTERs that bind a phone
//! to ser itself refused, and an address of record's bindings capped.
//!
//! Every wait is bounded; each ser is stopped by PID when its test ends.

mod common;

use std::time::Duration;

use common::*;

/// The transactions a running ser has created ("Total: N" of `t_stats`).
fn transactions(fifo: &std::path::Path) -> u64 {
    let (code, out, err) = serctl(fifo, &["fifo", "t_stats"]);
    assert_eq!(code, 0, "{err}");
    out.split("Total: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in {out}"))
}

fn with_fifo(fifo: &std::path::Path, script: &str) -> String {
    format!("fifo=\"{}\"\n{script}", fifo.display())
}

const RELAY_TO_URI: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
route {
    # a spiral: the request comes back with another user, and is answered then
    if (uri=~"^sip:spiral-b@") { sl_send_reply("200", "Spiral Ended"); break; };
    if (uri=~"^sip:spiral-a@") { rewriteuser("spiral-b"); };
    if (uri=~"^sip:stateless@") { forward(uri:host, uri:port); break; };
    t_relay();
}
"#;

#[test]
fn a_request_relayed_back_to_ser_gets_482_and_a_spiral_goes_on() {
    let fifo = fifo_path("edge-loop");
    let ser = Ser::start("edge-loop", &with_fifo(&fifo, RELAY_TO_URI), 0, 2, "auto");
    wait_fifo(&fifo, &ser);
    let me = ser.addr();
    let p = Peer::new();
    // t_relay to the Request-URI, which is ser itself: the second pass finds our Via with the
    // loop mark of the request as it came then, and answers 482.
    let uri = format!("sip:looper@{me}");
    p.send(
        me,
        request("INVITE", &uri, p.port(), "loop-1", "").as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", ser.log_text()));
    assert_eq!(status(&r), Some(482), "{r}");
    // One transaction for the first pass; the loop was refused before a second one.
    assert!(transactions(&fifo) <= 2, "{}", transactions(&fifo));
    // The same statelessly.
    let uri = format!("sip:stateless@{me}");
    p.send(
        me,
        request("OPTIONS", &uri, p.port(), "loop-2", "").as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).expect("a reply to the stateless loop");
    assert_eq!(status(&r), Some(482), "{r}");
    // A spiral (the user part changes on the first pass) is no loop.
    let uri = format!("sip:spiral-a@{me}");
    p.send(
        me,
        request("OPTIONS", &uri, p.port(), "spiral-1", "").as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).expect("a reply to the spiral");
    assert_eq!(status(&r), Some(200), "{r}");
    assert!(r.contains("Spiral Ended"), "{r}");
}

const REGISTRAR: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_contacts", 2)
route {
    if (method=="REGISTER") { save("location"); break; };
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    t_relay();
}
"#;

fn register(p: &Peer, ser: &Ser, user: &str, contact: &str, cseq: u32) -> String {
    let uri = format!("sip:{}", ser.addr());
    let msg = format!(
        "REGISTER {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reg-{user}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=r-{user}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: reg-{user}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n",
        port = p.port()
    );
    p.send(ser.addr(), msg.as_bytes());
    final_reply(p, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", ser.log_text()))
}

#[test]
fn a_contact_pointing_at_ser_is_refused_and_bindings_are_capped() {
    let fifo = fifo_path("edge-reg");
    let ser = Ser::start("edge-reg", &with_fifo(&fifo, REGISTRAR), 0, 1, "auto");
    wait_fifo(&fifo, &ser);
    let p = Peer::new();
    let me = ser.addr();
    // sipvicious' svwar registers extensions with ser's own address as the Contact.
    let r = register(&p, &ser, "100", &format!("sip:100@{me}"), 1);
    assert_eq!(status(&r), Some(403), "{r}");
    assert!(r.contains("Contact Points At This Server"), "{r}");
    // Nothing was bound: an INVITE to 100 is a 404, not a loop.
    p.send(
        me,
        request("INVITE", &format!("sip:100@{me}"), p.port(), "inv-100", "").as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).expect("a reply");
    assert_eq!(status(&r), Some(404), "{r}");
    // Two bindings fit; a third is 503 with Retry-After; refreshing a bound one is fine.
    let c = |n: u16| format!("sip:101@127.0.0.1:{n}");
    assert_eq!(status(&register(&p, &ser, "101", &c(40001), 1)), Some(200));
    assert_eq!(status(&register(&p, &ser, "101", &c(40002), 2)), Some(200));
    let r = register(&p, &ser, "101", &c(40003), 3);
    assert_eq!(status(&r), Some(503), "{r}");
    assert!(r.contains("Retry-After: "), "{r}");
    assert_eq!(status(&register(&p, &ser, "101", &c(40001), 4)), Some(200));
}

#[test]
fn with_self_contacts_allowed_the_loop_still_ends_at_482() {
    let fifo = fifo_path("edge-self");
    let script = REGISTRAR.replace(
        "modparam(\"registrar\", \"max_contacts\", 2)",
        "modparam(\"registrar\", \"refuse_self_contact\", 0)",
    );
    let ser = Ser::start("edge-self", &with_fifo(&fifo, &script), 0, 2, "auto");
    wait_fifo(&fifo, &ser);
    let p = Peer::new();
    let me = ser.addr();
    let r = register(&p, &ser, "100", &format!("sip:100@{me}"), 1);
    assert_eq!(status(&r), Some(200), "{r}");
    // INVITE 100 → lookup → ser itself → lookup again → ... : 482 on the first return.
    p.send(
        me,
        request("INVITE", &format!("sip:100@{me}"), p.port(), "inv-self", "").as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", ser.log_text()));
    assert_eq!(status(&r), Some(482), "{r}");
    assert!(transactions(&fifo) <= 2, "{}", transactions(&fifo));
}

#[test]
fn a_message_over_max_message_size_gets_513_on_udp_and_tcp() {
    use std::io::{Read, Write};
    let script =
        "max_message_size=2000\nloadmodule \"sl.so\"\nroute { sl_send_reply(\"200\", \"ok\"); }\n";
    let ser = Ser::start("edge-size", script, 0, 1, "auto");
    let p = Peer::new();
    let me = ser.addr();
    let pad = format!("X-Pad: {}\r\n", "p".repeat(2500));
    p.send(
        me,
        request("OPTIONS", &format!("sip:a@{me}"), p.port(), "big-1", &pad).as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).expect("a reply to the large datagram");
    assert_eq!(status(&r), Some(513), "{r}");
    p.send(
        me,
        request("OPTIONS", &format!("sip:a@{me}"), p.port(), "small-1", "").as_bytes(),
    );
    let r = final_reply(&p, Duration::from_secs(5)).expect("a reply");
    assert_eq!(status(&r), Some(200), "{r}");
    // Over TCP: a head announcing a body past the limit is answered 513, then the close.
    let tcp = ser.listen("tcp");
    let mut s = std::net::TcpStream::connect(tcp).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let head = format!(
        "MESSAGE sip:a@{tcp} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-big-2\r\n\
         From: <sip:t@127.0.0.1>;tag=b2\r\nTo: <sip:a@{tcp}>\r\nCall-ID: big-2\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 5000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("write");
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(
        got.starts_with("SIP/2.0 513 Message Too Large\r\n"),
        "{got}"
    );
    assert!(got.contains("Call-ID: big-2"), "{got}");
}

#[test]
fn max_message_size_out_of_range_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("ser-edge-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("bad.cfg");
    std::fs::write(&cfg, "debug=0\nmax_message_size=100\nroute { drop; }\n").expect("write");
    let out = std::process::Command::new(SER)
        .args(["-c", "-f"])
        .arg(&cfg)
        .output()
        .expect("run ser -c");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("bad.cfg:2:"), "{err}");
    assert!(err.contains("512 to 65535"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// textops' append_to_reply: its header line goes on the request's local replies, stateless
/// and stateful (a 503 with Retry-After, as a ratelimit or an overloaded script sends).
#[test]
fn append_to_reply_goes_on_sl_and_t_replies() {
    let script = r#"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "textops.so"
route {
    append_to_reply("Retry-After: 7");
    if (method=="OPTIONS") { sl_send_reply("503", "Busy"); break; };
    t_newtran();
    t_reply("503", "Busy In Transaction");
}
"#;
    let ser = Ser::start("edge-a2r", script, 0, 1, "auto");
    let p = Peer::new();
    let me = ser.addr();
    for (method, reason) in [("OPTIONS", "Busy"), ("INVITE", "Busy In Transaction")] {
        let cid = format!("a2r-{method}");
        p.send(
            me,
            request(method, &format!("sip:a@{me}"), p.port(), &cid, "").as_bytes(),
        );
        let r =
            final_reply(&p, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", ser.log_text()));
        assert_eq!(status(&r), Some(503), "{r}");
        assert!(
            r.contains(reason) && r.contains("\r\nRetry-After: 7\r\n"),
            "{r}"
        );
    }
}
