//! The transaction table of one shard: transactions by [`Key`], a timer index, and t_stats.
//!
//! Entries live in a slab (a `Vec` of slots reused through a free list) with a hash map from
//! key to slot. The timer index is a binary heap of `(deadline, slot, generation)` with lazy
//! deletion: an entry whose deadline changes pushes a new heap item and bumps nothing else; a
//! popped item counts only when its generation is the slot's and its deadline is still the
//! entry's armed one. So the shard asks [`TxnTable::next_deadline`] once per loop, arms one
//! runtime timer, and calls [`TxnTable::expire`] when it fires.
//!
//! Every access that may change a transaction goes through a closure ([`TxnTable::update`],
//! [`TxnTable::expire`]) in which the caller drains `poll_transmit` / `poll_event`; afterwards
//! the table re-indexes the deadline and removes the entry if it terminated, counting it.
//!
//! What the table does not do: look at packets (the caller builds keys), send anything, or
//! limit per-source rates. Its capacity is a hard limit: past it, [`TxnTable::insert`] fails
//! and the caller answers 503 (principle 6).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::{ClientTransaction, Key, ServerTransaction, Transmit, TxnEvent};

/// Either kind of transaction, as stored in the table.
#[derive(Debug)]
pub enum Transaction {
    Client(ClientTransaction),
    Server(ServerTransaction),
}

impl Transaction {
    pub fn next_deadline(&self) -> Option<Instant> {
        match self {
            Self::Client(t) => t.next_deadline(),
            Self::Server(t) => t.next_deadline(),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::Client(t) => t.handle_timeout(now),
            Self::Server(t) => t.handle_timeout(now),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        match self {
            Self::Client(t) => t.poll_transmit(),
            Self::Server(t) => t.poll_transmit(),
        }
    }

    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        match self {
            Self::Client(t) => t.poll_event(),
            Self::Server(t) => t.poll_event(),
        }
    }

    pub fn is_terminated(&self) -> bool {
        match self {
            Self::Client(t) => t.is_terminated(),
            Self::Server(t) => t.is_terminated(),
        }
    }

    /// Completed (or Confirmed): a final is out, only timers remain.
    pub fn is_completed(&self) -> bool {
        match self {
            Self::Client(t) => t.is_completed(),
            Self::Server(t) => t.is_completed(),
        }
    }

    pub fn final_code(&self) -> Option<u16> {
        match self {
            Self::Client(t) => t.final_code(),
            Self::Server(t) => t.final_code(),
        }
    }

    pub fn key(&self) -> &Key {
        match self {
            Self::Client(t) => t.key(),
            Self::Server(t) => t.key(),
        }
    }
}

/// A stored transaction and the caller's context for it (next hop, response address, ...).
#[derive(Debug)]
pub struct Entry<C> {
    pub txn: Transaction,
    pub ctx: C,
}

/// Why [`TxnTable::insert`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table holds `capacity` transactions: answer 503.
    #[error("transaction table full")]
    Full,
    #[error("a transaction with this key exists")]
    Exists,
}

/// Counters for SER's t_stats (per table; the management layer sums the shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxnStats {
    /// Transactions in the table.
    pub current: u64,
    /// Of those, completed ones only waiting for their timers (SER's "waiting").
    pub waiting: u64,
    /// Transactions ever inserted.
    pub total: u64,
    /// Server transactions that ended with a final of class 2xx..6xx (index 0 = 2xx).
    pub completed: [u64; 5],
    /// Responses the TU generated itself rather than relayed ([`TxnTable::note_local_reply`]).
    pub local_replies: u64,
    /// Inserts refused because the table was full.
    pub refused: u64,
}

#[derive(Debug)]
struct Slot<C> {
    generation: u32,
    entry: Option<Stored<C>>,
}

#[derive(Debug)]
struct Stored<C> {
    key: Key,
    entry: Entry<C>,
    /// The deadline currently in the heap for this entry.
    armed: Option<Instant>,
    waiting: bool,
}

/// One shard's transactions (see the module documentation). `C` is the caller's per-entry
/// context.
#[derive(Debug)]
pub struct TxnTable<C> {
    index: HashMap<Key, usize, ahash::RandomState>,
    slots: Vec<Slot<C>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    capacity: usize,
    stats: TxnStats,
}

impl<C> TxnTable<C> {
    /// A table holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::with_hasher(ahash::RandomState::new()),
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            capacity,
            stats: TxnStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn stats(&self) -> &TxnStats {
        &self.stats
    }

    /// Counts a reply the TU generated locally (t_reply, sl on a stateful request).
    pub fn note_local_reply(&mut self) {
        self.stats.local_replies += 1;
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &Key) -> Option<&Entry<C>> {
        let &slot = self.index.get(key)?;
        self.slots.get(slot)?.entry.as_ref().map(|s| &s.entry)
    }

