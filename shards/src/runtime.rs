//! [`Runtime`]: starting the shards (backend choice, sockets, threads, pinning), observing them
//! and stopping them.
//!
//! All sockets are bound on the calling thread before any shard starts, so a bind error is a
//! plain `io::Error` from [`Runtime::start`]. Backends are built on their shard thread (an
//! io_uring ring belongs to the thread that submits to it); a failure there stops the shards
//! already started and is returned too. No `unsafe` here.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use socket2::Socket;

use crate::config::{Backend, BackendKind, Config};
use crate::ctx::Core;
use crate::mailbox::{Mailbox, Remote, Shared};
use crate::pool::Pool;
use crate::shard::{self, Io};
use crate::stats::{AtomicStats, ShardStats};
use crate::{Handler, SocketId, SocketInfo};

/// A running set of shards. Dropping it shuts the shards down and waits for them.
pub struct Runtime<E> {
    shared: Arc<Shared<E>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    kind: BackendKind,
    detail: &'static str,
    /// Per shard, the bound address of each socket (index = `SocketId`).
    addrs: Vec<Vec<SocketAddr>>,
}

type Ready = (usize, io::Result<&'static str>);

/// Sockets bound and a backend chosen, no shard started yet: what [`Runtime::bind`] returns,
/// so the caller can read the addresses it got (a port 0 resolved) before it builds the
/// handlers that need them.
pub struct Bound {
    cfg: Config,
    kind: BackendKind,
    sockets: Vec<Vec<Socket>>,
    /// Per shard, its stream listeners (ids after the datagram sockets').
    listeners: Vec<Vec<Socket>>,
    addrs: Vec<Vec<SocketAddr>>,
}

impl Bound {
    /// Attaches a classic BPF program (`(code, jt, jf, k)` instructions) to the `SO_REUSEPORT`
    /// group of datagram socket `socket` (its index among the UDP listen addresses): the
    /// kernel then gives each datagram to the shard whose index the program returns, or, for
    /// a value past the group, to the one its hash picks (`SO_ATTACH_REUSEPORT_CBPF`). The
    /// shards' sockets join the group in shard order.
    pub fn steer_datagrams(&self, socket: usize, prog: &[(u16, u8, u8, u32)]) -> io::Result<()> {
        match self.group(socket)? {
            Some(sock) => crate::sys::attach_reuseport_cbpf(sock, prog),
            None => Ok(()),
        }
    }

    /// As [`steer_datagrams`](Self::steer_datagrams) with an eBPF socket-filter program
    /// (`struct bpf_insn` words; `SO_ATTACH_REUSEPORT_EBPF`), which may loop over the
    /// datagram; `data` is the one value of an array map made for it, which its `ld_imm64`
    /// map references (source register 1) name. An error when the kernel refuses it (no eBPF,
    /// the verifier, no privilege).
    pub fn steer_datagrams_ebpf(&self, socket: usize, prog: &[u64], data: &[u8]) -> io::Result<()> {
        match self.group(socket)? {
            Some(sock) => crate::sys::attach_reuseport_ebpf(sock, prog, data),
            None => Ok(()),
        }
    }

    /// A socket of datagram socket `socket`'s `SO_REUSEPORT` group (None without
    /// `reuse_port`: no group to steer).
    fn group(&self, socket: usize) -> io::Result<Option<&Socket>> {
        if !self.cfg.reuse_port {
            return Ok(None);
        }
        self.sockets
            .first()
            .and_then(|s| s.get(socket))
            .filter(|_| socket < self.cfg.listen.len())
            .map(Some)
            .ok_or_else(|| io::Error::other("no such datagram socket"))
    }

    /// Shard 0's sockets in [`SocketId`] order: each bound address, and whether it is a
    /// stream listener (the others are datagram sockets). With `reuse_port` every shard has
    /// the same list.
    pub fn sockets(&self) -> Vec<(SocketAddr, bool)> {
        let udp = self.cfg.listen.len();
        self.addrs
            .first()
            .map(|a| a.iter().enumerate().map(|(i, a)| (*a, i >= udp)).collect())
            .unwrap_or_default()
    }

    /// The distinct bound addresses of all shards, shard 0's first (see
    /// [`Runtime::local_addrs`]).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        distinct(&self.addrs)
    }

    /// Starts the shards on these sockets (see [`Runtime::start`]).
    pub fn start<E, H, F>(self, factory: F) -> io::Result<Runtime<E>>
    where
        E: Send + 'static,
        H: Handler<Event = E>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        Runtime::start_bound(self, factory)
    }
}

