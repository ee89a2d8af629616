//! The transaction user of a stateful proxy (SER's tm): one [`Cell`] per request that
//! `t_relay`/`t_newtran` made stateful, holding the server transaction towards the caller and
//! one client transaction per branch (RFC 3261 16).
//!
//! What it does: parallel forking to the destination set, `branch_route` per branch, the best
//! final response of 16.7 (every 2xx relayed at once, a 6xx cancels the others, 503 becomes
//! 500), `failure_route` / SER 0.8's negative `reply_route` when every branch failed (serial
//! forking: the route may add branches and relay again), 408 when no final came in time,
//! CANCEL (answered 200, sent on every branch that has a provisional, the INVITE ends with
//! 487), next-hop failover over the targets RFC 3263 gave on a timeout or 503, `t_reply`,
//! accounting reports when a transaction completes, and t_stats counters.
//!
//! How: a shard owns one [`Tm`]; cells live in a slab indexed by server key and by client
//! key (so a reply finds its branch in one lookup), with a lazy timer heap of cell deadlines;
//! the shard arms one runtime timer for [`Tm::next_deadline`]. Everything is driven by the
//! shard with `now` and an [`Outbox`] to write datagrams into: no locks, no threads, no
//! clock reads. Name resolution leaves as [`DnsJob`]s and comes back through
//! [`Tm::on_resolved`].
//!
//! What it does not do: RFC 6026's Accepted state (2xx retransmissions and the ACK of a 2xx
//! pass statelessly, as in RFC 3261), aggregation of WWW-Authenticate headers of several 401s,
//! and stream transports.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ser_parser::{Message, Method};
use ser_script::RouteKind;

use crate::config::Params;
use crate::core::Core;
use crate::modules::Script;
use crate::route::{MsgCtx, Scratch};
use crate::sip::{response_dest, Arrival, Dest, LocalReply, Outbox, Transport};
use crate::stats::Stats;
use crate::txn::{
    ClientTransaction, Disposition, Key, ServerTransaction, TimerConfig, TimerName, TxnEvent,
};

mod acc;
pub mod uac;
pub use acc::{report_request as acc_request, AccConfig};

/// tm's configuration, from its module parameters.
#[derive(Debug, Clone)]
pub struct TmConfig {
    pub timers: TimerConfig,
    /// Live transactions per shard; past it a new request gets 503.
    pub max_transactions: usize,
    /// Seconds in the Retry-After of that 503.
    pub retry_after: u32,
    /// Longest life of a transaction that never completes (t_newtran with no reply).
    pub max_lifetime: Duration,
    pub acc: AccConfig,
}

impl TmConfig {
    /// `fr_timer`, `fr_inv_timer`, `wt_timer` in seconds (as SER); `retr_timer1`,
    /// `retr_timer2` in milliseconds; `max_transactions` for the whole server (split over the
    /// shards); `retry_after` in seconds.
    pub fn from_params(p: &Params, shards: usize) -> Self {
        let mut t = TimerConfig::ser();
        let secs = |n: i64| Duration::from_secs(u64::try_from(n.max(1)).unwrap_or(1));
        let ms = |n: i64| Duration::from_millis(u64::try_from(n.max(10)).unwrap_or(10));
        if let Some(n) = p.int("tm", "fr_timer") {
            t.fr_timer = secs(n);
        }
        if let Some(n) = p.int("tm", "fr_inv_timer") {
            t.fr_inv_timer = secs(n);
        }
        if let Some(n) = p.int("tm", "wt_timer") {
            t.wt_timer = secs(n);
        }
        if let Some(n) = p.int("tm", "retr_timer1") {
            t.retr_timer1 = ms(n);
            t.t1 = t.retr_timer1;
        }
        if let Some(n) = p.int("tm", "retr_timer2") {
            t.retr_timer2 = ms(n);
            t.t2 = t.retr_timer2;
        }
        let total = p
            .int("tm", "max_transactions")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(262_144);
        let max_transactions = (total / shards.max(1)).max(1);
        let retry_after = p
            .int("tm", "retry_after")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(5);
        let max_lifetime = t.fr_inv_timer + t.fr_timer + t.t1_x64();
        Self {
            timers: t,
            max_transactions,
            retry_after,
            max_lifetime,
            acc: AccConfig::from_params(p),
        }
    }
}

/// A cell's handle: slab slot and generation (a reused slot never answers to an old id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellId {
    slot: u32,
    generation: u32,
}

