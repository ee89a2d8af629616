//! The HTTP management listener (`metrics_listen = "127.0.0.1:9090"`): `GET /metrics` is the
//! Prometheus exposition of [`crate::metrics`], `GET /api/<command>?arg=a&arg=b` runs a
//! management command through an [`ApiHandler`] and answers JSON, `GET /` is a short index.
//!
//! Why a small std server and not an HTTP crate: the listener answers three kinds of GET to
//! scrapers and scripts on a management address, one request per connection, no bodies, no
//! keep-alive, no TLS. That is a hundred lines over `TcpListener`, with the limits written
//! down here (head size, a whole-request deadline, a connection cap), and nothing that can
//! reach the shards: it runs on its own thread and reads the shards' atomic counters only.
//!
//! Hostile clients: a request head is limited to [`MAX_HEAD`] bytes and must arrive within
//! [`REQUEST_DEADLINE`] in all (a slow or half-open client is dropped then, whatever it sends);
//! each connection has its own short-lived thread and at most [`MAX_CONNECTIONS`] run at once
//! (more are refused at once), so one stuck client never delays a scrape. Nothing here panics
//! on input; a panicking command handler becomes a 500.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::metrics::{Exporter, CONTENT_TYPE};
use crate::stats::{StatsSnapshot, REPLY_CLASSES, SL_CODES};
use crate::VERSION;

/// Largest request head (request line and headers) we read.
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its whole request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are refused with 503.
pub const MAX_CONNECTIONS: usize = 16;

/// A management command's answer (SER's FIFO reply: a SIP-like code and reason, and a body).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiReply {
    pub code: u16,
    pub reason: String,
    pub body: serde_json::Value,
}

impl ApiReply {
    pub fn ok(body: serde_json::Value) -> ApiReply {
        ApiReply {
            code: 200,
            reason: "OK".to_string(),
            body,
        }
    }

    pub fn error(code: u16, reason: impl Into<String>) -> ApiReply {
        ApiReply {
            code,
            reason: reason.into(),
            body: serde_json::Value::Null,
        }
    }

    /// What a handler answers for a command it does not know (as SER's FIFO did).
    pub fn not_available(command: &str) -> ApiReply {
        Self::error(500, format!("command '{command}' not available"))
    }

    /// The HTTP status for this reply: 200 for 2xx, 404 for an unknown command, else 400.
    pub fn http_status(&self) -> u16 {
        if (200..300).contains(&self.code) {
            200
        } else if self.code == 500 && self.reason.ends_with("' not available") {
            404
        } else {
            400
        }
    }
}

/// Runs management command `name` with its arguments, in order.
pub type ApiHandler = Arc<dyn Fn(&str, &[String]) -> ApiReply + Send + Sync>;

/// The running listener (its thread lives as long as the process).
#[derive(Debug)]
pub struct MgmtHttp {
    addr: SocketAddr,
}

impl MgmtHttp {
    /// Binds `addr` and serves it from a thread of its own.
    pub fn start(addr: SocketAddr, exporter: Exporter, api: ApiHandler) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            exporter,
            api,
            active: AtomicUsize::new(0),
        });
        std::thread::Builder::new()
            .name("mgmt-http".to_string())
            .spawn(move || accept_loop(&listener, &shared))?;
        Ok(MgmtHttp { addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

struct Shared {
    exporter: Exporter,
    api: ApiHandler,
    active: AtomicUsize,
}

/// Gives a connection slot back when its thread ends, however it ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                crate::debug!("metrics listener: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::Relaxed);
            refuse(stream);
            continue;
        }
        let slot = Slot(Arc::clone(shared));
        let spawned = std::thread::Builder::new()
            .name("mgmt-http-conn".to_string())
            .spawn(move || {
                let slot = slot;
                serve(stream, &slot.0);
            });
        if let Err(e) = spawned {
            crate::notice!("metrics listener: cannot start a thread: {e}");
        }
    }
}

