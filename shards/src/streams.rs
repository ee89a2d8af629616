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
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{ConnId, SocketId};

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

/// A non-blocking `SO_REUSEPORT` TCP listener on `addr` (`IPV6_V6ONLY` on IPv6).
pub(crate) fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind tcp {addr}: {e}")))?;
    sock.listen(1024)?;
    Ok(sock)
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

    /// Moves the listeners' accepts to the backend (before any connection exists); see
    /// [`ring_accept`](Self::ring_accept).
    pub(crate) fn set_ring_accept(&mut self, on: bool) {
        if !on {
            return;
        }
        for i in 0..self.listeners.len() {
            self.ring_accept(i);
        }
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

    /// Opens a connection to `dst` from listener `socket`'s address family (and address, when
    /// it is not a wildcard), without waiting: [`StreamEvent::Opened`] or `Closed` follows.
    pub(crate) fn connect(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        now: Instant,
    ) -> io::Result<ConnId> {
        let local = self
            .listeners
            .iter()
            .find(|l| l.id == socket)
            .map(|l| l.local);
        if !self.limit.take() {
            self.counters.refused += 1;
            return Err(io::Error::other("too many connections"));
        }
        let made = (|| {
            let sock = Socket::new(
                Domain::for_address(dst),
                Type::STREAM.cloexec(),
                Some(Protocol::TCP),
            )?;
            sock.set_nonblocking(true)?;
            sock.set_tcp_nodelay(true)?;
            if let Some(l) =
                local.filter(|l| !l.ip().is_unspecified() && l.is_ipv4() == dst.is_ipv4())
            {
                sock.bind(&SocketAddr::new(l.ip(), 0).into())?;
            }
            self.counters.syscalls += 1;
            match sock.connect(&dst.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(sock)
        })();
        let sock = match made {
            Ok(s) => s,
            Err(e) => {
                self.limit.give();
                self.counters.connect_failed += 1;
                return Err(e);
            }
        };
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(dst);
        let made = self.insert(sock, dst, local, socket, true, now);
        match made {
            Ok((id, _)) => Ok(id),
            Err(e) => {
                self.limit.give();
                Err(e)
            }
        }
    }

    /// Queues `buf` on `conn` (written by the next [`flush`](Self::flush)); `Err` when this
    /// shard has no such connection, or when the queue would pass [`MAX_QUEUED`] (the
    /// connection is then closed and reported).
    pub(crate) fn write(&mut self, conn: ConnId, buf: Vec<u8>) -> Result<(), WriteError> {
        let slot = self.slot_of(conn).ok_or(WriteError::NoConnection)?;
        let Some(c) = self.slots[slot].as_mut() else {
            return Err(WriteError::NoConnection);
        };
        if c.state == State::Closing {
            return Err(WriteError::NoConnection);
        }
        if c.queued + buf.len() > MAX_QUEUED {
            self.counters.closed_overflow += 1;
            self.remove(slot);
            return Err(WriteError::Overflow);
        }
        c.queued += buf.len();
        c.queue.push_back(buf);
        if !c.dirty && c.state != State::Connecting {
            c.dirty = true;
            self.dirty.push(slot);
        }
        Ok(())
    }

    /// Closes `conn`: at once (`graceful` false), or once what is queued is written.
    pub(crate) fn close(&mut self, conn: ConnId, graceful: bool) {
        let Some(slot) = self.slot_of(conn) else {
            return;
        };
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        if graceful && c.queued > 0 && c.state == State::Open {
            c.state = State::Closing;
            return;
        }
        self.counters.closed_local += 1;
        if let Some(c) = self.remove(slot) {
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
    }

    pub(crate) fn info(&self, conn: ConnId) -> Option<ConnInfo> {
        let slot = self.slot_of(conn)?;
        self.slots[slot].as_ref().map(info)
    }

    /// Every open connection of this shard.
    pub(crate) fn list(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.slots.iter().flatten().map(info)
    }

    /// Writes what is queued, as far as the kernel takes it.
    pub(crate) fn flush(&mut self, closed: &mut Vec<(ConnId, CloseReason)>) {
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            if let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) {
                c.dirty = false;
            }
            self.write_out(slot, closed);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Writes slot `slot`'s queue until empty or the kernel would block (then EPOLLOUT is
    /// watched). A failed write ends the connection.
    fn write_out(&mut self, slot: usize, closed: &mut Vec<(ConnId, CloseReason)>) {
        let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.state == State::Connecting {
            return;
        }
        if self.native {
            if c.sending {
                return;
            }
            if c.queue.is_empty() {
                if c.state == State::Closing {
                    self.counters.closed_local += 1;
                    self.remove(slot);
                }
                return;
            }
            let n = c.queue.len().min(IOVECS);
            let bufs: Vec<Vec<u8>> = c.queue.drain(..n).collect();
            let offset = std::mem::take(&mut c.offset);
            c.sending = true;
            let (token, fd) = (token_of(c.id), c.sock.as_raw_fd());
            self.reqs.push(NativeReq::Send {
                token,
                fd,
                bufs,
                offset,
            });
            return;
        }
        let mut failed = None;
        while !c.queue.is_empty() {
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; IOVECS];
            let mut n = 0;
            for (i, b) in c.queue.iter().take(IOVECS).enumerate() {
                let s = if i == 0 {
                    &b[c.offset.min(b.len())..]
                } else {
                    &b[..]
                };
                iov[n] = libc::iovec {
                    iov_base: s.as_ptr() as *mut libc::c_void,
                    iov_len: s.len(),
                };
                n += 1;
            }
            self.counters.syscalls += 1;
            // SAFETY: the first `n` iovecs point into buffers of `c.queue`, which are neither
            // moved nor dropped during the call; the descriptor is open.
            let r = unsafe { libc::writev(c.sock.as_raw_fd(), iov.as_ptr(), n as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => break,
                    k => {
                        failed = Some(k);
                        break;
                    }
                }
            }
            let mut left = r as usize;
            c.bytes_out += left as u64;
            self.counters.bytes_out += left as u64;
            c.queued = c.queued.saturating_sub(left);
            while left > 0 {
                let Some(front) = c.queue.front() else {
                    break;
                };
                let rest = front.len() - c.offset;
                if left >= rest {
                    left -= rest;
                    c.offset = 0;
                    c.queue.pop_front();
                } else {
                    c.offset += left;
                    left = 0;
                }
            }
        }
        if let Some(k) = failed {
            let id = c.id;
            self.counters.closed_error += 1;
            self.remove(slot);
            closed.push((id, CloseReason::Error(k)));
            return;
        }
        let want_out = !c.queue.is_empty();
        if c.queue.is_empty() && c.state == State::Closing {
            self.counters.closed_local += 1;
            if let Some(c) = self.remove(slot) {
                let _ = c.sock.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        if want_out != c.want_out {
            c.want_out = want_out;
            let events = if want_out {
                (libc::EPOLLIN | libc::EPOLLOUT) as u32
            } else {
                libc::EPOLLIN as u32
            };
            let fd = c.sock.as_raw_fd();
            let _ = epoll_ctl(&self.epoll, libc::EPOLL_CTL_MOD, fd, events, slot as u64);
        }
    }

    /// Native data path: `n` bytes were read from connection `token` (`more`: the receive
    /// stays armed). Returns the connection, for the handler, unless it is gone or closing.
    pub(crate) fn native_read(
        &mut self,
        token: u64,
        n: usize,
        more: bool,
        now: Instant,
    ) -> Option<ConnId> {
        let slot = self.slot_of_token(token)?;
        let c = self.slots[slot].as_mut()?;
        c.last_read = now;
        c.bytes_in += n as u64;
        self.counters.bytes_in += n as u64;
        if !more {
            let fd = c.sock.as_raw_fd();
            self.reqs.push(NativeReq::Recv { token, fd });
        }
        (c.state != State::Closing).then_some(c.id)
    }

    /// Native data path: the receive of connection `token` ended: `err` 0 is the peer's
    /// close, ENOBUFS a pause (no buffer was free: armed again), another errno a failure.
    pub(crate) fn native_read_end(
        &mut self,
        token: u64,
        err: i32,
    ) -> Option<(ConnId, CloseReason)> {
        let slot = self.slot_of_token(token)?;
        let c = self.slots[slot].as_mut()?;
        let id = c.id;
        if err == libc::ENOBUFS || err == libc::EAGAIN || err == libc::EINTR {
            let fd = c.sock.as_raw_fd();
            self.reqs.push(NativeReq::Recv { token, fd });
            return None;
        }
        if err == libc::ECANCELED {
            return None;
        }
        let reason = if err == 0 {
            self.counters.closed_eof += 1;
            CloseReason::Eof
        } else {
            self.counters.closed_error += 1;
            CloseReason::Error(io::Error::from_raw_os_error(err).kind())
        };
        self.remove(slot);
        Some((id, reason))
    }

    /// Native data path: a send of connection `token` completed with `res` (bytes written,
    /// or -errno); what was not written goes back to the front of its queue.
    pub(crate) fn native_sent(
        &mut self,
        token: u64,
        res: i32,
        bufs: Vec<Vec<u8>>,
        offset: usize,
    ) -> Option<(ConnId, CloseReason)> {
        let slot = self.slot_of_token(token)?;
        let c = self.slots[slot].as_mut()?;
        c.sending = false;
        let id = c.id;
        if res < 0 {
            self.counters.closed_error += 1;
            let kind = io::Error::from_raw_os_error(-res).kind();
            self.remove(slot);
            return Some((id, CloseReason::Error(kind)));
        }
        let mut left = res as usize;
        c.bytes_out += left as u64;
        self.counters.bytes_out += left as u64;
        c.queued = c.queued.saturating_sub(left);
        let mut rest: Vec<Vec<u8>> = Vec::new();
        let mut off = offset;
        for b in bufs {
            let avail = b.len().saturating_sub(off);
            if left >= avail {
                left -= avail;
                off = 0;
                continue;
            }
            if rest.is_empty() {
                c.offset = off + left;
                left = 0;
            }
            off = 0;
            rest.push(b);
        }
        for b in rest.into_iter().rev() {
            c.queue.push_front(b);
        }
        if !c.dirty && (!c.queue.is_empty() || c.state == State::Closing) {
            c.dirty = true;
            self.dirty.push(slot);
        }
        None
    }

    /// Takes the ready list (without waiting); [`next`](Self::next) then works through it.
    pub(crate) fn begin_poll(&mut self) {
        self.ready = 0;
        self.cursor = 0;
        self.counters.syscalls += 1;
        // SAFETY: `events` is a live buffer of EVENTS entries; timeout 0 never blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as i32,
                0,
            )
        };
        if n <= 0 {
            self.more = false;
            return;
        }
        self.ready = n as usize;
        self.more = self.ready == EVENTS;
    }

    /// The next event of this poll: `Data` bytes are `rbuf[..len]` (a buffer the caller owns,
    /// so that the handler may use this shard's streams while it reads them).
    pub(crate) fn next(&mut self, now: Instant, rbuf: &mut [u8]) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.cursor >= self.ready {
                return None;
            }
            let ev = self.events[self.cursor];
            self.cursor += 1;
            if let Some(e) = self.handle(ev, now, rbuf) {
                return Some(e);
            }
        }
    }

    fn handle(&mut self, ev: libc::epoll_event, now: Instant, rbuf: &mut [u8]) -> Option<Event> {
        let (data, flags) = (ev.u64, ev.events);
        {
            if data & LISTENER != 0 {
                let index = (data & !LISTENER) as usize;
                match self.listeners.get(index).map(|l| l.accepts) {
                    Some(Accepts::Parked) => self.ring_accept(index),
                    _ => self.accept(index, now),
                }
                return None;
            }
            let slot = data as usize;
            let c = self.slots.get_mut(slot).and_then(Option::as_mut)?;
            let id = c.id;
            if c.state == State::Connecting {
                if flags & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                    return None;
                }
                match c.sock.take_error() {
                    Ok(None) if flags & libc::EPOLLERR as u32 == 0 => {
                        c.state = State::Open;
                        c.last_read = now;
                        // Reads from now on, writes while anything waits (write_out narrows
                        // it to reads once the queue is empty).
                        let fd = c.sock.as_raw_fd();
                        if self.native {
                            let _ = epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, fd, 0, 0);
                            c.want_out = false;
                            self.reqs.push(NativeReq::Recv {
                                token: token_of(id),
                                fd,
                            });
                        } else {
                            let both = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                            let _ =
                                epoll_ctl(&self.epoll, libc::EPOLL_CTL_MOD, fd, both, slot as u64);
                            c.want_out = true;
                        }
                        self.counters.connected += 1;
                        let (peer, local, socket) = (c.peer, c.local, c.socket);
                        self.pending.push_back(Event::Opened {
                            conn: id,
                            peer,
                            local,
                            socket,
                            outgoing: true,
                        });
                        // What was queued while connecting goes now.
                        let mut closed = Vec::new();
                        self.write_out(slot, &mut closed);
                        self.closed(closed);
                    }
                    r => {
                        let kind = match r {
                            Ok(Some(e)) | Err(e) => e.kind(),
                            Ok(None) => io::ErrorKind::ConnectionRefused,
                        };
                        self.counters.connect_failed += 1;
                        self.remove(slot);
                        self.pending.push_back(Event::Closed {
                            conn: id,
                            reason: CloseReason::ConnectFailed(kind),
                        });
                    }
                }
                return None;
            }
            if flags & libc::EPOLLOUT as u32 != 0 {
                let mut closed = Vec::new();
                self.write_out(slot, &mut closed);
                self.closed(closed);
            }
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                if let Some(e) = self.read(slot, now, rbuf) {
                    self.pending.push_back(e);
                }
            }
            None
        }
    }

    fn closed(&mut self, closed: Vec<(ConnId, CloseReason)>) {
        for (conn, reason) in closed {
            self.pending.push_back(Event::Closed { conn, reason });
        }
    }

    fn read(&mut self, slot: usize, now: Instant, rbuf: &mut [u8]) -> Option<Event> {
        let c = self.slots.get_mut(slot).and_then(Option::as_mut)?;
        let id = c.id;
        self.counters.syscalls += 1;
        match c.sock.read(rbuf) {
            Ok(0) => {
                self.counters.closed_eof += 1;
                self.remove(slot);
                Some(Event::Closed {
                    conn: id,
                    reason: CloseReason::Eof,
                })
            }
            Ok(n) => {
                c.last_read = now;
                c.bytes_in += n as u64;
                self.counters.bytes_in += n as u64;
                if c.state == State::Closing {
                    return None; // bytes after we decided to close: not read into anything
                }
                Some(Event::Data { conn: id, len: n })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => {
                self.counters.closed_error += 1;
                self.remove(slot);
                Some(Event::Closed {
                    conn: id,
                    reason: CloseReason::Error(e.kind()),
                })
            }
        }
    }

    fn accept(&mut self, index: usize, now: Instant) {
        for _ in 0..ACCEPTS {
            let Some(l) = self.listeners.get(index) else {
                return;
            };
            self.counters.syscalls += 1;
            let (sock, peer) = match l.sock.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The kernel takes a descriptor before it looks for a connection, so this comes
                // whether one waits or not: go on while one was there to shed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if self.shed_one(index) {
                        self.counters.refused += 1;
                        continue;
                    }
                    return;
                }
                // ECONNABORTED and the like: try again with the next readiness event.
                Err(_) => {
                    self.counters.refused += 1;
                    return;
                }
            };
            let Some(peer) = peer.as_socket() else {
                continue;
            };
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            if let Some(e) = self.adopt(index, sock, peer, now) {
                self.pending.push_back(e);
            }
        }
    }

    /// Takes in a connection accepted on listener `index` (by `accept4` or the ring): within
    /// the runtime's connection limit it becomes a connection of this shard, whose `Opened`
    /// event is returned; past it, or if it cannot be added, it is closed at once (the peer
    /// sees a reset or an EOF) and counted as refused.
    fn adopt(
        &mut self,
        index: usize,
        sock: Socket,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<Event> {
        let (id, local_listen) = self.listeners.get(index).map(|l| (l.id, l.local))?;
        if !self.limit.take() {
            self.counters.refused += 1;
            return None;
        }
        let _ = sock.set_tcp_nodelay(true);
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a: SockAddr| a.as_socket())
            .unwrap_or(local_listen);
        match self.insert(sock, peer, local, id, false, now) {
            Ok((conn, _)) => {
                self.counters.accepted += 1;
                Some(Event::Opened {
                    conn,
                    peer,
                    local,
                    socket: id,
                    outgoing: false,
                })
            }
            Err(_) => {
                self.limit.give();
                self.counters.refused += 1;
                None
            }
        }
    }

    /// Out of descriptors (EMFILE): frees the reserve one to accept and at once close a
    /// connection that waits on listener `index`, then takes the reserve again. True when a
    /// connection was shed (false: none waited, or there was no reserve to free).
    fn shed_one(&mut self, index: usize) -> bool {
        if self.spare.take().is_none() {
            return false;
        }
        let shed = self.listeners.get(index).is_some_and(|l| {
            self.counters.syscalls += 1;
            l.sock.accept().is_ok()
        });
        self.spare = std::fs::File::open("/dev/null").ok();
        shed
    }

    /// A completion of listener `listener`'s multishot accept: `res` a new descriptor (already
    /// non-blocking and close-on-exec) or -errno; `more` false when the accept ended and must
    /// be asked for again. Returns the new connection's `Opened` event, if one was made.
    pub(crate) fn native_accepted(
        &mut self,
        listener: u32,
        res: i32,
        more: bool,
        now: Instant,
    ) -> Option<Event> {
        let index = listener as usize;
        if res < 0 {
            self.ring_accept_failed(index, -res, more);
            return None;
        }
        // SAFETY: the kernel installed descriptor `res` for this completion alone: nothing
        // else owns it, and the Socket closes it on every path below.
        let sock = unsafe { Socket::from_raw_fd(res) };
        let event = self.adopt_ring(index, sock, now);
        if !more {
            self.ring_accept(index);
        }
        event
    }

    /// [`adopt`](Self::adopt) for a descriptor from the ring, which (unlike `accept4`) names
    /// no peer: the socket is asked. One whose peer is already gone is counted as refused.
    fn adopt_ring(&mut self, index: usize, sock: Socket, now: Instant) -> Option<Event> {
        let Some(peer) = sock.peer_addr().ok().and_then(|a| a.as_socket()) else {
            self.counters.refused += 1;
            return None;
        };
        let e = self.adopt(index, sock, peer, now);
        if e.is_some() {
            self.counters.accepted_ring += 1;
        }
        e
    }

    /// Listener `index`'s ring accept failed with errno `err` (`more`: it stays armed). Counted
    /// as the `accept4` path counts; then asked for again, except: not after a cancel (the
    /// backend is closing); out of descriptors with no connection to shed, the listener waits
    /// in the epoll set for one ([`Accepts::Parked`]) rather than the ring failing at once
    /// again and again; after an error that says the ring cannot accept on it, it goes back to
    /// readiness and `accept4` for good.
    fn ring_accept_failed(&mut self, index: usize, err: i32, more: bool) {
        match err {
            libc::ECANCELED => return,
            libc::EAGAIN | libc::EINTR => {}
            libc::EMFILE | libc::ENFILE => {
                if self.shed_one(index) {
                    self.counters.refused += 1;
                } else if !more {
                    self.watch(index, Accepts::Parked);
                    return;
                }
            }
            e if accept_broken(e) => {
                if !more {
                    self.watch(index, Accepts::Epoll);
                }
                return;
            }
            // ECONNABORTED, ENOBUFS, ENOMEM and the like: the next accept may succeed.
            _ => self.counters.refused += 1,
        }
        if !more {
            self.ring_accept(index);
        }
    }

    /// Has the backend accept on listener `index` (a multishot accept, asked for again each
    /// time one ends); out of the epoll set first, where it is in it (else it would stay
    /// readable and wake the shard for nothing). A listener that cannot leave the set stays
    /// with readiness.
    fn ring_accept(&mut self, index: usize) {
        let Some(l) = self.listeners.get_mut(index) else {
            return;
        };
        let fd = l.sock.as_raw_fd();
        if l.accepts != Accepts::Ring {
            if epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, fd, 0, 0).is_err() {
                return;
            }
            l.accepts = Accepts::Ring;
        }
        self.reqs.push(NativeReq::Accept {
            listener: index as u32,
            fd,
        });
    }

    /// Puts ring listener `index` (no accept armed) in the epoll set, in `mode`; should the
    /// set refuse it, the ring's accept is asked for again instead.
    fn watch(&mut self, index: usize, mode: Accepts) {
        let Some(l) = self.listeners.get_mut(index) else {
            return;
        };
        let fd = l.sock.as_raw_fd();
        let data = LISTENER | index as u64;
        if epoll_ctl(
            &self.epoll,
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
            data,
        )
        .is_ok()
        {
            l.accepts = mode;
            return;
        }
        self.reqs.push(NativeReq::Accept {
            listener: index as u32,
            fd,
        });
    }
}

/// Errors of a ring accept that another try would only repeat (a listener the ring cannot
/// accept on, or a kernel that refuses the request).
fn accept_broken(err: i32) -> bool {
    matches!(
        err,
        libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT
    )
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