/// The routes a transaction runs later, armed by `t_on_*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Routes {
    pub on_negative: Option<u32>,
    pub on_failure: Option<u32>,
    pub on_branch: Option<u32>,
    pub on_reply: Option<u32>,
}

/// Per script run: the transaction this request has (t_newtran/t_relay), the routes armed so
/// far, and where the run is (request route, failure route of a cell, branch route).
#[derive(Debug, Clone, Copy, Default)]
pub struct TState {
    /// The shard's time for this message (None only outside the server, in tests).
    pub now: Option<Instant>,
    pub cell: Option<CellId>,
    pub routes: Routes,
    pub kind: RouteKindDefault,
}

impl Default for RouteKindDefault {
    fn default() -> Self {
        Self(RouteKind::Request)
    }
}

/// `RouteKind` has no default; the request route is where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKindDefault(pub RouteKind);

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

#[derive(Debug)]
struct Branch {
    uri: String,
    /// The socket and transport the request's Via was written for.
    sock: usize,
    transport: Transport,
    /// Where the client transaction sends (None while resolving).
    dst: Option<Dest>,
    /// Further targets of the same name (RFC 3263 failover), best first.
    targets: Vec<SocketAddr>,
    /// The request until it is handed to a client transaction (while resolving).
    request: Vec<u8>,
    uac: Option<ClientTransaction>,
    key: Option<Key>,
    last_code: u16,
    final_code: Option<u16>,
    /// A negative final as received, kept for the best-response choice.
    reply: Option<Vec<u8>>,
    cancel: Option<ClientTransaction>,
    cancel_key: Option<Key>,
    cancel_pending: bool,
    resolving: bool,
}

/// One stateful request: SER's "cell".
#[derive(Debug)]
struct Cell {
    uas: ServerTransaction,
    uas_key: Option<Key>,
    /// The response address of the server transaction (18.2.2) and the socket.
    reply_to: Dest,
    arrival: Arrival,
    branches: Vec<Branch>,
    routes: Routes,
    flags: u32,
    final_sent: Option<u16>,
    relayed: bool,
    canceled: bool,
    replicate: bool,
    branch_base: String,
    expires: Instant,
    armed: Option<Instant>,
    waiting: bool,
    /// The Request-URI the transaction was relayed with (`o-uri` of accounting).
    out_uri: String,
    /// The script this transaction started under: its failure, reply and branch routes run
    /// from it even after a reload swapped in a newer one.
    script: CellScript,
}

/// A cell's script (the compiled program has no `Debug`).
struct CellScript(Arc<Script>);

impl std::fmt::Debug for CellScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CellScript")
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    cell: Option<Box<Cell>>,
}

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

/// One shard's transactions (see the module documentation).
pub struct Tm {
    pub cfg: TmConfig,
    core: Arc<Core>,
    script: Arc<Script>,
    stats: Arc<Stats>,
    shard: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    by_server: HashMap<Key, CellId, ahash::RandomState>,
    by_client: HashMap<Key, (CellId, u16, bool), ahash::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    seq: u64,
    /// Names to resolve; the shard drains them after every call.
    pub dns_jobs: Vec<DnsJob>,
    /// Buffers for failure/branch route runs started from replies and timers.
    fscratch: Scratch,
    tmp: Vec<u8>,
}

fn reason_of(code: u16) -> &'static str {
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

