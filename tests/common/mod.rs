//! Shared harness for the integration tests: start a real `ser` process on loopback with a
//! script, talk to it over UDP, and stop it by PID. Every wait is bounded.

#![allow(dead_code)]

pub mod dnsmasq;
pub mod mariadb;
pub mod sipp;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SER: &str = env!("CARGO_BIN_EXE_ser");

/// A free UDP port on 127.0.0.1 (bound, then released: good enough on loopback).
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    s.local_addr().expect("local addr").port()
}

/// A free UDP port below 10000 on 127.0.0.1: sipsak 0.9.8 truncates 5-digit ports in the
/// Request-URI it builds, so servers that sipsak talks to get a 4-digit port.
pub fn free_port_4digit() -> u16 {
    // Each call starts elsewhere: tests of one binary run in parallel threads of one process,
    // and the same sequence would hand two of them the same port.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x =
        std::process::id().wrapping_mul(2_654_435_761) ^ 0x9e37 ^ n.wrapping_mul(0x9e37_79b9);
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let port = 5100 + (x % 4800) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free 4-digit UDP port");
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ser-test-{}-{}", tag, std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// A running `ser`, killed (by PID) when dropped.
pub struct Ser {
    pub child: Child,
    pub port: u16,
    pub cfg: PathBuf,
    pub log: PathBuf,
}

impl Ser {
    /// Starts ser with `script` on 127.0.0.1:port (`-l 127.0.0.1 -p port` unless the script
    /// has its own listen/port), `shards` shards, and waits until it answers.
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
        let dir = temp_dir(tag);
        let cfg = dir.join(format!("{tag}.cfg"));
        std::fs::write(&cfg, script).expect("write cfg");
        Self::start_file_with(tag, &cfg, port, shards, backend, extra)
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
        let dir = temp_dir(tag);
        let log = dir.join(format!("{tag}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(SER)
            .args(["-f"])
            .arg(cfg)
            .args(["-l", "127.0.0.1", "-p", &port.to_string()])
            .args(["-n", &shards.to_string(), "-E", "-D"])
            .args(extra)
            .env("SER_IO_BACKEND", backend)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn ser");
        let ser = Ser {
            child,
            port,
            cfg: cfg.to_path_buf(),
            log,
        };
        ser.wait_ready();
        ser
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log_text().contains("listening on udp:") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ser did not start:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn stop(&mut self) {
        // SAFETY-free: kill by PID through the std API (SIGKILL) after a polite SIGTERM.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let out = dir.join(format!("out-{}", free_port()));
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
    let _ = std::fs::remove_file(&out);
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

pub fn fifo_path(tag: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/ser-test-fifo-{tag}-{}", std::process::id()))
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
