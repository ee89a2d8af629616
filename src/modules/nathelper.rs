//! Module nathelper (Kamailio's): NAT detection and traversal for UAs behind NATs.
//!
//! - `nat_uac_test(flags)`: true when any flagged test holds (1 Contact private, 2 top Via's
//!   address is not the source, 4 top Via private, 8 SDP `c=` private, 16 source port is not
//!   the Via's, 32 source address private, 64 came over WebSocket, 128 Contact port is not the
//!   source port, 256 SDP `c=` is not the source, 512 Request-URI private, 1024 Contact
//!   address is not the source).
//! - `fix_nated_contact()`: the (first) Contact URI's host:port becomes the source's.
//! - `fix_nated_register()`: `save` keeps the source address and socket with the bindings
//!   (see `modules::registrar`); the Contact is stored unchanged.
//! - `force_rport()`: the request is treated as if its top Via had `rport`: replies go to the
//!   source port, and the relayed request's Via says `rport=<source port>`.
//! - `add_contact_alias()` / `handle_ruri_alias()`: `;alias=ip~port~proto` on the Contact, and
//!   back from the Request-URI into the destination URI.
//! - `fix_nated_sdp(flags[, ip])`: see [`crate::nathelper::sdp`]; Content-Length follows.
//!
//! Each edits the message through the script's edits; a function that would edit text another
//! nathelper call already edited (the Contact, the body) returns false instead.
//! `fix_nated_contact`, `add_contact_alias` and `fix_nated_sdp` run in the request route and in
//! an `onreply_route` (over a NATed callee's reply, with the reply's source address: tm relays
//! a provisional or 2xx with the route's edits); `nat_uac_test` in every route kind but
//! branch_route; the others in the request route.
//!
//! The parameters of the NAT keep-alives are read here ([`PingConfig`]); the pinger is
//! `mgmt::nathelper`.

use std::net::IpAddr;
use std::time::Duration;

use ser_parser::{Contact, HeaderName, Via};
use ser_script::{Arg, BindCtx, KindSet, Value};

use super::core::f;
use super::ctx::MsgCtx;
use super::{arg_int, arg_str, Action, Exports, ParamDef, ParamKind, Params};
use crate::nathelper::{self as nh, sdp};
use crate::sip::{fmt_ip, Transport};

const MODULE: &str = "nathelper";

/// A nathelper action, its arguments checked at load.
#[derive(Debug, Clone, Copy)]
pub enum NatOp {
    UacTest(u32),
    FixContact,
    FixRegister,
    ForceRport,
    AddContactAlias,
    HandleRuriAlias,
    FixSdp { flags: u32, ip: Option<IpAddr> },
}

/// What nathelper calls did to this message (kept across a suspended run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatMarks {
    /// `force_rport()` ran.
    pub force_rport: bool,
    /// `fix_nated_register()` ran: `save` keeps the source address.
    pub fix_register: bool,
    /// The Contact URI was edited (fix_nated_contact, add_contact_alias).
    pub contact_edited: bool,
    /// The body was edited (fix_nated_sdp).
    pub sdp_edited: bool,
}

/// nat_uac_test's flags.
pub const UAC_TEST_FLAGS: u32 = 0x7ff;

/// The parameters (name, kind, lowest, highest) with their defaults in [`PingConfig`].
const INT_PARAMS: &[(&str, i64, i64)] = &[
    ("natping_interval", 0, 86_400),
    ("ping_nated_only", 0, 1),
    ("natping_processes", 1, 64),
    ("natping_rate", 1, 100_000),
    ("natping_max_failures", 0, 1_000),
    ("nat_bflag", 0, 31),
];
const STR_PARAMS: &[&str] = &["natping_method", "natping_from"];

/// The keep-alive parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingConfig {
    /// 0: no keep-alives (the default).
    pub interval: Duration,
    /// Only bindings flagged NATed (default true).
    pub nated_only: bool,
    /// Pings per second at most (default [`DEFAULT_RATE`]).
    pub rate: u32,
    /// None: a 4-byte "\r\n\r\n" datagram (the default); Some: a request of that method.
    pub method: Option<String>,
    /// The From URI of the request pings (default `sip:pinger@<our first address>`).
    pub from: Option<String>,
    /// Unanswered request pings in a row after which a binding is removed (0: never, the
    /// default).
    pub max_failures: u32,
}

