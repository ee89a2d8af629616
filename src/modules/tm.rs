//! Module tm's script face: `t_relay`, `t_relay_to` and `t_relay_to_udp`/`_tcp`/`_tls`
//! (which name the transport), `t_newtran`, `t_reply`,
//! `t_on_negative`, `t_on_failure`, `t_on_branch`, `t_on_reply`, `t_replicate`, and the
//! module's timer parameters; and [`TmShard`], which runs what the transaction layer asks
//! for: the onreply_route over a reply, the failure route (or SER 0.8's negative reply
//! route) of a cell whose branches all failed, and accounting when a transaction completes.
//! Both routes may pause for off-shard work: the shard parks them ([`ParkedReply`],
//! [`ParkedFailure`]) and tm goes on with the reply or the transaction when they end.
//! The transaction user itself (cells, forking, best response, CANCEL, timers) is
//! `crate::tm`, which never calls the script.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ser_parser::{Message, Method};
use ser_script::{Arg, BindCtx, KindSet, RouteKind, RunOutcome};

use super::acc::{self, AccConfig};
use super::core::{f, host_arg, port_arg, ViaScan};
use super::ctx::{MsgCtx, Resumed, SavedCtx, Scratch, Suspend};
use super::{arg_int, Exports, ParamDef, ParamKind};
use super::{Action, HostArg, PortArg, Script};
use crate::core::Core;
use crate::sip::{Arrival, Dest, Outbox, Transport};
use crate::stats::Stats;
use crate::tm::{
    BranchDst, CellId, CreateError, FailureOutcome, FailureRun, Identity, OnReplyRun, ReplyMatch,
    RouteKindDefault, Routes, TState, Tm, TmConfig, TmEvent,
};

/// One shard's transaction layer as the script sees it: tm's state machine (each cell keeps
/// the script it started under), accounting for its completions, and the buffers of the
/// routes it asks to run from replies and timers. The shard calls the `on_*` methods here
/// rather than tm's, so what tm asks for is served before the call returns.
pub struct TmShard {
    pub tm: Tm<Arc<Script>>,
    pub acc: AccConfig,
    core: Arc<Core>,
    stats: Arc<Stats>,
    /// Buffers for the routes run from replies and timers.
    scratch: Scratch,
    /// 2xx replies an onreply_route changed (rtpengine's SDP), by a hash of the reply as
    /// received: the callee's retransmissions, which pass statelessly, go out the same.
    rewritten: std::collections::HashMap<u64, (Vec<u8>, Instant)>,
    /// Failure routes that paused, for the shard to start their work.
    parked_failures: Vec<ParkedFailure>,
    /// How many more runs may pause (the shard keeps it to its own bound); 0: a failure
    /// route's pausing actions behave as where nothing can pause.
    pub park_room: usize,
}

/// What [`TmShard::on_reply`] made of a reply.
pub enum OnReply {
    /// Not one of our transactions': route it statelessly.
    NotOurs,
    /// Handled (relayed, absorbed, or kept for the best-response choice).
    Done,
    /// Its onreply_route paused for off-shard work (rtpengine): the shard keeps it, starts
    /// the job and hands the result to [`TmShard::resume_onreply`]; tm relays nothing of it
    /// until then.
    Parked(Box<ParkedReply>),
}

/// A reply whose onreply_route waits for off-shard work (see [`OnReply::Parked`]).
pub struct ParkedReply {
    run: OnReplyRun<Arc<Script>>,
    /// The reply as received, and where it came from.
    data: Vec<u8>,
    from: Arrival,
    k: ser_script::Continuation,
    saved: SavedCtx,
    /// The work to start (taken by the shard).
    pub job: Option<Suspend>,
}

impl ParkedReply {
    /// Whether `bytes` are this reply's (a retransmission of it).
    pub fn is(&self, bytes: &[u8]) -> bool {
        self.data == bytes
    }
}

/// How long a 2xx changed by its onreply_route is remembered for its retransmissions (64·T1,
/// as long as the callee retransmits it).
const REWRITTEN_TTL: std::time::Duration = std::time::Duration::from_secs(32);
/// Most such replies remembered per shard.
const REWRITTEN_MAX: usize = 4096;

