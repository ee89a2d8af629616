//! One measurement ([`step`]): a fresh server (and UAS), load at one rate for the step's
//! seconds, the server's CPU time and peak RSS from /proc around it, everything stopped, and
//! whether the step passed (failures, p99 latency, achieved rate).
//!
//! One server and one rate only: which steps run, and when to stop, is the ramp's
//! ([`super::ramp`]).

use std::fs;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::drive::{preregister, run_loadgen, run_loadgen_legacy, run_sipp};
use super::env::Env;
use super::prepare::Prepared;
use super::procfs::{hz, ticks, tree, vm_hwm};
use super::results::{fmt_opt, Step};
use super::scenarios::{Driver, Load, Scenario, Server};
use super::servers::{start_server, start_uas};
use crate::Opts;

/// One step: fresh server (and UAS), load for `secs` at `rate`, readings, everything stopped.
#[allow(clippy::too_many_arguments)]
pub(super) fn step(
    opts: &Opts,
    env: &Env,
    prep: &Prepared,
    sc: &Scenario,
    server: &Server,
    driver: Driver,
    rate: u64,
    secs: u64,
) -> Result<Step> {
    let tag = server.label().replace([' ', '='], "");
    let dir = env.work.join(format!("{}-{tag}-{rate}", sc.name));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut srv = start_server(env, prep, sc, server, &dir)?;
    let needs_uas = matches!(sc.load, Load::Call | Load::CallToUsers);
    let mut uas = if needs_uas {
        Some(start_uas(env, driver, &dir)?)
    } else {
        None
    };
    if sc.load == Load::CallToUsers {
        preregister(env, sc, &dir)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids = tree(srv.pid());
    let k0 = ticks(&pids);
    let (g, gen) = match driver {
        Driver::Sipp => run_sipp(env, sc, rate, secs, &dir)?,
        Driver::Loadgen => run_loadgen(env, sc, rate, secs, &dir)?,
        Driver::LoadgenLegacy => run_loadgen_legacy(env, sc, rate, secs, &dir)?,
    };
    let k1 = ticks(&pids);
    let rss = vm_hwm(&pids);
    drop(gen);
    if let Some(u) = uas.as_mut() {
        u.stop();
    }
    srv.stop();
    let cpu_s = k1.saturating_sub(k0) as f64 / hz();
    let us_per_call = (g.succeeded > 0).then(|| 1e6 * cpu_s / g.succeeded as f64);
    let gen_cpu_pct = g
        .raw
        .get("cpu_s")
        .and_then(Value::as_f64)
        .map(|c| 100.0 * c / secs as f64);
    let fail_ratio = if g.attempted > 0 {
        g.failed as f64 / g.attempted as f64
    } else {
        1.0
    };
    let mut why = Vec::new();
    if fail_ratio > 0.001 {
        why.push(format!("failures {:.2} %", 100.0 * fail_ratio));
    }
    match g.p99_ms {
        Some(p) if p > opts.p99_limit_ms => why.push(format!("p99 {p:.0} ms")),
        None => why.push("no latency".into()),
        _ => {}
    }
    if g.achieved < 0.95 * rate as f64 {
        why.push(format!("achieved {:.0}/s", g.achieved));
    }
    let s = Step {
        scenario: sc.name,
        server: server.clone(),
        driver,
        offered: rate,
        secs: secs as f64,
        attempted: g.attempted,
        succeeded: g.succeeded,
        failed: g.failed,
        achieved: g.achieved,
        p50_ms: g.p50_ms,
        p99_ms: g.p99_ms,
        cpu_s,
        us_per_call,
        rss_kib: rss,
        gen_cpu_pct,
        pass: why.is_empty(),
        why: why.join(", "),
        raw: g.raw,
    };
    eprintln!(
        "  {:<13} {:<14} {:>5}/s  ok {:>6} failed {:>5}  ach {:>7.0}/s  p50 {:>6} p99 {:>6} ms  cpu {:>6} us/call  rss {:>6} KiB  {}",
        s.scenario,
        s.server.label(),
        s.offered,
        s.succeeded,
        s.failed,
        s.achieved,
        fmt_opt(s.p50_ms),
        fmt_opt(s.p99_ms),
        fmt_opt(s.us_per_call),
        s.rss_kib,
        if s.pass { "PASS".to_string() } else { format!("stop: {}", s.why) }
    );
    Ok(s)
}