/// The distinct addresses of `addrs`, in order.
fn distinct(addrs: &[Vec<SocketAddr>]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs.iter().flatten() {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

impl Runtime<()> {
    /// Chooses the backend and binds every socket on the calling thread; nothing runs yet.
    pub fn bind(cfg: Config) -> io::Result<Bound> {
        let n = cfg.shard_count();
        let kind = choose_backend(cfg.backend, cfg.max_datagram)?;
        let (sockets, mut addrs) = bind_all(&cfg, n)?;
        let listeners = bind_streams(&cfg, n, &mut addrs)?;
        Ok(Bound {
            cfg,
            kind,
            sockets,
            listeners,
            addrs,
        })
    }
}

impl<E: Send + 'static> Runtime<E> {
    /// Binds every socket, starts the blocking pool and one thread per shard; `factory(i)`
    /// builds shard `i`'s handler on that shard's thread.
    pub fn start<H, F>(cfg: Config, factory: F) -> io::Result<Self>
    where
        H: Handler<Event = E>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        Runtime::bind(cfg)?.start(factory)
    }

    fn start_bound<H, F>(bound: Bound, factory: F) -> io::Result<Self>
    where
        H: Handler<Event = E>,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let Bound {
            cfg,
            kind,
            sockets,
            listeners,
            addrs,
        } = bound;
        let n = cfg.shard_count();

        let mailboxes = (0..n)
            .map(|_| Mailbox::new())
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            mailboxes,
            stats: (0..n).map(|_| AtomicStats::default()).collect(),
            stop: AtomicBool::new(false),
            pool: Pool::start(cfg.blocking_threads, &cfg.name)?,
        });
        let limit = Arc::new(crate::streams::ConnLimit::new(cfg.max_connections));
        let mut rt = Self {
            shared,
            threads: Vec::with_capacity(n),
            kind,
            detail: "",
            addrs,
        };

        let factory = Arc::new(factory);
        let cores = if cfg.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let udp = cfg.listen.len();
        for (i, (socks, lsocks)) in sockets.into_iter().zip(listeners).enumerate() {
            let infos: Vec<SocketInfo> = rt.addrs[i]
                .iter()
                .enumerate()
                .map(|(j, a)| SocketInfo {
                    id: SocketId(j as u32),
                    local: *a,
                    stream: j >= udp,
                })
                .collect();
            let listeners = lsocks
                .into_iter()
                .zip(infos[udp..].iter())
                .map(|(s, info)| (info.id, s, info.local))
                .collect();
            let shard = ShardStart {
                index: i,
                kind,
                sockets: socks,
                listeners,
                limit: limit.clone(),
                infos,
                max_datagram: cfg.max_datagram,
                batch: cfg.batch,
                stamp: cfg.stamp,
                core: (!cores.is_empty()).then(|| cores[i % cores.len()]),
                shared: rt.shared.clone(),
                ready: ready_tx.clone(),
            };
            let factory = factory.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-shard-{i}", cfg.name))
                .spawn(move || shard.run(&*factory));
            match spawned {
                Ok(h) => rt.threads.push(h),
                Err(e) => {
                    rt.stop_now();
                    return Err(e);
                }
            }
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok((_, Ok(detail))) => rt.detail = detail,
                Ok((i, Err(e))) => {
                    rt.stop_now();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("shard {i}: {kind} backend: {e}"),
                    ));
                }
                Err(_) => {
                    rt.stop_now();
                    return Err(io::Error::other("a shard thread exited during start"));
                }
            }
        }
        Ok(rt)
    }

    /// The backend the shards use.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// The backend in words, e.g. "io_uring (multishot recvmsg, provided-buffer ring)", for
    /// the server's start-up log line.
    pub fn backend_detail(&self) -> &'static str {
        self.detail
    }

    /// The distinct bound addresses of all shards, shard 0's first. With `reuse_port` these
    /// are the listen addresses (ports resolved); without it, every shard's own.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        distinct(&self.addrs)
    }

    /// Shard `shard`'s bound addresses, indexed by `SocketId`.
    pub fn shard_local_addrs(&self, shard: usize) -> &[SocketAddr] {
        self.addrs.get(shard).map_or(&[], |v| v.as_slice())
    }

    pub fn shard_count(&self) -> usize {
        self.shared.mailboxes.len()
    }

    pub fn remote(&self) -> Remote<E> {
        Remote {
            shared: self.shared.clone(),
        }
    }

    /// A snapshot of every shard's counters (each at most one loop iteration old).
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shared.stats.iter().map(AtomicStats::load).collect()
    }

    /// Asks every shard to exit; returns at once (see [`join`](Self::join)).
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Waits for every shard to exit (after [`shutdown`](Self::shutdown) or
    /// [`Remote::shutdown`]), then stops the blocking pool. The error of a shard whose backend
    /// failed, or that panicked outside a handler, is returned.
    pub fn join(mut self) -> io::Result<()> {
        self.join_all()
    }
}

