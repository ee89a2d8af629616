//! SIP over TCP and TLS from the script's side (`modules`), run as the server runs a request
//! (a script loaded by `loader`, a `Core` with stream sockets built by hand, tm): `proto`/`af`, the forced-transport
//! actions, `force_send_socket`, the next hop's transport and socket, double Record-Route and
//! loose_route over it, and bindings that keep the flow they registered over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ser_script::RouteKind;

use crate::config::Config;
use crate::core::Core;
use crate::modules::ctx::{MsgCtx, Scratch};
use crate::modules::tm::TmShard;
use crate::modules::Script;
use crate::sip::{Arrival, ConnId, Dest, Listen, Outbox, Transport};
use crate::stats::Stats;

const UDP: usize = 0;
const TCP: usize = 1;
const TLS: usize = 2;
const UDP_B: usize = 3;

/// Our sockets: UDP and TCP at 10.0.0.1:5060, TLS at 10.0.0.1:5061, UDP at 192.168.0.1.
fn all_sockets() -> Vec<Listen> {
    let l = |transport, addr: &str| Listen {
        transport,
        addr: addr.parse().expect("addr"),
    };
    vec![
        l(Transport::Udp, "10.0.0.1:5060"),
        l(Transport::Tcp, "10.0.0.1:5060"),
        l(Transport::Tls, "10.0.0.1:5061"),
        l(Transport::Udp, "192.168.0.1:5060"),
    ]
}

fn udp_only() -> Vec<Listen> {
    vec![Listen::udp("10.0.0.1:5060".parse().expect("addr"))]
}

struct Env {
    core: Arc<Core>,
    script: Arc<Script>,
    stats: Arc<Stats>,
    tm: TmShard,
}

/// One message sent: where, and its text.
#[derive(Debug)]
struct Sent {
    dst: Dest,
    text: String,
}

impl Sent {
    fn first_line(&self) -> &str {
        self.text.split("\r\n").next().unwrap_or("")
    }

    fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .split("\r\n")
            .filter(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .collect()
    }
}

impl Env {
    fn new(src: &str, sockets: Vec<Listen>) -> Self {
        let loaded = crate::loader::load("t.cfg", src, &Config::default()).expect("loads");
        let mut core = Core::new(&loaded.config, sockets, None);
        core.params = loaded.params.clone();
        let core = Arc::new(core);
        let stats = Arc::new(Stats::default());
        let tm = TmShard::new(
            Arc::clone(&core),
            Arc::clone(&loaded.script),
            Arc::clone(&stats),
            0,
            1,
        );
        Self {
            core,
            script: loaded.script,
            stats,
            tm,
        }
    }

    /// Runs the request route over `req` as it arrived `at`; what went out.
    fn run(&mut self, req: &str, at: Arrival) -> Vec<Sent> {
        let msg = ser_parser::parse(req.as_bytes()).expect("test request parses");
        let mut sc = Scratch::default();
        let now = Instant::now();
        {
            let mut m = MsgCtx::new(&self.core, &self.stats, &msg, at, &mut sc);
            m.tm = Some(&mut self.tm);
            m.t.now = Some(now);
            self.script.run(RouteKind::Request, 0, &mut m);
        }
        self.tm.run_events(now, &mut sc.out);
        assert!(sc.out.pending.is_empty(), "no names to resolve here");
        sent(&sc.out)
    }

    /// Runs the request route and returns the one message that did not go back to the
    /// sender (the request sent on), if any.
    fn relayed(&mut self, req: &str, at: Arrival) -> Option<Sent> {
        let mut out = self.run(req, at);
        out.retain(|s| !s.text.starts_with("SIP/2.0 "));
        assert!(out.len() <= 1, "{out:#?}");
        out.pop()
    }

    /// The status line of our reply to `req`.
    fn reply(&mut self, req: &str, at: Arrival) -> String {
        let out = self.run(req, at);
        let r: Vec<&Sent> = out
            .iter()
            .filter(|s| s.text.starts_with("SIP/2.0 ") && !s.text.starts_with("SIP/2.0 100"))
            .collect();
        assert_eq!(r.len(), 1, "{out:#?}");
        r[0].first_line().to_string()
    }

