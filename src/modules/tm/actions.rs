//! The tm actions as they run in the script's context ([`MsgCtx`]): `t_on_*` (which route
//! the transaction runs later), `t_newtran` (the transaction, with its loop mark), `t_reply`
//! in it, and `t_relay` / `t_relay_to*` / `t_replicate`, which relay the request over its
//! destination set, one branch at a time through its branch_route (a CANCEL or a 2xx's ACK
//! takes its own way). Binding their arguments is `exports`; the transaction layer they
//! drive is `crate::tm`.

use std::time::Instant;

use ser_parser::Method;
use ser_script::{RouteKind, RunOutcome};

use crate::modules::acc;
use crate::modules::core::ViaScan;
use crate::modules::ctx::MsgCtx;
use crate::modules::{Action, HostArg, PortArg};
use crate::sip::{Arrival, Dest, Transport};
use crate::stats::Stats;
use crate::tm::{BranchDst, CellId, CreateError, RouteKindDefault};

impl MsgCtx<'_, '_> {
    fn tm_now(&self) -> Instant {
        // The shard sets it for every message; a context built outside one (tests) falls
        // back to the clock.
        self.t.now.unwrap_or_else(Instant::now)
    }

    fn arrival(&self) -> Arrival {
        self.at
    }

    pub(crate) fn tm_call(&mut self, action: &Action) -> i32 {
        match action {
            Action::TOnNegative(n) => {
                self.t.routes.on_negative = Some(*n);
                1
            }
            Action::TOnFailure(n) => {
                self.t.routes.on_failure = Some(*n);
                1
            }
            Action::TOnBranch(n) => {
                self.t.routes.on_branch = Some(*n);
                1
            }
            Action::TOnReply(n) => {
                self.t.routes.on_reply = Some(*n);
                1
            }
            Action::TNewtran => self.t_newtran(),
            Action::TReply { code, reason } => self.t_reply(*code, reason),
            Action::TRelay {
                host,
                port,
                transport,
            } => self.t_relay(host.as_ref(), *port, false, *transport),
            Action::TReplicate { host, port } => self.t_relay(Some(host), *port, true, None),
            Action::AccRequest(status) => {
                let Some(tm) = self.tm.as_deref() else {
                    return -1;
                };
                let uri = self.current_uri().to_string();
                acc::report_request(&tm.acc, self.msg, &uri, status);
                1
            }
            _ => -1,
        }
    }

    fn t_newtran(&mut self) -> i32 {
        if !self.msg.is_request() || matches!(self.msg.method(), Some(Method::Ack)) {
            return -1;
        }
        if self.t.cell.is_some() {
            crate::error!("t_newtran: transaction already in process");
            return -1;
        }
        match self.new_cell() {
            Ok(()) => 1,
            Err(r) => r,
        }
    }

    /// Creates this request's transaction; `Err` is what the action returns (0 after a 503:
    /// the script ends there).
    fn new_cell(&mut self) -> Result<(), i32> {
        let received_uri = self.msg.request_uri().unwrap_or("");
        let mark = ViaScan::new(self.core, self.msg).loop_hash(self.msg, received_uri) as u32;
        self.new_cell_marked(mark)
    }

    /// [`Self::new_cell`] with the request's loop mark already worked out (by
    /// [`Self::refuse_loop`]).
    fn new_cell_marked(&mut self, loop_mark: u32) -> Result<(), i32> {
        let now = self.tm_now();
        let at = self.arrival();
        let flags = self.flags;
        let Some(tm) = self.tm.as_deref_mut() else {
            return Err(self.fail(500, "No Transaction Layer"));
        };
        match tm.tm.create(now, self.msg, at, flags, loop_mark) {
            Ok(id) => {
                self.t.cell = Some(id);
                if self.nat.force_rport && !at.transport.is_reliable() {
                    // nathelper's force_rport(): replies to the source port.
                    tm.tm.set_reply_to(id, at.back_to(at.src));
                }
                // What a module kept for the transaction to come goes with it now.
                if let (Some(a), Some(slot)) = (self.attach.take(), tm.tm.attachment_mut(id)) {
                    *slot = Some(a);
                }
                Ok(())
            }
            Err(CreateError::Full) => {
                crate::notice!("transaction table full; 503 to {}", self.at.src);
                tm.tm.reply_unavailable(self.msg, &at, &mut self.s.out);
                Err(0)
            }
            Err(CreateError::Exists) => {
                crate::error!("t_newtran: transaction already in process");
                Err(-1)
            }
            Err(CreateError::Bad) => Err(self.fail(400, "Bad Request")),
        }
    }

