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
//! workers ([`crate::modules::ctx::Pool::Db`]); the script resumes with the answer.
//!
//! Return values as SER's: authorize is positive when the credentials are right, negative
//! when they are missing, wrong, for an unknown user, or carry a stale or foreign nonce (the
//! script then challenges; a challenge after a stale nonce says `stale=true`). Credentials
//! that do not parse, or lack `username`, `nonce`, `uri` or `response`, get a 400 and end
//! the script (0).
//!
//! Not here: `auth-int`, `MD5-sess`, consuming credentials, RPID.
//!
//! Layout: this file has the actions ([`AuthAction`]), their dispatch and the database
//! suspension they share; `exports` the four modules' export tables and binders, `params`
//! which module's parameter applies, `credentials` finding a request's credentials and realm,
//! `challenge` the nonces we hand out, `authorize` the subscriber-table check, `group`
//! membership, `uri` the To/From/Request-URI checks.

mod authorize;
mod challenge;
mod credentials;
mod exports;
mod group;
mod params;
mod uri;

pub use challenge::{secret, DEFAULT_NONCE_EXPIRE};
pub use exports::{register_auth, register_auth_db, register_group, register_uri};
pub use params::{db_url_for, needs_default_db, AuthSettings, GroupSettings};

use std::sync::Arc;

use crate::db::{Db, DbError};
pub use crate::modules::ctx::AuthUser;
use crate::modules::ctx::{MsgCtx, Pool, Resumed, Suspend};

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

impl MsgCtx<'_, '_> {
    pub(crate) fn auth_call(&mut self, a: &AuthAction, st: &AuthSettings) -> i32 {
        match a {
            AuthAction::Authorize { kind, realm, table } => self.authorize(st, *kind, realm, table),
            AuthAction::Challenge { kind, realm, qop } => self.challenge(st, *kind, realm, *qop),
            AuthAction::IsUser(name) => match &self.auth {
                Some(u) if u.user.eq_ignore_ascii_case(name) => 1,
                _ => -1,
            },
            AuthAction::CheckTo => self.check_user(self.msg.to().ok().map(|n| n.uri)),
            AuthAction::CheckFrom => self.check_user(self.msg.from().ok().map(|n| n.uri)),
            AuthAction::IsUserIn { source, group } => self.is_user_in(&st.group, *source, group),
            AuthAction::DoesUriExist => self.does_uri_exist(st),
        }
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
        let Some(db) = self.core.dbs.get(url) else {
            crate::error!(
                "{what}: database {} is not open",
                crate::db::redact(url.unwrap_or(&self.core.dbs.default_url))
            );
            return self.fail(500, "Server Internal Error");
        };
        let db2 = Arc::clone(&db);
        self.suspend = Some(Suspend::Work {
            pool: Pool::Db(db),
            work: Box::new(move || Resumed::Apply(work(&db2))),
        });
        ser_script::SUSPEND
    }

    fn db_failed(&mut self, what: &str, e: &DbError) -> i32 {
        crate::error!("{what}: {e}");
        self.fail(500, "Server Internal Error")
    }
}
