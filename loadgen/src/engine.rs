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

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ser_parser::{CSeq, HeaderName, Message};
use ser_shards::{Ctx, Datagram, Handler, SocketId, TimerId};

use crate::digest::{self, Challenge};
use crate::light;
use crate::rate::Schedule;
use crate::scenario::{Kw, Scenario, Seg, Step, Template};
use crate::stats::{Reason, Stats};
use crate::users::{digits, expand_into, push_u64, Inject, User, Users};
use crate::wheel::Wheel;

/// Finished calls kept for reuse, at most.
const POOL_MAX: usize = 4096;
/// Counters go to the shared totals this often...
const FLUSH: Duration = Duration::from_millis(250);
/// ... and the histograms (a merge walks every bucket) every this many flushes.
const MERGE_EVERY: u32 = 4;
/// RFC 3261 T2: non-INVITE requests and 2xx responses retransmit at most this far apart.
const T2_MS: u64 = 4000;

/// What every shard reads: the scenario(s) and the options.
pub struct Setup {
    /// For a UAC, one scenario; for the built-in UAS, answer / busy / no answer.
    pub scenarios: Vec<Scenario>,
    /// Shares of scenarios 1.. (the rest go to scenario 0): busy, no answer.
    pub shares: Vec<f64>,
    pub server: bool,
    pub target: SocketAddr,
    pub local_ip: IpAddr,
    pub service: String,
    pub users: Users,
    pub callee_pattern: String,
    pub callee_count: u64,
    pub inject: Option<Inject>,
    pub hold_ms: u64,
    pub timeout: Duration,
    pub recv_timeout: Duration,
    pub schedule: Schedule,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub pid: u32,
    pub media_port: u16,
    /// Calls due within this long of a wake-up start together (the shards' batch interval).
    pub grain: Duration,
    /// Texts written into every message, formatted once.
    pub local_ip_text: String,
    pub pid_text: String,
    pub target_ip_text: String,
}

impl Setup {
    /// The target's address text when the peer is the target (the common case), else formatted.
    fn remote_ip_text(&self, a: std::net::Ipv4Addr) -> std::borrow::Cow<'_, str> {
        if IpAddr::V4(a) == self.target.ip() {
            std::borrow::Cow::Borrowed(&self.target_ip_text)
        } else {
            std::borrow::Cow::Owned(a.to_string())
        }
    }
}

/// Totals the shards add to, and what the main thread watches.
pub struct Shared {
    pub stats: Mutex<Stats>,
    pub attempted: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Shards that have started every call they will start.
    pub starting_done: AtomicUsize,
    /// Shards with nothing left in flight after that.
    pub done: AtomicUsize,
    pub started_at: Mutex<Option<Instant>>,
    pub stop_starting: AtomicBool,
}

impl Shared {
    pub fn new(name: &str) -> Self {
        Self {
            stats: Mutex::new(Stats::new(name)),
            attempted: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            starting_done: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            started_at: Mutex::new(None),
            stop_starting: AtomicBool::new(false),
        }
    }
}

struct Txn {
    /// The transaction type: an index into the shard's `Stats::txns`.
    method: usize,
    start: Instant,
    challenged: bool,
    uas: bool,
}

struct Call {
    scen: usize,
    step: usize,
    number: u64,
    call_id: String,
    sock: SocketId,
    local: SocketAddr,
    peer: SocketAddr,
    cseq: u32,
    last: Vec<u8>,
    last_sent: Vec<u8>,
    routes: String,
    next_url: String,
    peer_tag: String,
    retrans_ms: u64,
    retrans_base: u64,
    retrans_cap: u64,
    retrans_first: Instant,
    retrans_epoch: u64,
    step_epoch: u64,
    txn_epoch: u64,
    txn: Option<Txn>,
    challenge: Option<Challenge>,
    invite_ruri: String,
    user: User,
    callee: String,
    started: Instant,
}

/// A buffer a finished call leaves for the next one.
trait Empty: Default {
    fn empty(&mut self);
}

impl Empty for String {
    fn empty(&mut self) {
        self.clear();
    }
}

impl Empty for Vec<u8> {
    fn empty(&mut self) {
        self.clear();
    }
}

impl Empty for User {
    fn empty(&mut self) {
        self.user.clear();
        self.password.clear();
        self.domain.clear();
    }
}

/// `field` of the finished call `old`, emptied (its allocation kept), or a new one.
fn reuse<T: Empty>(old: &mut Option<Call>, field: impl FnOnce(&mut Call) -> &mut T) -> T {
    let mut v = old
        .as_mut()
        .map(|c| std::mem::take(field(c)))
        .unwrap_or_default();
    v.empty();
    v
}

