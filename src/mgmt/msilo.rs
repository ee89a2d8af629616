//! msilo's management side: the deliverer thread, the FIFO commands (`msilo.list`,
//! `msilo.count`, `msilo.delete`; `serctl msilo list|count|rm`) and the metrics.
//!
//! The deliverer is a thread of its own, never a shard. `m_dump` queues it a registration
//! ([`crate::msilo::Dump`]); it reads the user's messages (oldest first, in pages) and
//! sends them one at a time, each as a tm UAC transaction posted to the shard that owns its
//! Call-ID (as `t_uac_from` and the dispatcher's probes are). The transaction's outcome
//! comes back into the same queue as an event ([`crate::msilo::Work::Outcome`]): a 2xx
//! deletes the message and sends the next; anything else (a negative reply, tm's 408, no
//! route) stops the user's delivery there, and what is left stays for the next
//! registration. One message at a time keeps them in order at the phone. Every
//! `check_time` the expired messages are removed and counted. It also sends the notices
//! of `from_address` to senders (fire and forget).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use super::{Command, Mgmt, Params, Reply};
use crate::core::Core;
use crate::msilo::{self, Dump, Envelope, Message, Notice, Silo, Work};
use crate::server::Event;
use crate::sip::Dest;
use crate::tm::uac::{Notify, UacRequest};

const COMMANDS: &[Command] = &[
    Command {
        name: "msilo.list",
        module: "msilo",
        params: Params::Lines,
        help: "stored messages, oldest first (at most 1000): [user]",
        slow: true,
        run: list,
    },
    Command {
        name: "msilo.count",
        module: "msilo",
        params: Params::Lines,
        help: "stored messages per user: [user]",
        slow: true,
        run: count,
    },
    Command {
        name: "msilo.delete",
        module: "msilo",
        params: Params::Lines,
        help: "deletes a user's stored messages: <user> [mid]",
        slow: true,
        run: delete,
    },
];

/// Adds msilo's commands (main calls it when the module is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

fn silo(m: &Mgmt) -> Arc<Silo> {
    Arc::clone(&m.live.current().core.msilo)
}

/// A user as the FIFO names it (`bob`, `bob@example.org`, `sip:bob@example.org`) as the
/// silo's key.
fn user_key(m: &Mgmt, name: &str) -> String {
    let core = &m.live.current().core;
    if let Ok(u) = ser_parser::parse_uri(name) {
        if let Some(user) = u.user.filter(|u| !u.is_empty()) {
            return core.usrloc.aor(user, u.host_str).key;
        }
    }
    core.usrloc.aor_of_name(name).key
}

fn with_db<T>(
    m: &Mgmt,
    f: impl FnMut(&mut dyn crate::db::Conn, &str) -> Result<T, crate::db::DbError>,
) -> Result<T, Reply> {
    let s = silo(m);
    let (Some(cfg), Some(db)) = (&s.cfg, &s.db) else {
        return Err(Reply::error(500, "msilo is not loaded"));
    };
    let mut f = f;
    db.with_conn(|c| f(c, &cfg.table))
        .map_err(|e| Reply::error(500, format!("database: {e}")))
}

