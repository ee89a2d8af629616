//! Stream connections of one shard: its `SO_REUSEPORT` listening sockets, the connections it
//! accepted or opened, their write queues, and the readiness set that drives them.
//!
//! Bytes only: what a connection carries (SIP framing, TLS records) is the handler's business,
//! reached through [`StreamEvent`]s and [`Ctx::write`](crate::Ctx::write). Every descriptor is
//! non-blocking; readiness comes from one `epoll` set per shard, level-triggered. The shard's
//! I/O backend only watches that set's own descriptor (the portable backend in its epoll set,
//! io_uring with a poll request), so both backends share this one implementation of accept,
//! connect, read, write and close.
//!
//! On io_uring, more goes through the ring and only its completions come here: reads and
//! writes of open connections ([`set_native`](Streams::set_native)) and, where the kernel has
//! multishot accept (Linux 5.19), accepts ([`set_ring_accept`](Streams::set_ring_accept)):
//! each listener then keeps one multishot accept armed instead of sitting in the epoll set,
//! and every accepted descriptor takes the same way in ([`Streams::adopt`]) as one from
//! `accept4`. Outgoing connects stay readiness-driven on both backends: a connect completes
//! once, and its `EPOLLOUT` costs no more than a ring operation would.
//!
//! A connection's [`ConnId`] names its shard (low 16 bits), its slot here (24 bits) and a
//! generation (24 bits), so an id outlives its connection harmlessly: a stale id finds nothing.
//! Memory stays bounded: the whole runtime holds at most `max_connections` (past it an accepted
//! connection is closed at once and counted), and a connection whose unsent bytes pass
//! [`MAX_QUEUED`] is closed as a reader too slow to serve.
//!
//! Closes the handler asks for ([`Ctx::close`](crate::Ctx::close)) are not reported back;
//! every other end of a connection is one [`StreamEvent::Closed`].
//!
//! A leaf module: `unsafe` is allowed here (epoll and `writev`), every block says why.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;

use crate::{ConnId, SocketId};

mod accept;
mod connect;
mod native;
mod poll;
mod write;

pub(crate) use accept::tcp_listener;

/// Unsent bytes one connection may hold; past it the connection is closed (a peer that does
/// not read must not hold the shard's memory).
pub const MAX_QUEUED: usize = 4 << 20;
/// epoll events taken per poll.
const EVENTS: usize = 256;
/// Connections one listener accepts per readiness event (the rest come with the next one).
const ACCEPTS: usize = 64;
/// Read buffer: one read per readable connection per poll.
pub(crate) const READ_BUF: usize = 64 * 1024;
/// Buffers one `writev` takes.
const IOVECS: usize = 64;
/// epoll data of listeners: this bit plus the listener's index.
const LISTENER: u64 = 1 << 63;

/// What happened on one of the shard's connections.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// A connection is open: accepted on listener `socket`, or (`outgoing`) one that
    /// [`Ctx::connect`](crate::Ctx::connect) opened has connected.
    Opened {
        conn: ConnId,
        peer: SocketAddr,
        local: SocketAddr,
        socket: SocketId,
        outgoing: bool,
    },
    /// Bytes read from the connection (a chunk; message boundaries are the handler's).
    Data { conn: ConnId, data: &'a [u8] },
    /// The connection ended; its id names nothing from now on.
    Closed { conn: ConnId, reason: CloseReason },
}

/// A [`StreamEvent`] before its data is borrowed: `Data`'s bytes lie in the poll's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Opened {
        conn: ConnId,
        peer: SocketAddr,
        local: SocketAddr,
        socket: SocketId,
        outgoing: bool,
    },
    Data {
        conn: ConnId,
        len: usize,
    },
    Closed {
        conn: ConnId,
        reason: CloseReason,
    },
}

/// What the io_uring data path is asked to do for the streams (see [`Streams::native`]).
pub(crate) enum NativeReq {
    /// Keep reading connection `token` (a multishot receive into provided buffers).
    Recv { token: u64, fd: RawFd },
    /// Keep accepting on listener `listener` (a multishot accept; its completions come back
    /// through [`Streams::native_accepted`]).
    Accept { listener: u32, fd: RawFd },
    /// Write `bufs` (the first from `offset`) to connection `token`; one send in flight per
    /// connection, its buffers owned by the backend until its completion comes back.
    Send {
        token: u64,
        fd: RawFd,
        bufs: Vec<Vec<u8>>,
        offset: usize,
    },
}

/// A connection's token in the native data path: its generation and slot (48 bits).
fn token_of(id: ConnId) -> u64 {
    id.0 >> 16
}

/// Why a connection ended (the handler's own closes are not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it.
    Eof,
    /// A read or write failed (reset, timeout in the kernel).
    Error(io::ErrorKind),
    /// An outgoing connection could not be established.
    ConnectFailed(io::ErrorKind),
    /// More than [`MAX_QUEUED`] bytes waited to be written.
    Overflow,
}