/// How an onreply_route run ended.
enum RouteEnd {
    Done {
        dropped: bool,
        edits: ser_parser::Edits,
    },
    Suspended {
        k: ser_script::Continuation,
        saved: Box<SavedCtx>,
        job: Suspend,
    },
}

/// What tm needs of the server: our sockets, names and reply identity.
pub fn identity(core: &Core) -> Arc<Identity> {
    Arc::new(Identity {
        local: core.local.clone(),
        reply: core.reply.clone(),
    })
}

/// tm's and acc's configuration from the module parameters of `core`.
fn configs(core: &Core, shards: usize) -> (TmConfig, AccConfig) {
    let mut acc = AccConfig::from_params(&core.params);
    acc.attach(core);
    let mut cfg = TmConfig::from_params(&core.params, shards);
    cfg.report_flags = acc.report_flags();
    (cfg, acc)
}

impl TmShard {
    pub fn new(
        core: Arc<Core>,
        script: Arc<Script>,
        stats: Arc<Stats>,
        shard: usize,
        shards: usize,
    ) -> Self {
        let (cfg, acc) = configs(&core, shards);
        let tm = Tm::new(identity(&core), script, Arc::clone(&stats), shard, cfg);
        Self {
            tm,
            acc,
            core,
            stats,
            scratch: Scratch::default(),
            rewritten: std::collections::HashMap::new(),
            parked_failures: Vec::new(),
            park_room: 0,
        }
    }

    /// A reload: new transactions use the new generation; those in flight keep their script.
    pub fn set_generation(&mut self, core: Arc<Core>, script: Arc<Script>, shards: usize) {
        let (cfg, acc) = configs(&core, shards);
        self.tm.set_generation(identity(&core), script, cfg);
        self.acc = acc;
        self.core = core;
    }

    /// A reply from downstream (which came as `from`): one of ours (handled, its
    /// onreply_route run, or that route paused for off-shard work when `can_park`), or not
    /// (route it statelessly).
    pub fn on_reply(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        from: Arrival,
        out: &mut Outbox,
        can_park: bool,
    ) -> OnReply {
        let r = match self.tm.on_reply(now, msg, out) {
            ReplyMatch::NotOurs => return OnReply::NotOurs,
            ReplyMatch::Done => OnReply::Done,
            ReplyMatch::OnReply(run) => {
                match self.run_onreply(now, &run, msg, from, can_park, None) {
                    RouteEnd::Done { dropped, edits } => {
                        self.finish_onreply(now, &run, msg, dropped, edits, out);
                        OnReply::Done
                    }
                    RouteEnd::Suspended { k, saved, job } => {
                        OnReply::Parked(Box::new(ParkedReply {
                            run,
                            data: msg.buf().to_vec(),
                            from,
                            k,
                            saved: *saved,
                            job: Some(job),
                        }))
                    }
                }
            }
        };
        self.run_events(now, out);
        r
    }

    /// A paused onreply_route's work ended: the route goes on where it paused over the
    /// reply's kept bytes, and tm then relays the reply as the route left it. `Some` when the
    /// route paused again (its next job in `job`).
    pub fn resume_onreply(
        &mut self,
        now: Instant,
        p: Box<ParkedReply>,
        result: Resumed,
        out: &mut Outbox,
        can_park: bool,
    ) -> Option<Box<ParkedReply>> {
        let ParkedReply {
            run,
            data,
            from,
            k,
            saved,
            ..
        } = *p;
        let Ok(msg) = ser_parser::parse(&data) else {
            return None;
        };
        let resume = Some((k, saved, result));
        let r = match self.run_onreply(now, &run, &msg, from, can_park, resume) {
            RouteEnd::Done { dropped, edits } => {
                self.finish_onreply(now, &run, &msg, dropped, edits, out);
                None
            }
            RouteEnd::Suspended { k, saved, job } => Some(Box::new(ParkedReply {
                run,
                data: msg.buf().to_vec(),
                from,
                k,
                saved: *saved,
                job: Some(job),
            })),
        };
        self.run_events(now, out);
        r
    }

