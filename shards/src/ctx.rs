//! [`Ctx`]: what a handler may do during a callback, and the per-shard state behind it
//! (`Core`): the send queue, timers, outgoing posts, local queue and counters.
//!
//! Everything a `Ctx` method does is non-blocking and local to the shard: sends are queued and
//! submitted in one batch when the handler returns to the loop; posts to other shards are
//! batched per destination and flushed once per loop iteration; posts to the shard itself go
//! through a local queue, never through a mailbox.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mailbox::{Msg, OwnedDatagram, Remote, Shared};
use crate::stats::ShardStats;
use crate::streams::{self, ConnInfo, Event as StreamIo, StreamEvent, Streams, WriteError};
use crate::timer::{TimerId, Timers};
use crate::{ConnId, Handler, Inbound, SocketId, SocketInfo};

/// One datagram waiting to be sent.
pub(crate) struct Outgoing {
    pub(crate) socket: u32,
    pub(crate) dst: SocketAddr,
    pub(crate) buf: Vec<u8>,
}

/// Sends queued by the handler, and a pool of spare buffers so that a steady state allocates
/// nothing.
#[derive(Default)]
pub(crate) struct SendQueue {
    pub(crate) pending: VecDeque<Outgoing>,
    free: Vec<Vec<u8>>,
}

/// Spare send buffers kept per shard; more are freed.
const SPARE_BUFFERS: usize = 1024;
/// Above this capacity a returned buffer is freed instead of kept (one huge reply must not pin
/// memory forever).
const SPARE_CAPACITY: usize = 16 * 1024;

impl SendQueue {
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_CAPACITY {
            buf.clear();
            self.free.push(buf);
        }
    }
}

/// Per-shard state that handlers reach through [`Ctx`].
pub(crate) struct Core<E> {
    pub(crate) shard: usize,
    pub(crate) now: Instant,
    pub(crate) sockets: Vec<SocketInfo>,
    pub(crate) sends: SendQueue,
    pub(crate) timers: Timers,
    /// Posts to other shards, per destination, flushed once per loop iteration.
    outbox: Vec<Vec<Msg<E>>>,
    /// Posts and handoffs to this shard itself.
    local: VecDeque<Msg<E>>,
    pub(crate) stats: ShardStats,
    own_syscalls: u64,
    own_send_errors: u64,
    pub(crate) shared: Arc<Shared<E>>,
    /// This shard's stream listeners and connections.
    pub(crate) streams: Streams,
    /// The buffer stream reads land in (outside `streams`, so a handler reading it may write).
    rbuf: Vec<u8>,
}

