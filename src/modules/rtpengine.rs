//! Module rtpengine's script face (Kamailio's semantics): `rtpengine_offer([flags])`,
//! `rtpengine_answer([flags])`, `rtpengine_manage([flags])`, `rtpengine_delete([flags])`, and
//! the parameters `rtpengine_sock`, `rtpengine_tout_ms`, `rtpengine_retr`,
//! `rtpengine_disable_tout`. The daemons, the ng protocol and fail-over are
//! [`crate::rtpengine`]; the flag string is [`crate::rtpengine::flags`].
//!
//! An offer or answer sends the message's SDP body to rtpengine with the Call-ID, the From
//! and To tags and the flags, and replaces the body with the SDP rtpengine gives back
//! (Content-Length set to match, through the parser's `Edits`): the media then flows
//! through the relay. A delete ends the call's media session.
//!
//! `rtpengine_manage()` picks the command as Kamailio does: an INVITE or UPDATE with SDP is
//! an offer, an ACK with SDP an answer, a BYE or CANCEL a delete; on a reply, a 1xx/2xx with
//! SDP to an INVITE or UPDATE is an answer (an offer when the INVITE had no SDP: a late
//! offer, answered in the ACK) and a final ≥ 300 to an initial INVITE a delete (not to a
//! re-INVITE: the call's media goes on). Anything else: false, nothing sent. tm tells the
//! onreply_route what the transaction's request was ([`crate::tm::RequestFacts`]).
//!
//! Never on the shard's time. The function pauses the script ([`ser_script::SUSPEND`]) and
//! hands the command to rtpengine's client ([`Suspend::Service`]): the datagram leaves at
//! once, and the client's own threads take the answer (or retransmit, time out and fail
//! over) and post it back to the shard; the shard serves other messages meanwhile. Then the script goes on where it
//! paused, with the function's result (false when no daemon answered or the daemon refused:
//! the script can reply 503). In the request route this is the pause exec and the databases
//! use (the request's bytes and the run's state are parked on the shard). In an
//! onreply_route (where `rtpengine_answer`/`manage` usually run, over a 183 or 200 with SDP)
//! the reply is parked the same way: tm has taken it for its branch but relays nothing of it
//! until the route ends, and then relays the reply as the route left it, new SDP included.
//! Retransmissions meanwhile (the caller's INVITE, the callee's 200) are absorbed on the
//! shard; a 2xx the callee retransmits after its transaction ended goes out with the changed
//! SDP too (tm remembers it; see `modules::tm`).
//!
//! What it does not do: the failure and branch routes (refused at load: a branch route
//! cannot pause, and a failure route, which can, has no tested use here yet),
//! an SDP in a multipart body, and Kamailio's pseudo-variables in the flag string (a literal,
//! read at load).

use std::sync::Arc;

use ser_parser::{HeaderName, Method};
use ser_script::{Arg, BindCtx, KindSet};

use super::core::f;
use super::ctx::{MsgCtx, Resumed, Suspend};
use super::{arg_str, Action, Exports, ParamDef, ParamKind};
use crate::rtpengine::{Flags, Value};

/// Which rtpengine function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Offer,
    Answer,
    Delete,
    /// Picks one of the others from the message (see the module documentation).
    Manage,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Offer => "offer",
            Cmd::Answer => "answer",
            Cmd::Delete => "delete",
            Cmd::Manage => "manage",
        }
    }
}

/// An rtpengine function with its flag string read.
#[derive(Debug, Clone)]
pub struct RtpOp {
    pub cmd: Cmd,
    pub flags: Arc<Flags>,
}

pub fn register(ex: &mut Exports) {
    let kinds = KindSet::REQUEST | KindSet::ONREPLY;
    for (name, cmd) in [
        ("rtpengine_offer", Cmd::Offer),
        ("rtpengine_answer", Cmd::Answer),
        ("rtpengine_delete", Cmd::Delete),
        ("rtpengine_manage", Cmd::Manage),
    ] {
        ex.function(f(
            name,
            0,
            1,
            kinds,
            match cmd {
                Cmd::Offer => |a, c| bind(a, c, Cmd::Offer),
                Cmd::Answer => |a, c| bind(a, c, Cmd::Answer),
                Cmd::Delete => |a, c| bind(a, c, Cmd::Delete),
                Cmd::Manage => |a, c| bind(a, c, Cmd::Manage),
            },
        ));
    }
    for (name, int) in crate::rtpengine::PARAMS {
        ex.param(
            "rtpengine",
            ParamDef {
                name,
                kind: if *int { ParamKind::Int } else { ParamKind::Str },
            },
        );
        ex.check("rtpengine", name, |name, value, _| {
            crate::rtpengine::check_param(name, value)
        });
    }
}

fn bind(a: &[Arg], c: &BindCtx<'_>, cmd: Cmd) -> Result<Action, String> {
    let flags = match a.first() {
        None => Flags::default(),
        Some(arg) => {
            let s = arg_str(arg).map_err(|e| c.fail_at(0, e))?;
            Flags::parse(&s).map_err(|e| c.fail_at(0, e))?
        }
    };
    Ok(Action::Rtpengine(RtpOp {
        cmd,
        flags: Arc::new(flags),
    }))
}

