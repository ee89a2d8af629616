//! The jabber module (the SIP ⇄ XMPP gateway) against a real XMPP server: Debian's prosody,
//! started here on loopback with a generated configuration (c2s and component ports free
//! ports, the component `sipgw.localhost` with a secret, test users written to its
//! internal_plain accounts), stopped by PID. The XMPP user is tests/data/xmpp/client.py (a
//! small client on Python's standard library: SASL PLAIN over a plain c2s stream).
//!
//! - both ways: juliet (XMPP) writes to bob@sipgw.localhost and bob's phone (a sipp UAS
//!   registered at ser) gets the MESSAGE from sip:juliet*localhost@<gateway>; a sipp UAC's
//!   MESSAGE to sip:juliet*localhost@<gateway> gets 202 and juliet gets the chat message from
//!   alice@sipgw.localhost; a message to a SIP user who is not registered comes back to
//!   juliet as an XMPP error (item-not-found, from the SIP 404); a MESSAGE with an HTML body
//!   gets 415 with `Accept: text/plain`; a MESSAGE to a domain prosody cannot reach gets 403
//!   (prosody's not-allowed, within `xmpp_error_wait`); `serctl jabber status` and the
//!   metrics count it all;
//! - prosody stopped and started again: a MESSAGE sent while it is away gets 202 at once
//!   (queued), ser reconnects, and juliet gets it; the status counts the reconnect;
//! - bad input from the server (a fake component server here): a stanza that is not
//!   well-formed and then one over `xmpp_max_stanza` each end the stream with the matching
//!   stream error (not-well-formed, policy-violation) and a reconnect; the messages queued
//!   meanwhile (202) all arrive once a connection holds, the queue's bound gives 503, a body
//!   over `xmpp_max_stanza` gets 413, an `iq` get is answered with an error, and nothing
//!   panics;
//! - a message from XMPP for a SIP user who is offline: msilo stores it (202) and delivers it
//!   when the user registers;
//! - `ser -c`: a missing `xmpp_domain` and a bad `domain_separator` are refused.

#![cfg(feature = "xmpp")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::sipp::{require_sipp, scenario, uac, Uas};
use common::*;

const SECRET: &str = "s3cret";
const COMPONENT: &str = "sipgw.localhost";

/// A private prosody on 127.0.0.1, stopped by PID when dropped.
struct Prosody {
    child: Option<Child>,
    cfg: PathBuf,
    log: PathBuf,
    c2s: u16,
    component: u16,
}