impl<E> Runtime<E> {
    fn join_all(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for (i, h) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            let r = match h.join() {
                Ok(r) => r.map_err(|e| io::Error::new(e.kind(), format!("shard {i}: {e}"))),
                Err(_) => Err(io::Error::other(format!("shard {i} panicked"))),
            };
            if result.is_ok() {
                result = r;
            }
        }
        self.shared.pool.stop_and_join();
        result
    }

    fn stop_now(&mut self) {
        self.shared.shutdown();
        let _ = self.join_all();
    }
}

impl<E> Drop for Runtime<E> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_now();
        } else {
            self.shared.pool.stop_and_join();
        }
    }
}

/// Picks the backend: `Auto` probes io_uring and falls back to the portable one.
fn choose_backend(want: Backend, max_datagram: usize) -> io::Result<BackendKind> {
    #[cfg(target_os = "linux")]
    {
        match want {
            Backend::Portable => Ok(BackendKind::Portable),
            Backend::IoUring => crate::uring::probe(max_datagram).map(|()| BackendKind::IoUring),
            Backend::Auto => Ok(match crate::uring::probe(max_datagram) {
                Ok(()) => BackendKind::IoUring,
                Err(_) => BackendKind::Portable,
            }),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (want, max_datagram);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "ser-shards backends need Linux (io_uring or epoll)",
        ))
    }
}

/// Per shard, the bound address of each socket.
type PerShardAddrs = Vec<Vec<SocketAddr>>;

/// Binds every shard's sockets. With `reuse_port`, the first bind of a port-0 address fixes the
/// port the other shards then share.
fn bind_all(cfg: &Config, n: usize) -> io::Result<(Vec<Vec<Socket>>, PerShardAddrs)> {
    let mut sockets: Vec<Vec<Socket>> = (0..n).map(|_| Vec::new()).collect();
    let mut addrs: Vec<Vec<SocketAddr>> = (0..n).map(|_| Vec::new()).collect();
    for want in &cfg.listen {
        let mut attempt = 0;
        let bound = loop {
            attempt += 1;
            let addr = if cfg.reuse_port { claim(*want)? } else { *want };
            match bind_shards(cfg, n, addr) {
                // The claimed port-0 pick was taken before the shards bound it: pick again.
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse && want.port() == 0 && attempt < 8 => {}
                r => break r?,
            }
        };
        for (i, (sock, local)) in bound.into_iter().enumerate() {
            sockets[i].push(sock);
            addrs[i].push(local);
        }
    }
    Ok((sockets, addrs))
}

