//! Databases for the modules that keep state (usrloc, auth, group, acc) and for serctl.
//!
//! `db_url` picks the backend: `sqlite:///path/ser.db` (embedded, the default: nothing to
//! install) or a MySQL/MariaDB server, `mysql://user:pw@host[:port]/db` or the seeds'
//! `mysql:user:pw@host/db` and `sql://user:pw@host/db` spellings.
//!
//! Every query runs off the shard threads: on the database's own worker threads
//! ([`Db::submit`], whose jobs post their result back to the shard that asked), or on a thread
//! that may block anyway (start-up, the FIFO server, serctl: [`Db::with_conn`]). Connections
//! are pooled; one that fails is dropped and the next job connects again, so a database that
//! went away is used again as soon as it is back. The queue is bounded: when the database is
//! slow and the queue is full a job is refused at once ([`DbError::Busy`]) instead of
//! piling up.
//!
//! SQL is written once for both backends: `?` placeholders, `REPLACE INTO`, and times as
//! `YYYY-MM-DD HH:MM:SS` UTC text (DATETIME in MySQL). [`schema`] has the seeds' tables.

pub mod schema;

use portable_atomic::AtomicU64;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A database address, parsed from `db_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    Sqlite(PathBuf),
    Mysql {
        user: String,
        password: String,
        host: String,
        port: u16,
        db: String,
    },
}

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Real(f) => Some(*f as i64),
            Value::Text(s) => s.trim().parse().ok(),
            Value::Null => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Real(f) => Some(*f),
            Value::Text(s) => s.trim().parse().ok(),
            Value::Null => None,
        }
    }

    /// Text of any value (numbers printed), empty for NULL.
    pub fn text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Int(i) => i.to_string(),
            Value::Real(f) => f.to_string(),
            Value::Text(s) => s.clone(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Real(f)
    }
}

pub type Row = Vec<Value>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("bad db_url '{0}': {1}")]
    Url(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("the database is busy (queue full)")]
    Busy,
    #[error("the database workers are gone")]
    Closed,
}

/// Which SQL dialect a connection speaks (where the two differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Mysql,
}

/// One connection.
pub trait Conn: Send {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Rows changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    fn dialect(&self) -> Dialect;
}

/// Parses `db_url`.
pub fn parse_url(s: &str) -> Result<Url, DbError> {
    let bad = |why: &str| DbError::Url(redact(s), why.to_string());
    if let Some(path) = s.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(bad("no file: sqlite:///path/to/ser.db"));
        }
        return Ok(Url::Sqlite(PathBuf::from(path)));
    }
    let rest = s
        .strip_prefix("mysql://")
        .or_else(|| s.strip_prefix("sql://"))
        .or_else(|| s.strip_prefix("mysql:"))
        .or_else(|| s.strip_prefix("sql:"))
        .ok_or_else(|| bad("expected sqlite:///path or mysql://user:password@host/db"))?;
    let (cred, hostdb) = rest
        .rsplit_once('@')
        .ok_or_else(|| bad("expected user:password@host/db"))?;
    let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
    let (hostport, db) = hostdb
        .split_once('/')
        .ok_or_else(|| bad("no database name after the host"))?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
        }
        _ => (hostport, 3306),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if user.is_empty() || host.is_empty() || db.is_empty() {
        return Err(bad("user, host and database must not be empty"));
    }
    Ok(Url::Mysql {
        user: user.to_string(),
        password: password.to_string(),
        host: host.to_string(),
        port,
        db: db.to_string(),
    })
}

/// The URL without its password, for messages.
pub fn redact(s: &str) -> String {
    match (
        s.find("//")
            .map(|i| i + 2)
            .or_else(|| s.find(':').map(|i| i + 1)),
        s.rfind('@'),
    ) {
        (Some(start), Some(at)) if start < at => {
            let cred = &s[start..at];
            match cred.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &s[..start], &s[at..]),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

fn connect(url: &Url, shown: &str) -> Result<Box<dyn Conn>, DbError> {
    match url {
        #[cfg(feature = "sqlite")]
        Url::Sqlite(path) => sqlite::open(path)
            .map(|c| Box::new(c) as Box<dyn Conn>)
            .map_err(|e| DbError::Connect(shown.to_string(), e)),
        #[cfg(not(feature = "sqlite"))]
        Url::Sqlite(_) => Err(not_built(shown, "SQLite", "sqlite")),
        #[cfg(feature = "mysql")]
        Url::Mysql {
            user,
            password,
            host,
            port,
            db,
        } => mysql_backend::open(user, password, host, *port, db)
            .map(|c| Box::new(c) as Box<dyn Conn>)
            .map_err(|e| DbError::Connect(shown.to_string(), e)),
        #[cfg(not(feature = "mysql"))]
        Url::Mysql { .. } => Err(not_built(shown, "MySQL/MariaDB", "mysql")),
    }
}

/// The error for a `db_url` whose backend was left out of this build (the smallest builds for
/// small boards drop the C and network database drivers: `--no-default-features`).
#[cfg(not(all(feature = "sqlite", feature = "mysql")))]
fn not_built(shown: &str, what: &str, feature: &str) -> DbError {
    DbError::Connect(
        shown.to_string(),
        format!("this ser was built without {what} support (cargo feature `{feature}`)"),
    )
}

/// `sqlite://<dir>/ser.db` with `dir` made absolute (from the current directory).
pub fn default_url(dir: &str) -> String {
    let p = std::path::Path::new(dir);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    format!("sqlite://{}", abs.join("ser.db").display())
}