    fn socket(&self, i: usize) -> SocketAddr {
        self.core.local.addr(i).expect("socket")
    }

    /// A request from `src` over `transport` to our socket `sock`.
    fn at(&self, transport: Transport, src: &str, sock: usize) -> Arrival {
        Arrival {
            transport,
            src: src.parse().expect("addr"),
            local: self.socket(sock),
            socket: sock,
            shard: 0,
            conn: transport
                .is_reliable()
                .then(|| ConnId::new(0, u64::from(self.socket(sock).port()))),
        }
    }
}

fn sent(out: &Outbox) -> Vec<Sent> {
    out.sends
        .iter()
        .map(|o| Sent {
            dst: o.dst,
            text: String::from_utf8_lossy(&out.buf[o.range.clone()]).into_owned(),
        })
        .collect()
}

/// A request as a UA sends it, each a new transaction of its own call; `extra` header lines go
/// before Content-Length.
fn request(method: &str, ruri: &str, extra: &[&str]) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{method}-{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.org>;tag=a1\r\n\
         To: <sip:bob@example.org>\r\n\
         Call-ID: {}@192.0.2.1\r\n\
         CSeq: 1 {method}\r\n",
        n, n
    );
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

fn invite(ruri: &str) -> String {
    request("INVITE", ruri, &[])
}

fn dest(transport: Transport, socket: usize, addr: &str) -> Dest {
    Dest {
        transport,
        socket,
        addr: addr.parse().expect("addr"),
        conn: None,
    }
}

fn load_err(src: &str) -> ser_script::ScriptError {
    crate::loader::load("t.cfg", src, &Config::default())
        .err()
        .expect("refused")
}

// ---- proto, af ----

const PROTO_SCRIPT: &str = r#"
loadmodule "sl.so"
route {
    if (proto == UDP) { sl_send_reply("200", "udp"); break; };
    if (proto == tcp && af == inet) { sl_send_reply("200", "tcp4"); break; };
    if (proto == TCP && af == INET6) { sl_send_reply("200", "tcp6"); break; };
    if (proto != tls) { sl_send_reply("200", "not tls"); break; };
    sl_send_reply("200", "tls");
}
"#;

#[test]
fn proto_and_af_test_the_arrival() {
    let mut e = Env::new(PROTO_SCRIPT, all_sockets());
    let req = request("OPTIONS", "sip:10.0.0.1", &[]);
    let cases = [
        (e.at(Transport::Udp, "192.0.2.1:5060", UDP), "udp"),
        (e.at(Transport::Tcp, "192.0.2.1:40000", TCP), "tcp4"),
        (e.at(Transport::Tcp, "[2001:db8::9]:40000", TCP), "tcp6"),
        (
            e.at(Transport::Tcp, "[::ffff:192.0.2.1]:40000", TCP),
            "tcp4",
        ),
        (e.at(Transport::Tls, "192.0.2.1:40001", TLS), "tls"),
        (e.at(Transport::Ws, "192.0.2.1:40002", TCP), "not tls"),
    ];
    for (at, want) in cases {
        assert_eq!(e.reply(&req, at), format!("SIP/2.0 200 {want}"), "{at:?}");
    }
}

#[test]
fn bad_proto_and_af_values_are_load_errors_with_their_place() {
    let e = load_err("route {\n    if (proto == SCTP2) { drop; };\n}\n");
    assert_eq!((e.file.as_str(), e.line, e.col), ("t.cfg", 2, 18), "{e}");
    assert!(e.msg.contains("unknown transport \"SCTP2\""), "{e}");
    let e = load_err("route {\n  if (af == ipx) { drop; };\n}\n");
    assert_eq!((e.line, e.col), (2, 13), "{e}");
    assert!(e.msg.contains("inet or inet6"), "{e}");
    let e = load_err("route {\n  if (proto > tcp) { drop; };\n}\n");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.msg.contains("== or !="), "{e}");
    let e = load_err("route {\n  if (proto == sctp) { drop; };\n}\n");
    assert!(e.msg.contains("unknown transport"), "{e}");
}

