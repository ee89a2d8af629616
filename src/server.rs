//! The one file that drives the shards: each shard runs a `Server` handler over its datagrams.
//!
//! Per datagram: keep-alives are ignored; the Call-ID picks the owning shard and a datagram
//! that arrived elsewhere is handed over before anything else happens (so one trunk on one
//! 4-tuple still spreads over every core, and later transaction tables need no locks); the
//! message is parsed; a request runs the script's main route, a reply is routed back along its
//! Via; what the script wrote into the outbox goes to the runtime's batched sends. Bad input gets
//! a 400 (requests) or a counted drop, never a panic. Host names that need DNS are resolved in the
//! blocking pool and come back as events.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ser_parser::{Method, Outcome, ReplySpec};
use ser_script::RunOutcome;
use ser_shards::{Ctx, Datagram, Handler, SocketId, TimerId};

use crate::capture::Capture;
use crate::core::{hash64, Core, Stats};
use crate::modules::{core::forward_reply, sl};
use crate::route::{Arrival, MsgCtx, PendingSend, Scratch, Script};
use crate::tm::{CellId, RequestMatch, Tm, TmConfig};

/// Results of off-shard work.
#[derive(Debug)]
pub enum Event {
    Resolved {
        data: Vec<u8>,
        socket_hint: usize,
        result: Result<SocketAddr, String>,
    },
    /// The targets of a stateful branch's next hop (RFC 3263), best first.
    TmResolved {
        cell: CellId,
        branch: usize,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// A request the management interface starts here (FIFO `t_uac_from`).
    Uac(crate::tm::uac::UacRequest),
    /// Off-shard work of a suspended script run ended (exec, database); `id` names the run.
    Resumed {
        id: u64,
        result: crate::route::Resumed,
    },
}

/// A request whose script waits for an external program.
struct Parked {
    data: Vec<u8>,
    at: Arrival,
    /// The script it started under (its continuation points into it).
    script: Arc<Script>,
    k: ser_script::Continuation,
    saved: crate::route::SavedCtx,
}

/// What a parked run resumes with.
struct Resume {
    k: ser_script::Continuation,
    saved: crate::route::SavedCtx,
    result: crate::route::Resumed,
}

/// Script runs one shard keeps paused for external programs; past it exec actions fail.
const MAX_PARKED: usize = 4096;

/// One shard's request processing.
pub struct Server {
    core: Arc<Core>,
    script: Arc<Script>,
    stats: Arc<Stats>,
    scratch: Scratch,
    /// Name lookups handed to the blocking pool and not back yet.
    dns_inflight: usize,
    /// This shard's transactions.
    tm: Tm,
    shards: usize,
    /// The runtime timer armed for the transactions' earliest deadline.
    timer: Option<(std::time::Instant, TimerId)>,
    /// Origin of the timer grid.
    epoch: Option<std::time::Instant>,
    /// Where reloaded scripts come from, and the generation this shard runs.
    live: Option<(Arc<crate::live::Live>, u64)>,
    /// Transactions started from the management interface (FIFO `t_uac_from`).
    uac: crate::tm::uac::LocalUac,
    /// Script runs waiting for an external program (exec), by id.
    parked: std::collections::HashMap<u64, Parked>,
    park_seq: u64,
    /// Message capture (`capture_file`): every datagram received and sent.
    capture: Option<Capture>,
}

/// The token of the transaction timer.
const TM_TIMER: u64 = 1;

/// Resolution of the transaction timer (see [`Server::arm`]).
const TIMER_GRID: std::time::Duration = std::time::Duration::from_millis(25);

/// Most name lookups one shard keeps in flight: each holds a copy of its datagram, and a flood
/// of requests for slow domains must not grow the queue without bound.
const MAX_DNS_INFLIGHT: usize = 1024;

impl Server {
    pub fn new(
        core: Arc<Core>,
        script: Arc<Script>,
        stats: Arc<Stats>,
        shard: usize,
        shards: usize,
    ) -> Self {
        let cfg = TmConfig::from_params(&core.params, shards);
        let shards_n = shards;
        let tm = Tm::new(
            Arc::clone(&core),
            Arc::clone(&script),
            Arc::clone(&stats),
            shard,
            cfg,
        );
        Self {
            core,
            script,
            stats,
            scratch: Scratch::default(),
            dns_inflight: 0,
            tm,
            shards: shards_n,
            timer: None,
            epoch: None,
            live: None,
            uac: crate::tm::uac::LocalUac::default(),
            parked: std::collections::HashMap::new(),
            park_seq: 0,
            capture: None,
        }
    }

