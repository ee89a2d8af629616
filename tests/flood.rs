//! A flood against a live ser: INVITEs to a destination that never answers at 20 times the
//! rate ser's transaction limit lets it serve, from many source ports, plus a stream of
//! malformed messages. All through it ser answers a probe (OPTIONS from another port) within
//! 100 ms, its memory stays under 64 MB, and once the transactions have timed out it is back
//! to idle: no transaction left, memory within 16 MB of where it started (the allocator keeps
//! what the shards' bounded tables and buffers once used: about 10 MB here, of which
//! malloc_trim would give back 2).
//!
//! The figures (rates, the bound) are stated below; the run is bounded (about 15 s) and ser is
//! stopped by PID at the end.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The transaction table: 1 000 for the server (tm `max_transactions`). A flooding INVITE
/// lives at least 2 s (`fr_inv_timer`: the destination never answers), then waits for the ACK
/// of its 408 that never comes (Timer H, 64 T1: 6.4 s with `retr_timer1` 100 ms): ser can take
/// on at most 500 such INVITEs a second (about 120 in fact). The CPU is not the limit (it
/// answers tens of thousands of 503s a second), the table is: the flood is 16 times the table's
/// rate at the least, 66 times what it serves.
const MAX_TRANSACTIONS: u64 = 1000;
/// INVITEs a second in the flood.
const FLOOD_RATE: u64 = 8000;
/// Malformed messages a second beside it.
const GARBAGE_RATE: u64 = 500;
const FLOOD_FOR: Duration = Duration::from_secs(5);
/// Source ports the flood comes from.
const SOURCES: usize = 32;
/// ser's resident memory may not pass this during the flood.
const RSS_BOUND_KB: u64 = 64 * 1024;
/// What a probe may take to be answered.
const PROBE_LIMIT: Duration = Duration::from_millis(100);

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn current_transactions(fifo: &std::path::Path) -> u64 {
    let (code, out, err) = serctl(fifo, &["fifo", "t_stats"]);
    assert_eq!(code, 0, "{err}");
    out.split("Current: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no current in {out}"))
}

