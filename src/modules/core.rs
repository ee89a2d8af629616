//! The core actions (SER's built-ins): `forward` (and `forward_udp`/`_tcp`/`_tls`, which name
//! the transport), `send`, `force_send_socket`, `log`, `len_gt`, flags, the URI rewriting
//! family, `append_branch`, `revert_uri`; stateless forwarding itself (RFC 3261 16.11): our
//! Via with a stateless branch, `received`/`rport` on the previous hop's Via, loop detection,
//! and replies routed back along their Via; and the one choice of a next hop and of the socket
//! it leaves from (`next_hop`, `hop_socket`), shared with tm.
//!
//! `route(n)`, `break` and `drop` are statements of the language, handled by the VM.

use std::net::{IpAddr, SocketAddr};

use ser_parser::Message;
use ser_script::{Arg, BindCtx, FnEntry, KindSet, Value};

use super::ctx::MsgCtx;
use super::rewrite::Rewrite;
use super::{arg_int, arg_str, Exports};
use super::{Action, HostArg, PortArg};
use crate::core::Core;
use crate::sip::{
    hash64, upstream, uri_error, Dest, HostTarget, NextHop, Outbox, PendingSend, Target, Transport,
};
use crate::stats::Stats;
use crate::tm::BranchDst;

/// Most URIs a destination set holds (SER's MAX_BRANCHES).
pub const MAX_BRANCHES: usize = 12;

pub fn register(ex: &mut Exports) {
    // URI manipulation is allowed wherever SER allowed it: everywhere but onreply_route.
    let uri_kinds = KindSet::REQUEST | KindSet::FAILURE | KindSet::REPLY | KindSet::BRANCH;
    ex.function(f("forward", 1, 2, KindSet::REQUEST, bind_forward));
    ex.function(f("forward_udp", 1, 2, KindSet::REQUEST, |a, _| {
        forward_over(a, Transport::Udp)
    }));
    ex.function(f("forward_tcp", 1, 2, KindSet::REQUEST, |a, _| {
        forward_over(a, Transport::Tcp)
    }));
    ex.function(f("forward_tls", 1, 2, KindSet::REQUEST, |a, _| {
        forward_over(a, Transport::Tls)
    }));
    ex.function(f("send", 1, 2, KindSet::REQUEST, bind_send));
    ex.function(f(
        "force_send_socket",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE | KindSet::BRANCH,
        |a, c| {
            let a = a.first().ok_or("missing socket")?;
            SocketSpec::parse(a)
                .map(Action::ForceSendSocket)
                .map_err(|e| c.fail_at(0, e))
        },
    ));
    ex.function(f("log", 1, 2, KindSet::ALL, bind_log));
    ex.function(f("len_gt", 1, 1, KindSet::ALL, bind_len_gt));
    ex.function(f("setflag", 1, 1, KindSet::ALL, |a, _| {
        Ok(Action::SetFlag(flag(a)?))
    }));
    ex.function(f("resetflag", 1, 1, KindSet::ALL, |a, _| {
        Ok(Action::ResetFlag(flag(a)?))
    }));
    ex.function(f("isflagset", 1, 1, KindSet::ALL, |a, _| {
        Ok(Action::IsFlagSet(flag(a)?))
    }));
    ex.function(f("rewriteuri", 1, 1, uri_kinds, |a, _| {
        Ok(Action::Rewrite(Rewrite::Uri(checked_uri(a)?)))
    }));
    ex.alias("seturi", "rewriteuri");
    ex.function(f("rewritehost", 1, 1, uri_kinds, |a, _| {
        Ok(Action::Rewrite(Rewrite::Host(arg1(a)?)))
    }));
    ex.alias("sethost", "rewritehost");
    ex.alias("seth", "rewritehost");
    ex.function(f("rewritehostport", 1, 1, uri_kinds, |a, _| {
        Ok(Action::Rewrite(Rewrite::HostPort(arg1(a)?)))
    }));
    ex.alias("sethostport", "rewritehostport");
    ex.alias("sethp", "rewritehostport");
    ex.function(f("rewriteuser", 1, 1, uri_kinds, |a, _| {
        Ok(Action::Rewrite(Rewrite::User(arg1(a)?)))
    }));
    ex.alias("setuser", "rewriteuser");
    ex.alias("setu", "rewriteuser");
    ex.function(f("rewriteuserpass", 1, 1, uri_kinds, |a, _| {
        Ok(Action::Rewrite(Rewrite::UserPass(arg1(a)?)))
    }));
    ex.alias("setuserpass", "rewriteuserpass");
    ex.alias("setup", "rewriteuserpass");
    ex.function(f("rewriteport", 1, 1, uri_kinds, |a, _| {
        let p = arg1(a)?;
        p.parse::<u16>().map_err(|_| format!("bad port \"{p}\""))?;
        Ok(Action::Rewrite(Rewrite::Port(p)))
    }));
    ex.alias("setport", "rewriteport");
    ex.alias("setp", "rewriteport");
    ex.function(f("prefix", 1, 1, uri_kinds, |a, _| {
        Ok(Action::Rewrite(Rewrite::Prefix(arg1(a)?)))
    }));
    ex.function(f("strip", 1, 1, uri_kinds, |a, _| {
        let n = a.first().map(arg_int).transpose()?.unwrap_or(0);
        let n = usize::try_from(n).map_err(|_| "strip: expected a count >= 0".to_string())?;
        Ok(Action::Rewrite(Rewrite::Strip(n)))
    }));
    ex.function(f("revert_uri", 0, 0, uri_kinds, |_, _| {
        Ok(Action::RevertUri)
    }));
    ex.function(f("append_branch", 0, 1, uri_kinds, |a, _| {
        Ok(Action::AppendBranch(match a.first() {
            Some(x) => Some(checked_uri(std::slice::from_ref(x))?),
            None => None,
        }))
    }));
}

