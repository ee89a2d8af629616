//! Message capture: every SIP datagram ser receives or sends, written to rotating pcap files
//! (`capture_file`, `capture_max_size`, `capture_files`), as SER's operations guide asks ("record
//! all messages passing your site"), so that Wireshark, tshark or sngrep can show any call later.
//!
//! The shards call [`Capture::record`] for each datagram. It takes the wall-clock time, copies the
//! bytes into a bounded queue with `try_send` and returns: a shard never waits for the disk. One
//! writer thread drains the queue and writes classic pcap (LINKTYPE_ETHERNET, microsecond
//! timestamps) with a synthesized Ethernet (zero MACs), IPv4 or IPv6 and UDP header around each
//! datagram, so the file reads like a sniffer's capture of the same traffic. When the queue is
//! full (or would hold more than [`MAX_QUEUED_BYTES`]) the record is dropped and counted
//! ([`Capture::dropped`]), with at most one log line a second.
//!
//! Rotation: before a record would make the current file larger than `capture_max_size`, the file
//! is closed and renamed `file.1` (`file.1` to `file.2`, ...), keeping `capture_files` files in
//! all; the oldest is deleted. The one overshoot allowed: a file always takes at least one record,
//! so a file exceeds the limit only when it holds a single record that is larger by itself. A
//! capture left by the previous run is rotated away at start, not overwritten.
//!
//! Write errors (disk full, the directory removed) are logged (at most once a second) and counted
//! ([`Capture::write_errors`]); the file in hand is abandoned and the next record, a second
//! later at the earliest, starts a new one. Only a start-up failure (no such directory, no
//! permission) is fatal.
//!
//! Messages of TCP and TLS connections are written as one TCP segment each (decrypted; no
//! handshakes, no ACKs, sequence numbers running per direction), enough for tshark and sngrep
//! to show the SIP flow. It does not filter, does not write pcapng,
//! and does not follow a chroot (`-t`): the path is used as given after the privileges are
//! dropped, so its directory must be reachable and writable by the user ser runs as.

use portable_atomic::AtomicU64;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Records waiting for the writer, at most.
pub const QUEUE_RECORDS: usize = 16 * 1024;
/// Bytes of datagrams waiting for the writer, at most (the queue holds copies).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// The writer flushes at least this often while records arrive (and whenever it finds the
/// queue empty).
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The writer's poll of the queue when the last poll found records: 16k records per 5 ms is
/// room for ~3M datagrams a second.
const BUSY_POLL: Duration = Duration::from_millis(5);
/// The writer's poll of a queue that was empty (also the delay of `close`).
const IDLE_POLL: Duration = Duration::from_millis(50);
pub use crate::config::{parse_size, MIN_CAPTURE_FILE_SIZE as MIN_FILE_SIZE};

/// Bytes of the pcap file header.
pub const FILE_HEADER_LEN: u64 = 24;
/// Bytes a record adds around a datagram: pcap record header, Ethernet, IP, UDP.
pub fn record_overhead(v6: bool) -> u64 {
    16 + 14 + if v6 { 40 } else { 20 } + 8
}

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture_file {path}: directory {dir} does not exist")]
    NoDirectory { path: String, dir: String },
    #[error("capture_file {path}: {err}")]
    Io { path: String, err: std::io::Error },
}

/// The options: `capture_file`, `capture_max_size`, `capture_files`.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub path: PathBuf,
    /// Bytes one file may reach before rotation (see the module doc for the overshoot rule).
    pub max_size: u64,
    /// Files kept in all, the current one included (1 = no `.1`: the file is started afresh).
    pub files: usize,
}

impl CaptureConfig {
    /// The capture options of `cfg`; None when `capture_file` is not set.
    pub fn from_config(cfg: &crate::config::Config) -> Option<CaptureConfig> {
        let path = cfg.capture_file.as_ref()?;
        Some(CaptureConfig {
            path: PathBuf::from(path),
            max_size: cfg.capture_max_size,
            files: cfg.capture_files,
        })
    }
}

/// One datagram on its way to the writer.
struct Record {
    secs: u32,
    micros: u32,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    /// A message of a stream connection: written as one TCP segment (sequence numbers
    /// running per direction, so tshark and sngrep read the flow), else a UDP datagram.
    tcp: bool,
}

enum Msg {
    Record(Record),
    /// Write what came before, flush, and end.
    Close,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    queued_bytes: AtomicUsize,
    /// Second (Unix time) of the last "dropped" log line.
    drop_logged: AtomicU64,
}