/// The default cap on keep-alives per second: 100 spreads 10 000 NATed phones over a 100 s
/// interval, and costs a shard less than 1 % of its time.
pub const DEFAULT_RATE: u32 = 100;

impl PingConfig {
    pub fn from_params(p: &Params) -> Self {
        let int = |n: &str| p.int(MODULE, n);
        Self {
            interval: Duration::from_secs(
                int("natping_interval")
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            ),
            nated_only: int("ping_nated_only") != Some(0),
            rate: int("natping_rate")
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_RATE),
            method: p
                .str(MODULE, "natping_method")
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(|m| m.to_ascii_uppercase()),
            from: p
                .str(MODULE, "natping_from")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
            max_failures: int("natping_max_failures")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
        }
    }
}

pub fn register(ex: &mut Exports) {
    let tests = KindSet::REQUEST | KindSet::ONREPLY | KindSet::FAILURE | KindSet::REPLY;
    ex.function(f("nat_uac_test", 1, 1, tests, |a, c| {
        let n = a.first().map(arg_int).transpose()?.unwrap_or(0);
        u32::try_from(n)
            .ok()
            .filter(|n| *n != 0 && n & !UAC_TEST_FLAGS == 0)
            .map(|n| Action::Nat(NatOp::UacTest(n)))
            .ok_or_else(|| c.fail_at(0, format!("flags {n}: 1 to 2047")))
    }));
    let req = KindSet::REQUEST;
    // What edits the message may run over a reply too (the relayed copy carries it).
    let edit = KindSet::REQUEST | KindSet::ONREPLY;
    ex.function(f("fix_nated_contact", 0, 0, edit, |_, _| {
        Ok(Action::Nat(NatOp::FixContact))
    }));
    ex.function(f("fix_nated_register", 0, 0, req, |_, _| {
        Ok(Action::Nat(NatOp::FixRegister))
    }));
    ex.function(f("force_rport", 0, 0, req, |_, _| {
        Ok(Action::Nat(NatOp::ForceRport))
    }));
    ex.function(f("add_contact_alias", 0, 0, edit, |_, _| {
        Ok(Action::Nat(NatOp::AddContactAlias))
    }));
    ex.function(f("handle_ruri_alias", 0, 0, req, |_, _| {
        Ok(Action::Nat(NatOp::HandleRuriAlias))
    }));
    ex.function(f("fix_nated_sdp", 1, 2, edit, bind_fix_sdp));
    for (name, _, _) in INT_PARAMS {
        ex.param(
            MODULE,
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
        ex.check(MODULE, name, check_int);
    }
    for name in STR_PARAMS {
        ex.param(
            MODULE,
            ParamDef {
                name,
                kind: ParamKind::Str,
            },
        );
        ex.check(MODULE, name, check_str);
    }
}

fn bind_fix_sdp(a: &[Arg], c: &BindCtx<'_>) -> Result<Action, String> {
    let n = a.first().map(arg_int).transpose()?.unwrap_or(0);
    let flags = u32::try_from(n)
        .ok()
        .filter(|n| *n != 0 && n & !sdp::FLAGS == 0)
        .ok_or_else(|| {
            c.fail_at(
                0,
                format!("flags {n}: 1 (a=direction:active), 2 (c=), 8 (o=), or their sum"),
            )
        })?;
    let ip = match a.get(1) {
        None => None,
        Some(x) => {
            let s = arg_str(x)?;
            Some(
                nh::host_ip(&s)
                    .ok_or_else(|| c.fail_at(1, format!("\"{s}\" is not an IP address")))?,
            )
        }
    };
    Ok(Action::Nat(NatOp::FixSdp { flags, ip }))
}

fn check_int(name: &str, v: &Value, _: &Params) -> Result<(), String> {
    let Value::Int(n) = v else {
        return Err(format!("nathelper's {name} is a number"));
    };
    match INT_PARAMS.iter().find(|(p, _, _)| *p == name) {
        Some((_, lo, hi)) if !(*lo..=*hi).contains(n) => {
            Err(format!("nathelper's {name} must be {lo} to {hi}, not {n}"))
        }
        _ => Ok(()),
    }
}

fn check_str(name: &str, v: &Value, _: &Params) -> Result<(), String> {
    let (Value::Str(s) | Value::Ident(s)) = v else {
        return Err(format!("nathelper's {name} is a string"));
    };
    let s = s.trim();
    match name {
        "natping_method" if !s.is_empty() => {
            let m = s.to_ascii_uppercase();
            if !s.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("natping_method \"{s}\" is not a method"));
            }
            if matches!(m.as_str(), "INVITE" | "ACK" | "CANCEL") {
                return Err(format!("natping_method {m} cannot be a keep-alive"));
            }
            Ok(())
        }
        "natping_from" if !s.is_empty() => ser_parser::parse_uri(s)
            .map(|_| ())
            .map_err(|_| format!("natping_from \"{s}\" is not a SIP URI")),
        _ => Ok(()),
    }
}

