//! The report: `bench/reports/<date>-<host>.md` with per-scenario tables, SVG plots in
//! `<date>-<host>/`, the raw steps in `<date>-<host>.json`, and the headline table (also for
//! README.md's "Measured" section).

use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::run::{fmt_opt, Env, Results, Server, Step, SCENARIOS};
use crate::svg::{self, Series};
use crate::Opts;

fn servers_of<'a>(steps: &[&'a Step]) -> Vec<&'a Server> {
    let mut v: Vec<&Server> = Vec::new();
    for s in steps {
        if !v.contains(&&s.server) {
            v.push(&s.server);
        }
    }
    v
}

fn scenario_steps<'a>(r: &'a Results, name: &str) -> Vec<&'a Step> {
    r.steps.iter().filter(|s| s.scenario == name).collect()
}

/// The highest offered rate every server of the scenario passed: where CPU per call is compared.
fn reference_rate(steps: &[&Step]) -> Option<u64> {
    let servers = servers_of(steps);
    let mut rates: Vec<u64> = steps.iter().filter(|s| s.pass).map(|s| s.offered).collect();
    rates.sort_unstable();
    rates.dedup();
    rates.into_iter().rev().find(|r| {
        servers.iter().all(|sv| {
            steps
                .iter()
                .any(|s| s.server == **sv && s.offered == *r && s.pass)
        })
    })
}

fn max_pass<'a>(steps: &[&'a Step], sv: &Server) -> Option<&'a Step> {
    steps
        .iter()
        .filter(|s| s.server == *sv && s.pass)
        .max_by_key(|s| s.offered)
        .copied()
}