    /// tm goes on with a reply after its onreply_route, with the route's edits for the
    /// relayed copy; a 2xx the route changed is remembered for its retransmissions.
    fn finish_onreply(
        &mut self,
        now: Instant,
        run: &OnReplyRun<Arc<Script>>,
        msg: &Message<'_>,
        dropped: bool,
        edits: ser_parser::Edits,
        out: &mut Outbox,
    ) {
        self.tm.onreply_done(now, run, msg, dropped, &edits, out);
        if (200..300).contains(&run.code) && !edits.is_empty() {
            let mut bytes = Vec::with_capacity(msg.buf().len() + 256);
            ser_parser::write(msg, &edits, &mut bytes);
            self.remember_rewritten(now, msg.buf(), bytes);
        }
        // The scratch keeps its capacity for the next run.
        self.scratch.edits = edits;
        self.scratch.edits.clear();
    }

    fn remember_rewritten(&mut self, now: Instant, original: &[u8], bytes: Vec<u8>) {
        if self.rewritten.len() >= REWRITTEN_MAX {
            self.rewritten
                .retain(|_, (_, at)| now.duration_since(*at) < REWRITTEN_TTL);
        }
        if self.rewritten.len() < REWRITTEN_MAX {
            self.rewritten.insert(bytes_hash(original), (bytes, now));
        }
    }

    /// A reply an onreply_route changed lately, as it was relayed (our Via still on top),
    /// when `original` is a retransmission of it as received.
    pub fn rewritten(&self, now: Instant, original: &[u8]) -> Option<Vec<u8>> {
        if self.rewritten.is_empty() {
            return None;
        }
        let (bytes, at) = self.rewritten.get(&bytes_hash(original))?;
        (now.duration_since(*at) < REWRITTEN_TTL).then(|| bytes.clone())
    }