    /// Follows reloads: before each message the shard takes the newest generation of `live`.
    pub fn with_live(mut self, live: Arc<crate::live::Live>) -> Self {
        let n = live.number();
        self.live = Some((live, n));
        self
    }

    /// Takes a newer script generation, between two messages.
    #[inline]
    fn follow_reload(&mut self) {
        let Some((live, running)) = &self.live else {
            return;
        };
        if live.number() == *running {
            return;
        }
        let g = live.current();
        let cfg = TmConfig::from_params(&g.core.params, self.shards);
        self.core = Arc::clone(&g.core);
        self.script = Arc::clone(&g.script);
        self.tm
            .set_generation(Arc::clone(&g.core), Arc::clone(&g.script), cfg);
        if let Some((_, running)) = &mut self.live {
            *running = g.number;
        }
        crate::info!("now running script generation {}", g.number);
    }

    /// Records every datagram this shard receives and sends to `capture`.
    pub fn with_capture(mut self, capture: Option<Capture>) -> Self {
        self.capture = capture;
        self
    }

    /// Keeps one runtime timer armed at the transactions' earliest deadline, rounded up to a
    /// 25 ms grid: thousands of transactions a second each ending at their own instant would
    /// otherwise wake the shard thousands of extra times a second (on a VM every wake-up from
    /// idle is expensive); SER's own timer ticked in 100 ms steps.
    fn arm(&mut self, ctx: &mut Ctx<'_, Event>) {
        let next = match (self.tm.next_deadline(), self.uac.next_deadline()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        // The grid's origin is the shard's start: every deadline lies after it.
        let epoch = *self.epoch.get_or_insert_with(|| ctx.now());
        let next = on_grid(epoch, next, TIMER_GRID);
        match self.timer {
            Some((at, _)) if at <= next => {}
            Some((_, id)) => {
                ctx.cancel_timer(id);
                self.timer = Some((next, ctx.set_timer(next, TM_TIMER)));
            }
            None => self.timer = Some((next, ctx.set_timer(next, TM_TIMER))),
        }
    }

    /// Starts the name lookups tm asked for.
    fn start_tm_dns(&mut self, ctx: &mut Ctx<'_, Event>) {
        for job in self.tm.dns_jobs.drain(..) {
            let crate::tm::DnsJob {
                cell,
                branch,
                host,
                port,
                secure,
            } = job;
            let resolver = Arc::clone(&self.core.resolver);
            ctx.spawn_blocking(move || {
                let result = resolve_next_hop(&resolver, &host, port, secure);
                Event::TmResolved {
                    cell,
                    branch,
                    result,
                }
            });
        }
    }

    fn process(&mut self, ctx: &mut Ctx<'_, Event>, d: &Datagram<'_>) {
        let socket = d.socket.0 as usize;
        let msg = match ser_parser::parse(d.data) {
            Ok(m) => m,
            Err(e) => {
                self.reject(ctx, d, e);
                return;
            }
        };
        let now = ctx.now();
        if !msg.is_request() {
            self.stats.count_reply_in(msg.status().unwrap_or(0));
            self.scratch.clear();
            if self.tm.on_reply(now, &msg, &mut self.scratch.out)
                || self.uac.on_reply(now, &msg, &mut self.scratch.out)
            {
                self.flush(ctx);
                return;
            }
            match forward_reply(&self.core, &msg, socket, &mut self.scratch) {
                Ok(()) => Stats::inc(&self.stats.replies_fwd),
                Err(why) => {
                    Stats::inc(&self.stats.drop_reply_not_ours);
                    crate::debug!("reply from {} dropped: {}", d.peer, why);
                }
            }
            self.flush(ctx);
            return;
        }
        self.stats.count_request_in(msg.method());
        self.scratch.clear();
        if self.tm.on_request(now, &msg, &mut self.scratch.out) == RequestMatch::Absorbed {
            self.flush(ctx);
            return;
        }
        if sl::is_ack_to_local_reply(&self.core, &msg) {
            Stats::inc(&self.stats.acks_absorbed);
            return;
        }
        let at = Arrival {
            src: d.peer,
            local: d.local,
            socket,
            shard: ctx.shard(),
        };
        if self.core.is_draining()
            && self
                .tm
                .refuse_while_draining(&msg, &at, &mut self.scratch.out)
        {
            self.flush(ctx);
            return;
        }
        let script = Arc::clone(&self.script);
        self.run_request(ctx, &msg, at, script, None);
    }

    /// Runs (or resumes) the request route over `msg` and handles how it ended: a run that
    /// paused for an external program is parked until the program's result comes back.
    fn run_request(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        msg: &ser_parser::Message<'_>,
        at: Arrival,
        script: Arc<Script>,
        resume: Option<Resume>,
    ) {
        let now = ctx.now();
        let (run, parked) = {
            let mut m = MsgCtx::new(&self.core, &self.stats, msg, at, &mut self.scratch);
            m.tm = Some(&mut self.tm);
            m.can_suspend = self.parked.len() < MAX_PARKED;
            let run = match resume {
                None => {
                    m.t.now = Some(now);
                    script.start(ser_script::RouteKind::Request, 0, &mut m)
                }
                Some(r) => {
                    m.restore(r.saved);
                    m.t.now = Some(now);
                    let result = m.apply_resumed(r.result);
                    script.resume(r.k, result, &mut m)
                }
            };
            let parked = match (&run, m.suspend.take()) {
                (ser_script::Run::Suspended(_), Some(job)) => Some((m.save(), job)),
                _ => None,
            };
            (run, parked)
        };
        let outcome = match run {
            ser_script::Run::Done(o) => o,
            ser_script::Run::Suspended(k) => {
                // What the script sent before the program started goes now.
                self.flush(ctx);
                let Some((saved, job)) = parked else {
                    crate::error!("script paused without a job; request dropped");
                    return;
                };
                self.park_seq = self.park_seq.wrapping_add(1);
                let id = self.park_seq;
                self.parked.insert(
                    id,
                    Parked {
                        data: msg.buf().to_vec(),
                        at,
                        script,
                        k,
                        saved,
                    },
                );
                let crate::route::Suspend { pool, work } = job;
                match pool {
                    crate::route::Pool::Blocking => {
                        ctx.spawn_blocking(move || Event::Resumed { id, result: work() })
                    }
                    crate::route::Pool::Db(db) => {
                        let remote = ctx.remote();
                        let shard = ctx.shard();
                        let submitted = db.submit(Box::new(move |_| {
                            remote.post(shard, Event::Resumed { id, result: work() });
                        }));
                        if let Err(e) = submitted {
                            // Resume at once with the failure (after this run's sends).
                            let why = format!("database {}: {e}", db.name());
                            ctx.post(
                                shard,
                                Event::Resumed {
                                    id,
                                    result: crate::route::Resumed::Failed(why),
                                },
                            );
                        }
                    }
                }
                return;
            }
        };
        match outcome {
            RunOutcome::Dropped => {
                Stats::inc(&self.stats.drop_script);
                self.scratch.out.clear();
                return;
            }
            RunOutcome::DepthExceeded => {
                crate::error!("route() nesting too deep; request dropped");
            }
            _ => {}
        }
        if self.scratch.out.sends.is_empty() && self.scratch.out.pending.is_empty() {
            Stats::inc(&self.stats.drop_no_route);
        }
        self.flush(ctx);
    }

    /// An external program ended: the request's script goes on where it paused.
    fn resume_parked(&mut self, ctx: &mut Ctx<'_, Event>, id: u64, result: crate::route::Resumed) {
        let Some(p) = self.parked.remove(&id) else {
            return;
        };
        let Ok(msg) = ser_parser::parse(&p.data) else {
            return;
        };
        self.scratch.clear();
        let resume = Resume {
            k: p.k,
            saved: p.saved,
            result,
        };
        self.run_request(ctx, &msg, p.at, p.script, Some(resume));
        self.start_tm_dns(ctx);
        self.arm(ctx);
    }

    /// A datagram that did not parse: 400 (or what the error maps to) for a request we can
    /// still answer, a counted drop otherwise.
    fn reject(&mut self, ctx: &mut Ctx<'_, Event>, d: &Datagram<'_>, e: ser_parser::ParseError) {
        let Outcome::Reply { code, reason } = e.outcome() else {
            if e.is_request() {
                Stats::inc(&self.stats.drop_bad_request);
            } else {
                Stats::inc(&self.stats.drop_garbage);
            }
            crate::debug!("dropped datagram from {}: {}", d.peer, e);
            return;
        };
        Stats::inc(&self.stats.drop_bad_request);
        crate::info!("bad request from {}: {}", d.peer, e);
        let Some(msg) = ser_parser::parse_lenient(d.data) else {
            return;
        };
        if !msg.is_request() || matches!(msg.method(), Some(Method::Ack)) {
            return;
        }
        let mut tag = String::new();
        sl::local_to_tag(&self.core, &msg, &mut tag);
        // Back along the Via when it parses, else to where the request came from.
        let dst = match msg.top_via() {
            Ok(_) => sl::reply_destination(&self.core, &msg, d.peer),
            Err(_) => d.peer,
        };
        let mut extra = String::new();
        if self.core.server_signature {
            extra.push_str(&self.core.server_header);
        }
        let rport = match msg.top_via() {
            Ok(v) if v.rport.is_some() => Some(d.peer.port()),
            _ => None,
        };
        let spec = ReplySpec {
            code,
            reason: reason.as_bytes(),
            to_tag: Some(tag.as_bytes()),
            received: Some(d.peer.ip()),
            rport,
            extra_headers: extra.as_bytes(),
        };
        self.stats.count_sl(code);
        let stats = &self.stats;
        let from = sent_from(ctx, d.socket.0);
        let capture = &self.capture;
        ctx.send_with(d.socket, dst, |buf| {
            ser_parser::write_reply(&msg, &spec, buf);
            stats.count_sent(buf);
            if let Some(c) = capture {
                c.record(from, dst, buf);
            }
        });
    }

    /// Hands what the script produced to the runtime.
    fn flush(&mut self, ctx: &mut Ctx<'_, Event>) {
        let out = &mut self.scratch.out;
        for o in &out.sends {
            if let Some(data) = out.buf.get(o.range.clone()) {
                self.stats.count_sent(data);
                if let Some(c) = &self.capture {
                    c.record(sent_from(ctx, o.socket as u32), o.dst, data);
                }
                ctx.send(SocketId(o.socket as u32), o.dst, data);
            }
        }
        for p in out.pending.drain(..) {
            if self.dns_inflight >= MAX_DNS_INFLIGHT {
                Stats::inc(&self.stats.dns_failures);
                crate::notice!(
                    "too many name lookups in flight; dropped a message for {}",
                    p.host
                );
                continue;
            }
            self.dns_inflight += 1;
            let PendingSend {
                host,
                port,
                socket_hint,
                data,
            } = p;
            ctx.spawn_blocking(move || {
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| format!("{host}: {e}"))
                    .and_then(|mut it| it.next().ok_or_else(|| format!("{host}: no address")));
                Event::Resolved {
                    data,
                    socket_hint,
                    result,
                }
            });
        }
        out.buf.clear();
        out.sends.clear();
    }
}

/// The address a datagram sent on `socket` leaves from (for the capture).
fn sent_from(ctx: &Ctx<'_, Event>, socket: u32) -> SocketAddr {
    ctx.sockets()
        .get(socket as usize)
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |s| s.local)
}

