//! serweb's queries on ser's database (the seeds' schema, ser's `db::schema`): logins against
//! `subscriber`'s HA1, the admin privilege from `grp`, call history from `acc` and
//! `missed_calls`, the `phonebook`, stored messages in `silo`, `aliases`, `reserved`.
//! Account changes (add, passwd, rm, acl) are serctl's own functions (`ser::ctl_db`), so both
//! tools write the same rows.
//!
//! Every value goes in as a bound parameter (`?`); the only text spliced into SQL is a table
//! name from a fixed list ([`CallTable`]) and a LIMIT/OFFSET computed here from integers.
//! All of it blocks: handlers call it on tokio's blocking pool.

use ser::db::{Db, Value};
use std::collections::HashMap;

/// The group whose members are administrators. SER 0.8's serweb kept an admin flag in
/// subscriber's `perms` column; ser's schema has no such column, and `grp` is the seeds' ACL
/// (`serctl acl grant <user> admin`), so the privilege is membership in this group.
pub const ADMIN_GROUP: &str = "admin";
/// Rows per page of the call lists.
pub const PAGE: usize = 25;

fn err(e: ser::db::DbError) -> String {
    e.to_string()
}

fn text(r: &[Value], i: usize) -> String {
    r.get(i).map(Value::text).unwrap_or_default()
}

/// Checks a login: the subscriber's `ha1` against MD5(user:domain:password), the realm being
/// the domain (as `serctl add` stores it). Ok(Some(admin)) when it matches.
pub fn check_login(
    db: &Db,
    user: &str,
    domain: &str,
    password: &str,
) -> Result<Option<bool>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT ha1 FROM subscriber WHERE username = ? AND domain = ?",
                &[user.into(), domain.into()],
            )
        })
        .map_err(err)?;
    let Some(stored) = rows.first().map(|r| text(r, 0)) else {
        // Hash anyway, so a wrong user name costs what a wrong password costs.
        let _ = ser::modules::digest::ha1(user, domain, password);
        return Ok(None);
    };
    let given = ser::modules::digest::ha1(user, domain, password);
    if stored.is_empty() || !crate::session::same(&stored.to_ascii_lowercase(), &given) {
        return Ok(None);
    }
    is_admin(db, user, domain).map(Some)
}

/// Is the user in the [`ADMIN_GROUP`] (of their domain, or of every domain: `domain` '')?
pub fn is_admin(db: &Db, user: &str, domain: &str) -> Result<bool, String> {
    db.with_conn(|c| {
        c.query(
            "SELECT grp FROM grp WHERE username = ? AND grp = ? AND (domain = ? OR domain = '')",
            &[user.into(), ADMIN_GROUP.into(), domain.into()],
        )
    })
    .map(|r| !r.is_empty())
    .map_err(err)
}

/// User agents of a user's contacts as usrloc wrote them to `location` (db_mode 1 and 2):
/// contact URI → user agent.
pub fn user_agents(db: &Db, user: &str, domain: &str) -> Result<HashMap<String, String>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT contact, user_agent FROM location WHERE (username = ? AND \
                 (domain = ? OR domain = '')) OR username = ?",
                &[
                    user.into(),
                    domain.into(),
                    format!("{user}@{domain}").into(),
                ],
            )
        })
        .map_err(err)?;
    Ok(rows.iter().map(|r| (text(r, 0), text(r, 1))).collect())
}

/// The contacts in the database (when ser does not answer): (contact, expires time, UA).
pub fn stored_contacts(
    db: &Db,
    user: &str,
    domain: &str,
) -> Result<Vec<(String, String, String)>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT contact, expires, user_agent FROM location WHERE (username = ? AND \
                 (domain = ? OR domain = '')) OR username = ? ORDER BY expires DESC",
                &[
                    user.into(),
                    domain.into(),
                    format!("{user}@{domain}").into(),
                ],
            )
        })
        .map_err(err)?;
    Ok(rows
        .iter()
        .map(|r| (text(r, 0), text(r, 1), text(r, 2)))
        .collect())
}

/// The two call tables serweb shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTable {
    /// `missed_calls`: calls to the user that failed (acc's `db_missed_flag`).
    Missed,
    /// `acc`: completed transactions the user made or received (acc's `db_flag`).
    Acc,
}

impl CallTable {
    fn name(self) -> &'static str {
        match self {
            CallTable::Missed => "missed_calls",
            CallTable::Acc => "acc",
        }
    }
}

/// What the call lists filter on; empty fields filter nothing.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct CallFilter {
    /// `YYYY-MM-DD`, inclusive.
    #[serde(default)]
    pub from: String,
    /// `YYYY-MM-DD`, inclusive.
    #[serde(default)]
    pub to: String,
    /// A part of the other party's address.
    #[serde(default)]
    pub peer: String,
    /// 0-based.
    #[serde(default)]
    pub page: usize,
}

