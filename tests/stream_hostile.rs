//! Bad input over streams against a live `ser`: through every case no panic (ser still
//! runs), and other clients (UDP, a long-lived TCP connection, a new TCP connection) served.
//!
//! - The RFC 4475 and RFC 5118 torture corpora over TCP, in a loopback-only network namespace
//!   as tests/torture.rs does over UDP (the messages name foreign hosts): each message on a
//!   connection of its own, then all of them on one connection (where a framing error closes
//!   it, the test reconnects and goes on). What a stream adds to the datagram expectations: a
//!   message without Content-Length gets 400 and a close, an unusable Content-Length a close,
//!   one longer than what follows a wait.
//! - Partial messages and peers that close mid-message; lying Content-Lengths; bytes after the
//!   server closed; plaintext to the TLS port and a TLS ClientHello to the TCP port; stalled
//!   TLS handshakes; 200 connections opened and dropped at once; more connections than
//!   `tcp_max_connections`. After all of it ser's RSS has not grown past a bound and it holds
//!   no connection (read from /proc: ser exports no connection gauge in its metrics yet).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::corpus::*;
use common::stream::*;
use common::*;

const INNER_ENV: &str = "SER_TCP_TORTURE_INNER";

#[test]
fn torture_corpora_over_tcp_in_a_network_namespace() {
    let (ok, out) = run_in_namespace("tcp_torture_inner", INNER_ENV, Duration::from_secs(150));
    assert!(ok, "TCP torture run inside the namespace failed:\n{out}");
    assert!(out.contains("tcp torture: all checks passed"), "{out}");
}

/// How a message frames on a stream (as RFC 3261 §18.3 reads it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// Head and Content-Length body; `extra`: bytes follow that begin another message.
    Whole { extra: bool },
    /// No Content-Length: cannot be framed.
    NoLength,
    /// A Content-Length that is not a number, or two that differ.
    BadLength,
    /// A Content-Length longer than the body that follows: the server waits for more.
    Short,
}

fn framing(data: &[u8]) -> Framing {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Framing::Short;
    };
    let head = String::from_utf8_lossy(&data[..end]);
    let values: Vec<&str> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                .then_some(v.trim())
        })
        .collect();
    let Some(first) = values.first() else {
        return Framing::NoLength;
    };
    let Ok(len) = first.parse::<usize>() else {
        return Framing::BadLength;
    };
    if values.iter().any(|v| v.parse::<usize>() != Ok(len)) {
        return Framing::BadLength;
    }
    let body = data.len() - end - 4;
    if len > body {
        return Framing::Short;
    }
    let rest = &data[end + 4 + len..];
    Framing::Whole {
        extra: rest.iter().any(|b| *b != b'\r' && *b != b'\n'),
    }
}

/// What a message over a stream must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TcpWant {
    /// As over UDP (the corpus's expectation), answered on the connection.
    Datagram(Want),
    /// 400, then the server closes.
    Reject400AndClose,
    /// Closed (any reply before it an error, never a 2xx).
    Close,
    /// Nothing yet: the server waits for the rest (the test gives up and closes).
    Wait,
}

struct Case {
    name: String,
    data: Vec<u8>,
    want: TcpWant,
    /// More follows the message (the test starts a new connection after it).
    extra: bool,
}

fn tcp_cases() -> Vec<Case> {
    cases()
        .into_iter()
        .map(|(name, mut data, want)| {
            // A file that ends without the blank line after the head (as some corpus files
            // do) gets it: on a stream nothing else could end the message.
            if !data.windows(4).any(|w| w == b"\r\n\r\n") && data.ends_with(b"\r\n") {
                data.extend_from_slice(b"\r\n");
            }
            let f = framing(&data);
            let want = match f {
                Framing::Whole { .. } => TcpWant::Datagram(want),
                Framing::NoLength => TcpWant::Reject400AndClose,
                Framing::BadLength => TcpWant::Close,
                Framing::Short => TcpWant::Wait,
            };
            let extra = matches!(f, Framing::Whole { extra: true });
            Case {
                name,
                data,
                want,
                extra,
            }
        })
        .collect()
}

