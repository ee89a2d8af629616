//! pike against a running ser: a source sending ten times the density is blocked (503 from
//! the script) while another source still passes, its block is logged once and listed by
//! `pike.top`, and it is released once it calms down. Run with 2 and with 4 shards: the
//! source's requests spread over every shard (their Call-IDs do), and the shards together must
//! still hold it to about the density.
//!
//! The second source binds 127.0.0.2 (loopback: pike counts source addresses, so the two
//! sources need two).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const DENSITY: usize = 10;

fn script(fifo: &std::path::Path, metrics: SocketAddr) -> String {
    format!(
        r#"fifo="{}"
metrics_listen="{metrics}"
loadmodule "modules/sl/sl.so"
loadmodule "modules/pike/pike.so"
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", {DENSITY})
modparam("pike", "remove_latency", 10)
route {{
    if (!pike_check_req()) {{ sl_send_reply("503", "Service Unavailable"); break; }};
    sl_send_reply("200", "OK");
}}
"#,
        fifo.display()
    )
}

fn options(sock: &UdpSocket, tag: &str) -> String {
    let local = sock.local_addr().expect("local");
    format!(
        "OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@example.com>;tag=f-{tag}\r\n\
         To: <sip:ping@127.0.0.1>\r\n\
         Call-ID: {tag}@pike-test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends `n` OPTIONS at once (each its own Call-ID, so they spread over the shards) and
/// counts the replies: (200s, 503s).
fn burst(sock: &UdpSocket, to: SocketAddr, tag: &str, n: usize) -> (usize, usize) {
    for i in 0..n {
        sock.send_to(options(sock, &format!("{tag}-{i}")).as_bytes(), to)
            .expect("send");
    }
    let (mut ok, mut busy) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while ok + busy < n && Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            match status(&String::from_utf8_lossy(&buf[..len])) {
                Some(200) => ok += 1,
                Some(503) => busy += 1,
                _ => {}
            }
        }
    }
    (ok, busy)
}

fn flood_is_blocked_other_source_passes_and_calm_releases(shards: usize) {
    let fifo = fifo_path(&format!("pike{shards}"));
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free tcp port");
    let ser = Ser::start(
        &format!("pike-{shards}"),
        &script(&fifo, metrics),
        0,
        shards,
        "auto",
    );
    wait_fifo(&fifo, &ser);
    let to = ser.addr();
    let flooder = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let other = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2 (loopback)");

    // Ten times the density at once.
    let (ok, busy) = burst(&flooder, to, "flood", 10 * DENSITY);
    let flooded = Instant::now();
    assert_eq!(ok + busy, 10 * DENSITY, "every request answered");
    // DENSITY - 1 pass, at most DENSITY / 4 more across shards (see src/pike); the burst may
    // span the start of a sampling unit, which lets one unit's worth more through.
    assert!(
        (DENSITY - 1..=2 * (DENSITY - 1) + DENSITY / 4).contains(&ok),
        "{shards} shards: {ok} of {} passed",
        10 * DENSITY
    );
    // Still blocked; the other source is not.
    assert_eq!(burst(&flooder, to, "more", 5), (0, 5));
    assert_eq!(
        burst(&other, to, "other", 5),
        (5, 0),
        "another source passes"
    );
    let (code, top, _) = serctl(&fifo, &["pike", "top"]);
    assert_eq!(code, 0, "{top}");
    assert!(top.contains("127.0.0.1 blocked="), "{top}");
    assert!(!top.contains("127.0.0.2"), "{top}");
    let m = http_get_body(metrics, "/metrics");
    assert!(m.contains("\nser_pike_blocked 1\n"), "{m}");
    assert!(
        m.contains(&format!("\nser_pike_refused_total {}\n", busy + 5)),
        "{m}"
    );

    // Calm: one request every half second (a quarter of the density per unit) is refused
    // while the flood's unit is the last one, then passes.
    let calm = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (ok, _) = burst(
            &flooder,
            to,
            &format!("calm{}", calm.elapsed().as_millis()),
            1,
        );
        if ok == 1 {
            break;
        }
        assert!(
            calm.elapsed() < Duration::from_secs(8),
            "not released:\n{}",
            ser.log_text()
        );
    }
    // Not before the unit after the flood's unit is over: two units at most, one at least.
    assert!(
        flooded.elapsed() >= Duration::from_millis(1500),
        "released {:?} after the flood",
        flooded.elapsed()
    );
    // The release is logged when a unit starts with it calm (a request, or pike.top, sweeps).
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let (_, top, _) = serctl(&fifo, &["pike", "top"]);
        if !top.contains("127.0.0.1") {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {top}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = ser.log_text();
    assert_eq!(
        log.matches("pike: blocking 127.0.0.1").count(),
        1,
        "one line per block:\n{log}"
    );
    assert_eq!(log.matches("pike: releasing 127.0.0.1").count(), 1, "{log}");
    assert!(!log.contains("127.0.0.2"), "{log}");
}

#[test]
fn pike_with_two_shards() {
    flood_is_blocked_other_source_passes_and_calm_releases(2);
}

#[test]
fn pike_with_four_shards() {
    flood_is_blocked_other_source_passes_and_calm_releases(4);
}
