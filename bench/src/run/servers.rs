//! Starting the servers of one step: ser or Kamailio with the scenario's script
//! ([`start_server`]) and the UAS that answers relayed calls ([`start_uas`]), each waited for
//! until it has bound its UDP port.
//!
//! Stopping is [`Proc`]'s; the load is [`super::drive`]'s.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::drive::sipp_file;
use super::env::Env;
use super::prepare::Prepared;
use super::process::Proc;
use super::procfs::{wait_bound, wait_free};
use super::scenarios::{Driver, Scenario, Server, UAS_PORT};

pub(super) fn start_server(
    env: &Env,
    prep: &Prepared,
    sc: &Scenario,
    server: &Server,
    dir: &Path,
) -> Result<Proc> {
    wait_free(sc.port);
    let log = dir.join("server.log");
    let p = match server {
        Server::Ser { shards } => {
            let src = fs::read_to_string(env.root.join(format!("bench/cfg/{}.cfg", sc.name)))
                .context("reading the scenario's ser script")?;
            let cfg = dir.join("ser.cfg");
            fs::write(&cfg, src.replace("DBURL", &prep.db_url))?;
            let mut c = Command::new(&env.ser);
            c.arg("-f")
                .arg(&cfg)
                .args(["-n", &shards.to_string(), "-E", "-D"])
                .current_dir(dir);
            Proc::spawn(c, "ser", &log)?
        }
        Server::Kamailio { children } => {
            let Some(k) = &env.kamailio else {
                bail!("kamailio is not on PATH");
            };
            let mut c = Command::new(k);
            c.arg("-f")
                .arg(env.root.join(format!("bench/kamailio/{}.cfg", sc.name)))
                .args(["-A", &format!("CHILDREN={children}")])
                .args(["-A", &format!("DBURL=\"text://{}\"", prep.dbtext.display())])
                .args(["-DD", "-E", "-m", "1024", "-M", "16", "-w"])
                .arg(dir)
                .arg("-Y")
                .arg(dir)
                .arg("-P")
                .arg(dir.join("kam.pid"))
                .current_dir(env.root.join("bench/kamailio"));
            Proc::spawn(c, "kamailio", &log)?
        }
    };
    if !wait_bound(sc.port, Duration::from_secs(15)) {
        let tail = fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "{} did not bind udp 127.0.0.1:{}; its log ends:\n{}",
            server.label(),
            sc.port,
            tail.lines().rev().take(8).collect::<Vec<_>>().join("\n")
        );
    }
    // Let Kamailio finish forking its children.
    std::thread::sleep(Duration::from_millis(500));
    Ok(p)
}

pub(super) fn start_uas(env: &Env, driver: Driver, dir: &Path) -> Result<Proc> {
    wait_free(UAS_PORT);
    let p = if driver == Driver::Loadgen {
        let mut c = Command::new(&env.loadgen);
        c.args([
            "uas",
            "--listen",
            &format!("127.0.0.1:{UAS_PORT}"),
            "--quiet",
        ]);
        Proc::spawn(c, "loadgen uas", &dir.join("uas.log"))?
    } else {
        let mut c = Command::new("sipp");
        c.arg("-sf")
            .arg(sipp_file(env, "uas-call.xml"))
            .args(["-i", "127.0.0.1", "-p", &UAS_PORT.to_string(), "-nostdin"])
            .args(["-buff_size", "4194304"])
            .current_dir(dir);
        Proc::spawn(c, "sipp uas", &dir.join("uas.log"))?
    };
    if !wait_bound(UAS_PORT, Duration::from_secs(10)) {
        bail!("the UAS did not bind udp 127.0.0.1:{UAS_PORT}");
    }
    Ok(p)
}
