//! The SQLite backend (embedded, `sqlite:///path`): opening a file in WAL mode and running
//! statements with [`Value`] parameters and rows.
//!
//! Built only with the `sqlite` cargo feature; pooling and retries are [`super::Db`]'s.

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
