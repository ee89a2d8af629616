//! The glue between the script VM and SIP: the typed actions and conditions the script is
//! compiled to, and the per-message context the VM runs them against.
//!
//! `Action` and `Cond` are built once, at load time, by the modules' binders (regexes compiled,
//! addresses parsed, names resolved); the VM calls `MsgCtx::call`/`test` with them. Nothing in
//! here touches a socket: outgoing datagrams are written into the shard's `Outbox`, which the
//! server hands to the shard runtime after the script has run. Host-name destinations that need
//! DNS at run time are queued as `PendingSend`s for the blocking pool.

use std::net::IpAddr;
use std::sync::Arc;

use ser_parser::{Edits, Message};
use ser_script::{Exec, Program};

use crate::core::Core;
use crate::sip::{Arrival, Outbox};
use crate::stats::Stats;

pub mod uri;

/// A compiled script: shared, read-only, by every shard.
pub type Script = Program<Action, Cond>;

/// A host given to `forward`/`send`.
#[derive(Debug, Clone)]
pub enum HostArg {
    /// An address, or a name resolved when the script was loaded.
    Addrs(Vec<IpAddr>),
    /// A name that did not resolve when the script was loaded: resolved (off the shard)
    /// each time it is used, so a script naming a host that is down at start still loads.
    Name(String),
    /// `uri:host`: the host of the current Request-URI.
    UriHost,
}

#[derive(Debug, Clone, Copy)]
pub enum PortArg {
    Port(u16),
    /// `uri:port`, or no port given: the Request-URI's port, 5060 when it has none.
    UriPort,
    Default,
}

/// An address test for `src_ip` / `dst_ip`.
#[derive(Debug, Clone)]
pub enum AddrMatch {
    Net(IpAddr, u8),
    Any(Vec<IpAddr>),
    Myself,
}

