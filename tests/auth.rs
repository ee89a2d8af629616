//! Digest authentication, groups and serctl's account commands against real processes on
//! loopback (SQLite databases in temporary directories; MariaDB is tests/mariadb's).
//!
//! The digest responses of the raw-UDP tests are computed here with the md-5 crate directly
//! (RFC 2617 3.2.2), not with the server's code; sipsak is the independent client.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use md5::{Digest, Md5};

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A scratch directory with its own database.
struct Env {
    dir: TempDir,
    url: String,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = temp_dir(&format!("auth-{tag}"));
        let _ = std::fs::remove_file(dir.join("ser.db"));
        let url = format!("sqlite://{}", dir.join("ser.db").display());
        Env { dir, url }
    }

    /// serctl with this database, realm 127.0.0.1 and no server on the FIFO.
    fn serctl(&self, args: &[&str]) -> (bool, String) {
        self.serctl_env(args, &[("SIP_DOMAIN", "127.0.0.1")])
    }

    fn serctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let mut cmd = Command::new(SERCTL);
        cmd.args(args)
            .env("DB_URL", &self.url)
            .env("SER_FIFO", self.dir.join("no_fifo"))
            .env("SERCTL_TIMEOUT", "2")
            .env_remove("SIP_DOMAIN")
            .env_remove("PW")
            .current_dir(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_bounded(&mut cmd, Duration::from_secs(20))
    }

    /// The same on a database of the shared MariaDB server (tables from `serctl db init`).
    fn mariadb(tag: &str) -> Env {
        let dir = temp_dir(&format!("auth-{tag}"));
        let url = mariadb::shared().database(&format!("auth_{tag}"));
        Env { dir, url }
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.serctl(args);
        assert!(ok, "serctl {args:?} failed:\n{out}");
        out
    }

    fn start(&self, tag: &str, script: &str) -> Ser {
        Ser::start_4digit(tag, script, 1, "auto")
    }
}

/// A request from `peer` with From `from_user` and the given extra header lines.
fn req(
    method: &str,
    ruri: &str,
    to: &str,
    from_user: &str,
    peer: &Peer,
    n: u32,
    extra: &str,
) -> String {
    let port = peer.port();
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-auth{n}-{port}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@127.0.0.1>;tag=f{n}\r\n\
         To: <{to}>\r\n\
         Call-ID: auth-{n}-{port}@127.0.0.1\r\n\
         CSeq: {n} {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// The value of `name="..."` (or `name=token`) in a challenge line of `reply`.
fn param(reply: &str, header: &str, name: &str) -> Option<String> {
    let line = reply.split("\r\n").find(|l| {
        l.to_ascii_lowercase()
            .starts_with(&header.to_ascii_lowercase())
    })?;
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?.to_string(),
        None => rest.split([',', ' ']).next()?.to_string(),
    })
}

struct Cred<'a> {
    header: &'a str,
    user: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a str,
    method: &'a str,
    uri: &'a str,
    qop: bool,
}

/// An Authorization line (RFC 2617 3.2.2, computed independently of the server).
fn credentials(c: &Cred<'_>) -> String {
    let ha1 = md5_hex(&format!("{}:{}:{}", c.user, c.realm, c.password));
    let ha2 = md5_hex(&format!("{}:{}", c.method, c.uri));
    if c.qop {
        let resp = md5_hex(&format!("{ha1}:{}:00000001:0a4f113b:auth:{ha2}", c.nonce));
        format!(
            "{}: Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"{resp}\", algorithm=MD5\r\n",
            c.header, c.user, c.realm, c.nonce, c.uri
        )
    } else {
        let resp = md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce));
        format!(
            "{}: Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{resp}\"\r\n",
            c.header, c.user, c.realm, c.nonce, c.uri
        )
    }
}

fn exchange(peer: &Peer, ser: &Ser, msg: &str) -> String {
    peer.send(ser.addr(), msg.as_bytes());
    match peer.recv() {
        Some(r) => r,
        None => panic!("no reply to:\n{msg}\nlog:\n{}", ser.log_text()),
    }
}