/// Workers per database for [`Db::submit`].
pub const WORKERS: usize = 4;

/// Opens every database `urls` names (and `default` when `need_default`), reusing those in
/// `open` (a reload keeps its connections). SQLite files get the seeds' tables; the data
/// directory of the default database is created. An error names the URL (without password).
pub fn open_for(
    urls: &[String],
    default: &str,
    need_default: bool,
    open: &[(String, Arc<Db>)],
) -> Result<Vec<(String, Arc<Db>)>, DbError> {
    let mut want: Vec<String> = urls.to_vec();
    if need_default && !want.iter().any(|u| u == default) {
        want.push(default.to_string());
    }
    let mut out = Vec::new();
    for url in want {
        if let Some((_, d)) = open.iter().find(|(u, _)| *u == url) {
            out.push((url, Arc::clone(d)));
            continue;
        }
        if url == default {
            if let Ok(Url::Sqlite(path)) = parse_url(&url) {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
        }
        let db = Db::open(&url, WORKERS)?;
        match db.init_schema() {
            Ok(()) => {}
            Err(e) if db.dialect() == Dialect::Mysql => crate::warn!(
                "database {}: cannot create the tables ({e}); run `serctl db init`",
                db.name()
            ),
            Err(e) => return Err(e),
        }
        out.push((url, db));
    }
    Ok(out)
}

/// The open databases, by `db_url`, and the URL of the default one (modules that set no
/// `db_url` use it). Built at start, rebuilt by a reload (keeping open connections).
#[derive(Debug, Clone, Default)]
pub struct OpenDbs {
    /// `sqlite://<data_dir>/ser.db`: the database of modules that set no `db_url`.
    pub default_url: String,
    pub list: Vec<(String, Arc<Db>)>,
}

impl OpenDbs {
    /// The open database of `url` (a module's `db_url`, or the default when None).
    pub fn get(&self, url: Option<&str>) -> Option<Arc<Db>> {
        let url = url.unwrap_or(&self.default_url);
        self.list
            .iter()
            .find(|(u, _)| u == url)
            .map(|(_, d)| Arc::clone(d))
    }
}

/// A job for the database workers.
pub type Job = Box<dyn FnOnce(&Db) + Send + 'static>;

/// A database: the URL, a pool of connections, and worker threads for [`Self::submit`].
pub struct Db {
    url: Url,
    shown: String,
    idle: Mutex<Vec<Box<dyn Conn>>>,
    queue: Mutex<Option<SyncSender<Job>>>,
    /// Writes ([`Self::write`]) that failed, and those refused because the queue was full.
    failed: AtomicU64,
    refused: AtomicU64,
    /// Set by a failed write, cleared (and logged) by the next one that succeeds.
    down: AtomicBool,
    /// When a failure was last logged, and how many were not logged since (see
    /// [`Self::write`]): a database that is down must not flood the log.
    last_logged: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

/// At most one failure line per database this often; the next one says how many were not
/// logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Jobs waiting for a worker; more are refused ([`DbError::Busy`]).
const QUEUE: usize = 4096;

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.shown)
    }
}

