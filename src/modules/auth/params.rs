//! Which parameter a function of this family reads: its own module's, then (SER 0.8) those
//! of `auth_db` and `auth` ([`db_url_for`], [`p_str`], [`p_int`]); table and column names
//! checked as identifiers ([`ident`]); whether the family needs the default database.
//!
//! It declares no parameters (that is [`super::exports`]) and opens no database.

use crate::db::schema::is_identifier;
use crate::modules::Params;

/// The `db_url` a module of this family uses: its own, then (0.8) the one given to `auth_db`
/// or `auth`; None: the default database.
pub fn db_url_for<'p>(params: &'p Params, module: &str) -> Option<&'p str> {
    let chain: &[&str] = match module {
        "auth_db" => &["auth_db", "auth"],
        "group" => &["group", "auth_db", "auth"],
        "uri" => &["uri", "auth_db", "auth"],
        _ => &["auth", "auth_db"],
    };
    chain.iter().find_map(|m| params.str(m, "db_url"))
}

/// Whether one of these modules, as loaded, keeps its data in the default database.
pub fn needs_default_db(params: &Params, modules: &[String]) -> bool {
    let loaded = |m: &str| modules.iter().any(|x| x == m);
    // auth alone is SER 0.8's all-in-one module; beside auth_db it only signs nonces.
    let db_users: &[&str] = if loaded("auth_db") {
        &["auth_db", "group", "uri"]
    } else {
        &["auth", "group", "uri"]
    };
    db_users
        .iter()
        .any(|m| loaded(m) && db_url_for(params, m).is_none())
}

pub(super) fn p_str<'p>(params: &'p Params, chain: &[&str], name: &str) -> Option<&'p str> {
    chain.iter().find_map(|m| params.str(m, name))
}

pub(super) fn p_int(params: &Params, chain: &[&str], name: &str) -> Option<i64> {
    chain.iter().find_map(|m| params.int(m, name))
}

/// A column or table name from a parameter: a plain identifier, else `default`.
pub(super) fn ident<'a>(v: Option<&'a str>, default: &'a str) -> Result<&'a str, String> {
    let v = v.unwrap_or(default);
    if is_identifier(v) {
        Ok(v)
    } else {
        Err(format!("'{v}' is not a column or table name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_url_chain() {
        let mut p = Params::default();
        assert_eq!(db_url_for(&p, "group"), None);
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(needs_default_db(&p, &m(&["sl", "auth"])));
        assert!(!needs_default_db(&p, &m(&["sl"])));
        p.set(
            "auth",
            "db_url",
            ser_script::Value::Str("sql://ser:x@h/ser".into()),
        );
        assert_eq!(db_url_for(&p, "group"), Some("sql://ser:x@h/ser"));
        assert!(!needs_default_db(&p, &m(&["auth"])));
        // auth beside auth_db only signs nonces; auth_db without a URL uses the default.
        assert!(needs_default_db(
            &Params::default(),
            &m(&["auth", "auth_db"])
        ));
    }
}
