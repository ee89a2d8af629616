//! SER's FIFO server: management requests written into a named pipe (`fifo="/tmp/ser_fifo"`).
//!
//! A request is `:command:reply_file`, then the command's parameter lines, then an empty line
//! (`t_uac_from` reads header lines up to an empty line and a body up to a `.` line). The
//! reply — SER's status line (`200 ok`, `500 command 'x' not available`) and the command's
//! lines — is written to `reply_file`, taken relative to `/tmp` unless absolute, as the seeds
//! say: a pipe the client made (serctl's `ser_receiver_<pid>_<n>`) or a plain file. An empty
//! reply name means no reply.
//!
//! Robustness: the pipe is opened read-write, so clients coming and going never give an end
//! of file; a reader thread hands bytes to the parser thread, which drops a request left
//! half-written for [`PARTIAL_TIMEOUT`] and lines that start no request, so a broken client
//! disturbs nobody else. Lines and requests are bounded in size. Slow commands run on their
//! own threads (at most [`MAX_SLOW`]); a reply pipe nobody has opened yet is retried for
//! [`REPLY_OPEN_WAIT`] (clients write the request before they open their reply pipe), one nobody
//! reads is given up after [`REPLY_TIMEOUT`]; a reply given up is logged as an error.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::{not_available, Mgmt, Params, Reply};

/// A request whose lines stop coming for this long is dropped.
pub const PARTIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reply waits for its pipe to take it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Slow commands (t_uac_from) running at once.
pub const MAX_SLOW: usize = 64;
/// Longest line, and longest request.
const MAX_LINE: usize = 64 * 1024;
const MAX_REQUEST: usize = 1024 * 1024;

/// The running FIFO server; the pipe is removed when it is dropped.
pub struct FifoServer {
    path: PathBuf,
}

impl Drop for FifoServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates the pipe at `path` with permissions `mode` (a stale pipe there is replaced; any
/// other file is an error) and starts serving it.
pub fn start(path: &str, mode: u32, mgmt: Arc<Mgmt>) -> io::Result<FifoServer> {
    let p = PathBuf::from(path);
    match std::fs::symlink_metadata(&p) {
        Ok(md) if md.file_type().is_fifo() => std::fs::remove_file(&p)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{path} exists and is not a FIFO"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ser_shards::os::mkfifo(&p, mode)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    // Read-write: the pipe always has a writer (us), so reads block instead of ending.
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(256);
    std::thread::Builder::new()
        .name(String::from("ser-fifo-read"))
        .spawn(move || read_loop(pipe, tx))?;
    std::thread::Builder::new()
        .name(String::from("ser-fifo"))
        .spawn(move || serve(rx, mgmt))?;
    Ok(FifoServer { path: p })
}

fn read_loop(mut pipe: std::fs::File, tx: mpsc::SyncSender<Vec<u8>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                crate::error!("FIFO read failed: {e}; FIFO server stops");
                return;
            }
        }
    }
}

/// Where the parser is within a request.
enum State {
    Idle,
    /// Reading the parameters of `cmd`.
    Params {
        cmd: String,
        reply: String,
        style: Params,
        lines: Vec<String>,
        /// HeadersAndBody: 0 fixed lines, 1 headers, 2 body.
        part: u8,
        size: usize,
    },
}

/// The parser: bytes in, whole requests out. Separate from the threads so tests can drive it.
pub struct Parser {
    pending: Vec<u8>,
    state: State,
    last_data: Instant,
}

/// A complete request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub cmd: String,
    pub reply: String,
    pub params: Vec<String>,
}

impl Parser {
    pub fn new(now: Instant) -> Self {
        Self {
            pending: Vec::new(),
            state: State::Idle,
            last_data: now,
        }
    }

    /// Feeds bytes; returns the requests they completed. `style_of` says how a command takes
    /// its parameters (None: unknown command, parameters up to an empty line).
    pub fn feed(
        &mut self,
        now: Instant,
        bytes: &[u8],
        style_of: &dyn Fn(&str) -> Option<Params>,
    ) -> Vec<Request> {
        self.last_data = now;
        // Clients write each request in one write (atomic on a pipe up to PIPE_BUF), so a
        // read that starts with ':' while a request is unfinished is a new client's request:
        // whatever was half-written before it is dropped, not glued to it.
        if bytes.first() == Some(&b':') && !self.is_idle() {
            if let State::Params { cmd, .. } = &self.state {
                crate::notice!("FIFO: incomplete request ':{cmd}:' dropped");
            }
            self.pending.clear();
            self.state = State::Idle;
        }
        self.pending.extend_from_slice(bytes);
        let mut done = Vec::new();
        while let Some(nl) = memchr::memchr(b'\n', &self.pending) {
            let raw: Vec<u8> = self.pending.drain(..=nl).collect();
            let mut line = &raw[..raw.len() - 1];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.len() > MAX_LINE {
                crate::notice!(
                    "FIFO: line of {} bytes dropped with its request",
                    line.len()
                );
                self.state = State::Idle;
                continue;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(r) = self.line(line, style_of) {
                done.push(r);
            }
        }
        if self.pending.len() > MAX_LINE {
            crate::notice!("FIFO: over-long line dropped");
            self.pending.clear();
            self.state = State::Idle;
        }
        done
    }

    /// Drops a request whose lines stopped coming; true when one was dropped.
    pub fn expire(&mut self, now: Instant) -> bool {
        if now.duration_since(self.last_data) < PARTIAL_TIMEOUT {
            return false;
        }
        let dropped = match &self.state {
            State::Params { cmd, .. } => {
                crate::notice!("FIFO: incomplete request ':{cmd}:' dropped");
                true
            }
            State::Idle => false,
        };
        if dropped || !self.pending.is_empty() {
            self.pending.clear();
            self.state = State::Idle;
        }
        dropped
    }

    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && self.pending.is_empty()
    }

