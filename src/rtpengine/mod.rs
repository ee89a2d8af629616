//! The rtpengine client: rtpengine's ng control protocol (bencoded dictionaries over UDP, each
//! datagram `cookie SP bencode`) to one or more media relay daemons, with time-outs,
//! retransmissions and fail-over, serving every shard.
//!
//! A shard never waits for a daemon. It hands a command (a [`Value`] dictionary), the call's
//! Call-ID and a completion callback to [`Rtpengine::request`], which sends the datagram and
//! returns; the daemon's receiving thread calls the callback with the reply dictionary, and
//! the timer thread retransmits every `rtpengine_tout_ms` up to `rtpengine_retr` sends and
//! calls it with an error when none answers (the module's callback posts the result back to
//! the shard, where the paused script resumes). `client` has the threads and why they are
//! shaped so (the fewest wake-ups per command).
//!
//! Choosing a daemon, as Kamailio does: a hash of the Call-ID over the daemons' weights; a
//! daemon that gave no answer to a command is skipped for `rtpengine_disable_tout` seconds,
//! and the command goes to the next live one. A call sticks to the daemon its offer went to:
//! the client remembers Call-ID → daemon once the offer is answered (forgotten at
//! `delete`, or after two hours without a command), and later commands of that call go there
//! only (no fail-over: another daemon does not know the call), so a daemon that came
//! back or a change in the live set never moves a call's media. Without any answer the
//! callback gets an error: the script function returns false.
//!
//! What it does not do: rtpengine's TCP, WebSocket or HTTP control, kernel-table handling
//! (the daemon's business), Kamailio's set ids (`"1 == udp:…"`, one set here) and pinging
//! disabled daemons (they are tried again when their time is up).

pub mod bencode;
mod client;
pub mod flags;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
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

/// Called once, on one of the client's threads, with a command's outcome; must not block.
pub type Done = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// One daemon's counters, written by the client's threads, read by `/metrics` and the FIFO's
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
#[derive(Default)]
pub struct Rtpengine {
    engine: Option<Arc<client::Engine>>,
}

impl std::fmt::Debug for Rtpengine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.engine.is_some() {
            "Rtpengine(running)"
        } else {
            "Rtpengine(off)"
        })
    }
}

impl Rtpengine {
    /// No daemons: every command fails at once.
    pub fn disabled() -> Self {
        Self { engine: None }
    }

    /// Opens one socket per daemon and starts the receiving and timer threads.
    pub fn start(cfg: Config) -> Result<Arc<Self>, String> {
        Ok(Arc::new(Self {
            engine: Some(client::Engine::start(cfg)?),
        }))
    }

    /// The daemons and their counters, when the service runs.
    pub fn counters(&self) -> Option<&Counters> {
        self.engine.as_deref().map(|e| &*e.counters)
    }

    /// Sends `cmd` (a dictionary with its `command`; the cookie is added here) to the daemon
    /// of `call_id` and returns at once; `done` gets the outcome later, on another thread
    /// (or at once, on this one, when it cannot be sent). `done` must not block.
    pub fn request(&self, call_id: &[u8], cmd: Value, done: Done) {
        match &self.engine {
            Some(e) => e.request(call_id, &cmd, done),
            None => done(Err(String::from("the rtpengine module is not running"))),
        }
    }
}

#[cfg(test)]
mod tests;
