//! What every shard's pike table shares: a count-min sketch of atomics that carries the
//! per-address counts across shards, the list of blocked addresses (for the log, `pike.top`
//! and the metrics) and the per-shard counters.
//!
//! The sketch: [`ROWS`] rows of [`WIDTH`] slots, each slot one `AtomicU64` per parity of the
//! sampling unit, packing the unit's low 24 bits and a 40-bit count. A shard adds an address's
//! requests in batches ([`crate::pike::Local`] publishes every few requests); any shard reads
//! the smallest of the address's slots for a unit as the others' share. Collisions can only
//! make a count larger (count-min); only addresses that send several requests per unit on one
//! shard publish at all, so a flood of one-request spoofed addresses leaves the sketch empty.
//! Hashing is seeded at random per process, so colliding addresses cannot be chosen.
//!
//! The blocked list is behind a mutex taken only when a shard sees an address turn hot (once
//! per block per shard) and when a unit starts (one shard sweeps it per unit): never per
//! request. It holds at most [`MAX_LISTED`] addresses; blocks beyond are still refused,
//! counted, not listed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

// 64-bit atomics everywhere, armv5te included (no native ones there).
use portable_atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Rows of the sketch (independent hashes).
pub const ROWS: usize = 2;
/// Slots per row.
pub const WIDTH: usize = 4096;
/// Most addresses the blocked list names.
pub const MAX_LISTED: usize = 4096;
/// Per-shard counter slots (shards beyond share one, still exact: they are atomics).
const COUNTER_SLOTS: usize = 64;

const COUNT_BITS: u32 = 40;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << 24) - 1;

/// One shard's pike counters (written by that shard only: no shared cache line).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Requests `pike_check_req` looked at.
    pub checked: AtomicU64,
    /// Requests it refused (their address was over the limit).
    pub refused: AtomicU64,
    /// Addresses dropped from the table to stay under its cap.
    pub evicted: AtomicU64,
    /// Requests from an address the full table could not track (passed unchecked).
    pub untracked: AtomicU64,
}

/// A blocked address as the list keeps it.
#[derive(Debug)]
pub struct BlockRec {
    pub ip: IpAddr,
    pub since: SystemTime,
    /// When it was blocked, on the shards' clock.
    pub since_instant: Instant,
    /// The last sampling unit in which a request from it was found over the limit.
    last_hot: AtomicU64,
    released: AtomicBool,
}

impl BlockRec {
    fn new(ip: IpAddr, now: Instant, unit: u64) -> Self {
        Self {
            ip,
            since: SystemTime::now(),
            since_instant: now,
            last_hot: AtomicU64::new(unit),
            released: AtomicBool::new(false),
        }
    }

    /// Still hot in `unit` (one relaxed load, a store once per unit).
    pub fn touch(&self, unit: u64) {
        if self.last_hot.load(Ordering::Relaxed) < unit {
            self.last_hot.store(unit, Ordering::Relaxed);
        }
    }

    pub fn released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    pub fn last_hot(&self) -> u64 {
        self.last_hot.load(Ordering::Relaxed)
    }
}

/// What the pike core tells its caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `ip` went over the limit: requests from it are refused.
    Blocked(IpAddr),
    /// `ip` calmed down after being blocked for `for_`.
    Released { ip: IpAddr, for_: Duration },
    /// The blocked list is full: blocks beyond it are refused but not listed (logged once).
    ListFull,
}

#[derive(Debug, Default)]
struct Registry {
    map: HashMap<u128, Arc<BlockRec>, ahash::RandomState>,
    full_logged: bool,
}

/// The state all shards share (one per process; it outlives reloads).
#[derive(Debug)]
pub struct Shared {
    epoch: Instant,
    seeds: [u64; ROWS],
    slots: Box<[AtomicU64]>,
    registry: Mutex<Registry>,
    /// The last unit whose start swept the blocked list.
    swept_unit: AtomicU64,
    /// The sampling unit the shards count in, in ms (set from the script's parameters).
    unit_ms: AtomicU64,
    /// Blocks the full list could not name.
    pub unlisted: AtomicU64,
    counters: Box<[Counters]>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new(Instant::now(), rand::random())
    }
}

impl Shared {
    /// Units are counted from `epoch`; `seed` picks the sketch's hashes.
    pub fn new(epoch: Instant, seed: u64) -> Self {
        let mut s = seed;
        let seeds = std::array::from_fn(|_| {
            s = splitmix64(s);
            s
        });
        Self {
            epoch,
            seeds,
            slots: (0..ROWS * WIDTH * 2).map(|_| AtomicU64::new(0)).collect(),
            registry: Mutex::new(Registry::default()),
            swept_unit: AtomicU64::new(0),
            unit_ms: AtomicU64::new(2000),
            unlisted: AtomicU64::new(0),
            counters: (0..COUNTER_SLOTS).map(|_| Counters::default()).collect(),
        }
    }

