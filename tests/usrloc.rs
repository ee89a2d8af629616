//! User location and registrar against a real `ser` on loopback: REGISTER as RFC 3261 10.3
//! says (raw UDP and sipsak), calls found by `lookup` on every shard, expiry, the db_modes
//! with SQLite (write-through survives `kill -9`, write-back is flushed on SIGTERM, two
//! servers share a database-only location), the `ul_*` FIFO commands, `serctl ul` and
//! `serctl moni`, and the seeds' scripts. Every wait is bounded; processes stop by PID.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A registrar with lookup; `head` goes first (fifo, modparams).
fn script(head: &str) -> String {
    format!(
        r#"{head}
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
route {{
    if (method=="REGISTER") {{ save("location"); break; }};
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); break; }};
    t_relay();
}}
"#
    )
}

/// A REGISTER for `user` from `peer` with the given header lines (Contact, Expires, ...).
fn register(port: u16, peer: &Peer, user: &str, call_id: &str, cseq: u32, hdrs: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{pp};branch=z9hG4bK-{call_id}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=f-{call_id}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {hdrs}Content-Length: 0\r\n\r\n",
        pp = peer.port()
    )
}

/// Sends and waits for the final reply (skipping 1xx).
fn ask(peer: &Peer, to: SocketAddr, msg: &str) -> String {
    peer.send(to, msg.as_bytes());
    loop {
        let r = peer.recv().expect("a reply");
        if status(&r).is_some_and(|c| c >= 200) {
            return r;
        }
    }
}

fn contacts(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .map(|l| l[8..].trim().to_string())
        .collect()
}

/// An INVITE for `user` from `caller`; returns what `uas` received (its request line).
fn call(ser: &Ser, caller: &Peer, uas: &Peer, user: &str, call_id: &str) -> Option<String> {
    let inv = request(
        "INVITE",
        &format!("sip:{user}@127.0.0.1:{}", ser.port),
        caller.port(),
        call_id,
        "",
    );
    caller.send(ser.addr(), inv.as_bytes());
    let got = uas.recv_timeout(3000)?;
    Some(got.lines().next().unwrap_or_default().to_string())
}

