//! Replies tm makes itself, statefully through the cell's server transaction and with our
//! To-tag: the 100 of t_relay, `t_reply`, and the 408/487/500 of 16.7's choice.

use std::time::Instant;

use ser_parser::Message;

use crate::sip::{LocalReply, Outbox};
use crate::stats::Stats;

use super::cell::drain_uas;
use super::{CellId, Tm};

/// The reason phrase of the codes tm sends itself.
pub(super) fn reason_of(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        408 => "Request Timeout",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

impl<S: Clone> Tm<S> {
    /// A reply tm makes itself (100, t_reply, 408, 487, 500): statefully, with our To-tag.
    pub fn local_reply(
        &mut self,
        now: Instant,
        id: CellId,
        code: u16,
        reason: &str,
        extra: &str,
        out: &mut Outbox,
    ) -> bool {
        let Some(cell) = self.cell(id) else {
            return false;
        };
        let request = cell.uas.request().to_vec();
        let Ok(req) = ser_parser::parse(&request) else {
            return false;
        };
        self.local_reply_to(now, id, &req, code, reason, extra, out)
    }

    /// [`Self::local_reply`] when the caller holds the parsed request (the script's).
    #[allow(clippy::too_many_arguments)]
    pub fn local_reply_to(
        &mut self,
        now: Instant,
        id: CellId,
        req: &Message<'_>,
        code: u16,
        reason: &str,
        extra: &str,
        out: &mut Outbox,
    ) -> bool {
        let ident = std::sync::Arc::clone(&self.ident);
        let Some(cell) = self.cell(id) else {
            return false;
        };
        let src = cell.arrival.src;
        let r = LocalReply {
            code,
            reason: reason.as_bytes(),
            headers: extra,
        };
        let mut bytes = std::mem::take(&mut self.tmp);
        bytes.clear();
        ident.reply.write(req, src, &r, &mut bytes);
        let Some(cell) = self.cell_mut(id) else {
            self.tmp = bytes;
            return false;
        };
        if cell.uas.send_response(now, &bytes).is_err() {
            self.tmp = bytes;
            return false;
        }
        drain_uas(cell, out);
        let first_final = code >= 200 && cell.final_sent.is_none();
        Stats::inc(&self.stats.tm_local_replies);
        if first_final {
            // Accounting reports the reply as sent (its reason, our To-tag).
            self.completed(id, code, Some(&bytes));
        }
        self.tmp = bytes;
        true
    }

    /// `t_reply` from the script: a final (or provisional) for the cell, with `headers`
    /// (whole lines; textops' `append_to_reply`).
    pub fn t_reply(
        &mut self,
        now: Instant,
        id: CellId,
        code: u16,
        reason: &str,
        headers: &str,
        out: &mut Outbox,
    ) -> bool {
        if self.cell(id).is_some_and(|c| c.final_sent.is_some()) {
            return false;
        }
        let ok = self.local_reply(now, id, code, reason, headers, out);
        if ok && code >= 200 {
            self.cancel_others(now, id, None, out);
        }
        self.refresh(id);
        ok
    }
}
