//! nathelper's NAT keep-alives (`natping_interval`) and their metrics.
//!
//! The pinger is a thread of its own, never a shard: each round it reads the registered
//! bindings (flagged NATed ones with `ping_nated_only`, the default), spreads their pings over
//! the interval under the `natping_rate` cap ([`crate::nathelper::ping::Round`]) and posts
//! each to a shard: a 4-byte "\r\n\r\n" datagram from the socket the binding registered on
//! (the default), or, with `natping_method` set, a request (OPTIONS) run there as a plain
//! client transaction (tm's `uac`, as the dispatcher's probes). A binding that stops answering
//! its requests is reported once at WARNING and counted; after `natping_max_failures`
//! unanswered pings in a row (0: never) it is removed from the user location.
//!
//! The parameters are read when the server starts; a reload does not change them.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use portable_atomic::AtomicU64;

use super::Mgmt;
use crate::modules::nathelper::PingConfig;
use crate::nathelper::ping::{Failures, Round, Verdict};
use crate::server::Event;
use crate::sip::{Dest, Transport};
use crate::tm::uac::UacResult;
use crate::usrloc::{Binding, FL_NAT};

/// The keep-alive's counters (the metrics).
#[derive(Debug, Default)]
pub struct NatStats {
    /// Keep-alive datagrams sent.
    pub datagrams: AtomicU64,
    /// Keep-alive requests sent.
    pub requests: AtomicU64,
    /// Requests answered (any final reply).
    pub answered: AtomicU64,
    /// Requests not answered (tm's 408 after fr_timer, or a transport error).
    pub unanswered: AtomicU64,
    /// Bindings failing now (their last request went unanswered).
    pub failing: AtomicU64,
    /// Bindings removed after `natping_max_failures` unanswered requests.
    pub removed: AtomicU64,
    /// Rounds that took longer than the interval (more bindings than rate × interval).
    pub slow_rounds: AtomicU64,
}

/// One binding to ping.
struct Target {
    table: String,
    aor: String,
    contact: String,
    dst: Dest,
}

impl Target {
    fn key(&self) -> String {
        format!("{}\n{}\n{}", self.table, self.aor, self.contact)
    }
}

/// A request ping waiting for its result.
struct Pending {
    target: Target,
    rx: Receiver<UacResult>,
    sent: Instant,
    deadline: Instant,
}

/// What the pinger remembers between results: unanswered pings in a row, and the bindings it
/// removed (results of pings sent to them before that say nothing more).
struct Memory {
    failures: Failures,
    removed: std::collections::HashMap<String, Instant>,
}

/// Starts the pinger when nathelper is loaded with a `natping_interval`; returns the counters
/// (for the metrics) either way.
pub fn start_pinger(m: &Arc<Mgmt>) -> std::io::Result<Arc<NatStats>> {
    let stats = Arc::new(NatStats::default());
    let g = m.live.current();
    if !g.modules.iter().any(|x| x == "nathelper") {
        return Ok(stats);
    }
    let cfg = PingConfig::from_params(&g.core.params);
    if cfg.interval.is_zero() {
        return Ok(stats);
    }
    let weak = Arc::downgrade(m);
    let st = Arc::clone(&stats);
    std::thread::Builder::new()
        .name(String::from("ser-natping"))
        .spawn(move || pinger(&weak, &cfg, &st))?;
    Ok(stats)
}

