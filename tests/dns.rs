//! RFC 3263 resolution against a real DNS server: Debian's `dnsmasq` on 127.0.0.1 (a free high
//! port), its records given on the command line, one dnsmasq per test. Also a silent server (a
//! bound UDP socket that never answers) and a hand-made one that sends junk before its answer.
//!
//! dnsmasq must be installed (`scripts/test.sh` installs Debian's `dnsmasq-base`); without it
//! these tests fail and say so. Every wait is bounded; dnsmasq is killed by PID on drop.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ser::dns::*;

mod common;

use common::dnsmasq::Dnsmasq;

/// For the silent-server test: how long one query waits.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Against dnsmasq: generous, so a loaded CI machine does not turn an answer into a timeout.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

impl DnsmasqExt for Dnsmasq {
    fn resolver(&self) -> Resolver {
        Resolver::new(Some(vec![self.addr]), ANSWER_TIMEOUT)
    }
}

trait DnsmasqExt {
    fn resolver(&self) -> Resolver;
}

fn opts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn addrs(targets: &[Target]) -> Vec<SocketAddr> {
    targets.iter().map(|t| t.addr).collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn srv_priorities_give_ordered_targets() {
    let dns = Dnsmasq::start(&opts(&[
        "--local-ttl=60",
        // Listed backup first: the order must come from the priorities, not the answer.
        "--srv-host=_sip._udp.prio.test,backup.test,5072,20,50",
        "--srv-host=_sip._udp.prio.test,main.test,5071,10,50",
        "--host-record=main.test,127.0.0.11,::11",
        "--host-record=backup.test,127.0.0.12",
    ]));
    let r = dns.resolver();
    for _ in 0..3 {
        let t = r
            .resolve("prio.test", None, false)
            .expect("resolve prio.test");
        assert_eq!(
            addrs(&t),
            [
                sa("127.0.0.11:5071"),
                sa("[::11]:5071"),
                sa("127.0.0.12:5072")
            ]
        );
        assert!(t.iter().all(|t| t.transport == Transport::Udp));
        assert_eq!(t[0].host, "main.test");
        assert_eq!(t[2].host, "backup.test");
        let srv = t[0].srv.as_ref().expect("came from SRV");
        assert_eq!(
            (srv.name.as_str(), srv.priority, srv.weight),
            ("_sip._udp.prio.test", 10, 50)
        );
        assert_eq!(t[2].srv.as_ref().map(|s| s.priority), Some(20));
    }
}

#[test]
fn srv_weights_within_a_priority() {
    let dns = Dnsmasq::start(&opts(&[
        "--local-ttl=300",
        "--srv-host=_sip._udp.zero.test,w0.test,5060,10,0",
        "--srv-host=_sip._udp.zero.test,w100.test,5060,10,100",
        "--srv-host=_sip._udp.quarter.test,w25.test,5060,10,25",
        "--srv-host=_sip._udp.quarter.test,w75.test,5060,10,75",
        "--host-record=w0.test,127.0.0.20",
        "--host-record=w100.test,127.0.0.21",
        "--host-record=w25.test,127.0.0.22",
        "--host-record=w75.test,127.0.0.23",
    ]));
    let r = dns.resolver();
    // Weight 0 against 100: picked first only on a draw of 0 in 0..=100 (about 1%).
    let runs = 1000;
    let mut heavy_first = 0;
    for _ in 0..runs {
        let t = r
            .resolve("zero.test", None, false)
            .expect("resolve zero.test");
        assert_eq!(t.len(), 2, "both targets, whatever the order: {t:?}");
        if t[0].addr == sa("127.0.0.21:5060") {
            heavy_first += 1;
        }
    }
    assert!(
        heavy_first >= runs * 95 / 100,
        "w100 first {heavy_first}/{runs}"
    );
    // 25 against 75: about 75% first (standard deviation about 1% over 2000 runs).
    let runs = 2000;
    let mut w75_first = 0;
    for _ in 0..runs {
        let t = r
            .resolve("quarter.test", None, false)
            .expect("resolve quarter.test");
        assert_eq!(t.len(), 2);
        if t[0].addr == sa("127.0.0.23:5060") {
            w75_first += 1;
        }
    }
    assert!(
        (runs * 65 / 100..=runs * 85 / 100).contains(&w75_first),
        "w75 first {w75_first}/{runs}"
    );
}

#[test]
fn naptr_then_srv_then_a() {
    let dns = Dnsmasq::start(&opts(&[
        "--local-ttl=60",
        // A better-ordered TCP record that a UDP client must skip.
        "--naptr-record=naptr.test,5,10,s,SIP+D2T,,_sip._tcp.tcpsvc.test",
        "--naptr-record=naptr.test,10,50,s,SIP+D2U,,_sip._udp.svc.test",
        "--srv-host=_sip._udp.svc.test,n1.test,5080,1,1",
        "--srv-host=_sip._tcp.tcpsvc.test,wrong.test,5090",
        // The conventional SRV name: NAPTR's replacement takes precedence over it.
        "--srv-host=_sip._udp.naptr.test,wrong.test,5099",
        "--host-record=n1.test,127.0.0.31",
        "--host-record=wrong.test,127.0.0.99",
    ]));
    let r = dns.resolver();
    let t = r
        .resolve("naptr.test", None, false)
        .expect("resolve naptr.test");
    assert_eq!(addrs(&t), [sa("127.0.0.31:5080")]);
    assert_eq!(t[0].host, "n1.test");
    assert_eq!(
        t[0].srv.as_ref().map(|s| s.name.as_str()),
        Some("_sip._udp.svc.test")
    );
}

#[test]
fn sips_uses_tls_naptr_and_srv() {
    let dns = Dnsmasq::start(&opts(&[
        "--local-ttl=60",
        "--naptr-record=secure.test,10,10,s,SIPS+D2T,,_sips._tcp.tls.test",
        "--srv-host=_sips._tcp.tls.test,s1.test,5062,1,1",
        "--srv-host=_sips._tcp.plainsrv.test,s2.test,5063,1,1",
        "--host-record=s1.test,127.0.0.41",
        "--host-record=s2.test,127.0.0.42",
        "--host-record=secure.test,127.0.0.43",
    ]));
    let r = dns.resolver();
    let t = r
        .resolve("secure.test", None, true)
        .expect("sips secure.test");
    assert_eq!(addrs(&t), [sa("127.0.0.41:5062")]);
    assert_eq!(t[0].transport, Transport::Tls);
    // Without NAPTR: _sips._tcp.<host>.
    let t = r
        .resolve("plainsrv.test", None, true)
        .expect("sips plainsrv.test");
    assert_eq!(addrs(&t), [sa("127.0.0.42:5063")]);
    // The same host over sip: no SIP+D2U NAPTR, no _sip._udp SRV, so its A record on 5060.
    let t = r
        .resolve("secure.test", None, false)
        .expect("sip secure.test");
    assert_eq!(addrs(&t), [sa("127.0.0.43:5060")]);
    assert_eq!(t[0].transport, Transport::Udp);
}

#[test]
fn a_only_fallback_uses_default_port() {
    let dns = Dnsmasq::start(&opts(&["--host-record=plain.test,127.0.0.51,::51"]));
    let r = dns.resolver();
    let t = r
        .resolve("plain.test", None, false)
        .expect("resolve plain.test");
    assert_eq!(addrs(&t), [sa("127.0.0.51:5060"), sa("[::51]:5060")]);
    assert!(t.iter().all(|t| t.srv.is_none() && t.host == "plain.test"));
    let t = r
        .resolve("PLAIN.test.", None, true)
        .expect("sips plain.test");
    assert_eq!(addrs(&t), [sa("127.0.0.51:5061"), sa("[::51]:5061")]);
}

#[test]
fn cname_is_followed() {
    let dns = Dnsmasq::start(&opts(&[
        "--host-record=real.test,127.0.0.52",
        "--cname=alias.test,real.test",
    ]));
    let r = dns.resolver();
    let t = r
        .resolve("alias.test", Some(5070), false)
        .expect("resolve alias.test");
    assert_eq!(addrs(&t), [sa("127.0.0.52:5070")]);
}

#[test]
fn port_given_skips_naptr_and_srv() {
    let dns = Dnsmasq::start(&opts(&[
        "--naptr-record=ported.test,10,10,s,SIP+D2U,,_sip._udp.ported.test",
        "--srv-host=_sip._udp.ported.test,other.test,5070,1,1",
        "--host-record=other.test,127.0.0.98",
        "--host-record=ported.test,127.0.0.61",
    ]));
    let r = dns.resolver();
    let t = r
        .resolve("ported.test", Some(5999), false)
        .expect("resolve ported.test");
    assert_eq!(addrs(&t), [sa("127.0.0.61:5999")]);
    assert!(t[0].srv.is_none());
    // Without the port, SRV applies.
    let t = r
        .resolve("ported.test", None, false)
        .expect("resolve ported.test");
    assert_eq!(addrs(&t), [sa("127.0.0.98:5070")]);
}

#[test]
fn srv_target_dot_means_no_service() {
    // An SRV record without a target says "no SIP here"; the host's A record is not used.
    let dns = Dnsmasq::start(&opts(&[
        "--srv-host=_sip._udp.nosvc.test",
        "--host-record=nosvc.test,127.0.0.62",
    ]));
    let r = dns.resolver();
    match r.resolve("nosvc.test", None, false) {
        Err(DnsError::NotFound(name)) => assert!(name.contains("nosvc.test"), "{name}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn ip_literals_need_no_dns() {
    // A server that never answers: literals must not ask it.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let r = Resolver::new(Some(vec![silent.local_addr().expect("addr")]), TIMEOUT);
    let t = r.resolve("192.0.2.1", None, false).expect("v4 literal");
    assert_eq!(addrs(&t), [sa("192.0.2.1:5060")]);
    assert_eq!(t[0].transport, Transport::Udp);
    let t = r
        .resolve("[2001:db8::1]", Some(5070), false)
        .expect("v6 literal");
    assert_eq!(addrs(&t), [sa("[2001:db8::1]:5070")]);
    let t = r.resolve("192.0.2.1", None, true).expect("sips literal");
    assert_eq!(addrs(&t), [sa("192.0.2.1:5061")]);
    assert_eq!(t[0].transport, Transport::Tls);
    // That literals are answered without a query is what counts here; how fast is measured by
    // benchmarks, not tests.
}

#[test]
fn nxdomain_is_not_found_quickly() {
    let dns = Dnsmasq::start(&opts(&["--host-record=exists.test,127.0.0.71"]));
    let r = Resolver::new(Some(vec![dns.addr]), Duration::from_secs(3));
    for port in [None, Some(5060)] {
        // NotFound, not Timeout: the answer was taken, not waited out (the 3 s timeout). How
        // fast is measured by benchmarks, not tests.
        let err = r.resolve("nope.test", port, false).expect_err("nope.test");
        assert_eq!(err, DnsError::NotFound("nope.test".into()));
        assert!(err.to_string().contains("nope.test"), "{err}");
    }
    assert!(matches!(
        r.resolve("bad..name", None, false),
        Err(DnsError::InvalidName(_))
    ));
}

#[test]
fn silent_server_times_out() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let timeout = Duration::from_millis(300);
    let r = Resolver::new(Some(vec![silent.local_addr().expect("addr")]), timeout);
    for port in [None, Some(5060)] {
        let start = Instant::now();
        let err = r.resolve("a.test", port, false).expect_err("silent server");
        let took = start.elapsed();
        assert_eq!(err, DnsError::Timeout("a.test".into()));
        assert!(err.to_string().contains("a.test"));
        assert!(
            took >= timeout - Duration::from_millis(20),
            "timeout after {took:?}"
        );
    }
}

#[test]
fn second_server_answers_when_first_is_silent() {
    let dns = Dnsmasq::start(&opts(&[
        "--local-ttl=60",
        "--host-record=both.test,127.0.0.72",
    ]));
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let timeout = Duration::from_millis(500);
    let r = Resolver::new(
        Some(vec![silent.local_addr().expect("addr"), dns.addr]),
        timeout,
    );
    let start = Instant::now();
    let t = r
        .resolve("both.test", Some(5060), false)
        .expect("failover to the second server");
    assert_eq!(addrs(&t), [sa("127.0.0.72:5060")]);
    // A then AAAA: each waited for the silent server first.
    assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());
}

#[test]
fn cache_answers_after_server_dies_within_ttl() {
    let mut dns = Dnsmasq::start(&opts(&[
        "--local-ttl=300",
        "--srv-host=_sip._udp.cached.test,c1.test,5090,1,1",
        "--host-record=c1.test,127.0.0.81",
    ]));
    let r = dns.resolver();
    let first = r
        .resolve("cached.test", None, false)
        .expect("resolve cached.test");
    assert_eq!(addrs(&first), [sa("127.0.0.81:5090")]);
    assert!(
        r.cache_len() >= 3,
        "NAPTR, SRV, A, AAAA cached: {}",
        r.cache_len()
    );
    dns.stop();
    // Nothing listens there now: any query would fail at once (ICMP port unreachable).
    let again = r
        .resolve("cached.test", None, false)
        .expect("from the cache");
    assert_eq!(again, first);
    // Forgetting the cache shows the server is really gone.
    r.clear_cache();
    assert!(r.resolve("cached.test", None, false).is_err());
}

#[test]
fn short_ttl_is_asked_again() {
    let mut dns = Dnsmasq::start(&opts(&[
        "--local-ttl=300",
        "--host-record=zero.test,127.0.0.91,0",
        "--host-record=short.test,127.0.0.92,1",
    ]));
    let r = dns.resolver();
    assert_eq!(
        addrs(
            &r.resolve("zero.test", Some(5060), false)
                .expect("zero.test")
        ),
        [sa("127.0.0.91:5060")]
    );
    let asked = Instant::now();
    assert_eq!(
        addrs(
            &r.resolve("short.test", Some(5060), false)
                .expect("short.test")
        ),
        [sa("127.0.0.92:5060")]
    );
    // The cached A record expires 1 s after its answer came, so no later than this + 1 s.
    let answered = Instant::now();
    dns.stop();
    // TTL 0 is never cached: asking again finds nobody (ICMP port unreachable, or no answer).
    match r.resolve("zero.test", Some(5060), false) {
        Err(DnsError::Io { name, .. } | DnsError::Timeout(name)) => assert_eq!(name, "zero.test"),
        other => panic!("TTL 0 answer was cached: {other:?}"),
    }
    // TTL 1 s: cached for a second, then asked again.
    if asked.elapsed() < Duration::from_millis(800) {
        assert_eq!(
            addrs(
                &r.resolve("short.test", Some(5060), false)
                    .expect("short.test cached")
            ),
            [sa("127.0.0.92:5060")]
        );
    }
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(answered.elapsed()));
    assert!(
        r.resolve("short.test", Some(5060), false).is_err(),
        "short.test still cached after its TTL"
    );
}