const K_RETRANS: u64 = 1;
const K_STEP: u64 = 2;
const K_TXN: u64 = 3;

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

/// Per scenario, per step: a send step's template folded for one socket (see `fold`).
type Folded = Vec<Vec<Option<Template>>>;

/// The shard that owns a Call-ID (see the module comment).
pub fn owner(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let digits = call_id.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && digits < 19 && call_id.get(digits) == Some(&b'-') {
        let mut n: u64 = 0;
        for b in &call_id[..digits] {
            n = n * 10 + u64::from(b - b'0');
        }
        if n > 0 {
            return ((n - 1) % shards as u64) as usize;
        }
    }
    // FNV-1a.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in call_id {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    (h % shards as u64) as usize
}

/// Which scenario variant the k-th answered call gets: a low-discrepancy sequence, so the
/// shares hold over any stretch of calls, not just on average.
pub fn variant(k: u64, shares: &[f64]) -> usize {
    let x = (k as f64 * 0.618_033_988_749_895).fract();
    let mut acc = 0.0;
    for (i, s) in shares.iter().enumerate() {
        acc += s;
        if x < acc {
            return i + 1;
        }
    }
    0
}

fn canonical(name: &[u8]) -> &[u8] {
    match name {
        b"v" | b"V" => b"via",
        b"f" | b"F" => b"from",
        b"t" | b"T" => b"to",
        b"i" | b"I" => b"call-id",
        b"m" | b"M" => b"contact",
        b"l" | b"L" => b"content-length",
        b"c" | b"C" => b"content-type",
        b"k" | b"K" => b"supported",
        b"s" | b"S" => b"subject",
        b"e" | b"E" => b"content-encoding",
        _ => name,
    }
}

fn header_is(raw: &[u8], want: &str) -> bool {
    canonical(raw).eq_ignore_ascii_case(canonical(want.as_bytes()))
}

/// Appends bytes taken from a message: as they are when they are UTF-8 (almost always, and
/// checked faster than a lossy conversion walks them), else with U+FFFD for what is not.
fn push_text(to: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(t) => to.push_str(t),
        Err(_) => to.push_str(&String::from_utf8_lossy(b)),
    }
}

