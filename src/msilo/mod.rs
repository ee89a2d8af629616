//! msilo, the message silo: instant messages (RFC 3428 MESSAGE) for users who are offline,
//! kept in the database table `silo` until the user registers again.
//!
//! This is the module's service: its parameters ([`Config`]), the shared state every shard
//! and the management side see ([`Silo`]: the database, the counters, the deliverer's
//! queue), the SQL ([`store`], [`fetch`], [`delete`], [`sweep`], and the listings of the FIFO
//! commands), and the delivered request's text ([`compose`]). The script's face is
//! `modules::msilo` (`m_store`, `m_dump`); the deliverer thread, which sends the stored
//! messages as tm UAC transactions and deletes each after its 2xx, and the FIFO commands are
//! `mgmt::msilo`.
//!
//! Nothing here runs on a shard while it blocks: the SQL functions take a connection and
//! are called on the database's workers (the script suspended) or on the deliverer thread.

pub mod compose;

use portable_atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Params;
use crate::db::{Conn, Db, DbError, Value};
use crate::sip::Dest;
use crate::tm::uac::UacResult;

pub use compose::{compose, compose_notice, rfc1123, Envelope};

/// The module's parameters: (name, is an integer). SER 0.8's `registrar`, `clean_period`
/// and `use_contact` are taken so its scripts load unchanged.
pub const PARAMS: &[(&str, bool)] = &[
    ("db_url", false),
    ("db_table", false),
    ("expire_time", true),
    ("check_time", true),
    ("clean_period", true),
    ("max_messages", true),
    ("from_address", false),
    ("registrar", false),
    ("contact_hdr", false),
    ("content_type_hdr", false),
    ("offline_message", false),
    ("add_date", true),
    ("use_date_hdr", true),
    ("use_contact", true),
];

/// The longest address or content type stored (the columns are VARCHAR(255)).
pub const MAX_FIELD: usize = 255;

/// Dumps waiting for the deliverer; more are refused (m_dump fails) until it catches up.
pub const MAX_QUEUED: usize = 4096;

/// The default body of the notification to the sender (SER 0.8's text).
pub const DEFAULT_OFFLINE_MESSAGE: &str =
    "User [$ru] is offline. The message will be delivered when the user goes online.";

/// msilo's parameters, read once at start (a reload keeps them, as the dispatcher's).
#[derive(Debug, Clone)]
pub struct Config {
    /// `db_url` (None: the server's default database).
    pub db_url: Option<String>,
    /// `db_table` (default `silo`).
    pub table: String,
    /// `expire_time`: how long a message is kept (default 259200 s, 72 hours).
    pub expire: Duration,
    /// `check_time` × `clean_period`: how often expired messages are removed (default 60 s).
    pub sweep_every: Duration,
    /// `max_messages` per user (0, the default: no limit).
    pub max_messages: u32,
    /// `from_address` (SER's `registrar`): the sender of the notification that a message was
    /// stored; None: no notification.
    pub from_address: Option<String>,
    /// `contact_hdr`: a whole header line (CRLF ended) for the notification and the
    /// delivered messages; empty: none.
    pub contact_hdr: String,
    /// `content_type_hdr`: the notification's Content-Type line (default text/plain).
    pub content_type_hdr: String,
    /// `offline_message`: the notification's body (`$ru` and `$rU`: the recipient's URI and
    /// user).
    pub offline_message: String,
    /// `add_date` (default 1): the delivered body starts with `[Offline message - <date>] `.
    pub add_date: bool,
    /// `use_date_hdr` (default 1): the delivered message carries a `Date` header with the
    /// time it was stored.
    pub use_date_hdr: bool,
    /// `use_contact` (default 1): the notification goes to the sender's Contact when the
    /// MESSAGE had one, else to its From URI.
    pub use_contact: bool,
}

/// A header parameter as given, ended by exactly one CRLF (empty stays empty).
fn header_line(s: &str) -> String {
    let t = s.trim_end_matches(['\r', '\n']);
    if t.trim().is_empty() {
        String::new()
    } else {
        format!("{t}\r\n")
    }
}

