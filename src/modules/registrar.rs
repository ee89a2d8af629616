//! Module registrar: `save(table)` and `lookup(table)` over the user location
//! ([`crate::usrloc`]).
//!
//! - `save("location")` processes a REGISTER as RFC 3261 10.3 says (the logic is the sans-IO
//!   [`crate::usrloc::rfc3261::process`]) and answers it statelessly: 200 OK listing every
//!   current binding with its remaining time (`Contact: <uri>;q=1.00;expires=N`), 400 with a
//!   reason for a malformed request (Contact, Expires, To, `*` misuse, an older CSeq), 500
//!   when the database fails. With db_mode 1 the row is written before the 200 goes (the
//!   script pauses while a database worker writes it); with db_mode 3 the bindings are read
//!   and written there. True when the REGISTER was accepted.
//! - `lookup("location")` rewrites the Request-URI to the best binding of its user (highest
//!   q, then the newest) and puts the others in the destination set (`append_branches`,
//!   default 1); false when nobody is registered. `lookup("aliases")` is the same over the
//!   aliases table.
//! - A REGISTER that came over a stream connection (TCP, TLS, WS) saves its flow with each
//!   binding it makes (see [`crate::usrloc::Binding::flow`]); lookup gives such a binding's
//!   branch that flow as its fixed destination (`Scratch::dst`, `Branch::dst`), so
//!   `t_relay()` and `forward(uri:host, uri:port)` send over the connection the UA
//!   registered on rather than to its Contact's address.
//! - After nathelper's `fix_nated_register()`, `save` keeps the REGISTER's source address and
//!   our socket with each binding ([`crate::usrloc::Received`], the `received` and `socket`
//!   columns) and flags it NATed; lookup sends to that address, the Contact itself is stored
//!   and handed out unchanged. nathelper's `nat_bflag` flag set when `save` runs flags the
//!   bindings NATed too (for `ping_nated_only` keep-alives).
//!
//! Parameters: `default_expires` (3600), `min_expires` (0: none), `max_expires` (0: none),
//! `default_q` (per mille, 1000), `append_branches` (1).

use std::sync::Arc;

use ser_parser::{Contact, HeaderName};
use ser_script::{Arg, KindSet};

use super::core::f;
use super::ctx::{Branch, MsgCtx, Pool, Resumed, Suspend};
use super::Action;
use super::{arg_str, Exports, ParamDef, ParamKind, Params};
use crate::sip::Dest;
use crate::usrloc::rfc3261::{self, ContactParam, Contacts, Outcome, Policy, Refusal, SaveRequest};
use crate::usrloc::{persist, Aor, DbMode, Reach, Received, FL_NAT};

/// A registrar action, with its table and the module parameters it needs, resolved when the
/// script loads.
#[derive(Debug, Clone)]
pub enum Op {
    Save {
        table: String,
        policy: Policy,
        /// nathelper's `nat_bflag`: a message flag that, set when `save` runs, marks the
        /// bindings NATed ([`crate::usrloc::FL_NAT`]).
        nat_flag: Option<u32>,
    },
    Lookup {
        table: String,
        append_branches: bool,
    },
}

pub fn register(ex: &mut Exports) {
    ex.function(f("save", 1, 1, KindSet::REQUEST, |a, ctx| {
        let none = Params::default();
        let p = ctx.host::<Params>().unwrap_or(&none);
        let policy = policy(p);
        let nat_flag = p
            .int("nathelper", "nat_bflag")
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n < 32);
        Ok(Action::Registrar(Op::Save {
            table: table(a)?,
            policy,
            nat_flag,
        }))
    }));
    ex.function(f("lookup", 1, 1, KindSet::REQUEST, |a, ctx| {
        let append_branches = ctx
            .host::<Params>()
            .and_then(|p| p.int("registrar", "append_branches"))
            .unwrap_or(1)
            != 0;
        Ok(Action::Registrar(Op::Lookup {
            table: table(a)?,
            append_branches,
        }))
    }));
    for name in [
        "default_expires",
        "min_expires",
        "max_expires",
        "default_q",
        "append_branches",
        "max_contacts",
        "refuse_self_contact",
    ] {
        ex.param(
            "registrar",
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
    }
}

