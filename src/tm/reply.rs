//! Replies from downstream: matched to their branch by client key, handed to its client
//! transaction, and what goes up — provisionals relayed (unless the onreply_route drops
//! them), every 2xx relayed at once (others cancelled), negatives kept for the choice of
//! 16.7, a 503 from one target of a name retried on the next (RFC 3263).
//!
//! A reply to a branch that already gave up (a timeout, a CANCEL) never reaches the caller,
//! but a 2xx: RFC 3261 16.7 step 5 relays every 2xx, a late one too.

use std::time::Instant;

use ser_parser::Message;

use crate::sip::Outbox;
use crate::stats::Stats;
use crate::txn::{Disposition, Key};

use super::cell::{drain_uas, untag};
use super::{BranchEnd, CellId, OnReplyRun, ReplyMatch, Tm};

impl<S: Clone> Tm<S> {
    /// A reply from downstream. [`ReplyMatch::NotOurs`]: route it statelessly;
    /// [`ReplyMatch::OnReply`]: run the route it names, then [`Self::onreply_done`].
    pub fn on_reply(&mut self, now: Instant, msg: &Message<'_>, out: &mut Outbox) -> ReplyMatch<S> {
        if self.cells.no_keys() {
            return ReplyMatch::NotOurs;
        }
        let Ok(key) = Key::client(msg) else {
            return ReplyMatch::NotOurs;
        };
        let Some((id, tag)) = self.cells.lookup(&key) else {
            return ReplyMatch::NotOurs;
        };
        let (index, is_cancel) = untag(tag);
        let Some(b) = self.branch_mut(id, index) else {
            return ReplyMatch::NotOurs;
        };
        let Some(dst) = b.dst else {
            return ReplyMatch::Done;
        };
        let txn = if is_cancel {
            b.cancel.as_mut()
        } else {
            b.uac.as_mut()
        };
        let Some(txn) = txn else {
            return ReplyMatch::Done;
        };
        let disposition = txn.handle_response(now, msg);
        while let Some(t) = txn.poll_transmit() {
            out.push(dst, |buf| buf.extend_from_slice(t.bytes));
        }
        while txn.poll_event().is_some() {}
        let mut r = ReplyMatch::Done;
        if disposition == Disposition::PassUp && !is_cancel {
            let code = msg.status().unwrap_or(500);
            r = self.process_reply(now, id, index, code, msg, out);
        }
        self.refresh(id);
        r
    }

    /// The onreply_route of [`ReplyMatch::OnReply`] ran over `msg`; `dropped` when it ended
    /// with `drop` (which stops a provisional only: every 2xx and negative goes on).
    /// `edits`: what the route changed in the reply (nathelper's `fix_nated_contact`, ...),
    /// applied to a provisional or 2xx relayed now (a negative final is stored and relayed
    /// as it came).
    #[allow(clippy::too_many_arguments)]
    pub fn onreply_done(
        &mut self,
        now: Instant,
        run: &OnReplyRun<S>,
        msg: &Message<'_>,
        dropped: bool,
        edits: &ser_parser::Edits,
        out: &mut Outbox,
    ) {
        let (cell, branch, code) = (run.cell, run.branch, run.code);
        self.after_onreply(now, cell, branch, code, msg, !dropped, edits, out);
        self.refresh(run.cell);
    }

    /// A reply the branch's transaction passed up: update the branch, then either ask for the
    /// onreply_route or go on at once.
    fn process_reply(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        code: u16,
        msg: &Message<'_>,
        out: &mut Outbox,
    ) -> ReplyMatch<S> {
        let Some(cell) = self.cell_mut(id) else {
            return ReplyMatch::Done;
        };
        let replicate = cell.replicate;
        let final_sent = cell.final_sent;
        let on_reply = cell.routes.on_reply;
        let arrival = cell.arrival;
        let flags = cell.flags;
        let request = cell.request_facts;
        let script = cell.script.clone();
        let Some(b) = cell.branches.get_mut(index) else {
            return ReplyMatch::Done;
        };
        if b.final_code.is_some() {
            // Already given up locally (a timeout, CANCEL): the client transaction has
            // acknowledged a negative final; only a 2xx goes upstream (16.7 step 5).
            if (200..300).contains(&code) && !replicate {
                self.forward_upstream(now, id, msg, &ser_parser::Edits::new(), out);
            }
            return ReplyMatch::Done;
        }
        b.last_code = code;
        let mut wants_route = on_reply.is_some();
        if code < 200 {
            if b.cancel_pending {
                self.send_cancel(now, id, index, out);
            }
            if code == 100 || replicate || final_sent.is_some() {
                return ReplyMatch::Done;
            }
        } else if code < 300 {
            b.final_code = Some(code);
            // t_replicate's copies run no route: their replies stay here.
            wants_route &= !replicate;
        } else {
            b.final_code = Some(code);
            b.reply = Some(msg.buf().to_vec());
        }
        match on_reply {
            Some(route) if wants_route => ReplyMatch::OnReply(OnReplyRun {
                cell: id,
                branch: index,
                code,
                route,
                script,
                arrival,
                flags,
                request,
            }),
            _ => {
                let none = ser_parser::Edits::new();
                self.after_onreply(now, id, index, code, msg, true, &none, out);
                ReplyMatch::Done
            }
        }
    }

