//! The backend-independent test suite: every function takes the [`Backend`] to run on, and
//! `backend_suite!` instantiates all of them as `#[test]`s for one backend. Everything binds
//! to loopback with port 0 and every wait is bounded.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ser_shards::{Backend, Config, Ctx, Handler, Inbound, Runtime, ShardStats, SocketId, TimerId};

#[allow(unused_macros)]
macro_rules! backend_suite {
    ($backend:expr) => {
        backend_suite!(@tests $backend; echo_many_ports, ownership_many_ports, ownership_one_port,
            timers_order_and_cancel, spawn_blocking_returns_to_shard, post_and_broadcast,
            batching_under_burst, ipv6_loopback, panicking_handler_keeps_serving,
            no_reuse_port_distinct_ports, oversize_dropped, shutdown_and_join, drop_without_join,
            bind_error_is_error, pinned_shards, coalesced_wakeups_keep_arrival_times,
            batched_shard_reads_a_whole_burst, stream_echo, stream_connect_out, stream_limit);
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if common::skip($backend) {
                    return;
                }
                common::$name($backend);
            }
        )*
    };
}

mod streams;
#[allow(unused_imports)]
pub use streams::{stream_connect_out, stream_echo, stream_limit};

pub const WAIT: Duration = Duration::from_secs(10);

/// True (with a note) when the io_uring backend is asked for but genuinely unavailable.
pub fn skip(backend: Backend) -> bool {
    if backend == Backend::IoUring {
        if let Err(e) = ser_shards::io_uring_probe() {
            eprintln!("NOTE: io_uring unavailable here ({e}); skipping the io_uring variant");
            return true;
        }
    }
    false
}

/// What test handlers report to the test thread.
#[derive(Debug)]
pub enum Note {
    Owned {
        key: Vec<u8>,
        shard: usize,
        handed_off: bool,
    },
    Timer {
        shard: usize,
        token: u64,
        at: Instant,
    },
    Hello {
        shard: usize,
        value: u32,
    },
    Done {
        spawned_on: usize,
        returned_to: usize,
    },
    Started {
        shard: usize,
    },
}

pub enum Ev {
    Hello(u32),
    Done {
        peer: SocketAddr,
        socket: SocketId,
        spawned_on: usize,
    },
}

/// One handler for the whole suite, driven by the datagram's content:
/// - `boom`: panics; `stall`: sleeps 100 ms (simulates a busy shard; no reply);
/// - `slow`: a 300 ms blocking job, answered `done` from on_event;
/// - `key:<k>|...`: ownership by FNV hash of `<k>`, handed off to the owner, answered there;
/// - `who`: answered `shard=<i>`; anything else is echoed.
pub struct TestHandler {
    shard: usize,
    notes: Sender<Note>,
    timers: bool,
}

