//! The dispatcher's management side: its FIFO commands (`ds_list`, `ds_reload`,
//! `ds_set_state`; `serctl dispatcher list|reload|set`), its metrics, and the prober thread
//! that sends the OPTIONS of `ds_ping_interval`.
//!
//! The prober is a thread of its own, never a shard: each round it resolves and writes the
//! probes (as `t_uac_from` does), posts each to the shard that owns its Call-ID, where a
//! plain client transaction runs it (tm's `uac`), and waits here for the results, which
//! drive the destinations' health ([`crate::dispatcher::probe`]). A probe goes over the
//! destination's own transport (`;transport=tcp` or `tls`, `sips:`), as its calls do, so a
//! TCP-only server is probed over TCP and a refused connection fails the probe at once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Command, Mgmt, Params, Reply};
use crate::dispatcher::health::State;
use crate::dispatcher::probe::{classify, Outcome, Pacer};
use crate::dispatcher::Dispatcher;
use crate::server::Event;

const COMMANDS: &[Command] = &[
    Command {
        name: "ds_list",
        module: "dispatcher",
        params: Params::Lines,
        help: "the destination sets: each destination with its flags (AX active, IP probing, \
               IX inactive, DX disabled), state, priority, attributes, calls in flight, \
               times selected",
        slow: false,
        run: ds_list,
    },
    Command {
        name: "ds_reload",
        module: "dispatcher",
        params: Params::Lines,
        help: "reads the list file (or table) again and swaps it in whole; destinations kept \
               keep their state",
        slow: true,
        run: ds_reload,
    },
    Command {
        name: "ds_set_state",
        module: "dispatcher",
        params: Params::Lines,
        help: "sets a destination's state: <active|inactive|probing|disabled> <set> <uri>",
        slow: false,
        run: ds_set_state,
    },
];

/// Adds the dispatcher's commands (main calls it when the module is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

fn ds(m: &Mgmt) -> Arc<Dispatcher> {
    Arc::clone(&m.live.current().core.dispatcher)
}

fn ds_list(m: &Mgmt, _: &[String]) -> Reply {
    Reply::ok(ds(m).list_lines())
}

fn ds_reload(m: &Mgmt, _: &[String]) -> Reply {
    match ds(m).reload() {
        Ok(msg) => {
            crate::log::always(
                crate::log::L_NOTICE,
                format_args!("dispatcher: reloaded: {msg}"),
            );
            Reply::ok(vec![msg])
        }
        Err(e) => {
            crate::error!("dispatcher: reload refused, the running sets stay: {e}");
            Reply::error(500, format!("reload failed: {e}"))
        }
    }
}

fn ds_set_state(m: &Mgmt, p: &[String]) -> Reply {
    let arg = |i: usize| p.get(i).map(|s| s.trim()).filter(|s| !s.is_empty());
    let (Some(state), Some(set), Some(uri)) = (arg(0), arg(1), arg(2)) else {
        return Reply::error(400, "ds_set_state: <state> <set> <uri> expected");
    };
    let Some(state) = State::parse(state) else {
        return Reply::error(
            400,
            format!("ds_set_state: unknown state '{state}' (active, inactive, probing, disabled)"),
        );
    };
    let Ok(set) = set.parse::<u32>() else {
        return Reply::error(400, format!("ds_set_state: bad set id '{set}'"));
    };
    match ds(m).set_state(set, uri, state) {
        Ok(()) => Reply::ok(vec![format!("set {set} destination {uri}: {state}")]),
        Err(e) => Reply::error(404, e),
    }
}

