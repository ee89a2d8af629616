//! Message capture end to end: a real `ser` with `capture_file` set, real SIP peers on loopback,
//! and the pcap files read back with independent readers (`pcap-file` for the container,
//! `etherparse` for Ethernet/IP/UDP, checksums recomputed) after ser has stopped.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A record-routing stateful proxy (the ACK and BYE come through it too); OPTIONS answered.
const RR_PROXY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
route {
    if (method=="OPTIONS" && uri==myself) { sl_send_reply("200", "OK"); break; };
    if (loose_route()) { t_relay(); break; };
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); break; };
}
"#;

/// One captured datagram, as an independent reader sees it.
#[derive(Debug)]
struct Captured {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
    ts: Duration,
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    fn cseq_method(&self) -> String {
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix("CSeq:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string()
    }
}

/// Reads a pcap file and checks it against the format: magic (a1b2c3d4, either byte order,
/// microseconds), version 2.4, LINKTYPE_ETHERNET, each record's lengths, Ethernet type, IP
/// header (length fields, IPv4 header checksum), UDP length and checksum.
fn read_pcap(path: &Path) -> Vec<Captured> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let magic = bytes.get(..4).expect("a file header");
    assert!(
        magic == [0xd4, 0xc3, 0xb2, 0xa1] || magic == [0xa1, 0xb2, 0xc3, 0xd4],
        "{}: magic {magic:02x?}",
        path.display()
    );
    let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).expect("pcap header");
    let h = r.header();
    assert_eq!((h.version_major, h.version_minor), (2, 4));
    assert_eq!(h.datalink, pcap_file::DataLink::ETHERNET);
    assert_eq!(h.ts_resolution, pcap_file::TsResolution::MicroSecond);
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap_or_else(|e| panic!("{}: bad record: {e}", path.display()));
        assert_eq!(p.orig_len as usize, p.data.len(), "not truncated");
        assert!(p.data.len() <= h.snaplen as usize);
        out.push(decode(&p.data, p.timestamp));
    }
    out
}

fn decode(frame: &[u8], ts: Duration) -> Captured {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
    let pkt = SlicedPacket::from_ethernet(frame).expect("Ethernet/IP/UDP frame");
    let Some(LinkSlice::Ethernet2(eth)) = &pkt.link else {
        panic!("not Ethernet II");
    };
    assert_eq!(eth.source(), [0; 6]);
    assert_eq!(eth.destination(), [0; 6]);
    let Some(TransportSlice::Udp(udp)) = &pkt.transport else {
        panic!("not UDP");
    };
    let uh = udp.to_header();
    let payload = udp.payload();
    assert_eq!(usize::from(udp.length()), 8 + payload.len(), "UDP length");
    let (from_ip, to_ip): (IpAddr, IpAddr) = match &pkt.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(
                h.total_len() as usize,
                frame.len() - 14,
                "IPv4 total length"
            );
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "IPv4 header checksum"
            );
            let ck = udp.checksum();
            if ck != 0 {
                let want = uh
                    .calc_checksum_ipv4_raw(h.source(), h.destination(), payload)
                    .expect("checksum");
                assert_eq!(ck, want, "UDP checksum (IPv4)");
            }
            (h.source_addr().into(), h.destination_addr().into())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            assert_eq!(h.payload_length() as usize, frame.len() - 14 - 40);
            let want = uh
                .calc_checksum_ipv6_raw(h.source(), h.destination(), payload)
                .expect("checksum");
            assert_eq!(udp.checksum(), want, "UDP checksum (IPv6)");
            (h.source_addr().into(), h.destination_addr().into())
        }
        None => panic!("no IP header"),
    };
    Captured {
        from: SocketAddr::new(from_ip, udp.source_port()),
        to: SocketAddr::new(to_ip, udp.destination_port()),
        payload: payload.to_vec(),
        ts,
    }
}

fn sipp_scenario(dir: &Path, name: &str, callee: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(repo_root().join("tests/data/sipp").join(name)).expect("scenario");
    let path = dir.join(name);
    std::fs::write(&path, text.replace("@CALLEE@", callee)).expect("write scenario");
    path
}

/// A sipp process killed (by PID) when dropped.
struct Sipp(Child);