/// The SDP body of `msg`, if it has one (Content-Type application/sdp, or none given).
fn sdp_body<'b>(msg: &ser_parser::Message<'b>) -> Option<&'b [u8]> {
    let body = msg.body();
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match msg.header(HeaderName::ContentType) {
        None => Some(body),
        Some(h) => {
            let v = h.value;
            let t = v.split(|&b| b == b';').next().unwrap_or(v).trim_ascii();
            t.eq_ignore_ascii_case(b"application/sdp").then_some(body)
        }
    }
}

/// The `tag` parameter of a From or To value.
fn tag_of(v: Result<ser_parser::NameAddr<'_>, ser_parser::ParseError>) -> Option<String> {
    v.ok()?.tag.map(str::to_string)
}

impl MsgCtx<'_, '_> {
    /// The command `rtpengine_manage` sends for this message, if any.
    fn manage_cmd(&self) -> Option<Cmd> {
        let has_sdp = sdp_body(self.msg).is_some();
        if self.msg.is_request() {
            return match self.msg.method()? {
                Method::Invite | Method::Update if has_sdp => Some(Cmd::Offer),
                Method::Ack if has_sdp => Some(Cmd::Answer),
                Method::Bye | Method::Cancel => Some(Cmd::Delete),
                _ => None,
            };
        }
        let code = self.msg.status()?;
        let cseq = self.msg.cseq().ok()?;
        let method = cseq.method;
        let invite = matches!(method, Method::Invite);
        // What the transaction's request was (tm tells the onreply_route; unknown elsewhere:
        // an initial INVITE with SDP is assumed).
        let req = self.t.request.unwrap_or(crate::tm::RequestFacts {
            body: true,
            in_dialog: false,
        });
        if code >= 300 {
            // The media of an established call outlives a refused re-INVITE.
            return (invite && !req.in_dialog).then_some(Cmd::Delete);
        }
        if !has_sdp || code <= 100 {
            return None;
        }
        match method {
            // A late offer: the INVITE had no SDP, the 2xx's is the offer (the ACK answers).
            Method::Invite if !req.body => Some(Cmd::Offer),
            Method::Invite | Method::Update => Some(Cmd::Answer),
            _ => None,
        }
    }

    /// `rtpengine_offer/answer/delete/manage`: builds the ng command and pauses the script
    /// while rtpengine's service thread exchanges it.
    pub(crate) fn rtpengine(&mut self, op: &RtpOp) -> i32 {
        let cmd = match op.cmd {
            Cmd::Manage => match self.manage_cmd() {
                Some(c) => c,
                None => return -1,
            },
            c => c,
        };
        if !self.can_suspend {
            crate::error!(
                "rtpengine_{}: the script cannot pause here; nothing sent",
                op.cmd.name()
            );
            return -1;
        }
        let Some(call_id) = op
            .flags
            .call_id
            .as_deref()
            .map(str::as_bytes)
            .or_else(|| self.msg.call_id())
        else {
            return -1;
        };
        let mut d = Value::dict();
        d.set("command", Value::str(cmd.name()));
        d.set("call-id", Value::Bytes(call_id.to_vec()));
        // The side whose SDP this is goes first, as Kamailio has it: the From side for a
        // request's offer and a reply's answer, the To side for a reply's offer (a late
        // offer in a 2xx) and a request's answer (its ACK).
        let (mut from_tag, mut to_tag) = (tag_of(self.msg.from()), tag_of(self.msg.to()));
        if self.msg.is_request() == (cmd == Cmd::Answer) && cmd != Cmd::Delete {
            std::mem::swap(&mut from_tag, &mut to_tag);
        }
        let from_tag = op.flags.from_tag.clone().or(from_tag);
        let to_tag = op.flags.to_tag.clone().or(to_tag);
        match from_tag {
            Some(t) => d.set("from-tag", Value::Bytes(t.into_bytes())),
            None => {
                crate::notice!("rtpengine_{}: no From tag; nothing sent", cmd.name());
                return -1;
            }
        }
        if let Some(t) = to_tag {
            d.set("to-tag", Value::Bytes(t.into_bytes()));
        } else if cmd == Cmd::Answer {
            crate::notice!("rtpengine_answer: no To tag; nothing sent");
            return -1;
        }
        if cmd != Cmd::Delete {
            let Some(sdp) = sdp_body(self.msg) else {
                crate::notice!("rtpengine_{}: the message has no SDP body", cmd.name());
                return -1;
            };
            d.set("sdp", Value::Bytes(sdp.to_vec()));
            if self.msg.is_request() {
                let ip = self.at.src.ip();
                let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
                d.set(
                    "received-from",
                    Value::List(vec![Value::str(family), Value::str(&ip.to_string())]),
                );
            }
        }
        op.flags.apply(&mut d);
        let engine = Arc::clone(&self.core.rtpengine);
        let call = call_id.to_vec();
        self.suspend = Some(Suspend::Service(Box::new(move |resume| {
            engine.request(
                &call,
                d,
                Box::new(move |outcome| {
                    resume(Resumed::Apply(Box::new(move |m| {
                        m.rtpengine_result(cmd, outcome)
                    })))
                }),
            );
        })));
        ser_script::SUSPEND
    }