fn pinger(m: &Weak<Mgmt>, cfg: &PingConfig, st: &NatStats) {
    crate::log::set_thread_name("natping");
    let mut mem = Memory {
        failures: Failures::new(cfg.max_failures),
        removed: std::collections::HashMap::new(),
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut next = Instant::now() + cfg.interval;
    let floor = Duration::from_secs(1) / cfg.rate.max(1);
    let mut last: Option<Instant> = None;
    loop {
        if !wait_until(m, next, &mut pending, &mut mem, st) {
            return;
        }
        let Some(mm) = m.upgrade() else {
            return;
        };
        let targets = targets(&mm, cfg);
        drop(mm);
        let round = Round::new(Instant::now(), targets.len(), cfg.interval, cfg.rate);
        if round.next_start() > round.start + cfg.interval {
            st.slow_rounds.fetch_add(1, Ordering::Relaxed);
            crate::notice!(
                "nathelper: {} bindings to ping at {}/s take longer than natping_interval ({} s)",
                targets.len(),
                cfg.rate,
                cfg.interval.as_secs()
            );
        }
        let live: std::collections::HashSet<String> = targets.iter().map(Target::key).collect();
        mem.failures.retain(|k| live.contains(k));
        let horizon = Instant::now();
        mem.removed
            .retain(|_, at| horizon.duration_since(*at) < Duration::from_secs(300));
        for (k, t) in targets.into_iter().enumerate() {
            // A late wake-up never lets two pings come closer than the rate allows.
            let due = match last {
                Some(l) => round.due(k).max(l + floor),
                None => round.due(k),
            };
            if !wait_until(m, due, &mut pending, &mut mem, st) {
                return;
            }
            last = Some(Instant::now());
            let Some(mm) = m.upgrade() else {
                return;
            };
            if let Some(p) = send(&mm, cfg, t, st) {
                pending.push(p);
            }
        }
        st.failing
            .store(mem.failures.failing() as u64, Ordering::Relaxed);
        next = round.next_start();
    }
}

/// Sleeps until `deadline`, taking the results of request pings as they come; false when
/// the server is gone.
fn wait_until(
    m: &Weak<Mgmt>,
    deadline: Instant,
    pending: &mut Vec<Pending>,
    mem: &mut Memory,
    st: &NatStats,
) -> bool {
    loop {
        let now = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            let answered = match pending[i].rx.try_recv() {
                Ok(r) => Some(!r.local),
                Err(TryRecvError::Empty) if now < pending[i].deadline => None,
                // No word from the shard: says nothing of the phone.
                Err(_) => {
                    pending.swap_remove(i);
                    continue;
                }
            };
            let Some(answered) = answered else {
                i += 1;
                continue;
            };
            let p = pending.swap_remove(i);
            let Some(mm) = m.upgrade() else {
                return false;
            };
            let key = p.target.key();
            if mem.removed.get(&key).is_some_and(|at| *at >= p.sent) {
                continue;
            }
            if result(&mm, p.target, answered, &mut mem.failures, st) {
                mem.removed.insert(key, Instant::now());
            }
        }
        st.failing
            .store(mem.failures.failing() as u64, Ordering::Relaxed);
        let now = Instant::now();
        if now >= deadline {
            return m.strong_count() > 0;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// What a request ping's result means for its binding; true when it was removed.
fn result(m: &Mgmt, t: Target, answered: bool, failures: &mut Failures, st: &NatStats) -> bool {
    let counter = if answered {
        &st.answered
    } else {
        &st.unanswered
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let warn = |args: std::fmt::Arguments<'_>| crate::log::always(crate::log::L_WARN, args);
    match failures.result(&t.key(), answered) {
        Verdict::Quiet => false,
        Verdict::Unanswered => {
            warn(format_args!(
                "nathelper: {} of {} at {} does not answer its keep-alive",
                t.contact, t.aor, t.dst.addr
            ));
            false
        }
        Verdict::Recovered(n) => {
            crate::notice!(
                "nathelper: {} of {} answers its keep-alive again (after {n} unanswered)",
                t.contact,
                t.aor
            );
            false
        }
        Verdict::Remove(n) => {
            let ul = Arc::clone(&m.live.current().core.usrloc);
            let aor = ul.aor_of_name(&t.aor);
            match ul.remove_blocking(&t.table, &aor, Some(&t.contact)) {
                Ok(_) => {
                    st.removed.fetch_add(1, Ordering::Relaxed);
                    warn(format_args!(
                        "nathelper: {} of {} removed: {n} keep-alives unanswered",
                        t.contact, t.aor
                    ));
                }
                Err(e) => crate::error!("nathelper: cannot remove {}: {e}", t.contact),
            }
            true
        }
    }
}

/// The bindings to ping now, with where each goes.
fn targets(m: &Mgmt, cfg: &PingConfig) -> Vec<Target> {
    let g = m.live.current();
    let ul = Arc::clone(&g.core.usrloc);
    let tables = match ul.dump_blocking() {
        Ok(t) => t,
        Err(e) => {
            crate::warn!("nathelper: cannot read the bindings to ping: {e}");
            return Vec::new();
        }
    };
    let now = crate::usrloc::now();
    let mut out = Vec::new();
    for (table, aors) in tables {
        for (aor, bindings) in aors {
            for b in bindings {
                if !b.alive(now) || (cfg.nated_only && b.flags & FL_NAT == 0) {
                    continue;
                }
                // A datagram keep-alive is for UDP: a stream connection is kept open by the
                // connection itself (and a WebSocket peer would take CRLFs for a message).
                let Some(dst) = dest(&g.core, &b)
                    .filter(|d| cfg.method.is_some() || d.transport == Transport::Udp)
                else {
                    continue;
                };
                out.push(Target {
                    table: table.clone(),
                    aor: aor.clone(),
                    contact: b.contact,
                    dst,
                });
            }
        }
    }
    out
}

/// Where a binding's keep-alive goes: its flow, else where its REGISTER came from, else its
/// Contact's address when that is an IP address (no name is looked up for a keep-alive).
fn dest(core: &crate::core::Core, b: &Binding) -> Option<Dest> {
    if let Some(f) = b.flow {
        return Some(f);
    }
    let local = &core.local;
    if let Some(r) = b.received {
        let socket = local
            .socket_at(r.transport, &r.local)
            .or_else(|| local.socket_for(r.transport, &r.addr, 0))?;
        return Some(Dest {
            transport: r.transport,
            socket,
            addr: r.addr,
            conn: None,
        });
    }
    let uri = ser_parser::parse_uri(&b.contact).ok()?;
    let ip = crate::nathelper::host_ip(uri.host_str)?;
    let transport = match uri.param("transport") {
        Some(Some(t)) => Transport::from_name(t)?,
        _ => Transport::Udp,
    };
    let addr = std::net::SocketAddr::new(ip, uri.port.unwrap_or(transport.default_port()));
    let socket = local.socket_for(transport, &addr, 0)?;
    Some(Dest {
        transport,
        socket,
        addr,
        conn: None,
    })
}

/// Sends one keep-alive; a request ping comes back to wait for its result.
fn send(m: &Mgmt, cfg: &PingConfig, t: Target, st: &NatStats) -> Option<Pending> {
    let post = m.poster()?;
    let shards = m.stats.len().max(1);
    let Some(method) = &cfg.method else {
        let shard = crate::sip::hash64(&[t.contact.as_bytes()]) as usize % shards;
        let data = b"\r\n\r\n".to_vec();
        if post(shard, Event::Send { dst: t.dst, data }) {
            st.datagrams.fetch_add(1, Ordering::Relaxed);
        }
        return None;
    };
    let g = m.live.current();
    let from = cfg.from.clone().unwrap_or_else(|| {
        let local = g.core.local.addr(t.dst.socket);
        format!(
            "sip:pinger@{}",
            local.map_or_else(|| String::from("localhost"), |a| crate::sip::hostport(&a))
        )
    });
    let built = super::build_uac(
        &g.core,
        shards,
        method,
        &from,
        &t.contact,
        t.dst,
        None,
        &[],
        &[],
    );
    let (shard, uac, rx) = match built {
        Ok(x) => x,
        Err(r) => {
            crate::debug!(
                "nathelper: keep-alive to {} not sent: {}",
                t.contact,
                r.reason
            );
            return None;
        }
    };
    if !post(shard, Event::Uac(uac)) {
        return None;
    }
    st.requests.fetch_add(1, Ordering::Relaxed);
    // A request ends within fr_timer (tm reports 408 then); a margin for a loaded shard.
    let limit = crate::tm::TmConfig::from_params(&g.core.params, 1)
        .timers
        .fr_timer
        + Duration::from_secs(2);
    let sent = Instant::now();
    Some(Pending {
        target: t,
        rx,
        sent,
        deadline: sent + limit,
    })
}

/// nathelper's metrics.
pub fn collector(st: Arc<NatStats>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut sent = Family::counter(
            "ser_nathelper_keepalives_total",
            "NAT keep-alives sent, by kind (datagram: 4 bytes, request: natping_method).",
        );
        sent.sample(&[("kind", "datagram")], l(&st.datagrams));
        sent.sample(&[("kind", "request")], l(&st.requests));
        let mut res = Family::counter(
            "ser_nathelper_keepalive_results_total",
            "Keep-alive requests by result (answered: any final reply; unanswered: none).",
        );
        res.sample(&[("result", "answered")], l(&st.answered));
        res.sample(&[("result", "unanswered")], l(&st.unanswered));
        let mut failing = Family::gauge(
            "ser_nathelper_bindings_failing",
            "Bindings whose last keep-alive request went unanswered.",
        );
        failing.sample(&[], l(&st.failing));
        let mut removed = Family::counter(
            "ser_nathelper_bindings_removed_total",
            "Bindings removed after natping_max_failures unanswered keep-alives.",
        );
        removed.sample(&[], l(&st.removed));
        let mut slow = Family::counter(
            "ser_nathelper_slow_rounds_total",
            "Keep-alive rounds longer than natping_interval (more bindings than natping_rate allows).",
        );
        slow.sample(&[], l(&st.slow_rounds));
        v.extend([sent, res, failing, removed, slow]);
    })
}
