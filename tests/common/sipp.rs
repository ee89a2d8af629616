//! sipp peers for the integration tests: scenarios from tests/data/sipp (with `@CALLEE@`
//! filled in), a UAS process stopped by PID, and a bounded UAC run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub fn sipp_dir() -> PathBuf {
    repo_root().join("tests/data/sipp")
}

/// A scenario from tests/data/sipp with `@CALLEE@` replaced, written to `dir`.
pub fn scenario(dir: &Path, name: &str, callee: &str) -> PathBuf {
    let text = std::fs::read_to_string(sipp_dir().join(name)).expect("scenario");
    let path = dir.join(format!("{}-{}", callee.replace([':', '.'], "_"), name));
    std::fs::write(&path, text.replace("@CALLEE@", callee)).expect("write scenario");
    path
}

/// A sipp UAS on 127.0.0.1:port running `scen` for `calls` calls; stopped by PID. `port`
/// comes from [`free_port`] (sipp cannot report a port it picked, and the proxy's script must
/// name it); a UAS that cannot bind it exits at once, and that fails here with its error.
pub struct Uas {
    child: Child,
    log: PathBuf,
}

impl Uas {
    pub fn start(scen: &Path, port: u16, calls: u32, dir: &Path) -> Uas {
        let log = dir.join(format!("uas-{port}.log"));
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scen)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &calls.to_string()])
            .args(["-nostdin", "-timeout", "60", "-timeout_error"])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp uas");
        std::thread::sleep(Duration::from_millis(300));
        let mut uas = Uas { child, log };
        if let Ok(Some(st)) = uas.child.try_wait() {
            let log = std::fs::read_to_string(&uas.log).unwrap_or_default();
            panic!("sipp UAS on port {port} exited at start ({st}):\n{log}");
        }
        uas
    }

    /// Waits (bounded) for the UAS to finish its calls; true when all succeeded.
    pub fn finish(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (st.success(), log);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (false, format!("UAS did not finish in time\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::ZERO);
    }
}

/// Runs a sipp UAC scenario against ser; true when every call succeeded. No `-p`: sipp binds
/// a free port of its own (the first free from 5060 up) and holds it, and nothing needs to
/// know which.
pub fn uac(scen: &Path, ser_port: u16, calls: u32, rate: u32, limit: Duration) -> (bool, String) {
    run_bounded(
        Command::new("sipp")
            .arg("-sf")
            .arg(scen)
            .arg(format!("127.0.0.1:{ser_port}"))
            .args(["-i", "127.0.0.1"])
            .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
            .args(["-timeout", &limit.as_secs().to_string(), "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-error_file", "/dev/null"]),
        limit + Duration::from_secs(10),
    )
}

pub fn require_sipp() {
    assert!(
        have("sipp"),
        "sipp (Debian sip-tester) is required; scripts/test.sh installs it"
    );
}