// ---- forward_udp/tcp/tls, t_relay_to_udp/tcp/tls ----

#[test]
fn forward_over_a_named_transport() {
    let cases = [
        (
            "forward_tcp(192.0.2.5)",
            dest(Transport::Tcp, TCP, "192.0.2.5:5060"),
        ),
        (
            "forward_tls(192.0.2.5)",
            dest(Transport::Tls, TLS, "192.0.2.5:5061"),
        ),
        (
            "forward_tls(192.0.2.5, 5071)",
            dest(Transport::Tls, TLS, "192.0.2.5:5071"),
        ),
        (
            "forward_udp(192.0.2.5, 5080)",
            dest(Transport::Udp, UDP, "192.0.2.5:5080"),
        ),
        (
            "forward(192.0.2.5)",
            dest(Transport::Udp, UDP, "192.0.2.5:5060"),
        ),
        // The Request-URI's host and port, over the transport the action names.
        (
            "forward_tcp(uri:host, uri:port)",
            dest(Transport::Tcp, TCP, "192.0.2.7:5090"),
        ),
    ];
    for (action, want) in cases {
        let src = format!("route {{ {action}; }}");
        let mut e = Env::new(&src, all_sockets());
        let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
        let out = e
            .relayed(&invite("sip:bob@192.0.2.7:5090"), at)
            .expect(action);
        assert_eq!(out.dst, want, "{action}");
        let alias = if matches!(want.transport, Transport::Tcp | Transport::Tls) {
            ";alias"
        } else {
            ""
        };
        let via = format!(
            "Via: SIP/2.0/{} {}{alias};branch=",
            want.transport.via_token(),
            crate::sip::hostport(&e.socket(want.socket))
        );
        assert!(
            out.headers("Via")[0].starts_with(&via),
            "{action}: {}",
            out.text
        );
    }
}

#[test]
fn a_named_transport_without_its_socket_fails_rather_than_using_udp() {
    for action in [
        "forward_tcp(192.0.2.5)",
        "forward_tls(192.0.2.5)",
        "t_relay_to_tcp(192.0.2.5, 5060)",
        "t_relay_to_tls(192.0.2.5, 5061)",
    ] {
        let src = format!(
            "loadmodule \"sl.so\"\nloadmodule \"tm.so\"\n\
             route {{ if (!{action}) {{ sl_reply_error(); }}; }}"
        );
        let mut e = Env::new(&src, udp_only());
        let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
        let out = e.run(&invite("sip:bob@192.0.2.7"), at);
        assert!(
            out.iter().all(|s| s.text.starts_with("SIP/2.0 ")),
            "{action}: nothing goes out over UDP: {out:#?}"
        );
        assert!(
            out.iter()
                .any(|s| s.first_line() == "SIP/2.0 500 No socket for destination"),
            "{action}: {out:#?}"
        );
    }
}

#[test]
fn t_relay_to_over_a_named_transport() {
    let cases = [
        (
            "t_relay_to_tcp(192.0.2.5, 5070)",
            dest(Transport::Tcp, TCP, "192.0.2.5:5070"),
        ),
        (
            "t_relay_to_tls(192.0.2.5, 5071)",
            dest(Transport::Tls, TLS, "192.0.2.5:5071"),
        ),
        (
            "t_relay_to_udp(192.0.2.5, 5072)",
            dest(Transport::Udp, UDP, "192.0.2.5:5072"),
        ),
        (
            "t_relay_to(192.0.2.5, 5073)",
            dest(Transport::Udp, UDP, "192.0.2.5:5073"),
        ),
    ];
    for (action, want) in cases {
        let src = format!("loadmodule \"tm.so\"\nroute {{ {action}; }}");
        let mut e = Env::new(&src, all_sockets());
        let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
        let out = e.relayed(&invite("sip:bob@192.0.2.7"), at).expect(action);
        assert_eq!(out.dst, want, "{action}");
        assert!(
            out.headers("Via")[0].contains(&format!("SIP/2.0/{} ", want.transport.via_token())),
            "{action}: {}",
            out.text
        );
    }
}

// ---- the next hop of a URI ----

