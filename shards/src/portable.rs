//! The portable backend: `epoll` for readiness, `recvmmsg`/`sendmmsg` in batches of
//! [`BATCH`], and the mailbox eventfd registered in the same epoll set.
//!
//! Used where io_uring is missing or refused, or when asked for. Level-triggered: a socket
//! that still has data after a bounded number of batches is reported again by the next
//! `epoll_wait`, which keeps timers and the mailbox from starving under a flood. Sends the
//! kernel refuses with `EAGAIN` stay queued and are retried after a short wait. Linux only
//! (epoll, `recvmmsg`); another unix would need a `poll`-based twin of this file.
//!
//! A leaf module: `unsafe` is allowed here, every block says why it is sound.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use socket2::Socket;

use crate::ctx::SendQueue;
use crate::reaped::{Reaped, Received};
use crate::shard::Io;
use crate::stats::IoCounters;
use crate::sys;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(crate) const BATCH: usize = 32;
/// `recvmmsg` calls per readable socket per loop iteration.
const RECV_ROUNDS: usize = 8;
/// epoll user data of the mailbox eventfd (sockets use their index).
const WAKER: u64 = u64::MAX;
/// epoll user data of the streams' readiness descriptor.
const STREAMS: u64 = u64::MAX - 1;

pub(crate) struct Portable {
    sockets: Vec<Socket>,
    epoll: OwnedFd,
    waker: RawFd,
    events: Vec<libc::epoll_event>,
    readable: Vec<usize>,
    /// `BATCH` receive buffers of `slot` bytes each.
    rx_buf: Vec<u8>,
    slot: usize,
    rx_addr: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    /// Control buffers for receive timestamps (empty when the sockets do not stamp).
    rx_ctrl: Vec<sys::Control>,
    tx_addr: Vec<libc::sockaddr_storage>,
    tx_iov: Vec<libc::iovec>,
    tx_hdr: Vec<libc::mmsghdr>,
    /// The last flush stopped on `EAGAIN`.
    blocked: bool,
    /// The streams' descriptor was reported readable.
    streams: bool,
    /// The last reap left a socket unread after RECV_ROUNDS full batches: see [`Io::backlog`].
    backlog: bool,
    counters: IoCounters,
}

impl Portable {
    pub(crate) fn new(
        sockets: Vec<Socket>,
        waker: RawFd,
        streams: RawFd,
        max_datagram: usize,
        timestamps: bool,
    ) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let fds = sockets
            .iter()
            .map(|s| s.as_raw_fd())
            .enumerate()
            .map(|(i, fd)| (fd, i as u64));
        for (fd, data) in fds.chain([(waker, WAKER), (streams, STREAMS)]) {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: data,
            };
            // SAFETY: both descriptors are open; `ev` is a live epoll_event.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let slot = max_datagram.max(1);
        // SAFETY: all-zero is a valid sockaddr_storage.
        let zero_addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Ok(Self {
            events: vec![libc::epoll_event { events: 0, u64: 0 }; sockets.len() + 2],
            readable: Vec::with_capacity(sockets.len()),
            sockets,
            epoll,
            waker,
            rx_buf: vec![0; BATCH * slot],
            slot,
            rx_addr: vec![zero_addr; BATCH],
            rx_iov: vec![zero_iov; BATCH],
            rx_hdr: vec![zero_hdr; BATCH],
            rx_ctrl: if timestamps {
                vec![[0; sys::CMSG_WORDS]; BATCH]
            } else {
                Vec::new()
            },
            tx_addr: vec![zero_addr; BATCH],
            tx_iov: vec![zero_iov; BATCH],
            tx_hdr: vec![zero_hdr; BATCH],
            blocked: false,
            streams: false,
            backlog: false,
            counters: IoCounters::default(),
        })
    }

    /// Sends everything queued, `BATCH` per `sendmmsg`, until done or the kernel says `EAGAIN`.
    fn flush(&mut self, sends: &mut SendQueue) {
        self.blocked = false;
        while let Some(first) = sends.pending.front() {
            let socket = first.socket;
            let Some(sock) = self.sockets.get(socket as usize) else {
                // Ctx checks socket ids; this is only defence in depth.
                if let Some(o) = sends.pending.pop_front() {
                    sends.recycle(o.buf);
                }
                self.counters.send_errors += 1;
                continue;
            };
            let mut n = 0;
            for out in sends.pending.iter().take(BATCH) {
                if out.socket != socket {
                    break;
                }
                let alen = sys::write_sockaddr(&out.dst, &mut self.tx_addr[n]);
                self.tx_iov[n] = libc::iovec {
                    iov_base: out.buf.as_ptr() as *mut libc::c_void,
                    iov_len: out.buf.len(),
                };
                let h = &mut self.tx_hdr[n].msg_hdr;
                h.msg_name = (&mut self.tx_addr[n] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = alen;
                h.msg_iov = &mut self.tx_iov[n];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                n += 1;
            }
            self.counters.syscalls += 1;
            // SAFETY: the first `n` headers point at live addresses, iovecs and the payloads of
            // the first `n` queued sends, none of which move or drop until after the call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.tx_hdr.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.blocked = true;
                        return;
                    }
                    io::ErrorKind::Interrupted => continue,
                    // The first datagram failed (unreachable, wrong family, too big): drop it.
                    _ => {
                        self.counters.send_errors += 1;
                        if let Some(o) = sends.pending.pop_front() {
                            sends.recycle(o.buf);
                        }
                    }
                }
                continue;
            }
            for _ in 0..r as usize {
                if let Some(o) = sends.pending.pop_front() {
                    self.counters.datagrams_sent += 1;
                    self.counters.bytes_sent += o.buf.len() as u64;
                    sends.recycle(o.buf);
                }
            }
        }
    }
}

