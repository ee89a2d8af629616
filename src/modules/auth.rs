//! Modules auth, auth_db, group and uri: digest authentication of requests, who the request
//! proved to be, and group membership.
//!
//! SER split these over the 0.8 series, and the seeds show both shapes, so both load:
//! - SER 0.8.0-0.8.10 (the seeds' `gateway-acl-0.8.cfg`, `replication.cfg`): `auth` alone
//!   has everything, with `modparam("auth", "db_url" | "calculate_ha1" | "password_column")`.
//! - SER 0.8.11+ (`gateway-acl.cfg`): `auth` has the challenges and the nonces
//!   (`www_challenge`, `proxy_challenge`; params `secret`, `nonce_expire`); `auth_db` has
//!   `www_authorize`, `proxy_authorize`, `is_user`, `check_to`, `check_from`, `is_in_group`
//!   (params `db_url`, `calculate_ha1`, `password_column`, `password_column_2`,
//!   `user_column`, `domain_column`); `group` has `is_user_in` (params `db_url`, `table`,
//!   `user_column`, `domain_column`, `group_column`, `use_domain`); `uri` has `check_to`,
//!   `check_from`, `does_uri_exist`.
//!
//! Each module exports the functions it has unless a module loaded before it already did;
//! every name runs the same code. A parameter is read from the module that owns the
//! function, then from `auth` (0.8); `db_url` of `group` and `uri` also from `auth_db`.
//!
//! The digest and nonce arithmetic is sans-IO in [`super::digest`]. Database lookups never
//! run on a shard: the action suspends the script and the query runs on the database's
//! workers ([`crate::route::Pool::Db`]); the script resumes with the answer.
//!
//! Return values as SER's: authorize is positive when the credentials are right, negative
//! when they are missing, wrong, for an unknown user, or carry a stale or foreign nonce (the
//! script then challenges; a challenge after a stale nonce says `stale=true`). Credentials
//! that do not parse, or lack `username`, `nonce`, `uri` or `response`, get a 400 and end
//! the script (0).
//!
//! Not here: `auth-int`, `MD5-sess`, consuming credentials, RPID.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ser_parser::{DigestCredentials, HeaderName, Method};
use ser_script::{Arg, BindCtx, FnEntry, KindSet};

use super::core::f;
use super::digest::{self, NonceCheck};
use super::Action;
use super::{arg_int, arg_str, Exports, ParamDef, ParamKind, Params};
use crate::db::schema::is_identifier;
use crate::db::{Db, DbError, Row, Value};
pub use crate::route::AuthUser;
use crate::route::{MsgCtx, Pool, Resumed, Suspend};

/// `nonce_expire` when unset: seconds a nonce is good for.
pub const DEFAULT_NONCE_EXPIRE: i64 = 300;

/// Which header pair: `WWW-Authenticate`/`Authorization` (401) or
/// `Proxy-Authenticate`/`Proxy-Authorization` (407).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Www,
    Proxy,
}

/// Where `is_user_in` takes the user from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSource {
    RequestUri,
    To,
    From,
    Credentials,
}

/// The auth modules' actions, arguments checked at load time.
#[derive(Debug, Clone)]
pub enum AuthAction {
    Authorize {
        kind: AuthKind,
        realm: String,
        table: String,
    },
    Challenge {
        kind: AuthKind,
        realm: String,
        qop: bool,
    },
    IsUser(String),
    CheckTo,
    CheckFrom,
    IsUserIn {
        source: UserSource,
        group: String,
    },
    DoesUriExist,
}

const AUTH_DB_PARAMS: &[(&str, ParamKind)] = &[
    ("db_url", ParamKind::Str),
    ("calculate_ha1", ParamKind::Int),
    ("password_column", ParamKind::Str),
    ("password_column_2", ParamKind::Str),
    ("user_column", ParamKind::Str),
    ("domain_column", ParamKind::Str),
];

const GROUP_PARAMS: &[(&str, ParamKind)] = &[
    ("db_url", ParamKind::Str),
    ("table", ParamKind::Str),
    ("user_column", ParamKind::Str),
    ("domain_column", ParamKind::Str),
    ("group_column", ParamKind::Str),
    ("use_domain", ParamKind::Int),
];

fn params(ex: &mut Exports, module: &'static str, list: &[(&'static str, ParamKind)]) {
    for (name, kind) in list {
        ex.param(module, ParamDef { name, kind: *kind });
    }
}