fn table(a: &[Arg]) -> Result<String, String> {
    let t = a.first().map(arg_str).transpose()?.unwrap_or_default();
    if !crate::db::schema::is_identifier(&t) {
        return Err(format!(
            "table name \"{t}\" must be letters, digits and '_' (a database table)"
        ));
    }
    crate::usrloc::note_table(&t);
    Ok(t)
}

/// The expiry and q rules of `save`, from the registrar's parameters.
fn policy(p: &Params) -> Policy {
    let d = Policy::default();
    let secs = |name: &str, def: u32| {
        p.int("registrar", name)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(def)
    };
    Policy {
        default_expires: secs("default_expires", d.default_expires),
        min_expires: secs("min_expires", d.min_expires),
        max_expires: secs("max_expires", d.max_expires),
        default_q: p
            .int("registrar", "default_q")
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n <= 1000)
            .unwrap_or(d.default_q),
        max_contacts: p
            .int("registrar", "max_contacts")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_CONTACTS_LIMIT).contains(n))
            .unwrap_or(d.max_contacts),
        refuse_self: p
            .int("registrar", "refuse_self_contact")
            .map_or(d.refuse_self, |n| n != 0),
    }
}

/// The largest `max_contacts` taken (a bound on one address of record's memory).
const MAX_CONTACTS_LIMIT: usize = 1000;

/// The Retry-After of the 503 for an address of record with all its bindings taken: by then
/// a phone that lost its own may have let it expire.
const FULL_RETRY_AFTER: &str = "Retry-After: 60\r\n";

/// What save's database work ends with.
type SaveResult = Result<Result<Outcome, Refusal>, crate::db::DbError>;

impl MsgCtx<'_, '_> {
    pub(crate) fn registrar(&mut self, op: &Op) -> i32 {
        match op {
            Op::Save {
                table,
                policy,
                nat_flag,
            } => self.ul_save(table, *policy, *nat_flag),
            Op::Lookup {
                table,
                append_branches,
            } => self.ul_lookup(table, *append_branches),
        }
    }

    /// The REGISTER's address-of-record (the To URI) and what 10.3 needs of it.
    /// With `refuse_self`, a Contact that points at us is refused: a binding to ourselves
    /// would send every call to it back to us (a scanner's REGISTER made such loops).
    fn save_request(
        &self,
        refuse_self: bool,
        nat_flag: Option<u32>,
    ) -> Result<(Aor, SaveRequest), Refusal> {
        let to = self.msg.to().map_err(|_| "Bad Request (malformed To)")?;
        let uri = to
            .parse_uri()
            .map_err(|_| "Bad Request (malformed To URI)")?;
        let user = uri
            .user
            .filter(|u| !u.is_empty())
            .ok_or("Bad Request (no user in To)")?;
        let aor = self.core.usrloc.aor(user, uri.host_str);
        let expires = match self.msg.expires() {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err("Bad Request (malformed Expires)".into()),
        };
        let mut list = Vec::new();
        let mut star = 0;
        for c in self.msg.contacts() {
            match c.map_err(|_| "Bad Request (malformed Contact)")? {
                Contact::Star => star += 1,
                Contact::Addr { addr, q, expires } => {
                    let Ok(u) = addr.parse_uri() else {
                        return Err("Bad Request (malformed Contact URI)".into());
                    };
                    if refuse_self && self.core.local.is_myself(&u.host, u.host_str, u.port) {
                        crate::info!(
                            "registrar: {} from {} binds {} to this server: refused",
                            aor.key,
                            self.at.src,
                            addr.uri
                        );
                        return Err(Refusal::SelfContact);
                    }
                    if q.is_some_and(|q| q > 1000) {
                        return Err("Bad Request (q out of range)".into());
                    }
                    if list.len() > rfc3261::MAX_CONTACTS {
                        return Err("Bad Request (too many Contacts)".into());
                    }
                    list.push(ContactParam {
                        uri: addr.uri.to_string(),
                        expires,
                        q,
                    });
                }
            }
        }
        let contacts = match (star, list.is_empty()) {
            (0, true) => Contacts::None,
            (0, false) => Contacts::List(list),
            (1, true) => Contacts::Star,
            _ => return Err("Bad Request (Contact * with other contacts)".into()),
        };
        let callid = self
            .msg
            .call_id()
            .filter(|c| !c.is_empty())
            .ok_or("Bad Request (no Call-ID)")?;
        let cseq = self
            .msg
            .cseq()
            .map_err(|_| "Bad Request (malformed CSeq)")?;
        let user_agent = self
            .msg
            .header(HeaderName::UserAgent)
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            .unwrap_or_default();
        // Over a stream, the UA is reached back over its connection (RFC 5626's flow, without
        // the Outbound extension's reg-id: one flow per binding, the last REGISTER's).
        let flow = (self.at.transport.is_reliable() || self.at.conn.is_some())
            .then(|| self.at.back_to(self.at.src));
        // fix_nated_register(): the source address goes with the bindings (nathelper).
        let received = self.nat.fix_register.then_some(Received {
            transport: self.at.transport,
            addr: self.at.src,
            local: self
                .core
                .local
                .addr(self.at.socket)
                .unwrap_or(self.at.local),
        });
        let natted = received.is_some() || nat_flag.is_some_and(|f| self.flags & (1 << f) != 0);
        Ok((
            aor,
            SaveRequest {
                contacts,
                expires,
                callid: String::from_utf8_lossy(callid).into_owned(),
                cseq: cseq.number,
                user_agent,
                flow,
                received,
                flags: if natted { FL_NAT } else { 0 },
            },
        ))
    }

