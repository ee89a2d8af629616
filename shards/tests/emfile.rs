//! Out of descriptors while accepting (EMFILE), on each backend: the waiting connection is
//! shed with the reserve descriptor (accepted and closed at once, counted as refused) and the
//! listener keeps accepting once descriptors are free again; on io_uring this is the ring's
//! multishot accept ending in an error and being asked for again. A test binary of its own:
//! it lowers the process's descriptor limit, which no other test may see.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ser_shards::{
    Backend, Config, Ctx, Handler, Inbound, Runtime, ShardStats, StreamEvent, TimerId,
};

const WAIT: Duration = Duration::from_secs(10);

/// Echoes every byte back on its connection.
struct Echo;

impl Handler for Echo {
    type Event = ();

    fn on_message(&mut self, _ctx: &mut Ctx<'_, ()>, _d: Inbound<'_>) {}

    fn on_stream(&mut self, ctx: &mut Ctx<'_, ()>, ev: StreamEvent<'_>) {
        if let StreamEvent::Data { conn, data } = ev {
            let _ = ctx.write(conn, data);
        }
    }

    fn on_event(&mut self, _ctx: &mut Ctx<'_, ()>, _ev: ()) {}

    fn on_timer(&mut self, _ctx: &mut Ctx<'_, ()>, _t: TimerId, _token: u64) {}
}

fn start(backend: Backend) -> (Runtime<()>, SocketAddr) {
    let cfg = Config {
        shards: 1,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        backend,
        pin: false,
        blocking_threads: 1,
        ..Config::default()
    };
    let bound = Runtime::bind(cfg).expect("bind");
    let addr = bound.sockets()[1].0;
    (bound.start(|_| Echo).expect("start"), addr)
}

fn wait_stats(rt: &Runtime<()>, ok: impl Fn(&ShardStats) -> bool) -> ShardStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = ShardStats::sum(&rt.stats());
        if ok(&s) || Instant::now() > deadline {
            assert!(ok(&s), "counters never got there: {s:?}");
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echoes(c: &mut TcpStream) {
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"x").unwrap();
    let mut b = [0; 1];
    c.read_exact(&mut b).unwrap();
}

fn nofile() -> libc::rlimit {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit out-parameter.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    l
}

fn set_nofile(l: &libc::rlimit) {
    // SAFETY: a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, l) }, 0);
}

/// Takes every descriptor the current limit leaves but `free`, returning what holds them.
fn fill_but(free: usize) -> Vec<std::fs::File> {
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    held.truncate(held.len().saturating_sub(free));
    held
}

fn shed_then_accept(backend: Backend) {
    // The limit is lowered before the runtime starts: io_uring reads it when an accept is
    // asked for, not when it completes.
    let saved = nofile();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_nofile(&libc::rlimit {
        rlim_cur: open + 64,
        rlim_max: saved.rlim_max,
    });
    let (rt, addr) = start(backend);
    let ring = rt.backend_detail().contains("multishot accept");
    // Room for one client and its accepted socket, and the second client: its accept fails.
    let held = fill_but(3);
    let mut first = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    echoes(&mut first);
    let mut second = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    second.set_read_timeout(Some(WAIT)).unwrap();
    let _ = second.write_all(b"x");
    let mut b = [0; 1];
    let r = second.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "shed, not served: {r:?}");
    let s = wait_stats(&rt, |s| s.conns_refused >= 1);
    assert_eq!((s.conns_accepted, s.conns_open), (1, 1), "{s:?}");
    // Descriptors free again: the listener accepts on (the ring's accept was asked again).
    drop((first, second, held));
    wait_stats(&rt, |s| s.conns_open == 0);
    let mut third = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    echoes(&mut third);
    let s = wait_stats(&rt, |s| s.conns_accepted == 2);
    assert_eq!(s.conns_accepted_ring, if ring { 2 } else { 0 }, "{s:?}");
    assert_eq!(s.conns_refused, 1, "one connection shed: {s:?}");
    rt.shutdown();
    let _ = rt.join();
    set_nofile(&saved);
}

/// Both backends in one test: the descriptor limit is the process's, so they must not overlap.
#[test]
fn emfile_sheds_and_accepting_goes_on() {
    shed_then_accept(Backend::Portable);
    match ser_shards::io_uring_probe() {
        Ok(()) => shed_then_accept(Backend::IoUring),
        Err(e) => eprintln!("NOTE: io_uring unavailable here ({e}); skipping its variant"),
    }
}
