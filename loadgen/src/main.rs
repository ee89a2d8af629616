//! `loadgen`: the SIP load generator of ser (first slice: the `options` scenario).
//!
//! Open-loop: each shard of the `ser-shards` runtime owns its own ephemeral UDP socket (so the
//! traffic leaves from as many source ports as there are shards, unlike SIPp's one) and sends
//! its share of the rate on a 10 ms tick; replies are matched by Call-ID with `ser-parser`, and
//! response times go to an HDR histogram. Unanswered requests count as timeouts after
//! `--timeout`. A progress line every second, a summary at the end, non-zero exit when failures
//! exceed `--max-fail`.
//!
//! Not yet: the call/register/uas/message scenarios, SIPp XML, retransmissions, CSV users
//! (the load-generator issue builds them on this skeleton). It never depends on the `ser`
//! crate, so it cannot share the server's bugs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use ser_shards::{Backend, Config, Ctx, Datagram, Handler, Runtime, TimerId};

const TICK: Duration = Duration::from_millis(10);

struct Opts {
    target: SocketAddr,
    rate: u64,
    count: u64,
    shards: usize,
    timeout: Duration,
    max_fail: u64,
    backend: Backend,
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
}

struct Gen {
    opts: Arc<Opts>,
    shared: Arc<Shared>,
    hist: Arc<Mutex<Histogram<u64>>>,
    local: Histogram<u64>,
    start: Instant,
    quota: u64,
    sent: u64,
    pending: HashMap<u64, Instant>,
    buf: Vec<u8>,
}

impl Gen {
    fn request(&mut self, shard: usize, n: u64, local: SocketAddr) {
        use std::io::Write;
        self.buf.clear();
        let t = self.opts.target;
        let _ = write!(
            self.buf,
            "OPTIONS sip:ping@{t} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-lg{shard}-{n};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:loadgen@{local}>;tag=lg{shard}\r\n\
             To: <sip:ping@{t}>\r\n\
             Call-ID: lg-{shard}-{n}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.opts.timeout;
        let before = self.pending.len();
        self.pending.retain(|_, t| now.duration_since(*t) < timeout);
        let gone = (before - self.pending.len()) as u64;
        if gone > 0 {
            self.shared.timeouts.fetch_add(gone, Ordering::Relaxed);
            self.shared.failed.fetch_add(gone, Ordering::Relaxed);
        }
    }
}

impl Handler for Gen {
    type Event = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, ()>) {
        let now = ctx.now();
        self.start = now;
        ctx.set_timer(now, 0);
    }