fn arg(p: &[String], i: usize) -> Option<&str> {
    p.get(i).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn list(m: &Mgmt, p: &[String]) -> Reply {
    let user = arg(p, 0).map(|u| user_key(m, u));
    match with_db(m, |c, t| msilo::list_lines(c, t, user.as_deref())) {
        Ok(lines) => Reply::ok(lines),
        Err(r) => r,
    }
}

fn count(m: &Mgmt, p: &[String]) -> Reply {
    let user = arg(p, 0).map(|u| user_key(m, u));
    match with_db(m, |c, t| msilo::count_lines(c, t, user.as_deref())) {
        Ok(lines) => Reply::ok(lines),
        Err(r) => r,
    }
}

fn delete(m: &Mgmt, p: &[String]) -> Reply {
    let Some(user) = arg(p, 0).map(|u| user_key(m, u)) else {
        return Reply::error(400, "msilo.delete: <user> [mid] expected");
    };
    let mid = match arg(p, 1).map(str::parse::<i64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Reply::error(400, "msilo.delete: bad mid"),
    };
    match with_db(m, |c, t| msilo::delete_user(c, t, &user, mid)) {
        Ok(n) => {
            crate::log::always(
                crate::log::L_NOTICE,
                format_args!("msilo: {n} stored messages of {user} deleted by a command"),
            );
            Reply::ok(vec![format!("{user}: {n} deleted")])
        }
        Err(r) => r,
    }
}

/// msilo's counters as metrics.
pub fn collector(silo: Arc<Silo>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let c = &silo.counters;
        for (name, help, n) in [
            (
                "ser_msilo_stored_total",
                "Messages stored for offline users (m_store).",
                &c.stored,
            ),
            (
                "ser_msilo_delivered_total",
                "Stored messages delivered (a 2xx came back) and deleted.",
                &c.delivered,
            ),
            (
                "ser_msilo_expired_total",
                "Stored messages removed unsent after expire_time.",
                &c.expired,
            ),
            (
                "ser_msilo_failed_total",
                "Deliveries that failed (a negative reply, a timeout, no route); the message stays.",
                &c.failed,
            ),
            (
                "ser_msilo_refused_total",
                "Messages not stored because the user had max_messages already.",
                &c.full,
            ),
        ] {
            let mut f = Family::counter(name, help);
            f.sample(&[], n.load(Ordering::Relaxed));
            v.push(f);
        }
    })
}

/// Starts the deliverer when msilo is loaded; it ends with the management registry.
pub fn start_deliverer(m: &Arc<Mgmt>) -> std::io::Result<()> {
    let silo = silo(m);
    if !silo.enabled() {
        return Ok(());
    }
    let Some(rx) = silo.take_receiver() else {
        return Ok(());
    };
    let weak = Arc::downgrade(m);
    std::thread::Builder::new()
        .name(String::from("ser-msilo"))
        .spawn(move || Deliverer::new(weak, silo).run(&rx))?;
    Ok(())
}

/// Messages read per page of a user's silo.
const PAGE: u32 = 50;

/// One user's delivery in progress.
struct Session {
    dump: Dump,
    /// The page being sent, oldest first.
    queue: std::collections::VecDeque<Message>,
    /// The highest mid read so far (the next page starts after it).
    last_mid: i64,
    /// The message whose transaction runs now: (id, mid, when to give up on hearing).
    inflight: Option<(u64, i64, Instant)>,
}

struct Deliverer {
    m: Weak<Mgmt>,
    silo: Arc<Silo>,
    sessions: HashMap<String, Session>,
    seq: u64,
}

impl Deliverer {
    fn new(m: Weak<Mgmt>, silo: Arc<Silo>) -> Self {
        Self {
            m,
            silo,
            sessions: HashMap::new(),
            seq: 0,
        }
    }