impl<E: Send + 'static> Core<E> {
    pub(crate) fn new(
        shard: usize,
        sockets: Vec<SocketInfo>,
        shared: Arc<Shared<E>>,
        streams: Streams,
    ) -> Self {
        let n = shared.mailboxes.len();
        Self {
            streams,
            rbuf: vec![0; streams::READ_BUF],
            shard,
            now: Instant::now(),
            sockets,
            sends: SendQueue::default(),
            timers: Timers::default(),
            outbox: (0..n).map(|_| Vec::new()).collect(),
            local: VecDeque::new(),
            stats: ShardStats::default(),
            own_syscalls: 0,
            own_send_errors: 0,
            shared,
        }
    }

    /// Runs one handler callback; a panic is counted and swallowed so the shard lives on.
    pub(crate) fn call<H: Handler<Event = E>>(
        &mut self,
        handler: &mut H,
        f: impl FnOnce(&mut H, &mut Ctx<'_, E>),
    ) {
        let mut ctx = Ctx { core: self };
        if catch_unwind(AssertUnwindSafe(|| f(handler, &mut ctx))).is_err() {
            self.stats.panics += 1;
        }
    }

    /// Hands one received datagram to the handler.
    pub(crate) fn on_received<H: Handler<Event = E>>(
        &mut self,
        handler: &mut H,
        data: &[u8],
        peer: SocketAddr,
        socket: u32,
        at: Option<Instant>,
    ) {
        let Some(info) = self.sockets.get(socket as usize) else {
            return;
        };
        let dgram = Inbound {
            data,
            conn: None,
            peer,
            local: info.local,
            socket: info.id,
            handed_off: false,
            at: at.unwrap_or(self.now),
        };
        self.call(handler, |h, ctx| h.on_message(ctx, dgram));
    }

    fn deliver<H: Handler<Event = E>>(&mut self, handler: &mut H, msg: Msg<E>) {
        match msg {
            Msg::Event(e) => {
                self.stats.events += 1;
                self.call(handler, |h, ctx| h.on_event(ctx, e));
            }
            Msg::Handoff(d) => {
                self.stats.handoffs_in += 1;
                let dgram = Inbound {
                    data: &d.data,
                    conn: d.conn,
                    peer: d.peer,
                    local: d.local,
                    socket: d.socket,
                    handed_off: true,
                    at: d.at,
                };
                self.call(handler, |h, ctx| h.on_message(ctx, dgram));
            }
            Msg::JobPanicked => self.stats.panics += 1,
        }
    }

    /// Delivers what other shards, remotes and blocking jobs posted, then this shard's own posts.
    pub(crate) fn run_mailbox<H: Handler<Event = E>>(
        &mut self,
        handler: &mut H,
        inbox: &mut Vec<Msg<E>>,
    ) {
        let mailbox = &self.shared.mailboxes[self.shard];
        if mailbox.pending() {
            mailbox.take(inbox);
            for msg in inbox.drain(..) {
                self.deliver(handler, msg);
            }
        }
        // Bounded: what the handlers post to themselves now waits for the next iteration.
        for _ in 0..self.local.len() {
            let Some(msg) = self.local.pop_front() else {
                break;
            };
            self.deliver(handler, msg);
        }
    }

    /// Hands one completion of the backend's reap to the handler.
    pub(crate) fn on_reaped<H: Handler<Event = E>>(
        &mut self,
        handler: &mut H,
        r: crate::reaped::Reaped<'_>,
    ) {
        use crate::reaped::Reaped;
        match r {
            Reaped::Datagram(r) => self.on_received(handler, r.data, r.peer, r.socket, r.at),
            Reaped::StreamData { token, data, more } => {
                let now = self.now;
                if let Some(conn) = self.streams.native_read(token, data.len(), more, now) {
                    self.call(handler, |h, ctx| {
                        h.on_stream(ctx, StreamEvent::Data { conn, data })
                    });
                }
            }
            Reaped::Accepted {
                listener,
                res,
                more,
            } => {
                let now = self.now;
                if let Some(ev) = self.streams.native_accepted(listener, res, more, now) {
                    let ev = stream_event(ev, &[]);
                    self.call(handler, |h, ctx| h.on_stream(ctx, ev));
                }
            }
            Reaped::StreamEnd { token, err } => {
                if let Some((conn, reason)) = self.streams.native_read_end(token, err) {
                    self.call(handler, |h, ctx| {
                        h.on_stream(ctx, StreamEvent::Closed { conn, reason })
                    });
                }
            }
            Reaped::StreamSent {
                token,
                res,
                bufs,
                offset,
            } => {
                if let Some((conn, reason)) = self.streams.native_sent(token, res, bufs, offset) {
                    self.call(handler, |h, ctx| {
                        h.on_stream(ctx, StreamEvent::Closed { conn, reason })
                    });
                }
            }
        }
    }

    /// Hands what the shard's stream connections have ready (accepts, connects, bytes,
    /// closes) to the handler.
    pub(crate) fn poll_streams<H: Handler<Event = E>>(&mut self, handler: &mut H) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        self.streams.begin_poll();
        while let Some(ev) = self.streams.next(self.now, &mut rbuf) {
            let ev = stream_event(ev, &rbuf);
            self.call(handler, |h, ctx| h.on_stream(ctx, ev));
        }
        self.rbuf = rbuf;
    }

    /// Writes what handlers queued on connections; connections that fail doing so are
    /// reported to the handler.
    pub(crate) fn flush_streams<H: Handler<Event = E>>(&mut self, handler: &mut H) {
        if !self.streams.has_dirty() {
            return;
        }
        let mut closed = Vec::new();
        self.streams.flush(&mut closed);
        for (conn, reason) in closed {
            self.call(handler, |h, ctx| {
                h.on_stream(ctx, StreamEvent::Closed { conn, reason })
            });
        }
    }

    /// Fires due timers, earliest first; at most a bounded number per iteration so that a
    /// handler re-arming at `now` cannot starve I/O.
    pub(crate) fn fire_timers<H: Handler<Event = E>>(&mut self, handler: &mut H) {
        for _ in 0..4096 {
            let Some((id, token)) = self.timers.pop_due(self.now) else {
                return;
            };
            self.stats.timers_fired += 1;
            self.call(handler, |h, ctx| h.on_timer(ctx, id, token));
        }
    }

    /// Moves this iteration's posts into the other shards' mailboxes.
    pub(crate) fn flush_outbox(&mut self) {
        for (i, msgs) in self.outbox.iter_mut().enumerate() {
            if self.shared.mailboxes[i].push_all(msgs) {
                self.own_syscalls += 1;
            }
        }
    }

    /// How long the next wait may last: zero when work is already queued, else until the next
    /// timer (or forever).
    pub(crate) fn timeout(&mut self) -> Option<Duration> {
        if !self.local.is_empty()
            || self.shared.mailboxes[self.shard].pending()
            || self.streams.more()
            || self.streams.has_dirty()
        {
            return Some(Duration::ZERO);
        }
        let at = self.timers.next_deadline()?;
        Some(at.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn publish(&mut self, io: &crate::stats::IoCounters) {
        self.stats
            .set_io(io, self.own_syscalls, self.own_send_errors);
        self.stats.set_streams(&self.streams.counters);
        self.shared.stats[self.shard].store(&self.stats);
    }

    fn post_msg(&mut self, shard: usize, msg: Msg<E>) {
        if shard == self.shard {
            self.local.push_back(msg);
        } else if let Some(q) = self.outbox.get_mut(shard) {
            q.push(msg);
        } else {
            debug_assert!(false, "post to shard {shard} of {}", self.outbox.len());
        }
    }
}

/// The handler's view of a stream event: `Data` borrows its bytes from `rbuf` (the poll's read
/// buffer; events that carry no bytes may pass an empty one).
fn stream_event(ev: StreamIo, rbuf: &[u8]) -> StreamEvent<'_> {
    match ev {
        StreamIo::Opened {
            conn,
            peer,
            local,
            socket,
            outgoing,
        } => StreamEvent::Opened {
            conn,
            peer,
            local,
            socket,
            outgoing,
        },
        StreamIo::Data { conn, len } => StreamEvent::Data {
            conn,
            data: &rbuf[..len.min(rbuf.len())],
        },
        StreamIo::Closed { conn, reason } => StreamEvent::Closed { conn, reason },
    }
}