impl Tm {
    pub fn new(
        core: Arc<Core>,
        script: Arc<Script>,
        stats: Arc<Stats>,
        shard: usize,
        mut cfg: TmConfig,
    ) -> Self {
        cfg.acc.attach(&core);
        Self {
            cfg,
            core,
            script,
            stats,
            shard,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_server: HashMap::with_hasher(ahash::RandomState::new()),
            by_client: HashMap::with_hasher(ahash::RandomState::new()),
            timers: BinaryHeap::new(),
            seq: 0,
            dns_jobs: Vec::new(),
            fscratch: Scratch::default(),
            tmp: Vec::new(),
        }
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn cell(&self, id: CellId) -> Option<&Cell> {
        let s = self.slots.get(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.cell.as_deref()
    }

    fn cell_mut(&mut self, id: CellId) -> Option<&mut Cell> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.cell.as_deref_mut()
    }

    /// Whether a cell exists and has been relayed already.
    pub fn is_relayed(&self, id: CellId) -> bool {
        self.cell(id).is_some_and(|c| c.relayed)
    }

    pub fn final_sent(&self, id: CellId) -> Option<u16> {
        self.cell(id).and_then(|c| c.final_sent)
    }

    /// Before the script: a retransmission (or the ACK of a negative final) is answered by
    /// its transaction and goes no further.
    pub fn on_request(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        out: &mut Outbox,
    ) -> RequestMatch {
        if self.by_server.is_empty() {
            return RequestMatch::Pass;
        }
        let Ok(key) = Key::server(msg) else {
            return RequestMatch::Pass;
        };
        let Some(&id) = self.by_server.get(&key) else {
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

    /// Creates the transaction for a request (t_newtran, t_relay). `Full` past capacity: the
    /// caller answers 503 ([`Self::reply_unavailable`]).
    pub fn create(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        at: Arrival,
        flags: u32,
    ) -> Result<CellId, CreateError> {
        if self.live >= self.cfg.max_transactions {
            Stats::inc(&self.stats.tm_refused);
            return Err(CreateError::Full);
        }
        let uas = ServerTransaction::new(now, &self.cfg.timers, msg, at.transport.is_reliable())
            .map_err(|_| CreateError::Bad)?;
        let key = uas.key().clone();
        if self.by_server.contains_key(&key) {
            return Err(CreateError::Exists);
        }
        self.seq = self.seq.wrapping_add(1);
        let branch_base = format!(
            "z9hG4bK{}{:x}{:x}",
            self.core.reply.tag_prefix, self.shard, self.seq
        );
        let reply_to = response_dest(&self.core.local, msg, &at);
        let cell = Box::new(Cell {
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
            armed: None,
            waiting: false,
            out_uri: String::new(),
            script: CellScript(Arc::clone(&self.script)),
        });
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    cell: None,
                });
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Err(CreateError::Bad);
        };
        s.cell = Some(cell);
        let id = CellId {
            slot,
            generation: s.generation,
        };
        self.by_server.insert(key, id);
        self.live += 1;
        Stats::inc(&self.stats.tm_total);
        self.stats
            .tm_current
            .store(self.live as u64, Ordering::Relaxed);
        self.refresh(id);
        Ok(id)
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
        self.core.reply.reply(&self.core.local, msg, at, &r, out);
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

    /// The compiled script (branch routes run from `t_relay`).
    pub fn script(&self) -> Arc<Script> {
        Arc::clone(&self.script)
    }

    /// The script transaction `id` started under (the current one when it is gone).
    pub fn script_of(&self, id: CellId) -> Arc<Script> {
        match self.cell(id) {
            Some(c) => Arc::clone(&c.script.0),
            None => Arc::clone(&self.script),
        }
    }

    /// A reload: new transactions use `script`, `core` and `cfg`; those in flight keep the
    /// script they started under.
    pub fn set_generation(&mut self, core: Arc<Core>, script: Arc<Script>, mut cfg: TmConfig) {
        cfg.acc.attach(&core);
        self.core = core;
        self.script = script;
        self.cfg = cfg;
    }

    /// Number of branches a cell has so far (the index of the next one).
    pub fn branch_count(&self, id: CellId) -> usize {
        self.cell(id).map_or(0, |c| c.branches.len())
    }

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
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        let index = cell.branches.len();
        let (sock, transport, addr, job) = match dst {
            BranchDst::Addr(d) => (d.socket, d.transport, Some(d), None),
            BranchDst::Name {
                sock,
                transport,
                host,
                port,
                secure,
            } => (sock, transport, None, Some((host, port, secure))),
        };
        let mut b = Branch {
            uri: uri.to_string(),
            sock,
            transport,
            dst: addr,
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
        };
        match addr {
            Some(a) => {
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
                let key = uac.key().clone();
                while let Some(t) = uac.poll_transmit() {
                    out.push(a, |buf| buf.extend_from_slice(t.bytes));
                }
                b.key = Some(key.clone());
                b.uac = Some(uac);
                cell.branches.push(b);
                self.by_client
                    .insert(key, (id, u16::try_from(index).unwrap_or(u16::MAX), false));
                Stats::inc(&self.stats.requests_fwd);
            }
            None => {
                b.request = request;
                b.resolving = true;
                cell.branches.push(b);
                if let Some((host, port, secure)) = job {
                    self.dns_jobs.push(DnsJob {
                        cell: id,
                        branch: index,
                        host,
                        port,
                        secure,
                    });
                }
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
        let core = Arc::clone(&self.core);
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let Some(b) = cell.branches.get_mut(index) else {
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
                let family = core.local.addr(b.sock).map(|s| s.is_ipv4());
                b.targets = addrs
                    .into_iter()
                    .filter(|a| Some(a.is_ipv4()) == family)
                    .collect();
                b.targets.reverse(); // pop() takes the best
                if b.final_code.is_some() {
                    // Cancelled while resolving.
                } else if !self.start_next_target(now, id, index, out) {
                    crate::notice!("no usable address for branch {index}");
                    self.branch_failed(now, id, index, 503, out);
                }
            }
            Err(e) => {
                Stats::inc(&self.stats.dns_failures);
                crate::notice!("cannot resolve next hop: {e}");
                if let Some(b) = self.cell_mut(id).and_then(|c| c.branches.get_mut(index)) {
                    b.request.clear();
                }
                self.branch_failed(now, id, index, 503, out);
            }
        }
        self.refresh(id);
    }

    /// Starts (or restarts) a branch's client transaction on its next target; false when
    /// none is left.
    fn start_next_target(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        out: &mut Outbox,
    ) -> bool {
        let timers = self.cfg.timers;
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        let Some(b) = cell.branches.get_mut(index) else {
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
        b.uac = Some(uac);
        let fresh = b.key.is_none();
        b.key = Some(key.clone());
        if fresh {
            self.by_client
                .insert(key, (id, u16::try_from(index).unwrap_or(u16::MAX), false));
        }
        Stats::inc(&self.stats.requests_fwd);
        true
    }

    /// A reply from downstream: true when it belonged to one of our branches (handled),
    /// false to route it statelessly (e.g. a 2xx retransmission after the transaction ended).
    pub fn on_reply(&mut self, now: Instant, msg: &Message<'_>, out: &mut Outbox) -> bool {
        if self.by_client.is_empty() {
            return false;
        }
        let Ok(key) = Key::client(msg) else {
            return false;
        };
        let Some(&(id, index, is_cancel)) = self.by_client.get(&key) else {
            return false;
        };
        let index = usize::from(index);
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        let Some(b) = cell.branches.get_mut(index) else {
            return false;
        };
        let Some(dst) = b.dst else {
            return true;
        };
        let txn = if is_cancel {
            b.cancel.as_mut()
        } else {
            b.uac.as_mut()
        };
        let Some(txn) = txn else {
            return true;
        };
        let disposition = txn.handle_response(now, msg);
        while let Some(t) = txn.poll_transmit() {
            out.push(dst, |buf| buf.extend_from_slice(t.bytes));
        }
        while txn.poll_event().is_some() {}
        if disposition == Disposition::PassUp && !is_cancel {
            let code = msg.status().unwrap_or(500);
            self.process_reply(now, id, index, code, msg, out);
        }
        self.refresh(id);
        true
    }

    fn process_reply(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        code: u16,
        msg: &Message<'_>,
        out: &mut Outbox,
    ) {
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let replicate = cell.replicate;
        let final_sent = cell.final_sent;
        let on_reply = cell.routes.on_reply;
        let Some(b) = cell.branches.get_mut(index) else {
            return;
        };
        if b.final_code.is_some() {
            // Already given up locally (fr_inv_timer, CANCEL): the client transaction
            // has acknowledged it; nothing goes upstream.
            return;
        }
        b.last_code = code;
        if code < 200 {
            if b.cancel_pending {
                self.send_cancel(now, id, index, out);
            }
            if code == 100 || replicate || final_sent.is_some() {
                return;
            }
            if let Some(n) = on_reply {
                if !self.run_onreply(now, id, n, msg) {
                    return;
                }
            }
            self.forward_upstream(now, id, msg, out);
            return;
        }
        b.final_code = Some(code);
        if code < 300 {
            if !replicate {
                if let Some(n) = on_reply {
                    // An onreply_route can look at a 2xx but not stop it (every 2xx is relayed).
                    let _ = self.run_onreply(now, id, n, msg);
                }
                self.forward_upstream(now, id, msg, out);
                if final_sent.is_none() {
                    self.completed(id, code, Some(msg));
                }
            }
            self.cancel_others(now, id, Some(index), out);
            return;
        }
        b.reply = Some(msg.buf().to_vec());
        if let Some(n) = on_reply {
            let _ = self.run_onreply(now, id, n, msg);
        }
        if code >= 600 && final_sent.is_none() {
            self.cancel_others(now, id, Some(index), out);
        }
        // 503 from one target of a name: try the next one (RFC 3263 4.3).
        if code == 503 && self.has_more_targets(id, index) {
            if let Some(b) = self.cell_mut(id).and_then(|c| c.branches.get_mut(index)) {
                b.final_code = None;
                b.reply = None;
                if let Some(k) = b.key.take() {
                    // The new transaction reuses the branch id: keep the mapping.
                    b.key = Some(k);
                }
            }
            if self.start_next_target(now, id, index, out) {
                return;
            }
            if let Some(b) = self.cell_mut(id).and_then(|c| c.branches.get_mut(index)) {
                b.final_code = Some(503);
            }
        }
        self.check_completion(now, id, out);
    }

    fn has_more_targets(&self, id: CellId, index: usize) -> bool {
        self.cell(id)
            .and_then(|c| c.branches.get(index))
            .is_some_and(|b| !b.targets.is_empty())
    }

    /// A reply goes upstream through the server transaction, our Via removed.
    fn forward_upstream(&mut self, now: Instant, id: CellId, msg: &Message<'_>, out: &mut Outbox) {
        let mut edits = ser_parser::Edits::default();
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
                // A second 2xx after the server transaction ended: straight upstream.
                out.push(cell.reply_to, |buf| buf.extend_from_slice(&bytes));
            }
        }
        Stats::inc(&self.stats.replies_fwd);
        self.tmp = bytes;
    }

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
        let core = Arc::clone(&self.core);
        let Some(cell) = self.cell_mut(id) else {
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
        core.reply.write(req, src, &r, &mut bytes);
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        let sent = cell.uas.send_response(now, &bytes).is_ok();
        self.tmp = bytes;
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        if !sent {
            return false;
        }
        drain_uas(cell, out);
        let first_final = code >= 200 && cell.final_sent.is_none();
        Stats::inc(&self.stats.tm_local_replies);
        if first_final {
            // acc reports the reply as sent (its reason, our To-tag).
            let bytes = std::mem::take(&mut self.tmp);
            let reply = if self.cfg.acc.any() {
                ser_parser::parse(&bytes).ok()
            } else {
                None
            };
            self.completed(id, code, reply.as_ref());
            drop(reply);
            self.tmp = bytes;
        }
        true
    }

