//! The shard handler that runs scenarios: one table of calls per shard (a slab indexed by
//! Call-ID), SIPp's step semantics, RFC 3261 retransmissions over UDP, per-transaction stats.
//!
//! Ownership: a call lives on one shard. Call-IDs made here start with the call number, and
//! call numbers are dealt so that `(number - 1) % shards` is the shard that made the call; an
//! incoming Call-ID is owned by that rule when it starts with digits (SIPp's `N-pid@ip` too)
//! and by a hash otherwise. A datagram that reached another shard (SO_REUSEPORT spreads by
//! 4-tuple, not by call) is handed to the owner before anything else.
//!
//! Matching follows SIPp: from the current step, optional `recv`s are skipped until one
//! matches; a message matching an earlier `recv` is a retransmission (the last message sent is
//! sent again); anything else fails the call ("unexpected", or its status code for a final
//! response, which is ACKed as RFC 3261 17.1.1.3 wants).
//!
//! The pieces, each a submodule: [`setup`] (what the shards share), [`dealing`] (owner shard,
//! scenario variant), [`call`] (one call's record), [`table`] (the call table),
//! [`compose`] (messages from templates), [`transmit`] (sending), [`machine`] (the step
//! machine and call timers). This file is the shard handler itself: [`Gen`], its wake-ups,
//! starting calls on schedule, handing datagrams to their owner and flushing the stats.
//!
//! It owns no sockets (the shard runtime binds them and hands it datagrams and timer wake-ups)
//! and speaks UDP only; watching the shards' totals and reporting them is `main`'s.

mod call;
mod compose;
mod dealing;
mod machine;
mod setup;
mod table;
mod transmit;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ser_parser::Message;
use ser_shards::{Ctx, Handler, Inbound, SocketId, TimerId};

use crate::scenario::Step;
use crate::stats::Stats;
use crate::users::{expand_into, push_u64};
use crate::wheel::Wheel;

use call::{push_text, Call};
use compose::{fold, Folded};
use dealing::{owner, variant};
use machine::recv_matches;
pub use setup::{Setup, Shared};

/// Counters go to the shared totals this often...
const FLUSH: Duration = Duration::from_millis(250);
/// ... and the histograms (a merge walks every bucket) every this many flushes.
const MERGE_EVERY: u32 = 4;

pub struct Gen {
    setup: Arc<Setup>,
    shared: Arc<Shared>,
    local: Stats,
    pushed: (u64, u64, u64),
    calls: Vec<Option<Call>>,
    free: Vec<usize>,
    /// Live calls by a hash of their Call-ID (checked against the call's own on lookup)...
    by_id: HashMap<u64, usize, ahash::RandomState>,
    /// ... and by the Call-ID itself where two live ones hash alike.
    by_id_more: HashMap<Box<[u8]>, usize>,
    ids: ahash::RandomState,
    /// Finished calls, kept for their allocations.
    pool: Vec<Call>,
    epochs: Vec<u64>,
    next_epoch: u64,
    start: Instant,
    last_flush: Instant,
    quota: u64,
    started: u64,
    starting_done: bool,
    done: bool,
    shard: usize,
    shards: usize,
    buf: Vec<u8>,
    body: Vec<u8>,
    /// The call timers; the shard wakes us through one runtime timer (token 0) at `wake_at`.
    wheel: Wheel,
    wake_at: Option<Instant>,
    fired: Vec<u64>,
    /// `next_start()` for `started` = .0.
    next_start_cache: Option<(u64, Option<Instant>)>,
    flushes: u32,
    /// Per socket, per scenario, per step: the send templates folded for that socket (see
    /// `fold`).
    folded: Arc<Vec<(SocketId, Folded)>>,
}

impl Gen {
    pub fn new(setup: Arc<Setup>, shared: Arc<Shared>, shard: usize, shards: usize) -> Self {
        let quota = setup
            .count
            .map(|c| c / shards as u64 + u64::from((shard as u64) < c % shards as u64))
            .unwrap_or(u64::MAX);
        let name = setup
            .scenarios
            .first()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let now = Instant::now();
        Self {
            setup,
            shared,
            local: Stats::new(&name),
            pushed: (0, 0, 0),
            calls: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::with_hasher(ahash::RandomState::new()),
            by_id_more: HashMap::new(),
            ids: ahash::RandomState::new(),
            pool: Vec::new(),
            epochs: Vec::new(),
            next_epoch: 1,
            start: now,
            last_flush: now,
            quota,
            started: 0,
            starting_done: false,
            done: false,
            shard,
            shards,
            buf: Vec::with_capacity(2048),
            body: Vec::with_capacity(512),
            wheel: Wheel::new(now),
            wake_at: None,
            fired: Vec::new(),
            next_start_cache: None,
            flushes: 0,
            folded: Arc::new(Vec::new()),
        }
    }