const WWW_SCRIPT: &str = r#"
loadmodule "sl.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "DBURL")
modparam("auth", "secret", "alsdkhglaksdhfkloiwr")
modparam("auth", "nonce_expire", 1)
route{
    if (method=="REGISTER") {
        if (!www_authorize("127.0.0.1", "subscriber")) {
            www_challenge("127.0.0.1", "1");
            break;
        };
        if (!check_to()) { sl_send_reply("403", "Not Yours"); break; };
        sl_send_reply("200", "OK");
        break;
    };
    if (!proxy_authorize("", "subscriber")) {
        proxy_challenge("", "0");
        break;
    };
    sl_send_reply("200", "Authenticated");
}
"#;

#[test]
fn serctl_account_commands() {
    let env = Env::new("serctl");
    assert!(env
        .must(&["db", "init"])
        .starts_with("tables created in sqlite://"));
    let (ok, out) = env.serctl_env(&["add", "joe", "pw", "joe@x"], &[]);
    assert!(!ok && out.contains("SIP_DOMAIN"), "{out}");
    assert_eq!(env.must(&["add", "joe", "pw", "joe@x"]), "new user added\n");
    let (ok, out) = env.serctl(&["add", "joe", "pw", "joe@x"]);
    assert!(!ok && out.contains("user already exists"), "{out}");
    assert_eq!(
        env.must(&["passwd", "joe", "secret"]),
        "password change succeeded\n"
    );
    let (ok, out) = env.serctl(&["passwd", "nobody", "x"]);
    assert!(!ok && out.contains("non-existent user"), "{out}");

    // The seeds' table after acl grant.
    let out = env.must(&["acl", "grant", "joe", "int"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], "+------+-----+---------------------+");
    assert_eq!(lines[1], "| user | grp | last_modified       |");
    assert!(lines[3].starts_with("| joe  | int | 20"), "{out}");
    env.must(&["acl", "grant", "joe", "ld"]);
    assert!(env.must(&["acl", "show", "joe"]).contains("| joe  | ld  |"));
    let out = env.must(&["acl", "revoke", "joe", "ld"]);
    assert!(!out.contains("| ld"), "{out}");
    assert!(out.contains("| int"), "{out}");

    // Aliases: no server answers on the FIFO, so the database.
    assert_eq!(env.must(&["alias", "add", "boss", "sip:joe@127.0.0.1"]), "");
    assert!(env
        .must(&["alias", "show", "boss"])
        .contains("| boss  | sip:joe@127.0.0.1 |"));
    assert_eq!(env.must(&["alias", "rm", "boss"]), "");
    let (ok, _) = env.serctl(&["alias", "show", "boss"]);
    assert!(!ok);

    // showdb: the location table's header (no contacts flushed yet).
    let out = env.must(&["showdb"]);
    assert!(out.contains("| username | domain | contact |"), "{out}");

    assert_eq!(env.must(&["rm", "joe"]), "user removed\n");
    let (ok, out) = env.serctl(&["rm", "joe"]);
    assert!(!ok && out.contains("non-existent user"), "{out}");
    assert!(!env.must(&["acl", "show", "joe"]).contains("joe"));
    let (ok, _) = env.serctl(&["add", "only-two-args", "x"]);
    assert!(!ok);
}

#[test]
fn sipsak_registers_and_calls_with_digest() {
    digest_with_sipsak(&Env::new("sipsak"));
}

/// The same against a real MariaDB: `serctl db init` and `add` there, ser's auth_db reads it.
#[test]
fn sipsak_registers_and_calls_with_digest_on_mariadb() {
    let env = Env::mariadb("sipsak");
    env.must(&["db", "init"]);
    digest_with_sipsak(&env);
    let shown = env.must(&["acl", "grant", "alice", "int"]);
    assert!(shown.contains("alice"), "{shown}");
    assert!(env.must(&["acl", "show", "alice"]).contains("int"));
}

