//! Filling the submission queue: pushing one SQE (submitting first when the queue is full),
//! arming the receives, the wake read, the streams' poll and the listeners' multishot
//! accepts, and moving queued datagrams into send slots. Holds `unsafe` code (the leaf
//! module's rule: every block says why it is sound).

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::Fd;
use io_uring::{opcode, squeue};

use crate::ctx::SendQueue;
use crate::sys;

use super::{
    user_data, RecvMode, SendSlot, Uring, BGID, K_ACCEPT, K_RECV_MULTI, K_RECV_ONE, K_SEND,
    K_STREAMS, K_WAKE, MAX_SENDS,
};

impl Uring {
    /// Pushes one SQE, submitting first if the queue is full.
    ///
    /// # Safety
    /// Everything `entry` points at must stay valid until its CQE is reaped.
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller keeps the entry's memory alive until completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.counters.syscalls += 1;
            match self.ring.submit() {
                Ok(_) => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    // The completion queue is full: make room by reaping later; submitting
                    // again after the kernel flushes its overflow list.
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Arms whatever receive (and the wake read) is not armed.
    pub(super) fn arm(&mut self) -> io::Result<()> {
        if !self.wake_armed {
            let e = opcode::Read::new(Fd(self.waker), (&mut *self.wake_buf as *mut u64).cast(), 8)
                .build()
                .user_data(user_data(K_WAKE, 0));
            // SAFETY: `wake_buf` is boxed and lives until the ring is drained in Drop.
            unsafe { self.push(e)? };
            self.wake_armed = true;
            self.inflight += 1;
        }
        if !self.streams_armed && !self.streams_ready {
            let e = opcode::PollAdd::new(Fd(self.streams), libc::POLLIN as u32)
                .build()
                .user_data(user_data(K_STREAMS, 0));
            // SAFETY: a poll references no memory.
            unsafe { self.push(e)? };
            self.streams_armed = true;
            self.inflight += 1;
        }
        let mut entries: Vec<squeue::Entry> = Vec::new();
        match &mut self.recv {
            RecvMode::Multi { hdr, armed, .. } => {
                for (i, a) in armed.iter_mut().enumerate().filter(|(_, a)| !**a) {
                    let fd = self.sockets[i].as_raw_fd();
                    entries.push(
                        opcode::RecvMsgMulti::new(Fd(fd), &**hdr as *const libc::msghdr, BGID)
                            .build()
                            .user_data(user_data(K_RECV_MULTI, i)),
                    );
                    *a = true;
                }
            }
            RecvMode::Single { slots, armed } => {
                for (i, a) in armed.iter_mut().enumerate().filter(|(_, a)| !**a) {
                    let s = &mut *slots[i];
                    s.iov = libc::iovec {
                        iov_base: s.buf.as_mut_ptr().cast(),
                        iov_len: s.buf.len(),
                    };
                    s.hdr.msg_name = (&mut s.addr as *mut libc::sockaddr_storage).cast();
                    s.hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    s.hdr.msg_iov = &mut s.iov;
                    s.hdr.msg_iovlen = 1;
                    sys::set_control(&mut s.hdr, self.timestamps.then_some(&mut s.ctrl));
                    s.hdr.msg_flags = 0;
                    let fd = self.sockets[s.socket as usize].as_raw_fd();
                    entries.push(
                        opcode::RecvMsg::new(Fd(fd), &mut s.hdr)
                            .build()
                            .user_data(user_data(K_RECV_ONE, i)),
                    );
                    *a = true;
                }
            }
        }
        for e in entries {
            self.inflight += 1;
            // SAFETY: the msghdrs, iovecs, addresses and buffers are boxed or owned by `self`
            // and live until the ring is drained in Drop.
            unsafe { self.push(e)? };
        }
        Ok(())
    }

    /// Moves queued sends into slots and SQEs.
    pub(super) fn push_sends(&mut self, sends: &mut SendQueue) -> io::Result<()> {
        while !sends.pending.is_empty() {
            let idx = match self.free_sends.pop() {
                Some(i) => i,
                None if self.sends.len() < MAX_SENDS => {
                    self.sends.push(Box::new(SendSlot {
                        buf: Vec::new(),
                        // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
                        addr: unsafe { mem::zeroed() },
                        iov: libc::iovec {
                            iov_base: std::ptr::null_mut(),
                            iov_len: 0,
                        },
                        // SAFETY: as above.
                        hdr: unsafe { mem::zeroed() },
                    }));
                    self.sends.len() - 1
                }
                // All slots in flight: the rest waits for completions.
                None => return Ok(()),
            };
            let Some(out) = sends.pending.pop_front() else {
                break;
            };
            let Some(fd) = self.sockets.get(out.socket as usize).map(|s| s.as_raw_fd()) else {
                self.counters.send_errors += 1;
                self.free_sends.push(idx);
                sends.recycle(out.buf);
                continue;
            };
            let s = &mut *self.sends[idx];
            s.buf = out.buf;
            let alen = sys::write_sockaddr(&out.dst, &mut s.addr);
            s.iov = libc::iovec {
                iov_base: s.buf.as_mut_ptr().cast(),
                iov_len: s.buf.len(),
            };
            let e = if self.send_to {
                // sendto(2): no msghdr for the kernel to copy in.
                opcode::Send::new(Fd(fd), s.buf.as_ptr(), s.buf.len() as u32)
                    .dest_addr((&s.addr as *const libc::sockaddr_storage).cast())
                    .dest_addr_len(alen)
                    .build()
            } else {
                s.hdr.msg_name = (&mut s.addr as *mut libc::sockaddr_storage).cast();
                s.hdr.msg_namelen = alen;
                s.hdr.msg_iov = &mut s.iov;
                s.hdr.msg_iovlen = 1;
                opcode::SendMsg::new(Fd(fd), &s.hdr).build()
            }
            .user_data(user_data(K_SEND, idx));
            self.inflight += 1;
            // SAFETY: the slot is boxed and not reused before this SQE's CQE frees it.
            unsafe { self.push(e)? };
        }
        Ok(())
    }

    /// Arms listener `index`'s multishot accept (on descriptor `fd`), unless it is armed.
    pub(super) fn arm_accept(&mut self, index: usize, fd: RawFd) -> io::Result<()> {
        if self.accepting.len() <= index {
            self.accepting.resize(index + 1, false);
        }
        if self.accepting[index] {
            return Ok(());
        }
        let e = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(K_ACCEPT, index));
        // SAFETY: a multishot accept references no memory (no peer address is asked for).
        unsafe { self.push(e)? };
        self.accepting[index] = true;
        self.inflight += 1;
        Ok(())
    }
}
