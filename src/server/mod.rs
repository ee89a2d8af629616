//! The one file that drives the shards: each shard runs a `Server` handler over its datagrams.
//!
//! Per datagram: keep-alives are ignored; the Call-ID picks the owning shard and a datagram
//! that arrived elsewhere is handed over before anything else happens (so one trunk on one
//! 4-tuple still spreads over every core, and later transaction tables need no locks); the
//! message is parsed; a request runs the script's main route, a reply is routed back along its
//! Via; what the script wrote into the outbox goes to the runtime's batched sends. Bad input gets
//! a 400 (requests) or a counted drop, never a panic. Host names that need DNS are resolved in the
//! blocking pool and come back as events.

use std::net::SocketAddr;
use std::sync::Arc;

use ser_parser::{Method, Outcome};
use ser_script::RunOutcome;
use ser_shards::{Ctx, Handler, Inbound, SocketId, TimerId};

mod streams;

use crate::capture::Capture;
use crate::core::Core;
use crate::modules::core::forward_reply;
use crate::modules::ctx::{MsgCtx, Pool, Resumed, Scratch, Suspend};
use crate::modules::tm::{OnReply, ParkedFailure, ParkedReply, TmShard};
use crate::modules::Script;
use crate::sip::{
    owner_shard, reply_shard, scan_call_id, Arrival, ConnId, Dest, LocalReply, PendingSend,
    Transport,
};
use crate::stats::Stats;
use crate::tm::{CellId, RequestMatch};