    /// Publishes the counters; with `merge`, also the histograms (and the counts start over).
    fn flush(&mut self, merge: bool) {
        let (a, s, f) = (
            self.local.calls.attempted,
            self.local.calls.succeeded,
            self.local.calls.failed,
        );
        self.shared
            .attempted
            .fetch_add(a - self.pushed.0, Ordering::Relaxed);
        self.shared
            .succeeded
            .fetch_add(s - self.pushed.1, Ordering::Relaxed);
        self.shared
            .failed
            .fetch_add(f - self.pushed.2, Ordering::Relaxed);
        self.pushed = (a, s, f);
        if !merge {
            return;
        }
        if let Ok(mut st) = self.shared.stats.lock() {
            st.merge(&self.local);
            self.local.reset();
            self.pushed = (0, 0, 0);
        }
    }

    /// When the next call is due to start (`None`: no more starts); computed once per start.
    fn next_start(&mut self) -> Option<Instant> {
        if self.setup.server || self.starting_done || self.started >= self.quota {
            return None;
        }
        if let Some((n, at)) = self.next_start_cache {
            if n == self.started {
                return at;
            }
        }
        let share = self.setup.schedule.share(self.shards);
        let at = share
            .time_of(self.started + 1)
            .map(|t| self.start + Duration::from_secs_f64(t.min(1e9)));
        self.next_start_cache = Some((self.started, at));
        at
    }

    /// Arms the runtime timer for the next thing to do: a call timer, a start, a stats flush,
    /// the end of a UAS's duration. Starts are grouped by the batch interval.
    fn rearm(&mut self, ctx: &mut Ctx<'_, ()>) {
        let now = ctx.now();
        let mut next = self.last_flush + FLUSH;
        if let Some(t) = self.wheel.next_hint() {
            next = next.min(t);
        }
        if let Some(t) = self.next_start() {
            next = next.min(if self.setup.grain.is_zero() {
                self.wheel.tick_at_or_after(t)
            } else {
                t.max(now + self.setup.grain)
            });
        }
        if self.setup.server && !self.starting_done {
            if let Some(d) = self.setup.duration {
                next = next.min(self.start + d);
            }
        }
        if self.wake_at.map_or(true, |w| next < w) {
            ctx.set_timer(next, 0);
            self.wake_at = Some(next);
        }
    }

    fn start_call(&mut self, ctx: &mut Ctx<'_, ()>, now: Instant) {
        let number = self.started * self.shards as u64 + self.shard as u64 + 1;
        let socks = ctx.sockets();
        if socks.is_empty() {
            return;
        }
        let s = &socks[(self.started % socks.len() as u64) as usize];
        let (sock, local) = (s.id, s.local);
        self.started += 1;
        let target = self.setup.target;
        let mut call = self.new_call(0, number, sock, local, target, now);
        let setup = &self.setup;
        push_u64(&mut call.call_id, number);
        call.call_id.push('-');
        call.call_id.push_str(&setup.pid_text);
        call.call_id.push('@');
        call.call_id.push_str(&setup.local_ip_text);
        expand_into(
            &mut call.callee,
            &setup.callee_pattern,
            (number - 1) % setup.callee_count.max(1) + 1,
        );
        setup.users.fill(number - 1, &mut call.user);
        self.local.calls.attempted += 1;
        let slot = self.insert(call);
        self.run(ctx, slot, now);
    }

    fn new_server_call(
        &mut self,
        ctx: &mut Ctx<'_, ()>,
        d: &Inbound<'_>,
        msg: &Message<'_>,
        cid: &[u8],
        now: Instant,
    ) {
        if self.starting_done {
            return;
        }
        let k = self.started;
        let number = k * self.shards as u64 + self.shard as u64 + 1;
        let scen = variant(number, &self.setup.shares).min(self.setup.scenarios.len() - 1);
        let first = self.setup.scenarios[scen]
            .steps
            .iter()
            .position(|s| matches!(s, Step::Recv { .. }));
        let Some(first) = first.filter(|&f| {
            let cseq = msg.cseq().ok();
            recv_matches(&self.setup.scenarios[scen].steps[f], msg, cseq.as_ref())
        }) else {
            return;
        };
        self.started += 1;
        if self.started >= self.quota {
            self.starting_done = true;
        }
        let mut call = self.new_call(scen, number, d.socket, d.local, d.peer, now);
        push_text(&mut call.call_id, cid);
        self.setup.users.fill(number - 1, &mut call.user);
        call.step = first;
        self.local.calls.attempted += 1;
        let slot = self.insert(call);
        self.on_message(ctx, slot, msg, d.at, now);
    }

