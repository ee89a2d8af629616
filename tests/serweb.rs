//! serweb in a real browser (issue 21): Debian's chromium, headless, driven by playwright-core
//! from tests/browser/serweb.mjs, against serweb beside a live `ser` on loopback (SQLite
//! database, FIFO on, usrloc writing through to the database, digest authentication of
//! REGISTERs against `subscriber`, acc writing missed calls, metrics_listen on):
//!
//! - the admin (a `grp` member of `admin`, made here with serctl's functions) logs in and
//!   creates a user, and a user named `<script>alert(1)</script>`, which is shown as text
//!   (no script element, no dialog);
//! - sipsak registers a phone for the user with its password (digest): the user logs in and
//!   sees the contact live on "my phones" (transport, user agent);
//! - the admin sends the user an instant message from serweb: ser (t_uac_from) routes it to
//!   the registered contact, a sipp UAS, which answers 200 (and has the text);
//! - the user adds a phonebook entry and clicks Call: ser sends the phone (the sipp UAS) a
//!   REFER whose Refer-To is the entry;
//! - a call to the user fails (the phone is gone: tm's 408) and the user sees it under
//!   missed calls;
//! - POSTs without a CSRF token, with a wrong one, or with another session's, are refused
//!   (403); the user gets 403 on the admin pages, the admin 403 on the user's phonebook entry;
//! - the user changes the password (the old one is refused, the new one works);
//! - the dashboard draws its charts from ser's metrics;
//! - the last messages from ser's capture file list the IM, and the failed call's Call-ID
//!   shows as a ladder (INVITE, the 408).
//!
//! Screenshots of the main pages go to `$SERWEB_SCREENSHOTS` (docs/serweb in the repo was
//! made so), else to the test's temp folder. Runs in a loopback-only network namespace with a
//! PID namespace (tests/common/netns.rs), as tests/browser.rs. Needs chromium, node 20+ with
//! `npm ci` done in tests/browser, sipp, sipsak, unshare and ip; without them it says so and
//! passes, unless `SER_BROWSER_REQUIRE=1` (scripts/test.sh sets it).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::browser::{self, required, Driver, CHROMIUM, REQUIRE};
use common::mariadb;
use common::sipp::Uas;
use common::*;

const INNER: &str = "SER_SERWEB_NETNS";

/// The newest modification time under `dir`.
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut t = std::time::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let m = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).unwrap_or(t)
        };
        t = t.max(m);
    }
    t
}

/// serweb's binary, beside ser's (`cargo build --workspace --bins` makes both; built here
/// when missing or older than serweb's sources).
fn serweb_bin() -> PathBuf {
    let bin = Path::new(SER).with_file_name("serweb");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if !matches!(built, Some(b) if b >= newest(&repo_root().join("serweb"))) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
        let (ok, out) = run_bounded(
            Command::new(cargo)
                .args(["build", "-q", "-p", "serweb", "--bin", "serweb"])
                .current_dir(repo_root()),
            Duration::from_secs(900),
        );
        assert!(ok, "cannot build serweb:\n{out}");
    }
    bin
}

fn missing() -> Vec<String> {
    browser::missing(
        &["playwright-core"],
        &[
            ("sipp", "sip-tester"),
            ("sipsak", "sipsak"),
            ("unshare", "util-linux"),
            ("ip", "iproute2"),
        ],
    )
}

const SCRIPT: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
loadmodule "modules/auth/auth.so"
loadmodule "modules/auth_db/auth_db.so"
loadmodule "modules/acc/acc.so"
modparam("usrloc", "db_mode", 1)
modparam("auth", "secret", "serweb-test-secret")
modparam("auth", "nonce_expire", 60)
modparam("tm", "fr_timer", 2)
modparam("acc", "db_flag", 1)
modparam("acc", "db_missed_flag", 3)
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (method == "REGISTER") {
        if (!www_authorize("127.0.0.1", "subscriber")) {
            www_challenge("127.0.0.1", "0");
            break;
        };
        save("location");
        break;
    };
    if (uri == myself) {
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
    };
    if (method == "INVITE") { setflag(1); setflag(3); };
    if (!t_relay()) { sl_reply_error(); };
}
"#;

