//! serctl's database commands (the seeds' `serctl add | passwd | rm | acl | alias | showdb`),
//! as functions over an open [`Db`] that return what serctl prints. `serctl` itself
//! (src/bin/serctl.rs) reads the environment (`DB_URL`, `SIP_DOMAIN`, `PW`), asks for the
//! password, and tries the running server's FIFO first for the in-memory usrloc tables.
//!
//! Credentials are bound to a realm: `add` and `passwd` store `ha1 = MD5(user:realm:pw)` and
//! `ha1b = MD5(user@domain:realm:pw)` with the realm and domain from `SIP_DOMAIN` (or from
//! `user@domain`), beside the password itself (for `calculate_ha1`).

use std::time::SystemTime;

use crate::db::{datetime, Db, Value};
use crate::modules::digest;

/// `aliases` rows never expire: SER's serctl used a far-future time (`FOREVER`).
pub const FOREVER: &str = "2037-12-31 23:59:59";

/// `user` or `user@domain` → (user, domain), the domain defaulting to `sip_domain`.
pub fn split_user(arg: &str, sip_domain: Option<&str>) -> Result<(String, String), String> {
    let (user, domain) = match arg.split_once('@') {
        Some((u, d)) => (u, Some(d)),
        None => (arg, sip_domain),
    };
    let Some(domain) = domain.filter(|d| !d.is_empty()) else {
        return Err(String::from(
            "SIP_DOMAIN is not set: set it to your realm (e.g. export SIP_DOMAIN=foo.bar)",
        ));
    };
    if user.is_empty() || user.contains([' ', '\'', '"', '\\', ':']) {
        return Err(format!("'{arg}' is not a user name"));
    }
    Ok((user.to_string(), domain.to_string()))
}

fn exists(db: &Db, user: &str, domain: &str) -> Result<bool, String> {
    db.with_conn(|c| {
        c.query(
            "SELECT username FROM subscriber WHERE username = ? AND domain = ?",
            &[user.into(), domain.into()],
        )
    })
    .map(|r| !r.is_empty())
    .map_err(|e| e.to_string())
}

fn hashes(user: &str, domain: &str, password: &str) -> (String, String) {
    (
        digest::ha1(user, domain, password),
        digest::ha1(&format!("{user}@{domain}"), domain, password),
    )
}

/// `serctl add <user> <password> <email>`.
pub fn add(
    db: &Db,
    user: &str,
    domain: &str,
    password: &str,
    email: &str,
) -> Result<String, String> {
    if exists(db, user, domain)? {
        return Err(String::from("user already exists"));
    }
    let (ha1, ha1b) = hashes(user, domain, password);
    let now = datetime(SystemTime::now());
    db.with_conn(|c| {
        c.exec(
            "INSERT INTO subscriber (username, domain, password, email_address, \
             datetime_created, datetime_modified, ha1, ha1b) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            &[
                user.into(),
                domain.into(),
                password.into(),
                email.into(),
                now.clone().into(),
                now.clone().into(),
                ha1.clone().into(),
                ha1b.clone().into(),
            ],
        )
    })
    .map_err(|e| e.to_string())?;
    Ok(String::from("new user added\n"))
}

/// `serctl passwd <user> <password>`.
pub fn passwd(db: &Db, user: &str, domain: &str, password: &str) -> Result<String, String> {
    if !exists(db, user, domain)? {
        return Err(String::from("non-existent user"));
    }
    let (ha1, ha1b) = hashes(user, domain, password);
    db.with_conn(|c| {
        c.exec(
            "UPDATE subscriber SET password = ?, ha1 = ?, ha1b = ?, datetime_modified = ? \
             WHERE username = ? AND domain = ?",
            &[
                password.into(),
                ha1.clone().into(),
                ha1b.clone().into(),
                datetime(SystemTime::now()).into(),
                user.into(),
                domain.into(),
            ],
        )
    })
    .map_err(|e| e.to_string())?;
    Ok(String::from("password change succeeded\n"))
}