    /// The transactions' timers.
    pub fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        self.tm.on_timer(now, out);
        self.run_events(now, out);
    }

    /// A branch's next hop resolved (or not).
    pub fn on_resolved(
        &mut self,
        now: Instant,
        cell: CellId,
        branch: usize,
        result: Result<Vec<SocketAddr>, String>,
        out: &mut Outbox,
    ) {
        self.tm.on_resolved(now, cell, branch, result, out);
        self.run_events(now, out);
    }

    /// Serves what tm asked for: failure routes, accounting. Called after every tm call
    /// (the request route's too: its `t_reply` completes transactions).
    pub fn run_events(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(e) = self.tm.poll_event() {
            match e {
                TmEvent::Completed(c) => acc::report_completion(&self.acc, &c),
                TmEvent::Failure(run) => self.run_failure(now, run, out),
            }
        }
    }

    /// `onreply_route[n]` over a reply that came as `from` (what it sends is not sent), from
    /// its start or resumed after off-shard work: how it ended, dropped or not with its edits
    /// of the reply (for the relayed copy: rtpengine's SDP, append_hf), or paused.
    fn run_onreply(
        &mut self,
        now: Instant,
        run: &OnReplyRun<Arc<Script>>,
        msg: &Message<'_>,
        from: Arrival,
        can_park: bool,
        resume: Option<(ser_script::Continuation, SavedCtx, Resumed)>,
    ) -> RouteEnd {
        let core = Arc::clone(&self.core);
        let stats = Arc::clone(&self.stats);
        let mut sc = std::mem::take(&mut self.scratch);
        let end = {
            let mut m = MsgCtx::new(&core, &stats, msg, from, &mut sc);
            m.flags = run.flags;
            m.t = TState {
                now: Some(now),
                cell: Some(run.cell),
                routes: Routes::default(),
                kind: RouteKindDefault(RouteKind::OnReply),
                request: Some(run.request),
            };
            m.can_suspend = can_park;
            let r = match resume {
                None => run.script.start(RouteKind::OnReply, run.route, &mut m),
                Some((k, saved, result)) => {
                    m.restore(saved);
                    m.t.now = Some(now);
                    let v = m.apply_resumed(result);
                    run.script.resume(k, v, &mut m)
                }
            };
            match (r, m.suspend.take()) {
                (ser_script::Run::Suspended(k), Some(job)) => RouteEnd::Suspended {
                    k,
                    saved: Box::new(m.save()),
                    job,
                },
                (r, _) => RouteEnd::Done {
                    dropped: matches!(r, ser_script::Run::Done(RunOutcome::Dropped)),
                    edits: std::mem::take(&mut m.s.edits),
                },
            }
        };
        sc.clear();
        self.scratch = sc;
        end
    }

    /// The failure route (or SER 0.8's negative reply route) of a cell whose branches all
    /// failed, over its request; its branches, relays and replies go through tm as it runs.
    /// When it pauses for off-shard work (m_store, exec, rtpengine) and `park_room` allows,
    /// the cell stays waiting (no final goes upstream, its request's retransmissions are
    /// absorbed) and the run is queued for the shard ([`TmShard::take_parked_failures`]).
    fn run_failure(&mut self, now: Instant, run: FailureRun<Arc<Script>>, out: &mut Outbox) {
        self.failure_route(now, run, None, out);
    }

    /// A paused failure route's work ended: the route goes on where it paused, and tm then
    /// goes on with the transaction as the route left it.
    pub fn resume_failure(
        &mut self,
        now: Instant,
        p: Box<ParkedFailure>,
        result: Resumed,
        out: &mut Outbox,
    ) {
        let ParkedFailure { run, k, saved, .. } = *p;
        self.failure_route(now, run, Some((k, saved, result)), out);
        self.run_events(now, out);
    }

    /// Failure routes that paused since the last call: the shard starts each one's `job` and
    /// hands its result to [`TmShard::resume_failure`].
    pub fn take_parked_failures(&mut self) -> std::vec::Drain<'_, ParkedFailure> {
        self.parked_failures.drain(..)
    }

    fn failure_route(
        &mut self,
        now: Instant,
        run: FailureRun<Arc<Script>>,
        resume: Option<(ser_script::Continuation, SavedCtx, Resumed)>,
        out: &mut Outbox,
    ) {
        let mut outcome = FailureOutcome {
            flags: run.flags,
            routes: run.routes,
        };
        let mut paused = None;
        if let Ok(msg) = ser_parser::parse(&run.request) {
            let core = Arc::clone(&self.core);
            let stats = Arc::clone(&self.stats);
            let mut sc = std::mem::take(&mut self.scratch);
            let can_park = self.park_room > 0;
            {
                let mut m = MsgCtx::new(&core, &stats, &msg, run.arrival, &mut sc);
                m.flags = run.flags;
                m.t = TState {
                    now: Some(now),
                    cell: Some(run.cell),
                    routes: run.routes,
                    kind: RouteKindDefault(run.kind),
                    request: None,
                };
                m.can_suspend = can_park;
                m.tm = Some(self);
                let r = match resume {
                    None => run.script.start(run.kind, run.route, &mut m),
                    Some((k, saved, result)) => {
                        m.restore(saved);
                        m.t.now = Some(now);
                        let v = m.apply_resumed(result);
                        run.script.resume(k, v, &mut m)
                    }
                };
                match (r, m.suspend.take()) {
                    (ser_script::Run::Suspended(k), Some(job)) => {
                        paused = Some((k, m.save(), job));
                    }
                    _ => {
                        if run.kind == RouteKind::Reply && !m.s.branches.is_empty() {
                            // SER 0.8: branches a reply route appends are relayed when it ends.
                            m.t_relay_in_failure();
                        }
                        outcome.flags = m.flags;
                        outcome.routes = m.t.routes;
                    }
                }
            }
            out.append(&mut sc.out);
            sc.clear();
            self.scratch = sc;
        }
        if let Some((k, saved, job)) = paused {
            self.park_room = self.park_room.saturating_sub(1);
            self.parked_failures.push(ParkedFailure {
                run,
                k,
                saved,
                job: Some(job),
            });
            return;
        }
        self.tm.failure_done(now, run.cell, outcome, out);
    }
}

/// A failure route waiting for off-shard work (see [`TmShard::take_parked_failures`]); its
/// cell waits with it.
pub struct ParkedFailure {
    run: FailureRun<Arc<Script>>,
    k: ser_script::Continuation,
    saved: SavedCtx,
    /// The work to start (taken by the shard).
    pub job: Option<Suspend>,
}

