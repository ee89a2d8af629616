//! Daemon mode and the clean stop, with real `ser` processes on loopback: `fork=yes` detaches
//! and reports its start-up (pid file, exit status, errors on stderr), `fork=no` in the script
//! serves with one shard, SIGTERM drains (transactions in flight get their final replies, new
//! requests get 503), and the sample production configuration in `dist/` loads and serves.
//!
//! Every wait is bounded; a detached daemon is killed by the PID in its pid file when a test
//! ends, whether it passed or not.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Answers OPTIONS itself, 404 to the rest.
const OPTIONS_ONLY: &str = r#"
loadmodule "modules/sl/sl.so"
route {
    if (method=="OPTIONS") { sl_send_reply("200", "OK"); break; };
    sl_send_reply("404", "Not Here");
}
"#;

/// A stateful proxy to the Request-URI.
const RELAY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
modparam("tm", "retry_after", 7)
route {
    if (!t_relay()) { sl_reply_error(); break; };
}
"#;

/// Kills (SIGKILL, by PID) the daemon named by a pid file when dropped, unless it is gone.
struct DaemonGuard {
    pid_file: PathBuf,
    pid: Option<u32>,
}

impl DaemonGuard {
    fn new(pid_file: &Path) -> Self {
        DaemonGuard {
            pid_file: pid_file.to_path_buf(),
            pid: None,
        }
    }