impl Config {
    pub fn from_params(p: &Params) -> Self {
        let int = |n: &str, d: i64| p.int("msilo", n).unwrap_or(d);
        let secs =
            |n: &str, d: u64| Duration::from_secs(u64::try_from(int(n, d as i64)).unwrap_or(d));
        let check = secs("check_time", 60).max(Duration::from_secs(1));
        let clean = u32::try_from(int("clean_period", 1)).unwrap_or(1).max(1);
        Self {
            db_url: p.str("msilo", "db_url").map(String::from),
            table: p.str("msilo", "db_table").unwrap_or("silo").to_string(),
            expire: secs("expire_time", 259_200),
            sweep_every: check * clean,
            max_messages: u32::try_from(int("max_messages", 0)).unwrap_or(0),
            from_address: p
                .str("msilo", "from_address")
                .or_else(|| p.str("msilo", "registrar"))
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string()),
            contact_hdr: header_line(p.str("msilo", "contact_hdr").unwrap_or("")),
            content_type_hdr: match p.str("msilo", "content_type_hdr") {
                Some(s) if !s.trim().is_empty() => header_line(s),
                _ => String::from("Content-Type: text/plain\r\n"),
            },
            offline_message: p
                .str("msilo", "offline_message")
                .unwrap_or(DEFAULT_OFFLINE_MESSAGE)
                .to_string(),
            add_date: int("add_date", 1) != 0,
            use_date_hdr: int("use_date_hdr", 1) != 0,
            use_contact: int("use_contact", 1) != 0,
        }
    }
}

/// The loader's check of one parameter value (reported at its `modparam`).
pub fn check_param(name: &str, v: &ser_script::Value) -> Result<(), String> {
    use ser_script::Value as V;
    let s = match v {
        V::Str(s) | V::Ident(s) => Some(s.as_str()),
        _ => None,
    };
    let n = match v {
        V::Int(i) => Some(*i),
        _ => None,
    };
    let header = s.unwrap_or("").trim_end_matches(['\r', '\n']);
    let uri = s.unwrap_or("").trim();
    match name {
        "db_table" if !crate::db::schema::is_identifier(s.unwrap_or("")) => Err(format!(
            "db_table \"{}\" must be letters, digits and '_' (a database table)",
            s.unwrap_or("")
        )),
        "expire_time" | "check_time" | "clean_period" if !n.is_some_and(|n| n >= 1) => {
            Err(format!("{name} must be a number of at least 1"))
        }
        "max_messages" if !n.is_some_and(|n| (0..=i64::from(u32::MAX)).contains(&n)) => Err(
            String::from("max_messages must be 0 (no limit) or a positive number"),
        ),
        "from_address" | "registrar" if !uri.is_empty() && ser_parser::parse_uri(uri).is_err() => {
            Err(format!("{name} \"{uri}\" is not a SIP URI"))
        }
        "contact_hdr" | "content_type_hdr"
            if !header.is_empty() && (!header.contains(':') || header.contains(['\r', '\n'])) =>
        {
            Err(format!(
                "{name} must be one header line, \"Name: value\" (a final \\r\\n is optional)"
            ))
        }
        _ => Ok(()),
    }
}

/// Messages stored, delivered (2xx), expired (removed by the sweep), failed deliveries
/// (a negative reply, a timeout, no route), and stores refused (max_messages).
#[derive(Debug, Default)]
pub struct Counters {
    pub stored: AtomicU64,
    pub delivered: AtomicU64,
    pub expired: AtomicU64,
    pub failed: AtomicU64,
    pub full: AtomicU64,
}

/// A registration whose stored messages are to be delivered (from `m_dump`).
#[derive(Debug, Clone)]
pub struct Dump {
    /// The user's key in the silo (`r_uri`).
    pub owner: String,
    /// Where they go: the contact that just registered.
    pub contact: String,
    /// The flow it registered over (a stream connection), when it must be used.
    pub flow: Option<Dest>,
}