    /// `t_reply` from the script: a final (or provisional) for the cell.
    pub fn t_reply(
        &mut self,
        now: Instant,
        id: CellId,
        code: u16,
        reason: &str,
        out: &mut Outbox,
    ) -> bool {
        if self.cell(id).is_some_and(|c| c.final_sent.is_some()) {
            return false;
        }
        let ok = self.local_reply(now, id, code, reason, "", out);
        if ok && code >= 200 {
            self.cancel_others(now, id, None, out);
        }
        self.refresh(id);
        ok
    }

    /// The first final went upstream: remember it, account for it.
    fn completed(&mut self, id: CellId, code: u16, reply: Option<&Message<'_>>) {
        let acc = self.cfg.acc.clone();
        let stats = Arc::clone(&self.stats);
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let first = cell.final_sent.is_none();
        cell.final_sent = Some(code);
        let flags = cell.flags;
        // t_stats' completion status: counted when the transaction's final goes upstream
        // (once: further 2xx of a forked INVITE are relayed, not counted again).
        if first {
            let class = usize::from(code / 100).saturating_sub(2);
            if let Some(n) = stats.tm_completed.get(class) {
                Stats::inc(n);
            }
        }
        if acc.wants(flags, code) {
            let request = cell.uas.request().to_vec();
            let out_uri = cell.out_uri.clone();
            let parsed = ser_parser::parse(&request);
            if let Ok(req) = &parsed {
                acc::report_transaction(&acc, req, &out_uri, code, reply, flags);
            }
        }
    }