/// The headline table: per scenario and server, the highest passing step and the CPU per call
/// at the rate all servers passed.
pub fn headline(r: &Results) -> String {
    let mut t = String::from(
        "| scenario | server | max passing load (/s) | CPU µs/call at ref. load | ref. load (/s) | p99 ms at max | peak RSS MiB | CPU ser/Kamailio |\n|---|---|---|---|---|---|---|---|\n",
    );
    for sc in SCENARIOS {
        let steps = scenario_steps(r, sc.name);
        if steps.is_empty() {
            continue;
        }
        let rr = reference_rate(&steps);
        let at_ref = |sv: &Server| {
            rr.and_then(|x| {
                steps
                    .iter()
                    .find(|s| s.server == *sv && s.offered == x)
                    .and_then(|s| s.us_per_call)
            })
        };
        let kam = servers_of(&steps)
            .into_iter()
            .find(|s| !s.is_ser())
            .and_then(at_ref);
        for sv in servers_of(&steps) {
            let best = max_pass(&steps, sv);
            let cpu = at_ref(sv);
            let ratio = match (sv.is_ser(), cpu, kam) {
                (true, Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let rss = steps
                .iter()
                .filter(|s| s.server == *sv)
                .map(|s| s.rss_kib)
                .max()
                .unwrap_or(0);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                sc.name,
                sv.label(),
                best.map(|s| format!("{} ({:.0})", s.offered, s.achieved))
                    .unwrap_or_else(|| "none".into()),
                fmt_opt(cpu),
                rr.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                fmt_opt(best.and_then(|s| s.p99_ms)),
                rss as f64 / 1024.0,
                ratio
            );
        }
    }
    t
}

fn step_table(steps: &[&Step]) -> String {
    let mut t = String::from(
        "| server | offered /s | achieved /s | ok | failed | p50 ms | p99 ms | server CPU s | CPU µs/call | peak RSS MiB | generator CPU % | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut sorted: Vec<&&Step> = steps.iter().collect();
    sorted.sort_by_key(|s| (s.server.label(), s.offered));
    for s in sorted {
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {} | {} |",
            s.server.label(),
            s.offered,
            s.achieved,
            s.succeeded,
            s.failed,
            fmt_opt(s.p50_ms),
            fmt_opt(s.p99_ms),
            s.cpu_s,
            fmt_opt(s.us_per_call),
            s.rss_kib as f64 / 1024.0,
            fmt_opt(s.gen_cpu_pct),
            if s.pass {
                "pass".to_string()
            } else {
                format!("stop: {}", s.why)
            }
        );
    }
    t
}

fn series(steps: &[&Step], f: impl Fn(&Step) -> Option<f64>) -> Vec<Series> {
    servers_of(steps)
        .into_iter()
        .map(|sv| Series {
            label: sv.label(),
            points: steps
                .iter()
                .filter(|s| s.server == *sv)
                .filter_map(|s| Some((s.offered as f64, f(s)?)))
                .collect(),
        })
        .collect()
}

fn command_line(opts: &Opts) -> String {
    let mut c = String::from("cargo run -p bench --release -- report");
    if opts.shards != [1] {
        let s: Vec<String> = opts.shards.iter().map(|n| n.to_string()).collect();
        let _ = write!(c, " --shards {}", s.join(","));
    }
    if opts.sipp {
        c.push_str(" --sipp");
    }
    if opts.quick {
        c.push_str(" --quick");
    }
    if let Some(s) = &opts.scenarios {
        let _ = write!(c, " --scenarios {}", s.join(","));
    }
    if !opts.kamailio {
        c.push_str(" --no-kamailio");
    }
    if let Some(s) = opts.step_secs {
        let _ = write!(c, " --step-secs {s}");
    }
    if let Some(r) = &opts.rates {
        let r: Vec<String> = r.iter().map(|n| n.to_string()).collect();
        let _ = write!(c, " --rates {}", r.join(","));
    }
    c
}

/// Writes the report and returns the markdown file's path.
pub fn write(opts: &Opts, env: &Env, r: &Results) -> Result<PathBuf> {
    let date = r.started.split(' ').next().unwrap_or("undated");
    let stem = format!("{date}-{}", r.host);
    fs::create_dir_all(&opts.out).with_context(|| format!("{}", opts.out.display()))?;
    let svgdir = opts.out.join(&stem);
    fs::create_dir_all(&svgdir)?;
    let mut md = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(md, "# Benchmark report: {} ({})\n", r.host, r.started);
    let _ = writeln!(md, "Command: `{}`\n", command_line(opts));
    let _ = writeln!(
        md,
        "Machine: {cpus} CPUs; everything on 127.0.0.1 (server, UAS and load generator share the \
         cores). Kamailio: {}. Each step: a fresh server, {} s of load at the offered rate; a \
         step passes when failures ≤ 0.1 %, p99 ≤ {} ms and the achieved rate ≥ 95 % of the \
         offered one; a server stops at its first failing step. CPU µs/call = the server's \
         utime+stime (/proc/<pid>/stat of its process tree) over the step / completed calls \
         (a call = INVITE..BYE, or one REGISTER transaction, or one OPTIONS). Latency: \
         INVITE→200 (calls), final response (REGISTER, OPTIONS); SIPp reports whole \
         milliseconds. Peak RSS = VmHWM summed over the server's processes (Kamailio's shared \
         memory is counted in each of its processes, which overstates it).\n",
        if env.kamailio_version.is_empty() {
            "not run"
        } else {
            env.kamailio_version.as_str()
        },
        r.secs,
        opts.p99_limit_ms
    );
    for n in &r.notes {
        let _ = writeln!(md, "- Note: {n}");
    }
    let _ = writeln!(md, "\n## Headline\n\n{}", headline(r));
    let _ = writeln!(
        md,
        "\"ref. load\" is the highest offered load every server of the scenario passed; CPU \
         per call is compared there. A load generator near 100 % CPU (column in the tables \
         below) means the generator, not the server, set the limit.\n"
    );
    // Max passing load per scenario and server: with several shard counts, how ser scales.
    let cats: Vec<String> = SCENARIOS
        .iter()
        .filter(|sc| !scenario_steps(r, sc.name).is_empty())
        .map(|sc| sc.name.to_string())
        .collect();
    let all: Vec<&Step> = r.steps.iter().collect();
    let bar_series =
        |f: &dyn Fn(&[&Step], &Server) -> Option<f64>| -> Vec<(String, Vec<Option<f64>>)> {
            servers_of(&all)
                .into_iter()
                .map(|sv| {
                    (
                        sv.label(),
                        cats.iter().map(|c| f(&scenario_steps(r, c), sv)).collect(),
                    )
                })
                .collect()
        };
    let maxes = bar_series(&|st, sv| max_pass(st, sv).map(|s| s.achieved));
    fs::write(
        svgdir.join("max-load.svg"),
        svg::bars(
            "Highest passing load per scenario (calls/s)",
            "calls/s",
            &cats,
            &maxes,
        ),
    )?;
    let cpu = bar_series(&|st, sv| {
        let rr = reference_rate(st)?;
        st.iter()
            .find(|s| s.server == *sv && s.offered == rr)
            .and_then(|s| s.us_per_call)
    });
    fs::write(
        svgdir.join("cpu-per-call.svg"),
        svg::bars(
            "Server CPU per call at the reference load (µs)",
            "µs per call",
            &cats,
            &cpu,
        ),
    )?;
    let _ = writeln!(
        md,
        "![highest passing load]({stem}/max-load.svg)\n\n![CPU per call]({stem}/cpu-per-call.svg)\n"
    );
    if opts.shards.len() > 1 {
        let ser_only: Vec<(String, Vec<Option<f64>>)> = maxes
            .iter()
            .filter(|(l, _)| l.starts_with("ser"))
            .cloned()
            .collect();
        fs::write(
            svgdir.join("ser-shards.svg"),
            svg::bars(
                "ser: highest passing load by shard count",
                "calls/s",
                &cats,
                &ser_only,
            ),
        )?;
        let _ = writeln!(md, "![ser by shards]({stem}/ser-shards.svg)\n");
    }
    for sc in SCENARIOS {
        let steps = scenario_steps(r, sc.name);
        if steps.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "## {}: {}\n\nDriven by {}.\n\n{}",
            sc.name,
            sc.title,
            steps[0].driver.name(),
            step_table(&steps)
        );
        for (file, title, y, f) in [
            (
                "throughput",
                "achieved against offered load",
                "achieved calls/s",
                (|s: &Step| Some(s.achieved)) as fn(&Step) -> Option<f64>,
            ),
            (
                "p99",
                "p99 latency against offered load",
                "p99 ms",
                |s: &Step| s.p99_ms,
            ),
            ("cpu", "server CPU per call", "µs per call", |s: &Step| {
                s.us_per_call
            }),
        ] {
            let name = format!("{}-{file}.svg", sc.name);
            fs::write(
                svgdir.join(&name),
                svg::lines(
                    &format!("{}: {title}", sc.name),
                    "offered calls/s",
                    y,
                    &series(&steps, f),
                ),
            )?;
            let _ = write!(md, "![{} {file}]({stem}/{name}) ", sc.name);
        }
        md.push_str("\n\n");
    }
    let path = opts.out.join(format!("{stem}.md"));
    fs::write(&path, md)?;
    let raw = json!({
        "started": r.started, "host": r.host, "command": command_line(opts),
        "kamailio": env.kamailio_version, "notes": r.notes,
        "steps": r.steps.iter().map(Step::to_json).collect::<Vec<Value>>(),
    });
    fs::write(
        opts.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&raw)?,
    )?;
    Ok(path)
}