    fn run(mut self, rx: &mpsc::Receiver<Work>) {
        crate::log::set_thread_name("msilo");
        let every = self
            .silo
            .cfg
            .as_ref()
            .map_or(Duration::from_secs(60), |c| c.sweep_every);
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep();
                next_sweep = now + every;
            }
            self.give_up_late(now);
            let wake = self
                .sessions
                .values()
                .filter_map(|s| s.inflight.map(|(_, _, d)| d))
                .fold(next_sweep, Instant::min);
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Work::Dump(d)) => {
                    self.silo.dequeued();
                    self.on_dump(d);
                }
                Ok(Work::Notice(n)) => {
                    self.silo.dequeued();
                    self.notice(&n);
                }
                Ok(Work::Outcome { id, result }) => {
                    self.on_outcome(id, result.code, &result.reason)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if self.m.strong_count() == 0 {
                return;
            }
        }
    }

    fn sweep(&self) {
        let (Some(cfg), Some(db)) = (&self.silo.cfg, &self.silo.db) else {
            return;
        };
        match db.with_conn(|c| msilo::sweep(c, &cfg.table, SystemTime::now())) {
            Ok(0) => {}
            Ok(n) => {
                self.silo.counters.expired.fetch_add(n, Ordering::Relaxed);
                crate::info!("msilo: {n} expired messages removed");
            }
            Err(e) => crate::error!("msilo: expiry sweep failed: {e}"),
        }
    }

    fn on_dump(&mut self, d: Dump) {
        if let Some(s) = self.sessions.get_mut(&d.owner) {
            // Delivering already: what is left goes to the newest registration.
            s.dump = d;
            return;
        }
        let owner = d.owner.clone();
        self.sessions.insert(
            owner.clone(),
            Session {
                dump: d,
                queue: Default::default(),
                last_mid: 0,
                inflight: None,
            },
        );
        self.send_next(&owner);
    }

    /// Sends the user's next message, reading the next page when the last is done; ends
    /// the session when there is nothing left or the send fails.
    fn send_next(&mut self, owner: &str) {
        let (Some(cfg), Some(db)) = (self.silo.cfg.clone(), self.silo.db.clone()) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(owner) else {
            return;
        };
        if s.queue.is_empty() {
            let page = db.with_conn(|c| {
                msilo::fetch(c, &cfg.table, owner, s.last_mid, SystemTime::now(), PAGE)
            });
            match page {
                Ok(p) => s.queue.extend(p),
                Err(e) => crate::error!("msilo: cannot read {owner}'s messages: {e}"),
            }
        }
        let Some(msg) = s.queue.pop_front() else {
            self.sessions.remove(owner);
            return;
        };
        s.last_mid = msg.mid;
        let dump = s.dump.clone();
        self.seq += 1;
        let id = self.seq;
        match self.send(&cfg, &dump.contact, dump.flow, id, |c, env| {
            msilo::compose(c, &msg, env)
        }) {
            Ok(limit) => {
                if let Some(s) = self.sessions.get_mut(owner) {
                    s.inflight = Some((id, msg.mid, Instant::now() + limit));
                }
            }
            Err(why) => {
                self.silo.counters.failed.fetch_add(1, Ordering::Relaxed);
                crate::notice!(
                    "msilo: message {} for {owner} not sent to {}: {why}; kept",
                    msg.mid,
                    dump.contact
                );
                self.sessions.remove(owner);
            }
        }
    }

    fn on_outcome(&mut self, id: u64, code: u16, reason: &str) {
        let Some((owner, mid)) = self
            .sessions
            .iter_mut()
            .find_map(|(o, s)| match s.inflight {
                Some((i, mid, _)) if i == id => {
                    s.inflight = None;
                    Some((o.clone(), mid))
                }
                _ => None,
            })
        else {
            return;
        };
        if (200..300).contains(&code) {
            self.delivered(&owner, mid);
            self.send_next(&owner);
        } else {
            self.failed(&owner, mid, &format!("{code} {reason}"));
        }
    }

    fn delivered(&self, owner: &str, mid: i64) {
        self.silo.counters.delivered.fetch_add(1, Ordering::Relaxed);
        let (Some(cfg), Some(db)) = (&self.silo.cfg, &self.silo.db) else {
            return;
        };
        match db.with_conn(|c| msilo::delete(c, &cfg.table, mid)) {
            Ok(_) => crate::info!("msilo: message {mid} delivered to {owner}"),
            // Delivered but still stored: the user may get it twice, never lose it.
            Err(e) => crate::error!("msilo: message {mid} delivered but not deleted: {e}"),
        }
    }

    fn failed(&mut self, owner: &str, mid: i64, why: &str) {
        self.silo.counters.failed.fetch_add(1, Ordering::Relaxed);
        let to = self
            .sessions
            .remove(owner)
            .map(|s| s.dump.contact)
            .unwrap_or_default();
        crate::notice!(
            "msilo: delivery of message {mid} to {owner} at {to} failed ({why}); it and the \
             rest stay for the next registration"
        );
    }

    /// A transaction whose outcome never came (a shard gone, a lost event): failed.
    fn give_up_late(&mut self, now: Instant) {
        let late: Vec<(String, i64)> = self
            .sessions
            .iter()
            .filter_map(|(o, s)| match s.inflight {
                Some((_, mid, d)) if d <= now => Some((o.clone(), mid)),
                _ => None,
            })
            .collect();
        for (owner, mid) in late {
            self.failed(&owner, mid, "no outcome from the transaction");
        }
    }

    fn notice(&mut self, n: &Notice) {
        let Some(cfg) = self.silo.cfg.clone() else {
            return;
        };
        let Some(from) = cfg.from_address.clone() else {
            return;
        };
        self.seq += 1;
        let id = self.seq;
        if let Err(why) = self.send(&cfg, &n.to, None, id, |c, env| {
            msilo::compose_notice(c, &from, n, env)
        }) {
            crate::notice!("msilo: offline notice to {} not sent: {why}", n.to);
        }
    }

    /// Writes and posts one MESSAGE to `ruri` (over `flow` when given); Ok with how long to
    /// wait for its outcome.
    fn send(
        &self,
        cfg: &msilo::Config,
        ruri: &str,
        flow: Option<Dest>,
        id: u64,
        write: impl FnOnce(&msilo::Config, &Envelope<'_>) -> Vec<u8>,
    ) -> Result<Duration, String> {
        let m = self.m.upgrade().ok_or("shutting down")?;
        let post = m.poster().ok_or("no shards running")?;
        let g = m.live.current();
        let t = target(&g.core, m.stats.len(), ruri, flow)?;
        let bytes = write(
            cfg,
            &Envelope {
                ruri,
                via: &t.via,
                call_id: &t.call_id,
                from_tag: &t.tag,
            },
        );
        if bytes.len() > g.core.max_message {
            return Err(format!(
                "{} bytes, over max_message_size {}",
                bytes.len(),
                g.core.max_message
            ));
        }
        let outcomes = self.silo.sender().ok_or("shutting down")?;
        let uac = UacRequest {
            dst: t.dst,
            name: t.name,
            bytes,
            branch: t.branch,
            method: String::from("MESSAGE"),
            done: Notify::call(move |result| {
                let _ = outcomes.send(Work::Outcome { id, result });
            }),
        };
        if !post(t.shard, Event::Uac(uac)) {
            return Err(String::from("shard not reachable"));
        }
        Ok(crate::tm::TmConfig::from_params(&g.core.params, 1)
            .timers
            .fr_timer
            + Duration::from_secs(5))
    }
}