#[test]
fn register_10_3_cases_and_lookup_on_every_shard() {
    let ser = Ser::start("ul-basic", &script(""), 0, 2, "auto");
    let port = ser.port;
    let ua = Peer::new();
    let uas = Peer::new();
    let to = ser.addr();
    let c1 = format!("sip:bob@127.0.0.1:{}", uas.port());

    // A new binding: 200 listing it with its time.
    let r = ask(
        &ua,
        to,
        &register(
            port,
            &ua,
            "bob",
            "reg-a",
            1,
            &format!("Contact: <{c1}>\r\nExpires: 300\r\n"),
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    assert_eq!(contacts(&r), [format!("<{c1}>;q=1.00;expires=300")], "{r}");

    // A second contact with its own expires and q; the 200 lists both.
    let r = ask(
        &ua,
        to,
        &register(
            port,
            &ua,
            "bob",
            "reg-b",
            1,
            "Contact: <sip:bob@192.0.2.9>;q=0.5;expires=60\r\n",
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    let cs = contacts(&r);
    assert_eq!(cs.len(), 2, "{r}");
    assert!(
        cs.contains(&String::from("<sip:bob@192.0.2.9>;q=0.50;expires=60")),
        "{r}"
    );

    // A query (no Contact) lists them too.
    let r = ask(&ua, to, &register(port, &ua, "bob", "reg-q", 1, ""));
    assert_eq!(contacts(&r).len(), 2, "{r}");

    // Same Call-ID, older CSeq: refused; the binding stays.
    let r = ask(
        &ua,
        to,
        &register(
            port,
            &ua,
            "bob",
            "reg-b",
            0,
            "Contact: <sip:bob@192.0.2.9>;expires=0\r\n",
        ),
    );
    assert_eq!(status(&r), Some(400), "{r}");

    // "*" with a nonzero Expires, "*" with another Contact, a malformed Expires: 400.
    for hdrs in [
        "Contact: *\r\nExpires: 10\r\n",
        "Contact: *, <sip:x@192.0.2.1>\r\nExpires: 0\r\n",
        "Contact: <sip:bob@192.0.2.9>\r\nExpires: soon\r\n",
    ] {
        let r = ask(&ua, to, &register(port, &ua, "bob", "reg-bad", 5, hdrs));
        assert_eq!(status(&r), Some(400), "{hdrs}: {r}");
    }

    // The better contact (q 1.0) gets the calls, from either shard.
    for i in 0..6 {
        let line = call(&ser, &ua, &uas, "bob", &format!("inv-{i}")).expect("relayed INVITE");
        assert!(line.starts_with(&format!("INVITE {c1} ")), "{line}");
    }
    // Nobody registered: 404.
    let r = ask(
        &ua,
        to,
        &request(
            "INVITE",
            &format!("sip:nobody@127.0.0.1:{port}"),
            ua.port(),
            "inv-x",
            "",
        ),
    );
    assert_eq!(status(&r), Some(404), "{r}");

    // Expires 0 removes one contact; "*" removes the rest.
    let r = ask(
        &ua,
        to,
        &register(
            port,
            &ua,
            "bob",
            "reg-b",
            2,
            "Contact: <sip:bob@192.0.2.9>;expires=0\r\n",
        ),
    );
    assert_eq!(contacts(&r), [format!("<{c1}>;q=1.00;expires=300")], "{r}");
    let r = ask(
        &ua,
        to,
        &register(port, &ua, "bob", "reg-c", 1, "Contact: *\r\nExpires: 0\r\n"),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    assert!(contacts(&r).is_empty(), "{r}");
    let r = ask(
        &ua,
        to,
        &request(
            "INVITE",
            &format!("sip:bob@127.0.0.1:{port}"),
            ua.port(),
            "inv-y",
            "",
        ),
    );
    assert_eq!(status(&r), Some(404), "{r}");
}

#[test]
fn bindings_expire_and_sipsak_registers() {
    let fifo = fifo_path("exp");
    let head = format!(
        "fifo=\"{}\"\nmodparam(\"usrloc\", \"timer_interval\", 1)",
        fifo.display()
    );
    let ser = Ser::start("ul-exp", &script(&head), 0, 2, "auto");
    let port = ser.port;
    wait_fifo(&fifo, &ser);
    let ua = Peer::new();
    let r = ask(
        &ua,
        ser.addr(),
        &register(
            port,
            &ua,
            "shorty",
            "reg-e",
            1,
            "Contact: <sip:s@192.0.2.3>\r\nExpires: 1\r\n",
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    std::thread::sleep(Duration::from_millis(2500));
    let r = ask(
        &ua,
        ser.addr(),
        &request(
            "INVITE",
            &format!("sip:shorty@127.0.0.1:{port}"),
            ua.port(),
            "inv-e",
            "",
        ),
    );
    assert_eq!(status(&r), Some(404), "expired binding still found: {r}");
    let (_, stats) = serctl_joined(&fifo, &["fifo", "ul_stats"]);
    assert!(stats.contains("'location' 0 1"), "{stats}");

    if have("sipsak") {
        let (ok, out) = run_bounded(
            Command::new("sipsak").args([
                "-U",
                "-C",
                "sip:carol@127.0.0.1:15999",
                "-s",
                &format!("sip:carol@127.0.0.1:{port}"),
            ]),
            Duration::from_secs(20),
        );
        assert!(ok, "sipsak -U failed:\n{out}");
        let (code, show) = serctl_joined(&fifo, &["ul", "show", "carol"]);
        assert_eq!(code, 0, "{show}");
        assert!(
            show.contains("<sip:carol@127.0.0.1:15999>;q=1.00;expires="),
            "{show}"
        );
    }
}

#[test]
fn fifo_commands_serctl_ul_and_moni() {
    let fifo = fifo_path("cmds");
    let ser = Ser::start(
        "ul-cmds",
        &script(&format!("fifo=\"{}\"", fifo.display())),
        0,
        2,
        "auto",
    );
    wait_fifo(&fifo, &ser);
    let (code, out) = serctl_joined(&fifo, &["ul", "add", "newuser", "sip:666@gateway.foo.bar"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("200 Added to table\n('newuser','sip:666@gateway.foo.bar') to 'location'"),
        "{out}"
    );
    let (_, out) = serctl_joined(&fifo, &["ul", "show", "newuser"]);
    assert!(
        out.starts_with("<sip:666@gateway.foo.bar>;q=1.00;expires=10737418"),
        "{out}"
    );
    // The server's memory changed: a call to newuser goes to the gateway's address.
    let ua = Peer::new();
    let uas = Peer::new();
    let gw = format!("sip:666@127.0.0.1:{}", uas.port());
    let (code, out) = serctl_joined(
        &fifo,
        &["fifo", "ul_add", "location", "gwuser", &gw, "0", "0.7"],
    );
    assert_eq!(code, 0, "{out}");
    let line = call(&ser, &ua, &uas, "gwuser", "inv-gw").expect("relayed");
    assert!(line.starts_with(&format!("INVITE {gw} ")), "{line}");
    let (_, out) = serctl_joined(&fifo, &["fifo", "ul_dump"]);
    assert!(
        out.contains("AOR: 'gwuser'") && out.contains("q=0.70"),
        "{out}"
    );
    let (code, out) = serctl_joined(&fifo, &["fifo", "ul_rm_contact", "location", "gwuser", &gw]);
    assert_eq!(code, 0, "{out}");
    let (_, moni) = serctl_joined(&fifo, &["moni", "-c", "1"]);
    assert!(
        moni.contains("UsrLoc Stats\nDomain Registered Expired\n'location' 1 0"),
        "{moni}"
    );
    let (_, out) = serctl_joined(&fifo, &["ul", "rm", "newuser"]);
    assert!(
        out.contains("200 user (location, newuser) deleted"),
        "{out}"
    );
    let (code, out) = serctl_joined(&fifo, &["ul", "show", "newuser"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("404 Username newuser in table location not found"),
        "{out}"
    );
    // serctl alias through the running server prints what the seed's session shows.
    let (code, out) = serctl_joined(&fifo, &["alias", "add", "john", "sip:john.doe@foo.bar"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(
            "sip:john.doe@foo.bar\n200 Added to table\n\
             ('john','sip:john.doe@foo.bar') to 'aliases'"
        ),
        "{out}"
    );
    let (_, out) = serctl_joined(&fifo, &["alias", "show", "john"]);
    assert!(
        out.starts_with("<sip:john.doe@foo.bar>;q=1.00;expires="),
        "{out}"
    );
    let (code, out) = serctl_joined(&fifo, &["alias", "rm", "john"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("200 user (aliases, john) deleted"), "{out}");
    let (code, out) = serctl_joined(&fifo, &["fifo", "ul_flush"]);
    assert_eq!(code, 0, "{out}");
}

fn db_script(fifo: Option<&Path>, mode: u8, db: &Path) -> String {
    db_url_script(fifo, mode, &format!("sqlite://{}", db.display()))
}

fn db_url_script(fifo: Option<&Path>, mode: u8, url: &str) -> String {
    let mut head = format!(
        "modparam(\"usrloc\", \"db_mode\", {mode})\nmodparam(\"usrloc\", \"db_url\", \"{url}\")\n"
    );
    if let Some(f) = fifo {
        head.push_str(&format!("fifo=\"{}\"\n", f.display()));
    }
    script(&head)
}

#[test]
fn write_through_survives_kill_9() {
    let dir = temp_dir("ul-wt");
    let db = dir.join("wt.db");
    let _ = std::fs::remove_file(&db);
    let cfg = dir.join("wt.cfg");
    std::fs::write(&cfg, db_script(None, 1, &db)).expect("cfg");
    let ua = Peer::new();
    let uas = Peer::new();
    let contact = format!("sip:dave@127.0.0.1:{}", uas.port());
    {
        let mut ser = Ser::start_file("ul-wt", &cfg, 0, 2, "auto");
        let port = ser.port;
        let r = ask(
            &ua,
            ser.addr(),
            &register(
                port,
                &ua,
                "dave",
                "reg-wt",
                1,
                &format!("Contact: <{contact}>\r\n"),
            ),
        );
        assert_eq!(status(&r), Some(200), "{r}");
        // SIGKILL: nothing gets a chance to flush.
        let _ = ser.child.kill();
        let _ = ser.child.wait();
    }
    let ser = Ser::start_file("ul-wt2", &cfg, 0, 2, "auto");
    let line = call(&ser, &ua, &uas, "dave", "inv-wt").expect("relayed after restart");
    assert!(line.starts_with(&format!("INVITE {contact} ")), "{line}");
}

#[test]
fn write_back_is_flushed_on_sigterm() {
    let dir = temp_dir("ul-wb");
    let db = dir.join("wb.db");
    let _ = std::fs::remove_file(&db);
    let cfg = dir.join("wb.cfg");
    std::fs::write(&cfg, db_script(None, 2, &db)).expect("cfg");
    let ua = Peer::new();
    let uas = Peer::new();
    let contact = format!("sip:erin@127.0.0.1:{}", uas.port());
    {
        let mut ser = Ser::start_file("ul-wb", &cfg, 0, 1, "auto");
        let port = ser.port;
        let r = ask(
            &ua,
            ser.addr(),
            &register(
                port,
                &ua,
                "erin",
                "reg-wb",
                1,
                &format!("Contact: <{contact}>\r\n"),
            ),
        );
        assert_eq!(status(&r), Some(200), "{r}");
        ser.stop(); // SIGTERM
        assert!(
            ser.log_text()
                .contains("written to the database at shutdown"),
            "{}",
            ser.log_text()
        );
    }
    let ser = Ser::start_file("ul-wb2", &cfg, 0, 1, "auto");
    let line = call(&ser, &ua, &uas, "erin", "inv-wb").expect("relayed after restart");
    assert!(line.starts_with(&format!("INVITE {contact} ")), "{line}");
}

#[test]
fn db_only_servers_share_one_database() {
    let dir = temp_dir("ul-db3");
    let db = dir.join("shared.db");
    let _ = std::fs::remove_file(&db);
    servers_share_one_database(&dir, &db_script(None, 3, &db), "sq");
}

/// The issue's scale-out: two servers (two ports) in db_mode 3 on one real MariaDB; a phone
/// registers through one, a call through the other finds it.
#[test]
fn db_only_servers_share_one_mariadb() {
    let dir = temp_dir("ul-db3-maria");
    let server = mariadb::shared();
    let url = server.database("usrloc_scaleout");
    servers_share_one_database(&dir, &db_url_script(None, 3, &url), "my");
}

fn servers_share_one_database(dir: &Path, script: &str, tag: &str) {
    let cfg = dir.join("db3.cfg");
    std::fs::write(&cfg, script).expect("cfg");
    let a = Ser::start_file(&format!("ul-db3a-{tag}"), &cfg, 0, 2, "auto");
    let b = Ser::start_file(&format!("ul-db3b-{tag}"), &cfg, 0, 2, "auto");
    let (pa, pb) = (a.port, b.port);
    let ua = Peer::new();
    let uas = Peer::new();
    let contact = format!("sip:frank@127.0.0.1:{}", uas.port());
    let r = ask(
        &ua,
        a.addr(),
        &register(
            pa,
            &ua,
            "frank",
            "reg-3",
            1,
            &format!("Contact: <{contact}>\r\n"),
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    let line = call(&b, &ua, &uas, "frank", "inv-3").expect("B found A's registration");
    assert!(line.starts_with(&format!("INVITE {contact} ")), "{line}");
    // B's REGISTER query lists it too, and B's unregistration is seen by A.
    let r = ask(
        &ua,
        b.addr(),
        &register(
            pb,
            &ua,
            "frank",
            "reg-3b",
            1,
            "Contact: *\r\nExpires: 0\r\n",
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    let r = ask(
        &ua,
        a.addr(),
        &request(
            "INVITE",
            &format!("sip:frank@127.0.0.1:{pa}"),
            ua.port(),
            "inv-3x",
            "",
        ),
    );
    assert_eq!(status(&r), Some(404), "{r}");
}

/// ser on the seeds' default script, with this test's port and FIFO (named by `tag`) and in
/// the foreground.
fn start_seed_default(tag: &str) -> Ser {
    let src =
        std::fs::read_to_string(repo_root().join("tests/data/seeds/default.cfg")).expect("seed");
    let fifo = fifo_path(tag);
    let src = src
        .replace("fork=yes", "fork=no")
        .replace("port=5060", "")
        .replace(
            "fifo=\"/tmp/ser_fifo\"",
            &format!("fifo=\"{}\"", fifo.display()),
        );
    Ser::start(&format!("ul-{tag}"), &src, 0, 2, "auto")
}

/// The seeds' default script, with this test's port and FIFO and in the foreground.
#[test]
fn seed_default_script_registers_and_answers_404() {
    let ser = start_seed_default("seed");
    let port = ser.port;
    let ua = Peer::new();
    let uas = Peer::new();
    let contact = format!("sip:gina@127.0.0.1:{}", uas.port());
    let r = ask(
        &ua,
        ser.addr(),
        &register(
            port,
            &ua,
            "gina",
            "reg-s",
            1,
            &format!("Contact: <{contact}>\r\n"),
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    let line = call(&ser, &ua, &uas, "gina", "inv-s").expect("relayed");
    assert!(line.starts_with(&format!("INVITE {contact} ")), "{line}");
    let r = ask(
        &ua,
        ser.addr(),
        &request(
            "INVITE",
            &format!("sip:nobody@127.0.0.1:{port}"),
            ua.port(),
            "inv-s404",
            "",
        ),
    );
    assert_eq!(status(&r), Some(404), "{r}");
}

/// The seeds' default script with ser as the phones' outbound proxy (a preloaded
/// `Route: <sip:ser;lr>` on every initial request, as baresip's `outbound=`, Linphone's
/// proxy route and most desk phones send): loose_route() removes our Route and, with none
/// left, is false (SER's rr: not route driven), so the REGISTER is saved in one pass from the
/// phone's address and an INVITE for `sip:user@ser` reaches the registered user instead of
/// losing its user part to a strict-router rewrite and ending at 404.
#[test]
fn seed_default_script_serves_phones_with_ser_as_outbound_proxy() {
    let ser = start_seed_default("seed-ob");
    let port = ser.port;
    let route = format!("Route: <sip:127.0.0.1:{port};lr>\r\n");
    let ua = Peer::new();
    let uas = Peer::new();
    let contact = format!("sip:hal@127.0.0.1:{}", uas.port());
    let r = ask(
        &ua,
        ser.addr(),
        &register(
            port,
            &ua,
            "hal",
            "reg-ob",
            1,
            &format!("{route}Contact: <{contact}>\r\n"),
        ),
    );
    assert_eq!(status(&r), Some(200), "{r}");
    // Answered in one pass: no Warning naming a second Via (ser relaying to itself).
    assert!(!r.contains("via_cnt==2"), "{r}");
    assert_eq!(contacts(&r).len(), 1, "{r}");
    let inv = request(
        "INVITE",
        &format!("sip:hal@127.0.0.1:{port}"),
        ua.port(),
        "inv-ob",
        &route,
    );
    ua.send(ser.addr(), inv.as_bytes());
    let got = uas
        .recv_timeout(3000)
        .unwrap_or_else(|| panic!("the INVITE did not reach hal:\n{}", ser.log_text()));
    assert!(got.starts_with(&format!("INVITE {contact} ")), "{got}");
    // Our preloaded Route is gone; the callee sees ser's one Via on top of the caller's.
    assert!(!got.contains("\r\nRoute:"), "{got}");
    assert_eq!(got.matches("\r\nVia:").count(), 2, "{got}");
}

/// usrloc-persistence.cfg names a MySQL server that is not there: ser stops with the URL
/// (without the password) and why, not a panic.
#[test]
fn seed_persistence_script_fails_clearly_without_its_database() {
    let cfg = repo_root().join("tests/data/seeds/usrloc-persistence.cfg");
    let (ok, out) = run_bounded(
        Command::new(SER)
            .arg("-f")
            .arg(&cfg)
            .args(["-l", "127.0.0.1", "-p", "0", "-E", "-D"]),
        Duration::from_secs(60),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("dbhost") && !out.contains("secret") && !out.contains("panicked"),
        "{out}"
    );
}
