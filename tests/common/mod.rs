//! Shared harness for the integration tests: start a real `ser` process on loopback with a
//! script, talk to it over UDP, and stop it by PID. Every wait is bounded.

#![allow(dead_code)]

pub mod browser;
pub mod certs;
pub mod corpus;
pub mod dnsmasq;
pub mod mariadb;
pub mod netns;
#[cfg(feature = "rtpengine")]
pub mod rtpengine;
pub mod sipp;
pub mod stream;
pub mod ws;

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SER: &str = env!("CARGO_BIN_EXE_ser");

/// Ports [`free_port`] and [`free_port_4digit`] handed out in this process: never twice.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port free for UDP (and TCP with `tcp`) on 127.0.0.1 in `lo..hi`, for a peer that must be
/// told its port in advance (sipp, sipsak, dnsmasq, mariadbd cannot report one they picked).
///
/// The port is released before the peer binds it, so it cannot be held until use; what
/// keeps it ours meanwhile: the ranges lie below the kernel's ephemeral range (32768-60999 by
/// default), so no port-0 bind (a `ser` started on port 0, a [`Peer`], a sipp UAC) can be
/// given it; it is never handed out twice in one test binary; and it is drawn at random, so
/// another test binary running beside this one would have to draw the same one within
/// moments. Peers whose start fails on a taken port are retried on another
/// ([`Ser::start_4digit`], [`dnsmasq::Dnsmasq::start`]).
fn reserve_port(lo: u16, hi: u16, tcp: bool) -> u16 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = std::process::id().wrapping_mul(2_654_435_761)
        ^ 0x9e37
        ^ n.wrapping_mul(0x9e37_79b9)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut taken = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let port = lo + (x % u32::from(hi - lo)) as u16;
        if taken.contains(&port) {
            continue;
        }
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && (!tcp || TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port in {lo}..{hi} on 127.0.0.1");
}

/// A UDP port for a peer that must be told its port (see [`reserve_port`]); `ser` itself
/// starts on port 0 and reports the port it got ([`Ser::start`]).
pub fn free_port() -> u16 {
    reserve_port(10000, 32000, false)
}

/// A port free for both UDP and TCP (dnsmasq, mariadbd), as [`free_port`].
pub fn free_port_udp_tcp() -> u16 {
    reserve_port(10000, 32000, true)
}

/// A UDP port below 10000 on 127.0.0.1: sipsak 0.9.8 truncates 5-digit ports in the
/// Request-URI it builds, so servers that sipsak talks to get a 4-digit port (see
/// [`reserve_port`]; a `ser` on one is started with [`Ser::start_4digit`], which retries).
pub fn free_port_4digit() -> u16 {
    reserve_port(5100, 9900, false)
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary folder of its own (`ser-test-<tag>-<pid>-<n>`), removed with its contents
/// when dropped; `SER_TEST_KEEP=1` keeps it for a look after a failure. Derefs to its path.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SER_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What names this test process in shared paths: its pid, and the time it first asked, since
/// tests run in PID namespaces of their own (common::netns) all have small, equal pids there.
pub fn process_token() -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("{}.{nanos:x}", std::process::id())
        })
        .clone()
}

pub fn temp_dir(tag: &str) -> TempDir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("ser-test-{tag}-{}-{n}", process_token()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a temp dir");
    TempDir(d)
}

/// The sockets a `ser` log names, in order: one `listening on <proto>:<addr>` line per socket
/// at start (`udp` today; `tcp`, `tls`, `ws`, `wss` will come). Only complete lines count.
pub fn listening(log: &str) -> Vec<(String, SocketAddr)> {
    let complete = log.rfind('\n').map_or("", |end| &log[..end]);
    complete
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("listening on ")?;
            let (proto, addr) = rest.split_once(':')?;
            if proto.is_empty() || !proto.bytes().all(|b| b.is_ascii_lowercase()) {
                return None;
            }
            Some((proto.to_string(), addr.trim().parse().ok()?))
        })
        .collect()
}