fn digest_with_sipsak(env: &Env) {
    assert!(
        have("sipsak"),
        "sipsak is required; scripts/test.sh installs it"
    );
    env.must(&["add", "alice", "wonderland", "alice@x"]);
    // sipsak's challenge and answer must not meet the 1 s nonce_expire of the stale test
    // on a loaded machine: a long one here.
    let script = WWW_SCRIPT.replace("DBURL", &env.url).replace(
        r#"modparam("auth", "nonce_expire", 1)"#,
        r#"modparam("auth", "nonce_expire", 60)"#,
    );
    let ser = env.start("auth-sipsak", &script);
    let target = format!("sip:alice@127.0.0.1:{}", ser.port);
    let sipsak =
        |args: &[&str]| run_bounded(Command::new("sipsak").args(args), Duration::from_secs(15));
    // REGISTER: 401 with qop=auth, then 200.
    let (ok, out) = sipsak(&[
        "-U",
        "-s",
        &target,
        "-u",
        "alice",
        "-a",
        "wonderland",
        "-vvv",
    ]);
    assert!(ok, "register failed:\n{out}\nlog:\n{}", ser.log_text());
    assert!(out.contains("qop=\"auth\""), "{out}");
    // OPTIONS: 407 without qop, then 200.
    let (ok, out) = sipsak(&["-s", &target, "-u", "alice", "-a", "wonderland", "-vvv"]);
    assert!(ok, "options failed:\n{out}\nlog:\n{}", ser.log_text());
    assert!(out.contains("407"), "{out}");
    assert!(out.contains("200 Authenticated"), "{out}");
    // A wrong password: challenged again, and sipsak gives up (it answers one challenge).
    let (ok, out) = sipsak(&["-U", "-s", &target, "-u", "alice", "-a", "queen", "-vvv"]);
    assert!(!ok, "{out}");
    assert!(out.matches("401 Unauthorized").count() >= 2, "{out}");
    // A user nobody added.
    let (ok, _) = sipsak(&["-s", &target, "-u", "mallory", "-a", "x"]);
    assert!(!ok);
}

#[test]
fn wrong_realm_stale_nonce_and_malformed_credentials() {
    let env = Env::new("raw");
    env.must(&["add", "bob", "pw", "bob@x"]);
    let ser = env.start("auth-raw", &WWW_SCRIPT.replace("DBURL", &env.url));
    let peer = Peer::new();
    let ruri = "sip:127.0.0.1";
    let to = "sip:bob@127.0.0.1";
    let r = exchange(&peer, &ser, &req("REGISTER", ruri, to, "bob", &peer, 1, ""));
    assert_eq!(status(&r), Some(401), "{r}");
    assert_eq!(
        param(&r, "WWW-Authenticate", "realm").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        param(&r, "WWW-Authenticate", "qop").as_deref(),
        Some("auth")
    );
    assert_eq!(
        param(&r, "WWW-Authenticate", "algorithm").as_deref(),
        Some("MD5")
    );
    assert!(!r.contains("stale"), "{r}");
    let nonce = param(&r, "WWW-Authenticate", "nonce").expect("nonce");
    let cred = |realm: &str, password: &str, nonce: &str, qop: bool| {
        credentials(&Cred {
            header: "Authorization",
            user: "bob",
            realm,
            password,
            nonce,
            method: "REGISTER",
            uri: ruri,
            qop,
        })
    };
    // Wrong realm: not credentials for us, so a fresh challenge.
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            to,
            "bob",
            &peer,
            2,
            &cred("elsewhere", "pw", &nonce, true),
        ),
    );
    assert_eq!(status(&r), Some(401), "{r}");
    // Wrong password.
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            to,
            "bob",
            &peer,
            3,
            &cred("127.0.0.1", "nope", &nonce, true),
        ),
    );
    assert_eq!(status(&r), Some(401), "{r}");
    assert!(!r.contains("stale"), "{r}");
    // Right, with and without qop; check_to holds (To is bob).
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            to,
            "bob",
            &peer,
            4,
            &cred("127.0.0.1", "pw", &nonce, true),
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}\n{}", ser.log_text());
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            to,
            "bob",
            &peer,
            5,
            &cred("127.0.0.1", "pw", &nonce, false),
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    // check_to: bob's credentials registering somebody else.
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            "sip:carol@127.0.0.1",
            "bob",
            &peer,
            6,
            &cred("127.0.0.1", "pw", &nonce, true),
        ),
    );
    assert_eq!(status(&r), Some(403), "{r}");
    // A forged nonce: challenged, not stale.
    let forged = format!("{}{}", &nonce[..40], "00000000");
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            to,
            "bob",
            &peer,
            7,
            &cred("127.0.0.1", "pw", &forged, true),
        ),
    );
    assert_eq!(status(&r), Some(401), "{r}");
    assert!(!r.contains("stale"), "{r}");
    // nonce_expire is 1 s: after 2 s the same nonce is stale.
    std::thread::sleep(Duration::from_millis(2100));
    let r = exchange(
        &peer,
        &ser,
        &req(
            "REGISTER",
            ruri,
            to,
            "bob",
            &peer,
            8,
            &cred("127.0.0.1", "pw", &nonce, true),
        ),
    );
    assert_eq!(status(&r), Some(401), "{r}");
    assert_eq!(
        param(&r, "WWW-Authenticate", "stale").as_deref(),
        Some("true"),
        "{r}"
    );
    assert_ne!(
        param(&r, "WWW-Authenticate", "nonce").as_deref(),
        Some(nonce.as_str())
    );

    // Malformed credentials: 400 or a challenge, never silence or a crash.
    let huge = "x".repeat(3000);
    let bad = [
        String::from("Authorization: Digest\r\n"),
        String::from("Authorization: Digest username=\"bob\"\r\n"),
        String::from("Authorization: Digest username=\"bob\", realm=\"127.0.0.1\"\r\n"),
        format!("Authorization: Digest username=\"bob\", realm=\"127.0.0.1\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\"\r\n"),
        String::from("Authorization: Digest username=\"bob, realm=\"127.0.0.1\"\r\n"),
        String::from("Authorization: Digest username=bob realm=127.0.0.1\r\n"),
        String::from("Authorization: Digest ,,,\r\n"),
        String::from("Authorization: Digest username=\"bob\", realm=\"127.0.0.1\", nonce=\"\", uri=\"\", response=\"\"\r\n"),
        format!("Authorization: Digest username=\"bob\", realm=\"127.0.0.1\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"x\", qop=auth\r\n"),
        format!("Authorization: Digest username=\"bob\", realm=\"127.0.0.1\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"x\", qop=auth-int, nc=1, cnonce=\"c\"\r\n"),
        format!("Authorization: Digest username=\"{huge}\", realm=\"127.0.0.1\", nonce=\"{huge}\", uri=\"{huge}\", response=\"{huge}\"\r\n"),
        String::from("Authorization: Basic Ym9iOnB3\r\n"),
        String::from("Authorization: Digest realm=\"127.0.0.1\", username=\"\\\"\"\r\n"),
        format!("Authorization: Digest username=\"bob\", realm=\"127.0.0.1\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"x\", algorithm=SHA-256\r\n"),
    ];
    for (i, line) in bad.iter().enumerate() {
        let n = 100 + i as u32;
        peer.send(
            ser.addr(),
            req("REGISTER", ruri, to, "bob", &peer, n, line).as_bytes(),
        );
        let r = peer.recv().unwrap_or_default();
        let code = status(&r);
        assert!(
            matches!(code, Some(400) | Some(401)),
            "{line:.200}: {r}\n{}",
            ser.log_text()
        );
    }
    // Still serving.
    let r = exchange(
        &peer,
        &ser,
        &req("OPTIONS", "sip:bob@127.0.0.1", to, "bob", &peer, 200, ""),
    );
    assert_eq!(status(&r), Some(407), "{r}");
    assert!(
        r.contains("Proxy-Authenticate: Digest realm=\"127.0.0.1\""),
        "{r}"
    );
    assert!(!r.contains("qop"), "{r}");
}