impl Prosody {
    /// Writes the configuration and the accounts of `users` (password "pw") under `dir`,
    /// and starts it.
    fn start(dir: &Path, users: &[&str]) -> Prosody {
        assert!(
            have("prosody"),
            "prosody (Debian package prosody) is required; scripts/test.sh installs it"
        );
        let c2s = free_port_udp_tcp();
        let component = free_port_udp_tcp();
        let data = dir.join("prosody-data");
        let accounts = data.join("localhost").join("accounts");
        std::fs::create_dir_all(&accounts).expect("accounts dir");
        for u in users {
            std::fs::write(
                accounts.join(format!("{u}.dat")),
                "return {\n\t[\"password\"] = \"pw\";\n};\n",
            )
            .expect("account");
        }
        let log = dir.join("prosody.log");
        let cfg = dir.join("prosody.cfg.lua");
        std::fs::write(
            &cfg,
            format!(
                r#"run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{data}"
plugin_paths = {{}}
log = {{ debug = "{log}" }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "posix" }}
modules_disabled = {{ "s2s", "s2s_auth_certs" }}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
VirtualHost "localhost"
Component "{COMPONENT}"
    component_secret = "{SECRET}"
"#,
                dir = dir.display(),
                data = data.display(),
                log = log.display(),
            ),
        )
        .expect("prosody config");
        let mut p = Prosody {
            child: None,
            cfg,
            log,
            c2s,
            component,
        };
        p.run();
        p
    }

    /// Starts the process (again) and waits until both ports take connections.
    fn run(&mut self) {
        let out = std::fs::File::create(self.log.with_extension("out")).expect("out");
        let child = Command::new("prosody")
            .arg("--config")
            .arg(&self.cfg)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("out"))
            .stderr(out)
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.c2s, self.component] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                    panic!("prosody exited ({st}):\n{}", self.log_text());
                }
                assert!(
                    Instant::now() < deadline,
                    "prosody does not listen on {port}:\n{}",
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An XMPP user logged in with tests/data/xmpp/client.py; each stanza it gets is a JSON line.
struct Xmpp {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    err: PathBuf,
}

impl Xmpp {
    fn login(prosody: &Prosody, user: &str, dir: &Path) -> Xmpp {
        let err = dir.join(format!("client-{user}.err"));
        let mut child = Command::new("python3")
            .arg(repo_root().join("tests/data/xmpp/client.py"))
            .args([
                "127.0.0.1",
                &prosody.c2s.to_string(),
                user,
                "localhost",
                "pw",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).expect("err file"))
            .spawn()
            .expect("python3 client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut x = Xmpp {
            child,
            stdin,
            lines,
            err,
        };
        let ready = x.next(Duration::from_secs(15), |v| v["kind"] == "ready");
        assert!(
            ready.is_some(),
            "{user} did not log in:\n{}\n{}",
            std::fs::read_to_string(&x.err).unwrap_or_default(),
            prosody.log_text()
        );
        x
    }

    fn send(&mut self, to: &str, body: &str) {
        writeln!(self.stdin, "send {to} {body}").expect("to the client");
        self.stdin.flush().expect("flush");
    }

    /// The next line matching `want` within `limit` (others skipped).
    fn next(
        &mut self,
        limit: Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if want(&v) {
                return Some(v);
            }
        }
    }

    /// The next message (chat or error) within `limit`.
    fn message(&mut self, limit: Duration) -> Option<serde_json::Value> {
        self.next(limit, |v| v["kind"] == "message")
    }
}

