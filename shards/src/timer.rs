//! Per-shard timers: a binary heap of deadlines with lazy cancellation.
//!
//! Why a heap rather than a wheel: a shard holds at most a few hundred thousand SIP timers, a
//! heap push/pop is O(log n) with no tick to drive, and it gives the exact next deadline the
//! backend needs for its single wait call. Cancelled timers stay in the heap until they reach
//! the top (or a rebuild, when more than half the heap is dead); liveness is a set lookup.
//! Timers with the same deadline fire in the order they were set. Not thread-safe by design:
//! one heap per shard.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Names a timer for [`Ctx::cancel_timer`](crate::Ctx::cancel_timer); unique per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub u64);

#[derive(Debug, Default)]
pub(crate) struct Timers {
    // (deadline, id): ids grow, so equal deadlines pop in the order they were set.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, u64>,
    next_id: u64,
}

impl Timers {
    pub(crate) fn set(&mut self, at: Instant, token: u64) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((at, id)));
        self.live.insert(id, token);
        TimerId(id)
    }

    /// Cancelling a timer that already fired or was cancelled is a no-op.
    pub(crate) fn cancel(&mut self, id: TimerId) {
        if self.live.remove(&id.0).is_some() && self.heap.len() > 64 + 2 * self.live.len() {
            let live = &self.live;
            self.heap.retain(|Reverse((_, id))| live.contains_key(id));
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.live.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns one timer due at `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, u64)> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Entry::Occupied(e) = self.live.entry(id) {
                return Some((TimerId(id), e.remove()));
            }
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn order_cancel_and_ties() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let a = t.set(t0 + Duration::from_millis(30), 3);
        t.set(t0 + Duration::from_millis(10), 1);
        t.set(t0 + Duration::from_millis(20), 2);
        t.set(t0 + Duration::from_millis(20), 22);
        let c = t.set(t0 + Duration::from_millis(15), 99);
        t.cancel(c);
        t.cancel(c);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let fired: Vec<u64> =
            std::iter::from_fn(|| t.pop_due(t0 + Duration::from_millis(25)).map(|x| x.1)).collect();
        assert_eq!(fired, [1, 2, 22]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(1)), Some((a, 3)));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn mass_cancel_compacts() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let ids: Vec<_> = (0..1000)
            .map(|i| t.set(t0 + Duration::from_secs(i), i))
            .collect();
        for id in &ids[..990] {
            t.cancel(*id);
        }
        assert!(t.heap.len() < 200);
        assert_eq!(t.len(), 10);
    }
}
