//! Group membership: `is_user_in` (module group) and `is_in_group` (auth_db, SER 0.8's
//! group): is the user of the Request-URI, To, From or credentials in a group of the `grp`
//! table (table and column names from the group module's parameters).
//!
//! The query runs on a database worker; nothing is cached.

use super::credentials::user_host;
use super::params::{db_url_for, ident, p_int};
use super::UserSource;
use crate::db::Value;
use crate::route::MsgCtx;

impl MsgCtx<'_, '_> {
    pub(super) fn is_user_in(&mut self, source: UserSource, group: &str) -> i32 {
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
}