const RELAY: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
route { if (!t_relay()) { sl_reply_error(); }; }
"#;

const FORWARD: &str = r#"
loadmodule "sl.so"
route { if (!forward(uri:host, uri:port)) { sl_reply_error(); }; }
"#;

#[test]
fn the_uri_names_the_transport() {
    for script in [RELAY, FORWARD] {
        let mut e = Env::new(script, all_sockets());
        let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
        let cases = [
            (
                "sip:bob@192.0.2.7:5090;transport=tcp",
                dest(Transport::Tcp, TCP, "192.0.2.7:5090"),
            ),
            (
                "sip:bob@192.0.2.7;transport=TLS",
                dest(Transport::Tls, TLS, "192.0.2.7:5061"),
            ),
            (
                "sips:bob@192.0.2.7",
                dest(Transport::Tls, TLS, "192.0.2.7:5061"),
            ),
            (
                "sip:bob@192.0.2.7",
                dest(Transport::Udp, UDP, "192.0.2.7:5060"),
            ),
        ];
        for (uri, want) in cases {
            let out = e.relayed(&invite(uri), at).expect(uri);
            assert_eq!(out.dst, want, "{uri}");
        }
    }
}

#[test]
fn a_uri_transport_we_lack_fails_without_falling_back_to_udp() {
    for script in [RELAY, FORWARD] {
        let mut e = Env::new(script, udp_only());
        let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
        for (uri, status) in [
            (
                "sip:bob@192.0.2.7;transport=tcp",
                "SIP/2.0 500 No socket for destination",
            ),
            (
                "sip:bob@192.0.2.7;transport=tls",
                "SIP/2.0 500 No socket for destination",
            ),
            (
                "sips:bob@192.0.2.7",
                "SIP/2.0 416 Unsupported URI Scheme (sips needs TLS)",
            ),
        ] {
            assert_eq!(e.reply(&invite(uri), at), status, "{uri}");
        }
    }
}

#[test]
fn a_large_request_goes_over_tcp_to_a_peer_that_takes_it_when_its_transport_was_not_asked_for() {
    let pad = format!(
        "X-Pad: {}",
        "a".repeat(crate::modules::core::MAX_UDP_REQUEST)
    );
    let small = invite("sip:bob@192.0.2.7");
    let large = request("INVITE", "sip:bob@192.0.2.7", &[&pad]);
    let udp_uri = request("INVITE", "sip:bob@192.0.2.7;transport=udp", &[&pad]);
    for script in [RELAY, FORWARD] {
        let mut e = Env::new(script, all_sockets());
        let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
        let small = e.relayed(&small, at).expect("small");
        assert_eq!(small.dst, dest(Transport::Udp, UDP, "192.0.2.7:5060"));
        // A peer not known to take TCP: UDP still (it may serve nothing else).
        let out = e.relayed(&large, at).expect("large");
        assert_eq!(out.dst, dest(Transport::Udp, UDP, "192.0.2.7:5060"));
        // One we hold a TCP connection with: TCP.
        let peer: SocketAddr = "192.0.2.7:5060".parse().expect("addr");
        e.core.aliases.set(Transport::Tcp, peer, ConnId::new(0, 1));
        let large = request("INVITE", "sip:bob@192.0.2.7", &[&pad]);
        let out = e.relayed(&large, at).expect("large");
        assert!(out.text.len() > crate::modules::core::MAX_UDP_REQUEST);
        assert_eq!(out.dst, dest(Transport::Tcp, TCP, "192.0.2.7:5060"));
        assert!(out.headers("Via")[0].starts_with("Via: SIP/2.0/TCP 10.0.0.1:5060;"));
        // `;transport=udp` was asked for.
        let out = e.relayed(&udp_uri, at).expect("udp uri");
        assert_eq!(out.dst.transport, Transport::Udp);
        // Without a TCP socket: UDP still.
        let mut e = Env::new(script, udp_only());
        let out = e.relayed(&large, at).expect("large over udp");
        assert_eq!(out.dst, dest(Transport::Udp, UDP, "192.0.2.7:5060"));
    }
}

// ---- force_send_socket ----