fn invite(i: u64, port: u16, to: SocketAddr) -> Vec<u8> {
    format!(
        "INVITE sip:victim{i}@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-flood-{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@127.0.0.1>;tag=f{i}\r\n\
         To: <sip:victim{i}@{to}>\r\n\
         Call-ID: flood-{i}@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:flood@127.0.0.1:{port}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A few kinds of broken message, in turn.
fn garbage(i: u64) -> Vec<u8> {
    match i % 5 {
        0 => b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP\r\n\r\n".to_vec(),
        1 => vec![0xffu8; 300],
        2 => format!(
            "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {}\r\n\r\nshort",
            1 << 20
        )
        .into_bytes(),
        3 => {
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKnothing\r\n\r\n".to_vec()
        }
        _ => format!(
            "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{i}\r\nFrom: <{}>\r\n\r\n",
            "x".repeat(2000)
        )
        .into_bytes(),
    }
}

#[test]
fn a_flood_of_invites_and_garbage_leaves_ser_answering_and_bounded() {
    // The destination that never answers: a bound socket nobody reads (no ICMP either).
    let dead = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    let fifo = fifo_path("flood");
    let script = format!(
        r#"fifo="{fifo}"
loadmodule "sl.so"
loadmodule "tm.so"
modparam("tm", "max_transactions", {MAX_TRANSACTIONS})
modparam("tm", "fr_timer", 2)
modparam("tm", "fr_inv_timer", 2)
modparam("tm", "wt_timer", 1)
modparam("tm", "retr_timer1", 100)
modparam("tm", "retr_timer2", 400)
route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "Alive"); break; }};
    t_relay_to_udp("127.0.0.1", "{dead_port}");
}}
"#,
        fifo = fifo.display()
    );
    let ser = Ser::start("flood", &script, 0, 2, "auto");
    wait_fifo(&fifo, &ser);
    let to = ser.addr();
    let pid = ser.child.id();
    std::thread::sleep(Duration::from_millis(300));
    let idle_kb = rss_kb(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    // The flood: SOURCES sockets, paced in 1 ms steps.
    let flood = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let socks: Vec<UdpSocket> = (0..SOURCES)
                .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
                .collect();
            let start = Instant::now();
            let (mut i, mut g) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD_FOR {
                let due = start.elapsed().as_micros() as u64 * FLOOD_RATE / 1_000_000;
                while i < due {
                    let s = &socks[(i as usize) % SOURCES];
                    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                    let _ = s.send_to(&invite(i, port, to), to);
                    i += 1;
                }
                let gdue = start.elapsed().as_micros() as u64 * GARBAGE_RATE / 1_000_000;
                while g < gdue {
                    let _ = socks[(g as usize * 7) % SOURCES].send_to(&garbage(g), to);
                    g += 1;
                }
                sent.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Drain what ser sends back to the flood's ports? They are never read: the kernel drops
    // it, as a scanner's would. The probe, from a port of its own, every 50 ms.
    let probe = Peer::new();
    let mut worst = Duration::ZERO;
    let mut unanswered = 0;
    let mut probes = 0;
    let mut max_rss = idle_kb;
    let t0 = Instant::now();
    while t0.elapsed() < FLOOD_FOR {
        probes += 1;
        let cid = format!("probe-{probes}");
        let t = Instant::now();
        probe.send(
            to,
            request("OPTIONS", &format!("sip:ping@{to}"), probe.port(), &cid, "").as_bytes(),
        );
        let mut got = false;
        while t.elapsed() < Duration::from_secs(1) {
            match probe.recv_timeout(200) {
                Some(r) if r.contains(&cid) => {
                    assert_eq!(status(&r), Some(200), "{r}");
                    got = true;
                    break;
                }
                _ => {}
            }
        }
        if got {
            worst = worst.max(t.elapsed());
        } else {
            unanswered += 1;
        }
        max_rss = max_rss.max(rss_kb(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    let flooded = sent.load(Ordering::Relaxed);
    eprintln!(
        "flood: {flooded} INVITEs in {:?}, {probes} probes, worst probe {worst:?}, \
         {unanswered} unanswered, RSS idle {idle_kb} kB, max {max_rss} kB",
        FLOOD_FOR
    );
    // The flood was what it says (the sender kept up).
    assert!(
        flooded >= FLOOD_RATE * FLOOD_FOR.as_secs() * 8 / 10,
        "only {flooded} INVITEs sent"
    );
    assert_eq!(unanswered, 0, "probes unanswered\n{}", ser.log_text());
    assert!(worst <= PROBE_LIMIT, "a probe took {worst:?}");
    assert!(
        max_rss <= RSS_BOUND_KB,
        "RSS {max_rss} kB over {RSS_BOUND_KB} kB"
    );
    // The table was full: the rest got 503 (counted as refused).
    let (_, stats, _) = serctl(&fifo, &["fifo", "t_stats"]);
    let refused: u64 = stats
        .split("Refused (table full): ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        refused > flooded / 2,
        "refused {refused} of {flooded}: {stats}"
    );
    // Back to idle: every transaction timed out and went (fr_inv_timer 2 s, then Timer H
    // 6.4 s; waited for at most 30 s), memory near where it started.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut current = current_transactions(&fifo);
    while current > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        current = current_transactions(&fifo);
    }
    assert_eq!(current, 0, "transactions left\n{stats}");
    let after = rss_kb(pid);
    eprintln!("RSS after: {after} kB (idle {idle_kb} kB)");
    assert!(
        after <= idle_kb + 16 * 1024,
        "RSS {after} kB after the flood, {idle_kb} kB before"
    );
    drop(dead);
}
