//! The cell table: one cell per stateful request (SER's "cell"), its branches, and how the
//! table keeps them — in the transaction layer's [`Table`](crate::txn::Table), found by the
//! server key of the request and by the client key of every branch (and branch CANCEL), so a
//! reply finds its branch in one lookup; re-indexed after every change, removed when the
//! server transaction and every client transaction have ended.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::sip::{Arrival, Dest, Outbox, Transport};
use crate::stats::Stats;
use crate::txn::{ClientTransaction, EntryId, Key, ServerTransaction, Timed};

use super::attach::{Attachment, BranchEnd};
use super::{Routes, Tm};

/// A cell's handle: a table entry id (a reused slot never answers to an old id).
pub type CellId = EntryId;

/// The tag of a client key in the table: the branch index, and whether it is the branch's
/// CANCEL.
pub(super) fn client_tag(index: usize, cancel: bool) -> u32 {
    (u32::try_from(index).unwrap_or(u32::MAX >> 1) << 1) | u32::from(cancel)
}

pub(super) fn untag(tag: u32) -> (usize, bool) {
    ((tag >> 1) as usize, tag & 1 == 1)
}

/// One branch of a cell: a client transaction towards one destination.
#[derive(Debug)]
pub(super) struct Branch {
    pub(super) uri: String,
    /// The socket and transport the request's Via was written for.
    pub(super) sock: usize,
    pub(super) transport: Transport,
    /// Where the client transaction sends (None while resolving).
    pub(super) dst: Option<Dest>,
    /// Further targets of the same name (RFC 3263 failover), best last (popped).
    pub(super) targets: Vec<SocketAddr>,
    /// The request until it is handed to a client transaction (while resolving).
    pub(super) request: Vec<u8>,
    pub(super) uac: Option<ClientTransaction>,
    pub(super) key: Option<Key>,
    pub(super) last_code: u16,
    /// The branch's final: received, or given locally (408 on a timeout, 487 when cancelled
    /// while resolving, 503 when no address).
    pub(super) final_code: Option<u16>,
    /// A negative final as received, kept for the best-response choice.
    pub(super) reply: Option<Vec<u8>>,
    pub(super) cancel: Option<ClientTransaction>,
    pub(super) cancel_key: Option<Key>,
    pub(super) cancel_pending: bool,
    pub(super) resolving: bool,
}

impl Branch {
    pub(super) fn new(uri: &str, sock: usize, transport: Transport) -> Self {
        Self {
            uri: uri.to_string(),
            sock,
            transport,
            dst: None,
            targets: Vec::new(),
            request: Vec::new(),
            uac: None,
            key: None,
            last_code: 0,
            final_code: None,
            reply: None,
            cancel: None,
            cancel_key: None,
            cancel_pending: false,
            resolving: false,
        }
    }
}

/// One stateful request.
#[derive(Debug)]
pub(super) struct Cell<S> {
    pub(super) uas: ServerTransaction,
    pub(super) uas_key: Option<Key>,
    /// The response address of the server transaction (18.2.2) and the socket.
    pub(super) reply_to: Dest,
    pub(super) arrival: Arrival,
    pub(super) branches: Vec<Branch>,
    pub(super) routes: Routes,
    pub(super) flags: u32,
    pub(super) final_sent: Option<u16>,
    pub(super) relayed: bool,
    pub(super) canceled: bool,
    pub(super) replicate: bool,
    pub(super) branch_base: String,
    pub(super) expires: Instant,
    /// Counted in t_stats' "waiting" (a final is out, timers remain).
    pub(super) waiting: bool,
    /// A failure route was requested and not yet done: the number of branches before it.
    pub(super) failure_pending: Option<usize>,
    /// The Request-URI the transaction was relayed with (`o-uri` of accounting).
    pub(super) out_uri: String,
    /// The script this transaction started under.
    pub(super) script: S,
    /// What a module keeps with the transaction until its first final goes upstream (the
    /// dispatcher's remaining destinations); see [`super::attach`].
    pub(super) attachment: Option<Attachment>,
    /// What the onreply_route learns of the request.
    pub(super) request_facts: super::RequestFacts,
}

impl<S> Timed for Cell<S> {
    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.expires;
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                d = d.min(x);
            }
        };
        take(self.uas.next_deadline());
        for b in &self.branches {
            take(b.uac.as_ref().and_then(ClientTransaction::next_deadline));
            take(b.cancel.as_ref().and_then(ClientTransaction::next_deadline));
        }
        Some(d)
    }
}

/// Sends what the server transaction queued, to the response address.
pub(super) fn drain_uas<S>(cell: &mut Cell<S>, out: &mut Outbox) {
    let dst = cell.reply_to;
    while let Some(t) = cell.uas.poll_transmit() {
        out.push(dst, |buf| buf.extend_from_slice(t.bytes));
    }
    while cell.uas.poll_event().is_some() {}
}