/// Binder signature shared by every module.
pub type Bind = fn(&[Arg], &BindCtx<'_>) -> Result<Action, String>;

/// One export-table row.
pub fn f(
    name: &'static str,
    min_args: u8,
    max_args: u8,
    kinds: KindSet,
    bind: Bind,
) -> FnEntry<Action> {
    FnEntry {
        name,
        min_args,
        max_args,
        kinds,
        bind,
    }
}

fn arg1(a: &[Arg]) -> Result<String, String> {
    a.first()
        .map(arg_str)
        .transpose()?
        .ok_or_else(|| "missing argument".to_string())
}

fn checked_uri(a: &[Arg]) -> Result<String, String> {
    let u = arg1(a)?;
    ser_parser::parse_uri(&u).map_err(|_| format!("\"{u}\" is not a valid SIP URI"))?;
    Ok(u)
}

fn flag(a: &[Arg]) -> Result<u32, String> {
    let n = a.first().map(arg_int).transpose()?.unwrap_or(-1);
    u32::try_from(n)
        .ok()
        .filter(|n| *n < 32)
        .ok_or_else(|| format!("flag {n} out of range 0..31"))
}

pub(crate) fn host_arg(a: &Arg) -> Result<HostArg, String> {
    match &a.value {
        Value::Ident(s) if s == "uri:host" => Ok(HostArg::UriHost),
        Value::Ip(ip) => Ok(HostArg::Addrs(vec![*ip])),
        Value::Str(s) | Value::Ident(s) => {
            let host = s.trim_start_matches('[').trim_end_matches(']');
            // Host names in the script are resolved at start (SER did the same); one that
            // does not resolve now is looked up again whenever it is used.
            match crate::config::resolve_at_start(host) {
                Ok(addrs) => Ok(HostArg::Addrs(addrs)),
                Err(e) => {
                    crate::warn!("{e}; it will be resolved when used");
                    Ok(HostArg::Name(host.to_string()))
                }
            }
        }
        other => Err(format!("expected a host, found {other:?}")),
    }
}

pub(crate) fn port_arg(a: Option<&Arg>) -> Result<PortArg, String> {
    let Some(a) = a else {
        return Ok(PortArg::Default);
    };
    match &a.value {
        Value::Ident(s) if s == "uri:port" => Ok(PortArg::UriPort),
        _ => {
            let n = arg_int(a)?;
            u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .map(PortArg::Port)
                .ok_or_else(|| format!("bad port {n}"))
        }
    }
}

fn bind_forward(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let host = host_arg(a.first().ok_or("missing host")?)?;
    let port = port_arg(a.get(1))?;
    Ok(Action::Forward {
        host,
        port,
        transport: None,
    })
}

/// `forward_udp`, `forward_tcp`, `forward_tls`: `forward` over the transport they name.
fn forward_over(a: &[Arg], transport: Transport) -> Result<Action, String> {
    let host = host_arg(a.first().ok_or("missing host")?)?;
    let port = port_arg(a.get(1))?;
    Ok(Action::Forward {
        host,
        port,
        transport: Some(transport),
    })
}

/// The argument of `force_send_socket([proto:]addr[:port])`, checked when the script loads:
/// a transport this server can listen on (udp when not given), an address (a name is resolved
/// now) and a port (5060, 5061 for TLS, when missing or 0). Which of our sockets it is can
/// only be told once the server listens: [`MsgCtx::force_send_socket`] looks it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub transport: Transport,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    /// As the script wrote it (for the log).
    pub text: String,
}