    /// What follows a reply once its onreply_route (if any) ran; `kept`: not dropped.
    #[allow(clippy::too_many_arguments)]
    fn after_onreply(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        code: u16,
        msg: &Message<'_>,
        kept: bool,
        edits: &ser_parser::Edits,
        out: &mut Outbox,
    ) {
        let Some(cell) = self.cell(id) else {
            return;
        };
        let replicate = cell.replicate;
        let final_sent = cell.final_sent;
        if code >= 200 && code != 503 {
            // Before the answer goes upstream (which ends the attachment); a 503 is told
            // below, once no other target of the branch's name is left.
            self.tell_branch_end(id, index, BranchEnd::Replied(code));
        }
        if code < 200 {
            // A provisional: relayed unless the route dropped it.
            if kept {
                self.forward_upstream(now, id, msg, edits, out);
            }
            return;
        }
        if code < 300 {
            // An onreply_route can look at a 2xx but not stop it (every 2xx is relayed).
            if !replicate {
                self.forward_upstream(now, id, msg, edits, out);
                if final_sent.is_none() {
                    self.completed(id, code, Some(msg.buf()));
                }
            }
            self.cancel_others(now, id, Some(index), out);
            return;
        }
        if code >= 600 && final_sent.is_none() {
            self.cancel_others(now, id, Some(index), out);
        }
        if code == 503 {
            // 503 from one target of a name: try the next one (RFC 3263 4.3).
            if self.has_more_targets(id, index) {
                if let Some(b) = self.branch_mut(id, index) {
                    b.final_code = None;
                    b.reply = None;
                }
                if self.start_next_target(now, id, index, out) {
                    return;
                }
                if let Some(b) = self.branch_mut(id, index) {
                    b.final_code = Some(503);
                }
            }
            self.tell_branch_end(id, index, BranchEnd::Replied(503));
        }
        self.check_completion(now, id, out);
    }

    /// A reply goes upstream through the server transaction, our Via removed, with the
    /// onreply_route's `script` edits.
    pub(super) fn forward_upstream(
        &mut self,
        now: Instant,
        id: CellId,
        msg: &Message<'_>,
        script: &ser_parser::Edits,
        out: &mut Outbox,
    ) {
        let mut edits = if script.is_empty() {
            ser_parser::Edits::default()
        } else {
            script.clone()
        };
        if edits.remove_top_via(msg).is_err() {
            return;
        }
        let mut bytes = std::mem::take(&mut self.tmp);
        bytes.clear();
        ser_parser::write(msg, &edits, &mut bytes);
        if let Some(cell) = self.cell_mut(id) {
            if cell.uas.send_response(now, &bytes).is_ok() {
                drain_uas(cell, out);
            } else {
                // A 2xx after the server transaction ended (a second one of a forked
                // INVITE, a late one): straight upstream.
                out.push(cell.reply_to, |buf| buf.extend_from_slice(&bytes));
            }
        }
        Stats::inc(&self.stats.replies_fwd);
        self.tmp = bytes;
    }

    /// A stored negative final goes upstream as the transaction's answer.
    pub(super) fn forward_stored(
        &mut self,
        now: Instant,
        id: CellId,
        reply: &[u8],
        out: &mut Outbox,
    ) {
        let Ok(msg) = ser_parser::parse(reply) else {
            self.local_reply(now, id, 500, super::local::reason_of(500), "", out);
            return;
        };
        let code = msg.status().unwrap_or(500);
        self.forward_upstream(now, id, &msg, &ser_parser::Edits::new(), out);
        self.completed(id, code, Some(reply));
    }
}
