//! [`Db`]: one database's connection pool and worker threads. [`Db::with_conn`] runs a job
//! on the calling thread, reconnecting once after a lost connection; [`Db::submit`] queues it
//! for the workers (bounded: refused with [`DbError::Busy`] when full); [`Db::write`] is the
//! fire-and-forget write whose failures are counted and logged at most once per
//! [`LOG_EVERY`].
//!
//! It does not parse URLs or speak SQL itself: connections come from the backends through
//! [`super::connect`]. Key types: [`Db`], [`Job`].

use portable_atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{connect, parse_url, redact, schema, Conn, DbError, Dialect, Url, Value};

/// A job for the database workers.
pub type Job = Box<dyn FnOnce(&Db) + Send + 'static>;

/// A database: the URL, a pool of connections, and worker threads for [`Self::submit`].
pub struct Db {
    url: Url,
    shown: String,
    idle: Mutex<Vec<Box<dyn Conn>>>,
    queue: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set by [`Self::close`]: no connection is made any more.
    closed: AtomicBool,
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
            workers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
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
                let handle = std::thread::Builder::new()
                    .name(format!("ser-db-{i}"))
                    .spawn(move || worker(&db2, &rx))
                    .map_err(|e| DbError::Connect(db.shown.clone(), e.to_string()))?;
                if let Ok(mut w) = db.workers.lock() {
                    w.push(handle);
                }
            }
            if let Ok(mut q) = db.queue.lock() {
                *q = Some(tx);
            }
        }
        Ok(db)
    }

    /// Closes the database at shutdown: the jobs already queued (acc rows, usrloc writes)
    /// run to the end, the workers stop, every connection is closed (SQLite then checkpoints
    /// its write-ahead log and removes `-wal` and `-shm`). Later uses fail with `Closed`.
    pub fn close(&self) {
        let queue = self.queue.lock().ok().and_then(|mut q| q.take());
        drop(queue);
        let workers = self
            .workers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for w in workers {
            let _ = w.join();
        }
        self.closed.store(true, Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
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
            if self.closed.load(Ordering::Relaxed) {
                return Err(DbError::Closed);
            }
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
            // Tables an older version made lack the columns added since.
            for t in ["location", "aliases"] {
                schema::migrate_usrloc(c, t)?;
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

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::db::datetime;
    use std::time::SystemTime;

    #[test]
    fn close_runs_queued_writes_and_leaves_no_wal_behind() {
        let dir = std::env::temp_dir().join(format!("ser-db-close-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("t.db");
        let url = format!("sqlite://{}", file.display());
        let db = Db::open(&url, 2).expect("open");
        db.init_schema().expect("schema");
        for i in 0..50 {
            db.write(
                "test",
                "INSERT INTO grp (username, domain, grp, last_modified) VALUES (?, '', 'g', '')",
                vec![format!("u{i}").into()],
            );
        }
        let wal = dir.join("t.db-wal");
        assert!(wal.exists(), "WAL mode while open");
        db.close();
        assert!(
            !wal.exists(),
            "the WAL is checkpointed and removed on close"
        );
        assert!(!dir.join("t.db-shm").exists());
        assert!(matches!(db.with_conn(|_| Ok(())), Err(DbError::Closed)));
        // Every queued write was done before the workers stopped.
        let again = Db::open(&url, 0).expect("reopen");
        let rows = again
            .with_conn(|c| c.query("SELECT COUNT(*) FROM grp", &[]))
            .expect("count");
        assert_eq!(rows, vec![vec![Value::Int(50)]]);
        again.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

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

    #[test]
    fn missing_directory_is_a_clear_error() {
        match Db::open("sqlite:///nonexistent-dir-ser/x.db", 0) {
            Err(DbError::Connect(_, why)) => assert!(why.contains("does not exist"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened"),
        }
    }
}
