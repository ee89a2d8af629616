//! SIP over TCP (and TLS, in tests/tls.rs) against a live `ser` on loopback: sipp callers
//! over TCP (one connection, and one per call) through a stateful record-routing proxy to a
//! UDP callee; keep-alive pings; framing errors (no Content-Length, oversize, lying lengths);
//! slow senders and idle connections cut off by their timeouts; the connection limit; and
//! through all of it, other clients (UDP and TCP) still served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::sipp::*;
use common::stream::*;
use common::*;

const RR_PROXY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (method == "OPTIONS" && uri == myself) { sl_send_reply("200", "OK"); break; };
    if (loose_route()) { t_relay(); break; };
    if (method == "INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); };
}
"#;

fn calls_over_tcp(backend: &str, mode: &str, tag: &str) {
    require_sipp();
    let dir = temp_dir(tag);
    let ser = Ser::start(tag, RR_PROXY, 0, 2, backend);
    let tcp_port = ser.listen("tcp").port();
    assert_eq!(tcp_port, ser.port, "UDP and TCP share the port");
    let uas_port = free_port();
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 10, &dir);
    let scen = scenario(&dir, "uac-rr.xml", &callee);
    let (ok, out) = run_bounded(
        std::process::Command::new("sipp")
            .arg("-sf")
            .arg(&scen)
            .arg(format!("127.0.0.1:{tcp_port}"))
            // Its own local port: sipp listens on 5060 by default, and the variants of this
            // test run side by side.
            .args(["-p", &free_port_udp_tcp().to_string()])
            .args(["-i", "127.0.0.1", "-t", mode, "-max_socket", "100"])
            .args(["-m", "10", "-r", "10"])
            .args(["-timeout", "20", "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-error_file", "/dev/null"]),
        Duration::from_secs(30),
    );
    assert!(
        ok,
        "caller over tcp ({mode}) failed:\n{out}\n{}",
        ser.log_text()
    );
    let (u_ok, u_log) = uas.finish(Duration::from_secs(20));
    assert!(u_ok, "UDP callee:\n{u_log}");
}

#[test]
fn sipp_over_one_tcp_connection_calls_a_udp_callee() {
    calls_over_tcp("auto", "t1", "tcp-t1");
}

#[test]
fn sipp_over_a_tcp_connection_per_call_calls_a_udp_callee() {
    calls_over_tcp("auto", "tn", "tcp-tn");
}

#[test]
fn sipp_over_tcp_on_the_portable_backend() {
    calls_over_tcp("portable", "tn", "tcp-portable");
}

#[test]
fn keepalive_ping_gets_a_pong_and_replies_come_back_on_the_connection() {
    let ser = Ser::start("tcp-ping", RR_PROXY, 0, 2, "auto");
    let mut s = tcp(ser.listen("tcp"));
    s.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    // Several Call-IDs: some are owned by the other shard, whose reply travels back here.
    for i in 0..6 {
        let r = options_over_tcp(&mut s, &ser, &format!("tcp-ping-{i}"))
            .unwrap_or_else(|| panic!("no reply\n{}", ser.log_text()));
        assert_eq!(status(&r), Some(200), "{r}");
        assert!(r.contains("SIP/2.0/TCP"), "{r}");
    }
    // Two messages in one write, split anywhere: both answered, in order.
    let local = s.local_addr().unwrap().port();
    let uri = format!("sip:{}", ser.listen("tcp"));
    let two = request("OPTIONS", &uri, local, "two-a", "").replace("/UDP", "/TCP")
        + &request("OPTIONS", &uri, local, "two-b", "").replace("/UDP", "/TCP");
    let (a, b) = two.as_bytes().split_at(two.len() / 2 + 7);
    s.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b).unwrap();
    let r1 = read_msg(&mut s).expect("first");
    let r2 = read_msg(&mut s).expect("second");
    assert!(r1.contains("two-a") && r2.contains("two-b"), "{r1}\n{r2}");
}

