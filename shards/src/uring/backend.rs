//! `impl Io for Uring`: what the shard loop calls. Submit (arm, push sends), wait (one
//! `io_uring_enter` with the timer as its timeout), reap (completions turned into
//! [`Reaped`] events, buffers handed back to their rings), the stream requests of the native
//! data path, and the backlog check. Holds `unsafe` code (the leaf module's rule: every block
//! says why it is sound).

use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode};

use crate::ctx::SendQueue;
use crate::reaped::{Reaped, Received};
use crate::shard::Io;
use crate::stats::IoCounters;
use crate::streams::NativeReq;
use crate::sys;

use super::{
    user_data, RecvMode, StreamSend, Uring, BACKLOG_CHECK_MULTI, BGID_STREAM, CQ_ENTRIES,
    KIND_SHIFT, K_ACCEPT, K_RECV_MULTI, K_RECV_ONE, K_SEND, K_SRECV, K_SSEND, K_STREAMS, K_WAKE,
    SINGLE_SLOTS,
};

impl Io for Uring {
    fn submit(&mut self, sends: &mut SendQueue) -> io::Result<()> {
        for b in self.done.drain(..) {
            sends.recycle(b);
        }
        self.arm()?;
        self.push_sends(sends)
    }

    fn wait(&mut self, timeout: Option<Duration>, min_wait: Option<Duration>) -> io::Result<()> {
        self.counters.syscalls += 1;
        // Waiting for a full completion queue never ends early: with DEFER_TASKRUN the kernel
        // does not even wake us for a completion while fewer than that are pending.
        let all = CQ_ENTRIES as usize;
        let r = match (timeout, min_wait) {
            (None, None) => self.ring.submitter().submit_and_wait(1),
            (Some(d), None) => {
                let ts = Timespec::from(d);
                self.ring
                    .submitter()
                    .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            }
            (t, Some(m)) if self.min_timeout => {
                // Wait `m` for a full queue, then return with whatever came (or wait on for
                // one completion, bounded by the timer).
                let ts = Timespec::from(t.unwrap_or(Duration::from_secs(3600)));
                let usec = m.as_micros().clamp(1, u32::MAX as u128) as u32;
                self.ring
                    .submitter()
                    .submit_with_args(all, &SubmitArgs::new().timespec(&ts).min_wait_usec(usec))
            }
            (t, Some(m)) => {
                // Older kernels: wait out `m` (or the timer); the shard loop then finds what
                // came, or waits again.
                let ts = Timespec::from(t.map_or(m, |t| t.min(m)));
                self.ring
                    .submitter()
                    .submit_with_args(all, &SubmitArgs::new().timespec(&ts))
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    fn reap(&mut self, mut deliver: impl FnMut(Reaped<'_>)) {
        self.collect();
        self.backlog = false;
        let before = self.counters.datagrams_received;
        let mut returned = false;
        let mut sreturned = false;
        let clocks = self.timestamps.then(sys::Clocks::now);
        for k in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[k];
            let index = (ud & ((1 << KIND_SHIFT) - 1)) as usize;
            match ud >> KIND_SHIFT {
                K_RECV_MULTI => {
                    let RecvMode::Multi { ring, hdr, armed } = &mut self.recv else {
                        continue;
                    };
                    if !cqueue::more(flags) {
                        armed[index] = false;
                        self.inflight -= 1;
                    }
                    if res < 0 {
                        if res == -libc::ENOBUFS {
                            // Every buffer was taken: the socket may hold more.
                            self.backlog = true;
                        } else if res != -libc::ECANCELED {
                            self.counters.recv_errors += 1;
                        }
                        continue;
                    }
                    let Some(bid) = cqueue::buffer_select(flags) else {
                        continue;
                    };
                    if let Some(buf) = ring.buffer(bid) {
                        let buf = &buf[..(res as usize).min(buf.len())];
                        match RecvMsgOut::parse(buf, hdr) {
                            Ok(out) if out.is_payload_truncated() => self.counters.truncated += 1,
                            Ok(out) => match sys::read_sockaddr(out.name_data()) {
                                Some(peer) => {
                                    let data = out.payload_data();
                                    self.counters.datagrams_received += 1;
                                    self.counters.bytes_received += data.len() as u64;
                                    let at = clocks.as_ref().and_then(|c| {
                                        sys::rx_timestamp(out.control_data()).map(|t| c.instant(t))
                                    });
                                    deliver(Reaped::Datagram(Received {
                                        data,
                                        peer,
                                        socket: index as u32,
                                        at,
                                    }));
                                }
                                None => self.counters.recv_errors += 1,
                            },
                            Err(()) => self.counters.recv_errors += 1,
                        }
                    }
                    ring.push(bid);
                    returned = true;
                }
                K_RECV_ONE => {
                    let RecvMode::Single { slots, armed } = &mut self.recv else {
                        continue;
                    };
                    armed[index] = false;
                    self.inflight -= 1;
                    let s = &*slots[index];
                    if res < 0 {
                        if res != -libc::ECANCELED && res != -libc::EAGAIN {
                            self.counters.recv_errors += 1;
                        }
                    } else if s.hdr.msg_flags & libc::MSG_TRUNC != 0 {
                        self.counters.truncated += 1;
                    } else if let Some(peer) =
                        sys::read_sockaddr_storage(&s.addr, s.hdr.msg_namelen)
                    {
                        let data = &s.buf[..(res as usize).min(s.buf.len())];
                        self.counters.datagrams_received += 1;
                        self.counters.bytes_received += data.len() as u64;
                        let at = clocks.as_ref().and_then(|c| {
                            sys::control_timestamp(&s.hdr, &s.ctrl).map(|t| c.instant(t))
                        });
                        deliver(Reaped::Datagram(Received {
                            data,
                            peer,
                            socket: s.socket,
                            at,
                        }));
                    } else {
                        self.counters.recv_errors += 1;
                    }
                }
                K_SEND => {
                    self.inflight -= 1;
                    let Some(s) = self.sends.get_mut(index) else {
                        continue;
                    };
                    if res >= 0 {
                        self.counters.datagrams_sent += 1;
                        self.counters.bytes_sent += res as u64;
                    } else {
                        self.counters.send_errors += 1;
                    }
                    self.done.push(mem::take(&mut s.buf));
                    self.free_sends.push(index);
                }
                K_WAKE => {
                    self.inflight -= 1;
                    self.wake_armed = false;
                }
                K_STREAMS => {
                    self.inflight -= 1;
                    self.streams_armed = false;
                    self.streams_ready = true;
                }
                K_SRECV => {
                    let token = index as u64;
                    let more = cqueue::more(flags);
                    if !more {
                        self.inflight -= 1;
                    }
                    if res <= 0 {
                        // 0: the peer closed; else an errno (ENOBUFS: re-armed by the streams).
                        deliver(Reaped::StreamEnd { token, err: -res });
                        continue;
                    }
                    let Some(bid) = cqueue::buffer_select(flags) else {
                        continue;
                    };
                    let Some(ring) = self.sring.as_mut() else {
                        continue;
                    };
                    if let Some(buf) = ring.buffer(bid) {
                        let data = &buf[..(res as usize).min(buf.len())];
                        deliver(Reaped::StreamData { token, data, more });
                    }
                    ring.push(bid);
                    sreturned = true;
                }
                K_ACCEPT => {
                    let more = cqueue::more(flags);
                    if !more {
                        self.inflight -= 1;
                        if let Some(a) = self.accepting.get_mut(index) {
                            *a = false;
                        }
                    }
                    deliver(Reaped::Accepted {
                        listener: index as u32,
                        res,
                        more,
                    });
                }
                K_SSEND => {
                    self.inflight -= 1;
                    let Some(send) = self.ssends.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    self.free_ssends.push(index);
                    let StreamSend {
                        token,
                        bufs,
                        offset,
                        ..
                    } = *send;
                    deliver(Reaped::StreamSent {
                        token,
                        res,
                        bufs,
                        offset,
                    });
                }
                _ => {}
            }
        }
        self.reaped = (self.counters.datagrams_received - before) as usize;
        if sreturned {
            if let Some(r) = &self.sring {
                r.publish();
            }
        }
        if returned {
            if let RecvMode::Multi { ring, .. } = &self.recv {
                ring.publish();
            }
        }
    }

    fn counters(&self) -> &IoCounters {
        &self.counters
    }

    fn native_streams(&self) -> bool {
        self.sring.is_some()
    }

    fn ring_accepts(&self) -> bool {
        self.multi_accept
    }

    fn stream_requests(&mut self, reqs: &mut Vec<NativeReq>) -> io::Result<()> {
        for req in reqs.drain(..) {
            match req {
                NativeReq::Recv { token, fd } => {
                    let e = opcode::RecvMulti::new(Fd(fd), BGID_STREAM)
                        .build()
                        .user_data(user_data(K_SRECV, token as usize));
                    // SAFETY: a receive into provided buffers; the ring outlives the ring's
                    // operations (unregistered in Drop after they end, or leaked).
                    unsafe { self.push(e)? };
                    self.inflight += 1;
                }
                NativeReq::Accept { listener, fd } => self.arm_accept(listener as usize, fd)?,
                NativeReq::Send {
                    token,
                    fd,
                    bufs,
                    offset,
                } => {
                    let index = match self.free_ssends.pop() {
                        Some(i) => i,
                        None => {
                            self.ssends.push(None);
                            self.ssends.len() - 1
                        }
                    };
                    let iov: Vec<libc::iovec> = bufs
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let s = if i == 0 {
                                &b[offset.min(b.len())..]
                            } else {
                                &b[..]
                            };
                            libc::iovec {
                                iov_base: s.as_ptr() as *mut libc::c_void,
                                iov_len: s.len(),
                            }
                        })
                        .collect();
                    let mut send = Box::new(StreamSend {
                        token,
                        bufs,
                        offset,
                        iov,
                        // SAFETY: all-zero is a valid msghdr.
                        hdr: unsafe { mem::zeroed() },
                    });
                    send.hdr.msg_iov = send.iov.as_mut_ptr();
                    send.hdr.msg_iovlen = send.iov.len() as _;
                    let e = opcode::SendMsg::new(Fd(fd), &send.hdr)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build()
                        .user_data(user_data(K_SSEND, index));
                    self.ssends[index] = Some(send);
                    // SAFETY: the msghdr, its iovecs and the buffers they point at live in the
                    // boxed slot until the CQE is reaped (or are leaked in Drop).
                    unsafe { self.push(e)? };
                    self.inflight += 1;
                }
            }
        }
        Ok(())
    }

    fn streams_ready(&mut self) -> bool {
        // Re-armed by the next wait's `arm`.
        mem::take(&mut self.streams_ready)
    }

    fn backlog(&self) -> bool {
        // A reap that took only a few datagrams found the sockets drained (see
        // BACKLOG_CHECK_MULTI; running out of buffers sets `backlog`), so only a larger one
        // asks the kernel.
        let check = match self.recv {
            RecvMode::Multi { .. } => BACKLOG_CHECK_MULTI,
            RecvMode::Single { .. } => SINGLE_SLOTS,
        };
        self.backlog
            || (self.reaped >= check && self.sockets.iter().any(|s| sys::unread(s.as_raw_fd())))
    }

    fn detail(&self) -> &'static str {
        match self.recv {
            RecvMode::Multi { .. } if self.sring.is_some() && self.multi_accept => {
                "io_uring (multishot recvmsg + provided-buffer ring, batched sends; \
                 streams: multishot recv into provided buffers, sendmsg, multishot accept)"
            }
            RecvMode::Multi { .. } if self.sring.is_some() => {
                "io_uring (multishot recvmsg + provided-buffer ring, batched sends; \
                 streams: multishot recv into provided buffers, sendmsg)"
            }
            RecvMode::Single { .. } if self.multi_accept => {
                "io_uring (single-shot recvmsg fallback, batched sends; \
                 streams: multishot accept)"
            }
            RecvMode::Multi { .. } => {
                "io_uring (multishot recvmsg + provided-buffer ring, batched sends)"
            }
            RecvMode::Single { .. } => "io_uring (single-shot recvmsg fallback, batched sends)",
        }
    }
}

impl Uring {
    /// Takes every available CQE into `self.cqes`.
    fn collect(&mut self) {
        self.cqes.clear();
        self.cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
    }
}