/// Every shard's stream listeners, their addresses appended to each shard's list. A port-0
/// address is given a port by the first shard's bind and shared by the others.
fn bind_streams(
    cfg: &Config,
    n: usize,
    addrs: &mut [Vec<SocketAddr>],
) -> io::Result<Vec<Vec<Socket>>> {
    let mut out: Vec<Vec<Socket>> = (0..n).map(|_| Vec::new()).collect();
    for want in &cfg.stream_listen {
        let mut addr = *want;
        // Port 0 on an address a datagram socket also has with port 0: the port that one
        // got, when it is free for TCP too (SIP serves UDP and TCP on one port).
        let same_udp = cfg
            .listen
            .iter()
            .position(|u| *u == addr && addr.port() == 0)
            .and_then(|j| addrs.first().and_then(|a| a.get(j)));
        if let Some(u) = same_udp {
            if crate::streams::tcp_listener(*u, false).is_ok() {
                addr = *u;
            }
        }
        // Any other port 0: a plain bind picks a port nobody holds (see `claim`: a port-0
        // SO_REUSEPORT bind could share one our own TCP listener, or another server, has).
        if addr.port() == 0 && cfg.reuse_port {
            let probe = crate::streams::tcp_listener(addr, false)?;
            addr = bound_addr(&probe)?;
        }
        for (i, shard) in out.iter_mut().enumerate() {
            let sock = crate::streams::tcp_listener(addr, cfg.reuse_port)?;
            let local = bound_addr(&sock)?;
            if cfg.reuse_port {
                addr = local;
            }
            shard.push(sock);
            addrs[i].push(local);
        }
    }
    Ok(out)
}

/// A plain bind (no `SO_REUSEPORT`) of `want`, released at once; returns the address it got,
/// for the shards' `SO_REUSEPORT` binds.
/// - A given port: `SO_REUSEPORT` would quietly share a port that another process of the same
///   user (a second server started by mistake) holds; the plain bind makes that the "address
///   in use" it is. A server that just died (kill -9, a crash before a restart) may hold its
///   port a moment longer: io_uring tears a ring down after the process is gone. So an "in use"
///   is retried for up to 3 s before it is believed.
/// - Port 0: Linux gives a port-0 `SO_REUSEPORT` bind a port that other `SO_REUSEPORT` sockets
///   of the same user may already hold (it counts sharing as no conflict): the shards would
///   then split another server's (or another test's) traffic. A plain bind picks a port that
///   nobody holds.
fn claim(want: SocketAddr) -> io::Result<SocketAddr> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match crate::sys::udp_socket(want, false, None) {
            Ok(s) => return bound_addr(&s),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && want.port() != 0
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One socket per shard on `addr`, each with its bound address; with `reuse_port` the first
/// bind fixes the port (when `addr`'s is 0) that the others share.
fn bind_shards(
    cfg: &Config,
    n: usize,
    mut addr: SocketAddr,
) -> io::Result<Vec<(Socket, SocketAddr)>> {
    let mut bound = Vec::with_capacity(n);
    for _ in 0..n {
        let sock = crate::sys::udp_socket_with(addr, cfg.reuse_port, cfg.recv_buffer, cfg.stamp)?;
        let local = bound_addr(&sock)?;
        if cfg.reuse_port {
            addr = local;
        }
        bound.push((sock, local));
    }
    Ok(bound)
}

fn bound_addr(sock: &Socket) -> io::Result<SocketAddr> {
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))
}

/// Everything one shard thread needs.
struct ShardStart<E> {
    index: usize,
    kind: BackendKind,
    sockets: Vec<Socket>,
    listeners: Vec<(SocketId, Socket, SocketAddr)>,
    limit: Arc<crate::streams::ConnLimit>,
    infos: Vec<SocketInfo>,
    max_datagram: usize,
    batch: Option<std::time::Duration>,
    stamp: bool,
    core: Option<core_affinity::CoreId>,
    shared: Arc<Shared<E>>,
    ready: mpsc::Sender<Ready>,
}

