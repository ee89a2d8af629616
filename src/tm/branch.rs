//! Branches: forking a cell's request to each destination (a client transaction per branch,
//! RFC 3261 16.6), names resolved off the shard ([`DnsJob`]), and RFC 3263 failover to the
//! next target of a name when one times out or answers 503.
//!
//! Branch client transactions linger after a timeout until the wait timer
//! ([`ClientTransaction::lingering`]): a late final meets its branch, not the stateless path.

use std::net::SocketAddr;
use std::time::Instant;

use ser_parser::{Message, Method};

use crate::sip::{Dest, Outbox, Transport};
use crate::stats::Stats;
use crate::txn::{ClientTransaction, Key};

use super::attach::BranchEnd;
use super::cell::{client_tag, untag, Branch};
use super::{CellId, Tm};

/// A name to resolve off the shard for a branch.
#[derive(Debug, Clone)]
pub struct DnsJob {
    pub cell: CellId,
    pub branch: usize,
    pub host: String,
    pub port: Option<u16>,
    pub secure: bool,
}

/// Where a new branch goes.
#[derive(Debug, Clone)]
pub enum BranchDst {
    Addr(Dest),
    /// Resolved off the shard; the request was written for this socket and transport.
    Name {
        sock: usize,
        transport: Transport,
        host: String,
        port: Option<u16>,
        secure: bool,
    },
}

impl BranchDst {
    /// The listen socket the branch leaves from (or was written for).
    pub fn socket(&self) -> usize {
        match self {
            Self::Addr(d) => d.socket,
            Self::Name { sock, .. } => *sock,
        }
    }
}

impl<S: Clone> Tm<S> {
    /// Adds a branch whose request is `request` (already carrying our Via with
    /// [`Self::branch_id`]) and sends it, or queues its name for resolution. Returns false if
    /// the request cannot start a transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn add_branch(
        &mut self,
        now: Instant,
        id: CellId,
        uri: &str,
        dst: BranchDst,
        request: Vec<u8>,
        known: (&str, Method<'_>),
        out: &mut Outbox,
    ) -> bool {
        let timers = self.cfg.timers;
        let Some(cell) = self.cells.get_mut(id) else {
            return false;
        };
        let index = cell.branches.len();
        match dst {
            BranchDst::Addr(a) => {
                let mut b = Branch::new(uri, a.socket, a.transport);
                let (branch, method) = known;
                let key = Key::client_from(branch, method.as_str());
                let Ok(mut uac) = ClientTransaction::start_known(
                    now,
                    &timers,
                    request,
                    key,
                    method,
                    a.transport.is_reliable(),
                ) else {
                    return false;
                };
                while let Some(t) = uac.poll_transmit() {
                    out.push(a, |buf| buf.extend_from_slice(t.bytes));
                }
                let key = uac.key().clone();
                b.dst = Some(a);
                b.key = Some(key.clone());
                b.uac = Some(uac.lingering());
                cell.branches.push(b);
                let _ = self.cells.index(key, id, client_tag(index, false));
                Stats::inc(&self.stats.requests_fwd);
            }
            BranchDst::Name {
                sock,
                transport,
                host,
                port,
                secure,
            } => {
                let mut b = Branch::new(uri, sock, transport);
                b.request = request;
                b.resolving = true;
                cell.branches.push(b);
                self.dns_jobs.push(DnsJob {
                    cell: id,
                    branch: index,
                    host,
                    port,
                    secure,
                });
            }
        }
        self.refresh(id);
        true
    }

