//! Module acc: transaction accounting to the log (`log_flag`/`acc_flag`, `log_missed_flag`,
//! `acc_request`, `log_level`) and to the database (SER 0.8's `db_flag`, `db_missed_flag`,
//! `db_url`: rows in `acc` and `missed_calls`).
//!
//! One report per completed transaction whose flags ask for it, made when its first final
//! response goes upstream — so retransmissions, which the transaction absorbs, never report
//! twice. tm tells when ([`crate::tm::TmEvent::Completed`], for the flags of
//! [`AccConfig::report_flags`]); the shard hands that to [`report_completion`]. Rows are
//! written fire-and-forget on the database's workers ([`crate::db::Db::write`]): the shard
//! never waits for the database, and a database that is down costs the rows, not the calls.

use std::sync::Arc;

use ser_parser::{HeaderName, Message};
use ser_script::KindSet;

use super::core::f;
use super::{arg_str, Action, Exports, ParamDef, ParamKind, Params};
use crate::core::Core;
use crate::db::{Db, Value};

pub fn register(ex: &mut Exports) {
    ex.function(f(
        "acc_request",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE,
        |a, _| {
            let s = a.first().map(arg_str).transpose()?.unwrap_or_default();
            if s.contains(['\r', '\n']) {
                return Err("status must be one line".into());
            }
            Ok(Action::AccRequest(s))
        },
    ));
    for name in [
        "log_level",
        "log_flag",
        "acc_flag",
        "log_missed_flag",
        "report_ack",
        "db_flag",
        "db_missed_flag",
    ] {
        ex.param(
            "acc",
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
    }
    for name in ["log_fmt", "db_url"] {
        ex.param(
            "acc",
            ParamDef {
                name,
                kind: ParamKind::Str,
            },
        );
    }
}

/// acc's parameters.
#[derive(Debug, Clone, Default)]
pub struct AccConfig {
    /// `log_flag` (SER 0.8.x) or `acc_flag` (older): report every transaction with it set.
    pub log_flag: Option<u32>,
    /// `log_missed_flag`: report transactions with it set that end negative (>= 300).
    pub missed_flag: Option<u32>,
    /// `log_level`: the SER log level of the reports (default L_NOTICE).
    pub level: i32,
    /// `db_flag`: a row in `acc` for every transaction with it set.
    pub db_flag: Option<u32>,
    /// `db_missed_flag`: a row in `missed_calls` for those with it set that end negative.
    pub db_missed_flag: Option<u32>,
    /// `db_url`: where the rows go (None: the server's default database).
    pub db_url: Option<String>,
    /// The open database of `db_url`, once attached to a server ([`Self::attach`]).
    pub db: Option<Arc<Db>>,
}

impl AccConfig {
    pub fn from_params(p: &Params) -> Self {
        let flag = |name: &str| {
            p.int("acc", name)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n < 32)
        };
        Self {
            log_flag: flag("log_flag").or_else(|| flag("acc_flag")),
            missed_flag: flag("log_missed_flag"),
            level: p
                .int("acc", "log_level")
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(crate::log::L_NOTICE),
            db_flag: flag("db_flag"),
            db_missed_flag: flag("db_missed_flag"),
            db_url: p.str("acc", "db_url").map(String::from),
            db: None,
        }
    }

    /// Takes the server's open database for `db_url` when rows are asked for (the server
    /// opened it at start: see `crate::modules::needs_default_db`).
    pub fn attach(&mut self, core: &Core) {
        if self.db_flag.is_some() || self.db_missed_flag.is_some() {
            self.db = core.dbs.get(self.db_url.as_deref());
            if self.db.is_none() {
                crate::warn!("acc: no open database for db_url; rows will not be written");
            }
        }
    }

    /// Whether a transaction with `flags` that completed with `code` is reported anywhere.
    pub fn wants(&self, flags: u32, code: u16) -> bool {
        self.wants_log(flags, code) || self.wants_db(flags, code)
    }

    fn wants_log(&self, flags: u32, code: u16) -> bool {
        let set = |f: Option<u32>| f.is_some_and(|f| flags & (1 << f) != 0);
        set(self.log_flag) || (code >= 300 && set(self.missed_flag))
    }

    fn wants_db(&self, flags: u32, code: u16) -> bool {
        let set = |f: Option<u32>| f.is_some_and(|f| flags & (1 << f) != 0);
        set(self.db_flag) || (code >= 300 && set(self.db_missed_flag))
    }

    /// The flags whose transactions tm reports when they complete
    /// ([`crate::tm::TmConfig::report_flags`]).
    pub fn report_flags(&self) -> u32 {
        [
            self.log_flag,
            self.missed_flag,
            self.db_flag,
            self.db_missed_flag,
        ]
        .into_iter()
        .flatten()
        .fold(0, |m, f| m | (1 << f))
    }

    /// Whether any report is configured.
    pub fn any(&self) -> bool {
        self.log_flag.is_some()
            || self.missed_flag.is_some()
            || self.db_flag.is_some()
            || self.db_missed_flag.is_some()
    }
}

