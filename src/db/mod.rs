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
//!
//! Layout: this file is the backends' interface ([`Conn`], [`Dialect`], [`DbError`]) and
//! which backend a URL gets; `url` parses and redacts `db_url`, `value` is [`Value`], `pool`
//! is [`Db`] (connection pool, worker threads, throttled write failures), `open` the set of
//! open databases ([`open_for`], [`OpenDbs`]), `time` the stored time text, and `sqlite`,
//! `mysql_backend` the two backends.

mod open;
mod pool;
pub mod schema;
mod time;
mod url;
mod value;

#[cfg(feature = "mysql")]
mod mysql_backend;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use open::{open_for, OpenDbs, WORKERS};
pub use pool::{Db, Job};
pub use time::{datetime, parse_datetime};
pub use url::{default_url, parse_url, redact, Url};
pub use value::{Row, Value};

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

#[cfg(all(test, not(feature = "sqlite")))]
mod tests {
    use super::*;

    #[test]
    fn a_backend_left_out_of_the_build_is_a_clear_error() {
        match Db::open("sqlite:///tmp/ser-none.db", 0) {
            Err(DbError::Connect(_, e)) => assert!(e.contains("without SQLite"), "{e}"),
            other => panic!("expected a clear error, got {other:?}"),
        }
    }
}
