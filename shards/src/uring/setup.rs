//! Setting a shard's ring up: the probe [`Backend::Auto`](crate::Backend::Auto) runs first,
//! the kernel checks (release, opcodes, `SER_URING_SINGLESHOT`), building the ring with the
//! cheapest task-run mode the kernel accepts, registering the provided-buffer rings, and
//! [`Uring::new`] choosing multishot or single-shot receives. Holds `unsafe` code (the leaf
//! module's rule: every block says why it is sound).

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{opcode, IoUring, Probe};
use socket2::Socket;

use crate::stats::IoCounters;
use crate::sys;

use super::{
    BufRing, RecvMode, RecvSlot, Uring, BGID, BGID_STREAM, BUF_RING_BYTES, CQ_ENTRIES,
    SINGLE_SLOTS, SQ_ENTRIES, STREAM_BUF, STREAM_BUFS,
};

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
