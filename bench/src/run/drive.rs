//! The load generators of one step: SIPp ([`run_sipp`], and [`preregister`] for the users of
//! `lookup-relay`), loadgen with its JSON contract ([`run_loadgen`]) and today's loadgen with its
//! text summary ([`run_loadgen_legacy`]), each read into a [`GenResult`].
//!
//! It starts no server and judges nothing: pass or fail is [`super::measure`]'s.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::env::Env;
use super::process::Proc;
use super::procfs::{hz, stat_of, ticks};
use super::scenarios::{Load, Scenario, PASSWORD, PREREG_USERS, UAC_PORT};

pub(super) fn sipp_file(env: &Env, name: &str) -> PathBuf {
    env.root.join("bench/sipp").join(name)
}

/// Registers u1..u1000 with the UAS as contact (bench/sipp/users.csv), before the calls.
pub(super) fn preregister(env: &Env, sc: &Scenario, dir: &Path) -> Result<()> {
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(sipp_file(env, "uac-register-inf.xml"))
        .arg(format!("127.0.0.1:{}", sc.port))
        .args(["-i", "127.0.0.1", "-p", &(UAC_PORT + 1).to_string()])
        .arg("-inf")
        .arg(sipp_file(env, "users.csv"))
        .args(["-r", "500", "-m", &PREREG_USERS.to_string(), "-nostdin"])
        .args(["-timeout", "30s", "-recv_timeout", "5000"])
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("prereg.csv"))
        .args(["-fd", "1"])
        .current_dir(dir);
    let mut p = Proc::spawn(c, "sipp pre-registration", &dir.join("prereg.log"))?;
    p.wait(Duration::from_secs(40))?;
    let st = sipp_stats(&dir.join("prereg.csv"));
    let ok = st.get("SuccessfulCall(C)").copied().unwrap_or(0);
    if ok < PREREG_USERS {
        bail!("pre-registration: {ok} of {PREREG_USERS} users registered");
    }
    Ok(())
}

/// The last line of a SIPp statistics file, by column name.
fn sipp_stats(path: &Path) -> HashMap<String, u64> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(head) = lines.next() else {
        return HashMap::new();
    };
    let Some(last) = lines.next_back() else {
        return HashMap::new();
    };
    head.split(';')
        .zip(last.split(';'))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse::<u64>().ok()?)))
        .collect()
}

/// Response times (ms, SIPp's resolution) from SIPp's -trace_rtt files in `dir`.
fn sipp_rtts(dir: &Path) -> Vec<f64> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with("_rtt.csv") || name.starts_with("uac-register-inf") {
            continue;
        }
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        v.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok()),
        );
    }
    v
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

/// What a generator run gave.
pub(super) struct GenResult {
    pub(super) attempted: u64,
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    pub(super) achieved: f64,
    pub(super) p50_ms: Option<f64>,
    pub(super) p99_ms: Option<f64>,
    pub(super) raw: Value,
}