    /// Cancels every branch still pending but `except`.
    fn cancel_others(&mut self, now: Instant, id: CellId, except: Option<usize>, out: &mut Outbox) {
        let n = self.cell(id).map_or(0, |c| c.branches.len());
        for i in 0..n {
            if Some(i) != except {
                self.cancel_branch(now, id, i, out);
            }
        }
    }

    /// CANCEL for one branch (RFC 3261 9.1): at once if it has a provisional, else when one
    /// arrives; a branch still resolving just ends.
    fn cancel_branch(&mut self, now: Instant, id: CellId, index: usize, out: &mut Outbox) {
        let Some(b) = self.cell_mut(id).and_then(|c| c.branches.get_mut(index)) else {
            return;
        };
        if b.final_code.is_some() || b.cancel.is_some() || b.cancel_pending {
            return;
        }
        if b.uac.is_none() {
            b.resolving = false;
            b.final_code = Some(487);
            return;
        }
        if b.last_code == 0 {
            b.cancel_pending = true;
            return;
        }
        self.send_cancel(now, id, index, out);
    }

    fn send_cancel(&mut self, now: Instant, id: CellId, index: usize, out: &mut Outbox) {
        let timers = self.cfg.timers;
        let Some(b) = self.cell_mut(id).and_then(|c| c.branches.get_mut(index)) else {
            return;
        };
        b.cancel_pending = false;
        if b.cancel.is_some() {
            return;
        }
        let (Some(uac), Some(dst)) = (b.uac.as_ref(), b.dst) else {
            return;
        };
        if !uac.is_invite() || uac.final_code().is_some() {
            return;
        }
        let Some(cancel) = build_cancel(uac.request()) else {
            return;
        };
        let Ok(mut c) =
            ClientTransaction::start(now, &timers, &cancel, dst.transport.is_reliable())
        else {
            return;
        };
        while let Some(t) = c.poll_transmit() {
            out.push(dst, |buf| buf.extend_from_slice(t.bytes));
        }
        let key = c.key().clone();
        b.cancel = Some(c);
        b.cancel_key = Some(key.clone());
        self.by_client
            .insert(key, (id, u16::try_from(index).unwrap_or(u16::MAX), true));
    }

