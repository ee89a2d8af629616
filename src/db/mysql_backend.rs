//! The MySQL/MariaDB backend (`mysql://user:pw@host[:port]/db`, pure Rust over TCP):
//! connecting with timeouts and running statements with [`Value`] parameters and rows.
//!
//! Built only with the `mysql` cargo feature; pooling and retries are [`super::Db`]'s.
//! (Named `mysql_backend` so that `mysql::` keeps naming the driver crate.)

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