fn call_id_of(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case("call-id") || n.eq_ignore_ascii_case("i"))
            .then(|| v.trim().to_string())
    })
}

/// Sends one case over `w` and checks what came back (on the connection; forwards on
/// `fwd`, the UDP socket the script forwards to); a failure is described.
fn check(case: &Case, w: &mut Wire, fwd: &UdpSocket) -> Result<(), String> {
    if !w.send(&case.data) {
        return Err("the server did not take the bytes".into());
    }
    let key = via_key(&String::from_utf8_lossy(&case.data));
    let mine = |m: &String| status(m).is_some() && via_key(m) == key;
    let summary = |got: &[String]| -> Vec<String> {
        got.iter()
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .collect()
    };
    match case.want {
        TcpWant::Datagram(Want::Reply(code)) => {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut got = Vec::new();
            while Instant::now() < deadline && !w.eof {
                if let Some(m) = w.next(Duration::from_millis(100)) {
                    let done = mine(&m) && status(&m) == Some(code);
                    got.push(m);
                    if done {
                        return Ok(());
                    }
                }
            }
            Err(format!("wanted {code}, got {:?}", summary(&got)))
        }
        TcpWant::Datagram(Want::Accept) => {
            let call_id = call_id_of(&case.data).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            fwd.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            while Instant::now() < deadline {
                if let Some(m) = w.next(Duration::from_millis(30)) {
                    if mine(&m) && status(&m) == Some(400) {
                        return Err(format!("answered 400: {}", summary(&[m])[0]));
                    }
                    let done = mine(&m) && status(&m) >= Some(200);
                    got.push(m);
                    if done {
                        return Ok(());
                    }
                }
                if let Ok((n, _)) = fwd.recv_from(&mut buf) {
                    let d = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if !call_id.is_empty() && d.contains(&call_id) && status(&d).is_none() {
                        return Ok(());
                    }
                }
            }
            Err(format!(
                "neither answered nor forwarded: {:?}{}",
                summary(&got),
                if w.eof { " (closed)" } else { "" }
            ))
        }
        TcpWant::Datagram(Want::Nothing | Want::AcceptSilently) => {
            let deadline = Instant::now() + Duration::from_millis(300);
            let mut got = Vec::new();
            while Instant::now() < deadline && !w.eof {
                if let Some(m) = w.next(Duration::from_millis(50)) {
                    got.push(m);
                }
            }
            let answered: Vec<String> = got.into_iter().filter(|m| mine(m)).collect();
            if answered.is_empty() {
                Ok(())
            } else {
                Err(format!("answered: {:?}", summary(&answered)))
            }
        }
        TcpWant::Reject400AndClose => {
            let (got, closed) = w.until_closed(Duration::from_secs(3));
            let has_400 = got.iter().any(|m| mine(m) && status(m) == Some(400));
            if has_400 && closed {
                Ok(())
            } else {
                Err(format!(
                    "wanted 400 and a close: {:?}, closed {closed}",
                    summary(&got)
                ))
            }
        }
        TcpWant::Close => {
            let (got, closed) = w.until_closed(Duration::from_secs(3));
            let ok = closed && got.iter().all(|m| status(m).is_some_and(|c| c >= 400));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "wanted a close: {:?}, closed {closed}",
                    summary(&got)
                ))
            }
        }
        TcpWant::Wait => match w.next(Duration::from_millis(300)) {
            None if !w.eof => Ok(()),
            None => Err("closed, not waiting for the rest".into()),
            Some(m) => Err(format!("answered before the rest: {}", summary(&[m])[0])),
        },
    }
}

