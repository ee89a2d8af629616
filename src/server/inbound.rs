//! The message path: the one door every SIP message comes in by (a datagram, a message
//! framed off a stream connection, or one handed over by another shard), up to the script.
//!
//! Keep-alives are answered or ignored; the owning shard is picked (a reply by its branch, a
//! request over UDP by its Call-ID) and a message that arrived elsewhere is handed over before
//! anything else happens; the message is parsed; a reply goes to its transaction (or is
//! forwarded statelessly along its Via), a request runs the main route (`run`). Bad input gets
//! a 400, 513 or what the parse error maps to (requests), or a counted drop, never a panic.

use std::sync::Arc;

use ser_parser::{Method, Outcome};
use ser_shards::{Ctx, Inbound};

use super::run::{retrans_key, MAX_PARKED};
use super::{Event, Server};
use crate::modules::core::forward_reply;
use crate::modules::tm::OnReply;
use crate::sip::{owner_shard, reply_shard, scan_call_id, Arrival, ConnId, LocalReply, Transport};
use crate::stats::Stats;
use crate::tm::RequestMatch;

impl Server {
    /// A message from a transport (a datagram, or one framed off a stream connection), or
    /// handed off by another shard: the one door every SIP message comes in by.
    pub(super) fn on_inbound(&mut self, ctx: &mut Ctx<'_, Event>, d: Inbound<'_>) {
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
        if msg.header(ser_parser::HeaderName::ContentLength).is_none() {
            // A datagram (or WebSocket message) may leave Content-Length out, its body being
            // the rest of it (RFC 3261 18.3, 20.14); a stream needs it to frame the message.
            // Every copy we send on (to a TCP or TLS hop as well) carries it: processed as if
            // the sender had written it, at the end of the header.
            let fixed = with_content_length(&msg);
            self.process(ctx, &Inbound { data: &fixed, ..*d });
            return;
        }
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

    /// A datagram that did not parse: 400 (or what the error maps to) for a request we can
    /// still answer, a counted drop otherwise.
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
        self.reply_unparsed(ctx, &msg, &at, code, reason);
    }

    /// Sends our stateless `code reason` to `msg`, a request read leniently (the full parse
    /// refused it, or its stream framing failed), and counts it.
    pub(super) fn reply_unparsed(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        msg: &ser_parser::Message<'_>,
        at: &Arrival,
        code: u16,
        reason: &[u8],
    ) {
        let r = LocalReply {
            code,
            reason,
            headers: "",
        };
        self.scratch.clear();
        self.core
            .reply
            .reply(&self.core.local, msg, at, &r, &mut self.scratch.out);
        self.stats.count_sl(code);
        self.flush(ctx);
    }
}

/// `msg` with a `Content-Length` of its body inserted after its last header.
fn with_content_length(msg: &ser_parser::Message<'_>) -> Vec<u8> {
    let buf = msg.buf();
    let at = msg.headers_end().min(buf.len());
    let line = format!("Content-Length: {}\r\n", msg.body().len());
    let mut out = Vec::with_capacity(buf.len() + line.len());
    out.extend_from_slice(&buf[..at]);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(&buf[at..]);
    out
}
