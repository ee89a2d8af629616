//! The one table type of the transaction layer: entries in a generational slab, found by
//! [`Key`], with a lazy timer index. A plain transaction ([`Transaction`]) is an entry; so is
//! tm's cell, which holds a server transaction and the client transactions of its branches
//! and is found by any of their keys.
//!
//! Entries live in a slab (a `Vec` of slots reused through a free list); an [`EntryId`] is a
//! slot and its generation, so an id kept after its entry went never reaches the slot's next
//! tenant. Any number of keys may lead to one entry, each with a caller-chosen tag (tm tags a
//! client key with its branch). The timer index is a binary heap of `(deadline, slot,
//! generation)` with lazy deletion: an entry whose deadline changes pushes a new heap item and
//! touches nothing else; a popped item counts only when its generation is the slot's and its
//! deadline is still the entry's armed one. So the shard asks [`Table::next_deadline`] once
//! per loop, arms one runtime timer, and takes the due entries with [`Table::pop_due`].
//!
//! The caller changes an entry through [`Table::get_mut`] and then calls [`Table::rearm`],
//! which re-reads the entry's [`Timed::next_deadline`]; it removes finished entries itself
//! ([`Table::remove`], which forgets their keys too).
//!
//! What the table does not do: look at packets (the caller builds keys), send anything, count
//! t_stats (the caller's business: it knows what completion means), or limit per-source
//! rates. Its capacity is a hard limit: past it, [`Table::insert`] fails and the caller
//! answers 503 (principle 6).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::{ClientTransaction, Key, ServerTransaction, Transmit, TxnEvent};

/// What the table needs of an entry: when it next wants `now`.
pub trait Timed {
    /// The earliest time the entry has work to do; None while it waits for nothing.
    fn next_deadline(&self) -> Option<Instant>;
}

/// Either kind of transaction, as one entry.
#[derive(Debug)]
pub enum Transaction {
    Client(ClientTransaction),
    Server(ServerTransaction),
}

impl Transaction {
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

impl Timed for Transaction {
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Self::Client(t) => t.next_deadline(),
            Self::Server(t) => t.next_deadline(),
        }
    }
}

/// An entry's handle: slab slot and generation (a reused slot never answers to an old id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId {
    slot: u32,
    generation: u32,
}

/// Why the table refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table holds `capacity` entries: answer 503.
    #[error("transaction table full")]
    Full,
    #[error("a transaction with this key exists")]
    Exists,
    #[error("no such entry")]
    Gone,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    entry: Option<Box<T>>,
    /// The keys that lead here, so removing the entry forgets them.
    keys: Vec<Key>,
    /// The deadline currently in the heap for this entry.
    armed: Option<Instant>,
}

