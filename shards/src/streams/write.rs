//! Writing and closing: per-connection write queues bounded by [`MAX_QUEUED`], `writev`
//! (or, on the native data path, sends asked of the backend) as far as the kernel takes
//! them, and closes, at once or once the queue is written.

use std::io;
use std::os::fd::AsRawFd;

use super::{
    epoll_ctl, token_of, CloseReason, NativeReq, State, Streams, WriteError, IOVECS, MAX_QUEUED,
};
use crate::ConnId;

impl Streams {
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
    pub(super) fn write_out(&mut self, slot: usize, closed: &mut Vec<(ConnId, CloseReason)>) {
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
}
