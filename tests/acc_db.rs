//! acc to the database (SER 0.8's `db_flag`, `db_missed_flag`, `db_url`) on both backends:
//! the embedded SQLite default (under `data_dir`) and a real MariaDB (common/mariadb.rs). The
//! seeds' accounting scripts with `db_flag` write exactly one row per transaction, none for
//! retransmissions, which the transaction absorbs.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::sipp::*;
use common::*;
use ser::db::{self, Db, Value};

#[derive(Clone, Copy, Debug)]
enum Backend {
    /// No `db_url`: the default `sqlite://<data_dir>/ser.db`.
    Sqlite,
    Mariadb,
}

/// The script lines that pick the database (a global option, a modparam after acc is
/// loaded), the URL the test reads the rows from, and the SQLite data folder's guard.
fn database(backend: Backend, tag: &str) -> (String, String, String, Option<TempDir>) {
    match backend {
        Backend::Sqlite => {
            let guard = temp_dir(tag);
            let dir = guard.join("data");
            (
                format!("data_dir=\"{}\"\n", dir.display()),
                String::new(),
                format!("sqlite://{}", dir.join("ser.db").display()),
                Some(guard),
            )
        }
        Backend::Mariadb => {
            let url = mariadb::shared().database(tag);
            (
                String::new(),
                format!("\nmodparam(\"acc\", \"db_url\", \"{url}\")\n"),
                url,
                None,
            )
        }
    }
}

fn query(db: &Db, sql: &str) -> Vec<Vec<Value>> {
    db.with_conn(|c| c.query(sql, &[]))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn count(db: &Db, sql: &str) -> i64 {
    query(db, sql)
        .first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .unwrap_or(-1)
}

/// Waits (bounded) until `sql` counts `want`, then a little more: a late duplicate row
/// would show up.
fn settle(db: &Db, sql: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(db, sql) != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    count(db, sql)
}

/// A caller retransmits an INVITE (before and after the final) to a callee that answers 486.
fn busy_call(ser: &Ser, user: &str, call_id: &str) {
    let busy = Peer::new();
    let caller = Peer::new();
    let invite = request(
        "INVITE",
        &format!("sip:{user}@127.0.0.1:{}", busy.port()),
        caller.port(),
        call_id,
        "",
    );
    for _ in 0..3 {
        caller.send(ser.addr(), invite.as_bytes());
    }
    let inv = recv_request(&busy, "INVITE");
    busy.send(
        ser.addr(),
        response_to(&inv, 486, "Busy Here", "b1").as_bytes(),
    );
    caller.send(ser.addr(), invite.as_bytes());
    let replies = drain(&caller, 600);
    assert!(
        replies.iter().any(|r| r.starts_with("SIP/2.0 486")),
        "{replies:?}\n{}",
        ser.log_text()
    );
}

fn seed_writes_one_row_per_transaction(backend: Backend) {
    require_sipp();
    let tag = format!("acc_seed_{backend:?}").to_lowercase();
    let dir = temp_dir(&tag);
    let (global, modparam, url, _data) = database(backend, &tag);
    let seed = std::fs::read_to_string(repo_root().join("tests/data/seeds/accounting.cfg"))
        .expect("read the seed");
    let from = "modparam(\"acc\", \"log_flag\", 1 )";
    assert!(seed.contains(from));
    let script = format!(
        "{global}{}",
        seed.replace(
            from,
            &format!("modparam(\"acc\", \"db_flag\", 1 ){modparam}")
        )
    );
    let uas_port = free_port();
    let ser = Ser::start_with(&tag, &script, 0, 2, "auto", &[]);
    let port = ser.port;
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 10, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &callee),
        port,
        10,
        10,
        Duration::from_secs(20),
    );
    assert!(ok, "{out}\n{}", ser.log_text());
    let (uas_ok, log) = uas.finish(Duration::from_secs(10));
    assert!(uas_ok, "{log}");
    busy_call(&ser, "busy", "acc-retrans");

    let db = Db::open(&url, 0).expect("open the database ser wrote");
    // 10 calls and the busy one; in-dialog requests (ACK, BYE) are not flagged by the seed.
    assert_eq!(
        settle(&db, "SELECT COUNT(*) FROM acc", 11),
        11,
        "{:?}\n{}",
        query(&db, "SELECT sip_method, sip_callid, sip_status FROM acc"),
        ser.log_text()
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM acc WHERE sip_method = 'INVITE' AND sip_status = '200 OK'"
        ),
        10
    );
    let rows = query(
        &db,
        "SELECT sip_from, sip_to, sip_status, sip_method, i_uri, o_uri, sip_callid, username, \
         fromtag, totag, time FROM acc WHERE sip_callid = 'acc-retrans'",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r: Vec<String> = rows[0].iter().map(Value::text).collect();
    assert_eq!(r[0], "<sip:tester@127.0.0.1>;tag=t-acc-retrans");
    assert!(r[1].contains("tag=b1"), "To of the reply: {}", r[1]);
    assert_eq!(r[2], "486 Busy Here");
    assert_eq!(r[3], "INVITE");
    assert!(r[4].starts_with("sip:busy@127.0.0.1:"), "{}", r[4]);
    assert_eq!(r[5], r[4]);
    assert_eq!(
        (r[7].as_str(), r[8].as_str(), r[9].as_str()),
        ("tester", "t-acc-retrans", "b1")
    );
    let t = db::parse_datetime(&r[10]).expect("a DATETIME");
    let age = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO);
    assert!(age < Duration::from_secs(120), "time {} is off", r[10]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM missed_calls"), 0);
}