/// ser still runs and serves: an OPTIONS over UDP (from `udp`, filtering the forwards that
/// also arrive there) and one over the long-lived TCP connection `good`.
fn alive(ser: &mut Ser, udp: &UdpSocket, good: &mut Wire, after: &str, i: usize) {
    assert!(
        matches!(ser.child.try_wait(), Ok(None)),
        "ser exited after {after}:\n{}",
        ser.log_text()
    );
    let call_id = format!("alive-{i}");
    let port = udp.local_addr().unwrap().port();
    let opt = request(
        "OPTIONS",
        &format!("sip:ser@{}", ser.addr()),
        port,
        &call_id,
        "",
    );
    udp.send_to(opt.as_bytes(), ser.addr()).expect("send");
    udp.set_read_timeout(Some(Duration::from_millis(2000)))
        .expect("timeout");
    let mut buf = vec![0u8; 65536];
    let mut answered = false;
    while let Ok((n, _)) = udp.recv_from(&mut buf) {
        let r = String::from_utf8_lossy(&buf[..n]);
        if r.contains(&call_id) && status(&r) == Some(200) {
            answered = true;
            break;
        }
    }
    assert!(answered, "no UDP answer after {after}\n{}", ser.log_text());
    let tcp = ser.listen("tcp");
    let local = good.s.local_addr().unwrap().port();
    let call_id = format!("alive-tcp-{i}");
    let opt =
        request("OPTIONS", &format!("sip:ser@{tcp}"), local, &call_id, "").replace("/UDP", "/TCP");
    assert!(
        good.send(opt.as_bytes()),
        "good connection lost after {after}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(r) = good.next(Duration::from_millis(200)) {
            if r.contains(&call_id) && status(&r) == Some(200) {
                return;
            }
        }
    }
    panic!("no TCP answer after {after}\n{}", ser.log_text());
}

#[test]
#[ignore = "runs inside the network namespace made by torture_corpora_over_tcp_in_a_network_namespace"]
fn tcp_torture_inner() {
    if std::env::var(INNER_ENV).is_err() {
        eprintln!("tcp_torture_inner only runs inside its network namespace");
        return;
    }
    let mut ser = Ser::start("tcp-torture", STATELESS, 0, 2, "auto");
    let tcp_addr = ser.listen("tcp");
    // Forwards arrive here (the script's forward(127.0.0.1, 5060)).
    let udp = UdpSocket::bind("127.0.0.1:5060").expect("bind 5060 in the namespace");
    let mut good = Wire::connect(tcp_addr);
    let cases = tcp_cases();
    assert!(
        cases.iter().any(|c| c.want == TcpWant::Reject400AndClose)
            && cases.iter().any(|c| c.want == TcpWant::Close)
            && cases.iter().any(|c| c.want == TcpWant::Wait),
        "the corpora have messages of every stream framing"
    );
    let mut failures = Vec::new();
    let mut n = 0;
    // Each message on a connection of its own.
    for case in &cases {
        let mut w = Wire::connect(tcp_addr);
        if let Err(e) = check(case, &mut w, &udp) {
            failures.push(format!("{} (own connection): {e}", case.name));
        }
        drop(w);
        n += 1;
        alive(&mut ser, &udp, &mut good, &case.name, n);
    }
    // All of them on one connection; one the server closed (or that waits for a body that
    // will not come, or holds the start of another message) is replaced.
    let mut w = Wire::connect(tcp_addr);
    let mut reconnects = 0;
    for case in &cases {
        if w.eof {
            w = Wire::connect(tcp_addr);
            reconnects += 1;
        }
        if let Err(e) = check(case, &mut w, &udp) {
            failures.push(format!("{} (shared connection): {e}", case.name));
        }
        if case.want == TcpWant::Wait || case.extra {
            w = Wire::connect(tcp_addr);
            reconnects += 1;
        }
        n += 1;
        alive(&mut ser, &udp, &mut good, &case.name, n);
    }
    drop(w);
    assert!(
        failures.is_empty(),
        "TCP torture failures:\n{}\n{}",
        failures.join("\n"),
        ser.log_text()
    );
    assert!(!ser.log_text().contains("panicked"), "{}", ser.log_text());
    println!(
        "tcp torture: {} messages twice ({reconnects} reconnects on the shared connection)",
        cases.len()
    );
    println!("tcp torture: all checks passed");
}

