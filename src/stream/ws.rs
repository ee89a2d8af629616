//! SIP over WebSocket (RFC 7118) on a stream connection, sans-IO: the HTTP/1.1 Upgrade
//! (RFC 6455 §4.2) and the framing (§5). Bytes in (after TLS, for wss); whole SIP messages,
//! bytes to write and errors out. The caller owns the connection and the clock.
//!
//! - The handshake: `GET` with `Upgrade: websocket`, `Connection: Upgrade`, a 16-byte
//!   `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, and `sip` among the offered
//!   `Sec-WebSocket-Protocol`s; an `Origin` not in the allowed list (when there is one) is
//!   refused. What is not right gets an HTTP error ([`WsError::Refused`]) and a close.
//! - Frames (tungstenite's header parser and writer): one SIP message per WebSocket message,
//!   text or binary; fragments reassembled up to the size limit; client frames must be
//!   masked; text must be UTF-8; ping answered with pong; a close answered with a close.
//!   Errors are final ([`WsError`]): the close frame to send is already written.
//! - Our messages go out as one unmasked frame each: text when they are UTF-8, else binary.

use std::io::Cursor;
use std::time::Instant;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The longest Upgrade request head accepted.
pub const MAX_HEAD: usize = 8192;

/// What the handshake accepts.
#[derive(Debug, Clone, Default)]
pub struct WsSettings {
    /// `ws_allowed_origins`: the `Origin`s a browser may come from; empty: any. A request
    /// without `Origin` (not a browser) is always let in.
    pub allowed_origins: Vec<String>,
}

/// Why a WebSocket connection must close. The bytes to send before the close (an HTTP error
/// response, or a close frame) have been written to the caller's `write` buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("upgrade refused: {0} {1}")]
    Refused(u16, &'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("text message that is not UTF-8")]
    NotUtf8,
    #[error("closed by the peer")]
    PeerClosed,
}

impl WsError {
    /// A short name for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Refused(..) => "refused",
            Self::Protocol(_) => "protocol",
            Self::TooLarge(_) => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::PeerClosed => "peer_closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Open,
    /// An error or a close: nothing more is read.
    Done,
}

/// One WebSocket connection's state.
#[derive(Debug)]
pub struct WsConn {
    state: State,
    /// Bytes not yet consumed: the request head, or a frame not yet whole.
    pending: Vec<u8>,
    /// The message being reassembled from fragments, and whether it is text.
    message: Vec<u8>,
    fragmented: Option<bool>,
    /// When the first byte of what `pending` holds came (None: nothing partial).
    since: Option<Instant>,
    max: usize,
}

impl WsConn {
    /// `max`: the largest SIP message accepted (one WebSocket message, reassembled).
    pub fn new(max: usize) -> Self {
        Self {
            state: State::Handshake,
            pending: Vec::new(),
            message: Vec::new(),
            fragmented: None,
            since: None,
            max,
        }
    }

