//! The Node drivers of the real-browser tests (tests/browser/*.mjs: playwright-core driving
//! Debian's chromium), as the tests talk to them: a JSON config as the argument, `EVENT`,
//! `READY` and `RESULT` lines on stdout, `go` on stdin.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// tests/browser: the drivers, the pages and their npm packages.
pub fn browser_dir() -> PathBuf {
    super::repo_root().join("tests/browser")
}

/// A Node driver script (stopped by PID when dropped).
pub struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
    /// What its `EVENT` lines are printed after.
    tag: &'static str,
}

impl Driver {
    /// Starts `script` (in tests/browser) with `config` as its argument; its stderr goes to
    /// `dir`/driver.stderr.
    pub fn start(
        dir: &Path,
        script: &str,
        config: &serde_json::Value,
        tag: &'static str,
    ) -> Driver {
        let stderr = dir.join("driver.stderr");
        let mut child = Command::new("node")
            .arg(browser_dir().join(script))
            .arg(config.to_string())
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("driver stderr"))
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("driver stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
            tag,
        }
    }

    /// The next line starting with `READY ` or `RESULT ` (`EVENT ` lines are printed on the
    /// way, after the tag), within `limit`.
    pub fn next(&mut self, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with("EVENT ") {
                        println!("{}: {line}", self.tag);
                    }
                    if line.starts_with("READY ") || line.starts_with("RESULT ") {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(format!(
                    "the driver said nothing more within {limit:?}; it printed:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ))
                }
            }
        }
    }

    /// Lets a driver waiting at `READY` go on.
    pub fn go(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
            let _ = stdin.flush();
        }
    }
}

impl Drop for Driver {
    /// Closing its stdin ends a driver still waiting for `go` (it closes the browser and
    /// exits); one that does not exit within 5 s gets SIGTERM (Playwright closes the browser),
    /// then SIGKILL.
    fn drop(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        super::stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// Debian's chromium, the browser the tests drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Set (to anything but `0` or empty) when a browser test may not be skipped (scripts/test.sh
/// sets it).
pub const REQUIRE: &str = "SER_BROWSER_REQUIRE";

/// Whether [`REQUIRE`] is set.
pub fn required() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What a browser test needs and does not find here, each with what provides it: chromium,
/// node 20 or later (playwright-core needs it), the npm packages `npm` in tests/browser, and
/// the `commands` (name, Debian package).
pub fn missing(npm: &[&str], commands: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        out.push(format!("{CHROMIUM} (Debian package chromium)"));
    }
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match node {
        None => out.push("node (Debian package nodejs)".into()),
        Some(v) => {
            let major: u32 = v
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                out.push(format!(
                    "node 20 or later (found {v}; playwright-core needs 20)"
                ));
            }
        }
    }
    for m in npm {
        if !browser_dir().join("node_modules").join(m).is_dir() {
            out.push(format!(
                "tests/browser/node_modules/{m} (npm ci in tests/browser)"
            ));
        }
    }
    for (cmd, pkg) in commands {
        if !super::have(cmd) {
            out.push(format!("{cmd} (Debian package {pkg})"));
        }
    }
    out
}