impl<E: Send + 'static> ShardStart<E> {
    fn run<H: Handler<Event = E>>(self, factory: &dyn Fn(usize) -> H) -> io::Result<()> {
        if let Some(core) = self.core {
            // Not fatal: containers and cgroups may refuse; the shard just floats.
            let _ = core_affinity::set_for_current(core);
        }
        #[cfg(target_os = "linux")]
        {
            let waker = self.shared.mailboxes[self.index].waker.raw();
            let (kind, max, stamp) = (self.kind, self.max_datagram, self.stamp);
            let (sockets, listeners, limit, rest) = self.split();
            let streams = match crate::streams::Streams::new(rest.index, listeners, limit) {
                Ok(s) => s,
                Err(e) => {
                    let _ = rest.ready.send((rest.index, Err(e)));
                    return Ok(());
                }
            };
            let sfd = streams.fd();
            match kind {
                BackendKind::IoUring => rest.serve(
                    crate::uring::Uring::new(sockets, waker, sfd, max, stamp),
                    streams,
                    factory,
                ),
                BackendKind::Portable => rest.serve(
                    crate::portable::Portable::new(sockets, waker, sfd, max, stamp),
                    streams,
                    factory,
                ),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = factory;
            Err(io::Error::new(io::ErrorKind::Unsupported, "no backend"))
        }
    }

    #[allow(clippy::type_complexity)]
    fn split(
        self,
    ) -> (
        Vec<Socket>,
        Vec<(SocketId, Socket, SocketAddr)>,
        Arc<crate::streams::ConnLimit>,
        ShardRest<E>,
    ) {
        let rest = ShardRest {
            index: self.index,
            batch: self.batch,
            infos: self.infos,
            shared: self.shared,
            ready: self.ready,
        };
        (self.sockets, self.listeners, self.limit, rest)
    }
}

/// A shard thread's state once its sockets went to the backend.
struct ShardRest<E> {
    index: usize,
    batch: Option<std::time::Duration>,
    infos: Vec<SocketInfo>,
    shared: Arc<Shared<E>>,
    ready: mpsc::Sender<Ready>,
}

impl<E: Send + 'static> ShardRest<E> {
    fn serve<B: Io, H: Handler<Event = E>>(
        self,
        io: io::Result<B>,
        streams: crate::streams::Streams,
        factory: &dyn Fn(usize) -> H,
    ) -> io::Result<()> {
        let Self {
            index,
            batch,
            infos,
            shared,
            ready,
        } = self;
        let mut io = match io {
            Ok(io) => io,
            Err(e) => {
                let _ = ready.send((index, Err(e)));
                return Ok(());
            }
        };
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(index)));
        let Ok(mut handler) = made else {
            let _ = ready.send((index, Err(io::Error::other("the handler factory panicked"))));
            return Ok(());
        };
        let _ = ready.send((index, Ok(io.detail())));
        drop(ready);
        let mut core = Core::new(index, infos, shared.clone(), streams);
        let r = shard::run(&mut io, &mut core, &mut handler, batch);
        if r.is_err() {
            // A shard whose backend failed cannot serve its Call-IDs: stop them all so that a
            // supervisor restarts the process.
            shared.shutdown();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Raises the open-file soft limit to the hard one (the test holds ~1200 sockets).
    fn more_files() {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit out-parameter, then the same struct back in.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
                l.rlim_cur = l.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            }
        }
    }

    /// A runtime on port 0 never lands on a port that other SO_REUSEPORT sockets hold. Linux
    /// would give a plain port-0 SO_REUSEPORT bind such a port about once in 70 binds at first
    /// (400 held ports out of ~28 000), so 400 binds found several before the fix.
    #[test]
    fn port_zero_never_joins_another_reuse_port_group() {
        more_files();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut held = Vec::new();
        let mut taken = HashSet::new();
        for _ in 0..400 {
            let Ok(s) = crate::sys::udp_socket(any, true, None) else {
                break; // out of descriptors: test with what we have
            };
            taken.insert(s.local_addr().unwrap().as_socket().unwrap().port());
            held.push(s);
        }
        let cfg = Config {
            listen: vec![any],
            reuse_port: true,
            ..Config::default()
        };
        let mut ours = Vec::new();
        for _ in 0..400 {
            let Ok((socks, addrs)) = bind_all(&cfg, 2) else {
                break;
            };
            let port = addrs[0][0].port();
            assert_eq!(addrs[1][0].port(), port, "the shards share one port");
            assert!(taken.insert(port), "port {port} was already held");
            ours.push(socks);
        }
        assert!(ours.len() >= 100, "only {} runtimes bound", ours.len());
    }
}