impl Db {
    /// Opens `url` and checks that it answers (a database that is down at start is an error
    /// the caller reports), then starts `workers` threads for submitted jobs.
    pub fn open(url: &str, workers: usize) -> Result<Arc<Db>, DbError> {
        let parsed = parse_url(url)?;
        let shown = redact(url);
        let first = connect(&parsed, &shown)?;
        let db = Arc::new(Db {
            url: parsed,
            shown,
            idle: Mutex::new(vec![first]),
            queue: Mutex::new(None),
            failed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            down: AtomicBool::new(false),
            last_logged: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        });
        if workers > 0 {
            let (tx, rx) = sync_channel::<Job>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..workers {
                let db2 = Arc::clone(&db);
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("ser-db-{i}"))
                    .spawn(move || worker(&db2, &rx))
                    .map_err(|e| DbError::Connect(db.shown.clone(), e.to_string()))?;
            }
            if let Ok(mut q) = db.queue.lock() {
                *q = Some(tx);
            }
        }
        Ok(db)
    }

    /// The URL without its password.
    pub fn name(&self) -> &str {
        &self.shown
    }

    pub fn dialect(&self) -> Dialect {
        match self.url {
            Url::Sqlite(_) => Dialect::Sqlite,
            Url::Mysql { .. } => Dialect::Mysql,
        }
    }

    /// Runs `f` with a connection, on the calling thread (which may block: never a shard).
    /// A failed connection is dropped, and `f` is tried once more on a new one. The other
    /// idle connections go too: after a database restart they are all dead, and each would
    /// cost a job its one retry.
    pub fn with_conn<T>(
        &self,
        mut f: impl FnMut(&mut dyn Conn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        for attempt in 0..2 {
            let pooled = if attempt == 0 {
                self.idle.lock().ok().and_then(|mut v| v.pop())
            } else {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.clear();
                }
                None
            };
            let mut conn = match pooled {
                Some(c) => c,
                None => connect(&self.url, &self.shown)?,
            };
            match f(conn.as_mut()) {
                Ok(v) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(conn);
                    }
                    return Ok(v);
                }
                // A lost connection: the next attempt connects again.
                Err(DbError::Query(e)) if attempt == 0 && is_connection_error(&e) => {
                    crate::notice!("database {}: {e}; reconnecting", self.shown);
                    continue;
                }
                Err(e) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(conn);
                    }
                    return Err(e);
                }
            }
        }
        Err(DbError::Closed)
    }

    /// Hands `job` to the database workers; refused when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), DbError> {
        let q = self.queue.lock().map_err(|_| DbError::Closed)?;
        match q.as_ref() {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) => DbError::Busy,
                TrySendError::Disconnected(_) => DbError::Closed,
            }),
            None => Err(DbError::Closed),
        }
    }

    /// Fire-and-forget `sql` (an INSERT of acc, ...) on the database's workers: never blocks
    /// the caller. A write refused (queue full) or failed (database down, slow, gone) is
    /// counted ([`Self::failed_writes`], [`Self::refused_writes`]) and logged with `what`,
    /// at most once per [`LOG_EVERY`]; the first write that succeeds afterwards logs that
    /// the database is back.
    pub fn write(&self, what: &'static str, sql: &'static str, params: Vec<Value>) {
        let job: Job = Box::new(
            move |db: &Db| match db.with_conn(|c| c.exec(sql, &params)) {
                Ok(_) => {
                    if db.down.swap(false, Ordering::Relaxed) {
                        // Whatever the log level: it closes the outage's error lines.
                        crate::log::always(
                            crate::log::L_NOTICE,
                            format_args!(
                                "database {}: back: {what} written again ({} writes failed \
                                 so far)",
                                db.shown,
                                db.failed.load(Ordering::Relaxed)
                            ),
                        );
                    }
                }
                Err(e) => {
                    db.failed.fetch_add(1, Ordering::Relaxed);
                    db.down.store(true, Ordering::Relaxed);
                    db.log_failure(what, &e);
                }
            },
        );
        if let Err(e) = self.submit(job) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.log_failure(what, &e);
        }
    }

    /// Writes that failed so far.
    pub fn failed_writes(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Writes refused so far because the queue was full (or the workers gone).
    pub fn refused_writes(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Logs a failed database job, throttled: one line per [`LOG_EVERY`] per database.
    pub fn log_failure(&self, what: &str, e: &DbError) {
        let now = Instant::now();
        let Ok(mut last) = self.last_logged.lock() else {
            return;
        };
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
        let more = if unlogged > 0 {
            format!(
                " ({unlogged} more failures in the last {}s)",
                LOG_EVERY.as_secs()
            )
        } else {
            String::new()
        };
        crate::error!(
            "database {}: {what} not written: {e}{more}; {} failed, {} refused so far",
            self.shown,
            self.failed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed)
        );
    }

    /// Creates the seeds' tables that do not exist yet (`serctl db init`, and at start for
    /// SQLite).
    pub fn init_schema(&self) -> Result<(), DbError> {
        let dialect = self.dialect();
        self.with_conn(|c| {
            for sql in schema::create_statements(dialect) {
                c.exec(&sql, &[])?;
            }
            Ok(())
        })
    }
}