impl Drop for Sipp {
    fn drop(&mut self) {
        stop_child(&mut self.0, Duration::ZERO);
    }
}

#[test]
fn a_call_through_t_relay_is_captured_in_both_directions() {
    assert!(have("sipp"), "sipp (Debian sip-tester) is required");
    let dir = temp_dir("capture-call");
    let pcap = dir.join("sip.pcap");
    let script = format!("capture_file = \"{}\"\n{RR_PROXY}", pcap.display());
    let uas_port = free_port();
    // Two shards: half the datagrams are handed to the other shard, and must be captured once.
    let mut ser = Ser::start("capture-call", &script, 0, 2, "auto");
    let port = ser.port;

    // A few OPTIONS with distinct Call-IDs from a raw peer (it never retransmits).
    let peer = Peer::new();
    for i in 0..6 {
        let ruri = format!("sip:127.0.0.1:{port}");
        let m = request("OPTIONS", &ruri, peer.port(), &format!("cap-opt-{i}"), "");
        peer.send(ser.addr(), m.as_bytes());
        let reply = peer.recv().expect("a reply to OPTIONS");
        assert_eq!(status(&reply), Some(200), "{reply}");
    }

    let callee = format!("127.0.0.1:{uas_port}");
    let uas_log = dir.join("uas.log");
    let uas = Sipp(
        Command::new("sipp")
            .arg("-sf")
            .arg(sipp_scenario(&dir, "uas-rr.xml", &callee))
            .args(["-i", "127.0.0.1", "-p", &uas_port.to_string(), "-m", "1"])
            .args(["-nostdin", "-timeout", "30", "-timeout_error", "-trace_err"])
            .arg("-error_file")
            .arg(&uas_log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp uas"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = run_bounded(
        Command::new("sipp")
            .arg("-sf")
            .arg(sipp_scenario(&dir, "uac-rr.xml", &callee))
            .arg(format!("127.0.0.1:{port}"))
            .args(["-i", "127.0.0.1"])
            .args(["-m", "1", "-timeout", "20", "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-error_file", "/dev/null"]),
        Duration::from_secs(30),
    );
    assert!(ok, "UAC failed:\n{out}\n{}", ser.log_text());
    drop(uas);
    ser.stop();
    let log = ser.log_text();
    assert!(
        log.contains("capture:"),
        "no capture summary at exit:\n{log}"
    );

    let recs = read_pcap(&pcap);
    let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (ser_a, uas_a) = (local(port), local(uas_port));
    // sipp's UAC picked its own port: the sender of the INVITE that came to ser.
    let uac_a = recs
        .iter()
        .find(|r| r.to == ser_a && r.text().starts_with("INVITE "))
        .map(|r| r.from)
        .expect("the UAC's INVITE captured");
    let has = |from: SocketAddr, to: SocketAddr, start: &str, cseq: &str| {
        recs.iter().any(|r| {
            r.from == from && r.to == to && r.text().starts_with(start) && r.cseq_method() == cseq
        })
    };
    let expect = [
        (uac_a, ser_a, "INVITE ", "INVITE"),
        (ser_a, uac_a, "SIP/2.0 100 ", "INVITE"),
        (ser_a, uas_a, "INVITE ", "INVITE"),
        (uas_a, ser_a, "SIP/2.0 180 ", "INVITE"),
        (ser_a, uac_a, "SIP/2.0 180 ", "INVITE"),
        (uas_a, ser_a, "SIP/2.0 200 ", "INVITE"),
        (ser_a, uac_a, "SIP/2.0 200 ", "INVITE"),
        (uac_a, ser_a, "ACK ", "ACK"),
        (ser_a, uas_a, "ACK ", "ACK"),
        (uac_a, ser_a, "BYE ", "BYE"),
        (ser_a, uas_a, "BYE ", "BYE"),
        (uas_a, ser_a, "SIP/2.0 200 ", "BYE"),
        (ser_a, uac_a, "SIP/2.0 200 ", "BYE"),
    ];
    let summary: Vec<String> = recs
        .iter()
        .map(|r| {
            let t = r.text();
            format!("{} -> {}: {}", r.from, r.to, t.lines().next().unwrap_or(""))
        })
        .collect();
    for (from, to, start, cseq) in expect {
        assert!(
            has(from, to, start, cseq),
            "missing {from} -> {to} {start}({cseq}); captured:\n{}",
            summary.join("\n")
        );
    }
    // Each OPTIONS was captured exactly once in (whichever shard received it) and its 200 once.
    let peer_a = local(peer.port());
    for i in 0..6 {
        let cid = format!("Call-ID: cap-opt-{i}\r\n");
        let n_in = recs
            .iter()
            .filter(|r| r.from == peer_a && r.to == ser_a && r.text().contains(&cid))
            .count();
        let n_out = recs
            .iter()
            .filter(|r| r.from == ser_a && r.to == peer_a && r.text().contains(&cid))
            .count();
        assert_eq!(
            (n_in, n_out),
            (1, 1),
            "OPTIONS {i}:\n{}",
            summary.join("\n")
        );
    }
    // Timestamps are the wall clock's and in order of capture within a shard: at least, sane.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    for r in &recs {
        assert!(
            r.ts <= now && now - r.ts < Duration::from_secs(120),
            "{r:?}"
        );
    }
}

