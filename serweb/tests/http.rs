//! serweb over plain HTTP, with no browser and no running ser: a fresh SQLite database with
//! the seeds' tables and accounts made by serctl's own functions, serweb started on a free
//! loopback port, and a raw HTTP/1.1 client over TcpStream. What it shows:
//!
//! - CSRF: a POST without the form's token, or with a wrong one, is refused (403) and changes
//!   nothing, the login form included; with the session's token it goes through;
//! - access control: pages need a login (redirect), admin pages need the admin group (403),
//!   and a user cannot edit, delete or call another user's phonebook entry (403, unchanged);
//! - login failures are limited per address (5 a minute, then 429 even with the right
//!   password);
//! - a user named `<script>alert(1)</script>` is shown escaped;
//! - a password change recomputes HA1 and HA1B, the old password stops working;
//! - cookies are HttpOnly and SameSite=Strict (and Secure over TLS: `tls_cookie_is_secure`);
//! - a non-loopback listen address without a certificate is refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERWEB: &str = env!("CARGO_BIN_EXE_serweb");

struct Serweb {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    db: std::sync::Arc<ser::db::Db>,
}

impl Drop for Serweb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) for serweb's start-up line in `log` and returns the address it names:
/// serweb listens on port 0 and says which port it got, so parallel tests never race for one.
fn listening(child: &mut Child, log: &std::path::Path) -> SocketAddr {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(at) = text.find("listening on http") {
            let rest = &text[at..];
            let addr = rest
                .split("://")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {text}"));
            return addr;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("serweb exited ({st}):\n{text}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serweb never listened:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(tag: &str, extra: &[&str]) -> Serweb {
    let dir = std::env::temp_dir().join(format!("serweb-http-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}/ser.db", dir.display());
    let db = ser::db::Db::open(&url, 0).expect("db");
    db.init_schema().expect("schema");
    ser::ctl_db::add(&db, "root", "example.org", "rootpass", "r@x").expect("add root");
    ser::ctl_db::acl_grant(&db, "root", "example.org", "admin").expect("grant");
    ser::ctl_db::add(&db, "alice", "example.org", "alicepass", "").expect("add alice");
    ser::ctl_db::add(&db, "bob", "example.org", "bobpass1", "").expect("add bob");
    let log = dir.join("serweb.log");
    let mut child = Command::new(SERWEB)
        .args(["-l", "127.0.0.1:0", "--metrics", "off"])
        .args(extra)
        .env("DB_URL", &url)
        .env("SER_FIFO", dir.join("no_fifo"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serweb starts");
    let addr = listening(&mut child, &log);
    Serweb {
        child,
        addr,
        dir,
        db,
    }
}

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// The value a `Set-Cookie` gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.header("set-cookie").iter().find_map(|c| {
            let first = c.split(';').next()?;
            let (k, v) = first.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let i = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field");
        let rest = &self.body[i + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, cookie: &str, form: &str) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
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
    let mut data = Vec::new();
    s.read_to_end(&mut data)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = String::from_utf8_lossy(&data).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Resp {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Logs in; returns the session cookie (`serweb=...`) and the session's CSRF token.
fn login(w: &Serweb, user: &str, pw: &str) -> (String, String) {
    let page = http(w.addr, "GET", "/login", "", "");
    let pre = page.cookie("serweb_login").expect("login cookie");
    let r = http(
        w.addr,
        "POST",
        "/login",
        &format!("serweb_login={pre}"),
        &format!(
            "csrf={}&user={}&domain=example.org&password={}",
            page.csrf(),
            enc(user),
            enc(pw)
        ),
    );
    assert_eq!(r.status, 303, "login of {user}: {}", r.head);
    let session = format!("serweb={}", r.cookie("serweb").expect("session cookie"));
    let csrf = http(w.addr, "GET", "/password", &session, "").csrf();
    (session, csrf)
}

fn count(w: &Serweb, sql: &str) -> i64 {
    w.db.with_conn(|c| c.query(sql, &[]))
        .unwrap()
        .first()
        .and_then(|r| r.first())
        .and_then(ser::db::Value::as_i64)
        .unwrap()
}

#[test]
fn csrf_token_required_on_every_post() {
    let w = start("csrf", &[]);
    // The login form: no token, a wrong one, a token without its cookie.
    let page = http(w.addr, "GET", "/login", "", "");
    let pre = page.cookie("serweb_login").unwrap();
    let set = page.header("set-cookie").join(" | ");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "no Secure over plain HTTP: {set}");
    let creds = "user=alice&domain=example.org&password=alicepass";
    let c = format!("serweb_login={pre}");
    assert_eq!(http(w.addr, "POST", "/login", &c, creds).status, 403);
    let wrong = format!("csrf={}&{creds}", "0".repeat(64));
    assert_eq!(http(w.addr, "POST", "/login", &c, &wrong).status, 403);
    let no_cookie = format!("csrf={pre}&{creds}");
    assert_eq!(http(w.addr, "POST", "/login", "", &no_cookie).status, 403);

    let (session, csrf) = login(&w, "alice", "alicepass");
    let entry = "fname=Bob&lname=B&sip_uri=sip%3Abob%40example.org";
    let r = http(w.addr, "POST", "/phonebook/add", &session, entry);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("security token"));
    let r = http(
        w.addr,
        "POST",
        "/phonebook/add",
        &session,
        &format!("csrf={}&{entry}", "f".repeat(64)),
    );
    assert_eq!(r.status, 403);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM phonebook"), 0);
    let r = http(
        w.addr,
        "POST",
        "/phonebook/add",
        &session,
        &format!("csrf={csrf}&{entry}"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM phonebook"), 1);
    // Logout is a POST too: without the token the session stays.
    assert_eq!(http(w.addr, "POST", "/logout", &session, "").status, 403);
    assert_eq!(http(w.addr, "GET", "/phonebook", &session, "").status, 200);
    let r = http(w.addr, "POST", "/logout", &session, &format!("csrf={csrf}"));
    assert_eq!(r.status, 303);
    assert_eq!(http(w.addr, "GET", "/phonebook", &session, "").status, 303);
}

#[test]
fn users_see_only_their_own_data_and_admin_pages_need_admin() {
    let w = start("acl", &[]);
    for p in [
        "/phones",
        "/calls",
        "/phonebook",
        "/message",
        "/admin/users",
    ] {
        let r = http(w.addr, "GET", p, "", "");
        assert_eq!(r.status, 303, "{p} without a login");
        assert_eq!(r.header("location"), ["/login"]);
    }
    let (alice, alice_csrf) = login(&w, "alice", "alicepass");
    let (bob, bob_csrf) = login(&w, "bob", "bobpass1");
    for p in ["/admin/users", "/admin/dashboard"] {
        assert_eq!(http(w.addr, "GET", p, &alice, "").status, 403, "{p}");
    }
    let r = http(
        w.addr,
        "POST",
        "/admin/users/add",
        &alice,
        &format!("csrf={alice_csrf}&user=mallory&domain=example.org&password=xxxxxxxx&admin=1"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM subscriber WHERE username = 'mallory'"
        ),
        0
    );
    // Alice's phonebook entry.
    let r = http(
        w.addr,
        "POST",
        "/phonebook/add",
        &alice,
        &format!("csrf={alice_csrf}&fname=Secret&lname=Friend&sip_uri=sip%3Afriend%40example.org"),
    );
    assert_eq!(r.status, 303);
    let id = count(&w, "SELECT id FROM phonebook WHERE username = 'alice'");
    // Bob sees none of it and cannot touch it.
    let page = http(w.addr, "GET", "/phonebook", &bob, "");
    assert!(!page.body.contains("Secret"), "bob sees alice's phonebook");
    for action in ["edit", "delete", "call"] {
        let r = http(
            w.addr,
            "POST",
            &format!("/phonebook/{id}/{action}"),
            &bob,
            &format!("csrf={bob_csrf}&fname=Pwned&lname=x&sip_uri=sip%3Ax%40y"),
        );
        assert_eq!(r.status, 403, "bob may not {action} alice's entry");
    }
    assert_eq!(
        count(&w, "SELECT COUNT(*) FROM phonebook WHERE fname = 'Secret'"),
        1
    );
    // Alice's token is not Bob's.
    let r = http(
        w.addr,
        "POST",
        &format!("/phonebook/{id}/delete"),
        &bob,
        &format!("csrf={alice_csrf}"),
    );
    assert_eq!(r.status, 403);
    let page = http(w.addr, "GET", "/phonebook", &alice, "");
    assert!(page.body.contains("Secret"));
    // The admin reaches the admin pages.
    let (root, _) = login(&w, "root", "rootpass");
    assert_eq!(http(w.addr, "GET", "/admin/users", &root, "").status, 200);
    assert_eq!(
        http(w.addr, "GET", "/admin/dashboard", &root, "").status,
        200
    );
}

#[test]
fn login_failures_are_rate_limited() {
    let w = start("rate", &[]);
    for i in 0..5 {
        let page = http(w.addr, "GET", "/login", "", "");
        let pre = page.cookie("serweb_login").unwrap();
        let r = http(
            w.addr,
            "POST",
            "/login",
            &format!("serweb_login={pre}"),
            &format!(
                "csrf={}&user=alice&domain=example.org&password=wrong{i}",
                page.csrf()
            ),
        );
        assert_eq!(r.status, 401, "failure {i}");
    }
    let page = http(w.addr, "GET", "/login", "", "");
    let pre = page.cookie("serweb_login").unwrap();
    let r = http(
        w.addr,
        "POST",
        "/login",
        &format!("serweb_login={pre}"),
        &format!(
            "csrf={}&user=alice&domain=example.org&password=alicepass",
            page.csrf()
        ),
    );
    assert_eq!(r.status, 429, "the sixth try within a minute");
    assert!(r.cookie("serweb").is_none());
}

#[test]
fn script_in_a_user_name_is_escaped_and_password_change_recomputes_ha1() {
    let w = start("xss", &[]);
    let (root, csrf) = login(&w, "root", "rootpass");
    let evil = "<script>alert(1)</script>";
    let r = http(
        w.addr,
        "POST",
        "/admin/users/add",
        &root,
        &format!(
            "csrf={csrf}&user={}&domain=example.org&password=evilpass&email={}",
            enc(evil),
            enc(evil)
        ),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let page = http(w.addr, "GET", "/admin/users", &root, "");
    assert!(
        !page.body.contains(evil),
        "unescaped script in the users page"
    );
    assert!(page
        .body
        .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;@example.org"));
    let csp = page.header("content-security-policy").join("");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    // That user logs in; their name is escaped on their own pages too.
    let (s, c) = login(&w, evil, "evilpass");
    let phones = http(w.addr, "GET", "/phones", &s, "");
    assert!(!phones.body.contains(evil));
    // Password change: HA1 and HA1B recomputed, the old password refused.
    let r = http(
        w.addr,
        "POST",
        "/password",
        &s,
        &format!("csrf={c}&current=wrongpass&new=newpass9&confirm=newpass9"),
    );
    assert_eq!(r.status, 400);
    let r = http(
        w.addr,
        "POST",
        "/password",
        &s,
        &format!("csrf={c}&current=evilpass&new=newpass9&confirm=newpass9"),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("password changed"));
    let rows =
        w.db.with_conn(|c| {
            c.query(
                "SELECT ha1, ha1b FROM subscriber WHERE username = ?",
                &[evil.into()],
            )
        })
        .unwrap();
    let ha1 = rows[0][0].text();
    let ha1b = rows[0][1].text();
    assert_eq!(
        ha1,
        ser::modules::digest::ha1(evil, "example.org", "newpass9")
    );
    assert_eq!(
        ha1b,
        ser::modules::digest::ha1(&format!("{evil}@example.org"), "example.org", "newpass9")
    );
    let page = http(w.addr, "GET", "/login", "", "");
    let pre = page.cookie("serweb_login").unwrap();
    let r = http(
        w.addr,
        "POST",
        "/login",
        &format!("serweb_login={pre}"),
        &format!(
            "csrf={}&user={}&domain=example.org&password=evilpass",
            page.csrf(),
            enc(evil)
        ),
    );
    assert_eq!(r.status, 401);
    login(&w, evil, "newpass9");
}

#[test]
fn non_loopback_plain_http_is_refused() {
    let out = Command::new(SERWEB)
        .args([
            "-l",
            "0.0.0.0:0",
            "--metrics",
            "off",
            "--db",
            "sqlite:///nonexistent/x.db",
        ])
        .output()
        .expect("serweb runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
}

#[test]
fn tls_cookie_is_secure() {
    let have = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
            || Command::new(c)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !have("openssl") || !have("curl") {
        eprintln!("SKIP: openssl and curl are needed for the TLS test");
        return;
    }
    let dir = std::env::temp_dir().join(format!("serweb-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl made no certificate");
    let w = start(
        "tls",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let out = Command::new("curl")
        .args(["-sk", "-D", "-", "-o", "/dev/null"])
        .arg(format!("https://{}/login", w.addr))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let cookie = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: serweb_login")
        })
        .unwrap_or_default();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admin_manages_accounts_and_users_see_their_calls_and_stored_messages() {
    let w = start("admin", &[]);
    let (root, csrf) = login(&w, "root", "rootpass");
    let post =
        |path: &str, form: &str| http(w.addr, "POST", path, &root, &format!("csrf={csrf}&{form}"));
    // Reserved names: no account may take one.
    assert_eq!(post("/admin/reserved", "name=postmaster").status, 303);
    let r = post(
        "/admin/users/add",
        "user=postmaster&domain=example.org&password=xxxxxxxx",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("reserved name"), "{}", r.body);
    // Too short a password.
    assert_eq!(
        post(
            "/admin/users/add",
            "user=erin&domain=example.org&password=abc"
        )
        .status,
        400
    );
    // An admin made by the form.
    assert_eq!(
        post(
            "/admin/users/add",
            "user=erin&domain=example.org&password=erinpass&admin=1"
        )
        .status,
        303
    );
    let (erin, _) = login(&w, "erin", "erinpass");
    assert_eq!(http(w.addr, "GET", "/admin/users", &erin, "").status, 200);
    // Groups: revoke, grant.
    assert_eq!(
        post(
            "/admin/users/group",
            "user=erin&domain=example.org&group=admin&action=revoke"
        )
        .status,
        303
    );
    assert_eq!(
        count(&w, "SELECT COUNT(*) FROM grp WHERE username = 'erin'"),
        0
    );
    assert_eq!(
        http(w.addr, "GET", "/admin/users", &erin, "").status,
        303,
        "erin's session ended with her privilege"
    );
    assert_eq!(
        post(
            "/admin/users/group",
            "user=erin&domain=example.org&group=ld"
        )
        .status,
        303
    );
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM grp WHERE username = 'erin' AND grp = 'ld'"
        ),
        1
    );
    assert_eq!(
        post(
            "/admin/users/group",
            "user=erin&domain=example.org&group=x%27y"
        )
        .status,
        400
    );
    // Aliases (no ser answers on the FIFO: the database, as serctl does).
    assert_eq!(
        post("/admin/aliases", "alias=boss&uri=sip%3Aalice%40example.org").status,
        303
    );
    let (alice, _) = login(&w, "alice", "alicepass");
    let phones = http(w.addr, "GET", "/phones", &alice, "");
    assert!(phones.body.contains("<li>boss</li>"), "{}", phones.body);
    assert!(
        phones.body.contains("from the database"),
        "ser is not running"
    );
    assert_eq!(post("/admin/aliases", "alias=boss&action=rm").status, 303);
    assert_eq!(count(&w, "SELECT COUNT(*) FROM aliases"), 0);
    // Reset a password: the old one stops working.
    assert_eq!(
        post(
            "/admin/users/password",
            "user=alice&domain=example.org&password=alicenew"
        )
        .status,
        303
    );
    assert_eq!(
        http(w.addr, "GET", "/phones", &alice, "").status,
        303,
        "her session ended"
    );
    let (alice, _) = login(&w, "alice", "alicenew");
    // Missed calls, paged: 30 for alice, one for bob.
    for i in 0..30 {
        w.db.with_conn(|c| {
            c.exec(
                "INSERT INTO missed_calls (sip_from, sip_to, sip_status, sip_method, i_uri, \
                 sip_callid, username, time) VALUES (?, ?, '486 Busy Here', 'INVITE', ?, ?, ?, ?)",
                &[
                    format!("<sip:caller{i}@example.org>").into(),
                    "<sip:alice@example.org>".into(),
                    "sip:alice@example.org".into(),
                    format!("m{i}").into(),
                    format!("caller{i}").into(),
                    format!("2026-11-{:02} 12:00:00", 1 + i % 28).into(),
                ],
            )
        })
        .unwrap();
    }
    w.db.with_conn(|c| {
        c.exec(
            "INSERT INTO missed_calls (sip_from, sip_to, sip_status, sip_method, i_uri, \
             sip_callid, username, time) VALUES ('<sip:x@y>', '<sip:bob@example.org>', \
             '408', 'INVITE', 'sip:bob@example.org', 'b', 'x', '2026-11-02 00:00:00')",
            &[],
        )
    })
    .unwrap();
    let rows = |r: &Resp| r.body.matches("<td>INVITE</td>").count();
    let p0 = http(w.addr, "GET", "/calls?kind=missed", &alice, "");
    assert_eq!(rows(&p0), 25);
    assert!(
        p0.body.contains("page=1\">older"),
        "a link to the next page"
    );
    let p1 = http(w.addr, "GET", "/calls?kind=missed&page=1", &alice, "");
    assert_eq!(rows(&p1), 5);
    assert!(
        !p1.body.contains("sip:bob@"),
        "bob's missed call is not alice's"
    );
    let day = http(
        w.addr,
        "GET",
        "/calls?kind=missed&from=2026-11-03&to=2026-11-03",
        &alice,
        "",
    );
    assert_eq!(rows(&day), 1, "only call 2 fell on the 3rd");
    let days = http(
        w.addr,
        "GET",
        "/calls?kind=missed&from=2026-11-01&to=2026-11-02",
        &alice,
        "",
    );
    assert_eq!(rows(&days), 4, "calls 0, 1, 28 and 29");
    let peer = http(
        w.addr,
        "GET",
        "/calls?kind=missed&peer=caller17%40",
        &alice,
        "",
    );
    assert_eq!(rows(&peer), 1);
    // Stored messages (msilo's silo table): alice's only.
    w.db.with_conn(|c| {
        c.exec(
            "INSERT INTO silo (src_addr, dst_addr, r_uri, inc_time, exp_time, body) VALUES \
             ('sip:carol@example.org', 'sip:alice@example.org', 'alice', '2026-11-01 00:00:00', \
             '2026-11-04 00:00:00', 'call me <b>back</b>'), ('sip:carol@example.org', \
             'sip:bob@example.org', 'bob', '2026-11-01 00:00:00', '2026-11-04 00:00:00', 'secret for bob')",
            &[],
        )
    })
    .unwrap();
    let m = http(w.addr, "GET", "/message", &alice, "");
    assert!(
        m.body.contains("call me &lt;b&gt;back&lt;&#x2f;b&gt;"),
        "{}",
        m.body
    );
    assert!(!m.body.contains("secret for bob"));
    // Removing a user ends their sessions and their account.
    assert_eq!(
        post("/admin/users/remove", "user=alice&domain=example.org").status,
        303
    );
    assert_eq!(http(w.addr, "GET", "/phones", &alice, "").status, 303);
    assert_eq!(
        count(
            &w,
            "SELECT COUNT(*) FROM subscriber WHERE username = 'alice'"
        ),
        0
    );
    // The admin cannot remove themselves.
    assert_eq!(
        post("/admin/users/remove", "user=root&domain=example.org").status,
        400
    );
}
