//! The script's compiled form on SIP: [`Action`] and [`Cond`], built once at load time by the
//! modules' binders (regexes compiled, addresses parsed, names resolved), and their dispatch
//! (`impl Exec for MsgCtx`): the VM calls `call`/`test`, each goes to its module's code.
//!
//! [`Script`] is a compiled script, shared read-only by every shard.

use std::net::IpAddr;
use std::sync::Arc;

use ser_script::{Exec, Program};

use super::ctx::{Branch, MsgCtx, SipError};
use super::rewrite::Rewrite;
use crate::core::Core;
use crate::sip::Transport;

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
    /// `forward(host, port)`; `forward_udp`/`forward_tcp`/`forward_tls` name the transport.
    Forward {
        host: HostArg,
        port: PortArg,
        transport: Option<Transport>,
    },
    Send {
        host: HostArg,
        port: PortArg,
    },
    /// `force_send_socket([proto:]addr[:port])`: our socket for what this message sends next.
    ForceSendSocket(super::core::SocketSpec),
    Log {
        level: i32,
        msg: String,
    },
    LenGt(Option<usize>),
    SetFlag(u32),
    ResetFlag(u32),
    IsFlagSet(u32),
    Rewrite(Rewrite),
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
    /// `append_to_reply(text)`: a header line for the request's local replies.
    AppendToReply(String),
    AppendUriHf(String, String),
    IsPresentHf(String),
    // rr
    /// `record_route()`, `;lr=on` when rr's `enable_full_lr` is set.
    RecordRoute {
        full_lr: bool,
    },
    LooseRoute,
    RewriteFromRoute,
    // tm
    /// `t_relay()` (host None: the destination set), `t_relay_to(host, port)`, and
    /// `t_relay_to_udp`/`_tcp`/`_tls(host, port)`, which name the transport.
    TRelay {
        host: Option<HostArg>,
        port: PortArg,
        transport: Option<Transport>,
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
        kind: super::exec::ExecKind,
        cmd: String,
    },
    // auth, auth_db, group, uri
    Auth(super::auth::AuthAction, Arc<super::auth::AuthSettings>),
    // registrar (save, lookup)
    Registrar(super::registrar::Op),
    /// jabber's `jab_send_message()`.
    #[cfg(feature = "xmpp")]
    JabSendMessage,
    /// `pike_check_req()`, with pike's parameters.
    Pike(crate::pike::Config),
    /// `rl_check()` (None: the pipe of the method's queue), `rl_check("id")`,
    /// `rl_check_pipe(["id"])`.
    RlCheck(Option<usize>),
    // dispatcher
    #[cfg(feature = "dispatcher")]
    Dispatcher(super::dispatcher::DsOp),
    // rtpengine
    #[cfg(feature = "rtpengine")]
    Rtpengine(super::rtpengine::RtpOp),
    // msilo (m_store, m_dump)
    #[cfg(feature = "msilo")]
    Msilo(super::msilo::MsiloOp),
    // nathelper
    Nat(super::nathelper::NatOp),
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
    /// `proto == udp|tcp|tls|ws|wss`: the transport the message came over.
    Proto(Transport),
    /// `af == inet|inet6`: the address family it came from (true: IPv6).
    AfInet6(bool),
    Not(Box<Cond>),
}

impl Exec<Action, Cond> for MsgCtx<'_, '_> {
    fn call(&mut self, action: &Action) -> i32 {
        match action {
            Action::Forward {
                host,
                port,
                transport,
            } => self.forward(host, *port, true, *transport),
            Action::Send { host, port } => self.forward(host, *port, false, None),
            Action::ForceSendSocket(spec) => self.force_send_socket(spec),
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
                // The flow `lookup` found belonged to the URI it wrote.
                self.s.dst = None;
                1
            }
            Action::AppendBranch(uri) => {
                // Without a URI: the current one, with its fixed destination (a flow).
                let b = match uri {
                    Some(u) => Branch::uri(u.clone()),
                    None => Branch {
                        uri: self.current_uri().to_string(),
                        dst: self.s.dst,
                    },
                };
                if self.s.branches.len() >= super::core::MAX_BRANCHES {
                    return self.fail(500, "Too Many Branches");
                }
                self.s.branches.push(b);
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
            Action::AppendToReply(text) => {
                self.s
                    .reply_hfs
                    .push_str(text.trim_end_matches(['\r', '\n']));
                self.s.reply_hfs.push_str("\r\n");
                1
            }
            Action::AppendUriHf(pre, post) => {
                let line = format!("{}{}{}", pre, self.current_uri(), post);
                let line = line.trim_end_matches(['\r', '\n']);
                self.s.edits.append_header(self.msg, line.as_bytes());
                1
            }
            Action::IsPresentHf(name) => {
                if super::textops::has_header(self.msg, name) {
                    1
                } else {
                    -1
                }
            }
            Action::RecordRoute { full_lr } => self.record_route(*full_lr),
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
            Action::Auth(a, st) => self.auth_call(a, st),
            Action::Registrar(op) => self.registrar(op),
            #[cfg(feature = "xmpp")]
            Action::JabSendMessage => self.jab_send_message(),
            Action::Pike(cfg) => self.pike_check(cfg),
            Action::RlCheck(pipe) => self.rl_check(*pipe),
            #[cfg(feature = "dispatcher")]
            Action::Dispatcher(op) => self.dispatcher(op),
            #[cfg(feature = "rtpengine")]
            Action::Rtpengine(op) => self.rtpengine(op),
            #[cfg(feature = "msilo")]
            Action::Msilo(op) => self.msilo(op),
            Action::Nat(op) => self.nathelper(op),
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
            Cond::UriMyself => match self.current_uri_parsed() {
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
            Cond::Proto(t) => self.at.transport == *t,
            // An IPv4 peer on a dual-stack socket (::ffff:a.b.c.d) is INET.
            Cond::AfInet6(v6) => unmap(self.at.src.ip()).is_ipv6() == *v6,
            Cond::Not(c) => !self.test(c),
        }
    }
}

/// Runs the request route of `script` over one request.
pub fn run_request(script: &Arc<Script>, ctx: &mut MsgCtx<'_, '_>) -> ser_script::RunOutcome {
    script.run(ser_script::RouteKind::Request, 0, ctx)
}
