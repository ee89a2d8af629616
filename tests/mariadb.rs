//! The database layer and ser against a real MariaDB (a private `mariadbd` on loopback, see
//! common/mariadb.rs): both URL spellings, `init_schema`, every value kind, NULLs and
//! DATETIMEs; a database down at start stops ser with a message; a database restarted under
//! a running ser is used again; a hung database never stalls requests that don't need it.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mariadb::{self, MariaDb};
use common::*;
use ser::db::{self, Db, Dialect, Value};

fn count(db: &Db, sql: &str) -> i64 {
    db.with_conn(|c| c.query(sql, &[]))
        .ok()
        .and_then(|rows| rows.first().and_then(|r| r.first()).and_then(Value::as_i64))
        .unwrap_or(-1)
}

/// Polls `count` until it is `want` (bounded); returns the last count.
fn wait_count(db: &Db, sql: &str, want: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let n = count(db, sql);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn both_url_spellings_open_and_create_the_seeds_tables() {
    let server = mariadb::shared();
    let url = server.database("spellings");
    let a = Db::open(&url, 1).expect("mysql:// url");
    assert_eq!(a.dialect(), Dialect::Mysql);
    assert!(!a.name().contains(mariadb::PASSWORD), "{}", a.name());
    a.init_schema().expect("init_schema");
    a.init_schema().expect("init_schema twice is fine");
    let b = Db::open(&server.seed_url("spellings"), 1).expect("the seeds' mysql: spelling");
    b.init_schema()
        .expect("init_schema through the seeds' spelling");
    let tables: Vec<String> = b
        .with_conn(|c| c.query("SHOW TABLES", &[]))
        .expect("show tables")
        .iter()
        .map(|r| r.first().map(Value::text).unwrap_or_default())
        .collect();
    for t in [
        "subscriber",
        "reserved",
        "phonebook",
        "pending",
        "missed_calls",
        "location",
        "grp",
        "event",
        "aliases",
        "active_sessions",
        "acc",
        "config",
        "silo",
        "dispatcher",
        "version",
    ] {
        assert!(tables.iter().any(|x| x == t), "no table {t}: {tables:?}");
    }
    assert_eq!(
        count(
            &a,
            "SELECT table_version FROM version WHERE table_name = 'location'"
        ),
        7,
        "usrloc's table version 7: the received and socket columns (nathelper)"
    );
}

#[test]
fn values_nulls_and_datetimes_round_trip() {
    let server = mariadb::shared();
    let db = Db::open(&server.database("t_values"), 2).expect("open");
    db.with_conn(|c| {
        c.exec(
            "CREATE TABLE v (id INT NOT NULL PRIMARY KEY, i BIGINT NULL, r DOUBLE NULL, \
             s VARCHAR(255) NULL, d DATETIME NULL)",
            &[],
        )
    })
    .expect("create");
    let when = UNIX_EPOCH + Duration::from_secs(1_039_197_370);
    let rows: Vec<Vec<Value>> = vec![
        vec![
            Value::Int(1),
            Value::Int(-9_007_199_254_740_993),
            Value::Real(0.25),
            Value::Text("sip:j\u{f6}rg@iptel.org;it's \"quoted\"".into()),
            Value::Text(db::datetime(when)),
        ],
        vec![
            Value::Int(2),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        vec![
            Value::Int(3),
            Value::Int(i64::MAX),
            Value::Real(-1.5e10),
            Value::Text(String::new()),
            Value::Text(db::datetime(SystemTime::now())),
        ],
    ];
    for r in &rows {
        let n = db
            .with_conn(|c| c.exec("INSERT INTO v (id, i, r, s, d) VALUES (?, ?, ?, ?, ?)", r))
            .expect("insert");
        assert_eq!(n, 1);
    }
    let got = db
        .with_conn(|c| c.query("SELECT id, i, r, s, d FROM v ORDER BY id", &[]))
        .expect("select");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0][1], Value::Int(-9_007_199_254_740_993));
    assert_eq!(got[0][2].as_f64(), Some(0.25));
    assert_eq!(got[0][3], rows[0][3], "text with quotes and UTF-8 intact");
    assert_eq!(got[0][4].as_str().and_then(db::parse_datetime), Some(when));
    assert_eq!(got[0][4].as_str(), Some("2002-12-06 17:56:10"));
    assert!(
        got[1][1..].iter().all(|v| *v == Value::Null),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2][1].as_i64(), Some(i64::MAX));
    assert_eq!(got[2][2].as_f64(), Some(-1.5e10));
    assert_eq!(got[2][3], Value::Text(String::new()));
    // A parameter that is NULL matches nothing with `=`, and `IS NULL` finds the row.
    let nulls = db
        .with_conn(|c| c.query("SELECT id FROM v WHERE s IS NULL", &[]))
        .expect("is null");
    assert_eq!(nulls, vec![vec![Value::Int(2)]]);
    // DATETIME comparisons with a parameter, as usrloc's expiry does.
    let later = db
        .with_conn(|c| {
            c.query(
                "SELECT id FROM v WHERE d > ? ORDER BY id",
                &[db::datetime(when).into()],
            )
        })
        .expect("datetime parameter");
    assert_eq!(later, vec![vec![Value::Int(3)]]);
    // And the same through the workers.
    let (tx, rx) = std::sync::mpsc::channel();
    db.submit(Box::new(move |db| {
        let _ = tx.send(db.with_conn(|c| c.query("SELECT COUNT(*) FROM v", &[])));
    }))
    .expect("submit");
    let n = rx.recv_timeout(Duration::from_secs(10)).expect("job ran");
    assert_eq!(n.ok().and_then(|r| r[0][0].as_i64()), Some(3));
}

