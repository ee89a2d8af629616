//! Module msilo's script face: `m_store([mode|owner])` and `m_dump([owner])`, and the
//! module's parameters. The silo itself (parameters, SQL, the delivered request's text) is
//! [`crate::msilo`]; the deliverer thread and the FIFO commands are `mgmt::msilo`.
//!
//! - `m_store()` stores the MESSAGE being processed for its recipient, who is offline: the
//!   script pauses while a database worker runs the INSERT (autocommit: it is committed when
//!   the script goes on, so the `202 Accepted` the script sends next is never for a message
//!   a crash can lose). The recipient is, as SER's `m_store(mode)` says: `"0"` (and no
//!   argument) the Request-URI as the script has it now (rewritten or not), else the To URI
//!   when it has no user; `"1"` the Request-URI as received, else To; `"2"` the To URI.
//!   Kamailio's `m_store("sip:user@domain")` names the recipient (and its `$ru`, `$ou`,
//!   `$tu` are modes 0, 1, 2). False when the MESSAGE
//!   cannot be stored: not a MESSAGE, no recipient user, no body, a body that is not UTF-8
//!   text, fields over 255 bytes, the recipient has `max_messages` already, the database
//!   failed. In a failure route too the route pauses until the row is committed (tm holds
//!   the transaction meanwhile); only where a run cannot pause (the shard keeps its most
//!   paused runs already) is the INSERT queued and true comes back at once.
//! - `m_dump()` after a successful `save("location")`: the REGISTER's address of record (or
//!   `m_dump("sip:user@domain")`'s, `m_dump("$fu")`: its From's) gets its stored messages
//!   delivered to the contact this
//!   REGISTER bound (over its connection when it came over a stream), by the deliverer
//!   thread. True when handed over (whether or not there are messages, as Kamailio's);
//!   false for a REGISTER that binds nothing (a removal, a query) or when the deliverer's
//!   queue is full.

use std::sync::Arc;

use ser_parser::{Contact, HeaderName, Method};
use ser_script::{Arg, BindCtx, KindSet};

use super::core::f;
use super::ctx::{MsgCtx, Pool, Resumed, Suspend};
use super::{arg_str, Action, Exports, ParamDef, ParamKind};
use crate::msilo::{self, Dump, NewMessage, Notice, Stored, Work, MAX_FIELD};

/// Whose silo `m_store` fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// SER's mode: 0 (Request-URI as now, else To), 1 (Request-URI as received, else To),
    /// 2 (To).
    Mode(u8),
    /// A SIP URI given in the script.
    Uri(String),
}

/// A msilo action, its argument checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsiloOp {
    Store(Owner),
    Dump(DumpOwner),
}

/// Whose messages `m_dump` delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpOwner {
    /// `m_dump()`, `m_dump("$tu")`: the REGISTER's To (its address of record).
    To,
    /// `m_dump("$fu")`: its From (a third-party registration's registering user).
    From,
    /// `m_dump("sip:user@domain")`.
    Uri(String),
}

pub fn register(ex: &mut Exports) {
    ex.function(f(
        "m_store",
        0,
        1,
        KindSet::REQUEST | KindSet::FAILURE,
        |a, c| {
            let owner = match a.first() {
                None => Owner::Mode(0),
                Some(arg) => bind_owner(arg, c)?,
            };
            Ok(Action::Msilo(MsiloOp::Store(owner)))
        },
    ));
    ex.function(f("m_dump", 0, 1, KindSet::REQUEST, |a, c| {
        let owner = match a.first() {
            None => DumpOwner::To,
            Some(arg) => {
                let s = arg_str(arg).map_err(|e| c.fail_at(0, e))?;
                match s.trim() {
                    "$tu" => DumpOwner::To,
                    "$fu" => DumpOwner::From,
                    t => {
                        ser_parser::parse_uri(t).map_err(|_| {
                            c.fail_at(0, format!("\"{t}\" is not a SIP URI (nor $tu, $fu)"))
                        })?;
                        DumpOwner::Uri(t.to_string())
                    }
                }
            }
        };
        Ok(Action::Msilo(MsiloOp::Dump(owner)))
    }));
    for (name, int) in msilo::PARAMS {
        ex.param(
            "msilo",
            ParamDef {
                name,
                kind: if *int { ParamKind::Int } else { ParamKind::Str },
            },
        );
        ex.check("msilo", name, |name, value, _| {
            msilo::check_param(name, value)
        });
    }
}

fn bind_owner(a: &Arg, c: &BindCtx<'_>) -> Result<Owner, String> {
    let s = arg_str(a).map_err(|e| c.fail_at(0, e))?;
    // Kamailio's pseudo-variables for the three places SER's modes look at.
    match s.trim() {
        "0" | "$ru" => Ok(Owner::Mode(0)),
        "1" | "$ou" => Ok(Owner::Mode(1)),
        "2" | "$tu" => Ok(Owner::Mode(2)),
        t => match ser_parser::parse_uri(t) {
            Ok(u) if u.user.is_some_and(|u| !u.is_empty()) => Ok(Owner::Uri(t.to_string())),
            _ => Err(c.fail_at(
                0,
                format!(
                    "m_store: \"{t}\" is neither a mode (0, 1, 2), $ru, $ou, $tu nor a SIP URI \
                     with a user"
                ),
            )),
        },
    }
}