    /// An upstream CANCEL for the INVITE transaction `invite`: cancel its branches.
    pub fn cancel_invite(&mut self, now: Instant, invite: CellId, out: &mut Outbox) -> bool {
        let Some(cell) = self.cell_mut(invite) else {
            return false;
        };
        if cell.final_sent.is_some() {
            return true;
        }
        cell.canceled = true;
        self.cancel_others(now, invite, None, out);
        self.check_completion(now, invite, out);
        self.refresh(invite);
        true
    }

    /// The INVITE transaction a CANCEL cancels, if we have it.
    pub fn find_invite_for_cancel(&self, msg: &Message<'_>) -> Option<CellId> {
        let key = Key::cancelled_invite(msg).ok()?;
        let id = *self.by_server.get(&key)?;
        self.cell(id).map(|_| id)
    }

    /// A branch ended without a reply of its own (timeout, transport error, no address).
    fn branch_failed(
        &mut self,
        now: Instant,
        id: CellId,
        index: usize,
        code: u16,
        out: &mut Outbox,
    ) {
        if let Some(b) = self.cell_mut(id).and_then(|c| c.branches.get_mut(index)) {
            if b.final_code.is_some() {
                return;
            }
            b.final_code = Some(code);
            b.resolving = false;
        }
        self.check_completion(now, id, out);
    }

    /// Every branch has a final: run the failure route, or send the best response.
    fn check_completion(&mut self, now: Instant, id: CellId, out: &mut Outbox) {
        let Some(cell) = self.cell(id) else {
            return;
        };
        if cell.final_sent.is_some() || cell.replicate || !cell.relayed {
            return;
        }
        if cell.branches.iter().any(|b| b.final_code.is_none()) {
            return;
        }
        if !cell.canceled && self.run_failure(now, id, out) {
            return;
        }
        self.send_best(now, id, out);
    }