#[test]
fn framing_errors_close_only_their_connection() {
    let ser = Ser::start("tcp-framing", RR_PROXY, 0, 2, "auto");
    let addr = ser.listen("tcp");
    let mut good = tcp(addr);

    // No Content-Length: 400, then the server closes.
    let mut s = tcp(addr);
    let req = request("OPTIONS", &format!("sip:{addr}"), 1, "nolen", "")
        .replace("Content-Length: 0\r\n", "")
        .replace("/UDP", "/TCP");
    s.write_all(req.as_bytes()).unwrap();
    let r = read_msg(&mut s).unwrap_or_else(|| panic!("no 400\n{}", ser.log_text()));
    assert_eq!(status(&r), Some(400), "{r}");
    assert!(closed(&mut s), "closed after the 400");

    // A Content-Length past the size limit: closed.
    let mut s = tcp(addr);
    let req = request("OPTIONS", &format!("sip:{addr}"), 1, "huge", "")
        .replace("Content-Length: 0", "Content-Length: 9999999");
    s.write_all(req.as_bytes()).unwrap();
    assert!(closed(&mut s), "closed: message over the limit");

    // A head that never ends: closed once past the limit.
    let mut s = tcp(addr);
    let junk = vec![b'x'; 70_000];
    let _ = s.write_all(&junk);
    assert!(closed(&mut s), "closed: endless head");

    // A lying Content-Length (more than comes), then the peer closes: nothing to answer.
    let mut s = tcp(addr);
    let req = request("OPTIONS", &format!("sip:{addr}"), 1, "liar", "")
        .replace("Content-Length: 0", "Content-Length: 500");
    s.write_all(req.as_bytes()).unwrap();
    drop(s);

    // Bytes that frame but do not parse: a 400 or a drop, and the connection lives on.
    let mut s = tcp(addr);
    s.write_all(b"NOT SIP AT ALL\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    // Meanwhile the good client and UDP are served.
    let r = options_over_tcp(&mut good, &ser, "good-1").expect("good client served");
    assert_eq!(status(&r), Some(200));
    udp_options_ok(&ser, "udp-framing");
}

#[test]
fn slow_senders_and_idle_connections_are_cut_off() {
    let script = format!("tcp_read_timeout=1\ntcp_connection_lifetime=3\n{RR_PROXY}");
    let ser = Ser::start("tcp-timeouts", &script, 0, 1, "auto");
    let addr = ser.listen("tcp");
    let mut slow = tcp(addr);
    slow.write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP")
        .unwrap();
    let mut idle = tcp(addr);
    let r = options_over_tcp(&mut idle, &ser, "idle-1").expect("served");
    assert_eq!(status(&r), Some(200));
    let t0 = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    assert!(closed(&mut slow), "slow sender closed\n{}", ser.log_text());
    assert!(t0.elapsed() < Duration::from_secs(4));
    // The idle one outlives the read timeout, then goes after its lifetime.
    idle.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    assert!(
        closed(&mut idle),
        "idle connection closed\n{}",
        ser.log_text()
    );
}

#[test]
fn connections_past_the_limit_are_refused_and_others_served() {
    let script = format!("tcp_max_connections=4\n{RR_PROXY}");
    let ser = Ser::start("tcp-limit", &script, 0, 2, "auto");
    let addr = ser.listen("tcp");
    let mut held: Vec<TcpStream> = (0..4).map(|_| tcp(addr)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        let r = options_over_tcp(s, &ser, &format!("held-{i}")).expect("served");
        assert_eq!(status(&r), Some(200));
    }
    let mut extra = tcp(addr);
    assert!(
        options_over_tcp(&mut extra, &ser, "extra").is_none(),
        "the fifth connection is closed unanswered"
    );
    udp_options_ok(&ser, "udp-limit");
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = tcp(addr);
    let r = options_over_tcp(&mut again, &ser, "again").expect("a freed slot serves");
    assert_eq!(status(&r), Some(200));
}

#[test]
fn disable_tcp_and_explicit_listen_lines() {
    let ser = Ser::start(
        "tcp-disabled",
        &format!("disable_tcp=yes\n{RR_PROXY}"),
        0,
        1,
        "auto",
    );
    assert!(ser.listens("tcp").is_empty(), "{:?}", ser.sockets);
    let port = free_port_udp_tcp();
    let script = format!("listen=tcp:127.0.0.1:{port}\nlisten=udp:127.0.0.1:{port}\n{RR_PROXY}");
    let ser = Ser::start("tcp-listen", &script, 0, 1, "auto");
    assert_eq!(ser.listen("tcp").port(), port);
    assert_eq!(ser.listen("udp").port(), port);
    let mut s = tcp(ser.listen("tcp"));
    let r = options_over_tcp(&mut s, &ser, "explicit").expect("served");
    assert_eq!(status(&r), Some(200));
}

const REGISTRAR: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("tm", "fr_timer", 20)
modparam("tm", "fr_inv_timer", 30)
route {
    if (loose_route()) { t_relay(); break; };
    if (method == "REGISTER") { save("location"); break; };
    if (uri == myself) {
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    };
    if (method == "INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); };
}
"#;

fn register_over_tcp(s: &mut TcpStream, ser: &Ser, contact: &str) -> String {
    let me = s.local_addr().unwrap();
    let req = request(
        "REGISTER",
        &format!("sip:{}", ser.listen("tcp").ip()),
        me.port(),
        "reg-tcp",
        &format!("Contact: <{contact}>\r\nExpires: 300\r\n"),
    )
    .replace("/UDP", "/TCP")
    .replace("To: <sip:127.0.0.1", "To: <sip:phone@127.0.0.1");
    s.write_all(req.as_bytes()).unwrap();
    read_msg(s).unwrap_or_else(|| panic!("no answer to REGISTER\n{}", ser.log_text()))
}

#[test]
fn a_phone_registered_over_tcp_is_called_over_its_connection_until_it_closes() {
    let ser = Ser::start("tcp-flow", REGISTRAR, 0, 2, "auto");
    let mut phone = tcp(ser.listen("tcp"));
    // The Contact names a port nothing listens on (as behind a NAT): only the connection
    // the phone registered over reaches it.
    let r = register_over_tcp(&mut phone, &ser, "sip:phone@127.0.0.1:9;transport=tcp");
    assert_eq!(status(&r), Some(200), "{r}");

    let caller = Peer::new();
    for i in 0..3 {
        let invite = request(
            "INVITE",
            &format!("sip:phone@{}", ser.addr()),
            caller.port(),
            &format!("flow-call-{i}"),
            "",
        );
        caller.send(ser.addr(), invite.as_bytes());
        let got = relayed_invite(&mut phone, &ser);
        assert!(got.contains("SIP/2.0/TCP"), "our Via names TCP: {got}");
        assert!(
            got.contains(";transport=tcp"),
            "Record-Route names TCP: {got}"
        );
        answer_busy(&mut phone, &caller, &got);
    }

    // The phone's connection goes: so does its binding.
    drop(phone);
    std::thread::sleep(Duration::from_millis(300));
    let invite = request(
        "INVITE",
        &format!("sip:phone@{}", ser.addr()),
        caller.port(),
        "flow-gone",
        "",
    );
    caller.send(ser.addr(), invite.as_bytes());
    let fin = final_reply(&caller, Duration::from_secs(5)).expect("a final");
    assert_eq!(
        status(&fin),
        Some(404),
        "the binding went with the connection: {fin}"
    );
}

#[test]
fn a_udp_registration_with_a_tcp_contact_is_called_over_tcp() {
    let ser = Ser::start("tcp-contact", REGISTRAR, 0, 1, "auto");
    let phone_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let phone_addr = phone_listener.local_addr().unwrap();
    let reg = Peer::new();
    let req = request(
        "REGISTER",
        &format!("sip:{}", ser.addr().ip()),
        reg.port(),
        "reg-udp-tcp",
        &format!("Contact: <sip:phone@{phone_addr};transport=tcp>\r\nExpires: 300\r\n"),
    )
    .replace("To: <sip:127.0.0.1", "To: <sip:phone@127.0.0.1");
    reg.send(ser.addr(), req.as_bytes());
    let r = reg.recv().expect("200 to REGISTER");
    assert_eq!(status(&r), Some(200), "{r}");

    let caller = Peer::new();
    let invite = request(
        "INVITE",
        &format!("sip:phone@{}", ser.addr()),
        caller.port(),
        "tcp-contact-call",
        "",
    );
    caller.send(ser.addr(), invite.as_bytes());
    phone_listener.set_nonblocking(false).unwrap();
    let (mut conn, _) = phone_listener
        .accept()
        .expect("ser connects to the TCP contact");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let got = read_msg(&mut conn).expect("the INVITE over TCP");
    assert!(got.starts_with("INVITE "), "{got}");
    conn.write_all(response_to(&got, 480, "Temporarily Unavailable", "p").as_bytes())
        .unwrap();
    let fin = final_reply(&caller, Duration::from_secs(5)).expect("final");
    assert_eq!(status(&fin), Some(480), "{fin}");
}

/// A UDP request may leave Content-Length out, its body being the rest of the datagram
/// (RFC 3261 18.3); a TCP hop cannot frame it without one (20.14). Relayed to a phone on
/// its TCP connection, the INVITE carries `Content-Length` of its body, so its body arrives
/// as a body (not as the start of a next message) and the connection stays usable; the
/// phone's replies come back to the caller.
#[test]
fn a_udp_request_without_content_length_reaches_a_tcp_phone_with_one() {
    let ser = Ser::start("tcp-no-cl", REGISTRAR, 0, 2, "auto");
    let mut phone = tcp(ser.listen("tcp"));
    let r = register_over_tcp(&mut phone, &ser, "sip:phone@127.0.0.1:9;transport=tcp");
    assert_eq!(status(&r), Some(200), "{r}");
    let caller = Peer::new();
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
    let invite = request(
        "INVITE",
        &format!("sip:phone@{}", ser.addr()),
        caller.port(),
        "no-cl-call",
        "Content-Type: application/sdp\r\n",
    )
    .replace("Content-Length: 0\r\n\r\n", &format!("\r\n{body}"));
    assert!(!invite.contains("Content-Length"));
    caller.send(ser.addr(), invite.as_bytes());
    let got = relayed_invite(&mut phone, &ser);
    assert_eq!(head_content_length(&got), body.len(), "{got}");
    assert!(got.ends_with(&format!("\r\n\r\n{body}")), "{got}");
    answer_busy(&mut phone, &caller, &got);
}

/// The INVITE ser relayed to the phone registered as `sip:phone@127.0.0.1:9` over its
/// connection (a panic with ser's log when none came).
fn relayed_invite(phone: &mut TcpStream, ser: &Ser) -> String {
    let got = read_msg(phone).unwrap_or_else(|| {
        panic!(
            "the INVITE did not come over the phone's connection\n{}",
            ser.log_text()
        )
    });
    assert!(got.starts_with("INVITE sip:phone@127.0.0.1:9"), "{got}");
    got
}

/// The phone answers `invite` 486 on its connection: the caller gets the 486, and its ACK
/// comes back over the connection.
fn answer_busy(phone: &mut TcpStream, caller: &Peer, invite: &str) {
    let busy = response_to(invite, 486, "Busy Here", "phone");
    phone.write_all(busy.as_bytes()).unwrap();
    let fin = final_reply(caller, Duration::from_secs(5)).expect("the caller's final");
    assert_eq!(status(&fin), Some(486), "{fin}");
    let ack = read_msg(phone).expect("ACK");
    assert!(ack.starts_with("ACK "), "{ack}");
}

/// RFC 3261 18.2.2: the response to a request that came over TCP goes back on its
/// connection; when the client closed that, a new connection to the address the request
/// came from and the port of its Via's sent-by (where the client listens), not the source
/// port of the closed connection. With or without `rport` in the Via (RFC 3581 is UDP's).
#[test]
fn a_response_whose_connection_closed_goes_to_the_via_sent_by_port() {
    let ser = Ser::start("tcp-reopen", RR_PROXY, 0, 2, "auto");
    let callee = Peer::new();
    for (i, rport) in ["", ";rport"].into_iter().enumerate() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sent_by = listener.local_addr().unwrap().port();
        let mut c = tcp(ser.listen("tcp"));
        let invite = request(
            "INVITE",
            &format!("sip:bob@127.0.0.1:{}", callee.port()),
            sent_by,
            &format!("reopen-{i}"),
            "",
        )
        .replace("/UDP", "/TCP")
        .replace(";branch=", &format!("{rport};branch="));
        c.write_all(invite.as_bytes()).unwrap();
        let trying = read_msg(&mut c).expect("100 Trying");
        assert_eq!(status(&trying), Some(100), "{trying}");
        let got = recv_request(&callee, "INVITE");
        drop(c);
        std::thread::sleep(Duration::from_millis(300));
        callee.send(
            ser.addr(),
            response_to(&got, 486, "Busy Here", "b").as_bytes(),
        );
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut back = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!(
                    "no connection to the sent-by port ({rport:?}): {e}\n{}",
                    ser.log_text()
                ),
            }
        };
        back.set_nonblocking(false).unwrap();
        back.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let fin = read_msg(&mut back).expect("the 486 on the new connection");
        assert_eq!(status(&fin), Some(486), "{fin}");
    }
}