#[test]
fn servers_sharing_a_secret_accept_each_others_nonces() {
    let env = Env::new("pair");
    env.must(&["add", "bob", "pw", "bob@x"]);
    let script = WWW_SCRIPT
        .replace("DBURL", &env.url)
        .replace("modparam(\"auth\", \"nonce_expire\", 1)", "");
    let a = env.start("auth-pair-a", &script);
    let b = env.start("auth-pair-b", &script);
    let c = env.start(
        "auth-pair-c",
        &script.replace("alsdkhglaksdhfkloiwr", "another secret"),
    );
    let peer = Peer::new();
    let to = "sip:bob@127.0.0.1";
    let r = exchange(&peer, &a, &req("OPTIONS", to, to, "bob", &peer, 1, ""));
    assert_eq!(status(&r), Some(407), "{r}");
    let nonce = param(&r, "Proxy-Authenticate", "nonce").expect("nonce");
    let line = credentials(&Cred {
        header: "Proxy-Authorization",
        user: "bob",
        realm: "127.0.0.1",
        password: "pw",
        nonce: &nonce,
        method: "OPTIONS",
        uri: to,
        qop: false,
    });
    let r = exchange(&peer, &b, &req("OPTIONS", to, to, "bob", &peer, 2, &line));
    assert_eq!(
        status(&r),
        Some(200),
        "B refused A's nonce: {r}\n{}",
        b.log_text()
    );
    let r = exchange(&peer, &a, &req("OPTIONS", to, to, "bob", &peer, 3, &line));
    assert_eq!(status(&r), Some(200), "{r}");
    let r = exchange(&peer, &c, &req("OPTIONS", to, to, "bob", &peer, 4, &line));
    assert_eq!(status(&r), Some(407), "another secret accepted it: {r}");
    assert!(!r.contains("stale"), "{r}");
}

