//! Real SIP clients over TCP and TLS against a live `ser` (registrar + record-routing stateful
//! proxy): baresip (Debian's 1.0) registers over TCP or TLS, calls a sipp callee on UDP and
//! hangs up (the BYE follows the Record-Route), is called by a sipp caller on UDP over the
//! connection it registered on (auto-answer), and registers over TLS to ser's self-signed
//! certificate; its binding goes when its connection does. sipsak sends OPTIONS and registers
//! over TCP.
//!
//! Each test runs inside its own network namespace with only loopback up: the test re-executes
//! itself there (`unshare -n`, `-rn` when not root), since baresip's DNS client binds wildcard
//! sockets (0.0.0.0 and ::) that no configuration turns off. Every baresip runs headless: no
//! audio modules (no source, no player: the call has its SDP and no sound), commands and
//! events over its `ctrl_tcp` module (netstring JSON), `-s` SIP trace in its log, `-t` as a
//! last bound on its life, and it is stopped by PID.
//!
//! What baresip 1.0 cannot do: verify a server's certificate (`sip_cafile` loads the CA, but a
//! server with any certificate is accepted; there is no `sip_verify_server` yet). So the TLS
//! tests check ser's certificate against the test CA with `openssl s_client` as well.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sipp::*;
use common::*;

/// Set inside the namespace, where the tests run their bodies.
const INNER: &str = "SER_BARESIP_NETNS";

/// Runs `body` in a loopback-only network namespace (common::netns), baresip required.
fn in_netns(name: &str, limit: Duration, body: impl FnOnce()) {
    if std::env::var_os(INNER).is_none() {
        assert!(
            have("baresip"),
            "baresip is required; scripts/test.sh installs it (Debian package baresip)"
        );
    }
    netns::in_netns(INNER, name, limit, body);
}