/// One shard's entries (see the module documentation).
#[derive(Debug)]
pub struct Table<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    live: usize,
    capacity: usize,
    index: HashMap<Key, (EntryId, u32), ahash::RandomState>,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl<T: Timed> Table<T> {
    /// A table holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            capacity,
            index: HashMap::with_hasher(ahash::RandomState::new()),
            timers: BinaryHeap::new(),
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A new limit (a reload); entries over it stay until they end.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Whether no key leads anywhere (the fast path of a lookup).
    pub fn no_keys(&self) -> bool {
        self.index.is_empty()
    }

    /// Stores a new entry and arms its deadline; `Full` past capacity.
    pub fn insert(&mut self, entry: T) -> Result<EntryId, TableError> {
        if self.live >= self.capacity {
            return Err(TableError::Full);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let Ok(n) = u32::try_from(self.slots.len()) else {
                    return Err(TableError::Full);
                };
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                    keys: Vec::new(),
                    armed: None,
                });
                n
            }
        };
        let s = self.slots.get_mut(slot as usize).ok_or(TableError::Full)?;
        s.entry = Some(Box::new(entry));
        s.armed = None;
        let id = EntryId {
            slot,
            generation: s.generation,
        };
        self.live += 1;
        self.rearm(id);
        Ok(id)
    }

    fn slot(&self, id: EntryId) -> Option<&Slot<T>> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
    }

    fn slot_mut(&mut self, id: EntryId) -> Option<&mut Slot<T>> {
        self.slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)
    }

    pub fn get(&self, id: EntryId) -> Option<&T> {
        self.slot(id)?.entry.as_deref()
    }

    /// The entry, to change; call [`Self::rearm`] afterwards if its deadline may have moved.
    pub fn get_mut(&mut self, id: EntryId) -> Option<&mut T> {
        self.slot_mut(id)?.entry.as_deref_mut()
    }

    /// Makes `key` lead to `id` with `tag`; `Exists` if it leads somewhere already.
    pub fn index(&mut self, key: Key, id: EntryId, tag: u32) -> Result<(), TableError> {
        if self.index.contains_key(&key) {
            return Err(TableError::Exists);
        }
        let s = self.slot_mut(id).ok_or(TableError::Gone)?;
        if s.entry.is_none() {
            return Err(TableError::Gone);
        }
        s.keys.push(key.clone());
        self.index.insert(key, (id, tag));
        Ok(())
    }

    /// Where `key` leads, with its tag.
    pub fn lookup(&self, key: &Key) -> Option<(EntryId, u32)> {
        let &(id, tag) = self.index.get(key)?;
        self.get(id).map(|_| (id, tag))
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    /// Forgets `key` (its transaction ended; the entry stays).
    pub fn unindex(&mut self, key: &Key) {
        let Some((id, _)) = self.index.remove(key) else {
            return;
        };
        if let Some(s) = self.slot_mut(id) {
            s.keys.retain(|k| k != key);
        }
    }

    /// After a change to entry `id`: index its deadline anew if it moved.
    pub fn rearm(&mut self, id: EntryId) {
        let Some(s) = self.slot_mut(id) else {
            return;
        };
        let deadline = s.entry.as_deref().and_then(Timed::next_deadline);
        if deadline == s.armed {
            return;
        }
        s.armed = deadline;
        if let Some(at) = deadline {
            self.timers.push(Reverse((at, id.slot, id.generation)));
        }
        self.compact();
    }

    /// Removes entry `id` and every key that leads to it.
    pub fn remove(&mut self, id: EntryId) -> Option<T> {
        let s = self.slot_mut(id)?;
        let entry = s.entry.take()?;
        // Stale heap items and ids of this slot die with the old generation.
        s.generation = s.generation.wrapping_add(1);
        s.armed = None;
        let mut keys = std::mem::take(&mut s.keys);
        for k in keys.drain(..) {
            self.index.remove(&k);
        }
        // The slot keeps its key list's buffer for the next entry (no allocation per entry).
        if let Some(s) = self.slots.get_mut(id.slot as usize) {
            s.keys = keys;
        }
        self.free.push(id.slot);
        self.live = self.live.saturating_sub(1);
        Some(*entry)
    }

    /// The earliest deadline of any entry.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if self.is_live(at, slot, generation) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// The next entry whose deadline is at or before `now`, its heap item consumed (nothing
    /// is armed for it until the caller's [`Self::rearm`]).
    pub fn pop_due(&mut self, now: Instant) -> Option<EntryId> {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                return None;
            }
            self.timers.pop();
            if !self.is_live(at, slot, generation) {
                continue;
            }
            let id = EntryId { slot, generation };
            if let Some(s) = self.slot_mut(id) {
                s.armed = None;
            }
            return Some(id);
        }
        None
    }

    fn is_live(&self, at: Instant, slot: u32, generation: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.generation == generation && s.entry.is_some() && s.armed == Some(at))
    }

    /// Stale heap items normally drain as their time comes; a table whose deadlines keep
    /// moving later could pile them up, so rebuild when they outnumber the live ones.
    fn compact(&mut self) {
        if self.timers.len() <= 2 * self.live + 64 {
            return;
        }
        let items = std::mem::take(&mut self.timers).into_vec();
        let live: Vec<_> = items
            .into_iter()
            .filter(|&Reverse((at, slot, generation))| self.is_live(at, slot, generation))
            .collect();
        self.timers = BinaryHeap::from(live);
    }
}