    fn on_tick(&mut self, ctx: &mut Ctx<'_, ()>, now: Instant) {
        if !self.setup.server && !self.starting_done {
            let t = now.duration_since(self.start);
            let stop = self.setup.duration.is_some_and(|d| t >= d)
                || self.shared.stop_starting.load(Ordering::Relaxed);
            if stop {
                self.starting_done = true;
            } else {
                let share = self.setup.schedule.share(self.shards);
                // Calls due within the grain start now: one wake-up starts them together (with
                // no grain, the calls due by this millisecond tick).
                let due = share
                    .due((t + self.setup.grain).as_secs_f64())
                    .min(self.quota);
                let mut budget = 20_000;
                while self.started < due && budget > 0 {
                    self.start_call(ctx, now);
                    budget -= 1;
                }
                if self.started >= self.quota {
                    self.starting_done = true;
                }
            }
            if self.starting_done {
                self.shared.starting_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.setup.server
            && self
                .setup
                .duration
                .is_some_and(|d| now.duration_since(self.start) >= d)
        {
            self.starting_done = true;
        }
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.expire(now, &mut fired);
        for &token in &fired {
            self.on_call_timer(ctx, token, now);
        }
        fired.clear();
        self.fired = fired;
        self.check_done();
        if now.duration_since(self.last_flush) >= FLUSH {
            self.last_flush = now;
            self.flushes += 1;
            self.flush(self.flushes % MERGE_EVERY == 0);
        }
    }

    fn check_done(&mut self) {
        if self.starting_done && !self.done && self.live_calls() == 0 {
            self.done = true;
            self.shared.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler for Gen {
    type Event = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, ()>) {
        let setup = &self.setup;
        // A UAC sends to the target only; a UAS answers whoever called.
        let remote = (!setup.server).then_some(setup.target);
        let folded = ctx
            .sockets()
            .iter()
            .map(|si| {
                let per_scenario = setup
                    .scenarios
                    .iter()
                    .map(|sc| {
                        sc.steps
                            .iter()
                            .map(|st| match st {
                                Step::Send { tpl, .. } => Some(fold(tpl, si.local, remote, setup)),
                                _ => None,
                            })
                            .collect()
                    })
                    .collect();
                (si.id, per_scenario)
            })
            .collect();
        self.folded = Arc::new(folded);
        let now = ctx.now();
        self.start = now;
        self.last_flush = now;
        if let Ok(mut s) = self.shared.started_at.lock() {
            s.get_or_insert(now);
        }
        ctx.set_timer(now, 0);
        self.wake_at = Some(now);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, ()>, d: Inbound<'_>) {
        // The index only (start line, header names and ranges): the generator reads a few
        // headers, each through the parser's checked accessors, and a full validation costs
        // more than everything else it does per message.
        // Built where it stays: the index is a few KB, and moving it out is a copy.
        let mut slot = None;
        let Some(msg) = ser_parser::parse_lenient_in(d.data, &mut slot) else {
            return;
        };
        let Some(cid) = msg.call_id() else {
            return;
        };
        if self.shards > 1 && !d.handed_off {
            let o = owner(cid, self.shards);
            if o != self.shard {
                ctx.handoff(o, &d);
                return;
            }
        }
        let now = ctx.now();
        match self.lookup(cid) {
            Some(slot) => self.on_message(ctx, slot, msg, d.at, now),
            None if self.setup.server && msg.is_request() => {
                self.new_server_call(ctx, &d, msg, cid, now)
            }
            None => {}
        }
        self.check_done();
        self.rearm(ctx);
    }

    fn on_event(&mut self, _ctx: &mut Ctx<'_, ()>, _e: ()) {}

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ()>, _t: TimerId, _token: u64) {
        let now = ctx.now();
        if self.wake_at.is_some_and(|w| w <= now) {
            self.wake_at = None;
        }
        self.on_tick(ctx, now);
        self.rearm(ctx);
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        self.flush(true);
    }
}