/// What a MESSAGE cannot be stored for: the error `sl_reply_error` would answer, and the
/// line logged.
type Refused = (u16, &'static str, String);

impl MsgCtx<'_, '_> {
    pub(crate) fn msilo(&mut self, op: &MsiloOp) -> i32 {
        match op {
            MsiloOp::Store(owner) => self.m_store(owner),
            MsiloOp::Dump(owner) => self.m_dump(owner),
        }
    }

    /// The silo's key of a URI's user (as usrloc keys its users: see `Usrloc::aor`).
    fn silo_key(&self, uri: &str) -> Option<String> {
        let u = ser_parser::parse_uri(uri).ok()?;
        let user = u.user.filter(|u| !u.is_empty())?;
        Some(self.core.usrloc.aor(user, u.host_str).key)
    }

    /// The recipient (its URI and silo key) by `owner`.
    fn store_owner(&self, owner: &Owner) -> Option<(String, String)> {
        let to = self.msg.to().ok().map(|t| t.uri.to_string());
        let try_uri = |u: Option<String>| u.and_then(|u| self.silo_key(&u).map(|k| (u, k)));
        match owner {
            Owner::Mode(0) => try_uri(Some(self.current_uri().to_string())).or_else(|| try_uri(to)),
            Owner::Mode(1) => {
                try_uri(self.msg.request_uri().map(String::from)).or_else(|| try_uri(to))
            }
            Owner::Mode(_) => try_uri(to),
            Owner::Uri(u) => try_uri(Some(u.clone())),
        }
    }

    /// The message to store, or why not.
    fn new_message(&self, owner: &Owner) -> Result<(NewMessage, Option<Notice>), Refused> {
        if self.msg.method() != Some(Method::Message) {
            return Err((
                400,
                "Bad Request",
                String::from("m_store: not a MESSAGE; nothing stored"),
            ));
        }
        let Some((recipient, key)) = self.store_owner(owner) else {
            return Err((
                400,
                "Bad Request",
                String::from("m_store: no recipient user in the URI or To"),
            ));
        };
        let from = self
            .msg
            .from()
            .map_err(|_| (400, "Bad Request", String::from("m_store: malformed From")))?;
        let to = self
            .msg
            .to()
            .map(|t| t.uri.to_string())
            .map_err(|_| (400, "Bad Request", String::from("m_store: malformed To")))?;
        let sender = match from.display.filter(|d| !d.trim().is_empty()) {
            Some(d) => format!("\"{}\" <{}>", d.trim_matches('"'), from.uri),
            None => from.uri.to_string(),
        };
        let ctype = match self.msg.header(HeaderName::ContentType) {
            Some(h) => String::from_utf8_lossy(h.value).trim().to_string(),
            None => String::from("text/plain"),
        };
        if ctype.is_empty() || !ctype.contains('/') {
            return Err((
                415,
                "Unsupported Media Type",
                format!("m_store: bad Content-Type \"{ctype}\""),
            ));
        }
        for (what, v) in [
            ("From", sender.as_str()),
            ("To", to.as_str()),
            ("recipient", key.as_str()),
            ("Content-Type", ctype.as_str()),
        ] {
            if v.len() > MAX_FIELD {
                return Err((
                    400,
                    "Bad Request",
                    format!("m_store: {what} over {MAX_FIELD} bytes; not stored"),
                ));
            }
        }
        let body = self.msg.body();
        if body.is_empty() {
            return Err((
                400,
                "Bad Request",
                String::from("m_store: the MESSAGE has no body; nothing stored"),
            ));
        }
        let Ok(body) = std::str::from_utf8(body) else {
            return Err((
                415,
                "Unsupported Media Type",
                format!(
                    "m_store: the body ({ctype}, {} bytes) is not UTF-8 text; not stored",
                    body.len()
                ),
            ));
        };
        let cfg = self.core.msilo.cfg.as_ref();
        let use_contact = cfg.is_some_and(|c| c.use_contact);
        // No notice for a notice: ours, sent to a sender who is offline too, is stored here
        // like any MESSAGE, and must not make another.
        let wants_notice = cfg
            .and_then(|c| c.from_address.as_deref())
            .is_some_and(|a| !a.eq_ignore_ascii_case(from.uri));
        let contact = use_contact
            .then(|| {
                self.msg.contacts().find_map(|c| match c {
                    Ok(Contact::Addr { addr, .. }) => Some(addr.uri.to_string()),
                    _ => None,
                })
            })
            .flatten();
        let notice = wants_notice.then(|| Notice {
            to: contact.unwrap_or_else(|| from.uri.to_string()),
            recipient: recipient.clone(),
        });
        Ok((
            NewMessage {
                owner: key,
                from: sender,
                to,
                ctype,
                body: body.to_string(),
            },
            notice,
        ))
    }

    fn m_store(&mut self, owner: &Owner) -> i32 {
        let silo = Arc::clone(&self.core.msilo);
        let (Some(cfg), Some(db)) = (silo.cfg.clone(), silo.db.clone()) else {
            crate::error!("m_store: msilo has no database");
            return self.fail(500, "Server Internal Error");
        };
        let (m, notice) = match self.new_message(owner) {
            Ok(x) => x,
            Err((code, reason, why)) => {
                crate::notice!("{why} (from {})", self.at.src);
                return self.fail(code, reason);
            }
        };
        let now = std::time::SystemTime::now();
        if !self.can_suspend {
            // The shard keeps its most paused runs already: the INSERT is queued, and true
            // comes back now (durable a moment later, not before the script goes on).
            let s2 = Arc::clone(&silo);
            let queued = db.submit(Box::new(move |db| {
                match db.with_conn(|c| {
                    msilo::store(c, &cfg.table, &m, now, cfg.expire, cfg.max_messages)
                }) {
                    Ok(r) => stored(&s2, &m, r, notice),
                    Err(e) => crate::error!("m_store: {} not stored: {e}", m.owner),
                }
            }));
            return match queued {
                Ok(()) => 1,
                Err(e) => {
                    crate::error!("m_store: {e}");
                    self.fail(500, "Server Internal Error")
                }
            };
        }
        let db2 = Arc::clone(&db);
        self.suspend = Some(Suspend::Work {
            pool: Pool::Db(db),
            work: Box::new(move || {
                let r = db2.with_conn(|c| {
                    msilo::store(c, &cfg.table, &m, now, cfg.expire, cfg.max_messages)
                });
                Resumed::Apply(Box::new(move |ctx| match r {
                    Ok(r) => {
                        let full = r == Stored::Full;
                        stored(&ctx.core.msilo, &m, r, notice);
                        if full {
                            ctx.fail(480, "Temporarily Unavailable")
                        } else {
                            1
                        }
                    }
                    Err(e) => {
                        crate::error!("m_store: message for {} not stored: {e}", m.owner);
                        ctx.fail(500, "Server Internal Error")
                    }
                }))
            }),
        });
        ser_script::SUSPEND
    }

    fn m_dump(&mut self, owner: &DumpOwner) -> i32 {
        let silo = Arc::clone(&self.core.msilo);
        if !silo.enabled() {
            return -1;
        }
        if self.msg.method() != Some(Method::Register) {
            crate::notice!("m_dump: not a REGISTER");
            return -1;
        }
        let aor_uri = match owner {
            DumpOwner::Uri(u) => u.to_string(),
            DumpOwner::To => match self.msg.to() {
                Ok(t) => t.uri.to_string(),
                Err(_) => return -1,
            },
            DumpOwner::From => match self.msg.from() {
                Ok(f) => f.uri.to_string(),
                Err(_) => return -1,
            },
        };
        let Some(key) = self.silo_key(&aor_uri) else {
            return -1;
        };
        let Some(contact) = self.registered_contact() else {
            // A removal or a query binds no contact: nothing to deliver to.
            return -1;
        };
        // Over a stream, or from behind a NAT (nathelper's fix_nated_register()): back to
        // where the REGISTER came from, not to the Contact's address.
        let flow =
            (self.at.transport.is_reliable() || self.at.conn.is_some() || self.nat.fix_register)
                .then(|| self.at.back_to(self.at.src));
        match silo.queue(Work::Dump(Dump {
            owner: key,
            contact,
            flow,
        })) {
            Ok(()) => 1,
            Err(why) => {
                crate::error!("m_dump: {why}; the messages stay stored");
                -1
            }
        }
    }

    /// The first contact this REGISTER binds (its expiry, or the Expires header's, not 0).
    fn registered_contact(&self) -> Option<String> {
        let default = match self.msg.expires() {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return None,
            None => None,
        };
        self.msg.contacts().find_map(|c| match c {
            Ok(Contact::Addr { addr, expires, .. }) => {
                (expires.or(default) != Some(0)).then(|| addr.uri.to_string())
            }
            _ => None,
        })
    }
}

/// Counts a store's result and queues the sender's notice.
fn stored(silo: &msilo::Silo, m: &NewMessage, r: Stored, notice: Option<Notice>) {
    use std::sync::atomic::Ordering;
    match r {
        Stored::Ok => {
            silo.counters.stored.fetch_add(1, Ordering::Relaxed);
            crate::info!("msilo: stored a message from {} for {}", m.from, m.owner);
            if let Some(n) = notice {
                if let Err(why) = silo.queue(Work::Notice(n)) {
                    crate::warn!("msilo: no notice to {}: {why}", m.from);
                }
            }
        }
        Stored::Full => {
            silo.counters.full.fetch_add(1, Ordering::Relaxed);
            let max = silo.cfg.as_ref().map_or(0, |c| c.max_messages);
            crate::notice!(
                "msilo: {} has {max} messages stored (max_messages): the one from {} is refused",
                m.owner,
                m.from
            );
        }
    }
}