impl SocketSpec {
    pub(crate) fn parse(a: &Arg) -> Result<Self, String> {
        let text = match &a.value {
            Value::Ip(ip) => ip.to_string(),
            Value::Str(s) | Value::Ident(s) => s.clone(),
            other => return Err(format!("expected [proto:]address[:port], found {other:?}")),
        };
        let (transport, host, port) = split_socket(&text)?;
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => crate::config::resolve_at_start(host).map_err(|e| e.to_string())?,
        };
        let port = port.filter(|p| *p != 0).unwrap_or(transport.default_port());
        Ok(Self {
            transport,
            addrs,
            port,
            text,
        })
    }
}

/// `[proto:]host[:port]` → its parts (IPv6 in brackets when a port follows; a bare IPv6
/// address has no port).
fn split_socket(text: &str) -> Result<(Transport, &str, Option<u16>), String> {
    let bad = || format!("\"{text}\" is not [proto:]address[:port]");
    let (transport, rest) = match text.split_once(':') {
        Some((p, rest)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphabetic()) => {
            match Transport::from_name(p) {
                Some(t) => (t, rest),
                // A host name followed by a port ("proxy:5060"), or a transport we lack.
                None if rest.bytes().all(|b| b.is_ascii_digit()) => (Transport::Udp, text),
                None => return Err(format!("unknown transport \"{p}\" in \"{text}\"")),
            }
        }
        _ => (Transport::Udp, text),
    };
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad());
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        return match after {
            "" => Ok((transport, host, None)),
            _ => Ok((
                transport,
                host,
                Some(port(after.strip_prefix(':').ok_or_else(bad)?)?),
            )),
        };
    }
    if rest.parse::<IpAddr>().is_ok() {
        return Ok((transport, rest, None));
    }
    match rest.rsplit_once(':') {
        Some((host, p)) if !host.is_empty() && !host.contains(':') => {
            Ok((transport, host, Some(port(p)?)))
        }
        Some(_) => Err(bad()),
        None if rest.is_empty() => Err(bad()),
        None => Ok((transport, rest, None)),
    }
}

fn bind_send(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let host = host_arg(a.first().ok_or("missing host")?)?;
    let port = port_arg(a.get(1))?;
    Ok(Action::Send { host, port })
}

fn bind_log(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    match a {
        [msg] => Ok(Action::Log {
            level: crate::log::L_DBG,
            msg: arg_str(msg)?,
        }),
        [level, msg] => Ok(Action::Log {
            level: i32::try_from(arg_int(level)?).map_err(|_| "bad log level")?,
            msg: arg_str(msg)?,
        }),
        _ => Err("log([level,] message)".into()),
    }
}

fn bind_len_gt(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let x = a.first().ok_or("missing length")?;
    match &x.value {
        Value::Ident(s) if s == "max_len" => Ok(Action::LenGt(None)),
        _ => {
            let n = arg_int(x)?;
            Ok(Action::LenGt(Some(
                usize::try_from(n).map_err(|_| format!("bad length {n}"))?,
            )))
        }
    }
}