    /// RFC 3261 16.7 step 6: the response to send when every branch failed.
    fn send_best(&mut self, now: Instant, id: CellId, out: &mut Outbox) {
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

    fn forward_stored(&mut self, now: Instant, id: CellId, reply: &[u8], out: &mut Outbox) {
        let Ok(msg) = ser_parser::parse(reply) else {
            self.local_reply(now, id, 500, reason_of(500), "", out);
            return;
        };
        let code = msg.status().unwrap_or(500);
        self.forward_upstream(now, id, &msg, out);
        self.completed(id, code, Some(&msg));
    }

    /// Runs the failure route (or SER 0.8's negative reply route) of a cell whose branches
    /// all failed. True when the transaction goes on (new branches) or was answered there.
    fn run_failure(&mut self, now: Instant, id: CellId, out: &mut Outbox) -> bool {
        let Some(cell) = self.cell_mut(id) else {
            return false;
        };
        let (kind, n) = if let Some(n) = cell.routes.on_failure.take() {
            (RouteKind::Failure, n)
        } else if let Some(n) = cell.routes.on_negative.take() {
            (RouteKind::Reply, n)
        } else {
            return false;
        };
        let request = cell.uas.request().to_vec();
        let arrival = cell.arrival;
        let flags = cell.flags;
        let routes = cell.routes;
        let before = cell.branches.len();
        let script = Arc::clone(&cell.script.0);
        let Ok(msg) = ser_parser::parse(&request) else {
            return false;
        };
        let core = Arc::clone(&self.core);
        let stats = Arc::clone(&self.stats);
        let mut sc = std::mem::take(&mut self.fscratch);
        {
            let mut m = MsgCtx::new(&core, &stats, &msg, arrival, &mut sc);
            m.flags = flags;
            m.t = TState {
                now: Some(now),
                cell: Some(id),
                routes,
                kind: RouteKindDefault(kind),
            };
            m.tm = Some(self);
            script.run(kind, n, &mut m);
            if kind == RouteKind::Reply && !m.s.branches.is_empty() {
                // SER 0.8: branches a reply route appends are relayed when it ends.
                m.t_relay_in_failure();
            }
            let flags = m.flags;
            let routes = m.t.routes;
            if let Some(cell) = self.cell_mut(id) {
                cell.flags = flags;
                cell.routes = routes;
            }
        }
        out.append(&mut sc.out);
        sc.clear();
        self.fscratch = sc;
        let Some(cell) = self.cell(id) else {
            return false;
        };
        cell.final_sent.is_some()
            || cell
                .branches
                .get(before..)
                .is_some_and(|new| new.iter().any(|b| b.final_code.is_none()))
    }

    /// `onreply_route[n]` over a reply; false when it dropped the reply.
    fn run_onreply(&mut self, now: Instant, id: CellId, n: u32, msg: &Message<'_>) -> bool {
        let Some(cell) = self.cell(id) else {
            return true;
        };
        let arrival = cell.arrival;
        let flags = cell.flags;
        let script = Arc::clone(&cell.script.0);
        let core = Arc::clone(&self.core);
        let stats = Arc::clone(&self.stats);
        let mut sc = std::mem::take(&mut self.fscratch);
        let outcome = {
            let mut m = MsgCtx::new(&core, &stats, msg, arrival, &mut sc);
            m.flags = flags;
            m.t = TState {
                now: Some(now),
                cell: Some(id),
                routes: Routes::default(),
                kind: RouteKindDefault(RouteKind::OnReply),
            };
            script.run(RouteKind::OnReply, n, &mut m)
        };
        sc.clear();
        self.fscratch = sc;
        !matches!(outcome, ser_script::RunOutcome::Dropped)
    }

    /// The earliest deadline of any cell.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if self.is_live(at, slot, generation) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    fn is_live(&self, at: Instant, slot: u32, generation: u32) -> bool {
        self.slots.get(slot as usize).is_some_and(|s| {
            s.generation == generation && s.cell.as_ref().is_some_and(|c| c.armed == Some(at))
        })
    }

