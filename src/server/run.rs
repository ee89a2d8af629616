//! Script runs that pause: the request route run over a message (and resumed), and the runs
//! kept aside while off-shard work (exec, a database, rtpengine) goes on.
//!
//! A request, a reply's onreply_route or a failure route whose action suspends is parked under
//! one id sequence; the work is started in the blocking pool, a database's queue or a service
//! ([`Server::launch`]), and its result comes back as [`Event::Resumed`] with that id. While a
//! request waits, its retransmissions are absorbed ([`retrans_key`]). Past [`MAX_PARKED`] the
//! actions that would pause fail instead. Not here: the message path that starts a run
//! (`inbound`), or where what a run wrote goes (`Server::flush`, in `events`).

use std::sync::Arc;

use ser_script::RunOutcome;
use ser_shards::Ctx;

use super::{Event, Server};
use crate::modules::ctx::{MsgCtx, Pool, Resumed, Suspend};
use crate::modules::tm::ParkedReply;
use crate::modules::Script;
use crate::sip::Arrival;
use crate::stats::Stats;

/// A request whose script waits for an external program.
pub(super) struct Parked {
    data: Vec<u8>,
    /// Its retransmissions' key ([`retrans_key`]): they are absorbed while it waits.
    pub(super) key: u64,
    at: Arrival,
    /// The script it started under (its continuation points into it).
    script: Arc<Script>,
    k: ser_script::Continuation,
    saved: crate::modules::ctx::SavedCtx,
}

/// What a parked run resumes with.
pub(super) struct Resume {
    k: ser_script::Continuation,
    saved: crate::modules::ctx::SavedCtx,
    result: Resumed,
}

/// Script runs (requests and replies) one shard keeps paused for off-shard work; past it
/// the actions that would pause fail.
pub(super) const MAX_PARKED: usize = 4096;

impl Server {
    /// Starts the name lookups tm asked for, and the work of the failure routes that paused.
    pub(super) fn start_tm_dns(&mut self, ctx: &mut Ctx<'_, Event>) {
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

    /// Runs (or resumes) the request route over `msg` and handles how it ended: a run that
    /// paused for an external program is parked until the program's result comes back.
    pub(super) fn run_request(
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
    pub(super) fn resume_parked(&mut self, ctx: &mut Ctx<'_, Event>, id: u64, result: Resumed) {
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
    pub(super) fn parked_count(&self) -> usize {
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
    pub(super) fn park_reply(&mut self, ctx: &mut Ctx<'_, Event>, mut p: Box<ParkedReply>) {
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
}

/// What a request's retransmissions share (RFC 3261 17.2.3: the top Via's branch, the
/// CSeq method; with the Call-ID and CSeq number for pre-3261 branches), hashed.
pub(super) fn retrans_key(msg: &ser_parser::Message<'_>) -> u64 {
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