/// What a forwarded request needs from its Vias, gathered in one pass: the top one (its
/// branch identifies the upstream transaction; `received`/`rport` go on it) and, for each Via
/// of ours, its branch and the identity of the Via below it, which was the top one when we
/// forwarded the request then (a loop brings it back).
pub struct ViaScan<'b> {
    pub top: Option<ser_parser::Via<'b>>,
    top_id: &'b [u8],
    ours: smallvec::SmallVec<[(&'b str, &'b [u8]); 2]>,
}

/// What identifies the transaction a Via stands for: its branch, or for RFC 2543 elements
/// without one, its sent-by.
fn via_id<'b>(v: &ser_parser::Via<'b>) -> &'b [u8] {
    match v.branch {
        Some(b) => b.as_bytes(),
        None => v.host_str.as_bytes(),
    }
}

impl<'b> ViaScan<'b> {
    pub fn new(core: &Core, msg: &Message<'b>) -> Self {
        let mut scan = ViaScan {
            top: None,
            top_id: b"",
            ours: smallvec::SmallVec::new(),
        };
        let mut above_ours: Option<&'b str> = None;
        for v in msg.vias().filter_map(Result::ok) {
            if let Some(b) = above_ours.take() {
                scan.ours.push((b, via_id(&v)));
            }
            if via_is_ours(core, &v) {
                above_ours = v.branch;
            }
            if scan.top.is_none() {
                scan.top_id = via_id(&v);
                scan.top = Some(v);
            }
        }
        scan
    }

    /// RFC 3261 16.3 step 4: the request has been here before and comes back unchanged when
    /// one of our Vias carries the loop hash we would compute for it as it was then (with the
    /// Via below ours on top), whether we forwarded it statelessly or in a transaction (whose
    /// branches carry our tag `prefix`); a spiral (a new Request-URI) computes another one.
    pub fn looped(&self, msg: &Message<'_>, ruri: &str, prefix: &str) -> bool {
        self.ours
            .iter()
            .any(|(ours, below)| carries_loop_hash(ours, loop_hash(msg, ruri, below), prefix))
    }

    /// The loop hash of the request as received, for the branches we forward it on.
    pub fn loop_hash(&self, msg: &Message<'_>, ruri: &str) -> u64 {
        loop_hash(msg, ruri, self.top_id)
    }
}

/// The loop hash of a request we forward (RFC 3261 16.11 and 16.6 step 8): a hash of the
/// received top Via's branch (the upstream transaction: a retransmission, its CANCEL and the
/// ACK of a negative reply carry the same one), the Request-URI as received, Call-ID, the From
/// value (its tag) and the CSeq number (the method differs for CANCEL and ACK). The stateless
/// branch is made of it; a transaction's branches carry 32 bits of it (`sip::txn_branch`).
pub fn loop_hash(msg: &Message<'_>, ruri: &str, top_id: &[u8]) -> u64 {
    let call_id = msg.call_id().unwrap_or_default();
    let from = msg
        .header(ser_parser::HeaderName::From)
        .map_or(&b""[..], |h| h.value);
    let cseq = msg
        .header(ser_parser::HeaderName::CSeq)
        .map_or(&b""[..], |h| {
            let v = h.value.trim_ascii_start();
            let n = v.iter().take_while(|c| c.is_ascii_digit()).count();
            v.get(..n).unwrap_or_default()
        });
    hash64(&[call_id, from, cseq, ruri.as_bytes(), top_id])
}

/// The stateless branch of a request we forward: [`loop_hash`] in hex.
pub fn stateless_branch(msg: &Message<'_>, ruri: &str, top_id: &[u8], out: &mut String) {
    let h = loop_hash(msg, ruri, top_id);
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "z9hG4bKsl{h:016x}");
}

/// Does `branch`, one of our Vias', carry the loop hash `h`: is it the stateless branch of it,
/// or a branch of a transaction (its tag `prefix`) marked with it?
fn carries_loop_hash(branch: &str, h: u64, prefix: &str) -> bool {
    match branch.strip_prefix("z9hG4bKsl") {
        Some(hex) => hex.len() == 16 && u64::from_str_radix(hex, 16) == Ok(h),
        None => crate::sip::txn_branch_mark(branch, prefix) == Some(h as u32),
    }
}

