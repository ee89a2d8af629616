//! The per-message context the script runs against: [`MsgCtx`] (the message, where it came
//! from, the script's edits and destination set, flags, the transaction state, who the request
//! proved to be), the per-shard [`Scratch`] buffers, and what a run that pauses for off-shard
//! work (exec, a database, rtpengine) keeps ([`SavedCtx`], [`Suspend`], [`Resumed`]).
//!
//! The actions are the other files of `modules`, each an `impl MsgCtx` block of its module.
//! Nothing in here touches a socket: outgoing messages are written into the shard's `Outbox`,
//! which the server hands to the shard runtime after the script has run.

use std::sync::Arc;

use ser_parser::{Edits, Message};

use crate::core::Core;
use crate::sip::{Arrival, Dest, Outbox};
use crate::stats::Stats;

/// Per-shard buffers reused for every message: no allocation per message once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    pub edits: Edits,
    pub uri: String,
    /// The destination set beyond the Request-URI (`append_branch`, `lookup`).
    pub branches: Vec<Branch>,
    pub out: Outbox,
    pub tmp: Vec<u8>,
    /// Where the request goes instead of its Request-URI (set by `loose_route` to the next
    /// Route); empty when unset.
    pub dst_uri: String,
    /// The fixed destination of the Request-URI's branch: the flow a binding was registered
    /// over (`lookup` of a contact that registered over a stream connection). It wins over
    /// the next hop of the URI; a script action that names a host does not use it.
    pub dst: Option<Dest>,
    /// Header lines for the replies this server makes to the request itself (textops'
    /// `append_to_reply`): whole lines, each ending in CRLF.
    pub reply_hfs: String,
}

/// One branch of the destination set beyond the Request-URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub uri: String,
    /// Where it goes instead of the next hop of `uri` (see [`Scratch::dst`]).
    pub dst: Option<Dest>,
}

impl Branch {
    /// A branch that goes where its URI says.
    pub fn uri(uri: String) -> Self {
        Self { uri, dst: None }
    }
}

impl Scratch {
    pub fn clear(&mut self) {
        self.dst_uri.clear();
        self.dst = None;
        self.edits.clear();
        self.uri.clear();
        self.branches.clear();
        self.out.clear();
        self.tmp.clear();
        self.reply_hfs.clear();
    }
}

/// Who the request proved to be: set by a successful authorize, read by `is_user`,
/// `check_to`, `check_from`, `is_in_group` and `is_user_in("Credentials", ..)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthUser {
    /// The user part of the digest username (before any `@`).
    pub user: String,
    /// The realm the credentials were checked for.
    pub realm: String,
}

/// The error the last failing action left for `sl_reply_error`.
#[derive(Debug, Clone, Copy)]
pub struct SipError {
    pub code: u16,
    pub reason: &'static str,
}

/// One request (or reply) on its way through the script.
pub struct MsgCtx<'a, 'm> {
    pub core: &'a Core,
    pub stats: &'a Stats,
    pub msg: &'a Message<'m>,
    /// Where it came in (transport, peer, our socket, connection, shard).
    pub at: Arrival,
    pub s: &'a mut Scratch,
    /// True once the script rewrote the Request-URI (`s.uri` holds the new one).
    pub uri_changed: bool,
    pub flags: u32,
    pub last_error: Option<SipError>,
    /// What `mf_process_maxfwd_header` returned the first time: a second call (from another
    /// route block) must neither decrement again nor add a second header.
    pub maxfwd_result: Option<i32>,
    /// The shard's transaction layer, when the script may use it.
    pub tm: Option<&'a mut crate::modules::tm::TmShard>,
    /// The shard's pike table (`pike_check_req`), when the run is on a shard.
    pub pike: Option<&'a mut crate::pike::Local>,
    /// This run's transaction state (t_newtran/t_relay, armed routes).
    pub t: crate::tm::TState,
    /// The runner can pause the script (exec); when false, exec actions fail.
    pub can_suspend: bool,
    /// Off-shard work an action asked for (an exec program, a database query); the runner
    /// takes it when the run suspends and resumes the run with its result.
    pub suspend: Option<Suspend>,
    /// Who the request proved to be (a successful www_authorize/proxy_authorize).
    pub auth: Option<AuthUser>,
    /// The socket `force_send_socket` (or `loose_route` over a double Record-Route) chose for
    /// what this message sends next (an index into `Local::sockets`).
    pub force_socket: Option<usize>,
    /// `record_route()` ran: each copy of the request sent from now on gets our
    /// Record-Route, written once its socket is known (see `rr`).
    pub record_route: Option<super::rr::RecordRoute>,
    /// What a module keeps for this request's transaction before it has one (the
    /// dispatcher's candidates); `t_relay`/`t_newtran` hand it to the transaction.
    pub attach: Option<crate::tm::Attachment>,
    /// What nathelper's functions did to this message (force_rport, fix_nated_register, ...).
    pub nat: super::nathelper::NatMarks,
}

/// Where suspended work runs.
pub enum Pool {
    /// The shard runtime's blocking pool (exec programs).
    Blocking,
    /// The database's own workers (a slow database must not hold the blocking pool).
    Db(Arc<crate::db::Db>),
}