pub fn fnv(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub fn owner_of(data: &[u8], shards: usize) -> Option<(Vec<u8>, usize)> {
    let rest = data.strip_prefix(b"key:")?;
    let key = rest.split(|&b| b == b'|').next()?.to_vec();
    let owner = (fnv(&key) % shards as u64) as usize;
    Some((key, owner))
}

impl Handler for TestHandler {
    type Event = Ev;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Ev>) {
        let _ = self.notes.send(Note::Started { shard: ctx.shard() });
        if self.timers && ctx.shard() == 0 {
            let now = ctx.now();
            let ms = |n| now + Duration::from_millis(n);
            ctx.set_timer(ms(60), 3);
            ctx.set_timer(ms(20), 1);
            let c = ctx.set_timer(ms(30), 99);
            ctx.set_timer(ms(40), 2);
            ctx.set_timer(ms(40), 22);
            ctx.cancel_timer(c);
            ctx.cancel_timer(c);
            ctx.cancel_timer(TimerId(12345));
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Ev>, d: Inbound<'_>) {
        let data = d.data;
        if data == b"boom" {
            panic!("test handler asked to panic");
        } else if data == b"stall" {
            std::thread::sleep(Duration::from_millis(100));
        } else if data == b"slow" {
            let (peer, socket, spawned_on) = (d.peer, d.socket, ctx.shard());
            ctx.spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(300));
                Ev::Done {
                    peer,
                    socket,
                    spawned_on,
                }
            });
        } else if let Some((key, owner)) = owner_of(data, ctx.shard_count()) {
            if owner != ctx.shard() {
                assert!(
                    !d.handed_off,
                    "a handed-off datagram must land on its owner"
                );
                ctx.handoff(owner, &d);
                return;
            }
            let _ = self.notes.send(Note::Owned {
                key,
                shard: ctx.shard(),
                handed_off: d.handed_off,
            });
            ctx.send(d.socket, d.peer, data);
        } else if data == b"lag" {
            // How long the datagram waited between its arrival and this handler.
            let lag = ctx.now().saturating_duration_since(d.at).as_micros();
            ctx.send_with(d.socket, d.peer, |b| {
                b.extend_from_slice(format!("lag={lag}").as_bytes())
            });
        } else if data == b"who" {
            let shard = ctx.shard();
            ctx.send_with(d.socket, d.peer, |b| {
                b.extend_from_slice(format!("shard={shard}").as_bytes())
            });
        } else {
            ctx.send(d.socket, d.peer, data);
        }
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_, Ev>, ev: Ev) {
        match ev {
            Ev::Hello(value) => {
                let _ = self.notes.send(Note::Hello {
                    shard: ctx.shard(),
                    value,
                });
            }
            Ev::Done {
                peer,
                socket,
                spawned_on,
            } => {
                let _ = self.notes.send(Note::Done {
                    spawned_on,
                    returned_to: ctx.shard(),
                });
                ctx.send(socket, peer, b"done");
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Ev>, _timer: TimerId, token: u64) {
        let _ = self.notes.send(Note::Timer {
            shard: ctx.shard(),
            token,
            at: ctx.now(),
        });
    }
}

pub fn config(backend: Backend, shards: usize, listen: &str) -> Config {
    Config {
        shards,
        listen: vec![listen.parse().expect("test address")],
        backend,
        pin: false,
        blocking_threads: 2,
        name: "test".into(),
        ..Config::default()
    }
}

pub fn start(cfg: Config, timers: bool) -> (Runtime<Ev>, Receiver<Note>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let rt = Runtime::start(cfg, move |shard| TestHandler {
        shard,
        notes: tx.lock().unwrap().clone(),
        timers,
    })
    .expect("runtime starts");
    (rt, rx)
}

pub fn client(to: SocketAddr) -> UdpSocket {
    let bind = if to.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let s = UdpSocket::bind(bind).expect("client bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Receives until `n` datagrams came or `WAIT` passed.
pub fn recv_n(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n && Instant::now() < deadline {
        if let Ok((len, _)) = s.recv_from(&mut buf) {
            out.push(buf[..len].to_vec());
        }
    }
    out
}

pub fn total(rt: &Runtime<Ev>) -> ShardStats {
    ShardStats::sum(&rt.stats())
}

/// Polls the runtime's counters until `ok` holds (or `WAIT` passes).
pub fn wait_stats(rt: &Runtime<Ev>, ok: impl Fn(&ShardStats) -> bool) -> ShardStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = total(rt);
        if ok(&t) || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn join_bounded(rt: Runtime<Ev>) {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(rt.join());
    });
    let r = rx.recv_timeout(WAIT).expect("join returns in time");
    r.expect("join is Ok");
}

pub fn echo_many_ports(b: Backend) {
    let (rt, _notes) = start(config(b, 3, "127.0.0.1:0"), false);
    let to = rt.local_addrs()[0];
    assert_eq!(
        rt.local_addrs().len(),
        1,
        "reuse_port: one address shared by all shards"
    );
    let clients: Vec<UdpSocket> = (0..100).map(|_| client(to)).collect();
    for round in 0..5u32 {
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("echo {i} {round}").as_bytes(), to)
                .unwrap();
        }
        for (i, c) in clients.iter().enumerate() {
            let got = recv_n(c, 1);
            assert_eq!(
                got,
                vec![format!("echo {i} {round}").into_bytes()],
                "client {i} round {round}"
            );
        }
    }
    let t = wait_stats(&rt, |t| t.datagrams_sent >= 500);
    assert_eq!(t.datagrams_received, 500);
    assert_eq!(t.datagrams_sent, 500);
    assert_eq!(t.bytes_sent, t.bytes_received);
    assert_eq!((t.panics, t.send_errors, t.truncated), (0, 0, 0));
    join_after_shutdown(rt);
}

