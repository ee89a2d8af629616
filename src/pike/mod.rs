//! pike: requests per source address over a sampling window, and which addresses are over
//! the limit (Kamailio's pike module), as a sans-IO core: the caller passes `now` and the
//! source address and gets a verdict; it logs the [`Event`]s the core leaves.
//!
//! Semantics (Kamailio's): time is cut into sampling units of `sampling_time_unit`; an address
//! is *hot* when its requests in the current unit or in the previous one reach
//! `reqs_density_per_unit` (the request that reaches it is the first refused). A hot address is
//! blocked: [`Local::check`] says no for as long as it stays hot, and it is released once a
//! whole unit passes without it being found hot. Requests from a blocked address still count,
//! so a source that keeps flooding stays blocked. An address is forgotten
//! `remove_latency` after its last request (it only shortens re-detection; it is not a
//! blocking time). Addresses are whole IPv4 or IPv6 addresses (Kamailio's tree also flags
//! hot prefixes; this does not).
//!
//! Shards: each shard owns a [`Local`] table (no lock; the shard's thread only) and counts its
//! requests exactly. Requests of one source are spread over every shard (the Call-ID picks the
//! shard), so each shard publishes an address's count to the [`Shared`] sketch every
//! `K = 1 + density / (4 (shards - 1))` requests, and reads the others' published share from it.
//! What the other shards have not yet published is less than `K` each, so the total an address
//! is judged by is short of the truth by at most `(shards - 1)(K - 1) <= density / 4`: an
//! address is refused by the time it sent at most 1.25 × the density in a unit, whatever the
//! number of shards (exactly at the density with one shard, which never publishes).
//!
//! Memory: each shard tracks at most `max_addresses` (default 65536). A new address that finds
//! the table full evicts every address that is neither blocked nor warm (a quarter of the
//! density in the last two units); when that frees less than an eighth of the table, every
//! address that is not blocked goes. Evictions are counted; an address that still finds no
//! room passes unchecked, counted. Once per unit each shard forgets the addresses idle for
//! `remove_latency`.

pub mod shared;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use shared::{key, key_ip, splitmix64, BlockRec, Event, Shared};

/// pike's parameters, resolved when the script loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `sampling_time_unit`.
    pub unit: Duration,
    /// `reqs_density_per_unit`.
    pub density: u32,
    /// `remove_latency`.
    pub remove_latency: Duration,
    /// `max_addresses`: addresses each shard tracks at most.
    pub max_addresses: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            unit: Duration::from_secs(2),
            density: 30,
            remove_latency: Duration::from_secs(120),
            max_addresses: 65536,
        }
    }
}

