//! SIP over WebSocket from real browsers (issue 17): Debian's chromium, headless with fake
//! media devices, driven by playwright-core from tests/browser/driver.mjs, with two pages: alice
//! on JsSIP over `ws:`, bob on SIP.js over `wss:` (a test CA's certificate, made here with
//! openssl; chromium trusts the server certificate's key by its SPKI hash,
//! `--ignore-certificate-errors-spki-list`). Against a live `ser` (registrar + record-routing
//! stateful proxy) on loopback:
//!
//! - both register; alice calls bob, bob answers, audio flows both ways (each page's
//!   `getStats()` shows inbound-rtp bytes), alice hangs up and both pages see the call end;
//! - each page sends a MESSAGE to a sipp UAS on UDP, and receives one from a sipp UAC;
//! - a sipp UAC on UDP calls each page: the INVITE arrives over the page's WebSocket (our Via
//!   `WS`/`WSS`), the page answers, sipp ACKs and hangs up along the Record-Route.
//!
//! - the media relay (issue 19): alice (JsSIP over ws: DTLS-SRTP, ICE, rtcp-mux) calls a
//!   plain RTP phone (sipp `-rtp_echo`, RTP/AVP PCMU) through ser with rtpengine (Debian's
//!   rtpengine-daemon, started in the namespace) bridging the two: the phone is offered plain
//!   RTP without ICE or DTLS on rtpengine's port, the browser is answered UDP/TLS/RTP/SAVPF
//!   with a fingerprint and ICE, the phone's echo comes back to the page (inbound-rtp packets),
//!   and the BYE deletes the call at rtpengine.
//!
//! The tests run inside a network namespace of their own with only loopback up (each re-executes
//! itself there: `unshare -n`, `-rn` when not root): chromium's WebRTC then has loopback only
//! to gather candidates on (`--allow-loopback-in-peer-connection`), so the media never leaves
//! 127.0.0.1 either. A PID namespace of its own as well: what it starts (ser, sipp, node, and
//! chromium's helper processes, which outlive their parent by moments) ends with it.
//!
//! Needs: /usr/bin/chromium, node (20 or later) with `npm ci` done in tests/browser, sipp,
//! openssl, unshare and ip (and rtpengine for the media relay test). When one is missing the test says so and passes;
//! `SER_BROWSER_REQUIRE=1` (scripts/test.sh sets it) makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::browser::{self, required, Driver, CHROMIUM, REQUIRE};
use common::sipp::Uas;
use common::*;

/// Set inside the namespace, where the test runs its body.
const INNER: &str = "SER_BROWSER_NETNS";

const SCRIPT: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("tm", "fr_timer", 5)
modparam("tm", "fr_inv_timer", 20)
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (loose_route()) { if (!t_relay()) { sl_reply_error(); }; break; };
    if (method == "REGISTER") { save("location"); break; };
    if (uri == myself) {
        if (method == "OPTIONS") { sl_send_reply("200", "OK"); break; };
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    };
    if (method == "INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); };
}
"#;

fn missing() -> Vec<String> {
    browser::missing(
        &["playwright-core", "jssip", "sip.js", "esbuild"],
        &[
            ("sipp", "sip-tester"),
            ("openssl", "openssl"),
            ("unshare", "util-linux"),
            ("ip", "iproute2"),
        ],
    )
}

/// Runs the test body in a loopback-only network namespace: outside it, re-executes this
/// test binary for `name` alone inside a fresh one (bounded by `limit`) and checks it passed.
fn in_netns(name: &str, limit: Duration, body: impl FnOnce()) {
    let Some(out) = netns::in_netns(INNER, name, limit, body) else {
        return;
    };
    // The steps' times, for whoever watches the test's duration.
    for line in out
        .lines()
        .filter_map(|l| l.find("browser: ").map(|at| &l[at..]))
    {
        println!("{line}");
    }
}

/// A test CA and a server certificate for 127.0.0.1 it signed, made with the openssl CLI.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The base64 SHA-256 of the server certificate's public key (SPKI): what chromium is
    /// told to trust (`--ignore-certificate-errors-spki-list`).
    spki: String,
}