/// Registers `e` unless a module loaded earlier already exported that name.
fn once(ex: &mut Exports, e: FnEntry<Action>) {
    if ex.registry.get_function(e.name).is_none() {
        ex.function(e);
    }
}

fn authorize_fns(ex: &mut Exports) {
    once(
        ex,
        f("www_authorize", 2, 2, KindSet::REQUEST, |a, c| {
            bind_authorize(a, c, AuthKind::Www)
        }),
    );
    once(
        ex,
        f("proxy_authorize", 2, 2, KindSet::REQUEST, |a, c| {
            bind_authorize(a, c, AuthKind::Proxy)
        }),
    );
    once(ex, f("is_user", 1, 1, KindSet::REQUEST, bind_is_user));
    check_fns(ex);
    once(
        ex,
        f("is_in_group", 1, 1, KindSet::REQUEST, |a, _| {
            let group = a.first().map(arg_str).transpose()?.unwrap_or_default();
            Ok(Action::Auth(AuthAction::IsUserIn {
                source: UserSource::Credentials,
                group,
            }))
        }),
    );
}

fn check_fns(ex: &mut Exports) {
    once(
        ex,
        f("check_to", 0, 0, KindSet::REQUEST, |_, _| {
            Ok(Action::Auth(AuthAction::CheckTo))
        }),
    );
    once(
        ex,
        f("check_from", 0, 0, KindSet::REQUEST, |_, _| {
            Ok(Action::Auth(AuthAction::CheckFrom))
        }),
    );
}

fn group_fns(ex: &mut Exports) {
    once(ex, f("is_user_in", 2, 2, KindSet::REQUEST, bind_is_user_in));
}

/// Module auth: challenges and nonces; and, as in SER 0.8.0-0.8.10, everything else.
pub fn register_auth(ex: &mut Exports) {
    once(
        ex,
        f("www_challenge", 2, 2, KindSet::REQUEST, |a, c| {
            bind_challenge(a, c, AuthKind::Www)
        }),
    );
    once(
        ex,
        f("proxy_challenge", 2, 2, KindSet::REQUEST, |a, c| {
            bind_challenge(a, c, AuthKind::Proxy)
        }),
    );
    ex.param(
        "auth",
        ParamDef {
            name: "secret",
            kind: ParamKind::Str,
        },
    );
    ex.param(
        "auth",
        ParamDef {
            name: "nonce_expire",
            kind: ParamKind::Int,
        },
    );
    params(ex, "auth", AUTH_DB_PARAMS);
    authorize_fns(ex);
    group_fns(ex);
}

/// Module auth_db (SER 0.8.11+).
pub fn register_auth_db(ex: &mut Exports) {
    params(ex, "auth_db", AUTH_DB_PARAMS);
    authorize_fns(ex);
}

/// Module group.
pub fn register_group(ex: &mut Exports) {
    params(ex, "group", GROUP_PARAMS);
    group_fns(ex);
    // SER 0.8's group module had is_in_group too (the credentials' user).
    once(
        ex,
        f("is_in_group", 1, 1, KindSet::REQUEST, |a, _| {
            let group = a.first().map(arg_str).transpose()?.unwrap_or_default();
            Ok(Action::Auth(AuthAction::IsUserIn {
                source: UserSource::Credentials,
                group,
            }))
        }),
    );
}

/// Module uri: `check_to`, `check_from`, `does_uri_exist` (the Request-URI's user is a
/// subscriber).
pub fn register_uri(ex: &mut Exports) {
    params(
        ex,
        "uri",
        &[("db_url", ParamKind::Str), ("use_domain", ParamKind::Int)],
    );
    check_fns(ex);
    once(
        ex,
        f("does_uri_exist", 0, 0, KindSet::REQUEST, |_, _| {
            Ok(Action::Auth(AuthAction::DoesUriExist))
        }),
    );
}

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

fn bind_authorize(a: &[Arg], c: &BindCtx<'_>, kind: AuthKind) -> Result<Action, String> {
    let realm = a.first().map(arg_str).transpose()?.unwrap_or_default();
    let table = a.get(1).map(arg_str).transpose()?.unwrap_or_default();
    if !is_identifier(&table) {
        return Err(c.fail_at(1, format!("'{table}' is not a table name")));
    }
    if realm.contains(['"', '\\', '\r', '\n']) {
        return Err(c.fail_at(0, "a realm cannot contain quotes, backslashes or line ends"));
    }
    Ok(Action::Auth(AuthAction::Authorize { kind, realm, table }))
}