/// A registrar and record-routing stateful proxy (the default script's shape), with a FIFO.
fn script(fifo: &Path, data_dir: &Path, tls: &str) -> String {
    format!(
        r#"fifo="{}"
data_dir="{}"
{tls}
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("tm", "fr_timer", 5)
modparam("tm", "fr_inv_timer", 20)
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (loose_route()) {{ t_relay(); break; }};
    if (method == "REGISTER") {{ save("location"); break; }};
    if (uri == myself) {{
        if (method == "OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    }};
    if (method == "INVITE") record_route();
    if (!t_relay()) {{ sl_reply_error(); }};
}}
"#,
        fifo.display(),
        data_dir.display()
    )
}

/// The test CA and its server certificate (tests/common/certs.rs).
type Certs = certs::TestCa;

fn make_certs(dir: &Path) -> Certs {
    certs::make_test_ca(dir, "ser test CA", "serverAuth,clientAuth")
}

/// ser with the registrar script; TLS on with the test CA's certificate when `certs` is set.
fn start_ser(tag: &str, fifo: &Path, dir: &Path, certs: Option<&Certs>) -> Ser {
    let tls = certs.map_or(String::new(), |c| {
        format!(
            "enable_tls=yes\ntls_certificate=\"{}\"\ntls_private_key=\"{}\"\ntls_ca_list=\"{}\"",
            c.cert.display(),
            c.key.display(),
            c.ca.display()
        )
    });
    let ser = Ser::start(tag, &script(fifo, dir, &tls), 0, 2, "auto");
    wait_fifo(fifo, &ser);
    ser
}

/// ser's TLS socket serves the test CA's certificate for 127.0.0.1 (what baresip 1.0 cannot
/// check itself).
fn check_certificate(ser: &Ser, certs: &Certs) {
    let (ok, out) = run_bounded(
        Command::new("openssl")
            .args(["s_client", "-connect", &ser.listen("tls").to_string()])
            .arg("-CAfile")
            .arg(&certs.ca)
            .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-brief"]),
        Duration::from_secs(10),
    );
    assert!(
        ok && out.contains("Verification: OK"),
        "ser's TLS certificate does not verify against the test CA:\n{out}"
    );
}

/// `ul_show_contact location user` over the FIFO: (reply code, text).
fn show_contact(fifo: &Path, user: &str) -> (i32, String) {
    serctl_joined(fifo, &["fifo", "ul_show_contact", "location", user])
}

/// Polls (up to `limit`) until `user` has no binding.
fn wait_unbound(fifo: &Path, user: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let (code, out) = show_contact(fifo, user);
        if code != 0 && out.contains("not found") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls (up to `limit`) until `user` has a binding containing `want`; its line.
fn wait_bound(fifo: &Path, user: &str, want: &str, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let (code, out) = show_contact(fifo, user);
        if code == 0 && out.contains(want) {
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Err(out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers `user` at ser over UDP with `contact` (a raw REGISTER from the test).
fn register_udp(ser: &Ser, user: &str, contact: &str) {
    let peer = Peer::new();
    let req = request(
        "REGISTER",
        &format!("sip:{}", ser.addr()),
        peer.port(),
        &format!("reg-{user}"),
        &format!("Contact: <{contact}>\r\nExpires: 300\r\n"),
    )
    .replace(
        &format!("To: <sip:{}>", ser.addr()),
        &format!("To: <sip:{user}@{}>", ser.addr()),
    );
    peer.send(ser.addr(), req.as_bytes());
    let r = peer
        .recv()
        .unwrap_or_else(|| panic!("no answer to REGISTER\n{}", ser.log_text()));
    assert_eq!(status(&r), Some(200), "{r}");
}

/// One SIP message in baresip's `-s` trace: transport, from, to, the message.
#[derive(Debug, Clone)]
struct Traced {
    proto: String,
    from: SocketAddr,
    to: SocketAddr,
    msg: String,
}

impl Traced {
    fn start_line(&self) -> &str {
        self.msg.lines().next().unwrap_or("")
    }
}

/// The messages of a baresip `-s` trace: a `#` line, `PROTO from -> to`, the message, then
/// a line starting with the colour reset.
fn trace(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let mut parts = line.split_whitespace();
        let (Some(proto), Some(from), Some("->"), Some(to), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        if !["UDP", "TCP", "TLS"].contains(&proto) {
            continue;
        }
        let (Ok(from), Ok(to)) = (from.parse(), to.parse()) else {
            continue;
        };
        let mut msg = String::new();
        while let Some(l) = lines.peek() {
            if l.starts_with('\u{1b}') {
                break;
            }
            msg.push_str(l.trim_end_matches('\r'));
            msg.push('\n');
            lines.next();
        }
        out.push(Traced {
            proto: proto.to_string(),
            from,
            to,
            msg,
        });
    }
    out
}

/// A headless baresip with one account, controlled over ctrl_tcp; stopped by PID on drop.
struct Baresip {
    child: Child,
    dir: TempDir,
    ctrl: TcpStream,
    /// Bytes read from ctrl_tcp, not yet a whole netstring.
    pending: Vec<u8>,
    /// Every JSON message from ctrl_tcp so far, and whether a wait has taken it.
    seen: Vec<(String, bool)>,
    token: u32,
}

impl Baresip {
    /// Starts baresip with `account` (an accounts-file line), trusting `cafile` for TLS.
    fn start(tag: &str, account: &str, cafile: Option<&Path>) -> Baresip {
        let dir = temp_dir(tag);
        let ctrl_port = free_port_udp_tcp();
        let mut config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:0\n\
             net_interface\t\t127.0.0.1\n\
             call_local_timeout\t20\n\
             call_max_calls\t\t4\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n"
        );
        if let Some(ca) = cafile {
            config.push_str(&format!("sip_cafile\t\t{}\n", ca.display()));
        }
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-v", "-s", "-t", "60"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn baresip");
        let addr: SocketAddr = ([127, 0, 0, 1], ctrl_port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                break s;
            }
            let log = std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default();
            if let Ok(Some(st)) = child.try_wait() {
                panic!("baresip exited at start ({st}):\n{log}");
            }
            if Instant::now() > deadline {
                stop_child(&mut child, Duration::ZERO);
                panic!("baresip's ctrl_tcp did not come up:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Baresip {
            child,
            dir,
            ctrl,
            pending: Vec::new(),
            seen: Vec::new(),
            token: 0,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    fn trace(&self) -> Vec<Traced> {
        trace(&self.log())
    }

    /// Reads what ctrl_tcp has sent (up to one read timeout) into `seen`.
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        match self.ctrl.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(100)),
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        // Netstrings: <len>:<bytes>,
        while let Some(colon) = self.pending.iter().position(|b| *b == b':') {
            let Some(len) = std::str::from_utf8(&self.pending[..colon])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                panic!(
                    "ctrl_tcp sent something not a netstring: {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
            };
            if self.pending.len() < colon + 1 + len + 1 {
                break;
            }
            let body = String::from_utf8_lossy(&self.pending[colon + 1..colon + 1 + len]);
            self.seen.push((body.into_owned(), false));
            self.pending.drain(..colon + 1 + len + 1);
        }
    }

    /// The first message not yet taken that `pred` accepts, waiting up to `limit`.
    fn take(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((m, used)) = self.seen.iter_mut().find(|(m, u)| !*u && pred(m)) {
                *used = true;
                return Some(m.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            self.pump();
        }
    }

    /// Waits (up to `limit`) for the event of `kind` (`CALL_ESTABLISHED`, ...).
    fn event(&mut self, kind: &str, limit: Duration) -> String {
        let want = format!("\"type\":\"{kind}\"");
        self.take(limit, |m| m.contains("\"event\":true") && m.contains(&want))
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} event from baresip within {limit:?}; got {:?}\n{}",
                    self.seen,
                    self.log()
                )
            })
    }

    /// Runs a command (`dial`, `hangup`, ...) and returns its response, which must be ok.
    fn command(&mut self, command: &str, params: &str) -> String {
        self.token += 1;
        let token = format!("t{}", self.token);
        let json = format!(r#"{{"command":"{command}","params":"{params}","token":"{token}"}}"#);
        self.ctrl
            .write_all(format!("{}:{json},", json.len()).as_bytes())
            .expect("write to ctrl_tcp");
        let want = format!("\"token\":\"{token}\"");
        let r = self
            .take(Duration::from_secs(5), |m| {
                m.contains("\"response\":true") && m.contains(&want)
            })
            .unwrap_or_else(|| panic!("no response to {command}\n{}", self.log()));
        assert!(r.contains("\"ok\":true"), "{command} {params}: {r}");
        r
    }

    /// The local address of the connection baresip registered over: the source of its first
    /// REGISTER in the trace.
    fn register_source(&self) -> SocketAddr {
        self.trace()
            .iter()
            .find(|t| t.start_line().starts_with("REGISTER "))
            .map(|t| t.from)
            .unwrap_or_else(|| panic!("no REGISTER in baresip's trace\n{}", self.log()))
    }

    /// SIGKILL: no un-REGISTER, the connection just closes.
    fn kill(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// The account line of alice registering at ser over `transport` (its socket `at`).
fn alice(at: SocketAddr, transport: &str, extra: &str) -> String {
    format!("<sip:alice@{at};transport={transport}>;regint=60{extra}")
}

/// alice (baresip over `transport`) registers, calls bob (a sipp UAS on UDP registered by
/// the test) through ser and hangs up: INVITE, ACK and BYE all go to ser over her transport
/// (the BYE follows the Record-Route, not the callee's Contact), and the binding goes with
/// her connection when she dies.
fn alice_calls_bob(transport: &str) {
    require_sipp();
    let tag = format!("bs-out-{transport}");
    let dir = temp_dir(&tag);
    let fifo = fifo_path(&tag);
    let certs = (transport == "tls").then(|| make_certs(&dir));
    let ser = start_ser(&tag, &fifo, &dir, certs.as_ref());
    if let Some(c) = &certs {
        check_certificate(&ser, c);
    }
    let at = ser.listen(transport);

    let mut alice = Baresip::start(
        &format!("{tag}-alice"),
        &alice(at, transport, ""),
        certs.as_ref().map(|c| c.ca.as_path()),
    );
    let binding = wait_bound(
        &fifo,
        "alice",
        &format!(";transport={transport}>"),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|out| {
        panic!(
            "alice's binding is not there: {out}\n{}\n{}",
            alice.log(),
            ser.log_text()
        )
    });
    assert!(binding.contains("<sip:alice"), "{binding}");

    let uas_port = free_port();
    let uas = Uas::start(
        &scenario(&dir, "uas-rr.xml", &format!("127.0.0.1:{uas_port}")),
        uas_port,
        1,
        &dir,
    );
    register_udp(&ser, "bob", &format!("sip:bob@127.0.0.1:{uas_port}"));

    alice.command("dial", &format!("sip:bob@{at}"));
    alice.event("CALL_ESTABLISHED", Duration::from_secs(10));
    alice.command("hangup", "");
    alice.event("CALL_CLOSED", Duration::from_secs(10));
    let (ok, log) = uas.finish(Duration::from_secs(15));
    assert!(
        ok,
        "bob (sipp UAS) did not get the call and its BYE:\n{log}\n{}\n{}",
        alice.log(),
        ser.log_text()
    );

    let t = alice.trace();
    let proto = transport.to_ascii_uppercase();
    for method in ["INVITE", "ACK", "BYE"] {
        let sent = t
            .iter()
            .find(|m| m.start_line().starts_with(&format!("{method} ")))
            .unwrap_or_else(|| panic!("alice sent no {method}:\n{}", alice.log()));
        assert!(
            sent.proto == proto && sent.to == at,
            "alice's {method} went {} to {}, not {proto} to ser at {at}:\n{}",
            sent.proto,
            sent.to,
            sent.msg
        );
    }
    // The 200 carries ser's two Record-Routes: one for alice's transport, one for bob's UDP.
    let ok200 = t
        .iter()
        .find(|m| m.start_line().starts_with("SIP/2.0 200") && m.msg.contains("INVITE\n"))
        .unwrap_or_else(|| panic!("alice got no 200 to her INVITE:\n{}", alice.log()));
    // (sipp copies them as one header line; each entry is a `<sip:...>`.)
    let rr: Vec<&str> = ok200
        .msg
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
        .flat_map(|l| l.split('<').skip(1))
        .collect();
    assert_eq!(rr.len(), 2, "double Record-Route: {}", ok200.msg);
    assert!(
        rr.iter()
            .any(|l| l.contains(&format!(";transport={transport}"))),
        "a Record-Route names {transport}: {}",
        ok200.msg
    );
    let bye = t
        .iter()
        .find(|m| m.start_line().starts_with("BYE "))
        .unwrap();
    assert!(
        bye.msg
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("route:")
                && l.contains(&format!(";transport={transport}"))),
        "the BYE carries the recorded route: {}",
        bye.msg
    );

    // Killed (no un-REGISTER): her binding goes with her connection.
    alice.kill();
    if let Err(out) = wait_unbound(&fifo, "alice", Duration::from_secs(3)) {
        panic!(
            "alice's binding outlived her connection: {out}\n{}",
            ser.log_text()
        );
    }
}

#[test]
fn baresip_over_tcp_registers_calls_a_udp_callee_and_hangs_up_through_the_record_route() {
    in_netns(
        "baresip_over_tcp_registers_calls_a_udp_callee_and_hangs_up_through_the_record_route",
        Duration::from_secs(120),
        || alice_calls_bob("tcp"),
    );
}

#[test]
fn baresip_over_tls_registers_calls_a_udp_callee_and_hangs_up_through_the_record_route() {
    in_netns(
        "baresip_over_tls_registers_calls_a_udp_callee_and_hangs_up_through_the_record_route",
        Duration::from_secs(120),
        || alice_calls_bob("tls"),
    );
}

/// alice (baresip over `transport`, auto-answer) is called by a sipp caller on UDP; the
/// INVITE, ACK and BYE reach her over the connection she registered on (from ser's socket to
/// the very address she registered from), and the call completes both ways.
fn udp_caller_calls_alice(transport: &str) {
    require_sipp();
    let tag = format!("bs-in-{transport}");
    let dir = temp_dir(&tag);
    let fifo = fifo_path(&tag);
    let certs = (transport == "tls").then(|| make_certs(&dir));
    let ser = start_ser(&tag, &fifo, &dir, certs.as_ref());
    let at = ser.listen(transport);
    let mut alice = Baresip::start(
        &format!("{tag}-alice"),
        &alice(at, transport, ";answermode=auto"),
        certs.as_ref().map(|c| c.ca.as_path()),
    );
    wait_bound(
        &fifo,
        "alice",
        &format!(";transport={transport}>"),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|out| panic!("alice's binding is not there: {out}\n{}", alice.log()));
    let flow = alice.register_source();

    let scen = scenario(&dir, "uac-rr.xml", &ser.addr().to_string());
    let (ok, out) = run_bounded(
        Command::new("sipp")
            .arg("-sf")
            .arg(&scen)
            .arg(ser.addr().to_string())
            .args(["-s", "alice", "-i", "127.0.0.1", "-m", "1"])
            .args(["-timeout", "15", "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-error_file", "/dev/null"]),
        Duration::from_secs(25),
    );
    assert!(
        ok,
        "the UDP caller's call to alice failed:\n{out}\n{}\n{}",
        alice.log(),
        ser.log_text()
    );
    // Auto-answered (no CALL_INCOMING event then): established, closed by the caller's BYE.
    let up = alice.event("CALL_ESTABLISHED", Duration::from_secs(5));
    assert!(up.contains(r#""direction":"incoming""#), "{up}");
    alice.event("CALL_CLOSED", Duration::from_secs(5));

    let t = alice.trace();
    let proto = transport.to_ascii_uppercase();
    for method in ["INVITE", "ACK", "BYE"] {
        let got = t
            .iter()
            .find(|m| m.start_line().starts_with(&format!("{method} ")) && m.to == flow)
            .unwrap_or_else(|| {
                panic!(
                    "no {method} reached alice on her {proto} connection from {flow}:\n{}",
                    alice.log()
                )
            });
        assert!(
            got.proto == proto && got.from == at,
            "alice's {method} came {} from {}, not {proto} from ser at {at}:\n{}",
            got.proto,
            got.from,
            got.msg
        );
    }
}

#[test]
fn baresip_registered_over_tls_is_called_by_a_udp_caller_over_its_connection() {
    in_netns(
        "baresip_registered_over_tls_is_called_by_a_udp_caller_over_its_connection",
        Duration::from_secs(120),
        || udp_caller_calls_alice("tls"),
    );
}

#[test]
fn baresip_registered_over_tcp_is_called_by_a_udp_caller_over_its_connection() {
    in_netns(
        "baresip_registered_over_tcp_is_called_by_a_udp_caller_over_its_connection",
        Duration::from_secs(120),
        || udp_caller_calls_alice("tcp"),
    );
}

/// TLS on without a certificate: ser makes a self-signed one under data_dir, and baresip
/// (which does not verify servers) registers over TLS with it and is called over that
/// connection.
#[test]
fn baresip_registers_over_tls_to_a_self_signed_certificate() {
    in_netns(
        "baresip_registers_over_tls_to_a_self_signed_certificate",
        Duration::from_secs(120),
        || {
            let dir = temp_dir("bs-selfsigned");
            let fifo = fifo_path("bs-selfsigned");
            let ser = Ser::start(
                "bs-selfsigned",
                &script(&fifo, &dir, "enable_tls=yes"),
                0,
                2,
                "auto",
            );
            wait_fifo(&fifo, &ser);
            let made: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                made.iter()
                    .any(|n| n.ends_with(".pem") || n.ends_with(".crt")),
                "no certificate made under data_dir: {made:?}\n{}",
                ser.log_text()
            );
            let at = ser.listen("tls");
            let alice = Baresip::start("bs-selfsigned-alice", &alice(at, "tls", ""), None);
            wait_bound(&fifo, "alice", ";transport=tls>", Duration::from_secs(5)).unwrap_or_else(
                |out| {
                    panic!(
                        "alice's binding is not there: {out}\n{}\n{}",
                        alice.log(),
                        ser.log_text()
                    )
                },
            );
            // A request for her comes over her connection: a MESSAGE from a UDP peer,
            // relayed by ser (stateful) and answered by baresip.
            let flow = alice.register_source();
            let peer = Peer::new();
            let req = request(
                "MESSAGE",
                &format!("sip:alice@{}", ser.addr()),
                peer.port(),
                "bs-selfsigned-msg",
                "Content-Type: text/plain\r\n",
            )
            .replace(
                "Content-Length: 0\r\n\r\n",
                "Content-Length: 5\r\n\r\nhello",
            );
            peer.send(ser.addr(), req.as_bytes());
            let fin = final_reply(&peer, Duration::from_secs(5)).unwrap_or_else(|| {
                panic!(
                    "no final reply to the MESSAGE\n{}\n{}",
                    alice.log(),
                    ser.log_text()
                )
            });
            assert_eq!(status(&fin), Some(200), "{fin}\n{}", alice.log());
            let got = alice
                .trace()
                .into_iter()
                .find(|m| m.start_line().starts_with("MESSAGE "))
                .unwrap_or_else(|| panic!("alice got no MESSAGE\n{}", alice.log()));
            assert!(
                got.proto == "TLS" && got.from == at && got.to == flow,
                "the MESSAGE came {} {} -> {}, not over her connection {at} -> {flow}",
                got.proto,
                got.from,
                got.to
            );
        },
    );
}

/// sipsak (0.9.8, `-E tcp`) over TCP: an OPTIONS to ser is answered 200 over the connection,
/// and a REGISTER (`-U`, usrloc mode) is saved, its binding going when sipsak's connection
/// closes. (sipsak over TLS fails in Debian's 0.9.8; its `-I`/`-M` modes crash on any
/// transport, so they are not used.)
#[test]
fn sipsak_over_tcp_options_and_register() {
    in_netns(
        "sipsak_over_tcp_options_and_register",
        Duration::from_secs(120),
        || {
            assert!(
                have("sipsak"),
                "sipsak is required; scripts/test.sh installs it"
            );
            let dir = temp_dir("bs-sipsak");
            let fifo = fifo_path("bs-sipsak");
            let ser = Ser::start_4digit("bs-sipsak", &script(&fifo, &dir, ""), 2, "auto");
            wait_fifo(&fifo, &ser);
            let tcp = ser.listen("tcp");
            assert_eq!(tcp.port(), ser.port);

            let (ok, out) = run_bounded(
                Command::new("sipsak")
                    .args(["-E", "tcp", "-vv", "-s"])
                    .arg(format!("sip:{tcp}")),
                Duration::from_secs(15),
            );
            assert!(
                ok && out.contains("SIP/2.0 200 OK") && out.contains("SIP/2.0/TCP"),
                "sipsak OPTIONS over TCP:\n{out}\n{}",
                ser.log_text()
            );

            let (ok, out) = run_bounded(
                Command::new("sipsak")
                    .args(["-U", "-E", "tcp", "-vvv", "-C", "sip:carol@127.0.0.1:9"])
                    .arg("-s")
                    .arg(format!("sip:carol@{tcp}")),
                Duration::from_secs(15),
            );
            assert!(
                ok && out.contains("send to: TCP:")
                    && out.contains("SIP/2.0 200 OK")
                    && out.contains("<sip:carol@127.0.0.1:9>;q=1.00;expires=15"),
                "sipsak REGISTER over TCP:\n{out}\n{}",
                ser.log_text()
            );
            // sipsak has exited: its connection closed, and the binding saved over it went.
            if let Err(out) = wait_unbound(&fifo, "carol", Duration::from_secs(3)) {
                panic!("carol's binding outlived sipsak's connection: {out}");
            }
            // The same over UDP stays: the going above is the connection's doing.
            let (ok, out) = run_bounded(
                Command::new("sipsak")
                    .args(["-U", "-C", "sip:dave@127.0.0.1:9", "-s"])
                    .arg(format!("sip:dave@{}", ser.addr())),
                Duration::from_secs(15),
            );
            assert!(ok, "sipsak REGISTER over UDP:\n{out}");
            let (code, out) = show_contact(&fifo, "dave");
            assert!(code == 0 && out.contains("sip:dave@127.0.0.1:9"), "{out}");
        },
    );
}