fn worker(db: &Db, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(db),
            Err(_) => return,
        }
    }
}

fn is_connection_error(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    [
        "connection",
        "broken pipe",
        "gone away",
        "lost",
        "reset",
        "io error",
        "timed out",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time: how times are stored.
pub fn datetime(t: SystemTime) -> String {
    let crate::utc::Utc {
        date: (y, m, d),
        secs: rem,
        ..
    } = crate::utc::utc(t);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The time of a stored `YYYY-MM-DD HH:MM:SS` (UTC); None when it does not parse.
pub fn parse_datetime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let mut dp = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (dp.next()??, dp.next()??, dp.next()??);
    let mut tp = time
        .trim_end_matches('Z')
        .split(':')
        .map(|x| x.split('.').next().and_then(|v| v.parse::<i64>().ok()));
    let (h, mi, se) = (
        tp.next()??,
        tp.next().flatten().unwrap_or(0),
        tp.next().flatten().unwrap_or(0),
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::{Conn, DbError, Dialect, Row, Value};

    pub struct Sqlite(rusqlite::Connection);

    pub fn open(path: &std::path::Path) -> Result<Sqlite, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(format!("directory {} does not exist", dir.display()));
            }
        }
        let c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        // WAL: readers do not wait for a writer; NORMAL sync is durable at each commit in
        // WAL mode against a process crash (kill -9), which is what db_mode 1 promises.
        let _: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        c.execute_batch("PRAGMA synchronous=NORMAL")
            .map_err(|e| e.to_string())?;
        Ok(Sqlite(c))
    }

    fn to_sql(v: &Value) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match v {
            Value::Null => V::Null,
            Value::Int(i) => V::Integer(*i),
            Value::Real(f) => V::Real(*f),
            Value::Text(s) => V::Text(s.clone()),
        }
    }

    fn from_sql(v: rusqlite::types::ValueRef<'_>) -> Value {
        use rusqlite::types::ValueRef as V;
        match v {
            V::Null => Value::Null,
            V::Integer(i) => Value::Int(i),
            V::Real(f) => Value::Real(f),
            V::Text(t) | V::Blob(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        }
    }

    impl Conn for Sqlite {
        fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
            let q = |e: rusqlite::Error| DbError::Query(e.to_string());
            let mut st = self.0.prepare_cached(sql).map_err(q)?;
            let n = st.column_count();
            let p: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
            let mut rows = st.query(rusqlite::params_from_iter(p)).map_err(q)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(q)? {
                let mut row = Vec::with_capacity(n);
                for i in 0..n {
                    row.push(from_sql(r.get_ref(i).map_err(q)?));
                }
                out.push(row);
            }
            Ok(out)
        }

        fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
            let p: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
            let mut st = self
                .0
                .prepare_cached(sql)
                .map_err(|e| DbError::Query(e.to_string()))?;
            st.execute(rusqlite::params_from_iter(p))
                .map(|n| n as u64)
                .map_err(|e| DbError::Query(e.to_string()))
        }

        fn dialect(&self) -> Dialect {
            Dialect::Sqlite
        }
    }
}