#[test]
fn accounting_seed_with_db_flag_writes_one_row_per_transaction_sqlite() {
    seed_writes_one_row_per_transaction(Backend::Sqlite);
}

#[test]
fn accounting_seed_with_db_flag_writes_one_row_per_transaction_mariadb() {
    seed_writes_one_row_per_transaction(Backend::Mariadb);
}

/// The 0.8 admin guide's script (numerical destinations only), with `db_flag`.
fn numerical_destinations_only(backend: Backend) {
    let tag = format!("acc_08_{backend:?}").to_lowercase();
    let (global, modparam, url, _data) = database(backend, &tag);
    let seed = std::fs::read_to_string(repo_root().join("tests/data/seeds/accounting-0.8.cfg"))
        .expect("read the seed");
    let from = "modparam(\"acc\", \"acc_flag\", 1 )";
    assert!(seed.contains(from));
    let script = format!(
        "{global}{}",
        seed.replace(
            from,
            &format!("modparam(\"acc\", \"db_flag\", 1 ){modparam}")
        )
    );
    let ser = Ser::start_with(&tag, &script, 0, 2, "auto", &[]);
    busy_call(&ser, "+4930123", "acc-numeric");
    busy_call(&ser, "bob", "acc-name");
    let db = Db::open(&url, 0).expect("open the database ser wrote");
    assert_eq!(
        settle(&db, "SELECT COUNT(*) FROM acc", 1),
        1,
        "{}",
        ser.log_text()
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM acc WHERE sip_callid = 'acc-numeric'"
        ),
        1
    );
}

#[test]
fn accounting_seed_08_accounts_numerical_destinations_sqlite() {
    numerical_destinations_only(Backend::Sqlite);
}

#[test]
fn accounting_seed_08_accounts_numerical_destinations_mariadb() {
    numerical_destinations_only(Backend::Mariadb);
}

fn missed_calls_once(backend: Backend) {
    let tag = format!("acc_missed_{backend:?}").to_lowercase();
    let (global, modparam, url, _data) = database(backend, &tag);
    let busy = Peer::new();
    // db_flag 2 is never set: it only makes acc_request write its row.
    let script = format!(
        r#"{global}
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/acc/acc.so"
{modparam}
modparam("acc", "db_flag", 2)
modparam("acc", "db_missed_flag", 3)
route {{
    if (uri=~"^sip:offline@") {{
        if ((method=="INVITE" || method=="ACK") && t_newtran()) {{
            t_reply("404", "Not Found");
            acc_request("404 Not Found");
            break;
        }};
        sl_send_reply("404", "Not Found");
        break;
    }};
    setflag(3);
    rewritehostport("127.0.0.1:{}");
    t_relay();
}}
"#,
        busy.port()
    );
    let ser = Ser::start_with(&tag, &script, 0, 2, "auto", &[]);
    let caller = Peer::new();
    let off = request(
        "INVITE",
        "sip:offline@127.0.0.1",
        caller.port(),
        "missed-off",
        "",
    );
    caller.send(ser.addr(), off.as_bytes());
    caller.send(ser.addr(), off.as_bytes());
    let r = drain(&caller, 600);
    assert!(r.iter().any(|m| m.starts_with("SIP/2.0 404")), "{r:?}");
    for (call_id, code, reason, to_tag) in [
        ("missed-busy", 486, "Busy Here", "b2"),
        ("missed-ok", 200, "OK", "b3"),
    ] {
        let inv = request("INVITE", "sip:bob@127.0.0.1", caller.port(), call_id, "");
        caller.send(ser.addr(), inv.as_bytes());
        let got = recv_request(&busy, "INVITE");
        busy.send(
            ser.addr(),
            response_to(&got, code, reason, to_tag).as_bytes(),
        );
        caller.send(ser.addr(), inv.as_bytes());
        let r = drain(&caller, 600);
        assert!(
            r.iter().any(|m| m.starts_with(&format!("SIP/2.0 {code}"))),
            "{r:?}"
        );
    }
    let db = Db::open(&url, 0).expect("open the database ser wrote");
    assert_eq!(settle(&db, "SELECT COUNT(*) FROM missed_calls", 1), 1);
    let missed = query(
        &db,
        "SELECT sip_callid, sip_status, totag FROM missed_calls",
    );
    assert_eq!(
        missed[0].iter().map(Value::text).collect::<Vec<_>>(),
        ["missed-busy", "486 Busy Here", "b2"]
    );
    assert_eq!(settle(&db, "SELECT COUNT(*) FROM acc", 1), 1);
    let acc = query(&db, "SELECT sip_callid, sip_status, sip_method FROM acc");
    assert_eq!(
        acc[0].iter().map(Value::text).collect::<Vec<_>>(),
        ["missed-off", "404 Not Found", "INVITE"]
    );
}

#[test]
fn missed_calls_rows_once_when_negative_sqlite() {
    missed_calls_once(Backend::Sqlite);
}

#[test]
fn missed_calls_rows_once_when_negative_mariadb() {
    missed_calls_once(Backend::Mariadb);
}
