//! The io_uring native data path of open connections: the completions of the receives and
//! sends the backend ran for [`NativeReq`]s, folded into the connections' counters and
//! queues (accepts through the ring are in [`accept`](super::accept)).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::{CloseReason, NativeReq, State, Streams};
use crate::ConnId;

impl Streams {
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
}
