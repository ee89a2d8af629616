//! Module rr: record routing (RFC 3261 16.6 step 4, 16.4, 16.12).
//!
//! `record_route` puts our `Record-Route: <sip:ip:port;lr>` above the ones already in the
//! request, so that the dialog's later requests come through us; a socket that is not UDP is
//! named with `;transport=` (`<sip:ip:5061;transport=tls;lr>`, as Kamailio writes it, not a
//! `sips:` URI). The socket is the one each copy of the request leaves from, so the line is
//! written by the writers of forward and t_relay once the socket is chosen
//! ([`MsgCtx::add_record_route`]). When the request leaves from another socket than it came
//! in on (TLS in, UDP out; another address), two go in, each with `;r2=on` (Kamailio's
//! `enable_double_rr`, on by default there): the top one names the outbound socket, which is
//! what the downstream side reaches us at; the next one the inbound socket, for the upstream
//! side, which reads the route set in reverse (RFC 3261 12.1.2).
//!
//! `loose_route` routes an in-dialog request by its Route header fields: it undoes a
//! strict-routing previous hop (RFC 3261 16.4: the Request-URI is ours, so the real one is the
//! last Route), removes our own Route entry (both of a double pair, and then the request leaves
//! from the socket the second one names), and then either sends to a loose next hop (the
//! destination URI, Request-URI untouched) or does the strict-router translation of 16.6 step
//! 6. `rewriteFromRoute` is SER 0.8's strict routing: Request-URI ← first Route.
//!
//! Nothing here changes the message: Route removals and the Record-Route lines are splices in
//! the shard's `Edits`, a new Request-URI goes to `Scratch::uri` (applied by the writer in
//! forward/t_relay), the loose next hop to `Scratch::dst_uri`. Deliberately not done: dialog
//! state, parameters encoded into the Record-Route (ftag) and Route handling in replies.

use std::ops::Range;

use ser_parser::{parse_uri, Edits, Header, HeaderName, Message, NameAddr};
use ser_script::KindSet;
use smallvec::SmallVec;

use super::core::f;
use super::ctx::MsgCtx;
use super::Action;
use super::{Exports, ParamDef, ParamKind};
use crate::sip::{hostport, Transport};

/// What `record_route()` asked for; the lines are written per outgoing copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRoute {
    /// `;lr=on` rather than `;lr` (rr's `enable_full_lr`).
    pub full_lr: bool,
}

pub fn register(ex: &mut Exports) {
    ex.function(f("record_route", 0, 0, KindSet::REQUEST, |_, ctx| {
        let full_lr = ctx
            .host::<super::Params>()
            .and_then(|p| p.int("rr", "enable_full_lr"))
            .unwrap_or(0)
            != 0;
        Ok(Action::RecordRoute { full_lr })
    }));
    ex.alias("addRecordRoute", "record_route");
    ex.function(f("loose_route", 0, 0, KindSet::REQUEST, |_, _| {
        Ok(Action::LooseRoute)
    }));
    ex.function(f("rewriteFromRoute", 0, 0, KindSet::REQUEST, |_, _| {
        Ok(Action::RewriteFromRoute)
    }));
    ex.param(
        "rr",
        ParamDef {
            name: "enable_full_lr",
            kind: ParamKind::Int,
        },
    );
}

/// One Route value of the request, with the header line it is on and whether it goes.
struct RouteVal<'m> {
    addr: NameAddr<'m>,
    /// Index into `msg.headers()`.
    line: usize,
    removed: bool,
}

/// Typical in-dialog requests carry a handful of Route values: kept inline.
type RouteSet<'m> = SmallVec<[RouteVal<'m>; 4]>;

/// Every Route value of `msg` in order, each with its header line; None when one is malformed.
fn route_set<'m>(msg: &Message<'m>) -> Option<RouteSet<'m>> {
    let headers = msg.headers();
    let mut out = RouteSet::new();
    let mut line = 0;
    for r in msg.routes() {
        let addr = r.ok()?;
        // Values come line by line, in order: the line only moves forward.
        let within = |h: &Header<'_>| {
            h.name == HeaderName::Route
                && h.value_range.start <= addr.range.start
                && addr.range.end <= h.value_range.end
        };
        line += headers.get(line..)?.iter().position(within)?;
        out.push(RouteVal {
            addr,
            line,
            removed: false,
        });
    }
    Some(out)
}