    /// The Upgrade is done.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Bytes held for what is not yet whole: the request head or the frame not yet complete,
    /// and the fragments of a message not yet complete. At most [`MAX_HEAD`] before the
    /// Upgrade, and the message limit plus a frame header (14 bytes) after it.
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.message.len()
    }

    /// When the head or frame now partial began (None: between frames).
    pub fn incomplete_since(&self) -> Option<Instant> {
        self.since
    }

    /// Reads `data` (what came after the bytes of earlier calls): whole SIP messages are
    /// copied into `out` (cleared first) and listed as ranges in `msgs`; the bytes to send
    /// back (the 101, pongs, a close) are appended to `write`. An error ends the connection
    /// (what to send before closing is in `write`); messages found before it stay listed.
    pub fn feed(
        &mut self,
        data: &[u8],
        now: Instant,
        settings: &WsSettings,
        out: &mut Vec<u8>,
        msgs: &mut Vec<(usize, usize)>,
        write: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        out.clear();
        msgs.clear();
        if self.state == State::Done {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let r = self.process(settings, out, msgs, write);
        if r.is_err() {
            self.state = State::Done;
            self.pending = Vec::new();
            self.message = Vec::new();
            self.fragmented = None;
        }
        self.since = match (
            self.pending.is_empty() && self.fragmented.is_none(),
            self.since,
        ) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(now),
        };
        r
    }

    fn process(
        &mut self,
        settings: &WsSettings,
        out: &mut Vec<u8>,
        msgs: &mut Vec<(usize, usize)>,
        write: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        if self.state == State::Handshake {
            let Some(used) = self.handshake(settings, write)? else {
                return Ok(());
            };
            self.pending.drain(..used);
            self.state = State::Open;
        }
        let mut at = 0;
        let r = loop {
            match self.frame(at, out, msgs, write) {
                Ok(Some(used)) => at += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..at.min(self.pending.len()));
        r
    }

    /// The Upgrade request, once its head is whole: the 101 written and the head's length,
    /// or None while incomplete.
    fn handshake(
        &mut self,
        settings: &WsSettings,
        write: &mut Vec<u8>,
    ) -> Result<Option<usize>, WsError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let used = match req.parse(&self.pending) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.pending.len() <= MAX_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => {
                return Err(refuse(write, 431, "Request Header Fields Too Large"))
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(refuse(write, 431, "Request Header Fields Too Large"))
            }
            Err(_) => return Err(refuse(write, 400, "Bad Request")),
        };
        if used > MAX_HEAD {
            return Err(refuse(write, 431, "Request Header Fields Too Large"));
        }
        let accept =
            check_upgrade(&req, settings).map_err(|(code, why)| refuse(write, code, why))?;
        write.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Accept: ",
        );
        write.extend_from_slice(accept.as_bytes());
        write.extend_from_slice(b"\r\n\r\n");
        Ok(Some(used))
    }

    /// One frame from `pending[at..]`: its length, or None while incomplete.
    fn frame(
        &mut self,
        at: usize,
        out: &mut Vec<u8>,
        msgs: &mut Vec<(usize, usize)>,
        write: &mut Vec<u8>,
    ) -> Result<Option<usize>, WsError> {
        let rest = self.pending.get(at..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(None);
        }
        let mut cur = Cursor::new(rest);
        let (header, len) = match FrameHeader::parse(&mut cur) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(_) => {
                return Err(close(
                    write,
                    CloseCode::Protocol,
                    WsError::Protocol("bad frame header"),
                ))
            }
        };
        let head_len = cur.position() as usize;
        // Before waiting for a payload: is it one we would take at all?
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(close(
                write,
                CloseCode::Protocol,
                WsError::Protocol("reserved bits set"),
            ));
        }
        let Some(mask) = header.mask else {
            return Err(close(
                write,
                CloseCode::Protocol,
                WsError::Protocol("unmasked client frame"),
            ));
        };
        let control = matches!(header.opcode, OpCode::Control(_));
        if control && (!header.is_final || len > 125) {
            return Err(close(
                write,
                CloseCode::Protocol,
                WsError::Protocol("bad control frame"),
            ));
        }
        // A ping between a message's fragments is no part of the message.
        let so_far = match self.fragmented {
            Some(_) if !control => self.message.len() as u64,
            _ => 0,
        };
        if len.saturating_add(so_far) > self.max as u64 {
            return Err(close(write, CloseCode::Size, WsError::TooLarge(self.max)));
        }
        let len = len as usize;
        let Some(payload) = rest.get(head_len..head_len + len) else {
            return Ok(None);
        };
        let used = head_len + len;
        match header.opcode {
            OpCode::Control(c) => {
                match c {
                    Control::Ping => {
                        let mut p = payload.to_vec();
                        unmask(&mut p, mask);
                        frame_to(write, OpCode::Control(Control::Pong), &p);
                    }
                    Control::Pong => {}
                    // A close body is a two-byte status code and a reason (RFC 6455 §5.5.1).
                    Control::Close if len == 1 => {
                        return Err(close(
                            write,
                            CloseCode::Protocol,
                            WsError::Protocol("close frame with a one-byte body"),
                        ))
                    }
                    Control::Close => {
                        // Echo the status code (RFC 6455 §5.5.1), then close.
                        let mut p = payload.get(..2).unwrap_or_default().to_vec();
                        unmask(&mut p, mask);
                        frame_to(write, OpCode::Control(Control::Close), &p);
                        return Err(WsError::PeerClosed);
                    }
                    Control::Reserved(_) => {
                        return Err(close(
                            write,
                            CloseCode::Protocol,
                            WsError::Protocol("reserved opcode"),
                        ))
                    }
                }
            }
            OpCode::Data(d) => {
                let text = match (d, self.fragmented) {
                    (Data::Text, None) => true,
                    (Data::Binary, None) => false,
                    (Data::Continue, Some(t)) => t,
                    (Data::Continue, None) => {
                        return Err(close(
                            write,
                            CloseCode::Protocol,
                            WsError::Protocol("continuation without a message"),
                        ))
                    }
                    (Data::Text | Data::Binary, Some(_)) => {
                        return Err(close(
                            write,
                            CloseCode::Protocol,
                            WsError::Protocol("new message inside a fragmented one"),
                        ))
                    }
                    (Data::Reserved(_), _) => {
                        return Err(close(
                            write,
                            CloseCode::Protocol,
                            WsError::Protocol("reserved opcode"),
                        ))
                    }
                };
                if !header.is_final {
                    let start = self.message.len();
                    self.message.extend_from_slice(payload);
                    unmask(&mut self.message[start..], mask);
                    self.fragmented = Some(text);
                    return Ok(Some(used));
                }
                // The message: the earlier fragments (none for the common one-frame message)
                // and this frame, unmasked straight into `out`.
                self.fragmented = None;
                let a = out.len();
                out.extend_from_slice(&self.message);
                let last = out.len();
                out.extend_from_slice(payload);
                unmask(out.get_mut(last..).unwrap_or_default(), mask);
                // Keep the reassembly allocation for the next message unless it grew large.
                if self.message.capacity() > 4096 {
                    self.message = Vec::new();
                } else {
                    self.message.clear();
                }
                if text && std::str::from_utf8(out.get(a..).unwrap_or_default()).is_err() {
                    out.truncate(a);
                    return Err(close(write, CloseCode::Invalid, WsError::NotUtf8));
                }
                msgs.push((a, out.len()));
            }
        }
        Ok(Some(used))
    }

    /// A close frame of ours (going away), for a connection we end.
    pub fn close_frame(write: &mut Vec<u8>, code: u16) {
        frame_to(write, OpCode::Control(Control::Close), &code.to_be_bytes());
    }

    /// A ping of ours (keep-alive).
    pub fn ping_frame(write: &mut Vec<u8>) {
        frame_to(write, OpCode::Control(Control::Ping), b"");
    }
}