impl Drop for Xmpp {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// A registrar with the gateway: MESSAGEs whose user part has the delimiter go to XMPP,
/// the rest are routed to registered users. The gateway domain and the users' SIP domain
/// are ser's own address, as the sipp scenarios name it.
fn script(xmpp_port: u16, fifo: &Path, extra: &str) -> String {
    format!(
        r#"debug=3
fifo="{fifo}"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
loadmodule "modules/jabber/jabber.so"
modparam("jabber", "xmpp_port", {xmpp_port})
modparam("jabber", "xmpp_domain", "{COMPONENT}")
modparam("jabber", "xmpp_secret", "{SECRET}")
modparam("jabber", "gateway_domain", "127.0.0.1")
modparam("jabber", "sip_domain", "127.0.0.1")
{extra}
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    if (method=="MESSAGE" && uri=~"^sip:[^@]*[*]") {{
        if (jab_send_message()) {{
            sl_send_reply("202", "Accepted");
        }} else {{
            sl_reply_error();
        }};
        break;
    }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}
"#,
        fifo = fifo.display()
    )
}

/// `serctl jabber status` as text.
fn status_text(fifo: &Path) -> String {
    serctl_joined(fifo, &["jabber", "status"]).1
}

/// Waits until the status has `line` (e.g. "connected: yes").
fn wait_status(fifo: &Path, ser: &Ser, line: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let s = status_text(fifo);
        if s.lines().any(|l| l.trim() == line) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "status never had '{line}':\n{s}\n{}",
            ser.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A MESSAGE from `peer` (as sip:bob@127.0.0.1) to `ruri`.
fn message(peer: &Peer, ruri: &str, call_id: &str, ctype: &str, body: &str) -> String {
    format!(
        "MESSAGE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:bob@127.0.0.1>;tag=m-{call_id}\r\n\
         To: <{ruri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: {ctype}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len(),
        p = peer.port()
    )
}

/// Sends a MESSAGE and returns ser's final reply.
fn send_message(
    ser: &Ser,
    peer: &Peer,
    ruri: &str,
    call_id: &str,
    ctype: &str,
    body: &str,
) -> String {
    peer.send(
        ser.addr(),
        message(peer, ruri, call_id, ctype, body).as_bytes(),
    );
    final_reply(peer, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no final reply to {call_id}:\n{}", ser.log_text()))
}

/// A REGISTER of `user` binding 127.0.0.1:`contact_port`; returns the final status.
fn register(ser: &Ser, from: &Peer, user: &str, contact_port: u16) -> u16 {
    let port = ser.port;
    let r = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-reg-{user}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=r-{user}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: reg-{user}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:{contact_port}>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n",
        p = from.port()
    );
    from.send(ser.addr(), r.as_bytes());
    let reply = final_reply(from, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no reply to REGISTER:\n{}", ser.log_text()));
    status(&reply).unwrap_or(0)
}

/// A `name: value` number of the status text.
fn counter(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
}

fn assert_no_panic(ser: &Ser) {
    let log = ser.log_text();
    assert!(!log.contains("panicked"), "ser panicked:\n{log}");
}

#[test]
fn xmpp_and_sip_users_exchange_messages() {
    require_sipp();
    let dir = temp_dir("xmpp-both");
    let prosody = Prosody::start(dir.path(), &["juliet"]);
    let fifo = fifo_path("xmpp-both");
    let metrics_port = free_port_udp_tcp();
    let ser = Ser::start(
        "xmpp-both",
        &script(
            prosody.component,
            &fifo,
            &format!(
                "metrics_listen=\"127.0.0.1:{metrics_port}\"\n\
                 modparam(\"jabber\", \"xmpp_error_wait\", 1000)"
            ),
        ),
        0,
        2,
        "auto",
    );
    wait_fifo(&fifo, &ser);
    wait_status(&fifo, &ser, "connected: yes", Duration::from_secs(15));
    let mut juliet = Xmpp::login(&prosody, "juliet", dir.path());

    // XMPP -> SIP: bob's phone, a sipp UAS registered at ser, takes juliet's message.
    let uas_port = free_port();
    let scen = scenario(dir.path(), "uas-xmpp.xml", "bob");
    let uas = Uas::start(&scen, uas_port, 1, dir.path());
    let peer = Peer::new();
    assert_eq!(register(&ser, &peer, "bob", uas_port), 200);
    juliet.send("bob@sipgw.localhost", "hello bob from xmpp");
    let (ok, log) = uas.finish(Duration::from_secs(15));
    assert!(
        ok,
        "bob's phone did not get juliet's message: {log}\n{}",
        ser.log_text()
    );

    // SIP -> XMPP: a sipp UAC's MESSAGE to juliet*localhost@<gateway> gets 202 once written
    // to prosody, and juliet gets it from alice@sipgw.localhost.
    let scen = scenario(dir.path(), "uac-message.xml", "juliet*localhost");
    let (ok, out) = uac(&scen, ser.port, 1, 1, Duration::from_secs(15));
    assert!(
        ok,
        "the MESSAGE to juliet did not get 202: {out}\n{}",
        ser.log_text()
    );
    let m = juliet
        .message(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("juliet got nothing:\n{}", ser.log_text()));
    assert_eq!(m["type"], "chat", "{m}");
    assert_eq!(m["from"], "alice@sipgw.localhost", "{m}");
    assert_eq!(m["body"], "hello juliet*localhost from sipp", "{m}");

    // To a SIP user who is not registered: the SIP 404 comes back as an XMPP error.
    juliet.send("carol@sipgw.localhost", "anyone there?");
    let e = juliet
        .message(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no error for carol:\n{}", ser.log_text()));
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"], "item-not-found", "{e}");
    assert_eq!(e["from"], "carol@sipgw.localhost", "{e}");

    // A body that is not plain text: 415 with Accept; nothing goes to juliet.
    let r = send_message(
        &ser,
        &peer,
        "sip:juliet*localhost@127.0.0.1",
        "html-1",
        "text/html",
        "<b>hi</b>",
    );
    assert_eq!(status(&r), Some(415), "{r}");
    assert!(r.contains("Accept: text/plain"), "{r}");
    // To a domain prosody cannot reach (its s2s is off): its error comes within
    // xmpp_error_wait and the SIP sender gets what it maps to (not-allowed: 403).
    let r = send_message(
        &ser,
        &peer,
        "sip:romeo*montague.example@127.0.0.1",
        "remote-1",
        "text/plain",
        "wherefore art thou",
    );
    assert_eq!(status(&r), Some(403), "{r}\n{}", ser.log_text());
    // Not an XMPP address (no domain after the delimiter): 404.
    let r = send_message(
        &ser,
        &peer,
        "sip:juliet*@127.0.0.1",
        "bad-1",
        "text/plain",
        "x",
    );
    assert_eq!(status(&r), Some(404), "{r}");
    assert!(juliet.message(Duration::from_millis(500)).is_none());

    let st = status_text(&fifo);
    assert_eq!(counter(&st, "sent"), 2, "{st}");
    assert_eq!(counter(&st, "xmpp_errors"), 1, "{st}");
    assert_eq!(counter(&st, "received"), 2, "{st}");
    assert_eq!(counter(&st, "delivered"), 1, "{st}");
    assert_eq!(counter(&st, "sip_errors"), 1, "{st}");
    let metrics = http_get_body(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/metrics");
    for want in [
        "ser_xmpp_connected 1",
        "ser_xmpp_sent_total 2",
        "ser_xmpp_errors_total{kind=\"xmpp\"} 1",
        "ser_xmpp_received_total{result=\"delivered\"} 1",
        "ser_xmpp_errors_total{kind=\"sip\"} 1",
        "ser_xmpp_reconnects_total 0",
        "ser_xmpp_queue_full_total 0",
    ] {
        assert!(metrics.contains(want), "no '{want}' in:\n{metrics}");
    }
    assert_no_panic(&ser);
}

#[test]
fn prosody_restarted_nothing_accepted_is_lost() {
    let dir = temp_dir("xmpp-restart");
    let mut prosody = Prosody::start(dir.path(), &["juliet"]);
    let fifo = fifo_path("xmpp-restart");
    let ser = Ser::start(
        "xmpp-restart",
        &script(prosody.component, &fifo, ""),
        0,
        1,
        "auto",
    );
    wait_fifo(&fifo, &ser);
    wait_status(&fifo, &ser, "connected: yes", Duration::from_secs(15));
    let peer = Peer::new();
    {
        let mut juliet = Xmpp::login(&prosody, "juliet", dir.path());
        let r = send_message(
            &ser,
            &peer,
            "sip:juliet*localhost@127.0.0.1",
            "before",
            "text/plain",
            "before the restart",
        );
        assert_eq!(status(&r), Some(202), "{r}");
        let m = juliet
            .message(Duration::from_secs(10))
            .expect("first message");
        assert_eq!(m["body"], "before the restart");
    }

    // The server goes away: ser notices, and messages are queued and accepted meanwhile.
    prosody.stop();
    wait_status(&fifo, &ser, "connected: no", Duration::from_secs(10));
    for i in 1..=3 {
        let r = send_message(
            &ser,
            &peer,
            "sip:juliet*localhost@127.0.0.1",
            &format!("away-{i}"),
            "text/plain; charset=utf-8",
            &format!("while away {i}"),
        );
        assert_eq!(status(&r), Some(202), "{r}");
    }
    let st = status_text(&fifo);
    assert!(st.contains("queue: 3/1000"), "{st}");

    // Back: ser reconnects (back-off) and writes the queue; juliet gets all three, in order
    // (prosody keeps them offline if she logs in after they arrive).
    prosody.run();
    let st = wait_status(&fifo, &ser, "connected: yes", Duration::from_secs(20));
    assert_eq!(counter(&st, "reconnects"), 1, "{st}");
    let mut juliet = Xmpp::login(&prosody, "juliet", dir.path());
    let mut bodies = Vec::new();
    while bodies.len() < 3 {
        let Some(m) = juliet.message(Duration::from_secs(15)) else {
            panic!(
                "juliet got only {bodies:?}:\n{}\n{}",
                ser.log_text(),
                prosody.log_text()
            );
        };
        bodies.push(m["body"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(
        bodies,
        ["while away 1", "while away 2", "while away 3"],
        "in order"
    );
    // And the connection serves again.
    let r = send_message(
        &ser,
        &peer,
        "sip:juliet*localhost@127.0.0.1",
        "after",
        "text/plain",
        "after the restart",
    );
    assert_eq!(status(&r), Some(202), "{r}");
    let m = juliet.message(Duration::from_secs(10)).expect("after");
    assert_eq!(m["body"], "after the restart");
    let st = status_text(&fifo);
    assert_eq!(counter(&st, "sent"), 5, "{st}");
    assert!(st.contains("queue: 0/1000"), "{st}");
    assert_no_panic(&ser);
}

/// What a fake component server saw on one connection.
#[derive(Debug, Default)]
struct Seen {
    text: String,
}

/// A fake XMPP server's side of one component connection: reads ser's header, sends its
/// own with an id, checks the handshake, accepts it, then sends `after` and reads what ser
/// writes until ser closes (or `limit`).
fn serve_one(listener: &TcpListener, after: &[u8], limit: Duration) -> Seen {
    // ser connects within its back-off (xmpp_reconnect_max 2 s); the wait is bounded.
    let deadline = Instant::now() + limit;
    listener.set_nonblocking(true).expect("nonblocking");
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "ser did not connect");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.set_nonblocking(false).expect("blocking");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut seen = Seen::default();
    let mut buf = [0u8; 65536];
    let mut read_until = |s: &mut TcpStream, seen: &mut Seen, what: &str| {
        while !seen.text.contains(what) {
            assert!(Instant::now() < deadline, "never got {what}: {}", seen.text);
            match s.read(&mut buf) {
                Ok(0) => panic!("closed before {what}: {}", seen.text),
                Ok(n) => seen.text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
    };
    read_until(&mut s, &mut seen, "to='sipgw.localhost'>");
    s.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
          xmlns='jabber:component:accept' from='sipgw.localhost' id='fake-1'>",
    )
    .expect("header");
    read_until(&mut s, &mut seen, "</handshake>");
    let want = ser::xmpp::stream::write_handshake("fake-1", SECRET);
    assert!(seen.text.contains(&want), "bad handshake: {}", seen.text);
    s.write_all(b"<handshake/>").expect("handshake");
    // Written beside the reads: ser may close while a large one is still going out.
    let mut w = s.try_clone().expect("clone");
    let after = after.to_vec();
    std::thread::spawn(move || {
        let _ = w.write_all(&after);
    });
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() > deadline {
                    break;
                }
            }
            // Reset: ser closed with our bytes unread.
            Err(_) => break,
        }
    }
    seen
}

/// A message from XMPP for a SIP user who is offline is routed as any request: msilo's
/// `m_store` keeps it (202, so no error goes back to XMPP) and `m_dump` delivers it when the
/// user registers, from the XMPP user's SIP address.
#[test]
#[cfg(all(feature = "msilo", feature = "sqlite"))]
fn a_message_from_xmpp_for_an_offline_user_waits_in_msilo() {
    let dir = temp_dir("xmpp-msilo");
    let prosody = Prosody::start(dir.path(), &["juliet"]);
    let fifo = fifo_path("xmpp-msilo");
    let db = dir.path().join("silo.db");
    let extra = format!(
        "loadmodule \"modules/msilo/msilo.so\"\n\
         modparam(\"msilo\", \"db_url\", \"sqlite://{}\")\n\
         modparam(\"usrloc\", \"db_mode\", 0)",
        db.display()
    );
    let text = script(prosody.component, &fifo, &extra)
        .replace(
            "if (method==\"REGISTER\") { save(\"location\"); break; };",
            "if (method==\"REGISTER\") { save(\"location\"); m_dump(); break; };",
        )
        .replace(
            "if (!lookup(\"location\")) { sl_send_reply(\"404\", \"Not Found\"); break; };",
            "if (!lookup(\"location\")) {\n\
                 if (!t_newtran()) { sl_reply_error(); break; };\n\
                 if (m_store(\"0\")) { t_reply(\"202\", \"Accepted\"); }\n\
                 else { t_reply(\"480\", \"Temporarily Unavailable\"); };\n\
                 break;\n\
             };",
        );
    assert!(text.contains("m_store"), "{text}");
    let ser = Ser::start("xmpp-msilo", &text, 0, 1, "auto");
    wait_fifo(&fifo, &ser);
    wait_status(&fifo, &ser, "connected: yes", Duration::from_secs(15));
    let mut juliet = Xmpp::login(&prosody, "juliet", dir.path());
    juliet.send("dave@sipgw.localhost", "hello dave, call me");
    // Stored: nothing comes back to juliet, and the status counts it delivered (202).
    assert!(
        juliet.message(Duration::from_secs(2)).is_none(),
        "{}",
        ser.log_text()
    );
    let st = status_text(&fifo);
    assert_eq!(counter(&st, "delivered"), 1, "{st}");
    // dave registers: the stored message comes to his contact, from juliet's SIP address.
    let phone = Peer::new();
    assert_eq!(register(&ser, &phone, "dave", phone.port()), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        assert!(
            Instant::now() < deadline,
            "no stored message:\n{}",
            ser.log_text()
        );
        if let Some(m) = phone.recv_timeout(200) {
            if m.starts_with("MESSAGE ") {
                break m;
            }
        }
    };
    assert!(m.contains("From: <sip:juliet*localhost@127.0.0.1>"), "{m}");
    assert!(m.contains("hello dave, call me"), "{m}");
    phone.send(
        ser.addr(),
        response_to(&m, 200, "OK", "dave-tag").as_bytes(),
    );
    assert_no_panic(&ser);
}

/// `ser -c` refuses a jabber configuration without its required parameters, and a bad
/// parameter value with its line.
#[test]
fn the_configuration_is_checked() {
    let dir = temp_dir("xmpp-check");
    let check = |text: &str| {
        let cfg = dir.path().join("check.cfg");
        std::fs::write(&cfg, text).expect("cfg");
        let out = Command::new(SER)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("ser -c");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let base = "loadmodule \"modules/sl/sl.so\"\nloadmodule \"modules/jabber/jabber.so\"\n";
    let route = "route { if (jab_send_message()) { sl_send_reply(\"202\", \"Accepted\"); }; }\n";
    let (code, out) = check(&format!("{base}{route}"));
    assert_eq!(code, Some(255), "{out}");
    assert!(out.contains("xmpp_domain"), "{out}");
    let (code, out) = check(&format!(
        "{base}modparam(\"jabber\", \"xmpp_domain\", \"sip.example.org\")\n\
         modparam(\"jabber\", \"xmpp_secret\", \"x\")\n{route}"
    ));
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&format!(
        "{base}modparam(\"jabber\", \"domain_separator\", \"@\")\n{route}"
    ));
    assert_eq!(code, Some(255), "{out}");
    assert!(
        out.contains(":3:") && out.contains("domain_separator"),
        "{out}"
    );
}

#[test]
fn bad_input_from_the_server_reconnects_and_loses_nothing() {
    // The port of a server that is not there yet.
    let port = free_port_udp_tcp();
    let fifo = fifo_path("xmpp-bad");
    let ser = Ser::start(
        "xmpp-bad",
        &script(
            port,
            &fifo,
            "modparam(\"jabber\", \"xmpp_max_stanza\", 4096)\n\
             modparam(\"jabber\", \"xmpp_queue\", 3)\n\
             modparam(\"jabber\", \"xmpp_reconnect_max\", 2)",
        ),
        0,
        1,
        "auto",
    );
    wait_fifo(&fifo, &ser);
    // No server: three messages are queued (202), the fourth finds the queue full (503).
    let peer = Peer::new();
    for i in 1..=4 {
        let r = send_message(
            &ser,
            &peer,
            "sip:romeo*montague.example@127.0.0.1",
            &format!("q-{i}"),
            "text/plain",
            &format!("queued {i}"),
        );
        assert_eq!(status(&r), Some(if i <= 3 { 202 } else { 503 }), "{r}");
    }
    let st = status_text(&fifo);
    assert_eq!(counter(&st, "queue_full"), 1, "{st}");
    // A body over xmpp_max_stanza: 413, whatever the queue.
    let r = send_message(
        &ser,
        &peer,
        "sip:romeo*montague.example@127.0.0.1",
        "big-1",
        "text/plain",
        &"b".repeat(5000),
    );
    assert_eq!(status(&r), Some(413), "{r}");

    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake server");
    // First connection: a stanza that is not well-formed right after the handshake.
    let first = serve_one(
        &listener,
        b"<message from='a@b' to='bob@sipgw.localhost'><body>x</mess>",
        Duration::from_secs(15),
    );
    assert!(
        first
            .text
            .contains("<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{}",
        first.text
    );
    // Second: a stanza over xmpp_max_stanza (4096 bytes), and it never ends.
    let mut huge = b"<message from='a@b' to='bob@sipgw.localhost'><body>".to_vec();
    huge.extend(vec![b'x'; 200_000]);
    let second = serve_one(&listener, &huge, Duration::from_secs(15));
    assert!(
        second
            .text
            .contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{}",
        second.text
    );
    // Third: a well-behaved server, with a message for bob at a domain that is not the
    // component's (refused with an error back); the queue is written meanwhile.
    let (tx, rx) = mpsc::channel();
    let l2 = listener.try_clone().expect("listener");
    std::thread::spawn(move || {
        let seen = serve_one(
            &l2,
            b"<message from='x@y' to='bob@elsewhere.example' id='w1' type='chat'>\
              <body>wrong domain</body></message>\
              <iq type='get' id='q1' from='y' to='sipgw.localhost'>\
              <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            Duration::from_secs(5),
        );
        let _ = tx.send(seen);
    });
    let third = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no third connection:\n{}", ser.log_text()));
    // Every queued message reached the server on one of the connections, none twice on the
    // last one that held.
    let all = format!("{}{}{}", first.text, second.text, third.text);
    for i in 1..=3 {
        let want = format!("<body>queued {i}</body>");
        assert!(all.contains(&want), "{want} never written:\n{all}");
    }
    assert!(
        all.contains("to='romeo@montague.example'") && all.contains("from='bob@sipgw.localhost'"),
        "{all}"
    );
    assert!(
        third.text.contains("type='error'") && third.text.contains("<item-not-found"),
        "the message to another domain gets an error: {}",
        third.text
    );
    // An iq get is answered (with an error: nothing is served over iq).
    assert!(
        third
            .text
            .contains("<iq type='error' from='sipgw.localhost' to='y' id='q1'>"),
        "{}",
        third.text
    );
    let st = status_text(&fifo);
    assert!(counter(&st, "stream_errors") >= 2, "{st}");
    assert!(counter(&st, "reconnects") >= 2, "{st}");
    assert_eq!(counter(&st, "refused"), 1, "{st}");
    let log = ser.log_text();
    assert!(log.contains("not well-formed XML"), "{log}");
    assert!(log.contains("stanza over 4096 bytes"), "{log}");
    assert_no_panic(&ser);
}