fn make_certs(dir: &Path) -> Certs {
    use certs::openssl;
    let made = certs::make_test_ca(dir, "ser browser test CA", "serverAuth");
    openssl(
        dir,
        &[
            "x509",
            "-in",
            "server.pem",
            "-pubkey",
            "-noout",
            "-out",
            "server.pub",
        ],
    );
    openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-in",
            "server.pub",
            "-outform",
            "DER",
            "-out",
            "server.spki",
        ],
    );
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            "server.spki.sha256",
            "server.spki",
        ],
    );
    openssl(
        dir,
        &[
            "base64",
            "-A",
            "-in",
            "server.spki.sha256",
            "-out",
            "server.spki.b64",
        ],
    );
    let spki = std::fs::read_to_string(dir.join("server.spki.b64"))
        .expect("SPKI hash")
        .trim()
        .to_string();
    assert_eq!(spki.len(), 44, "a base64 SHA-256: {spki}");
    Certs {
        ca: made.ca,
        cert: made.cert,
        key: made.key,
        spki,
    }
}

/// ser's wss socket serves the test CA's certificate for 127.0.0.1: what the page's trust
/// of that key stands for.
fn check_certificate(ser: &Ser, certs: &Certs) {
    let (ok, out) = run_bounded(
        Command::new("openssl")
            .args(["s_client", "-connect", &ser.listen("wss").to_string()])
            .arg("-CAfile")
            .arg(&certs.ca)
            .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-brief"]),
        Duration::from_secs(10),
    );
    assert!(
        ok && out.contains("Verification: OK"),
        "ser's wss certificate does not verify against the test CA:\n{out}"
    );
}

/// The sipp UAS the pages send their MESSAGEs to: each must carry the page's text.
const UAS_MESSAGE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="MESSAGE sink">
  <recv request="MESSAGE" crlf="true">
    <action>
      <ereg regexp="hello sipp from (alice|bob)" search_in="body" check_it="true" assign_to="m"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:uas@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="m"/>
</scenario>
"#;