#[test]
fn group_membership_from_every_source() {
    let env = Env::new("group");
    env.must(&["add", "bob", "pw", "bob@x"]);
    env.must(&["add", "eve", "pw", "eve@x"]);
    for u in ["bob", "ruser", "tuser", "fuser"] {
        env.must(&["acl", "grant", u, "g"]);
    }
    let script = r#"
loadmodule "sl.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
loadmodule "group.so"
modparam("auth_db", "db_url", "DBURL")
modparam("group", "db_url", "DBURL")
modparam("auth", "secret", "s")
route{
    if (uri=~"^sip:ruser@" | uri=~"^sip:rnone@") {
        if (is_user_in("Request-URI", "g")) { sl_send_reply("200", "member"); } else { sl_send_reply("403", "no"); };
        break;
    };
    if (uri=~"^sip:to@") {
        if (is_user_in("To", "g")) { sl_send_reply("200", "member"); } else { sl_send_reply("403", "no"); };
        break;
    };
    if (uri=~"^sip:from@") {
        if (is_user_in("From", "g")) { sl_send_reply("200", "member"); } else { sl_send_reply("403", "no"); };
        break;
    };
    if (!proxy_authorize("127.0.0.1", "subscriber")) {
        proxy_challenge("127.0.0.1", "0");
        break;
    };
    if (!check_from()) { sl_send_reply("403", "From is not you"); break; };
    if (!is_in_group("g")) { sl_send_reply("403", "not in g"); break; };
    if (!is_user_in("Credentials", "g")) { sl_send_reply("403", "credentials not in g"); break; };
    if (!is_user("bob")) { sl_send_reply("403", "not bob"); break; };
    sl_send_reply("200", "bob in g");
}
"#
    .replace("DBURL", &env.url);
    let ser = env.start("auth-group", &script);
    let peer = Peer::new();
    let n = std::cell::Cell::new(0);
    let send = |ruri: &str, to: &str, from: &str, extra: &str| {
        n.set(n.get() + 1);
        exchange(
            &peer,
            &ser,
            &req("OPTIONS", ruri, to, from, &peer, n.get(), extra),
        )
    };
    let ask = |ruri: &str, to: &str, from: &str, extra: &str| {
        status(&send(ruri, to, from, extra)).unwrap_or(0)
    };
    let anyone = "sip:x@127.0.0.1";
    assert_eq!(ask("sip:ruser@127.0.0.1", anyone, "x", ""), 200);
    assert_eq!(ask("sip:rnone@127.0.0.1", anyone, "x", ""), 403);
    assert_eq!(ask("sip:to@127.0.0.1", "sip:tuser@127.0.0.1", "x", ""), 200);
    assert_eq!(ask("sip:to@127.0.0.1", "sip:fuser@127.0.0.1", "x", ""), 200);
    assert_eq!(
        ask("sip:to@127.0.0.1", "sip:nobody@127.0.0.1", "x", ""),
        403
    );
    assert_eq!(ask("sip:from@127.0.0.1", anyone, "fuser", ""), 200);
    assert_eq!(ask("sip:from@127.0.0.1", anyone, "eve", ""), 403);

    let uri = "sip:svc@127.0.0.1";
    assert_eq!(ask(uri, uri, "bob", ""), 407);
    let nonce = param(&send(uri, uri, "bob", ""), "Proxy-Authenticate", "nonce").expect("nonce");
    let line = |user: &str| {
        credentials(&Cred {
            header: "Proxy-Authorization",
            user,
            realm: "127.0.0.1",
            password: "pw",
            nonce: &nonce,
            method: "OPTIONS",
            uri,
            qop: false,
        })
    };
    let bob = line("bob");
    let eve = line("eve");
    assert_eq!(ask(uri, uri, "bob", &bob), 200);
    assert_eq!(ask(uri, uri, "eve", &bob), 403, "check_from");
    assert_eq!(ask(uri, uri, "eve", &eve), 403, "eve is in no group");
    // After serctl acl grant, eve is in g (but is not bob).
    env.must(&["acl", "grant", "eve", "g"]);
    let r = send(uri, uri, "eve", &eve);
    assert!(r.starts_with("SIP/2.0 403 not bob"), "{r}");
}