/// Waits (up to `limit`) until the log at `log` names ser's sockets; Err with the log when
/// `child` exits first or nothing comes in time. The lines of all sockets are written
/// together, so a moment after the first appears the rest are there too.
pub fn wait_listening(
    log: &Path,
    child: &mut Child,
    limit: Duration,
) -> Result<Vec<(String, SocketAddr)>, String> {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + limit;
    loop {
        if !listening(&read()).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            return Ok(listening(&read()));
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("ser exited ({st}) at start:\n{}", read()));
        }
        if Instant::now() > deadline {
            return Err(format!("ser did not start within {limit:?}:\n{}", read()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to `child` (by its PID; none when `grace` is zero), waits up to `grace` for
/// it to exit, then kills (SIGKILL) and reaps it. Quiet: nothing printed for one already gone.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if !grace.is_zero() {
        signal(child.id(), "TERM");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends signal `sig` (a name: `TERM`, `HUP`, `STOP`, ...) to process `pid`; false when it is
/// gone. Quiet: `kill`'s complaint about a process already gone is not printed.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A running `ser`, stopped (by PID: SIGTERM, then SIGKILL) when dropped; its temp folder
/// (log, and the script [`Ser::start`] wrote) is removed then.
pub struct Ser {
    pub child: Child,
    /// The port of its first UDP socket (as the start-up log says).
    pub port: u16,
    /// Every socket the start-up log names, as (proto, address).
    pub sockets: Vec<(String, SocketAddr)>,
    pub cfg: PathBuf,
    pub log: PathBuf,
    dir: TempDir,
}

impl Ser {
    /// Starts ser with `script` on 127.0.0.1 (`-l 127.0.0.1 -p port` unless the script has its
    /// own listen/port), `shards` shards, and waits until it listens. `port` 0 (what tests
    /// use): ser picks a free port and the log tells it ([`Ser::port`], [`Ser::addr`]).
    pub fn start(tag: &str, script: &str, port: u16, shards: usize, backend: &str) -> Ser {
        Self::start_with(tag, script, port, shards, backend, &[])
    }

    /// [`Self::start`] with more command-line arguments.
    pub fn start_with(
        tag: &str,
        script: &str,
        port: u16,
        shards: usize,
        backend: &str,
        extra: &[&str],
    ) -> Ser {
        Self::launch(tag, Some(script), None, port, shards, backend, extra, &[])
            .unwrap_or_else(|log| panic!("ser did not start: {log}"))
    }

    /// [`Self::start`] on a 4-digit port (sipsak's limit, [`free_port_4digit`]).
    pub fn start_4digit(tag: &str, script: &str, shards: usize, backend: &str) -> Ser {
        Self::start_picking(
            tag,
            free_port_4digit,
            |_| script.to_string(),
            shards,
            backend,
        )
    }

    /// [`Self::start`] on a port from `pick` with the script `script(port)` (one that must name
    /// ser's own port, e.g. a forward to itself): ser cannot be on port 0 there, so the port
    /// is picked first, and another one is picked when it is taken before ser binds it.
    pub fn start_picking(
        tag: &str,
        pick: fn() -> u16,
        script: impl Fn(u16) -> String,
        shards: usize,
        backend: &str,
    ) -> Ser {
        let mut last = String::new();
        for _ in 0..5 {
            let port = pick();
            let text = script(port);
            match Self::launch(tag, Some(&text), None, port, shards, backend, &[], &[]) {
                Ok(ser) => return ser,
                Err(log) if log.contains("in use") => last = log,
                Err(log) => panic!("ser did not start: {log}"),
            }
        }
        panic!("ser found no free port: {last}");
    }

    pub fn start_file(tag: &str, cfg: &Path, port: u16, shards: usize, backend: &str) -> Ser {
        Self::start_file_with(tag, cfg, port, shards, backend, &[])
    }

    /// [`Self::start_file`] with more command-line arguments (e.g. `-ddd`).
    pub fn start_file_with(
        tag: &str,
        cfg: &Path,
        port: u16,
        shards: usize,
        backend: &str,
        extra: &[&str],
    ) -> Ser {
        Self::start_file_env(tag, cfg, port, shards, backend, extra, &[])
    }

    /// [`Self::start_file_with`] with more environment variables for ser.
    pub fn start_file_env(
        tag: &str,
        cfg: &Path,
        port: u16,
        shards: usize,
        backend: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Ser {
        Self::launch(tag, None, Some(cfg), port, shards, backend, extra, env)
            .unwrap_or_else(|log| panic!("ser did not start: {log}"))
    }

    /// Starts ser on `script` (written to its temp folder) or `cfg`; Err with the log when it
    /// does not come up.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        tag: &str,
        script: Option<&str>,
        cfg: Option<&Path>,
        port: u16,
        shards: usize,
        backend: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Result<Ser, String> {
        let dir = temp_dir(tag);
        let cfg = match (script, cfg) {
            (Some(text), _) => {
                let cfg = dir.join(format!("{tag}.cfg"));
                std::fs::write(&cfg, text).expect("write cfg");
                cfg
            }
            (None, Some(cfg)) => cfg.to_path_buf(),
            (None, None) => unreachable!("a script or a file"),
        };
        let mut cmd = Command::new(SER);
        cmd.args(["-f"])
            .arg(&cfg)
            .args(["-l", "127.0.0.1", "-p", &port.to_string()])
            .args(["-n", &shards.to_string(), "-E", "-D"])
            .args(extra)
            .env("SER_IO_BACKEND", backend)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Self::spawn(dir, tag, cfg, &mut cmd, Duration::from_secs(10))
    }

    /// Runs `cmd` (a `ser` command line, perhaps under qemu) with stderr to a log in `dir`,
    /// and waits up to `limit` until the log names its sockets; Err with the log if not.
    pub fn spawn(
        dir: TempDir,
        tag: &str,
        cfg: PathBuf,
        cmd: &mut Command,
        limit: Duration,
    ) -> Result<Ser, String> {
        let log = dir.join(format!("{tag}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn ser");
        let sockets = match wait_listening(&log, &mut child, limit) {
            Ok(s) => s,
            Err(e) => {
                stop_child(&mut child, Duration::from_secs(2));
                return Err(e);
            }
        };
        let Some(port) = sockets
            .iter()
            .find(|(p, _)| p == "udp")
            .map(|(_, a)| a.port())
        else {
            stop_child(&mut child, Duration::from_secs(2));
            return Err(format!("no UDP socket in the log:\n{}", read_log(&log)));
        };
        Ok(Ser {
            child,
            port,
            sockets,
            cfg,
            log,
            dir,
        })
    }

    /// Its first UDP socket's address.
    pub fn addr(&self) -> SocketAddr {
        self.listen("udp")
    }

    /// Its first socket of `proto` (`udp`, later `tcp`, `tls`, `ws`, `wss`) as the log says.
    pub fn listen(&self, proto: &str) -> SocketAddr {
        self.listens(proto)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("ser has no {proto} socket:\n{}", self.log_text()))
    }

    /// All its sockets of `proto`, in the log's order.
    pub fn listens(&self, proto: &str) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter(|(p, _)| p == proto)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Its temp folder (log, written script): gone when the `Ser` is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// SIGTERM (by PID), then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

impl Drop for Ser {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP peer on loopback with bounded receives.
pub struct Peer {
    pub sock: UdpSocket,
}

impl Peer {
    pub fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
        sock.set_read_timeout(Some(Duration::from_millis(2000)))
            .expect("timeout");
        Peer { sock }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn send(&self, to: SocketAddr, data: &[u8]) {
        self.sock.send_to(data, to).expect("send");
    }

    /// The next datagram, or None after the timeout.
    pub fn recv(&self) -> Option<String> {
        let mut buf = vec![0u8; 65536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    pub fn recv_timeout(&self, ms: u64) -> Option<String> {
        let _ = self.sock.set_read_timeout(Some(Duration::from_millis(ms)));
        let r = self.recv();
        let _ = self
            .sock
            .set_read_timeout(Some(Duration::from_millis(2000)));
        r
    }
}

/// A request from this peer, with its Via pointing back at it.
pub fn request(method: &str, ruri: &str, peer_port: u16, call_id: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@127.0.0.1>;tag=t-{call_id}\r\n\
         To: <{ruri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// The final reply a UDP peer gets (provisionals skipped), within `limit`.
pub fn final_reply(peer: &Peer, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(r) = peer.recv_timeout(200) {
            if status(&r).is_some_and(|c| c >= 200) {
                return Some(r);
            }
        }
    }
    None
}

/// The status code of a reply.
pub fn status(reply: &str) -> Option<u16> {
    reply.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command with a wall-clock limit; returns (exit ok, stdout+stderr).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = temp_dir("run");
    let out = dir.join("out");
    let f = std::fs::File::create(&out).expect("out file");
    let f2 = f.try_clone().expect("clone");
    let mut child = cmd
        .stdout(f)
        .stderr(f2)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn command");
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    (ok, text)
}

/// A raw SIP peer's view of a request: the lines a response copies.
pub fn response_to(request: &str, code: u16, reason: &str, to_tag: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for line in request.split("\r\n").skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" | "record-route" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                if !line.contains("tag=") {
                    out.push_str(";tag=");
                    out.push_str(to_tag);
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// serctl, built with the tests.
pub const SERCTL: &str = env!("CARGO_BIN_EXE_serctl");

/// A path for ser's FIFO (`fifo=`), removed when dropped (a ser stopped by SIGKILL leaves
/// its FIFO behind). Derefs to the path.
pub struct FifoPath(PathBuf);

impl std::ops::Deref for FifoPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for FifoPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for FifoPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn fifo_path(tag: &str) -> FifoPath {
    FifoPath(PathBuf::from(format!(
        "/tmp/ser-test-fifo-{tag}-{}",
        process_token()
    )))
}

/// Waits (bounded) until ser made its FIFO.
pub fn wait_fifo(p: &Path, ser: &Ser) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no FIFO at {}:\n{}", p.display(), ser.log_text());
}

/// Runs serctl with SER_FIFO; (exit code, stdout, stderr).
pub fn serctl(fifo: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(SERCTL)
        .args(args)
        .env("SER_FIFO", fifo)
        .env("SERCTL_TIMEOUT", "10")
        .output()
        .expect("run serctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Everything a peer receives within `ms`.
pub fn drain(peer: &Peer, ms: u64) -> Vec<String> {
    let mut v = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        if let Some(m) = peer.recv_timeout(50) {
            v.push(m);
        }
    }
    v
}

/// The next request of `method` a peer receives (others, e.g. hop-by-hop ACKs, skipped).
pub fn recv_request(peer: &Peer, method: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(m) = peer.recv_timeout(100) {
            if m.starts_with(&format!("{method} ")) {
                return m;
            }
        }
    }
    panic!("no {method} arrived");
}

/// [`serctl`] with stdout and stderr in one string.
pub fn serctl_joined(fifo: &Path, args: &[&str]) -> (i32, String) {
    let (code, out, err) = serctl(fifo, args);
    (code, format!("{out}{err}"))
}

/// The body of one HTTP/1.0 GET of `path` from ser's metrics listener (empty on any failure;
/// every wait bounded).
pub fn http_get_body(addr: SocketAddr, path: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return String::new();
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
