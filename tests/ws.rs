//! SIP over WebSocket (RFC 7118) against a live `ser` on loopback, with a raw WebSocket
//! client (tests/common/ws.rs): browser-style users (`.invalid` Contacts) register over ws,
//! are called from UDP and call out, in-dialog requests finding them in both directions
//! through the double Record-Route; wss through Python's TLS; and bad input (plain HTTP,
//! other subprotocols, unmasked and oversized frames, text that is not UTF-8) refused or
//! closed while another client is served throughout.

mod common;

use std::time::Duration;

use common::ws::*;
use common::*;

const PROXY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
modparam("usrloc", "db_mode", 0)
route {
    if (loose_route()) { if (!t_relay()) { sl_reply_error(); }; break; };
    if (method == "REGISTER") { save("location"); break; };
    if (method == "OPTIONS" && uri == myself) {
        if (proto == WS) { sl_send_reply("200", "OK over WS"); break; };
        if (proto == WSS) { sl_send_reply("200", "OK over WSS"); break; };
        sl_send_reply("200", "OK");
        break;
    };
    if (uri == myself) {
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    };
    if (method == "INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); };
}
"#;

/// ser with UDP, TCP, ws and wss; wss with the self-signed certificate made in a data_dir
/// of the test's own (the folder lives as long as the returned guard).
fn start(tag: &str) -> (Ser, TempDir) {
    let data = temp_dir(&format!("{tag}-data"));
    let script = format!(
        "data_dir=\"{}\"\nfifo=\"{}\"\n{PROXY}",
        data.path().display(),
        data.path().join("fifo").display()
    );
    let ser = Ser::start_with(
        tag,
        &script,
        0,
        2,
        "auto",
        &["-l", "ws:127.0.0.1:0", "-l", "wss:127.0.0.1:0"],
    );
    (ser, data)
}

/// A request from a browser-style user: Via `WS` with its `.invalid` host.
fn ws_request(method: &str, ruri: &str, host: &str, call_id: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/WS {host};branch=z9hG4bK-{call_id}-{method}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:user@{host}>;tag=w-{call_id}\r\nTo: <{ruri}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:user@{host};transport=ws>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// The values of every `name` header line of a message, in order.
fn header_values(msg: &str, name: &str) -> Vec<String> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An in-dialog request to `target` along `routes` (sent to the first, us), from a UDP peer.
fn in_dialog(method: &str, target: &str, routes: &[String], peer: &Peer, call_id: &str) -> String {
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-d-{call_id}-{method}\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:peer@127.0.0.1>;tag=p-{call_id}\r\n\
         To: <sip:user@x>;tag=w-{call_id}\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\n\
         Content-Length: 0\r\n\r\n",
        peer.port(),
        routes.join(", ")
    )
}

fn uri_in(value: &str) -> String {
    value
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_browser_user_registers_over_ws_is_called_and_calls_out() {
    let (ser, _data) = start("ws-calls");
    let mut alice = WsClient::connect(ser.listen("ws"));
    let host = "a1b2c3.invalid";
    let reg = ws_request(
        "REGISTER",
        "sip:alice@127.0.0.1",
        host,
        "ws-reg",
        "Expires: 300\r\n",
    );
    assert!(alice.send(&reg));
    let ok = alice
        .until("SIP/2.0 200")
        .unwrap_or_else(|| panic!("REGISTER\n{}", ser.log_text()));
    assert!(ok.contains("transport=ws"), "{ok}");

    // A UDP user calls alice: the INVITE comes over her WebSocket.
    let caller = Peer::new();
    let invite = request(
        "INVITE",
        &format!("sip:alice@{}", ser.addr()),
        caller.port(),
        "ws-in",
        "",
    );
    caller.send(ser.addr(), invite.as_bytes());
    let inv = alice
        .until("INVITE ")
        .unwrap_or_else(|| panic!("no INVITE over ws\n{}", ser.log_text()));
    assert!(
        inv.starts_with(&format!("INVITE sip:user@{host};transport=ws")),
        "{inv}"
    );
    assert!(inv.contains("SIP/2.0/WS "), "our Via names WS: {inv}");
    let rr = header_values(&inv, "Record-Route");
    assert_eq!(rr.len(), 2, "two Record-Routes between UDP and WS: {inv}");
    assert!(rr[0].contains("transport=ws"), "{rr:?}");
    let answer = response_to(&inv, 200, "OK", "alice").replace(
        "Content-Length: 0",
        &format!("Contact: <sip:user@{host};transport=ws>\r\nContent-Length: 0"),
    );
    assert!(alice.send(&answer));
    let fin = final_reply(&caller, Duration::from_secs(5)).expect("200 for the caller");
    assert_eq!(status(&fin), Some(200), "{fin}");
    // The caller's route set is the Record-Route in reverse; its BYE reaches alice by her
    // Contact's name.
    let mut routes = header_values(&fin, "Record-Route");
    routes.reverse();
    let target = uri_in(&header_values(&fin, "Contact")[0]);
    caller.send(
        ser.addr(),
        in_dialog("BYE", &target, &routes, &caller, "ws-in").as_bytes(),
    );
    let bye = alice
        .until("BYE ")
        .unwrap_or_else(|| panic!("no BYE over ws\n{}", ser.log_text()));
    assert!(alice.send(&response_to(&bye, 200, "OK", "alice")));
    let fin = final_reply(&caller, Duration::from_secs(5)).expect("200 for the BYE");
    assert_eq!(status(&fin), Some(200), "{fin}");

    // Alice calls the UDP user; then the UDP user hangs up: the BYE finds her connection.
    let callee = Peer::new();
    let out = ws_request(
        "INVITE",
        &format!("sip:bob@127.0.0.1:{}", callee.port()),
        host,
        "ws-out",
        "",
    );
    assert!(alice.send(&out));
    let inv = recv_request(&callee, "INVITE");
    let routes = header_values(&inv, "Record-Route");
    assert_eq!(routes.len(), 2, "{inv}");
    callee.send(ser.addr(), response_to(&inv, 200, "OK", "bob").as_bytes());
    let ok = alice.until("SIP/2.0 200").expect("200 over ws");
    assert!(ok.contains("ws-out"), "{ok}");
    let target = uri_in(&header_values(&inv, "Contact")[0]);
    callee.send(
        ser.addr(),
        in_dialog("BYE", &target, &routes, &callee, "ws-out").as_bytes(),
    );
    let bye = alice
        .until("BYE ")
        .unwrap_or_else(|| panic!("no BYE over ws\n{}", ser.log_text()));
    assert!(
        bye.starts_with(&format!("BYE sip:user@{host};transport=ws")),
        "{bye}"
    );

    // Her connection goes: so do her binding and her name.
    drop(alice);
    std::thread::sleep(Duration::from_millis(300));
    let invite = request(
        "INVITE",
        &format!("sip:alice@{}", ser.addr()),
        caller.port(),
        "ws-gone",
        "",
    );
    caller.send(ser.addr(), invite.as_bytes());
    let fin = final_reply(&caller, Duration::from_secs(5)).expect("a final");
    assert_eq!(status(&fin), Some(404), "{fin}");
    let bye = in_dialog("BYE", &target, &routes, &callee, "ws-gone2");
    callee.send(ser.addr(), bye.as_bytes());
    let fin =
        final_reply(&callee, Duration::from_secs(5)).expect("a final for a BYE to a gone name");
    assert_eq!(status(&fin), Some(480), "{fin}");
}

#[test]
fn wss_carries_sip_inside_tls() {
    let (ser, _data) = start("wss");
    let addr = ser.listen("wss");
    let script = r#"
import socket, ssl, os, sys
port, upgrade, msg = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
s = socket.create_connection(("127.0.0.1", port), timeout=5)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(s)
s.sendall(upgrade)
head = b""
while b"\r\n\r\n" not in head: head += s.recv(4096)
print(head.split(b"\r\n")[0].decode())
m = os.urandom(4)
f = bytes([0x81, 0x80 | 126]) + len(msg).to_bytes(2, "big") + m + bytes(c ^ m[i % 4] for i, c in enumerate(msg))
s.sendall(f)
r = head.split(b"\r\n\r\n", 1)[1]
while len(r) < 40: r += s.recv(4096)
print(r[4:].split(b"\r\n")[0].decode())
"#;
    let (ok, out) = run_bounded(
        std::process::Command::new("python3").args([
            "-c",
            script,
            &addr.port().to_string(),
            &upgrade_request("sip"),
            &ws_request(
                "OPTIONS",
                &format!("sip:{}", ser.addr()),
                "wss1.invalid",
                "wss-o",
                "",
            ),
        ]),
        Duration::from_secs(15),
    );
    assert!(ok, "{out}\n{}", ser.log_text());
    assert!(out.contains("HTTP/1.1 101 Switching Protocols"), "{out}");
    assert!(
        out.contains("SIP/2.0 200 OK over WSS"),
        "proto==WSS in the script: {out}"
    );
}

#[test]
fn bad_websocket_input_is_refused_or_closed_and_others_are_served() {
    let (ser, data) = start("ws-bad");
    let ws = ser.listen("ws");
    let mut good = WsClient::connect(ws);
    let me = format!("sip:{}", ser.addr());
    let served = |good: &mut WsClient, n: u32| {
        let cid = format!("ws-good-{n}");
        assert!(good.send(&ws_request("OPTIONS", &me, "good.invalid", &cid, "")));
        let r = good
            .until("SIP/2.0 200")
            .unwrap_or_else(|| panic!("good client not served"));
        assert!(r.contains(&cid));
        assert!(
            r.starts_with("SIP/2.0 200 OK over WS\r\n"),
            "proto==WS: {r}"
        );
    };
    served(&mut good, 0);
    // The connection list shows it as a WebSocket connection.
    let fifo = data.path().join("fifo");
    wait_fifo(&fifo, &ser);
    let (code, list) = serctl_joined(&fifo, &["fifo", "tcp_list"]);
    assert_eq!(code, 0, "{list}");
    assert!(list.lines().any(|l| l.contains(" ws in ")), "{list}");

    // Plain HTTP and upgrades that are not for SIP: an HTTP error, then the close.
    let (mut c, head) = WsClient::try_upgrade(ws, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    assert!(c.wait_closed(Duration::from_secs(3)));
    let (mut c, head) = WsClient::try_upgrade(ws, &upgrade_request("chat"));
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(c.wait_closed(Duration::from_secs(3)));
    served(&mut good, 1);

    // Frame errors after the Upgrade: a close frame with the reason's code, then the close.
    let unmasked = {
        let msg = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
        let mut f = vec![0x81, msg.len() as u8];
        f.extend_from_slice(msg);
        f
    };
    let oversized = client_frame(true, 1, &vec![b'a'; 70_000]);
    let endless: Vec<u8> = std::iter::once(client_frame(false, 1, &[b'a'; 1000]))
        .chain((0..80).map(|_| client_frame(false, 0, &[b'a'; 1000])))
        .flatten()
        .collect();
    let not_utf8 = client_frame(true, 1, b"OPTIONS \xff\xfe SIP/2.0\r\n\r\n");
    for (what, bytes, code) in [
        ("unmasked", unmasked, 1002u16),
        ("oversized", oversized, 1009),
        ("endless fragments", endless, 1009),
        ("not UTF-8", not_utf8, 1007),
    ] {
        let mut c = WsClient::connect(ws);
        c.send_raw(&bytes);
        assert!(c.wait_closed(Duration::from_secs(5)), "{what}: not closed");
        let close = c.control.iter().find(|(op, _)| *op == 8);
        assert_eq!(
            close.map(|(_, p)| p.clone()),
            Some(code.to_be_bytes().to_vec()),
            "{what}: close frame with {code}"
        );
    }
    // A close in the middle of a message: answered, closed.
    let mut c = WsClient::connect(ws);
    let mut bytes = client_frame(false, 1, b"OPTIONS sip:x ");
    bytes.extend(client_frame(true, 8, &1000u16.to_be_bytes()));
    c.send_raw(&bytes);
    assert!(c.wait_closed(Duration::from_secs(5)));
    served(&mut good, 2);
    let log = ser.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Keep-alive: a silent WebSocket peer gets pings every `ws_keepalive_interval`, and is
/// closed once it has sent nothing (not even a pong) for `ws_idle_timeout`; one that answers
/// the pings stays.
#[test]
fn silent_websocket_peers_are_pinged_then_closed() {
    let data = temp_dir("ws-idle-data");
    let script = format!(
        "ws_keepalive_interval=1\nws_idle_timeout=4\ndata_dir=\"{}\"\n{PROXY}",
        data.path().display()
    );
    let ser = Ser::start_with("ws-idle", &script, 0, 2, "auto", &["-l", "ws:127.0.0.1:0"]);
    let mut silent = WsClient::connect(ser.listen("ws"));
    let mut alive = WsClient::connect(ser.listen("ws"));
    let t0 = std::time::Instant::now();
    let mut answered = 0;
    while t0.elapsed() < Duration::from_secs(7) {
        silent.next(Duration::from_millis(100));
        alive.next(Duration::from_millis(100));
        // Answer every ping seen so far with a pong.
        let pings = alive.control.iter().filter(|(op, _)| *op == 9).count();
        while answered < pings {
            assert!(alive.send_raw(&client_frame(true, 10, b"")));
            answered += 1;
        }
    }
    assert!(
        silent.control.iter().any(|(op, _)| *op == 9),
        "pings on the silent connection: {:?}",
        silent.control
    );
    assert!(
        silent.closed,
        "the silent peer is closed after ws_idle_timeout"
    );
    assert!(answered >= 3, "pings every second: {answered}");
    assert!(!alive.closed, "a peer that answers the pings stays");
}