    fn ul_save(&mut self, table: &str, pol: Policy, nat_flag: Option<u32>) -> i32 {
        let ul = Arc::clone(&self.core.usrloc);
        let (aor, req) = match self.save_request(pol.refuse_self, nat_flag) {
            Ok(x) => x,
            Err(Refusal::BadRequest(why)) => return self.registrar_reply(400, why, ""),
            Err(r) => return self.save_done(Ok(Err(r))),
        };
        let now = crate::usrloc::now();
        let mode = ul.cfg.db_mode;
        if mode == DbMode::DbOnly {
            let table = table.to_string();
            return self.suspend_db(&ul, move |db| {
                let r: SaveResult = db.with_conn(|c| {
                    let cur = persist::get(c, &table, &aor)?;
                    match rfc3261::process(&cur, &req, &pol, now) {
                        Ok(o) => {
                            persist::apply(c, &table, &aor, &o.upserts, &o.removed)?;
                            Ok(Ok(o))
                        }
                        Err(r) => Ok(Err(r)),
                    }
                });
                Resumed::Apply(Box::new(move |m| m.save_done(r)))
            });
        }
        let t = ul.table(table);
        let res = t.update(&aor.key, |v| {
            let r = rfc3261::process(v, &req, &pol, now);
            if let Ok(o) = &r {
                v.clone_from(&o.bindings);
            }
            r
        });
        let o = match res {
            Ok(o) => o,
            Err(r) => return self.save_done(Ok(Err(r))),
        };
        if o.changed() {
            t.saved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match mode {
                DbMode::WriteBack => t.mark_dirty(&aor.key),
                DbMode::WriteThrough => {
                    let table = table.to_string();
                    return self.suspend_db(&ul, move |db| {
                        let r = db
                            .with_conn(|c| persist::apply(c, &table, &aor, &o.upserts, &o.removed));
                        let r: SaveResult = r.map(|()| Ok(o));
                        Resumed::Apply(Box::new(move |m| m.save_done(r)))
                    });
                }
                _ => {}
            }
        }
        self.save_done(Ok(Ok(o)))
    }

    /// Pauses the script while `work` runs on the database's workers.
    fn suspend_db(
        &mut self,
        ul: &crate::usrloc::Usrloc,
        work: impl FnOnce(&crate::db::Db) -> Resumed + Send + 'static,
    ) -> i32 {
        let Some(db) = ul.db.clone() else {
            crate::error!(
                "usrloc: no database for db_mode {}",
                ul.cfg.db_mode.number()
            );
            return self.registrar_reply(500, "Server Internal Error", "");
        };
        if !self.can_suspend {
            crate::error!("usrloc: the script cannot pause here (too many requests waiting)");
            return self.registrar_reply(500, "Server Internal Error", "");
        }
        let db2 = Arc::clone(&db);
        self.suspend = Some(Suspend::Work {
            pool: Pool::Db(db),
            work: Box::new(move || work(&db2)),
        });
        ser_script::SUSPEND
    }