/// Records the removal of every value marked `removed`: a line whose values all go is
/// deleted whole; otherwise each run of removed values goes with the comma that joins it to
/// a value that stays, so the line remains a well-formed list.
fn remove_marked(headers: &[Header<'_>], vals: &[RouteVal<'_>], edits: &mut Edits) {
    for (line, h) in headers.iter().enumerate() {
        let group: SmallVec<[&RouteVal<'_>; 4]> = vals.iter().filter(|v| v.line == line).collect();
        if group.is_empty() || !group.iter().any(|v| v.removed) {
            continue;
        }
        if group.iter().all(|v| v.removed) {
            edits.delete(h.line.clone());
            continue;
        }
        let mut k = 0;
        while k < group.len() {
            if !group.get(k).is_some_and(|v| v.removed) {
                k += 1;
                continue;
            }
            let first = k;
            while group.get(k).is_some_and(|v| v.removed) {
                k += 1;
            }
            let (Some(a), Some(b)) = (group.get(first), group.get(k - 1)) else {
                break;
            };
            // k: the first value after the run that stays, if any.
            let range: Option<Range<usize>> = match group.get(k) {
                Some(next) => Some(a.addr.range.start..next.addr.range.start),
                None => first
                    .checked_sub(1)
                    .and_then(|p| group.get(p))
                    .map(|prev| prev.addr.range.end..b.addr.range.end),
            };
            if let Some(r) = range {
                edits.delete(r);
            }
        }
    }
}

impl<'m> MsgCtx<'_, 'm> {
    /// The transport and address of socket `sock` (the arrival's for one we do not know).
    fn socket_of(&self, sock: usize) -> (Transport, std::net::SocketAddr) {
        match self.core.local.sockets.get(sock) {
            Some(l) => (l.transport, l.addr),
            None => (self.at.transport, self.at.local),
        }
    }

    /// One Record-Route line naming socket `sock`.
    fn rr_line(&self, sock: usize, r2: bool, full_lr: bool, out: &mut String) {
        use std::fmt::Write;
        let (transport, addr) = self.socket_of(sock);
        let _ = write!(out, "Record-Route: <sip:{}", hostport(&addr));
        if transport != Transport::Udp {
            let _ = write!(out, ";transport={}", transport.name());
        }
        if r2 {
            out.push_str(";r2=on");
        }
        out.push_str(if full_lr { ";lr=on>\r\n" } else { ";lr>\r\n" });
    }

    /// `record_route()`: our Record-Route (`;lr=on` with rr's `enable_full_lr`) goes into
    /// every copy of the request sent from now on (see [`Self::add_record_route`]).
    pub(crate) fn record_route(&mut self, full_lr: bool) -> i32 {
        if !self.msg.is_request() {
            return self.fail(500, "Not a request");
        }
        self.record_route = Some(RecordRoute { full_lr });
        1
    }

    /// Writes what `record_route()` asked for into the edits of a copy of the request that
    /// leaves from socket `out_sock` (the caller rolls the edits back after writing it): one
    /// line for the socket, or two when it is not the one the request came in on.
    pub(crate) fn add_record_route(&mut self, out_sock: usize) {
        let Some(rr) = self.record_route else {
            return;
        };
        let msg = self.msg;
        let inbound = self.at.socket;
        let double = self.socket_of(out_sock) != self.socket_of(inbound);
        let mut lines = String::with_capacity(128);
        if double {
            self.rr_line(out_sock, true, rr.full_lr, &mut lines);
        }
        self.rr_line(inbound, double, rr.full_lr, &mut lines);
        // Ours first (16.6 step 4), above the Record-Routes of earlier hops; after the last
        // header when there are none.
        let at = msg
            .header(HeaderName::RecordRoute)
            .map_or(msg.headers_end(), |h| h.line.start);
        self.s.edits.insert(at, lines.as_bytes());
    }

    /// Has a Route line of this request already been edited (loose_route ran before)?
    fn routes_edited(&self) -> bool {
        let routes = || {
            self.msg
                .headers()
                .iter()
                .filter(|h| h.name == HeaderName::Route)
        };
        self.s.edits.splices().any(|(r, _)| {
            !r.is_empty() && routes().any(|h| r.start < h.line.end && h.line.start < r.end)
        })
    }

    /// Is `uri` ours? A URI without a port means the default one of its transport (5061
    /// for `;transport=tls` and `sips:`).
    fn is_my_uri(&self, uri: &str) -> Option<bool> {
        let u = parse_uri(uri).ok()?;
        let port = u.port.or_else(|| Some(uri_transport(&u).default_port()));
        Some(self.core.local.is_myself(&u.host, u.host_str, port))
    }

    /// Our socket a Record-Route URI of ours names (its address, port and transport).
    fn socket_named(&self, uri: &str) -> Option<usize> {
        let u = parse_uri(uri).ok()?;
        let t = uri_transport(&u);
        let ip = u
            .host_str
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let addr = std::net::SocketAddr::new(ip, u.port.unwrap_or(t.default_port()));
        self.core.local.socket_at(t, &addr)
    }

    fn set_uri(&mut self, uri: &str) {
        self.s.uri.clear();
        self.s.uri.push_str(uri);
        self.uri_changed = true;
    }

    pub(crate) fn loose_route(&mut self) -> i32 {
        let msg = self.msg;
        if !msg.is_request() || msg.header(HeaderName::Route).is_none() {
            return -1;
        }
        let Some(mut rs) = route_set(msg) else {
            return self.fail(400, "Bad Route");
        };
        if rs.is_empty() {
            return -1;
        }
        // A request without a To tag opens a dialog: its Route set was preloaded by the UA
        // (an outbound proxy, RFC 3261 8.1.2), never built from our Record-Route, so its
        // Request-URI is the target even when it names us (sip:bob@us), and a route set of
        // ours alone leaves the request to the rest of the script (SER's and Kamailio's rr:
        // `is_preloaded`, the Route removed, "not route driven").
        let preloaded = msg
            .to()
            .is_ok_and(|t| !t.tag.is_some_and(|tag| !tag.is_empty()));
        let mut new_uri: Option<&'m str> = None;
        // Whether the entry of ours just removed was the first of a double Record-Route.
        let mut pair = false;
        // 1. The Request-URI is ours: the previous hop was a strict router, which put the
        // Record-Route URI we left into it; the real Request-URI is the last Route (16.4).
        // In a preloaded request only a URI as we write them into Record-Route (`;lr`) is
        // taken for that; `sip:bob@us` is the request's target.
        let strict_prev = self.is_my_uri(self.current_uri()) == Some(true)
            && (!preloaded || has_lr(self.current_uri()));
        if strict_prev {
            pair = has_r2(self.current_uri());
            if let Some(last) = rs.last_mut() {
                new_uri = Some(last.addr.uri);
                last.removed = true;
            }
        }
        // 2. Our own entry on top goes; with `;r2=on` (a double Record-Route of ours), the
        // next one too when it is ours, and the request leaves from the socket it names.
        // After a strict previous hop the first of the pair was the Request-URI.
        for _ in 0..2 {
            let Some(top) = rs.iter_mut().find(|v| !v.removed) else {
                break;
            };
            match self.is_my_uri(top.addr.uri) {
                Some(true) => {
                    top.removed = true;
                    let uri = top.addr.uri;
                    if pair {
                        if let Some(s) = self.socket_named(uri) {
                            self.force_socket = Some(s);
                        }
                        break;
                    }
                    pair = has_r2(uri);
                    if !pair {
                        break;
                    }
                }
                Some(false) => break,
                None => return self.fail(400, "Bad Route"),
            }
        }
        if preloaded && new_uri.is_none() && rs.iter().all(|v| v.removed) {
            // Only our own entry was preloaded: not route driven.
            if !self.routes_edited() {
                remove_marked(msg.headers(), &rs, &mut self.s.edits);
            }
            return -1;
        }
        if self.routes_edited() {
            // A second call: the route set is already consumed; doing it again would add a
            // second strict-router Route or remove a value that is not ours.
            return 1;
        }
        // 3. The next hop.
        let mut append: Option<String> = None;
        if let Some(top) = rs.iter_mut().find(|v| !v.removed) {
            let Ok(u) = top.addr.parse_uri() else {
                return self.fail(400, "Bad Route");
            };
            if u.param("lr").is_some() {
                self.s.dst_uri.clear();
                self.s.dst_uri.push_str(top.addr.uri);
                // The Route is where it goes now, not a flow an earlier lookup found.
                self.s.dst = None;
            } else {
                // A strict router (16.6 step 6): the Request-URI joins the end of the route
                // set, the strict router's URI becomes the Request-URI.
                append = Some(new_uri.unwrap_or(self.current_uri()).to_string());
                new_uri = Some(top.addr.uri);
                top.removed = true;
            }
        }
        remove_marked(msg.headers(), &rs, &mut self.s.edits);
        if let Some(uri) = append {
            let at = rs
                .last()
                .and_then(|v| msg.headers().get(v.line))
                .map_or(msg.headers_end(), |h| h.line.end);
            let line = format!("Route: <{uri}>\r\n");
            self.s.edits.insert(at, line.as_bytes());
        }
        if let Some(uri) = new_uri {
            self.set_uri(uri);
        }
        1
    }

    pub(crate) fn rewrite_from_route(&mut self) -> i32 {
        let msg = self.msg;
        if !msg.is_request() || msg.header(HeaderName::Route).is_none() {
            return -1;
        }
        let Some(mut rs) = route_set(msg) else {
            return self.fail(400, "Bad Route");
        };
        let Some(top) = rs.first_mut() else {
            return -1;
        };
        if top.addr.parse_uri().is_err() {
            return self.fail(400, "Bad Route");
        }
        top.removed = true;
        let uri = top.addr.uri;
        remove_marked(msg.headers(), &rs, &mut self.s.edits);
        self.set_uri(uri);
        1
    }
}