    /// The daemon's PID, read from the pid file once (the file goes when the daemon stops).
    fn pid(&mut self) -> Option<u32> {
        if self.pid.is_none() {
            self.pid = std::fs::read_to_string(&self.pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok());
        }
        self.pid
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            if alive(pid) {
                signal(pid, "KILL");
            }
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Is `pid` a live process (not gone, not a zombie)?
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits (bounded) for `child` to exit; its status, or None (and it is killed) past `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `ser -f cfg -l 127.0.0.1 -p port` plus `extra`, without -D; stderr to `err`.
fn spawn_ser(cfg: &Path, port: u16, extra: &[&str], err: &Path) -> Child {
    Command::new(SER)
        .arg("-f")
        .arg(cfg)
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).expect("stderr file"))
        .spawn()
        .expect("spawn ser")
}

fn options(peer: &Peer, port: u16, call_id: &str) -> Option<u16> {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    peer.send(
        to,
        request(
            "OPTIONS",
            &format!("sip:127.0.0.1:{port}"),
            peer.port(),
            call_id,
            "",
        )
        .as_bytes(),
    );
    peer.recv_timeout(2000).as_deref().and_then(status)
}

#[test]
fn fork_yes_detaches_writes_the_pid_file_serves_and_stops_on_sigterm() {
    let dir = temp_dir("daemon-fork");
    let cfg = dir.join("fork.cfg");
    std::fs::write(&cfg, OPTIONS_ONLY).expect("cfg");
    let pid_file = dir.join("ser.pid");
    let _ = std::fs::remove_file(&pid_file);
    let err = dir.join("fork.err");
    let mut guard = DaemonGuard::new(&pid_file);

    let mut child = spawn_ser(
        &cfg,
        0,
        &["-n", "2", "-E", "-P", &pid_file.to_string_lossy()],
        &err,
    );
    let port = daemon_port(&mut child, &err);

    // The pid file exists as soon as ser returned: the daemon wrote it before reporting.
    let pid = guard.pid().expect("pid file written before ser returned");
    assert_ne!(pid, child.id(), "the pid file names the process we started");
    assert!(alive(pid), "daemon {pid} is not running\n{}", read(&err));

    let peer = Peer::new();
    assert_eq!(
        options(&peer, port, "fork-options-1"),
        Some(200),
        "{}",
        read(&err)
    );

    signal(pid, "TERM");
    assert!(
        until(Duration::from_secs(5), || !alive(pid)),
        "daemon {pid} still running after SIGTERM\n{}",
        read(&err)
    );
    assert!(
        until(Duration::from_secs(1), || !pid_file.exists()),
        "pid file left behind"
    );
}

/// Waits for the starting parent of a daemon (`child`) to return, successfully, and reads the
/// port of its first socket from the log the daemon (-E keeps its stderr) wrote to `err`
/// before the parent returned.
fn daemon_port(child: &mut Child, err: &Path) -> u16 {
    let st = wait_exit(child, Duration::from_secs(10)).expect("ser returned");
    assert!(st.success(), "ser failed to start: {st}\n{}", read(err));
    listening(&read(err))
        .first()
        .map(|(_, a)| a.port())
        .unwrap_or_else(|| panic!("no socket in the daemon's log:\n{}", read(err)))
}

/// `ser -f ser.cfg` (a name relative to where it started) as a daemon, whose working directory
/// is `/`: a reload (SIGHUP, as dist/ser.service's ExecReload; `serctl reload`) reads that
/// same file, not `/ser.cfg`.
#[test]
fn a_daemon_started_with_a_relative_script_name_reloads_it() {
    let dir = temp_dir("daemon-relative");
    std::fs::write(dir.join("rel.cfg"), OPTIONS_ONLY).expect("cfg");
    let pid_file = dir.join("rel.pid");
    let _ = std::fs::remove_file(&pid_file);
    let err = dir.join("rel.err");
    let mut guard = DaemonGuard::new(&pid_file);
    let mut child = Command::new(SER)
        .current_dir(&dir)
        .args([
            "-f",
            "rel.cfg",
            "-l",
            "127.0.0.1",
            "-p",
            "0",
            "-n",
            "1",
            "-E",
            "-P",
        ])
        .arg(&pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn ser");
    let port = daemon_port(&mut child, &err);
    let pid = guard.pid().expect("pid file");
    let peer = Peer::new();
    assert_eq!(options(&peer, port, "rel-1"), Some(200), "{}", read(&err));

    // The same file, changed: OPTIONS now get 403.
    std::fs::write(
        dir.join("rel.cfg"),
        OPTIONS_ONLY.replace(r#"("200", "OK")"#, r#"("403", "Reloaded")"#),
    )
    .expect("cfg");
    signal(pid, "HUP");
    let mut n = 1;
    assert!(
        until(Duration::from_secs(5), || {
            n += 1;
            options(&peer, port, &format!("rel-{n}")) == Some(403)
        }),
        "SIGHUP did not load the changed rel.cfg:\n{}",
        read(&err)
    );
    assert!(!read(&err).contains("reload refused"), "{}", read(&err));
    signal(pid, "TERM");
    assert!(
        until(Duration::from_secs(5), || !alive(pid)),
        "{}",
        read(&err)
    );
}

#[test]
fn fork_yes_with_the_port_taken_exits_non_zero_with_the_error() {
    let dir = temp_dir("daemon-busy");
    let cfg = dir.join("busy.cfg");
    std::fs::write(&cfg, OPTIONS_ONLY).expect("cfg");
    let pid_file = dir.join("busy.pid");
    let _ = std::fs::remove_file(&pid_file);
    let err = dir.join("busy.err");
    // Held for the whole test.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let _guard = DaemonGuard::new(&pid_file);

    let mut child = spawn_ser(&cfg, port, &["-P", &pid_file.to_string_lossy()], &err);
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("ser returned");
    let text = read(&err);
    assert!(!st.success(), "ser started on a taken port:\n{text}");
    assert!(
        text.contains("cannot start") && text.contains("in use"),
        "no bind error on stderr:\n{text}"
    );
    assert!(!pid_file.exists(), "pid file written by a failed start");
}

#[test]
fn fork_yes_with_an_unknown_user_exits_non_zero_with_the_error() {
    let dir = temp_dir("daemon-user");
    let cfg = dir.join("user.cfg");
    std::fs::write(&cfg, OPTIONS_ONLY).expect("cfg");
    let pid_file = dir.join("user.pid");
    let err = dir.join("user.err");
    let _guard = DaemonGuard::new(&pid_file);
    let mut child = spawn_ser(
        &cfg,
        0,
        &[
            "-u",
            "no-such-user-ser-test",
            "-P",
            &pid_file.to_string_lossy(),
        ],
        &err,
    );
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("ser returned");
    let text = read(&err);
    assert!(!st.success(), "ser started as an unknown user:\n{text}");
    assert!(text.contains("unknown user"), "{text}");
}

#[test]
fn fork_no_in_the_script_serves_in_the_foreground_with_one_shard() {
    let dir = temp_dir("daemon-forkno");
    let cfg = dir.join("forkno.cfg");
    std::fs::write(&cfg, format!("fork=no\nlog_stderror=yes\n{OPTIONS_ONLY}")).expect("cfg");
    // No -D: the script's fork=no keeps it in the foreground. Stopped (by PID) when the test
    // ends.
    let mut cmd = Command::new(SER);
    cmd.arg("-f")
        .arg(&cfg)
        .args(["-l", "127.0.0.1", "-p", "0", "-n", "3"])
        .stdin(Stdio::null());
    let mut ser = Ser::spawn(dir, "forkno", cfg, &mut cmd, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = ser.port;
    let text = ser.log_text();
    assert!(text.contains("started: 1 shard(s)"), "{text}");
    assert!(
        text.contains("fork=no: serving with one shard, not 3"),
        "{text}"
    );
    assert!(
        matches!(ser.child.try_wait(), Ok(None)),
        "ser left the foreground"
    );
    let peer = Peer::new();
    assert_eq!(options(&peer, port, "forkno-1"), Some(200), "{text}");
    ser.stop();
}

/// The next message starting with `prefix` (others skipped), within `ms`.
fn recv_starting(peer: &Peer, prefix: &str, ms: u64) -> Option<String> {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        if let Some(m) = peer.recv_timeout(50) {
            if m.starts_with(prefix) {
                return Some(m);
            }
        }
    }
    None
}

/// A caller's INVITE through ser to the UAS, answered 180: returns the INVITE as the UAS got
/// it, once the caller has the 180.
fn ringing_call(ser_port: u16, caller: &Peer, uas: &Peer, call_id: &str) -> String {
    let ser_addr = std::net::SocketAddr::from(([127, 0, 0, 1], ser_port));
    let ruri = format!("sip:uas@127.0.0.1:{}", uas.port());
    caller.send(
        ser_addr,
        request("INVITE", &ruri, caller.port(), call_id, "").as_bytes(),
    );
    let invite = recv_starting(uas, "INVITE ", 3000).expect("INVITE relayed to the UAS");
    uas.send(
        ser_addr,
        response_to(&invite, 180, "Ringing", "uas-1").as_bytes(),
    );
    let ringing = recv_starting(caller, "SIP/2.0 180", 3000);
    assert!(ringing.is_some(), "caller got no 180");
    invite
}

#[test]
fn sigterm_lets_a_ringing_call_complete_refuses_new_calls_then_exits() {
    let mut ser = Ser::start("daemon-drain", RELAY, 0, 2, "auto");
    let port = ser.port;
    let caller = Peer::new();
    let uas = Peer::new();
    let invite = ringing_call(port, &caller, &uas, "drain-call-1");

    signal(ser.child.id(), "TERM");
    // The main thread takes the signal at once; give it a moment to raise the flag.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(ser.child.try_wait(), Ok(None)),
        "ser exited with a call still ringing:\n{}",
        ser.log_text()
    );

    // A new call during the drain: 503 with Retry-After (tm's retry_after), never relayed.
    let late = Peer::new();
    late.send(
        ser.addr(),
        request(
            "INVITE",
            &format!("sip:uas@127.0.0.1:{}", uas.port()),
            late.port(),
            "drain-call-2",
            "",
        )
        .as_bytes(),
    );
    let refused = recv_starting(&late, "SIP/2.0 5", 2000).expect("no reply to a new INVITE");
    assert_eq!(status(&refused), Some(503), "{refused}");
    assert!(refused.contains("Retry-After: 7"), "{refused}");

    // The held 200, about a second after the 180, still reaches the caller.
    std::thread::sleep(Duration::from_millis(800));
    uas.send(
        ser.addr(),
        response_to(&invite, 200, "OK", "uas-1").as_bytes(),
    );
    let ok = recv_starting(&caller, "SIP/2.0 200", 3000);
    assert!(
        ok.is_some(),
        "the 200 was not relayed during the drain:\n{}",
        ser.log_text()
    );
    // The new INVITE never reached the UAS.
    assert!(
        recv_starting(&uas, "INVITE ", 200).is_none(),
        "a new INVITE was relayed during the drain"
    );

    // Nothing waits for a final reply any more: ser stops by itself, cleanly.
    let st = wait_exit(&mut ser.child, Duration::from_secs(3));
    assert!(
        st.is_some_and(|s| s.success()),
        "ser did not exit by itself after the drain ({st:?}):\n{}",
        ser.log_text()
    );
}

#[test]
fn sigterm_stops_at_shutdown_timeout_when_a_call_never_gets_its_final_reply() {
    let script = format!("shutdown_timeout=1\n{RELAY}");
    let mut ser = Ser::start("daemon-drain-timeout", &script, 0, 1, "auto");
    let port = ser.port;
    let caller = Peer::new();
    let uas = Peer::new();
    let _ = ringing_call(port, &caller, &uas, "drain-timeout-1");

    let sent = Instant::now();
    signal(ser.child.id(), "TERM");
    let st = wait_exit(&mut ser.child, Duration::from_secs(5));
    let took = sent.elapsed();
    assert!(
        st.is_some_and(|s| s.success()),
        "ser did not stop ({st:?}):\n{}",
        ser.log_text()
    );
    // Not before shutdown_timeout=1; not at the transaction's own end either (fr_inv_timer,
    // far beyond wait_exit's 5 s).
    assert!(
        took >= Duration::from_millis(900),
        "stopped after {took:?}, before shutdown_timeout=1\n{}",
        ser.log_text()
    );
    assert!(
        ser.log_text()
            .contains("1 transaction(s) still without a final reply"),
        "{}",
        ser.log_text()
    );
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let mut ser = Ser::start("daemon-drain-twice", RELAY, 0, 1, "auto");
    let port = ser.port;
    let caller = Peer::new();
    let uas = Peer::new();
    let _ = ringing_call(port, &caller, &uas, "drain-twice-1");
    signal(ser.child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(ser.child.try_wait(), Ok(None)),
        "ser did not drain"
    );
    signal(ser.child.id(), "TERM");
    let st = wait_exit(&mut ser.child, Duration::from_secs(2));
    assert!(
        st.is_some_and(|s| s.success()),
        "a second SIGTERM did not stop ser ({st:?}):\n{}",
        ser.log_text()
    );
}

fn dist_cfg() -> PathBuf {
    repo_root().join("dist/ser.cfg")
}

#[test]
fn dist_sample_config_checks() {
    let out = Command::new(SER)
        .args(["-c", "-f"])
        .arg(dist_cfg())
        .output()
        .expect("ser -c");
    assert!(
        out.status.success(),
        "dist/ser.cfg does not load:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// dist/ser.service runs ser as User=ser under ProtectSystem=strict, which leaves every path
/// read-only unless the unit names it: dist/ser.cfg's data_dir (the SQLite database that
/// usrloc's db_mode 1 writes through to before each 200) must be the unit's StateDirectory
/// (created for User=, writable) or one of its ReadWritePaths, or ser cannot start.
#[test]
fn dist_unit_lets_ser_write_the_sample_configs_data_dir() {
    let unit = read(&repo_root().join("dist/ser.service"));
    let cfg = read(&dist_cfg());
    let data_dir = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("data_dir="))
        .and_then(|v| v.split('"').nth(1))
        .expect("dist/ser.cfg sets data_dir");
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    assert!(values("ProtectSystem").iter().any(|v| v == "strict"));
    let writable = values("StateDirectory")
        .iter()
        .map(|d| format!("/var/lib/{d}"))
        .chain(values("ReadWritePaths"))
        .any(|d| d.trim_start_matches(['-', '+']) == data_dir);
    assert!(
        writable,
        "dist/ser.service leaves data_dir {data_dir} read-only (ProtectSystem=strict) or missing:\n{unit}"
    );
    // serctl reaches the FIFO: it is in the unit's RuntimeDirectory (created for User=; the
    // unit's PrivateTmp would hide one under /tmp from serctl).
    let fifo = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("fifo="))
        .and_then(|v| v.split('"').nth(1))
        .expect("dist/ser.cfg sets fifo");
    let runtime = values("RuntimeDirectory");
    assert!(
        runtime
            .iter()
            .any(|d| Path::new(fifo).parent() == Some(Path::new(&format!("/run/{d}")))),
        "dist/ser.cfg's fifo {fifo} is not in the unit's RuntimeDirectory {runtime:?}"
    );
}

#[test]
fn dist_sample_config_serves_on_loopback() {
    // Its listen lines are the harness's (-l 127.0.0.1 -p PORT), its data under a temporary
    // directory, no FIFO (its /run/ser is the unit's).
    let data = temp_dir("daemon-dist-data");
    let text = read(&dist_cfg());
    assert!(
        text.contains("data_dir=\"/var/lib/ser\""),
        "data_dir line changed"
    );
    let text = text
        .lines()
        .filter(|l| !l.starts_with("listen=") && !l.starts_with("fifo="))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "data_dir=\"/var/lib/ser\"",
            &format!("data_dir=\"{}\"", data.display()),
        );
    // -D -E: in the foreground and on stderr, whatever fork= and log_stderror= say.
    let ser = Ser::start("daemon-dist", &text, 0, 1, "auto");
    let port = ser.port;
    let peer = Peer::new();
    assert_eq!(
        options(&peer, port, "dist-1"),
        Some(200),
        "{}",
        ser.log_text()
    );
}
