//! The client side of ser's FIFO server, for the tools beside ser (serctl, serweb): a reply
//! pipe of the tool's own under /tmp, one request written in a single write
//! (`:cmd:reply_pipe`, parameter lines, an end), the reply read until the server closes its
//! end. Blocking. The server side is [`crate::mgmt::fifo`].

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes a request may have to be written at once: writes up to PIPE_BUF are atomic on a
/// pipe, so requests of several clients never interleave.
pub const ATOMIC_REQUEST: usize = 4096;

/// A FIFO reply: SER's status line (`200 ok`), its code and the body.
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

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The FIFO is not there or nobody reads it (ser down): the OS error.
    Unreachable(String),
    /// No reply within the wait.
    NoReply(Duration),
    /// Anything else (the reply pipe, a parameter with a line break, a request too large).
    Other(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unreachable(e) => write!(f, "ser is not reachable through its FIFO ({e})"),
            Error::NoReply(w) => write!(f, "no reply from ser within {w:?}"),
            Error::Other(e) => f.write_str(e),
        }
    }
}

/// Removes the reply pipe however the request ends.
struct ReplyPipe(PathBuf);

impl Drop for ReplyPipe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A reply pipe of our own under /tmp, `<prefix>_<pid>_<n>`: (its name, its path). A name
/// already taken (another client's, perhaps one with our pid in another PID namespace) is
/// left alone and another tried.
fn make_reply_pipe(prefix: &str) -> io::Result<(String, PathBuf)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..16 {
        let n: u64 = rand::random();
        let name = format!("{prefix}_{}_{n:x}", std::process::id());
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

/// `200 ok\nbody...` → [`Reply`] (a status line without a code is a 500).
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

/// What a request is.
pub struct Request<'a> {
    /// The command (`ul_show_contact`).
    pub cmd: &'a str,
    /// Its parameter lines (none may hold a line break).
    pub lines: &'a [String],
    /// What ends it (see [`request_text`]).
    pub end: &'a str,
    /// The reply pipe's name prefix (`ser_receiver` for serctl, as SER's).
    pub prefix: &'a str,
    /// How long to wait for the reply.
    pub wait: Duration,
    /// The largest request accepted (`None`: any; [`ATOMIC_REQUEST`] keeps it one atomic
    /// write).
    pub max_len: Option<usize>,
}

/// Runs `req` on the ser listening on `fifo`.
pub fn call(fifo: &Path, req: &Request<'_>) -> Result<Reply, Error> {
    if req.lines.iter().any(|l| l.contains(['\n', '\r'])) {
        return Err(Error::Other(String::from("a parameter holds a line break")));
    }
    let (name, reply_path) = make_reply_pipe(req.prefix)
        .map_err(|e| Error::Other(format!("cannot make a reply pipe under /tmp: {e}")))?;
    let _guard = ReplyPipe(reply_path.clone());
    let text = request_text(req.cmd, &name, req.lines, req.end);
    if let Some(max) = req.max_len.filter(|m| text.len() > *m) {
        return Err(Error::Other(format!("request over {max} bytes")));
    }
    // Our end first (non-blocking: no writer yet), so the server's open never fails.
    let mut reply = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&reply_path)
        .map_err(|e| Error::Other(format!("cannot open {}: {e}", reply_path.display())))?;
    // Non-blocking open: a FIFO nobody reads (ser down) fails at once with ENXIO.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    // One write: requests of several clients must not interleave (atomic up to PIPE_BUF).
    f.write_all(text.as_bytes())
        .map_err(|e| Error::Other(format!("cannot write to {}: {e}", fifo.display())))?;
    drop(f);
    let deadline = Instant::now() + req.wait;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reply.read(&mut buf) {
            // No writer: before the server opened the pipe, or after it closed it.
            Ok(0) if !data.is_empty() => break,
            Ok(0) => {}
            Ok(n) => {
                data.extend_from_slice(buf.get(..n).unwrap_or_default());
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Other(format!("reading the reply: {e}"))),
        }
        if Instant::now() > deadline {
            return Err(Error::NoReply(req.wait));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(parse_reply(&String::from_utf8_lossy(&data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_read_as_the_server_writes_them() {
        let lines = vec![String::from("location"), String::from("alice")];
        assert_eq!(
            request_text("ul_show_contact", "r_1", &lines, "\n"),
            ":ul_show_contact:r_1\nlocation\nalice\n\n"
        );
        let r = parse_reply("200 ok\n<sip:a@b>;q=1.00\n");
        assert!(r.is_ok());
        assert_eq!((r.code, r.body.as_str()), (200, "<sip:a@b>;q=1.00\n"));
        let r = parse_reply("404 Username bob in table location not found\n");
        assert_eq!(r.code, 404);
        assert!(!r.is_ok());
        assert_eq!(parse_reply("oops").code, 500);
    }

    #[test]
    fn nobody_reading_the_fifo_is_unreachable_at_once() {
        let fifo = std::env::temp_dir().join(format!("ctl_fifo_test_{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        ser_shards::os::mkfifo(&fifo, 0o600).expect("mkfifo");
        let req = Request {
            cmd: "version",
            lines: &[],
            end: "\n",
            prefix: "ctl_fifo_test_receiver",
            wait: Duration::from_secs(5),
            max_len: Some(ATOMIC_REQUEST),
        };
        let r = call(&fifo, &req);
        let _ = std::fs::remove_file(&fifo);
        assert!(matches!(r, Err(Error::Unreachable(_))), "{r:?}");
    }
}