/// The sipp UAS behind the user's registered contact: the IM from serweb arrives there, and
/// the REFER of click-to-call (asking the phone to call the phonebook entry).
const UAS_MESSAGE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="serweb IM and click-to-call sink">
  <recv request="MESSAGE" optional="true" next="reply">
    <action>
      <ereg regexp="hello from serweb" search_in="body" check_it="true" assign_to="m"/>
    </action>
  </recv>
  <recv request="REFER">
    <action>
      <ereg regexp="Refer-To: .sip:root@127[.]0[.]0[.]1" search_in="msg" check_it="true" assign_to="r"/>
    </action>
  </recv>
  <label id="reply"/>
  <send>
    <![CDATA[

      SIP/2.0 202 Accepted
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="m,r"/>
</scenario>
"#;

/// serweb, stopped by PID when dropped.
struct Serweb {
    child: Child,
}

impl Serweb {
    /// Starts serweb on 127.0.0.1 port 0 with `env`, its stderr to `log`, and waits
    /// (bounded) until its start-up line says which port it got: parallel tests never race
    /// for a port. Returns it and that port.
    fn start(log: PathBuf, args: &[&str], env: &[(&str, String)]) -> (Serweb, u16) {
        let mut child = Command::new(serweb_bin())
            .args(["-l", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("serweb log"))
            .spawn()
            .expect("serweb starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text
                .split("listening on http://127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = port {
                return (Serweb { child }, port);
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("serweb exited ({st}):\n{text}");
            }
            assert!(Instant::now() < deadline, "serweb never listened:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serweb {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

#[test]
fn serweb_in_a_browser_beside_ser() {
    let name = "serweb_in_a_browser_beside_ser";
    if std::env::var_os(INNER).is_none() {
        let missing = missing();
        if !missing.is_empty() {
            let required = required();
            assert!(
                !required,
                "{REQUIRE} is set and the serweb browser test lacks: {}",
                missing.join(", ")
            );
            println!(
                "SKIPPED: the serweb browser test needs {} (scripts/test.sh installs them)",
                missing.join(", ")
            );
            return;
        }
        // Built outside the namespace (cargo may need the network for nothing, but time).
        serweb_bin();
    }
    if let Some(out) = netns::in_netns(INNER, name, Duration::from_secs(180), body) {
        for line in out.lines().filter(|l| l.contains("serweb-browser: ")) {
            println!("{line}");
        }
    }
}

fn body() {
    let t0 = Instant::now();
    let dir = temp_dir("serweb");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let fifo = fifo_path("serweb");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let capture = dir.join("sip.pcap");
    let script = format!(
        "data_dir=\"{}\"\nfifo=\"{}\"\nmetrics_listen=\"{metrics}\"\ncapture_file=\"{}\"\n{SCRIPT}",
        data.display(),
        fifo.display(),
        capture.display()
    );
    let ser = Ser::start_4digit("serweb", &script, 2, "auto");
    wait_fifo(&fifo, &ser);
    let domain = "127.0.0.1";
    let db_url = format!("sqlite://{}/ser.db", data.display());
    let db = ser::db::Db::open(&db_url, 0).expect("ser's database");
    ser::ctl_db::add(&db, "root", domain, "rootpass1", "root@example.org").expect("admin");
    ser::ctl_db::acl_grant(&db, "root", domain, "admin").expect("admin group");

    let web_log = dir.join("serweb.log");
    let (_serweb, web_port) = Serweb::start(
        web_log,
        &["--sample", "1"],
        &[
            ("DB_URL", db_url.clone()),
            ("SER_FIFO", fifo.display().to_string()),
            ("SER_METRICS", metrics.to_string()),
            ("SER_CAPTURE", capture.display().to_string()),
            ("SER_SIP", ser.addr().to_string()),
        ],
    );

    let uas_port = free_port();
    let uas_scen = dir.join("uas-message.xml");
    std::fs::write(&uas_scen, UAS_MESSAGE).expect("scenario");
    let uas = Uas::start(&uas_scen, uas_port, 2, dir.path());

    // A relative folder is the repository's (the driver runs in tests/browser).
    let shots = std::env::var_os("SERWEB_SCREENSHOTS")
        .map(|d| repo_root().join(d))
        .unwrap_or_else(|| dir.join("shots"));
    std::fs::create_dir_all(&shots).expect("screenshots folder");
    let config = serde_json::json!({
        "base": format!("http://127.0.0.1:{web_port}"),
        "domain": domain,
        "admin": { "user": "root", "password": "rootpass1" },
        "user": { "user": "carol", "password": "carolpass1", "newPassword": "carolpass2" },
        "serAddr": ser.addr().to_string(),
        "uasPort": uas_port,
        "shots": shots,
        "chromium": CHROMIUM,
        "stepMs": 20000,
    });
    let mut driver = Driver::start(dir.path(), "serweb.mjs", &config, "serweb-browser");
    let logs = |ser: &Ser| {
        format!(
            "--- ser's log:\n{}\n--- serweb's log:\n{}",
            ser.log_text(),
            std::fs::read_to_string(dir.join("serweb.log")).unwrap_or_default()
        )
    };
    let fail =
        |what: &str, detail: &str, ser: &Ser| -> ! { panic!("{what}:\n{detail}\n{}", logs(ser)) };
    let expect_ready = |driver: &mut Driver, what: &str, ser: &Ser| {
        let l = driver
            .next(Duration::from_secs(90))
            .unwrap_or_else(|e| fail(what, &e, ser));
        if !l.starts_with("READY ") {
            fail(what, &l, ser);
        }
    };

    // 1. The admin made the user: sipsak registers a phone for it (digest, the password the
    // admin gave), the contact being the sipp UAS.
    expect_ready(&mut driver, "the admin did not create the user", &ser);
    let (ok, out) = run_bounded(
        Command::new("sipsak")
            .args(["-U", "-C", &format!("sip:carol@127.0.0.1:{uas_port}")])
            .args(["-s", &format!("sip:carol@127.0.0.1:{}", ser.port)])
            .args(["-u", "carol", "-a", "carolpass1", "-x", "3600", "-vv"]),
        Duration::from_secs(20),
    );
    assert!(ok, "sipsak's registration failed:\n{out}\n{}", logs(&ser));
    driver.go();

    // 2. The IM went through ser to the UAS; now a call to carol fails: the UAS is gone, the
    // INVITE times out (tm's 408) and acc writes a missed call.
    expect_ready(&mut driver, "the IM step failed", &ser);
    let (uas_ok, uas_log) = uas.finish(Duration::from_secs(10));
    assert!(
        uas_ok,
        "the sipp UAS did not get serweb's IM and REFER:\n{uas_log}"
    );
    let caller = Peer::new();
    let invite = format!(
        "INVITE sip:carol@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{p};branch=z9hG4bK-serweb-missed\r\n\
         Max-Forwards: 70\r\n\
         From: \"Caller\" <sip:caller@127.0.0.1>;tag=missed1\r\n\
         To: <sip:carol@127.0.0.1:{port}>\r\n\
         Call-ID: serweb-missed-call\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@127.0.0.1:{p}>\r\n\
         Content-Length: 0\r\n\r\n",
        port = ser.port,
        p = caller.port()
    );
    caller.send(ser.addr(), invite.as_bytes());
    let reply = final_reply(&caller, Duration::from_secs(10))
        .unwrap_or_else(|| fail("no final reply to the call", "", &ser));
    assert!(
        status(&reply).is_some_and(|c| c >= 400),
        "the call did not fail:\n{reply}"
    );
    // The ACK of the negative reply (RFC 3261 17.1.1.3), so ser stops repeating it.
    let to = reply
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .unwrap_or("To: <sip:carol@127.0.0.1>");
    let ack = invite
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .lines()
        .map(|l| if l.starts_with("To:") { to } else { l })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    caller.send(ser.addr(), ack.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = db
            .with_conn(|c| c.query("SELECT COUNT(*) FROM missed_calls", &[]))
            .ok()
            .and_then(|r| r.first().and_then(|r| r.first()).and_then(|v| v.as_i64()))
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no missed_calls row\n{}",
            logs(&ser)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    driver.go();

    let last = driver
        .next(Duration::from_secs(120))
        .unwrap_or_else(|e| fail("no result from the driver", &e, &ser));
    let result: Value = last
        .strip_prefix("RESULT ")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| fail("the driver's result is not JSON", &last, &ser));
    drop(driver);
    let pretty = serde_json::to_string_pretty(&result).unwrap_or_default();
    println!("serweb-browser: all done after {:?}", t0.elapsed());
    if result["ok"] != Value::Bool(true) {
        fail("the browser steps failed", &pretty, &ser);
    }
    // What the browser showed, checked by the driver; the database agrees.
    let rows = db
        .with_conn(|c| c.query("SELECT ha1 FROM subscriber WHERE username = 'carol'", &[]))
        .expect("query");
    assert_eq!(
        rows[0][0].text(),
        ser::modules::digest::ha1("carol", domain, "carolpass2"),
        "HA1 recomputed"
    );
    assert_eq!(result["dialogs"], serde_json::json!([]), "{pretty}");
    let log = ser.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// One HTTP/1.1 exchange with serweb: (status, head, body).
fn http(port: u16, method: &str, path: &str, cookie: &str, form: &str) -> (u16, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect serweb");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        req.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form);
    s.write_all(req.as_bytes()).unwrap();
    let mut data = String::new();
    s.read_to_string(&mut data).unwrap();
    let (head, body) = data.split_once("\r\n\r\n").unwrap_or((&data, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let v = l.strip_prefix("set-cookie: ")?;
        let (k, rest) = v.split_once('=')?;
        (k == name).then(|| rest.split(';').next().unwrap_or("").to_string())
    })
}

fn csrf_field(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + 64].to_string()
}

/// serweb on MariaDB (`DB_URL=mysql://...`), the same schema ser creates there: login against
/// HA1, the call history with a peer filter holding LIKE's special characters, the
/// phonebook, an account added by the admin and a password change, all over HTTP.
#[test]
fn serweb_on_mariadb() {
    let url = mariadb::shared().database("serweb");
    let db = ser::db::Db::open(&url, 0).expect("mariadb");
    db.init_schema().expect("schema");
    ser::ctl_db::add(&db, "root", "example.org", "rootpass1", "").expect("admin");
    ser::ctl_db::acl_grant(&db, "root", "example.org", "admin").expect("group");
    for (from, to, status) in [
        (
            "<sip:bob@example.org>",
            "<sip:root@example.org>",
            "486 Busy Here",
        ),
        (
            "<sip:100%_x!@example.org>",
            "<sip:root@example.org>",
            "200 OK",
        ),
        (
            "<sip:root@example.org>",
            "<sip:carol@example.org>",
            "200 OK",
        ),
        ("<sip:bob@example.org>", "<sip:carol@example.org>", "200 OK"),
    ] {
        let user = from.trim_start_matches("<sip:").split('@').next().unwrap();
        db.with_conn(|c| {
            c.exec(
                "INSERT INTO acc (sip_from, sip_to, sip_status, sip_method, i_uri, sip_callid, \
                 username, time) VALUES (?, ?, ?, 'INVITE', ?, 'c', ?, '2026-12-01 10:00:00')",
                &[
                    from.into(),
                    to.into(),
                    status.into(),
                    to.trim_matches(['<', '>']).into(),
                    user.into(),
                ],
            )
        })
        .expect("acc row");
    }
    let dir = temp_dir("serweb-mariadb");
    let (_serweb, port) = Serweb::start(
        dir.join("serweb.log"),
        &["--metrics", "off"],
        &[
            ("DB_URL", url.clone()),
            ("SER_FIFO", String::from("/nonexistent/ser_fifo")),
        ],
    );
    let login = |user: &str, pw: &str| -> Option<(String, String)> {
        let (_, head, body) = http(port, "GET", "/login", "", "");
        let pre = set_cookie(&head, "serweb_login").expect("login cookie");
        let form = format!(
            "csrf={}&user={user}&domain=example.org&password={pw}",
            csrf_field(&body)
        );
        let (code, head, _) = http(
            port,
            "POST",
            "/login",
            &format!("serweb_login={pre}"),
            &form,
        );
        if code != 303 {
            return None;
        }
        let s = format!("serweb={}", set_cookie(&head, "serweb")?);
        let (_, _, body) = http(port, "GET", "/password", &s, "");
        Some((s, csrf_field(&body)))
    };
    assert!(login("root", "wrong").is_none());
    let (root, csrf) = login("root", "rootpass1").expect("root logs in");
    // The history: root's own three calls, not bob's call to carol.
    let (code, _, body) = http(port, "GET", "/calls?kind=all", &root, "");
    assert_eq!(code, 200);
    assert_eq!(body.matches("<tr><td>2026-12-01").count(), 3, "{body}");
    // A peer filter with %, _ and ! is taken literally.
    let (_, _, body) = http(port, "GET", "/calls?kind=all&peer=100%25_x%21", &root, "");
    assert_eq!(body.matches("<tr><td>2026-12-01").count(), 1, "{body}");
    let (_, _, body) = http(port, "GET", "/calls?kind=all&peer=%25", &root, "");
    assert_eq!(body.matches("<tr><td>2026-12-01").count(), 1, "{body}");
    // Phonebook and accounts.
    let (code, _, _) = http(
        port,
        "POST",
        "/phonebook/add",
        &root,
        &format!("csrf={csrf}&fname=Bob&lname=B&sip_uri=sip%3Abob%40example.org"),
    );
    assert_eq!(code, 303);
    let (_, _, body) = http(port, "GET", "/phonebook", &root, "");
    assert!(body.contains("sip:bob@example.org"), "{body}");
    let (code, _, body) = http(
        port,
        "POST",
        "/admin/users/add",
        &root,
        &format!("csrf={csrf}&user=dave&domain=example.org&password=davepass1&email=d%40x"),
    );
    assert_eq!(code, 303, "{body}");
    let (dave, dave_csrf) = login("dave", "davepass1").expect("dave logs in");
    let (code, _, _) = http(
        port,
        "POST",
        "/password",
        &dave,
        &format!("csrf={dave_csrf}&current=davepass1&new=davepass2&confirm=davepass2"),
    );
    assert_eq!(code, 200);
    assert!(login("dave", "davepass1").is_none());
    assert!(login("dave", "davepass2").is_some());
}
