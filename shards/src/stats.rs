//! Per-shard counters: [`ShardStats`] (a plain `Copy` snapshot) and its published form.
//!
//! The hot path only bumps plain integers owned by the shard; once per loop iteration the shard
//! stores them into relaxed atomics that [`Runtime::stats`](crate::Runtime::stats) reads. So a
//! snapshot may lag by one loop iteration, and no counter is ever shared between cores.

use portable_atomic::AtomicU64;
use std::sync::atomic::Ordering;

macro_rules! shard_stats {
    ($( $(#[$doc:meta])* $field:ident ),* $(,)?) => {
        /// Counters of one shard since it started.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ShardStats {
            $( $(#[$doc])* pub $field: u64, )*
        }

        /// The published copy of a [`ShardStats`].
        #[derive(Debug, Default)]
        pub(crate) struct AtomicStats {
            $( $field: AtomicU64, )*
        }

        impl AtomicStats {
            pub(crate) fn store(&self, s: &ShardStats) {
                $( self.$field.store(s.$field, Ordering::Relaxed); )*
            }

            pub(crate) fn load(&self) -> ShardStats {
                ShardStats { $( $field: self.$field.load(Ordering::Relaxed), )* }
            }
        }

        impl ShardStats {
            /// Field-wise sum, e.g. to total all shards.
            pub fn add(&mut self, other: &ShardStats) {
                $( self.$field += other.$field; )*
            }
        }
    };
}

shard_stats! {
    /// Datagrams received from this shard's sockets (not counting handoffs in).
    datagrams_received,
    /// Payload bytes of `datagrams_received`.
    bytes_received,
    /// Datagrams the kernel accepted for sending.
    datagrams_sent,
    /// Payload bytes of `datagrams_sent`.
    bytes_sent,
    /// Sends that failed (bad socket id, unreachable, wrong address family, ...).
    send_errors,
    /// Receive completions that reported an error.
    recv_errors,
    /// Datagrams larger than `max_datagram`, dropped.
    truncated,
    /// Datagrams handed to this shard by others.
    handoffs_in,
    /// Datagrams this shard handed to others.
    handoffs_out,
    /// Events delivered to `on_event` (posts and blocking-job results).
    events,
    /// Timers delivered to `on_timer`.
    timers_fired,
    /// Handler calls (and blocking jobs) that panicked.
    panics,
    /// System calls made by the I/O loop (`io_uring_enter`, `epoll_wait`, `recvmmsg`,
    /// `sendmmsg`, eventfd reads/writes): divide by datagrams for "syscalls per datagram".
    syscalls,
    /// Loop iterations (wake-ups).
    loops,
    /// Stream connections open now (a gauge).
    conns_open,
    /// Connections accepted on stream listeners.
    conns_accepted,
    /// Of `conns_accepted`, those the io_uring backend accepted in its ring (multishot
    /// accept) rather than by an `accept4` call after readiness.
    conns_accepted_ring,
    /// Connections refused: past the connection limit, or accept failed.
    conns_refused,
    /// Outgoing connections established.
    conns_connected,
    /// Outgoing connections that could not be established.
    conns_connect_failed,
    /// Connections the peer closed.
    conns_closed_eof,
    /// Connections ended by a read or write error.
    conns_closed_error,
    /// Connections closed because the peer did not read what we wrote.
    conns_closed_overflow,
    /// Connections the handler closed.
    conns_closed_local,
    /// Bytes read from stream connections.
    stream_bytes_in,
    /// Bytes written to stream connections.
    stream_bytes_out,
}

impl ShardStats {
    /// A total over several shards.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a ShardStats>) -> ShardStats {
        let mut t = ShardStats::default();
        for s in all {
            t.add(s);
        }
        t
    }
}

/// The counters an I/O backend keeps itself (the shard adds its own and publishes the sum).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IoCounters {
    pub(crate) datagrams_received: u64,
    pub(crate) bytes_received: u64,
    pub(crate) datagrams_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) send_errors: u64,
    pub(crate) recv_errors: u64,
    pub(crate) truncated: u64,
    pub(crate) syscalls: u64,
}

impl ShardStats {
    /// Copies the stream counters in.
    pub(crate) fn set_streams(&mut self, c: &crate::streams::StreamCounters) {
        self.conns_open = c.open;
        self.conns_accepted = c.accepted;
        self.conns_accepted_ring = c.accepted_ring;
        self.conns_refused = c.refused;
        self.conns_connected = c.connected;
        self.conns_connect_failed = c.connect_failed;
        self.conns_closed_eof = c.closed_eof;
        self.conns_closed_error = c.closed_error;
        self.conns_closed_overflow = c.closed_overflow;
        self.conns_closed_local = c.closed_local;
        self.stream_bytes_in = c.bytes_in;
        self.stream_bytes_out = c.bytes_out;
        self.syscalls += c.syscalls;
    }

    /// Copies the backend's counters in; `own_syscalls` are the shard's own (mailbox wake-ups).
    pub(crate) fn set_io(&mut self, io: &IoCounters, own_syscalls: u64, own_send_errors: u64) {
        self.datagrams_received = io.datagrams_received;
        self.bytes_received = io.bytes_received;
        self.datagrams_sent = io.datagrams_sent;
        self.bytes_sent = io.bytes_sent;
        self.send_errors = io.send_errors + own_send_errors;
        self.recv_errors = io.recv_errors;
        self.truncated = io.truncated;
        self.syscalls = io.syscalls + own_syscalls;
    }
}
