//! The load ramp ([`run_all`]): for each scenario, the offered rates in rising steps, each
//! server in turn at each rate (so ser and Kamailio see the same machine noise) until every
//! server has failed a step.
//!
//! It measures nothing itself ([`super::measure`]) and writes no report (`crate::report`).

use std::fs;
use std::process::Command;

use anyhow::Result;

use super::env::Env;
use super::measure::step;
use super::prepare::prepare;
use super::process::output_of;
use super::results::Results;
use super::scenarios::{Server, SCENARIOS};
use crate::Opts;

pub fn run_all(opts: &Opts, env: &Env) -> Result<Results> {
    let secs = opts.step_secs.unwrap_or(if opts.quick { 3 } else { 5 });
    let rates = opts.rates.clone().unwrap_or_else(|| {
        if opts.quick {
            vec![500, 1000, 2000, 4000, 8000]
        } else {
            vec![250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000]
        }
    });
    let started = output_of(Command::new("date").arg("+%Y-%m-%d %H:%M:%S %z"))
        .trim()
        .to_string();
    let host = output_of(&mut Command::new("hostname")).trim().to_string();
    let prep = prepare(env)?;
    let mut notes = env.notes.clone();
    let mut steps = Vec::new();
    for sc in SCENARIOS {
        if let Some(only) = &opts.scenarios {
            if !only.iter().any(|s| s == sc.name) {
                continue;
            }
        }
        let Some(driver) = env.driver_for(opts, sc.load) else {
            notes.push(format!("{}: no load generator for it in this run", sc.name));
            continue;
        };
        let mut servers: Vec<Server> = opts
            .shards
            .iter()
            .map(|&shards| Server::Ser { shards })
            .collect();
        if env.kamailio.is_some() {
            servers.push(Server::Kamailio {
                children: opts.kam_children,
            });
        }
        eprintln!(
            "scenario {} ({}), driver {}",
            sc.name,
            sc.title,
            driver.name()
        );
        let mut live: Vec<bool> = vec![true; servers.len()];
        // Step by step, each server in turn, until every server has stopped.
        for &rate in &rates {
            for (i, server) in servers.iter().enumerate() {
                if !live[i] {
                    continue;
                }
                match step(opts, env, &prep, sc, server, driver, rate, secs) {
                    Ok(s) => {
                        live[i] = s.pass;
                        steps.push(s);
                    }
                    Err(e) => {
                        eprintln!("  {} {} at {rate}/s: {e:#}", sc.name, server.label());
                        notes.push(format!(
                            "{} {} at {rate}/s did not run: {}",
                            sc.name,
                            server.label(),
                            format!("{e:#}").lines().next().unwrap_or("")
                        ));
                        live[i] = false;
                    }
                }
            }
            if !live.iter().any(|l| *l) {
                break;
            }
        }
    }
    let _ = fs::remove_dir_all(&env.work);
    Ok(Results {
        steps,
        started,
        host,
        notes,
        secs,
    })
}