fn ser_cmd(cfg: &std::path::Path, port: u16) -> Command {
    let mut c = Command::new(SER);
    c.arg("-f").arg(cfg).args([
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-n",
        "1",
        "-E",
        "-D",
    ]);
    c
}

#[test]
fn ser_refuses_to_start_when_its_database_is_down() {
    // Nothing listens on this port: the database is down.
    let down = mariadb::free_tcp_port();
    let dir = temp_dir("mariadb-down");
    for (name, url, extra) in [
        (
            "acc",
            format!("mysql://ser:pw@127.0.0.1:{down}/ser"),
            String::new(),
        ),
        (
            "seed",
            format!("mysql:ser:pw@127.0.0.1:{down}/ser"),
            String::from("loadmodule \"modules/mysql/mysql.so\"\n"),
        ),
    ] {
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "{extra}loadmodule \"modules/sl/sl.so\"\nloadmodule \"modules/tm/tm.so\"\n\
                 loadmodule \"modules/acc/acc.so\"\n\
                 modparam(\"acc\", \"db_url\", \"{url}\")\n\
                 modparam(\"acc\", \"db_flag\", 1)\n\
                 route {{ sl_send_reply(\"200\", \"OK\"); }}\n"
            ),
        )
        .expect("write cfg");
        let (ok, out) = run_bounded(&mut ser_cmd(&cfg, 0), Duration::from_secs(30));
        assert!(!ok, "{name}: ser started without its database:\n{out}");
        assert!(
            out.contains("database")
                && out.contains("cannot connect")
                && out.contains(&down.to_string()),
            "{name}: no clear message:\n{out}"
        );
        assert!(
            !out.contains(":pw@"),
            "{name}: the password was logged:\n{out}"
        );
        assert!(
            !out.contains("panicked"),
            "{name}: a crash, not a message:\n{out}"
        );
        // run_bounded's 30 s bound catches a server that never gives up; how fast it gives
        // up is not a test's business.
    }
}

/// A stateful script whose transactions are accounted into `url`: OPTIONS to `ping` are
/// answered statelessly (they never need the database), everything else gets a local 404
/// inside a transaction flagged for `acc`.
fn acc_script(url: &str) -> String {
    format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/acc/acc.so"
modparam("acc", "db_url", "{url}")
modparam("acc", "db_flag", 1)
route {{
    if (method=="OPTIONS") {{ sl_send_reply("200", "OK"); break; }};
    setflag(1);
    if (t_newtran()) {{ t_reply("404", "Not Found"); }};
}}
"#
    )
}

/// Sends a MESSAGE transaction with Call-ID `id` and waits for its 404.
fn transaction(peer: &Peer, ser: SocketAddr, id: &str) {
    let m = request("MESSAGE", "sip:nobody@127.0.0.1", peer.port(), id, "");
    peer.send(ser, m.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(r) = peer.recv_timeout(200) {
            if status(&r) == Some(404) && r.contains(id) {
                return;
            }
        }
    }
    panic!("no 404 for {id}");
}

