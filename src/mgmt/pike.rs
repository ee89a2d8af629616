//! pike's management command `pike.top` (Kamailio's name: the addresses blocked now) and its
//! metrics. Both sweep the blocked list first, so a source that went quiet is released even
//! when no request arrives to do it.

use std::sync::Arc;
use std::time::Instant;

use super::{Command, Mgmt, Params, Reply};
use crate::pike::Shared;

const COMMANDS: &[Command] = &[Command {
    name: "pike.top",
    module: "pike",
    params: Params::Lines,
    help: "addresses pike blocks now, the oldest block first: address, seconds blocked",
    slow: false,
    run: pike_top,
}];

/// Adds pike's command (main calls it when pike is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

fn sweep(p: &Shared, now: Instant) {
    let mut events = Vec::new();
    p.sweep_now(now, &mut events);
    let cfg = crate::pike::Config {
        unit: std::time::Duration::from_millis(p.unit_ms()),
        ..Default::default()
    };
    for ev in &events {
        crate::modules::pike::log_event(ev, &cfg);
    }
}

fn pike_top(m: &Mgmt, _: &[String]) -> Reply {
    let p = Arc::clone(&m.live.current().core.pike);
    let now = Instant::now();
    sweep(&p, now);
    let mut lines: Vec<String> = p
        .blocked()
        .iter()
        .map(|rec| {
            format!(
                "{} blocked={}s status=HOT",
                rec.ip,
                now.saturating_duration_since(rec.since_instant).as_secs()
            )
        })
        .collect();
    let unlisted = p.unlisted.load(std::sync::atomic::Ordering::Relaxed);
    if unlisted > 0 {
        lines.push(format!("({unlisted} blocks not listed: the list was full)"));
    }
    Reply::ok(lines)
}

/// pike's metrics: requests checked and refused, addresses evicted and untracked (per shard
/// slot summed), and the addresses blocked now.
pub fn collector(p: Arc<Shared>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        sweep(&p, Instant::now());
        let [checked, refused, evicted, untracked] = p.totals();
        let mut f = Family::counter(
            "ser_pike_checked_total",
            "Requests pike_check_req looked at.",
        );
        f.sample(&[], checked);
        v.push(f);
        let mut f = Family::counter(
            "ser_pike_refused_total",
            "Requests pike_check_req refused: their source was over the limit.",
        );
        f.sample(&[], refused);
        v.push(f);
        let mut f = Family::gauge("ser_pike_blocked", "Source addresses pike blocks now.");
        f.sample(&[], p.blocked_count() as u64);
        v.push(f);
        let mut f = Family::counter(
            "ser_pike_evicted_total",
            "Addresses dropped from a full pike table (max_addresses).",
        );
        f.sample(&[], evicted);
        v.push(f);
        let mut f = Family::counter(
            "ser_pike_untracked_total",
            "Requests passed unchecked: a table full of blocked addresses had no room.",
        );
        f.sample(&[], untracked);
        v.push(f);
    })
}