// ---------------------------------------------------------------------------------------
// Hostile clients, one case after another, against one ser.

const SCRIPT: &str = r#"
loadmodule "modules/sl/sl.so"
route {
    if (method == "OPTIONS") { sl_send_reply("200", "OK"); break; };
    sl_send_reply("404", "Not Here");
}
"#;

/// The limit of this test's ser (the long-lived good connection is one of them).
const MAX_CONNS: usize = 40;

/// The bytes a TLS client opens with (a ClientHello), from Python's ssl module.
fn client_hello() -> Vec<u8> {
    const CODE: &str = "import ssl,sys\n\
        ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
        ctx.check_hostname=False\n\
        ctx.verify_mode=ssl.CERT_NONE\n\
        i,o=ssl.MemoryBIO(),ssl.MemoryBIO()\n\
        s=ctx.wrap_bio(i,o,server_hostname='127.0.0.1')\n\
        try:\n    s.do_handshake()\nexcept ssl.SSLWantReadError:\n    pass\n\
        sys.stdout.write(o.read().hex())\n";
    let (ok, out) = run_bounded(
        Command::new("python3").args(["-c", CODE]),
        Duration::from_secs(10),
    );
    assert!(ok, "python3 could not make a ClientHello: {out}");
    let hex = out.trim();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake record");
    bytes
}

fn options(addr: SocketAddr, port: u16, call_id: &str, transport: &str) -> String {
    request("OPTIONS", &format!("sip:{addr}"), port, call_id, "")
        .replace("/UDP", &format!("/{transport}"))
}