#[test]
fn a_branch_whose_connection_fails_fails_at_once() {
    let ser = Ser::start("tcp-fail", REGISTRAR, 0, 2, "auto");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let caller = Peer::new();
    let t0 = Instant::now();
    let invite = request(
        "INVITE",
        &format!("sip:nobody@{dead};transport=tcp"),
        caller.port(),
        "tcp-dead",
        "",
    );
    caller.send(ser.addr(), invite.as_bytes());
    let fin = final_reply(&caller, Duration::from_secs(10)).expect("a final well before fr_timer");
    let code = status(&fin).unwrap_or(0);
    assert!((500..600).contains(&code), "{fin}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
}

/// The next message on `w` whose first line starts with `start` (others skipped), within 5 s.
fn wire_until(w: &mut Wire, start: &str, ser: &Ser) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = w.next(Duration::from_millis(200)) {
            if m.starts_with(start) {
                return m;
            }
        }
    }
    panic!("no {start:?} on the connection\n{}", ser.log_text())
}

/// The callee's side of a cancelled call: a 180 to the INVITE, then on the CANCEL a 200 and
/// a 487 for the INVITE.
fn callee_rings_then_is_cancelled(callee: &Peer, ser: &Ser, ringing: impl FnOnce()) {
    let inv = recv_request(callee, "INVITE");
    callee.send(
        ser.addr(),
        response_to(&inv, 180, "Ringing", "callee").as_bytes(),
    );
    ringing();
    let cancel = recv_request(callee, "CANCEL");
    callee.send(
        ser.addr(),
        response_to(&cancel, 200, "OK", "callee").as_bytes(),
    );
    callee.send(
        ser.addr(),
        response_to(&inv, 487, "Request Terminated", "callee").as_bytes(),
    );
}