/// Is `via` one of ours (sent-by one of our sockets or names)?
fn via_is_ours(core: &Core, via: &ser_parser::Via<'_>) -> bool {
    core.local.is_myself(&via.host, via.host_str, via.port)
}

/// RFC 3261 §18.1.1: a request larger than this (a path MTU of 1500 less 200 bytes, when the
/// MTU is unknown, as it is to us) goes over a congestion-controlled transport: TCP, when its
/// transport was not asked for, we have a TCP socket of the peer's address family, and the
/// peer is known to take TCP (a connection with it is open).
pub const MAX_UDP_REQUEST: usize = 1500 - 200;

/// What our own Via adds to a request, for the size rule above (`Via: SIP/2.0/UDP` + an
/// address + a branch); a Record-Route of ours adds about as much.
const OUR_LINE_ESTIMATE: usize = 80;

impl MsgCtx<'_, '_> {
    /// `forward(host, port)` (with our Via) and `send(host, port)` (as is); `transport` is
    /// the one `forward_udp`/`_tcp`/`_tls` name.
    pub(crate) fn forward(
        &mut self,
        host: &HostArg,
        port: PortArg,
        add_via: bool,
        transport: Option<Transport>,
    ) -> i32 {
        if !self.msg.is_request() {
            return self.fail(500, "Not a request");
        }
        // The destination: `uri:host`/`uri:port` mean the next hop, which is the flow
        // `lookup` found, else the Route `loose_route` chose, else the Request-URI.
        let uri_text = self.current_uri().to_string();
        let target = match self.fixed_dest(Some(host), port, transport) {
            Some(d) => BranchDst::Addr(d),
            None => {
                let hop_text = self.next_hop_uri().to_string();
                let hop = match self.next_hop(Some(host), port, &hop_text, transport) {
                    Ok(h) => h,
                    Err(r) => return r,
                };
                match self.hop_dest(hop) {
                    Ok(t) => t,
                    Err(r) => return r,
                }
            }
        };
        let sock = target.socket();
        // Our Via, and the loop check it allows.
        let scan = ViaScan::new(self.core, self.msg);
        let mut via = String::new();
        if add_via {
            let mut branch = String::with_capacity(32);
            let received_uri = self.msg.request_uri().unwrap_or("");
            stateless_branch(self.msg, received_uri, scan.top_id, &mut branch);
            if scan.looped(self.msg, received_uri, &self.core.reply.tag_prefix) {
                Stats::inc(&self.stats.loops);
                crate::info!("loop detected for {}", uri_text);
                return self.sl_send_reply(482, b"Loop Detected");
            }
            via = branch;
        }
        let via_line = add_via.then(|| self.via_value(sock, &via));
        match target {
            BranchDst::Addr(dst) => {
                let mut out = std::mem::take(&mut self.s.out);
                self.write_request(
                    &mut out,
                    dst,
                    via_line.as_deref(),
                    &uri_text,
                    scan.top.as_ref(),
                );
                self.s.out = out;
            }
            BranchDst::Name {
                sock,
                transport,
                host,
                port,
                secure,
            } => {
                // Resolved off the shard; the message is written now, with the Via of the
                // socket chosen for the arrival's address family (checked when it resolves).
                let mut tmp = Outbox::default();
                let dst = Dest {
                    transport,
                    socket: sock,
                    addr: self.at.local,
                    conn: None,
                };
                self.write_request(
                    &mut tmp,
                    dst,
                    via_line.as_deref(),
                    &uri_text,
                    scan.top.as_ref(),
                );
                self.s.out.pending.push(PendingSend {
                    host,
                    port,
                    secure,
                    transport,
                    socket_hint: sock,
                    data: tmp.buf,
                });
            }
        }
        Stats::inc(&self.stats.requests_fwd);
        1
    }

