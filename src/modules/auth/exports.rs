//! The export tables of modules auth, auth_db, group and uri (functions, with the route kinds
//! allowed, and parameters), and the binders that check each function's arguments at load
//! time and turn them into an [`AuthAction`].
//!
//! Nothing here runs per message. A name already exported by a module loaded earlier is not
//! exported again ([`once`]), so the 0.8.0 and 0.8.11+ module shapes both load.

use ser_script::{Arg, BindCtx, FnEntry, KindSet};

use std::sync::Arc;

use super::{AuthAction, AuthKind, AuthSettings, UserSource};
use crate::db::schema::is_identifier;
use crate::modules::core::f;
use crate::modules::{arg_int, arg_str, Action, Exports, ParamDef, ParamKind, Params};

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

/// An auth action with the family's parameters, resolved now (see [`AuthSettings`]).
fn auth(c: &BindCtx<'_>, a: AuthAction) -> Result<Action, String> {
    let settings = match c.host::<Params>() {
        Some(p) => AuthSettings::from_params(p)?,
        None => AuthSettings::from_params(&Params::default())?,
    };
    Ok(Action::Auth(a, Arc::new(settings)))
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
        f("is_in_group", 1, 1, KindSet::REQUEST, |a, c| {
            let group = a.first().map(arg_str).transpose()?.unwrap_or_default();
            auth(
                c,
                AuthAction::IsUserIn {
                    source: UserSource::Credentials,
                    group,
                },
            )
        }),
    );
}

fn check_fns(ex: &mut Exports) {
    once(
        ex,
        f("check_to", 0, 0, KindSet::REQUEST, |_, c| {
            auth(c, AuthAction::CheckTo)
        }),
    );
    once(
        ex,
        f("check_from", 0, 0, KindSet::REQUEST, |_, c| {
            auth(c, AuthAction::CheckFrom)
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
        f("is_in_group", 1, 1, KindSet::REQUEST, |a, c| {
            let group = a.first().map(arg_str).transpose()?.unwrap_or_default();
            auth(
                c,
                AuthAction::IsUserIn {
                    source: UserSource::Credentials,
                    group,
                },
            )
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
        f("does_uri_exist", 0, 0, KindSet::REQUEST, |_, c| {
            auth(c, AuthAction::DoesUriExist)
        }),
    );
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
    auth(c, AuthAction::Authorize { kind, realm, table })
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
    auth(c, AuthAction::Challenge { kind, realm, qop })
}

fn bind_is_user(a: &[Arg], c: &BindCtx<'_>) -> Result<Action, String> {
    let name = a.first().map(arg_str).transpose()?.unwrap_or_default();
    auth(c, AuthAction::IsUser(name))
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
    auth(c, AuthAction::IsUserIn { source, group })
}