#[test]
fn a_restarted_database_is_used_again() {
    let mut server = MariaDb::start("restart");
    let url = server.database("ser");
    // The Db level: a query, a restart, a query on the same Db.
    let db = Db::open(&url, 2).expect("open");
    db.init_schema().expect("schema");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM acc"), 0);
    server.restart();
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM acc"),
        0,
        "a query after the restart reconnects"
    );

    // The ser level: acc rows before, while down, and after the restart.
    let ser = Ser::start_with("mariadb-restart", &acc_script(&url), 0, 2, "auto", &[]);
    let peer = Peer::new();
    for i in 0..5 {
        transaction(&peer, ser.addr(), &format!("before-{i}"));
    }
    let sql = "SELECT COUNT(*) FROM acc";
    assert_eq!(
        wait_count(&db, sql, 5, Duration::from_secs(10)),
        5,
        "{}",
        ser.log_text()
    );
    server.stop();
    for i in 0..3 {
        // Calls go on while the database is down; their rows are lost, and logged.
        transaction(&peer, ser.addr(), &format!("down-{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ser.log_text().contains("acc not written") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = ser.log_text();
    assert!(log.contains("acc not written"), "{log}");
    server.restart();
    for i in 0..5 {
        transaction(&peer, ser.addr(), &format!("after-{i}"));
    }
    assert_eq!(
        wait_count(&db, sql, 10, Duration::from_secs(15)),
        10,
        "{}",
        ser.log_text()
    );
    let after = count(
        &db,
        "SELECT COUNT(*) FROM acc WHERE sip_callid LIKE 'after-%'",
    );
    assert_eq!(after, 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ser.log_text().contains("back") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ser.log_text().contains("written again"),
        "{}",
        ser.log_text()
    );
}

#[test]
fn a_hung_database_never_stalls_requests_that_do_not_need_it() {
    let server = MariaDb::start("hung");
    let url = server.database("ser");
    let db = Db::open(&url, 1).expect("open");
    db.init_schema().expect("schema");
    let ser = Ser::start_with("mariadb-hung", &acc_script(&url), 0, 2, "auto", &[]);
    let peer = Peer::new();
    let ping = Peer::new();
    transaction(&peer, ser.addr(), "warm-0");
    assert_eq!(
        wait_count(&db, "SELECT COUNT(*) FROM acc", 1, Duration::from_secs(10)),
        1
    );

    // The database hangs: connections are accepted by the kernel, nothing is answered.
    server.pause();
    let mut worst = Duration::ZERO;
    let n = 40;
    for i in 0..n {
        // A transaction whose acc row waits for the database ...
        transaction(&peer, ser.addr(), &format!("hung-{i}"));
        // ... and an OPTIONS that needs no database: answered at once.
        let t0 = Instant::now();
        let o = request(
            "OPTIONS",
            "sip:ping@127.0.0.1",
            ping.port(),
            &format!("ping-{i}"),
            "",
        );
        ping.send(ser.addr(), o.as_bytes());
        let r = ping
            .recv_timeout(3000)
            .expect("OPTIONS answered while the database hangs");
        assert_eq!(status(&r), Some(200), "{r}");
        worst = worst.max(t0.elapsed());
        // Spread over 2 s: the workers sit in the database's reads meanwhile.
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each answer came within recv_timeout's 3 s while the database hangs: a shard stalled
    // in it would wait for its 10 s read timeout. Latency is measured by benchmarks.
    eprintln!("worst OPTIONS answer while the database hung: {worst:?}");
    server.resume();
    // Nothing was lost: the queued rows are written once the database answers again.
    let got = wait_count(
        &db,
        "SELECT COUNT(*) FROM acc",
        1 + n,
        Duration::from_secs(20),
    );
    assert_eq!(got, 1 + n, "{}", ser.log_text());
}

#[test]
fn serctl_db_init_creates_the_tables_on_both_backends() {
    let server = mariadb::shared();
    let sqlite_dir = temp_dir("serctl-db-init");
    let sqlite = sqlite_dir.join("init.db");
    let _ = std::fs::remove_file(&sqlite);
    for url in [
        server.database("serctl_init"),
        format!("sqlite://{}", sqlite.display()),
    ] {
        let (ok, out) = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_serctl")).args(["db", "init", &url]),
            Duration::from_secs(30),
        );
        assert!(ok, "serctl db init {url}: {out}");
        assert!(!out.contains(mariadb::PASSWORD), "{out}");
        let db = Db::open(&url, 0).expect("open");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM acc"), 0);
        assert_eq!(
            count(
                &db,
                "SELECT table_version FROM version WHERE table_name = 'subscriber'"
            ),
            3
        );
    }
    // A database that is down: a message and a non-zero exit.
    let down = format!("mysql://ser:pw@127.0.0.1:{}/ser", mariadb::free_tcp_port());
    let (ok, out) = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_serctl")).args(["db", "init", &down]),
        Duration::from_secs(30),
    );
    assert!(!ok && out.contains("cannot connect"), "{out}");
}
