//! Processes of ours: [`Proc`], a child with its log file that is stopped by its own id when
//! dropped (SIGTERM through `kill`, then SIGKILL) and waited for with a deadline, and
//! [`output_of`] for short commands whose output is all we want.
//!
//! It knows nothing of what the processes are (servers, generators: [`super::servers`],
//! [`super::drive`]) and reads nothing from /proc ([`super::procfs`]).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub(super) fn output_of(cmd: &mut Command) -> String {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        }
        Err(_) => String::new(),
    }
}

/// A process of ours, stopped by its id when dropped.
pub(super) struct Proc {
    pub(super) child: Child,
    what: String,
}

impl Proc {
    pub(super) fn spawn(mut cmd: Command, what: &str, log: &Path) -> Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what: what.to_string(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end by itself, up to `limit`; kills it past that.
    pub(super) fn wait(&mut self, limit: Duration) -> Result<bool> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.success());
            }
            if Instant::now() > end {
                eprintln!("  {} ran past {:?}: killed", self.what, limit);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first: Kamailio's main process then stops its children.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
