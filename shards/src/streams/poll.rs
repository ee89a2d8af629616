//! Readiness: one non-blocking `epoll_wait` per poll, then its events one by one: a listener
//! ready to accept, an outgoing connect completed or failed, a connection readable (one
//! read into the caller's buffer) or writable again.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{
    epoll_ctl, token_of, Accepts, CloseReason, Event, NativeReq, State, Streams, EVENTS, LISTENER,
};
use crate::ConnId;

impl Streams {
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
}
