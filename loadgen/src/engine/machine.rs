//! The call state machine: SIPp's step semantics (send, recv, pause, timewait, nop, label,
//! `next=` jumps), matching an incoming message to the step that waits for it (see the engine's
//! module comment), RFC 3261 retransmission and transaction timers, and the call timers on the
//! shard's timing wheel (a token holds the slot, the timer kind and an epoch that later arms
//! make stale).
//!
//! It does not build messages ([`super::compose`], [`super::transmit`]) or keep the call table
//! ([`super::table`]); starting calls and the shard's wake-ups are [`super::Gen`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ser_parser::{CSeq, HeaderName, Message};
use ser_shards::Ctx;

use super::call::{push_text, Txn};
use super::Gen;
use crate::digest;
use crate::light;
use crate::scenario::Step;
use crate::stats::Reason;

/// RFC 3261 T2: non-INVITE requests and 2xx responses retransmit at most this far apart.
const T2_MS: u64 = 4000;

const K_RETRANS: u64 = 1;
const K_STEP: u64 = 2;
const K_TXN: u64 = 3;

/// Whether `msg` is what the receive step waits for; `cseq` is the message's, parsed once.
pub(super) fn recv_matches(step: &Step, msg: &Message<'_>, cseq: Option<&CSeq<'_>>) -> bool {
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

    /// Runs steps from the call's current one until it waits (recv, pause) or ends.
    pub(super) fn run(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, now: Instant) {
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

    /// `at` is when `msg` arrived (the kernel's stamp): response times end there; `now` is
    /// when it is handled, for what is sent and armed in return.
    pub(super) fn on_message(
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

    pub(super) fn on_call_timer(&mut self, ctx: &mut Ctx<'_, ()>, token: u64, now: Instant) {
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