/// What a [`Handler`] callback may do: send, hand off, post, set timers, spawn blocking work.
pub struct Ctx<'a, E> {
    core: &'a mut Core<E>,
}

impl<E: Send + 'static> Ctx<'_, E> {
    /// The time the current loop iteration started (one clock read per wake-up).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// This shard's index, `0..shard_count()`.
    pub fn shard(&self) -> usize {
        self.core.shard
    }

    pub fn shard_count(&self) -> usize {
        self.core.outbox.len()
    }

    /// This shard's sockets, indexed by [`SocketId`].
    pub fn sockets(&self) -> &[SocketInfo] {
        &self.core.sockets
    }

    /// Queues a copy of `data` for `dst` on `socket`; sent in the batch submitted when the
    /// handler returns to the loop. An unknown socket id counts as a send error.
    pub fn send(&mut self, socket: SocketId, dst: SocketAddr, data: &[u8]) {
        self.send_with(socket, dst, |buf| buf.extend_from_slice(data));
    }

    /// Like [`send`](Self::send), but `fill` writes the datagram straight into a pooled buffer
    /// (empty on entry), which saves a copy.
    pub fn send_with(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        if socket.0 as usize >= self.core.sockets.len() {
            self.core.own_send_errors += 1;
            return;
        }
        let mut buf = self.core.sends.buffer();
        fill(&mut buf);
        self.core.sends.pending.push_back(Outgoing {
            socket: socket.0,
            dst,
            buf,
        });
    }

