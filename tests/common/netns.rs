//! Running a test's body inside a network namespace of its own, with only loopback up (and a
//! PID namespace whose first process is the test, so whatever it leaves behind dies with it):
//! for tests that need the well-known ports (5060) or start programs that listen on them.

use std::process::Command;
use std::time::{Duration, Instant};

use super::run_bounded;

/// Runs `body` in a loopback-only network namespace. Outside one (the variable `inner` unset),
/// re-executes this test binary for the test `name` alone inside a fresh namespace (bounded
/// by `limit`), checks that it passed and returns its output; inside, runs `body` (None).
pub fn in_netns(inner: &str, name: &str, limit: Duration, body: impl FnOnce()) -> Option<String> {
    if std::env::var_os(inner).is_some() {
        body();
        return None;
    }
    assert!(
        super::have("unshare") && super::have("ip"),
        "unshare and ip are required (util-linux, iproute2)"
    );
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let exe = std::env::current_exe().expect("test binary");
    let t = Instant::now();
    let (ok, out) = run_bounded(
        Command::new("unshare")
            .arg(if root { "-n" } else { "-rn" })
            .args(["--pid", "--fork", "--kill-child"])
            .args([
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$1\" --exact --nocapture --test-threads=1",
            ])
            .arg(&exe)
            .arg(name)
            .env(inner, "1"),
        limit,
    );
    assert!(
        ok && out.contains("1 passed"),
        "{name} inside its network namespace failed (after {:?}):\n{out}",
        t.elapsed()
    );
    Some(out)
}