/// The notification that a message was stored, for its sender.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Where it goes (the sender's Contact or From URI).
    pub to: String,
    /// The recipient's URI (for `$ru`, `$rU`).
    pub recipient: String,
}

/// What the deliverer thread is told.
#[derive(Debug)]
pub enum Work {
    Dump(Dump),
    Notice(Notice),
    /// A delivery's transaction ended (posted from the shard that ran it).
    Outcome {
        id: u64,
        result: UacResult,
    },
}

/// msilo's shared state: the parameters, the database, the counters, and the queue of the
/// deliverer thread. One per process (a reload keeps it).
#[derive(Debug, Default)]
pub struct Silo {
    /// None when the module is not loaded.
    pub cfg: Option<Config>,
    pub db: Option<Arc<Db>>,
    pub counters: Counters,
    tx: Mutex<Option<mpsc::Sender<Work>>>,
    rx: Mutex<Option<mpsc::Receiver<Work>>>,
    queued: AtomicUsize,
}

/// Starts msilo when the script loads it: its database must be open (see
/// `modules::needs_default_db`).
pub fn start(
    p: &Params,
    modules: &[String],
    dbs: &crate::db::OpenDbs,
) -> Result<Arc<Silo>, String> {
    if !modules.iter().any(|m| m == "msilo") {
        return Ok(Arc::new(Silo::default()));
    }
    let cfg = Config::from_params(p);
    let db = dbs.get(cfg.db_url.as_deref()).ok_or_else(|| {
        format!(
            "msilo: database {} is not open",
            crate::db::redact(cfg.db_url.as_deref().unwrap_or(&dbs.default_url))
        )
    })?;
    if cfg.table != "silo" {
        // The seeds' schema has `silo`; another name gets the same columns.
        let sql = crate::db::schema::silo_table(&cfg.table, db.dialect());
        if let Err(e) = db.with_conn(|c| c.exec(&sql, &[])) {
            crate::warn!("msilo: cannot create table {}: {e}", cfg.table);
        }
    }
    let (tx, rx) = mpsc::channel();
    Ok(Arc::new(Silo {
        cfg: Some(cfg),
        db: Some(db),
        counters: Counters::default(),
        tx: Mutex::new(Some(tx)),
        rx: Mutex::new(Some(rx)),
        queued: AtomicUsize::new(0),
    }))
}

impl Silo {
    pub fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// The deliverer's end of the queue (taken once, by the thread that runs it).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Work>> {
        self.rx.lock().ok().and_then(|mut r| r.take())
    }

    /// A sender for the deliverer's queue (the shards' notifications of outcomes).
    pub fn sender(&self) -> Option<mpsc::Sender<Work>> {
        self.tx.lock().ok().and_then(|t| t.clone())
    }

    /// Queues a dump or a notice for the deliverer; refused, with the reason, when the queue
    /// is full or the deliverer is not running. Never blocks (called on a shard).
    pub fn queue(&self, w: Work) -> Result<(), &'static str> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err("the deliverer's queue is full");
        }
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.send(w).is_ok()))
            .unwrap_or(false);
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err("the deliverer is not running");
        }
        Ok(())
    }

    /// The deliverer took one queued dump or notice.
    pub fn dequeued(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Stops the queue (at shutdown): the deliverer's receive ends.
    pub fn close(&self) {
        if let Ok(mut t) = self.tx.lock() {
            t.take();
        }
    }

    fn table(&self) -> &str {
        self.cfg.as_ref().map_or("silo", |c| c.table.as_str())
    }

    pub fn count(&self, c: &mut dyn Conn, owner: &str) -> Result<u64, DbError> {
        let rows = c.query(
            &format!("SELECT COUNT(*) FROM {} WHERE r_uri = ?", self.table()),
            &[owner.into()],
        )?;
        Ok(first_int(&rows).max(0) as u64)
    }
}

