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

use ser_parser::{HeaderName, Message};
use ser_shards::{Ctx, Datagram, Handler, SocketId, TimerId};

use crate::digest::{self, Challenge};
use crate::rate::Schedule;
use crate::scenario::{Kw, Scenario, Seg, Step, Template};
use crate::stats::{Reason, Stats};
use crate::users::{expand, Inject, User, Users};

const TICK: Duration = Duration::from_millis(5);
const FLUSH: Duration = Duration::from_millis(250);
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
    method: String,
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
    by_id: HashMap<Box<[u8]>, usize>,
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
}

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

fn recv_matches(step: &Step, msg: &Message<'_>) -> bool {
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
    match (txn_method, msg.cseq()) {
        (Some(m), Ok(c)) => c.method.as_str().eq_ignore_ascii_case(m),
        (Some(_), Err(_)) => false,
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
            by_id: HashMap::new(),
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
        }
    }

    fn flush(&mut self) {
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
        if let Ok(mut st) = self.shared.stats.lock() {
            st.merge(&self.local);
            self.local.reset();
            self.pushed = (0, 0, 0);
        } else {
            self.pushed = (a, s, f);
        }
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn arm(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, kind: u64, at: Instant) -> u64 {
        let e = self.epoch();
        // token: slot+1 in the high 30 bits, kind in 2 bits, epoch low 32 bits (checked).
        ctx.set_timer(
            at,
            ((slot as u64 + 1) << 34) | (kind << 32) | (e & 0xffff_ffff),
        );
        e & 0xffff_ffff
    }

    fn insert(&mut self, call: Call) -> usize {
        let key: Box<[u8]> = call.call_id.as_bytes().into();
        let slot = match self.free.pop() {
            Some(s) => {
                self.calls[s] = Some(call);
                s
            }
            None => {
                self.calls.push(Some(call));
                self.epochs.push(0);
                self.calls.len() - 1
            }
        };
        self.by_id.insert(key, slot);
        slot
    }

    fn finish(&mut self, slot: usize, result: Result<(), Reason>, now: Instant) {
        let Some(call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(call.call_id.as_bytes());
        self.free.push(slot);
        match result {
            Ok(()) => {
                self.local.calls.succeeded += 1;
                self.local
                    .calls
                    .record_us(now.duration_since(call.started).as_micros() as u64);
                if let Some(t) = call.txn {
                    self.local.txn(&t.method).fail(Reason::Timeout);
                }
            }
            Err(r) => {
                self.local.calls.fail(r);
                if let Some(t) = call.txn {
                    self.local.txn(&t.method).fail(r);
                }
            }
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
        let setup = &self.setup;
        let call_id = format!("{number}-{}@{}", setup.pid_text, setup.local_ip_text);
        let callee = expand(
            &setup.callee_pattern,
            (number - 1) % setup.callee_count.max(1) + 1,
        );
        let user = setup.users.get(number - 1);
        let call = self.new_call(
            0,
            number,
            call_id,
            sock,
            local,
            setup.target,
            user,
            callee,
            now,
        );
        self.local.calls.attempted += 1;
        let slot = self.insert(call);
        self.run(ctx, slot, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn new_call(
        &self,
        scen: usize,
        number: u64,
        call_id: String,
        sock: SocketId,
        local: SocketAddr,
        peer: SocketAddr,
        user: User,
        callee: String,
        now: Instant,
    ) -> Call {
        Call {
            scen,
            step: 0,
            number,
            call_id,
            sock,
            local,
            peer,
            cseq: 0,
            last: Vec::new(),
            last_sent: Vec::new(),
            routes: String::new(),
            next_url: String::new(),
            peer_tag: String::new(),
            retrans_ms: 0,
            retrans_base: 0,
            retrans_cap: 0,
            retrans_first: now,
            retrans_epoch: 0,
            step_epoch: 0,
            txn_epoch: 0,
            txn: None,
            challenge: None,
            invite_ruri: String::new(),
            user,
            callee,
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
                    self.send(ctx, slot, tpl, i, now);
                    if let Some(r) = retrans {
                        let cap = if tpl.method.as_deref() == Some("INVITE") {
                            u64::MAX
                        } else {
                            T2_MS
                        };
                        let e = self.arm(ctx, slot, K_RETRANS, now + Duration::from_millis(*r));
                        if let Some(c) = self.calls[slot].as_mut() {
                            c.retrans_ms = *r;
                            c.retrans_base = *r;
                            c.retrans_cap = cap;
                            c.retrans_first = now;
                            c.retrans_epoch = e;
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
                        let e = self.arm(ctx, slot, K_STEP, now + w);
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
                    let e = self.arm(ctx, slot, K_STEP, now + Duration::from_millis(ms));
                    if let Some(c) = self.calls[slot].as_mut() {
                        c.step_epoch = e;
                    }
                    return;
                }
                Step::Timewait(ms) => {
                    let e = self.arm(ctx, slot, K_STEP, now + Duration::from_millis(*ms));
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

    fn send(
        &mut self,
        ctx: &mut Ctx<'_, ()>,
        slot: usize,
        tpl: &Template,
        step: usize,
        now: Instant,
    ) {
        let setup = Arc::clone(&self.setup);
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
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
            for l in &tpl.head {
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
                if buf[start..].iter().all(|b| b.is_ascii_whitespace()) {
                    buf.truncate(start);
                } else {
                    buf.extend_from_slice(b"\r\n");
                }
            }
        }
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(&body);
        ctx.send(call.sock, call.peer, &buf);
        call.last_sent.clear();
        call.last_sent.extend_from_slice(&buf);
        let mut arm_txn = false;
        if is_request {
            if method == "INVITE" {
                call.invite_ruri.clear();
                if let Some(u) = buf.split(|b| *b == b' ').nth(1) {
                    call.invite_ruri.push_str(&String::from_utf8_lossy(u));
                }
            }
            if method != "ACK" {
                match &mut call.txn {
                    Some(t) if t.challenged && t.method == method => t.challenged = false,
                    _ => {
                        if let Some(old) = call.txn.take() {
                            // A new request while the last one is open: that one got no final.
                            self.local.txn(&old.method).fail(Reason::Timeout);
                        }
                        call.txn = Some(Txn {
                            method: method.to_string(),
                            start: now,
                            challenged: false,
                            uas: false,
                        });
                        self.local.txn(method).attempted += 1;
                    }
                }
                arm_txn = true;
            }
        } else if let Some(code) = tpl.code {
            if code >= 200 && call.txn.as_ref().is_some_and(|t| t.uas) {
                if let Some(t) = call.txn.take() {
                    let c = self.local.txn(&t.method);
                    c.record_us(now.duration_since(t.start).as_micros() as u64);
                    if code < 300 {
                        c.succeeded += 1;
                    } else {
                        c.fail(Reason::Code(code));
                    }
                }
            }
        }
        self.buf = buf;
        self.body = body;
        if arm_txn {
            let e = self.arm(ctx, slot, K_TXN, now + setup.timeout);
            if let Some(c) = self.calls[slot].as_mut() {
                c.txn_epoch = e;
            }
        }
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

    fn on_message(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, msg: &Message<'_>, now: Instant) {
        let setup = Arc::clone(&self.setup);
        let Some(call) = self.calls.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let steps = &setup.scenarios[call.scen].steps;
        let mut found = None;
        for (i, s) in steps.iter().enumerate().skip(call.step) {
            match s {
                _ if recv_matches(s, msg) => {
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
                .any(|s| recv_matches(s, msg))
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
                    let invite = msg.cseq().is_ok_and(|q| q.method.as_str() == "INVITE");
                    if c >= 300 && invite {
                        self.ack_failure(ctx, slot, msg);
                    }
                    self.finish(slot, Err(Reason::Code(c)), now);
                }
                None => {
                    if msg.method().is_some_and(|m| m.as_str() == "ACK") {
                        return; // an ACK nobody waits for (for a 2xx retransmission, say)
                    }
                    self.finish(slot, Err(Reason::Unexpected), now);
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
        if want_tag && is_req {
            if let Ok(f) = msg.from() {
                call.peer_tag.clear();
                call.peer_tag.push_str(f.tag.unwrap_or(""));
            }
        } else if want_tag && code.is_some_and(|c| c >= 200) {
            if let Ok(t) = msg.to() {
                call.peer_tag.clear();
                call.peer_tag.push_str(t.tag.unwrap_or(""));
            }
        }
        if rrs {
            let mut rr: Vec<&str> = msg
                .record_routes()
                .filter_map(|r| r.ok())
                .map(|r| r.uri)
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
                call.routes.push_str(u);
                call.routes.push('>');
            }
            if let Some(Ok(ser_parser::Contact::Addr { addr, .. })) = msg.contacts().next() {
                call.next_url.clear();
                call.next_url.push_str(addr.uri);
            }
        }
        if let Some(c) = code {
            let cseq_method = msg.cseq().ok().map(|q| q.method.as_str());
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
                    if !t.uas && cseq_method == Some(t.method.as_str()) {
                        if auth && (c == 401 || c == 407) && call.challenge.is_some() {
                            t.challenged = true;
                        } else if let Some(t) = call.txn.take() {
                            let s = self.local.txn(&t.method);
                            s.record_us(now.duration_since(t.start).as_micros() as u64);
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
                let method = m.as_str().to_string();
                self.local.txn(&method).attempted += 1;
                call.txn = Some(Txn {
                    method,
                    start: now,
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
        let Some(first) =
            first.filter(|&f| recv_matches(&self.setup.scenarios[scen].steps[f], msg))
        else {
            return;
        };
        self.started += 1;
        if self.started >= self.quota {
            self.starting_done = true;
        }
        let setup = &self.setup;
        let user = setup.users.get(number - 1);
        let mut call = self.new_call(
            scen,
            number,
            String::from_utf8_lossy(cid).into_owned(),
            d.socket,
            d.local,
            d.peer,
            user,
            String::new(),
            now,
        );
        call.step = first;
        self.local.calls.attempted += 1;
        let slot = self.insert(call);
        self.on_message(ctx, slot, msg, now);
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
                let due = share.due(t.as_secs_f64()).min(self.quota);
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
        if self.starting_done && !self.done && self.by_id.is_empty() {
            self.done = true;
            self.shared.done.fetch_add(1, Ordering::Relaxed);
        }
        if now.duration_since(self.last_flush) >= FLUSH {
            self.last_flush = now;
            self.flush();
        }
        ctx.set_timer(now + TICK, 0);
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
    let ip = setup.local_ip;
    let _ = match kw {
        Kw::Service => put(out, &setup.service),
        Kw::RemoteIp => match call.peer.ip() {
            IpAddr::V6(a) => write!(out, "[{a}]"),
            IpAddr::V4(a) => put(out, &setup.remote_ip_text(a)),
        },
        Kw::RemotePort => put_u64(out, u64::from(call.peer.port())),
        Kw::LocalIp | Kw::MediaIp => put(out, &setup.local_ip_text),
        Kw::LocalPort => put_u64(out, u64::from(call.local.port())),
        Kw::Transport => put(out, "UDP"),
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
        Kw::Pid => put(out, &setup.pid_text),
        Kw::MediaPort => put_u64(out, u64::from(setup.media_port)),
        Kw::LocalIpType | Kw::MediaIpType => write!(out, "{}", if ip.is_ipv6() { 6 } else { 4 }),
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
            if call.routes.is_empty() {
                Ok(())
            } else {
                write!(out, "Route: {}", call.routes)
            }
        }
        Kw::NextUrl => {
            if call.next_url.is_empty() {
                write!(out, "sip:{}@{}", setup.service, call.peer)
            } else {
                write!(out, "{}", call.next_url)
            }
        }
        Kw::PeerTagParam => {
            if call.peer_tag.is_empty() {
                Ok(())
            } else {
                write!(out, ";tag={}", call.peer_tag)
            }
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

fn put(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Decimal digits without the formatting machinery (this is on every message's path).
fn put_u64(out: &mut Vec<u8>, mut n: u64) -> std::io::Result<()> {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
    Ok(())
}

impl Handler for Gen {
    type Event = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, ()>) {
        let now = ctx.now();
        self.start = now;
        self.last_flush = now;
        if let Ok(mut s) = self.shared.started_at.lock() {
            s.get_or_insert(now);
        }
        ctx.set_timer(now, 0);
    }

    fn on_datagram(&mut self, ctx: &mut Ctx<'_, ()>, d: Datagram<'_>) {
        // The index only (start line, header names and ranges): the generator reads a few
        // headers, each through the parser's checked accessors, and a full validation costs
        // more than everything else it does per message.
        let Some(msg) = ser_parser::parse_lenient(d.data) else {
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
        match self.by_id.get(cid) {
            Some(&slot) => self.on_message(ctx, slot, &msg, now),
            None if self.setup.server && msg.is_request() => {
                self.new_server_call(ctx, &d, &msg, cid, now)
            }
            None => {}
        }
    }

    fn on_event(&mut self, _ctx: &mut Ctx<'_, ()>, _e: ()) {}

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ()>, _t: TimerId, token: u64) {
        let now = ctx.now();
        if token == 0 {
            self.on_tick(ctx, now);
            return;
        }
        let slot = (token >> 34) as usize - 1;
        let kind = (token >> 32) & 3;
        let e = token & 0xffff_ffff;
        let setup = Arc::clone(&self.setup);
        let Some(call) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        match kind {
            K_RETRANS if call.retrans_epoch == e => {
                let elapsed = now.duration_since(call.retrans_first);
                if elapsed >= Duration::from_millis(64 * call.retrans_base) {
                    self.finish(slot, Err(Reason::Timeout), now);
                    return;
                }
                call.retrans_ms = (call.retrans_ms * 2).min(call.retrans_cap);
                let next = now + Duration::from_millis(call.retrans_ms);
                self.resend_last(ctx, slot);
                let e = self.arm(ctx, slot, K_RETRANS, next);
                if let Some(c) = self.calls[slot].as_mut() {
                    c.retrans_epoch = e;
                }
            }
            K_TXN if call.txn_epoch == e && call.txn.as_ref().is_some_and(|t| !t.uas) => {
                self.finish(slot, Err(Reason::Timeout), now);
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
        self.flush();
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