/// Requests on a connection are handled by the shard that owns it, not the Call-ID's owner
/// (no hop); the callee's replies over UDP find that shard by our branch, and a CANCEL on
/// the connection finds its INVITE there. A CANCEL over TCP for an INVITE that came over
/// UDP goes on to the Call-ID's owner and finds it too. Four shards and eight Call-IDs, so
/// that most calls belong to a shard the connection does not.
#[test]
fn cancels_and_replies_find_their_transaction_on_every_shard() {
    let ser = Ser::start("tcp-cancel", RR_PROXY, 0, 4, "auto");
    let callee = Peer::new();
    let ruri = format!("sip:callee@127.0.0.1:{}", callee.port());
    let mut w = Wire::connect(ser.listen("tcp"));
    let port = w.s.local_addr().unwrap().port();
    for i in 0..8 {
        let cid = format!("tcp-cancel-{i}");
        let over_tcp = |m: &str| request(m, &ruri, port, &cid, "").replace("/UDP ", "/TCP ");
        assert!(w.send(over_tcp("INVITE").as_bytes()));
        callee_rings_then_is_cancelled(&callee, &ser, || {
            wire_until(&mut w, "SIP/2.0 180", &ser);
            assert!(w.send(over_tcp("CANCEL").as_bytes()));
        });
        let ok = wire_until(&mut w, "SIP/2.0 200", &ser);
        assert!(ok.contains("CANCEL"), "{ok}");
        let fin = wire_until(&mut w, "SIP/2.0 487", &ser);
        assert!(fin.contains(&cid), "{fin}");
        assert!(w.send(over_tcp("ACK").as_bytes()));
    }

    // The INVITE over UDP, its CANCEL over the connection.
    let caller = Peer::new();
    for i in 0..8 {
        let cid = format!("udp-then-tcp-cancel-{i}");
        caller.send(
            ser.addr(),
            request("INVITE", &ruri, caller.port(), &cid, "").as_bytes(),
        );
        callee_rings_then_is_cancelled(&callee, &ser, || {
            let cancel = request("CANCEL", &ruri, caller.port(), &cid, "");
            assert!(w.send(cancel.as_bytes()));
        });
        let ok = wire_until(&mut w, "SIP/2.0 200", &ser);
        assert!(ok.contains("CANCEL") && ok.contains(&cid), "{ok}");
        let fin = final_reply(&caller, Duration::from_secs(5)).expect("the INVITE's final");
        assert_eq!(status(&fin), Some(487), "{fin}");
    }
}

