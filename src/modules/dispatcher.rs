//! Module dispatcher's script face: `ds_select_dst(set, alg)`, `ds_select_domain(set, alg)`,
//! `ds_next_dst()`, `ds_next_domain()`, `ds_mark_dst([state])`, `ds_is_from_list([set])`,
//! and the module's parameters. The sets, their health and the algorithms are
//! [`crate::dispatcher`]; the prober and FIFO commands are `mgmt::dispatcher`.
//!
//! A selection keeps its fail-over candidates in a [`DsTxn`] that rides with the request's
//! transaction (tm's [`Attachment`]): `ds_next_dst()` in the failure route takes the next
//! candidate that is still active, and `t_relay()` relays to it. For an INVITE the chosen
//! destination counts one call in flight from the selection until the transaction's first
//! final reply goes upstream (or a fail-over moves it to the next destination, or the
//! request is never relayed): that is what algorithm 10 balances.
//!
//! The [`DsTxn`] also hears from tm how the branch to its destination ended
//! ([`Attached`]): with `ds_mark_failed_branches` (the default) no reply, an unreachable
//! destination or a 503 from it counts as one failure of the destination, as an unanswered
//! probe does, and any other answer resets its failures in a row. Counted once per
//! selection: `ds_mark_dst()` in the failure route adds nothing for a failure already
//! counted.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ser_parser::Method;
use ser_script::{Arg, BindCtx, KindSet, RouteKind};

use super::core::f;
use super::ctx::MsgCtx;
use super::rewrite::{self, Rewrite};
use super::{arg_int, arg_str, Action, Exports, ParamDef, ParamKind};
use crate::dispatcher::health::{Event, State, Thresholds};
use crate::dispatcher::select::{self, Alg};
use crate::dispatcher::{apply_event, Dest};
use crate::tm::{Attached, Attachment, BranchEnd};

/// A dispatcher action, its arguments checked when the script loaded.
#[derive(Debug, Clone, Copy)]
pub enum DsOp {
    /// `ds_select_dst` (domain false) or `ds_select_domain` (true).
    Select { set: u32, alg: Alg, domain: bool },
    /// `ds_next_dst` / `ds_next_domain`.
    Next { domain: bool },
    /// `ds_mark_dst([state])`.
    Mark(Mark),
    /// `ds_is_from_list([set])`.
    IsFromList(Option<u32>),
}

/// What `ds_mark_dst` does to the current destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// No argument, "p", "ip", "t", "tp": one failure (down after `ds_probing_threshold`).
    Failure,
    /// "a", "i", "d": that state at once.
    Set(State),
}

pub fn register(ex: &mut Exports) {
    let kinds = KindSet::REQUEST | KindSet::FAILURE;
    ex.function(f("ds_select_dst", 2, 2, kinds, |a, c| {
        bind_select(a, c, false)
    }));
    ex.function(f("ds_select_domain", 2, 2, kinds, |a, c| {
        bind_select(a, c, true)
    }));
    ex.function(f("ds_next_dst", 0, 0, kinds, |_, _| {
        Ok(Action::Dispatcher(DsOp::Next { domain: false }))
    }));
    ex.function(f("ds_next_domain", 0, 0, kinds, |_, _| {
        Ok(Action::Dispatcher(DsOp::Next { domain: true }))
    }));
    ex.function(f("ds_mark_dst", 0, 1, kinds, bind_mark));
    ex.function(f(
        "ds_is_from_list",
        0,
        1,
        KindSet::REQUEST | KindSet::FAILURE | KindSet::BRANCH | KindSet::ONREPLY,
        |a, c| {
            let set = a.first().map(|x| set_arg(x, c, 0)).transpose()?;
            Ok(Action::Dispatcher(DsOp::IsFromList(set)))
        },
    ));
    for (name, int) in crate::dispatcher::PARAMS {
        ex.param(
            "dispatcher",
            ParamDef {
                name,
                kind: if *int { ParamKind::Int } else { ParamKind::Str },
            },
        );
        ex.check("dispatcher", name, |name, value, _| {
            crate::dispatcher::check_param(name, value)
        });
    }
}

