//! SIP over TLS against a live `ser` on loopback, with Python's ssl module as the peer
//! (tests/data/tls-peer.py; Debian's sipsak fails over TLS) and a test PKI made with the
//! openssl command line in each test's temp folder:
//! - OPTIONS and keep-alive pings over TLS; the protocol versions `tls_method` allows; client
//!   certificates when `tls_require_certificate` asks for them; the configured certificate
//!   served; a certificate that does not load stops the start, naming the file; the
//!   self-signed certificate made once under `data_dir` and reused; sessions resumed (TLS 1.2
//!   with tickets and with session ids, TLS 1.3).
//! - A call from a TLS caller through the stateful record-routing proxy to a sipp callee on
//!   UDP, and back.
//! - Outgoing TLS: a request for `;transport=tls` relayed to a Python TLS server, with and
//!   without verification; a server that fails verification fails the branch at once.
//!
//! The TLS client is a bridge: the Python script holds the TLS connection to ser and relays
//! it to one plain TCP connection the test opens, so the test speaks SIP over a plain
//! `TcpStream` with the helpers of tests/common/stream.rs.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::sipp::*;
use common::stream::*;
use common::*;

const PROXY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
modparam("tm", "fr_timer", 10)
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (method == "OPTIONS" && uri == myself) { sl_send_reply("200", "OK"); break; };
    if (loose_route()) { t_relay(); break; };
    if (method == "INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); };
}
"#;

/// The proxy with TLS on (self-signed under `dir`/data unless `extra` names a certificate)
/// and `extra` settings.
fn script(dir: &Path, extra: &str) -> String {
    format!(
        "enable_tls=yes\ndata_dir=\"{}\"\n{extra}\n{PROXY}",
        dir.join("data").display()
    )
}

fn require_tools() {
    assert!(
        have("python3"),
        "python3 is required (its ssl module is the TLS peer)"
    );
    assert!(
        have("openssl"),
        "openssl is required for the test certificates; scripts/test.sh installs it"
    );
}

/// A tls-peer.py process (stopped by PID when dropped) writing its `key=value` lines to a
/// file.
struct Py {
    child: Child,
    out: PathBuf,
    _dir: TempDir,
}

