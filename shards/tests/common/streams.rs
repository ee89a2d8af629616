//! Stream connections on each backend: accept and echo, outgoing connects (success and
//! refusal), the connection limit, writes from the owning shard only, peers that close.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use ser_shards::{
    Backend, CloseReason, Config, ConnId, Ctx, Handler, Inbound, Runtime, ShardStats, SocketId,
    StreamEvent, TimerId,
};

use super::WAIT;

/// What the stream handler reports.
#[derive(Debug)]
pub enum SNote {
    Opened {
        conn: ConnId,
        outgoing: bool,
        shard: usize,
    },
    Closed {
        conn: ConnId,
        reason: CloseReason,
    },
}

pub enum SEv {
    /// Connect to this address from stream socket `SocketId` and write the bytes.
    Dial(SocketId, SocketAddr, Vec<u8>),
}

/// Echoes every byte back on its connection; "close\n" closes it from our side.
struct Echo {
    notes: Sender<SNote>,
}

impl Handler for Echo {
    type Event = SEv;

    fn on_message(&mut self, _ctx: &mut Ctx<'_, SEv>, _d: Inbound<'_>) {}

    fn on_stream(&mut self, ctx: &mut Ctx<'_, SEv>, ev: StreamEvent<'_>) {
        match ev {
            StreamEvent::Opened { conn, outgoing, .. } => {
                assert_eq!(conn.shard(), ctx.shard());
                let _ = self.notes.send(SNote::Opened {
                    conn,
                    outgoing,
                    shard: ctx.shard(),
                });
            }
            StreamEvent::Data { conn, data } => {
                if data == b"close\n" {
                    ctx.close(conn, true);
                } else {
                    ctx.write(conn, data).expect("own connection");
                }
            }
            StreamEvent::Closed { conn, reason } => {
                let _ = self.notes.send(SNote::Closed { conn, reason });
            }
        }
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_, SEv>, ev: SEv) {
        let SEv::Dial(sock, dst, bytes) = ev;
        if let Ok(conn) = ctx.connect(sock, dst) {
            // Queued before the connection is up: goes out once it is.
            ctx.write(conn, &bytes).expect("queued while connecting");
        }
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_, SEv>, _t: TimerId, _token: u64) {}
}

fn start(
    b: Backend,
    shards: usize,
    max: usize,
) -> (Runtime<SEv>, std::sync::mpsc::Receiver<SNote>, SocketAddr) {
    let cfg = Config {
        shards,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        max_connections: max,
        backend: b,
        pin: false,
        blocking_threads: 1,
        ..Config::default()
    };
    let bound = Runtime::bind(cfg).expect("bind");
    let socks = bound.sockets();
    assert_eq!(socks.len(), 2);
    assert!(
        !socks[0].1 && socks[1].1,
        "udp first, then the stream listener"
    );
    let addr = socks[1].0;
    let (tx, rx) = channel();
    let rt = bound
        .start(move |_| Echo { notes: tx.clone() })
        .expect("start");
    (rt, rx, addr)
}

/// Checks where the accepts happened: on io_uring with multishot receives (Linux 6.0, so the
/// kernel has multishot accept too, 5.19) every one through the ring, none by `accept4`;
/// on the other backends and paths none through the ring.
fn ring_accepts(rt: &Runtime<SEv>, b: Backend, s: &ShardStats) {
    let d = rt.backend_detail();
    let ring = d.contains("multishot accept");
    if b == Backend::IoUring && d.contains("multishot recvmsg") {
        assert!(ring, "{d}");
    }
    let want = if ring { s.conns_accepted } else { 0 };
    assert_eq!(s.conns_accepted_ring, want, "{d}: {s:?}");
}

fn client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    c.set_read_timeout(Some(WAIT)).unwrap();
    c
}