fn first_int(rows: &[Vec<Value>]) -> i64 {
    rows.first()
        .and_then(|r| r.first())
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The user it is for (the silo's key, `r_uri`).
    pub owner: String,
    /// The sender: the From URI, with its display name when it had one.
    pub from: String,
    /// The To URI of the MESSAGE.
    pub to: String,
    pub ctype: String,
    pub body: String,
}

/// How a store ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Written (and committed: the statement ran in autocommit).
    Ok,
    /// The user has `max_messages` already.
    Full,
}

/// Stores `m` at `now`, unless its owner has `max` messages already (0: no limit). One
/// statement, so the count and the insert do not race within one database.
pub fn store(
    c: &mut dyn Conn,
    table: &str,
    m: &NewMessage,
    now: SystemTime,
    expire: Duration,
    max: u32,
) -> Result<Stored, DbError> {
    let inc = crate::db::datetime(now);
    let exp = crate::db::datetime(now + expire);
    let vals = vec![
        Value::from(m.from.as_str()),
        m.to.as_str().into(),
        m.owner.as_str().into(),
        inc.into(),
        exp.into(),
        m.ctype.as_str().into(),
        m.body.as_str().into(),
    ];
    if max == 0 {
        c.exec(
            &format!(
                "INSERT INTO {table} (src_addr, dst_addr, r_uri, inc_time, exp_time, ctype, \
                 body) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            &vals,
        )?;
        return Ok(Stored::Ok);
    }
    let mut vals = vals;
    vals.push(m.owner.as_str().into());
    vals.push(Value::Int(i64::from(max)));
    let n = c.exec(
        &format!(
            "INSERT INTO {table} (src_addr, dst_addr, r_uri, inc_time, exp_time, ctype, body) \
             SELECT ?, ?, ?, ?, ?, ?, ? FROM (SELECT COUNT(*) AS n FROM {table} \
             WHERE r_uri = ?) held WHERE held.n < ?"
        ),
        &vals,
    )?;
    Ok(if n == 0 { Stored::Full } else { Stored::Ok })
}

/// A stored message, as the deliverer sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub mid: i64,
    pub from: String,
    pub to: String,
    pub ctype: String,
    pub body: String,
    /// When it was stored.
    pub inc_time: Option<SystemTime>,
}

/// The owner's messages not expired at `now`, oldest first, from after `after` (a mid), at
/// most `limit`.
pub fn fetch(
    c: &mut dyn Conn,
    table: &str,
    owner: &str,
    after: i64,
    now: SystemTime,
    limit: u32,
) -> Result<Vec<Message>, DbError> {
    let rows = c.query(
        &format!(
            "SELECT mid, src_addr, dst_addr, ctype, body, inc_time FROM {table} \
             WHERE r_uri = ? AND mid > ? AND exp_time >= ? ORDER BY mid LIMIT {limit}"
        ),
        &[
            owner.into(),
            Value::Int(after),
            crate::db::datetime(now).into(),
        ],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut it = r.into_iter();
            let mid = it.next()?.as_i64()?;
            let from = it.next()?.text();
            let to = it.next()?.text();
            let ctype = it.next()?.text();
            let body = it.next()?.text();
            let inc_time = it.next().and_then(|v| crate::db::parse_datetime(&v.text()));
            Some(Message {
                mid,
                from,
                to,
                ctype,
                body,
                inc_time,
            })
        })
        .collect())
}

/// Deletes one message (after its 2xx); true when it was there.
pub fn delete(c: &mut dyn Conn, table: &str, mid: i64) -> Result<bool, DbError> {
    Ok(c.exec(
        &format!("DELETE FROM {table} WHERE mid = ?"),
        &[Value::Int(mid)],
    )? > 0)
}

/// Removes the messages expired at `now`; how many.
pub fn sweep(c: &mut dyn Conn, table: &str, now: SystemTime) -> Result<u64, DbError> {
    c.exec(
        &format!("DELETE FROM {table} WHERE exp_time < ?"),
        &[crate::db::datetime(now).into()],
    )
}

/// Most lines `msilo.list` gives.
pub const LIST_LIMIT: u32 = 1000;