fn bytes_hash(b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Where a new transaction may be created or replied to: the request route, and the failure
/// route (which continues the same transaction). A reply route (SER 0.8's negative-reply
/// route) only adds branches; `t_on_negative` there chains the next one.
pub fn register(ex: &mut Exports) {
    let relay_kinds = KindSet::REQUEST | KindSet::FAILURE;
    ex.function(f("t_relay", 0, 0, relay_kinds, |_, _| {
        Ok(Action::TRelay {
            host: None,
            port: PortArg::Default,
            transport: None,
        })
    }));
    ex.function(f("t_relay_to", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, None)
    }));
    ex.function(f("t_relay_to_udp", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, Some(Transport::Udp))
    }));
    ex.function(f("t_relay_to_tcp", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, Some(Transport::Tcp))
    }));
    ex.function(f("t_relay_to_tls", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, Some(Transport::Tls))
    }));
    ex.function(f("t_newtran", 0, 0, KindSet::REQUEST, |_, _| {
        Ok(Action::TNewtran)
    }));
    ex.function(f("t_reply", 2, 2, relay_kinds, bind_reply));
    ex.function(f(
        "t_on_negative",
        1,
        1,
        KindSet::REQUEST | KindSet::REPLY | KindSet::FAILURE | KindSet::BRANCH,
        |a, c| Ok(Action::TOnNegative(route_no(a, c, RouteKind::Reply)?)),
    ));
    ex.function(f(
        "t_on_failure",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE | KindSet::REPLY | KindSet::BRANCH,
        |a, c| Ok(Action::TOnFailure(route_no(a, c, RouteKind::Failure)?)),
    ));
    ex.function(f(
        "t_on_branch",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE,
        |a, c| Ok(Action::TOnBranch(route_no(a, c, RouteKind::Branch)?)),
    ));
    ex.function(f(
        "t_on_reply",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE | KindSet::BRANCH,
        |a, c| Ok(Action::TOnReply(route_no(a, c, RouteKind::OnReply)?)),
    ));
    ex.function(f("t_replicate", 2, 2, KindSet::REQUEST, |a, _| {
        let host = host_arg(a.first().ok_or("missing host")?)?;
        let port = port_arg(a.get(1))?;
        Ok(Action::TReplicate { host, port })
    }));
    for name in [
        "fr_timer",
        "fr_inv_timer",
        "wt_timer",
        "retr_timer1",
        "retr_timer2",
        "max_transactions",
        "retry_after",
    ] {
        ex.param(
            "tm",
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
    }
}

/// `t_relay_to(host, port)` (UDP, or TCP for a large request) and `t_relay_to_udp`/`_tcp`/
/// `_tls(host, port)`, which name the transport.
fn bind_relay_to(a: &[Arg], transport: Option<Transport>) -> Result<Action, String> {
    let host = host_arg(a.first().ok_or("missing host")?)?;
    let port = port_arg(a.get(1))?;
    Ok(Action::TRelay {
        host: Some(host),
        port,
        transport,
    })
}

fn bind_reply(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let (code, reason) = super::sl::reply_args(a)?;
    Ok(Action::TReply { code, reason })
}

/// A route number argument that must name a block of `kind` the script defines.
fn route_no(a: &[Arg], c: &BindCtx<'_>, kind: RouteKind) -> Result<u32, String> {
    let n = a.first().map(arg_int).transpose()?.unwrap_or(-1);
    let n = u32::try_from(n).map_err(|_| format!("bad route number {n}"))?;
    if !c.has_route(kind, n) {
        return Err(c.fail_at(0, format!("{}[{n}] is not defined in this script", kind)));
    }
    Ok(n)
}

impl MsgCtx<'_, '_> {
    fn tm_now(&self) -> Instant {
        // The shard sets it for every message; a context built outside one (tests) falls
        // back to the clock.
        self.t.now.unwrap_or_else(Instant::now)
    }

    fn arrival(&self) -> Arrival {
        self.at
    }

    pub(crate) fn tm_call(&mut self, action: &Action) -> i32 {
        match action {
            Action::TOnNegative(n) => {
                self.t.routes.on_negative = Some(*n);
                1
            }
            Action::TOnFailure(n) => {
                self.t.routes.on_failure = Some(*n);
                1
            }
            Action::TOnBranch(n) => {
                self.t.routes.on_branch = Some(*n);
                1
            }
            Action::TOnReply(n) => {
                self.t.routes.on_reply = Some(*n);
                1
            }
            Action::TNewtran => self.t_newtran(),
            Action::TReply { code, reason } => self.t_reply(*code, reason),
            Action::TRelay {
                host,
                port,
                transport,
            } => self.t_relay(host.as_ref(), *port, false, *transport),
            Action::TReplicate { host, port } => self.t_relay(Some(host), *port, true, None),
            Action::AccRequest(status) => {
                let Some(tm) = self.tm.as_deref() else {
                    return -1;
                };
                let uri = self.current_uri().to_string();
                acc::report_request(&tm.acc, self.msg, &uri, status);
                1
            }
            _ => -1,
        }
    }