fn bind_challenge(a: &[Arg], c: &BindCtx<'_>, kind: AuthKind) -> Result<Action, String> {
    let realm = a.first().map(arg_str).transpose()?.unwrap_or_default();
    if realm.contains(['"', '\\', '\r', '\n']) {
        return Err(c.fail_at(0, "a realm cannot contain quotes, backslashes or line ends"));
    }
    let qop = match a.get(1) {
        Some(q) => arg_int(q).map_err(|e| c.fail_at(1, format!("qop: {e} (\"0\" or \"1\")")))? != 0,
        None => false,
    };
    Ok(Action::Auth(AuthAction::Challenge { kind, realm, qop }))
}

fn bind_is_user(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let name = a.first().map(arg_str).transpose()?.unwrap_or_default();
    Ok(Action::Auth(AuthAction::IsUser(name)))
}

fn bind_is_user_in(a: &[Arg], c: &BindCtx<'_>) -> Result<Action, String> {
    let src = a.first().map(arg_str).transpose()?.unwrap_or_default();
    let source = match src.to_ascii_lowercase().as_str() {
        "request-uri" | "ruri" => UserSource::RequestUri,
        "to" => UserSource::To,
        "from" => UserSource::From,
        "credentials" => UserSource::Credentials,
        _ => {
            return Err(c.fail_at(
                0,
                format!("'{src}': expected \"Request-URI\", \"To\", \"From\" or \"Credentials\""),
            ))
        }
    };
    let group = a.get(1).map(arg_str).transpose()?.unwrap_or_default();
    Ok(Action::Auth(AuthAction::IsUserIn { source, group }))
}

// ---- parameters at run time ----

fn p_str<'p>(params: &'p Params, chain: &[&str], name: &str) -> Option<&'p str> {
    chain.iter().find_map(|m| params.str(m, name))
}

fn p_int(params: &Params, chain: &[&str], name: &str) -> Option<i64> {
    chain.iter().find_map(|m| params.int(m, name))
}

/// A column or table name from a parameter: a plain identifier, else `default`.
fn ident<'a>(v: Option<&'a str>, default: &'a str) -> Result<&'a str, String> {
    let v = v.unwrap_or(default);
    if is_identifier(v) {
        Ok(v)
    } else {
        Err(format!("'{v}' is not a column or table name"))
    }
}

static RANDOM_SECRET: OnceLock<String> = OnceLock::new();

/// The nonce secret: `modparam("auth", "secret")`, else one made at start (a notice says
/// so: nonces then neither survive a restart nor verify at a peer).
pub fn secret(params: &Params) -> &str {
    if let Some(s) = params.str("auth", "secret").filter(|s| !s.is_empty()) {
        return s;
    }
    RANDOM_SECRET.get_or_init(|| {
        crate::notice!(
            "auth: no secret set (modparam(\"auth\", \"secret\", ...)); using a random one: \
             nonces will not verify at another server or after a restart"
        );
        format!("{:032x}", rand::random::<u128>())
    })
}

fn nonce_expire(params: &Params) -> u64 {
    params
        .int("auth", "nonce_expire")
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_NONCE_EXPIRE)
        .unsigned_abs()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The credentials for a realm among a request's Authorization (or Proxy-Authorization)
/// headers.
enum Found<'b> {
    None,
    /// A header that does not parse (and none for our realm that does).
    Malformed,
    Creds(DigestCredentials<'b>),
}

fn find_credentials<'b>(msg: &ser_parser::Message<'b>, kind: AuthKind, realm: &str) -> Found<'b> {
    let name = match kind {
        AuthKind::Www => HeaderName::Authorization,
        AuthKind::Proxy => HeaderName::ProxyAuthorization,
    };
    let mut malformed = false;
    for h in msg.headers_named(name) {
        match ser_parser::parse_credentials(h.value, name) {
            Ok(c) if c.realm.is_some_and(|r| r.eq_ignore_ascii_case(realm)) => {
                return Found::Creds(c)
            }
            Ok(_) => {}
            Err(e) if e.kind() == ser_parser::ErrorKind::NotDigest => {}
            Err(_) => malformed = true,
        }
    }
    if malformed {
        Found::Malformed
    } else {
        Found::None
    }
}

/// The user and host of a SIP URI (empty when it has none).
fn user_host(uri: &str) -> Option<(String, String)> {
    let u = ser_parser::parse_uri(uri).ok()?;
    Some((u.user.unwrap_or("").to_string(), u.host_str.to_string()))
}