fn set_arg(a: &Arg, c: &BindCtx<'_>, i: usize) -> Result<u32, String> {
    let n = arg_int(a).map_err(|e| c.fail_at(i, e))?;
    u32::try_from(n).map_err(|_| c.fail_at(i, format!("set id {n} out of range")))
}

fn bind_select(a: &[Arg], c: &BindCtx<'_>, domain: bool) -> Result<Action, String> {
    let set = set_arg(a.first().ok_or("missing set id")?, c, 0)?;
    let n = arg_int(a.get(1).ok_or("missing algorithm")?).map_err(|e| c.fail_at(1, e))?;
    let alg = Alg::from_number(n).ok_or_else(|| {
        c.fail_at(
            1,
            format!(
                "unknown algorithm {n}: 0-3 (hash over Call-ID, From, To, Request-URI), \
                 4 (round robin), 8 (priority), 9 (weight), 10 (least calls in flight)"
            ),
        )
    })?;
    Ok(Action::Dispatcher(DsOp::Select { set, alg, domain }))
}

fn bind_mark(a: &[Arg], c: &BindCtx<'_>) -> Result<Action, String> {
    let Some(arg) = a.first() else {
        return Ok(Action::Dispatcher(DsOp::Mark(Mark::Failure)));
    };
    let s = arg_str(arg).map_err(|e| c.fail_at(0, e))?;
    let m = match s.to_ascii_lowercase().as_str() {
        "p" | "ip" | "t" | "tp" | "ap" => Mark::Failure,
        "a" => Mark::Set(State::Active),
        "i" => Mark::Set(State::Inactive),
        "d" => Mark::Set(State::Disabled),
        _ => {
            return Err(c.fail_at(
                0,
                format!("ds_mark_dst(\"{s}\"): the state is \"a\", \"i\", \"d\", \"p\" or \"ip\""),
            ))
        }
    };
    Ok(Action::Dispatcher(DsOp::Mark(m)))
}

/// A request's dispatcher state, kept with its transaction (see the module documentation).
#[derive(Debug)]
pub struct DsTxn {
    /// `ds_select_domain` (rewrite the Request-URI) rather than `ds_select_dst`.
    domain: bool,
    /// The destination the request went to last.
    current: Option<Arc<Dest>>,
    /// The fail-over candidates left, in order.
    rest: VecDeque<Arc<Dest>>,
    /// An INVITE: the current destination counts it in its calls in flight.
    counts_load: bool,
    /// The transaction's branch that went to the current destination, once relayed.
    branch: Option<usize>,
    /// A failure of the current destination was counted for this selection (by its failed
    /// branch or by `ds_mark_dst`): not again.
    failure_counted: bool,
    /// `ds_mark_failed_branches`, and the thresholds its failures count under.
    mark_failed: bool,
    thresholds: Thresholds,
}

impl DsTxn {
    /// Makes `d` the current destination, moving the call-in-flight count to it.
    fn take(&mut self, d: Arc<Dest>) {
        if self.counts_load {
            if let Some(old) = &self.current {
                old.state.load.fetch_sub(1, Ordering::Relaxed);
            }
            d.state.load.fetch_add(1, Ordering::Relaxed);
        }
        d.state.selected.fetch_add(1, Ordering::Relaxed);
        self.current = Some(d);
        self.branch = None;
        self.failure_counted = false;
    }

    /// A failure of the current destination is to be counted (its failed branch, or
    /// `ds_mark_dst`): true the first time for this selection, false after.
    fn count_failure(&mut self) -> bool {
        !std::mem::replace(&mut self.failure_counted, true)
    }

