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

/// The auth family's parameters, resolved once when the script loads (a bad column or table
/// name stops the load) and carried by every auth action: nothing is looked up per message.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Signs our nonces (`auth.secret`, else one random secret per process).
    pub secret: String,
    /// Seconds a nonce is good for (`auth.nonce_expire`).
    pub nonce_expire: u64,
    /// auth_db (0.8: auth): plain passwords in the table, HA1 computed per check.
    pub calculate_ha1: bool,
    /// The password (or HA1) column, and the HA1 column for `user@domain` usernames.
    pub password_column: String,
    pub password_column_2: String,
    pub user_column: String,
    pub domain_column: String,
    /// The databases of auth_db, group and uri (None: the default one).
    pub auth_db_url: Option<String>,
    pub group: GroupSettings,
    /// uri's `use_domain` and database.
    pub uri_use_domain: bool,
    pub uri_db_url: Option<String>,
}

/// The group module's table (`grp`) and columns, and whether the domain counts.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub table: String,
    pub user_column: String,
    pub domain_column: String,
    pub group_column: String,
    pub use_domain: bool,
    pub db_url: Option<String>,
}

impl AuthSettings {
    /// The settings `params` give; an error names the parameter value that is not a
    /// column or table name.
    pub fn from_params(p: &Params) -> Result<Self, String> {
        let chain = ["auth_db", "auth"];
        let calculate_ha1 = p_int(p, &chain, "calculate_ha1").unwrap_or(0) != 0;
        let own = |v: Result<&str, String>| v.map(str::to_string);
        let pw_default = if calculate_ha1 { "password" } else { "ha1" };
        Ok(Self {
            secret: super::challenge::secret(p).to_string(),
            nonce_expire: super::challenge::nonce_expire(p),
            calculate_ha1,
            password_column: own(ident(p_str(p, &chain, "password_column"), pw_default))?,
            password_column_2: own(ident(p_str(p, &chain, "password_column_2"), "ha1b"))?,
            user_column: own(ident(p_str(p, &chain, "user_column"), "username"))?,
            domain_column: own(ident(p_str(p, &chain, "domain_column"), "domain"))?,
            auth_db_url: db_url_for(p, "auth_db").map(str::to_string),
            group: GroupSettings {
                table: own(ident(p.str("group", "table"), "grp"))?,
                user_column: own(ident(p.str("group", "user_column"), "username"))?,
                domain_column: own(ident(p.str("group", "domain_column"), "domain"))?,
                group_column: own(ident(p.str("group", "group_column"), "grp"))?,
                use_domain: p_int(p, &["group", "auth"], "use_domain").unwrap_or(0) != 0,
                db_url: db_url_for(p, "group").map(str::to_string),
            },
            uri_use_domain: p.int("uri", "use_domain").unwrap_or(0) != 0,
            uri_db_url: db_url_for(p, "uri").map(str::to_string),
        })
    }
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
