//! Stream (TCP) clients for the integration tests: connect, read whole SIP messages (a
//! blocking reader and a buffered one with deadlines), tell a connection the server closed,
//! OPTIONS over a connection and over UDP; and what a live `ser` holds, read from /proc (its
//! RSS, its open stream connections).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{request, status, Peer, Ser};

/// A connection to `addr` (5 s to connect), reads bounded by 5 s.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// The Content-Length of a message head (0 when it has none).
pub fn head_content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().eq_ignore_ascii_case("content-length") || n.trim().eq_ignore_ascii_case("l"))
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
}

/// Reads one SIP message (head + Content-Length body) from a stream; None on a close or
/// when the read timeout passes.
pub fn read_msg(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut body = vec![0; head_content_length(&head)];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// An OPTIONS to `target` over `s` (Via `SIP/2.0/<transport>`), and the message read back.
pub fn options_on(
    s: &mut TcpStream,
    target: SocketAddr,
    transport: &str,
    call_id: &str,
) -> Option<String> {
    let local = s.local_addr().ok()?;
    let req = request(
        "OPTIONS",
        &format!("sip:{target}"),
        local.port(),
        call_id,
        "",
    )
    .replace("SIP/2.0/UDP", &format!("SIP/2.0/{transport}"));
    s.write_all(req.as_bytes()).ok()?;
    read_msg(s)
}

pub fn options_over_tcp(s: &mut TcpStream, ser: &Ser, call_id: &str) -> Option<String> {
    options_on(s, ser.listen("tcp"), "TCP", call_id)
}

/// True when the peer closed `s` (EOF or reset) within the read timeout; what came before
/// the close is read and dropped.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// An OPTIONS over UDP is answered 200.
pub fn udp_options_ok(ser: &Ser, tag: &str) {
    let peer = Peer::new();
    let req = request(
        "OPTIONS",
        &format!("sip:{}", ser.addr()),
        peer.port(),
        tag,
        "",
    );
    peer.send(ser.addr(), req.as_bytes());
    let r = peer
        .recv()
        .unwrap_or_else(|| panic!("no UDP answer ({tag})\n{}", ser.log_text()));
    assert_eq!(status(&r), Some(200), "{r}");
}

/// An OPTIONS over a new TCP connection is answered 200.
pub fn tcp_options_ok(ser: &Ser, tag: &str) {
    let mut s = tcp(ser.listen("tcp"));
    let r = options_over_tcp(&mut s, ser, tag)
        .unwrap_or_else(|| panic!("no TCP answer ({tag})\n{}", ser.log_text()));
    assert_eq!(status(&r), Some(200), "{r}");
}

/// A connection read through a buffer: whole messages with a deadline each, keep-alive CRLFs
/// between them skipped, the close remembered.
pub struct Wire {
    pub s: TcpStream,
    buf: Vec<u8>,
    /// The server closed (EOF or reset).
    pub eof: bool,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        Wire::new(tcp(addr))
    }

    pub fn new(s: TcpStream) -> Wire {
        Wire {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes all of `data`; false when the connection refused it (closed, reset).
    pub fn send(&mut self, data: &[u8]) -> bool {
        self.s.write_all(data).is_ok()
    }

    /// A whole message already buffered.
    fn take(&mut self) -> Option<String> {
        let lead = self
            .buf
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(self.buf.len());
        self.buf.drain(..lead);
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let total = end + head_content_length(&head);
        if self.buf.len() < total {
            return None;
        }
        let msg: Vec<u8> = self.buf.drain(..total).collect();
        Some(String::from_utf8_lossy(&msg).into_owned())
    }

    /// The next whole message within `wait`; None when none came in time or the server
    /// closed (then [`Wire::eof`]).
    pub fn next(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(m) = self.take() {
                return Some(m);
            }
            if self.eof {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.s.set_read_timeout(Some(left));
            match self.s.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => self.eof = true,
            }
        }
    }

    /// Every message until the server closes or `wait` passes; and whether it closed.
    pub fn until_closed(&mut self, wait: Duration) -> (Vec<String>, bool) {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while Instant::now() < deadline && !self.eof {
            if let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
                got.push(m);
            }
        }
        while let Some(m) = self.take() {
            got.push(m);
        }
        (got, self.eof)
    }
}

/// A process's resident memory in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// The TCP sockets process `pid` holds that are not listening (connections in any state),
/// as (local, remote, state) lines of /proc/PID/net/tcp{,6} whose inode is one of its
/// descriptors.
pub fn stream_connections(pid: u32) -> Vec<String> {
    let mut inodes = HashSet::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(target) = std::fs::read_link(e.path()) {
                let t = target.to_string_lossy().into_owned();
                if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(i.to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() > 9 && f[3] != "0A" && inodes.contains(f[9]) {
                out.push(format!("{} {} state {}", f[1], f[2], f[3]));
            }
        }
    }
    out
}

/// Waits (up to `limit`) until `pid` holds at most `n` stream connections; the ones it
/// holds then.
pub fn wait_stream_connections(pid: u32, n: usize, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let held = stream_connections(pid);
        if held.len() <= n || Instant::now() > deadline {
            return held;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