#[test]
fn truncated_udp_answer_is_retried_over_tcp() {
    // 60 SRV records with long targets: far over 1232 bytes, so the UDP answer is truncated
    // (dnsmasq fits about 17). Priorities 1-10 name hosts that do not exist, so at most 7
    // usable targets can come from the truncated answer, and 16 only over TCP.
    let mut records = vec!["--local-ttl=60".to_string()];
    for i in 1..=60u16 {
        let host = format!("a-rather-long-target-host-name-number-{i}.big.test");
        records.push(format!(
            "--srv-host=_sip._udp.big.test,{host},{},{i},1",
            6000 + i
        ));
        if i > 10 {
            records.push(format!("--host-record={host},127.0.1.{i}"));
        }
    }
    let dns = Dnsmasq::start(&records);
    let r = dns.resolver();
    let t = r
        .resolve("big.test", None, false)
        .expect("resolve big.test");
    assert_eq!(t.len(), MAX_TARGETS);
    for (i, target) in t.iter().enumerate() {
        let n = i as u16 + 11;
        assert_eq!(
            target.addr,
            SocketAddr::new(IpAddr::from([127, 0, 1, n as u8]), 6000 + n)
        );
        assert_eq!(target.srv.as_ref().map(|s| s.priority), Some(n));
    }
}

