//! Mailboxes between shards, the state all shards share, and [`Remote`], the handle for
//! posting from outside the runtime.
//!
//! A mailbox is a mutex-protected `Vec` plus an eventfd. The `notified` flag makes posting cheap
//! under load: only the post that flips it from false to true writes the eventfd, and the shard
//! clears it before taking the queue, so a wake-up is never lost and a burst of posts costs one
//! syscall. Shards batch their own posts per destination and flush once per loop iteration.
//! Nothing here blocks except the short critical sections of the queue mutex.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pool::Pool;
use crate::stats::AtomicStats;
use crate::sys::EventFd;
use crate::SocketId;

/// What travels between shards.
pub(crate) enum Msg<E> {
    Event(E),
    Handoff(OwnedDatagram),
    /// A blocking job panicked; counted in the spawning shard's stats.
    JobPanicked,
}

/// A datagram copied out of the receiving shard's buffer for [`Ctx::handoff`](crate::Ctx::handoff).
pub(crate) struct OwnedDatagram {
    pub(crate) data: Vec<u8>,
    pub(crate) conn: Option<crate::ConnId>,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) socket: SocketId,
    pub(crate) at: std::time::Instant,
}

pub(crate) struct Mailbox<E> {
    queue: Mutex<Vec<Msg<E>>>,
    notified: AtomicBool,
    pub(crate) waker: EventFd,
}

impl<E> Mailbox<E> {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self {
            queue: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            waker: EventFd::new()?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Msg<E>>> {
        // A panic while holding this lock can only come from an allocation failure; the Vec
        // is still consistent, so keep going.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts one message; returns whether an eventfd write (a syscall) was needed.
    pub(crate) fn push(&self, msg: Msg<E>) -> bool {
        self.lock().push(msg);
        self.notify()
    }

    /// Moves all of `msgs` into the mailbox (one lock, at most one wake-up).
    pub(crate) fn push_all(&self, msgs: &mut Vec<Msg<E>>) -> bool {
        if msgs.is_empty() {
            return false;
        }
        self.lock().append(msgs);
        self.notify()
    }

    fn notify(&self) -> bool {
        if self.notified.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.waker.wake();
        true
    }

    /// Wakes the shard without posting anything (shutdown).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// True when something was posted since the last [`take`](Self::take).
    pub(crate) fn pending(&self) -> bool {
        self.notified.load(Ordering::SeqCst)
    }

    /// Swaps the queued messages into `into` (which should be empty; its capacity is reused).
    pub(crate) fn take(&self, into: &mut Vec<Msg<E>>) {
        // Clear the flag first: a post racing with us either lands in this take or flips the
        // flag again and wakes us.
        self.notified.store(false, Ordering::SeqCst);
        std::mem::swap(&mut *self.lock(), into);
    }
}

/// State shared by all shards of one runtime and its [`Remote`]s.
pub(crate) struct Shared<E> {
    pub(crate) mailboxes: Vec<Mailbox<E>>,
    pub(crate) stats: Vec<AtomicStats>,
    pub(crate) stop: AtomicBool,
    pub(crate) pool: Pool,
}

impl<E> Shared<E> {
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for m in &self.mailboxes {
            m.wake();
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A handle to a running runtime from any thread: post events, broadcast, shut down.
pub struct Remote<E> {
    pub(crate) shared: Arc<Shared<E>>,
}

impl<E> Clone for Remote<E> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<E: Send + 'static> Remote<E> {
    /// Posts `event` to shard `shard`'s [`Handler::on_event`](crate::Handler::on_event).
    /// An out-of-range shard is a caller bug: it panics in debug builds and drops the event in
    /// release builds.
    pub fn post(&self, shard: usize, event: E) {
        debug_assert!(
            shard < self.shared.mailboxes.len(),
            "post to shard {shard} of {}",
            self.shard_count()
        );
        if let Some(m) = self.shared.mailboxes.get(shard) {
            m.push(Msg::Event(event));
        }
    }

    /// Posts `make(i)` to every shard `i`.
    pub fn broadcast(&self, mut make: impl FnMut(usize) -> E) {
        for (i, m) in self.shared.mailboxes.iter().enumerate() {
            m.push(Msg::Event(make(i)));
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shared.mailboxes.len()
    }

    /// A snapshot of every shard's counters, as [`Runtime::stats`](crate::Runtime::stats).
    pub fn stats(&self) -> Vec<crate::ShardStats> {
        self.shared.stats.iter().map(AtomicStats::load).collect()
    }

    /// Asks every shard to exit; [`Runtime::join`](crate::Runtime::join) then returns.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    pub fn is_shutdown(&self) -> bool {
        self.shared.stopping()
    }
}