/// Puts the headline table and a link to the report into README.md's "## Measured" section,
/// between `<!-- bench-report -->` markers (replaced on the next run; the rest of the section
/// is left alone).
pub fn update_readme(readme: &Path, r: &Results, report: &Path) -> Result<()> {
    const BEGIN: &str = "<!-- bench-report -->";
    const END: &str = "<!-- /bench-report -->";
    let text = fs::read_to_string(readme).context("reading README.md")?;
    let rel = report
        .strip_prefix(crate::run::repo_root())
        .unwrap_or(report)
        .display()
        .to_string();
    let block = format!(
        "{BEGIN}\nLatest report: [{rel}]({rel}) ({}, {}).\n\n{}{END}\n",
        r.host,
        r.started,
        headline(r)
    );
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let after = text[e + END.len()..].trim_start_matches('\n');
            format!("{}{block}{after}", &text[..b])
        }
        _ => match text.find("\n## Measured") {
            Some(s) => {
                let at = text[s + 1..]
                    .find('\n')
                    .map_or(text.len(), |i| s + 1 + i + 1);
                format!("{}\n{block}{}", &text[..at], &text[at..])
            }
            None => format!("{text}\n## Measured\n\n{block}"),
        },
    };
    fs::write(readme, new)?;
    Ok(())
}
