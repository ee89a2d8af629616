//! The resolver's TTL cache and what goes into it: an answer's records of the asked type
//! (following CNAMEs, asking for the end of a chain the server left out), kept for their TTL,
//! and negative answers (NXDOMAIN, no data) kept for the SOA's negative TTL (RFC 2308), capped.
//!
//! It does not talk to servers (that is [`super::exchange`]) nor decide what to ask (that is
//! the RFC 3263 procedure in [`super`]). Key types: [`Cache`], [`Entry`], [`Lookup`].

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::wire::{Rdata, Response};
use super::{DnsError, Resolver, NEGATIVE_TTL_MAX, NEGATIVE_TTL_NO_SOA, POSITIVE_TTL_MAX};

/// CNAME links followed inside one answer, and follow-up queries for a dangling chain.
const MAX_CNAME_CHAIN: usize = 8;

/// What the DNS said about one (name, type), as cached.
#[derive(Clone, Debug)]
pub(super) enum Lookup {
    /// The records of the asked type (after following CNAMEs), never empty.
    Records(Arc<[Rdata]>),
    /// The name exists, but has no record of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) value: Lookup,
    pub(super) expires: Instant,
}

/// The TTL cache: (lower-case name, type) → answer. Bounded: when full, expired entries go
/// first, then the eighth that expires soonest.
pub(super) struct Cache {
    pub(super) map: HashMap<(String, RecordType), Entry>,
    capacity: usize,
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Self {
        Cache {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &(String, RecordType), now: Instant) -> Option<Entry> {
        self.map.get(key).filter(|e| e.expires > now).cloned()
    }

    fn insert(&mut self, key: (String, RecordType), entry: Entry, now: Instant) {
        if entry.expires <= now {
            // TTL 0: used once, never cached; drop a stale copy so it is not found again.
            self.map.remove(&key);
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.map.retain(|_, e| e.expires > now);
            if self.map.len() >= self.capacity {
                let mut expiries: Vec<Instant> = self.map.values().map(|e| e.expires).collect();
                let k = (self.capacity / 8).max(1).min(expiries.len() - 1);
                let (_, threshold, _) = expiries.select_nth_unstable(k);
                let threshold = *threshold;
                self.map.retain(|_, e| e.expires > threshold);
            }
        }
        self.map.insert(key, entry);
    }
}

impl Resolver {
    pub(super) fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        // A panic elsewhere while holding the lock leaves a consistent map: keep using it.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Lookup, DnsError> {
        self.lookup_entry(name, rtype, 0).map(|e| e.value)
    }

    /// One (name, type) from the cache, or asked and then cached.
    fn lookup_entry(
        &self,
        name: &Name,
        rtype: RecordType,
        depth: usize,
    ) -> Result<Entry, DnsError> {
        let key = (name.to_lowercase().to_ascii(), rtype);
        if let Some(hit) = self.lock_cache().get(&key, Instant::now()) {
            return Ok(hit);
        }
        let msg = self.ask(name, rtype)?;
        let now = Instant::now();
        let entry = if msg.rcode == ResponseCode::NXDomain {
            Entry {
                value: Lookup::NxDomain,
                expires: now + secs(negative_ttl(&msg)),
            }
        } else {
            let (canonical, records, ttl) = extract_answer(&msg, name, rtype);
            if !records.is_empty() {
                Entry {
                    value: Lookup::Records(records.into()),
                    expires: now + secs(ttl.min(POSITIVE_TTL_MAX)),
                }
            } else if !canonical.eq_ignore_root(name) && depth < MAX_CNAME_CHAIN {
                // A CNAME chain whose end the server left out: ask for the end ourselves.
                let end = self.lookup_entry(&canonical, rtype, depth + 1)?;
                Entry {
                    value: end.value,
                    expires: end.expires.min(now + secs(ttl.min(POSITIVE_TTL_MAX))),
                }
            } else {
                Entry {
                    value: Lookup::NoData,
                    expires: now + secs(negative_ttl(&msg)),
                }
            }
        };
        self.lock_cache().insert(key, entry.clone(), now);
        Ok(entry)
    }
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

/// The answer section's records of `rtype` for `qname`, following CNAMEs: the name the chain
/// ends at, the records there, and the smallest TTL along the way.
pub(super) fn extract_answer(
    msg: &Response,
    qname: &Name,
    rtype: RecordType,
) -> (Name, Vec<Rdata>, u32) {
    let mut current = qname.clone();
    let mut ttl = u32::MAX;
    for _ in 0..MAX_CNAME_CHAIN {
        let link = msg.answers.iter().find_map(|r| match &r.data {
            Rdata::Cname(target) if r.class == DNSClass::IN && r.name.eq_ignore_root(&current) => {
                Some((r.ttl, target.clone()))
            }
            _ => None,
        });
        match link {
            Some((link_ttl, target)) => {
                ttl = ttl.min(link_ttl);
                current = target;
            }
            None => break,
        }
    }
    let mut records = Vec::new();
    for r in &msg.answers {
        if r.data.record_type() == rtype
            && r.class == DNSClass::IN
            && r.name.eq_ignore_root(&current)
        {
            ttl = ttl.min(r.ttl);
            records.push(r.data.clone());
        }
    }
    (current, records, ttl)
}

/// RFC 2308: the SOA's own TTL or its minimum field, whichever is smaller, capped.
pub(super) fn negative_ttl(msg: &Response) -> u32 {
    msg.authority
        .iter()
        .find_map(|r| match &r.data {
            Rdata::Soa(soa) => Some(r.ttl.min(soa.minimum())),
            _ => None,
        })
        .map_or(NEGATIVE_TTL_NO_SOA, |ttl| ttl.min(NEGATIVE_TTL_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_stays_bounded() {
        let now = Instant::now();
        let mut cache = Cache::new(16);
        let entry = |s| Entry {
            value: Lookup::NoData,
            expires: now + Duration::from_secs(s),
        };
        for i in 0..100u64 {
            cache.insert((format!("n{i}"), RecordType::A), entry(i + 1), now);
            assert!(cache.map.len() <= 16);
        }
        // The latest (longest-lived) survive.
        assert!(cache.get(&("n99".into(), RecordType::A), now).is_some());
        assert!(cache.get(&("n0".into(), RecordType::A), now).is_none());
        let later = now + Duration::from_secs(1000);
        assert!(cache.get(&("n99".into(), RecordType::A), later).is_none());
        // TTL 0: not kept.
        cache.insert(("zero".into(), RecordType::A), entry(0), now);
        assert!(cache.get(&("zero".into(), RecordType::A), now).is_none());
    }
}
