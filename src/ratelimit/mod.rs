//! ratelimit: pipes and queues (Kamailio's ratelimit module, after BSD ipfw's pipes), as a
//! sans-IO core over atomics every shard shares: the caller passes `now`.
//!
//! A *pipe* has an algorithm and a limit in requests per second; a *queue* sends the requests
//! of one method (or of every method, `*`) to a pipe. Time is cut into intervals of
//! `timer_interval` seconds; each pipe counts the requests pushed into it in the current
//! interval (refused ones too, as Kamailio does), so a pipe lets through `limit ×
//! timer_interval` requests per interval (Kamailio's TAILDROP test, `counter <= limit *
//! timer_interval`).
//!
//! - TAILDROP: the first `limit × timer_interval` requests of an interval pass, the rest are
//!   refused.
//! - RED (random early detection): the load is `ρ = max(last interval's count, this
//!   interval's count so far) / (limit × timer_interval)`; a request is dropped with
//!   probability [`red_drop_probability`]`(ρ)`: none below half the limit, growing to 10 % at
//!   the limit, then `1 - 1/ρ` (so about the limit passes however much arrives: Kamailio's
//!   "every n-th packet" spread of the measured load, drawn at random). The draw is a hash of
//!   the pipe, the interval and the request's count, so it is deterministic and needs no
//!   per-shard RNG state.
//! - NOP: an undefined pipe: everything passes.
//!
//! Every pipe is a few `AtomicU64`s (the interval number and its count packed in one word, so
//! the counter is reset by whichever shard first sees a new interval, with no timer); queues
//! are an `ArcSwap`ped table. Changes at run time (`rl.set_pipe`, `rl.set_queue`) are atomic
//! stores: no lock on the request path. FEEDBACK and NETWORK are not implemented.

use std::sync::atomic::{AtomicU8, Ordering};

// 64-bit atomics everywhere, armv5te included (no native ones there).
use portable_atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

/// Pipes and queues a script may define (Kamailio's MAX_PIPES, MAX_QUEUES).
pub const MAX_PIPES: usize = 16;
pub const MAX_QUEUES: usize = 10;
/// The longest `timer_interval` accepted, in seconds.
pub const MAX_INTERVAL: u64 = 3600;
/// The highest limit accepted (requests per second).
pub const MAX_LIMIT: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Algo {
    Nop = 0,
    Taildrop = 1,
    Red = 2,
}

impl Algo {
    /// Kamailio's algorithm names (any case).
    pub fn parse(s: &str) -> Result<Algo, String> {
        match s.to_ascii_uppercase().as_str() {
            "TAILDROP" => Ok(Algo::Taildrop),
            "RED" => Ok(Algo::Red),
            "NOP" => Ok(Algo::Nop),
            "FEEDBACK" | "NETWORK" => Err(format!(
                "ratelimit algorithm {s} is not available in this version of ser (TAILDROP, RED)"
            )),
            _ => Err(format!(
                "unknown ratelimit algorithm \"{s}\" (TAILDROP, RED or NOP)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algo::Nop => "NOP",
            Algo::Taildrop => "TAILDROP",
            Algo::Red => "RED",
        }
    }

    fn from_u8(v: u8) -> Algo {
        match v {
            1 => Algo::Taildrop,
            2 => Algo::Red,
            _ => Algo::Nop,
        }
    }
}

/// A queue: the requests of `method` (`*`: every method) go to pipe `pipe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub pipe: usize,
    pub method: String,
}

impl Queue {
    fn matches(&self, method: &str) -> bool {
        self.method == "*" || self.method == method
    }
}

/// A pipe id from text: `0`..`MAX_PIPES - 1`.
pub fn parse_pipe_id(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|&i| i < MAX_PIPES)
        .ok_or_else(|| format!("bad pipe id \"{s}\" (0 to {})", MAX_PIPES - 1))
}