#[test]
fn force_send_socket_picks_our_socket() {
    let cases = [
        // Another address of ours, with and without the transport and port.
        ("udp:192.168.0.1:5060", UDP_B),
        ("192.168.0.1", UDP_B),
        ("\"192.168.0.1:5060\"", UDP_B),
        // A TCP socket for a UDP hop: our UDP socket at that address (as Kamailio).
        ("tcp:10.0.0.1:5060", UDP),
        // Not ours: ignored.
        ("udp:192.168.0.1:5999", UDP),
        ("udp:10.9.9.9", UDP),
    ];
    for (arg, want) in cases {
        for relay in ["t_relay()", "forward(uri:host, uri:port)"] {
            let src =
                format!("loadmodule \"tm.so\"\nroute {{ force_send_socket({arg}); {relay}; }}");
            let mut e = Env::new(&src, all_sockets());
            let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
            let out = e.relayed(&invite("sip:bob@192.0.2.7"), at).expect(arg);
            assert_eq!(out.dst.socket, want, "{arg} {relay}");
            let via = format!(
                "Via: SIP/2.0/UDP {};",
                crate::sip::hostport(&e.socket(want))
            );
            assert!(
                out.headers("Via")[0].starts_with(&via),
                "{arg}: {}",
                out.text
            );
        }
    }
    // A TLS hop leaves from the forced TLS socket.
    let src = "loadmodule \"tm.so\"\nroute { force_send_socket(tls:10.0.0.1); t_relay(); }";
    let mut e = Env::new(src, all_sockets());
    let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    let out = e
        .relayed(&invite("sip:bob@192.0.2.7;transport=tls"), at)
        .expect("tls");
    assert_eq!(out.dst, dest(Transport::Tls, TLS, "192.0.2.7:5061"));
}

#[test]
fn force_send_socket_in_a_branch_route_is_for_that_branch() {
    let src = r#"
loadmodule "tm.so"
route {
    append_branch("sip:carol@192.0.2.8");
    append_branch("sip:dave@192.0.2.9");
    t_on_branch(1);
    t_relay();
}
branch_route[1] {
    if (uri =~ "carol") { force_send_socket(udp:192.168.0.1); };
}
"#;
    let mut e = Env::new(src, all_sockets());
    let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    let out = e.run(&invite("sip:bob@192.0.2.7"), at);
    let mut got: Vec<(String, usize)> = out
        .iter()
        .filter(|s| s.text.starts_with("INVITE "))
        .map(|s| (s.first_line().to_string(), s.dst.socket))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("INVITE sip:bob@192.0.2.7 SIP/2.0".to_string(), UDP),
            ("INVITE sip:carol@192.0.2.8 SIP/2.0".to_string(), UDP_B),
            ("INVITE sip:dave@192.0.2.9 SIP/2.0".to_string(), UDP),
        ]
    );
}

#[test]
fn force_send_socket_arguments_are_checked_at_load() {
    let e = load_err("route {\n  force_send_socket(sctp:10.0.0.1:5060);\n}\n");
    assert_eq!((e.line, e.col), (2, 21), "{e}");
    assert!(e.msg.contains("unknown transport \"sctp\""), "{e}");
    let e = load_err("route {\n  force_send_socket(\"udp:10.0.0.1:99999\");\n}\n");
    assert!(e.msg.contains("is not [proto:]address[:port]"), "{e}");
    for ok in [
        "tls:10.0.0.1",
        "\"tls:[2001:db8::1]:5061\"",
        "\"[2001:db8::1]\"",
        "2001:db8::1",
        "udp:10.0.0.1:0",
    ] {
        let src = format!("route {{ force_send_socket({ok}); }}");
        crate::loader::load("t.cfg", &src, &Config::default()).expect(ok);
    }
    let spec = |s: &str| {
        crate::modules::core::SocketSpec::parse(&ser_script::Arg {
            value: ser_script::Value::Str(s.into()),
            span: crate::modules::no_span(),
        })
        .expect(s)
    };
    let s = spec("tls:10.0.0.1");
    assert_eq!((s.transport, s.port), (Transport::Tls, 5061));
    let s = spec("10.0.0.1:0");
    assert_eq!((s.transport, s.port), (Transport::Udp, 5060));
    let s = spec("TCP:[2001:db8::1]:5070");
    assert_eq!((s.transport, s.port), (Transport::Tcp, 5070));
    assert_eq!(
        s.addrs,
        ["2001:db8::1".parse::<std::net::IpAddr>().expect("ip")]
    );
}