    fn t_newtran(&mut self) -> i32 {
        if !self.msg.is_request() || matches!(self.msg.method(), Some(Method::Ack)) {
            return -1;
        }
        if self.t.cell.is_some() {
            crate::error!("t_newtran: transaction already in process");
            return -1;
        }
        match self.new_cell() {
            Ok(()) => 1,
            Err(r) => r,
        }
    }

    /// Creates this request's transaction; `Err` is what the action returns (0 after a 503:
    /// the script ends there).
    fn new_cell(&mut self) -> Result<(), i32> {
        let received_uri = self.msg.request_uri().unwrap_or("");
        let mark = ViaScan::new(self.core, self.msg).loop_hash(self.msg, received_uri) as u32;
        self.new_cell_marked(mark)
    }

    /// [`Self::new_cell`] with the request's loop mark already worked out (by
    /// [`Self::refuse_loop`]).
    fn new_cell_marked(&mut self, loop_mark: u32) -> Result<(), i32> {
        let now = self.tm_now();
        let at = self.arrival();
        let flags = self.flags;
        let Some(tm) = self.tm.as_deref_mut() else {
            return Err(self.fail(500, "No Transaction Layer"));
        };
        match tm.tm.create(now, self.msg, at, flags, loop_mark) {
            Ok(id) => {
                self.t.cell = Some(id);
                if self.nat.force_rport && !at.transport.is_reliable() {
                    // nathelper's force_rport(): replies to the source port.
                    tm.tm.set_reply_to(id, at.back_to(at.src));
                }
                // What a module kept for the transaction to come goes with it now.
                if let (Some(a), Some(slot)) = (self.attach.take(), tm.tm.attachment_mut(id)) {
                    *slot = Some(a);
                }
                Ok(())
            }
            Err(CreateError::Full) => {
                crate::notice!("transaction table full; 503 to {}", self.at.src);
                tm.tm.reply_unavailable(self.msg, &at, &mut self.s.out);
                Err(0)
            }
            Err(CreateError::Exists) => {
                crate::error!("t_newtran: transaction already in process");
                Err(-1)
            }
            Err(CreateError::Bad) => Err(self.fail(400, "Bad Request")),
        }
    }

    /// Answers 482 to a request that looped back to us (statelessly, or in its transaction
    /// when t_newtran made one): `Err` with what the action returns. Otherwise the request's
    /// loop mark for the branches of its transaction, from the same pass over its Vias.
    fn refuse_loop(&mut self) -> Result<u32, i32> {
        let received_uri = self.msg.request_uri().unwrap_or("");
        let scan = ViaScan::new(self.core, self.msg);
        if !scan.looped(self.msg, received_uri, &self.core.reply.tag_prefix) {
            return Ok(scan.loop_hash(self.msg, received_uri) as u32);
        }
        Stats::inc(&self.stats.loops);
        crate::info!("loop detected for {}", self.current_uri());
        if self.t.cell.is_some() {
            return Err(self.t_reply(482, "Loop Detected"));
        }
        Err(self.sl_send_reply(482, b"Loop Detected"))
    }

    fn t_reply(&mut self, code: u16, reason: &str) -> i32 {
        let now = self.tm_now();
        let Some(id) = self.t.cell else {
            crate::error!("t_reply: no transaction for this request (call t_newtran first)");
            return self.fail(500, "No Transaction");
        };
        let Some(tm) = self.tm.as_deref_mut() else {
            return -1;
        };
        // append_to_reply's lines go on t_reply's reply too.
        let s = &mut *self.s;
        if tm
            .tm
            .t_reply(now, id, code, reason, &s.reply_hfs, &mut s.out)
        {
            1
        } else {
            -1
        }
    }

    /// SER 0.8: the branches a negative reply route appended are relayed when it ends.
    pub(crate) fn t_relay_in_failure(&mut self) -> i32 {
        self.t_relay(None, PortArg::Default, false, None)
    }