/// `serctl rm <user>`: the subscriber and its group memberships (its contacts go through
/// the server, or [`rm_contacts`]).
pub fn rm(db: &Db, user: &str, domain: &str) -> Result<String, String> {
    if !exists(db, user, domain)? {
        return Err(String::from("non-existent user"));
    }
    db.with_conn(|c| {
        c.exec(
            "DELETE FROM grp WHERE username = ? AND (domain = ? OR domain = '')",
            &[user.into(), domain.into()],
        )?;
        c.exec(
            "DELETE FROM subscriber WHERE username = ? AND domain = ?",
            &[user.into(), domain.into()],
        )
    })
    .map_err(|e| e.to_string())?;
    Ok(String::from("user removed\n"))
}

/// The user's rows in a usrloc table (when no server answers on the FIFO).
pub fn rm_contacts(db: &Db, table: &str, user: &str) -> Result<u64, String> {
    check_table(table)?;
    db.with_conn(|c| {
        c.exec(
            &format!("DELETE FROM {table} WHERE username = ?"),
            &[user.into()],
        )
    })
    .map_err(|e| e.to_string())
}

fn check_table(t: &str) -> Result<(), String> {
    if crate::db::schema::is_identifier(t) {
        Ok(())
    } else {
        Err(format!("'{t}' is not a table name"))
    }
}

/// A mysql-client style table, as the seeds' serctl printed query results.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(v.chars().count());
            }
        }
    }
    let line: String = w.iter().fold(String::from("+"), |mut s, n| {
        s.push_str(&"-".repeat(n + 2));
        s.push('+');
        s
    });
    let row = |vals: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for (v, n) in vals.zip(&w) {
            s.push_str(&format!(" {v:<n$} |"));
        }
        s
    };
    let mut out = format!("{line}\n{}\n{line}\n", row(&mut headers.iter().copied()));
    for r in rows {
        out.push_str(&row(&mut r.iter().map(String::as_str)));
        out.push('\n');
    }
    if !rows.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn texts(rows: Vec<Vec<Value>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|r| r.iter().map(Value::text).collect())
        .collect()
}

/// `serctl acl show [user]`.
pub fn acl_show(db: &Db, user: Option<&str>) -> Result<String, String> {
    let rows = db
        .with_conn(|c| match user {
            Some(u) => c.query(
                "SELECT username, grp, last_modified FROM grp WHERE username = ? ORDER BY grp",
                &[u.into()],
            ),
            None => c.query(
                "SELECT username, grp, last_modified FROM grp ORDER BY username, grp",
                &[],
            ),
        })
        .map_err(|e| e.to_string())?;
    Ok(table(&["user", "grp", "last_modified"], &texts(rows)))
}

/// `serctl acl grant <user> <group>`: prints the user's groups afterwards, as SER's did.
pub fn acl_grant(db: &Db, user: &str, domain: &str, group: &str) -> Result<String, String> {
    if group.is_empty() {
        return Err(String::from("acl grant: no group"));
    }
    db.with_conn(|c| {
        c.exec(
            "REPLACE INTO grp (username, domain, grp, last_modified) VALUES (?, ?, ?, ?)",
            &[
                user.into(),
                domain.into(),
                group.into(),
                datetime(SystemTime::now()).into(),
            ],
        )
    })
    .map_err(|e| e.to_string())?;
    acl_show(db, Some(user))
}

/// `serctl acl revoke <user> [group]`.
pub fn acl_revoke(db: &Db, user: &str, group: Option<&str>) -> Result<String, String> {
    db.with_conn(|c| match group {
        Some(g) => c.exec(
            "DELETE FROM grp WHERE username = ? AND grp = ?",
            &[user.into(), g.into()],
        ),
        None => c.exec("DELETE FROM grp WHERE username = ?", &[user.into()]),
    })
    .map_err(|e| e.to_string())?;
    acl_show(db, Some(user))
}

const UL_COLUMNS: &[&str] = &[
    "username", "domain", "contact", "expires", "q", "callid", "cseq",
];