/// RFC 5923: with `tcp_accept_aliases`, a request whose Via says `;alias` makes its
/// connection the way to the Via's port at the peer's address; without it (the default), a
/// request for that port opens (here: fails to open) a connection of its own.
#[test]
fn via_alias_lets_requests_reuse_the_peers_connection() {
    let nothing_there = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for accept in [true, false] {
        let script = format!(
            "tcp_accept_aliases={}\n{RR_PROXY}",
            if accept { "yes" } else { "no" }
        );
        let ser = Ser::start("tcp-alias", &script, 0, 2, "auto");
        // A peer proxy connects from an ephemeral port and says it listens on another.
        let mut w = Wire::connect(ser.listen("tcp"));
        let opts = request(
            "OPTIONS",
            &format!("sip:{}", ser.listen("tcp")),
            nothing_there,
            "alias-o",
            "",
        )
        .replace("SIP/2.0/UDP 127.0.0.1", "SIP/2.0/TCP 127.0.0.1")
        .replace(";branch=", ";alias;branch=");
        assert!(w.send(opts.as_bytes()));
        wire_until(&mut w, "SIP/2.0 200", &ser);

        let caller = Peer::new();
        let ruri = format!("sip:peer@127.0.0.1:{nothing_there};transport=tcp");
        caller.send(
            ser.addr(),
            request("INVITE", &ruri, caller.port(), "alias-call", "").as_bytes(),
        );
        if accept {
            let inv = wire_until(&mut w, "INVITE ", &ser);
            assert!(
                inv.contains(";alias;branch="),
                "our Via offers ours too: {inv}"
            );
            assert!(w.send(response_to(&inv, 486, "Busy Here", "peer").as_bytes()));
            let fin = final_reply(&caller, Duration::from_secs(5)).expect("a final");
            assert_eq!(status(&fin), Some(486), "{fin}");
        } else {
            let fin = final_reply(&caller, Duration::from_secs(5)).expect("a final");
            assert!(status(&fin).is_some_and(|c| c >= 500), "{fin}");
            assert!(
                w.next(Duration::from_millis(300)).is_none(),
                "nothing over the peer's connection"
            );
        }
    }
}

