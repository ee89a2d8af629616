//! What a call sends: a send step's message (built from its folded template, kept for
//! retransmission) with the client or server transaction it opens or closes, a retransmission
//! of the last message, and the ACK for a non-2xx final response to an INVITE.
//!
//! It arms no timers and picks no steps; the state machine ([`super::machine`]) does.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use ser_parser::{HeaderName, Message};
use ser_shards::Ctx;

use super::call::{push_text, Txn};
use super::compose::write_seg;
use super::Gen;
use crate::scenario::Template;
use crate::stats::Reason;

impl Gen {
    pub(super) fn send(
        &mut self,
        ctx: &mut Ctx<'_, ()>,
        slot: usize,
        tpl: &Template,
        step: usize,
    ) -> bool {
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

    pub(super) fn resend_last(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize) {
        if let Some(c) = self.calls.get(slot).and_then(Option::as_ref) {
            if !c.last_sent.is_empty() {
                ctx.send(c.sock, c.peer, &c.last_sent);
                self.local.retrans += 1;
            }
        }
    }

    /// ACK for a non-2xx final response to our INVITE (RFC 3261 17.1.1.3).
    pub(super) fn ack_failure(&mut self, ctx: &mut Ctx<'_, ()>, slot: usize, msg: &Message<'_>) {
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
}