    /// The flow `lookup` found for the Request-URI ([`Scratch::dst`]), when the action goes
    /// where the URI says (`t_relay()`, `forward(uri:host, uri:port)`) over any transport or
    /// the flow's; an action that names a host, a port or another transport goes there.
    ///
    /// [`Scratch::dst`]: super::ctx::Scratch::dst
    pub(crate) fn fixed_dest(
        &self,
        host: Option<&HostArg>,
        port: PortArg,
        transport: Option<Transport>,
    ) -> Option<Dest> {
        self.s
            .dst
            .filter(|d| flow_applies(d, host, port, transport))
    }

    /// The one next-hop choice of `forward`, `send`, `t_relay` and `t_relay_to`: the host the
    /// script named (`host`, with `port`, `uri:port` or the transport's default port), else
    /// the next hop of the URI `hop` (RFC 3263: its transport, port or SRV); `transport` is
    /// the one the action names (`forward_tcp`, `t_relay_to_tls`, ...). A URI that gives
    /// none fails the action with the status the request deserves (400, 416).
    pub(crate) fn next_hop(
        &mut self,
        host: Option<&HostArg>,
        port: PortArg,
        hop: &str,
        transport: Option<Transport>,
    ) -> Result<NextHop, i32> {
        let given = match port {
            PortArg::Port(p) => Some(p),
            PortArg::Default => None,
            PortArg::UriPort => match ser_parser::parse_uri(hop) {
                Ok(u) => u.port,
                Err(_) => {
                    let e = uri_error(hop);
                    return Err(self.fail(e.code, e.reason));
                }
            },
        };
        let target = match host {
            None | Some(HostArg::UriHost) => {
                return NextHop::of_uri_text_as(hop, given, transport)
                    .map_err(|e| self.fail(e.code, e.reason))
            }
            Some(HostArg::Addrs(list)) => match list.first() {
                Some(ip) => HostTarget::Addr(*ip),
                None => return Err(self.fail(500, "No address")),
            },
            Some(HostArg::Name(n)) => HostTarget::Name(n),
        };
        Ok(NextHop::of_host(target, given, transport))
    }

    /// A next hop that is a WebSocket peer's `.invalid` name (RFC 7118 §5.2: it resolves
    /// nowhere, RFC 6761): the connection the name came on (a browser's Contact), `Ok(None)`
    /// for any other hop, or a failed action (480) when that connection is gone.
    pub(crate) fn named_flow(&mut self, hop: &NextHop) -> Result<Option<Dest>, i32> {
        let Target::Name { host, .. } = &hop.target else {
            return Ok(None);
        };
        let Some(name) = crate::stream::invalid_name(host) else {
            return Ok(None);
        };
        match self.core.aliases.by_name(&name) {
            Some(f) => Ok(Some(f.dest())),
            None => Err(self.fail(480, "Temporarily Unavailable")),
        }
    }

    /// Where a next hop goes, the one choice of `forward` and of each `t_relay` branch: the
    /// connection of a WebSocket peer's name, else an address from our socket for the hop,
    /// else a name to resolve off the shard (the request written for that socket). Err: the
    /// action failed, with the status the request deserves.
    pub(crate) fn hop_dest(&mut self, mut hop: NextHop) -> Result<BranchDst, i32> {
        if let Some(d) = self.named_flow(&hop)? {
            return Ok(BranchDst::Addr(d));
        }
        let sock = self.hop_socket(&mut hop)?;
        Ok(match hop.target {
            Target::Addr(addr) => BranchDst::Addr(Dest {
                transport: hop.transport,
                socket: sock,
                addr,
                conn: None,
            }),
            Target::Name { host, port } => BranchDst::Name {
                sock,
                transport: hop.transport,
                host,
                port,
                secure: hop.secure,
            },
        })
    }