/// `at` rounded up to the grid of `step` that starts at `epoch` (an `at` before the epoch
/// stays as it is: rounding must never make a deadline later than the next grid point).
fn on_grid(
    epoch: std::time::Instant,
    at: std::time::Instant,
    step: std::time::Duration,
) -> std::time::Instant {
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let grid = step.as_nanos().max(1);
    let steps = since.as_nanos().div_ceil(grid);
    let nanos = u64::try_from(steps * grid).unwrap_or(u64::MAX);
    epoch + std::time::Duration::from_nanos(nanos)
}

/// RFC 3263 for a branch's next hop (NAPTR, SRV, A/AAAA, in failover order); a name DNS does
/// not know is tried in the hosts file (getaddrinfo), as operators expect of `localhost`.
pub fn resolve_next_hop(
    resolver: &crate::dns::Resolver,
    host: &str,
    port: Option<u16>,
    secure: bool,
) -> Result<Vec<SocketAddr>, String> {
    match resolver.resolve(host, port, secure) {
        Ok(targets) if !targets.is_empty() => {
            for t in &targets {
                crate::debug!("{host}: target {t}");
            }
            Ok(targets.into_iter().map(|t| t.addr).collect())
        }
        Ok(_) => Err(format!("{host}: no address")),
        Err(e @ crate::dns::DnsError::Timeout(_)) => Err(e.to_string()),
        Err(e) => {
            let p = port.unwrap_or(if secure { 5061 } else { 5060 });
            match (host, p).to_socket_addrs() {
                Ok(it) => {
                    let v: Vec<SocketAddr> = it.collect();
                    if v.is_empty() {
                        Err(e.to_string())
                    } else {
                        Ok(v)
                    }
                }
                Err(_) => Err(e.to_string()),
            }
        }
    }
}