fn ul_rows(db: &Db, table: &str, user: Option<&str>) -> Result<Vec<Vec<String>>, String> {
    check_table(table)?;
    let sql = format!(
        "SELECT {} FROM {table}{} ORDER BY username, contact",
        UL_COLUMNS.join(", "),
        if user.is_some() {
            " WHERE username = ?"
        } else {
            ""
        }
    );
    let args: Vec<Value> = user.map(Value::from).into_iter().collect();
    db.with_conn(|c| c.query(&sql, &args))
        .map(texts)
        .map_err(|e| e.to_string())
}

/// `serctl showdb [user]`: the location rows in the database.
pub fn showdb(db: &Db, user: Option<&str>) -> Result<String, String> {
    Ok(table(UL_COLUMNS, &ul_rows(db, "location", user)?))
}

/// `serctl alias add <alias> <uri>` straight into the database.
pub fn alias_add(db: &Db, alias: &str, uri: &str) -> Result<String, String> {
    if ser_parser::parse_uri(uri).is_err() {
        return Err(format!("'{uri}' is not a SIP URI"));
    }
    db.with_conn(|c| {
        c.exec(
            "REPLACE INTO aliases (username, domain, contact, expires, q, callid, cseq, \
             last_modified) VALUES (?, '', ?, ?, 1.0, 'serctl', 1, ?)",
            &[
                alias.into(),
                uri.into(),
                FOREVER.into(),
                datetime(SystemTime::now()).into(),
            ],
        )
    })
    .map_err(|e| e.to_string())?;
    Ok(String::new())
}

/// `serctl alias show [alias]` from the database.
pub fn alias_show(db: &Db, alias: Option<&str>) -> Result<String, String> {
    let rows = ul_rows(db, "aliases", alias)?;
    if alias.is_some() && rows.is_empty() {
        return Err(String::from("404 alias not found"));
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().step_by(2).take(2).collect())
        .collect();
    Ok(table(&["alias", "uri"], &rows))
}

/// `serctl alias rm <alias>` from the database.
pub fn alias_rm(db: &Db, alias: &str) -> Result<String, String> {
    match rm_contacts(db, "aliases", alias)? {
        0 => Err(String::from("404 alias not found")),
        _ => Ok(String::new()),
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups() {
        let dir = std::env::temp_dir().join(format!("ser-ctl-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let db = Db::open(&format!("sqlite://{}", dir.join("t.db").display()), 0).expect("db");
        db.init_schema().expect("schema");
        assert_eq!(
            split_user("john", None),
            Err(String::from(
                "SIP_DOMAIN is not set: set it to your realm (e.g. export SIP_DOMAIN=foo.bar)"
            ))
        );
        let (u, d) = split_user("john", Some("foo.bar")).expect("user");
        assert_eq!(
            add(&db, &u, &d, "pw", "j@foo.bar"),
            Ok("new user added\n".into())
        );
        assert_eq!(
            add(&db, &u, &d, "pw", "j@foo.bar"),
            Err("user already exists".into())
        );
        let ha1 = db
            .with_conn(|c| c.query("SELECT ha1, ha1b FROM subscriber", &[]))
            .expect("select");
        assert_eq!(
            texts(ha1),
            vec![vec![
                digest::ha1("john", "foo.bar", "pw"),
                digest::ha1("john@foo.bar", "foo.bar", "pw")
            ]]
        );
        assert_eq!(
            passwd(&db, &u, &d, "x"),
            Ok("password change succeeded\n".into())
        );
        assert_eq!(
            passwd(&db, "nobody", &d, "x"),
            Err("non-existent user".into())
        );
        let shown = acl_grant(&db, &u, &d, "int").expect("grant");
        assert!(shown.starts_with("+------+-----+"), "{shown}");
        assert!(shown.contains("| john | int |"), "{shown}");
        assert!(acl_revoke(&db, &u, None).expect("revoke").lines().count() == 3);
        assert_eq!(rm(&db, &u, &d), Ok("user removed\n".into()));
        assert_eq!(
            alias_add(&db, "boss", "sip:john@foo.bar"),
            Ok(String::new())
        );
        assert!(alias_show(&db, Some("boss"))
            .expect("show")
            .contains("| boss  | sip:john@foo.bar |"));
        assert_eq!(alias_rm(&db, "boss"), Ok(String::new()));
        assert!(alias_rm(&db, "boss").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