    /// The listen socket a next hop leaves from: the one `force_send_socket` chose when it
    /// fits, else one of the hop's transport and address family (the arrival's when it
    /// fits). A hop whose transport nobody asked for goes over UDP, or over TCP when the
    /// request is larger than [`MAX_UDP_REQUEST`] and we have a TCP socket. A transport
    /// that was asked for (`;transport=`, `forward_tcp`, ...) and that we have no socket
    /// for fails the action: 500, or 416 for `sips:` (it needs TLS).
    pub(crate) fn hop_socket(&mut self, hop: &mut NextHop) -> Result<usize, i32> {
        let probe = match &hop.target {
            Target::Addr(a) => *a,
            Target::Name { .. } => self.at.local,
        };
        if let Some(s) = self.forced_socket(hop.transport, &probe) {
            return Ok(s);
        }
        let local = &self.core.local;
        // "When the destination allows": a peer we hold a TCP connection with (over a
        // name, or with none open, the request stays on UDP: a UDP-only peer must still
        // get it, as SER and Kamailio's default udp_mtu=0 do).
        if hop.defaulted
            && hop.transport == Transport::Udp
            && matches!(hop.target, Target::Addr(_))
            && self.request_size_estimate() > MAX_UDP_REQUEST
            && self.core.aliases.get(Transport::Tcp, probe).is_some()
        {
            if let Some(s) = local.socket_for(Transport::Tcp, &probe, self.at.socket) {
                crate::debug!("request larger than {MAX_UDP_REQUEST} bytes: tcp to {probe}");
                hop.transport = Transport::Tcp;
                return Ok(s);
            }
        }
        if let Some(s) = local.socket_for(hop.transport, &probe, self.at.socket) {
            return Ok(s);
        }
        if hop.secure {
            return Err(self.fail(416, "Unsupported URI Scheme (sips needs TLS)"));
        }
        crate::warn!("no {} socket to send to {probe}", hop.transport);
        Err(self.fail(500, "No socket for destination"))
    }

    /// The socket `force_send_socket` chose, for a hop over `transport` to `probe`: that
    /// socket when its transport and address family fit, else our socket of `transport` at
    /// the same address (as Kamailio does), else none (the usual choice applies).
    fn forced_socket(&self, transport: Transport, probe: &SocketAddr) -> Option<usize> {
        let i = self.force_socket?;
        let local = &self.core.local;
        let l = local.sockets.get(i)?;
        let found = if l.transport == transport {
            Some(i)
        } else {
            local.socket_at(transport, &l.addr)
        };
        let fits = found
            .and_then(|s| local.addr(s))
            .is_some_and(|a| a.is_ipv4() == probe.is_ipv4());
        if !fits {
            crate::debug!(
                "forced socket {} {} does not fit a {transport} hop to {probe}",
                l.transport,
                l.addr
            );
            return None;
        }
        found
    }

    /// `force_send_socket(spec)`: the socket what this message sends next leaves from. One
    /// that is not ours is logged and ignored (false).
    pub(crate) fn force_send_socket(&mut self, spec: &SocketSpec) -> i32 {
        let local = &self.core.local;
        let found = spec
            .addrs
            .iter()
            .find_map(|ip| local.socket_at(spec.transport, &SocketAddr::new(*ip, spec.port)));
        match found {
            Some(s) => {
                self.force_socket = Some(s);
                1
            }
            None => {
                crate::warn!(
                    "force_send_socket({}): not one of our sockets; ignored",
                    spec.text
                );
                -1
            }
        }
    }

    /// About how large the request will be when it leaves: as received, with the script's
    /// edits, its new Request-URI, our Via and Record-Route (for [`MAX_UDP_REQUEST`]).
    fn request_size_estimate(&self) -> usize {
        let mut n = self.msg.buf().len();
        for (range, bytes) in self.s.edits.splices() {
            n = (n + bytes.len()).saturating_sub(range.len());
        }
        if self.uri_changed {
            let old = self.msg.request_uri().unwrap_or("").len();
            n = (n + self.s.uri.len()).saturating_sub(old);
        }
        let rr = if self.record_route.is_some() { 2 } else { 0 };
        n + OUR_LINE_ESTIMATE * (1 + rr)
    }

    pub(crate) fn via_value(&self, sock: usize, branch: &str) -> String {
        self.core.local.via(sock, branch, self.at.local)
    }