struct Inner {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The capture handle the shards share; cloning is cheap. The writer ends on [`Capture::close`]
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Capture {
    /// Checks the directory, rotates a capture left by an earlier run, opens the file and starts
    /// the writer thread.
    pub fn start(cfg: CaptureConfig) -> Result<Capture, CaptureError> {
        let path_str = cfg.path.display().to_string();
        let dir = match cfg.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(CaptureError::NoDirectory {
                path: path_str,
                dir: dir.display().to_string(),
            });
        }
        let cfg = CaptureConfig {
            max_size: cfg.max_size.max(MIN_FILE_SIZE),
            files: cfg.files.max(1),
            ..cfg
        };
        let mut files = Files::new(cfg);
        let had_one = std::fs::metadata(&files.cfg.path).is_ok_and(|m| m.len() > 0);
        let opened = if had_one {
            files.rotate_and_open()
        } else {
            files.open()
        };
        opened.map_err(|err| CaptureError::Io {
            path: path_str,
            err,
        })?;
        let (tx, rx) = sync_channel(QUEUE_RECORDS);
        let counters = Arc::new(Counters::default());
        let c2 = Arc::clone(&counters);
        let handle = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || writer(rx, files, &c2))
            .map_err(|err| CaptureError::Io {
                path: String::from("writer thread"),
                err,
            })?;
        Ok(Capture {
            inner: Arc::new(Inner {
                tx,
                counters,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Queues one datagram `from` → `to`, timestamped now. Never blocks, never panics: when the
    /// writer is behind, the datagram is counted in [`Self::dropped`] and not captured.
    pub fn record(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        self.record_as(from, to, data, false);
    }

    /// Queues one SIP message of a TCP or TLS connection (decrypted), as a TCP segment.
    pub fn record_stream(&self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        self.record_as(from, to, data, true);
    }

    fn record_as(&self, from: SocketAddr, to: SocketAddr, data: &[u8], tcp: bool) {
        let c = &self.inner.counters;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let fits = data.len() + if tcp { 12 } else { 0 } <= max_payload(from, to)
            && c.queued_bytes.load(Ordering::Relaxed) + data.len() <= MAX_QUEUED_BYTES;
        if fits {
            c.queued_bytes.fetch_add(data.len(), Ordering::Relaxed);
            let rec = Record {
                secs: now.as_secs() as u32,
                micros: now.subsec_micros(),
                from,
                to,
                data: data.to_vec(),
                tcp,
            };
            match self.inner.tx.try_send(Msg::Record(rec)) {
                Ok(()) => return,
                Err(
                    TrySendError::Full(Msg::Record(r)) | TrySendError::Disconnected(Msg::Record(r)),
                ) => {
                    c.queued_bytes.fetch_sub(r.data.len(), Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        let n = c.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let sec = now.as_secs();
        let last = c.drop_logged.load(Ordering::Relaxed);
        if sec > last
            && c.drop_logged
                .compare_exchange(last, sec, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            crate::warn!(
                "capture: {n} message(s) not captured so far (writer behind, too large, or closed)"
            );
        }
    }

    /// Records written to the files so far.
    pub fn written(&self) -> u64 {
        self.inner.counters.written.load(Ordering::Relaxed)
    }

    /// Records not captured: queue full, too large, or lost to a write error.
    pub fn dropped(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes, creations and renames of capture files.
    pub fn write_errors(&self) -> u64 {
        self.inner.counters.write_errors.load(Ordering::Relaxed)
    }

    /// Writes what is queued, flushes and stops the writer; records after it are dropped.
    /// Idempotent; called by `main` on the way out, and by the last clone's drop.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Inner {
    fn close(&self) {
        let handle = match self.writer.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = handle {
            // A blocking send: at shutdown waiting for the writer is what we want.
            let _ = self.tx.send(Msg::Close);
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// The largest UDP payload the synthesized IP header can describe.
fn max_payload(from: SocketAddr, to: SocketAddr) -> usize {
    if from.is_ipv4() && to.is_ipv4() {
        65535 - 20 - 8
    } else {
        65535 - 8
    }
}

/// The writer thread. It polls the queue instead of sleeping in `recv`: a receiver blocked in
/// the channel makes every `try_send` on the shards a futex wake-up (a system call per captured
/// datagram, which doubled ser's system time per call at 500 calls/s), while a poll every few
/// milliseconds costs the shards nothing. It flushes when the queue is found empty (so a quiet
/// system's capture is on disk within [`IDLE_POLL`]) and at least once a second under load.
fn writer(rx: Receiver<Msg>, mut files: Files, c: &Counters) {
    crate::log::set_thread_name("capture");
    let mut buf = Vec::with_capacity(65536 + 128);
    let mut last_flush = Instant::now();
    let mut dirty = false;
    // Next TCP sequence number per direction of each captured stream (bounded: forgotten
    // when too many; a reader then sees a jump, not a wrong message).
    let mut seqs: std::collections::HashMap<(SocketAddr, SocketAddr), u32> =
        std::collections::HashMap::new();
    'run: loop {
        let mut got = 0usize;
        loop {
            match rx.try_recv() {
                Ok(Msg::Record(r)) => {
                    c.queued_bytes.fetch_sub(r.data.len(), Ordering::Relaxed);
                    buf.clear();
                    let seq = if r.tcp {
                        if seqs.len() >= 65_536 {
                            seqs.clear();
                        }
                        let next = seqs.entry((r.from, r.to)).or_insert(1);
                        let s = *next;
                        *next = next.wrapping_add(r.data.len() as u32);
                        s
                    } else {
                        0
                    };
                    encode_record(&mut buf, &r, seq);
                    match files.write(&buf) {
                        Ok(()) => {
                            c.written.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            c.dropped.fetch_add(1, Ordering::Relaxed);
                            files.failed(c, e);
                        }
                    }
                    got += 1;
                    dirty = true;
                    if got % 1024 == 0 && last_flush.elapsed() >= FLUSH_EVERY {
                        break;
                    }
                }
                Ok(Msg::Close) | Err(TryRecvError::Disconnected) => break 'run,
                Err(TryRecvError::Empty) => break,
            }
        }
        if dirty && (got == 0 || last_flush.elapsed() >= FLUSH_EVERY) {
            if let Err(e) = files.flush() {
                files.failed(c, e);
            }
            dirty = false;
            last_flush = Instant::now();
        }
        std::thread::sleep(if got == 0 { IDLE_POLL } else { BUSY_POLL });
    }
    if let Err(e) = files.flush() {
        files.failed(c, e);
    }
}

/// The current file and the rotation of the set.
struct Files {
    cfg: CaptureConfig,
    out: Option<BufWriter<File>>,
    /// Bytes in the current file, header included.
    size: u64,
    /// After an error, no new file before this.
    retry_at: Option<Instant>,
    /// The last error log line.
    error_logged: Option<Instant>,
}

impl Files {
    fn new(cfg: CaptureConfig) -> Self {
        Self {
            cfg,
            out: None,
            size: 0,
            retry_at: None,
            error_logged: None,
        }
    }

    /// `path.n` (n ≥ 1), or `path` itself for 0.
    fn numbered(&self, n: usize) -> PathBuf {
        if n == 0 {
            return self.cfg.path.clone();
        }
        let mut s = self.cfg.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// Creates the current file and writes the pcap file header.
    fn open(&mut self) -> std::io::Result<()> {
        let f = File::create(&self.cfg.path)?;
        let mut w = BufWriter::with_capacity(64 * 1024, f);
        w.write_all(&file_header())?;
        self.out = Some(w);
        self.size = FILE_HEADER_LEN;
        Ok(())
    }

    /// Closes the current file, shifts `path` → `path.1` → ... (the oldest falls off) and opens
    /// a new `path`.
    fn rotate_and_open(&mut self) -> std::io::Result<()> {
        if let Some(mut w) = self.out.take() {
            w.flush()?;
        }
        let keep = self.cfg.files;
        // Files beyond the set (left by a run with a larger capture_files) are not ours to
        // manage; the last of the set is deleted, the others move up by one.
        remove_if_exists(&self.numbered(keep - 1))?;
        for n in (0..keep - 1).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        self.open()
    }

    fn write(&mut self, rec: &[u8]) -> std::io::Result<()> {
        let len = rec.len() as u64;
        if self.out.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err(std::io::Error::other(
                    "capture file unavailable after an error",
                ));
            }
            self.retry_at = None;
            self.rotate_and_open()?;
        } else if self.size + len > self.cfg.max_size && self.size > FILE_HEADER_LEN {
            self.rotate_and_open()?;
        }
        let Some(w) = self.out.as_mut() else {
            return Err(std::io::Error::other("no capture file"));
        };
        w.write_all(rec)?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// After an error: count it, log it (once a second at most), abandon the file in hand and
    /// try a new one a second later.
    fn failed(&mut self, c: &Counters, e: std::io::Error) {
        let n = c.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        if self
            .error_logged
            .map_or(true, |t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.error_logged = Some(now);
            crate::error!(
                "capture: writing {}: {e} ({n} error(s) so far); capture resumes in a new file",
                self.cfg.path.display()
            );
        }
        if let Some(w) = self.out.take() {
            // Its buffer may be what failed: drop it without another write attempt.
            let (_f, _unwritten) = w.into_parts();
        }
        self.retry_at = Some(now + FLUSH_EVERY);
    }
}

fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The pcap file header: magic a1b2c3d4 (little-endian, microseconds), version 2.4, snaplen
/// 262144, LINKTYPE_ETHERNET.
fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone 0, sigfigs 0
    h[16..20].copy_from_slice(&262_144u32.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// Address pair in one family: IPv4 when both are, else IPv6 (an IPv4 one mapped).
fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// One pcap record: record header, Ethernet, IPv4/IPv6, UDP (or TCP with sequence number
/// `seq`), the message.
fn encode_record(out: &mut Vec<u8>, r: &Record, seq: u32) {
    let (proto, l4_head) = if r.tcp { (6u8, 20) } else { (17u8, 8) };
    let udp_len = l4_head + r.data.len();
    let is_v4 = matches!((r.from.ip(), r.to.ip()), (IpAddr::V4(_), IpAddr::V4(_)));
    let ip_len = if is_v4 { 20 } else { 40 };
    let frame = 14 + ip_len + udp_len;
    out.extend_from_slice(&r.secs.to_le_bytes());
    out.extend_from_slice(&r.micros.to_le_bytes());
    out.extend_from_slice(&(frame as u32).to_le_bytes());
    out.extend_from_slice(&(frame as u32).to_le_bytes());
    // Ethernet: zero MACs.
    out.extend_from_slice(&[0u8; 12]);
    let (sport, dport) = (r.from.port(), r.to.port());
    let mut sum: u32;
    match (r.from.ip(), r.to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64; // TTL
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let ck = fold(sum_words(0, &ip));
            ip[10..12].copy_from_slice(&(!ck).to_be_bytes());
            out.extend_from_slice(&ip);
            sum = sum_words(0, &s.octets());
            sum = sum_words(sum, &d.octets());
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(udp_len as u16).to_be_bytes());
            out.push(proto); // next header
            out.push(64); // hop limit
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            sum = sum_words(0, &s.octets());
            sum = sum_words(sum, &d.octets());
        }
    }
    // Checksum over the pseudo-header (addresses, protocol, length), header and data.
    sum += u32::from(proto) + udp_len as u32;
    if r.tcp {
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4; // header length: 5 words
        tcp[13] = 0x18; // PSH, ACK
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
        sum = sum_words(sum, &tcp);
        sum = sum_words(sum, &r.data);
        tcp[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        out.extend_from_slice(&tcp);
        out.extend_from_slice(&r.data);
        return;
    }
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    sum = sum_words(sum, &udp);
    sum = sum_words(sum, &r.data);
    let ck = match !fold(sum) {
        0 => 0xffff, // 0 means "no checksum" in UDP
        c => c,
    };
    udp[6..8].copy_from_slice(&ck.to_be_bytes());
    out.extend_from_slice(&udp);
    out.extend_from_slice(&r.data);
}

/// Adds big-endian 16-bit words (an odd last byte padded with zero) to a one's-complement sum.
fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut it = bytes.chunks_exact(2);
    for w in &mut it {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([w[0], w[1]])));
        // Fold early so a 64 KiB datagram cannot overflow.
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [b] = it.remainder() {
        sum = sum.wrapping_add(u32::from(*b) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("2000"), Some(2000));
        assert_eq!(parse_size(" 64k "), Some(64 << 10));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("10X"), None);
        assert_eq!(parse_size("-1k"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }

    /// RFC 1071's example words, and a checked IPv4 header (from RFC 1071 / Wikipedia's
    /// worked example: 45 00 00 73 00 00 40 00 40 11 .... c0 a8 00 01 c0 a8 00 c7 → b861).
    #[test]
    fn checksums() {
        let ip = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!fold(sum_words(0, &ip)), 0xb861);
        assert_eq!(
            fold(sum_words(
                0,
                &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
            )),
            0xddf2
        );
        assert_eq!(sum_words(0, &[0x12]), 0x1200);
    }

    /// A fresh folder, removed when the test ends.
    struct Temp(PathBuf);

    impl std::ops::Deref for Temp {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp(tag: &str) -> Temp {
        let d = std::env::temp_dir().join(format!("ser-capture-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Temp(d)
    }

    fn cfg(dir: &Path, max_size: u64, files: usize) -> CaptureConfig {
        CaptureConfig {
            path: dir.join("sip.pcap"),
            max_size,
            files,
        }
    }

    const A: &str = "127.0.0.1:5060";
    const B: &str = "127.0.0.1:5070";

    #[test]
    fn missing_directory_is_a_start_error() {
        let dir = temp("nodir").join("missing");
        let e = Capture::start(cfg(&dir, 1 << 20, 3)).expect_err("must fail");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn one_file_is_restarted_in_place() {
        let dir = temp("one");
        let c = Capture::start(cfg(&dir, MIN_FILE_SIZE, 1)).expect("start");
        let (a, b) = (A.parse().expect("addr"), B.parse().expect("addr"));
        for _ in 0..40 {
            c.record(a, b, &[b'x'; 200]);
        }
        c.close();
        assert_eq!(c.written(), 40);
        assert!(!dir.join("sip.pcap.1").exists());
        let len = std::fs::metadata(dir.join("sip.pcap")).expect("file").len();
        assert!(len <= MIN_FILE_SIZE && len > FILE_HEADER_LEN, "{len}");
        // After close, records are dropped, not queued for a writer that is gone.
        c.record(a, b, b"late");
        assert_eq!(c.dropped(), 1);
    }

    #[test]
    fn a_record_larger_than_the_limit_gets_a_file_of_its_own() {
        let dir = temp("big");
        let c = Capture::start(cfg(&dir, MIN_FILE_SIZE, 3)).expect("start");
        let (a, b) = (A.parse().expect("addr"), B.parse().expect("addr"));
        c.record(a, b, b"small");
        c.record(a, b, &[b'y'; 3000]);
        c.record(a, b, b"small again");
        c.close();
        let size = |n: &str| std::fs::metadata(dir.join(n)).map(|m| m.len()).unwrap_or(0);
        let big = FILE_HEADER_LEN + record_overhead(false) + 3000;
        assert_eq!(size("sip.pcap.1"), big);
        assert_eq!(
            size("sip.pcap.2"),
            FILE_HEADER_LEN + record_overhead(false) + 5
        );
        assert_eq!(
            size("sip.pcap"),
            FILE_HEADER_LEN + record_overhead(false) + 11
        );
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        let dir = temp("gone");
        let c = Capture::start(cfg(&dir, MIN_FILE_SIZE, 2)).expect("start");
        let (a, b) = (A.parse().expect("addr"), B.parse().expect("addr"));
        c.record(a, b, b"first");
        // The directory disappears: the next rotation cannot create its file.
        std::fs::remove_dir_all(&*dir).expect("remove dir");
        for _ in 0..20 {
            c.record(a, b, &[b'z'; 300]);
        }
        c.close();
        assert!(c.write_errors() > 0);
        assert!(c.dropped() > 0);
    }

    #[test]
    fn record_layout_v4_and_v6() {
        let r = Record {
            secs: 1,
            micros: 2,
            from: "127.0.0.1:5060".parse().expect("addr"),
            to: "127.0.0.2:5070".parse().expect("addr"),
            data: b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec(),
            tcp: false,
        };
        let mut v = Vec::new();
        encode_record(&mut v, &r, 0);
        assert_eq!(v.len() as u64, record_overhead(false) + r.data.len() as u64);
        // The IPv4 header sums to 0xffff with its checksum in.
        assert_eq!(fold(sum_words(0, &v[30..50])), 0xffff);
        let r6 = Record {
            from: "[::1]:5060".parse().expect("addr"),
            to: "[::1]:5070".parse().expect("addr"),
            ..r
        };
        v.clear();
        encode_record(&mut v, &r6, 0);
        assert_eq!(v.len() as u64, record_overhead(true) + r6.data.len() as u64);
        // The UDP checksum verifies: pseudo-header + UDP segment sums to 0xffff.
        let udp = &v[70..];
        let mut s = sum_words(0, &v[38..70]); // source and destination
        s += 17 + udp.len() as u32;
        s = sum_words(s, udp);
        assert_eq!(fold(s), 0xffff);

        // A stream message: one TCP segment whose checksum verifies too.
        let t = Record { tcp: true, ..r6 };
        v.clear();
        encode_record(&mut v, &t, 77);
        assert_eq!(
            v.len() as u64,
            record_overhead(true) + 12 + t.data.len() as u64
        );
        let seg = &v[70..];
        assert_eq!(&seg[4..8], &77u32.to_be_bytes());
        let mut s = sum_words(0, &v[38..70]);
        s += 6 + seg.len() as u32;
        s = sum_words(s, seg);
        assert_eq!(fold(s), 0xffff);
    }
}