    /// Answers 482 to a request that looped back to us (statelessly, or in its transaction
    /// when t_newtran made one): `Err` with what the action returns. Otherwise the request's
    /// loop mark for the branches of its transaction, from the same pass over its Vias.
    fn refuse_loop(&mut self) -> Result<u32, i32> {
        let received_uri = self.msg.request_uri().unwrap_or("");
        let scan = ViaScan::new(self.core, self.msg);
        if !scan.looped(self.msg, received_uri, &self.core.reply.tag_prefix) {
            return Ok(scan.loop_hash(self.msg, received_uri) as u32);
        }
        Stats::inc(&self.stats.loops);
        crate::info!("loop detected for {}", self.current_uri());
        if self.t.cell.is_some() {
            return Err(self.t_reply(482, "Loop Detected"));
        }
        Err(self.sl_send_reply(482, b"Loop Detected"))
    }

    fn t_reply(&mut self, code: u16, reason: &str) -> i32 {
        let now = self.tm_now();
        let Some(id) = self.t.cell else {
            crate::error!("t_reply: no transaction for this request (call t_newtran first)");
            return self.fail(500, "No Transaction");
        };
        let Some(tm) = self.tm.as_deref_mut() else {
            return -1;
        };
        // append_to_reply's lines go on t_reply's reply too.
        let s = &mut *self.s;
        if tm
            .tm
            .t_reply(now, id, code, reason, &s.reply_hfs, &mut s.out)
        {
            1
        } else {
            -1
        }
    }

    /// SER 0.8: the branches a negative reply route appended are relayed when it ends.
    pub(crate) fn t_relay_in_failure(&mut self) -> i32 {
        self.t_relay(None, PortArg::Default, false, None)
    }

    fn t_relay(
        &mut self,
        host: Option<&HostArg>,
        port: PortArg,
        replicate: bool,
        transport: Option<Transport>,
    ) -> i32 {
        if !self.msg.is_request() {
            return self.fail(500, "Not a request");
        }
        let now = self.tm_now();
        let kind = self.t.kind.0;
        let in_failure = matches!(kind, RouteKind::Failure | RouteKind::Reply);
        match self.msg.method() {
            Some(Method::Ack) if !in_failure => {
                // The ACK of a 2xx is its own transaction-less request (RFC 3261 13.2.2.4):
                // forwarded statelessly, along the route.
                return self.forward(
                    host.unwrap_or(&HostArg::UriHost),
                    port_for(host, port),
                    true,
                    transport,
                );
            }
            Some(Method::Cancel) if !in_failure && !replicate => {
                let invite = self
                    .tm
                    .as_deref()
                    .and_then(|tm| tm.tm.find_invite_for_cancel(self.msg));
                let Some(invite) = invite else {
                    // No such INVITE here: statelessly on (RFC 3261 16.10).
                    return self.forward(
                        host.unwrap_or(&HostArg::UriHost),
                        port_for(host, port),
                        true,
                        transport,
                    );
                };
                if self.t.cell.is_none() {
                    if let Err(r) = self.new_cell() {
                        return r;
                    }
                }
                let Some(id) = self.t.cell else {
                    return -1;
                };
                let Some(tm) = self.tm.as_deref_mut() else {
                    return -1;
                };
                tm.tm.begin_relay(
                    now,
                    id,
                    self.msg,
                    self.t.routes,
                    self.flags,
                    "",
                    true,
                    &mut self.s.out,
                );
                tm.tm
                    .local_reply_to(now, id, self.msg, 200, "Canceling", "", &mut self.s.out);
                tm.tm.touch(id);
                tm.tm.cancel_invite(now, invite, &mut self.s.out);
                return 1;
            }
            _ => {}
        }
        // RFC 3261 16.3 step 4: a request that comes back unchanged is a loop (a spiral, with
        // a new Request-URI, goes on).
        let loop_mark = if in_failure {
            0
        } else {
            match self.refuse_loop() {
                Ok(mark) => mark,
                Err(r) => return r,
            }
        };
        let created_here = if in_failure {
            false
        } else {
            match self.t.cell {
                Some(id) => {
                    if self.tm.as_deref().is_some_and(|tm| tm.tm.is_relayed(id)) {
                        crate::error!("t_relay: transaction already in process");
                        return -1;
                    }
                    false
                }
                None => {
                    if let Err(r) = self.new_cell_marked(loop_mark) {
                        return r;
                    }
                    true
                }
            }
        };
        let Some(id) = self.t.cell else {
            return self.fail(500, "No Transaction");
        };
        // The destination set: for t_relay the Request-URI (in a failure route only when
        // the route changed it) and every appended branch, each with the flow lookup found
        // for it; t_relay_to one address.
        let mut uris: smallvec::SmallVec<[(String, Option<Dest>); 4]> = smallvec::SmallVec::new();
        if host.is_some() || !in_failure || self.uri_changed {
            uris.push((self.current_uri().to_string(), self.s.dst));
        }
        if host.is_none() {
            uris.extend(self.s.branches.drain(..).map(|b| (b.uri, b.dst)));
        }
        let out_uri = self.current_uri().to_string();
        let routes = self.t.routes;
        let flags = self.flags;
        let Some(tm) = self.tm.as_deref_mut() else {
            return -1;
        };
        tm.tm.begin_relay(
            now,
            id,
            self.msg,
            routes,
            flags,
            &out_uri,
            replicate,
            &mut self.s.out,
        );
        let script = tm.tm.script_of(id);
        let mut sent = 0;
        let mut branch_id = String::new();
        for (i, (uri, fixed)) in uris.iter().enumerate() {
            // branch_route[n]: this branch's URI as the Request-URI; it may rewrite it, add
            // headers, or drop the branch.
            // What a branch_route sets (force_send_socket too) is for its branch only.
            let saved = (
                self.uri_changed,
                std::mem::take(&mut self.s.uri),
                self.force_socket,
            );
            let mark = self.s.edits.mark();
            self.s.uri.push_str(uri);
            self.uri_changed = true;
            let mut keep = true;
            if let Some(n) = routes.on_branch {
                self.t.kind = RouteKindDefault(RouteKind::Branch);
                let outcome = script.run(RouteKind::Branch, n, self);
                self.t.kind = RouteKindDefault(kind);
                keep = !matches!(outcome, RunOutcome::Dropped);
            }
            let branch_uri = self.current_uri().to_string();
            // The first branch honours the Route loose_route chose.
            let hop = if i == 0 && !self.s.dst_uri.is_empty() {
                self.s.dst_uri.clone()
            } else {
                branch_uri.clone()
            };
            if keep {
                let how = Relay {
                    host,
                    port,
                    transport,
                    fixed: *fixed,
                };
                if self.send_branch(now, id, &how, &branch_uri, &hop, &mut branch_id) {
                    sent += 1;
                }
            } else {
                crate::debug!("branch {} dropped by branch_route", branch_uri);
            }
            self.s.edits.rollback(mark);
            self.uri_changed = saved.0;
            self.s.uri = saved.1;
            self.force_socket = saved.2;
        }
        if sent == 0 {
            if created_here {
                if let Some(tm) = self.tm.as_deref_mut() {
                    tm.tm.abandon(id);
                }
                self.t.cell = None;
            }
            if self.last_error.is_none() {
                return self.fail(500, "No Destination");
            }
            return -1;
        }
        1
    }