impl<S: Clone> Tm<S> {
    pub(super) fn cell(&self, id: CellId) -> Option<&Cell<S>> {
        self.cells.get(id)
    }

    pub(super) fn cell_mut(&mut self, id: CellId) -> Option<&mut Cell<S>> {
        self.cells.get_mut(id)
    }

    pub(super) fn branch_mut(&mut self, id: CellId, index: usize) -> Option<&mut Branch> {
        self.cells.get_mut(id)?.branches.get_mut(index)
    }

    /// Whether a cell exists and has been relayed already.
    pub fn is_relayed(&self, id: CellId) -> bool {
        self.cell(id).is_some_and(|c| c.relayed)
    }

    /// Where transaction `id`'s replies go upstream from now on (nathelper's
    /// `force_rport()`: the source port, as if the request's Via had `rport`).
    pub fn set_reply_to(&mut self, id: CellId, dst: Dest) {
        if let Some(c) = self.cells.get_mut(id) {
            c.reply_to = dst;
        }
    }

    /// The module state attached to transaction `id` (None when the cell is gone).
    pub fn attachment_mut(&mut self, id: CellId) -> Option<&mut Option<Attachment>> {
        self.cells.get_mut(id).map(|c| &mut c.attachment)
    }

    /// Tells the module state attached to transaction `id`, if any, how branch `index`
    /// ended (see [`super::attach::Attached::branch_ended`]).
    pub(super) fn tell_branch_end(&mut self, id: CellId, index: usize, end: BranchEnd) {
        if let Some(a) = self.cell_mut(id).and_then(|c| c.attachment.as_mut()) {
            a.branch_ended(index, end);
        }
    }

    pub fn final_sent(&self, id: CellId) -> Option<u16> {
        self.cell(id).and_then(|c| c.final_sent)
    }

    /// Number of branches a cell has so far (the index of the next one).
    pub fn branch_count(&self, id: CellId) -> usize {
        self.cell(id).map_or(0, |c| c.branches.len())
    }

    /// Re-indexes a cell after changes made from outside (its timers, its end).
    pub fn touch(&mut self, id: CellId) {
        self.refresh(id);
    }

    /// Drops a transaction nothing was sent for (t_relay found no destination), so the
    /// script can answer statelessly and a retransmission is processed anew.
    pub fn abandon(&mut self, id: CellId) {
        self.remove(id);
    }

    /// After any change: forget ended transactions (and their keys), drop a cell with none
    /// left, re-index its deadline.
    pub(super) fn refresh(&mut self, id: CellId) {
        let Some(cell) = self.cells.get_mut(id) else {
            return;
        };
        let mut gone_keys: smallvec::SmallVec<[Key; 2]> = smallvec::SmallVec::new();
        if cell.uas.is_terminated() {
            if let Some(k) = cell.uas_key.take() {
                gone_keys.push(k);
            }
        }
        let mut pending = false;
        for (i, b) in cell.branches.iter_mut().enumerate() {
            if b.uac.as_ref().is_some_and(ClientTransaction::is_terminated) {
                b.uac = None;
                if let Some(k) = b.key.take() {
                    gone_keys.push(k);
                }
                if b.final_code.is_none() {
                    // Terminated without a final reaching the TU (transport error).
                    b.final_code = Some(BranchEnd::Timeout.code());
                    if let Some(a) = cell.attachment.as_mut() {
                        a.branch_ended(i, BranchEnd::Timeout);
                    }
                }
            }
            if b.cancel
                .as_ref()
                .is_some_and(ClientTransaction::is_terminated)
            {
                b.cancel = None;
                if let Some(k) = b.cancel_key.take() {
                    gone_keys.push(k);
                }
            }
            pending |= b.uac.is_some() || b.cancel.is_some() || b.resolving;
        }
        let done = cell.uas_key.is_none() && !pending;
        let waiting = cell.final_sent.is_some() && !done;
        let was_waiting = cell.waiting;
        cell.waiting = waiting;
        for k in gone_keys {
            self.cells.unindex(&k);
        }
        if waiting != was_waiting {
            if waiting {
                Stats::inc(&self.stats.tm_waiting);
            } else {
                self.stats.tm_waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if done {
            self.remove(id);
            return;
        }
        self.cells.rearm(id);
    }

    /// Removes a cell and its keys.
    pub(super) fn remove(&mut self, id: CellId) {
        let Some(cell) = self.cells.remove(id) else {
            return;
        };
        if cell.waiting {
            self.stats.tm_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats
            .tm_current
            .store(self.cells.len() as u64, Ordering::Relaxed);
    }
}
