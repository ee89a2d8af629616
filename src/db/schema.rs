//! The seeds' tables ("subscriber, reserved, phonebook, pending, missed_calls, location, grp,
//! event, aliases, active_sessions, acc, config, silo, version"), and Kamailio's
//! `dispatcher`, as `CREATE TABLE IF NOT
//! EXISTS` for SQLite and MySQL/MariaDB.
//!
//! Columns follow SER 0.8's tables, with a `domain` column beside each user name (the seeds'
//! multi-domain setups keep one table per domain; the column lets one table serve several).
//! Times are DATETIME (text `YYYY-MM-DD HH:MM:SS` UTC in SQLite).

use super::Dialect;

/// Version of each table definition, written into `version`.
pub const TABLE_VERSIONS: &[(&str, i64)] = &[
    ("subscriber", 3),
    ("reserved", 1),
    ("phonebook", 1),
    ("pending", 3),
    ("missed_calls", 2),
    ("location", 7),
    ("aliases", 7),
    ("grp", 2),
    ("event", 1),
    ("active_sessions", 1),
    ("acc", 2),
    ("config", 1),
    ("silo", 2),
    ("dispatcher", 4),
];

/// A usrloc table (`location`, `aliases`, or a per-domain table `save("mydomain1")` names).
/// `name` must be a plain identifier (checked by [`is_identifier`]).
pub fn usrloc_table(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\
         username VARCHAR(64) NOT NULL, \
         domain VARCHAR(128) NOT NULL DEFAULT '', \
         contact VARCHAR(255) NOT NULL, \
         expires DATETIME NOT NULL, \
         q FLOAT NOT NULL DEFAULT 1.0, \
         callid VARCHAR(255) NOT NULL DEFAULT '', \
         cseq INT NOT NULL DEFAULT 0, \
         last_modified DATETIME, \
         replicate INT NOT NULL DEFAULT 0, \
         state INT NOT NULL DEFAULT 0, \
         flags INT NOT NULL DEFAULT 0, \
         user_agent VARCHAR(64) NOT NULL DEFAULT '', \
         received VARCHAR(128) NOT NULL DEFAULT '', \
         socket VARCHAR(64) NOT NULL DEFAULT '', \
         PRIMARY KEY (username, domain, contact))"
    )
}

/// Columns a usrloc table gained after version 6, with their definitions: a table made
/// before gets them by `ALTER TABLE` when it is opened (`usrloc::persist::migrate`).
pub const USRLOC_ADDED_COLUMNS: &[(&str, &str)] = &[
    ("received", "VARCHAR(128) NOT NULL DEFAULT ''"),
    ("socket", "VARCHAR(64) NOT NULL DEFAULT ''"),
];

/// Adds the [`USRLOC_ADDED_COLUMNS`] a usrloc table lacks; returns those added. `table` must
/// be an identifier ([`is_identifier`]).
pub fn migrate_usrloc(
    c: &mut dyn super::Conn,
    table: &str,
) -> Result<Vec<&'static str>, super::DbError> {
    let mut added = Vec::new();
    for (col, def) in USRLOC_ADDED_COLUMNS {
        if c.query(&format!("SELECT {col} FROM {table} WHERE 1 = 0"), &[])
            .is_ok()
        {
            continue;
        }
        c.exec(&format!("ALTER TABLE {table} ADD COLUMN {col} {def}"), &[])?;
        added.push(*col);
    }
    Ok(added)
}

/// True for names usable as a table name without quoting: letters, digits, `_`, not
/// starting with a digit, at most 64 characters.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// msilo's table of stored messages (SER's `silo` columns), under `name` (msilo's `db_table`).
/// `name` must be a plain identifier.
pub fn silo_table(name: &str, d: Dialect) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (mid {}, \
         src_addr VARCHAR(255) NOT NULL DEFAULT '', \
         dst_addr VARCHAR(255) NOT NULL DEFAULT '', \
         r_uri VARCHAR(255) NOT NULL DEFAULT '', \
         inc_time DATETIME, \
         exp_time DATETIME, \
         ctype VARCHAR(255) NOT NULL DEFAULT 'text/plain', \
         body TEXT)",
        auto_id(d)
    )
}

/// An auto-increment integer primary key's column type.
fn auto_id(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Mysql => "INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY",
    }
}

fn acc_like(name: &str, d: Dialect) -> String {
    let id = auto_id(d);
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (id {id}, \
         sip_from VARCHAR(255) NOT NULL DEFAULT '', \
         sip_to VARCHAR(255) NOT NULL DEFAULT '', \
         sip_status VARCHAR(128) NOT NULL DEFAULT '', \
         sip_method VARCHAR(16) NOT NULL DEFAULT '', \
         i_uri VARCHAR(255) NOT NULL DEFAULT '', \
         o_uri VARCHAR(255) NOT NULL DEFAULT '', \
         sip_callid VARCHAR(255) NOT NULL DEFAULT '', \
         username VARCHAR(64) NOT NULL DEFAULT '', \
         fromtag VARCHAR(128) NOT NULL DEFAULT '', \
         totag VARCHAR(128) NOT NULL DEFAULT '', \
         time DATETIME NOT NULL)"
    )
}