    /// Where one branch goes: a flow lookup found for its URI (`fixed`), else the next hop
    /// of `hop` (the Route loose_route chose or the branch's URI), or the host `t_relay_to`
    /// named; `None` (with `last_error`) when it cannot go anywhere.
    fn branch_dst(&mut self, how: &Relay<'_>, hop: &str) -> Option<(usize, BranchDst)> {
        if let Some(d) = how
            .fixed
            .filter(|d| crate::modules::core::flow_applies(d, how.host, how.port, how.transport))
        {
            return Some((d.socket, BranchDst::Addr(d)));
        }
        let next = self.next_hop(how.host, how.port, hop, how.transport).ok()?;
        let bdst = self.hop_dest(next).ok()?;
        Some((bdst.socket(), bdst))
    }

    /// Writes and starts one branch; false (with `last_error`) if it cannot go out.
    fn send_branch(
        &mut self,
        now: Instant,
        id: CellId,
        how: &Relay<'_>,
        uri: &str,
        hop: &str,
        branch_id: &mut String,
    ) -> bool {
        let Some((sock, bdst)) = self.branch_dst(how, hop) else {
            return false;
        };
        let Some(tm) = self.tm.as_deref() else {
            return false;
        };
        let index = tm.tm.branch_count(id);
        if !tm.tm.branch_id(id, index, branch_id) {
            return false;
        }
        let via = self.via_value(sock, branch_id);
        let mut buf = Vec::with_capacity(self.msg.buf().len() + 160);
        self.write_branch(&via, uri, sock, &mut buf);
        let Some(tm) = self.tm.as_deref_mut() else {
            return false;
        };
        let method = self.msg.method().unwrap_or(Method::Options);
        if tm.tm.add_branch(
            now,
            id,
            uri,
            bdst,
            buf,
            (branch_id, method),
            &mut self.s.out,
        ) {
            // A module that chose where this branch goes (the dispatcher) learns its index,
            // to hear later how it ended.
            if let Some(Some(a)) = tm.tm.attachment_mut(id) {
                a.branch_added(index, hop);
            }
            true
        } else {
            self.fail(500, "Cannot Start Branch");
            false
        }
    }
}

/// What a relay action asked for, for each of its branches.
struct Relay<'h> {
    /// The host `t_relay_to` named (None: the branch's URI).
    host: Option<&'h HostArg>,
    port: PortArg,
    /// The transport `t_relay_to_udp`/`_tcp`/`_tls` named.
    transport: Option<Transport>,
    /// The flow lookup found for the branch's URI.
    fixed: Option<Dest>,
}

/// The port for a stateless forward of what t_relay got: its own when given a host.
fn port_for(host: Option<&HostArg>, port: PortArg) -> PortArg {
    match (host, port) {
        (None, _) => PortArg::UriPort,
        (Some(_), p) => p,
    }
}