/// One row of `acc` or `missed_calls`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    pub time: String,
    pub method: String,
    pub from: String,
    pub to: String,
    pub status: String,
    pub callid: String,
    /// "in" or "out" from the user's side.
    pub direction: &'static str,
}

/// `%`, `_` and `!` taken literally in a LIKE pattern (`ESCAPE '!'`: not a backslash,
/// which MySQL's string literals would read as an escape themselves).
pub fn like_literal(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '!') {
            o.push('!');
        }
        o.push(ch);
    }
    o
}

fn valid_date(d: &str) -> bool {
    d.len() == 10
        && d.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// A user's calls, newest first, one page ([`PAGE`] rows) and whether there are more. Theirs
/// are the rows whose To or Request-URI names `sip:user@domain` (calls to them) and, in
/// `acc`, those acc wrote with their user name from their domain (calls they made).
pub fn calls(
    db: &Db,
    table: CallTable,
    user: &str,
    domain: &str,
    f: &CallFilter,
) -> Result<(Vec<Call>, bool), String> {
    // Their address in To or the Request-URI (a port may follow the domain).
    let to_me = format!("%sip:{}@{}%", like_literal(user), like_literal(domain));
    let mut sql = format!(
        "SELECT time, sip_method, sip_from, sip_to, sip_status, sip_callid, username FROM {} \
         WHERE (sip_to LIKE ? ESCAPE '!' OR i_uri LIKE ? ESCAPE '!'",
        table.name()
    );
    let mut params: Vec<Value> = vec![to_me.clone().into(), to_me.into()];
    if table == CallTable::Acc {
        sql.push_str(" OR (username = ? AND sip_from LIKE ? ESCAPE '!')");
        params.push(user.into());
        params.push(format!("%@{}%", like_literal(domain)).into());
    }
    sql.push(')');
    if valid_date(&f.from) {
        sql.push_str(" AND time >= ?");
        params.push(format!("{} 00:00:00", f.from).into());
    }
    if valid_date(&f.to) {
        sql.push_str(" AND time <= ?");
        params.push(format!("{} 23:59:59", f.to).into());
    }
    let peer = f.peer.trim();
    if !peer.is_empty() {
        let p = format!("%{}%", like_literal(peer));
        sql.push_str(" AND (sip_from LIKE ? ESCAPE '!' OR sip_to LIKE ? ESCAPE '!')");
        params.push(p.clone().into());
        params.push(p.into());
    }
    let page = f.page.min(100_000);
    sql.push_str(&format!(
        " ORDER BY time DESC, id DESC LIMIT {} OFFSET {}",
        PAGE + 1,
        page * PAGE
    ));
    let rows = db.with_conn(|c| c.query(&sql, &params)).map_err(err)?;
    let more = rows.len() > PAGE;
    let calls = rows
        .iter()
        .take(PAGE)
        .map(|r| {
            let to = text(r, 3);
            let outgoing = text(r, 6) == user && !to.contains(&format!("sip:{user}@"));
            Call {
                time: text(r, 0),
                method: text(r, 1),
                from: text(r, 2),
                to,
                status: text(r, 4),
                callid: text(r, 5),
                direction: if outgoing { "out" } else { "in" },
            }
        })
        .collect();
    Ok((calls, more))
}

/// One phonebook entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    pub fname: String,
    pub lname: String,
    pub sip_uri: String,
}

pub fn phonebook(db: &Db, user: &str, domain: &str) -> Result<Vec<Entry>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT id, fname, lname, sip_uri FROM phonebook WHERE username = ? AND \
                 domain = ? ORDER BY lname, fname, id",
                &[user.into(), domain.into()],
            )
        })
        .map_err(err)?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            id: r.first().and_then(Value::as_i64).unwrap_or(0),
            fname: text(r, 1),
            lname: text(r, 2),
            sip_uri: text(r, 3),
        })
        .collect())
}

/// The entry `id` if it is the user's (None: no such entry, or someone else's).
pub fn phonebook_entry(
    db: &Db,
    user: &str,
    domain: &str,
    id: i64,
) -> Result<Option<Entry>, String> {
    Ok(phonebook(db, user, domain)?
        .into_iter()
        .find(|e| e.id == id))
}

pub fn phonebook_add(
    db: &Db,
    user: &str,
    domain: &str,
    fname: &str,
    lname: &str,
    uri: &str,
) -> Result<(), String> {
    db.with_conn(|c| {
        c.exec(
            "INSERT INTO phonebook (username, domain, fname, lname, sip_uri) VALUES (?, ?, ?, ?, ?)",
            &[
                user.into(),
                domain.into(),
                fname.into(),
                lname.into(),
                uri.into(),
            ],
        )
    })
    .map(|_| ())
    .map_err(err)
}