impl Config {
    fn unit_ms(&self) -> u64 {
        u64::try_from(self.unit.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Units an idle address is kept (at least the two the window looks at).
    fn keep_units(&self) -> u64 {
        let ms = u64::try_from(self.remove_latency.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(self.unit_ms()).max(2)
    }

    /// Warm: a quarter of the density (Kamailio's), at least 1.
    fn warm(&self) -> u64 {
        u64::from(self.density / 4).max(1)
    }
}

/// One address in a shard's table.
#[derive(Debug)]
struct Entry {
    /// The unit `cur` counts.
    unit: u64,
    cur: u32,
    prev: u32,
    /// Requests of `unit` not yet published to the sketch.
    unpublished: u32,
    /// What this shard published for `unit` and the unit before.
    pub_cur: u32,
    pub_prev: u32,
    last_seen: u64,
    /// Set while this shard finds the address hot: the block list's record.
    block: Option<Arc<BlockRec>>,
}

impl Entry {
    fn new(unit: u64) -> Self {
        Self {
            unit,
            cur: 0,
            prev: 0,
            unpublished: 0,
            pub_cur: 0,
            pub_prev: 0,
            last_seen: unit,
            block: None,
        }
    }

    /// Moves the window to `unit`.
    fn roll(&mut self, unit: u64) {
        if self.unit >= unit {
            return;
        }
        if self.unit + 1 == unit {
            self.prev = self.cur;
            self.pub_prev = self.pub_cur;
        } else {
            self.prev = 0;
            self.pub_prev = 0;
        }
        self.cur = 0;
        self.pub_cur = 0;
        self.unpublished = 0;
        self.unit = unit;
    }

    /// Its requests in `unit` and the unit before, as of `unit`.
    fn recent(&self, unit: u64) -> u64 {
        if self.unit == unit {
            u64::from(self.cur) + u64::from(self.prev)
        } else if self.unit + 1 == unit {
            u64::from(self.cur)
        } else {
            0
        }
    }
}

/// One shard's pike table.
#[derive(Debug)]
pub struct Local {
    shard: usize,
    shards: usize,
    entries: HashMap<u128, Entry, ahash::RandomState>,
    /// The unit length the table counts in (a reload that changes it starts afresh).
    unit_ms: u64,
    swept_unit: u64,
    /// What the last checks want logged; the caller drains it.
    pub events: Vec<Event>,
}

impl Local {
    /// Shard `shard` of `shards`.
    pub fn new(shard: usize, shards: usize) -> Self {
        Self {
            shard,
            shards: shards.max(1),
            entries: HashMap::default(),
            unit_ms: 0,
            swept_unit: 0,
            events: Vec::new(),
        }
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests of one address between two publications to the sketch (`u32::MAX`: never,
    /// with one shard).
    pub fn publish_every(&self, density: u32) -> u32 {
        if self.shards <= 1 {
            return u32::MAX;
        }
        let others = u32::try_from(self.shards - 1).unwrap_or(u32::MAX);
        1 + density / others.saturating_mul(4).max(1)
    }

    /// A request from `ip` at `now`: true when it may pass, false when `ip` is over the limit.
    pub fn check(&mut self, now: Instant, ip: IpAddr, cfg: &Config, shared: &Shared) -> bool {
        let unit_ms = cfg.unit_ms();
        if unit_ms != self.unit_ms {
            self.entries.clear();
            self.unit_ms = unit_ms;
            shared.set_unit_ms(unit_ms);
        }
        let unit = shared.unit_at(now, unit_ms);
        if unit != self.swept_unit {
            self.swept_unit = unit;
            self.expire(unit, cfg);
            shared.sweep(now, unit, &mut self.events);
        }
        let counters = shared.counters(self.shard);
        counters.checked.fetch_add(1, Ordering::Relaxed);
        let key = key(ip);
        if !self.entries.contains_key(&key) && self.entries.len() >= cfg.max_addresses {
            let evicted = self.evict(unit, cfg);
            counters.evicted.fetch_add(evicted, Ordering::Relaxed);
            if self.entries.len() >= cfg.max_addresses {
                counters.untracked.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        let k = self.publish_every(cfg.density);
        let e = self.entries.entry(key).or_insert_with(|| Entry::new(unit));
        e.roll(unit);
        e.cur = e.cur.saturating_add(1);
        e.last_seen = unit;
        let (mut cur, mut prev) = (u64::from(e.cur), u64::from(e.prev));
        if k != u32::MAX {
            e.unpublished += 1;
            if e.unpublished >= k {
                shared.add(key, unit, e.unpublished);
                e.pub_cur = e.pub_cur.saturating_add(e.unpublished);
                e.unpublished = 0;
            }
            cur += shared
                .estimate(key, unit)
                .saturating_sub(u64::from(e.pub_cur));
            if unit > 0 {
                prev += shared
                    .estimate(key, unit - 1)
                    .saturating_sub(u64::from(e.pub_prev));
            }
        }
        if cur.max(prev) < u64::from(cfg.density) {
            e.block = None;
            return true;
        }
        counters.refused.fetch_add(1, Ordering::Relaxed);
        match &e.block {
            Some(rec) if !rec.released() => rec.touch(unit),
            _ => e.block = Some(shared.block(key, ip, now, unit, &mut self.events)),
        }
        false
    }

    /// Forgets the addresses idle for `remove_latency`.
    fn expire(&mut self, unit: u64, cfg: &Config) {
        let keep = cfg.keep_units();
        self.entries.retain(|_, e| e.last_seen + keep > unit);
    }

    /// Makes room in a full table (see the module's doc); returns how many went.
    fn evict(&mut self, unit: u64, cfg: &Config) -> u64 {
        let before = self.entries.len();
        let warm = cfg.warm();
        self.entries
            .retain(|_, e| e.block.is_some() || e.recent(unit) >= warm);
        if before - self.entries.len() < cfg.max_addresses / 8 {
            self.entries.retain(|_, e| e.block.is_some());
        }
        (before - self.entries.len()) as u64
    }
}

#[cfg(test)]
mod tests;