pub(super) fn run_sipp(
    env: &Env,
    sc: &Scenario,
    rate: u64,
    secs: u64,
    dir: &Path,
) -> Result<(GenResult, Proc)> {
    let n = rate * secs;
    let (file, extra): (&str, Vec<String>) = match sc.load {
        Load::Call => ("uac-call.xml", vec!["-s".into(), "test".into()]),
        Load::CallToUsers => (
            "uac-call-aor.xml",
            vec![
                "-inf".into(),
                sipp_file(env, "users.csv").display().to_string(),
            ],
        ),
        Load::Register => ("uac-register.xml", vec![]),
        Load::RegisterAuth => (
            "uac-register-auth.xml",
            vec!["-au".into(), "u1".into(), "-ap".into(), PASSWORD.into()],
        ),
        Load::Options => bail!("no SIPp scenario for options"),
    };
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(sipp_file(env, file))
        .arg(format!("127.0.0.1:{}", sc.port))
        .args(["-i", "127.0.0.1", "-p", &UAC_PORT.to_string()])
        .args(&extra)
        .args(["-r", &rate.to_string(), "-m", &n.to_string(), "-nostdin"])
        .args(["-timeout", &format!("{}s", secs + 30), "-timeout_error"])
        .args(["-recv_timeout", "5000", "-buff_size", "4194304"])
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("uac.csv"))
        .args(["-fd", "1", "-trace_rtt", "-rtt_freq", "1"])
        .current_dir(dir);
    let t0 = Instant::now();
    let mut p = Proc::spawn(c, "sipp uac", &dir.join("uac.log"))?;
    let pid = p.pid();
    let g0 = ticks(&[pid]);
    // Sample the generator's CPU while it runs (it is gone once it has exited).
    let mut g_last = g0;
    let end = Instant::now() + Duration::from_secs(secs + 40);
    while p.child.try_wait()?.is_none() && Instant::now() < end {
        if let Some((_, t)) = stat_of(pid) {
            g_last = t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p.wait(Duration::from_secs(1))?;
    let wall = t0.elapsed().as_secs_f64();
    let st = sipp_stats(&dir.join("uac.csv"));
    let get = |k: &str| st.get(k).copied().unwrap_or(0);
    let created = get("TotalCallCreated");
    let ok = get("SuccessfulCall(C)");
    let failed = get("FailedCall(C)") + created.saturating_sub(ok + get("FailedCall(C)"));
    let mut rtt = sipp_rtts(dir);
    rtt.sort_by(f64::total_cmp);
    // SIPp starts in ~0.2 s; its calls are created over n/rate s nominally.
    let achieved = (ok as f64 / (wall - 0.2).max(secs as f64)).min(rate as f64);
    let gen_s = (g_last - g0) as f64 / hz();
    let raw = json!({
        "tool": "sipp", "scenario": file, "created": created, "successful": ok,
        "failed": get("FailedCall(C)"), "retransmissions": get("Retransmissions(C)"),
        "unexpected": get("FailedUnexpectedMessage(C)"), "wall_s": wall,
        "rtt_samples": rtt.len(), "cpu_s": gen_s,
    });
    Ok((
        GenResult {
            attempted: n,
            succeeded: ok,
            failed: failed.max(n.saturating_sub(ok)),
            achieved,
            p50_ms: percentile(&rtt, 0.5),
            p99_ms: percentile(&rtt, 0.99),
            raw,
        },
        p,
    ))
}

pub(super) fn run_loadgen(
    env: &Env,
    sc: &Scenario,
    rate: u64,
    secs: u64,
    dir: &Path,
) -> Result<(GenResult, Proc)> {
    let json_path = dir.join("loadgen.json");
    let mut c = Command::new(&env.loadgen);
    let target = format!("127.0.0.1:{}", sc.port);
    let scenario = match sc.load {
        Load::Options => "options",
        Load::Call | Load::CallToUsers => "call",
        Load::Register | Load::RegisterAuth => "register",
    };
    c.arg(scenario)
        .args(["--target", &target, "--rate", &rate.to_string()])
        .args(["--duration", &secs.to_string(), "--timeout", "5"])
        // Calls offered in 1 ms rounds whatever the rate: the server sees the same smooth
        // load at every step (loadgen's default grows its rounds up to 4 ms, which
        // saves the generator CPU but offers bursts of up to 40 calls).
        .args(["--batch-us", "1000"])
        .arg("--json")
        .arg(&json_path)
        .arg("--quiet");
    match sc.load {
        Load::RegisterAuth => {
            c.arg("--users").arg(env.work.join("users.csv"));
        }
        Load::Register => {
            c.args(["--user-pattern", "user%d", "--user-count", "100000"])
                .args(["--password", "x", "--domain", "anchor.test"]);
        }
        Load::CallToUsers => {
            c.args(["--callee-pattern", "u%d", "--user-count"])
                .arg(PREREG_USERS.to_string())
                .args(["--domain", "anchor.test"]);
        }
        Load::Call | Load::Options => {}
    }
    let mut p = Proc::spawn(c, "loadgen", &dir.join("loadgen.log"))?;
    p.wait(Duration::from_secs(secs + 60))?;
    let text = fs::read_to_string(&json_path)
        .with_context(|| format!("loadgen wrote no {}", json_path.display()))?;
    let v: Value = serde_json::from_str(&text).context("loadgen's JSON")?;
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let lat = |k: &str| {
        v.get("latency_us")
            .and_then(|l| l.get(k))
            .and_then(Value::as_f64)
            .map(|us| us / 1000.0)
    };
    Ok((
        GenResult {
            attempted: u("attempted"),
            succeeded: u("succeeded"),
            failed: u("failed"),
            achieved: v
                .get("achieved_rate")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            p50_ms: lat("p50"),
            p99_ms: lat("p99"),
            raw: v,
        },
        p,
    ))
}

/// Today's loadgen: `loadgen options TARGET --rate --count`, a text summary.
pub(super) fn run_loadgen_legacy(
    env: &Env,
    sc: &Scenario,
    rate: u64,
    secs: u64,
    dir: &Path,
) -> Result<(GenResult, Proc)> {
    let n = rate * secs;
    let mut c = Command::new(&env.loadgen);
    c.arg("options")
        .arg(format!("127.0.0.1:{}", sc.port))
        .args(["--rate", &rate.to_string(), "--count", &n.to_string()])
        .args(["--timeout", "5000", "--max-fail", &n.to_string()]);
    let log = dir.join("loadgen.log");
    let t0 = Instant::now();
    let mut p = Proc::spawn(c, "loadgen", &log)?;
    p.wait(Duration::from_secs(secs + 60))?;
    let wall = t0.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    // "scenario options: attempted N ok N failed N (timeouts N)"
    // "response time us: p50 A p90 B p99 C p99.9 D max E"
    let after = |line_start: &str, key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(line_start))?;
        let mut it = line.split_whitespace();
        it.find(|w| *w == key)?;
        it.next()?.parse().ok()
    };
    let ok = after("scenario options:", "ok").unwrap_or(0.0) as u64;
    let failed = after("scenario options:", "failed").unwrap_or(n as f64) as u64;
    let p50 = after("response time us:", "p50").map(|x| x / 1000.0);
    let p99 = after("response time us:", "p99").map(|x| x / 1000.0);
    // The run ends once every request is answered: its wall time is the sending time.
    let achieved = (ok as f64 / (wall - 0.3).max(secs as f64)).min(rate as f64);
    let raw = json!({"tool": "loadgen options (text)", "attempted": n, "ok": ok,
        "failed": failed, "p50_us": p50.map(|x| x * 1000.0), "p99_us": p99.map(|x| x * 1000.0),
        "wall_s": wall});
    Ok((
        GenResult {
            attempted: n,
            succeeded: ok,
            failed,
            achieved,
            p50_ms: p50,
            p99_ms: p99,
            raw,
        },
        p,
    ))
}
