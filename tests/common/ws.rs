//! A WebSocket SIP client for the integration tests (RFC 7118 over RFC 6455, plain `ws:`):
//! the Upgrade, masked frames out, whole messages in (server frames are unmasked).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct WsClient {
    pub s: TcpStream,
    buf: Vec<u8>,
    pub closed: bool,
    /// Control frames received (opcode, payload), e.g. pings and the server's close.
    pub control: Vec<(u8, Vec<u8>)>,
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

/// The HTTP request of an Upgrade to SIP over WebSocket.
pub fn upgrade_request(protocol: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\nOrigin: http://127.0.0.1\r\n\r\n"
    )
}

impl WsClient {
    /// Connects and upgrades; panics if the server does not answer 101.
    pub fn connect(addr: SocketAddr) -> WsClient {
        let (c, head) = Self::try_upgrade(addr, &upgrade_request("sip"));
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        c
    }

    /// Sends `request` on a new connection and returns the client and the HTTP head back.
    pub fn try_upgrade(addr: SocketAddr, request: &str) -> (WsClient, String) {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                buf.drain(..end + 4);
                let c = WsClient {
                    s,
                    buf,
                    closed: false,
                    control: Vec::new(),
                };
                return (c, head);
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let c = WsClient {
            s,
            buf: Vec::new(),
            closed: true,
            control: Vec::new(),
        };
        (c, head)
    }

    /// One SIP message as a text frame.
    pub fn send(&mut self, msg: &str) -> bool {
        self.send_raw(&client_frame(true, 1, msg.as_bytes()))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }

    /// A whole data frame already buffered (control frames are set aside).
    fn take(&mut self) -> Option<String> {
        loop {
            let b = &self.buf;
            if b.len() < 2 {
                return None;
            }
            let op = b[0] & 0x0f;
            let (len, at) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return None,
                n => (n as usize, 2),
            };
            if b.len() < at + len {
                return None;
            }
            let payload = b[at..at + len].to_vec();
            self.buf.drain(..at + len);
            if op >= 8 {
                self.control.push((op, payload));
                continue;
            }
            return Some(String::from_utf8_lossy(&payload).into_owned());
        }
    }

    /// The next SIP message within `wait`.
    pub fn next(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(m) = self.take() {
                return Some(m);
            }
            if self.closed {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = self.s.set_read_timeout(Some(left));
            match self.s.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => self.closed = true,
            }
        }
    }

    /// The next message starting with `start` (others skipped), within 5 s.
    pub fn until(&mut self, start: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(m) = self.next(Duration::from_millis(200)) {
                if m.starts_with(start) {
                    return Some(m);
                }
            }
            if self.closed {
                return None;
            }
        }
        None
    }

    /// Reads until the server closes (or `wait` passes): whether it closed.
    pub fn wait_closed(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.closed && Instant::now() < deadline {
            self.next(Duration::from_millis(100));
        }
        self.closed
    }
}