/// A limit from text: requests per second, `0`..=[`MAX_LIMIT`].
pub fn parse_limit(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|&l| l <= MAX_LIMIT)
        .ok_or_else(|| format!("bad limit \"{s}\" (0 to {MAX_LIMIT} requests per second)"))
}

/// A method for a queue: a SIP token, or `*`.
pub fn parse_method(s: &str) -> Result<String, String> {
    let m = s.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
    if m == "*" || (!m.is_empty() && m.len() <= 32 && m.bytes().all(token) && !m.contains('*')) {
        Ok(m.to_string())
    } else {
        Err(format!(
            "bad method \"{s}\" (a SIP method, or * for every method)"
        ))
    }
}

/// The `pipe` parameter: `"id:algorithm:limit"`.
pub fn parse_pipe(s: &str) -> Result<(usize, Algo, u64), String> {
    let mut it = s.split(':');
    let (Some(id), Some(algo), Some(limit), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(format!(
            "pipe \"{s}\": expected \"id:algorithm:limit\", e.g. \"0:TAILDROP:100\""
        ));
    };
    let id = parse_pipe_id(id)?;
    let algo = Algo::parse(algo.trim())?;
    let limit = parse_limit(limit)?;
    Ok((id, algo, limit))
}

/// The `queue` parameter: `"pipe_id:METHOD"` or `"pipe_id:*"`.
pub fn parse_queue(s: &str) -> Result<Queue, String> {
    let Some((pipe, method)) = s.split_once(':') else {
        return Err(format!(
            "queue \"{s}\": expected \"pipe_id:METHOD\" or \"pipe_id:*\""
        ));
    };
    Ok(Queue {
        pipe: parse_pipe_id(pipe)?,
        method: parse_method(method)?,
    })
}

/// What a script defines: `timer_interval`, its pipes and its queues (in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub interval: u64,
    pub pipes: Vec<(usize, Algo, u64)>,
    pub queues: Vec<Queue>,
}

impl Default for Definition {
    fn default() -> Self {
        Self {
            interval: 10,
            pipes: Vec::new(),
            queues: Vec::new(),
        }
    }
}

/// RED's drop probability at load `rho` (requests over what the interval allows): 0 up to
/// half the limit, rising linearly to [`RED_MAX_P`] at the limit, then `max(RED_MAX_P,
/// 1 - 1/rho)`. Never decreasing in `rho`.
pub fn red_drop_probability(rho: f64) -> f64 {
    const MIN_TH: f64 = 0.5;
    if rho.is_nan() || rho <= MIN_TH {
        0.0
    } else if rho < 1.0 {
        RED_MAX_P * (rho - MIN_TH) / (1.0 - MIN_TH)
    } else {
        (1.0 - 1.0 / rho).max(RED_MAX_P)
    }
}

/// RED's drop probability at the limit.
pub const RED_MAX_P: f64 = 0.1;

const IV_SHIFT: u32 = 32;
const COUNT_MASK: u64 = (1 << IV_SHIFT) - 1;

fn pack(iv: u64, count: u64) -> u64 {
    (iv << IV_SHIFT) | count.min(COUNT_MASK)
}

fn unpack(v: u64) -> (u64, u64) {
    (v >> IV_SHIFT, v & COUNT_MASK)
}

/// One pipe's shared state.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Pipe {
    algo: AtomicU8,
    limit: AtomicU64,
    /// The current interval's number and count, packed.
    window: AtomicU64,
    /// The interval before `window`'s, packed the same way.
    last: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A pipe as the management commands show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeState {
    pub id: usize,
    pub algo: Algo,
    /// Requests per second.
    pub limit: u64,
    /// Requests pushed in the current interval, and in the one before.
    pub counter: u64,
    pub last_counter: u64,
    pub accepted: u64,
    pub refused: u64,
}