fn header<'a>(msg: &Message<'a>, name: HeaderName) -> &'a str {
    msg.header(name)
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or("")
}

fn write_fields(line: &mut String, req: &Message<'_>, out_uri: &str) {
    use std::fmt::Write;
    let method = req.method().map_or("", |m| m.as_str());
    let _ = write!(
        line,
        "method={}, i-uri={}, o-uri={}, call_id={}, from={}, to={}",
        method,
        req.request_uri().unwrap_or(""),
        if out_uri.is_empty() {
            req.request_uri().unwrap_or("")
        } else {
            out_uri
        },
        header(req, HeaderName::CallId),
        header(req, HeaderName::From),
        header(req, HeaderName::To),
    );
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const INSERT_ACC: &str = "INSERT INTO acc (sip_from, sip_to, sip_status, sip_method, i_uri, \
     o_uri, sip_callid, username, fromtag, totag, time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_MISSED: &str = "INSERT INTO missed_calls (sip_from, sip_to, sip_status, \
     sip_method, i_uri, o_uri, sip_callid, username, fromtag, totag, time) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The columns of an `acc`/`missed_calls` row, in [`INSERT_ACC`]'s order. `reply` (the final
/// that went upstream) gives To with the callee's tag; without it the request's To is used.
fn row(req: &Message<'_>, out_uri: &str, status: &str, reply: Option<&Message<'_>>) -> Vec<Value> {
    let from = req.from().ok();
    let (to, totag) = match reply {
        Some(r) => (header(r, HeaderName::To), r.to().ok().and_then(|t| t.tag)),
        None => (
            header(req, HeaderName::To),
            req.to().ok().and_then(|t| t.tag),
        ),
    };
    let username = from
        .as_ref()
        .and_then(|f| f.parse_uri().ok())
        .and_then(|u| u.user)
        .unwrap_or("");
    let i_uri = req.request_uri().unwrap_or("");
    vec![
        header(req, HeaderName::From).into(),
        to.into(),
        status.into(),
        req.method().map_or("", |m| m.as_str()).into(),
        i_uri.into(),
        if out_uri.is_empty() { i_uri } else { out_uri }.into(),
        header(req, HeaderName::CallId).into(),
        username.into(),
        from.as_ref().and_then(|f| f.tag).unwrap_or("").into(),
        totag.unwrap_or("").into(),
        crate::db::datetime(std::time::SystemTime::now()).into(),
    ]
}

/// tm's report of a completed transaction ([`crate::tm::TmEvent::Completed`]), if its flags
/// ask for one.
pub fn report_completion(cfg: &AccConfig, c: &crate::tm::Completion) {
    if !cfg.wants(c.flags, c.code) {
        return;
    }
    let Ok(req) = ser_parser::parse(&c.request) else {
        return;
    };
    let reply = c.reply.as_deref().and_then(|r| ser_parser::parse(r).ok());
    report_transaction(cfg, &req, &c.out_uri, c.code, reply.as_ref(), c.flags);
}

/// The report of a completed transaction: `reply` is the final that went upstream (relayed,
/// or tm's own), None when tm could not keep it.
pub fn report_transaction(
    cfg: &AccConfig,
    req: &Message<'_>,
    out_uri: &str,
    code: u16,
    reply: Option<&Message<'_>>,
    flags: u32,
) {
    use std::fmt::Write;
    let reason = reply
        .and_then(|r| r.reason())
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    if cfg.wants_db(flags, code) {
        if let Some(db) = &cfg.db {
            let status = format!("{code} {}", reason.trim());
            let set = |f: Option<u32>| f.is_some_and(|f| flags & (1 << f) != 0);
            if set(cfg.db_flag) {
                db.write("acc", INSERT_ACC, row(req, out_uri, status.trim(), reply));
            }
            if code >= 300 && set(cfg.db_missed_flag) {
                db.write(
                    "missed_calls",
                    INSERT_MISSED,
                    row(req, out_uri, status.trim(), reply),
                );
            }
        }
    }
    if !cfg.wants_log(flags, code) {
        return;
    }
    let missed = code >= 300
        && cfg.missed_flag.is_some_and(|f| flags & (1 << f) != 0)
        && !cfg.log_flag.is_some_and(|f| flags & (1 << f) != 0);
    let mut line = String::with_capacity(256);
    line.push_str(if missed {
        "ACC: call missed: "
    } else {
        "ACC: transaction answered: "
    });
    write_fields(&mut line, req, out_uri);
    let _ = write!(
        line,
        ", status={} {}, time={}",
        code,
        reason.trim(),
        unix_time()
    );
    crate::log_at!(cfg.level, "{}", line);
}

/// `acc_request("404 Not Found")`: an explicit report of the current request, to the log and,
/// with `db_flag` set, as a row in `acc`.
pub fn report_request(cfg: &AccConfig, req: &Message<'_>, out_uri: &str, status: &str) {
    use std::fmt::Write;
    if let (Some(db), Some(_)) = (&cfg.db, cfg.db_flag) {
        db.write("acc", INSERT_ACC, row(req, out_uri, status, None));
    }
    let mut line = String::with_capacity(256);
    line.push_str("ACC: request accounted: ");
    write_fields(&mut line, req, out_uri);
    let _ = write!(line, ", status={}, time={}", status, unix_time());
    crate::log_at!(cfg.level, "{}", line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ser_script::Value;

    #[test]
    fn accounting_flags() {
        let mut p = Params::default();
        p.set("acc", "log_flag", Value::Int(1));
        p.set("acc", "log_missed_flag", Value::Int(3));
        let a = AccConfig::from_params(&p);
        assert!(a.wants(1 << 1, 200));
        assert!(a.wants(1 << 1, 486));
        assert!(!a.wants(1 << 3, 200), "missed flag: only negative");
        assert!(a.wants(1 << 3, 486));
        assert!(!a.wants(0, 486));
        // The older name of log_flag.
        let mut q = Params::default();
        q.set("acc", "acc_flag", Value::Int(2));
        assert!(AccConfig::from_params(&q).wants(1 << 2, 200));
        // SER 0.8's database flags.
        let mut d = Params::default();
        d.set("acc", "db_flag", Value::Int(4));
        d.set("acc", "db_missed_flag", Value::Int(5));
        let a = AccConfig::from_params(&d);
        assert!(a.any());
        assert!(a.wants(1 << 4, 200));
        assert!(!a.wants(1 << 5, 200), "db missed flag: only negative");
        assert!(a.wants(1 << 5, 404));
        assert!(!AccConfig::from_params(&Params::default()).any());
    }

    #[test]
    fn report_flags_cover_every_configured_flag() {
        let mut p = Params::default();
        p.set("acc", "log_flag", Value::Int(1));
        p.set("acc", "db_missed_flag", Value::Int(5));
        assert_eq!(
            AccConfig::from_params(&p).report_flags(),
            (1 << 1) | (1 << 5)
        );
        assert_eq!(AccConfig::from_params(&Params::default()).report_flags(), 0);
    }
}