/// 503 to a client past the connection limit. What it sent is read first (briefly: this
/// runs on the accept thread), so the close does not turn into a reset that loses the 503.
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 2048];
    if let Ok(n) = stream.read(&mut sink) {
        if n == sink.len() {
            let _ = stream.read(&mut sink);
        }
    }
    let _ = stream.write_all(&response(503, "text/plain", b"busy\n", false));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// A parsed request head: what we need of it.
struct Request {
    method: String,
    target: String,
    /// Sent by a web browser on behalf of a page of another site (an `Origin` header, or
    /// `Sec-Fetch-Site` other than `same-origin` and `none`): an `<img>` or a form on any page
    /// the operator opens could otherwise run commands here (`rl.set_pipe 0 TAILDROP 0`,
    /// `reload`, ...), as a GET needs no CORS preflight.
    cross_site: bool,
}

enum HeadError {
    /// Nothing (or not a whole head) before EOF or the deadline: close without a word.
    Incomplete,
    TooLarge,
    Bad,
}

fn read_head(stream: &mut TcpStream) -> Result<Request, HeadError> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(p) = find_head_end(&buf) {
            break p;
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(HeadError::Incomplete);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Incomplete),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Incomplete),
        }
    };
    let head = buf.get(..end).unwrap_or_default();
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = std::str::from_utf8(head.get(..line_end).unwrap_or_default())
        .map_err(|_| HeadError::Bad)?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad);
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(HeadError::Bad);
    }
    let cross_site = head
        .get(line_end..)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let l = std::str::from_utf8(l).ok()?;
            let (name, value) = l.split_once(':')?;
            Some((name.trim(), value.trim()))
        })
        .any(|(name, value)| {
            name.eq_ignore_ascii_case("origin")
                || (name.eq_ignore_ascii_case("sec-fetch-site")
                    && !value.eq_ignore_ascii_case("same-origin")
                    && !value.eq_ignore_ascii_case("none"))
        });
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        cross_site,
    })
}

/// Index just past the blank line that ends a head (CRLF CRLF, or bare LF LF).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| memchr::memmem::find(buf, b"\n\n").map(|p| p + 2))
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_write_timeout(Some(REQUEST_DEADLINE));
    let resp = match read_head(&mut stream) {
        Ok(req) => route(&req, shared),
        Err(HeadError::Incomplete) => return,
        Err(HeadError::TooLarge) => response(431, "text/plain", b"request too large\n", false),
        Err(HeadError::Bad) => response(400, "text/plain", b"bad request\n", false),
    };
    let _ = stream.write_all(&resp);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

const INDEX: &str = "ser management listener\n\
/metrics            Prometheus metrics (text format 0.0.4)\n\
/api/<command>      a management command, JSON reply; arguments as ?arg=a&arg=b (in order)\n\
                    e.g. /api/version /api/uptime /api/t_stats /api/sl_stats\n";

fn route(req: &Request, shared: &Shared) -> Vec<u8> {
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return response(405, "text/plain", b"only GET\n", false);
    }
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target.as_str(), ""),
    };
    if path == "/" {
        return response(200, "text/plain", INDEX.as_bytes(), head_only);
    }
    if path == "/metrics" {
        let text = shared.exporter.render();
        return response(200, CONTENT_TYPE, text.as_bytes(), head_only);
    }
    let Some(cmd) = path.strip_prefix("/api/") else {
        return response(404, "text/plain", b"not found\n", head_only);
    };
    if req.cross_site {
        return response(
            403,
            "text/plain",
            b"management commands are not for other sites' web pages\n",
            head_only,
        );
    }
    let cmd = percent_decode(cmd);
    let reply = if cmd.is_empty()
        || cmd.len() > 64
        || !cmd
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        ApiReply::error(400, "bad command name")
    } else {
        let args: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .filter(|(k, _)| *k == "arg")
            .map(|(_, v)| percent_decode(v))
            .collect();
        let api = &shared.api;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| api(&cmd, &args)))
            .unwrap_or_else(|_| ApiReply::error(500, "command failed"))
    };
    let body = json!({"code": reply.code, "reason": reply.reason, "body": reply.body});
    let mut text = body.to_string();
    text.push('\n');
    response(
        reply.http_status(),
        "application/json",
        text.as_bytes(),
        head_only,
    )
}