/// Between cases: ser runs, and UDP, the long-lived connection and a new TCP connection are
/// served (a new one is retried while closed connections free their slots).
fn served(ser: &mut Ser, good: &mut TcpStream, after: &str) {
    let tag = after.replace(' ', "-");
    assert!(
        matches!(ser.child.try_wait(), Ok(None)),
        "ser exited after {after}:\n{}",
        ser.log_text()
    );
    udp_options_ok(ser, &format!("{tag}-udp"));
    let r = options_over_tcp(good, ser, &format!("{tag}-good")).unwrap_or_else(|| {
        panic!(
            "good connection not served after {after}\n{}",
            ser.log_text()
        )
    });
    assert_eq!(status(&r), Some(200), "{r}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = tcp(ser.listen("tcp"));
        if let Some(r) = options_over_tcp(&mut s, ser, &format!("{tag}-new")) {
            assert_eq!(status(&r), Some(200), "{r}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a new TCP connection not served after {after}\n{}",
            ser.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads until the server closes `s` (within `limit`): what came, and whether it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match s.read(&mut b) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn hostile_stream_clients_leave_ser_serving_and_holding_nothing() {
    let dir = temp_dir("stream-hostile");
    let script = format!(
        "enable_tls=yes\ndata_dir=\"{}\"\ntcp_read_timeout=2\ntls_handshake_timeout=2\n\
         tcp_max_connections={MAX_CONNS}\n{SCRIPT}",
        dir.join("data").display()
    );
    let mut ser = Ser::start("stream-hostile", &script, 0, 2, "auto");
    let pid = ser.child.id();
    let tcp_addr = ser.listen("tcp");
    let tls_addr = ser.listen("tls");
    let mut good = tcp(tcp_addr);
    served(&mut ser, &mut good, "start");
    // What ser holds is read from /proc: the good connection is seen.
    let held = wait_stream_connections(pid, 1, Duration::from_secs(3));
    assert_eq!(held.len(), 1, "ser's connections: {held:?}");
    let rss0 = rss_kib(pid);
    let hello = client_hello();

    // A message in pieces, with pauses between them: answered once whole.
    let mut s = tcp(tcp_addr);
    let port = s.local_addr().unwrap().port();
    let req = options(tcp_addr, port, "pieces", "TCP");
    for piece in req.as_bytes().chunks(req.len() / 3 + 1) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = read_msg(&mut s).expect("the message in pieces answered");
    assert!(r.contains("pieces") && status(&r) == Some(200), "{r}");
    drop(s);
    served(&mut ser, &mut good, "pieces");

    // Peers that close mid-head and mid-body.
    for i in 0..20 {
        let mut s = tcp(tcp_addr);
        let req = options(tcp_addr, 1, &format!("cut-{i}"), "TCP");
        let sent = if i % 2 == 0 {
            req[..req.len() / 2].to_string()
        } else {
            req.replace("Content-Length: 0", "Content-Length: 100") + "only part of it"
        };
        s.write_all(sent.as_bytes()).unwrap();
    }
    served(&mut ser, &mut good, "closed mid-message");

    // A Content-Length longer than the body: the next message's first bytes become its body,
    // and the rest of that one (it still ends in a blank line and has a Content-Length) frames
    // as a message that does not parse: not answered as the request it was cut from. The
    // stream is in step again after it.
    let mut s = tcp(tcp_addr);
    let liar =
        options(tcp_addr, 1, "liar-long", "TCP").replace("Content-Length: 0", "Content-Length: 40");
    let next = options(tcp_addr, 1, "liar-next", "TCP");
    s.write_all(liar.as_bytes()).unwrap();
    s.write_all(next.as_bytes()).unwrap();
    let mut w = Wire::new(s);
    let r = w
        .next(Duration::from_secs(3))
        .expect("the liar answered once its body came");
    assert!(r.contains("liar-long") && status(&r) == Some(200), "{r}");
    let after = options(tcp_addr, 1, "liar-after", "TCP");
    assert!(w.send(after.as_bytes()));
    let r = loop {
        let r = w
            .next(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("the stream after the liar not served\n{}", ser.log_text()));
        assert!(!r.contains("liar-next") || status(&r) != Some(200), "{r}");
        if r.contains("liar-after") {
            break r;
        }
    };
    assert_eq!(status(&r), Some(200), "{r}");
    drop(w);
    // A Content-Length shorter than the body: the rest is taken for the next message, which
    // never ends.
    let mut s = tcp(tcp_addr);
    let short = options(tcp_addr, 1, "liar-short", "TCP") + "garbage after the message";
    s.write_all(short.as_bytes()).unwrap();
    let r = read_msg(&mut s).expect("answered");
    assert!(r.contains("liar-short") && status(&r) == Some(200), "{r}");
    let (_, cut) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(cut, "the endless rest is cut off by the read timeout");
    served(&mut ser, &mut good, "lying Content-Length");

    // Bytes after the server closed: a message without Content-Length gets 400 and a close;
    // what the peer writes after that is refused (a reset), never read.
    let mut s = tcp(tcp_addr);
    let nolen = options(tcp_addr, 1, "nolen", "TCP").replace("Content-Length: 0\r\n", "");
    s.write_all(nolen.as_bytes()).unwrap();
    let r = read_msg(&mut s).expect("400");
    assert_eq!(status(&r), Some(400), "{r}");
    assert!(closed(&mut s), "closed after the 400");
    let refused = (0..50).any(|i| {
        std::thread::sleep(Duration::from_millis(10));
        s.write_all(options(tcp_addr, 1, &format!("after-{i}"), "TCP").as_bytes())
            .is_err()
    });
    assert!(refused, "writes after the close were still taken");
    served(&mut ser, &mut good, "bytes after the close");

    // Plaintext SIP to the TLS port: no SIP back, closed.
    let mut s = tcp(tls_addr);
    s.write_all(options(tls_addr, 1, "plain-to-tls", "TLS").as_bytes())
        .unwrap();
    let (back, closed) = read_until_closed(&mut s, Duration::from_secs(4));
    assert!(closed, "plaintext on the TLS port not closed");
    assert!(
        !String::from_utf8_lossy(&back).contains("SIP/2.0"),
        "answered in plaintext"
    );
    served(&mut ser, &mut good, "plaintext to the TLS port");

    // A ClientHello to the TCP port: never a message, so no answer but perhaps a 400, and
    // closed by the read timeout at the latest.
    let mut s = tcp(tcp_addr);
    s.write_all(&hello).unwrap();
    let (back, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(closed, "a ClientHello on the TCP port left open");
    let back = String::from_utf8_lossy(&back);
    assert!(back.is_empty() || back.starts_with("SIP/2.0 400"), "{back}");
    // A ClientHello to the TLS port and then nothing: closed after tls_handshake_timeout.
    let mut s = tcp(tls_addr);
    s.write_all(&hello).unwrap();
    let t0 = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(closed, "a stalled handshake left open");
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "closed before the timeout"
    );
    // Half a ClientHello, then the peer goes.
    for _ in 0..10 {
        let mut s = tcp(tls_addr);
        s.write_all(&hello[..hello.len() / 2]).unwrap();
    }
    served(&mut ser, &mut good, "TLS hellos");

    // 200 connections opened and dropped at once (past the limit: most are refused), some
    // with half a message or half a ClientHello.
    let burst: Vec<TcpStream> = (0..200)
        .filter_map(|i| {
            let addr = if i % 4 == 3 { tls_addr } else { tcp_addr };
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            match i % 4 {
                1 => {
                    let _ = s.write_all(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1");
                }
                3 => {
                    let _ = s.write_all(&hello[..hello.len() / 2]);
                }
                _ => {}
            }
            Some(s)
        })
        .collect();
    assert!(burst.len() > 150, "only {} connections opened", burst.len());
    drop(burst);
    served(&mut ser, &mut good, "200 connections dropped");

    // More connections than tcp_max_connections: the ones past it are closed unanswered;
    // UDP is served meanwhile, and the slots come back when the held ones go. (First the
    // connections of the cases before are gone: only the good one is left.)
    let held = wait_stream_connections(pid, 1, Duration::from_secs(5));
    assert_eq!(held.len(), 1, "connections left after the burst: {held:?}");
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..MAX_CONNS - 1 {
        let mut s = tcp(tcp_addr);
        // Accepted: a ping gets its pong.
        s.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        s.read_exact(&mut pong)
            .unwrap_or_else(|e| panic!("held connection {}: {e}", held.len()));
        held.push(s);
    }
    for i in 0..5 {
        let mut extra = tcp(tcp_addr);
        assert!(
            options_over_tcp(&mut extra, &ser, &format!("over-limit-{i}")).is_none(),
            "a connection past the limit was served"
        );
    }
    let mut extra = tcp(tls_addr);
    extra.write_all(&hello).unwrap();
    let (back, closed) = read_until_closed(&mut extra, Duration::from_secs(3));
    assert!(
        closed && back.is_empty(),
        "a TLS connection past the limit was served"
    );
    udp_options_ok(&ser, "at-the-limit");
    let r = options_over_tcp(&mut good, &ser, "at-the-limit-good").expect("good served");
    assert_eq!(status(&r), Some(200));
    drop(held);
    served(&mut ser, &mut good, "the connection limit");

    // After all of it: nothing left open, memory bounded, no panic.
    drop(good);
    let left = wait_stream_connections(pid, 0, Duration::from_secs(5));
    assert!(left.is_empty(), "connections left open: {left:?}");
    let rss = rss_kib(pid);
    assert!(
        rss < rss0 + 64 * 1024,
        "RSS grew from {rss0} KiB to {rss} KiB"
    );
    assert!(
        matches!(ser.child.try_wait(), Ok(None)),
        "{}",
        ser.log_text()
    );
    assert!(!ser.log_text().contains("panicked"), "{}", ser.log_text());
}
