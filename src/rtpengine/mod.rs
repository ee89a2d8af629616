//! The rtpengine client: rtpengine's ng control protocol (bencoded dictionaries over UDP, each
//! datagram `cookie SP bencode`) to one or more media relay daemons, with time-outs,
//! retransmissions and fail-over, on a thread of its own that serves every shard.
//!
//! A shard never waits for a daemon. It hands a command (a [`Value`] dictionary), the call's
//! Call-ID and a completion callback to [`Rtpengine::request`], which only queues it; the
//! service thread sends it, retransmits it every `rtpengine_tout_ms` up to `rtpengine_retr`
//! sends, and calls the callback with the daemon's reply dictionary or an error (the module's
//! callback posts the result back to the shard, where the paused script resumes). One
//! connected UDP socket per daemon, each with a small thread blocked in `recv` that passes the
//! datagrams to the service thread; the service thread itself sleeps on its queue until the
//! next retransmission is due. No locks are taken on a shard beyond the queue's send.
//!
//! Choosing a daemon, as Kamailio does: a hash of the Call-ID over the daemons' weights; a
//! daemon that gave no answer to a command is skipped for `rtpengine_disable_tout` seconds,
//! and the command goes to the next live one. A call sticks to the daemon its offer went to:
//! the service thread remembers Call-ID → daemon once the offer is answered (forgotten at
//! `delete`, or after two hours without a command), and later commands of that call go there
//! only (no fail-over: another daemon does not know the call), so a daemon that came
//! back or a change in the live set never moves a call's media. Without any answer the
//! callback gets an error: the script function returns false.
//!
//! What it does not do: rtpengine's TCP, WebSocket or HTTP control, kernel-table handling
//! (the daemon's business), Kamailio's set ids (`"1 == udp:…"`, one set here) and pinging
//! disabled daemons (they are tried again when their time is up).

pub mod bencode;
pub mod flags;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portable_atomic::AtomicU64;
use ser_script::Value as ScriptValue;

pub use bencode::Value;
pub use flags::Flags;

/// The default `rtpengine_sock`: Debian's rtpengine listens for ng commands on
/// 127.0.0.1:2223 (`listen-ng` in its rtpengine.conf).
pub const DEFAULT_SOCK: &str = "udp:127.0.0.1:2223";
pub const DEFAULT_TOUT_MS: u64 = 1000;
pub const DEFAULT_RETR: u32 = 5;
pub const DEFAULT_DISABLE_TOUT: u64 = 60;

/// The module's parameters: name, integer (else string).
pub const PARAMS: &[(&str, bool)] = &[
    ("rtpengine_sock", false),
    ("rtpengine_tout_ms", true),
    ("rtpengine_retr", true),
    ("rtpengine_disable_tout", true),
];

/// A call remembered this long after its last command is forgotten.
const STICKY_IDLE: Duration = Duration::from_secs(2 * 3600);
/// Most calls remembered; past it a new call is not remembered (the hash still places it).
const STICKY_MAX: usize = 1 << 20;
/// Most commands waiting for an answer; past it a command fails at once.
const MAX_PENDING: usize = 65536;
/// Largest datagram taken from a daemon (an SDP with many streams and candidates).
const MAX_REPLY: usize = 65535;

/// One daemon of `rtpengine_sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// As written (`udp:127.0.0.1:2223`), for logs.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

/// The service's configuration, from the module parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemons: Vec<Daemon>,
    pub tout: Duration,
    pub retr: u32,
    pub disable: Duration,
}

/// Reads `rtpengine_sock`: daemons separated by white space, each `udp:host:port`,
/// `udp6:[v6]:port` or `host:port`, optionally `=weight` (default 1).
pub fn parse_socks(s: &str) -> Result<Vec<Daemon>, String> {
    let mut v = Vec::new();
    for word in s.split_ascii_whitespace() {
        let (spec, weight) = match word.rsplit_once('=') {
            Some((spec, w)) => {
                let w: u32 = w
                    .parse()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
                    .ok_or_else(|| format!("\"{word}\": the weight is a number 1-1000"))?;
                (spec, w)
            }
            None => (word, 1),
        };
        let hostport = spec
            .strip_prefix("udp:")
            .or_else(|| spec.strip_prefix("udp6:"))
            .unwrap_or(spec);
        if hostport.contains("://") || spec.starts_with("tcp:") || spec.starts_with("ws") {
            return Err(format!(
                "\"{word}\": only udp:host:port daemons are supported"
            ));
        }
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("\"{word}\": {e} (expected udp:host:port)"))?
            .next()
            .ok_or_else(|| format!("\"{word}\": no address"))?;
        v.push(Daemon {
            name: spec.to_string(),
            addr,
            weight,
        });
    }
    if v.is_empty() {
        return Err(String::from("no daemon given"));
    }
    Ok(v)
}