// ---- Record-Route across sockets, loose_route back ----

const RR_PROXY: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
route {
    if (loose_route()) { t_relay(); break; };
    if (method == "INVITE") { record_route(); };
    t_relay();
}
"#;

#[test]
fn record_route_names_the_socket_with_its_transport() {
    let mut e = Env::new(RR_PROXY, all_sockets());
    // TCP in, TCP out: one Record-Route, with the transport.
    let at = e.at(Transport::Tcp, "192.0.2.1:40000", TCP);
    let out = e
        .relayed(&invite("sip:bob@192.0.2.7;transport=tcp"), at)
        .expect("tcp");
    assert_eq!(
        out.headers("Record-Route"),
        ["Record-Route: <sip:10.0.0.1:5060;transport=tcp;lr>"]
    );
    // UDP in, UDP out: as before.
    let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    let out = e.relayed(&invite("sip:bob@192.0.2.7"), at).expect("udp");
    assert_eq!(
        out.headers("Record-Route"),
        ["Record-Route: <sip:10.0.0.1:5060;lr>"]
    );
}

#[test]
fn tls_in_udp_out_gets_two_record_routes_and_loose_route_pops_both() {
    let mut e = Env::new(RR_PROXY, all_sockets());
    let caller = e.at(Transport::Tls, "192.0.2.1:40001", TLS);
    let invite = request(
        "INVITE",
        "sip:bob@192.0.2.7",
        &["Record-Route: <sip:p0.example.net;lr>"],
    );
    let out = e.relayed(&invite, caller).expect("invite");
    assert_eq!(out.dst, dest(Transport::Udp, UDP, "192.0.2.7:5060"));
    // RFC 3261 16.6 step 4: ours above the earlier ones; the top one is what the callee's
    // side reaches us at (the outbound socket), the next the caller's side (inbound).
    let out_rr = "<sip:10.0.0.1:5060;r2=on;lr>";
    let in_rr = "<sip:10.0.0.1:5061;transport=tls;r2=on;lr>";
    assert_eq!(
        out.headers("Record-Route"),
        [
            format!("Record-Route: {out_rr}").as_str(),
            &format!("Record-Route: {in_rr}"),
            "Record-Route: <sip:p0.example.net;lr>",
        ]
    );

    // The callee's BYE: its route set is the Record-Route in order (12.1.1); it arrives on
    // the UDP socket and leaves over TLS, from the TLS socket, to the caller's Contact.
    let callee = e.at(Transport::Udp, "192.0.2.7:5060", UDP);
    let bye = request(
        "BYE",
        "sip:alice@192.0.2.1:40001;transport=tls",
        &[
            &format!("Route: {out_rr}"),
            &format!("Route: {in_rr}"),
            "Route: <sip:p0.example.net;lr>",
        ],
    );
    let msg = ser_parser::parse(bye.as_bytes()).expect("bye");
    let mut sc = Scratch::default();
    let stats = Stats::default();
    {
        let mut m = MsgCtx::new(&e.core, &stats, &msg, callee, &mut sc);
        assert_eq!(m.loose_route(), 1);
        assert_eq!(
            m.force_socket,
            Some(TLS),
            "the socket the second entry names"
        );
        assert_eq!(m.next_hop_uri(), "sip:p0.example.net;lr");
    }
    // Both entries of ours went; the next hop is the Request-URI when nothing is left.
    let bye = request(
        "BYE",
        "sip:alice@192.0.2.1:40001;transport=tls",
        &[&format!("Route: {out_rr}, {in_rr}")],
    );
    let out = e.relayed(&bye, callee).expect("bye from the callee");
    assert!(out.headers("Route").is_empty(), "{}", out.text);
    assert_eq!(out.dst, dest(Transport::Tls, TLS, "192.0.2.1:40001"));

    // The caller's BYE: the route set in reverse; it arrives over TLS, leaves over UDP.
    let bye = request(
        "BYE",
        "sip:bob@192.0.2.7",
        &[&format!("Route: {in_rr}"), &format!("Route: {out_rr}")],
    );
    let out = e.relayed(&bye, caller).expect("bye from the caller");
    assert!(out.headers("Route").is_empty(), "{}", out.text);
    assert_eq!(out.dst, dest(Transport::Udp, UDP, "192.0.2.7:5060"));
}

