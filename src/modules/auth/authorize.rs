//! `www_authorize` and `proxy_authorize`: the request's digest credentials checked against
//! the subscriber table. The nonce is checked on the shard; the stored HA1 (or password, with
//! `calculate_ha1`) is fetched and compared on a database worker ([`Check`]), and the
//! authenticated user is recorded for `is_user`, `check_to` and the rest.
//!
//! It does not challenge (that is [`super::challenge`]); `auth-int` and `MD5-sess` are
//! answered -1, so the script challenges again.

use super::challenge::unix_now;
use super::credentials::{find_credentials, Found};
use super::AuthKind;
use super::AuthSettings;
use crate::db::{Row, Value};
use crate::modules::ctx::{AuthUser, MsgCtx};
use crate::modules::digest::{self, NonceCheck};

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
    /// 400 for credentials we cannot even read; ends the script (0), as SER.
    fn bad_credentials(&mut self, why: &str) -> i32 {
        crate::info!("auth: malformed credentials from {}: {why}", self.at.src);
        self.sl_reply_with_headers(400, b"Bad Request", "");
        0
    }
    pub(super) fn authorize(
        &mut self,
        st: &AuthSettings,
        kind: AuthKind,
        realm: &str,
        table: &str,
    ) -> i32 {
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
        match digest::check_nonce(nonce, &st.secret, unix_now()) {
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
        let calculate_ha1 = st.calculate_ha1;
        let pw_col = if !calculate_ha1 && username.contains('@') {
            &st.password_column_2
        } else {
            &st.password_column
        };
        let (user_col, domain_col) = (&st.user_column, &st.domain_column);
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
        self.db_suspend(st.auth_db_url.as_deref(), "authorize", move |db| {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
