//! The uri module's checks: `check_to`/`check_from` (the header's user is the authenticated
//! one) and `does_uri_exist` (the Request-URI's user is in the subscriber table).
//!
//! They authenticate nothing themselves: `check_to` and `check_from` need a successful
//! authorize first ([`super::authorize`]).

use super::credentials::user_host;
use super::AuthSettings;
use crate::db::Value;
use crate::modules::ctx::MsgCtx;

impl MsgCtx<'_, '_> {
    /// check_to/check_from: the header's user is the authenticated one.
    pub(super) fn check_user(&self, uri: Option<&str>) -> i32 {
        let (Some(auth), Some((user, _))) = (&self.auth, uri.and_then(user_host)) else {
            return -1;
        };
        if !user.is_empty() && user.eq_ignore_ascii_case(&auth.user) {
            1
        } else {
            -1
        }
    }

    pub(super) fn does_uri_exist(&mut self, st: &AuthSettings) -> i32 {
        let Some((user, host)) = user_host(self.current_uri()) else {
            return -1;
        };
        if user.is_empty() {
            return -1;
        }
        let use_domain = st.uri_use_domain;
        let mut sql = String::from("SELECT username FROM subscriber WHERE username = ?");
        let mut args = vec![Value::from(user)];
        if use_domain {
            sql.push_str(" AND domain = ?");
            args.push(Value::from(host));
        }
        self.db_suspend(st.uri_db_url.as_deref(), "does_uri_exist", move |db| {
            let r = db.with_conn(|c| c.query(&sql, &args));
            Box::new(move |m: &mut MsgCtx<'_, '_>| match r {
                Ok(rows) if !rows.is_empty() => 1,
                Ok(_) => -1,
                Err(e) => m.db_failed("does_uri_exist", &e),
            })
        })
    }
}
