//! Thin OS helpers shared by the backends: the wake-up eventfd, `sockaddr` conversions, and the
//! creation of the UDP sockets (socket2).
//!
//! This is a leaf module where `unsafe` is allowed; every block says why it is sound. It knows
//! nothing of shards or handlers.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking eventfd used to wake a shard out of its wait call.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    #[cfg(target_os = "linux")]
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new() -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "eventfd needs Linux",
        ))
    }

    /// Adds one to the counter; never blocks (a full counter already means "wake up").
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `SO_ATTACH_REUSEPORT_CBPF`: a classic BPF program that picks the socket of `sock`'s
/// `SO_REUSEPORT` group for each datagram.
pub(crate) fn attach_reuseport_cbpf(sock: &Socket, prog: &[(u16, u8, u8, u32)]) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = prog
        .iter()
        .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
        .collect();
    let len = u16::try_from(filter.len()).map_err(|_| io::Error::other("program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    // `fprog` points at `filter`, alive for the call; the kernel copies the program.
    set_socket_option(sock, 51, &fprog) // SO_ATTACH_REUSEPORT_CBPF
}

/// `setsockopt(sock, SOL_SOCKET, opt, value)` with a value that holds no pointer the
/// kernel could keep (it copies what it reads during the call).
fn set_socket_option<T>(sock: &Socket, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size passed, for the length of the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_ATTACH_REUSEPORT_EBPF`: loads an eBPF socket-filter program (`struct bpf_insn`
/// words) and attaches it to `sock`'s `SO_REUSEPORT` group, where it picks the socket for
/// each datagram. `data` is the one value of an array map made for it, which the program's
/// `ld_imm64` map references (source register 1) name. A program the kernel refuses is an
/// error carrying the verifier's last words; the caller falls back (no eBPF, an older
/// kernel, no privilege for it).
pub(crate) fn attach_reuseport_ebpf(sock: &Socket, prog: &[u64], data: &[u8]) -> io::Result<()> {
    let map = bpf_array_map(data)?;
    let mut prog = prog.to_vec();
    for w in &mut prog {
        if *w & 0xff == 0x18 && (*w >> 12) & 0x0f == 1 {
            *w = (*w & 0xffff_ffff) | (u64::from(map.as_raw_fd() as u32) << 32);
        }
    }
    let prog = &prog[..];
    // The program holds the map from here on; our descriptor closes with `map`.
    // The kernel answers EAGAIN now and then (a verification interrupted); libbpf tries
    // five times too.
    let mut first = bpf_prog_load(prog, None);
    for _ in 0..4 {
        match &first {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => first = bpf_prog_load(prog, None),
            _ => break,
        }
    }
    let fd = first.or_else(|e| {
        // No eBPF here (ENOSYS), no privilege (EPERM), ...: nothing the log would explain.
        if !matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::EACCES | libc::E2BIG | libc::EAGAIN)
        ) {
            return Err(e);
        }
        // Once more with the verifier's log, for the error (since Linux 6.4 the log keeps its
        // end, where the verifier says what it refused).
        let mut log = vec![0u8; 1 << 18];
        match bpf_prog_load(prog, Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let text = String::from_utf8_lossy(&log);
                let text = text.trim_end_matches('\0').trim_end();
                let tail: Vec<&str> = text.lines().rev().take(3).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(io::Error::new(
                    e.kind(),
                    format!("{e}: {}", tail.join(" | ")),
                ))
            }
        }
    })?;
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw: libc::c_int = fd.as_raw_fd();
    // The group keeps its own reference to the program: our descriptor closes with `fd`.
    set_socket_option(sock, 52, &raw) // SO_ATTACH_REUSEPORT_EBPF
}

/// The part of `union bpf_attr` that `BPF_PROG_LOAD` reads here; the rest stays zero.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    rest: [u8; 64],
}

/// An array map of one `data.len()`-byte value, filled with `data`.
fn bpf_array_map(data: &[u8]) -> io::Result<OwnedFd> {
    // BPF_MAP_CREATE: type, key size, value size, entries; the rest zero.
    let mut create = [0u32; 16];
    create[0] = 2; // BPF_MAP_TYPE_ARRAY
    create[1] = 4;
    create[2] = u32::try_from(data.len()).map_err(|_| io::Error::other("map value too large"))?;
    create[3] = 1;
    // SAFETY: the attribute carries no address.
    let fd = unsafe { bpf(0, &create) }?;
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let map = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    /// The part of `union bpf_attr` that `BPF_MAP_UPDATE_ELEM` reads.
    #[repr(C)]
    struct Update {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let key: u32 = 0;
    let update = Update {
        map_fd: map.as_raw_fd() as u32,
        pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: data.as_ptr() as u64,
        flags: 0, // BPF_ANY
    };
    // BPF_MAP_UPDATE_ELEM. SAFETY: the attribute, the key and the value (`data.len()` bytes,
    // the map's value size) live for the call; the kernel copies them.
    unsafe { bpf(2, &update) }?;
    Ok(map)
}

/// `bpf(cmd, attr)`: what the call returns (the descriptor, for the commands that make one).
///
/// # Safety
/// `attr` is the attribute `cmd` reads, and every address in it points at memory that is
/// alive, and as large as the attribute says, for the length of the call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's promise; the size is `T`'s.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `bpf(BPF_PROG_LOAD)` of a socket filter; the program's descriptor.
fn bpf_prog_load(prog: &[u64], log: Option<&mut Vec<u8>>) -> io::Result<RawFd> {
    const LICENSE: &[u8] = b"GPL\0";
    let (log_level, log_size, log_buf) = match log {
        Some(l) => (1, l.len() as u32, l.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"ser_steer");
    let attr = ProgLoad {
        prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
        insn_cnt: u32::try_from(prog.len()).map_err(|_| io::Error::other("program too long"))?,
        insns: prog.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        rest: [0; 64],
    };
    // BPF_PROG_LOAD. SAFETY: `attr` and what it points at (the program, the license, the
    // log buffer of `log_size` bytes) are alive for the call; the kernel copies the program.
    let fd = unsafe { bpf(5, &attr) }?;
    Ok(fd as RawFd)
}

/// Resets an eventfd counter (portable backend; the io_uring backend reads it through the
/// ring). A failure (`EAGAIN` on an already-zero counter) is harmless.
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    let _ = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Whether a socket's receive queue holds a datagram (`FIONREAD`: for UDP, the size of the
/// first one). A failed call counts as empty.
pub(crate) fn unread(fd: RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    r == 0 && n > 0
}

/// Writes `addr` as a C socket address into `storage`; returns its length.
pub(crate) fn write_sockaddr(
    addr: &SocketAddr,
    storage: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The largest socket address we ask the kernel for (IPv6).
pub(crate) const SOCKADDR_MAX: usize = size_of::<libc::sockaddr_in6>();

/// Reads a C socket address from raw bytes as the kernel wrote them (maybe unaligned, e.g. in a
/// provided buffer). `None` for other families or short input.
pub(crate) fn read_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    if bytes.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]) as libc::c_int;
    if family == libc::AF_INET && bytes.len() >= size_of::<libc::sockaddr_in>() {
        // SAFETY: length checked above; read_unaligned copes with any alignment and every bit
        // pattern is a valid sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
        Some(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(sin.sin_port),
        )))
    } else if family == libc::AF_INET6 && bytes.len() >= size_of::<libc::sockaddr_in6>() {
        // SAFETY: as above, for sockaddr_in6.
        let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
            sin6.sin6_flowinfo,
            sin6.sin6_scope_id,
        )))
    } else {
        None
    }
}

/// Reads the socket address the kernel stored in `storage` (`len` bytes of it).
pub(crate) fn read_sockaddr_storage(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    // SAFETY: `storage` is a live, initialised sockaddr_storage of at least `len` bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts((storage as *const libc::sockaddr_storage).cast::<u8>(), len)
    };
    read_sockaddr(bytes)
}

/// Creates one non-blocking UDP socket bound to `addr`: `SO_REUSEPORT` when asked,
/// `IPV6_V6ONLY` on IPv6, `SO_RCVBUF` when given.
pub(crate) fn udp_socket(
    addr: SocketAddr,
    reuse_port: bool,
    recv_buffer: Option<usize>,
) -> io::Result<Socket> {
    udp_socket_with(addr, reuse_port, recv_buffer, false)
}

/// [`udp_socket`], and with `timestamps` `SO_TIMESTAMPNS`: every datagram then carries the
/// kernel's receive time as a control message ([`rx_timestamp`]).
pub(crate) fn udp_socket_with(
    addr: SocketAddr,
    reuse_port: bool,
    recv_buffer: Option<usize>,
    timestamps: bool,
) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if let Some(n) = recv_buffer {
        sock.set_recv_buffer_size(n)?;
    }
    if timestamps {
        let on: libc::c_int = 1;
        // SAFETY: a valid descriptor and a c_int option value of the size given.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    Ok(sock)
}

/// Control-message room for a receive with [`udp_socket_with`]'s timestamps (one
/// `SCM_TIMESTAMPNS`, with slack). In u64s so that the buffer is aligned for `cmsghdr`.
pub(crate) const CMSG_WORDS: usize = 8;

/// A receive's control buffer.
pub(crate) type Control = [u64; CMSG_WORDS];

/// Points a receive's `msghdr` at `ctrl` for its control messages, or at none.
pub(crate) fn set_control(h: &mut libc::msghdr, ctrl: Option<&mut Control>) {
    match ctrl {
        Some(c) => {
            h.msg_controllen = size_of_val(c) as _;
            h.msg_control = c.as_mut_ptr().cast();
        }
        None => {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
    }
}

/// The receive time in `ctrl` after a receive through `h` (pointed at it by [`set_control`]).
pub(crate) fn control_timestamp(h: &libc::msghdr, ctrl: &Control) -> Option<std::time::Duration> {
    // msg_controllen is size_t or socklen_t, by platform.
    #[allow(clippy::unnecessary_cast)]
    let used = (h.msg_controllen as usize).min(size_of_val(ctrl));
    // SAFETY: a plain u64 array viewed as its first `used` bytes.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(ctrl.as_ptr().cast(), used) };
    rx_timestamp(bytes)
}

/// The `SCM_TIMESTAMPNS` receive time in `control` (the control bytes of one received
/// message), as wall-clock time since the epoch.
pub(crate) fn rx_timestamp(control: &[u8]) -> Option<std::time::Duration> {
    let word = size_of::<usize>();
    let hdr = size_of::<libc::cmsghdr>();
    let data_at = (hdr + word - 1) & !(word - 1);
    let mut off = 0;
    while off + hdr <= control.len() {
        // SAFETY: `off + hdr` is within `control`; read_unaligned copes with any alignment.
        let c: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control.as_ptr().add(off).cast()) };
        let len = c.cmsg_len as usize;
        if len < hdr || off + len > control.len() {
            return None;
        }
        if c.cmsg_level == libc::SOL_SOCKET
            && c.cmsg_type == libc::SCM_TIMESTAMPNS
            && len >= data_at + size_of::<libc::timespec>()
        {
            // SAFETY: the timespec lies within this message, within `control`.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(control.as_ptr().add(off + data_at).cast()) };
            return Some(std::time::Duration::new(
                u64::try_from(ts.tv_sec).ok()?,
                u32::try_from(ts.tv_nsec).ok()?,
            ));
        }
        off += (len + word - 1) & !(word - 1);
    }
    None
}

/// Turns wall-clock receive times into `Instant`s: both clocks are read once, and a stamp
/// becomes "that long before now".
pub(crate) struct Clocks {
    mono: std::time::Instant,
    real: std::time::Duration,
}

impl Clocks {
    pub(crate) fn now() -> Self {
        Self {
            mono: std::time::Instant::now(),
            real: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// The instant of wall-clock time `at` (a stamp from the future is taken as now).
    pub(crate) fn instant(&self, at: std::time::Duration) -> std::time::Instant {
        let age = self.real.saturating_sub(at);
        self.mono.checked_sub(age).unwrap_or(self.mono)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:5060", "[::1]:5061", "[fe80::1%2]:7"] {
            let addr: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
            let len = write_sockaddr(&addr, &mut st);
            assert_eq!(read_sockaddr_storage(&st, len), Some(addr));
        }
        assert_eq!(read_sockaddr(&[0u8; 1]), None);
    }

    #[test]
    fn eventfd_wakes_and_drains() {
        let e = EventFd::new().unwrap();
        e.wake();
        e.wake();
        drain_eventfd(e.raw());
        drain_eventfd(e.raw());
    }
}