    /// Drives every cell whose deadline has come.
    pub fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.is_live(at, slot, generation) {
                continue;
            }
            let id = CellId { slot, generation };
            self.drive(now, id, out);
            self.refresh(id);
        }
    }

    fn drive(&mut self, now: Instant, id: CellId, out: &mut Outbox) {
        let mut timeouts: smallvec::SmallVec<[(usize, TimerName); 4]> = smallvec::SmallVec::new();
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        cell.armed = None;
        if cell.uas.next_deadline().is_some_and(|d| d <= now) {
            cell.uas.handle_timeout(now);
            drain_uas(cell, out);
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
                    self.branch_failed(now, id, i, 408, out);
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
                    self.branch_failed(now, id, i, 408, out);
                }
            }
        }
        if expired {
            // A transaction that never completed (t_newtran without a reply): drop it.
            crate::info!("transaction expired without completing; dropped");
            self.remove(id);
        }
    }

    /// After any change: drop finished transactions (and their keys), re-index the deadline.
    fn refresh(&mut self, id: CellId) {
        let Some(cell) = self.cell_mut(id) else {
            return;
        };
        let mut gone_keys: smallvec::SmallVec<[Key; 2]> = smallvec::SmallVec::new();
        if cell.uas.is_terminated() {
            if let Some(k) = cell.uas_key.take() {
                gone_keys.push(k);
            }
        }
        let mut pending = false;
        for b in &mut cell.branches {
            if b.uac.as_ref().is_some_and(|u| u.is_terminated()) {
                b.uac = None;
                if let Some(k) = b.key.take() {
                    gone_keys.push(k);
                }
                if b.final_code.is_none() {
                    // Terminated without a final reaching the TU (transport error).
                    b.final_code = Some(408);
                }
            }
            if b.cancel.as_ref().is_some_and(|c| c.is_terminated()) {
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
        let deadline = if done {
            None
        } else {
            let mut d = Some(cell.expires);
            let mut take = |x: Option<Instant>| {
                if let Some(x) = x {
                    d = Some(d.map_or(x, |cur: Instant| cur.min(x)));
                }
            };
            take(cell.uas.next_deadline());
            for b in &cell.branches {
                take(b.uac.as_ref().and_then(|u| u.next_deadline()));
                take(b.cancel.as_ref().and_then(|u| u.next_deadline()));
            }
            d
        };
        let rearm = deadline != cell.armed;
        if rearm {
            cell.armed = deadline;
        }
        for k in gone_keys {
            if k.is_client() {
                self.by_client.remove(&k);
            } else {
                self.by_server.remove(&k);
            }
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
        if let (true, Some(at)) = (rearm, deadline) {
            self.timers.push(Reverse((at, id.slot, id.generation)));
        }
        if self.timers.len() > 2 * self.live + 64 {
            let items = std::mem::take(&mut self.timers).into_vec();
            let live: Vec<_> = items
                .into_iter()
                .filter(|&Reverse((at, slot, generation))| self.is_live(at, slot, generation))
                .collect();
            self.timers = BinaryHeap::from(live);
        }
    }

    fn remove(&mut self, id: CellId) {
        let Some(s) = self.slots.get_mut(id.slot as usize) else {
            return;
        };
        if s.generation != id.generation {
            return;
        }
        let Some(cell) = s.cell.take() else {
            return;
        };
        s.generation = s.generation.wrapping_add(1);
        self.free.push(id.slot);
        self.live = self.live.saturating_sub(1);
        if let Some(k) = &cell.uas_key {
            self.by_server.remove(k);
        }
        for b in &cell.branches {
            if let Some(k) = &b.key {
                self.by_client.remove(k);
            }
            if let Some(k) = &b.cancel_key {
                self.by_client.remove(k);
            }
        }
        if cell.waiting {
            self.stats.tm_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        self.stats
            .tm_current
            .store(self.live as u64, Ordering::Relaxed);
    }
}

fn drain_uas(cell: &mut Cell, out: &mut Outbox) {
    let dst = cell.reply_to;
    while let Some(t) = cell.uas.poll_transmit() {
        out.push(dst, |buf| buf.extend_from_slice(t.bytes));
    }
    while cell.uas.poll_event().is_some() {}
}

/// The CANCEL for an INVITE we sent (RFC 3261 9.1): same Request-URI, our Via only (same
/// branch), Route, From, To, Call-ID, CSeq number; method CANCEL.
pub fn build_cancel(invite: &[u8]) -> Option<Vec<u8>> {
    use ser_parser::HeaderName;
    let msg = ser_parser::parse(invite).ok()?;
    let ruri = msg.request_uri()?;
    let mut out = Vec::with_capacity(invite.len() / 2);
    out.extend_from_slice(b"CANCEL ");
    out.extend_from_slice(ruri.as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    let mut via_done = false;
    for h in msg.headers() {
        let keep = match h.name {
            HeaderName::Via => {
                if via_done {
                    continue;
                }
                via_done = true;
                // Only the first value of the first Via line (ours).
                let v = h.value;
                let end = first_value_end(v);
                out.extend_from_slice(b"Via: ");
                out.extend_from_slice(v.get(..end).unwrap_or(v).trim_ascii());
                out.extend_from_slice(b"\r\n");
                continue;
            }
            HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::Route => true,
            HeaderName::CSeq => {
                let n = msg.cseq().ok()?.number;
                out.extend_from_slice(format!("CSeq: {n} CANCEL\r\n").as_bytes());
                continue;
            }
            _ => false,
        };
        if keep {
            out.extend_from_slice(h.raw_name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    Some(out)
}

/// End of the first comma-separated value of a header (commas in quotes don't count).
fn first_value_end(v: &[u8]) -> usize {
    let mut quoted = false;
    for (i, &c) in v.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b',' if !quoted => return i,
            _ => {}
        }
    }
    v.len()
}

/// Formats an address for a URI host.
pub fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    }
}

#[cfg(test)]
mod tests;
