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

use std::alloc::{self, Layout};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use socket2::Socket;

use crate::ctx::SendQueue;
use crate::reaped::{Reaped, Received};
use crate::shard::Io;
use crate::stats::IoCounters;
use crate::streams::NativeReq;
use crate::sys;

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

/// Checks that io_uring works here and offers what this backend uses: a ring can be set up
/// (not ENOSYS/EPERM), `EXT_ARG` waits, the opcodes, and a real round trip.
pub(crate) fn probe(_max_datagram: usize) -> io::Result<()> {
    let mut ring: IoUring = IoUring::new(8)?;
    if !ring.params().is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring lacks EXT_ARG (Linux < 5.11)",
        ));
    }
    let mut p = Probe::new();
    ring.submitter().register_probe(&mut p)?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "recvmsg"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::Read::CODE, "read"),
    ] {
        if !p.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring lacks {name}"),
            ));
        }
    }
    // Some sandboxes allow the setup and refuse (or never complete) the submission.
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a Nop references no memory.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("io_uring queue full"))?;
    let ts = Timespec::from(Duration::from_secs(1));
    ring.submitter()
        .submit_with_args(1, &SubmitArgs::new().timespec(&ts))?;
    let done = ring
        .completion()
        .next()
        .map(|c| (c.user_data(), c.result()));
    match done {
        Some((7, r)) if r >= 0 => Ok(()),
        _ => Err(io::Error::other("io_uring nop did not complete")),
    }
}

/// `SER_URING_SINGLESHOT=1`: take the paths of kernels without multishot operations.
fn single_shot_forced() -> bool {
    std::env::var_os("SER_URING_SINGLESHOT").is_some_and(|v| v == "1")
}

/// Multishot receive needs recvmsg multishot (6.0) and buffer rings (5.19).
fn kernel_has_multishot() -> bool {
    !single_shot_forced() && kernel_at_least(6, 0)
}

/// Multishot accept: the accept opcode (5.5) with its multishot flag (5.19), which the
/// opcode probe cannot see, hence the release check too.
fn kernel_has_multishot_accept(ring: &IoUring) -> bool {
    if single_shot_forced() || !kernel_at_least(5, 19) {
        return false;
    }
    let mut p = Probe::new();
    ring.submitter().register_probe(&mut p).is_ok() && p.is_supported(opcode::AcceptMulti::CODE)
}

/// The running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: all-zero is a valid utsname, and uname fills it.
    let mut u: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: `u` is a live utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    let release: String = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// A provided-buffer ring: page-aligned entries the kernel consumes, and the buffers.
struct BufRing {
    entries: *mut BufRingEntry,
    layout: Layout,
    count: u16,
    tail: u16,
    bufs: Vec<u8>,
    buf_len: usize,
}

