//! `ser-shards`: a thread-per-core runtime. It moves datagrams, stream bytes, events and timers;
//! it knows nothing of SIP (nor of TLS: a stream's bytes are the handler's to decrypt and frame).
//!
//! A [`Runtime`] starts one *shard* per core (a thread, optionally pinned). Every shard owns its
//! own `SO_REUSEPORT` UDP socket on every listen address, its own I/O backend, timer heap and
//! mailbox, and one [`Handler`] value built on the shard thread by the caller's factory. A shard's
//! loop is: submit the batch of sends and wait (the only place it blocks), hand each received
//! message (a datagram; framed stream messages come through the same door) to the handler, drain the mailbox (events, handed-off datagrams, blocking-job
//! results), fire due timers, flush posts to other shards.
//!
//! Two I/O backends sit behind one small internal trait (`shard::Io`):
//! - `uring` (Linux): the io-uring crate directly; multishot `RecvMsg` with a provided-buffer
//!   ring (single-shot `RecvMsg` where the kernel lacks them), batched `Send`/`SendMsg`, an
//!   eventfd read for mailbox wake-ups, and the timer deadline passed to `io_uring_enter`.
//! - `portable`: `recvmmsg`/`sendmmsg` in batches of 32 and `epoll` (Linux only for now; other
//!   unix systems would need a `poll`-based variant).
//!
//! [`Backend::Auto`] probes io_uring and falls back to the portable backend where io_uring is
//! missing or refused (qemu-user, seccomp, `kernel.io_uring_disabled`, old kernels).
//!
//! Stream (TCP) connections live in `streams`: each shard owns `SO_REUSEPORT` listeners on the
//! stream addresses and every connection it accepted or opened ([`Ctx::connect`]); a
//! [`ConnId`] names its owner, and only the owner writes to it ([`Ctx::write`]). Accepts and
//! connects are driven by one epoll set per shard whose descriptor the backend watches. Reads
//! and writes: with io_uring (where multishot receives exist), multishot `Recv` into provided
//! buffers and `SendMsg` SQEs batched with the datagrams, no system call of their own; with
//! the portable backend, readiness from the same epoll set, `read` and `writev`.
//!
//! What this crate deliberately does not do: parse anything, decide which shard owns a datagram
//! (the handler decides and calls [`Ctx::handoff`]), message framing on streams, TLS, or
//! async/await. Handlers are plain
//! callbacks that must not block; blocking work goes to [`Ctx::spawn_blocking`].
//!
//! `unsafe` lives only in the leaf modules `sys`, `portable`, `uring` and `os` (process-level
//! calls the daemon needs: signals, identity, host name, syslog).

mod config;
mod ctx;
mod mailbox;
pub mod os;
mod pool;
#[cfg(target_os = "linux")]
mod portable;
mod reaped;
mod runtime;
mod shard;
mod stats;
mod streams;
mod sys;
mod timer;
#[cfg(target_os = "linux")]
mod uring;

pub use config::{Backend, BackendKind, Config, ConfigError, BACKEND_ENV};
pub use ctx::Ctx;
pub use mailbox::Remote;
pub use runtime::{Bound, Runtime};
pub use stats::ShardStats;
pub use streams::{CloseReason, ConnInfo, StreamEvent, WriteError, MAX_QUEUED};
pub use timer::TimerId;

use std::net::SocketAddr;

/// Checks whether the io_uring backend can run here (what [`Backend::Auto`] tries first):
/// `Err` says why not (ENOSYS under qemu-user, EPERM from seccomp or
/// `kernel.io_uring_disabled`, a kernel too old for the operations used).
pub fn io_uring_probe() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        uring::probe(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "io_uring needs Linux",
        ))
    }
}

/// The application side of a shard: plain callbacks, called on the shard thread only.
///
/// Every call is wrapped in `catch_unwind`: a panic is counted in [`ShardStats::panics`] and the
/// shard goes on with the next datagram (the handler's own state may be half-updated; keep
/// invariants simple). Handlers must not block: use [`Ctx::spawn_blocking`].
pub trait Handler: 'static {
    /// Events posted to this shard ([`Ctx::post`], [`Remote::post`], blocking-job results).
    type Event: Send + 'static;

    /// Called once on the shard thread before the first datagram.
    fn on_start(&mut self, _ctx: &mut Ctx<'_, Self::Event>) {}

    /// A message arrived from a transport: a datagram on one of this shard's sockets, or a
    /// message framed from one of its stream connections (`msg.conn`); or it was handed off by
    /// another shard (`msg.handed_off`). Both kinds come through this one door.
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self::Event>, msg: Inbound<'_>);

    /// Something happened on one of this shard's stream connections: opened (accepted or
    /// connected), bytes read, or closed by the peer or an error. Framing the bytes into
    /// messages is the handler's (then it may pass them to [`on_message`](Self::on_message)
    /// itself, with `conn` set).
    fn on_stream(&mut self, _ctx: &mut Ctx<'_, Self::Event>, _event: StreamEvent<'_>) {}

    /// An event posted to this shard, or the result of a job from [`Ctx::spawn_blocking`].
    fn on_event(&mut self, ctx: &mut Ctx<'_, Self::Event>, event: Self::Event);

    /// A timer set with [`Ctx::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self::Event>, timer: TimerId, token: u64);
}

/// One received message, borrowed from the backend's receive buffer for the duration of
/// [`Handler::on_message`]: a whole datagram, or one message a stream's framing cut out.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The payload (never truncated: oversize datagrams are dropped and counted).
    pub data: &'a [u8],
    /// The stream connection it was framed from; None for a datagram.
    pub conn: Option<ConnId>,
    /// The sender.
    pub peer: SocketAddr,
    /// The address the receiving socket is bound to (the wildcard address for wildcard binds).
    pub local: SocketAddr,
    /// The receiving socket; replies sent on it leave from `local`.
    pub socket: SocketId,
    /// True when another shard received it and handed it to this one.
    pub handed_off: bool,
    /// When it arrived: the kernel's receive time where the sockets stamp datagrams
    /// ([`Config::stamp`]), else the start of the loop iteration that received it.
    pub at: std::time::Instant,
}

/// A stream connection: the shard that owns it (low 16 bits; the only one that may write to
/// it) and its sequence number there. Messages for another shard's connection go through that
/// shard's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The shard that owns the connection.
    pub fn shard(self) -> usize {
        (self.0 & 0xffff) as usize
    }
}

/// A socket index: the same index on every shard means the same listen address
/// (`Config::listen[id]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

/// One of the current shard's sockets and the address it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketInfo {
    pub id: SocketId,
    pub local: SocketAddr,
    /// A stream listener (its id comes after every datagram socket's).
    pub stream: bool,
}
