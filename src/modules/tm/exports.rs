//! tm's export table: the functions it gives the script (`t_relay` and its `_to` forms,
//! `t_newtran`, `t_reply`, `t_on_*`, `t_replicate`) with the route kinds each may run in and
//! the binding of their arguments at load time, and the module's timer parameters. What
//! the actions do when they run is `actions`.

use ser_script::{Arg, BindCtx, KindSet, RouteKind};

use crate::modules::core::{f, host_arg, port_arg};
use crate::modules::{arg_int, Action, Exports, ParamDef, ParamKind, PortArg};
use crate::sip::Transport;

/// Where a new transaction may be created or replied to: the request route, and the failure
/// route (which continues the same transaction). A reply route (SER 0.8's negative-reply
/// route) only adds branches; `t_on_negative` there chains the next one.
pub fn register(ex: &mut Exports) {
    let relay_kinds = KindSet::REQUEST | KindSet::FAILURE;
    ex.function(f("t_relay", 0, 0, relay_kinds, |_, _| {
        Ok(Action::TRelay {
            host: None,
            port: PortArg::Default,
            transport: None,
        })
    }));
    ex.function(f("t_relay_to", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, None)
    }));
    ex.function(f("t_relay_to_udp", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, Some(Transport::Udp))
    }));
    ex.function(f("t_relay_to_tcp", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, Some(Transport::Tcp))
    }));
    ex.function(f("t_relay_to_tls", 2, 2, relay_kinds, |a, _| {
        bind_relay_to(a, Some(Transport::Tls))
    }));
    ex.function(f("t_newtran", 0, 0, KindSet::REQUEST, |_, _| {
        Ok(Action::TNewtran)
    }));
    ex.function(f("t_reply", 2, 2, relay_kinds, bind_reply));
    ex.function(f(
        "t_on_negative",
        1,
        1,
        KindSet::REQUEST | KindSet::REPLY | KindSet::FAILURE | KindSet::BRANCH,
        |a, c| Ok(Action::TOnNegative(route_no(a, c, RouteKind::Reply)?)),
    ));
    ex.function(f(
        "t_on_failure",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE | KindSet::REPLY | KindSet::BRANCH,
        |a, c| Ok(Action::TOnFailure(route_no(a, c, RouteKind::Failure)?)),
    ));
    ex.function(f(
        "t_on_branch",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE,
        |a, c| Ok(Action::TOnBranch(route_no(a, c, RouteKind::Branch)?)),
    ));
    ex.function(f(
        "t_on_reply",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE | KindSet::BRANCH,
        |a, c| Ok(Action::TOnReply(route_no(a, c, RouteKind::OnReply)?)),
    ));
    ex.function(f("t_replicate", 2, 2, KindSet::REQUEST, |a, _| {
        let host = host_arg(a.first().ok_or("missing host")?)?;
        let port = port_arg(a.get(1))?;
        Ok(Action::TReplicate { host, port })
    }));
    for name in [
        "fr_timer",
        "fr_inv_timer",
        "wt_timer",
        "retr_timer1",
        "retr_timer2",
        "max_transactions",
        "retry_after",
    ] {
        ex.param(
            "tm",
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
    }
}

/// `t_relay_to(host, port)` (UDP, or TCP for a large request) and `t_relay_to_udp`/`_tcp`/
/// `_tls(host, port)`, which name the transport.
fn bind_relay_to(a: &[Arg], transport: Option<Transport>) -> Result<Action, String> {
    let host = host_arg(a.first().ok_or("missing host")?)?;
    let port = port_arg(a.get(1))?;
    Ok(Action::TRelay {
        host: Some(host),
        port,
        transport,
    })
}

fn bind_reply(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let (code, reason) = crate::modules::sl::reply_args(a)?;
    Ok(Action::TReply { code, reason })
}

/// A route number argument that must name a block of `kind` the script defines.
fn route_no(a: &[Arg], c: &BindCtx<'_>, kind: RouteKind) -> Result<u32, String> {
    let n = a.first().map(arg_int).transpose()?.unwrap_or(-1);
    let n = u32::try_from(n).map_err(|_| format!("bad route number {n}"))?;
    if !c.has_route(kind, n) {
        return Err(c.fail_at(0, format!("{}[{n}] is not defined in this script", kind)));
    }
    Ok(n)
}