impl Py {
    fn spawn(args: &[&str]) -> Py {
        let dir = temp_dir("tls-peer");
        let out = dir.join("out");
        let f = std::fs::File::create(&out).expect("peer output");
        let child = Command::new("python3")
            .arg(repo_root().join("tests/data/tls-peer.py"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone"))
            .stderr(f)
            .spawn()
            .expect("spawn python3");
        Py {
            child,
            out,
            _dir: dir,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (up to `limit`) for its line `ready` or `done`: its values. Err with its output
    /// on `failed`, an exit without either, or the time passing.
    fn wait(&mut self, limit: Duration) -> Result<HashMap<String, String>, String> {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text();
            let complete = text.rfind('\n').map_or("", |e| &text[..e]);
            let ends: Vec<&str> = complete.lines().collect();
            if ends.iter().any(|l| *l == "ready" || *l == "done") {
                return Ok(complete
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect());
            }
            if ends.contains(&"failed") {
                return Err(text);
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("tls-peer.py exited ({st}):\n{}", self.text()));
            }
            if Instant::now() > deadline {
                return Err(format!("tls-peer.py: no answer in {limit:?}:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }
}

/// A TLS connection to ser, spoken through as a plain `TcpStream` (see the module doc).
struct TlsClient {
    s: TcpStream,
    /// What the handshake gave: version, cipher, reused, local_port, cert_sha256,
    /// subject_cn (when the client verified the server).
    info: HashMap<String, String>,
    _py: Py,
}

impl TlsClient {
    /// The TLS side's local port (the Via's).
    fn port(&self) -> u16 {
        self.info["local_port"].parse().expect("local_port")
    }
}

/// A TLS connection to `addr` made by tls-peer.py's bridge with `args` (`--version 1.2`,
/// `--ca`, `--cert`/`--key`); Err with the peer's output when the handshake or the
/// keep-alive probe after it fails (a refusal).
fn tls_connect(addr: SocketAddr, args: &[&str]) -> Result<TlsClient, String> {
    let port = addr.port().to_string();
    let mut all = vec!["bridge", "--port", &port, "--time", "20"];
    all.extend_from_slice(args);
    let mut py = Py::spawn(&all);
    let info = py.wait(Duration::from_secs(15))?;
    let bridge: u16 = info["bridge"].parse().expect("bridge port");
    let s = tcp(SocketAddr::from(([127, 0, 0, 1], bridge)));
    Ok(TlsClient { s, info, _py: py })
}

/// `tls_connect` that must succeed.
fn tls_ok(ser: &Ser, args: &[&str]) -> TlsClient {
    tls_connect(ser.listen("tls"), args)
        .unwrap_or_else(|e| panic!("TLS connection failed: {e}\n{}", ser.log_text()))
}

/// `tls_connect` that must be refused.
fn tls_refused(ser: &Ser, args: &[&str], what: &str) -> String {
    match tls_connect(ser.listen("tls"), args) {
        Ok(c) => panic!("{what}: accepted ({:?})\n{}", c.info, ser.log_text()),
        Err(e) => e,
    }
}

/// An OPTIONS over the TLS connection is answered 200, with our Via (TLS) copied.
fn options_over_tls(c: &mut TlsClient, ser: &Ser, call_id: &str) -> String {
    let target = ser.listen("tls");
    let req = request("OPTIONS", &format!("sip:{target}"), c.port(), call_id, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    c.s.write_all(req.as_bytes()).expect("write to the bridge");
    let r = read_msg(&mut c.s)
        .unwrap_or_else(|| panic!("no answer over TLS ({call_id})\n{}", ser.log_text()));
    assert_eq!(status(&r), Some(200), "{r}");
    assert!(
        r.contains(&format!("Via: SIP/2.0/TLS 127.0.0.1:{}", c.port())),
        "{r}"
    );
    r
}

/// The test PKI, made with the openssl command line: a CA, a server and a client certificate
/// it signed (both with IP SAN 127.0.0.1 and both usages), and a self-signed "rogue" one.
struct Pki {
    ca: PathBuf,
    ca_key: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
    client: PathBuf,
    client_key: PathBuf,
    rogue: PathBuf,
    rogue_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let (ok, out) = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(20),
    );
    assert!(ok, "openssl {args:?} failed:\n{out}");
    out
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let self_signed = |name: &str, cn: &str, ext: &[&str]| {
            let mut args = vec!["req", "-x509"];
            args.extend_from_slice(&EC);
            let (key, crt) = (format!("{name}.key"), format!("{name}.pem"));
            let subj = format!("/CN={cn}");
            args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &crt, "-days", "2"]);
            args.extend_from_slice(&["-subj", &subj]);
            for e in ext {
                args.extend_from_slice(&["-addext", e]);
            }
            openssl(dir, &args);
        };
        self_signed(
            "ca",
            "ser test CA",
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        self_signed(
            "rogue",
            "rogue",
            &["subjectAltName=IP:127.0.0.1", "basicConstraints=CA:FALSE"],
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write leaf.ext");
        for (i, (name, cn)) in [("server", "ser-test-server"), ("client", "ser-test-client")]
            .iter()
            .enumerate()
        {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let mut args = vec!["req"];
            args.extend_from_slice(&EC);
            let subj = format!("/CN={cn}");
            args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(dir, &args);
            let serial = (i + 2).to_string();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    &serial,
                    "-days",
                    "2",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    &crt,
                ],
            );
        }
        Pki {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            rogue: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
        }
    }
}

/// The SHA-256 of a PEM certificate's DER, lower-case hex (as tls-peer.py's `cert_sha256`).
fn fingerprint(pem: &Path) -> String {
    let dir = pem.parent().expect("a folder");
    let out = openssl(
        dir,
        &[
            "x509",
            "-in",
            &pem.to_string_lossy(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let line = out
        .lines()
        .find(|l| l.contains("Fingerprint="))
        .unwrap_or_else(|| panic!("no fingerprint: {out}"));
    line.split_once('=')
        .map(|(_, v)| v.replace(':', "").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn options_and_keepalive_over_tls() {
    require_tools();
    let dir = temp_dir("tls-options");
    let ser = Ser::start("tls-options", &script(&dir, ""), 0, 2, "auto");
    let tls = ser.listen("tls");
    assert_ne!(tls.port(), 0);
    assert_ne!(tls.port(), ser.port, "TLS has a port of its own");
    let mut c = tls_ok(&ser, &[]);
    assert_eq!(c.info["version"], "TLSv1.3", "{:?}", c.info);
    // Several Call-IDs: some are owned by the other shard, whose reply travels back here.
    for i in 0..6 {
        options_over_tls(&mut c, &ser, &format!("tls-options-{i}"));
    }
    // A keep-alive ping gets its pong inside TLS.
    c.s.write_all(b"\r\n\r\n").expect("ping");
    let mut pong = [0u8; 2];
    c.s.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");
    // Two messages in one write, split anywhere: both answered, in order.
    let uri = format!("sip:{tls}");
    let two = request("OPTIONS", &uri, c.port(), "tls-two-a", "").replace("/UDP", "/TLS")
        + &request("OPTIONS", &uri, c.port(), "tls-two-b", "").replace("/UDP", "/TLS");
    let (a, b) = two.as_bytes().split_at(two.len() / 2 + 3);
    c.s.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.s.write_all(b).unwrap();
    let r1 = read_msg(&mut c.s).expect("first");
    let r2 = read_msg(&mut c.s).expect("second");
    assert!(
        r1.contains("tls-two-a") && r2.contains("tls-two-b"),
        "{r1}\n{r2}"
    );
    // UDP and TCP serve beside it.
    udp_options_ok(&ser, "tls-options-udp");
    tcp_options_ok(&ser, "tls-options-tcp");
}

#[test]
fn tls_method_limits_the_protocol_versions() {
    require_tools();
    for (method, refused, negotiated) in
        [("TLSv1.3", "1.2", "TLSv1.3"), ("TLSv1.2", "1.3", "TLSv1.2")]
    {
        let dir = temp_dir("tls-method");
        let extra = format!("tls_method=\"{method}\"");
        let ser = Ser::start("tls-method", &script(&dir, &extra), 0, 1, "auto");
        let e = tls_refused(
            &ser,
            &["--version", refused],
            &format!("a TLS {refused} client with tls_method={method}"),
        );
        assert!(e.contains("error="), "{e}");
        let mut c = tls_ok(&ser, &[]);
        assert_eq!(c.info["version"], negotiated, "{method}: {:?}", c.info);
        options_over_tls(&mut c, &ser, &format!("tls-method-{method}"));
        let mut c = tls_ok(&ser, &["--version", &negotiated[4..]]);
        assert_eq!(c.info["version"], negotiated);
        options_over_tls(&mut c, &ser, &format!("tls-method-{method}-pinned"));
    }
}

#[test]
fn client_certificates_when_required() {
    require_tools();
    let dir = temp_dir("tls-clientcert");
    let pki = Pki::make(&dir);
    let extra = format!(
        "tls_certificate=\"{}\"\ntls_private_key=\"{}\"\ntls_ca_list=\"{}\"\n\
         tls_require_certificate=yes",
        p(&pki.server),
        p(&pki.server_key),
        p(&pki.ca)
    );
    let ser = Ser::start("tls-clientcert", &script(&dir, &extra), 0, 1, "auto");
    // No certificate: refused, in TLS 1.3 (where the client's handshake ends before the
    // server has judged it: the probe after it fails) and in TLS 1.2.
    for v in ["1.3", "1.2"] {
        tls_refused(
            &ser,
            &["--version", v],
            &format!("TLS {v} without a certificate"),
        );
    }
    // A certificate the CA did not sign: refused.
    let (rogue, rogue_key) = (p(&pki.rogue), p(&pki.rogue_key));
    tls_refused(
        &ser,
        &["--cert", &rogue, "--key", &rogue_key],
        "a client certificate signed by no one we trust",
    );
    // The CA's client certificate: accepted; and the client verifies ser's configured one.
    let (ca, client, client_key) = (p(&pki.ca), p(&pki.client), p(&pki.client_key));
    for v in ["1.3", "1.2"] {
        let mut c = tls_ok(
            &ser,
            &[
                "--version",
                v,
                "--ca",
                &ca,
                "--cert",
                &client,
                "--key",
                &client_key,
            ],
        );
        assert_eq!(c.info["subject_cn"], "ser-test-server", "{:?}", c.info);
        options_over_tls(&mut c, &ser, &format!("tls-clientcert-{v}"));
    }
    udp_options_ok(&ser, "tls-clientcert-udp");
}

#[test]
fn the_configured_certificate_is_served() {
    require_tools();
    let dir = temp_dir("tls-configured");
    let pki = Pki::make(&dir);
    let extra = format!(
        "tls_certificate=\"{}\"\ntls_private_key=\"{}\"",
        p(&pki.server),
        p(&pki.server_key)
    );
    let ser = Ser::start("tls-configured", &script(&dir, &extra), 0, 1, "auto");
    // The client verifies it against the CA (name: IP 127.0.0.1) and sees its subject.
    let ca = p(&pki.ca);
    let mut c = tls_ok(&ser, &["--ca", &ca]);
    assert_eq!(c.info["subject_cn"], "ser-test-server", "{:?}", c.info);
    assert_eq!(c.info["cert_sha256"], fingerprint(&pki.server));
    options_over_tls(&mut c, &ser, "tls-configured");
    // No client certificate asked for: one without connects.
    let mut c = tls_ok(&ser, &["--version", "1.2"]);
    options_over_tls(&mut c, &ser, "tls-configured-12");
    // No self-signed certificate made.
    assert!(!dir.join("data/ser-selfsigned.crt").exists());
    let _ = &pki.ca_key;
}

/// ser with `extra` TLS settings must exit non-zero at start, naming `file`.
fn start_fails_naming(dir: &Path, extra: &str, file: &str) {
    let cfg = dir.join(format!("bad-{}.cfg", file.len()));
    std::fs::write(&cfg, script(dir, extra)).expect("write cfg");
    let log = dir.join("bad.log");
    let mut child = Command::new(SER)
        .arg("-f")
        .arg(&cfg)
        .args(["-l", "127.0.0.1", "-p", "0", "-n", "1", "-E", "-D"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn ser");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            stop_child(&mut child, Duration::from_secs(2));
            panic!(
                "ser started with {extra}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{extra}: exit {status}\n{text}");
    assert!(
        text.contains(file),
        "{extra}: the log does not name {file}:\n{text}"
    );
    assert!(!text.contains("listening on"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start() {
    require_tools();
    let dir = temp_dir("tls-badcert");
    let pki = Pki::make(&dir);
    let missing = p(&dir.join("no-such-dir/server.pem"));
    let (server, key, ca_key) = (p(&pki.server), p(&pki.server_key), p(&pki.ca_key));
    // A certificate file that is not there.
    start_fails_naming(
        &dir,
        &format!("tls_certificate=\"{missing}\"\ntls_private_key=\"{key}\""),
        &missing,
    );
    // A key file that is not there.
    let missing_key = p(&dir.join("no-such.key"));
    start_fails_naming(
        &dir,
        &format!("tls_certificate=\"{server}\"\ntls_private_key=\"{missing_key}\""),
        &missing_key,
    );
    // A key that is not the certificate's.
    start_fails_naming(
        &dir,
        &format!("tls_certificate=\"{server}\"\ntls_private_key=\"{ca_key}\""),
        &ca_key,
    );
    // A key where the certificate should be.
    start_fails_naming(
        &dir,
        &format!("tls_certificate=\"{key}\"\ntls_private_key=\"{key}\""),
        &key,
    );
    // A CA list that is not there.
    let missing_ca = p(&dir.join("no-such-ca.pem"));
    start_fails_naming(&dir, &format!("tls_ca_list=\"{missing_ca}\""), &missing_ca);
}

#[test]
fn the_self_signed_certificate_is_made_once_under_data_dir() {
    require_tools();
    let dir = temp_dir("tls-selfsigned");
    let crt = dir.join("data/ser-selfsigned.crt");
    let key = dir.join("data/ser-selfsigned.key");
    let text = script(&dir, "");
    let first = {
        let ser = Ser::start("tls-selfsigned", &text, 0, 1, "auto");
        assert!(crt.exists() && key.exists(), "{}", ser.log_text());
        assert!(
            ser.log_text()
                .contains(&format!("self-signed certificate {}", crt.display())),
            "{}",
            ser.log_text()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is private");
        let mut c = tls_ok(&ser, &[]);
        assert_eq!(
            c.info["cert_sha256"],
            fingerprint(&crt),
            "served: the file's"
        );
        options_over_tls(&mut c, &ser, "tls-selfsigned-1");
        (
            std::fs::read(&crt).unwrap(),
            std::fs::read(&key).unwrap(),
            c.info["cert_sha256"].clone(),
        )
    };
    // Started again: the same pair, served again.
    let ser = Ser::start("tls-selfsigned", &text, 0, 1, "auto");
    assert_eq!(std::fs::read(&crt).unwrap(), first.0, "certificate kept");
    assert_eq!(std::fs::read(&key).unwrap(), first.1, "key kept");
    let mut c = tls_ok(&ser, &[]);
    assert_eq!(c.info["cert_sha256"], first.2);
    options_over_tls(&mut c, &ser, "tls-selfsigned-2");
}

#[test]
fn sessions_resume_over_tls_1_2_and_1_3() {
    require_tools();
    let dir = temp_dir("tls-resume");
    let ser = Ser::start("tls-resume", &script(&dir, ""), 0, 2, "auto");
    let port = ser.listen("tls").port().to_string();
    for (args, version) in [
        (&["--version", "1.3"][..], "TLSv1.3"),
        (&["--version", "1.2"][..], "TLSv1.2"),
        // TLS 1.2 without tickets: the server's session-id cache.
        (&["--version", "1.2", "--no-tickets"][..], "TLSv1.2"),
    ] {
        let mut all = vec!["resume", "--port", &port, "--time", "10"];
        all.extend_from_slice(args);
        let mut py = Py::spawn(&all);
        let info = py
            .wait(Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", ser.log_text()));
        assert_eq!(info["version"], version, "{args:?}: {info:?}");
        assert_eq!(info["first_reused"], "False", "{args:?}: {info:?}");
        assert_eq!(info["reused"], "True", "{args:?}: not resumed: {info:?}");
    }
}

/// The values of header `name` in a message head, in order.
fn header_values<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// The next message over `s` that is a reply with CSeq `cseq`.
fn reply_for(s: &mut TcpStream, cseq: &str, ser: &Ser) -> String {
    loop {
        let m = read_msg(s).unwrap_or_else(|| panic!("no reply to {cseq}\n{}", ser.log_text()));
        if status(&m).is_some() && header_values(&m, "CSeq") == [cseq] {
            return m;
        }
    }
}

#[test]
fn a_tls_caller_calls_a_udp_callee_through_the_proxy() {
    require_tools();
    require_sipp();
    let dir = temp_dir("tls-invite");
    let ser = Ser::start("tls-invite", &script(&dir, ""), 0, 2, "auto");
    let tls = ser.listen("tls");
    let uas_port = free_port();
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 1, &dir);
    let mut c = tls_ok(&ser, &[]);
    let lp = c.port();
    let ruri = format!("sip:service@{callee}");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 9 RTP/AVP 0\r\n";
    let common = |branch: &str| {
        format!(
            "Via: SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bK-{branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:caller@127.0.0.1>;tag=tls-caller\r\nCall-ID: tls-invite-1\r\n"
        )
    };
    let invite = format!(
        "INVITE {ruri} SIP/2.0\r\n{}To: <{ruri}>\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:caller@127.0.0.1:{lp};transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        common("tls-inv"),
        sdp.len()
    );
    c.s.write_all(invite.as_bytes()).unwrap();
    let mut codes = Vec::new();
    let ok = loop {
        let m = reply_for(&mut c.s, "1 INVITE", &ser);
        codes.push(status(&m).unwrap());
        if status(&m) >= Some(200) {
            break m;
        }
    };
    assert_eq!(status(&ok), Some(200), "{codes:?}\n{ok}");
    assert!(codes.contains(&180), "{codes:?}");
    // Only the caller's Via is left; the callee copied ser's Record-Route, which names ser's
    // TLS socket and says TLS: the caller's later requests must come back over TLS (a URI
    // without the parameter resolves to UDP, and nothing listens on UDP at the TLS port).
    assert_eq!(
        header_values(&ok, "Via"),
        [format!("SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bK-tls-inv")],
        "{ok}"
    );
    // Two of ser's (the request changed transport, RFC 3261 16.6 step 4 and Kamailio's
    // double Record-Route): the top one names the UDP socket the callee reaches ser at,
    // the next the TLS socket the caller does.
    let rr: Vec<String> = header_values(&ok, "Record-Route")
        .iter()
        .flat_map(|v| v.split(", "))
        .map(str::to_string)
        .collect();
    assert_eq!(rr.len(), 2, "{ok}");
    assert_eq!(
        rr[1],
        format!("<sip:{tls};transport=tls;r2=on;lr>"),
        "ser's Record-Route for the caller's side"
    );
    assert!(
        rr[0].starts_with(&format!("<sip:{};", ser.addr())) && !rr[0].contains("transport="),
        "ser's Record-Route for the callee's side: {}",
        rr[0]
    );
    // The caller's route set: the Record-Route in reverse (RFC 3261 12.1.2).
    let route = format!("{}, {}", rr[1], rr[0]);
    let to = header_values(&ok, "To")[0].to_string();
    assert!(to.contains("tag="), "{ok}");
    let contact = header_values(&ok, "Contact")[0];
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    // ACK and BYE along the route set, over the same connection.
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {target} SIP/2.0\r\n{}Route: {}\r\nTo: {to}\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            common(branch),
            route
        )
    };
    c.s.write_all(in_dialog("ACK", 1, "tls-ack").as_bytes())
        .unwrap();
    c.s.write_all(in_dialog("BYE", 2, "tls-bye").as_bytes())
        .unwrap();
    let bye_ok = reply_for(&mut c.s, "2 BYE", &ser);
    assert_eq!(status(&bye_ok), Some(200), "{bye_ok}");
    let (u_ok, u_log) = uas.finish(Duration::from_secs(15));
    assert!(u_ok, "UDP callee:\n{u_log}\n{}", ser.log_text());
}

/// A MESSAGE from a UDP peer to `ruri` through ser: the final reply and how long it took.
fn message_through(ser: &Ser, ruri: &str, call_id: &str) -> (String, Duration) {
    let peer = Peer::new();
    let req = request("MESSAGE", ruri, peer.port(), call_id, "");
    let t0 = Instant::now();
    peer.send(ser.addr(), req.as_bytes());
    let deadline = t0 + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(r) = peer.recv_timeout(200) {
            if status(&r) >= Some(200) {
                return (r, t0.elapsed());
            }
        }
    }
    panic!("no final reply to {call_id}\n{}", ser.log_text());
}

/// A tls-peer.py server with `cert`/`key`, and its port.
fn tls_server(cert: &Path, key: &Path) -> (Py, u16) {
    let (cert, key) = (p(cert), p(key));
    let mut py = Py::spawn(&["server", "--cert", &cert, "--key", &key, "--time", "30"]);
    let info = py
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("TLS server: {e}"));
    let port = info["port"].parse().expect("port");
    (py, port)
}

#[test]
fn outgoing_tls_without_verification() {
    require_tools();
    let dir = temp_dir("tls-out");
    let pki = Pki::make(&dir);
    let (py, port) = tls_server(&pki.rogue, &pki.rogue_key);
    let ser = Ser::start("tls-out", &script(&dir, "tls_verify=no"), 0, 2, "auto");
    let ruri = format!("sip:x@127.0.0.1:{port};transport=tls");
    for i in 0..3 {
        let (r, _) = message_through(&ser, &ruri, &format!("tls-out-{i}"));
        assert_eq!(status(&r), Some(200), "{r}\n{}", py.text());
        assert!(r.contains("tag=py-tls"), "the server's answer: {r}");
    }
    let out = py.text();
    let requests = out
        .lines()
        .filter(|l| *l == format!("request=MESSAGE {ruri} SIP/2.0"))
        .count();
    assert_eq!(requests, 3, "{out}");
    // One connection carried them all (the alias of the first is reused).
    assert_eq!(
        out.lines().filter(|l| l.starts_with("handshake=")).count(),
        1,
        "{out}"
    );
}

#[test]
fn outgoing_tls_verification() {
    require_tools();
    let dir = temp_dir("tls-verify");
    let pki = Pki::make(&dir);
    let (good, good_port) = tls_server(&pki.server, &pki.server_key);
    let (rogue, rogue_port) = tls_server(&pki.rogue, &pki.rogue_key);
    // Verified against the CA list: the CA's server passes, the self-signed one fails the
    // branch at once (fr_timer is 10 s).
    let extra = format!("tls_verify=yes\ntls_ca_list=\"{}\"", p(&pki.ca));
    let ser = Ser::start("tls-verify", &script(&dir, &extra), 0, 1, "auto");
    let (r, _) = message_through(
        &ser,
        &format!("sip:x@127.0.0.1:{good_port};transport=tls"),
        "tls-verify-good",
    );
    assert_eq!(status(&r), Some(200), "{r}\n{}", good.text());
    let (r, took) = message_through(
        &ser,
        &format!("sip:x@127.0.0.1:{rogue_port};transport=tls"),
        "tls-verify-rogue",
    );
    let code = status(&r).unwrap_or(0);
    assert!((500..600).contains(&code), "{r}");
    assert!(
        took < Duration::from_secs(3),
        "failed after {took:?}, not at once"
    );
    assert!(!rogue.text().contains("request="), "{}", rogue.text());
    drop(ser);
    // Verification on and no CA list: the CA's server is unknown too.
    let ser = Ser::start(
        "tls-verify-nocas",
        &script(&dir, "tls_verify=yes"),
        0,
        1,
        "auto",
    );
    let (r, took) = message_through(
        &ser,
        &format!("sip:x@127.0.0.1:{good_port};transport=tls"),
        "tls-verify-nocas",
    );
    let code = status(&r).unwrap_or(0);
    assert!((500..600).contains(&code), "{r}");
    assert!(
        took < Duration::from_secs(3),
        "failed after {took:?}, not at once"
    );
    udp_options_ok(&ser, "tls-verify-udp");
}