/// Whether `msg` is what the receive step waits for; `cseq` is the message's, parsed once.
fn recv_matches(step: &Step, msg: &Message<'_>, cseq: Option<&CSeq<'_>>) -> bool {
    let Step::Recv {
        request,
        response,
        txn_method,
        ..
    } = step
    else {
        return false;
    };
    if let Some(m) = request {
        return msg
            .method()
            .is_some_and(|x| x.as_str().eq_ignore_ascii_case(m));
    }
    let (Some(want), Some(code)) = (response, msg.status()) else {
        return false;
    };
    if *want != code {
        return false;
    }
    match (txn_method, cseq) {
        (Some(m), Some(c)) => c.method.as_str().eq_ignore_ascii_case(m),
        (Some(_), None) => false,
        (None, _) => true,
    }
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

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn arm(&mut self, slot: usize, kind: u64, at: Instant) -> u64 {
        let e = self.epoch();
        // token: slot+1 in the high 30 bits, kind in 2 bits, epoch low 32 bits (checked).
        self.wheel.set(
            at,
            ((slot as u64 + 1) << 34) | (kind << 32) | (e & 0xffff_ffff),
        );
        e & 0xffff_ffff
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
            next = next.min(t.max(now + self.setup.grain));
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

    fn lookup(&self, cid: &[u8]) -> Option<usize> {
        if let Some(&slot) = self.by_id.get(&self.ids.hash_one(cid)) {
            let same = self.calls.get(slot).and_then(Option::as_ref);
            if same.is_some_and(|c| c.call_id.as_bytes() == cid) {
                return Some(slot);
            }
        }
        self.by_id_more.get(cid).copied()
    }

    fn insert(&mut self, call: Call) -> usize {
        let key = self.ids.hash_one(call.call_id.as_bytes());
        if self.by_id.contains_key(&key) {
            // Another live call hashes alike: keyed by its bytes instead.
            let id: Box<[u8]> = call.call_id.as_bytes().into();
            let slot = self.place(call);
            self.by_id_more.insert(id, slot);
            return slot;
        }
        let slot = self.place(call);
        self.by_id.insert(key, slot);
        slot
    }

    fn place(&mut self, call: Call) -> usize {
        match self.free.pop() {
            Some(s) => {
                self.calls[s] = Some(call);
                s
            }
            None => {
                self.calls.push(Some(call));
                self.epochs.push(0);
                self.calls.len() - 1
            }
        }
    }

    fn live_calls(&self) -> usize {
        self.by_id.len() + self.by_id_more.len()
    }

    fn finish(&mut self, slot: usize, result: Result<(), Reason>, now: Instant) {
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let key = self.ids.hash_one(call.call_id.as_bytes());
        if self.by_id.get(&key) == Some(&slot) {
            self.by_id.remove(&key);
        } else {
            self.by_id_more.remove(call.call_id.as_bytes());
        }
        self.free.push(slot);
        match result {
            Ok(()) => {
                self.local.calls.succeeded += 1;
                self.local
                    .calls
                    .record_us(now.duration_since(call.started).as_micros() as u64);
                if let Some(t) = call.txn.take() {
                    self.local.txns[t.method].fail(Reason::Timeout);
                }
            }
            Err(r) => {
                self.local.calls.fail(r);
                if let Some(t) = call.txn.take() {
                    self.local.txns[t.method].fail(r);
                }
            }
        }
        if self.pool.len() < POOL_MAX {
            self.pool.push(call);
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

    /// A new call; its buffers come from the pool of finished calls, emptied, so they keep
    /// their allocations. The caller fills in the Call-ID, the callee and the user.
    fn new_call(
        &mut self,
        scen: usize,
        number: u64,
        sock: SocketId,
        local: SocketAddr,
        peer: SocketAddr,
        now: Instant,
    ) -> Call {
        let mut old = self.pool.pop();
        Call {
            scen,
            step: 0,
            number,
            call_id: reuse(&mut old, |c| &mut c.call_id),
            sock,
            local,
            peer,
            cseq: 0,
            last: reuse(&mut old, |c| &mut c.last),
            last_sent: reuse(&mut old, |c| &mut c.last_sent),
            routes: reuse(&mut old, |c| &mut c.routes),
            next_url: reuse(&mut old, |c| &mut c.next_url),
            peer_tag: reuse(&mut old, |c| &mut c.peer_tag),
            retrans_ms: 0,
            retrans_base: 0,
            retrans_cap: 0,
            retrans_first: now,
            retrans_epoch: 0,
            step_epoch: 0,
            txn_epoch: 0,
            txn: None,
            challenge: None,
            invite_ruri: reuse(&mut old, |c| &mut c.invite_ruri),
            user: reuse(&mut old, |c| &mut c.user),
            callee: reuse(&mut old, |c| &mut c.callee),
            started: now,
        }
    }

    /// Runs steps from the call's current one until it waits (recv, pause) or ends.
    fn run(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, now: Instant) {
        let setup = Arc::clone(&self.setup);
        for _ in 0..10_000 {
            let Some(call) = self.calls.get(slot).and_then(Option::as_ref) else {
                return;
            };
            let steps = &setup.scenarios[call.scen].steps;
            let i = call.step;
            let Some(step) = steps.get(i) else {
                self.finish(slot, Ok(()), now);
                return;
            };
            match step {
                Step::Send {
                    tpl, retrans, next, ..
                } => {
                    let txn = self.send(ctx, slot, tpl, i);
                    // One timer per transaction: the retransmission timer, which turns into
                    // the transaction's timeout once retransmissions stop (on_call_timer);
                    // without retransmissions, the timeout itself.
                    if let Some(r) = retrans {
                        let cap = if tpl.method.as_deref() == Some("INVITE") {
                            u64::MAX
                        } else {
                            T2_MS
                        };
                        let mut at = now + Duration::from_millis(*r);
                        if txn {
                            at = at.min(now + setup.timeout);
                        }
                        let e = self.arm(slot, K_RETRANS, at);
                        if let Some(c) = self.calls[slot].as_mut() {
                            c.retrans_ms = *r;
                            c.retrans_base = *r;
                            c.retrans_cap = cap;
                            c.retrans_first = now;
                            c.retrans_epoch = e;
                            if txn {
                                c.txn_epoch = e;
                            }
                        }
                    } else if txn {
                        let e = self.arm(slot, K_TXN, now + setup.timeout);
                        if let Some(c) = self.calls[slot].as_mut() {
                            c.txn_epoch = e;
                        }
                    }
                    if let Some(c) = self.calls[slot].as_mut() {
                        c.step = next.unwrap_or(i + 1);
                    }
                }
                Step::Recv { timeout, .. } => {
                    let wait = match timeout {
                        Some(ms) => Some(Duration::from_millis(*ms)),
                        None if call.txn.as_ref().is_some_and(|t| !t.uas) => None,
                        None => Some(setup.recv_timeout),
                    };
                    if let Some(w) = wait {
                        let e = self.arm(slot, K_STEP, now + w);
                        if let Some(c) = self.calls[slot].as_mut() {
                            c.step_epoch = e;
                        }
                    }
                    return;
                }
                Step::Pause { ms, next } => {
                    let ms = ms.unwrap_or(setup.hold_ms);
                    if ms == 0 {
                        if let Some(c) = self.calls[slot].as_mut() {
                            c.step = next.unwrap_or(i + 1);
                        }
                        continue;
                    }
                    let e = self.arm(slot, K_STEP, now + Duration::from_millis(ms));
                    if let Some(c) = self.calls[slot].as_mut() {
                        c.step_epoch = e;
                    }
                    return;
                }
                Step::Timewait(ms) => {
                    let e = self.arm(slot, K_STEP, now + Duration::from_millis(*ms));
                    if let Some(c) = self.calls[slot].as_mut() {
                        c.step_epoch = e;
                    }
                    return;
                }
                Step::Nop { next } => {
                    let n = next.unwrap_or(i + 1);
                    if let Some(c) = self.calls[slot].as_mut() {
                        c.step = n;
                    }
                }
                Step::Label => {
                    if let Some(c) = self.calls[slot].as_mut() {
                        c.step = i + 1;
                    }
                }
            }
        }
        // A scenario that loops without waiting (next= back to itself with no recv/pause).
        self.finish(slot, Err(Reason::Unexpected), now);
    }

    fn send(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, tpl: &Template, step: usize) -> bool {
        let setup = Arc::clone(&self.setup);
        let folded = Arc::clone(&self.folded);
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        let tpl = folded
            .iter()
            .find(|(id, _)| *id == call.sock)
            .filter(|_| setup.server || call.peer == setup.target)
            .and_then(|(_, f)| f.get(call.scen)?.get(step)?.as_ref())
            .unwrap_or(tpl);
        let is_request = tpl.method.is_some();
        let method = tpl.method.as_deref().unwrap_or("");
        if is_request && tpl.uses_cseq && method != "ACK" && method != "CANCEL" {
            call.cseq += 1;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let mut body = std::mem::take(&mut self.body);
        buf.clear();
        body.clear();
        {
            let last = if tpl.uses_last {
                ser_parser::parse(&call.last).ok()
            } else {
                None
            };
            for l in &tpl.body {
                for s in l {
                    write_seg(&mut body, s, call, &setup, last.as_ref(), step, 0, tpl);
                }
                body.extend_from_slice(b"\r\n");
            }
            for (i, l) in tpl.head.iter().enumerate() {
                let start = buf.len();
                for s in l {
                    write_seg(
                        &mut buf,
                        s,
                        call,
                        &setup,
                        last.as_ref(),
                        step,
                        body.len(),
                        tpl,
                    );
                }
                let solid = tpl.solid.get(i).copied().unwrap_or(false);
                if !solid && buf[start..].iter().all(|b| b.is_ascii_whitespace()) {
                    buf.truncate(start);
                } else {
                    buf.extend_from_slice(b"\r\n");
                }
            }
        }
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&body);
        ctx.send(call.sock, call.peer, &buf);
        // Kept for retransmission; the call's old buffer becomes the next scratch one.
        std::mem::swap(&mut call.last_sent, &mut buf);
        let mut scratch = buf;
        let buf = &call.last_sent;
        let mut arm_txn = false;
        if is_request {
            if method == "INVITE" {
                call.invite_ruri.clear();
                if let Some(u) = buf.split(|b| *b == b' ').nth(1) {
                    push_text(&mut call.invite_ruri, u);
                }
            }
            if method != "ACK" {
                match &mut call.txn {
                    Some(t) if t.challenged && self.local.txns[t.method].name == method => {
                        t.challenged = false
                    }
                    _ => {
                        if let Some(old) = call.txn.take() {
                            // A new request while the last one is open: that one got no final.
                            self.local.txns[old.method].fail(Reason::Timeout);
                        }
                        let ti = self.local.txn_index(method);
                        // When it is queued, not when this wake-up began: a batch builds many
                        // messages, and they leave together right after.
                        call.txn = Some(Txn {
                            method: ti,
                            start: Instant::now(),
                            challenged: false,
                            uas: false,
                        });
                        self.local.txns[ti].attempted += 1;
                    }
                }
                arm_txn = true;
            }
        } else if let Some(code) = tpl.code {
            if code >= 200 && call.txn.as_ref().is_some_and(|t| t.uas) {
                if let Some(t) = call.txn.take() {
                    let c = &mut self.local.txns[t.method];
                    c.record_us(t.start.elapsed().as_micros() as u64);
                    if code < 300 {
                        c.succeeded += 1;
                    } else {
                        c.fail(Reason::Code(code));
                    }
                }
            }
        }
        scratch.clear();
        self.buf = scratch;
        self.body = body;
        arm_txn
    }

    fn resend_last(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize) {
        if let Some(c) = self.calls.get(slot).and_then(Option::as_ref) {
            if !c.last_sent.is_empty() {
                ctx.send(c.sock, c.peer, &c.last_sent);
                self.local.retrans += 1;
            }
        }
    }

    /// ACK for a non-2xx final response to our INVITE (RFC 3261 17.1.1.3).
    fn ack_failure(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, msg: &Message<'_>) {
        let Some(call) = self.calls.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let (Ok(via), Ok(cseq)) = (msg.top_via(), msg.cseq()) else {
            return;
        };
        let b = msg.buf();
        let hv = |n: HeaderName| msg.header(n).map(|h| h.value).unwrap_or(b"");
        let mut out = Vec::with_capacity(400);
        let _ = write!(out, "ACK {} SIP/2.0\r\nVia: ", call.invite_ruri);
        out.extend_from_slice(b.get(via.range.clone()).unwrap_or(b""));
        out.extend_from_slice(b"\r\nFrom: ");
        out.extend_from_slice(hv(HeaderName::From));
        out.extend_from_slice(b"\r\nTo: ");
        out.extend_from_slice(hv(HeaderName::To));
        out.extend_from_slice(b"\r\nCall-ID: ");
        out.extend_from_slice(call.call_id.as_bytes());
        let _ = write!(
            out,
            "\r\nCSeq: {} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            cseq.number
        );
        ctx.send(call.sock, call.peer, &out);
    }

    /// `at` is when `msg` arrived (the kernel's stamp): response times end there; `now` is
    /// when it is handled, for what is sent and armed in return.
    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_, ()>,
        slot: usize,
        msg: &Message<'_>,
        at: Instant,
        now: Instant,
    ) {
        let setup = Arc::clone(&self.setup);
        let Some(call) = self.calls.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let steps = &setup.scenarios[call.scen].steps;
        let cseq = msg.cseq().ok();
        let mut found = None;
        for (i, s) in steps.iter().enumerate().skip(call.step) {
            match s {
                _ if recv_matches(s, msg, cseq.as_ref()) => {
                    found = Some(i);
                    break;
                }
                Step::Recv { optional: true, .. } | Step::Label => continue,
                _ => break,
            }
        }
        let code = msg.status();
        let is_req = msg.is_request();
        let Some(i) = found else {
            if steps[..call.step.min(steps.len())]
                .iter()
                .any(|s| recv_matches(s, msg, cseq.as_ref()))
            {
                // A retransmission of something already taken: answer it again.
                let is_ack = msg.method().is_some_and(|m| m.as_str() == "ACK");
                if (is_req && !is_ack) || code.is_some_and(|c| c >= 200) {
                    self.resend_last(ctx, slot);
                }
                return;
            }
            match code {
                Some(c) if c < 200 => return, // stray provisional
                Some(c) => {
                    let invite = cseq.as_ref().is_some_and(|q| q.method.as_str() == "INVITE");
                    if c >= 300 && invite {
                        self.ack_failure(ctx, slot, msg);
                    }
                    self.finish(slot, Err(Reason::Code(c)), at);
                }
                None => {
                    if msg.method().is_some_and(|m| m.as_str() == "ACK") {
                        return; // an ACK nobody waits for (for a 2xx retransmission, say)
                    }
                    self.finish(slot, Err(Reason::Unexpected), at);
                }
            }
            return;
        };
        let Step::Recv {
            rrs, auth, next, ..
        } = &steps[i]
        else {
            return;
        };
        let (rrs, auth, next) = (*rrs, *auth, *next);
        let uses_last = setup.scenarios[call.scen].uses_last;
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        call.retrans_epoch = 0;
        call.step_epoch = 0;
        if uses_last || is_req {
            call.last.clear();
            call.last.extend_from_slice(msg.buf());
        }
        let want_tag = setup.scenarios[call.scen].uses_peer_tag;
        if want_tag && (is_req || code.is_some_and(|c| c >= 200)) {
            let name = if is_req {
                HeaderName::From
            } else {
                HeaderName::To
            };
            if let Some(h) = msg.header(name) {
                call.peer_tag.clear();
                let t = light::tag(h.value).unwrap_or(b"");
                push_text(&mut call.peer_tag, t);
            }
        }
        if rrs {
            // The route set: Record-Route in order for a request we answer, reversed for a
            // response to ours (RFC 3261 12.1).
            let mut rr: smallvec::SmallVec<[&[u8]; 8]> = msg
                .headers_named(HeaderName::RecordRoute)
                .flat_map(|h| light::bracketed_uris(h.value))
                .collect();
            if !is_req {
                rr.reverse();
            }
            call.routes.clear();
            for (k, u) in rr.iter().enumerate() {
                if k > 0 {
                    call.routes.push_str(", ");
                }
                call.routes.push('<');
                push_text(&mut call.routes, u);
                call.routes.push('>');
            }
            let contact = msg
                .header(HeaderName::Contact)
                .and_then(|h| light::first_uri(h.value));
            if let Some(u) = contact {
                call.next_url.clear();
                push_text(&mut call.next_url, u);
            }
        }
        if let Some(c) = code {
            let cseq_method = cseq.as_ref().map(|q| q.method.as_str());
            if auth && (c == 401 || c == 407) {
                let name = if c == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                call.challenge = msg
                    .header(name)
                    .and_then(|h| digest::parse_challenge(h.value, c == 407));
            }
            if c >= 200 {
                if let Some(t) = &mut call.txn {
                    if !t.uas && cseq_method == Some(self.local.txns[t.method].name.as_str()) {
                        if auth && (c == 401 || c == 407) && call.challenge.is_some() {
                            t.challenged = true;
                        } else if let Some(t) = call.txn.take() {
                            let s = &mut self.local.txns[t.method];
                            s.record_us(at.duration_since(t.start).as_micros() as u64);
                            if c < 300 {
                                s.succeeded += 1;
                            } else {
                                s.fail(Reason::Code(c));
                            }
                        }
                    }
                }
            }
        } else if let Some(m) = msg.method() {
            if m.as_str() != "ACK" {
                let method = self.local.txn_index(m.as_str());
                self.local.txns[method].attempted += 1;
                call.txn = Some(Txn {
                    method,
                    start: at,
                    challenged: false,
                    uas: true,
                });
            }
        }
        call.step = next.unwrap_or(i + 1);
        self.run(ctx, slot, now);
    }

    fn new_server_call(
        &mut self,
        ctx: &mut Ctx<'_, ()>,
        d: &Datagram<'_>,
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
                // Calls due within the grain start now: one wake-up starts them together.
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

#[allow(clippy::too_many_arguments)]
fn write_seg(
    out: &mut Vec<u8>,
    s: &Seg,
    call: &Call,
    setup: &Setup,
    last: Option<&Message<'_>>,
    step: usize,
    body_len: usize,
    tpl: &Template,
) {
    let kw = match s {
        Seg::Lit(b) => {
            out.extend_from_slice(b);
            return;
        }
        Seg::Kw(k) => k,
    };
    let _ = match kw {
        Kw::Branch(off) => {
            out.extend_from_slice(b"z9hG4bK-");
            let _ = put(out, &setup.pid_text);
            out.push(b'-');
            let _ = put_u64(out, call.number);
            out.push(b'-');
            put_u64(out, step.saturating_sub(*off as usize) as u64)
        }
        Kw::CallId => put(out, &call.call_id),
        Kw::CallNumber => put_u64(out, call.number),
        Kw::Cseq => put_u64(out, u64::from(call.cseq)),
        Kw::Len => put_u64(out, body_len as u64),
        // The same for every call from this socket to this peer (see fold).
        Kw::Service
        | Kw::RemoteIp
        | Kw::RemotePort
        | Kw::LocalIp
        | Kw::MediaIp
        | Kw::LocalPort
        | Kw::Transport
        | Kw::Pid
        | Kw::MediaPort
        | Kw::LocalIpType
        | Kw::MediaIpType => {
            write_fixed(out, kw, call.local, Some(call.peer), setup);
            Ok(())
        }
        Kw::Last { name, colon } => {
            if let Some(m) = last {
                let mut first = true;
                for h in m.headers().iter().filter(|h| header_is(h.raw_name, name)) {
                    if *colon {
                        if !first {
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(h.raw_name);
                        out.extend_from_slice(b": ");
                    } else if !first {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(h.value);
                    first = false;
                }
            }
            Ok(())
        }
        Kw::LastRequestUri => write!(out, "{}", last.and_then(|m| m.request_uri()).unwrap_or("")),
        Kw::Routes => {
            if !call.routes.is_empty() {
                out.extend_from_slice(b"Route: ");
                out.extend_from_slice(call.routes.as_bytes());
            }
            Ok(())
        }
        Kw::NextUrl => {
            if call.next_url.is_empty() {
                write!(out, "sip:{}@{}", setup.service, call.peer)
            } else {
                put(out, &call.next_url)
            }
        }
        Kw::PeerTagParam => {
            if !call.peer_tag.is_empty() {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(call.peer_tag.as_bytes());
            }
            Ok(())
        }
        Kw::Field(n) => write!(
            out,
            "{}",
            setup
                .inject
                .as_ref()
                .map(|i| i.field(call.number - 1, *n))
                .unwrap_or("")
        ),
        Kw::Authentication { user, password } => {
            if let Some(c) = &call.challenge {
                // The Request-URI is the second word of the request line already written.
                let line_end = out.iter().position(|b| *b == b'\r').unwrap_or(out.len());
                let uri = out[..line_end]
                    .split(|b| *b == b' ')
                    .nth(1)
                    .map(|u| String::from_utf8_lossy(u).into_owned())
                    .unwrap_or_default();
                let u = user.as_deref().unwrap_or(&call.user.user);
                let p = password.as_deref().unwrap_or(&call.user.password);
                let m = tpl.method.as_deref().unwrap_or("");
                let cnonce = format!("{:x}{:x}", call.number, setup.pid);
                write!(
                    out,
                    "{}",
                    digest::authorization(c, u, p, m, &uri, 1, &cnonce)
                )
            } else {
                Ok(())
            }
        }
        Kw::User => put(out, &call.user.user),
        Kw::Password => put(out, &call.user.password),
        Kw::Domain => put(out, &call.user.domain),
        Kw::Callee => put(out, &call.callee),
    };
}

/// Writes a keyword whose text depends only on the local socket, the peer (when known) and
/// the setup; false (nothing written) for any other.
fn write_fixed(
    out: &mut Vec<u8>,
    kw: &Kw,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    setup: &Setup,
) -> bool {
    let _ = match (kw, remote) {
        (Kw::Service, _) => put(out, &setup.service),
        (Kw::RemoteIp, Some(r)) => match r.ip() {
            IpAddr::V6(a) => write!(out, "[{a}]"),
            IpAddr::V4(a) => put(out, &setup.remote_ip_text(a)),
        },
        (Kw::RemotePort, Some(r)) => put_u64(out, u64::from(r.port())),
        (Kw::LocalIp | Kw::MediaIp, _) => put(out, &setup.local_ip_text),
        (Kw::LocalPort, _) => put_u64(out, u64::from(local.port())),
        (Kw::Transport, _) => put(out, "UDP"),
        (Kw::Pid, _) => put(out, &setup.pid_text),
        (Kw::MediaPort, _) => put_u64(out, u64::from(setup.media_port)),
        (Kw::LocalIpType | Kw::MediaIpType, _) => {
            out.push(if setup.local_ip.is_ipv6() { b'6' } else { b'4' });
            Ok(())
        }
        _ => return false,
    };
    true
}

/// The text of a keyword that is the same for every call sent from `local` to `remote` (when
/// known), else `None`: [`write_fixed`]'s, and the domain and password when every user has
/// the same.
fn fixed_value(
    kw: &Kw,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    setup: &Setup,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if write_fixed(&mut out, kw, local, remote, setup) {
        return Some(out);
    }
    let (password, domain) = setup.users.fixed()?;
    match kw {
        Kw::Domain => Some(domain.as_bytes().to_vec()),
        Kw::Password => Some(password.as_bytes().to_vec()),
        _ => None,
    }
}

/// `tpl` with every keyword that is the same for all calls from `local` to `remote` written
/// out, and the literals around it joined: fewer, longer copies per message. Header lines that
/// cannot expand to blank are joined too (their CRLFs become literal text), as are all body
/// lines, and `solid` marks them so that sending skips the blank-line check.
fn fold(tpl: &Template, local: SocketAddr, remote: Option<SocketAddr>, setup: &Setup) -> Template {
    let line = |l: &[Seg], out: &mut Vec<Seg>| {
        for seg in l {
            let lit = match seg {
                Seg::Lit(b) => Some(b.clone()),
                Seg::Kw(k) => fixed_value(k, local, remote, setup),
            };
            push_seg(out, lit.map_or_else(|| seg.clone(), Seg::Lit));
        }
    };
    let mut head: Vec<Vec<Seg>> = Vec::new();
    let mut solid: Vec<bool> = Vec::new();
    for l in &tpl.head {
        let mut segs = Vec::with_capacity(l.len());
        line(l, &mut segs);
        // Blank only if no literal part holds anything but white space.
        let keeps = segs.iter().any(|s| match s {
            Seg::Lit(b) => !b.iter().all(u8::is_ascii_whitespace),
            Seg::Kw(_) => false,
        });
        match (keeps, solid.last(), head.last_mut()) {
            (true, Some(true), Some(prev)) => {
                push_seg(prev, Seg::Lit(b"\r\n".to_vec()));
                for s in segs {
                    push_seg(prev, s);
                }
            }
            _ => {
                head.push(segs);
                solid.push(keeps);
            }
        }
    }
    // The body lines as one (sending ends each line with CRLF, so the last keeps its own).
    let mut joined: Vec<Seg> = Vec::new();
    for (i, l) in tpl.body.iter().enumerate() {
        if i > 0 {
            push_seg(&mut joined, Seg::Lit(b"\r\n".to_vec()));
        }
        line(l, &mut joined);
    }
    let body = if tpl.body.is_empty() {
        Vec::new()
    } else {
        vec![joined]
    };
    Template {
        head,
        body,
        solid,
        ..tpl.clone()
    }
}

/// Appends a segment, joining it to a literal before it.
fn push_seg(out: &mut Vec<Seg>, s: Seg) {
    match (s, out.last_mut()) {
        (Seg::Lit(b), Some(Seg::Lit(prev))) => prev.extend_from_slice(&b),
        (s, _) => out.push(s),
    }
}

fn put(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_u64(out: &mut Vec<u8>, n: u64) -> std::io::Result<()> {
    out.extend_from_slice(digits(n, &mut [0u8; 20]));
    Ok(())
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

    fn on_datagram(&mut self, ctx: &mut Ctx<'_, ()>, d: Datagram<'_>) {
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

impl Gen {
    fn on_call_timer(&mut self, ctx: &mut Ctx<'_, ()>, token: u64, now: Instant) {
        let slot = (token >> 34) as usize - 1;
        let kind = (token >> 32) & 3;
        let e = token & 0xffff_ffff;
        let setup = Arc::clone(&self.setup);
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match kind {
            K_RETRANS if call.retrans_epoch == e => {
                // This timer also stands for the transaction's timeout (see run).
                let txn_too = call.txn_epoch == e;
                let deadline = txn_too
                    .then(|| call.txn.as_ref().filter(|t| !t.uas))
                    .flatten()
                    .map(|t| t.start + setup.timeout);
                let elapsed = now.duration_since(call.retrans_first);
                if elapsed >= Duration::from_millis(64 * call.retrans_base)
                    || deadline.is_some_and(|d| now >= d)
                {
                    self.finish(slot, Err(Reason::Timeout), now);
                    return;
                }
                call.retrans_ms = (call.retrans_ms * 2).min(call.retrans_cap);
                let mut next = now + Duration::from_millis(call.retrans_ms);
                if let Some(d) = deadline {
                    next = next.min(d);
                }
                self.resend_last(ctx, slot);
                let e = self.arm(slot, K_RETRANS, next);
                if let Some(c) = self.calls[slot].as_mut() {
                    c.retrans_epoch = e;
                    if txn_too {
                        c.txn_epoch = e;
                    }
                }
            }
            K_TXN if call.txn_epoch == e && call.txn.as_ref().is_some_and(|t| !t.uas) => {
                self.finish(slot, Err(Reason::Timeout), now);
            }
            K_RETRANS if call.txn_epoch == e && call.txn.as_ref().is_some_and(|t| !t.uas) => {
                // Retransmissions stopped (a provisional came) with the transaction still
                // open: wait for its final answer until its timeout.
                let deadline = call
                    .txn
                    .as_ref()
                    .map_or(now, |t| t.start + setup.timeout)
                    .max(now);
                let e = self.arm(slot, K_TXN, deadline);
                if let Some(c) = self.calls[slot].as_mut() {
                    c.txn_epoch = e;
                }
            }
            K_STEP if call.step_epoch == e => {
                call.step_epoch = 0;
                let steps = &setup.scenarios[call.scen].steps;
                match steps.get(call.step) {
                    Some(Step::Pause { next, .. }) => {
                        call.step = next.unwrap_or(call.step + 1);
                        self.run(ctx, slot, now);
                    }
                    Some(Step::Timewait(_)) => self.finish(slot, Ok(()), now),
                    Some(Step::Recv {
                        ontimeout: Some(l), ..
                    }) => {
                        call.step = *l;
                        self.run(ctx, slot, now);
                    }
                    _ => self.finish(slot, Err(Reason::Timeout), now),
                }
            }
            _ => {}
        }
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        self.flush(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        assert_eq!(owner(b"1-99@h", 2), 0);
        assert_eq!(owner(b"2-99@h", 2), 1);
        assert_eq!(owner(b"7-99@h", 3), 0);
        assert_eq!(owner(b"abc", 1), 0);
        assert!(owner(b"abc@def", 4) < 4);
    }

    #[test]
    fn variant_shares() {
        let shares = [0.1, 0.2];
        let mut n = [0usize; 3];
        for k in 0..10_000 {
            n[variant(k, &shares)] += 1;
        }
        assert!((6900..=7100).contains(&n[0]), "{n:?}");
        assert!((900..=1100).contains(&n[1]), "{n:?}");
        assert!((1900..=2100).contains(&n[2]), "{n:?}");
        assert_eq!(variant(5, &[]), 0);
    }
}