/// Work an action hands off the shard; its [`Resumed`] finishes the action on the shard.
pub enum Suspend {
    /// `work` runs in `pool` and returns the result.
    Work {
        pool: Pool,
        work: Box<dyn FnOnce() -> Resumed + Send + 'static>,
    },
    /// A service with a thread of its own does the work (rtpengine's client): the function
    /// gets the callback that hands the result back to the shard, and only queues the work.
    Service(Box<dyn FnOnce(ResumeFn) + Send + 'static>),
}

/// Hands the result of a [`Suspend::Service`] back to the shard (callable from any thread).
pub type ResumeFn = Box<dyn FnOnce(Resumed) + Send + 'static>;

/// The result of suspended work, applied to the message's context when the run resumes; the
/// action's return value comes out.
pub enum Resumed {
    /// A module's own result: a closure that applies it.
    Apply(Box<dyn for<'x, 'y> FnOnce(&mut MsgCtx<'x, 'y>) -> i32 + Send + 'static>),
    /// The work could not even start (database queue full, ...): the action fails with 500.
    Failed(String),
}

impl std::fmt::Debug for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resumed::Apply(_) => f.write_str("Apply"),
            Resumed::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// What a suspended run keeps of its message's context (the message itself is kept as bytes
/// and parsed again when the run resumes).
#[derive(Debug)]
pub struct SavedCtx {
    uri_changed: bool,
    uri: String,
    branches: Vec<Branch>,
    edits: Edits,
    dst_uri: String,
    dst: Option<Dest>,
    flags: u32,
    last_error: Option<SipError>,
    maxfwd_result: Option<i32>,
    t: crate::tm::TState,
    auth: Option<AuthUser>,
    force_socket: Option<usize>,
    record_route: Option<super::rr::RecordRoute>,
    attach: Option<crate::tm::Attachment>,
    nat: super::nathelper::NatMarks,
    reply_hfs: String,
}

impl<'a, 'm> MsgCtx<'a, 'm> {
    pub fn new(
        core: &'a Core,
        stats: &'a Stats,
        msg: &'a Message<'m>,
        at: Arrival,
        s: &'a mut Scratch,
    ) -> Self {
        s.clear();
        Self {
            core,
            stats,
            msg,
            at,
            s,
            uri_changed: false,
            flags: 0,
            last_error: None,
            maxfwd_result: None,
            tm: None,
            pike: None,
            t: crate::tm::TState::default(),
            can_suspend: false,
            suspend: None,
            auth: None,
            force_socket: None,
            record_route: None,
            attach: None,
            nat: Default::default(),
        }
    }

    /// Takes what the run has built so far, to go on later with [`Self::restore`].
    pub fn save(&mut self) -> SavedCtx {
        SavedCtx {
            uri_changed: self.uri_changed,
            uri: std::mem::take(&mut self.s.uri),
            branches: std::mem::take(&mut self.s.branches),
            edits: std::mem::take(&mut self.s.edits),
            dst_uri: std::mem::take(&mut self.s.dst_uri),
            dst: self.s.dst.take(),
            flags: self.flags,
            last_error: self.last_error,
            maxfwd_result: self.maxfwd_result,
            t: self.t,
            auth: self.auth.take(),
            force_socket: self.force_socket,
            record_route: self.record_route,
            attach: self.attach.take(),
            nat: self.nat,
            reply_hfs: std::mem::take(&mut self.s.reply_hfs),
        }
    }

    /// Finishes the action that suspended, with its work's result.
    pub fn apply_resumed(&mut self, r: Resumed) -> i32 {
        match r {
            Resumed::Apply(f) => f(self),
            Resumed::Failed(why) => {
                crate::error!("{why}");
                self.fail(500, "Server Internal Error")
            }
        }
    }

    /// Puts back what [`Self::save`] took (over the same message bytes).
    pub fn restore(&mut self, st: SavedCtx) {
        self.uri_changed = st.uri_changed;
        self.s.uri = st.uri;
        self.s.branches = st.branches;
        self.s.edits = st.edits;
        self.s.dst_uri = st.dst_uri;
        self.s.dst = st.dst;
        self.flags = st.flags;
        self.last_error = st.last_error;
        self.maxfwd_result = st.maxfwd_result;
        self.t = st.t;
        self.auth = st.auth;
        self.force_socket = st.force_socket;
        self.record_route = st.record_route;
        self.attach = st.attach;
        self.nat = st.nat;
        self.s.reply_hfs = st.reply_hfs;
    }

    /// The Request-URI as the script sees it now.
    pub fn current_uri(&self) -> &str {
        if self.uri_changed {
            &self.s.uri
        } else {
            self.msg.request_uri().unwrap_or("")
        }
    }

    /// [`Self::current_uri`] parsed: the strict parse's Request-URI while the script has not
    /// rewritten it, so that `uri==myself`, `lookup` and the like do not parse it again.
    pub fn current_uri_parsed(&self) -> Result<ser_parser::Uri<'_>, ser_parser::ParseError> {
        match (self.uri_changed, self.msg.parsed_request_uri()) {
            (false, Some(u)) => Ok(u),
            _ => ser_parser::parse_uri(self.current_uri()),
        }
    }

    /// Where the request goes next: the destination URI `loose_route` set, else the
    /// Request-URI as the script sees it now.
    pub fn next_hop_uri(&self) -> &str {
        if self.s.dst_uri.is_empty() {
            self.current_uri()
        } else {
            &self.s.dst_uri
        }
    }

    pub fn fail(&mut self, code: u16, reason: &'static str) -> i32 {
        self.last_error = Some(SipError { code, reason });
        -1
    }
}
