//! When every branch has its final: the failure route (requested from the caller as
//! [`TmEvent::Failure`], answered with [`Tm::failure_done`]), else the best response of RFC
//! 3261 16.7 step 6 (6xx first, then the lowest class, 408 and 503 last in their class; 503
//! becomes 500; 487 after a CANCEL); and the transaction's completion (t_stats, and
//! [`TmEvent::Completed`] for accounting).

use std::time::Instant;

use ser_script::RouteKind;

use crate::sip::Outbox;
use crate::stats::Stats;

use super::local::reason_of;
use super::{CellId, Completion, FailureOutcome, FailureRun, Tm, TmEvent};

impl<S: Clone> Tm<S> {
    /// Every branch has a final: ask for the failure route, or send the best response.
    pub(super) fn check_completion(&mut self, now: Instant, id: CellId, out: &mut Outbox) {
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        if cell.final_sent.is_some()
            || cell.replicate
            || !cell.relayed
            || cell.failure_pending.is_some()
        {
            return;
        }
        if cell.branches.iter().any(|b| b.final_code.is_none()) {
            return;
        }
        if !cell.canceled {
            let route = if let Some(n) = cell.routes.on_failure.take() {
                Some((RouteKind::Failure, n))
            } else {
                cell.routes
                    .on_negative
                    .take()
                    .map(|n| (RouteKind::Reply, n))
            };
            if let Some((kind, route)) = route {
                cell.failure_pending = Some(cell.branches.len());
                let run = FailureRun {
                    cell: id,
                    kind,
                    route,
                    script: cell.script.clone(),
                    request: cell.uas.request().to_vec(),
                    arrival: cell.arrival,
                    flags: cell.flags,
                    routes: cell.routes,
                };
                self.events.push_back(TmEvent::Failure(run));
                return;
            }
        }
        self.send_best(now, id, out);
    }

    /// The failure route of [`TmEvent::Failure`] ran: the transaction goes on if it was
    /// answered there or has new branches pending; else the best response goes upstream.
    pub fn failure_done(
        &mut self,
        now: Instant,
        id: CellId,
        outcome: FailureOutcome,
        out: &mut Outbox,
    ) {
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let Some(before) = cell.failure_pending.take() else {
            return;
        };
        cell.flags = outcome.flags;
        cell.routes = outcome.routes;
        if cell.canceled && cell.final_sent.is_none() {
            // The CANCEL came while the route ran (it paused for off-shard work): the
            // branches it added are cancelled too, and the INVITE ends with 487.
            self.cancel_others(now, id, None, out);
        }
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let goes_on = cell.final_sent.is_some()
            || cell
                .branches
                .get(before..)
                .is_some_and(|new| new.iter().any(|b| b.final_code.is_none()));
        if !goes_on {
            self.send_best(now, id, out);
        }
        self.refresh(id);
    }

    /// RFC 3261 16.7 step 6: the response to send when every branch failed.
    pub(super) fn send_best(&mut self, now: Instant, id: CellId, out: &mut Outbox) {
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        if cell.final_sent.is_some() {
            return;
        }
        let rank = |code: u16| -> u32 {
            match code / 100 {
                6 => 0,
                c => 10 * u32::from(c) + u32::from(code == 408 || code == 503),
            }
        };
        let mut best: Option<usize> = None;
        for (i, b) in cell.branches.iter().enumerate() {
            let Some(code) = b.final_code else { continue };
            let better = match best
                .and_then(|j| cell.branches.get(j))
                .and_then(|x| x.final_code)
            {
                None => true,
                Some(cur) => rank(code) < rank(cur),
            };
            if better {
                best = Some(i);
            }
        }
        if cell.canceled {
            // The caller gave up: 487, the UAS's own when one came back.
            let own = cell
                .branches
                .iter_mut()
                .find(|b| b.final_code == Some(487) && b.reply.is_some())
                .and_then(|b| b.reply.take());
            match own {
                Some(reply) => self.forward_stored(now, id, &reply, out),
                None => {
                    self.local_reply(now, id, 487, reason_of(487), "", out);
                }
            }
            return;
        }
        let Some(i) = best else {
            self.local_reply(now, id, 500, "No Branches", "", out);
            return;
        };
        let Some(b) = cell.branches.get_mut(i) else {
            return;
        };
        let code = b.final_code.unwrap_or(500);
        match (code, b.reply.take()) {
            (503, _) => {
                self.local_reply(now, id, 500, "Service Unavailable Downstream", "", out);
            }
            (_, Some(reply)) => self.forward_stored(now, id, &reply, out),
            (code, None) => {
                self.local_reply(now, id, code, reason_of(code), "", out);
            }
        }
    }

    /// The first final went upstream: remember it, count it, and report it when the cell's
    /// flags ask for that. `reply` is the final as sent.
    pub(super) fn completed(&mut self, id: CellId, code: u16, reply: Option<&[u8]>) {
        let report_flags = self.cfg.report_flags;
        let stats = std::sync::Arc::clone(&self.stats);
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let first = cell.final_sent.is_none();
        cell.final_sent = Some(code);
        // What a module counted for the transaction ends with its final (see Attachment).
        cell.attachment = None;
        let flags = cell.flags;
        // t_stats' completion status: counted when the transaction's final goes upstream
        // (once: further 2xx of a forked INVITE are relayed, not counted again).
        if first {
            let class = usize::from(code / 100).saturating_sub(2);
            if let Some(n) = stats.tm_completed.get(class) {
                Stats::inc(n);
            }
        }
        if flags & report_flags != 0 {
            let c = Completion {
                code,
                flags,
                request: cell.uas.request().to_vec(),
                out_uri: cell.out_uri.clone(),
                reply: reply.map(<[u8]>::to_vec),
            };
            self.events.push_back(TmEvent::Completed(c));
        }
    }
}