#[cfg(feature = "mysql")]
mod mysql_backend {
    use mysql::prelude::Queryable;

    use super::{Conn, DbError, Dialect, Row, Value};

    pub struct Mysql(mysql::Conn);

    pub fn open(user: &str, pw: &str, host: &str, port: u16, db: &str) -> Result<Mysql, String> {
        let opts = mysql::OptsBuilder::new()
            .user(Some(user))
            .pass(Some(pw))
            .ip_or_hostname(Some(host))
            .tcp_port(port)
            .db_name(Some(db))
            .tcp_connect_timeout(Some(std::time::Duration::from_secs(3)))
            .read_timeout(Some(std::time::Duration::from_secs(10)))
            .write_timeout(Some(std::time::Duration::from_secs(10)));
        mysql::Conn::new(opts).map(Mysql).map_err(|e| e.to_string())
    }

    fn to_sql(v: &Value) -> mysql::Value {
        match v {
            Value::Null => mysql::Value::NULL,
            Value::Int(i) => mysql::Value::Int(*i),
            Value::Real(f) => mysql::Value::Double(*f),
            Value::Text(s) => mysql::Value::Bytes(s.as_bytes().to_vec()),
        }
    }

    fn from_sql(v: mysql::Value) -> Value {
        match v {
            mysql::Value::NULL => Value::Null,
            mysql::Value::Bytes(b) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
            mysql::Value::Int(i) => Value::Int(i),
            mysql::Value::UInt(u) => Value::Int(i64::try_from(u).unwrap_or(i64::MAX)),
            mysql::Value::Float(f) => Value::Real(f64::from(f)),
            mysql::Value::Double(f) => Value::Real(f),
            mysql::Value::Date(y, mo, d, h, mi, s, _) => {
                Value::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            }
            mysql::Value::Time(neg, days, h, mi, s, _) => Value::Text(format!(
                "{}{}:{mi:02}:{s:02}",
                if neg { "-" } else { "" },
                u64::from(days) * 24 + u64::from(h)
            )),
        }
    }

    fn params(p: &[Value]) -> mysql::Params {
        if p.is_empty() {
            mysql::Params::Empty
        } else {
            mysql::Params::Positional(p.iter().map(to_sql).collect())
        }
    }

    impl Conn for Mysql {
        fn query(&mut self, sql: &str, p: &[Value]) -> Result<Vec<Row>, DbError> {
            let rows: Vec<mysql::Row> = self
                .0
                .exec(sql, params(p))
                .map_err(|e| DbError::Query(e.to_string()))?;
            // `Row::unwrap` is mysql's "into the values" (not Option's): it panics only for a
            // value taken out of the row before, and no value is taken here.
            Ok(rows
                .into_iter()
                .map(|r| r.unwrap().into_iter().map(from_sql).collect())
                .collect())
        }

        fn exec(&mut self, sql: &str, p: &[Value]) -> Result<u64, DbError> {
            self.0
                .exec_drop(sql, params(p))
                .map_err(|e| DbError::Query(e.to_string()))?;
            Ok(self.0.affected_rows())
        }

        fn dialect(&self) -> Dialect {
            Dialect::Mysql
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("sqlite:///var/lib/ser/ser.db"),
            Ok(Url::Sqlite(PathBuf::from("/var/lib/ser/ser.db")))
        );
        let m = Url::Mysql {
            user: "ser".into(),
            password: "secret".into(),
            host: "dbhost".into(),
            port: 3306,
            db: "ser".into(),
        };
        assert_eq!(parse_url("mysql://ser:secret@dbhost/ser"), Ok(m.clone()));
        assert_eq!(parse_url("mysql:ser:secret@dbhost/ser"), Ok(m.clone()));
        assert_eq!(parse_url("sql://ser:secret@dbhost/ser"), Ok(m));
        assert!(matches!(
            parse_url("mysql://ser:pw@127.0.0.1:3307/ser"),
            Ok(Url::Mysql { port: 3307, .. })
        ));
        assert!(parse_url("postgres://x@y/z").is_err());
        assert!(parse_url("mysql://ser:pw@host").is_err());
        assert_eq!(
            redact("mysql://ser:secret@dbhost/ser"),
            "mysql://ser:***@dbhost/ser"
        );
        assert_eq!(
            redact("mysql:ser:secret@dbhost/ser"),
            "mysql:ser:***@dbhost/ser"
        );
    }