/// The dispatcher's metrics: per destination whether it is up, its calls in flight, how
/// often it was chosen, and its probes.
pub fn collector(ds: Arc<Dispatcher>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let mut up = Family::gauge(
            "ser_dispatcher_destination_up",
            "1 when the destination is active (selected), 0 when probing, inactive or disabled.",
        );
        let mut state = Family::gauge(
            "ser_dispatcher_destination_state",
            "The destination's state: 1 on the series of its state.",
        );
        let mut load = Family::gauge(
            "ser_dispatcher_calls_in_flight",
            "INVITE transactions relayed to the destination whose final reply has not gone upstream.",
        );
        let mut selected = Family::counter(
            "ser_dispatcher_selected_total",
            "Times the destination was chosen by a selection or a fail-over.",
        );
        let mut probes = Family::counter(
            "ser_dispatcher_probes_total",
            "Probes sent to the destination, by result (ok: answered, failed: no answer).",
        );
        let mut branch_failures = Family::counter(
            "ser_dispatcher_branch_failures_total",
            "Requests relayed to the destination by the dispatcher that failed: no reply, \
             unreachable, or 503 from it.",
        );
        for d in ds.sets().dests() {
            let st = &d.state;
            let set = st.setid.to_string();
            let l = [("set", set.as_str()), ("uri", st.uri.as_str())];
            let now = st.health.get().state;
            up.sample(&l, u64::from(now == State::Active));
            for s in [
                State::Active,
                State::Probing,
                State::Inactive,
                State::Disabled,
            ] {
                state.sample(
                    &[
                        ("set", set.as_str()),
                        ("uri", st.uri.as_str()),
                        ("state", s.name()),
                    ],
                    u64::from(now == s),
                );
            }
            load.sample(&l, u64::from(st.load.load(Ordering::Relaxed)));
            selected.sample(&l, st.selected.load(Ordering::Relaxed));
            branch_failures.sample(&l, st.branch_failures.load(Ordering::Relaxed));
            for (result, n) in [
                ("ok", st.probes_ok.load(Ordering::Relaxed)),
                ("failed", st.probes_failed.load(Ordering::Relaxed)),
            ] {
                probes.sample(
                    &[
                        ("set", set.as_str()),
                        ("uri", st.uri.as_str()),
                        ("result", result),
                    ],
                    n,
                );
            }
        }
        v.extend([up, state, load, selected, probes, branch_failures]);
    })
}

/// Starts the prober when `ds_ping_interval` is set; it ends with the management registry.
pub fn start_prober(m: &Arc<Mgmt>) -> std::io::Result<()> {
    let ds = ds(m);
    let Some(interval) = ds
        .cfg
        .as_ref()
        .map(|c| c.ping_interval)
        .filter(|i| !i.is_zero())
    else {
        return Ok(());
    };
    let weak = Arc::downgrade(m);
    std::thread::Builder::new()
        .name(String::from("ser-ds-ping"))
        .spawn(move || prober(&weak, interval))?;
    Ok(())
}

fn prober(m: &Weak<Mgmt>, interval: Duration) {
    crate::log::set_thread_name("ds-ping");
    let mut pacer = Pacer::new(Instant::now(), interval);
    loop {
        let wait = pacer
            .next_deadline()
            .saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        let Some(m) = m.upgrade() else {
            return;
        };
        let started = Instant::now();
        probe_round(&m);
        pacer.round_done(started, Instant::now());
    }
}

/// One round: every destination to probe at once, then their results.
fn probe_round(m: &Mgmt) {
    let g = m.live.current();
    let ds = Arc::clone(&g.core.dispatcher);
    let Some(cfg) = ds.cfg.clone() else {
        return;
    };
    let Some(post) = m.poster() else {
        return;
    };
    let mut waiting = Vec::new();
    for d in ds.probe_targets() {
        let prepared = super::prepare_uac(
            &g.core,
            m.stats.len(),
            &cfg.ping_method,
            &cfg.ping_from,
            &d.uri,
            &[],
            &[],
        );
        match prepared {
            Ok((shard, uac, rx)) => {
                if post(shard, Event::Uac(uac)) {
                    waiting.push((d, Some(rx)));
                }
            }
            Err(r) => {
                crate::debug!(
                    "dispatcher: probe to {} not sent: {} {}",
                    d.uri,
                    r.code,
                    r.reason
                );
                waiting.push((d, None));
            }
        }
    }
    // A probe ends within fr_timer (tm reports 408 then); a margin for a loaded shard.
    let limit = crate::tm::TmConfig::from_params(&g.core.params, 1)
        .timers
        .fr_timer
        + Duration::from_secs(2);
    let deadline = Instant::now() + limit;
    for (d, rx) in waiting {
        let outcome = match rx {
            None => Outcome::NotSent,
            Some(rx) => match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) if r.local => Outcome::Local(r.code),
                Ok(r) => Outcome::Replied(r.code),
                Err(_) => Outcome::Lost,
            },
        };
        match &outcome {
            Outcome::Replied(_) => d.state.probes_ok.fetch_add(1, Ordering::Relaxed),
            Outcome::Local(_) | Outcome::NotSent => {
                d.state.probes_failed.fetch_add(1, Ordering::Relaxed)
            }
            Outcome::Lost => 0,
        };
        if let Some(ev) = classify(&outcome) {
            let why = match &outcome {
                Outcome::Replied(c) => format!("answered a probe with {c}"),
                Outcome::Local(408) => String::from("no answer to a probe (408)"),
                Outcome::Local(c) => format!("a probe could not reach it ({c})"),
                _ => String::from("probe not sent"),
            };
            ds.event(&d.state, ev, &why);
        }
    }
}