/// A sipp UAC sending a MESSAGE to each user of its injection file (field0), through ser.
const UAC_MESSAGE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="MESSAGE to a browser">
  <send retrans="500">
    <![CDATA[

      MESSAGE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Content-Type: text/plain
      Content-Length: [len]

      hello [field0] from sipp
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// A sipp UAC calling each user of its injection file through ser: its offer is what WebRTC
/// accepts (ICE credentials, a DTLS fingerprint, rtcp-mux; no candidates, so no media), the
/// page answers, sipp ACKs and hangs up along the recorded route.
const UAC_INVITE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="sipp calls a browser">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP4 127.0.0.1
      s=-
      t=0 0
      m=audio 9 UDP/TLS/RTP/SAVPF 0
      c=IN IP4 127.0.0.1
      a=mid:0
      a=ice-ufrag:sipp
      a=ice-pwd:sippsippsippsippsippsipp
      a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3F:4E:2B:7A:1D:0C:5C:9F:01:02:03:04
      a=setup:actpass
      a=rtcp-mux
      a=sendrecv
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="300"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

/// A sipp UAC run through ser: one call to each user of `users` (a sipp injection file), one
/// at a time; (all succeeded, output and errors).
fn sipp_uac(dir: &Path, scen: &str, name: &str, users: &Path, ser_port: u16) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, scen).expect("write scenario");
    let errors = dir.join(format!("{name}.errors"));
    let (ok, out) = run_bounded(
        Command::new("sipp")
            .arg("-sf")
            .arg(&path)
            .arg(format!("127.0.0.1:{ser_port}"))
            .args(["-i", "127.0.0.1", "-inf"])
            .arg(users)
            .args(["-m", "2", "-l", "1", "-r", "10"])
            .args(["-timeout", "20", "-timeout_error", "-nostdin", "-trace_err"])
            .arg("-error_file")
            .arg(&errors),
        Duration::from_secs(30),
    );
    let errors = std::fs::read_to_string(&errors).unwrap_or_default();
    (ok, format!("{out}\n{errors}"))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

/// The calls of a page's log.
fn calls(log: &Value) -> Vec<Value> {
    log["calls"].as_array().cloned().unwrap_or_default()
}

#[test]
fn browsers_register_call_each_other_and_exchange_with_sipp() {
    let name = "browsers_register_call_each_other_and_exchange_with_sipp";
    if std::env::var_os(INNER).is_none() {
        let missing = missing();
        if !missing.is_empty() {
            assert!(
                !required(),
                "{REQUIRE} is set and the browser test lacks: {}; scripts/test.sh installs them",
                missing.join(", ")
            );
            println!(
                "SKIPPED: the browser test needs {} (scripts/test.sh installs them; \
                 {REQUIRE}=1 makes this a failure)",
                missing.join(", ")
            );
            return;
        }
    }
    in_netns(name, Duration::from_secs(120), body);
}

fn body() {
    let t0 = Instant::now();
    let dir = temp_dir("browser");
    let certs = make_certs(&dir);
    let data = temp_dir("browser-data");
    let script = format!(
        "data_dir=\"{}\"\ntls_certificate=\"{}\"\ntls_private_key=\"{}\"\n{SCRIPT}",
        data.display(),
        certs.cert.display(),
        certs.key.display()
    );
    let ser = Ser::start_with(
        "browser",
        &script,
        0,
        2,
        "auto",
        &["-l", "ws:127.0.0.1:0", "-l", "wss:127.0.0.1:0"],
    );
    check_certificate(&ser, &certs);
    let uas_port = free_port();
    let uas_scen = dir.join("uas-message.xml");
    std::fs::write(&uas_scen, UAS_MESSAGE).expect("write scenario");
    let uas = Uas::start(&uas_scen, uas_port, 2, &dir);

    let user_data = dir.join("chromium-profile");
    std::fs::create_dir_all(&user_data).expect("user data dir");
    let config = serde_json::json!({
        "ws": format!("ws://{}", ser.listen("ws")),
        "wss": format!("wss://{}", ser.listen("wss")),
        "domain": ser.addr().to_string(),
        "spki": certs.spki,
        "userDataDir": user_data,
        "uas": format!("sip:uas@127.0.0.1:{uas_port}"),
        "chromium": CHROMIUM,
        "stepMs": 15000,
    });
    let mut driver = Driver::start(&dir, "driver.mjs", &config, "browser");
    let fail = |what: &str, detail: &str, ser: &Ser| -> ! {
        panic!("{what}:\n{detail}\n--- ser's log:\n{}", ser.log_text())
    };
    let first = driver
        .next(Duration::from_secs(60))
        .unwrap_or_else(|e| fail("the browsers did not get ready", &e, &ser));
    if !first.starts_with("READY ") {
        fail("the browser steps failed", &first, &ser);
    }
    let t_pages = t0.elapsed();

    // sipp callers on UDP: a MESSAGE to each page, then an INVITE to each.
    let users = dir.join("users.csv");
    std::fs::write(&users, "SEQUENTIAL\nalice;\nbob;\n").expect("write users");
    let (msg_ok, msg_out) = sipp_uac(&dir, UAC_MESSAGE, "uac-message.xml", &users, ser.port);
    let (inv_ok, inv_out) = sipp_uac(&dir, UAC_INVITE, "uac-invite.xml", &users, ser.port);
    driver.go();
    let last = driver
        .next(Duration::from_secs(20))
        .unwrap_or_else(|e| fail("no result from the driver", &e, &ser));
    let result: Value = last
        .strip_prefix("RESULT ")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| fail("the driver's result is not JSON", &last, &ser));
    drop(driver);
    let (uas_ok, uas_log) = uas.finish(Duration::from_secs(5));
    println!(
        "browser: pages ready (registered, called, messaged) after {t_pages:?}, all done after {:?}",
        t0.elapsed()
    );
    let pretty = serde_json::to_string_pretty(&result).unwrap_or_default();
    let _ = std::fs::write(dir.join("result.json"), &pretty);
    if result["ok"] != Value::Bool(true) {
        fail("the browser steps failed", &pretty, &ser);
    }

    // alice (JsSIP, ws) called bob (SIP.js, wss); audio both ways; alice hung up.
    for who in ["alice", "bob"] {
        let rx = s(&result, &["media", who, "bytesReceived"])
            .as_u64()
            .unwrap_or(0);
        assert!(rx > 0, "{who} received no audio:\n{pretty}");
    }
    let a = calls(&result["alice"]);
    let b = calls(&result["bob"]);
    assert!(a.len() >= 2 && b.len() >= 2, "calls missing:\n{pretty}");
    assert_eq!(a[0]["direction"], "outgoing", "{pretty}");
    assert_eq!(a[0]["ended"], true, "{pretty}");
    assert_eq!(a[0]["endedBy"], "local", "{pretty}");
    assert_eq!(b[0]["direction"], "incoming", "{pretty}");
    assert_eq!(b[0]["confirmed"], true, "{pretty}");
    assert_eq!(b[0]["ended"], true, "{pretty}");
    assert_eq!(b[0]["endedBy"], "remote", "bob saw alice's BYE:\n{pretty}");
    let via = b[0]["request"]["via"].as_str().unwrap_or("");
    assert!(
        via.starts_with("SIP/2.0/WSS "),
        "INVITE to bob over wss: {via}"
    );

    // MESSAGE from each page to the sipp UAS.
    for who in ["alice", "bob"] {
        let sent = &result["sentMessages"][who];
        assert_eq!(sent["status"], 200, "{who}'s MESSAGE to sipp:\n{pretty}");
    }
    assert!(uas_ok, "the sipp UAS did not get both MESSAGEs:\n{uas_log}");

    // MESSAGE from sipp to each page, and an INVITE from sipp answered by each page.
    assert!(
        msg_ok,
        "sipp's MESSAGEs:\n{msg_out}\n{pretty}\n{}",
        ser.log_text()
    );
    assert!(
        inv_ok,
        "sipp's calls:\n{inv_out}\n{pretty}\n{}",
        ser.log_text()
    );
    for (who, log, via) in [
        ("alice", &result["alice"], "SIP/2.0/WS "),
        ("bob", &result["bob"], "SIP/2.0/WSS "),
    ] {
        let got = log["messages"].as_array().cloned().unwrap_or_default();
        assert!(
            got.iter().any(|m| m["body"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("hello {who} from sipp"))),
            "{who} did not get sipp's MESSAGE:\n{pretty}"
        );
        let call = calls(log)
            .into_iter()
            .find(|c| c["remote"].as_str().unwrap_or("").contains("sipp@"))
            .unwrap_or_else(|| panic!("{who} got no call from sipp:\n{pretty}"));
        let line = call["request"]["line"].as_str().unwrap_or("");
        assert!(
            line.starts_with("INVITE sip:") && line.contains(".invalid"),
            "{who}: the INVITE goes to her Contact's .invalid name: {line}"
        );
        let v = call["request"]["via"].as_str().unwrap_or("");
        assert!(
            v.starts_with(via),
            "{who}: our Via over her connection: {v}"
        );
        assert_eq!(
            call["request"]["recordRoutes"], 2,
            "{who}: two Record-Routes between UDP and the WebSocket:\n{pretty}"
        );
        assert_eq!(call["confirmed"], true, "{who}:\n{pretty}");
        assert_eq!(call["ended"], true, "{who}: sipp's BYE:\n{pretty}");
        assert_eq!(call["endedBy"], "remote", "{who}:\n{pretty}");
    }
    let log = ser.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// The media relay test's script: the registrar and record-routing proxy above, with
/// rtpengine bridging a WebRTC caller (DTLS-SRTP, ICE, rtcp-mux) and a plain RTP callee: the
/// offer goes to the callee as RTP/AVP without ICE or DTLS, the answer comes back to the
/// browser as UDP/TLS/RTP/SAVPF with ICE.
#[cfg(feature = "rtpengine")]
fn bridge_script(ng: std::net::SocketAddr) -> String {
    format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/textops/textops.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
loadmodule "modules/rtpengine/rtpengine.so"
modparam("usrloc", "db_mode", 0)
modparam("rtpengine", "rtpengine_sock", "udp:{ng}")
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (loose_route()) {{
        if (method == "BYE") {{ rtpengine_delete(); }};
        if (!t_relay()) {{ sl_reply_error(); }};
        break;
    }};
    if (method == "REGISTER") {{ save("location"); break; }};
    if (method == "INVITE") {{
        record_route();
        if (!rtpengine_offer("RTP/AVP ICE=remove DTLS=off rtcp-mux-demux replace-origin replace-session-connection")) {{
            sl_send_reply("503", "Media Relay Unavailable");
            break;
        }};
        t_on_reply("1");
    }};
    if (!t_relay()) {{ sl_reply_error(); }};
}}
onreply_route[1] {{
    if (search("application/sdp")) {{
        rtpengine_answer("UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require replace-origin replace-session-connection");
    }};
}}
"#
    )
}