impl MsgCtx<'_, '_> {
    pub(crate) fn nathelper(&mut self, op: &NatOp) -> i32 {
        let r = match *op {
            NatOp::UacTest(flags) => self.nat_uac_test(flags),
            NatOp::FixContact => self.fix_nated_contact(),
            NatOp::FixRegister => {
                self.nat.fix_register = true;
                true
            }
            NatOp::ForceRport => {
                self.nat.force_rport = true;
                true
            }
            NatOp::AddContactAlias => return self.add_contact_alias(),
            NatOp::HandleRuriAlias => return self.handle_ruri_alias(),
            NatOp::FixSdp { flags, ip } => self.fix_nated_sdp(flags, ip),
        };
        if r {
            1
        } else {
            -1
        }
    }

    /// The first Contact's URI (parsed) and its range in the message; None when there is
    /// none or it does not parse.
    fn first_contact(&self) -> Option<(ser_parser::Uri<'_>, std::ops::Range<usize>)> {
        match self.msg.contacts().next()? {
            Ok(Contact::Addr { addr, .. }) => {
                let uri = addr.parse_uri().ok()?;
                Some((uri, addr.uri_range))
            }
            _ => None,
        }
    }

    fn nat_uac_test(&mut self, flags: u32) -> bool {
        let src = self.at.src;
        let on = |bit: u32| flags & bit != 0;
        let via = if on(2 | 4 | 16) {
            self.msg.top_via().ok()
        } else {
            None
        };
        let contact = if on(1 | 128 | 1024) {
            self.first_contact()
                .map(|(u, _)| (u.host_str, u.port, u.scheme))
        } else {
            None
        };
        let via_test = |test: &dyn Fn(&Via<'_>) -> bool| via.as_ref().is_some_and(test);
        (on(1) && contact.is_some_and(|(h, _, _)| nh::host_is_private(h)))
            || (on(2) && via_test(&|v| !nh::host_is(v.host_str, src.ip())))
            || (on(4) && via_test(&|v| nh::host_is_private(v.host_str)))
            || (on(8) && sdp::has_private(self.msg.body()))
            || (on(16) && via_test(&|v| v.port.unwrap_or(5060) != src.port()))
            || (on(32) && nh::is_private(src.ip()))
            || (on(64) && matches!(self.at.transport, Transport::Ws | Transport::Wss))
            || (on(128)
                && contact.is_some_and(|(_, p, s)| {
                    let default = if matches!(s, ser_parser::Scheme::Sips) {
                        5061
                    } else {
                        5060
                    };
                    p.unwrap_or(default) != src.port()
                }))
            || (on(256) && sdp::differs_from(self.msg.body(), src.ip()))
            || (on(512)
                && self
                    .current_uri_parsed()
                    .is_ok_and(|u| nh::host_is_private(u.host_str)))
            || (on(1024) && contact.is_some_and(|(h, _, _)| !nh::host_is(h, src.ip())))
    }

    /// The Contact URI's host:port becomes the source address and port.
    fn fix_nated_contact(&mut self) -> bool {
        if self.nat.contact_edited {
            return false;
        }
        let Some((uri, range)) = self.first_contact() else {
            return false;
        };
        let host = uri.host_range();
        let end = uri.port_range().map_or(host.end, |p| p.end);
        let (start, end) = (range.start + host.start, range.start + end);
        let hp = nh::uri_hostport(self.at.src);
        self.s.edits.replace(start..end, hp.as_bytes());
        self.nat.contact_edited = true;
        true
    }

    /// `;alias=ip~port~proto` on the Contact URI (in angle brackets, added when missing):
    /// 1 when added, 2 when the Contact already names the source (nothing to add), -1 when
    /// there is no Contact or it was edited already.
    fn add_contact_alias(&mut self) -> i32 {
        if self.nat.contact_edited {
            return -1;
        }
        let Some((uri, range)) = self.first_contact() else {
            return -1;
        };
        let src = self.at.src;
        let default_port = self.at.transport.default_port();
        if nh::host_is(uri.host_str, src.ip())
            && uri.port.unwrap_or(default_port) == src.port()
            && self.at.transport == Transport::Udp
        {
            return 2;
        }
        if uri.param("alias").is_some() {
            return -1;
        }
        let alias = format!(";alias={}", nh::encode_alias(src, self.at.transport));
        let raw = uri.raw;
        // Before URI headers ('?'), which end the parameters.
        let at = range.start + raw.find('?').unwrap_or(raw.len());
        let bracketed = range.start > 0
            && self.msg.buf().get(range.start - 1) == Some(&b'<')
            && self.msg.buf().get(range.end) == Some(&b'>');
        if bracketed {
            self.s.edits.insert(at, alias.as_bytes());
        } else {
            let text = format!("<{raw}{alias}>");
            let text = match raw.find('?') {
                Some(q) => format!("<{}{alias}{}>", &raw[..q], &raw[q..]),
                None => text,
            };
            self.s.edits.replace(range, text.as_bytes());
        }
        self.nat.contact_edited = true;
        1
    }

    /// An alias on the Request-URI goes (the URI loses it) and becomes the destination URI:
    /// 1; 2 when there is none; -1 when it does not read.
    fn handle_ruri_alias(&mut self) -> i32 {
        let Some((uri, value)) = nh::take_alias(self.current_uri()) else {
            return 2;
        };
        let Some((addr, t)) = nh::decode_alias(value) else {
            crate::notice!("nathelper: bad alias \"{value}\" in {}", self.current_uri());
            return -1;
        };
        self.s.dst_uri = nh::alias_dst_uri(addr, t);
        self.s.dst = None;
        self.s.uri = uri;
        self.uri_changed = true;
        1
    }

    fn fix_nated_sdp(&mut self, flags: u32, ip: Option<IpAddr>) -> bool {
        if self.nat.sdp_edited {
            return false;
        }
        let body = self.msg.body();
        let Some(new) = sdp::rewrite(body, flags, ip.unwrap_or(self.at.src.ip())) else {
            return false;
        };
        if new == body {
            return true;
        }
        let start = self.msg.body_start();
        self.s.edits.replace(start..start + body.len(), &new);
        let len = new.len().to_string();
        match self.msg.header(HeaderName::ContentLength) {
            Some(h) => {
                let r = h.value_range.clone();
                self.s.edits.replace(r, len.as_bytes());
            }
            None => {
                let line = format!("Content-Length: {len}");
                self.s.edits.append_header(self.msg, line.as_bytes());
            }
        }
        self.nat.sdp_edited = true;
        true
    }

    /// Writes `received`/`rport` on the request's top Via (`top`) for a copy being relayed
    /// (RFC 3261 18.2.1, RFC 3581), and `rport=<source port>` where the UA did not ask for it
    /// but the script called `force_rport()`.
    pub(crate) fn mark_top_via(&mut self, top: &Via<'_>) {
        let (mut received, rport) = self.received_for(top);
        let forced = self.nat.force_rport && top.rport.is_none();
        if forced {
            received = Some(self.at.src.ip());
        }
        let mut rbuf = [0u8; 64];
        let received = received.map(|ip| fmt_ip(ip, &mut rbuf));
        self.s.edits.set_received_on(top, received, rport);
        if forced {
            let r = format!(";rport={}", self.at.src.port());
            self.s.edits.insert(top.range.end, r.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NatOp;
    use crate::config::Config;
    use crate::core::Core;
    use crate::loader::load;
    use crate::modules::ctx::{MsgCtx, Scratch};
    use crate::sip::{Arrival, Listen, Transport};
    use crate::stats::Stats;

    const ME: &str = "192.0.2.1:5060";

    /// Runs `ops` over `req` received from `src` over `t`; their results and the request as
    /// it would be written.
    fn run(req: &str, src: &str, t: Transport, ops: &[NatOp]) -> (Vec<i32>, String) {
        let core = Core::new(
            &Config::default(),
            vec![Listen::udp(ME.parse().expect("addr"))],
            None,
        );
        // The strict parser may refuse a broken Contact; the lenient one lets it through.
        let msg = ser_parser::parse(req.as_bytes())
            .ok()
            .or_else(|| ser_parser::parse_lenient(req.as_bytes()))
            .expect("test request parses");
        let stats = Stats::default();
        let mut scratch = Scratch::default();
        let mut at = Arrival::udp(src.parse().expect("addr"), ME.parse().expect("addr"), 0, 0);
        at.transport = t;
        let mut ctx = MsgCtx::new(&core, &stats, &msg, at, &mut scratch);
        let r = ops.iter().map(|op| ctx.nathelper(op)).collect();
        if ctx.uri_changed {
            let uri = ctx.s.uri.clone();
            ctx.s.edits.set_request_uri(&msg, uri.as_bytes());
        }
        let mut buf = Vec::new();
        ser_parser::write(&msg, &scratch.edits, &mut buf);
        (r, String::from_utf8(buf).expect("utf-8"))
    }

    fn invite(ruri: &str, via: &str, contact: &str, body: &str) -> String {
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1\r\n\
             From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.org>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Each flag of nat_uac_test on a request that trips it and one that does not.
    #[test]
    fn every_nat_uac_test_flag() {
        let sdp_priv = "v=0\r\nc=IN IP4 10.1.1.1\r\n";
        let sdp_src = "v=0\r\nc=IN IP4 203.0.113.5\r\n";
        let clean = invite(
            "sip:b@198.51.100.1",
            "203.0.113.5:5060",
            "<sip:a@203.0.113.5:5060>",
            sdp_src,
        );
        let src = "203.0.113.5:5060";
        let test = |req: &str, src: &str, t: Transport, flag: u32| {
            run(req, src, t, &[NatOp::UacTest(flag)]).0[0] == 1
        };
        for flag in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] {
            assert!(
                !test(&clean, src, Transport::Udp, flag),
                "flag {flag} on a clean request"
            );
        }
        let cases = [
            (
                1,
                invite("sip:b@h", "203.0.113.5", "<sip:a@192.168.0.2>", ""),
                src,
                Transport::Udp,
            ),
            (
                2,
                invite("sip:b@h", "198.51.100.7", "<sip:a@h>", ""),
                src,
                Transport::Udp,
            ),
            (
                4,
                invite("sip:b@h", "172.16.0.9:5060", "<sip:a@h>", ""),
                src,
                Transport::Udp,
            ),
            (
                8,
                invite("sip:b@h", "203.0.113.5", "<sip:a@h>", sdp_priv),
                src,
                Transport::Udp,
            ),
            (
                16,
                invite("sip:b@h", "203.0.113.5:5062", "<sip:a@h>", ""),
                src,
                Transport::Udp,
            ),
            (32, clean.clone(), "100.64.1.1:5060", Transport::Udp),
            (64, clean.clone(), src, Transport::Ws),
            (
                128,
                invite("sip:b@h", "203.0.113.5", "<sip:a@203.0.113.5:6000>", ""),
                src,
                Transport::Udp,
            ),
            (
                256,
                invite("sip:b@h", "203.0.113.5", "<sip:a@h>", sdp_priv),
                src,
                Transport::Udp,
            ),
            (
                512,
                invite("sip:b@10.0.0.1", "203.0.113.5", "<sip:a@h>", ""),
                src,
                Transport::Udp,
            ),
            (
                1024,
                invite("sip:b@h", "203.0.113.5", "<sip:a@198.51.100.9:5060>", ""),
                src,
                Transport::Udp,
            ),
        ];
        for (flag, req, src, t) in &cases {
            assert!(test(req, src, *t, *flag), "flag {flag}: {req}");
            // Any flag that holds makes the test true.
            assert!(test(req, src, *t, flag | 1), "flag {flag}|1");
        }
        // A Contact that does not parse is a false test.
        let bad = invite("sip:b@h", "203.0.113.5", "<sip:@@>", "");
        assert!(!test(&bad, src, Transport::Udp, 1 | 128 | 1024));
    }

    #[test]
    fn contact_alias_and_sdp_edits() {
        let req = invite(
            "sip:b@h",
            "192.168.1.20:5060",
            "<sip:a@192.168.1.20:5060;transport=udp>;expires=60",
            "v=0\r\nc=IN IP4 192.168.1.20\r\nm=audio 4000 RTP/AVP 0\r\n",
        );
        let src = "203.0.113.5:40000";
        let (r, out) = run(
            &req,
            src,
            Transport::Udp,
            &[
                NatOp::FixContact,
                NatOp::AddContactAlias,
                NatOp::FixSdp { flags: 3, ip: None },
            ],
        );
        assert_eq!(r, [1, -1, 1], "one Contact edit");
        assert!(
            out.contains("Contact: <sip:a@203.0.113.5:40000;transport=udp>;expires=60\r\n"),
            "{out}"
        );
        let body =
            "v=0\r\nc=IN IP4 203.0.113.5\r\nm=audio 4000 RTP/AVP 0\r\na=direction:active\r\n";
        assert!(
            out.ends_with(&format!("Content-Length: {}\r\n\r\n{body}", body.len())),
            "{out}"
        );
        // A Contact without brackets gets them with its alias; the alias comes back off a
        // Request-URI as the destination URI.
        let req = invite("sip:b@h", "192.168.1.20", "sip:a@192.168.1.20", "");
        let (r, out) = run(&req, src, Transport::Udp, &[NatOp::AddContactAlias]);
        assert_eq!(r, [1]);
        assert!(
            out.contains("Contact: <sip:a@192.168.1.20;alias=203.0.113.5~40000~1>\r\n"),
            "{out}"
        );
        let req = invite(
            "sip:a@192.168.1.20;alias=203.0.113.5~40000~1;lr",
            "h",
            "<sip:b@h>",
            "",
        );
        let (r, out) = run(&req, src, Transport::Udp, &[NatOp::HandleRuriAlias]);
        assert_eq!(r, [1]);
        assert!(
            out.starts_with("INVITE sip:a@192.168.1.20;lr SIP/2.0\r\n"),
            "{out}"
        );
        // Already the source: nothing to add (2).
        let req = invite("sip:b@h", "h", "<sip:a@203.0.113.5:40000>", "");
        assert_eq!(
            run(&req, src, Transport::Udp, &[NatOp::AddContactAlias]).0,
            [2]
        );
        // No alias: 2; a bad one: -1.
        let req = invite("sip:a@h;alias=x~1", "h", "<sip:b@h>", "");
        assert_eq!(
            run(&req, src, Transport::Udp, &[NatOp::HandleRuriAlias]).0,
            [-1]
        );
        let req = invite("sip:a@h", "h", "<sip:b@h>", "");
        assert_eq!(
            run(&req, src, Transport::Udp, &[NatOp::HandleRuriAlias]).0,
            [2]
        );
        // fix_nated_sdp over a body that is not SDP: false, nothing changed.
        let req = invite("sip:a@h", "h", "<sip:b@h>", "hello");
        let (r, out) = run(
            &req,
            src,
            Transport::Udp,
            &[NatOp::FixSdp { flags: 2, ip: None }],
        );
        assert_eq!((r, out), (vec![-1], req));
    }

    #[test]
    fn functions_and_parameters_are_checked_at_load() {
        let ok = "loadmodule \"modules/nathelper/nathelper.so\"
modparam(\"nathelper\", \"natping_interval\", 20)
modparam(\"nathelper\", \"natping_method\", \"OPTIONS\")
route {
    if (nat_uac_test(\"19\")) { fix_nated_contact(); force_rport(); };
    fix_nated_sdp(\"3\", \"203.0.113.1\");
    handle_ruri_alias();
}
";
        load("t.cfg", ok, &Config::default()).expect("loads");
        for (bad, line, what) in [
            ("nat_uac_test(\"4096\")", 5, "1 to 2047"),
            ("fix_nated_sdp(\"4\")", 5, "flags 4: 1 (a=direction"),
            ("fix_nated_sdp(\"2\", \"nohost\")", 5, "not an IP address"),
        ] {
            let src = ok.replace("handle_ruri_alias()", bad).replace(
                "    if (nat_uac_test(\"19\")) { fix_nated_contact(); force_rport(); };\n    fix_nated_sdp(\"3\", \"203.0.113.1\");\n",
                "",
            );
            let e = load("t.cfg", &src, &Config::default())
                .err()
                .expect("refused");
            assert_eq!(e.line, line, "{e}");
            assert!(e.msg.contains(what), "{e}");
        }
        let bad = ok.replace("\"OPTIONS\"", "\"INVITE\"");
        let e = load("t.cfg", &bad, &Config::default())
            .err()
            .expect("refused");
        assert_eq!(e.line, 3, "{e}");
        let onreply = ok.replace(
            "route {",
            "onreply_route[1] { fix_nated_contact(); }\nroute {",
        );
        load("t.cfg", &onreply, &Config::default()).expect("fix_nated_contact over replies");
        let bad = ok.replace("route {", "onreply_route[1] { force_rport(); }\nroute {");
        assert!(load("t.cfg", &bad, &Config::default()).is_err());
    }
}