/// The Call-ID of a datagram without parsing it: a scan of the header lines for `Call-ID:`
/// or its compact form `i:`. Only used to pick the owning shard; the full parse comes later.
pub fn scan_call_id(buf: &[u8]) -> Option<&[u8]> {
    let mut pos = memchr::memchr(b'\n', buf)? + 1;
    while pos < buf.len() {
        let rest = buf.get(pos..)?;
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..end)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let colon = memchr::memchr(b':', line)?;
        let name = line.get(..colon)?.trim_ascii_end();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return Some(line.get(colon + 1..)?.trim_ascii());
        }
        pos += end + 1;
    }
    None
}

/// The shard that owns a Call-ID.
pub fn owner_shard(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    (hash64(&[call_id]) % shards as u64) as usize
}

impl Handler for Server {
    type Event = Event;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Event>) {
        crate::log::set_thread_name(&format!("shard-{}", ctx.shard()));
        self.epoch = Some(ctx.now());
    }

    fn on_datagram(&mut self, ctx: &mut Ctx<'_, Event>, d: Datagram<'_>) {
        // CRLF keep-alives (RFC 5626) and empty datagrams: nothing to do.
        if d.data.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        if let (Some(c), false) = (&self.capture, d.handed_off) {
            c.record(d.peer, d.local, d.data);
        }
        if !d.handed_off && ctx.shard_count() > 1 {
            if let Some(cid) = scan_call_id(d.data) {
                let owner = owner_shard(cid, ctx.shard_count());
                if owner != ctx.shard() {
                    Stats::inc(&self.stats.handoffs);
                    ctx.handoff(owner, &d);
                    return;
                }
            }
        }
        self.follow_reload();
        self.process(ctx, &d);
        self.start_tm_dns(ctx);
        self.arm(ctx);
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_, Event>, event: Event) {
        match event {
            Event::Resolved {
                data,
                socket_hint,
                result,
            } => match result {
                Ok(dst) => {
                    self.dns_inflight = self.dns_inflight.saturating_sub(1);
                    // The datagram's Via names the socket it was written for: send from that
                    // one, or not at all when the name resolved to the other address family.
                    match self.core.socket_for(&dst, socket_hint) {
                        Some(sock) if sock == socket_hint => {
                            self.stats.count_sent(&data);
                            if let Some(c) = &self.capture {
                                c.record(sent_from(ctx, sock as u32), dst, &data);
                            }
                            ctx.send(SocketId(sock as u32), dst, &data)
                        }
                        _ => crate::notice!(
                            "{dst}: no socket of that address family for this message"
                        ),
                    }
                }
                Err(e) => {
                    self.dns_inflight = self.dns_inflight.saturating_sub(1);
                    Stats::inc(&self.stats.dns_failures);
                    crate::notice!("cannot resolve next hop: {e}");
                }
            },
            Event::Resumed { id, result } => {
                self.follow_reload();
                self.resume_parked(ctx, id, result);
            }
            Event::Uac(req) => {
                self.follow_reload();
                self.scratch.clear();
                self.uac
                    .start(ctx.now(), &self.tm.cfg.timers, req, &mut self.scratch.out);
                self.flush(ctx);
                self.arm(ctx);
            }
            Event::TmResolved {
                cell,
                branch,
                result,
            } => {
                self.scratch.clear();
                self.tm
                    .on_resolved(ctx.now(), cell, branch, result, &mut self.scratch.out);
                self.flush(ctx);
                self.start_tm_dns(ctx);
                self.arm(ctx);
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Event>, timer: TimerId, token: u64) {
        if token != TM_TIMER || self.timer.is_some_and(|(_, id)| id != timer) {
            return;
        }
        self.timer = None;
        self.scratch.clear();
        self.tm.on_timer(ctx.now(), &mut self.scratch.out);
        self.uac.on_timer(ctx.now(), &mut self.scratch.out);
        self.flush(ctx);
        self.start_tm_dns(ctx);
        self.arm(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_grid_rounds_up_and_never_past_the_next_point() {
        use std::time::{Duration, Instant};
        let e = Instant::now();
        let g = Duration::from_millis(25);
        assert_eq!(on_grid(e, e, g), e);
        assert_eq!(on_grid(e, e + Duration::from_millis(1), g), e + g);
        assert_eq!(on_grid(e, e + g, g), e + g);
        assert_eq!(
            on_grid(e, e + Duration::from_millis(510), g),
            e + Duration::from_millis(525)
        );
        // Before the epoch: left alone (the bug this guards against pushed such deadlines to
        // the epoch, minutes later).
        let early = e - Duration::from_millis(3);
        assert_eq!(on_grid(e, early, g), early);
    }

    #[test]
    fn call_id_scan() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\ni: abc@host \r\n\r\nbody Call-ID: no";
        assert_eq!(scan_call_id(m), Some(&b"abc@host"[..]));
        let m = b"SIP/2.0 200 OK\r\nCALL-ID :  q1\r\n\r\n";
        assert_eq!(scan_call_id(m), Some(&b"q1"[..]));
        assert_eq!(scan_call_id(b"garbage"), None);
        assert_eq!(scan_call_id(b"A\r\n\r\nCall-ID: x\r\n"), None);
    }
}
