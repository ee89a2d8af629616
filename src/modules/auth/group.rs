//! Group membership: `is_user_in` (module group) and `is_in_group` (auth_db, SER 0.8's
//! group): is the user of the Request-URI, To, From or credentials in a group of the `grp`
//! table (table and column names from the group module's parameters).
//!
//! The query runs on a database worker; nothing is cached.

use super::credentials::user_host;
use super::params::GroupSettings;
use super::UserSource;
use crate::db::Value;
use crate::modules::ctx::MsgCtx;

impl MsgCtx<'_, '_> {
    pub(super) fn is_user_in(
        &mut self,
        st: &GroupSettings,
        source: UserSource,
        group: &str,
    ) -> i32 {
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
        let (table, ucol, dcol, gcol) = (
            &st.table,
            &st.user_column,
            &st.domain_column,
            &st.group_column,
        );
        let mut sql = format!("SELECT {ucol} FROM {table} WHERE {ucol} = ? AND {gcol} = ?");
        let mut args = vec![Value::from(user), Value::from(group)];
        if st.use_domain {
            sql.push_str(&format!(" AND {dcol} = ?"));
            args.push(Value::from(domain));
        }
        self.db_suspend(st.db_url.as_deref(), "is_user_in", move |db| {
            let r = db.with_conn(|c| c.query(&sql, &args));
            Box::new(move |m: &mut MsgCtx<'_, '_>| match r {
                Ok(rows) if !rows.is_empty() => 1,
                Ok(_) => -1,
                Err(e) => m.db_failed("is_user_in", &e),
            })
        })
    }
}