    fn t_relay(
        &mut self,
        host: Option<&HostArg>,
        port: PortArg,
        replicate: bool,
        transport: Option<Transport>,
    ) -> i32 {
        if !self.msg.is_request() {
            return self.fail(500, "Not a request");
        }
        let now = self.tm_now();
        let kind = self.t.kind.0;
        let in_failure = matches!(kind, RouteKind::Failure | RouteKind::Reply);
        match self.msg.method() {
            Some(Method::Ack) if !in_failure => {
                // The ACK of a 2xx is its own transaction-less request (RFC 3261 13.2.2.4):
                // forwarded statelessly, along the route.
                return self.forward(
                    host.unwrap_or(&HostArg::UriHost),
                    port_for(host, port),
                    true,
                    transport,
                );
            }
            Some(Method::Cancel) if !in_failure && !replicate => {
                let invite = self
                    .tm
                    .as_deref()
                    .and_then(|tm| tm.tm.find_invite_for_cancel(self.msg));
                let Some(invite) = invite else {
                    // No such INVITE here: statelessly on (RFC 3261 16.10).
                    return self.forward(
                        host.unwrap_or(&HostArg::UriHost),
                        port_for(host, port),
                        true,
                        transport,
                    );
                };
                if self.t.cell.is_none() {
                    if let Err(r) = self.new_cell() {
                        return r;
                    }
                }
                let Some(id) = self.t.cell else {
                    return -1;
                };
                let Some(tm) = self.tm.as_deref_mut() else {
                    return -1;
                };
                tm.tm.begin_relay(
                    now,
                    id,
                    self.msg,
                    self.t.routes,
                    self.flags,
                    "",
                    true,
                    &mut self.s.out,
                );
                tm.tm
                    .local_reply_to(now, id, self.msg, 200, "Canceling", "", &mut self.s.out);
                tm.tm.touch(id);
                tm.tm.cancel_invite(now, invite, &mut self.s.out);
                return 1;
            }
            _ => {}
        }
        // RFC 3261 16.3 step 4: a request that comes back unchanged is a loop (a spiral, with
        // a new Request-URI, goes on).
        let loop_mark = if in_failure {
            0
        } else {
            match self.refuse_loop() {
                Ok(mark) => mark,
                Err(r) => return r,
            }
        };
        let created_here = if in_failure {
            false
        } else {
            match self.t.cell {
                Some(id) => {
                    if self.tm.as_deref().is_some_and(|tm| tm.tm.is_relayed(id)) {
                        crate::error!("t_relay: transaction already in process");
                        return -1;
                    }
                    false
                }
                None => {
                    if let Err(r) = self.new_cell_marked(loop_mark) {
                        return r;
                    }
                    true
                }
            }
        };
        let Some(id) = self.t.cell else {
            return self.fail(500, "No Transaction");
        };
        // The destination set: for t_relay the Request-URI (in a failure route only when
        // the route changed it) and every appended branch, each with the flow lookup found
        // for it; t_relay_to one address.
        let mut uris: smallvec::SmallVec<[(String, Option<Dest>); 4]> = smallvec::SmallVec::new();
        if host.is_some() || !in_failure || self.uri_changed {
            uris.push((self.current_uri().to_string(), self.s.dst));
        }
        if host.is_none() {
            uris.extend(self.s.branches.drain(..).map(|b| (b.uri, b.dst)));
        }
        let out_uri = self.current_uri().to_string();
        let routes = self.t.routes;
        let flags = self.flags;
        let Some(tm) = self.tm.as_deref_mut() else {
            return -1;
        };
        tm.tm.begin_relay(
            now,
            id,
            self.msg,
            routes,
            flags,
            &out_uri,
            replicate,
            &mut self.s.out,
        );
        let script = tm.tm.script_of(id);
        let mut sent = 0;
        let mut branch_id = String::new();
        for (i, (uri, fixed)) in uris.iter().enumerate() {
            // branch_route[n]: this branch's URI as the Request-URI; it may rewrite it, add
            // headers, or drop the branch.
            // What a branch_route sets (force_send_socket too) is for its branch only.
            let saved = (
                self.uri_changed,
                std::mem::take(&mut self.s.uri),
                self.force_socket,
            );
            let mark = self.s.edits.mark();
            self.s.uri.push_str(uri);
            self.uri_changed = true;
            let mut keep = true;
            if let Some(n) = routes.on_branch {
                self.t.kind = RouteKindDefault(RouteKind::Branch);
                let outcome = script.run(RouteKind::Branch, n, self);
                self.t.kind = RouteKindDefault(kind);
                keep = !matches!(outcome, RunOutcome::Dropped);
            }
            let branch_uri = self.current_uri().to_string();
            // The first branch honours the Route loose_route chose.
            let hop = if i == 0 && !self.s.dst_uri.is_empty() {
                self.s.dst_uri.clone()
            } else {
                branch_uri.clone()
            };
            if keep {
                let how = Relay {
                    host,
                    port,
                    transport,
                    fixed: *fixed,
                };
                if self.send_branch(now, id, &how, &branch_uri, &hop, &mut branch_id) {
                    sent += 1;
                }
            } else {
                crate::debug!("branch {} dropped by branch_route", branch_uri);
            }
            self.s.edits.rollback(mark);
            self.uri_changed = saved.0;
            self.s.uri = saved.1;
            self.force_socket = saved.2;
        }
        if sent == 0 {
            if created_here {
                if let Some(tm) = self.tm.as_deref_mut() {
                    tm.tm.abandon(id);
                }
                self.t.cell = None;
            }
            if self.last_error.is_none() {
                return self.fail(500, "No Destination");
            }
            return -1;
        }
        1
    }

