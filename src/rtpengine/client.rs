//! The exchange with the daemons: the commands in flight (one table behind a mutex), the
//! choice of a daemon, the first send (on the calling shard), the answers (one receiving
//! thread per daemon) and the retransmissions and time-outs (one timer thread).
//!
//! Why this shape: each cross-thread wake-up costs more than the exchange itself on a VM. A
//! shard sends the command itself (a connected UDP socket, sends bounded by a 2 ms send
//! time-out, so a full socket buffer cannot hold a shard) and returns; the daemon's receiving
//! thread, already blocked in `recv`, takes the answer and hands it to the shard's callback:
//! one wake-up for the answer, one for the shard. The timer thread never needs waking: every
//! deadline is `rtpengine_tout_ms` after its send, so a deadline added while it sleeps is
//! later than the moment it wakes (at most `rtpengine_tout_ms` after it went to sleep).
//!
//! Lock discipline: the table's mutex is held for bookkeeping only; datagrams are sent and
//! callbacks called after it is released (a callback may queue the next command).

use std::collections::{BTreeSet, HashMap};
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use portable_atomic::AtomicU64;

use super::{bencode, Config, Counters, DaemonStats, Done, Outcome, Value};

/// A call remembered this long after its last command is forgotten.
const STICKY_IDLE: Duration = Duration::from_secs(2 * 3600);
/// Most calls remembered; past it a new call is not remembered (the hash still places it).
const STICKY_MAX: usize = 1 << 20;
/// Most commands waiting for an answer; past it a command fails at once.
const MAX_PENDING: usize = 65536;
/// Largest datagram taken from a daemon (an SDP with many streams and candidates).
const MAX_REPLY: usize = 65535;
/// The longest a send may block a shard (a full socket buffer).
const SEND_TIMEOUT: Duration = Duration::from_millis(2);

