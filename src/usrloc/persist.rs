//! usrloc's SQL: bindings as rows of a usrloc table (`schema::usrloc_table`). Blocking:
//! called on the database workers, the FIFO thread, the timer thread and at start, never on
//! a shard. Table names are checked identifiers (the binders and FIFO commands refuse others).

use std::time::{Duration, UNIX_EPOCH};

use super::rfc3261::parse_q;
use super::{Aor, Binding, Received};
use crate::db::{datetime, parse_datetime, Conn, DbError, Value};

fn dt(secs: u64) -> Value {
    Value::Text(datetime(UNIX_EPOCH + Duration::from_secs(secs)))
}

fn secs(v: &Value) -> u64 {
    v.as_str()
        .and_then(parse_datetime)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check(table: &str) -> Result<(), DbError> {
    if crate::db::schema::is_identifier(table) {
        Ok(())
    } else {
        Err(DbError::Query(format!("bad table name '{table}'")))
    }
}

/// Cuts `s` to at most `n` bytes on a character boundary (the column widths).
fn cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// Writes one binding (insert or replace).
pub fn upsert(c: &mut dyn Conn, table: &str, aor: &Aor, b: &Binding) -> Result<(), DbError> {
    check(table)?;
    c.exec(
        &format!(
            "REPLACE INTO {table} (username, domain, contact, expires, q, callid, cseq, \
             last_modified, user_agent, flags, received, socket) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        &[
            Value::from(aor.user.as_str()),
            Value::from(aor.domain.as_str()),
            Value::from(b.contact.as_str()),
            dt(b.expires),
            Value::Real(f64::from(b.q) / 1000.0),
            Value::from(cut(&b.callid, 255)),
            Value::Int(i64::from(b.cseq)),
            dt(b.last_modified),
            Value::from(cut(&b.user_agent, 64)),
            Value::Int(i64::from(b.flags)),
            Value::from(b.received.map(|r| r.uri()).unwrap_or_default().as_str()),
            Value::from(b.received.map(|r| r.socket()).unwrap_or_default().as_str()),
        ],
    )?;
    Ok(())
}

/// Deletes one contact of the AOR, or all of them; rows deleted.
pub fn delete(
    c: &mut dyn Conn,
    table: &str,
    aor: &Aor,
    contact: Option<&str>,
) -> Result<u64, DbError> {
    check(table)?;
    match contact {
        Some(ct) => c.exec(
            &format!("DELETE FROM {table} WHERE username = ? AND domain = ? AND contact = ?"),
            &[
                Value::from(aor.user.as_str()),
                Value::from(aor.domain.as_str()),
                Value::from(ct),
            ],
        ),
        None => c.exec(
            &format!("DELETE FROM {table} WHERE username = ? AND domain = ?"),
            &[
                Value::from(aor.user.as_str()),
                Value::from(aor.domain.as_str()),
            ],
        ),
    }
}

const COLUMNS: &str = "username, domain, contact, expires, q, callid, cseq, last_modified, \
                       user_agent, flags, received, socket";

fn binding(r: &[Value]) -> Option<(String, String, Binding)> {
    let text = |i: usize| r.get(i).map(Value::text).unwrap_or_default();
    let contact = text(2);
    if contact.is_empty() {
        return None;
    }
    // q per mille: a REAL column clamped to 0..1, or text (a DECIMAL through the MySQL
    // driver) read as a qvalue; 1 when missing or unreadable.
    let per_mille = |f: f64| (f.clamp(0.0, 1.0) * 1000.0).round() as u16;
    let q = match r.get(4) {
        Some(Value::Real(f)) => per_mille(*f),
        Some(Value::Int(i)) => per_mille(*i as f64),
        Some(Value::Text(t)) => parse_q(t).unwrap_or(1000),
        _ => 1000,
    };
    Some((
        text(0),
        text(1),
        Binding {
            contact,
            expires: r.get(3).map(secs).unwrap_or(0),
            q,
            callid: text(5),
            cseq: r
                .get(6)
                .and_then(Value::as_i64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            last_modified: r.get(7).map(secs).unwrap_or(0),
            user_agent: text(8),
            // Flows live in memory only.
            flow: None,
            received: Received::from_columns(&text(10), &text(11)),
            flags: r
                .get(9)
                .and_then(Value::as_i64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
        },
    ))
}

/// The AOR's rows.
pub fn get(c: &mut dyn Conn, table: &str, aor: &Aor) -> Result<Vec<Binding>, DbError> {
    check(table)?;
    let rows = c.query(
        &format!("SELECT {COLUMNS} FROM {table} WHERE username = ? AND domain = ?"),
        &[
            Value::from(aor.user.as_str()),
            Value::from(aor.domain.as_str()),
        ],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| binding(r))
        .map(|(_, _, b)| b)
        .collect())
}

/// Every row of the table: (username, domain, binding).
pub fn load_table(
    c: &mut dyn Conn,
    table: &str,
) -> Result<Vec<(String, String, Binding)>, DbError> {
    check(table)?;
    let rows = c.query(&format!("SELECT {COLUMNS} FROM {table}"), &[])?;
    Ok(rows.iter().filter_map(|r| binding(r)).collect())
}

/// Brings a usrloc table made by an older version up to this one's columns: `received` and
/// `socket` (version 7, for nathelper's `fix_nated_register`) are added when missing, so
/// databases made before keep working (their rows read with no received address).
pub fn migrate(c: &mut dyn Conn, table: &str) -> Result<(), DbError> {
    check(table)?;
    for col in crate::db::schema::migrate_usrloc(c, table)? {
        crate::notice!("usrloc: table {table}: column {col} added");
    }
    Ok(())
}

/// Deletes the rows that expired by `now`.
pub fn delete_expired(c: &mut dyn Conn, table: &str, now: u64) -> Result<u64, DbError> {
    check(table)?;
    c.exec(
        &format!("DELETE FROM {table} WHERE expires <= ?"),
        &[dt(now)],
    )
}

/// Applies a REGISTER's changes to the AOR's rows.
pub fn apply(
    c: &mut dyn Conn,
    table: &str,
    aor: &Aor,
    upserts: &[Binding],
    removed: &[String],
) -> Result<(), DbError> {
    for r in removed {
        delete(c, table, aor, Some(r))?;
    }
    for b in upserts {
        upsert(c, table, aor, b)?;
    }
    Ok(())
}

/// Replaces the rows of each AOR by its bindings, in one transaction (db_mode 2's flush).
pub fn write_aors(
    c: &mut dyn Conn,
    table: &str,
    aors: &[(Aor, Vec<Binding>)],
) -> Result<(), DbError> {
    c.exec("BEGIN", &[])?;
    let r = (|| {
        for (aor, bindings) in aors {
            delete(c, table, aor, None)?;
            for b in bindings {
                upsert(c, table, aor, b)?;
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => {
            c.exec("COMMIT", &[])?;
            Ok(())
        }
        Err(e) => {
            let _ = c.exec("ROLLBACK", &[]);
            Err(e)
        }
    }
}
