//! What a run produced: one measurement per [`Step`] (with its JSON form for the raw results
//! file), all of them in [`Results`], and [`fmt_opt`] for printing optional numbers.
//!
//! Plain data: measuring is [`super::measure`]'s, writing the report `crate::report`'s.

use serde_json::{json, Value};

use super::scenarios::{Driver, Server};

/// One measurement: one server, one offered rate.
#[derive(Debug, Clone)]
pub struct Step {
    pub scenario: &'static str,
    pub server: Server,
    pub driver: Driver,
    pub offered: u64,
    pub secs: f64,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub achieved: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Server CPU (utime+stime) over the step.
    pub cpu_s: f64,
    pub us_per_call: Option<f64>,
    pub rss_kib: u64,
    /// CPU of the load generator over the step, percent of one core (where known).
    pub gen_cpu_pct: Option<f64>,
    pub pass: bool,
    pub why: String,
    pub raw: Value,
}

impl Step {
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario, "server": self.server.label(), "driver": self.driver.name(),
            "offered_rate": self.offered, "secs": self.secs, "attempted": self.attempted,
            "succeeded": self.succeeded, "failed": self.failed, "achieved_rate": self.achieved,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "server_cpu_s": self.cpu_s,
            "us_per_call": self.us_per_call, "peak_rss_kib": self.rss_kib,
            "generator_cpu_pct": self.gen_cpu_pct, "pass": self.pass, "why": self.why,
            "generator": self.raw,
        })
    }
}

pub fn fmt_opt(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// Everything a run produced.
pub struct Results {
    pub steps: Vec<Step>,
    pub started: String,
    pub host: String,
    pub notes: Vec<String>,
    pub secs: u64,
}