/// Every pipe and queue (one per process; it outlives reloads).
#[derive(Debug)]
pub struct Pipes {
    epoch: Instant,
    interval: AtomicU64,
    pipes: [Pipe; MAX_PIPES],
    queues: ArcSwap<Vec<Option<Queue>>>,
    seed: u64,
}

impl Default for Pipes {
    fn default() -> Self {
        Self::new(Instant::now(), 0x5eed_7a11_d70b_0001)
    }
}

impl Pipes {
    /// Intervals are counted from `epoch`; `seed` seeds RED's draws.
    pub fn new(epoch: Instant, seed: u64) -> Self {
        Self {
            epoch,
            interval: AtomicU64::new(10),
            pipes: std::array::from_fn(|_| Pipe::default()),
            queues: ArcSwap::from_pointee(vec![None; MAX_QUEUES]),
            seed,
        }
    }

    /// Applies a script's definition: its interval, its pipes (the others become NOP) and
    /// its queues (replacing every queue). Counters go on unless the interval changed.
    pub fn configure(&self, d: &Definition) {
        let interval = d.interval.clamp(1, MAX_INTERVAL);
        if self.interval.swap(interval, Ordering::Relaxed) != interval {
            for p in &self.pipes {
                p.window.store(0, Ordering::Relaxed);
                p.last.store(0, Ordering::Relaxed);
            }
        }
        for (i, p) in self.pipes.iter().enumerate() {
            let (algo, limit) = d
                .pipes
                .iter()
                .rev()
                .find(|(id, _, _)| *id == i)
                .map_or((Algo::Nop, 0), |(_, a, l)| (*a, *l));
            p.limit.store(limit, Ordering::Relaxed);
            p.algo.store(algo as u8, Ordering::Relaxed);
        }
        let mut q: Vec<Option<Queue>> = d
            .queues
            .iter()
            .take(MAX_QUEUES)
            .cloned()
            .map(Some)
            .collect();
        q.resize(MAX_QUEUES, None);
        self.queues.store(Arc::new(q));
    }

    /// `timer_interval` in seconds.
    pub fn interval(&self) -> u64 {
        self.interval.load(Ordering::Relaxed)
    }

    /// `rl.set_pipe`: a pipe's algorithm and limit (requests per second).
    pub fn set_pipe(&self, id: usize, algo: Algo, limit: u64) -> Result<(), String> {
        let p = self
            .pipes
            .get(id)
            .ok_or_else(|| format!("no pipe {id} (0 to {})", MAX_PIPES - 1))?;
        p.limit.store(limit.min(MAX_LIMIT), Ordering::Relaxed);
        p.algo.store(algo as u8, Ordering::Relaxed);
        Ok(())
    }

    /// `rl.set_queue`: queue `qid` sends `method` to `pipe`.
    pub fn set_queue(&self, qid: usize, method: &str, pipe: usize) -> Result<(), String> {
        if qid >= MAX_QUEUES {
            return Err(format!("no queue {qid} (0 to {})", MAX_QUEUES - 1));
        }
        let Some(p) = self.pipes.get(pipe) else {
            return Err(format!("no pipe {pipe} (0 to {})", MAX_PIPES - 1));
        };
        // As at load, where a queue to an undefined pipe is refused: such a queue would let
        // its method through unlimited without a word.
        if Algo::from_u8(p.algo.load(Ordering::Relaxed)) == Algo::Nop {
            return Err(format!(
                "pipe {pipe} is not defined: rl set_pipe {pipe} <algorithm> <limit> first"
            ));
        }
        let method = parse_method(method)?;
        self.queues.rcu(|q| {
            let mut q = Vec::clone(q);
            if let Some(slot) = q.get_mut(qid) {
                *slot = Some(Queue {
                    pipe,
                    method: method.clone(),
                });
            }
            q
        });
        Ok(())
    }