impl Io for Portable {
    fn submit(&mut self, sends: &mut SendQueue) -> io::Result<()> {
        self.flush(sends);
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, min_wait: Option<Duration>) -> io::Result<()> {
        // epoll has no minimum wait: sleep it (bounded by the timer), then wait as usual.
        let mut timeout = timeout;
        if let Some(m) = min_wait {
            let m = timeout.map_or(m, |t| t.min(m));
            std::thread::sleep(m);
            timeout = timeout.map(|t| t.saturating_sub(m));
        }
        // Blocked sends are retried soon; the kernel frees socket buffer space quickly.
        let timeout = match (timeout, self.blocked) {
            (t, true) => Some(t.map_or(Duration::from_millis(1), |t| {
                t.min(Duration::from_millis(1))
            })),
            (t, false) => t,
        };
        let ms = match timeout {
            None => -1,
            // Round up: waking before the deadline would just spin.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
        };
        self.counters.syscalls += 1;
        // SAFETY: `events` is a live buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        self.readable.clear();
        for ev in &self.events[..n as usize] {
            let data = ev.u64;
            if data == WAKER {
                self.counters.syscalls += 1;
                sys::drain_eventfd(self.waker);
            } else if data == STREAMS {
                self.streams = true;
            } else {
                self.readable.push(data as usize);
            }
        }
        Ok(())
    }

    fn reap(&mut self, mut deliver: impl FnMut(Reaped<'_>)) {
        self.backlog = false;
        for k in 0..self.readable.len() {
            let idx = self.readable[k];
            let Some(fd) = self.sockets.get(idx).map(|s| s.as_raw_fd()) else {
                continue;
            };
            let mut drained = false;
            for _ in 0..RECV_ROUNDS {
                let base = self.rx_buf.as_mut_ptr();
                for i in 0..BATCH {
                    // SAFETY: `i * slot` is within `rx_buf`, which is BATCH * slot bytes long.
                    let p = unsafe { base.add(i * self.slot) };
                    self.rx_iov[i] = libc::iovec {
                        iov_base: p.cast(),
                        iov_len: self.slot,
                    };
                    let h = &mut self.rx_hdr[i].msg_hdr;
                    h.msg_name = (&mut self.rx_addr[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    h.msg_iov = &mut self.rx_iov[i];
                    h.msg_iovlen = 1;
                    sys::set_control(h, self.rx_ctrl.get_mut(i));
                    h.msg_flags = 0;
                }
                self.counters.syscalls += 1;
                // SAFETY: BATCH headers, each naming a live address buffer and one iovec over a
                // distinct `slot`-byte region of `rx_buf`; nothing else touches them meanwhile.
                let r = unsafe {
                    libc::recvmmsg(
                        fd,
                        self.rx_hdr.as_mut_ptr(),
                        BATCH as u32,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if r < 0 {
                    match io::Error::last_os_error().kind() {
                        io::ErrorKind::WouldBlock => {
                            drained = true;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        // e.g. ECONNREFUSED from an ICMP error: the socket is still usable.
                        _ => {
                            self.counters.recv_errors += 1;
                            continue;
                        }
                    }
                }
                let n = r as usize;
                let clocks = (!self.rx_ctrl.is_empty()).then(sys::Clocks::now);
                for i in 0..n {
                    let m = &self.rx_hdr[i];
                    if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        self.counters.truncated += 1;
                        continue;
                    }
                    let Some(peer) =
                        sys::read_sockaddr_storage(&self.rx_addr[i], m.msg_hdr.msg_namelen)
                    else {
                        self.counters.recv_errors += 1;
                        continue;
                    };
                    let len = (m.msg_len as usize).min(self.slot);
                    self.counters.datagrams_received += 1;
                    self.counters.bytes_received += len as u64;
                    let data = &self.rx_buf[i * self.slot..i * self.slot + len];
                    let at = clocks.as_ref().and_then(|c| {
                        let t = sys::control_timestamp(&m.msg_hdr, self.rx_ctrl.get(i)?)?;
                        Some(c.instant(t))
                    });
                    deliver(Reaped::Datagram(Received {
                        data,
                        peer,
                        socket: idx as u32,
                        at,
                    }));
                }
                if n < BATCH {
                    drained = true;
                    break;
                }
            }
            self.backlog |= !drained;
        }
        self.readable.clear();
    }

    fn backlog(&self) -> bool {
        // Each readable socket was read until EAGAIN or the budget ran out: that is exact.
        self.backlog
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    fn streams_ready(&mut self) -> bool {
        mem::take(&mut self.streams)
    }

    fn detail(&self) -> &'static str {
        "portable (epoll + recvmmsg/sendmmsg, batch 32)"
    }
}