/// The FIFO's listing: one line per message (of `owner`, or everyone's), oldest first.
pub fn list_lines(
    c: &mut dyn Conn,
    table: &str,
    owner: Option<&str>,
) -> Result<Vec<String>, DbError> {
    let (filter, params): (&str, Vec<Value>) = match owner {
        Some(o) => ("WHERE r_uri = ? ", vec![o.into()]),
        None => ("", Vec::new()),
    };
    let rows = c.query(
        &format!(
            "SELECT mid, r_uri, src_addr, inc_time, exp_time, ctype, body FROM {table} \
             {filter}ORDER BY mid LIMIT {LIST_LIMIT}"
        ),
        &params,
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let t = |i: usize| r.get(i).map(Value::text).unwrap_or_default();
            format!(
                "mid={} user={} from={} stored={} expires={} type={} bytes={}",
                t(0),
                t(1),
                t(2),
                t(3),
                t(4),
                t(5),
                t(6).len()
            )
        })
        .collect())
}

/// The FIFO's counts: `user: n` per user (of `owner`, or everyone with messages).
pub fn count_lines(
    c: &mut dyn Conn,
    table: &str,
    owner: Option<&str>,
) -> Result<Vec<String>, DbError> {
    if let Some(o) = owner {
        let rows = c.query(
            &format!("SELECT COUNT(*) FROM {table} WHERE r_uri = ?"),
            &[o.into()],
        )?;
        return Ok(vec![format!("{o}: {}", first_int(&rows))]);
    }
    let rows = c.query(
        &format!("SELECT r_uri, COUNT(*) FROM {table} GROUP BY r_uri ORDER BY r_uri"),
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let t = |i: usize| r.get(i).map(Value::text).unwrap_or_default();
            format!("{}: {}", t(0), t(1))
        })
        .collect())
}