/// The loader's check of one parameter value.
pub fn check_param(name: &str, value: &ScriptValue) -> Result<(), String> {
    match (name, value) {
        ("rtpengine_sock", ScriptValue::Str(s)) => parse_socks(s).map(|_| ()),
        ("rtpengine_tout_ms", ScriptValue::Int(n)) if !(10..=60_000).contains(n) => {
            Err(format!("rtpengine_tout_ms {n}: 10 to 60000"))
        }
        ("rtpengine_retr", ScriptValue::Int(n)) if !(1..=100).contains(n) => {
            Err(format!("rtpengine_retr {n}: 1 to 100"))
        }
        ("rtpengine_disable_tout", ScriptValue::Int(n)) if !(0..=86_400).contains(n) => {
            Err(format!("rtpengine_disable_tout {n}: 0 to 86400 seconds"))
        }
        _ => Ok(()),
    }
}

impl Config {
    /// From the script's parameters (checked at load: a bad `rtpengine_sock` is an error).
    pub fn from_params(p: &crate::config::Params) -> Result<Self, String> {
        let m = "rtpengine";
        let int = |n: &str, d: i64| p.int(m, n).unwrap_or(d);
        Ok(Self {
            daemons: parse_socks(p.str(m, "rtpengine_sock").unwrap_or(DEFAULT_SOCK))?,
            tout: Duration::from_millis(
                u64::try_from(int("rtpengine_tout_ms", DEFAULT_TOUT_MS as i64))
                    .unwrap_or(DEFAULT_TOUT_MS)
                    .max(1),
            ),
            retr: u32::try_from(int("rtpengine_retr", i64::from(DEFAULT_RETR)))
                .unwrap_or(DEFAULT_RETR)
                .max(1),
            disable: Duration::from_secs(
                u64::try_from(int("rtpengine_disable_tout", DEFAULT_DISABLE_TOUT as i64))
                    .unwrap_or(DEFAULT_DISABLE_TOUT),
            ),
        })
    }
}

/// What a command comes back with: the reply dictionary (its `result` was not `error`), or
/// why there is none.
pub type Outcome = Result<Value, String>;

/// Called once, on the service thread, with a command's outcome; must not block.
pub type Done = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// One command from a shard.
struct Request {
    call_id: Vec<u8>,
    cmd: Value,
    done: Done,
}

enum Msg {
    Request(Request),
    Reply(usize, Vec<u8>),
}

/// One daemon's counters, written by the service thread, read by `/metrics` and the FIFO's
/// `rtpengine.show`.
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// Datagrams sent (retransmissions included).
    pub sent: AtomicU64,
    /// Answers with a `result` other than `error`.
    pub ok: AtomicU64,
    /// Answers with `result` `error`.
    pub errors: AtomicU64,
    /// Answers that did not decode (or had no `result`).
    pub bad: AtomicU64,
    /// Commands it gave no answer to after `rtpengine_retr` sends.
    pub timeouts: AtomicU64,
    /// Until when it is skipped: milliseconds since [`Counters::epoch`]; 0 when it is not.
    pub disabled_until_ms: AtomicU64,
}

/// The service's counters.
#[derive(Debug)]
pub struct Counters {
    pub epoch: Instant,
    pub daemons: Vec<(Daemon, DaemonStats)>,
    /// Commands waiting for an answer now.
    pub pending: AtomicU64,
    /// Calls placed on a daemon (Call-ID remembered) now.
    pub calls: AtomicU64,
}

impl Counters {
    /// Whether daemon `i` is skipped now, and for how much longer.
    pub fn disabled_for(&self, i: usize) -> Option<Duration> {
        let until = self
            .daemons
            .get(i)?
            .1
            .disabled_until_ms
            .load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

/// The handle the shards share; [`Rtpengine::disabled`] when the module is not loaded.
pub struct Rtpengine {
    tx: Option<mpsc::Sender<Msg>>,
    counters: Option<Arc<Counters>>,
}

impl std::fmt::Debug for Rtpengine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tx.is_some() {
            "Rtpengine(running)"
        } else {
            "Rtpengine(off)"
        })
    }
}