    fn line(&mut self, line: String, style_of: &dyn Fn(&str) -> Option<Params>) -> Option<Request> {
        match &mut self.state {
            State::Idle => {
                if line.is_empty() {
                    return None;
                }
                let Some(rest) = line.strip_prefix(':') else {
                    crate::notice!("FIFO: line outside a request ignored: {:.60}", line);
                    return None;
                };
                let Some((cmd, reply)) = rest.split_once(':') else {
                    crate::notice!("FIFO: malformed request line ignored: {:.60}", line);
                    return None;
                };
                let cmd = cmd.trim().to_string();
                let reply = reply.trim().to_string();
                let style = style_of(&cmd).unwrap_or(Params::Lines);
                self.state = State::Params {
                    cmd,
                    reply,
                    style,
                    lines: Vec::new(),
                    part: 0,
                    size: 0,
                };
                // A command with no fixed lines starts with its headers.
                if let State::Params {
                    style: Params::HeadersAndBody { fixed: 0 },
                    part,
                    ..
                } = &mut self.state
                {
                    *part = 1;
                }
                None
            }
            State::Params {
                style,
                lines,
                part,
                size,
                ..
            } => {
                *size += line.len() + 1;
                if *size > MAX_REQUEST {
                    crate::notice!("FIFO: request over {MAX_REQUEST} bytes dropped");
                    self.state = State::Idle;
                    return None;
                }
                let end = match *style {
                    Params::Lines => {
                        if line.is_empty() {
                            true
                        } else {
                            lines.push(line);
                            false
                        }
                    }
                    Params::HeadersAndBody { fixed } => match *part {
                        0 => {
                            if line.is_empty() {
                                // Too few fixed lines: hand over what came; the command says
                                // what is missing.
                                true
                            } else {
                                lines.push(line);
                                if lines.len() >= fixed {
                                    *part = 1;
                                }
                                false
                            }
                        }
                        1 => {
                            if line.is_empty() {
                                *part = 2;
                            }
                            lines.push(line);
                            false
                        }
                        _ => {
                            if line == "." {
                                true
                            } else {
                                lines.push(line);
                                false
                            }
                        }
                    },
                };
                if !end {
                    return None;
                }
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::Params {
                        cmd, reply, lines, ..
                    } => Some(Request {
                        cmd,
                        reply,
                        params: lines,
                    }),
                    State::Idle => None,
                }
            }
        }
    }
}

fn serve(rx: mpsc::Receiver<Vec<u8>>, mgmt: Arc<Mgmt>) {
    let slow_running = Arc::new(AtomicUsize::new(0));
    let mut parser = Parser::new(Instant::now());
    loop {
        let got = if parser.is_idle() {
            rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(PARTIAL_TIMEOUT)
        };
        let now = Instant::now();
        let bytes = match got {
            Ok(b) => b,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                parser.expire(now);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let style_of = |c: &str| mgmt.command(c).map(|c| c.params);
        for req in parser.feed(now, &bytes, &style_of) {
            crate::info!("FIFO: :{}:{}", req.cmd, req.reply);
            match mgmt.command(&req.cmd).copied() {
                Some(c) if c.slow => {
                    if slow_running.load(Ordering::Relaxed) >= MAX_SLOW {
                        write_reply(&req.reply, &Reply::error(503, "too many commands running"));
                        continue;
                    }
                    slow_running.fetch_add(1, Ordering::Relaxed);
                    let m = Arc::clone(&mgmt);
                    let running = Arc::clone(&slow_running);
                    let spawned = std::thread::Builder::new()
                        .name(String::from("ser-fifo-cmd"))
                        .spawn(move || {
                            let r = (c.run)(&m, &req.params);
                            write_reply(&req.reply, &r);
                            running.fetch_sub(1, Ordering::Relaxed);
                        });
                    if spawned.is_err() {
                        slow_running.fetch_sub(1, Ordering::Relaxed);
                        crate::error!("FIFO: cannot start a thread for a slow command");
                    }
                }
                Some(c) => {
                    let r = (c.run)(&mgmt, &req.params);
                    write_reply(&req.reply, &r);
                }
                None => write_reply(&req.reply, &not_available(&req.cmd)),
            }
        }
    }
}

/// The reply file's path: relative names are under /tmp, as in SER.
pub fn reply_path(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new("/tmp").join(p)
    }
}

