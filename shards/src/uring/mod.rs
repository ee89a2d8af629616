//! The Linux backend: the io-uring crate directly, one ring per shard.
//!
//! - Receives stay armed: one multishot `RecvMsg` per socket drawing from a provided-buffer
//!   ring (`register_buf_ring`); a buffer goes back to the ring right after the handler ran.
//!   When a multishot ends (no `F_MORE`: out of buffers, error) it is re-armed in the next
//!   submit. Where the kernel lacks multishot recvmsg or buffer rings (before 6.0 / 5.19), or
//!   `SER_URING_SINGLESHOT=1` asks for it, each socket instead keeps [`SINGLE_SLOTS`]
//!   single-shot `RecvMsg`s over owned buffers in flight.
//! - Sends are `Send` SQEs with a destination address (Linux 6.0; `SendMsg` before) from
//!   pooled slots (payload, address, `msghdr`, `iovec` kept alive until their CQE), pushed
//!   together and submitted with the wait: one `io_uring_enter` per loop iteration, not per
//!   datagram.
//! - Stream connections (with multishot receives): each open connection keeps a multishot
//!   `Recv` armed over a second provided-buffer ring ([`BGID_STREAM`]), and its writes are
//!   `SendMsg` SQEs over the connection's queued buffers (one in flight per connection, owned
//!   here until the CQE), submitted with everything else.
//! - Stream listeners (Linux 5.19): each keeps one multishot `Accept` armed (accepted sockets
//!   come non-blocking and close-on-exec), re-armed when a completion comes without `F_MORE`;
//!   the streams take each descriptor in as they would one from `accept4`. Where the kernel
//!   lacks multishot accept (or `SER_URING_SINGLESHOT=1` asks for the older kernels' paths),
//!   listeners stay in the streams' epoll set. Outgoing connects stay there in any case (one
//!   readiness event per connect; nothing to gain from the ring), watched by one `PollAdd`.
//! - The mailbox eventfd has a `Read` armed in the ring, so a post wakes the wait.
//! - The timer deadline is the `io_uring_enter` timeout (`EXT_ARG`, Linux 5.11).
//!
//! The ring is set up `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel allows (completions
//! are then processed only inside our wait call, in batches), else plainer. On drop, armed
//! operations are cancelled and awaited before any buffer is freed; if they do not finish, the
//! buffers are leaked rather than freed under the kernel.
//!
//! A leaf module: `unsafe` is allowed here, every block says why it is sound.

use std::mem;
use std::os::fd::{FromRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{opcode, IoUring};
use socket2::Socket;

use crate::reaped::Reaped;
use crate::shard::Io;
use crate::stats::IoCounters;
use crate::sys;

mod backend;
mod bufring;
mod setup;
mod submit;

use bufring::BufRing;
pub(crate) use setup::probe;

/// Single-shot receives kept in flight per socket in the fallback mode.
pub(crate) const SINGLE_SLOTS: usize = 8;
/// Send slots (datagrams handed to the kernel, not yet completed); more wait in the queue.
const MAX_SENDS: usize = 4096;
/// Submission queue entries.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: multishot receives can post many CQEs per wait.
const CQ_ENTRIES: u32 = 8192;
/// Memory budget of one shard's provided-buffer ring.
const BUF_RING_BYTES: usize = 16 << 20;
/// A reap of at least this many datagrams makes [`Io::backlog`] look at the sockets' queues:
/// a multishot receive reads a socket until it is empty or 32 in a row (the kernel's
/// MULTISHOT_MAX_RETRY); the single-shot fallback keeps [`SINGLE_SLOTS`] per socket.
const BACKLOG_CHECK_MULTI: usize = 32;
/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;

// user_data: the kind in the top byte, an index below.
const KIND_SHIFT: u32 = 56;
const K_RECV_MULTI: u64 = 1;
const K_RECV_ONE: u64 = 2;
const K_SEND: u64 = 3;
const K_WAKE: u64 = 4;
const K_CANCEL: u64 = 5;
const K_STREAMS: u64 = 6;
const K_SRECV: u64 = 7;
const K_SSEND: u64 = 8;
const K_ACCEPT: u64 = 9;
/// Buffer group of the stream connections' receive buffers.
const BGID_STREAM: u16 = 1;
/// Stream receive buffers: this many of [`STREAM_BUF`] bytes per shard.
const STREAM_BUFS: u16 = 128;
const STREAM_BUF: usize = 16 * 1024;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << KIND_SHIFT) | index as u64
}

/// A single-shot receive and everything it points at; boxed so the addresses stay put.
struct RecvSlot {
    socket: u32,
    buf: Vec<u8>,
    ctrl: sys::Control,
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    hdr: libc::msghdr,
}

/// A stream send in flight: the connection's buffers, the iovecs and `msghdr` over them;
/// boxed so the addresses stay put until its CQE.
struct StreamSend {
    token: u64,
    bufs: Vec<Vec<u8>>,
    offset: usize,
    iov: Vec<libc::iovec>,
    hdr: libc::msghdr,
}

