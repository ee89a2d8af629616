//! rtpengine's management command `rtpengine.show` (Kamailio's name: the daemons with their
//! state) and its metrics, both read from the service's counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Command, Mgmt, Params, Reply};
use crate::rtpengine::{Counters, Rtpengine};

const COMMANDS: &[Command] = &[Command {
    name: "rtpengine.show",
    module: "rtpengine",
    params: Params::Lines,
    help: "the rtpengine daemons: weight, up or disabled (and for how long), datagrams sent, \
           answers ok, errors and bad, commands unanswered; then the calls placed and the \
           commands in flight",
    slow: false,
    run: show,
}];

/// Adds rtpengine's command (main calls it when the module is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

/// One line per daemon, then the totals.
pub fn show_lines(c: &Counters) -> Vec<String> {
    let mut v: Vec<String> = c
        .daemons
        .iter()
        .enumerate()
        .map(|(i, (d, s))| {
            let state = match c.disabled_for(i) {
                Some(left) => format!("disabled ({} s left)", left.as_secs() + 1),
                None => String::from("up"),
            };
            let n = |a: &portable_atomic::AtomicU64| a.load(Ordering::Relaxed);
            format!(
                "{} weight={} state={} sent={} ok={} errors={} bad={} timeouts={}",
                d.name,
                d.weight,
                state,
                n(&s.sent),
                n(&s.ok),
                n(&s.errors),
                n(&s.bad),
                n(&s.timeouts)
            )
        })
        .collect();
    v.push(format!(
        "calls={} in_flight={}",
        c.calls.load(Ordering::Relaxed),
        c.pending.load(Ordering::Relaxed)
    ));
    v
}

fn show(m: &Mgmt, _: &[String]) -> Reply {
    let r = Arc::clone(&m.live.current().core.rtpengine);
    match r.counters() {
        Some(c) => Reply::ok(show_lines(c)),
        None => Reply::error(500, "rtpengine is not running"),
    }
}

/// rtpengine's metrics: per daemon whether it is up and what it was sent and answered.
pub fn collector(r: Arc<Rtpengine>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let Some(c) = r.counters() else {
            return;
        };
        let mut up = Family::gauge(
            "ser_rtpengine_daemon_up",
            "1 when the daemon is used, 0 while it is skipped after a command it did not answer.",
        );
        let mut sent = Family::counter(
            "ser_rtpengine_sent_total",
            "ng datagrams sent to the daemon, retransmissions included.",
        );
        let mut answers = Family::counter(
            "ser_rtpengine_answers_total",
            "Answers from the daemon by result (ok, error: rtpengine refused, bad: undecodable).",
        );
        let mut timeouts = Family::counter(
            "ser_rtpengine_timeouts_total",
            "Commands the daemon gave no answer to after rtpengine_retr sends.",
        );
        for (i, (d, s)) in c.daemons.iter().enumerate() {
            let l = [("daemon", d.name.as_str())];
            up.sample(&l, u64::from(c.disabled_for(i).is_none()));
            sent.sample(&l, s.sent.load(Ordering::Relaxed));
            for (result, a) in [("ok", &s.ok), ("error", &s.errors), ("bad", &s.bad)] {
                answers.sample(
                    &[("daemon", d.name.as_str()), ("result", result)],
                    a.load(Ordering::Relaxed),
                );
            }
            timeouts.sample(&l, s.timeouts.load(Ordering::Relaxed));
        }
        let mut calls = Family::gauge(
            "ser_rtpengine_calls",
            "Calls placed on a daemon (their Call-ID remembered until delete).",
        );
        calls.sample(&[], c.calls.load(Ordering::Relaxed));
        let mut pending = Family::gauge(
            "ser_rtpengine_commands_in_flight",
            "Commands sent and not answered yet.",
        );
        pending.sample(&[], c.pending.load(Ordering::Relaxed));
        v.extend([up, sent, answers, timeouts, calls, pending]);
    })
}