fn join_after_shutdown(rt: Runtime<Ev>) {
    rt.shutdown();
    join_bounded(rt);
}

fn ownership(b: Backend, ports: usize) {
    let shards = 3;
    let (rt, notes) = start(config(b, shards, "127.0.0.1:0"), false);
    let to = rt.local_addrs()[0];
    let clients: Vec<UdpSocket> = (0..ports).map(|_| client(to)).collect();
    let keys = 40;
    let per_key = 6;
    let mut sent = 0;
    for r in 0..per_key {
        for k in 0..keys {
            let c = &clients[(k * 7 + r) % ports];
            c.send_to(format!("key:call-{k}@example|{r}").as_bytes(), to)
                .unwrap();
            sent += 1;
        }
        for (i, c) in clients.iter().enumerate() {
            let want = (0..keys).filter(|k| (k * 7 + r) % ports == i).count();
            assert_eq!(recv_n(c, want).len(), want, "replies for round {r}");
        }
    }
    let mut seen: HashMap<Vec<u8>, HashSet<usize>> = HashMap::new();
    let mut handed = 0;
    let mut owned = 0;
    while owned < sent {
        match notes.recv_timeout(WAIT).expect("owned note") {
            Note::Owned {
                key,
                shard,
                handed_off,
            } => {
                owned += 1;
                handed += handed_off as usize;
                seen.entry(key).or_default().insert(shard);
            }
            Note::Started { .. } => {}
            n => panic!("unexpected {n:?}"),
        }
    }
    assert_eq!(seen.len(), keys);
    for (key, on) in &seen {
        let (_, owner) = owner_of(&[b"key:".as_slice(), key].concat(), shards).unwrap();
        assert_eq!(
            on.iter().copied().collect::<Vec<_>>(),
            vec![owner],
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    let t = wait_stats(&rt, |t| t.handoffs_in as usize == handed);
    assert_eq!(t.handoffs_in, t.handoffs_out);
    assert_eq!(t.handoffs_in as usize, handed);
    if ports == 1 {
        // One source port lands on one socket: every key not owned there was handed off.
        assert!(handed > 0, "one peer must still spread over the shards");
        let owners: HashSet<usize> = seen.values().flatten().copied().collect();
        assert_eq!(owners.len(), shards, "all shards own some keys");
    }
    join_after_shutdown(rt);
}

pub fn ownership_many_ports(b: Backend) {
    ownership(b, 25);
}

pub fn ownership_one_port(b: Backend) {
    ownership(b, 1);
}

pub fn timers_order_and_cancel(b: Backend) {
    let t0 = Instant::now();
    let (rt, notes) = start(config(b, 2, "127.0.0.1:0"), true);
    let mut fired = Vec::new();
    let deadline = Instant::now() + WAIT;
    while fired.len() < 4 && Instant::now() < deadline {
        if let Ok(Note::Timer { shard, token, at }) = notes.recv_timeout(Duration::from_millis(100))
        {
            assert_eq!(shard, 0);
            fired.push((token, at));
        }
    }
    let tokens: Vec<u64> = fired.iter().map(|f| f.0).collect();
    assert_eq!(tokens, [1, 2, 22, 3]);
    assert!(fired[3].1 >= t0 + Duration::from_millis(60), "not early");
    // The cancelled one (99) never fires.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!notes.try_iter().any(|n| matches!(n, Note::Timer { .. })));
    assert_eq!(total(&rt).timers_fired, 4);
    join_after_shutdown(rt);
}

pub fn spawn_blocking_returns_to_shard(b: Backend) {
    let (rt, notes) = start(config(b, 2, "127.0.0.1:0"), false);
    let to = rt.local_addrs()[0];
    let c = client(to);
    let t0 = Instant::now();
    c.send_to(b"slow", to).unwrap();
    // The same source port lands on the same shard, which must keep echoing meanwhile.
    for i in 0..5 {
        let msg = format!("ping {i}");
        c.send_to(msg.as_bytes(), to).unwrap();
        assert_eq!(recv_n(&c, 1), vec![msg.into_bytes()]);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(250),
        "echo was delayed by the blocking job"
    );
    assert_eq!(recv_n(&c, 1), vec![b"done".to_vec()]);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let done = std::iter::from_fn(|| notes.recv_timeout(WAIT).ok()).find_map(|n| match n {
        Note::Done {
            spawned_on,
            returned_to,
        } => Some((spawned_on, returned_to)),
        _ => None,
    });
    let (spawned_on, returned_to) = done.expect("done note");
    assert_eq!(spawned_on, returned_to);
    assert_eq!(wait_stats(&rt, |t| t.events == 1).events, 1);
    join_after_shutdown(rt);
}

pub fn post_and_broadcast(b: Backend) {
    let shards = 3;
    let (rt, notes) = start(config(b, shards, "127.0.0.1:0"), false);
    let remote = rt.remote();
    assert_eq!(remote.shard_count(), shards);
    let r2 = remote.clone();
    std::thread::spawn(move || r2.post(2, Ev::Hello(7)))
        .join()
        .unwrap();
    remote.broadcast(|i| Ev::Hello(100 + i as u32));
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 4 && Instant::now() < deadline {
        if let Ok(Note::Hello { shard, value }) = notes.recv_timeout(Duration::from_millis(100)) {
            got.push((shard, value));
        }
    }
    got.sort();
    assert_eq!(got, vec![(0, 100), (1, 101), (2, 7), (2, 102)]);
    assert!(!remote.is_shutdown());
    remote.shutdown();
    assert!(remote.is_shutdown());
    join_bounded(rt);
}

pub fn batching_under_burst(b: Backend) {
    let (rt, _notes) = start(
        Config {
            recv_buffer: Some(1 << 20),
            ..config(b, 1, "127.0.0.1:0")
        },
        false,
    );
    let to = rt.local_addrs()[0];
    let c = client(to);
    c.send_to(b"warm", to).unwrap();
    assert_eq!(recv_n(&c, 1).len(), 1);
    let before = wait_stats(&rt, |t| t.datagrams_sent == 1);
    // Stall the shard, queue a burst behind it, then let it drain the burst in batches.
    let n = 150;
    c.send_to(b"stall", to).unwrap();
    for i in 0..n {
        c.send_to(format!("burst {i:04}").as_bytes(), to).unwrap();
    }
    let got = recv_n(&c, n);
    let after = wait_stats(&rt, |t| t.datagrams_sent as usize > n);
    let sent = after.datagrams_sent - before.datagrams_sent;
    let syscalls = after.syscalls - before.syscalls;
    assert!(got.len() >= n * 9 / 10, "echoes received: {}", got.len());
    assert_eq!(sent as usize, n);
    assert!(
        syscalls < sent / 2,
        "{syscalls} syscalls for {sent} datagrams sent: not batched"
    );
    eprintln!(
        "{b}: burst of {n}: {syscalls} syscalls, {} loops",
        after.loops - before.loops
    );
    join_after_shutdown(rt);
}

/// `Config::batch`: a shard that just had work holds the next datagram until the batch
/// interval has passed, and `Inbound::at` still says when it arrived (the kernel's stamp).
pub fn coalesced_wakeups_keep_arrival_times(b: Backend) {
    let batch = Duration::from_millis(150);
    let (rt, _notes) = start(
        Config {
            batch: Some(batch),
            stamp: true,
            ..config(b, 1, "127.0.0.1:0")
        },
        false,
    );
    let to = rt.local_addrs()[0];
    let c = client(to);
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    let recv = |buf: &mut [u8]| loop {
        match c.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.expect("an answer"),
        }
    };
    let lag = |buf: &[u8]| -> u128 {
        let t = std::str::from_utf8(buf).unwrap();
        t.strip_prefix("lag=").unwrap().parse().unwrap()
    };
    // On a loaded machine a thread can stall for longer than the interval between two sends,
    // and then the shard is idle again when the second comes: such a round says nothing and
    // is tried again (up to five rounds, each after the shard has been idle a while).
    let mut last = String::new();
    for round in 0..5 {
        if round > 0 {
            std::thread::sleep(batch * 2);
        }
        // Idle shard: the first datagram is handled at once, and it arrived just then.
        c.send_to(b"lag", to).unwrap();
        let n = recv(&mut buf);
        let first = lag(&buf[..n]);
        // Busy shard (it just received and sent): the next one waits out the interval, and
        // its arrival time is when it came, not when it was handled.
        let sent = Instant::now();
        c.send_to(b"lag", to).unwrap();
        let n = recv(&mut buf);
        let rtt = sent.elapsed();
        let held = lag(&buf[..n]);
        let ok = first < 100_000
            && rtt >= batch / 3
            && held >= (batch / 4).as_micros()
            && held <= rtt.as_micros() + 5_000;
        if ok {
            join_after_shutdown(rt);
            return;
        }
        last = format!(
            "an idle shard held the first datagram {first} us; the next one was held {held} us \
             by the stamp and answered after {rtt:?} (batch interval {batch:?})"
        );
    }
    panic!("five rounds, the batch interval never kept: last {last}");
}

/// A batched shard that sleeps out its interval reads everything queued when it wakes, not
/// only what its receive buffers (io_uring: 128) or its read budget (portable: 256 per socket)
/// take at once: the rest would wait a whole interval more, and under a steady rate the
/// socket would overflow.
pub fn batched_shard_reads_a_whole_burst(b: Backend) {
    let batch = Duration::from_millis(1000);
    let (rt, _notes) = start(
        Config {
            batch: Some(batch),
            recv_buffer: Some(4 << 20),
            ..config(b, 1, "127.0.0.1:0")
        },
        false,
    );
    let to = rt.local_addrs()[0];
    let c = client(to);
    // Room for every echo at once (capped by net.core.rmem_max; 300 small datagrams fit the
    // default cap too).
    let _ = socket2::SockRef::from(&c).set_recv_buffer_size(4 << 20);
    // The first datagram makes the shard busy: it then sleeps out the interval, and the
    // burst below arrives meanwhile.
    c.send_to(b"wake", to).unwrap();
    assert_eq!(recv_n(&c, 1), vec![b"wake".to_vec()]);
    const N: usize = 300;
    for i in 0..N {
        c.send_to(format!("burst {i}").as_bytes(), to).unwrap();
    }
    let mut got = 0;
    let (mut first, mut last) = (None, Instant::now());
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    while got < N && Instant::now() < deadline {
        if let Ok((n, _)) = c.recv_from(&mut buf) {
            assert!(buf[..n].starts_with(b"burst "));
            got += 1;
            last = Instant::now();
            first.get_or_insert(last);
        }
    }
    assert_eq!(got, N, "every datagram of the burst echoed");
    let spread = last - first.unwrap_or(last);
    assert!(
        spread < batch / 2,
        "the burst was read over {spread:?}: more than one wake-up of {batch:?}"
    );
    join_after_shutdown(rt);
}

pub fn ipv6_loopback(b: Backend) {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("NOTE: no IPv6 loopback here; skipping");
        return;
    }
    let mut cfg = config(b, 2, "[::1]:0");
    cfg.listen.push("127.0.0.1:0".parse().unwrap());
    let (rt, _notes) = start(cfg, false);
    let addrs = rt.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert!(addrs[0].is_ipv6() && addrs[1].is_ipv4());
    for to in addrs {
        let c = client(to);
        for i in 0..10 {
            let msg = format!("v6 {i}");
            c.send_to(msg.as_bytes(), to).unwrap();
            assert_eq!(recv_n(&c, 1), vec![msg.into_bytes()], "via {to}");
        }
    }
    join_after_shutdown(rt);
}

