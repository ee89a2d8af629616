//! Timers: the cells' deadlines (the earliest of their transactions' and their own
//! lifetime) come due through the cell table; each due cell's transactions are driven, and
//! what their timeouts mean to the proxy follows — fr_inv_timer: CANCEL and 408; timer B/F:
//! the next target of the name, or 408; a cell that outlived `max_lifetime`: dropped.

use std::time::Instant;

use crate::sip::Outbox;
use crate::txn::{TimerName, TxnEvent};

use super::{BranchEnd, CellId, Tm};

impl<S: Clone> Tm<S> {
    /// The earliest deadline of any cell.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.cells.next_deadline()
    }

    /// Drives every cell whose deadline has come.
    pub fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(id) = self.cells.pop_due(now) {
            self.drive(now, id, out);
            self.refresh(id);
        }
    }

    fn drive(&mut self, now: Instant, id: CellId, out: &mut Outbox) {
        let mut timeouts: smallvec::SmallVec<[(usize, TimerName); 4]> = smallvec::SmallVec::new();
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        if cell.uas.next_deadline().is_some_and(|d| d <= now) {
            cell.uas.handle_timeout(now);
            super::cell::drain_uas(cell, out);
        }
        for (i, b) in cell.branches.iter_mut().enumerate() {
            let Some(dst) = b.dst else { continue };
            if let Some(uac) = b.uac.as_mut() {
                if uac.next_deadline().is_some_and(|d| d <= now) {
                    uac.handle_timeout(now);
                    while let Some(t) = uac.poll_transmit() {
                        out.push(dst, |buf| buf.extend_from_slice(t.bytes));
                    }
                    while let Some(e) = uac.poll_event() {
                        match e {
                            TxnEvent::Timeout(name) => timeouts.push((i, name)),
                            TxnEvent::TransportError => timeouts.push((i, TimerName::F)),
                            TxnEvent::Terminated => {}
                        }
                    }
                }
            }
            if let Some(c) = b.cancel.as_mut() {
                if c.next_deadline().is_some_and(|d| d <= now) {
                    c.handle_timeout(now);
                    while let Some(t) = c.poll_transmit() {
                        out.push(dst, |buf| buf.extend_from_slice(t.bytes));
                    }
                    while c.poll_event().is_some() {}
                }
            }
        }
        let expired = now >= cell.expires;
        for (i, name) in timeouts {
            match name {
                TimerName::FrInv => {
                    // No final within fr_inv_timer after a provisional: CANCEL, 408.
                    self.send_cancel(now, id, i, out);
                    self.branch_failed(now, id, i, BranchEnd::Unanswered, out);
                }
                TimerName::H | TimerName::D | TimerName::K => {}
                _ => {
                    if self.has_more_targets(id, i) {
                        let uri = self
                            .cell(id)
                            .and_then(|c| c.branches.get(i))
                            .map_or("", |b| b.uri.as_str());
                        crate::info!("branch {i} ({uri}): no answer, trying the next target");
                        if self.start_next_target(now, id, i, out) {
                            continue;
                        }
                    }
                    self.branch_failed(now, id, i, BranchEnd::Timeout, out);
                }
            }
        }
        if expired && self.failure_gave_up(now, id, out) {
            return;
        }
        if expired {
            // A transaction that never completed (t_newtran without a reply): drop it.
            crate::info!("transaction expired without completing; dropped");
            self.remove(id);
        }
    }

    /// A cell outlived `max_lifetime` while its failure route waits for off-shard work (a
    /// database that does not answer): the route's answer is no longer awaited, the best
    /// response goes upstream now, and the cell stays 64·T1 more for its retransmissions.
    /// The route, when it resumes, finds its transaction answered. False when no failure
    /// route was waiting.
    fn failure_gave_up(&mut self, now: Instant, id: CellId, out: &mut Outbox) -> bool {
        let linger = self.cfg.timers.t1_x64();
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        if cell.failure_pending.is_none() || cell.final_sent.is_some() {
            return false;
        }
        crate::notice!("failure route still paused when its transaction expired; best reply sent");
        cell.failure_pending = None;
        cell.expires = now + linger;
        self.send_best(now, id, out);
        true
    }
}