    /// The sampling unit `now` falls in, for units of `unit_ms`.
    pub fn unit_at(&self, now: Instant, unit_ms: u64) -> u64 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms / u128::from(unit_ms.max(1))).unwrap_or(u64::MAX)
    }

    /// Records the unit length the shards use (the management side sweeps with it).
    pub(crate) fn set_unit_ms(&self, ms: u64) {
        if self.unit_ms.load(Ordering::Relaxed) != ms {
            self.unit_ms.store(ms, Ordering::Relaxed);
        }
    }

    pub fn counters(&self, shard: usize) -> &Counters {
        let i = shard % COUNTER_SLOTS;
        // COUNTER_SLOTS > 0, so the index is always in range.
        &self.counters[i]
    }

    /// Every shard's counters summed: (checked, refused, evicted, untracked).
    pub fn totals(&self) -> [u64; 4] {
        let mut t = [0u64; 4];
        for c in self.counters.iter() {
            t[0] += c.checked.load(Ordering::Relaxed);
            t[1] += c.refused.load(Ordering::Relaxed);
            t[2] += c.evicted.load(Ordering::Relaxed);
            t[3] += c.untracked.load(Ordering::Relaxed);
        }
        t
    }

    fn slot(&self, row: usize, key: u128, unit: u64) -> Option<&AtomicU64> {
        let seed = self.seeds.get(row).copied().unwrap_or(0);
        let h =
            splitmix64(seed ^ (key as u64)) ^ splitmix64(seed.rotate_left(17) ^ (key >> 64) as u64);
        let col = (splitmix64(h) % WIDTH as u64) as usize;
        self.slots
            .get((row * WIDTH + col) * 2 + (unit & 1) as usize)
    }

    /// Adds `n` requests of `key` to `unit`.
    pub fn add(&self, key: u128, unit: u64, n: u32) {
        let tag = unit & TAG_MASK;
        for row in 0..ROWS {
            let Some(slot) = self.slot(row, key, unit) else {
                continue;
            };
            let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                let count = if v >> COUNT_BITS == tag {
                    v & COUNT_MAX
                } else {
                    0
                };
                Some(tag << COUNT_BITS | (count + u64::from(n)).min(COUNT_MAX))
            });
        }
    }

    /// The requests of `key` every shard published for `unit` (never less than the truth of
    /// what was published; more when other busy addresses share all its slots).
    pub fn estimate(&self, key: u128, unit: u64) -> u64 {
        let tag = unit & TAG_MASK;
        (0..ROWS)
            .filter_map(|row| self.slot(row, key, unit))
            .map(|slot| {
                let v = slot.load(Ordering::Relaxed);
                if v >> COUNT_BITS == tag {
                    v & COUNT_MAX
                } else {
                    0
                }
            })
            .min()
            .unwrap_or(0)
    }

    /// `ip` (`key`) is over the limit in `unit`: lists it (an [`Event::Blocked`] when it was
    /// not blocked already) and returns its record for the shard to keep.
    pub(crate) fn block(
        &self,
        key: u128,
        ip: IpAddr,
        now: Instant,
        unit: u64,
        events: &mut Vec<Event>,
    ) -> Arc<BlockRec> {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rec) = reg.map.get(&key) {
            rec.touch(unit);
            return Arc::clone(rec);
        }
        let rec = Arc::new(BlockRec::new(ip, now, unit));
        if reg.map.len() >= MAX_LISTED {
            self.unlisted.fetch_add(1, Ordering::Relaxed);
            if !reg.full_logged {
                reg.full_logged = true;
                events.push(Event::ListFull);
            }
            // Not listed: the shard keeps it only to refuse without asking again.
            return rec;
        }
        reg.map.insert(key, Arc::clone(&rec));
        events.push(Event::Blocked(ip));
        rec
    }

    /// At the start of a unit (the first shard to see it does it): releases every listed
    /// address not found over the limit in the last unit.
    pub(crate) fn sweep(&self, now: Instant, unit: u64, events: &mut Vec<Event>) {
        let last = self.swept_unit.load(Ordering::Relaxed);
        if last >= unit
            || self
                .swept_unit
                .compare_exchange(last, unit, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.map.retain(|_, rec| {
            if rec.last_hot() + 1 >= unit {
                return true;
            }
            rec.released.store(true, Ordering::Relaxed);
            events.push(Event::Released {
                ip: rec.ip,
                for_: now.saturating_duration_since(rec.since_instant),
            });
            false
        });
        if reg.map.len() < MAX_LISTED / 2 {
            reg.full_logged = false;
        }
    }

    /// Sweeps as a shard would at `now` (for readers: the management commands and metrics,
    /// so a source that went quiet is released even when no request comes to sweep).
    pub fn sweep_now(&self, now: Instant, events: &mut Vec<Event>) {
        let unit = self.unit_at(now, self.unit_ms.load(Ordering::Relaxed));
        self.sweep(now, unit, events);
    }

    /// The blocked addresses, oldest block first.
    pub fn blocked(&self) -> Vec<Arc<BlockRec>> {
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<BlockRec>> = reg.map.values().cloned().collect();
        v.sort_by_key(|r| r.since_instant);
        v
    }

    pub fn blocked_count(&self) -> usize {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// The unit length in use, in ms.
    pub fn unit_ms(&self) -> u64 {
        self.unit_ms.load(Ordering::Relaxed)
    }
}

/// An address as a table key: IPv4 (and IPv4-mapped IPv6) as `::ffff:a.b.c.d`.
pub fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a key (IPv4 shown as IPv4).
pub fn key_ip(key: u128) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
