//! `serweb`: the web interface of ser, as SER had serweb beside it. SIP users log in with their
//! SIP user name, domain and password (checked against `subscriber`'s HA1) and see their
//! phones registered now (from the running ser through its FIFO), their missed calls and call
//! history (`missed_calls`, `acc`), their phonebook with click-to-call, send instant messages
//! through ser, read the messages msilo keeps for them and change their password.
//! Administrators (members of the `grp` group `admin`) manage users, groups, aliases and
//! reserved names and watch a live dashboard drawn from ser's metrics endpoint.
//!
//! A program of its own, so that `ser` stays small for the boards: the web stack (axum,
//! tokio, hyper, minijinja) is here only. It uses ser's library for the database layer (one
//! SQL layer for SQLite and MariaDB, the seeds' schema) and for serctl's account functions,
//! so serweb and serctl write the same rows; it reaches the running ser only through its
//! FIFO and its metrics endpoint, as any outside tool would.
//!
//! Why minijinja for the templates: it auto-escapes every value in `.html` templates, needs
//! no proc-macro (askama does, and its current releases need a newer Rust than the
//! workspace's 1.80), and the templates are compiled into the binary with `include_str!`;
//! a unit test renders each one, which catches what askama would catch at compile time.
//!
//! Configured like serctl: `DB_URL` (default `sqlite://ser-data/ser.db` under the working
//! directory, ser's default), `SER_FIFO` (default `/tmp/ser_fifo`), and `SER_METRICS`
//! (default `127.0.0.1:9090`, the README's `metrics_listen`). It listens on 127.0.0.1:8080
//! unless told otherwise; on any other address it wants a TLS certificate (`--tls-cert`,
//! `--tls-key`), or `--insecure-http` to serve passwords in clear text on purpose.

mod admin;
mod capture;
mod fifo;
mod listener;
mod metrics;
mod routes;
mod session;
mod store;
mod user;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

const USAGE: &str = "\
usage: serweb [-l ADDR:PORT] [options]
  -l, --listen ADDR:PORT   where to serve (default 127.0.0.1:8080)
  --db URL                 ser's database (default $DB_URL, else sqlite://ser-data/ser.db)
  --fifo PATH              ser's FIFO (default $SER_FIFO, else /tmp/ser_fifo)
  --metrics ADDR:PORT|off  ser's metrics_listen (default $SER_METRICS, else 127.0.0.1:9090)
  --sample SECONDS         how often the dashboard scrapes the metrics (default 10)
  --ser-sip HOST[:PORT]    where requests to a user's own address go (click-to-call's REFER):
                           default $SER_SIP, else the user's domain
  --capture FILE           ser's capture_file, for the last messages (default $SER_CAPTURE, else off)
  --tls-cert FILE          PEM certificate chain: serve HTTPS
  --tls-key FILE           PEM private key of --tls-cert
  --insecure-http          serve plain HTTP on a non-loopback address (passwords in clear)
A non-loopback --listen needs --tls-cert and --tls-key (or --insecure-http).
";

struct Options {
    listen: SocketAddr,
    db: String,
    fifo: PathBuf,
    metrics: Option<SocketAddr>,
    capture: Option<PathBuf>,
    ser_sip: Option<String>,
    sample: Duration,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure_http: bool,
}

