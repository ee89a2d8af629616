//! The rtpengine module against a real rtpengine (Debian's rtpengine-daemon, userspace
//! forwarding, started here on loopback with its ports from a free range, stopped by PID):
//!
//! - a call between two sipp UAs through ser with `rtpengine_manage()` on the INVITE, its
//!   replies (onreply_route) and the BYE: the SDP the callee receives names rtpengine's
//!   address and port, not the caller's, and so does the 200 the caller receives; the caller
//!   plays RTP (sipp's G.711 pcap) to that port, the callee echoes it (`-rtp_echo`), and
//!   rtpengine's own statistics (ng `query`) show the packets relayed; after the BYE
//!   rtpengine has no call left (ng `list`);
//! - a first daemon in `rtpengine_sock` that never answers: the offer fails over to the
//!   second, the call completes through it, and the silent one is logged as disabled;
//! - a slow daemon (every answer 700 ms late, through a delaying relay in front of it): the
//!   caller's INVITE and BYE retransmissions and the callee's 200 retransmissions while the
//!   request or reply waits are absorbed, so the callee gets one INVITE and the caller only
//!   200s with rtpengine's SDP;
//! - a caller slow to ACK (1.2 s, with rtpengine 700 ms late): the callee's 200
//!   retransmitted after ser relayed the first passes statelessly, and goes out with
//!   rtpengine's SDP too (the first, as the onreply_route changed it, is remembered);
//! - a late offer (an INVITE without SDP): the 200's SDP goes to rtpengine as the offer and
//!   the ACK's as the answer; the caller gets rtpengine's port in the 200 and the callee in
//!   the ACK;
//! - no daemon answers: `rtpengine_manage()` is false and the script replies 503, and the
//!   one shard keeps serving meanwhile (an OPTIONS sent after the INVITE is answered at once,
//!   while the offer still waits for its time-outs).

// Only in builds with the `rtpengine` feature (the default).
#![cfg(feature = "rtpengine")]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::rtpengine::Rtpe;
use common::sipp::{require_sipp, scenario, uac, Uas};
use common::*;
use ser::rtpengine::bencode::Value;

fn script(socks: &str, tout_ms: u32, retr: u32) -> String {
    script_with("", socks, tout_ms, retr)
}

/// [`script`] with global lines first (metrics_listen).
fn script_with(head: &str, socks: &str, tout_ms: u32, retr: u32) -> String {
    format!(
        r#"{head}
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/textops/textops.so"
loadmodule "modules/rtpengine/rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "{socks}")
modparam("rtpengine", "rtpengine_tout_ms", {tout_ms})
modparam("rtpengine", "rtpengine_retr", {retr})
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (method == "OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
    if (loose_route()) {{
        if (method == "BYE" || method == "ACK") {{ rtpengine_manage(); }};
        t_relay();
        break;
    }};
    if (method == "INVITE") {{
        record_route();
        if (search("application/sdp") && !rtpengine_manage("replace-origin replace-session-connection")) {{
            sl_send_reply("503", "Media Relay Unavailable");
            break;
        }};
        t_on_reply("1");
    }};
    if (!t_relay()) {{ sl_reply_error(); break; }};
}}
onreply_route[1] {{
    rtpengine_manage("replace-origin replace-session-connection");
}}
"#
    )
}

/// A sipp UAS (uas-rr.xml) that echoes RTP and records the messages it gets.
fn uas(dir: &Path, callee: &str, port: u16, media: u16, msgs: &Path) -> Child {
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(scenario(dir, "uas-rr.xml", callee))
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &media.to_string(), "-rtp_echo", "-m", "1"])
        .args(["-nostdin", "-timeout", "60", "-timeout_error"])
        .args(["-trace_msg", "-message_file"])
        .arg(msgs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    child
}