    /// Where one branch goes: a flow lookup found for its URI (`fixed`), else the next hop
    /// of `hop` (the Route loose_route chose or the branch's URI), or the host `t_relay_to`
    /// named; `None` (with `last_error`) when it cannot go anywhere.
    fn branch_dst(&mut self, how: &Relay<'_>, hop: &str) -> Option<(usize, BranchDst)> {
        if let Some(d) = how
            .fixed
            .filter(|d| super::core::flow_applies(d, how.host, how.port, how.transport))
        {
            return Some((d.socket, BranchDst::Addr(d)));
        }
        let next = self.next_hop(how.host, how.port, hop, how.transport).ok()?;
        let bdst = self.hop_dest(next).ok()?;
        Some((bdst.socket(), bdst))
    }

    /// Writes and starts one branch; false (with `last_error`) if it cannot go out.
    fn send_branch(
        &mut self,
        now: Instant,
        id: CellId,
        how: &Relay<'_>,
        uri: &str,
        hop: &str,
        branch_id: &mut String,
    ) -> bool {
        let Some((sock, bdst)) = self.branch_dst(how, hop) else {
            return false;
        };
        let Some(tm) = self.tm.as_deref() else {
            return false;
        };
        let index = tm.tm.branch_count(id);
        if !tm.tm.branch_id(id, index, branch_id) {
            return false;
        }
        let via = self.via_value(sock, branch_id);
        let mut buf = Vec::with_capacity(self.msg.buf().len() + 160);
        self.write_branch(&via, uri, sock, &mut buf);
        let Some(tm) = self.tm.as_deref_mut() else {
            return false;
        };
        let method = self.msg.method().unwrap_or(Method::Options);
        if tm.tm.add_branch(
            now,
            id,
            uri,
            bdst,
            buf,
            (branch_id, method),
            &mut self.s.out,
        ) {
            // A module that chose where this branch goes (the dispatcher) learns its index,
            // to hear later how it ended.
            if let Some(Some(a)) = tm.tm.attachment_mut(id) {
                a.branch_added(index, hop);
            }
            true
        } else {
            self.fail(500, "Cannot Start Branch");
            false
        }
    }
}

/// What a relay action asked for, for each of its branches.
struct Relay<'h> {
    /// The host `t_relay_to` named (None: the branch's URI).
    host: Option<&'h HostArg>,
    port: PortArg,
    /// The transport `t_relay_to_udp`/`_tcp`/`_tls` named.
    transport: Option<Transport>,
    /// The flow lookup found for the branch's URI.
    fixed: Option<Dest>,
}

/// The port for a stateless forward of what t_relay got: its own when given a host.
fn port_for(host: Option<&HostArg>, port: PortArg) -> PortArg {
    match (host, port) {
        (None, _) => PortArg::UriPort,
        (Some(_), p) => p,
    }
}
