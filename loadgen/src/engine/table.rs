//! The shard's call table: calls in a slab, found by Call-ID (a hash, with the bytes as a
//! fallback key where two live Call-IDs hash alike); new calls built from the pool of finished
//! ones; a finished call's outcome counted and its buffers pooled.
//!
//! It does not run calls: steps, timers and matching are the state machine's
//! ([`super::machine`]).

use std::net::SocketAddr;
use std::time::Instant;

use ser_shards::SocketId;

use super::call::{reuse, Call};
use super::Gen;
use crate::stats::Reason;

/// Finished calls kept for reuse, at most.
const POOL_MAX: usize = 4096;

impl Gen {
    pub(super) fn lookup(&self, cid: &[u8]) -> Option<usize> {
        if let Some(&slot) = self.by_id.get(&self.ids.hash_one(cid)) {
            let same = self.calls.get(slot).and_then(Option::as_ref);
            if same.is_some_and(|c| c.call_id.as_bytes() == cid) {
                return Some(slot);
            }
        }
        self.by_id_more.get(cid).copied()
    }

    pub(super) fn insert(&mut self, call: Call) -> usize {
        let key = self.ids.hash_one(call.call_id.as_bytes());
        if self.by_id.contains_key(&key) {
            // Another live call hashes alike: keyed by its bytes instead.
            let id: Box<[u8]> = call.call_id.as_bytes().into();
            let slot = self.place(call);
            self.by_id_more.insert(id, slot);
            return slot;
        }
        let slot = self.place(call);
        self.by_id.insert(key, slot);
        slot
    }

    fn place(&mut self, call: Call) -> usize {
        match self.free.pop() {
            Some(s) => {
                self.calls[s] = Some(call);
                s
            }
            None => {
                self.calls.push(Some(call));
                self.epochs.push(0);
                self.calls.len() - 1
            }
        }
    }

    pub(super) fn live_calls(&self) -> usize {
        self.by_id.len() + self.by_id_more.len()
    }

    pub(super) fn finish(&mut self, slot: usize, result: Result<(), Reason>, now: Instant) {
        let Some(mut call) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let key = self.ids.hash_one(call.call_id.as_bytes());
        if self.by_id.get(&key) == Some(&slot) {
            self.by_id.remove(&key);
        } else {
            self.by_id_more.remove(call.call_id.as_bytes());
        }
        self.free.push(slot);
        match result {
            Ok(()) => {
                self.local.calls.succeeded += 1;
                self.local
                    .calls
                    .record_us(now.duration_since(call.started).as_micros() as u64);
                if let Some(t) = call.txn.take() {
                    self.local.txns[t.method].fail(Reason::Timeout);
                }
            }
            Err(r) => {
                self.local.calls.fail(r);
                if let Some(t) = call.txn.take() {
                    self.local.txns[t.method].fail(r);
                }
            }
        }
        if self.pool.len() < POOL_MAX {
            self.pool.push(call);
        }
    }

    /// A new call; its buffers come from the pool of finished calls, emptied, so they keep
    /// their allocations. The caller fills in the Call-ID, the callee and the user.
    pub(super) fn new_call(
        &mut self,
        scen: usize,
        number: u64,
        sock: SocketId,
        local: SocketAddr,
        peer: SocketAddr,
        now: Instant,
    ) -> Call {
        let mut old = self.pool.pop();
        Call {
            scen,
            step: 0,
            number,
            call_id: reuse(&mut old, |c| &mut c.call_id),
            sock,
            local,
            peer,
            cseq: 0,
            last: reuse(&mut old, |c| &mut c.last),
            last_sent: reuse(&mut old, |c| &mut c.last_sent),
            routes: reuse(&mut old, |c| &mut c.routes),
            next_url: reuse(&mut old, |c| &mut c.next_url),
            peer_tag: reuse(&mut old, |c| &mut c.peer_tag),
            retrans_ms: 0,
            retrans_base: 0,
            retrans_cap: 0,
            retrans_first: now,
            retrans_epoch: 0,
            step_epoch: 0,
            txn_epoch: 0,
            txn: None,
            challenge: None,
            invite_ruri: reuse(&mut old, |c| &mut c.invite_ruri),
            user: reuse(&mut old, |c| &mut c.user),
            callee: reuse(&mut old, |c| &mut c.callee),
            started: now,
        }
    }
}