/// `%XX` and `+` (a space, in a query) decoded; invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|d| (*d as char).to_digit(16));
        match c {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(c),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The commands the listener answers on its own until the FIFO's commands are plugged in:
/// `version`, `uptime`, `t_stats`, `sl_stats` (totals over the shards, numeric fields).
pub fn basic_commands(exporter: Exporter) -> ApiHandler {
    Arc::new(move |cmd: &str, _args: &[String]| match cmd {
        "version" => ApiReply::ok(json!({
            "version": VERSION,
            "server": crate::server_name(),
        })),
        "uptime" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ApiReply::ok(json!({
                "now": now,
                "up_since": exporter.started_unix(),
                "uptime": exporter.uptime().as_secs(),
            }))
        }
        "t_stats" => ApiReply::ok(t_stats_json(&StatsSnapshot::sum(&exporter.snapshots()))),
        "sl_stats" => ApiReply::ok(sl_stats_json(&StatsSnapshot::sum(&exporter.snapshots()))),
        _ => ApiReply::not_available(cmd),
    })
}

/// Every command of the management registry as JSON: the statistics commands as objects of
/// numbers, the others as their reply lines (`{"code", "reason", "body": [lines]}`).
pub fn mgmt_commands(mgmt: Arc<crate::mgmt::Mgmt>, exporter: Exporter) -> ApiHandler {
    let basic = basic_commands(exporter);
    Arc::new(move |cmd: &str, args: &[String]| match cmd {
        "version" | "uptime" | "sl_stats" => basic(cmd, args),
        "t_stats" => {
            let mut r = basic(cmd, args);
            if let serde_json::Value::Object(m) = &mut r.body {
                let replied = m.remove("local").unwrap_or_default();
                m.insert("replied_locally".into(), replied);
                m.insert(
                    "local".into(),
                    mgmt.uac_started.load(Ordering::Relaxed).into(),
                );
            }
            r
        }
        _ if mgmt.command(cmd).is_none() => ApiReply::not_available(cmd),
        _ => {
            let r = mgmt.call(cmd, args);
            ApiReply {
                code: r.code,
                reason: r.reason,
                body: serde_json::Value::from(r.body),
            }
        }
    })
}

/// tm's figures as SER's `t_stats` gave them, as JSON numbers.
pub fn t_stats_json(t: &StatsSnapshot) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("current".into(), t.tm_current.into());
    m.insert("waiting".into(), t.tm_waiting.into());
    m.insert("total".into(), t.tm_total.into());
    m.insert("local".into(), t.tm_local_replies.into());
    m.insert("refused".into(), t.tm_refused.into());
    for (class, n) in REPLY_CLASSES[1..].iter().zip(&t.tm_completed) {
        m.insert(format!("completed_{class}"), (*n).into());
    }
    serde_json::Value::Object(m)
}

/// Stateless replies by code (SER's `sl_stats` list), as JSON numbers.
pub fn sl_stats_json(t: &StatsSnapshot) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = SL_CODES
        .iter()
        .zip(&t.sl_by_code)
        .map(|(c, n)| ((*c).to_string(), (*n).into()))
        .collect();
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_and_status() {
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
        assert_eq!(ApiReply::ok(json!({})).http_status(), 200);
        assert_eq!(ApiReply::not_available("x").http_status(), 404);
        assert_eq!(ApiReply::error(400, "bad").http_status(), 400);
        assert_eq!(ApiReply::error(500, "db down").http_status(), 400);
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\n"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n"), None);
    }
}
