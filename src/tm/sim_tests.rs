//! tm on a virtual clock: a caller, the proxy's [`Tm`] and scripted UASes, with time jumping
//! from one deadline to the next. Every SIP timer of the proxy (fr_timer, fr_inv_timer,
//! timers A/B/E/F/G, the wait timer) runs in milliseconds of test time and none of real
//! time; the script's part (failure route, onreply_route) is played by the harness through
//! tm's events, as the shard's `TmShard` plays it with the real script.
//!
//! Timers here: fr_timer 2 s, fr_inv_timer 5 s, wt_timer 5 s, T1 500 ms.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ser_parser::Method;

use super::*;
use crate::config::Params;
use crate::sip::{Arrival, Dest, Listen, Local, Outbox, ReplyIdentity, Transport};
use crate::stats::Stats;
use crate::txn::sim::msgs;

const ME: &str = "127.0.0.1:5060";
const CALLER: &str = "10.0.0.1:5090";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// UAS `n` (0, 1, 2...).
fn uas(n: usize) -> SocketAddr {
    SocketAddr::new([10, 0, 0, 10 + n as u8].into(), 5070)
}

/// The caller's request `n` (its own branch and Call-ID).
fn caller_request(method: &str, n: u32) -> Vec<u8> {
    let cseq_method = if method == "ACK" { "ACK" } else { method };
    format!(
        "{method} sip:bob@b.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5090;branch=z9hG4bKcaller{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@a.example>;tag=a{n}\r\n\
         To: <sip:bob@b.example>\r\n\
         Call-ID: call-{n}@a.example\r\n\
         CSeq: 1 {cseq_method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One sent datagram: when (ms of test time), where, and its text.
#[derive(Debug, Clone)]
struct Sent {
    ms: u128,
    to: SocketAddr,
    text: String,
}

impl Sent {
    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
}

struct Proxy {
    tm: Tm<()>,
    t0: Instant,
    now: Instant,
    out: Outbox,
    wire: Vec<Sent>,
    /// Replies that were not ours: the shard would route them statelessly upstream.
    stateless: Vec<String>,
    completions: Vec<Completion>,
    /// What each failure-route run does: the UASes it forks to (serial forking).
    failure_plan: VecDeque<Vec<usize>>,
    failures: usize,
    /// Whether the onreply_route drops what it sees.
    onreply_drops: bool,
    /// Whether the failure route pauses (for off-shard work, m_store say): its runs wait in
    /// `paused` until [`Proxy::resume_failure`].
    failure_pauses: bool,
    paused: Vec<FailureRun<()>>,
    /// The transport of the caller's requests and of the branches (UDP unless a test says).
    caller_transport: Transport,
    branch_transport: Transport,
    onreply_runs: Vec<u16>,
    /// The request the caller sent for each cell, and its method.
    requests: Vec<(CellId, u32, String)>,
    /// What an attached [`Ears`] heard, with the failure routes and completions in order.
    heard: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Relays the caller's INVITE (CSeq `cseq`) of transaction `id` to `sip:bob@svc.test`,
    /// a name tm resolves itself (RFC 3263): a DNS job is left in `tm.dns_jobs`.
    fn invite_by_name(&mut self, id: CellId, cseq: u32) {
        let mut branch = String::new();
        assert!(self.tm.branch_id(id, 0, &mut branch));
        let req = format!(
            "INVITE sip:bob@svc.test SIP/2.0\r\nVia: SIP/2.0/UDP {ME};branch={branch}\r\n{}",
            String::from_utf8(caller_request("INVITE", cseq))
                .expect("utf8")
                .split_once("\r\n")
                .map_or("", |x| x.1)
        );
        let dst = BranchDst::Name {
            sock: 0,
            transport: Transport::Udp,
            host: "svc.test".into(),
            port: None,
            secure: false,
        };
        let now = self.now;
        assert!(self.tm.add_branch(
            now,
            id,
            "sip:bob@svc.test",
            dst,
            req.into_bytes(),
            (&branch, Method::Invite),
            &mut self.out
        ));
    }

    fn new() -> Self {
        let mut cfg = TmConfig::from_params(&Params::default(), 1);
        cfg.timers.fr_timer = Duration::from_secs(2);
        cfg.timers.fr_inv_timer = Duration::from_secs(5);
        cfg.timers.wt_timer = Duration::from_secs(5);
        cfg.max_lifetime = cfg.timers.fr_inv_timer + cfg.timers.fr_timer + cfg.timers.t1_x64();
        cfg.report_flags = 1;
        let ident = Arc::new(Identity {
            local: Local::new(vec![Listen::udp(addr(ME))], Vec::new(), false),
            reply: ReplyIdentity::new(1, String::new()),
        });
        let t0 = Instant::now();
        Self {
            tm: Tm::new(ident, (), Arc::new(Stats::default()), 0, cfg),
            t0,
            now: t0,
            out: Outbox::default(),
            wire: Vec::new(),
            stateless: Vec::new(),
            completions: Vec::new(),
            failure_plan: VecDeque::new(),
            failures: 0,
            onreply_drops: false,
            failure_pauses: false,
            paused: Vec::new(),
            caller_transport: Transport::Udp,
            branch_transport: Transport::Udp,
            onreply_runs: Vec::new(),
            requests: Vec::new(),
            heard: Arc::default(),
        }
    }

    fn hear(&self, what: String) {
        if let Ok(mut h) = self.heard.lock() {
            h.push(what);
        }
    }

    /// Attaches an [`Ears`] to transaction `id`.
    fn attach_ears(&mut self, id: CellId) {
        let ears = Ears(Arc::clone(&self.heard));
        let slot = self.tm.attachment_mut(id).expect("cell");
        *slot = Some(Box::new(ears));
    }

    fn heard(&self) -> Vec<String> {
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn ms(&self) -> u128 {
        (self.now - self.t0).as_millis()
    }

    fn flush(&mut self) {
        let ms = self.ms();
        for o in &self.out.sends {
            let text = String::from_utf8_lossy(self.out.buf.get(o.range.clone()).unwrap_or(&[]));
            self.wire.push(Sent {
                ms,
                to: o.dst.addr,
                text: text.into_owned(),
            });
        }
        self.out.clear();
    }

    /// What the shard does after every tm call: serve its events.
    fn serve(&mut self) {
        while let Some(e) = self.tm.poll_event() {
            match e {
                TmEvent::Completed(c) => {
                    self.hear(format!("completed {}", c.code));
                    self.completions.push(c);
                }
                TmEvent::Failure(run) => {
                    self.hear(String::from("failure route"));
                    self.failures += 1;
                    if self.failure_pauses {
                        self.paused.push(run);
                        continue;
                    }
                    if let Some(dests) = self.failure_plan.pop_front() {
                        let method = self.method_of(run.cell);
                        for d in dests {
                            self.add_branch(run.cell, &method, d);
                        }
                    }
                    let outcome = FailureOutcome {
                        flags: run.flags,
                        routes: run.routes,
                    };
                    self.tm
                        .failure_done(self.now, run.cell, outcome, &mut self.out);
                }
            }
        }
        self.flush();
    }

    /// The paused failure route resumes and ends: it forks to `dests`, or answers `reply`
    /// (t_reply; whether tm took it comes back), or neither.
    fn resume_failure(&mut self, dests: &[usize], reply: Option<(u16, &str)>) -> bool {
        let run = self.paused.remove(0);
        let method = self.method_of(run.cell);
        for &d in dests {
            self.add_branch(run.cell, &method, d);
        }
        let mut took = true;
        if let Some((code, reason)) = reply {
            took = self
                .tm
                .t_reply(self.now, run.cell, code, reason, "", &mut self.out);
        }
        let outcome = FailureOutcome {
            flags: run.flags,
            routes: run.routes,
        };
        self.tm
            .failure_done(self.now, run.cell, outcome, &mut self.out);
        self.serve();
        took
    }

    fn method_of(&self, id: CellId) -> String {
        self.requests
            .iter()
            .find(|r| r.0 == id)
            .map_or_else(|| "INVITE".into(), |r| r.2.clone())
    }

    fn n_of(&self, id: CellId) -> u32 {
        self.requests.iter().find(|r| r.0 == id).map_or(0, |r| r.1)
    }

    /// Moves the clock to `ms` of test time, firing every deadline on the way.
    fn advance(&mut self, ms: u64) {
        let target = self.t0 + Duration::from_millis(ms);
        while let Some(d) = self.tm.next_deadline().filter(|d| *d <= target) {
            self.now = self.now.max(d);
            self.tm.on_timer(self.now, &mut self.out);
            self.serve();
        }
        self.now = self.now.max(target);
    }

    /// The caller sends request `n` and the script relays it to `dests`.
    fn relay(
        &mut self,
        method: &str,
        n: u32,
        routes: Routes,
        flags: u32,
        dests: &[usize],
    ) -> CellId {
        let req = caller_request(method, n);
        let msg = ser_parser::parse(&req).expect("request");
        let mut at = Arrival::udp(addr(CALLER), addr(ME), 0, 0);
        at.transport = self.caller_transport;
        assert_eq!(
            self.tm.on_request(self.now, &msg, &mut self.out),
            RequestMatch::Pass
        );
        let id = self.tm.create(self.now, &msg, at, flags, 0).expect("cell");
        self.requests.push((id, n, method.to_string()));
        let now = self.now;
        self.tm.begin_relay(
            now,
            id,
            &msg,
            routes,
            flags,
            "sip:bob@b.example",
            false,
            &mut self.out,
        );
        for &d in dests {
            self.add_branch(id, method, d);
        }
        self.serve();
        id
    }

    /// Writes the branch request to UAS `d` (our Via on top) and starts the branch.
    fn add_branch(&mut self, id: CellId, method: &str, d: usize) {
        let index = self.tm.branch_count(id);
        let mut branch = String::new();
        assert!(self.tm.branch_id(id, index, &mut branch));
        let n = self.n_of(id);
        let caller = String::from_utf8(caller_request(method, n)).expect("utf8");
        let rest = caller.split_once("\r\n").map_or("", |x| x.1);
        let uri = format!("sip:bob@{}", uas(d));
        let req =
            format!("{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {ME};branch={branch}\r\n{rest}");
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let now = self.now;
        let dst = BranchDst::Addr(Dest {
            transport: self.branch_transport,
            ..Dest::udp(0, uas(d))
        });
        assert!(self.tm.add_branch(
            now,
            id,
            &uri,
            dst,
            req.into_bytes(),
            (&branch, m),
            &mut self.out
        ));
        self.flush();
    }

    /// The caller's ACK or retransmission of request `n`, through tm before any script.
    fn caller_sends(&mut self, method: &str, n: u32) -> RequestMatch {
        let req = caller_request(method, n);
        let msg = ser_parser::parse(&req).expect("request");
        let r = self.tm.on_request(self.now, &msg, &mut self.out);
        self.flush();
        r
    }

    /// The last request of `method` UAS `d` received.
    fn last_request_at(&self, d: usize, method: &str) -> Vec<u8> {
        self.wire
            .iter()
            .rev()
            .find(|s| s.to == uas(d) && s.text.starts_with(method))
            .map(|s| s.text.clone().into_bytes())
            .unwrap_or_else(|| panic!("UAS {d} got no {method}"))
    }

    /// UAS `d` answers its last `method` request with `code`.
    fn uas_replies_to(&mut self, d: usize, method: &str, code: u16) {
        let req = self.last_request_at(d, method);
        let resp = msgs::response(&req, code, (code > 100).then_some("uas-tag"));
        let msg = ser_parser::parse(&resp).expect("response");
        match self.tm.on_reply(self.now, &msg, &mut self.out) {
            ReplyMatch::NotOurs => self.stateless.push(format!("{code}")),
            ReplyMatch::Done => {}
            ReplyMatch::OnReply(run) => {
                self.onreply_runs.push(run.code);
                let drop = self.onreply_drops;
                self.tm.onreply_done(
                    self.now,
                    &run,
                    &msg,
                    drop,
                    &Default::default(),
                    &mut self.out,
                );
            }
        }
        self.serve();
    }

    /// (ms, first line) of what the caller received.
    fn upstream(&self) -> Vec<(u128, String)> {
        self.to(addr(CALLER))
    }

    fn to(&self, a: SocketAddr) -> Vec<(u128, String)> {
        self.wire
            .iter()
            .filter(|s| s.to == a)
            .map(|s| (s.ms, s.first_line().to_string()))
            .collect()
    }

    /// When UAS `d` received requests whose line starts with `method`.
    fn times_at(&self, d: usize, method: &str) -> Vec<u128> {
        self.to(uas(d))
            .into_iter()
            .filter(|(_, l)| l.starts_with(method))
            .map(|(ms, _)| ms)
            .collect()
    }

    fn finals_upstream(&self) -> Vec<(u128, String)> {
        let mut v: Vec<_> = self
            .upstream()
            .into_iter()
            .filter(|(_, l)| !l.starts_with("SIP/2.0 1"))
            .collect();
        // A final's retransmissions (timer G, or an answered request retransmission) are the
        // same final: count each once.
        v.dedup_by(|a, b| a.1 == b.1);
        v
    }
}

fn line(ms: u128, s: &str) -> (u128, String) {
    (ms, s.to_string())
}

#[test]
fn fr_timer_ends_an_unanswered_invite_with_408_and_timer_a_retransmits_until_then() {
    let mut p = Proxy::new();
    p.relay("INVITE", 1, Routes::default(), 0, &[0]);
    p.advance(2000);
    assert_eq!(
        p.times_at(0, "INVITE"),
        [0, 500, 1500],
        "timer A: T1, then doubled"
    );
    assert_eq!(
        p.upstream(),
        [
            line(0, "SIP/2.0 100 Trying"),
            line(2000, "SIP/2.0 408 Request Timeout")
        ]
    );
    // Timer G resends the 408 until the caller's ACK; then nothing more.
    p.advance(2500);
    assert_eq!(
        p.upstream().last(),
        Some(&line(2500, "SIP/2.0 408 Request Timeout"))
    );
    assert_eq!(p.caller_sends("ACK", 1), RequestMatch::Absorbed);
    let before = p.upstream().len();
    p.advance(60_000);
    assert_eq!(p.upstream().len(), before);
    assert!(p.tm.is_empty(), "every transaction ended");
}

#[test]
fn over_reliable_transports_nothing_is_retransmitted_and_fr_timer_still_ends_it() {
    // RFC 3261 17.1.1.2 / 17.1.2.2: no timer A or E over a reliable transport; 17.2.1: no
    // timer G for the caller's final over one. fr_timer (timer B/F's stand-in) still runs.
    let mut p = Proxy::new();
    p.caller_transport = Transport::Tcp;
    p.branch_transport = Transport::Tcp;
    p.relay("INVITE", 1, Routes::default(), 0, &[0]);
    p.advance(1999);
    assert_eq!(p.times_at(0, "INVITE"), [0], "no timer A");
    p.advance(10_000);
    assert_eq!(
        p.upstream(),
        [
            line(0, "SIP/2.0 100 Trying"),
            line(2000, "SIP/2.0 408 Request Timeout")
        ],
        "408 once, no timer G resends"
    );
    p.relay("MESSAGE", 2, Routes::default(), 0, &[1]);
    p.advance(12_000);
    assert_eq!(p.times_at(1, "MESSAGE"), [10_000], "no timer E");
    assert_eq!(
        p.to(addr(CALLER)).last(),
        Some(&line(12_000, "SIP/2.0 408 Request Timeout"))
    );
    p.caller_sends("ACK", 1);
    p.advance(60_000);
    assert!(p.tm.is_empty(), "every transaction ended");
}

#[test]
fn late_negative_final_after_the_timeout_is_acked_and_absorbed() {
    // The defect seen with real clients: 408 at 2.0 s, then the UAS's late 486 relayed as a
    // second final and never ACKed.
    let mut p = Proxy::new();
    p.relay("INVITE", 1, Routes::default(), 0, &[0]);
    p.advance(2000);
    p.caller_sends("ACK", 1);
    p.advance(3500);
    p.uas_replies_to(0, "INVITE", 486);
    assert_eq!(p.times_at(0, "ACK"), [3500], "the late 486 is ACKed");
    p.advance(4000);
    p.uas_replies_to(0, "INVITE", 486);
    assert_eq!(p.times_at(0, "ACK"), [3500, 4000], "and its retransmission");
    assert_eq!(
        p.finals_upstream(),
        [line(2000, "SIP/2.0 408 Request Timeout")],
        "the caller never sees the 486"
    );
    assert!(p.stateless.is_empty(), "nothing went the stateless way");
    // The branch stays until the wait timer (5 s after its timeout), then the cell is gone.
    p.advance(6900);
    assert!(!p.tm.is_empty());
    p.advance(7000);
    assert!(p.tm.is_empty());
}

#[test]
fn late_non_invite_final_after_fr_timer_never_reaches_the_caller() {
    // The other half of the defect: 408 at 2.0 s, then "404 Late Not Found" at 3.5 s.
    let mut p = Proxy::new();
    p.relay("MESSAGE", 2, Routes::default(), 0, &[0]);
    p.advance(2000);
    assert_eq!(
        p.times_at(0, "MESSAGE"),
        [0, 500, 1500],
        "timer E: T1, doubled"
    );
    p.advance(3500);
    p.uas_replies_to(0, "MESSAGE", 404);
    assert_eq!(
        p.finals_upstream(),
        [line(2000, "SIP/2.0 408 Request Timeout")]
    );
    assert!(p.stateless.is_empty());
    assert!(
        p.times_at(0, "ACK").is_empty(),
        "a non-INVITE final is never ACKed"
    );
    p.advance(40_000);
    assert!(p.tm.is_empty());
}

#[test]
fn late_2xx_after_the_timeout_is_relayed() {
    let mut p = Proxy::new();
    p.relay("INVITE", 3, Routes::default(), 0, &[0]);
    p.advance(2000);
    p.advance(3000);
    p.uas_replies_to(0, "INVITE", 200);
    assert_eq!(
        p.finals_upstream(),
        [
            line(2000, "SIP/2.0 408 Request Timeout"),
            line(3000, "SIP/2.0 200 Test")
        ],
        "RFC 3261 16.7 step 5: every 2xx goes upstream"
    );
    assert!(
        p.times_at(0, "ACK").is_empty(),
        "the ACK of a 2xx is the caller's"
    );
}

#[test]
fn fr_inv_timer_after_ringing_cancels_the_branch_and_answers_408() {
    let mut p = Proxy::new();
    p.relay("INVITE", 4, Routes::default(), 0, &[0]);
    p.advance(100);
    p.uas_replies_to(0, "INVITE", 180);
    assert_eq!(p.upstream().last(), Some(&line(100, "SIP/2.0 180 Test")));
    p.advance(5099);
    assert!(p.times_at(0, "CANCEL").is_empty());
    p.advance(5100);
    assert_eq!(
        p.times_at(0, "CANCEL"),
        [5100],
        "fr_inv_timer after the 180"
    );
    assert_eq!(
        p.finals_upstream(),
        [line(5100, "SIP/2.0 408 Request Timeout")]
    );
    p.advance(5150);
    p.uas_replies_to(0, "CANCEL", 200);
    p.uas_replies_to(0, "INVITE", 487);
    assert_eq!(p.times_at(0, "ACK"), [5150], "the 487 is ACKed");
    assert_eq!(p.finals_upstream().len(), 1, "and not relayed");
    assert!(p.stateless.is_empty());
}

#[test]
fn cancel_of_a_ringing_call_ends_with_the_uas_487() {
    let mut p = Proxy::new();
    let id = p.relay("INVITE", 5, Routes::default(), 0, &[0]);
    p.advance(50);
    p.uas_replies_to(0, "INVITE", 180);
    p.advance(1000);
    assert!(p.tm.cancel_invite(p.now, id, &mut p.out));
    p.flush();
    assert_eq!(p.times_at(0, "CANCEL"), [1000]);
    p.advance(1010);
    p.uas_replies_to(0, "CANCEL", 200);
    p.uas_replies_to(0, "INVITE", 487);
    assert_eq!(p.finals_upstream(), [line(1010, "SIP/2.0 487 Test")]);
    assert_eq!(p.times_at(0, "ACK"), [1010]);
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut p = Proxy::new();
    let id = p.relay("INVITE", 6, Routes::default(), 0, &[0]);
    p.advance(100);
    assert!(p.tm.cancel_invite(p.now, id, &mut p.out));
    p.flush();
    assert!(
        p.times_at(0, "CANCEL").is_empty(),
        "RFC 3261 9.1: not before a provisional"
    );
    p.advance(300);
    p.uas_replies_to(0, "INVITE", 180);
    assert_eq!(p.times_at(0, "CANCEL"), [300]);
    p.uas_replies_to(0, "INVITE", 487);
    assert_eq!(p.finals_upstream(), [line(300, "SIP/2.0 487 Test")]);
}

#[test]
fn parallel_forking_relays_the_200_and_cancels_the_rest() {
    let mut p = Proxy::new();
    p.relay("INVITE", 7, Routes::default(), 0, &[0, 1, 2]);
    for d in 0..3 {
        assert_eq!(p.times_at(d, "INVITE"), [0], "branch {d} sent at once");
    }
    p.advance(100);
    p.uas_replies_to(0, "INVITE", 486);
    p.advance(150);
    p.uas_replies_to(1, "INVITE", 180);
    p.advance(200);
    p.uas_replies_to(2, "INVITE", 200);
    assert_eq!(p.times_at(0, "ACK"), [100], "the 486 is ACKed hop by hop");
    assert_eq!(
        p.times_at(1, "CANCEL"),
        [200],
        "the ringing branch is cancelled"
    );
    assert!(
        p.times_at(0, "CANCEL").is_empty(),
        "a finished branch is not"
    );
    let up = p.upstream();
    assert_eq!(
        up,
        [
            line(0, "SIP/2.0 100 Trying"),
            line(150, "SIP/2.0 180 Test"),
            line(200, "SIP/2.0 200 Test")
        ]
    );
    // A second 2xx (the cancelled branch answered anyway) is relayed too.
    p.uas_replies_to(1, "INVITE", 200);
    let oks = p
        .upstream()
        .iter()
        .filter(|(_, l)| l == "SIP/2.0 200 Test")
        .count();
    assert_eq!(oks, 2);
}

#[test]
fn when_every_branch_fails_the_best_final_goes_up_once_the_last_ends() {
    let mut p = Proxy::new();
    p.relay("INVITE", 8, Routes::default(), 0, &[0, 1, 2]);
    p.advance(100);
    p.uas_replies_to(0, "INVITE", 503);
    p.uas_replies_to(1, "INVITE", 404);
    assert!(p.finals_upstream().is_empty(), "branch 2 is still out");
    p.advance(2000);
    // 404 beats 503 and the timeout's 408 (16.7 step 6: 408 and 503 rank last in class).
    assert_eq!(p.finals_upstream(), [line(2000, "SIP/2.0 404 Test")]);
}

#[test]
fn a_6xx_cancels_the_other_branches_and_wins() {
    let mut p = Proxy::new();
    p.relay("INVITE", 9, Routes::default(), 0, &[0, 1]);
    p.advance(50);
    p.uas_replies_to(0, "INVITE", 180);
    p.advance(100);
    p.uas_replies_to(1, "INVITE", 603);
    assert_eq!(p.times_at(0, "CANCEL"), [100]);
    p.advance(120);
    p.uas_replies_to(0, "INVITE", 487);
    assert_eq!(p.finals_upstream(), [line(120, "SIP/2.0 603 Test")]);
}

#[test]
fn a_lone_503_becomes_500() {
    let mut p = Proxy::new();
    p.relay("INVITE", 10, Routes::default(), 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 503);
    assert_eq!(
        p.finals_upstream(),
        [line(10, "SIP/2.0 500 Service Unavailable Downstream")]
    );
}

#[test]
fn serial_forking_through_the_failure_route_after_fr_timer() {
    let mut p = Proxy::new();
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    p.failure_plan.push_back(vec![1]);
    p.relay("INVITE", 11, routes, 0, &[0]);
    p.advance(2000);
    assert_eq!(
        p.failures, 1,
        "the failure route ran when branch 0 timed out"
    );
    assert_eq!(
        p.times_at(1, "INVITE"),
        [2000],
        "and forked to the next destination"
    );
    assert!(
        p.finals_upstream().is_empty(),
        "no 408 while the new branch runs"
    );
    p.advance(2100);
    p.uas_replies_to(1, "INVITE", 200);
    assert_eq!(p.finals_upstream(), [line(2100, "SIP/2.0 200 Test")]);
    // The first destination answers late: ACKed and absorbed.
    p.advance(2500);
    p.uas_replies_to(0, "INVITE", 486);
    assert_eq!(p.times_at(0, "ACK"), [2500]);
    assert_eq!(p.finals_upstream().len(), 1);
}

#[test]
fn a_failure_route_that_adds_nothing_leaves_the_best_final_and_runs_once() {
    let mut p = Proxy::new();
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    p.failure_plan.push_back(vec![1]);
    p.relay("INVITE", 12, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 486);
    assert_eq!(p.failures, 1);
    p.advance(20);
    p.uas_replies_to(1, "INVITE", 404);
    assert_eq!(
        p.failures, 1,
        "a failure route runs once unless it arms itself again"
    );
    // 404 and 486 rank alike: the first branch's stands.
    assert_eq!(p.finals_upstream(), [line(20, "SIP/2.0 486 Test")]);
}

#[test]
fn ser_08_negative_reply_route_runs_like_a_failure_route() {
    let mut p = Proxy::new();
    let routes = Routes {
        on_negative: Some(2),
        ..Routes::default()
    };
    p.relay("INVITE", 13, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 480);
    assert_eq!(p.failures, 1);
    assert_eq!(p.finals_upstream(), [line(10, "SIP/2.0 480 Test")]);
}

#[test]
fn onreply_route_may_drop_a_provisional_but_not_a_final() {
    let mut p = Proxy::new();
    let routes = Routes {
        on_reply: Some(1),
        ..Routes::default()
    };
    p.onreply_drops = true;
    p.relay("INVITE", 14, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 100);
    p.uas_replies_to(0, "INVITE", 180);
    p.uas_replies_to(0, "INVITE", 200);
    assert_eq!(p.onreply_runs, [180, 200], "a 100 is never routed");
    assert_eq!(
        p.upstream(),
        [line(0, "SIP/2.0 100 Trying"), line(10, "SIP/2.0 200 Test")]
    );
}

#[test]
fn completion_is_reported_once_for_flagged_transactions_only() {
    let mut p = Proxy::new();
    p.relay("INVITE", 15, Routes::default(), 1, &[0]);
    p.relay("INVITE", 16, Routes::default(), 0, &[1]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 200);
    p.uas_replies_to(1, "INVITE", 200);
    p.uas_replies_to(0, "INVITE", 200);
    assert_eq!(p.completions.len(), 1);
    let c = &p.completions[0];
    assert_eq!((c.code, c.flags), (200, 1));
    assert_eq!(c.out_uri, "sip:bob@b.example");
    assert!(c
        .request
        .starts_with(b"INVITE sip:bob@b.example SIP/2.0\r\n"));
    assert!(c
        .reply
        .as_deref()
        .is_some_and(|r| r.starts_with(b"SIP/2.0 200 Test")));
    // A local final (the 408 of fr_timer) is reported as sent, with our To-tag.
    p.relay("MESSAGE", 17, Routes::default(), 1, &[2]);
    p.advance(3000);
    let last = p.completions.last().expect("a second report");
    assert_eq!(last.code, 408);
    let reply = String::from_utf8_lossy(last.reply.as_deref().unwrap_or(b"")).into_owned();
    assert!(
        reply.starts_with("SIP/2.0 408 Request Timeout\r\n"),
        "{reply}"
    );
    assert!(reply.contains(";tag="), "{reply}");
}

#[test]
fn request_retransmissions_are_answered_from_the_transaction() {
    let mut p = Proxy::new();
    p.relay("INVITE", 18, Routes::default(), 0, &[0]);
    p.advance(200);
    assert_eq!(p.caller_sends("INVITE", 18), RequestMatch::Absorbed);
    assert_eq!(
        p.upstream().last(),
        Some(&line(200, "SIP/2.0 100 Trying")),
        "the last reply again"
    );
    assert_eq!(p.times_at(0, "INVITE"), [0], "not relayed again");
}

#[test]
fn a_timed_out_target_fails_over_to_the_next_one() {
    // RFC 3263: a name resolved to two targets; the first never answers.
    let mut p = Proxy::new();
    let id = p.relay("INVITE", 19, Routes::default(), 0, &[]);
    p.invite_by_name(id, 19);
    let jobs: Vec<_> = p.tm.dns_jobs.drain(..).collect();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].host, "svc.test");
    p.advance(30);
    p.tm.on_resolved(
        p.now,
        id,
        jobs[0].branch,
        Ok(vec![uas(0), uas(1)]),
        &mut p.out,
    );
    p.serve();
    p.advance(2030);
    assert_eq!(p.times_at(0, "INVITE"), [30, 530, 1530]);
    assert_eq!(
        p.times_at(1, "INVITE"),
        [2030],
        "fr_timer on the first: the second target"
    );
    assert!(
        p.finals_upstream().is_empty(),
        "no 408 while a target is left"
    );
    p.advance(2100);
    p.uas_replies_to(1, "INVITE", 200);
    assert_eq!(p.finals_upstream(), [line(2100, "SIP/2.0 200 Test")]);
}

#[test]
fn a_503_from_the_last_target_is_500_and_without_targets_it_is_503_becoming_500() {
    let mut p = Proxy::new();
    let id = p.relay("INVITE", 20, Routes::default(), 0, &[]);
    let dst = BranchDst::Name {
        sock: 0,
        transport: Transport::Udp,
        host: "nowhere.test".into(),
        port: None,
        secure: false,
    };
    let now = p.now;
    assert!(p.tm.add_branch(
        now,
        id,
        "sip:bob@nowhere.test",
        dst,
        caller_request("INVITE", 20),
        ("z9hG4bKx", Method::Invite),
        &mut p.out
    ));
    let job = p.tm.dns_jobs.pop().expect("a DNS job");
    p.tm.on_resolved(p.now, id, job.branch, Err("NXDOMAIN".into()), &mut p.out);
    p.serve();
    assert_eq!(
        p.finals_upstream(),
        [line(0, "SIP/2.0 500 Service Unavailable Downstream")]
    );
}

/// A module's state attached to a transaction, writing down what tm tells it.
#[derive(Debug)]
struct Ears(Arc<Mutex<Vec<String>>>);

impl Attached for Ears {
    fn branch_ended(&mut self, index: usize, end: BranchEnd) {
        if let Ok(mut h) = self.0.lock() {
            h.push(format!("{index} {end:?}"));
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Drop for Ears {
    fn drop(&mut self) {
        if let Ok(mut h) = self.0.lock() {
            h.push(String::from("dropped"));
        }
    }
}

#[test]
fn the_attachment_hears_each_branch_end_once_before_the_failure_route_and_the_answer() {
    let mut p = Proxy::new();
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    let id = p.relay("INVITE", 21, routes, 1, &[0, 1, 2]);
    p.attach_ears(id);
    p.advance(100);
    p.uas_replies_to(0, "INVITE", 503);
    p.advance(150);
    p.uas_replies_to(1, "INVITE", 180);
    p.advance(2000);
    assert_eq!(p.heard(), ["0 Replied(503)", "2 Timeout"]);
    // fr_inv_timer after the 180: it answered, the callee did not.
    p.advance(5150);
    assert_eq!(
        p.heard(),
        [
            "0 Replied(503)",
            "2 Timeout",
            "1 Unanswered",
            "failure route",
            "dropped",
            "completed 408"
        ]
    );
    // The cancelled branch's 487 and a late reply on the timed-out one: nothing more.
    p.uas_replies_to(1, "INVITE", 487);
    p.uas_replies_to(2, "INVITE", 486);
    assert_eq!(p.heard().len(), 6);

    // A 200: heard before it goes upstream (which drops the attachment).
    let mut p = Proxy::new();
    let id = p.relay("INVITE", 22, Routes::default(), 1, &[0]);
    p.attach_ears(id);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 200);
    assert_eq!(p.heard(), ["0 Replied(200)", "dropped", "completed 200"]);
}

#[test]
fn the_attachment_hears_an_unreachable_branch_and_a_503_only_from_the_last_target() {
    // A stream connection that failed: the branch is unreachable at once.
    let mut p = Proxy::new();
    p.branch_transport = Transport::Tcp;
    let id = p.relay("OPTIONS", 23, Routes::default(), 1, &[0]);
    p.attach_ears(id);
    let sent = p.last_request_at(0, "OPTIONS");
    let msg = ser_parser::parse(&sent).expect("request");
    assert!(p.tm.on_send_failed(p.now, &msg, &mut p.out));
    p.serve();
    assert_eq!(p.heard(), ["0 Unreachable", "dropped", "completed 500"]);

    // A name with two targets: the first one's 503 moves the branch on (RFC 3263), unheard.
    let mut p = Proxy::new();
    let id = p.relay("INVITE", 24, Routes::default(), 0, &[]);
    p.attach_ears(id);
    p.invite_by_name(id, 24);
    let job = p.tm.dns_jobs.pop().expect("a DNS job");
    p.tm.on_resolved(p.now, id, job.branch, Ok(vec![uas(0), uas(1)]), &mut p.out);
    p.serve();
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 503);
    assert!(p.heard().is_empty(), "{:?}", p.heard());
    assert_eq!(p.times_at(1, "INVITE"), [10]);
    p.uas_replies_to(1, "INVITE", 503);
    assert_eq!(p.heard(), ["0 Replied(503)", "dropped"]);
}

/// A paused failure route (m_store waiting for its INSERT) holds the transaction: no final
/// goes upstream and the caller's retransmissions are absorbed until it resumes; then its
/// t_reply goes out, once.
#[test]
fn a_paused_failure_route_holds_the_final_until_it_resumes_and_its_reply_goes_once() {
    let mut p = Proxy::new();
    p.failure_pauses = true;
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    p.relay("MESSAGE", 30, routes, 1, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "MESSAGE", 480);
    assert_eq!(
        (p.failures, p.paused.len()),
        (1, 1),
        "the route ran and paused"
    );
    p.advance(800);
    assert!(
        p.finals_upstream().is_empty(),
        "no final while it is paused"
    );
    assert_eq!(p.caller_sends("MESSAGE", 30), RequestMatch::Absorbed);
    assert!(p.finals_upstream().is_empty(), "nor for a retransmission");
    assert_eq!(p.times_at(0, "MESSAGE"), [0], "not relayed again");
    assert!(p.completions.is_empty());
    p.advance(900);
    assert!(p.resume_failure(&[], Some((202, "Accepted"))));
    assert_eq!(p.finals_upstream(), [line(900, "SIP/2.0 202 Accepted")]);
    assert_eq!(p.completions.len(), 1, "completed once");
    assert_eq!(p.completions.first().map(|c| c.code), Some(202));
    // A retransmission now gets the same 202 from the transaction, and nothing runs again.
    p.advance(1000);
    assert_eq!(p.caller_sends("MESSAGE", 30), RequestMatch::Absorbed);
    let finals: Vec<_> = p
        .upstream()
        .into_iter()
        .filter(|(_, l)| !l.starts_with("SIP/2.0 1"))
        .collect();
    assert_eq!(
        finals,
        [
            line(900, "SIP/2.0 202 Accepted"),
            line(1000, "SIP/2.0 202 Accepted")
        ]
    );
    assert_eq!(p.failures, 1);
    assert_eq!(p.completions.len(), 1);
}

/// A paused failure route that resumes and adds nothing: the best final goes up then.
#[test]
fn a_paused_failure_route_that_adds_nothing_sends_the_best_final_on_resume() {
    let mut p = Proxy::new();
    p.failure_pauses = true;
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    p.relay("INVITE", 31, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 486);
    assert_eq!(
        p.times_at(0, "ACK"),
        [10],
        "the branch's final is ACKed at once"
    );
    p.advance(300);
    assert!(p.finals_upstream().is_empty());
    assert!(p.resume_failure(&[], None));
    assert_eq!(p.finals_upstream(), [line(300, "SIP/2.0 486 Test")]);
}

/// A CANCEL while the failure route is paused: answered by the shard as usual; the route's
/// new branch (it forks on resume) is cancelled as soon as it rings, and the INVITE ends
/// with 487, once.
#[test]
fn a_cancel_while_the_failure_route_is_paused_cancels_what_it_adds_and_ends_with_487() {
    let mut p = Proxy::new();
    p.failure_pauses = true;
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    let id = p.relay("INVITE", 32, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 486);
    p.advance(100);
    assert!(p.tm.cancel_invite(p.now, id, &mut p.out));
    p.flush();
    assert!(
        p.finals_upstream().is_empty(),
        "the paused route still owns the answer"
    );
    p.advance(200);
    assert!(p.resume_failure(&[1], None));
    assert_eq!(p.times_at(1, "INVITE"), [200]);
    assert!(p.finals_upstream().is_empty(), "the new branch is pending");
    p.advance(250);
    p.uas_replies_to(1, "INVITE", 180);
    assert_eq!(p.times_at(1, "CANCEL"), [250], "cancelled once it rings");
    p.uas_replies_to(1, "CANCEL", 200);
    p.uas_replies_to(1, "INVITE", 487);
    assert_eq!(p.finals_upstream(), [line(250, "SIP/2.0 487 Test")]);
    assert_eq!(p.failures, 1);
}

/// A CANCEL while paused and a route that adds nothing: 487 on resume.
#[test]
fn a_cancel_while_the_failure_route_is_paused_and_nothing_added_ends_with_487() {
    let mut p = Proxy::new();
    p.failure_pauses = true;
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    let id = p.relay("INVITE", 33, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "INVITE", 486);
    p.advance(100);
    assert!(p.tm.cancel_invite(p.now, id, &mut p.out));
    p.flush();
    assert!(p.finals_upstream().is_empty());
    p.advance(150);
    assert!(p.resume_failure(&[], None));
    let finals = p.finals_upstream();
    assert_eq!(finals.len(), 1);
    assert!(finals[0].1.starts_with("SIP/2.0 487"), "{finals:?}");
}

/// A failure route whose work never ends (a database that hangs): when the transaction
/// outlives its lifetime the best final goes upstream and the cell lingers 64·T1 for
/// retransmissions; the route, resuming later, finds it answered and sends nothing.
#[test]
fn a_failure_route_paused_past_the_transactions_lifetime_gives_up_with_the_best_final() {
    let mut p = Proxy::new();
    p.failure_pauses = true;
    let routes = Routes {
        on_failure: Some(1),
        ..Routes::default()
    };
    p.relay("MESSAGE", 34, routes, 0, &[0]);
    p.advance(10);
    p.uas_replies_to(0, "MESSAGE", 480);
    let lifetime = 5_000 + 2_000 + 32_000;
    p.advance(lifetime - 1);
    assert!(
        p.finals_upstream().is_empty(),
        "still waiting for the route"
    );
    p.advance(lifetime + 100);
    assert_eq!(p.finals_upstream().len(), 1);
    assert_eq!(p.finals_upstream()[0].1, "SIP/2.0 480 Test");
    assert_eq!(p.caller_sends("MESSAGE", 34), RequestMatch::Absorbed);
    assert!(
        !p.resume_failure(&[], Some((202, "Accepted"))),
        "t_reply after the answer is refused"
    );
    assert_eq!(p.finals_upstream().len(), 1, "nothing more went up");
    p.advance(lifetime + 32_000 + 1_000);
    assert_eq!(p.tm.len(), 0, "the cell is gone after its linger");
}