#[test]
fn rotation_keeps_the_configured_number_of_files_under_the_size() {
    const MAX: u64 = 2000;
    let dir = temp_dir("capture-rot");
    let pcap = dir.join("sip.pcap");
    // A capture from an "earlier run": rotated away at start, not overwritten.
    std::fs::write(&pcap, b"old run").expect("write old capture");
    let script = format!(
        "capture_file = \"{}\"\ncapture_max_size = {MAX}\ncapture_files = 3\n{RR_PROXY}",
        pcap.display()
    );
    let mut ser = Ser::start("capture-rot", &script, 0, 1, "auto");
    let port = ser.port;
    let old = std::fs::read(dir.join("sip.pcap.1")).expect("the earlier capture as .1");
    assert_eq!(old, b"old run");
    let peer = Peer::new();
    let n = 50;
    for i in 0..n {
        let ruri = format!("sip:127.0.0.1:{port}");
        let m = request("OPTIONS", &ruri, peer.port(), &format!("rot-{i}"), "");
        peer.send(ser.addr(), m.as_bytes());
        let reply = peer.recv().expect("a reply to OPTIONS");
        assert_eq!(status(&reply), Some(200), "{reply}");
    }
    ser.stop();

    let names: Vec<PathBuf> = ["sip.pcap", "sip.pcap.1", "sip.pcap.2"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    assert!(
        !dir.join("sip.pcap.3").exists(),
        "more than capture_files files"
    );
    let mut files = Vec::new();
    for p in &names {
        let len = std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len();
        let recs = read_pcap(p);
        assert!(!recs.is_empty(), "{}: no records", p.display());
        // The overshoot rule: over the limit only as a file's single record.
        assert!(
            len <= MAX || recs.len() == 1,
            "{}: {len} bytes in {} records",
            p.display(),
            recs.len()
        );
        files.push(recs);
    }
    // Oldest is .2, then .1, then the current file; the last reply is in the current one.
    let last_ts = |v: &Vec<Captured>| v.last().map(|r| r.ts).unwrap_or_default();
    let first_ts = |v: &Vec<Captured>| v.first().map(|r| r.ts).unwrap_or_default();
    assert!(last_ts(&files[2]) <= first_ts(&files[1]));
    assert!(last_ts(&files[1]) <= first_ts(&files[0]));
    let last = files[0].last().expect("a record");
    assert!(last.text().starts_with("SIP/2.0 200"), "{}", last.text());
    assert!(last.text().contains(&format!("Call-ID: rot-{}\r\n", n - 1)));
    // Records run on without a gap across the files: each OPTIONS then its 200.
    let all: Vec<&Captured> = files.iter().rev().flatten().collect();
    for w in all.windows(2) {
        let (a, b) = (w[0].text(), w[1].text());
        if a.starts_with("OPTIONS") {
            assert!(b.starts_with("SIP/2.0 200"), "{a}\n---\n{b}");
        }
    }
}

#[test]
fn a_missing_capture_directory_refuses_to_start() {
    let dir = temp_dir("capture-nodir");
    let missing = dir.join("no-such-dir").join("sip.pcap");
    let cfg = dir.join("nodir.cfg");
    std::fs::write(
        &cfg,
        format!("capture_file = \"{}\"\n{RR_PROXY}", missing.display()),
    )
    .expect("write cfg");
    let mut cmd = Command::new(SER);
    cmd.arg("-f")
        .arg(&cfg)
        .args(["-l", "127.0.0.1", "-p", "0", "-n", "1", "-E", "-D"]);
    let (ok, out) = run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(!ok, "ser started without its capture directory:\n{out}");
    // (run_bounded's 10 s bound catches a hang; how fast it refuses is not a test's business.)
    assert!(
        out.contains("capture_file") && out.contains("does not exist"),
        "unclear message:\n{out}"
    );

    // Bad values are refused at load time with file:line:col.
    for (opt, val) in [
        ("capture_max_size", "\"10X\""),
        ("capture_max_size", "100"),
        ("capture_files", "0"),
        ("capture_file", "5"),
    ] {
        std::fs::write(&cfg, format!("\n{opt} = {val}\n{RR_PROXY}")).expect("write cfg");
        let (ok, out) = run_bounded(
            Command::new(SER).arg("-c").arg("-f").arg(&cfg),
            Duration::from_secs(10),
        );
        assert!(!ok, "{opt} = {val} accepted:\n{out}");
        let at = format!("{}:2:", cfg.display());
        assert!(
            out.contains(&at) && out.contains(opt),
            "{opt} = {val}: {out}"
        );
    }
}

/// Messages of a TCP connection are captured as TCP segments, one per SIP message, with
/// valid checksums and sequence numbers that run per direction (what tshark and sngrep need
/// to read the flow).
#[test]
fn stream_messages_are_captured_as_tcp_segments() {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::io::{Read, Write};
    let dir = temp_dir("capture-tcp");
    let pcap = dir.join("sip.pcap");
    let script = format!("capture_file = \"{}\"\n{RR_PROXY}", pcap.display());
    let mut ser = Ser::start("capture-tcp", &script, 0, 2, "auto");
    let tcp_addr = ser.listen("tcp");
    let mut s = std::net::TcpStream::connect(tcp_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = s.local_addr().unwrap();
    for i in 0..3 {
        let m = request(
            "OPTIONS",
            &format!("sip:{tcp_addr}"),
            me.port(),
            &format!("cap-tcp-{i}"),
            "",
        )
        .replace("/UDP", "/TCP");
        s.write_all(m.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).expect("a reply");
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"SIP/2.0 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    drop(s);
    ser.stop();
    let bytes = std::fs::read(&pcap).expect("pcap");
    let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).expect("pcap header");
    let mut segs: Vec<(SocketAddr, SocketAddr, u32, Vec<u8>)> = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.expect("record");
        let pkt = SlicedPacket::from_ethernet(&p.data).expect("Ethernet/IP/TCP");
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(tcp))) = (&pkt.net, &pkt.transport)
        else {
            panic!("not IPv4/TCP: {:?}", pkt.transport);
        };
        let h = ip.header();
        let want = tcp
            .to_header()
            .calc_checksum_ipv4_raw(h.source(), h.destination(), tcp.payload())
            .expect("checksum");
        assert_eq!(tcp.checksum(), want, "TCP checksum");
        segs.push((
            SocketAddr::new(h.source_addr().into(), tcp.source_port()),
            SocketAddr::new(h.destination_addr().into(), tcp.destination_port()),
            tcp.sequence_number(),
            tcp.payload().to_vec(),
        ));
    }
    let ins: Vec<_> = segs.iter().filter(|s| s.0 == me).collect();
    let outs: Vec<_> = segs.iter().filter(|s| s.1 == me).collect();
    assert_eq!((ins.len(), outs.len()), (3, 3), "{segs:?}");
    assert!(ins
        .iter()
        .all(|s| s.3.starts_with(b"OPTIONS ") && s.1 == tcp_addr));
    assert!(outs.iter().all(|s| s.3.starts_with(b"SIP/2.0 200")));
    // Sequence numbers continue per direction, message after message.
    for dir in [ins, outs] {
        for w in dir.windows(2) {
            assert_eq!(w[1].2, w[0].2.wrapping_add(w[0].3.len() as u32));
        }
    }
}