pub fn stream_echo(b: Backend) {
    let (rt, rx, addr) = start(b, 2, 64);
    // Where io_uring has multishot receives, connections read and write through the ring.
    let d = rt.backend_detail();
    if b == Backend::IoUring && d.contains("multishot recvmsg") {
        assert!(d.contains("streams: multishot recv"), "{d}");
    }
    let mut clients: Vec<TcpStream> = (0..8).map(|_| client(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("hello {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0; msg.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    // A large write comes back whole (partial writes, EPOLLOUT).
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = clients.pop().unwrap();
    let reader = {
        let mut r = c.try_clone().unwrap();
        let n = big.len();
        std::thread::spawn(move || {
            let mut got = vec![0; n];
            r.read_exact(&mut got).map(|_| got)
        })
    };
    c.write_all(&big).unwrap();
    assert_eq!(reader.join().unwrap().expect("echo of 2 MB"), big);
    // Our close: no Closed note for it; the peer's close: one Closed { Eof }.
    let opened = (0..8)
        .map(|_| rx.recv_timeout(WAIT).expect("opened"))
        .filter(|n| {
            matches!(
                n,
                SNote::Opened {
                    outgoing: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(opened, 8);
    c.write_all(b"close\n").unwrap();
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0, "closed by the server");
    drop(clients);
    let mut eofs = 0;
    while let Ok(n) = rx.recv_timeout(Duration::from_secs(3)) {
        if let SNote::Closed { reason, .. } = n {
            assert_eq!(reason, CloseReason::Eof);
            eofs += 1;
        }
        if eofs == 7 {
            break;
        }
    }
    assert_eq!(eofs, 7);
    let s = super::wait_stats_t(&rt, |s| s.conns_open == 0 && s.conns_accepted == 8);
    ring_accepts(&rt, b, &s);
    rt.shutdown();
    let _ = rt.join();
}

pub fn stream_connect_out(b: Backend) {
    let (rt, rx, _addr) = start(b, 1, 64);
    let far = TcpListener::bind("127.0.0.1:0").unwrap();
    let far_addr = far.local_addr().unwrap();
    rt.remote()
        .post(0, SEv::Dial(SocketId(1), far_addr, b"ping".to_vec()));
    far.set_nonblocking(false).unwrap();
    let (mut s, _) = far.accept().expect("our connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = [0; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    match rx.recv_timeout(WAIT).expect("opened") {
        SNote::Opened { outgoing, .. } => assert!(outgoing),
        n => panic!("{n:?}"),
    }
    // Echoed back to the far end: the handler reads its outgoing connection too.
    s.write_all(b"pong").unwrap();
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    // A refused connect is one Closed { ConnectFailed }.
    drop(far);
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    rt.remote()
        .post(0, SEv::Dial(SocketId(1), closed_port, b"x".to_vec()));
    match rx.recv_timeout(WAIT).expect("closed") {
        SNote::Closed { reason, .. } => {
            assert!(
                matches!(reason, CloseReason::ConnectFailed(_)),
                "{reason:?}"
            )
        }
        n => panic!("{n:?}"),
    }
    rt.shutdown();
    let _ = rt.join();
}

pub fn stream_limit(b: Backend) {
    let (rt, _rx, addr) = start(b, 2, 3);
    let mut held: Vec<TcpStream> = (0..3).map(|_| client(addr)).collect();
    for c in &mut held {
        c.write_all(b"a").unwrap();
        let mut x = [0; 1];
        c.read_exact(&mut x).unwrap();
    }
    // The fourth is accepted by the kernel, then closed at once.
    let mut extra = client(addr);
    let _ = extra.write_all(b"a");
    let mut buf = [0; 1];
    let r = extra.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    super::wait_stats_t(&rt, |s| s.conns_refused >= 1 && s.conns_open == 3);
    // A slot frees when one closes.
    drop(held.pop());
    super::wait_stats_t(&rt, |s| s.conns_open == 2);
    let mut again = client(addr);
    again.write_all(b"b").unwrap();
    again.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"b");
    let s = super::wait_stats_t(&rt, |s| s.conns_accepted == 4);
    ring_accepts(&rt, b, &s);
    rt.shutdown();
    let _ = rt.join();
}