/// The metrics page of `ser` at `addr`, as text.
fn metrics_text(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The sum of a counter's samples.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The record-routing proxy on four shards, with its metrics on a free port.
fn rr_proxy_with_metrics(name: &str) -> (Ser, std::net::SocketAddr) {
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let script = format!("metrics_listen = \"{metrics}\"\n{RR_PROXY}");
    (Ser::start(name, &script, 0, 4, "auto"), metrics)
}

/// Calls over one TCP connection to several UDP callees, four shards: every request is
/// handled on the connection's shard, and the kernel gives every callee's reply straight to
/// that shard (the reuseport program reads our branch), whichever shard its hash would pick:
/// nothing is handed between shards.
#[test]
fn udp_replies_land_on_the_shard_of_their_transaction() {
    let (ser, metrics) = rr_proxy_with_metrics("tcp-steer");
    let callees: Vec<Peer> = (0..4).map(|_| Peer::new()).collect();
    let mut w = Wire::connect(ser.listen("tcp"));
    let port = w.s.local_addr().unwrap().port();
    for i in 0..12 {
        let callee = &callees[i % callees.len()];
        let cid = format!("steer-{i}");
        let ruri = format!("sip:callee@127.0.0.1:{}", callee.port());
        let invite = request("INVITE", &ruri, port, &cid, "").replace("/UDP ", "/TCP ");
        assert!(w.send(invite.as_bytes()));
        let inv = recv_request(callee, "INVITE");
        callee.send(
            ser.addr(),
            response_to(&inv, 486, "Busy Here", "callee").as_bytes(),
        );
        let fin = wire_until(&mut w, "SIP/2.0 486", &ser);
        assert!(fin.contains(&cid), "{fin}");
        assert!(w.send(
            request("ACK", &ruri, port, &cid, "")
                .replace("/UDP ", "/TCP ")
                .as_bytes()
        ));
    }
    let text = metrics_text(metrics);
    assert!(text.contains("ser_handoffs_total"), "{text}");
    assert_eq!(counter(&text, "ser_handoffs_total"), 0, "{text}");
}

/// A single UDP caller (one source port: the kernel's hash would put all its requests on one
/// shard) reaches the owner of each call's Call-ID directly: the eBPF steering program
/// (sip::steer) hashes the Call-ID as the server does, so no request is handed on, and the
/// callee's replies land on the transaction's shard by its branch. Where the kernel refuses
/// eBPF (an old kernel, no privilege) the hand-offs are the fallback, and the test says so.
#[test]
fn udp_requests_land_on_their_call_ids_owner() {
    let (ser, metrics) = rr_proxy_with_metrics("udp-steer");
    let caller = Peer::new();
    let callee = Peer::new();
    for i in 0..16 {
        let cid = format!("owner-{i}-caller");
        let ruri = format!("sip:callee@127.0.0.1:{}", callee.port());
        caller.send(
            ser.addr(),
            request("INVITE", &ruri, caller.port(), &cid, "").as_bytes(),
        );
        let inv = recv_request(&callee, "INVITE");
        callee.send(
            ser.addr(),
            response_to(&inv, 486, "Busy Here", "callee").as_bytes(),
        );
        let fin = std::iter::from_fn(|| caller.recv())
            .find(|m| m.starts_with("SIP/2.0 486"))
            .expect("the 486");
        assert!(fin.contains(&cid), "{fin}");
        caller.send(
            ser.addr(),
            request("ACK", &ruri, caller.port(), &cid, "").as_bytes(),
        );
    }
    let text = metrics_text(metrics);
    let log = ser.log_text();
    if log.contains("eBPF steering refused") {
        eprintln!("eBPF refused here, hand-offs expected: {log}");
        return;
    }
    assert_eq!(counter(&text, "ser_handoffs_total"), 0, "{text}\n{log}");
}