/// The first `m=audio` port and `c=` address of the SDP after `start_line` in a sipp
/// One call through `ser` from a sipp caller playing `scen` (media port `uac_media`) to a sipp
/// callee on a free port (media port `uas_media`), both tracing their messages; panics when
/// either fails. Returns what the caller and the callee saw.
fn one_call(dir: &Path, ser: &Ser, scen: &str, uac_media: u16, uas_media: u16) -> (String, String) {
    let uas_port = free_port();
    let callee = format!("127.0.0.1:{uas_port}");
    let uas_msgs = dir.join("uas-msgs.log");
    let uac_msgs = dir.join("uac-msgs.log");
    let mut callee_p = uas(dir, &callee, uas_port, uas_media, &uas_msgs);
    let (ok, out) = run_bounded(
        Command::new("sipp")
            .arg("-sf")
            .arg(scenario(dir, scen, &callee))
            .arg(format!("127.0.0.1:{}", ser.port))
            .args(["-i", "127.0.0.1", "-mp", &uac_media.to_string()])
            .args(["-m", "1", "-timeout", "30", "-timeout_error", "-nostdin"])
            .args(["-trace_msg", "-message_file"])
            .arg(&uac_msgs),
        Duration::from_secs(40),
    );
    assert!(ok, "caller failed:\n{out}\n{}", ser.log_text());
    assert!(
        wait_exit(&mut callee_p, Duration::from_secs(15)),
        "callee failed"
    );
    (
        std::fs::read_to_string(&uac_msgs).unwrap_or_default(),
        std::fs::read_to_string(&uas_msgs).unwrap_or_default(),
    )
}

/// message log.
fn sdp_after(log: &str, start_line: &str) -> Option<(String, u16)> {
    let at = log.find(start_line)?;
    let rest = &log[at..];
    let c = rest
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim()
        .to_string();
    let m = rest
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some((c, m))
}

fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_child(child, Duration::ZERO);
    false
}

/// The RTP packets rtpengine counted for a call (both directions).
fn rtp_packets(q: &Value) -> i64 {
    q.get("totals")
        .and_then(|t| t.get("RTP"))
        .and_then(|r| r.get("packets"))
        .and_then(Value::as_int)
        .unwrap_or(0)
}

#[test]
fn a_call_has_its_sdp_rewritten_and_its_media_relayed_by_rtpengine() {
    require_sipp();
    let dir = temp_dir("rtpe-call");
    let rtpe = Rtpe::start(&dir);
    let ser = Ser::start(
        "rtpe-call",
        &script(&format!("udp:{}", rtpe.ng), 1000, 5),
        0,
        2,
        "auto",
    );
    let (uas_port, uas_media, uac_media) = (free_port(), free_port(), free_port());
    let callee = format!("127.0.0.1:{uas_port}");
    let uas_msgs = dir.join("uas-msgs.log");
    let uac_msgs = dir.join("uac-msgs.log");
    let mut callee_p = uas(&dir, &callee, uas_port, uas_media, &uas_msgs);
    let scen = scenario(&dir, "uac-rtp.xml", &callee);
    let ser_port = ser.port;
    let uac_log = uac_msgs.clone();
    let caller = std::thread::spawn(move || {
        run_bounded(
            Command::new("sipp")
                .arg("-sf")
                .arg(&scen)
                .arg(format!("127.0.0.1:{ser_port}"))
                .args(["-i", "127.0.0.1", "-mp", &uac_media.to_string()])
                .args(["-m", "1", "-timeout", "30", "-timeout_error", "-nostdin"])
                .args(["-trace_msg", "-message_file"])
                .arg(&uac_log),
            Duration::from_secs(40),
        )
    });
    // While the caller plays its RTP: rtpengine has the call, and counts packets.
    std::thread::sleep(Duration::from_millis(2000));
    let calls = rtpe.calls();
    assert_eq!(
        calls.len(),
        1,
        "rtpengine's calls: {calls:?}\n{}",
        ser.log_text()
    );
    let q = rtpe.ng("query", Some(&calls[0]));
    let during = rtp_packets(&q);
    let (ok, out) = caller.join().unwrap();
    assert!(ok, "caller failed:\n{out}\n{}", ser.log_text());
    assert!(
        wait_exit(&mut callee_p, Duration::from_secs(15)),
        "callee failed"
    );
    assert!(
        during >= 20,
        "rtpengine relayed {during} RTP packets by mid-call: {q:?}"
    );

    // The callee was offered rtpengine's media address, not the caller's.
    let uas_log = std::fs::read_to_string(&uas_msgs).unwrap_or_default();
    let (addr, port) = sdp_after(&uas_log, "INVITE sip:").expect("the callee's INVITE SDP");
    assert_eq!(addr, "127.0.0.1");
    assert!(
        port != uac_media && rtpe.in_range(port),
        "the INVITE the callee got offers port {port} (caller's {uac_media}, rtpengine's {:?})",
        rtpe.ports
    );
    // And the caller got rtpengine's in the 200, not the callee's.
    let uac_log = std::fs::read_to_string(&uac_msgs).unwrap_or_default();
    let (_, port) = sdp_after(&uac_log, "SIP/2.0 200 OK").expect("the caller's 200 SDP");
    assert!(
        port != uas_media && rtpe.in_range(port),
        "the 200 the caller got offers port {port} (callee's {uas_media})"
    );
    // The BYE deleted the call.
    assert_eq!(rtpe.calls(), Vec::<String>::new());
    let log = ser.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("rtpengine") && l.contains("ERROR")),
        "{log}"
    );
}