impl AddrMatch {
    pub fn matches(&self, ip: IpAddr, core: &Core) -> bool {
        match self {
            Self::Net(net, len) => in_net(ip, *net, *len),
            Self::Any(list) => list.contains(&unmap(ip)),
            Self::Myself => core.local.is_my_ip(ip),
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (unmap(ip), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    }
}

/// Every action a script can call, with its arguments already checked and converted.
#[derive(Debug)]
pub enum Action {
    // core
    Forward {
        host: HostArg,
        port: PortArg,
    },
    Send {
        host: HostArg,
        port: PortArg,
    },
    Log {
        level: i32,
        msg: String,
    },
    LenGt(Option<usize>),
    SetFlag(u32),
    ResetFlag(u32),
    IsFlagSet(u32),
    Rewrite(uri::Rewrite),
    RevertUri,
    AppendBranch(Option<String>),
    // sl
    SlSendReply {
        code: u16,
        reason: String,
    },
    SlReplyError,
    // maxfwd
    MaxFwd(u32),
    // textops
    Search(regex::bytes::Regex),
    AppendHf(String),
    AppendUriHf(String, String),
    IsPresentHf(String),
    // rr
    RecordRoute,
    LooseRoute,
    RewriteFromRoute,
    // tm
    /// `t_relay()` (host None: the destination set) and `t_relay_to_udp(host, port)`.
    TRelay {
        host: Option<HostArg>,
        port: PortArg,
    },
    TNewtran,
    TReply {
        code: u16,
        reason: String,
    },
    TOnNegative(u32),
    TOnFailure(u32),
    TOnBranch(u32),
    TOnReply(u32),
    TReplicate {
        host: HostArg,
        port: PortArg,
    },
    // acc
    AccRequest(String),
    // exec
    Exec {
        kind: crate::modules::exec::ExecKind,
        cmd: String,
    },
    // auth, auth_db, group, uri
    Auth(crate::modules::auth::AuthAction),
    // registrar (save, lookup)
    Registrar(crate::modules::registrar::Op),
}

/// Every comparison a script can make.
#[derive(Debug)]
pub enum Cond {
    MethodEq(String),
    MethodRe(regex::bytes::Regex),
    UriEq(String),
    UriRe(regex::bytes::Regex),
    UriMyself,
    /// `msg:len OP n` (n = None: `max_len`).
    MsgLen(ser_script::CmpOp, Option<usize>),
    SrcIp(AddrMatch),
    DstIp(AddrMatch),
    Not(Box<Cond>),
}

/// Per-shard buffers reused for every message: no allocation per message once warm.
#[derive(Debug, Default)]
pub struct Scratch {
    pub edits: Edits,
    pub uri: String,
    pub branches: Vec<String>,
    pub out: Outbox,
    pub tmp: Vec<u8>,
    /// Where the request goes instead of its Request-URI (set by `loose_route` to the next
    /// Route); empty when unset.
    pub dst_uri: String,
}

impl Scratch {
    pub fn clear(&mut self) {
        self.dst_uri.clear();
        self.edits.clear();
        self.uri.clear();
        self.branches.clear();
        self.out.clear();
        self.tmp.clear();
    }
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
    /// This run's transaction state (t_newtran/t_relay, armed routes).
    pub t: crate::tm::TState,
    /// The runner can pause the script (exec); when false, exec actions fail.
    pub can_suspend: bool,
    /// Off-shard work an action asked for (an exec program, a database query); the runner
    /// takes it when the run suspends and resumes the run with its result.
    pub suspend: Option<Suspend>,
    /// Who the request proved to be (a successful www_authorize/proxy_authorize).
    pub auth: Option<crate::modules::auth::AuthUser>,
}

/// Where suspended work runs.
pub enum Pool {
    /// The shard runtime's blocking pool (exec programs).
    Blocking,
    /// The database's own workers (a slow database must not hold the blocking pool).
    Db(Arc<crate::db::Db>),
}

/// Work an action hands off the shard; its [`Resumed`] finishes the action on the shard.
pub struct Suspend {
    pub pool: Pool,
    pub work: Box<dyn FnOnce() -> Resumed + Send + 'static>,
}

/// The result of suspended work, applied to the message's context when the run resumes; the
/// action's return value comes out.
pub enum Resumed {
    Exec(
        crate::modules::exec::ExecKind,
        crate::modules::exec::ExecOutput,
    ),
    /// A module's own result: a closure that applies it.
    Apply(Box<dyn for<'x, 'y> FnOnce(&mut MsgCtx<'x, 'y>) -> i32 + Send + 'static>),
    /// The work could not even start (database queue full, ...): the action fails with 500.
    Failed(String),
}

impl std::fmt::Debug for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resumed::Exec(k, _) => write!(f, "Exec({k:?})"),
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
    branches: Vec<String>,
    edits: Edits,
    dst_uri: String,
    flags: u32,
    last_error: Option<SipError>,
    maxfwd_result: Option<i32>,
    t: crate::tm::TState,
    auth: Option<crate::modules::auth::AuthUser>,
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
            t: crate::tm::TState::default(),
            can_suspend: false,
            suspend: None,
            auth: None,
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
            flags: self.flags,
            last_error: self.last_error,
            maxfwd_result: self.maxfwd_result,
            t: self.t,
            auth: self.auth.take(),
        }
    }