#[cfg(feature = "rtpengine")]
#[test]
fn a_browser_calls_a_plain_rtp_phone_with_rtpengine_bridging_srtp_and_rtp() {
    let name = "a_browser_calls_a_plain_rtp_phone_with_rtpengine_bridging_srtp_and_rtp";
    if std::env::var_os(INNER).is_none() {
        let mut missing = missing();
        if !have("rtpengine") {
            missing.push(String::from("rtpengine (Debian package rtpengine-daemon)"));
        }
        if !missing.is_empty() {
            assert!(
                !required(),
                "{REQUIRE} is set and the browser test lacks: {}; scripts/test.sh installs them",
                missing.join(", ")
            );
            println!(
                "SKIPPED: the browser test needs {} (scripts/test.sh installs them; \
                 {REQUIRE}=1 makes this a failure)",
                missing.join(", ")
            );
            return;
        }
    }
    in_netns(name, Duration::from_secs(120), bridge_body);
}

#[cfg(feature = "rtpengine")]
fn bridge_body() {
    let dir = temp_dir("browser-rtpe");
    let rtpe = rtpengine::Rtpe::start(&dir);
    let data = temp_dir("browser-rtpe-data");
    let script = format!(
        "data_dir=\"{}\"\n{}",
        data.display(),
        bridge_script(rtpe.ng)
    );
    let ser = Ser::start_with(
        "browser-rtpe",
        &script,
        0,
        2,
        "auto",
        &["-l", "ws:127.0.0.1:0"],
    );
    // The plain RTP phone: sipp answering with RTP/AVP PCMU and echoing what it receives.
    let (uas_port, uas_media) = (free_port(), free_port());
    let msgs = dir.join("uas-msgs.log");
    let mut uas = Command::new("sipp")
        .arg("-sf")
        .arg(sipp::scenario(
            &dir,
            "uas-rr.xml",
            &format!("127.0.0.1:{uas_port}"),
        ))
        .args(["-i", "127.0.0.1", "-p", &uas_port.to_string()])
        .args(["-mp", &uas_media.to_string(), "-rtp_echo", "-m", "1"])
        .args(["-nostdin", "-timeout", "60", "-timeout_error"])
        .args(["-trace_msg", "-message_file"])
        .arg(&msgs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));

    let user_data = dir.join("chromium-profile");
    std::fs::create_dir_all(&user_data).expect("user data dir");
    let config = serde_json::json!({
        "mode": "bridge",
        "ws": format!("ws://{}", ser.listen("ws")),
        "domain": ser.addr().to_string(),
        "callee": format!("sip:echo@127.0.0.1:{uas_port}"),
        "userDataDir": user_data,
        "chromium": CHROMIUM,
        "stepMs": 15000,
        "holdMs": 500,
    });
    // rtpengine's count of the call's packets, taken while the call is up.
    let mut driver = Driver::start(&dir, "driver.mjs", &config, "browser");
    let last = driver.next(Duration::from_secs(90)).unwrap_or_else(|e| {
        panic!(
            "no result from the driver: {e}\n--- ser's log:\n{}\n--- rtpengine's log:\n{}",
            ser.log_text(),
            rtpe.log_text()
        )
    });
    drop(driver);
    let result: Value = last
        .strip_prefix("RESULT ")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("the driver's result is not JSON: {last}"));
    let pretty = serde_json::to_string_pretty(&result).unwrap_or_default();
    let _ = std::fs::write(dir.join("result.json"), &pretty);
    let uas_ok = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = uas.try_wait() {
                break st.success();
            }
            if Instant::now() > deadline {
                stop_child(&mut uas, Duration::ZERO);
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let uas_log = std::fs::read_to_string(&msgs).unwrap_or_default();
    assert!(
        result["ok"] == Value::Bool(true),
        "the browser steps failed:\n{pretty}\n--- ser's log:\n{}\n--- rtpengine's log:\n{}\n--- sipp:\n{uas_log}",
        ser.log_text(),
        rtpe.log_text()
    );
    // The browser got its echo back (SRTP from rtpengine, from the phone's plain RTP).
    let media = &result["media"];
    assert!(
        media["packetsReceived"].as_u64().unwrap_or(0) >= 10,
        "{pretty}"
    );
    // What each side was told: the browser rtpengine's DTLS-SRTP with ICE, the phone plain
    // RTP without either; both with rtpengine's ports.
    let browser_sdp = result["remoteSdp"].as_str().unwrap_or("");
    assert!(
        browser_sdp.contains("UDP/TLS/RTP/SAVPF")
            && browser_sdp.contains("a=fingerprint:")
            && browser_sdp.contains("a=ice-ufrag:")
            && browser_sdp.contains("a=rtcp-mux"),
        "the browser's answer:\n{browser_sdp}"
    );
    let invite = uas_log
        .split("INVITE sip:")
        .nth(1)
        .unwrap_or_else(|| panic!("no INVITE at the phone:\n{uas_log}"));
    let invite = invite.split("-----").next().unwrap_or("");
    assert!(
        invite.contains("RTP/AVP")
            && !invite.contains("SAVPF")
            && !invite.contains("a=fingerprint")
            && !invite.contains("a=ice-")
            && !invite.contains("a=candidate"),
        "the phone's offer:\n{invite}"
    );
    let port: u16 = invite
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(rtpe.in_range(port), "the phone's offer names port {port}");
    assert!(uas_ok, "the phone's call did not end well:\n{uas_log}");
    // The BYE deleted the call at rtpengine.
    assert_eq!(rtpe.calls(), Vec::<String>::new(), "{}", ser.log_text());
}