#[test]
fn an_offer_fails_over_to_the_next_daemon_when_one_does_not_answer() {
    require_sipp();
    let dir = temp_dir("rtpe-failover");
    let rtpe = Rtpe::start(&dir);
    // A daemon that takes commands and never answers (no ICMP either); weight 1000 so the
    // Call-ID's hash all but surely picks it first.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let socks = format!("udp:{silent_addr}=1000 udp:{}", rtpe.ng);
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port_udp_tcp()));
    let head = format!("metrics_listen=\"{metrics}\"");
    let ser = Ser::start(
        "rtpe-failover",
        &script_with(&head, &socks, 200, 2),
        0,
        2,
        "auto",
    );
    let uas_port = free_port();
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 1, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &callee),
        ser.port,
        1,
        1,
        Duration::from_secs(20),
    );
    assert!(ok, "caller failed:\n{out}\n{}", ser.log_text());
    let (uas_ok, uas_log) = uas.finish(Duration::from_secs(15));
    assert!(uas_ok, "callee failed:\n{uas_log}");
    let log = ser.log_text();
    assert!(
        log.contains(&format!(
            "rtpengine udp:{silent_addr}: no answer after 2 tries"
        )),
        "{log}"
    );
    // The call went to the live daemon, and its BYE deleted it there.
    assert_eq!(rtpe.calls(), Vec::<String>::new());
    let mut buf = [0u8; 2048];
    silent.set_nonblocking(true).unwrap();
    let mut got = 0;
    while silent.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(
        got, 2,
        "the silent daemon got the offer twice, then nothing more"
    );
    // /metrics and rtpengine.show say so: the silent one down after one command unanswered,
    // the live one answered the offer, the answer and the delete.
    let m = http_get_body(metrics, "/metrics");
    let silent = format!("udp:{silent_addr}");
    let live = format!("udp:{}", rtpe.ng);
    for line in [
        format!("ser_rtpengine_daemon_up{{daemon=\"{silent}\"}} 0"),
        format!("ser_rtpengine_daemon_up{{daemon=\"{live}\"}} 1"),
        format!("ser_rtpengine_sent_total{{daemon=\"{silent}\"}} 2"),
        format!("ser_rtpengine_timeouts_total{{daemon=\"{silent}\"}} 1"),
        format!("ser_rtpengine_answers_total{{daemon=\"{live}\",result=\"ok\"}} 3"),
        String::from("ser_rtpengine_calls 0"),
    ] {
        assert!(m.contains(&line), "no {line} in\n{m}");
    }
    let show = http_get_body(metrics, "/api/rtpengine.show");
    assert!(show.contains("state=disabled"), "{show}");
}