    /// Finishes the action that suspended, with its work's result.
    pub fn apply_resumed(&mut self, r: Resumed) -> i32 {
        match r {
            Resumed::Exec(kind, out) => self.exec_result(kind, &out),
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
        self.flags = st.flags;
        self.last_error = st.last_error;
        self.maxfwd_result = st.maxfwd_result;
        self.t = st.t;
        self.auth = st.auth;
    }

    /// The Request-URI as the script sees it now.
    pub fn current_uri(&self) -> &str {
        if self.uri_changed {
            &self.s.uri
        } else {
            self.msg.request_uri().unwrap_or("")
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

impl Exec<Action, Cond> for MsgCtx<'_, '_> {
    fn call(&mut self, action: &Action) -> i32 {
        match action {
            Action::Forward { host, port } => self.forward(host, *port, true),
            Action::Send { host, port } => self.forward(host, *port, false),
            Action::Log { level, msg } => {
                crate::log_at!(*level, "{}", msg);
                1
            }
            Action::LenGt(n) => {
                let limit = n.unwrap_or(self.core.max_len);
                if self.msg.buf().len() > limit {
                    1
                } else {
                    -1
                }
            }
            Action::SetFlag(f) => {
                self.flags |= 1 << f;
                1
            }
            Action::ResetFlag(f) => {
                self.flags &= !(1 << f);
                1
            }
            Action::IsFlagSet(f) => {
                if self.flags & (1 << f) != 0 {
                    1
                } else {
                    -1
                }
            }
            Action::Rewrite(rw) => self.rewrite(rw),
            Action::RevertUri => {
                self.uri_changed = false;
                self.s.uri.clear();
                1
            }
            Action::AppendBranch(uri) => {
                let u = match uri {
                    Some(u) => u.clone(),
                    None => self.current_uri().to_string(),
                };
                if self.s.branches.len() >= crate::modules::core::MAX_BRANCHES {
                    return self.fail(500, "Too Many Branches");
                }
                self.s.branches.push(u);
                1
            }
            Action::SlSendReply { code, reason } => self.sl_send_reply(*code, reason.as_bytes()),
            Action::SlReplyError => {
                let e = self.last_error.unwrap_or(SipError {
                    code: 500,
                    reason: "Server Internal Error",
                });
                self.sl_send_reply(e.code, e.reason.as_bytes())
            }
            Action::MaxFwd(limit) => self.maxfwd(*limit),
            Action::Search(re) => {
                if re.is_match(self.msg.buf()) {
                    1
                } else {
                    -1
                }
            }
            Action::AppendHf(text) => {
                let line = text.trim_end_matches(['\r', '\n']);
                self.s.edits.append_header(self.msg, line.as_bytes());
                1
            }
            Action::AppendUriHf(pre, post) => {
                let line = format!("{}{}{}", pre, self.current_uri(), post);
                let line = line.trim_end_matches(['\r', '\n']);
                self.s.edits.append_header(self.msg, line.as_bytes());
                1
            }
            Action::IsPresentHf(name) => {
                if crate::modules::textops::has_header(self.msg, name) {
                    1
                } else {
                    -1
                }
            }
            Action::RecordRoute => self.record_route(),
            Action::LooseRoute => self.loose_route(),
            Action::RewriteFromRoute => self.rewrite_from_route(),
            Action::TRelay { .. }
            | Action::TNewtran
            | Action::TReply { .. }
            | Action::TOnNegative(_)
            | Action::TOnFailure(_)
            | Action::TOnBranch(_)
            | Action::TOnReply(_)
            | Action::TReplicate { .. }
            | Action::AccRequest(_) => self.tm_call(action),
            Action::Exec { kind, cmd } => self.exec(*kind, cmd),
            Action::Auth(a) => self.auth_call(a),
            Action::Registrar(op) => self.registrar(op),
        }
    }

    fn test(&mut self, cond: &Cond) -> bool {
        match cond {
            Cond::MethodEq(m) => self
                .msg
                .method()
                .is_some_and(|x| x.as_str().eq_ignore_ascii_case(m)),
            Cond::MethodRe(re) => self
                .msg
                .method()
                .is_some_and(|x| re.is_match(x.as_str().as_bytes())),
            Cond::UriEq(u) => self.current_uri().eq_ignore_ascii_case(u),
            Cond::UriRe(re) => re.is_match(self.current_uri().as_bytes()),
            Cond::UriMyself => match ser_parser::parse_uri(self.current_uri()) {
                Ok(u) => self.core.local.is_myself(&u.host, u.host_str, u.port),
                Err(_) => false,
            },
            Cond::MsgLen(op, n) => {
                use ser_script::CmpOp;
                let len = self.msg.buf().len();
                let n = n.unwrap_or(self.core.max_len);
                match op {
                    CmpOp::Eq => len == n,
                    CmpOp::Ne => len != n,
                    CmpOp::Gt => len > n,
                    CmpOp::Ge => len >= n,
                    CmpOp::Lt => len < n,
                    CmpOp::Le => len <= n,
                    CmpOp::Match => false,
                }
            }
            Cond::SrcIp(m) => m.matches(self.at.src.ip(), self.core),
            Cond::DstIp(m) => m.matches(self.at.local.ip(), self.core),
            Cond::Not(c) => !self.test(c),
        }
    }
}

/// Runs the request route of `script` over one request.
pub fn run_request(script: &Arc<Script>, ctx: &mut MsgCtx<'_, '_>) -> ser_script::RunOutcome {
    script.run(ser_script::RouteKind::Request, 0, ctx)
}