#[test]
fn a_double_record_route_after_a_strict_previous_hop() {
    // A strict router put the first of our pair into the Request-URI (RFC 3261 16.4) and the
    // real Request-URI at the end of the route set.
    let e = Env::new(RR_PROXY, all_sockets());
    let bye = request(
        "BYE",
        "sip:10.0.0.1:5060;r2=on;lr",
        &[
            "Route: <sip:10.0.0.1:5061;transport=tls;r2=on;lr>",
            "Route: <sip:alice@192.0.2.1:40001;transport=tls>",
        ],
    );
    let msg = ser_parser::parse(bye.as_bytes()).expect("bye");
    let mut sc = Scratch::default();
    let stats = Stats::default();
    let at = e.at(Transport::Udp, "192.0.2.7:5060", UDP);
    let mut m = MsgCtx::new(&e.core, &stats, &msg, at, &mut sc);
    assert_eq!(m.loose_route(), 1);
    assert_eq!(m.current_uri(), "sip:alice@192.0.2.1:40001;transport=tls");
    assert_eq!(m.next_hop_uri(), "sip:alice@192.0.2.1:40001;transport=tls");
    assert_eq!(m.force_socket, Some(TLS));
}

#[test]
fn another_address_out_gets_two_record_routes_too() {
    let src = RR_PROXY.replace(
        "t_relay();\n}",
        "force_send_socket(udp:192.168.0.1); t_relay();\n}",
    );
    let mut e = Env::new(&src, all_sockets());
    let at = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    let out = e.relayed(&invite("sip:bob@192.0.2.7"), at).expect("invite");
    assert_eq!(out.dst.socket, UDP_B);
    assert_eq!(
        out.headers("Record-Route"),
        [
            "Record-Route: <sip:192.168.0.1:5060;r2=on;lr>",
            "Record-Route: <sip:10.0.0.1:5060;r2=on;lr>",
        ]
    );
}

#[test]
fn loose_route_knows_our_tls_entry_without_a_port() {
    let e = Env::new(RR_PROXY, all_sockets());
    let bye = request(
        "BYE",
        "sip:bob@192.0.2.7",
        &["Route: <sip:10.0.0.1;transport=tls;lr>, <sip:p2.example.net;lr>"],
    );
    let msg = ser_parser::parse(bye.as_bytes()).expect("bye");
    let mut sc = Scratch::default();
    let stats = Stats::default();
    let at = e.at(Transport::Tls, "192.0.2.1:40001", TLS);
    let mut m = MsgCtx::new(&e.core, &stats, &msg, at, &mut sc);
    assert_eq!(m.loose_route(), 1);
    assert_eq!(m.next_hop_uri(), "sip:p2.example.net;lr");
    // A single entry (no r2): the socket is not forced.
    assert_eq!(m.force_socket, None);
}

// ---- bindings over a stream keep their flow ----

const REGISTRAR: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
route {
    if (method == "REGISTER") { save("location"); break; };
    if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    if (method == "MESSAGE") { forward(uri:host, uri:port); break; };
    t_relay();
}
"#;

fn register(contact: &str) -> String {
    request(
        "REGISTER",
        "sip:example.org",
        &[&format!("Contact: <{contact}>"), "Expires: 600"],
    )
    .replace("To: <sip:bob@example.org>", "To: <sip:alice@example.org>")
}