/// A send in flight; boxed so the addresses stay put until its CQE.
struct SendSlot {
    buf: Vec<u8>,
    addr: libc::sockaddr_storage,
    iov: libc::iovec,
    hdr: libc::msghdr,
}

// The boxes are the point: the kernel holds pointers into each slot, and `sends` grows while
// earlier slots are in flight, so a slot must not move when the Vec reallocates.
#[allow(clippy::vec_box)]
enum RecvMode {
    Multi {
        ring: BufRing,
        hdr: Box<libc::msghdr>,
        armed: Vec<bool>,
    },
    Single {
        slots: Vec<Box<RecvSlot>>,
        armed: Vec<bool>,
    },
}

pub(crate) struct Uring {
    ring: IoUring,
    sockets: Vec<Socket>,
    waker: RawFd,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// The streams' readiness descriptor, watched by a one-shot poll re-armed each time it
    /// fires (level-triggered: an epoll set still ready completes the new poll at once).
    streams: RawFd,
    streams_armed: bool,
    streams_ready: bool,
    /// Native stream data path (with multishot receives): the receive buffers of the
    /// shard's connections, and their sends in flight.
    sring: Option<BufRing>,
    #[allow(clippy::vec_box)] // the kernel points into each box; see RecvMode
    ssends: Vec<Option<Box<StreamSend>>>,
    free_ssends: Vec<usize>,
    /// Listeners accept through the ring (multishot accept); `accepting[i]`: listener `i`'s
    /// accept is armed (cancelled in Drop).
    multi_accept: bool,
    accepting: Vec<bool>,
    recv: RecvMode,
    #[allow(clippy::vec_box)] // see RecvMode
    sends: Vec<Box<SendSlot>>,
    free_sends: Vec<usize>,
    /// Payload buffers of completed sends, returned to the shard's pool at the next wait.
    done: Vec<Vec<u8>>,
    cqes: Vec<(u64, i32, u32)>,
    /// Operations submitted and not finished (multishots count once).
    inflight: usize,
    counters: IoCounters,
    max_datagram: usize,
    /// The sockets stamp datagrams: receives ask for the control message.
    timestamps: bool,
    /// The kernel has `min_wait_usec` (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.12).
    min_timeout: bool,
    /// `Send` takes a destination address (Linux 6.0): cheaper than `SendMsg`.
    send_to: bool,
    /// The last reap ran out of receive buffers: see [`Io::backlog`] (single-shot slots that
    /// ran short show as a socket with unread datagrams).
    backlog: bool,
    /// Datagrams the last reap delivered.
    reaped: usize,
}

/// Closes the descriptor of an accept completion (the ring is closing; nothing else will).
fn close_accepted(r: Reaped<'_>) {
    if let Reaped::Accepted { res, .. } = r {
        if res >= 0 {
            // SAFETY: the descriptor came from this completion alone: nothing else owns it.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(res) });
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Cancel what stays armed (receives, wake read), then wait, bounded, for every
        // operation to finish: only then may the memory they point at be freed.
        let mut cancels = Vec::new();
        if self.wake_armed {
            cancels.push(user_data(K_WAKE, 0));
        }
        if self.streams_armed {
            cancels.push(user_data(K_STREAMS, 0));
        }
        cancels.extend(
            self.accepting
                .iter()
                .enumerate()
                .filter(|(_, a)| **a)
                .map(|(i, _)| user_data(K_ACCEPT, i)),
        );
        match &self.recv {
            RecvMode::Multi { armed, .. } | RecvMode::Single { armed, .. } => {
                let kind = if matches!(self.recv, RecvMode::Multi { .. }) {
                    K_RECV_MULTI
                } else {
                    K_RECV_ONE
                };
                cancels.extend(
                    armed
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| **a)
                        .map(|(i, _)| user_data(kind, i)),
                );
            }
        }
        for ud in cancels {
            let e = opcode::AsyncCancel::new(ud)
                .build()
                .user_data(user_data(K_CANCEL, 0));
            // SAFETY: a cancel references no memory.
            if unsafe { self.push(e) }.is_err() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.inflight > 0 && Instant::now() < deadline {
            let ts = Timespec::from(Duration::from_millis(50));
            let _ = self
                .ring
                .submitter()
                .submit_with_args(1, &SubmitArgs::new().timespec(&ts));
            // Nobody takes connections accepted meanwhile: close them.
            self.reap(close_accepted);
        }
        if self.inflight > 0 {
            // The kernel may still write into these: leak them rather than free them.
            mem::forget(mem::take(&mut self.sends));
            mem::forget(mem::take(&mut self.ssends));
            mem::forget(self.sring.take());
            mem::forget(mem::replace(&mut self.wake_buf, Box::new(0)));
            mem::forget(mem::replace(
                &mut self.recv,
                RecvMode::Single {
                    slots: Vec::new(),
                    armed: Vec::new(),
                },
            ));
            return;
        }
        if let RecvMode::Multi { .. } = self.recv {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
        }
        if self.sring.is_some() {
            let _ = self.ring.submitter().unregister_buf_ring(BGID_STREAM);
        }
        let _ = self.max_datagram;
    }
}