/// Where one request goes and what identifies it.
struct Target {
    shard: usize,
    dst: Dest,
    /// The name `dst` was resolved from (what a TLS connection verifies).
    name: Option<String>,
    via: String,
    branch: String,
    call_id: String,
    tag: String,
}

/// The destination of `ruri`: its flow when given, else the transport its URI names as
/// `t_relay` picks it (`;transport=tcp`, TLS for `sips:`, else UDP) and RFC 3263 (this
/// blocks on DNS, fine on this thread); with a fresh Call-ID, its shard, and our Via.
fn target(core: &Core, shards: usize, ruri: &str, flow: Option<Dest>) -> Result<Target, String> {
    use crate::sip::{NextHop, Target as Hop, Transport};
    let (dst, name) = match flow {
        Some(f) => (f, None),
        None => {
            let hop = NextHop::of_uri_text(ruri, None)
                .map_err(|e| format!("{} (URI '{ruri}')", e.reason))?;
            if matches!(hop.transport, Transport::Ws | Transport::Wss) {
                return Err(format!(
                    "cannot open a {} connection to '{ruri}' (a WebSocket user is reached over \
                     the connection it registered on)",
                    hop.transport
                ));
            }
            let (targets, name) = match &hop.target {
                Hop::Addr(a) => (vec![*a], None),
                Hop::Name { host, port } => {
                    let secure = hop.secure || hop.transport.is_secure();
                    (
                        core.resolver.next_hop(host, *port, secure)?,
                        Some(host.clone()),
                    )
                }
            };
            let dst = targets
                .iter()
                .find_map(|d| {
                    core.local.socket_for(hop.transport, d, 0).map(|s| Dest {
                        transport: hop.transport,
                        socket: s,
                        addr: *d,
                        conn: None,
                    })
                })
                .ok_or_else(|| {
                    format!(
                        "no {} socket of the destination's address family",
                        hop.transport
                    )
                })?;
            (dst, name)
        }
    };
    let local = core.local.addr(dst.socket).ok_or("no socket")?;
    let n: u64 = rand::random();
    let call_id = format!("{n:016x}-msilo@{}", crate::sip::hostport(&local));
    let shard = crate::sip::owner_shard(call_id.as_bytes(), shards.max(1));
    let branch = crate::sip::txn_branch(&core.reply.tag_prefix, shard, n, 0);
    let via = core.local.via(dst.socket, &branch, local);
    Ok(Target {
        shard,
        dst,
        name,
        via,
        branch,
        call_id,
        tag: format!("{:08x}", n as u32 ^ 0x3517_0e55),
    })
}