#[test]
fn no_daemon_answers_the_function_is_false_and_the_shard_serves_others_meanwhile() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let socks = format!(
        "udp:{} udp:{}",
        a.local_addr().unwrap(),
        b.local_addr().unwrap()
    );
    // One shard: a blocked shard could not answer the OPTIONS.
    let ser = Ser::start("rtpe-dead", &script(&socks, 300, 2), 0, 1, "auto");
    let peer = Peer::new();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 7000 RTP/AVP 0\r\n";
    let invite = request("INVITE", "sip:bob@127.0.0.1:9", peer.port(), "dead-1", "").replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
    );
    let t0 = Instant::now();
    peer.send(ser.addr(), invite.as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    peer.send(
        ser.addr(),
        request("OPTIONS", "sip:127.0.0.1", peer.port(), "opt-1", "").as_bytes(),
    );
    let first = final_reply(&peer, Duration::from_secs(5)).expect("a reply");
    let t_first = t0.elapsed();
    assert!(first.contains("CSeq: 1 OPTIONS"), "{first}");
    assert_eq!(status(&first), Some(200));
    assert!(
        t_first < Duration::from_millis(600),
        "OPTIONS took {t_first:?}"
    );
    let second = final_reply(&peer, Duration::from_secs(5)).expect("the INVITE's reply");
    let t_second = t0.elapsed();
    assert!(second.contains("CSeq: 1 INVITE"), "{second}");
    assert_eq!(status(&second), Some(503), "{second}");
    // Two daemons, two sends each, 300 ms apart: about 1.2 s.
    assert!(
        t_second >= Duration::from_millis(1100),
        "503 after {t_second:?}"
    );
    let log = ser.log_text();
    assert!(log.contains("no rtpengine daemon answered"), "{log}");
}

/// A UDP relay in front of an ng daemon that holds every command `delay` before passing it on
/// (answers come back at once): a slow rtpengine.
fn slow_relay(to: SocketAddr, delay: Duration) -> SocketAddr {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = front.local_addr().unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(to).unwrap();
    let client = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (f2, b2, c2) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        client.clone(),
    );
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = b2.recv(&mut buf) {
            if let Some(c) = *c2.lock().unwrap() {
                let _ = f2.send_to(&buf[..n], c);
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            *client.lock().unwrap() = Some(from);
            let data = buf[..n].to_vec();
            let b = back.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = b.send(&data);
            });
        }
    });
    addr
}

#[test]
fn retransmissions_wait_with_their_request_or_reply_while_rtpengine_is_slow() {
    require_sipp();
    let dir = temp_dir("rtpe-slow");
    let rtpe = Rtpe::start(&dir);
    let relay = slow_relay(rtpe.ng, Duration::from_millis(700));
    let ser = Ser::start(
        "rtpe-slow",
        &script(&format!("udp:{relay}"), 2000, 2),
        0,
        2,
        "auto",
    );
    let (uac_log, uas_log) = one_call(&dir, &ser, "uac-rr.xml", free_port(), free_port());
    // The caller did retransmit (no 100 Trying before the transaction exists).
    assert!(
        uac_log.matches("INVITE sip:service").count() >= 2,
        "the caller never retransmitted its INVITE:\n{uac_log}"
    );
    assert_eq!(
        uas_log.matches("INVITE sip:service").count(),
        1,
        "the callee got the INVITE more than once:\n{uas_log}"
    );
    assert_eq!(uas_log.matches("\nBYE sip:").count(), 1, "{uas_log}");
    // The callee retransmitted its 200 while it waited in the onreply_route (two 200s to the
    // INVITE, one to the BYE), and the caller its BYE while the delete waited.
    assert!(uas_log.matches("SIP/2.0 200 OK").count() >= 3, "{uas_log}");
    assert!(uac_log.matches("\nBYE sip:").count() >= 2, "{uac_log}");
    // Every 200 to the INVITE the caller got names rtpengine's port.
    let mut oks = 0;
    for part in uac_log.split("SIP/2.0 200 OK").skip(1) {
        if !part.contains("CSeq: 1 INVITE") {
            continue;
        }
        let (_, port) = sdp_after(part, "v=0").expect("SDP in the 200");
        assert!(rtpe.in_range(port), "a 200 with port {port}:\n{uac_log}");
        oks += 1;
    }
    assert!(oks >= 1, "{uac_log}");
    assert_eq!(rtpe.calls(), Vec::<String>::new());
}