/// Results of off-shard work.
#[derive(Debug)]
pub enum Event {
    /// A stateless message's next hop resolved (or not): it goes to the best target of the
    /// address family its Via was written for.
    Resolved {
        data: Vec<u8>,
        socket_hint: usize,
        transport: Transport,
        /// The name resolved (what a TLS connection to the target verifies).
        host: String,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// The targets of a stateful branch's next hop (RFC 3263), best first.
    TmResolved {
        cell: CellId,
        branch: usize,
        /// The name resolved (what a TLS connection to the targets verifies).
        host: String,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// A request the management interface starts here (FIFO `t_uac_from`).
    Uac(crate::tm::uac::UacRequest),
    /// A message for a stream connection this shard owns (made on another shard), or for a
    /// stream destination whose connection was this shard's.
    StreamSend { dst: Dest, data: Vec<u8> },
    /// Bytes to send as they are (nathelper's keep-alive datagrams), from `dst.socket`.
    Send { dst: Dest, data: Vec<u8> },
    /// The management interface asks for this shard's connections (`tcp_list`).
    ListConns(std::sync::mpsc::Sender<Vec<String>>),
    /// Off-shard work of a suspended script run ended (exec, database); `id` names the run.
    Resumed { id: u64, result: Resumed },
}

/// A request whose script waits for an external program.
struct Parked {
    data: Vec<u8>,
    /// Its retransmissions' key ([`retrans_key`]): they are absorbed while it waits.
    key: u64,
    at: Arrival,
    /// The script it started under (its continuation points into it).
    script: Arc<Script>,
    k: ser_script::Continuation,
    saved: crate::modules::ctx::SavedCtx,
}

/// What a parked run resumes with.
struct Resume {
    k: ser_script::Continuation,
    saved: crate::modules::ctx::SavedCtx,
    result: Resumed,
}

/// Script runs (requests and replies) one shard keeps paused for off-shard work; past it
/// the actions that would pause fail.
const MAX_PARKED: usize = 4096;

/// One shard's request processing.
pub struct Server {
    core: Arc<Core>,
    script: Arc<Script>,
    stats: Arc<Stats>,
    scratch: Scratch,
    /// Name lookups handed to the blocking pool and not back yet.
    dns_inflight: usize,
    /// This shard's transactions, and what they ask the script to run.
    tm: TmShard,
    /// This shard's pike table.
    pike: crate::pike::Local,
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
    /// Replies whose onreply_route waits for off-shard work (rtpengine), by id (one
    /// sequence with `parked`).
    parked_replies: std::collections::HashMap<u64, Box<ParkedReply>>,
    /// Failure routes waiting for off-shard work (m_store, exec, rtpengine), by id (the same
    /// sequence); their transactions wait with them.
    parked_failures: std::collections::HashMap<u64, Box<ParkedFailure>>,
    park_seq: u64,
    /// Message capture (`capture_file`): every datagram received and sent.
    capture: Option<Capture>,
    /// This shard's stream connections, as the SIP layer sees them.
    conns: std::collections::HashMap<ConnId, crate::stream::StreamConn>,
    /// What every shard's stream glue shares (aliases, timeouts, TLS).
    streams: Arc<crate::stream::Shared>,
    /// Reused buffers of the stream path: decrypted bytes, framed messages and their list.
    tls_plain: Vec<u8>,
    frame_buf: Vec<u8>,
    frames: Vec<crate::stream::framing::Frame>,
    /// The WebSocket path's list of messages (ranges of `frame_buf`).
    #[cfg(feature = "ws")]
    ws_msgs: Vec<(usize, usize)>,
    /// The connection sweep timer is set.
    sweep_armed: bool,
    /// Host names that resolved to an address: what an outgoing TLS connection to that
    /// address verifies the server's certificate against (a `Dest` carries no name).
    tls_names: std::collections::HashMap<SocketAddr, String>,
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
        let shards_n = shards;
        let mut tm = TmShard::new(
            Arc::clone(&core),
            Arc::clone(&script),
            Arc::clone(&stats),
            shard,
            shards,
        );
        tm.park_room = MAX_PARKED;
        Self {
            core,
            script,
            stats,
            scratch: Scratch::default(),
            dns_inflight: 0,
            tm,
            pike: crate::pike::Local::new(shard, shards_n),
            shards: shards_n,
            timer: None,
            epoch: None,
            live: None,
            uac: crate::tm::uac::LocalUac::default(),
            parked: std::collections::HashMap::new(),
            parked_replies: std::collections::HashMap::new(),
            parked_failures: std::collections::HashMap::new(),
            park_seq: 0,
            capture: None,
            conns: std::collections::HashMap::new(),
            streams: Arc::new(crate::stream::Shared::default()),
            tls_plain: Vec::new(),
            frame_buf: Vec::new(),
            frames: Vec::new(),
            #[cfg(feature = "ws")]
            ws_msgs: Vec::new(),
            sweep_armed: false,
            tls_names: std::collections::HashMap::new(),
        }
    }

    /// Shares the stream glue's aliases, timeouts and TLS with every other shard.
    pub fn with_streams(mut self, streams: Arc<crate::stream::Shared>) -> Self {
        self.streams = streams;
        self
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
        self.core = Arc::clone(&g.core);
        self.script = Arc::clone(&g.script);
        self.tm
            .set_generation(Arc::clone(&g.core), Arc::clone(&g.script), self.shards);
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
        let next = match (self.tm.tm.next_deadline(), self.uac.next_deadline()) {
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

    /// Starts the name lookups tm asked for, and the work of the failure routes that paused.
    fn start_tm_dns(&mut self, ctx: &mut Ctx<'_, Event>) {
        let parked: Vec<_> = self.tm.take_parked_failures().collect();
        for mut p in parked {
            if let Some(job) = p.job.take() {
                self.park_seq = self.park_seq.wrapping_add(1);
                let id = self.park_seq;
                self.parked_failures.insert(id, Box::new(p));
                self.launch(ctx, id, job);
            }
        }
        self.tm.park_room = MAX_PARKED.saturating_sub(self.parked_count());
        for job in self.tm.tm.dns_jobs.drain(..) {
            let crate::tm::DnsJob {
                cell,
                branch,
                host,
                port,
                secure,
            } = job;
            let resolver = Arc::clone(&self.core.resolver);
            ctx.spawn_blocking(move || {
                let result = resolver.next_hop(&host, port, secure);
                Event::TmResolved {
                    cell,
                    branch,
                    host,
                    result,
                }
            });
        }
    }

    /// Where a received message came in, in the SIP layer's terms: the transport of the
    /// listen socket it arrived on, and its connection on a stream.
    fn arrival(&self, ctx: &Ctx<'_, Event>, d: &Inbound<'_>) -> Arrival {
        let socket = d.socket.0 as usize;
        let transport = self
            .core
            .local
            .sockets
            .get(socket)
            .map_or(Transport::Udp, |l| l.transport);
        Arrival {
            transport,
            src: d.peer,
            local: d.local,
            socket,
            shard: ctx.shard(),
            conn: d.conn.map(|c| ConnId::from_raw(c.0)),
        }
    }

    fn process(&mut self, ctx: &mut Ctx<'_, Event>, d: &Inbound<'_>) {
        let socket = d.socket.0 as usize;
        if d.data.len() > self.core.max_message {
            self.refuse_too_large(ctx, d);
            return;
        }
        let msg = match ser_parser::parse(d.data) {
            Ok(m) => m,
            Err(e) => {
                self.reject(ctx, d, e);
                return;
            }
        };
        let now = ctx.now();
        if let Some(conn) = d.conn {
            self.take_ws_names(conn, &msg);
        }
        if !msg.is_request() {
            self.stats.count_reply_in(msg.status().unwrap_or(0));
            self.scratch.clear();
            let can_park = self.parked_count() < MAX_PARKED;
            let from = self.arrival(ctx, d);
            match self
                .tm
                .on_reply(now, &msg, from, &mut self.scratch.out, can_park)
            {
                OnReply::Done => {
                    self.flush(ctx);
                    return;
                }
                OnReply::Parked(p) => {
                    self.flush(ctx);
                    self.park_reply(ctx, p);
                    return;
                }
                OnReply::NotOurs => {}
            }
            if self.uac.on_reply(now, &msg, &mut self.scratch.out) {
                self.flush(ctx);
                return;
            }
            // A 2xx the callee retransmits (its transaction ended at the first): held back
            // while the first waits in its onreply_route (rtpengine), relayed as the route
            // changed it after.
            if self.parked_replies.values().any(|p| p.is(msg.buf())) {
                crate::debug!("retransmission of a paused reply from {}: absorbed", d.peer);
                return;
            }
            if let Some(bytes) = self.tm.rewritten(now, msg.buf()) {
                if let Ok(m) = ser_parser::parse(&bytes) {
                    match forward_reply(&self.core, &m, socket, &mut self.scratch) {
                        Ok(()) => Stats::inc(&self.stats.replies_fwd),
                        Err(why) => crate::debug!("reply from {} dropped: {}", d.peer, why),
                    }
                    self.flush(ctx);
                    return;
                }
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
        if self.cancel_elsewhere(ctx, d, &msg) {
            return;
        }
        if let Some(conn) = d.conn {
            self.take_via_alias(conn, d.peer, &msg);
        }
        self.stats.count_request_in(msg.method());
        self.scratch.clear();
        if self.tm.tm.on_request(now, &msg, &mut self.scratch.out) == RequestMatch::Absorbed {
            self.flush(ctx);
            return;
        }
        if self.core.reply.is_ack_to_local_reply(&msg) {
            Stats::inc(&self.stats.acks_absorbed);
            return;
        }
        let at = self.arrival(ctx, d);
        if self.core.is_draining()
            && self
                .tm
                .tm
                .refuse_while_draining(&msg, &at, &mut self.scratch.out)
        {
            self.flush(ctx);
            return;
        }
        if !self.parked.is_empty() {
            // A retransmission of a request whose script waits (exec, a database, rtpengine)
            // before it has a transaction: running the script again would do the work twice.
            let key = retrans_key(&msg);
            if self.parked.values().any(|p| p.key == key) {
                crate::debug!(
                    "retransmission of a paused request from {}: absorbed",
                    at.src
                );
                return;
            }
        }
        let script = Arc::clone(&self.script);
        self.run_request(ctx, &msg, at, script, None);
    }

    /// A CANCEL that came on a stream is handled where its connection lives (see
    /// sip::owner); when its INVITE is not there (the INVITE came over UDP, or on another
    /// connection), it goes on to the Call-ID's owner, once. True when handed on.
    fn cancel_elsewhere(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        d: &Inbound<'_>,
        msg: &ser_parser::Message<'_>,
    ) -> bool {
        if d.handed_off || d.conn.is_none() || msg.method() != Some(Method::Cancel) {
            return false;
        }
        let Some(cid) = msg.call_id() else {
            return false;
        };
        let owner = owner_shard(cid, ctx.shard_count());
        if owner == ctx.shard() || self.tm.tm.has_cancelled_invite(msg) {
            return false;
        }
        Stats::inc(&self.stats.handoffs);
        ctx.handoff(owner, d);
        true
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
        let can_park = self.parked_count() < MAX_PARKED;
        let (run, parked) = {
            let mut m = MsgCtx::new(&self.core, &self.stats, msg, at, &mut self.scratch);
            m.tm = Some(&mut self.tm);
            m.pike = Some(&mut self.pike);
            m.can_suspend = can_park;
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
        // What the run asked of tm (accounting of a t_reply) is served now.
        self.tm.run_events(now, &mut self.scratch.out);
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
                        key: retrans_key(msg),
                        at,
                        script,
                        k,
                        saved,
                    },
                );
                self.launch(ctx, id, job);
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
    fn resume_parked(&mut self, ctx: &mut Ctx<'_, Event>, id: u64, result: Resumed) {
        if let Some(p) = self.parked_replies.remove(&id) {
            self.resume_reply(ctx, p, result);
            return;
        }
        if let Some(p) = self.parked_failures.remove(&id) {
            self.scratch.clear();
            self.tm
                .resume_failure(ctx.now(), p, result, &mut self.scratch.out);
            self.flush(ctx);
            self.start_tm_dns(ctx);
            self.arm(ctx);
            return;
        }
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

    /// Script runs this shard keeps paused (requests, replies, failure routes).
    fn parked_count(&self) -> usize {
        self.parked.len() + self.parked_replies.len() + self.parked_failures.len()
    }

    /// Starts a paused run's work; its result comes back as [`Event::Resumed`] with `id`.
    fn launch(&mut self, ctx: &mut Ctx<'_, Event>, id: u64, job: Suspend) {
        let shard = ctx.shard();
        match job {
            Suspend::Work {
                pool: Pool::Blocking,
                work,
            } => ctx.spawn_blocking(move || Event::Resumed { id, result: work() }),
            Suspend::Work {
                pool: Pool::Db(db),
                work,
            } => {
                let remote = ctx.remote();
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
                            result: Resumed::Failed(why),
                        },
                    );
                }
            }
            Suspend::Service(start) => {
                let remote = ctx.remote();
                start(Box::new(move |result| {
                    remote.post(shard, Event::Resumed { id, result });
                }));
            }
        }
    }

    /// Keeps a reply whose onreply_route paused, and starts the route's work.
    fn park_reply(&mut self, ctx: &mut Ctx<'_, Event>, mut p: Box<ParkedReply>) {
        let Some(job) = p.job.take() else {
            return;
        };
        self.park_seq = self.park_seq.wrapping_add(1);
        let id = self.park_seq;
        self.parked_replies.insert(id, p);
        self.launch(ctx, id, job);
    }

    /// A parked reply's work ended: its onreply_route goes on, and tm relays the reply as
    /// the route left it (or it parks again).
    fn resume_reply(&mut self, ctx: &mut Ctx<'_, Event>, p: Box<ParkedReply>, result: Resumed) {
        self.scratch.clear();
        let can_park = self.parked_count() < MAX_PARKED;
        let again = self
            .tm
            .resume_onreply(ctx.now(), p, result, &mut self.scratch.out, can_park);
        self.flush(ctx);
        if let Some(p) = again {
            self.park_reply(ctx, p);
        }
        self.start_tm_dns(ctx);
        self.arm(ctx);
    }

    /// A datagram that did not parse: 400 (or what the error maps to) for a request we can
    /// still answer, a counted drop otherwise.
    /// A datagram over `max_message_size`: 513 to a request (RFC 3261 21.5.14), nothing to
    /// anything else; counted as a bad request.
    fn refuse_too_large(&mut self, ctx: &mut Ctx<'_, Event>, d: &Inbound<'_>) {
        Stats::inc(&self.stats.drop_bad_request);
        crate::info!(
            "{} bytes from {}: over max_message_size",
            d.data.len(),
            d.peer
        );
        self.answer_unparsed(ctx, d, 513, b"Message Too Large");
    }

    fn reject(&mut self, ctx: &mut Ctx<'_, Event>, d: &Inbound<'_>, e: ser_parser::ParseError) {
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
        self.answer_unparsed(ctx, d, code, reason.as_bytes());
    }

    /// A stateless reply to a request the full parse refused, when its start line and header
    /// index still read as a request (not an ACK).
    fn answer_unparsed(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        d: &Inbound<'_>,
        code: u16,
        reason: &[u8],
    ) {
        let Some(msg) = ser_parser::parse_lenient(d.data) else {
            return;
        };
        if !msg.is_request() || matches!(msg.method(), Some(Method::Ack)) {
            return;
        }
        let at = self.arrival(ctx, d);
        let r = LocalReply {
            code,
            reason,
            headers: "",
        };
        self.scratch.clear();
        self.core
            .reply
            .reply(&self.core.local, &msg, &at, &r, &mut self.scratch.out);
        self.stats.count_sl(code);
        self.flush(ctx);
    }

    /// Hands what the script produced to the runtime.
    fn flush(&mut self, ctx: &mut Ctx<'_, Event>) {
        let out = &mut self.scratch.out;
        let mut streamed: Vec<(Dest, std::ops::Range<usize>)> = Vec::new();
        for o in &out.sends {
            let Some(data) = out.buf.get(o.range.clone()) else {
                continue;
            };
            if o.dst.transport != Transport::Udp {
                // Sent below, from the outbox's buffer taken out of it (a send may open a
                // connection, or fail a branch, which writes into the outbox again).
                self.stats.count_sent(data);
                streamed.push((o.dst, o.range.clone()));
                continue;
            }
            self.stats.count_sent(data);
            if let Some(c) = &self.capture {
                c.record(sent_from(ctx, o.dst.socket as u32), o.dst.addr, data);
            }
            ctx.send(SocketId(o.dst.socket as u32), o.dst.addr, data);
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
                secure,
                transport,
                socket_hint,
                data,
            } = p;
            let resolver = Arc::clone(&self.core.resolver);
            ctx.spawn_blocking(move || Event::Resolved {
                result: resolver.next_hop(&host, port, secure),
                host,
                data,
                socket_hint,
                transport,
            });
        }
        out.sends.clear();
        if streamed.is_empty() {
            out.buf.clear();
            return;
        }
        let mut buf = std::mem::take(&mut out.buf);
        for (dst, range) in streamed {
            let Some(data) = buf.get(range) else {
                continue;
            };
            if let Some(c) = &self.capture {
                c.record_stream(dst_local(&self.core, &dst), dst.addr, data);
            }
            self.send_stream(ctx, dst, data);
        }
        // The buffer (its capacity) goes back, unless a send refilled the outbox meanwhile.
        buf.clear();
        if self.scratch.out.buf.is_empty() {
            self.scratch.out.buf = buf;
        }
    }
}

/// What a request's retransmissions share (RFC 3261 17.2.3: the top Via's branch, the
/// CSeq method; with the Call-ID and CSeq number for pre-3261 branches), hashed.
fn retrans_key(msg: &ser_parser::Message<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Ok(v) = msg.top_via() {
        v.branch.hash(&mut h);
        v.host_str.hash(&mut h);
    }
    if let Ok(c) = msg.cseq() {
        c.number.hash(&mut h);
        c.method.as_str().hash(&mut h);
    }
    msg.call_id().hash(&mut h);
    h.finish()
}

/// The address a stream message leaves from, for the capture: its listen socket's.
fn dst_local(core: &Core, dst: &Dest) -> SocketAddr {
    core.local
        .addr(dst.socket)
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
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

impl Handler for Server {
    type Event = Event;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Event>) {
        crate::log::set_thread_name(&format!("shard-{}", ctx.shard()));
        self.epoch = Some(ctx.now());
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Event>, d: Inbound<'_>) {
        self.on_inbound(ctx, d);
    }

    fn on_stream(&mut self, ctx: &mut Ctx<'_, Event>, ev: ser_shards::StreamEvent<'_>) {
        self.on_stream_event(ctx, ev);
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_, Event>, event: Event) {
        self.on_event_inner(ctx, event);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Event>, timer: TimerId, token: u64) {
        if token == streams::SWEEP_TIMER {
            self.sweep(ctx);
            return;
        }
        self.on_tm_timer(ctx, timer, token);
    }
}

impl Server {
    /// A message from a transport (a datagram, or one framed off a stream connection), or
    /// handed off by another shard: the one door every SIP message comes in by.
    fn on_inbound(&mut self, ctx: &mut Ctx<'_, Event>, d: Inbound<'_>) {
        // Keep-alives (RFC 5626 §4.4.1) and empty datagrams: a CRLF on a datagram is the
        // peer's NAT refresh, nothing to answer; a double CRLF ping on a stream gets its pong.
        if d.data.iter().all(|b| b.is_ascii_whitespace()) {
            if d.conn.is_some() && d.data.windows(4).any(|w| w == b"\r\n\r\n") {
                let at = self.arrival(ctx, &d);
                self.scratch.clear();
                self.scratch
                    .out
                    .push(at.back_to(at.src), |b| b.extend_from_slice(b"\r\n"));
                self.flush(ctx);
            }
            return;
        }
        if let (Some(c), false) = (&self.capture, d.handed_off) {
            if d.conn.is_some() {
                c.record_stream(d.peer, d.local, d.data);
            } else {
                c.record(d.peer, d.local, d.data);
            }
        }
        if !d.handed_off && ctx.shard_count() > 1 {
            // See sip::owner: a reply goes to the shard its branch names (any other is
            // forwarded statelessly, here), a request on a stream stays with the connection's
            // shard, one over UDP goes to its Call-ID's owner when there are transactions.
            let n = ctx.shard_count();
            let owner = if d.data.starts_with(b"SIP/") {
                reply_shard(d.data, &self.core.reply.tag_prefix, n)
            } else if d.conn.is_none() && self.core.calls_owned {
                scan_call_id(d.data).map(|cid| owner_shard(cid, n))
            } else {
                None
            };
            if let Some(owner) = owner.filter(|&o| o != ctx.shard()) {
                Stats::inc(&self.stats.handoffs);
                ctx.handoff(owner, &d);
                return;
            }
        }
        self.follow_reload();
        self.process(ctx, &d);
        self.start_tm_dns(ctx);
        self.arm(ctx);
    }

    fn on_event_inner(&mut self, ctx: &mut Ctx<'_, Event>, event: Event) {
        match event {
            Event::StreamSend { dst, data } => self.send_stream(ctx, dst, &data),
            Event::Send { dst, data } => {
                self.scratch.clear();
                self.scratch.out.push(dst, |b| b.extend_from_slice(&data));
                self.flush(ctx);
            }
            Event::ListConns(reply) => {
                let _ = reply.send(self.list_conns(ctx));
            }
            Event::Resolved {
                data,
                socket_hint,
                transport,
                host,
                result,
            } => match result {
                Ok(targets) => {
                    self.remember_names(&host, &targets);
                    self.dns_inflight = self.dns_inflight.saturating_sub(1);
                    // The message's Via names the socket it was written for: send from that
                    // one, to the best target of its address family, or not at all.
                    let local = &self.core.local;
                    let hit = targets.iter().find(|dst| {
                        local.socket_for(transport, dst, socket_hint) == Some(socket_hint)
                    });
                    match hit {
                        Some(&addr) => {
                            let dst = Dest {
                                transport,
                                socket: socket_hint,
                                addr,
                                conn: None,
                            };
                            self.scratch.clear();
                            self.scratch.out.push(dst, |b| b.extend_from_slice(&data));
                            self.flush(ctx);
                        }
                        None => crate::notice!(
                            "{}: no target of the address family this message was written for",
                            targets.first().map_or(String::new(), |a| a.to_string())
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
                if let Some(name) = &req.name {
                    // A TLS connection to it verifies the name it was resolved from.
                    self.remember_names(name, &[req.dst.addr]);
                }
                self.scratch.clear();
                self.uac.start(
                    ctx.now(),
                    &self.tm.tm.cfg.timers,
                    req,
                    &mut self.scratch.out,
                );
                self.flush(ctx);
                self.arm(ctx);
            }
            Event::TmResolved {
                cell,
                branch,
                host,
                result,
            } => {
                if let Ok(targets) = &result {
                    self.remember_names(&host, targets);
                }
                self.scratch.clear();
                self.tm
                    .on_resolved(ctx.now(), cell, branch, result, &mut self.scratch.out);
                self.flush(ctx);
                self.start_tm_dns(ctx);
                self.arm(ctx);
            }
        }
    }

    fn on_tm_timer(&mut self, ctx: &mut Ctx<'_, Event>, timer: TimerId, token: u64) {
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
}
