//! Module sl: stateless replies.
//!
//! `sl_send_reply(code, reason)` answers the request without keeping state: a To-tag derived
//! from the request (so a retransmission gets the same reply), `Server:` when
//! `server_signature` is on, SER's `Warning: 392` "Noisy feedback" header when `sip_warning`
//! is on (sipsak's traceroute reads our address from it), and for a 3xx the destination set as
//! Contacts (the redirect server). `sl_reply_error()` answers with the error the last failing
//! action left behind (500 when none). ACKs to our own replies are absorbed before the script
//! runs (`ReplyIdentity::is_ack_to_local_reply`). sl never replies to an ACK.

use std::fmt::Write as _;

use ser_parser::Method;
use ser_script::{Arg, BindCtx, KindSet};

use super::core::f;
use super::ctx::MsgCtx;
use super::Action;
use super::{arg_int, arg_str, Exports};
use crate::sip::{fmt_ip, hostport, LocalReply};

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
                let _ = write!(extra, ", <{}>", b.uri);
            }
            extra.push_str("\r\n");
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
        // append_to_reply's lines after the caller's.
        let joined;
        let headers = if self.s.reply_hfs.is_empty() {
            extra
        } else {
            joined = format!("{extra}{}", self.s.reply_hfs);
            joined.as_str()
        };
        let r = LocalReply {
            code,
            reason,
            headers,
        };
        let core = self.core;
        if self.nat.force_rport && !self.at.transport.is_reliable() {
            // nathelper's force_rport(): to the source port, as if the Via had rport.
            if !matches!(self.msg.method(), Some(Method::Ack)) {
                let (msg, src) = (self.msg, self.at.src);
                self.s.out.push(self.at.back_to(src), |buf| {
                    core.reply.write(msg, src, &r, buf);
                });
            }
        } else {
            core.reply
                .reply(&core.local, self.msg, &self.at, &r, &mut self.s.out);
        }
        self.stats.count_sl(code);
    }

    /// SER's "Noisy feedback" Warning (RFC 3261 20.43 code 392), which sipsak -T reads.
    fn push_warning(&self, out: &mut String) {
        let local = self
            .core
            .local
            .addr(self.at.socket)
            .unwrap_or(self.at.local);
        let via_cnt = self.msg.vias().count();
        let mut ipbuf = [0u8; 64];
        let src_ip = String::from_utf8_lossy(fmt_ip(self.at.src.ip(), &mut ipbuf)).into_owned();
        let _ = write!(
            out,
            "Warning: 392 {} \"Noisy feedback tells: pid={} req_src_ip={} req_src_port={} in_uri={} out_uri={} via_cnt=={}\"\r\n",
            hostport(&local),
            self.core.pid,
            src_ip,
            self.at.src.port(),
            self.msg.request_uri().unwrap_or(""),
            self.current_uri(),
            via_cnt
        );
    }
}