pub fn panicking_handler_keeps_serving(b: Backend) {
    let (rt, _notes) = start(config(b, 1, "127.0.0.1:0"), false);
    let to = rt.local_addrs()[0];
    let c = client(to);
    for i in 0..3 {
        c.send_to(b"boom", to).unwrap();
        let msg = format!("after {i}");
        c.send_to(msg.as_bytes(), to).unwrap();
        assert_eq!(recv_n(&c, 1), vec![msg.into_bytes()]);
    }
    let t = wait_stats(&rt, |t| t.panics == 3);
    assert_eq!(t.panics, 3);
    join_after_shutdown(rt);
}

pub fn no_reuse_port_distinct_ports(b: Backend) {
    let shards = 3;
    let cfg = Config {
        reuse_port: false,
        ..config(b, shards, "127.0.0.1:0")
    };
    let (rt, _notes) = start(cfg, false);
    let addrs = rt.local_addrs();
    assert_eq!(
        addrs.len(),
        shards,
        "one distinct port per shard: {addrs:?}"
    );
    for i in 0..shards {
        let to = rt.shard_local_addrs(i)[0];
        let c = client(to);
        c.send_to(b"who", to).unwrap();
        assert_eq!(recv_n(&c, 1), vec![format!("shard={i}").into_bytes()]);
    }
    join_after_shutdown(rt);
}