fn options() -> anyhow::Result<Options> {
    use lexopt::prelude::*;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut o = Options {
        listen: "127.0.0.1:8080".parse()?,
        db: env("DB_URL").unwrap_or_else(|| ser::db::default_url("ser-data")),
        fifo: PathBuf::from(env("SER_FIFO").unwrap_or_else(|| String::from("/tmp/ser_fifo"))),
        metrics: None,
        capture: env("SER_CAPTURE").map(PathBuf::from),
        ser_sip: env("SER_SIP"),
        sample: Duration::from_secs(10),
        cert: None,
        key: None,
        insecure_http: false,
    };
    let mut metrics = env("SER_METRICS").unwrap_or_else(|| String::from("127.0.0.1:9090"));
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('l') | Long("listen") => {
                let v = p.value()?.string()?;
                o.listen = v.parse().with_context(|| format!("--listen {v}"))?;
            }
            Long("db") => o.db = p.value()?.string()?,
            Long("fifo") => o.fifo = PathBuf::from(p.value()?),
            Long("metrics") => metrics = p.value()?.string()?,
            Long("capture") => o.capture = Some(PathBuf::from(p.value()?)),
            Long("ser-sip") => o.ser_sip = Some(p.value()?.string()?),
            Long("sample") => {
                let v: f64 = p.value()?.parse()?;
                if !(1.0..=600.0).contains(&v) {
                    bail!("--sample: 1 to 600 seconds");
                }
                o.sample = Duration::from_secs_f64(v);
            }
            Long("tls-cert") => o.cert = Some(PathBuf::from(p.value()?)),
            Long("tls-key") => o.key = Some(PathBuf::from(p.value()?)),
            Long("insecure-http") => o.insecure_http = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("{}\n{USAGE}", arg.unexpected()),
        }
    }
    if let Some(h) = &o.ser_sip {
        if h.is_empty() || h.contains(|c: char| c.is_whitespace() || "@;<>\"".contains(c)) {
            bail!("--ser-sip {h}: a host or host:port");
        }
    }
    o.metrics = match metrics.as_str() {
        "off" | "none" | "" => None,
        m => Some(m.parse().with_context(|| format!("metrics address {m}"))?),
    };
    Ok(o)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("serweb: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let o = options()?;
    let tls = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => Some(listener::server_config(c, k)?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    if tls.is_none() && !o.listen.ip().is_loopback() {
        if !o.insecure_http {
            bail!(
                "refusing to serve plain HTTP on {} (not a loopback address): logins would \
                 cross the network in clear text. Give --tls-cert and --tls-key, or \
                 --insecure-http if a TLS proxy in front of serweb does that",
                o.listen
            );
        }
        eprintln!(
            "serweb: WARNING: serving plain HTTP on {} (--insecure-http): passwords and \
             session cookies cross the network in clear text",
            o.listen
        );
    }
    if let Ok(ser::db::Url::Sqlite(path)) = ser::db::parse_url(&o.db) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    let db = ser::db::Db::open(&o.db, 0).with_context(|| "opening the database")?;
    if db.dialect() == ser::db::Dialect::Sqlite {
        // A database ser has not created yet gets the seeds' tables (as serctl does).
        db.init_schema().with_context(|| "creating the tables")?;
    }
    let app = web::App::new(
        db,
        o.fifo.clone(),
        o.metrics,
        o.capture.clone(),
        o.ser_sip.clone(),
        tls.is_some(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .thread_name("serweb")
        .build()?;
    rt.block_on(serve(o, app, tls))
}

async fn serve(
    o: Options,
    app: Arc<web::App>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    if let Some(addr) = o.metrics {
        tokio::spawn(sample(Arc::clone(&app), addr, o.sample));
    }
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("cannot listen on {}", o.listen))?;
    let local = listener.local_addr()?;
    // The line tests and operators wait for.
    eprintln!(
        "serweb: listening on {}://{local} (database {}, FIFO {}, metrics {})",
        if tls.is_some() { "https" } else { "http" },
        app.db.name(),
        o.fifo.display(),
        o.metrics
            .map_or_else(|| String::from("off"), |m| m.to_string()),
    );
    let router = routes::router(app);
    tokio::select! {
        () = listener::serve(listener, tls, router) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// The dashboard's sampler: scrapes ser's metrics every `every`, keeps an hour.
async fn sample(app: Arc<web::App>, addr: SocketAddr, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let text =
            tokio::task::spawn_blocking(move || metrics::scrape(addr, Duration::from_secs(3)))
                .await
                .unwrap_or_else(|_| Err(String::from("scrape failed")));
        let t = app.started.elapsed().as_secs_f64();
        if let Ok(mut h) = app.history.lock() {
            match text {
                Ok(body) => {
                    h.last_error = None;
                    h.push(metrics::Point {
                        t,
                        values: Some(metrics::digest(&metrics::parse(&body))),
                    });
                }
                Err(e) => {
                    h.last_error = Some(e);
                    h.push(metrics::Point { t, values: None });
                }
            }
        }
    }
}