    /// The function's result once rtpengine answered (or none did): an offer's or answer's
    /// SDP replaces the message's body.
    fn rtpengine_result(&mut self, cmd: Cmd, outcome: crate::rtpengine::Outcome) -> i32 {
        let reply = match outcome {
            Ok(r) => r,
            Err(why) => {
                crate::error!("rtpengine_{}: {why}", cmd.name());
                return -1;
            }
        };
        if cmd == Cmd::Delete {
            return 1;
        }
        match reply.get("sdp").and_then(Value::as_bytes) {
            Some(sdp) => {
                self.s.edits.replace_body(self.msg, sdp);
                1
            }
            None => {
                crate::error!("rtpengine_{}: the daemon's reply has no SDP", cmd.name());
                -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manage(raw: &str) -> Option<Cmd> {
        manage_in(raw, None)
    }

    fn manage_in(raw: &str, facts: Option<crate::tm::RequestFacts>) -> Option<Cmd> {
        let raw = raw.replace('\n', "\r\n");
        let msg = ser_parser::parse(raw.as_bytes()).unwrap();
        let core = crate::core::Core::new(&crate::config::Config::default(), Vec::new(), None);
        let stats = crate::stats::Stats::default();
        let mut s = super::super::ctx::Scratch::default();
        let at = crate::sip::Arrival {
            transport: crate::sip::Transport::Udp,
            src: "127.0.0.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            socket: 0,
            shard: 0,
            conn: None,
        };
        let mut m = MsgCtx::new(&core, &stats, &msg, at, &mut s);
        m.t.request = facts;
        m.manage_cmd()
    }

    const SDP: &str =
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\n";

    fn req(method: &str, sdp: bool) -> String {
        let body = if sdp { SDP } else { "" };
        format!(
            "{method} sip:b@x SIP/2.0\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\nFrom: <sip:a@x>;tag=1\n\
             To: <sip:b@x>\nCall-ID: c\nCSeq: 1 {method}\nContent-Type: application/sdp\n\
             Content-Length: {}\n\n{body}",
            body.len() + body.matches('\n').count()
        )
    }

    fn reply(code: u16, method: &str, sdp: bool) -> String {
        let body = if sdp { SDP } else { "" };
        format!(
            "SIP/2.0 {code} X\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\nFrom: <sip:a@x>;tag=1\n\
             To: <sip:b@x>;tag=2\nCall-ID: c\nCSeq: 1 {method}\nContent-Type: application/sdp\n\
             Content-Length: {}\n\n{body}",
            body.len() + body.matches('\n').count()
        )
    }

    #[test]
    fn manage_picks_kamailios_command() {
        assert_eq!(manage(&req("INVITE", true)), Some(Cmd::Offer));
        assert_eq!(manage(&req("UPDATE", true)), Some(Cmd::Offer));
        assert_eq!(manage(&req("INVITE", false)), None);
        assert_eq!(manage(&req("ACK", true)), Some(Cmd::Answer));
        assert_eq!(manage(&req("ACK", false)), None);
        assert_eq!(manage(&req("BYE", false)), Some(Cmd::Delete));
        assert_eq!(manage(&req("CANCEL", false)), Some(Cmd::Delete));
        assert_eq!(manage(&req("OPTIONS", true)), None);
        assert_eq!(manage(&reply(200, "INVITE", true)), Some(Cmd::Answer));
        assert_eq!(manage(&reply(183, "INVITE", true)), Some(Cmd::Answer));
        assert_eq!(manage(&reply(180, "INVITE", false)), None);
        assert_eq!(manage(&reply(200, "UPDATE", true)), Some(Cmd::Answer));
        assert_eq!(manage(&reply(486, "INVITE", false)), Some(Cmd::Delete));
        assert_eq!(manage(&reply(200, "BYE", false)), None);
        assert_eq!(manage(&reply(404, "BYE", false)), None);
        // What tm says of the request: a late offer; a refused re-INVITE.
        let late = crate::tm::RequestFacts {
            body: false,
            in_dialog: false,
        };
        let reinvite = crate::tm::RequestFacts {
            body: true,
            in_dialog: true,
        };
        assert_eq!(
            manage_in(&reply(200, "INVITE", true), Some(late)),
            Some(Cmd::Offer)
        );
        assert_eq!(
            manage_in(&reply(183, "INVITE", true), Some(late)),
            Some(Cmd::Offer)
        );
        assert_eq!(
            manage_in(&reply(486, "INVITE", false), Some(late)),
            Some(Cmd::Delete)
        );
        assert_eq!(
            manage_in(&reply(200, "INVITE", true), Some(reinvite)),
            Some(Cmd::Answer)
        );
        assert_eq!(
            manage_in(&reply(491, "INVITE", false), Some(reinvite)),
            None
        );
    }
}