pub fn oversize_dropped(b: Backend) {
    let cfg = Config {
        max_datagram: 100,
        ..config(b, 1, "127.0.0.1:0")
    };
    let (rt, _notes) = start(cfg, false);
    let to = rt.local_addrs()[0];
    let c = client(to);
    c.send_to(&[b'x'; 100], to).unwrap();
    assert_eq!(
        recv_n(&c, 1),
        vec![vec![b'x'; 100]],
        "max_datagram itself fits"
    );
    c.send_to(&[b'y'; 1000], to).unwrap();
    c.send_to(b"small", to).unwrap();
    assert_eq!(recv_n(&c, 1), vec![b"small".to_vec()]);
    let t = wait_stats(&rt, |t| t.truncated == 1);
    assert_eq!(t.truncated, 1);
    join_after_shutdown(rt);
}

pub fn shutdown_and_join(b: Backend) {
    let (rt, notes) = start(config(b, 3, "127.0.0.1:0"), false);
    for _ in 0..3 {
        assert!(matches!(notes.recv_timeout(WAIT), Ok(Note::Started { .. })));
    }
    let remote = rt.remote();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        remote.shutdown();
    });
    join_bounded(rt);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

pub fn drop_without_join(b: Backend) {
    let (rt, _notes) = start(config(b, 2, "127.0.0.1:0"), false);
    let c = client(rt.local_addrs()[0]);
    c.send_to(b"x", rt.local_addrs()[0]).unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        drop(rt);
        let _ = tx.send(());
    });
    rx.recv_timeout(WAIT).expect("drop shuts down and returns");
}

