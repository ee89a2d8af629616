//! The running ser's FIFO, as serctl talks to it: a reply pipe of our own under /tmp, one
//! request written in a single write (`:cmd:reply_pipe`, parameter lines, an empty line), the
//! reply read until the server closes its end. Blocking: callers run it on tokio's blocking
//! pool. Also the parsers of the replies serweb shows (`ul_show_contact`).
//!
//! The same protocol as src/bin/serctl.rs, written again here rather than moved into ser's
//! library: serctl is a binary of its own, and this client adds a bound on the request size
//! (one write up to PIPE_BUF keeps requests of several clients from interleaving) that the
//! web form needs and serctl does not.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes one request may have: writes up to PIPE_BUF are atomic on a pipe.
pub const MAX_REQUEST: usize = 4096;

/// A FIFO reply: SER's status line (`200 ok`) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: String,
    pub body: String,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Removes the reply pipe however the request ends.
struct ReplyPipe(PathBuf);

impl Drop for ReplyPipe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn make_reply_pipe() -> io::Result<(String, PathBuf)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..16 {
        let n: u64 = rand::random();
        let name = format!("serweb_receiver_{}_{n:x}", std::process::id());
        let path = PathBuf::from("/tmp").join(&name);
        match ser_shards::os::mkfifo(&path, 0o600) {
            Ok(()) => return Ok((name, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The request text: `:cmd:reply\n`, `lines` each ended by `\n`, and `end` (`"\n"` for
/// commands that read lines up to an empty one; t_uac_from ends its body with `.\n`).
pub fn request_text(cmd: &str, reply: &str, lines: &[String], end: &str) -> String {
    let mut req = format!(":{cmd}:{reply}\n");
    for l in lines {
        req.push_str(l);
        req.push('\n');
    }
    req.push_str(end);
    req
}

/// Runs `cmd` on the ser listening on `fifo`. `end` as in [`request_text`]. Err: the FIFO
/// is not there, nobody reads it (ser down), the request is too large, or no reply came
/// within `wait`.
pub fn call(
    fifo: &Path,
    cmd: &str,
    lines: &[String],
    end: &str,
    wait: Duration,
) -> Result<Reply, String> {
    if lines.iter().any(|l| l.contains(['\n', '\r'])) {
        return Err(String::from("a parameter holds a line break"));
    }
    let (name, reply_path) = make_reply_pipe().map_err(|e| format!("reply pipe: {e}"))?;
    let _guard = ReplyPipe(reply_path.clone());
    let req = request_text(cmd, &name, lines, end);
    if req.len() > MAX_REQUEST {
        return Err(format!("request over {MAX_REQUEST} bytes"));
    }
    // Our end first (non-blocking: no writer yet), so the server's open never fails.
    let mut reply = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&reply_path)
        .map_err(|e| format!("cannot open {}: {e}", reply_path.display()))?;
    // Non-blocking open: a FIFO nobody reads (ser down) fails at once with ENXIO.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| format!("ser is not reachable through {} ({e})", fifo.display()))?;
    f.write_all(req.as_bytes())
        .map_err(|e| format!("cannot write to {}: {e}", fifo.display()))?;
    drop(f);
    let deadline = Instant::now() + wait;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reply.read(&mut buf) {
            Ok(0) if !data.is_empty() => break,
            Ok(0) => {}
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the reply: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!("no reply from ser within {wait:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(parse_reply(&String::from_utf8_lossy(&data)))
}

/// `200 ok\nbody...` → [`Reply`].
pub fn parse_reply(text: &str) -> Reply {
    let (status, body) = text.split_once('\n').unwrap_or((text, ""));
    let code = status
        .split_whitespace()
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(500);
    Reply {
        code,
        status: status.to_string(),
        body: body.to_string(),
    }
}

/// One live contact, as `ul_show_contact` prints it: `<uri>;q=1.00;expires=3600`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub uri: String,
    pub q: String,
    /// Seconds left.
    pub expires: u64,
    /// From the URI's `;transport=` (UDP when none; TLS for sips).
    pub transport: String,
    /// From the database's `location` row, where usrloc writes one (db_mode 1 or 2).
    pub user_agent: String,
}

/// The contacts of a `ul_show_contact` reply body.
pub fn parse_contacts(body: &str) -> Vec<Contact> {
    body.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix('<')?;
            let (uri, params) = rest.split_once('>')?;
            let mut q = String::from("1.00");
            let mut expires = 0;
            for p in params.split(';') {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.to_string();
                } else if let Some(v) = p.strip_prefix("expires=") {
                    expires = v.parse().unwrap_or(0);
                }
            }
            Some(Contact {
                uri: uri.to_string(),
                q,
                expires,
                transport: transport_of(uri),
                user_agent: String::new(),
            })
        })
        .collect()
}

/// The transport a contact URI names: `;transport=` (upper-cased), TLS for `sips:`, else UDP.
pub fn transport_of(uri: &str) -> String {
    let lower = uri.to_ascii_lowercase();
    if let Some(i) = lower.find(";transport=") {
        let v = &lower[i + ";transport=".len()..];
        let end = v.find([';', '?', '>']).unwrap_or(v.len());
        return v[..end].to_ascii_uppercase();
    }
    if lower.starts_with("sips:") {
        String::from("TLS")
    } else {
        String::from("UDP")
    }
}

/// A body for `t_uac_from`: its lines, with a line that is a single `.` (which would end the
/// body early) written as `..`; line breaks of any kind split lines.
pub fn body_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .map(|l| {
            if l == "." {
                String::from("..")
            } else {
                l.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_of_ul_show_contact() {
        let c = parse_contacts(
            "<sip:bob@127.0.0.1:5062;transport=tcp>;q=0.50;expires=3590\n\
             <sips:bob@10.0.0.1>;q=1.00;expires=10\n<sip:x@y>;q=1.00;expires=5\n",
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].uri, "sip:bob@127.0.0.1:5062;transport=tcp");
        assert_eq!((c[0].q.as_str(), c[0].expires), ("0.50", 3590));
        assert_eq!(c[0].transport, "TCP");
        assert_eq!(c[1].transport, "TLS");
        assert_eq!(c[2].transport, "UDP");
    }

    #[test]
    fn requests_and_replies() {
        let lines = vec![String::from("location"), String::from("bob")];
        assert_eq!(
            request_text("ul_show_contact", "r1", &lines, "\n"),
            ":ul_show_contact:r1\nlocation\nbob\n\n"
        );
        let r = parse_reply("404 Username bob in table location not found\n");
        assert_eq!(r.code, 404);
        assert!(!r.is_ok());
        assert_eq!(parse_reply("200 ok\na\n").body, "a\n");
        assert_eq!(body_lines("hi\n.\nthere"), ["hi", "..", "there"]);
    }
}