impl BufRing {
    fn new(count: u16, buf_len: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(count as usize * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = unsafe { alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = Self {
            entries,
            layout,
            count,
            tail: 0,
            bufs: vec![0; count as usize * buf_len],
            buf_len,
        };
        for bid in 0..count {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Queues buffer `bid` for the kernel (visible after [`publish`](Self::publish)).
    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, within the allocation; the kernel only reads entries between
        // its head and the published tail, and this one is beyond the published tail.
        let e = unsafe { &mut *self.entries.add(idx) };
        // SAFETY: `bid < count`, so the offset is within `bufs`.
        let addr = unsafe { self.bufs.as_mut_ptr().add(bid as usize * self.buf_len) };
        e.set_addr(addr as u64);
        e.set_len(self.buf_len as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `entries` is the ring base; the tail field overlays entry 0's reserved field,
        // which the kernel reads and only we write, with release ordering as the ABI requires.
        unsafe {
            let tail = BufRingEntry::tail(self.entries)
                .cast_mut()
                .cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buffer(&self, bid: u16) -> Option<&[u8]> {
        let start = bid as usize * self.buf_len;
        self.bufs.get(start..start + self.buf_len)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the owner unregistered it (or leaked us).
        unsafe { alloc::dealloc(self.entries.cast(), self.layout) };
    }
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

impl Uring {
    pub(crate) fn new(
        sockets: Vec<Socket>,
        waker: RawFd,
        streams: RawFd,
        max_datagram: usize,
        timestamps: bool,
    ) -> io::Result<Self> {
        let ring = build_ring()?;
        let n = sockets.len();
        let max_datagram = max_datagram.max(1);
        let recv = match multishot_mode(&ring, n, max_datagram, timestamps) {
            Some(m) => m,
            None => {
                let mut slots = Vec::with_capacity(n * SINGLE_SLOTS);
                for s in 0..n {
                    for _ in 0..SINGLE_SLOTS {
                        slots.push(Box::new(RecvSlot {
                            socket: s as u32,
                            buf: vec![0; max_datagram],
                            ctrl: [0; sys::CMSG_WORDS],
                            // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
                            addr: unsafe { mem::zeroed() },
                            iov: libc::iovec {
                                iov_base: std::ptr::null_mut(),
                                iov_len: 0,
                            },
                            // SAFETY: as above.
                            hdr: unsafe { mem::zeroed() },
                        }));
                    }
                }
                let armed = vec![false; slots.len()];
                RecvMode::Single { slots, armed }
            }
        };
        let sring = match &recv {
            RecvMode::Multi { .. } => stream_ring(&ring),
            RecvMode::Single { .. } => None,
        };
        let min_timeout = ring.params().is_feature_min_timeout();
        let send_to = kernel_at_least(6, 0);
        let multi_accept = kernel_has_multishot_accept(&ring);
        Ok(Self {
            multi_accept,
            accepting: Vec::new(),
            send_to,
            backlog: false,
            reaped: 0,
            ring,
            sockets,
            timestamps,
            min_timeout,
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            streams,
            streams_armed: false,
            streams_ready: false,
            sring,
            ssends: Vec::new(),
            free_ssends: Vec::new(),
            recv,
            sends: Vec::new(),
            free_sends: Vec::new(),
            done: Vec::new(),
            cqes: Vec::with_capacity(CQ_ENTRIES as usize),
            inflight: 0,
            counters: IoCounters::default(),
            max_datagram,
        })
    }

    /// Pushes one SQE, submitting first if the queue is full.
    ///
    /// # Safety
    /// Everything `entry` points at must stay valid until its CQE is reaped.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
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
    fn arm(&mut self) -> io::Result<()> {
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
    fn push_sends(&mut self, sends: &mut SendQueue) -> io::Result<()> {
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
    fn arm_accept(&mut self, index: usize, fd: RawFd) -> io::Result<()> {
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

/// Closes the descriptor of an accept completion (the ring is closing; nothing else will).
fn close_accepted(r: Reaped<'_>) {
    if let Reaped::Accepted { res, .. } = r {
        if res >= 0 {
            // SAFETY: the descriptor came from this completion alone: nothing else owns it.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(res) });
        }
    }
}

/// Sets up the ring with the cheapest task-run mode the kernel accepts.
fn build_ring() -> io::Result<IoUring> {
    let attempts: [fn(&mut io_uring::Builder) -> &mut io_uring::Builder; 3] = [
        |b| b.setup_single_issuer().setup_defer_taskrun(),
        |b| b.setup_coop_taskrun(),
        |b| b,
    ];
    let mut last = None;
    for f in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(CQ_ENTRIES);
        match f(&mut b).build(SQ_ENTRIES) {
            Ok(r) => return Ok(r),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup")))
}

/// The stream connections' provided-buffer ring, registered (None: no native data path).
fn stream_ring(ring: &IoUring) -> Option<BufRing> {
    let br = BufRing::new(STREAM_BUFS, STREAM_BUF).ok()?;
    // SAFETY: the entries stay allocated until after unregister_buf_ring in Drop (or leak).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(br.entries as u64, br.count, BGID_STREAM, 0)
    }
    .ok()?;
    Some(br)
}

/// Registers the provided-buffer ring if the kernel supports multishot receive.
fn multishot_mode(
    ring: &IoUring,
    sockets: usize,
    max_datagram: usize,
    timestamps: bool,
) -> Option<RecvMode> {
    if !kernel_has_multishot() {
        return None;
    }
    let control = if timestamps {
        sys::CMSG_WORDS * size_of::<u64>()
    } else {
        0
    };
    // Each buffer: io_uring_recvmsg_out, the peer address, the control data, the payload.
    let buf_len = 16 + sys::SOCKADDR_MAX + control + max_datagram;
    let mut count: usize = 1024;
    while count > 32 && count * buf_len > BUF_RING_BYTES {
        count /= 2;
    }
    let br = BufRing::new(count as u16, buf_len).ok()?;
    // SAFETY: the entries stay allocated until after unregister_buf_ring in Drop (or leak).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(br.entries as u64, br.count, BGID, 0)
    }
    .ok()?;
    // SAFETY: all-zero is a valid msghdr; only the two lengths matter for multishot recvmsg.
    let mut hdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
    hdr.msg_namelen = sys::SOCKADDR_MAX as libc::socklen_t;
    hdr.msg_controllen = control as _;
    Some(RecvMode::Multi {
        ring: br,
        hdr,
        armed: vec![false; sockets],
    })
}

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
