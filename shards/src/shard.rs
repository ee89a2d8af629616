//! The shard loop and the small trait ([`Io`]) both backends implement.
//!
//! One iteration: flush posts to other shards; submit queued sends and wait (the only blocking
//! call, bounded by the next timer deadline); hand every received datagram to the handler; run
//! the mailbox; fire due timers; publish counters. The loop is generic over the backend so the
//! per-datagram path has no dynamic dispatch. No `unsafe` here.

use std::io;
use std::time::{Duration, Instant};

use crate::ctx::{Core, SendQueue};
use crate::reaped::Reaped;
use crate::stats::IoCounters;
use crate::Handler;

/// A shard's I/O backend.
pub(crate) trait Io {
    /// Takes the queued sends (buffers go back to `sends` once the kernel is done with them).
    /// The portable backend sends them here; io_uring only queues SQEs, submitted by `wait`.
    fn submit(&mut self, sends: &mut SendQueue) -> io::Result<()>;

    /// Waits until something completes or `timeout` passes (`None`: no timer). With
    /// `min_wait`, completions that come sooner do not end the wait before `min_wait` has
    /// passed (unless `timeout` is shorter). `Err` only for failures the shard cannot
    /// recover from.
    fn wait(&mut self, timeout: Option<Duration>, min_wait: Option<Duration>) -> io::Result<()>;

    /// Hands every datagram received since the last call to `deliver`; receive buffers are
    /// reused once `deliver` returns. Oversize datagrams are dropped and counted here.
    fn reap(&mut self, deliver: impl FnMut(Reaped<'_>));

    /// Whether this backend reads and writes stream connections itself (see
    /// `Streams::native`); connects stay with the streams' readiness set.
    fn native_streams(&self) -> bool {
        false
    }

    /// Whether this backend accepts on stream listeners itself (multishot accepts asked for
    /// with `NativeReq::Accept`, completions reaped as `Reaped::Accepted`); else accepts
    /// stay with the streams' readiness set.
    fn ring_accepts(&self) -> bool {
        false
    }

    /// Queues the streams' requests (receives to arm, sends) for the next submit.
    fn stream_requests(&mut self, reqs: &mut Vec<crate::streams::NativeReq>) -> io::Result<()> {
        reqs.clear();
        Ok(())
    }

    fn counters(&self) -> &IoCounters;

    /// Whether datagrams wait unread: the last [`reap`](Io::reap) stopped short (receive
    /// buffers or its read budget ran out) or a socket's queue is not empty. Asked before a
    /// batched wait only (it may cost a system call per socket).
    fn backlog(&self) -> bool;

    /// Whether the streams' readiness descriptor (given at construction) became readable
    /// since the last call; clears the flag (and re-arms the watch where needed).
    fn streams_ready(&mut self) -> bool;

    /// The backend in words, for logs.
    fn detail(&self) -> &'static str;
}

/// Runs the shard until the runtime shuts down (or the backend fails). With `batch`
/// ([`Config::batch`](crate::Config::batch)), an iteration that had I/O is followed by a wait
/// of at least `batch` from its start.
pub(crate) fn run<B: Io, H: Handler>(
    io: &mut B,
    core: &mut Core<H::Event>,
    handler: &mut H,
    batch: Option<Duration>,
) -> io::Result<()> {
    core.streams.set_native(io.native_streams());
    core.streams.set_ring_accept(io.ring_accepts());
    core.call(handler, |h, ctx| h.on_start(ctx));
    let mut inbox = Vec::new();
    let mut received = 0;
    let result = loop {
        core.flush_outbox();
        if core.shared.stopping() {
            break Ok(());
        }
        let mut timeout = core.timeout();
        // Busy: this iteration received or sends something; more is likely on its way.
        let busy = io.counters().datagrams_received != received || !core.sends.pending.is_empty();
        let mut min_wait = batch
            .filter(|_| busy)
            .map(|b| b.saturating_sub(core.now.elapsed()))
            .filter(|w| !w.is_zero());
        // A batched wait sleeps whatever is queued: not while a socket still holds datagrams
        // (a burst larger than one reap takes), or the shard falls behind and its sockets
        // overflow.
        if min_wait.is_some() && io.backlog() {
            min_wait = None;
            timeout = Some(Duration::ZERO);
        }
        core.flush_streams(handler);
        if !core.streams.reqs.is_empty() {
            if let Err(e) = io.stream_requests(&mut core.streams.reqs) {
                break Err(e);
            }
        }
        if let Err(e) = io.submit(&mut core.sends) {
            break Err(e);
        }
        // Published before blocking, so a snapshot taken while the shard idles is complete.
        core.publish(io.counters());
        received = io.counters().datagrams_received;
        if let Err(e) = io.wait(timeout, min_wait) {
            break Err(e);
        }
        core.stats.loops += 1;
        core.now = Instant::now();
        io.reap(|r| core.on_reaped(handler, r));
        if io.streams_ready() || core.streams.more() {
            core.poll_streams(handler);
        }
        core.run_mailbox(handler, &mut inbox);
        core.fire_timers(handler);
    };
    // Best effort: hand what the last iteration queued to the kernel.
    if result.is_ok() && !core.sends.pending.is_empty() && io.submit(&mut core.sends).is_ok() {
        let _ = io.wait(Some(Duration::ZERO), None);
    }
    core.publish(io.counters());
    result
}