    #[test]
    fn datetimes_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_039_197_370);
        assert_eq!(datetime(t), "2002-12-06 17:56:10");
        assert_eq!(parse_datetime("2002-12-06 17:56:10"), Some(t));
        assert_eq!(parse_datetime("garbage"), None);
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(parse_datetime(&datetime(leap)), Some(leap));
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_schema_and_queries() {
        let dir = std::env::temp_dir().join(format!("ser-db-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = Db::open(&url, 1).expect("open");
        db.init_schema().expect("schema");
        db.init_schema().expect("schema twice is fine");
        db.with_conn(|c| {
            c.exec(
                "REPLACE INTO grp (username, domain, grp, last_modified) VALUES (?, ?, ?, ?)",
                &[
                    "john".into(),
                    "".into(),
                    "int".into(),
                    datetime(SystemTime::now()).into(),
                ],
            )
        })
        .expect("insert");
        let rows = db
            .with_conn(|c| c.query("SELECT grp FROM grp WHERE username = ?", &["john".into()]))
            .expect("select");
        assert_eq!(rows, vec![vec![Value::Text("int".into())]]);
        let (tx, rx) = std::sync::mpsc::channel();
        db.submit(Box::new(move |db| {
            let n = db.with_conn(|c| c.query("SELECT COUNT(*) FROM grp", &[]));
            let _ = tx.send(n);
        }))
        .expect("submit");
        let n = rx.recv_timeout(Duration::from_secs(5)).expect("job ran");
        assert_eq!(n, Ok(vec![vec![Value::Int(1)]]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_full_queue_refuses_writes_at_once_and_counts_them() {
        let dir = std::env::temp_dir().join(format!("ser-db-full-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = Db::open(&url, 1).expect("open");
        db.init_schema().expect("schema");
        // The one worker waits on `gate`; the queue fills behind it.
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        db.submit(Box::new(move |_| {
            let _ = gate_rx.recv_timeout(Duration::from_secs(10));
        }))
        .expect("submit");
        let sql = "INSERT INTO acc (sip_callid, time) VALUES (?, ?)";
        let t0 = Instant::now();
        for i in 0..QUEUE + 10 {
            db.write(
                "acc",
                sql,
                vec![format!("c{i}").into(), datetime(SystemTime::now()).into()],
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "writes never block");
        // The blocked job may or may not have left the queue yet: 10 or 11 refused.
        assert!(
            (10..=11).contains(&db.refused_writes()),
            "{}",
            db.refused_writes()
        );
        let _ = gate_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(20);
        let written = loop {
            let n = db
                .with_conn(|c| c.query("SELECT COUNT(*) FROM acc", &[]))
                .ok()
                .and_then(|r| r.first().and_then(|r| r.first()).and_then(Value::as_i64));
            if n.is_some_and(|n| n as u64 + db.refused_writes() >= (QUEUE + 10) as u64)
                || Instant::now() > deadline
            {
                break n;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            written.map(|n| n as u64 + db.refused_writes()),
            Some((QUEUE + 10) as u64)
        );
        assert_eq!(db.failed_writes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn missing_directory_is_a_clear_error() {
        match Db::open("sqlite:///nonexistent-dir-ser/x.db", 0) {
            Err(DbError::Connect(_, why)) => assert!(why.contains("does not exist"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened"),
        }
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn a_backend_left_out_of_the_build_is_a_clear_error() {
        match Db::open("sqlite:///tmp/ser-none.db", 0) {
            Err(DbError::Connect(_, e)) => assert!(e.contains("without SQLite"), "{e}"),
            other => panic!("expected a clear error, got {other:?}"),
        }
    }
}