#[test]
fn a_binding_registered_over_a_connection_is_reached_over_it() {
    let mut e = Env::new(REGISTRAR, all_sockets());
    let conn = ConnId::new(0, 77);
    let mut over_tcp = e.at(Transport::Tcp, "198.51.100.9:40123", TCP);
    over_tcp.conn = Some(conn);
    // The Contact names an address the UA cannot be reached at (behind NAT).
    let reg = register("sip:alice@192.168.1.50:5070;transport=tcp");
    assert_eq!(e.reply(&reg, over_tcp), "SIP/2.0 200 OK");
    let flow = Dest {
        transport: Transport::Tcp,
        socket: TCP,
        addr: "198.51.100.9:40123".parse().expect("addr"),
        conn: Some(conn),
    };
    let from_udp = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    // Stateful: the branch goes over the flow, its Request-URI is the contact.
    let out = e
        .relayed(&invite("sip:alice@example.org"), from_udp)
        .expect("invite");
    assert_eq!(out.dst, flow);
    assert_eq!(
        out.first_line(),
        "INVITE sip:alice@192.168.1.50:5070;transport=tcp SIP/2.0"
    );
    assert!(out.headers("Via")[0].starts_with("Via: SIP/2.0/TCP 10.0.0.1:5060;"));
    // Stateless: the same.
    let out = e
        .relayed(&request("MESSAGE", "sip:alice@example.org", &[]), from_udp)
        .expect("message");
    assert_eq!(out.dst, flow);

    // The connection closes: the binding goes.
    assert_eq!(e.core.usrloc.flow_closed(ConnId::new(0, 78)), 0);
    assert_eq!(e.core.usrloc.flow_closed(conn), 1);
    assert_eq!(
        e.reply(&invite("sip:alice@example.org"), from_udp),
        "SIP/2.0 404 Not Found"
    );
}

#[test]
fn a_binding_registered_over_udp_goes_where_its_contact_says() {
    let mut e = Env::new(REGISTRAR, all_sockets());
    let over_udp = e.at(Transport::Udp, "198.51.100.9:5060", UDP);
    let reg = register("sip:alice@198.51.100.9:5071;transport=tls");
    assert_eq!(e.reply(&reg, over_udp), "SIP/2.0 200 OK");
    let from_udp = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    let out = e
        .relayed(&invite("sip:alice@example.org"), from_udp)
        .expect("invite");
    assert_eq!(out.dst, dest(Transport::Tls, TLS, "198.51.100.9:5071"));
}

#[test]
fn lookup_gives_every_branch_its_own_flow() {
    let mut e = Env::new(REGISTRAR, all_sockets());
    let mut a = e.at(Transport::Tcp, "198.51.100.9:40123", TCP);
    a.conn = Some(ConnId::new(0, 1));
    let mut b = e.at(Transport::Tls, "198.51.100.10:40124", TLS);
    b.conn = Some(ConnId::new(0, 2));
    let reg_a = register("sip:alice@10.1.1.1;transport=tcp");
    let reg_b = register("sip:alice@10.1.1.2;transport=tls").replace("CSeq: 1", "CSeq: 2");
    assert_eq!(e.reply(&reg_a, a), "SIP/2.0 200 OK");
    assert_eq!(e.reply(&reg_b, b), "SIP/2.0 200 OK");
    let from_udp = e.at(Transport::Udp, "192.0.2.1:5060", UDP);
    let out: Vec<Sent> = e
        .run(&invite("sip:alice@example.org"), from_udp)
        .into_iter()
        .filter(|s| s.text.starts_with("INVITE "))
        .collect();
    let mut got: Vec<(Option<ConnId>, Transport, String)> = out
        .iter()
        .map(|s| (s.dst.conn, s.dst.transport, s.first_line().to_string()))
        .collect();
    got.sort_by_key(|g| g.0.map(ConnId::get));
    assert_eq!(
        got,
        [
            (
                Some(ConnId::new(0, 1)),
                Transport::Tcp,
                "INVITE sip:alice@10.1.1.1;transport=tcp SIP/2.0".to_string()
            ),
            (
                Some(ConnId::new(0, 2)),
                Transport::Tls,
                "INVITE sip:alice@10.1.1.2;transport=tls SIP/2.0".to_string()
            ),
        ]
    );
}