/// Everything the worker needs to check one set of credentials.
struct Check {
    sql: String,
    args: Vec<Value>,
    calculate_ha1: bool,
    /// As sent: the HA1 of `calculate_ha1` is over it.
    username: String,
    user: String,
    realm: String,
    method: String,
    uri: String,
    nonce: String,
    qop: Option<(String, String, String)>,
    response: String,
}

impl Check {
    /// Compares the credentials with the row found (runs on a database worker).
    fn verify(&self, rows: &[Row]) -> bool {
        let Some(stored) = rows.first().and_then(|r| r.first()).map(Value::text) else {
            return false;
        };
        let ha1 = if self.calculate_ha1 {
            digest::ha1(&self.username, &self.realm, &stored)
        } else {
            stored
        };
        if ha1.is_empty() {
            return false;
        }
        let r = digest::Response {
            method: &self.method,
            uri: &self.uri,
            nonce: &self.nonce,
            qop: self
                .qop
                .as_ref()
                .map(|(q, nc, cn)| (q.as_str(), nc.as_str(), cn.as_str())),
        };
        digest::check_response(&ha1, &r, &self.response)
    }
}

impl MsgCtx<'_, '_> {
    pub(crate) fn auth_call(&mut self, a: &AuthAction) -> i32 {
        match a {
            AuthAction::Authorize { kind, realm, table } => self.authorize(*kind, realm, table),
            AuthAction::Challenge { kind, realm, qop } => self.challenge(*kind, realm, *qop),
            AuthAction::IsUser(name) => match &self.auth {
                Some(u) if u.user.eq_ignore_ascii_case(name) => 1,
                _ => -1,
            },
            AuthAction::CheckTo => self.check_user(self.msg.to().ok().map(|n| n.uri)),
            AuthAction::CheckFrom => self.check_user(self.msg.from().ok().map(|n| n.uri)),
            AuthAction::IsUserIn { source, group } => self.is_user_in(*source, group),
            AuthAction::DoesUriExist => self.does_uri_exist(),
        }
    }

    /// The realm of a challenge or check: the script's, or for "" the request's domain
    /// (SER: the To's for REGISTER, which names the user being registered, else the From's).
    fn auth_realm(&self, realm: &str) -> String {
        if !realm.is_empty() {
            return realm.to_string();
        }
        let hdr = if matches!(self.msg.method(), Some(Method::Register)) {
            self.msg.to()
        } else {
            self.msg.from()
        };
        hdr.ok()
            .and_then(|n| user_host(n.uri))
            .map(|(_, h)| h)
            .or_else(|| user_host(self.current_uri()).map(|(_, h)| h))
            .unwrap_or_default()
    }

    /// 400 for credentials we cannot even read; ends the script (0), as SER.
    fn bad_credentials(&mut self, why: &str) -> i32 {
        crate::info!("auth: malformed credentials from {}: {why}", self.at.src);
        self.sl_reply_with_headers(400, b"Bad Request", "");
        0
    }