impl Default for Rtpengine {
    fn default() -> Self {
        Self::disabled()
    }
}

impl Rtpengine {
    /// No daemons: every command fails at once.
    pub fn disabled() -> Self {
        Self {
            tx: None,
            counters: None,
        }
    }

    /// The daemons and their counters, when the service runs.
    pub fn counters(&self) -> Option<&Counters> {
        self.counters.as_deref()
    }

    /// Opens one socket per daemon and starts the service thread.
    pub fn start(cfg: Config) -> Result<Arc<Self>, String> {
        let (tx, rx) = mpsc::channel();
        let mut socks = Vec::new();
        for (i, d) in cfg.daemons.iter().enumerate() {
            let any: SocketAddr = if d.addr.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let s = UdpSocket::bind(any)
                .and_then(|s| s.connect(d.addr).map(|()| s))
                .map_err(|e| format!("rtpengine {}: {e}", d.name))?;
            let r = s
                .try_clone()
                .map_err(|e| format!("rtpengine {}: {e}", d.name))?;
            let txr = tx.clone();
            std::thread::Builder::new()
                .name(format!("rtpengine-rx{i}"))
                .spawn(move || receive(r, i, txr))
                .map_err(|e| format!("rtpengine thread: {e}"))?;
            socks.push(s);
        }
        let counters = Arc::new(Counters {
            epoch: Instant::now(),
            daemons: cfg
                .daemons
                .iter()
                .map(|d| (d.clone(), DaemonStats::default()))
                .collect(),
            pending: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        let svc = Service::new(cfg, socks, Arc::clone(&counters));
        std::thread::Builder::new()
            .name(String::from("rtpengine"))
            .spawn(move || svc.run(rx))
            .map_err(|e| format!("rtpengine thread: {e}"))?;
        Ok(Arc::new(Self {
            tx: Some(tx),
            counters: Some(counters),
        }))
    }

    /// Queues `cmd` (a dictionary with its `command`; the cookie is added here) for the
    /// daemon of `call_id`; `done` gets the outcome on the service thread.
    pub fn request(&self, call_id: &[u8], cmd: Value, done: Done) {
        let Some(tx) = &self.tx else {
            done(Err(String::from("the rtpengine module is not running")));
            return;
        };
        let r = Request {
            call_id: call_id.to_vec(),
            cmd,
            done,
        };
        if let Err(mpsc::SendError(Msg::Request(r))) = tx.send(Msg::Request(r)) {
            (r.done)(Err(String::from("the rtpengine service has stopped")));
        }
    }
}

/// A daemon's socket reader: every datagram goes to the service thread.
fn receive(sock: UdpSocket, daemon: usize, tx: mpsc::Sender<Msg>) {
    let mut buf = vec![0u8; MAX_REPLY];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                if tx.send(Msg::Reply(daemon, data)).is_err() {
                    return;
                }
            }
            // ICMP port unreachable on the connected socket: the daemon is not there; the
            // command's time-out deals with it.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                crate::error!("rtpengine: receive: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A command sent and not answered yet.
struct Pending {
    /// Its number (the cookie's second part).
    seq: u64,
    req: Request,
    /// The datagram (cookie included).
    data: Vec<u8>,
    daemon: usize,
    sends: u32,
    deadline: Instant,
    /// Daemons that gave no answer to it.
    tried: Vec<usize>,
    /// May go to another daemon when this one does not answer.
    failover: bool,
}

struct Service {
    cfg: Config,
    socks: Vec<UdpSocket>,
    disabled_until: Vec<Option<Instant>>,
    pending: HashMap<u64, Pending>,
    /// (deadline, seq) of every pending command, earliest first.
    timers: std::collections::BTreeSet<(Instant, u64)>,
    /// Call-ID → (daemon, last command).
    calls: HashMap<Vec<u8>, (usize, Instant)>,
    /// What every cookie of this run starts with (`xxxxxxxx_`); the sequence number follows.
    cookie_prefix: String,
    seq: u64,
    last_sweep: Instant,
    counters: Arc<Counters>,
}

impl Service {
    fn new(cfg: Config, socks: Vec<UdpSocket>, counters: Arc<Counters>) -> Self {
        let n = cfg.daemons.len();
        // Cookies differ from those of an earlier run: rtpengine answers a cookie it saw
        // lately from its cache.
        let cookie_base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0)
            ^ std::process::id();
        Self {
            cfg,
            socks,
            disabled_until: vec![None; n],
            pending: HashMap::new(),
            timers: std::collections::BTreeSet::new(),
            calls: HashMap::new(),
            cookie_prefix: format!("{cookie_base:08x}_"),
            seq: 0,
            last_sweep: Instant::now(),
            counters,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            let next = self.timers.first().map(|(at, _)| *at);
            let msg = match next {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let now = Instant::now();
            match msg {
                Ok(Msg::Request(r)) => self.start(now, r),
                Ok(Msg::Reply(d, data)) => self.reply(now, d, &data),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.expire(now);
            let c = &self.counters;
            c.pending
                .store(self.pending.len() as u64, Ordering::Relaxed);
            c.calls.store(self.calls.len() as u64, Ordering::Relaxed);
        }
    }

    fn stats(&self, i: usize) -> Option<&DaemonStats> {
        self.counters.daemons.get(i).map(|(_, s)| s)
    }

    fn live(&self, i: usize, now: Instant) -> bool {
        self.disabled_until
            .get(i)
            .copied()
            .flatten()
            .map_or(true, |t| now >= t)
    }

    /// The daemon for a call not placed yet: the Call-ID's hash over the weights of the
    /// daemons, or over the live ones when that one is down; `skip` are excluded.
    fn choose(&self, call_id: &[u8], now: Instant, skip: &[usize]) -> Option<usize> {
        let h = fnv1a(call_id);
        let pick = |ok: &dyn Fn(usize) -> bool| -> Option<usize> {
            let total: u64 = self
                .cfg
                .daemons
                .iter()
                .enumerate()
                .filter(|(i, _)| ok(*i))
                .map(|(_, d)| u64::from(d.weight))
                .sum();
            if total == 0 {
                return None;
            }
            let mut cut = h % total;
            for (i, d) in self.cfg.daemons.iter().enumerate().filter(|(i, _)| ok(*i)) {
                let w = u64::from(d.weight);
                if cut < w {
                    return Some(i);
                }
                cut -= w;
            }
            None
        };
        match pick(&|i| !skip.contains(&i)) {
            Some(i) if self.live(i, now) => Some(i),
            _ => pick(&|i| !skip.contains(&i) && self.live(i, now)),
        }
    }

    fn start(&mut self, now: Instant, req: Request) {
        if self.pending.len() >= MAX_PENDING {
            (req.done)(Err(String::from("too many rtpengine commands in flight")));
            return;
        }
        let sticky = self.calls.get_mut(&req.call_id).map(|(d, t)| {
            *t = now;
            *d
        });
        let (daemon, failover) = match sticky {
            Some(d) => (Some(d), false),
            None => (self.choose(&req.call_id, now, &[]), true),
        };
        let Some(daemon) = daemon else {
            (req.done)(Err(String::from(
                "no rtpengine daemon is available (all disabled)",
            )));
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let mut data = Vec::with_capacity(256);
        data.extend_from_slice(self.cookie_prefix.as_bytes());
        data.extend_from_slice(seq.to_string().as_bytes());
        data.push(b' ');
        req.cmd.encode(&mut data);
        let mut p = Pending {
            seq,
            req,
            data,
            daemon,
            sends: 0,
            deadline: now,
            tried: Vec::new(),
            failover,
        };
        self.send(now, &mut p);
        self.pending.insert(seq, p);
    }

    /// Sends (again, or to another daemon) and sets the next deadline.
    fn send(&mut self, now: Instant, p: &mut Pending) {
        p.sends += 1;
        self.timers.remove(&(p.deadline, p.seq));
        p.deadline = now + self.cfg.tout;
        self.timers.insert((p.deadline, p.seq));
        if let Some(st) = self.stats(p.daemon) {
            st.sent.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = self.socks.get(p.daemon) {
            if let Err(e) = s.send(&p.data) {
                crate::debug!("rtpengine {}: send: {e}", self.cfg.daemons[p.daemon].name);
            }
        }
    }

    fn reply(&mut self, now: Instant, daemon: usize, data: &[u8]) {
        let name = self
            .cfg
            .daemons
            .get(daemon)
            .map_or("?", |d| d.name.as_str());
        let Some(sp) = data.iter().position(|&b| b == b' ') else {
            crate::notice!("rtpengine {name}: a reply without a cookie, ignored");
            return;
        };
        let cookie = String::from_utf8_lossy(&data[..sp]);
        let seq = cookie
            .strip_prefix(self.cookie_prefix.as_str())
            .and_then(|n| n.parse::<u64>().ok());
        let Some(p) = seq.and_then(|seq| self.pending.remove(&seq)) else {
            // A late answer to a retransmission, or to a command given up on.
            crate::debug!("rtpengine {name}: reply for unknown cookie {cookie}");
            return;
        };
        self.timers.remove(&(p.deadline, p.seq));
        // An answer from the daemon it was sent to: it is alive.
        if let Some(slot) = self.disabled_until.get_mut(daemon) {
            *slot = None;
        }
        let st = self.stats(daemon);
        if let Some(st) = st {
            st.disabled_until_ms.store(0, Ordering::Relaxed);
        }
        let count = |f: fn(&DaemonStats) -> &AtomicU64| {
            if let Some(st) = st {
                f(st).fetch_add(1, Ordering::Relaxed);
            }
        };
        let outcome = match bencode::decode(&data[sp + 1..]) {
            Err(e) => {
                count(|s| &s.bad);
                crate::error!("rtpengine {name}: bad reply: {e}");
                Err(format!("rtpengine {name}: bad reply: {e}"))
            }
            Ok(v @ Value::Dict(_)) => match v.get("result").and_then(Value::as_text).as_deref() {
                Some("error") => {
                    count(|s| &s.errors);
                    let why = v
                        .get("error-reason")
                        .and_then(Value::as_text)
                        .unwrap_or_default();
                    crate::notice!("rtpengine {name}: error: {why}");
                    Err(format!("rtpengine {name}: {why}"))
                }
                Some(_) => {
                    count(|s| &s.ok);
                    Ok(v)
                }
                None => {
                    count(|s| &s.bad);
                    crate::error!("rtpengine {name}: bad reply: no result");
                    Err(format!("rtpengine {name}: reply without a result"))
                }
            },
            Ok(_) => {
                count(|s| &s.bad);
                crate::error!("rtpengine {name}: bad reply: not a dictionary");
                Err(format!("rtpengine {name}: reply is not a dictionary"))
            }
        };
        let cmd = p.req.cmd.get("command").and_then(Value::as_bytes);
        if cmd == Some(b"delete") {
            self.calls.remove(&p.req.call_id);
        } else if outcome.is_ok() && cmd == Some(b"offer") {
            // The call sticks to the daemon that took its offer (after a fail-over too; the
            // one that answered, should a late answer come from the first).
            if self.calls.len() < STICKY_MAX || self.calls.contains_key(&p.req.call_id) {
                self.calls.insert(p.req.call_id.clone(), (daemon, now));
            }
        }
        (p.req.done)(outcome);
    }

    /// Retransmissions due, and daemons that gave no answer.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(mut p) = self.pending.remove(&seq) else {
                continue;
            };
            if p.sends < self.cfg.retr {
                self.send(now, &mut p);
                self.pending.insert(seq, p);
                continue;
            }
            let name = self.cfg.daemons[p.daemon].name.clone();
            crate::error!(
                "rtpengine {name}: no answer after {} tries; disabled for {} s",
                p.sends,
                self.cfg.disable.as_secs()
            );
            if let Some(st) = self.stats(p.daemon) {
                st.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            if !self.cfg.disable.is_zero() {
                let until = now + self.cfg.disable;
                self.disabled_until[p.daemon] = Some(until);
                if let Some(st) = self.stats(p.daemon) {
                    let ms = until.duration_since(self.counters.epoch).as_millis() as u64;
                    st.disabled_until_ms.store(ms.max(1), Ordering::Relaxed);
                }
            }
            p.tried.push(p.daemon);
            let next = if p.failover {
                self.choose(&p.req.call_id, now, &p.tried)
            } else {
                None
            };
            match next {
                Some(d) => {
                    crate::notice!(
                        "rtpengine: command goes to {} instead",
                        self.cfg.daemons[d].name
                    );
                    p.daemon = d;
                    p.sends = 0;
                    self.send(now, &mut p);
                    self.pending.insert(seq, p);
                }
                None => {
                    (p.req.done)(Err(format!("no rtpengine daemon answered (last {name})")));
                }
            }
        }
        if now.duration_since(self.last_sweep) >= Duration::from_secs(60) {
            self.last_sweep = now;
            self.calls
                .retain(|_, (_, t)| now.duration_since(*t) < STICKY_IDLE);
        }
    }
}

/// FNV-1a, 64 bits: the Call-ID's hash for the choice of a daemon.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