/// Writes `r` to the client's reply pipe or file; never blocks for long.
fn write_reply(name: &str, r: &Reply) {
    if name.is_empty() {
        return;
    }
    let path = reply_path(name);
    if let Err(e) = write_to(&path, r.to_fifo().as_bytes()) {
        crate::error!("FIFO: the reply to {} is lost: {e}", path.display());
    }
}

/// How long a reply waits for its client to open the reply pipe for reading: clients write the
/// request first and open the reply pipe after (SER's own tools do), so a quick command is
/// answered before anyone reads. SER retried the open too.
pub const REPLY_OPEN_WAIT: Duration = Duration::from_secs(1);

/// Opens the client's reply pipe for writing without blocking, retrying while nobody has it
/// open for reading yet (ENXIO), for up to [`REPLY_OPEN_WAIT`].
fn open_reply_pipe(path: &Path) -> io::Result<std::fs::File> {
    let deadline = Instant::now() + REPLY_OPEN_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        // Non-blocking: a pipe nobody reads fails at once (ENXIO) instead of hanging the FIFO
        // server.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no reader opened the reply pipe within {} ms",
                        REPLY_OPEN_WAIT.as_millis()
                    ),
                ))
            }
            other => return other,
        }
    }
}

fn write_to(path: &Path, data: &[u8]) -> io::Result<()> {
    let is_fifo = std::fs::metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut f = if is_fifo {
        open_reply_pipe(path)?
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?
    };
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut rest = data;
    while !rest.is_empty() {
        match f.write(rest) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the reader does not take the reply",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(c: &str) -> Option<Params> {
        match c {
            "t_uac_from" => Some(Params::HeadersAndBody { fixed: 3 }),
            "uptime" | "print" => Some(Params::Lines),
            _ => None,
        }
    }

    #[test]
    fn requests_split_across_reads_and_garbage_between() {
        let t = Instant::now();
        let mut p = Parser::new(t);
        assert!(p.feed(t, b"junk line\n:upt", &style).is_empty());
        let r = p.feed(t, b"ime:ser_receiver_1\n\n:print:x\na\nb\n\n", &style);
        assert_eq!(
            r,
            vec![
                Request {
                    cmd: "uptime".into(),
                    reply: "ser_receiver_1".into(),
                    params: vec![]
                },
                Request {
                    cmd: "print".into(),
                    reply: "x".into(),
                    params: vec!["a".into(), "b".into()]
                }
            ]
        );
        assert!(p.is_idle());
    }

    #[test]
    fn t_uac_from_reads_headers_then_body_to_a_dot() {
        let t = Instant::now();
        let mut p = Parser::new(t);
        let req =
            b":t_uac_from:hh\r\nNOTIFY\r\nsip:originator@foo.bar\r\nsip:receiver@127.0.0.1\r\n\
foo: bar_special_header\r\nx: y\r\n\r\nHello world!!!!\r\n\r\nsecond\r\n.\r\n";
        let r = p.feed(t, req, &style);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].params,
            vec![
                "NOTIFY",
                "sip:originator@foo.bar",
                "sip:receiver@127.0.0.1",
                "foo: bar_special_header",
                "x: y",
                "",
                "Hello world!!!!",
                "",
                "second"
            ]
        );
    }

    #[test]
    fn half_written_request_expires_and_the_next_one_is_served() {
        let t = Instant::now();
        let mut p = Parser::new(t);
        assert!(p.feed(t, b":print:a\nhalf", &style).is_empty());
        assert!(!p.expire(t + Duration::from_millis(100)));
        assert!(p.expire(t + PARTIAL_TIMEOUT + Duration::from_millis(1)));
        let later = t + PARTIAL_TIMEOUT * 2;
        let r = p.feed(later, b":uptime:b\n\n", &style);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].cmd, "uptime");
    }

    #[test]
    fn a_new_request_after_a_half_written_one_is_not_glued_to_it() {
        let t = Instant::now();
        let mut p = Parser::new(t);
        assert!(p.feed(t, b":print:a\nhalf line", &style).is_empty());
        let r = p.feed(t, b":uptime:b\n\n", &style);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].cmd, "uptime");
        assert!(p.is_idle());
    }

    #[test]
    fn reply_names_are_relative_to_tmp() {
        assert_eq!(
            reply_path("ser_receiver_7"),
            PathBuf::from("/tmp/ser_receiver_7")
        );
        assert_eq!(reply_path("/var/run/x"), PathBuf::from("/var/run/x"));
    }
}