/// Stream counters of one shard (folded into [`ShardStats`](crate::ShardStats)).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamCounters {
    pub(crate) accepted: u64,
    /// Of `accepted`, those whose descriptor came from a ring completion.
    pub(crate) accepted_ring: u64,
    pub(crate) refused: u64,
    pub(crate) connected: u64,
    pub(crate) connect_failed: u64,
    pub(crate) closed_eof: u64,
    pub(crate) closed_error: u64,
    pub(crate) closed_overflow: u64,
    pub(crate) closed_local: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) open: u64,
    pub(crate) syscalls: u64,
}

/// Facts about one connection, for an operator's listing.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub conn: ConnId,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub socket: SocketId,
    pub outgoing: bool,
    pub opened: Instant,
    pub last_read: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bytes queued and not yet written.
    pub queued: usize,
}

struct Listener {
    id: SocketId,
    sock: Socket,
    local: SocketAddr,
    accepts: Accepts,
}

/// Where a listener's connections are accepted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accepts {
    /// In the epoll set: readiness, then `accept4`.
    Epoll,
    /// The backend's ring keeps a multishot accept armed; not in the epoll set.
    Ring,
    /// A ring listener waiting in the epoll set for a connection: its accept failed for want
    /// of descriptors while none waited (the kernel takes a descriptor before it looks), and
    /// asking again at once would only fail again. Readable, it goes back to the ring.
    Parked,
}

#[derive(PartialEq, Eq)]
enum State {
    Connecting,
    Open,
    /// Close once the queue is written.
    Closing,
}

struct Conn {
    id: ConnId,
    sock: Socket,
    state: State,
    peer: SocketAddr,
    local: SocketAddr,
    socket: SocketId,
    outgoing: bool,
    opened: Instant,
    last_read: Instant,
    bytes_in: u64,
    bytes_out: u64,
    /// Unsent buffers; the first one is written from `offset`.
    queue: VecDeque<Vec<u8>>,
    offset: usize,
    queued: usize,
    /// EPOLLOUT is in the interest set.
    want_out: bool,
    /// In `Streams::dirty`.
    dirty: bool,
    /// Native data path: a send of this connection is in flight.
    sending: bool,
}

/// Limits shared by every shard's streams.
#[derive(Debug)]
pub(crate) struct ConnLimit {
    pub(crate) max: usize,
    pub(crate) open: AtomicUsize,
}