/// Deletes a user's messages (all, or the one `mid`); how many.
pub fn delete_user(
    c: &mut dyn Conn,
    table: &str,
    owner: &str,
    mid: Option<i64>,
) -> Result<u64, DbError> {
    match mid {
        Some(m) => c.exec(
            &format!("DELETE FROM {table} WHERE r_uri = ? AND mid = ?"),
            &[owner.into(), Value::Int(m)],
        ),
        None => c.exec(
            &format!("DELETE FROM {table} WHERE r_uri = ?"),
            &[owner.into()],
        ),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    fn open(tag: &str) -> (Arc<Db>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ser-msilo-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let db = Db::open(&format!("sqlite://{}", dir.join("t.db").display()), 0).expect("open");
        db.init_schema().expect("schema");
        (db, dir)
    }

    fn msg(owner: &str, body: &str) -> NewMessage {
        NewMessage {
            owner: owner.into(),
            from: "sip:alice@example.org".into(),
            to: "sip:bob@example.org".into(),
            ctype: "text/plain".into(),
            body: body.into(),
        }
    }

    #[test]
    fn store_fetch_delete_in_order_and_max_messages() {
        let (db, dir) = open("sfd");
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        db.with_conn(|c| {
            for i in 0..3 {
                assert_eq!(
                    store(c, "silo", &msg("bob", &format!("m{i}")), now, day, 3)?,
                    Stored::Ok
                );
            }
            assert_eq!(
                store(c, "silo", &msg("bob", "m3"), now, day, 3)?,
                Stored::Full
            );
            // Another user's silo is not full; no limit stores anyway.
            assert_eq!(
                store(c, "silo", &msg("carol", "x"), now, day, 3)?,
                Stored::Ok
            );
            assert_eq!(
                store(c, "silo", &msg("bob", "m3"), now, day, 0)?,
                Stored::Ok
            );
            let got = fetch(c, "silo", "bob", 0, now, 100)?;
            let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
            assert_eq!(bodies, ["m0", "m1", "m2", "m3"]);
            assert_eq!(got[0].from, "sip:alice@example.org");
            assert!(got[0].inc_time.is_some());
            // Paged by mid.
            let rest = fetch(c, "silo", "bob", got[1].mid, now, 1)?;
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].body, "m2");
            assert!(delete(c, "silo", got[0].mid)?);
            assert!(!delete(c, "silo", got[0].mid)?);
            assert_eq!(count_lines(c, "silo", Some("bob"))?, ["bob: 3"]);
            assert_eq!(count_lines(c, "silo", None)?, ["bob: 3", "carol: 1"]);
            assert_eq!(list_lines(c, "silo", Some("carol"))?.len(), 1);
            assert_eq!(delete_user(c, "silo", "bob", None)?, 3);
            Ok(())
        })
        .expect("db");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_sweep_removes_only_expired_messages() {
        let (db, dir) = open("sweep");
        let now = SystemTime::now();
        db.with_conn(|c| {
            store(
                c,
                "silo",
                &msg("bob", "old"),
                now,
                Duration::from_secs(1),
                0,
            )?;
            store(
                c,
                "silo",
                &msg("bob", "new"),
                now,
                Duration::from_secs(3600),
                0,
            )?;
            let later = now + Duration::from_secs(5);
            // An expired message is not delivered even before the sweep removed it.
            let got = fetch(c, "silo", "bob", 0, later, 10)?;
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].body, "new");
            assert_eq!(sweep(c, "silo", later)?, 1);
            assert_eq!(sweep(c, "silo", later)?, 0);
            Ok(())
        })
        .expect("db");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_deliverers_queue_is_bounded_and_never_blocks() {
        let (tx, rx) = mpsc::channel();
        let s = Silo {
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
            ..Silo::default()
        };
        let dump = || {
            Work::Dump(Dump {
                owner: "bob".into(),
                contact: "sip:bob@127.0.0.1".into(),
                flow: None,
            })
        };
        for _ in 0..MAX_QUEUED {
            assert!(s.queue(dump()).is_ok());
        }
        assert_eq!(s.queue(dump()), Err("the deliverer's queue is full"));
        s.dequeued();
        assert!(s.queue(dump()).is_ok(), "room for one again");
        let rx = s.take_receiver().expect("receiver");
        assert!(s.take_receiver().is_none(), "taken once");
        assert!(matches!(rx.try_recv(), Ok(Work::Dump(_))));
        s.close();
        s.dequeued();
        assert_eq!(s.queue(dump()), Err("the deliverer is not running"));
    }

    #[test]
    fn parameters_and_their_checks() {
        use ser_script::Value as V;
        let c = Config::from_params(&Params::default());
        assert_eq!(c.expire, Duration::from_secs(259_200));
        assert_eq!(c.sweep_every, Duration::from_secs(60));
        assert_eq!(c.max_messages, 0);
        assert!(c.from_address.is_none());
        assert!(c.add_date && c.use_date_hdr && c.use_contact);
        assert_eq!(c.content_type_hdr, "Content-Type: text/plain\r\n");
        let mut p = Params::default();
        p.set(
            "msilo",
            "registrar",
            V::Str("sip:registrar@example.org".into()),
        );
        p.set("msilo", "check_time", V::Int(10));
        p.set("msilo", "clean_period", V::Int(3));
        p.set(
            "msilo",
            "contact_hdr",
            V::Str("Contact: <sip:ser@example.org>".into()),
        );
        let c = Config::from_params(&p);
        assert_eq!(c.from_address.as_deref(), Some("sip:registrar@example.org"));
        assert_eq!(c.sweep_every, Duration::from_secs(30));
        assert_eq!(c.contact_hdr, "Contact: <sip:ser@example.org>\r\n");
        assert!(check_param("db_table", &V::Str("silo; DROP".into())).is_err());
        assert!(check_param("db_table", &V::Str("my_silo".into())).is_ok());
        assert!(check_param("expire_time", &V::Int(0)).is_err());
        assert!(check_param("max_messages", &V::Int(-1)).is_err());
        assert!(check_param("max_messages", &V::Int(0)).is_ok());
        assert!(check_param("from_address", &V::Str("not a uri".into())).is_err());
        assert!(check_param("contact_hdr", &V::Str("no colon".into())).is_err());
        assert!(check_param(
            "content_type_hdr",
            &V::Str("Content-Type: text/html\r\n".into())
        )
        .is_ok());
    }
}