    /// Writes one branch of a stateful relay, leaving from socket `sock`, into `buf`: the
    /// script's edits, Request-URI `uri`, our Record-Route (for `sock`), `received`/`rport`
    /// on the previous hop's Via, and our Via `via`.
    pub(crate) fn write_branch(&mut self, via: &str, uri: &str, sock: usize, buf: &mut Vec<u8>) {
        let top = self.msg.top_via().ok();
        let mark = self.s.edits.mark();
        self.add_record_route(sock);
        if uri != self.msg.request_uri().unwrap_or("") {
            self.s.edits.set_request_uri(self.msg, uri.as_bytes());
        }
        if let Some(top) = &top {
            self.mark_top_via(top);
        }
        self.s.edits.push_via(self.msg, via.as_bytes());
        ser_parser::write(self.msg, &self.s.edits, buf);
        self.s.edits.rollback(mark);
    }

    /// Writes the request with the script's edits plus, for this copy only, the new
    /// Request-URI, our Record-Route (for `dst.socket`), `received`/`rport` on the previous
    /// hop's Via and our Via.
    fn write_request(
        &mut self,
        out: &mut Outbox,
        dst: Dest,
        via: Option<&str>,
        uri: &str,
        top: Option<&ser_parser::Via<'_>>,
    ) {
        let mark = self.s.edits.mark();
        if self.uri_changed {
            self.s.edits.set_request_uri(self.msg, uri.as_bytes());
        }
        self.add_record_route(dst.socket);
        if let Some(via) = via {
            if let Some(top) = top {
                self.mark_top_via(top);
            }
            self.s.edits.push_via(self.msg, via.as_bytes());
        }
        let msg = self.msg;
        let edits = &self.s.edits;
        out.push(dst, |buf| ser_parser::write(msg, edits, buf));
        self.s.edits.rollback(mark);
    }

    /// RFC 3261 §18.2.1 and RFC 3581 for the request's top Via (`via`).
    pub(crate) fn received_for(&self, via: &ser_parser::Via<'_>) -> (Option<IpAddr>, Option<u16>) {
        crate::sip::received_for(via, self.at.src)
    }
}

/// Does an action that sends to `host`/`port` over `transport` go to the fixed destination
/// `d` of its URI (a flow)? Only when it goes where the URI says, over any transport or the
/// flow's.
pub(crate) fn flow_applies(
    d: &Dest,
    host: Option<&HostArg>,
    port: PortArg,
    transport: Option<Transport>,
) -> bool {
    matches!(host, None | Some(HostArg::UriHost))
        && !matches!(port, PortArg::Port(_))
        && transport.map_or(true, |t| t == d.transport)
}

/// Routes a reply back statelessly: our Via off the top, sent to the next Via's address
/// (`received`/`rport` where present). Returns false when the reply is not for us.
pub fn forward_reply(
    core: &Core,
    msg: &Message<'_>,
    arrived_on: usize,
    s: &mut crate::modules::ctx::Scratch,
) -> Result<(), &'static str> {
    let mut vias = msg.vias();
    let top = vias.next().ok_or("no Via")?.map_err(|_| "bad Via")?;
    if !via_is_ours(core, &top) {
        return Err("top Via is not ours");
    }
    let next = vias.next().ok_or("no second Via")?.map_err(|_| "bad Via")?;
    let (transport, target) = upstream(&next)?;
    s.edits.clear();
    s.edits.remove_top_via(msg).map_err(|_| "bad Via")?;
    match target {
        Target::Addr(addr) => {
            // A Via naming a transport we have no socket of: UDP.
            let (transport, sock) = match core.local.socket_for(transport, &addr, arrived_on) {
                Some(sock) => (transport, sock),
                None => (
                    Transport::Udp,
                    core.local
                        .socket_for(Transport::Udp, &addr, arrived_on)
                        .ok_or("no socket")?,
                ),
            };
            let dst = Dest {
                transport,
                socket: sock,
                addr,
                conn: None,
            };
            let edits = &s.edits;
            s.out.push(dst, |buf| ser_parser::write(msg, edits, buf));
        }
        Target::Name { host, port } => {
            let mut data = Vec::with_capacity(msg.buf().len());
            ser_parser::write(msg, &s.edits, &mut data);
            s.out.pending.push(PendingSend {
                host,
                port,
                secure: false,
                transport,
                socket_hint: arrived_on,
                data,
            });
        }
    }
    Ok(())
}