pub fn bind_error_is_error(b: Backend) {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = Config {
        listen: vec![addr],
        ..config(b, 2, "127.0.0.1:0")
    };
    let err = Runtime::<Ev>::start(cfg, |shard| TestHandler {
        shard,
        notes: channel().0,
        timers: false,
    });
    assert!(err.is_err(), "address in use must be an error");
    let cfg = config(b, 2, "192.0.2.1:5060");
    let err = Runtime::<Ev>::start(cfg, |shard| TestHandler {
        shard,
        notes: channel().0,
        timers: false,
    });
    assert!(err.is_err(), "a foreign address must be an error");
}

pub fn pinned_shards(b: Backend) {
    let cfg = Config {
        pin: true,
        shards: 0,
        ..config(b, 0, "127.0.0.1:0")
    };
    let (rt, notes) = start(cfg, false);
    let n = rt.shard_count();
    assert_eq!(
        n,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started: HashSet<usize> = (0..n)
        .map(|_| match notes.recv_timeout(WAIT) {
            Ok(Note::Started { shard }) => shard,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(started.len(), n);
    assert!(!rt.backend_detail().is_empty());
    let want = match b {
        Backend::Portable => Some(ser_shards::BackendKind::Portable),
        Backend::IoUring => Some(ser_shards::BackendKind::IoUring),
        Backend::Auto => None,
    };
    if let Some(k) = want {
        assert_eq!(rt.backend(), k);
    }
    eprintln!("{b}: backend {} = {}", rt.backend(), rt.backend_detail());
    let to = rt.local_addrs()[0];
    let c = client(to);
    c.send_to(b"pinned", to).unwrap();
    assert_eq!(recv_n(&c, 1), vec![b"pinned".to_vec()]);
    let _ = Arc::new(());
    join_after_shutdown(rt);
}

/// Waits (bounded) until the summed counters of any runtime satisfy `ok`.
pub fn wait_stats_t<E: Send + 'static>(
    rt: &Runtime<E>,
    ok: impl Fn(&ShardStats) -> bool,
) -> ShardStats {
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