    /// Opens a stream connection to `dst` without waiting, from the address family (and
    /// address, unless a wildcard) of stream listener `socket`. [`Handler::on_stream`] later
    /// gets `Opened` (then writes queued meanwhile go out) or `Closed` with
    /// `ConnectFailed`. Refused past the runtime's connection limit.
    pub fn connect(&mut self, socket: SocketId, dst: SocketAddr) -> std::io::Result<ConnId> {
        let now = self.core.now;
        self.core.streams.connect(socket, dst, now)
    }

    /// Queues a copy of `data` on this shard's connection `conn`; written with the batch
    /// submitted when the handler returns to the loop. A connection of another shard is a
    /// `NoConnection` error: post to its shard (`conn.shard()`) instead.
    pub fn write(&mut self, conn: ConnId, data: &[u8]) -> Result<(), WriteError> {
        let mut buf = self.core.sends.buffer();
        buf.extend_from_slice(data);
        self.core.streams.write(conn, buf)
    }

    /// Like [`write`](Self::write), taking the buffer.
    pub fn write_owned(&mut self, conn: ConnId, data: Vec<u8>) -> Result<(), WriteError> {
        self.core.streams.write(conn, data)
    }

    /// Closes connection `conn` of this shard: at once, or (`after_writes`) once what is
    /// queued on it is written. No `Closed` event follows a close asked for here.
    pub fn close(&mut self, conn: ConnId, after_writes: bool) {
        self.core.streams.close(conn, after_writes);
    }

    /// Facts about this shard's connection `conn`.
    pub fn conn_info(&self, conn: ConnId) -> Option<ConnInfo> {
        self.core.streams.info(conn)
    }

    /// Every connection this shard holds.
    pub fn conns(&self) -> Vec<ConnInfo> {
        self.core.streams.list().collect()
    }

    /// Copies `dgram` to shard `shard`, whose handler gets it with `handed_off = true`. The
    /// handler decides ownership (e.g. by a hash of the Call-ID); the runtime only moves bytes.
    pub fn handoff(&mut self, shard: usize, dgram: &Inbound<'_>) {
        self.core.stats.handoffs_out += 1;
        let d = OwnedDatagram {
            data: dgram.data.to_vec(),
            conn: dgram.conn,
            peer: dgram.peer,
            local: dgram.local,
            socket: dgram.socket,
            at: dgram.at,
        };
        self.core.post_msg(shard, Msg::Handoff(d));
    }

    /// Posts `event` to shard `shard` (this one included), delivered by `on_event`.
    pub fn post(&mut self, shard: usize, event: E) {
        self.core.post_msg(shard, Msg::Event(event));
    }

    /// Posts `make(i)` to every shard `i`, this one included.
    pub fn broadcast(&mut self, mut make: impl FnMut(usize) -> E) {
        for i in 0..self.shard_count() {
            self.post(i, make(i));
        }
    }

    /// Calls `on_timer(id, token)` on this shard once `at` has passed.
    pub fn set_timer(&mut self, at: Instant, token: u64) -> TimerId {
        self.core.timers.set(at, token)
    }

    /// Timers set and neither fired nor cancelled.
    pub fn timer_count(&self) -> usize {
        self.core.timers.len()
    }

    /// Cancels a pending timer; a no-op when it already fired or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.core.timers.cancel(id);
    }

    /// Runs `job` on the blocking pool and returns at once; its result comes back to this
    /// shard's `on_event`. A panicking job is counted in [`ShardStats::panics`].
    pub fn spawn_blocking(&mut self, job: impl FnOnce() -> E + Send + 'static) {
        let shared = self.core.shared.clone();
        let shard = self.core.shard;
        self.core.shared.pool.submit(Box::new(move || {
            let msg = match catch_unwind(AssertUnwindSafe(job)) {
                Ok(e) => Msg::Event(e),
                Err(_) => Msg::JobPanicked,
            };
            shared.mailboxes[shard].push(msg);
        }));
    }

    /// This shard's counters as of the start of the current loop iteration.
    pub fn stats(&self) -> &ShardStats {
        &self.core.stats
    }

    /// A handle for posting from other threads (e.g. from inside a blocking job).
    pub fn remote(&self) -> Remote<E> {
        Remote {
            shared: self.core.shared.clone(),
        }
    }

    /// Asks the whole runtime to stop.
    pub fn shutdown(&mut self) {
        self.core.shared.shutdown();
    }
}