impl ConnLimit {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> bool {
        let mut cur = self.open.load(Ordering::Relaxed);
        loop {
            if cur >= self.max {
                return false;
            }
            match self.open.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn give(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One shard's listeners and connections.
pub(crate) struct Streams {
    shard: usize,
    epoll: OwnedFd,
    listeners: Vec<Listener>,
    slots: Vec<Option<Conn>>,
    generations: Vec<u32>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    limit: Arc<ConnLimit>,
    events: Vec<libc::epoll_event>,
    /// Events of the current poll: `events[cursor..ready]` not handled yet.
    ready: usize,
    cursor: usize,
    /// Events made and not yet taken by `next`.
    pending: VecDeque<Event>,
    /// The last poll filled its event list: more may be ready.
    more: bool,
    /// A descriptor held in reserve: when accept fails for want of descriptors (EMFILE),
    /// it is closed to accept and at once close the waiting connection, then taken again;
    /// else the listener would stay readable and the shard spin on it.
    spare: Option<std::fs::File>,
    /// Reads and writes of open connections go through the backend (io_uring: multishot
    /// receives into provided buffers, sends batched with the datagrams) instead of
    /// readiness and system calls here; connects stay readiness-driven (accepts too, unless
    /// a listener's `accepts` says otherwise).
    native: bool,
    /// What the native data path is asked to do next (drained before each submit).
    pub(crate) reqs: Vec<NativeReq>,
    pub(crate) counters: StreamCounters,
}

fn epoll_ctl(ep: &OwnedFd, op: i32, fd: i32, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ep` and `fd` are open descriptors and `ev` a live epoll_event (ignored by DEL).
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Streams {
    pub(crate) fn new(
        shard: usize,
        listeners: Vec<(SocketId, Socket, SocketAddr)>,
        limit: Arc<ConnLimit>,
    ) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let listeners: Vec<Listener> = listeners
            .into_iter()
            .map(|(id, sock, local)| Listener {
                id,
                sock,
                local,
                accepts: Accepts::Epoll,
            })
            .collect();
        for (i, l) in listeners.iter().enumerate() {
            epoll_ctl(
                &epoll,
                libc::EPOLL_CTL_ADD,
                l.sock.as_raw_fd(),
                libc::EPOLLIN as u32,
                LISTENER | i as u64,
            )?;
        }
        Ok(Self {
            shard,
            epoll,
            listeners,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            limit,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            ready: 0,
            cursor: 0,
            pending: VecDeque::new(),
            more: false,
            spare: std::fs::File::open("/dev/null").ok(),
            native: false,
            reqs: Vec::new(),
            counters: StreamCounters::default(),
        })
    }

    /// The descriptor the backend watches: readable when a listener or connection is ready.
    pub(crate) fn fd(&self) -> i32 {
        self.epoll.as_raw_fd()
    }

    /// Switches open connections' reads and writes to the backend (before any exists).
    pub(crate) fn set_native(&mut self, native: bool) {
        self.native = native;
    }

    fn slot_of_token(&self, token: u64) -> Option<usize> {
        let slot = (token & 0xff_ffff) as usize;
        match self.slots.get(slot) {
            Some(Some(c)) if token_of(c.id) == token => Some(slot),
            _ => None,
        }
    }

    /// The last poll may have left ready descriptors behind (its event list was full).
    pub(crate) fn more(&self) -> bool {
        self.more
    }

    /// Queued writes wait for [`flush`](Self::flush).
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        if conn.shard() != self.shard {
            return None;
        }
        let slot = ((conn.0 >> 16) & 0xff_ffff) as usize;
        match self.slots.get(slot) {
            Some(Some(c)) if c.id == conn => Some(slot),
            _ => None,
        }
    }

    /// Adds a connection: an accepted one (open), or an outgoing one (connecting); watched by
    /// the epoll set, or (native data path, open) with a receive asked of the backend.
    fn insert(
        &mut self,
        sock: Socket,
        peer: SocketAddr,
        local: SocketAddr,
        socket: SocketId,
        outgoing: bool,
        now: Instant,
    ) -> io::Result<(ConnId, usize)> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                if self.slots.len() >= 0xff_ffff {
                    return Err(io::Error::other("connection table full"));
                }
                self.slots.push(None);
                self.generations.push(0);
                self.slots.len() - 1
            }
        };
        let gen = (self.generations[slot].wrapping_add(1)) & 0xff_ffff;
        self.generations[slot] = gen;
        let id = ConnId((u64::from(gen) << 40) | ((slot as u64) << 16) | self.shard as u64);
        let conn = Conn {
            id,
            sock,
            state: if outgoing {
                State::Connecting
            } else {
                State::Open
            },
            peer,
            local,
            socket,
            outgoing,
            opened: now,
            last_read: now,
            bytes_in: 0,
            bytes_out: 0,
            queue: VecDeque::new(),
            offset: 0,
            queued: 0,
            // A connecting socket is watched for writability (its connect completing).
            want_out: outgoing,
            dirty: false,
            sending: false,
        };
        let fd = conn.sock.as_raw_fd();
        let events = if conn.state == State::Connecting {
            libc::EPOLLOUT as u32
        } else {
            libc::EPOLLIN as u32
        };
        if self.native && conn.state == State::Open {
            self.reqs.push(NativeReq::Recv {
                token: token_of(id),
                fd,
            });
        } else if let Err(e) = epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, fd, events, slot as u64)
        {
            self.free.push(slot);
            return Err(e);
        }
        self.slots[slot] = Some(conn);
        self.counters.open += 1;
        Ok((id, slot))
    }

    /// Drops slot `slot`'s connection (its descriptor closes with it).
    fn remove(&mut self, slot: usize) -> Option<Conn> {
        let c = self.slots.get_mut(slot)?.take()?;
        // Only a connection the epoll set watches leaves it: on the native data path an open
        // one never joined it (a DEL would cost a failing system call per connection).
        if !self.native || c.state == State::Connecting {
            let _ = epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, c.sock.as_raw_fd(), 0, 0);
        }
        if self.native {
            // A receive (or send) in flight holds the socket: shutting it down ends them.
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.free.push(slot);
        self.counters.open = self.counters.open.saturating_sub(1);
        self.limit.give();
        Some(c)
    }

    pub(crate) fn info(&self, conn: ConnId) -> Option<ConnInfo> {
        let slot = self.slot_of(conn)?;
        self.slots[slot].as_ref().map(info)
    }

    /// Every open connection of this shard.
    pub(crate) fn list(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.slots.iter().flatten().map(info)
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.remove(slot);
            }
        }
    }
}

/// Why [`Ctx::write`](crate::Ctx::write) did not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// No such connection on this shard (closed, or another shard's).
    NoConnection,
    /// The queue passed [`MAX_QUEUED`]: the connection was closed.
    Overflow,
}

fn info(c: &Conn) -> ConnInfo {
    ConnInfo {
        conn: c.id,
        peer: c.peer,
        local: c.local,
        socket: c.socket,
        outgoing: c.outgoing,
        opened: c.opened,
        last_read: c.last_read,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        queued: c.queued,
    }
}
