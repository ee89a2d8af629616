//! Listeners and accepting: the `SO_REUSEPORT` TCP listener, `accept4` on readiness, the
//! io_uring multishot accept and its failures, and the one way in for every accepted
//! descriptor ([`Streams::adopt`]) within the runtime's connection limit, with a spare
//! descriptor to shed connections when the process runs out of them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Instant;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{epoll_ctl, Accepts, Event, NativeReq, Streams, ACCEPTS, LISTENER};

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
    // Linux copies TCP_NODELAY to every connection accepted here: no setsockopt per accept.
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind tcp {addr}: {e}")))?;
    sock.listen(1024)?;
    Ok(sock)
}

impl Streams {
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

    pub(super) fn accept(&mut self, index: usize, now: Instant) {
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
        // TCP_NODELAY came from the listener (tcp_listener). The local address is the
        // listener's unless that is a wildcard: only then is a getsockname needed.
        let local = if local_listen.ip().is_unspecified() {
            sock.local_addr()
                .ok()
                .and_then(|a: SockAddr| a.as_socket())
                .unwrap_or(local_listen)
        } else {
            local_listen
        };
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
    pub(super) fn ring_accept(&mut self, index: usize) {
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
