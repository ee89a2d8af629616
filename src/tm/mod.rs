//! The transaction user of a stateful proxy (SER's tm), as a state machine: one cell per
//! request that `t_relay`/`t_newtran` made stateful, holding the server transaction towards
//! the caller and one client transaction per branch (RFC 3261 16).
//!
//! What it does: parallel forking to the destination set, the best final response of 16.7
//! (every 2xx relayed at once, a 6xx cancels the others, 503 becomes 500), serial forking
//! through the failure route, 408 when no final came in time, CANCEL (answered 200, sent on
//! every branch that has a provisional, the INVITE ends with 487), next-hop failover over the
//! targets RFC 3263 gave on a timeout or 503, `t_reply`, and t_stats counters. A branch that
//! gave up keeps its client transaction until the wait timer, so a late final is ACKed and
//! absorbed (a late 2xx forwarded) instead of reaching the caller as a second final.
//!
//! It never runs the script. What the script must run comes out as requests the caller
//! serves and answers:
//!
//! - [`Tm::on_reply`] returns [`ReplyMatch::OnReply`] when the cell armed `t_on_reply`: the
//!   caller runs that onreply_route over the reply and calls [`Tm::onreply_done`] with
//!   whether the route dropped it;
//! - [`Tm::poll_event`] yields [`TmEvent::Failure`] when every branch failed and a failure
//!   route (or SER 0.8's negative reply route) is armed: the caller runs it over the cell's
//!   request (the route may add branches and `t_relay`/`t_reply` through this `Tm`) and
//!   calls [`Tm::failure_done`]; and [`TmEvent::Completed`] when a transaction whose flags
//!   ask for it ([`TmConfig::report_flags`]) sent its first final (accounting).
//!
//! Sans-IO: every input takes `now` and an [`Outbox`] to write datagrams into; no locks, no
//! threads, no clock reads. Names to resolve leave as [`DnsJob`]s and come back through
//! [`Tm::on_resolved`]; the shard arms one runtime timer for [`Tm::next_deadline`] and calls
//! [`Tm::on_timer`]. What tm needs of the server (our sockets and names, what our replies
//! carry) comes in an [`Identity`] the caller builds; the script a cell started under is an
//! opaque `S` handed back with each request to run it.
//!
//! Files: `attach` (module state kept with a transaction, told how its branches
//! ended), `cell` (the cell table), `request` (new requests, retransmissions, relaying),
//! `branch` (forking, name resolution, failover), `reply` (replies from downstream),
//! `select` (16.7's choice, the failure route, completion), `cancel`, `local` (our own
//! replies), `timer`, `event` (what the caller runs), `config`, `uac` (t_uac).
//!
//! What it does not do: RFC 6026's Accepted state (2xx retransmissions and the ACK of a 2xx
//! pass statelessly, as in RFC 3261), aggregation of WWW-Authenticate headers of several
//! 401s, and stream transports.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::sip::{Local, ReplyIdentity};
use crate::stats::Stats;
use crate::txn::Table;

mod attach;
mod branch;
mod cancel;
mod cell;
mod config;
mod event;
mod local;
mod reply;
mod request;
mod select;
mod timer;
pub mod uac;

pub use attach::{Attached, Attachment, BranchEnd};
pub use branch::{BranchDst, DnsJob};
pub use cancel::build_cancel;
pub use cell::CellId;
pub use config::TmConfig;
pub use event::{
    Completion, FailureOutcome, FailureRun, OnReplyRun, ReplyMatch, RequestFacts, RouteKindDefault,
    Routes, TState, TmEvent,
};
pub use request::{CreateError, RequestMatch};

use cell::Cell;

/// What tm needs to know of the server it runs in: our sockets, names and Vias (response
/// addresses, the family of a branch's socket) and what our own replies carry. Built by the
/// caller from its configuration; shared, read-only.
#[derive(Debug, Clone)]
pub struct Identity {
    pub local: Local,
    pub reply: ReplyIdentity,
}

/// One shard's transactions (see the module documentation). `S` is the caller's handle on
/// the script a transaction started under (its routes run from it even after a reload).
pub struct Tm<S> {
    pub cfg: TmConfig,
    ident: Arc<Identity>,
    script: S,
    stats: Arc<Stats>,
    shard: usize,
    cells: Table<Cell<S>>,
    seq: u64,
    /// Names to resolve; the shard drains them after every call.
    pub dns_jobs: Vec<DnsJob>,
    events: VecDeque<TmEvent<S>>,
    tmp: Vec<u8>,
}

impl<S: Clone> Tm<S> {
    pub fn new(
        ident: Arc<Identity>,
        script: S,
        stats: Arc<Stats>,
        shard: usize,
        cfg: TmConfig,
    ) -> Self {
        Self {
            cells: Table::new(cfg.max_transactions),
            cfg,
            ident,
            script,
            stats,
            shard,
            seq: 0,
            dns_jobs: Vec::new(),
            events: VecDeque::new(),
            tmp: Vec::new(),
        }
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// What the caller must run or report next (see the module documentation); drain it
    /// after every call.
    pub fn poll_event(&mut self) -> Option<TmEvent<S>> {
        self.events.pop_front()
    }

    /// The script new transactions start under (branch routes run from `t_relay`).
    pub fn script(&self) -> S {
        self.script.clone()
    }

    /// The script transaction `id` started under (the current one when it is gone).
    pub fn script_of(&self, id: CellId) -> S {
        match self.cells.get(id) {
            Some(c) => c.script.clone(),
            None => self.script.clone(),
        }
    }

    /// A reload: new transactions use `ident`, `script` and `cfg`; those in flight keep the
    /// script they started under.
    pub fn set_generation(&mut self, ident: Arc<Identity>, script: S, cfg: TmConfig) {
        self.cells.set_capacity(cfg.max_transactions);
        self.ident = ident;
        self.script = script;
        self.cfg = cfg;
    }
}

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
