//! Module sl: stateless replies.
//!
//! `sl_send_reply(code, reason)` answers the request without keeping state: a To-tag derived
//! from the request (so a retransmission gets the same reply), `Server:` when
//! `server_signature` is on, SER's `Warning: 392` "Noisy feedback" header when `sip_warning`
//! is on (sipsak's traceroute reads our address from it), and for a 3xx the destination set as
//! Contacts (the redirect server). `sl_reply_error()` answers with the error the last failing
//! action left behind (500 when none). ACKs to our own replies are absorbed before the script
//! runs (`is_ack_to_local_reply`). sl never replies to an ACK.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ser_parser::{Message, Method, ReplySpec};
use ser_script::{Arg, BindCtx, KindSet};

use super::core::{f, fmt_ip, hostport};
use super::{arg_int, arg_str, Exports};
use crate::core::{hash64, Core};
use crate::route::{Action, MsgCtx};

pub fn register(ex: &mut Exports) {
    ex.function(f("sl_send_reply", 2, 2, KindSet::REQUEST, bind_send_reply));
    ex.function(f("sl_reply_error", 0, 0, KindSet::REQUEST, |_, _| {
        Ok(Action::SlReplyError)
    }));
}

fn bind_send_reply(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let (code, reason) = reply_args(a)?;
    Ok(Action::SlSendReply { code, reason })
}

/// The `("code", "reason")` arguments of sl_send_reply and t_reply, checked.
pub(crate) fn reply_args(a: &[Arg]) -> Result<(u16, String), String> {
    let code = a.first().map(arg_int).transpose()?.unwrap_or(0);
    let code = u16::try_from(code)
        .ok()
        .filter(|c| (100..=699).contains(c))
        .ok_or_else(|| format!("reply code {code} is not in 100..699"))?;
    let reason = a.get(1).map(arg_str).transpose()?.unwrap_or_default();
    if reason.contains(['\r', '\n']) {
        return Err("reason phrase must be one line".into());
    }
    Ok((code, reason))
}

/// The To-tag of our stateless replies: a fixed prefix per server and a hash of the request's
/// identity, so retransmissions get the same tag.
pub fn local_to_tag(core: &Core, msg: &Message<'_>, out: &mut String) {
    let call_id = msg.call_id().unwrap_or_default();
    let from_tag = msg.from().ok().and_then(|f| f.tag).unwrap_or_default();
    let branch = msg
        .top_via()
        .ok()
        .and_then(|v| v.branch)
        .unwrap_or_default();
    let cseq = msg.cseq().map(|c| c.number).unwrap_or(0);
    let h = hash64(&[
        call_id,
        from_tag.as_bytes(),
        branch.as_bytes(),
        &cseq.to_be_bytes(),
    ]);
    out.clear();
    let _ = write!(out, "{}-{:08x}", core.tag_prefix, h as u32);
}

/// An ACK whose To-tag is one of ours acknowledges a negative reply we sent statelessly:
/// it ends there.
pub fn is_ack_to_local_reply(core: &Core, msg: &Message<'_>) -> bool {
    if !matches!(msg.method(), Some(Method::Ack)) {
        return false;
    }
    msg.to()
        .ok()
        .and_then(|t| t.tag)
        .is_some_and(|tag| tag.len() > core.tag_prefix.len() && tag.starts_with(&core.tag_prefix))
}

/// Where a reply to this request goes (RFC 3261 18.2.2, RFC 3581): the source address and
/// the Via's port, or the source port when `rport` was asked for; with `reply_to_via` the
/// Via's own address.
pub fn reply_destination(core: &Core, msg: &Message<'_>, src: SocketAddr) -> SocketAddr {
    let Ok(via) = msg.top_via() else {
        return src;
    };
    if via.rport.is_some() {
        return src;
    }
    let port = via.port.unwrap_or(5060);
    if core.reply_to_via {
        let ip = match via.host {
            ser_parser::Host::V4(ip) => Some(IpAddr::V4(ip)),
            ser_parser::Host::V6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = ip {
            return SocketAddr::new(ip, port);
        }
    }
    SocketAddr::new(src.ip(), port)
}

impl MsgCtx<'_, '_> {
    pub(crate) fn sl_send_reply(&mut self, code: u16, reason: &[u8]) -> i32 {
        self.sl_reply_with_headers(code, reason, "")
    }

    /// [`Self::sl_send_reply`] with more header fields (`headers`: whole lines, each ending
    /// in CRLF), e.g. auth's `WWW-Authenticate`.
    pub(crate) fn sl_reply_with_headers(&mut self, code: u16, reason: &[u8], headers: &str) -> i32 {
        if !self.msg.is_request() {
            return self.fail(500, "Not a request");
        }
        if matches!(self.msg.method(), Some(Method::Ack)) {
            // Never answer an ACK; false, as in SER.
            return -1;
        }
        let mut extra = String::from(headers);
        if (300..400).contains(&code) {
            // The destination set: the current URI and every branch.
            let _ = write!(extra, "Contact: <{}>", self.current_uri());
            for b in &self.s.branches {
                let _ = write!(extra, ", <{b}>");
            }
            extra.push_str("\r\n");
        }
        if self.core.server_signature {
            extra.push_str(&self.core.server_header);
        }
        if self.core.sip_warning {
            self.push_warning(&mut extra);
        }
        self.write_sl_reply(code, reason, &extra);
        1
    }

    /// Writes a stateless reply to the request, with `extra` header lines as they are (our
    /// To-tag, received/rport, back along the Via), and counts it.
    pub(crate) fn write_sl_reply(&mut self, code: u16, reason: &[u8], extra: &str) {
        let mut tag = String::new();
        local_to_tag(self.core, self.msg, &mut tag);
        let (received, rport) = self.received_params();
        let dst = reply_destination(self.core, self.msg, self.src);
        let spec = ReplySpec {
            code,
            reason,
            to_tag: Some(tag.as_bytes()),
            received,
            rport,
            extra_headers: extra.as_bytes(),
        };
        let msg = self.msg;
        self.s.out.push(self.socket, dst, |buf| {
            ser_parser::write_reply(msg, &spec, buf)
        });
        self.stats.count_sl(code);
    }

    /// SER's "Noisy feedback" Warning (RFC 3261 20.43 code 392), which sipsak -T reads.
    fn push_warning(&self, out: &mut String) {
        let local = self
            .core
            .sockets
            .get(self.socket)
            .copied()
            .unwrap_or(self.local);
        let via_cnt = self.msg.vias().count();
        let mut ipbuf = [0u8; 64];
        let src_ip = String::from_utf8_lossy(fmt_ip(self.src.ip(), &mut ipbuf)).into_owned();
        let _ = write!(
            out,
            "Warning: 392 {} \"Noisy feedback tells: pid={} req_src_ip={} req_src_port={} in_uri={} out_uri={} via_cnt=={}\"\r\n",
            hostport(&local),
            self.core.pid,
            src_ip,
            self.src.port(),
            self.msg.request_uri().unwrap_or(""),
            self.current_uri(),
            via_cnt
        );
    }
}
