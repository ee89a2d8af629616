//! A UDP echo server on `ser-shards`, for measuring packets per second.
//!
//! ```text
//! cargo run --release -p ser-shards --example echo -- [LISTEN] [SHARDS] [BACKEND] [SECONDS]
//!   LISTEN   address to bind (default 127.0.0.1:5060; repeat with commas: 0.0.0.0:5060,[::]:5060)
//!   SHARDS   shard count, 0 = one per core (default 0)
//!   BACKEND  auto | io_uring | portable (default auto; SER_IO_BACKEND overrides)
//!   SECONDS  run time, 0 = until killed (default 0)
//! ```
//!
//! Every second it prints datagrams received/sent per second and syscalls per datagram.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ser_shards::{Backend, Config, Ctx, Handler, Inbound, Runtime, ShardStats, TimerId};

struct Echo;

impl Handler for Echo {
    type Event = ();

    fn on_message(&mut self, ctx: &mut Ctx<'_, ()>, d: Inbound<'_>) {
        ctx.send(d.socket, d.peer, d.data);
    }

    fn on_event(&mut self, _ctx: &mut Ctx<'_, ()>, _event: ()) {}

    fn on_timer(&mut self, _ctx: &mut Ctx<'_, ()>, _timer: TimerId, _token: u64) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let listen = arg(0, "127.0.0.1:5060")
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    let shards: usize = arg(1, "0").parse()?;
    let backend: Backend = arg(2, "auto").parse()?;
    let seconds: u64 = arg(3, "0").parse()?;

    let mut cfg = Config {
        shards,
        listen,
        backend,
        recv_buffer: Some(8 << 20),
        name: "echo".into(),
        ..Config::default()
    };
    cfg.apply_env()?;
    let rt = Runtime::start(cfg, |_| Echo)?;
    println!(
        "echo: {} shards on {:?}, backend {}",
        rt.shard_count(),
        rt.local_addrs(),
        rt.backend_detail()
    );

    let start = Instant::now();
    let mut last = ShardStats::sum(&rt.stats());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = ShardStats::sum(&rt.stats());
        let rx = now.datagrams_received - last.datagrams_received;
        let tx = now.datagrams_sent - last.datagrams_sent;
        let sys = now.syscalls - last.syscalls;
        let per = if rx + tx > 0 {
            sys as f64 / (rx + tx) as f64
        } else {
            0.0
        };
        println!(
            "rx {rx:>9}/s  tx {tx:>9}/s  syscalls/datagram {per:.3}  errors {}",
            now.send_errors + now.recv_errors
        );
        last = now;
        if seconds > 0 && start.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
    }
    rt.shutdown();
    rt.join()?;
    Ok(())
}