#[test]
fn resolver_is_shared_across_threads() {
    let dns = Dnsmasq::start(&opts(&[
        "--local-ttl=60",
        "--srv-host=_sip._udp.shared.test,sh.test,5100,1,1",
        "--host-record=sh.test,127.0.0.101",
    ]));
    let r = Arc::new(dns.resolver());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| r.resolve("shared.test", None, false))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for res in h.join().expect("thread") {
            assert_eq!(addrs(&res.expect("resolve")), [sa("127.0.0.101:5100")]);
        }
    }
}

/// A hand-made server on loopback that, to each query, first sends junk (garbage bytes, an
/// answer with the wrong id, one for another name), then the real answer: A 127.0.0.111 for
/// A queries, no data otherwise.
#[test]
fn junk_before_the_answer_is_ignored() {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let addr = server.local_addr().expect("addr");
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        // A and AAAA (the port is given, so nothing else is asked).
        for _ in 0..2 {
            let Ok((n, peer)) = server.recv_from(&mut buf) else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                return;
            };
            let q = query.queries()[0].clone();
            let answer = |id: u16, name: &Name| {
                let mut m = Message::new();
                m.set_id(id)
                    .set_message_type(MessageType::Response)
                    .set_response_code(ResponseCode::NoError);
                let mut q2 = q.clone();
                q2.set_name(name.clone());
                m.add_query(q2);
                if q.query_type() == RecordType::A {
                    m.add_answer(Record::from_rdata(
                        name.clone(),
                        60,
                        RData::A(A::new(127, 0, 0, 111)),
                    ));
                }
                m.to_vec().expect("encode")
            };
            let other = Name::from_ascii("evil.test.").expect("name");
            let _ = server.send_to(&[0xde, 0xad, 0xbe, 0xef], peer);
            let _ = server.send_to(&answer(query.id().wrapping_add(1), q.name()), peer);
            let _ = server.send_to(&answer(query.id(), &other), peer);
            let _ = server.send_to(&answer(query.id(), q.name()), peer);
        }
    });
    let r = Resolver::new(Some(vec![addr]), Duration::from_secs(2));
    let t = r
        .resolve("junk.test", Some(5060), false)
        .expect("real answer after junk");
    assert_eq!(addrs(&t), [sa("127.0.0.111:5060")]);
    thread.join().expect("server thread");
}