    /// Answers the REGISTER with save's result.
    fn save_done(&mut self, r: SaveResult) -> i32 {
        match r {
            Ok(Ok(o)) => {
                let contacts = o.contact_headers(crate::usrloc::now());
                self.registrar_reply(200, "OK", &contacts)
            }
            Ok(Err(refusal)) => {
                let (code, reason) = refusal.status();
                let extra = match refusal {
                    Refusal::TooManyContacts => FULL_RETRY_AFTER,
                    _ => "",
                };
                self.registrar_reply(code, reason, extra)
            }
            Err(e) => {
                crate::error!("usrloc: save: database error: {e}");
                self.registrar_reply(500, "Server Internal Error", "")
            }
        }
    }

    /// A stateless reply with `extra` header lines; true for a 2xx.
    fn registrar_reply(&mut self, code: u16, reason: &str, extra: &str) -> i32 {
        if !self.msg.is_request() || matches!(self.msg.method(), Some(ser_parser::Method::Ack)) {
            return -1;
        }
        self.write_sl_reply(code, reason.as_bytes(), extra);
        if (200..300).contains(&code) {
            1
        } else {
            // What sl_reply_error would say (it was answered already).
            let reason = match code {
                400 => "Bad Request",
                403 => "Forbidden",
                503 => "Service Unavailable",
                _ => "Server Internal Error",
            };
            self.last_error = Some(crate::modules::ctx::SipError { code, reason });
            -1
        }
    }

    fn ul_lookup(&mut self, table: &str, append: bool) -> i32 {
        let ul = Arc::clone(&self.core.usrloc);
        let aor = {
            let Ok(uri) = self.current_uri_parsed() else {
                return -1;
            };
            let Some(user) = uri.user.filter(|u| !u.is_empty()) else {
                return -1;
            };
            ul.aor(user, uri.host_str)
        };
        let now = crate::usrloc::now();
        if ul.cfg.db_mode == DbMode::DbOnly {
            let table = table.to_string();
            if ul.db.is_none() || !self.can_suspend {
                crate::error!("usrloc: lookup cannot reach the database here");
                return -1;
            }
            return self.suspend_db(&ul, move |db| {
                let r = db.with_conn(|c| persist::get(c, &table, &aor));
                Resumed::Apply(Box::new(move |m| match r {
                    Ok(bindings) => {
                        let contacts = rfc3261::lookup_order(&bindings, now)
                            .into_iter()
                            .map(Reach::from)
                            .collect();
                        m.set_destinations(contacts, append)
                    }
                    Err(e) => {
                        crate::error!("usrloc: lookup: database error: {e}");
                        -1
                    }
                }))
            });
        }
        let contacts = ul
            .find(table)
            .map(|t| t.lookup(&aor.key, now))
            .unwrap_or_default();
        self.set_destinations(contacts, append)
    }

    /// Where a binding is reached: over its flow (a stream connection), else where its
    /// REGISTER came from when `fix_nated_register()` kept that (from the socket it came in
    /// on, or one of the same transport and family), else where its Contact says (None).
    fn reach(&self, r: &Reach) -> Option<Dest> {
        if r.flow.is_some() {
            return r.flow;
        }
        let rcv = r.received?;
        let local = &self.core.local;
        let socket = local
            .socket_at(rcv.transport, &rcv.local)
            .or_else(|| local.socket_for(rcv.transport, &rcv.addr, self.at.socket))?;
        Some(Dest {
            transport: rcv.transport,
            socket,
            addr: rcv.addr,
            conn: None,
        })
    }

    /// The Request-URI becomes the first contact, the destination set the others (with
    /// registrar's `append_branches`); a contact with a flow goes over it, one saved after
    /// `fix_nated_register()` to the address its REGISTER came from.
    fn set_destinations(&mut self, found: Vec<Reach>, append: bool) -> i32 {
        let contacts: Vec<(String, Option<Dest>)> = found
            .iter()
            .map(|r| (r.contact.clone(), self.reach(r)))
            .collect();
        let mut it = contacts.into_iter();
        let Some((first, flow)) = it.next() else {
            return -1;
        };
        self.s.uri = first;
        self.uri_changed = true;
        self.s.dst = flow;
        if flow.is_some() {
            // The flow is where the request goes now, not a Route an earlier loose_route chose.
            self.s.dst_uri.clear();
        }
        self.s.branches.clear();
        if append {
            self.s.branches.extend(
                it.take(super::core::MAX_BRANCHES.saturating_sub(1))
                    .map(|(uri, dst)| Branch { uri, dst }),
            );
        }
        1
    }
}