    fn on_datagram(&mut self, _ctx: &mut Ctx<'_, ()>, d: Datagram<'_>) {
        let Ok(msg) = ser_parser::parse(d.data) else {
            return;
        };
        let Some(code) = msg.status() else { return };
        if code < 200 {
            return;
        }
        let Some(n) = msg
            .call_id()
            .and_then(|c| c.rsplit(|b| *b == b'-').next())
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
        else {
            return;
        };
        if let Some(t0) = self.pending.remove(&n) {
            let us = t0.elapsed().as_micros() as u64;
            let _ = self.local.record(us.max(1));
            if code < 300 {
                self.shared.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_event(&mut self, _ctx: &mut Ctx<'_, ()>, _e: ()) {}

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ()>, _t: TimerId, _token: u64) {
        let now = ctx.now();
        // Open loop: send what the schedule says is due by now, whatever came back.
        let per_shard = self.opts.rate as f64 / ctx.shard_count() as f64;
        let due = ((now - self.start).as_secs_f64() * per_shard) as u64;
        let due = due.min(self.quota);
        let Some(sock) = ctx.sockets().first().map(|s| (s.id, s.local)) else {
            return;
        };
        while self.sent < due {
            let n = self.sent;
            self.request(ctx.shard(), n, sock.1);
            ctx.send(sock.0, self.opts.target, &self.buf);
            self.pending.insert(n, now);
            self.sent += 1;
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        self.expire(now);
        if let Ok(mut h) = self.hist.lock() {
            let _ = h.add(&self.local);
            self.local.reset();
        }
        if self.sent < self.quota || !self.pending.is_empty() {
            ctx.set_timer(now + TICK, 0);
        }
    }
}

fn parse_opts() -> Result<Opts> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut scenario = None;
    let mut target = None;
    let mut o = Opts {
        target: SocketAddr::from(([127, 0, 0, 1], 5060)),
        rate: 100,
        count: 1000,
        shards: 2,
        timeout: Duration::from_secs(2),
        max_fail: 0,
        backend: Backend::Auto,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("rate") | Short('r') => o.rate = p.value()?.parse()?,
            Long("count") | Short('m') => o.count = p.value()?.parse()?,
            Long("shards") | Short('n') => o.shards = p.value()?.parse()?,
            Long("timeout") => o.timeout = Duration::from_millis(p.value()?.parse()?),
            Long("max-fail") => o.max_fail = p.value()?.parse()?,
            Long("backend") => {
                o.backend = p.value()?.string()?.parse().map_err(anyhow::Error::msg)?
            }
            Long("help") | Short('h') => {
                println!("usage: loadgen options TARGET [--rate N/s] [--count N] [--shards N] [--timeout MS] [--max-fail N] [--backend auto|io_uring|portable]");
                std::process::exit(0);
            }
            Value(v) if scenario.is_none() => scenario = Some(v.string()?),
            Value(v) if target.is_none() => target = Some(v.string()?),
            _ => bail!("{}", arg.unexpected()),
        }
    }
    match scenario.as_deref() {
        Some("options") => {}
        Some(s) => bail!("scenario '{s}' is not available yet (only: options)"),
        None => bail!("usage: loadgen options TARGET [--rate N] [--count N]"),
    }
    if let Some(t) = target {
        o.target = t.parse().context("TARGET must be ip:port")?;
    }
    if o.rate == 0 || o.shards == 0 {
        bail!("--rate and --shards must be positive");
    }
    Ok(o)
}

fn main() -> Result<()> {
    let opts = Arc::new(parse_opts()?);
    let shared = Arc::new(Shared::default());
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let bind = if opts.target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let cfg = Config {
        shards: opts.shards,
        listen: vec![bind.parse()?],
        reuse_port: false,
        backend: opts.backend,
        pin: false,
        recv_buffer: Some(4 << 20),
        max_datagram: 65535,
        blocking_threads: 1,
        name: "loadgen".to_string(),
    };
    let total = opts.count;
    let factory = {
        let (opts, shared, hist) = (Arc::clone(&opts), Arc::clone(&shared), Arc::clone(&hist));
        move |i: usize| {
            let n = opts.shards as u64;
            let quota = total / n + u64::from((i as u64) < total % n);
            Gen {
                opts: Arc::clone(&opts),
                shared: Arc::clone(&shared),
                hist: Arc::clone(&hist),
                // Precision 3 is within hdrhistogram's 0..=5: this cannot fail.
                local: Histogram::new(3).expect("valid histogram precision"),
                start: Instant::now(),
                quota,
                sent: 0,
                pending: HashMap::new(),
                buf: Vec::with_capacity(512),
            }
        }
    };
    let rt = Runtime::start(cfg, factory)?;
    eprintln!(
        "loadgen: options -> {} at {}/s, {} requests, {} shards, backend {:?}",
        opts.target,
        opts.rate,
        total,
        opts.shards,
        rt.backend()
    );
    let t0 = Instant::now();
    let deadline = t0
        + Duration::from_secs_f64(total as f64 / opts.rate as f64)
        + opts.timeout
        + Duration::from_secs(2);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let done = shared.ok.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= total || Instant::now() > deadline {
            break;
        }
        if t0.elapsed().as_millis() % 1000 < 200 {
            eprintln!(
                "  {:>5.1}s sent {} ok {} failed {}",
                t0.elapsed().as_secs_f64(),
                shared.sent.load(Ordering::Relaxed),
                shared.ok.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed)
            );
        }
    }
    rt.shutdown();
    let _ = rt.join();
    let ok = shared.ok.load(Ordering::Relaxed);
    let failed = total.saturating_sub(ok);
    let h = hist.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    println!(
        "scenario options: attempted {total} ok {ok} failed {failed} (timeouts {})",
        shared.timeouts.load(Ordering::Relaxed)
    );
    println!(
        "response time us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    if failed > opts.max_fail {
        std::process::exit(1);
    }
    Ok(())
}
