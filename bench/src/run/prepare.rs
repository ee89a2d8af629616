//! What the scenarios need prepared once per run ([`Prepared`]): ser's SQLite subscriber table
//! (through serctl), Kamailio's db_text table with the same users, and loadgen's users file.
//!
//! It starts no server; the files are in the run's scratch directory.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::env::Env;
use super::scenarios::{AUTH_USERS, PASSWORD};

/// What a scenario needs prepared once per run (databases, user tables).
pub(super) struct Prepared {
    pub(super) db_url: String,
    pub(super) dbtext: PathBuf,
}

pub(super) fn prepare(env: &Env) -> Result<Prepared> {
    let db = env.work.join("auth.db");
    let _ = fs::remove_file(&db);
    let db_url = format!("sqlite://{}", db.display());
    let serctl = |args: &[&str]| -> Result<()> {
        let out = Command::new(&env.serctl)
            .args(args)
            .env("DB_URL", &db_url)
            .env("SIP_DOMAIN", "anchor.test")
            .env("SER_FIFO", env.work.join("no_fifo"))
            .env("SERCTL_TIMEOUT", "2")
            .env_remove("PW")
            .current_dir(&env.work)
            .stdin(Stdio::null())
            .output()
            .context("running serctl")?;
        if !out.status.success() {
            bail!(
                "serctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    serctl(&["db", "init"])?;
    for i in 1..=AUTH_USERS {
        let u = format!("u{i}");
        serctl(&["add", &u, PASSWORD, &format!("{u}@anchor.test")])?;
    }
    // Kamailio's db_text table with the same users (plain passwords, HA1 per request).
    let dbtext = env.work.join("dbtext");
    fs::create_dir_all(&dbtext)?;
    let mut sub = String::from("id(int,auto) username(str) domain(str) password(str)\n");
    for i in 1..=AUTH_USERS {
        sub.push_str(&format!("{i}:u{i}:anchor.test:{PASSWORD}\n"));
    }
    fs::write(dbtext.join("subscriber"), sub)?;
    fs::write(
        dbtext.join("version"),
        "table_name(str) table_version(int)\nsubscriber:7\n",
    )?;
    // loadgen's --users file: user,password,domain.
    let mut csv = String::new();
    for i in 1..=AUTH_USERS {
        csv.push_str(&format!("u{i},{PASSWORD},anchor.test\n"));
    }
    fs::write(env.work.join("users.csv"), csv)?;
    Ok(Prepared { db_url, dbtext })
}