/// The transport a URI names: `;transport=`, TLS for `sips:`, UDP otherwise.
fn uri_transport(u: &ser_parser::Uri<'_>) -> Transport {
    match u
        .param("transport")
        .flatten()
        .and_then(Transport::from_name)
    {
        Some(t) => t,
        None if u.scheme == ser_parser::Scheme::Sips => Transport::Tls,
        None => Transport::Udp,
    }
}

/// Does a URI carry `;lr` (as every Record-Route URI of ours does)?
fn has_lr(uri: &str) -> bool {
    parse_uri(uri).is_ok_and(|u| u.param("lr").is_some())
}

/// Does a URI of ours carry `;r2=on` (one of a double Record-Route)?
fn has_r2(uri: &str) -> bool {
    parse_uri(uri).is_ok_and(|u| u.param("r2").is_some())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use crate::config::Config;
    use crate::core::Core;
    use crate::modules::ctx::{MsgCtx, Scratch};
    use crate::sip::{Arrival, Listen};
    use crate::stats::Stats;

    const ME: &str = "10.0.0.1:5060";

    fn core() -> Core {
        let sock: SocketAddr = ME.parse().expect("addr");
        Core::new(&Config::default(), vec![Listen::udp(sock)], None)
    }

    struct Outcome {
        ret: i32,
        wire: String,
        next_hop: String,
        dst_uri: String,
    }

    /// Runs `f` over `req` (lines joined by CRLF) and writes the request as forward() would.
    fn run_with(
        core: &Core,
        req: &[String],
        f: impl FnOnce(&mut MsgCtx<'_, '_>) -> i32,
    ) -> Outcome {
        let mut text = req.join("\r\n");
        text.push_str("\r\n\r\n");
        let msg = ser_parser::parse(text.as_bytes()).expect("test request parses");
        let stats = Stats::default();
        let mut scratch = Scratch::default();
        let at = Arrival::udp(
            "192.0.2.9:5060".parse().expect("addr"),
            ME.parse().expect("addr"),
            0,
            0,
        );
        let mut ctx = MsgCtx::new(core, &stats, &msg, at, &mut scratch);
        let ret = f(&mut ctx);
        // Sent back from the socket it came in on.
        ctx.add_record_route(0);
        let next_hop = ctx.next_hop_uri().to_string();
        if ctx.uri_changed {
            let uri = ctx.s.uri.clone();
            ctx.s.edits.set_request_uri(&msg, uri.as_bytes());
        }
        let dst_uri = ctx.s.dst_uri.clone();
        let mut buf = Vec::new();
        ser_parser::write(&msg, &scratch.edits, &mut buf);
        let wire = String::from_utf8(buf).expect("utf-8");
        // What we write must still be a valid request.
        assert!(ser_parser::parse(wire.as_bytes()).is_ok(), "{wire}");
        Outcome {
            ret,
            wire,
            next_hop,
            dst_uri,
        }
    }

    fn run(req: &[String], f: impl FnOnce(&mut MsgCtx<'_, '_>) -> i32) -> Outcome {
        run_with(&core(), req, f)
    }

    const HEAD: [&str; 5] = [
        "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: <sip:bob@example.com>;tag=t2",
        "From: <sip:alice@example.org>;tag=1928301774",
        "Call-ID: a84b4c76e66710",
    ];

    fn req(start: &str, extra: &[&str]) -> Vec<String> {
        let method = start.split(' ').next().unwrap_or("");
        let mut v = vec![start.to_string()];
        v.extend(HEAD.iter().map(|h| h.to_string()));
        v.push(format!("CSeq: 314159 {method}"));
        v.extend(extra.iter().map(|h| h.to_string()));
        v.push("Content-Length: 0".to_string());
        v
    }

    fn lines(wire: &str, name: &str) -> Vec<String> {
        wire.split("\r\n")
            .filter(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .map(str::to_string)
            .collect()
    }

    fn request_line(wire: &str) -> &str {
        wire.split("\r\n").next().unwrap_or("")
    }

    const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0";

    #[test]
    fn record_route_without_existing() {
        let o = run(&req(INVITE, &[]), |c| c.record_route(false));
        assert_eq!(o.ret, 1);
        assert_eq!(
            lines(&o.wire, "Record-Route"),
            ["Record-Route: <sip:10.0.0.1:5060;lr>"]
        );
        // Appended after the last header.
        assert!(o
            .wire
            .ends_with("Content-Length: 0\r\nRecord-Route: <sip:10.0.0.1:5060;lr>\r\n\r\n"));
    }

    #[test]
    fn record_route_above_existing() {
        let r = req(
            INVITE,
            &[
                "Record-Route: <sip:p1.example.net;lr>",
                "Record-Route: <sip:p2.example.net;lr>",
            ],
        );
        let o = run(&r, |c| c.record_route(false));
        assert_eq!(o.ret, 1);
        assert_eq!(
            lines(&o.wire, "Record-Route"),
            [
                "Record-Route: <sip:10.0.0.1:5060;lr>",
                "Record-Route: <sip:p1.example.net;lr>",
                "Record-Route: <sip:p2.example.net;lr>",
            ]
        );
    }

    #[test]
    fn record_route_full_lr() {
        let o = run(&req(INVITE, &[]), |c| c.record_route(true));
        assert_eq!(
            lines(&o.wire, "Record-Route"),
            ["Record-Route: <sip:10.0.0.1:5060;lr=on>"]
        );
    }

    #[test]
    fn record_route_ipv6_socket() {
        let sock: SocketAddr = "[2001:db8::1]:5070".parse().expect("addr");
        let core = Core::new(&Config::default(), vec![Listen::udp(sock)], None);
        let o = run_with(&core, &req(INVITE, &[]), |c| c.record_route(false));
        assert_eq!(
            lines(&o.wire, "Record-Route"),
            ["Record-Route: <sip:[2001:db8::1]:5070;lr>"]
        );
    }

    #[test]
    fn record_route_twice_adds_one() {
        for extra in [&[][..], &["Record-Route: <sip:p1.example.net;lr>"][..]] {
            let o = run(&req(INVITE, extra), |c| {
                assert_eq!(c.record_route(false), 1);
                c.record_route(false)
            });
            assert_eq!(o.ret, 1);
            let rr = lines(&o.wire, "Record-Route");
            assert_eq!(rr.len(), extra.len() + 1, "{}", o.wire);
            assert_eq!(rr[0], "Record-Route: <sip:10.0.0.1:5060;lr>");
        }
    }

    const BYE: &str = "BYE sip:bob@192.0.2.4 SIP/2.0";

    #[test]
    fn loose_route_without_route() {
        let o = run(&req(BYE, &[]), |c| c.loose_route());
        assert_eq!(o.ret, -1);
        assert_eq!(request_line(&o.wire), BYE);
        assert_eq!(o.next_hop, "sip:bob@192.0.2.4");
        assert!(o.dst_uri.is_empty());
    }

    #[test]
    fn loose_route_ours_then_loose_next_hop() {
        let r = req(
            BYE,
            &[
                "Route: <sip:10.0.0.1;lr>",
                "Route: \"p2\" <sip:p2.example.net;lr=on>",
            ],
        );
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), BYE);
        assert_eq!(o.dst_uri, "sip:p2.example.net;lr=on");
        assert_eq!(o.next_hop, "sip:p2.example.net;lr=on");
        assert_eq!(
            lines(&o.wire, "Route"),
            ["Route: \"p2\" <sip:p2.example.net;lr=on>"]
        );
    }

    #[test]
    fn loose_route_only_ours() {
        let r = req(BYE, &["Route: <sip:10.0.0.1:5060;lr>"]);
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert!(lines(&o.wire, "Route").is_empty(), "{}", o.wire);
        assert!(o.dst_uri.is_empty());
        assert_eq!(request_line(&o.wire), BYE);
        assert_eq!(o.next_hop, "sip:bob@192.0.2.4");
    }

    #[test]
    fn loose_route_not_ours_loose() {
        // The top Route is not ours (we were not record-routed): just send there.
        let r = req(BYE, &["Route: <sip:p2.example.net;lr>"]);
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(o.dst_uri, "sip:p2.example.net;lr");
        assert_eq!(lines(&o.wire, "Route"), ["Route: <sip:p2.example.net;lr>"]);
    }

    #[test]
    fn loose_route_after_strict_previous_hop() {
        // A strict router put our Record-Route URI into the Request-URI and the real
        // Request-URI at the end of the route set (RFC 3261 16.4).
        let r = req(
            "BYE sip:10.0.0.1;lr SIP/2.0",
            &[
                "Route: <sip:p3.example.net;lr>",
                "Route: <sip:bob@192.0.2.4>",
            ],
        );
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), BYE);
        assert_eq!(lines(&o.wire, "Route"), ["Route: <sip:p3.example.net;lr>"]);
        assert_eq!(o.dst_uri, "sip:p3.example.net;lr");
    }

    #[test]
    fn loose_route_after_strict_previous_hop_last_route() {
        let r = req("BYE sip:10.0.0.1 SIP/2.0", &["Route: <sip:bob@192.0.2.4>"]);
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), BYE);
        assert!(lines(&o.wire, "Route").is_empty());
        assert!(o.dst_uri.is_empty());
        assert_eq!(o.next_hop, "sip:bob@192.0.2.4");
    }

    #[test]
    fn loose_route_strict_next_hop() {
        // RFC 3261 16.6 step 6: the strict router's URI becomes the Request-URI and the
        // Request-URI goes to the end of the route set.
        let r = req(
            BYE,
            &[
                "Route: <sip:10.0.0.1;lr>",
                "Route: <sip:strict.example.net>",
                "Route: <sip:p4.example.net;lr>",
            ],
        );
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), "BYE sip:strict.example.net SIP/2.0");
        assert_eq!(
            lines(&o.wire, "Route"),
            [
                "Route: <sip:p4.example.net;lr>",
                "Route: <sip:bob@192.0.2.4>"
            ]
        );
        assert!(o.dst_uri.is_empty());
        assert_eq!(o.next_hop, "sip:strict.example.net");
    }

    #[test]
    fn loose_route_two_values_on_one_line() {
        let r = req(
            BYE,
            &["Route: <sip:10.0.0.1;lr>, <sip:p2.example.net;lr>,<sip:p3.example.net;lr>"],
        );
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(
            lines(&o.wire, "Route"),
            ["Route: <sip:p2.example.net;lr>,<sip:p3.example.net;lr>"]
        );
        assert_eq!(o.dst_uri, "sip:p2.example.net;lr");
    }

    #[test]
    fn loose_route_strict_previous_hop_values_on_one_line() {
        // Last value removed from a line that keeps others; then our own top value too.
        let r = req(
            "BYE sip:10.0.0.1 SIP/2.0",
            &["Route: <sip:10.0.0.1;lr>, <sip:p2.example.net;lr>, <sip:bob@192.0.2.4>"],
        );
        let o = run(&r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), BYE);
        assert_eq!(lines(&o.wire, "Route"), ["Route: <sip:p2.example.net;lr>"]);
        assert_eq!(o.dst_uri, "sip:p2.example.net;lr");
    }

    #[test]
    fn loose_route_twice_is_stable() {
        let r = req(
            BYE,
            &[
                "Route: <sip:10.0.0.1;lr>",
                "Route: <sip:strict.example.net>",
            ],
        );
        let once = run(&r, |c| c.loose_route());
        let twice = run(&r, |c| {
            assert_eq!(c.loose_route(), 1);
            c.loose_route()
        });
        assert_eq!(twice.ret, 1);
        assert_eq!(once.wire, twice.wire);
        assert_eq!(lines(&once.wire, "Route"), ["Route: <sip:bob@192.0.2.4>"]);
    }

    /// An initial request (To without a tag) whose UA preloaded our address as its outbound
    /// proxy: the Request-URI naming us (`sip:bob@us`) is the target, not a strict router's
    /// leftover, and with no other Route the request is not route driven (SER's and
    /// Kamailio's `is_preloaded`): false, our Route removed, the Request-URI kept.
    #[test]
    fn loose_route_preloaded_outbound_proxy_only() {
        let initial = |start: &str, route: &str| {
            let mut r = req(start, &[route]);
            for l in &mut r {
                if l.starts_with("To:") {
                    *l = "To: <sip:bob@10.0.0.1>".to_string();
                }
            }
            r
        };
        for (start, route) in [
            (
                "INVITE sip:bob@10.0.0.1 SIP/2.0",
                "Route: <sip:10.0.0.1;lr>",
            ),
            (
                "INVITE sip:bob@10.0.0.1:5060 SIP/2.0",
                "Route: <sip:10.0.0.1:5060;lr=on>",
            ),
            (
                "REGISTER sip:10.0.0.1 SIP/2.0",
                "Route: <sip:10.0.0.1;transport=udp;lr>",
            ),
        ] {
            let o = run(&initial(start, route), |c| c.loose_route());
            assert_eq!(o.ret, -1, "{start}");
            assert_eq!(request_line(&o.wire), start);
            assert!(lines(&o.wire, "Route").is_empty(), "{}", o.wire);
            assert!(o.dst_uri.is_empty());
            // A second call answers the same and edits nothing more.
            let twice = run(&initial(start, route), |c| {
                assert_eq!(c.loose_route(), -1);
                c.loose_route()
            });
            assert_eq!(twice.ret, -1);
            assert_eq!(twice.wire, o.wire);
        }
        // A preloaded route set that goes on past us: route driven, to the next hop, the
        // Request-URI kept.
        let start = "INVITE sip:bob@10.0.0.1 SIP/2.0";
        let o = run(
            &initial(start, "Route: <sip:10.0.0.1;lr>, <sip:p2.example.net;lr>"),
            |c| c.loose_route(),
        );
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), start);
        assert_eq!(lines(&o.wire, "Route"), ["Route: <sip:p2.example.net;lr>"]);
        assert_eq!(o.dst_uri, "sip:p2.example.net;lr");
    }

    #[test]
    fn loose_route_by_name() {
        // Our entry as an alias name, written in another case and with a display name.
        let mut cfg = Config::default();
        cfg.aliases.push(("proxy.example.com".into(), None));
        let core = Core::new(&cfg, vec![Listen::udp(ME.parse().expect("addr"))], None);
        let r = req(
            BYE,
            &["Route: \"me\" <sip:Proxy.Example.COM;lr=on>, <sip:p2.example.net;lr>"],
        );
        let o = run_with(&core, &r, |c| c.loose_route());
        assert_eq!(o.ret, 1);
        assert_eq!(lines(&o.wire, "Route"), ["Route: <sip:p2.example.net;lr>"]);
    }

    #[test]
    fn rewrite_from_route_strict() {
        let r = req(
            "BYE sip:10.0.0.1 SIP/2.0",
            &["Route: <sip:bob@192.0.2.4>, <sip:p9.example.net>"],
        );
        let o = run(&r, |c| c.rewrite_from_route());
        assert_eq!(o.ret, 1);
        assert_eq!(request_line(&o.wire), BYE);
        assert_eq!(lines(&o.wire, "Route"), ["Route: <sip:p9.example.net>"]);
        let o = run(&req(BYE, &[]), |c| c.rewrite_from_route());
        assert_eq!(o.ret, -1);
        assert_eq!(request_line(&o.wire), BYE);
    }

    #[test]
    fn malformed_route_is_bad_request() {
        let core = core();
        let mut ran = 0;
        for route in [
            "Route: <sip:p1.example.net;lr",
            "Route: <sip:a;lr>,",
            "Route:",
        ] {
            let mut text = req(BYE, &[route]).join("\r\n");
            text.push_str("\r\n\r\n");
            // The strict parser may already refuse it; the lenient one lets it through.
            let Some(msg) = ser_parser::parse_lenient(text.as_bytes()) else {
                continue;
            };
            let stats = Stats::default();
            let mut scratch = Scratch::default();
            let at = Arrival::udp(
                "192.0.2.9:5060".parse().expect("addr"),
                ME.parse().expect("addr"),
                0,
                0,
            );
            let mut ctx = MsgCtx::new(&core, &stats, &msg, at, &mut scratch);
            assert_eq!(ctx.loose_route(), -1, "{route}");
            assert_eq!(ctx.last_error.map(|e| e.code), Some(400));
            assert_eq!(ctx.rewrite_from_route(), -1, "{route}");
            assert!(ctx.s.edits.is_empty());
            assert!(ctx.s.dst_uri.is_empty() && !ctx.uri_changed);
            ran += 1;
        }
        assert_eq!(ran, 3);
    }

    /// `current_uri_parsed` is the strict parse's Request-URI only until the script rewrites
    /// it (here loose_route after a strict router), and the message's again after a revert.
    #[test]
    fn the_parsed_request_uri_follows_the_scripts_rewrites() {
        let core = core();
        let r = req(
            "BYE sip:10.0.0.1 SIP/2.0",
            &["Route: <sip:bob@192.0.2.4>, <sip:p9.example.net>"],
        );
        run_with(&core, &r, |c| {
            let host = |c: &MsgCtx<'_, '_>| {
                c.current_uri_parsed()
                    .map(|u| u.host_str.to_string())
                    .unwrap_or_default()
            };
            assert_eq!(host(c), "10.0.0.1");
            assert_eq!(c.rewrite_from_route(), 1);
            assert_eq!(c.current_uri(), "sip:bob@192.0.2.4");
            assert_eq!(host(c), "192.0.2.4");
            c.set_uri("sips:carol@[2001:db8::1]:5061");
            assert_eq!(host(c), "[2001:db8::1]");
            c.uri_changed = false;
            assert_eq!(host(c), "10.0.0.1");
            0
        });
    }
}