    /// The queues in use, by queue id.
    pub fn queues(&self) -> Vec<(usize, Queue)> {
        self.queues
            .load()
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.clone().map(|q| (i, q)))
            .collect()
    }

    /// The pipe of the first queue (by id) that takes `method`.
    pub fn pipe_for(&self, method: &str) -> Option<usize> {
        self.queues
            .load()
            .iter()
            .flatten()
            .find(|q| q.matches(method))
            .map(|q| q.pipe)
    }

    fn interval_at(&self, now: Instant, interval: u64) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms / u128::from(interval.max(1) * 1000)).unwrap_or(u64::MAX) & COUNT_MASK
    }

    /// Pushes a request into pipe `id` at `now`: true when it may pass.
    pub fn check(&self, id: usize, now: Instant) -> bool {
        let Some(p) = self.pipes.get(id) else {
            return true;
        };
        let interval = self.interval();
        let iv = self.interval_at(now, interval);
        let mut rolled = None;
        let mut n = 1;
        let _ = p
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (civ, count) = unpack(v);
                if civ >= iv {
                    // This interval (or, for a late caller, a newer one): count in it.
                    n = count + 1;
                    rolled = None;
                    Some(pack(civ, n))
                } else {
                    n = 1;
                    rolled = Some((civ, count));
                    Some(pack(iv, 1))
                }
            });
        if let Some((civ, count)) = rolled {
            p.last.store(pack(civ, count), Ordering::Relaxed);
        }
        let limit = p.limit.load(Ordering::Relaxed);
        let allowed = limit.saturating_mul(interval);
        let pass = match Algo::from_u8(p.algo.load(Ordering::Relaxed)) {
            Algo::Nop => true,
            Algo::Taildrop => n <= allowed,
            Algo::Red => {
                let (liv, lcount) = unpack(p.last.load(Ordering::Relaxed));
                let prev = if liv + 1 == iv { lcount } else { 0 };
                if allowed == 0 {
                    false
                } else {
                    let rho = prev.max(n) as f64 / allowed as f64;
                    self.draw(id, iv, n) >= red_drop_probability(rho)
                }
            }
        };
        let c = if pass { &p.accepted } else { &p.refused };
        c.fetch_add(1, Ordering::Relaxed);
        pass
    }

    /// A uniform number in [0, 1) for request `n` of interval `iv` of pipe `id`.
    fn draw(&self, id: usize, iv: u64, n: u64) -> f64 {
        let h = crate::sip::hash64(&[
            &self.seed.to_le_bytes(),
            &(id as u64).to_le_bytes(),
            &iv.to_le_bytes(),
            &n.to_le_bytes(),
        ]);
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Pipe `id` as it is now (`now` decides whether its counter is of the current interval).
    pub fn pipe(&self, id: usize, now: Instant) -> Option<PipeState> {
        let p = self.pipes.get(id)?;
        let iv = self.interval_at(now, self.interval());
        let (civ, count) = unpack(p.window.load(Ordering::Relaxed));
        let (liv, lcount) = unpack(p.last.load(Ordering::Relaxed));
        let (counter, last_counter) = if civ == iv {
            (count, if liv + 1 == iv { lcount } else { 0 })
        } else if civ + 1 == iv {
            (0, count)
        } else {
            (0, 0)
        };
        Some(PipeState {
            id,
            algo: Algo::from_u8(p.algo.load(Ordering::Relaxed)),
            limit: p.limit.load(Ordering::Relaxed),
            counter,
            last_counter,
            accepted: p.accepted.load(Ordering::Relaxed),
            refused: p.refused.load(Ordering::Relaxed),
        })
    }

    /// Every pipe that is not NOP, and every pipe a queue names.
    pub fn pipes_in_use(&self, now: Instant) -> Vec<PipeState> {
        let queued: Vec<usize> = self.queues().iter().map(|(_, q)| q.pipe).collect();
        (0..MAX_PIPES)
            .filter_map(|i| self.pipe(i, now))
            .filter(|p| p.algo != Algo::Nop || queued.contains(&p.id))
            .collect()
    }
}

#[cfg(test)]
mod tests;