#[test]
fn a_late_offer_goes_to_rtpengine_in_the_200_and_is_answered_in_the_ack() {
    require_sipp();
    let dir = temp_dir("rtpe-late");
    let rtpe = Rtpe::start(&dir);
    let ser = Ser::start(
        "rtpe-late",
        &script(&format!("udp:{}", rtpe.ng), 1000, 5),
        0,
        2,
        "auto",
    );
    let (uas_media, uac_media) = (free_port(), free_port());
    let (uac_log, uas_log) = one_call(&dir, &ser, "uac-late.xml", uac_media, uas_media);
    let (_, port) = sdp_after(&uac_log, "SIP/2.0 200 OK").expect("the caller's 200 SDP");
    assert!(
        port != uas_media && rtpe.in_range(port),
        "the 200 the caller got offers port {port} (callee's {uas_media}):\n{uac_log}"
    );
    let (_, port) = sdp_after(&uas_log, "ACK sip:").expect("the callee's ACK SDP");
    assert!(
        port != uac_media && rtpe.in_range(port),
        "the ACK the callee got answers port {port} (caller's {uac_media}):\n{uas_log}"
    );
    assert_eq!(rtpe.calls(), Vec::<String>::new());
    let log = ser.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("rtpengine") && l.contains("ERROR")),
        "{log}"
    );
}

#[test]
fn a_200_retransmitted_after_the_first_was_relayed_carries_rtpengines_sdp_too() {
    require_sipp();
    let dir = temp_dir("rtpe-rtx");
    let rtpe = Rtpe::start(&dir);
    let relay = slow_relay(rtpe.ng, Duration::from_millis(700));
    let ser = Ser::start(
        "rtpe-rtx",
        &script(&format!("udp:{relay}"), 2000, 2),
        0,
        2,
        "auto",
    );
    let (uac_log, uas_log) = one_call(&dir, &ser, "uac-slowack.xml", free_port(), free_port());
    // The callee sent its 200 to the INVITE at least three times (the first, one while it
    // waited for rtpengine, one after ser relayed it), the caller got more than one, and
    // every one it got names rtpengine's port.
    let uas_200s = uas_log
        .split("SIP/2.0 200 OK")
        .skip(1)
        .filter(|p| p.contains("CSeq: 1 INVITE"))
        .count();
    assert!(uas_200s >= 3, "the callee sent {uas_200s} 200s:\n{uas_log}");
    let mut oks = 0;
    for part in uac_log.split("SIP/2.0 200 OK").skip(1) {
        if !part.contains("CSeq: 1 INVITE") {
            continue;
        }
        let (_, port) = sdp_after(part, "v=0").expect("SDP in the 200");
        assert!(rtpe.in_range(port), "a 200 with port {port}:\n{uac_log}");
        oks += 1;
    }
    assert!(oks >= 2, "the caller got {oks} 200s:\n{uac_log}");
    assert_eq!(rtpe.calls(), Vec::<String>::new());
}
