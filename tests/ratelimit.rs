//! ratelimit against a running ser (2 shards: the pipe's counter is shared): a TAILDROP pipe of
//! L per second over a 2 s `timer_interval` lets exactly 2L of a burst through and answers the
//! rest 503; `serctl rl set_pipe` raises the limit and more pass; a method no queue takes is
//! not limited.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

fn script(fifo: &std::path::Path, metrics: SocketAddr) -> String {
    format!(
        r#"fifo="{}"
metrics_listen="{metrics}"
loadmodule "modules/sl/sl.so"
loadmodule "modules/ratelimit/ratelimit.so"
modparam("ratelimit", "timer_interval", 2)
modparam("ratelimit", "pipe", "0:TAILDROP:10")
modparam("ratelimit", "queue", "0:OPTIONS")
route {{
    if (!rl_check()) {{ append_to_reply("Retry-After: 2"); sl_send_reply("503", "Limiting"); break; }};
    sl_send_reply("200", "OK");
}}
"#,
        fifo.display()
    )
}

fn request(sock: &UdpSocket, method: &str, tag: &str) -> String {
    let local = sock.local_addr().expect("local");
    format!(
        "{method} sip:ping@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:rl@example.com>;tag=f-{tag}\r\n\
         To: <sip:ping@127.0.0.1>\r\n\
         Call-ID: {tag}@rl-test\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends `n` requests at once and counts the replies: (200s, 503s with their Retry-After).
fn burst(sock: &UdpSocket, to: SocketAddr, method: &str, tag: &str, n: usize) -> (usize, usize) {
    for i in 0..n {
        sock.send_to(request(sock, method, &format!("{tag}-{i}")).as_bytes(), to)
            .expect("send");
    }
    let (mut ok, mut busy) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while ok + busy < n && Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]);
            // append_to_reply's Retry-After goes on the 503s only.
            let retry = text.contains("\r\nRetry-After: 2\r\n");
            match status(&text) {
                Some(200) if !retry => ok += 1,
                Some(503) if retry => busy += 1,
                _ => panic!("unexpected reply:\n{text}"),
            }
        }
    }
    (ok, busy)
}

/// Bursts of `n` in fresh intervals until one falls inside a single interval (a burst lasts a
/// few ms of a 2 s interval, so nearly always the first): how many of it passed.
fn passed_in_one_interval(
    sock: &UdpSocket,
    to: SocketAddr,
    tag: &str,
    n: usize,
    want: usize,
) -> usize {
    let mut got = Vec::new();
    for attempt in 0..3 {
        // A whole interval later: nothing of the last burst is counted any more.
        std::thread::sleep(Duration::from_millis(2100));
        let (ok, busy) = burst(sock, to, "OPTIONS", &format!("{tag}{attempt}"), n);
        assert_eq!(ok + busy, n, "every request answered");
        if ok == want {
            return ok;
        }
        got.push(ok);
    }
    panic!("never {want} of {n} in one interval: {got:?}");
}

#[test]
fn taildrop_pipe_limits_a_burst_and_serctl_raises_the_limit() {
    let fifo = fifo_path("rl");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free tcp port");
    let ser = Ser::start("rl", &script(&fifo, metrics), 0, 2, "auto");
    wait_fifo(&fifo, &ser);
    let to = ser.addr();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");

    // 10/s over 2 s: 20 of 60 pass.
    assert_eq!(passed_in_one_interval(&sock, to, "a", 60, 20), 20);
    // MESSAGE goes to no queue: not limited.
    assert_eq!(burst(&sock, to, "MESSAGE", "msg", 60), (60, 0));

    let (code, out) = serctl_joined(&fifo, &["rl", "set_pipe", "0", "TAILDROP", "20"]);
    assert_eq!(code, 0, "{out}");
    let (code, pipes) = serctl_joined(&fifo, &["rl", "pipes"]);
    assert_eq!(code, 0, "{pipes}");
    assert!(
        pipes.contains("id=0 algorithm=TAILDROP limit=20"),
        "{pipes}"
    );
    assert_eq!(passed_in_one_interval(&sock, to, "b", 60, 40), 40);

    let (_, queues) = serctl_joined(&fifo, &["rl", "queues"]);
    assert!(queues.contains("method=OPTIONS pipe=0"), "{queues}");
    let (code, out) = serctl_joined(&fifo, &["rl", "set_pipe", "0", "FEEDBACK", "20"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not available"), "{out}");
    let m = http_get_body(metrics, "/metrics");
    assert!(
        m.contains("ser_ratelimit_limit{pipe=\"0\",algorithm=\"TAILDROP\"} 20"),
        "{m}"
    );
    assert!(m.contains("ser_ratelimit_refused_total{pipe=\"0\"}"), "{m}");
    let (code, stats) = serctl_joined(&fifo, &["rl", "stats"]);
    assert_eq!(code, 0, "{stats}");
    assert!(stats.contains("timer_interval: 2 s"), "{stats}");
}

#[test]
fn a_queue_naming_an_undefined_pipe_stops_ser_with_its_line() {
    let dir = temp_dir("rl-bad");
    let cfg = dir.join("bad.cfg");
    std::fs::write(
        &cfg,
        "loadmodule \"modules/ratelimit/ratelimit.so\"\n\
         modparam(\"ratelimit\", \"pipe\", \"0:TAILDROP:10\")\n\
         modparam(\"ratelimit\", \"queue\", \"1:INVITE\")\n\
         route { if (!rl_check()) { drop; }; }\n",
    )
    .expect("cfg");
    let out = std::process::Command::new(SER)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("run ser -c");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.cfg:3:1:") && err.contains("names pipe 1"),
        "{err}"
    );
}
