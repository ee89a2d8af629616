//! The service against fake daemons on loopback: answers, retransmissions, fail-over, a call
//! sticking to its daemon, bad replies.

use super::*;
use std::net::UdpSocket;
use std::sync::mpsc;

/// A fake daemon: answers each command with `reply(cmd)` (None: silent), counts what it got.
fn fake(
    reply: impl Fn(&Value) -> Option<Vec<u8>> + Send + 'static,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Value>>>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let d = &buf[..n];
            let sp = d.iter().position(|&b| b == b' ').unwrap();
            let cmd = bencode::decode(&d[sp + 1..]).unwrap();
            seen2.lock().unwrap().push(cmd.clone());
            if let Some(r) = reply(&cmd) {
                let mut out = d[..=sp].to_vec();
                out.extend_from_slice(&r);
                let _ = s.send_to(&out, from);
            }
        }
    });
    (addr, seen)
}

fn cfg(addrs: &[SocketAddr]) -> Config {
    Config {
        daemons: addrs
            .iter()
            .map(|a| Daemon {
                name: a.to_string(),
                addr: *a,
                weight: 1,
            })
            .collect(),
        tout: Duration::from_millis(50),
        retr: 2,
        disable: Duration::from_secs(60),
    }
}

fn ask(r: &Rtpengine, call: &str, command: &str) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let mut cmd = Value::dict();
    cmd.set("command", Value::str(command));
    cmd.set("call-id", Value::str(call));
    r.request(
        call.as_bytes(),
        cmd,
        Box::new(move |o| {
            let _ = tx.send(o);
        }),
    );
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

fn ok() -> Option<Vec<u8>> {
    Some(b"d6:result2:oke".to_vec())
}

#[test]
fn socks_parameter() {
    let d = parse_socks("udp:127.0.0.1:2223 udp:127.0.0.2:2224=3  127.0.0.3:5").unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[1].weight, 3);
    assert_eq!(d[1].addr, "127.0.0.2:2224".parse().unwrap());
    assert_eq!(d[0].name, "udp:127.0.0.1:2223");
    assert_eq!(
        parse_socks("udp6:[::1]:2223").unwrap()[0].addr,
        "[::1]:2223".parse().unwrap()
    );
    for bad in [
        "",
        "udp:127.0.0.1",
        "udp:127.0.0.1:2223=0",
        "udp:127.0.0.1:x",
        "tcp:127.0.0.1:2223",
        "http://x:1",
    ] {
        assert!(parse_socks(bad).is_err(), "{bad}");
    }
}

#[test]
fn answer_retransmission_and_bad_replies() {
    // Answers only the second send of each command.
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = Arc::clone(&count);
    let (a, seen) = fake(move |cmd| {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        match cmd.get("call-id").and_then(Value::as_text).as_deref() {
            Some("bad") => Some(b"d6:result2:ok".to_vec()),
            Some("err") => Some(b"d6:result5:error12:error-reason7:no calle".to_vec()),
            Some("list") => Some(b"l2:oke".to_vec()),
            _ if n % 2 == 1 => ok(),
            _ => None,
        }
    });
    let r = Rtpengine::start(cfg(&[a])).unwrap();
    assert!(ask(&r, "c1", "ping").is_ok());
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(ask(&r, "bad", "ping").unwrap_err().contains("bad reply"));
    assert!(ask(&r, "err", "query").unwrap_err().contains("no call"));
    assert!(ask(&r, "list", "query").is_err());
}

#[test]
fn failover_and_sticky_calls() {
    let (dead, dead_seen) = fake(|_| None);
    let (live, live_seen) = fake(|_| ok());
    let r = Rtpengine::start(cfg(&[dead, live])).unwrap();
    // Offers of many calls: those hashed to the dead daemon fail over after its retr sends;
    // once it is disabled nothing more goes there.
    for i in 0..20 {
        assert!(ask(&r, &format!("call-{i}"), "offer").is_ok());
    }
    let dead_got = dead_seen.lock().unwrap().len();
    assert_eq!(dead_got, 2, "two sends, then the daemon is skipped");
    assert_eq!(live_seen.lock().unwrap().len(), 20);
    // A later command of a call goes where its offer went.
    assert!(ask(&r, "call-0", "answer").is_ok());
    assert!(ask(&r, "call-0", "delete").is_ok());
    assert_eq!(dead_seen.lock().unwrap().len(), 2);

    // No daemon answers: an error, after each was tried.
    let (d1, s1) = fake(|_| None);
    let (d2, s2) = fake(|_| None);
    let r = Rtpengine::start(cfg(&[d1, d2])).unwrap();
    let t = Instant::now();
    assert!(ask(&r, "x", "offer")
        .unwrap_err()
        .contains("no rtpengine daemon answered"));
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((s1.lock().unwrap().len(), s2.lock().unwrap().len()), (2, 2));
    // Both disabled now: the next one fails at once.
    assert!(ask(&r, "y", "offer").unwrap_err().contains("all disabled"));
}

#[test]
fn the_hash_spreads_calls_by_weight() {
    let (a, sa) = fake(|_| ok());
    let (b, sb) = fake(|_| ok());
    let mut c = cfg(&[a, b]);
    c.daemons[1].weight = 3;
    let r = Rtpengine::start(c).unwrap();
    for i in 0..200 {
        assert!(ask(&r, &format!("w-{i}"), "offer").is_ok());
    }
    let (na, nb) = (sa.lock().unwrap().len(), sb.lock().unwrap().len());
    assert_eq!(na + nb, 200);
    assert!((20..80).contains(&na), "{na} / {nb}");
}

#[test]
fn not_running_fails_at_once() {
    let r = Rtpengine::disabled();
    assert!(ask(&r, "c", "offer").is_err());
}