    /// Stores a new transaction under its own key. The caller drains its first transmit
    /// (through [`Self::update`]) or before inserting.
    pub fn insert(&mut self, txn: Transaction, ctx: C) -> Result<(), TableError> {
        if self.index.contains_key(txn.key()) {
            return Err(TableError::Exists);
        }
        if self.index.len() >= self.capacity {
            self.stats.refused += 1;
            return Err(TableError::Full);
        }
        let key = txn.key().clone();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                self.slots.len() - 1
            }
        };
        self.index.insert(key.clone(), slot);
        if let Some(s) = self.slots.get_mut(slot) {
            s.entry = Some(Stored {
                key,
                entry: Entry { txn, ctx },
                armed: None,
                waiting: false,
            });
        }
        self.stats.current += 1;
        self.stats.total += 1;
        self.refresh(slot);
        Ok(())
    }

    /// Runs `f` on the transaction under `key` (None if there is none). Drain its transmits
    /// and events inside `f`: afterwards the table re-indexes it and drops it if terminated.
    pub fn update<R>(&mut self, key: &Key, f: impl FnOnce(&mut Entry<C>) -> R) -> Option<R> {
        let &slot = self.index.get(key)?;
        let r = f(&mut self.slots.get_mut(slot)?.entry.as_mut()?.entry);
        self.refresh(slot);
        Some(r)
    }

    /// Removes the transaction under `key` (the TU gave up on it).
    pub fn remove(&mut self, key: &Key) -> Option<Entry<C>> {
        let &slot = self.index.get(key)?;
        self.take(slot)
    }

    /// The earliest deadline of any transaction.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if self.is_live(at, slot, generation) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Drives every transaction whose deadline is at or before `now`, calling `f` on each so
    /// the caller drains its transmits and events; terminated ones are then removed.
    pub fn expire(&mut self, now: Instant, mut f: impl FnMut(&mut Entry<C>)) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.is_live(at, slot, generation) {
                continue;
            }
            if let Some(stored) = self.slots.get_mut(slot).and_then(|s| s.entry.as_mut()) {
                // The heap item is consumed: nothing is armed until refresh says otherwise.
                stored.armed = None;
                stored.entry.txn.handle_timeout(now);
                f(&mut stored.entry);
            }
            self.refresh(slot);
        }
    }

    fn is_live(&self, at: Instant, slot: usize, generation: u32) -> bool {
        self.slots.get(slot).is_some_and(|s| {
            s.generation == generation && s.entry.as_ref().is_some_and(|e| e.armed == Some(at))
        })
    }

    /// After any change to the entry in `slot`: keep the timer index and counters right, and
    /// drop it if it terminated.
    fn refresh(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let generation = s.generation;
        let Some(stored) = s.entry.as_mut() else {
            return;
        };
        if stored.entry.txn.is_terminated() {
            self.take(slot);
            return;
        }
        let waiting = stored.entry.txn.is_completed();
        if waiting != stored.waiting {
            stored.waiting = waiting;
            if waiting {
                self.stats.waiting += 1;
            } else {
                self.stats.waiting = self.stats.waiting.saturating_sub(1);
            }
        }
        let deadline = stored.entry.txn.next_deadline();
        if deadline != stored.armed {
            stored.armed = deadline;
            if let Some(at) = deadline {
                self.timers.push(Reverse((at, slot, generation)));
            }
        }
        self.compact();
    }

    /// Stale heap items normally drain as their time comes; a table whose deadlines keep
    /// moving later could pile them up, so rebuild when they outnumber the live ones.
    fn compact(&mut self) {
        if self.timers.len() <= 2 * self.index.len() + 64 {
            return;
        }
        let items = std::mem::take(&mut self.timers).into_vec();
        let live: Vec<_> = items
            .into_iter()
            .filter(|&Reverse((at, slot, generation))| self.is_live(at, slot, generation))
            .collect();
        self.timers = BinaryHeap::from(live);
    }

    fn take(&mut self, slot: usize) -> Option<Entry<C>> {
        let s = self.slots.get_mut(slot)?;
        let stored = s.entry.take()?;
        // Stale heap items for this slot die with the old generation.
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.index.remove(&stored.key);
        self.stats.current = self.stats.current.saturating_sub(1);
        if stored.waiting {
            self.stats.waiting = self.stats.waiting.saturating_sub(1);
        }
        let is_server = matches!(stored.entry.txn, Transaction::Server(_));
        if let (true, Some(code)) = (is_server, stored.entry.txn.final_code()) {
            let class = usize::from(code / 100).saturating_sub(2);
            if let Some(n) = self.stats.completed.get_mut(class) {
                *n += 1;
            }
        }
        Some(stored.entry)
    }
}
