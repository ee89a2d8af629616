//! The benchmark report runner: `cargo run -p bench --release -- report [options]`.
//!
//! For each scenario it starts `ser` (and Kamailio, when it is on PATH) with the scenario's
//! script on loopback, drives it with a load generator (`loadgen`, or SIPp with `--sipp` or
//! where today's loadgen lacks the scenario) in steps of rising offered load, and records per
//! step the achieved rate, the server's CPU time per call (utime+stime of its process tree from
//! /proc over the step, divided by completed calls), p50/p99 latency and peak RSS (VmHWM).
//! Ser and Kamailio alternate step by step so both see the same machine noise. The result is
//! `bench/reports/<date>-<host>.md` with SVG plots and the raw JSON beside it.
//!
//! It builds nothing: it uses target/release/{ser,loadgen,serctl} and says how to build them.
//! Key pieces: [`run::SCENARIOS`] (what is measured), [`run::Step`] (one measurement),
//! [`report`] (markdown and plots), [`svg`] (the charts, written by hand).

mod report;
mod run;
mod svg;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// What `report` was asked to do.
#[derive(Debug, Clone)]
pub struct Opts {
    pub shards: Vec<usize>,
    pub sipp: bool,
    pub quick: bool,
    pub out: PathBuf,
    pub readme: bool,
    pub scenarios: Option<Vec<String>>,
    pub kamailio: bool,
    pub p99_limit_ms: f64,
    pub step_secs: Option<u64>,
    pub rates: Option<Vec<u64>>,
    pub kam_children: usize,
}

const USAGE: &str = "usage: cargo run -p bench --release -- report [options]
  --shards 1,2,4      ser shard counts to measure (default 1)
  --sipp              drive every scenario with SIPp instead of loadgen
  --quick             short steps and fewer rates
  --out DIR           where the report goes (default bench/reports)
  --readme            also replace README.md's \"Measured\" section with the headline table
  --scenarios a,b     only these (options relay stateful register register-auth lookup-relay)
  --no-kamailio       ser only, even when kamailio is on PATH
  --kam-children N    Kamailio UDP children (default 4, as the anchors)
  --p99-ms MS         p99 latency limit of a passing step (default 200)
  --step-secs S       seconds of load per step (default 5, --quick 3)
  --rates R1,R2,...   offered loads to step through (calls/s)";

fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("bad list item '{x}'"))
        })
        .collect()
}

fn parse_opts() -> Result<Option<Opts>> {
    use lexopt::prelude::*;
    let root = run::repo_root();
    let mut o = Opts {
        shards: vec![1],
        sipp: false,
        quick: false,
        out: root.join("bench/reports"),
        readme: false,
        scenarios: None,
        kamailio: true,
        p99_limit_ms: 200.0,
        step_secs: None,
        rates: None,
        kam_children: 4,
    };
    let mut p = lexopt::Parser::from_env();
    let mut cmd = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("shards") => o.shards = list(&p.value()?.string()?)?,
            Long("sipp") => o.sipp = true,
            Long("quick") => o.quick = true,
            Long("out") => o.out = PathBuf::from(p.value()?),
            Long("readme") => o.readme = true,
            Long("scenarios") => o.scenarios = Some(list(&p.value()?.string()?)?),
            Long("no-kamailio") => o.kamailio = false,
            Long("kam-children") => o.kam_children = p.value()?.parse()?,
            Long("p99-ms") => o.p99_limit_ms = p.value()?.parse()?,
            Long("step-secs") => o.step_secs = Some(p.value()?.parse()?),
            Long("rates") => o.rates = Some(list(&p.value()?.string()?)?),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                return Ok(None);
            }
            Value(v) if cmd.is_none() => cmd = Some(v.string()?),
            _ => bail!("{}\n{USAGE}", arg.unexpected()),
        }
    }
    match cmd.as_deref() {
        Some("report") => {}
        Some(c) => bail!("unknown command '{c}'\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
    if o.shards.is_empty() || o.shards.contains(&0) {
        bail!("--shards wants positive counts");
    }
    Ok(Some(o))
}

fn main() -> Result<()> {
    let Some(opts) = parse_opts()? else {
        return Ok(());
    };
    let env = run::Env::discover(&opts)?;
    let results = run::run_all(&opts, &env)?;
    let path = report::write(&opts, &env, &results).context("writing the report")?;
    println!("\nreport: {}", path.display());
    println!("\n{}", report::headline(&results));
    if opts.readme {
        report::update_readme(&run::repo_root().join("README.md"), &results, &path)?;
        println!("README.md: \"Measured\" section updated");
    }
    Ok(())
}