    /// A name resolved (or not) for a branch: start it on the first target of a usable
    /// address family, keep the rest for failover.
    pub fn on_resolved(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        result: Result<Vec<SocketAddr>, String>,
        out: &mut Outbox,
    ) {
        let ident = std::sync::Arc::clone(&self.ident);
        let Some(b) = self.branch_mut(id, index) else {
            return;
        };
        if !b.resolving {
            return;
        }
        b.resolving = false;
        match result {
            Ok(addrs) => {
                // The request's Via was written for socket `b.sock`: only targets of its
                // family can be reached with it.
                let family = ident.local.addr(b.sock).map(|s| s.is_ipv4());
                b.targets = addrs
                    .into_iter()
                    .filter(|a| Some(a.is_ipv4()) == family)
                    .collect();
                b.targets.reverse(); // pop() takes the best
                if b.final_code.is_some() {
                    // Cancelled while resolving.
                } else if !self.start_next_target(now, id, index, out) {
                    crate::notice!("no usable address for branch {index}");
                    self.branch_failed(now, id, index, BranchEnd::Unreachable, out);
                }
            }
            Err(e) => {
                Stats::inc(&self.stats.dns_failures);
                crate::notice!("cannot resolve next hop: {e}");
                if let Some(b) = self.branch_mut(id, index) {
                    b.request.clear();
                }
                self.branch_failed(now, id, index, BranchEnd::Unreachable, out);
            }
        }
        self.refresh(id);
    }

    /// Starts (or restarts) a branch's client transaction on its next target; false when
    /// none is left.
    pub(super) fn start_next_target(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        out: &mut Outbox,
    ) -> bool {
        let timers = self.cfg.timers;
        let Some(b) = self.branch_mut(id, index) else {
            return false;
        };
        let Some(addr) = b.targets.pop() else {
            return false;
        };
        let request = match b.uac.take() {
            Some(old) => old.request().to_vec(),
            None => std::mem::take(&mut b.request),
        };
        let dst = Dest {
            transport: b.transport,
            socket: b.sock,
            addr,
            conn: None,
        };
        let reliable = dst.transport.is_reliable();
        let Ok(mut uac) = ClientTransaction::start(now, &timers, &request, reliable) else {
            return false;
        };
        while let Some(t) = uac.poll_transmit() {
            out.push(dst, |buf| buf.extend_from_slice(t.bytes));
        }
        let key = uac.key().clone();
        b.dst = Some(dst);
        b.last_code = 0;
        b.uac = Some(uac.lingering());
        let fresh = b.key.is_none();
        b.key = Some(key.clone());
        if fresh {
            let _ = self.cells.index(key, id, client_tag(index, false));
        }
        Stats::inc(&self.stats.requests_fwd);
        true
    }

    pub(super) fn has_more_targets(&self, id: CellId, index: usize) -> bool {
        self.cell(id)
            .and_then(|c| c.branches.get(index))
            .is_some_and(|b| !b.targets.is_empty())
    }

    /// A request this proxy sent could not be delivered (its stream connection failed or
    /// could not be opened): the branch goes on to its next target, or fails at once with a
    /// 503 (failure_route runs now, not after fr_timer). `req` is the request as sent; false
    /// when it is none of ours (a CANCEL, an ACK, a transaction already gone).
    pub fn on_send_failed(&mut self, now: Instant, req: &Message<'_>, out: &mut Outbox) -> bool {
        let Ok(key) = Key::client(req) else {
            return false;
        };
        let Some((id, tag)) = self.cells.lookup(&key) else {
            return false;
        };
        let (index, is_cancel) = untag(tag);
        if is_cancel {
            return false;
        }
        match self.branch_mut(id, index) {
            Some(b) if b.final_code.is_none() => {}
            _ => return false,
        }
        if !self.start_next_target(now, id, index, out) {
            crate::notice!("branch {index}: cannot send to the next hop");
            self.branch_failed(now, id, index, BranchEnd::Unreachable, out);
        }
        self.refresh(id);
        true
    }

    /// A branch ended without a reply of its own (timeout, transport error, no address):
    /// it counts with `end`'s status, and the transaction's attachment hears of it.
    pub(super) fn branch_failed(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        end: BranchEnd,
        out: &mut Outbox,
    ) {
        if let Some(b) = self.branch_mut(id, index) {
            if b.final_code.is_some() {
                return;
            }
            b.final_code = Some(end.code());
            b.resolving = false;
        }
        self.tell_branch_end(id, index, end);
        self.check_completion(now, id, out);
    }
}
