//! Requests from upstream: retransmissions absorbed before the script, a new cell for
//! `t_newtran`/`t_relay` (or 503 when the table is full, or while the server drains), and
//! the start of relaying (the 100 to an INVITE, the routes and flags of the run).

use std::sync::atomic::Ordering;
use std::time::Instant;

use ser_parser::{Message, Method};

use crate::sip::{response_dest, Arrival, LocalReply, Outbox};
use crate::stats::Stats;
use crate::txn::{Disposition, Key, ServerTransaction, TableError};

use super::cell::{drain_uas, Cell};
use super::{CellId, Routes, Tm};

/// What [`Tm::on_request`] made of a request before the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMatch {
    /// A retransmission or the ACK of a negative final: handled.
    Absorbed,
    /// New: run the script.
    Pass,
}

/// Why a transaction could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    Full,
    Exists,
    Bad,
}

impl<S: Clone> Tm<S> {
    /// Before the script: a retransmission (or the ACK of a negative final) is answered by
    /// its transaction and goes no further.
    pub fn on_request(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        out: &mut Outbox,
    ) -> RequestMatch {
        if self.cells.no_keys() {
            return RequestMatch::Pass;
        }
        let Ok(key) = Key::server(msg) else {
            return RequestMatch::Pass;
        };
        let Some((id, _)) = self.cells.lookup(&key) else {
            return RequestMatch::Pass;
        };
        let Some(cell) = self.cell_mut(id) else {
            return RequestMatch::Pass;
        };
        let r = match cell.uas.handle_request(now, msg) {
            Disposition::Absorbed => {
                drain_uas(cell, out);
                RequestMatch::Absorbed
            }
            Disposition::PassUp | Disposition::NotMatched => RequestMatch::Pass,
        };
        self.refresh(id);
        r
    }

    /// For a CANCEL: whether the INVITE it cancels has a transaction here.
    pub fn has_cancelled_invite(&self, msg: &Message<'_>) -> bool {
        Key::cancelled_invite(msg).is_ok_and(|k| self.cells.lookup(&k).is_some())
    }

    /// Creates the transaction for a request (t_newtran, t_relay). `Full` past capacity: the
    /// caller answers 503 ([`Self::reply_unavailable`]).
    /// `loop_mark`: the request's loop hash, carried in its branches (see
    /// [`crate::sip::txn_branch`]), so that it is recognised if it comes back unchanged.
    pub fn create(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        at: Arrival,
        flags: u32,
        loop_mark: u32,
    ) -> Result<CellId, CreateError> {
        if self.cells.len() >= self.cfg.max_transactions {
            Stats::inc(&self.stats.tm_refused);
            return Err(CreateError::Full);
        }
        let uas = ServerTransaction::new(now, &self.cfg.timers, msg, at.transport.is_reliable())
            .map_err(|_| CreateError::Bad)?;
        let key = uas.key().clone();
        if self.cells.contains(&key) {
            return Err(CreateError::Exists);
        }
        self.seq = self.seq.wrapping_add(1);
        let branch_base = crate::sip::txn_branch(
            &self.ident.reply.tag_prefix,
            self.shard,
            self.seq,
            loop_mark,
        );
        let reply_to = response_dest(&self.ident.local, msg, &at);
        let cell = Cell {
            uas,
            uas_key: Some(key.clone()),
            reply_to,
            arrival: at,
            branches: Vec::new(),
            routes: Routes::default(),
            flags,
            final_sent: None,
            relayed: false,
            canceled: false,
            replicate: false,
            branch_base,
            expires: now + self.cfg.max_lifetime,
            waiting: false,
            failure_pending: None,
            out_uri: String::new(),
            script: self.script.clone(),
            attachment: None,
            request_facts: super::RequestFacts {
                body: !msg.body().iter().all(u8::is_ascii_whitespace),
                in_dialog: msg.to().is_ok_and(|t| t.tag.is_some()),
            },
        };
        let id = match self.cells.insert(cell) {
            Ok(id) => id,
            Err(TableError::Full) => {
                Stats::inc(&self.stats.tm_refused);
                return Err(CreateError::Full);
            }
            Err(_) => return Err(CreateError::Bad),
        };
        if self.cells.index(key, id, 0).is_err() {
            self.cells.remove(id);
            return Err(CreateError::Exists);
        }
        Stats::inc(&self.stats.tm_total);
        self.stats
            .tm_current
            .store(self.cells.len() as u64, Ordering::Relaxed);
        self.refresh(id);
        Ok(id)
    }

    /// While the server drains (SIGTERM): answers a request that would start something new
    /// with 503 and Retry-After and returns true. An ACK (there is no answering it, and the
    /// ACK of a 2xx relayed during the drain must still reach its UAS) and a CANCEL of a
    /// transaction we hold go on to the script; retransmissions never get here, tm absorbs
    /// them first.
    pub fn refuse_while_draining(&self, msg: &Message<'_>, at: &Arrival, out: &mut Outbox) -> bool {
        match msg.method() {
            Some(Method::Ack) => false,
            Some(Method::Cancel) if self.find_invite_for_cancel(msg).is_some() => false,
            // In-dialog requests (a To tag: a BYE ending a call) still pass: a draining
            // server lets the calls it carries end cleanly.
            _ if msg.to().is_ok_and(|t| t.tag.is_some()) => false,
            _ => {
                self.reply_unavailable(msg, at, out);
                true
            }
        }
    }

    /// Stateless 503 with Retry-After for a request that found the table full.
    pub fn reply_unavailable(&self, msg: &Message<'_>, at: &Arrival, out: &mut Outbox) {
        if matches!(msg.method(), Some(Method::Ack)) {
            return;
        }
        let headers = format!("Retry-After: {}\r\n", self.cfg.retry_after);
        let r = LocalReply {
            code: 503,
            reason: b"Service Unavailable",
            headers: &headers,
        };
        self.ident.reply.reply(&self.ident.local, msg, at, &r, out);
        self.stats.count_sl(503);
    }

    /// Marks the cell relayed (a second t_relay is an error), stores the routes and flags
    /// of the run, and sends the 100 for an INVITE.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_relay(
        &mut self,
        now: Instant,
        id: CellId,
        req: &Message<'_>,
        routes: Routes,
        flags: u32,
        out_uri: &str,
        replicate: bool,
        out: &mut Outbox,
    ) {
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let first = !cell.relayed;
        cell.relayed = true;
        cell.routes = routes;
        cell.flags = flags;
        cell.replicate = replicate;
        if first {
            cell.out_uri.clear();
            cell.out_uri.push_str(out_uri);
        }
        if first && !replicate && cell.uas.is_invite() && cell.uas.last_code().is_none() {
            self.local_reply_to(now, id, req, 100, "Trying", "", out);
        }
    }

    /// The branch id of branch `index` of a cell (the Via branch parameter).
    pub fn branch_id(&self, id: CellId, index: usize, out: &mut String) -> bool {
        let Some(cell) = self.cell(id) else {
            return false;
        };
        use std::fmt::Write;
        out.clear();
        let _ = write!(out, "{}.{}", cell.branch_base, index);
        true
    }
}