/// A command sent and not answered yet.
struct Pending {
    call_id: Vec<u8>,
    /// The command's `command` is `offer` / `delete`.
    offer: bool,
    delete: bool,
    done: Done,
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

#[derive(Default)]
struct Table {
    disabled_until: Vec<Option<Instant>>,
    pending: HashMap<u64, Pending>,
    /// (deadline, seq) of every pending command, earliest first.
    timers: BTreeSet<(Instant, u64)>,
    /// Call-ID → (daemon, last command).
    calls: HashMap<Vec<u8>, (usize, Instant)>,
    seq: u64,
}

/// What every thread and shard shares.
pub(super) struct Engine {
    cfg: Config,
    socks: Vec<UdpSocket>,
    pub(super) counters: Arc<Counters>,
    /// What every cookie of this run starts with (`xxxxxxxx_`); the sequence number follows.
    cookie_prefix: String,
    table: Mutex<Table>,
}

/// A datagram to send once the table is released.
type Send = (usize, Vec<u8>);

impl Engine {
    /// Opens the sockets and starts the receiving threads and the timer thread.
    pub(super) fn start(cfg: Config) -> Result<Arc<Self>, String> {
        let mut socks = Vec::new();
        for d in &cfg.daemons {
            let any: std::net::SocketAddr = if d.addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let s = UdpSocket::bind(any)
                .and_then(|s| s.connect(d.addr).map(|()| s))
                .and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s))
                .map_err(|e| format!("rtpengine {}: {e}", d.name))?;
            socks.push(s);
        }
        // Cookies differ from those of an earlier run: rtpengine answers a cookie it saw
        // lately from its cache.
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0)
            ^ std::process::id();
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
        let n = cfg.daemons.len();
        let engine = Arc::new(Self {
            cfg,
            socks,
            counters,
            cookie_prefix: format!("{base:08x}_"),
            table: Mutex::new(Table {
                disabled_until: vec![None; n],
                ..Table::default()
            }),
        });
        for i in 0..n {
            let e = Arc::clone(&engine);
            let sock = engine.socks[i]
                .try_clone()
                .map_err(|err| format!("rtpengine {}: {err}", engine.cfg.daemons[i].name))?;
            std::thread::Builder::new()
                .name(format!("rtpengine-rx{i}"))
                .spawn(move || e.receive(i, &sock))
                .map_err(|err| format!("rtpengine thread: {err}"))?;
        }
        let e = Arc::clone(&engine);
        std::thread::Builder::new()
            .name(String::from("rtpengine"))
            .spawn(move || e.timers())
            .map_err(|err| format!("rtpengine thread: {err}"))?;
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A poisoned table (a panic while it was held, which the code here does not do) is
        // still consistent enough to go on with.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stats(&self, i: usize) -> Option<&DaemonStats> {
        self.counters.daemons.get(i).map(|(_, s)| s)
    }

    fn name(&self, i: usize) -> &str {
        self.cfg.daemons.get(i).map_or("?", |d| d.name.as_str())
    }

    fn send_now(&self, (daemon, data): Send) {
        if let Some(st) = self.stats(daemon) {
            st.sent.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = self.socks.get(daemon) {
            if let Err(e) = s.send(&data) {
                crate::debug!("rtpengine {}: send: {e}", self.name(daemon));
            }
        }
    }

    fn gauges(&self, t: &Table) {
        let c = &self.counters;
        c.pending.store(t.pending.len() as u64, Ordering::Relaxed);
        c.calls.store(t.calls.len() as u64, Ordering::Relaxed);
    }

    /// Sends a command for the daemon of `call_id` (see [`super::Rtpengine::request`]).
    pub(super) fn request(&self, call_id: &[u8], cmd: &Value, done: Done) {
        let now = Instant::now();
        let command = cmd.get("command").and_then(Value::as_bytes);
        let (offer, delete) = (command == Some(b"offer"), command == Some(b"delete"));
        let mut t = self.lock();
        if t.pending.len() >= MAX_PENDING {
            drop(t);
            done(Err(String::from("too many rtpengine commands in flight")));
            return;
        }
        let sticky = t.calls.get_mut(call_id).map(|(d, at)| {
            *at = now;
            *d
        });
        let (daemon, failover) = match sticky {
            Some(d) => (Some(d), false),
            None => (self.choose(&t, call_id, now, &[]), true),
        };
        let Some(daemon) = daemon else {
            drop(t);
            done(Err(String::from(
                "no rtpengine daemon is available (all disabled)",
            )));
            return;
        };
        t.seq += 1;
        let seq = t.seq;
        let mut data = Vec::with_capacity(256);
        data.extend_from_slice(self.cookie_prefix.as_bytes());
        data.extend_from_slice(seq.to_string().as_bytes());
        data.push(b' ');
        cmd.encode(&mut data);
        let deadline = now + self.cfg.tout;
        let send = (daemon, data.clone());
        t.timers.insert((deadline, seq));
        t.pending.insert(
            seq,
            Pending {
                call_id: call_id.to_vec(),
                offer,
                delete,
                done,
                data,
                daemon,
                sends: 1,
                deadline,
                tried: Vec::new(),
                failover,
            },
        );
        self.gauges(&t);
        drop(t);
        self.send_now(send);
    }

    fn live(t: &Table, i: usize, now: Instant) -> bool {
        t.disabled_until
            .get(i)
            .copied()
            .flatten()
            .map_or(true, |until| now >= until)
    }

    /// The daemon for a call not placed yet: the Call-ID's hash over the weights of the
    /// daemons, or over the live ones when that one is down; `skip` are excluded.
    fn choose(&self, t: &Table, call_id: &[u8], now: Instant, skip: &[usize]) -> Option<usize> {
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
            Some(i) if Self::live(t, i, now) => Some(i),
            _ => pick(&|i| !skip.contains(&i) && Self::live(t, i, now)),
        }
    }

    /// A daemon's receiving thread: every datagram is an answer to a command in flight.
    fn receive(&self, daemon: usize, sock: &UdpSocket) {
        let mut buf = vec![0u8; MAX_REPLY];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => self.answer(daemon, buf.get(..n).unwrap_or_default()),
                // ICMP port unreachable on the connected socket: the daemon is not there;
                // the command's time-out deals with it.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    crate::error!("rtpengine: receive: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn answer(&self, daemon: usize, data: &[u8]) {
        let name = self.name(daemon);
        let Some(sp) = data.iter().position(|&b| b == b' ') else {
            crate::notice!("rtpengine {name}: a reply without a cookie, ignored");
            return;
        };
        let (cookie, body) = (&data[..sp], &data[sp + 1..]);
        let seq = std::str::from_utf8(cookie)
            .ok()
            .and_then(|c| c.strip_prefix(self.cookie_prefix.as_str()))
            .and_then(|n| n.parse::<u64>().ok());
        let count = |f: fn(&DaemonStats) -> &AtomicU64| {
            if let Some(st) = self.stats(daemon) {
                f(st).fetch_add(1, Ordering::Relaxed);
            }
        };
        let outcome: Outcome = match bencode::decode(body) {
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
        let now = Instant::now();
        let mut t = self.lock();
        let Some(p) = seq.and_then(|seq| t.pending.remove(&seq)) else {
            // A late answer to a retransmission, or to a command given up on.
            crate::debug!(
                "rtpengine {name}: reply for unknown cookie {}",
                String::from_utf8_lossy(cookie)
            );
            return;
        };
        t.timers.remove(&(p.deadline, seq.unwrap_or_default()));
        // An answer: the daemon is alive.
        if let Some(slot) = t.disabled_until.get_mut(daemon) {
            *slot = None;
        }
        if let Some(st) = self.stats(daemon) {
            st.disabled_until_ms.store(0, Ordering::Relaxed);
        }
        if p.delete {
            t.calls.remove(&p.call_id);
        } else if outcome.is_ok()
            && p.offer
            && (t.calls.len() < STICKY_MAX || t.calls.contains_key(&p.call_id))
        {
            // The call sticks to the daemon that took its offer (after a fail-over too; the
            // one that answered, should a late answer come from the first).
            t.calls.insert(p.call_id, (daemon, now));
        }
        self.gauges(&t);
        drop(t);
        (p.done)(outcome);
    }

    /// The timer thread: retransmissions, daemons that gave no answer, forgotten calls.
    fn timers(&self) {
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            let mut sends: Vec<Send> = Vec::new();
            let mut failed: Vec<(Done, String)> = Vec::new();
            let next = {
                let mut t = self.lock();
                self.expire(&mut t, now, &mut sends, &mut failed);
                if now.duration_since(last_sweep) >= Duration::from_secs(60) {
                    last_sweep = now;
                    t.calls
                        .retain(|_, (_, at)| now.duration_since(*at) < STICKY_IDLE);
                }
                self.gauges(&t);
                // Nothing needs waking this thread earlier: a deadline added while it sleeps
                // is `tout` after its send, later than this wake-up.
                t.timers.first().map_or(now + self.cfg.tout, |(at, _)| *at)
            };
            for s in sends {
                self.send_now(s);
            }
            for (done, why) in failed {
                done(Err(why));
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    fn expire(
        &self,
        t: &mut Table,
        now: Instant,
        sends: &mut Vec<Send>,
        failed: &mut Vec<(Done, String)>,
    ) {
        while let Some(&(at, seq)) = t.timers.first() {
            if at > now {
                break;
            }
            t.timers.pop_first();
            let Some(mut p) = t.pending.remove(&seq) else {
                continue;
            };
            if p.sends < self.cfg.retr {
                p.sends += 1;
                p.deadline = now + self.cfg.tout;
                t.timers.insert((p.deadline, seq));
                sends.push((p.daemon, p.data.clone()));
                t.pending.insert(seq, p);
                continue;
            }
            let name = self.name(p.daemon).to_string();
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
                if let Some(slot) = t.disabled_until.get_mut(p.daemon) {
                    *slot = Some(until);
                }
                if let Some(st) = self.stats(p.daemon) {
                    let ms = until.duration_since(self.counters.epoch).as_millis() as u64;
                    st.disabled_until_ms.store(ms.max(1), Ordering::Relaxed);
                }
            }
            p.tried.push(p.daemon);
            let next = if p.failover {
                self.choose(t, &p.call_id, now, &p.tried)
            } else {
                None
            };
            match next {
                Some(d) => {
                    crate::notice!("rtpengine: command goes to {} instead", self.name(d));
                    p.daemon = d;
                    p.sends = 1;
                    p.deadline = now + self.cfg.tout;
                    t.timers.insert((p.deadline, seq));
                    sends.push((d, p.data.clone()));
                    t.pending.insert(seq, p);
                }
                None => failed.push((
                    p.done,
                    format!("no rtpengine daemon answered (last {name})"),
                )),
            }
        }
    }
}

/// FNV-1a, 64 bits: the Call-ID's hash for the choice of a daemon.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}
