//! `loadgen`: the SIP load generator of ser.
//!
//! `loadgen <options|register|call|uas|message|file.xml> --target host:port [options]`: runs a
//! built-in scenario or a SIPp XML scenario open-loop (calls per second, optionally ramped) on
//! the `ser-shards` runtime: each shard has its own UDP socket(s) and its share of the rate, so
//! traffic leaves from many source ports. Replies are matched by Call-ID with `ser-parser`;
//! response times go to HDR histograms per transaction type; a progress line every second, a
//! table (and `--json FILE`) at the end, non-zero exit when failures exceed `--max-fail`.
//!
//! It never depends on the `ser` crate (digest is done here on `md-5`), so it cannot share the
//! server's bugs. Only UDP. See loadgen/README.md for the options and the XML support table.

mod builtin;
mod digest;
mod engine;
mod light;
mod opts;
mod rate;
mod scenario;
mod stats;
mod users;
mod wheel;

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ser_shards::{Config, Runtime};
use serde_json::json;

use engine::{Gen, Shared};

/// The process's own user+system CPU seconds (from /proc/self/stat; 0 where absent).
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the ")" that ends the command name: state is field 3; utime 14, stime 15.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux's USER_HZ is 100 on every architecture we build for.
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> Result<i32> {
    let o = opts::parse(std::env::args_os().skip(1).collect())?;
    let setup = Arc::new(o.setup);
    let name = setup
        .scenarios
        .first()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let shared = Arc::new(Shared::new(&name));
    // Signals are taken by this thread only (blocked before the shard threads start).
    let signals = ser_shards::os::SignalSet::block_standard();
    let cfg = Config {
        shards: o.shards,
        listen: o.listen.clone(),
        reuse_port: o.reuse_port,
        backend: o.backend,
        pin: false,
        recv_buffer: Some(8 << 20),
        max_datagram: 65535,
        blocking_threads: 1,
        name: "loadgen".to_string(),
        batch: o.batch,
        // Response times end at the kernel's receive time, whatever the batching.
        stamp: true,
        ..Config::default()
    };
    let n = o.shards;
    let factory = {
        let (setup, shared) = (Arc::clone(&setup), Arc::clone(&shared));
        move |i: usize| Gen::new(Arc::clone(&setup), Arc::clone(&shared), i, n)
    };
    let rt = Runtime::start(cfg, factory).context("starting the shards")?;
    if !o.quiet {
        let addrs: Vec<String> = rt.local_addrs().iter().map(|a| a.to_string()).collect();
        if setup.server {
            eprintln!(
                "loadgen: {} answering on {} ({} shards)",
                name,
                addrs.join(" "),
                n
            );
        } else {
            eprintln!(
                "loadgen: {} -> {} at {}/s{}, {} shards, from {}",
                name,
                setup.target,
                setup.schedule.from,
                if setup.schedule.ramp_secs > 0.0 {
                    format!(
                        " ramping to {}/s over {} s",
                        setup.schedule.to, setup.schedule.ramp_secs
                    )
                } else {
                    String::new()
                },
                n,
                addrs.join(" ")
            );
        }
    }
    let t0 = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_print = t0;
    let mut last_done = 0u64;
    let mut starting_over: Option<Instant> = None;
    let grace = setup.timeout + Duration::from_millis(setup.hold_ms) + Duration::from_secs(2);
    let mut interrupted = false;
    loop {
        if signals.wait_timeout(Duration::from_millis(50)).is_some() {
            interrupted = true;
            break;
        }
        let now = Instant::now();
        let att = shared.attempted.load(Ordering::Relaxed);
        let ok = shared.succeeded.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if setup.server {
            if setup.count.is_some_and(|c| ok + failed >= c)
                || setup.duration.is_some_and(|d| now - t0 >= d + grace)
                || (shared.done.load(Ordering::Relaxed) == n)
            {
                break;
            }
        } else {
            if shared.done.load(Ordering::Relaxed) == n {
                break;
            }
            if shared.starting_done.load(Ordering::Relaxed) == n {
                let since = *starting_over.get_or_insert(now);
                if now - since > grace {
                    break;
                }
            }
        }
        if !o.quiet && now - last_print >= Duration::from_secs(1) {
            let secs = (now - last_print).as_secs_f64();
            last_print = now;
            let done = ok + failed;
            let rate = (done - last_done) as f64 / secs;
            last_done = done;
            let (p50, p99) = shared
                .stats
                .lock()
                .ok()
                .and_then(|s| {
                    s.txns.first().map(|t| {
                        (
                            t.hist.value_at_quantile(0.5),
                            t.hist.value_at_quantile(0.99),
                        )
                    })
                })
                .unwrap_or((0, 0));
            let line = format!(
                "{:>6.1}s rate {:>7.1}/s completed {} failed {} in flight {} p50 {}us p99 {}us",
                (now - t0).as_secs_f64(),
                rate,
                ok,
                failed,
                att.saturating_sub(done),
                p50,
                p99
            );
            match setup.count.filter(|_| tty) {
                Some(c) if c > 0 => {
                    let frac = (done as f64 / c as f64).min(1.0);
                    let w = (frac * 30.0) as usize;
                    eprint!(
                        "\r[{}{}] {:>3.0}% {line}  ",
                        "#".repeat(w),
                        " ".repeat(30 - w),
                        frac * 100.0
                    );
                }
                _ => eprintln!("{line}"),
            }
        }
    }
    if tty && !o.quiet && setup.count.is_some() {
        eprintln!();
    }
    let send_period = starting_over
        .map(|s| s - t0)
        .unwrap_or_else(|| t0.elapsed());
    rt.shutdown();
    let _ = rt.join();
    let elapsed = t0.elapsed().as_secs_f64();
    let mut st = shared
        .stats
        .lock()
        .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?
        .clone();
    // A caller's calls still in flight when it stopped waiting are failures (timeouts).
    if !setup.server && !interrupted {
        let open = st
            .calls
            .attempted
            .saturating_sub(st.calls.succeeded + st.calls.failed);
        for _ in 0..open {
            st.calls.fail(stats::Reason::Timeout);
        }
    }
    let c = &st.calls;
    let period = send_period.as_secs_f64().max(1e-3);
    let (offered, achieved) = if setup.server {
        (
            c.attempted as f64 / elapsed.max(1e-3),
            c.succeeded as f64 / elapsed.max(1e-3),
        )
    } else {
        (
            setup
                .schedule
                .mean_rate(period)
                .min(c.attempted as f64 / period),
            c.succeeded as f64 / period,
        )
    };
    let cpu = cpu_seconds();
    if !o.quiet {
        println!("{}", st.table());
    }
    println!(
        "scenario {}: attempted {} ok {} failed {} (timeouts {}) retransmissions {} elapsed {:.2}s offered {:.1}/s achieved {:.1}/s cpu {:.2}s",
        c.name,
        c.attempted,
        c.succeeded,
        c.failed,
        c.failures.get(&stats::Reason::Timeout).copied().unwrap_or(0),
        st.retrans,
        elapsed,
        offered,
        achieved,
        cpu
    );
    let first = st.txns.first();
    if let Some(f) = first {
        let [p50, p90, p99, p999, max] = f.latency();
        println!(
            "response time us ({}): p50 {p50} p90 {p90} p99 {p99} p99.9 {p999} max {max}",
            f.name
        );
    }
    if let Some(path) = &o.json {
        let txns: Vec<_> = st
            .txns
            .iter()
            .map(|t| {
                json!({"type": t.name, "attempted": t.attempted, "succeeded": t.succeeded,
                       "failed": t.failed, "failures": t.failures_json(), "latency_us": t.latency_json()})
            })
            .collect();
        let v = json!({
            "scenario": c.name,
            "elapsed_s": elapsed,
            "offered_rate": offered,
            "achieved_rate": achieved,
            "attempted": c.attempted,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "failures": c.failures_json(),
            "latency_us": first.map(|f| f.latency_json()).unwrap_or_else(|| stats::Counts::new("").latency_json()),
            "transactions": txns,
            "retransmissions": st.retrans,
            "cpu_s": cpu,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(if o.max_fail.exceeded(c.failed, c.attempted) {
        1
    } else {
        0
    })
}