    fn authorize(&mut self, kind: AuthKind, realm: &str, table: &str) -> i32 {
        let realm = self.auth_realm(realm);
        let creds = match find_credentials(self.msg, kind, &realm) {
            Found::None => return -1,
            Found::Malformed => return self.bad_credentials("does not parse"),
            Found::Creds(c) => c,
        };
        let (Some(username), Some(nonce), Some(uri), Some(response)) =
            (creds.username, creds.nonce, creds.uri, creds.response)
        else {
            return self.bad_credentials("username, nonce, uri or response missing");
        };
        if creds
            .algorithm
            .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
        {
            return -1;
        }
        let qop = match creds.qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => match (creds.nc, creds.cnonce) {
                (Some(nc), Some(cn)) => Some((q.to_string(), nc.to_string(), cn.to_string())),
                _ => return self.bad_credentials("qop without nc or cnonce"),
            },
            // auth-int and others: not supported, challenge again.
            Some(_) => return -1,
        };
        match digest::check_nonce(nonce, secret(&self.core.params), unix_now()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                crate::debug!("auth: stale nonce from {}", self.at.src);
                return -1;
            }
            NonceCheck::Invalid => {
                crate::info!("auth: a nonce that is not ours from {}", self.at.src);
                return -1;
            }
        }
        let user = username.split('@').next().unwrap_or(username).to_string();
        if user.is_empty() {
            return -1;
        }
        let chain = ["auth_db", "auth"];
        let p = &self.core.params;
        let calculate_ha1 = p_int(p, &chain, "calculate_ha1").unwrap_or(0) != 0;
        let cols = (|| {
            let pw = if calculate_ha1 {
                ident(p_str(p, &chain, "password_column"), "password")?
            } else if username.contains('@') {
                ident(p_str(p, &chain, "password_column_2"), "ha1b")?
            } else {
                ident(p_str(p, &chain, "password_column"), "ha1")?
            };
            Ok::<_, String>((
                pw,
                ident(p_str(p, &chain, "user_column"), "username")?,
                ident(p_str(p, &chain, "domain_column"), "domain")?,
            ))
        })();
        let (pw_col, user_col, domain_col) = match cols {
            Ok(c) => c,
            Err(e) => {
                crate::error!("auth: {e}");
                return self.fail(500, "Server Internal Error");
            }
        };
        let check = Check {
            sql: format!("SELECT {pw_col} FROM {table} WHERE {user_col} = ? AND {domain_col} = ?"),
            args: vec![Value::from(user.as_str()), Value::from(realm.as_str())],
            calculate_ha1,
            username: username.to_string(),
            user,
            realm,
            method: self
                .msg
                .method()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            uri: uri.to_string(),
            nonce: nonce.to_string(),
            qop,
            response: response.to_string(),
        };
        let url = db_url_for(&self.core.params, "auth_db").map(str::to_string);
        self.db_suspend(url.as_deref(), "authorize", move |db| {
            let rows = db.with_conn(|c| c.query(&check.sql, &check.args));
            let ok = rows.map(|r| check.verify(&r));
            let user = AuthUser {
                user: check.user,
                realm: check.realm,
            };
            Box::new(move |m: &mut MsgCtx<'_, '_>| match ok {
                Ok(true) => {
                    m.auth = Some(user);
                    1
                }
                Ok(false) => {
                    crate::info!(
                        "auth: wrong credentials for '{}' in realm '{}' from {}",
                        user.user,
                        user.realm,
                        m.at.src
                    );
                    -1
                }
                Err(e) => m.db_failed("authorize", &e),
            })
        })
    }

    /// Runs `work` with the database off the shard, and the closure it returns on the shard.
    fn db_suspend(
        &mut self,
        url: Option<&str>,
        what: &str,
        work: impl FnOnce(&Db) -> Box<dyn for<'x, 'y> FnOnce(&mut MsgCtx<'x, 'y>) -> i32 + Send>
            + Send
            + 'static,
    ) -> i32 {
        if !self.can_suspend {
            crate::error!("{what}: the script cannot wait for the database here");
            return self.fail(500, "Server Internal Error");
        }
        let Some(db) = self.core.db(url) else {
            crate::error!(
                "{what}: database {} is not open",
                crate::db::redact(url.unwrap_or(&self.core.dbs.default_url))
            );
            return self.fail(500, "Server Internal Error");
        };
        let db2 = Arc::clone(&db);
        self.suspend = Some(Suspend {
            pool: Pool::Db(db),
            work: Box::new(move || Resumed::Apply(work(&db2))),
        });
        ser_script::SUSPEND
    }

    fn db_failed(&mut self, what: &str, e: &DbError) -> i32 {
        crate::error!("{what}: {e}");
        self.fail(500, "Server Internal Error")
    }

    fn challenge(&mut self, kind: AuthKind, realm: &str, qop: bool) -> i32 {
        let realm = self.auth_realm(realm);
        let now = unix_now();
        let secret = secret(&self.core.params);
        let stale = match find_credentials(self.msg, kind, &realm) {
            Found::Creds(c) => c
                .nonce
                .is_some_and(|n| digest::check_nonce(n, secret, now) == NonceCheck::Stale),
            _ => false,
        };
        let nonce = digest::make_nonce(
            now + nonce_expire(&self.core.params),
            rand::random::<u32>(),
            secret,
        );
        let value = digest::challenge_value(&realm, &nonce, qop, stale);
        let (code, reason, hdr): (u16, &[u8], &str) = match kind {
            AuthKind::Www => (401, b"Unauthorized", "WWW-Authenticate"),
            AuthKind::Proxy => (407, b"Proxy Authentication Required", "Proxy-Authenticate"),
        };
        self.sl_reply_with_headers(code, reason, &format!("{hdr}: {value}\r\n"))
    }

    /// check_to/check_from: the header's user is the authenticated one.
    fn check_user(&self, uri: Option<&str>) -> i32 {
        let (Some(auth), Some((user, _))) = (&self.auth, uri.and_then(user_host)) else {
            return -1;
        };
        if !user.is_empty() && user.eq_ignore_ascii_case(&auth.user) {
            1
        } else {
            -1
        }
    }

    fn is_user_in(&mut self, source: UserSource, group: &str) -> i32 {
        let (user, domain) = match source {
            UserSource::Credentials => match &self.auth {
                Some(a) => (a.user.clone(), a.realm.clone()),
                None => return -1,
            },
            UserSource::RequestUri => match user_host(self.current_uri()) {
                Some(x) => x,
                None => return -1,
            },
            UserSource::To | UserSource::From => {
                let h = if source == UserSource::To {
                    self.msg.to()
                } else {
                    self.msg.from()
                };
                match h.ok().and_then(|n| user_host(n.uri)) {
                    Some(x) => x,
                    None => return -1,
                }
            }
        };
        if user.is_empty() {
            return -1;
        }
        let chain = ["group", "auth"];
        let p = &self.core.params;
        let use_domain = p_int(p, &chain, "use_domain").unwrap_or(0) != 0;
        let names = (|| {
            Ok::<_, String>((
                ident(p.str("group", "table"), "grp")?,
                ident(p.str("group", "user_column"), "username")?,
                ident(p.str("group", "domain_column"), "domain")?,
                ident(p.str("group", "group_column"), "grp")?,
            ))
        })();
        let (table, ucol, dcol, gcol) = match names {
            Ok(n) => n,
            Err(e) => {
                crate::error!("group: {e}");
                return self.fail(500, "Server Internal Error");
            }
        };
        let mut sql = format!("SELECT {ucol} FROM {table} WHERE {ucol} = ? AND {gcol} = ?");
        let mut args = vec![Value::from(user), Value::from(group)];
        if use_domain {
            sql.push_str(&format!(" AND {dcol} = ?"));
            args.push(Value::from(domain));
        }
        let url = db_url_for(&self.core.params, "group").map(str::to_string);
        self.db_suspend(url.as_deref(), "is_user_in", move |db| {
            let r = db.with_conn(|c| c.query(&sql, &args));
            Box::new(move |m: &mut MsgCtx<'_, '_>| match r {
                Ok(rows) if !rows.is_empty() => 1,
                Ok(_) => -1,
                Err(e) => m.db_failed("is_user_in", &e),
            })
        })
    }

    fn does_uri_exist(&mut self) -> i32 {
        let Some((user, host)) = user_host(self.current_uri()) else {
            return -1;
        };
        if user.is_empty() {
            return -1;
        }
        let use_domain = self.core.params.int("uri", "use_domain").unwrap_or(0) != 0;
        let mut sql = String::from("SELECT username FROM subscriber WHERE username = ?");
        let mut args = vec![Value::from(user)];
        if use_domain {
            sql.push_str(" AND domain = ?");
            args.push(Value::from(host));
        }
        let url = db_url_for(&self.core.params, "uri").map(str::to_string);
        self.db_suspend(url.as_deref(), "does_uri_exist", move |db| {
            let r = db.with_conn(|c| c.query(&sql, &args));
            Box::new(move |m: &mut MsgCtx<'_, '_>| match r {
                Ok(rows) if !rows.is_empty() => 1,
                Ok(_) => -1,
                Err(e) => m.db_failed("does_uri_exist", &e),
            })
        })
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

    #[test]
    fn check_compares_with_the_stored_value() {
        let ha1 = digest::ha1("alice", "foo.bar", "pw");
        let nonce = digest::make_nonce(100, 1, "s");
        let resp = digest::expected_response(
            &ha1,
            &digest::Response {
                method: "REGISTER",
                uri: "sip:foo.bar",
                nonce: &nonce,
                qop: None,
            },
        );
        let mut c = Check {
            sql: String::new(),
            args: Vec::new(),
            calculate_ha1: false,
            username: "alice".into(),
            user: "alice".into(),
            realm: "foo.bar".into(),
            method: "REGISTER".into(),
            uri: "sip:foo.bar".into(),
            nonce,
            qop: None,
            response: resp,
        };
        assert!(c.verify(&[vec![Value::Text(ha1.clone())]]));
        assert!(!c.verify(&[]));
        assert!(!c.verify(&[vec![Value::Text(String::new())]]));
        c.calculate_ha1 = true;
        assert!(c.verify(&[vec![Value::Text("pw".into())]]));
        assert!(!c.verify(&[vec![Value::Text("wrong".into())]]));
    }
}