/// The seeds' gateway-acl.cfg (auth, auth_db, group, uri) and its 0.8 form (auth alone)
/// load unchanged; the current one then runs with the database and the gateway swapped for
/// local ones (the script's mysql URL and 192.168.0.10 are the seed's).
#[test]
fn seed_gateway_acl_scripts() {
    let seeds = repo_root().join("tests/data/seeds");
    for name in ["gateway-acl.cfg", "gateway-acl-0.8.cfg"] {
        let out = Command::new(SER)
            .args(["-c", "-f"])
            .arg(seeds.join(name))
            .output()
            .expect("ser -c");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let env = Env::new("gw");
    // The subscriber's domain is the realm its HA1 was made for: "gateway" here.
    for u in ["bob", "eve"] {
        let (ok, out) = env.serctl_env(&["add", u, "pw", "x@x"], &[("SIP_DOMAIN", "gateway")]);
        assert!(ok, "{out}");
    }
    env.must(&["acl", "grant", "bob", "local"]);
    env.must(&["acl", "grant", "5551234", "free-pstn"]);
    let gw = Peer::new();
    let src = std::fs::read_to_string(seeds.join("gateway-acl.cfg")).expect("seed");
    let script = src
        .replace("mysql:ser:heslo@localhost/ser", &env.url)
        .replace(
            "rewritehostport(\"192.168.0.10:5060\")",
            &format!("rewritehostport(\"127.0.0.1:{}\")", gw.port()),
        );
    assert_ne!(script, src);
    let ser = env.start("auth-gw", &script);
    let peer = Peer::new();
    let mut n = 0;
    let mut invite = |ruri: &str, from: &str, extra: &str| {
        n += 1;
        peer.send(
            ser.addr(),
            req("INVITE", ruri, ruri, from, &peer, n, extra).as_bytes(),
        );
        n
    };
    // The next datagram at `p` that `want` accepts (tm's 100s and retransmissions skipped).
    let next = |p: &Peer, want: &dyn Fn(&str) -> bool| {
        for _ in 0..20 {
            match p.recv() {
                Some(m) if want(&m) => return m,
                Some(_) => {}
                None => break,
            }
        }
        String::new()
    };
    // A free destination: relayed without authentication.
    let n1 = invite("sip:5551234@127.0.0.1", "eve", "");
    let relayed = next(&gw, &|m| m.starts_with("INVITE sip:5551234@"));
    assert!(
        relayed.starts_with(&format!("INVITE sip:5551234@127.0.0.1:{} ", gw.port())),
        "{relayed}\n{}",
        ser.log_text()
    );
    assert!(relayed.contains(&format!("CSeq: {n1} INVITE")), "{relayed}");
    // A local call without credentials: 407 for realm "gateway".
    let ruri = "sip:0123456@127.0.0.1";
    invite(ruri, "bob", "");
    let r = next(&peer, &|m| status(m) != Some(100));
    assert_eq!(status(&r), Some(407), "{r}");
    let nonce = param(&r, "Proxy-Authenticate", "nonce").expect("nonce");
    assert_eq!(
        param(&r, "Proxy-Authenticate", "realm").as_deref(),
        Some("gateway")
    );
    let cred = |user: &str| {
        credentials(&Cred {
            header: "Proxy-Authorization",
            user,
            realm: "gateway",
            password: "pw",
            nonce: &nonce,
            method: "INVITE",
            uri: ruri,
            qop: false,
        })
    };
    // eve is not in "local".
    invite(ruri, "eve", &cred("eve"));
    let r = next(&peer, &|m| status(m) != Some(100));
    assert!(
        r.starts_with("SIP/2.0 403 No permission for local calls"),
        "{r}"
    );
    // bob is: relayed to the gateway.
    invite(ruri, "bob", &cred("bob"));
    let relayed = next(&gw, &|m| m.starts_with("INVITE sip:0123456@"));
    assert!(
        relayed.starts_with(&format!("INVITE sip:0123456@127.0.0.1:{} ", gw.port())),
        "{relayed}\n{}",
        ser.log_text()
    );
    assert!(
        relayed.contains("Proxy-Authorization: Digest username=\"bob\""),
        "{relayed}"
    );
}