/// One SIP message as a WebSocket message: a single unmasked frame, text when the message
/// is UTF-8 (every SIP message without a binary body), else binary.
pub fn message_frame(write: &mut Vec<u8>, msg: &[u8]) {
    let op = if std::str::from_utf8(msg).is_ok() {
        Data::Text
    } else {
        Data::Binary
    };
    frame_to(write, OpCode::Data(op), msg);
}

fn frame_to(write: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, write);
    write.extend_from_slice(payload);
}

/// XORs `buf` (a payload from its first byte) with the 4-byte masking key, eight bytes at a
/// time: byte-wise it was the WebSocket layer's largest cost per message.
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn close(write: &mut Vec<u8>, code: CloseCode, e: WsError) -> WsError {
    WsConn::close_frame(write, code.into());
    e
}

fn refuse(write: &mut Vec<u8>, code: u16, reason: &'static str) -> WsError {
    let extra = match code {
        426 => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        405 => "Allow: GET\r\n",
        _ => "",
    };
    let body = format!("{code} {reason}\n");
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    write.extend_from_slice(head.as_bytes());
    write.extend_from_slice(body.as_bytes());
    WsError::Refused(code, reason)
}

/// The values of a request's headers named `name`, that are text.
fn header_values<'r>(
    req: &'r httparse::Request<'_, '_>,
    name: &'static str,
) -> impl Iterator<Item = &'r str> {
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// The Upgrade's checks (RFC 6455 §4.2.1, RFC 7118 §4): the Sec-WebSocket-Accept value, or
/// the HTTP status and reason to refuse with.
fn check_upgrade(
    req: &httparse::Request<'_, '_>,
    settings: &WsSettings,
) -> Result<String, (u16, &'static str)> {
    if req.method != Some("GET") {
        return Err((405, "Method Not Allowed"));
    }
    if req.version != Some(1) {
        return Err((400, "Bad Request: not HTTP/1.1"));
    }
    let header = |name: &'static str| header_values(req, name);
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return Err((426, "Upgrade Required"));
    }
    if !has_token("connection", "upgrade") {
        return Err((400, "Bad Request: no Connection: Upgrade"));
    }
    if header("host").next().is_none() {
        return Err((400, "Bad Request: no Host"));
    }
    if !header("sec-websocket-version").any(|v| v.trim() == "13") {
        return Err((426, "Upgrade Required"));
    }
    // 16 bytes in base64: 22 characters of the alphabet and "==".
    let key = header("sec-websocket-key")
        .next()
        .map(str::trim)
        .unwrap_or("");
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let ok_key = key.len() == 24 && key.ends_with("==") && key.bytes().take(22).all(b64);
    if !ok_key {
        return Err((400, "Bad Request: missing or bad Sec-WebSocket-Key"));
    }
    if !has_token("sec-websocket-protocol", "sip") {
        return Err((400, "Bad Request: no sip subprotocol"));
    }
    if !settings.allowed_origins.is_empty() {
        if let Some(origin) = header("origin").next() {
            let origin = origin.trim();
            if !settings
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
            {
                return Err((403, "Forbidden"));
            }
        }
    }
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

#[cfg(test)]
mod tests;
