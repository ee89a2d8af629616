//! The routes tm asks the script to run, on [`TmShard`]: the onreply_route over a reply
//! (with the 2xx it changed remembered for the callee's retransmissions) and the failure
//! route (or SER 0.8's negative reply route) of a cell whose branches all failed. Either may
//! pause for off-shard work: [`ParkedReply`] and [`ParkedFailure`] carry the paused run
//! until the shard hands back the result. What the script's tm actions do is `actions`.

use std::sync::Arc;
use std::time::Instant;

use ser_parser::Message;
use ser_script::{RouteKind, RunOutcome};

use super::shard::TmShard;
use crate::modules::ctx::{MsgCtx, Resumed, SavedCtx, Suspend};
use crate::modules::Script;
use crate::sip::{Arrival, Outbox};
use crate::tm::{
    FailureOutcome, FailureRun, OnReplyRun, ReplyMatch, RouteKindDefault, Routes, TState,
};

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

impl TmShard {
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
    pub(super) fn run_failure(
        &mut self,
        now: Instant,
        run: FailureRun<Arc<Script>>,
        out: &mut Outbox,
    ) {
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