    /// Whether a branch that went to `hop` went to the current destination: its URI as
    /// the destination URI (`ds_select_dst`), or its host and port in the Request-URI
    /// (`ds_select_domain`).
    fn is_current(&self, hop: &str) -> bool {
        let Some(d) = &self.current else {
            return false;
        };
        if !self.domain {
            return hop.eq_ignore_ascii_case(&d.uri);
        }
        ser_parser::parse_uri(hop).is_ok_and(|u| {
            let hp = match u.port {
                Some(p) => format!("{}:{p}", u.host_str),
                None => u.host_str.to_string(),
            };
            hp.eq_ignore_ascii_case(&d.hostport)
        })
    }
}

impl Attached for DsTxn {
    fn branch_added(&mut self, index: usize, hop: &str) {
        if self.branch.is_none() && self.is_current(hop) {
            self.branch = Some(index);
        }
    }

    fn branch_ended(&mut self, index: usize, end: BranchEnd) {
        if self.branch != Some(index) {
            return;
        }
        let Some(d) = self.current.clone() else {
            return;
        };
        if !end.destination_failed() {
            if self.mark_failed {
                apply_event(&d.state, Event::Answered, self.thresholds, "");
            }
            return;
        }
        d.state.branch_failures.fetch_add(1, Ordering::Relaxed);
        if !self.mark_failed || !self.count_failure() {
            return;
        }
        let why = match end {
            BranchEnd::Timeout => String::from("no reply to a relayed request"),
            BranchEnd::Unreachable => String::from("a relayed request could not reach it"),
            other => format!("answered a relayed request with {}", other.code()),
        };
        apply_event(&d.state, Event::Failure, self.thresholds, &why);
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Drop for DsTxn {
    fn drop(&mut self) {
        if self.counts_load {
            if let Some(d) = &self.current {
                d.state.load.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl MsgCtx<'_, '_> {
    pub(crate) fn dispatcher(&mut self, op: &DsOp) -> i32 {
        match *op {
            DsOp::Select { set, alg, domain } => self.ds_select(set, alg, domain),
            DsOp::Next { domain } => self.ds_next(domain),
            DsOp::Mark(m) => self.ds_mark(m),
            DsOp::IsFromList(set) => {
                let ds = &self.core.dispatcher;
                if ds.is_from(set, self.at.transport, self.at.src) {
                    1
                } else {
                    -1
                }
            }
        }
    }

    /// Where the dispatcher's state of this request is kept: its transaction once it has
    /// one, else the run's own until `t_relay`/`t_newtran` makes one.
    fn ds_slot(&mut self) -> &mut Option<Attachment> {
        if let (Some(id), Some(tm)) = (self.t.cell, self.tm.as_deref_mut()) {
            if let Some(slot) = tm.tm.attachment_mut(id) {
                return slot;
            }
        }
        &mut self.attach
    }

    fn ds_txn(&mut self) -> Option<&mut DsTxn> {
        self.ds_slot().as_mut()?.downcast_mut::<DsTxn>()
    }

    /// The hash of algorithms 0-3 over this request; None when it lacks the header.
    fn ds_hash(&self, alg: Alg) -> Option<u32> {
        let key = match alg {
            Alg::CallId => return self.msg.call_id().map(select::hash),
            Alg::From => select::uri_key(self.msg.from().ok()?.uri)?,
            Alg::To => select::uri_key(self.msg.to().ok()?.uri)?,
            Alg::RequestUri => select::uri_key(self.current_uri())?,
            _ => return Some(0),
        };
        Some(select::hash(key.as_bytes()))
    }

    fn ds_select(&mut self, set: u32, alg: Alg, domain: bool) -> i32 {
        let Some(hash) = self.ds_hash(alg) else {
            crate::debug!("ds_select: no {alg:?} to hash in the request");
            return -1;
        };
        let Some(order) = self.core.dispatcher.select(set, alg, hash) else {
            crate::debug!("ds_select: no active destination in set {set}");
            return -1;
        };
        let mut order: VecDeque<Arc<Dest>> = order.into();
        let Some(first) = order.pop_front() else {
            return -1;
        };
        if !self.ds_apply(&first, domain) {
            return -1;
        }
        let ds = &self.core.dispatcher;
        let mut txn = DsTxn {
            domain,
            current: None,
            rest: order,
            counts_load: self.msg.method() == Some(Method::Invite),
            branch: None,
            failure_counted: false,
            mark_failed: ds.marks_failed_branches(),
            thresholds: ds.thresholds(),
        };
        txn.take(first);
        *self.ds_slot() = Some(Box::new(txn));
        1
    }

    /// `ds_next_dst()`: the next candidate that is still active; false when none is left.
    fn ds_next(&mut self, domain: bool) -> i32 {
        let next = {
            let Some(txn) = self.ds_txn() else {
                crate::debug!("ds_next: no ds_select_dst/ds_select_domain for this request");
                return -1;
            };
            if txn.domain != domain {
                crate::debug!("ds_next: the selection was made by the other ds_select function");
            }
            let mut found = None;
            while let Some(d) = txn.rest.pop_front() {
                if d.is_active() {
                    found = Some(d);
                    break;
                }
            }
            found
        };
        let Some(d) = next else {
            return -1;
        };
        if !self.ds_apply(&d, domain) {
            return -1;
        }
        if let Some(txn) = self.ds_txn() {
            txn.take(d);
        }
        1
    }

    fn ds_mark(&mut self, m: Mark) -> i32 {
        let Some(txn) = self.ds_txn() else {
            crate::debug!("ds_mark_dst: no destination selected for this request");
            return -1;
        };
        let Some(d) = txn.current.clone() else {
            return -1;
        };
        let ev = match m {
            Mark::Failure => {
                if !txn.count_failure() {
                    // Its failed branch counted already (ds_mark_failed_branches).
                    crate::debug!("ds_mark_dst: the failure of {} is counted already", d.uri);
                    return 1;
                }
                Event::Failure
            }
            Mark::Set(s) => Event::Set(s),
        };
        self.core
            .dispatcher
            .event(&d.state, ev, "ds_mark_dst from the script");
        1
    }

    /// Sends the request to `d`: as its destination URI (the Request-URI kept), or with its
    /// host and port written into the Request-URI.
    fn ds_apply(&mut self, d: &Dest, domain: bool) -> bool {
        self.s.dst = None;
        if domain {
            match rewrite::apply(self.current_uri(), &Rewrite::HostPort(d.hostport.clone())) {
                Ok(u) => {
                    self.s.uri = u;
                    self.uri_changed = true;
                }
                Err(why) => {
                    crate::debug!("ds_select_domain: {why}");
                    self.fail(400, "Bad Request-URI");
                    return false;
                }
            }
        } else {
            self.s.dst_uri.clear();
            self.s.dst_uri.push_str(&d.uri);
            // A failure route relays the Request-URI only when it was set there.
            if self.t.kind.0 == RouteKind::Failure && !self.uri_changed {
                self.s.uri = self.current_uri().to_string();
                self.uri_changed = true;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use portable_atomic::AtomicU64;

    use super::DsTxn;
    use crate::config::Config;
    use crate::dispatcher::health::{Health, State, Thresholds};
    use crate::dispatcher::{Dest, DestState};
    use crate::loader::load;
    use crate::sip::Transport;
    use crate::tm::{Attached, BranchEnd};

    fn dest(uri: &str, hostport: &str) -> Arc<Dest> {
        Arc::new(Dest {
            uri: uri.to_string(),
            flags: 0,
            priority: 0,
            attrs: Default::default(),
            hostport: hostport.to_string(),
            transport: Transport::Udp,
            addrs: Vec::new(),
            state: Arc::new(DestState {
                setid: 1,
                uri: uri.to_string(),
                health: Health::new(State::Active),
                load: AtomicU32::new(0),
                selected: AtomicU64::new(0),
                probes_ok: AtomicU64::new(0),
                probes_failed: AtomicU64::new(0),
                branch_failures: AtomicU64::new(0),
            }),
        })
    }

    fn txn(first: &Arc<Dest>, rest: &[&Arc<Dest>], mark_failed: bool) -> DsTxn {
        let mut t = DsTxn {
            domain: false,
            current: None,
            rest: rest.iter().map(|d| Arc::clone(d)).collect(),
            counts_load: true,
            branch: None,
            failure_counted: false,
            mark_failed,
            thresholds: Thresholds {
                probing: 2,
                inactive: 1,
            },
        };
        t.take(Arc::clone(first));
        t
    }

    fn failures(d: &Dest) -> (State, u16, u64) {
        let h = d.state.health.get();
        (
            h.state,
            h.failures,
            d.state.branch_failures.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn a_failed_branch_to_the_chosen_destination_counts_once() {
        let a = dest("sip:10.0.0.1:5060", "10.0.0.1:5060");
        let b = dest("sip:10.0.0.2:5060;transport=tcp", "10.0.0.2:5060");
        let mut t = txn(&a, &[&b], true);
        // A branch the script appended elsewhere, then the dispatcher's.
        t.branch_added(0, "sip:bob@elsewhere.example");
        t.branch_added(1, "SIP:10.0.0.1:5060");
        t.branch_ended(0, BranchEnd::Timeout);
        assert_eq!(failures(&a), (State::Active, 0, 0), "not its branch");
        t.branch_ended(1, BranchEnd::Timeout);
        assert_eq!(failures(&a), (State::Active, 1, 1));
        // The failure route's ds_mark_dst() for the same failure adds nothing.
        assert!(!t.count_failure());
        assert_eq!(failures(&a), (State::Active, 1, 1));
        // ds_next_dst: the next destination, its own branch; it answers 486 (alive).
        let next = t.rest.pop_front().expect("a candidate");
        t.take(next);
        assert_eq!(a.state.load.load(Ordering::Relaxed), 0, "the call moved");
        assert_eq!(b.state.load.load(Ordering::Relaxed), 1);
        t.branch_added(2, "sip:10.0.0.2:5060;transport=tcp");
        t.branch_ended(2, BranchEnd::Replied(486));
        assert_eq!(failures(&b), (State::Active, 0, 0));
        drop(t);
        assert_eq!(b.state.load.load(Ordering::Relaxed), 0);

        // The next call to `a` is unreachable: its second failure in a row takes it down.
        let mut t = txn(&a, &[], true);
        t.branch_added(0, "sip:10.0.0.1:5060");
        t.branch_ended(0, BranchEnd::Unreachable);
        assert_eq!(failures(&a), (State::Probing, 0, 2));
    }

    #[test]
    fn an_answer_resets_the_failures_and_503_from_it_is_a_failure() {
        let a = dest("sip:10.0.0.1:5060", "10.0.0.1:5060");
        let mut t = txn(&a, &[], true);
        t.branch_added(0, "sip:10.0.0.1:5060");
        t.branch_ended(0, BranchEnd::Replied(503));
        assert_eq!(failures(&a), (State::Active, 1, 1));
        let mut t = txn(&a, &[], true);
        t.branch_added(0, "sip:10.0.0.1:5060");
        t.branch_ended(0, BranchEnd::Unanswered);
        assert_eq!(failures(&a), (State::Active, 0, 1), "it answered a 180");
        let mut t = txn(&a, &[], true);
        t.branch_added(0, "sip:10.0.0.1:5060");
        t.branch_ended(0, BranchEnd::Timeout);
        assert_eq!(failures(&a), (State::Active, 1, 2));
        // ds_select_domain: the branch is the Request-URI with the destination's host.
        let mut t = txn(&a, &[], true);
        t.domain = true;
        t.branch_added(0, "sip:bob@10.0.0.9:5060");
        t.branch_added(1, "sip:bob@10.0.0.1:5060;user=phone");
        t.branch_ended(1, BranchEnd::Replied(200));
        assert_eq!(failures(&a), (State::Active, 0, 2));
    }

    #[test]
    fn with_ds_mark_failed_branches_0_only_the_script_marks() {
        let a = dest("sip:10.0.0.1:5060", "10.0.0.1:5060");
        for _ in 0..3 {
            let mut t = txn(&a, &[], false);
            t.branch_added(0, "sip:10.0.0.1:5060");
            t.branch_ended(0, BranchEnd::Timeout);
        }
        assert_eq!(failures(&a), (State::Active, 0, 3), "counted, not marked");
        let mut t = txn(&a, &[], false);
        t.branch_added(0, "sip:10.0.0.1:5060");
        t.branch_ended(0, BranchEnd::Timeout);
        assert!(t.count_failure(), "the script's mark counts");
        assert!(!t.count_failure(), "once");
    }

    const HEAD: &str =
        "loadmodule \"modules/tm/tm.so\"\nloadmodule \"modules/dispatcher/dispatcher.so\"\n";

    fn refused(body: &str) -> (u32, u32, String) {
        let src = format!("{HEAD}{body}");
        match load("t.cfg", &src, &Config::default()) {
            Ok(_) => (0, 0, String::from("loaded")),
            Err(e) => (e.line, e.col, e.msg),
        }
    }

    #[test]
    fn arguments_and_parameters_are_checked_at_load() {
        let ok =
            "route { if (ds_select_dst(\"1\", \"4\")) { t_on_failure(\"1\"); t_relay(); }; }\n\
                  failure_route[1] { ds_mark_dst(\"ip\"); if (ds_next_dst()) { t_relay(); }; }\n";
        assert_eq!(refused(ok).2, "loaded");
        let (l, c, m) = refused("route {\n  ds_select_dst(\"1\", \"7\");\n}\n");
        assert_eq!((l, c), (4, 22), "{m}");
        assert!(m.contains("unknown algorithm 7"), "{m}");
        let (l, _, m) = refused("route { ds_select_domain(\"-1\", \"4\"); }\n");
        assert_eq!(l, 3);
        assert!(m.contains("set id -1"), "{m}");
        let (l, _, m) = refused("route { ds_mark_dst(\"x\"); }\n");
        assert_eq!(l, 3);
        assert!(m.contains("ds_mark_dst(\"x\")"), "{m}");
        let (l, c, m) = refused(
            "modparam(\"dispatcher\", \"ds_probing_mode\", 3)\nroute { ds_is_from_list(); }\n",
        );
        assert_eq!((l, c), (3, 1), "{m}");
        assert!(m.contains("ds_probing_mode 3"), "{m}");
        let (l, _, m) = refused(
            "modparam(\"dispatcher\", \"ds_mark_failed_branches\", 2)\nroute { ds_is_from_list(); }\n",
        );
        assert_eq!(l, 3, "{m}");
        assert!(m.contains("ds_mark_failed_branches 2"), "{m}");
        let ok = "modparam(\"dispatcher\", \"ds_mark_failed_branches\", 0)\nroute { ds_is_from_list(); }\n";
        assert_eq!(refused(ok).2, "loaded");
        let (_, _, m) = refused("modparam(\"dispatcher\", \"ds_frobnicate\", 3)\nroute { }\n");
        assert!(m.contains("no parameter 'ds_frobnicate'"), "{m}");
        // ds_next_dst is not for reply routes.
        let (l, _, _) =
            refused("route { t_on_reply(\"1\"); }\nonreply_route[1] { ds_next_dst(); }\n");
        assert_eq!(l, 4);
    }
}