/// Every table, in creation order.
pub fn create_statements(d: Dialect) -> Vec<String> {
    let auto = auto_id(d);
    let mut v = vec![
        String::from(
            "CREATE TABLE IF NOT EXISTS version (\
             table_name VARCHAR(64) NOT NULL PRIMARY KEY, \
             table_version INT NOT NULL DEFAULT 0)",
        ),
        String::from(
            "CREATE TABLE IF NOT EXISTS subscriber (\
             username VARCHAR(64) NOT NULL, \
             domain VARCHAR(128) NOT NULL DEFAULT '', \
             password VARCHAR(64) NOT NULL DEFAULT '', \
             first_name VARCHAR(64) NOT NULL DEFAULT '', \
             last_name VARCHAR(64) NOT NULL DEFAULT '', \
             phone VARCHAR(32) NOT NULL DEFAULT '', \
             email_address VARCHAR(128) NOT NULL DEFAULT '', \
             datetime_created DATETIME, \
             datetime_modified DATETIME, \
             confirmation VARCHAR(64) NOT NULL DEFAULT '', \
             flag CHAR(1) NOT NULL DEFAULT 'o', \
             sendnotification VARCHAR(64) NOT NULL DEFAULT '', \
             greeting VARCHAR(64) NOT NULL DEFAULT '', \
             ha1 VARCHAR(128) NOT NULL DEFAULT '', \
             ha1b VARCHAR(128) NOT NULL DEFAULT '', \
             allow_find CHAR(1) NOT NULL DEFAULT '0', \
             timezone VARCHAR(128), \
             rpid VARCHAR(128), \
             PRIMARY KEY (username, domain))",
        ),
        String::from(
            "CREATE TABLE IF NOT EXISTS reserved (\
             user_name VARCHAR(64) NOT NULL PRIMARY KEY)",
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS phonebook (id {auto}, \
             username VARCHAR(64) NOT NULL DEFAULT '', \
             domain VARCHAR(128) NOT NULL DEFAULT '', \
             fname VARCHAR(32) NOT NULL DEFAULT '', \
             lname VARCHAR(32) NOT NULL DEFAULT '', \
             sip_uri VARCHAR(128) NOT NULL DEFAULT '')"
        ),
        String::from(
            "CREATE TABLE IF NOT EXISTS pending (\
             username VARCHAR(64) NOT NULL, \
             domain VARCHAR(128) NOT NULL DEFAULT '', \
             password VARCHAR(64) NOT NULL DEFAULT '', \
             email_address VARCHAR(128) NOT NULL DEFAULT '', \
             datetime_created DATETIME, \
             confirmation VARCHAR(64) NOT NULL DEFAULT '', \
             ha1 VARCHAR(128) NOT NULL DEFAULT '', \
             ha1b VARCHAR(128) NOT NULL DEFAULT '', \
             PRIMARY KEY (username, domain))",
        ),
        acc_like("missed_calls", d),
        usrloc_table("location"),
        usrloc_table("aliases"),
        String::from(
            "CREATE TABLE IF NOT EXISTS grp (\
             username VARCHAR(64) NOT NULL, \
             domain VARCHAR(128) NOT NULL DEFAULT '', \
             grp VARCHAR(64) NOT NULL, \
             last_modified DATETIME, \
             PRIMARY KEY (username, domain, grp))",
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS event (id {auto}, \
             username VARCHAR(64) NOT NULL DEFAULT '', \
             domain VARCHAR(128) NOT NULL DEFAULT '', \
             uri VARCHAR(255) NOT NULL DEFAULT '', \
             description VARCHAR(255) NOT NULL DEFAULT '')"
        ),
        String::from(
            "CREATE TABLE IF NOT EXISTS active_sessions (\
             sid VARCHAR(64) NOT NULL PRIMARY KEY, \
             name VARCHAR(32) NOT NULL DEFAULT '', \
             val TEXT, \
             changed VARCHAR(14) NOT NULL DEFAULT '')",
        ),
        acc_like("acc", d),
        String::from(
            "CREATE TABLE IF NOT EXISTS config (\
             attribute VARCHAR(32) NOT NULL, \
             value VARCHAR(128) NOT NULL DEFAULT '', \
             username VARCHAR(64) NOT NULL DEFAULT '', \
             domain VARCHAR(128) NOT NULL DEFAULT '', \
             modified DATETIME, \
             PRIMARY KEY (attribute, username, domain))",
        ),
        silo_table("silo", d),
        // Kamailio's dispatcher table (version 4), read by the dispatcher module.
        format!(
            "CREATE TABLE IF NOT EXISTS dispatcher (id {auto}, \
             setid INT NOT NULL DEFAULT 0, \
             destination VARCHAR(192) NOT NULL DEFAULT '', \
             flags INT NOT NULL DEFAULT 0, \
             priority INT NOT NULL DEFAULT 0, \
             attrs VARCHAR(198) NOT NULL DEFAULT '', \
             description VARCHAR(64) NOT NULL DEFAULT '')"
        ),
    ];
    for (t, n) in TABLE_VERSIONS {
        v.push(format!(
            "REPLACE INTO version (table_name, table_version) VALUES ('{t}', {n})"
        ));
    }
    v
}