/// Changes the user's entry `id`; false when it is not theirs.
pub fn phonebook_edit(
    db: &Db,
    user: &str,
    domain: &str,
    id: i64,
    fname: &str,
    lname: &str,
    uri: &str,
) -> Result<bool, String> {
    db.with_conn(|c| {
        c.exec(
            "UPDATE phonebook SET fname = ?, lname = ?, sip_uri = ? WHERE id = ? AND \
             username = ? AND domain = ?",
            &[
                fname.into(),
                lname.into(),
                uri.into(),
                id.into(),
                user.into(),
                domain.into(),
            ],
        )
    })
    .map(|n| n > 0)
    .map_err(err)
}

/// Deletes the user's entry `id`; false when it is not theirs.
pub fn phonebook_delete(db: &Db, user: &str, domain: &str, id: i64) -> Result<bool, String> {
    db.with_conn(|c| {
        c.exec(
            "DELETE FROM phonebook WHERE id = ? AND username = ? AND domain = ?",
            &[id.into(), user.into(), domain.into()],
        )
    })
    .map(|n| n > 0)
    .map_err(err)
}

/// A message msilo stored for the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub from: String,
    pub stored: String,
    pub expires: String,
    pub body: String,
}

/// The user's stored messages (msilo keys them by usrloc's AOR key: `user`, or `user@domain`
/// with use_domain), oldest first.
pub fn silo(db: &Db, user: &str, domain: &str) -> Result<Vec<Stored>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT src_addr, inc_time, exp_time, body FROM silo WHERE r_uri = ? OR \
                 r_uri = ? ORDER BY mid LIMIT 200",
                &[user.into(), format!("{user}@{domain}").into()],
            )
        })
        .map_err(err)?;
    Ok(rows
        .iter()
        .map(|r| Stored {
            from: text(r, 0),
            stored: text(r, 1),
            expires: text(r, 2),
            body: text(r, 3),
        })
        .collect())
}

/// Aliases that point at the user (`aliases` rows whose contact is their address).
pub fn aliases_of(db: &Db, user: &str, domain: &str) -> Result<Vec<String>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT username FROM aliases WHERE contact = ? OR contact = ? ORDER BY username",
                &[
                    format!("sip:{user}@{domain}").into(),
                    format!("<sip:{user}@{domain}>").into(),
                ],
            )
        })
        .map_err(err)?;
    Ok(rows.iter().map(|r| text(r, 0)).collect())
}

/// A subscriber as the admin list shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Subscriber {
    pub user: String,
    pub domain: String,
    pub email: String,
    pub created: String,
    pub groups: Vec<String>,
    pub aliases: Vec<String>,
}

pub fn subscribers(db: &Db) -> Result<Vec<Subscriber>, String> {
    let rows = db
        .with_conn(|c| {
            c.query(
                "SELECT username, domain, email_address, datetime_created FROM subscriber \
                 ORDER BY domain, username LIMIT 1000",
                &[],
            )
        })
        .map_err(err)?;
    let groups = db
        .with_conn(|c| c.query("SELECT username, domain, grp FROM grp ORDER BY grp", &[]))
        .map_err(err)?;
    let aliases = db
        .with_conn(|c| {
            c.query(
                "SELECT username, contact FROM aliases ORDER BY username",
                &[],
            )
        })
        .map_err(err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let (user, domain) = (text(r, 0), text(r, 1));
            let address = format!("sip:{user}@{domain}");
            Subscriber {
                groups: groups
                    .iter()
                    .filter(|g| {
                        text(g, 0) == user && (text(g, 1) == domain || text(g, 1).is_empty())
                    })
                    .map(|g| text(g, 2))
                    .collect(),
                aliases: aliases
                    .iter()
                    .filter(|a| text(a, 1).trim_matches(['<', '>']) == address)
                    .map(|a| text(a, 0))
                    .collect(),
                email: text(r, 2),
                created: text(r, 3),
                user,
                domain,
            }
        })
        .collect())
}

pub fn reserved(db: &Db) -> Result<Vec<String>, String> {
    let rows = db
        .with_conn(|c| c.query("SELECT user_name FROM reserved ORDER BY user_name", &[]))
        .map_err(err)?;
    Ok(rows.iter().map(|r| text(r, 0)).collect())
}

pub fn is_reserved(db: &Db, user: &str) -> Result<bool, String> {
    db.with_conn(|c| {
        c.query(
            "SELECT user_name FROM reserved WHERE user_name = ?",
            &[user.into()],
        )
    })
    .map(|r| !r.is_empty())
    .map_err(err)
}

pub fn reserve(db: &Db, name: &str, add: bool) -> Result<(), String> {
    db.with_conn(|c| {
        if add {
            c.exec(
                "REPLACE INTO reserved (user_name) VALUES (?)",
                &[name.into()],
            )
        } else {
            c.exec("DELETE FROM reserved WHERE user_name = ?", &[name.into()])
        }
    })
    .map(|_| ())
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(like_literal("a%b_c!d\\"), "a!%b!_c!!d\\");
        assert!(valid_date("2026-12-07"));
        assert!(!valid_date("2026-12-7"));
        assert!(!valid_date("2026-12-07' OR 1=1"));
    }
}
