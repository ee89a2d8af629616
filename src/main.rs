//! `ser`: the SIP Express Router daemon. Command line as in SER's reference:
//! `-f -c -V -h -l -p -n -d -D -E -P -u -g -b -w -t` (and the old `-r -R -v -m -i`);
//! options in the script win over the command line, as in SER.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ser::config::{self, Config};
use ser::core::Core;
use ser::server::Server;
use ser::server_name;
use ser::sip::Listen;
use ser::stats::Stats;
use ser::{error, notice, warn};

mod daemon;

/// mimalloc as the allocator (the `mimalloc` feature, on by default; x86-64 and aarch64 only):
/// each shard allocates from its own heap, and memory comes from the OS in segments rather than
/// a page at a time (Cargo.toml says more).
#[cfg(all(
    feature = "mimalloc",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
Usage: ser [options]
Options:
    -f file      Configuration file (default ./ser.cfg; the embedded default when it is missing)
    -c           Check the configuration file and exit
    -V           Version number
    -h           This help message
    -l address   Listen on the specified address (may be repeated; default all interfaces)
    -p port      Listen on the specified port (default 5060)
    -n processes Number of shards (threads, one per core by default)
    -d           Debugging mode (multiple -d increase the level)
    -D           Do not fork into daemon mode: stay in the foreground with -n shards
                 (fork=no in the script also stays, with one shard)
    -E           Log to stderr
    -P file      Create a pid file
    -u uid       Change uid
    -g gid       Change gid
    -b nr        Maximum receive buffer size (bytes)
    -w dir       Change the working directory to \"dir\"
    -t dir       Chroot to \"dir\"
    -r -R -v     Accepted for compatibility (dns, rev_dns, check_via)
    -m MB        Accepted for compatibility (no shared memory pool here)
Daemon mode (fork=yes, the default): ser detaches and exits 0 once the daemon has bound its
sockets (non-zero, with the error, if it could not start). SIGTERM/SIGINT stop cleanly: new
requests get 503, transactions in flight get their final replies for up to shutdown_timeout
seconds; a second signal stops at once.
Environment: SER_IO_BACKEND=auto|io_uring|portable forces the I/O backend.
";

struct Cli {
    file: Option<String>,
    check: bool,
    cfg: Config,
    foreground: bool,
}

fn parse_cli() -> Result<Option<Cli>> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut cli = Cli {
        file: None,
        check: false,
        cfg: Config::default(),
        foreground: false,
    };
    let mut debug = 0;
    let mut last_l: Option<usize> = None;
    let mut last_p: Option<u16> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Short('f') => cli.file = Some(p.value()?.string()?),
            Short('c') => cli.check = true,
            Short('V') => {
                println!("version: {}", server_name());
                println!(
                    "flags: io_uring+portable UDP shards, built-in modules: sl maxfwd textops"
                );
                return Ok(None);
            }
            Short('h') => {
                print!("{USAGE}");
                return Ok(None);
            }
            Short('l') => {
                let v = p.value()?.string()?;
                let (transport, rest) = config::split_transport(&v).map_err(anyhow::Error::msg)?;
                let (host, port) = config::split_hostport(rest).map_err(anyhow::Error::msg)?;
                let ips = config::resolve_at_start(&host).map_err(anyhow::Error::msg)?;
                let name = host
                    .parse::<std::net::IpAddr>()
                    .is_err()
                    .then(|| host.clone());
                last_l = Some(cli.cfg.listen.len());
                for ip in ips {
                    cli.cfg.listen.push(config::Listen {
                        transport,
                        addr: ip,
                        // A -p given earlier applies to every later -l without its own port.
                        port: port.or(last_p),
                        name: name.clone(),
                    });
                }
            }
            Short('p') => {
                let port: u16 = p.value()?.parse()?;
                // SER: -p applies to the last -l given and to all the following ones that do
                // not have a -p of their own; without -l, to every interface.
                if let Some(i) = last_l {
                    for l in cli.cfg.listen.iter_mut().skip(i) {
                        l.port = Some(port);
                    }
                }
                last_p = Some(port);
                cli.cfg.port = port;
            }
            Short('n') => cli.cfg.children = p.value()?.parse()?,
            Short('d') => debug += 1,
            Short('D') => {
                cli.foreground = true;
                cli.cfg.fork = false;
            }
            Short('E') => cli.cfg.log_stderror = true,
            Short('P') => cli.cfg.pid_file = Some(p.value()?.string()?),
            Short('u') => cli.cfg.user = Some(p.value()?.string()?),
            Short('g') => cli.cfg.group = Some(p.value()?.string()?),
            Short('b') => cli.cfg.maxbuffer = Some(p.value()?.parse()?),
            Short('w') => cli.cfg.working_dir = Some(p.value()?.string()?),
            Short('t') => cli.cfg.chroot = Some(p.value()?.string()?),
            Short('r') => cli.cfg.dns = true,
            Short('R') => cli.cfg.rev_dns = true,
            Short('v') => cli.cfg.check_via = true,
            Short('m') => {
                let _: u64 = p.value()?.parse()?;
            }
            Short('i') => cli.cfg.fifo = Some(p.value()?.string()?),
            _ => bail!("{}\n{USAGE}", arg.unexpected()),
        }
    }
    if debug > 0 {
        cli.cfg.debug = debug;
    }
    Ok(Some(cli))
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // A daemon's stderr is /dev/null: its error goes back to the process started.
            if !daemon::report(Err(&format!("{e:#}"))) {
                let _ = writeln!(std::io::stderr(), "ser: {e:#}");
            }
            std::process::exit(255);
        }
    }
}

fn run() -> Result<i32> {
    let Some(cli) = parse_cli()? else {
        return Ok(0);
    };
    let start_dir = std::env::current_dir().unwrap_or_default();
    let Some((file, loaded)) = load_script(&cli)? else {
        return Ok(255);
    };
    if cli.check {
        #[cfg(feature = "dispatcher")]
        if let Err(e) = ser::dispatcher::check_list(&loaded.params, &loaded.modules, &start_dir) {
            let _ = writeln!(std::io::stderr(), "{e}");
            let _ = writeln!(std::io::stderr(), "ser: configuration error, exiting");
            return Ok(255);
        }
        #[cfg(feature = "xmpp")]
        if loaded.modules.iter().any(|m| m == "jabber") {
            if let Err(e) = ser::xmpp::Config::from_params(&loaded.params) {
                let _ = writeln!(std::io::stderr(), "{file}: {e}");
                let _ = writeln!(std::io::stderr(), "ser: configuration error, exiting");
                return Ok(255);
            }
        }
        println!("{file}: configuration OK");
        return Ok(0);
    }
    let (cfg, one_shard) = settle_config(&cli, loaded.config.clone())?;

    // Names are looked up now, before any chroot, so a bad -u/-g stops us before we bind.
    let identity = ser_shards::os::resolve_identity(cfg.user.as_deref(), cfg.group.as_deref())
        .context("-u/-g (user/group)")?;
    // Message capture starts before the sockets: a bad capture_file stops us here.
    let capture = match ser::capture::CaptureConfig::from_config(&cfg) {
        Some(c) => Some(ser::capture::Capture::start(c)?),
        None => None,
    };

    let shards = shard_count(&cfg, one_shard);
    // The sockets first: a listen on port 0 gets its port here, and our Vias, names and the
    // log must carry the port we got.
    let (shard_cfg, transports) = shard_config(&cfg, shards);
    let bound = match ser_shards::Runtime::bind(shard_cfg) {
        Ok(b) => b,
        Err(e) => {
            error!("cannot start: {e}");
            bail!("cannot start: {e}");
        }
    };
    let listens: Vec<Listen> = bound
        .sockets()
        .into_iter()
        .zip(transports)
        .map(|((addr, _), transport)| Listen { transport, addr })
        .collect();
    let core = Arc::new(start_services(&cfg, &loaded, listens.clone(), &start_dir)?);
    steer_datagrams(&bound, &core, &listens, shards);
    let stats: Vec<Arc<Stats>> = (0..shards).map(|_| Arc::new(Stats::default())).collect();

    // Signals are taken synchronously by this thread; block them before the shards start so
    // every thread inherits the mask.
    let signals = ser_shards::os::SignalSet::block_standard();

    // Reloads (serctl reload, FIFO reload, SIGHUP) make new generations of the script.
    let live = Arc::new(
        ser::live::Live::new(
            ser::live::Generation {
                number: 1,
                core: Arc::clone(&core),
                script: Arc::clone(&loaded.script),
                config: cfg.clone(),
                modules: loaded.modules.clone(),
            },
            Some(file.clone()).filter(|f| f != "<embedded default>"),
            cli.cfg.clone(),
            listens.clone(),
            ser_shards::os::hostname(),
        )
        .with_start_dir(start_dir),
    );
    let streams = Arc::new(start_streams(&cfg, &listens, Arc::clone(&core.aliases))?);
    let factory = {
        let streams = Arc::clone(&streams);
        let core = Arc::clone(&core);
        let script = Arc::clone(&loaded.script);
        let stats = stats.clone();
        let live = Arc::clone(&live);
        let capture = capture.clone();
        move |i: usize| {
            let st = stats.get(i).cloned().unwrap_or_default();
            Server::new(Arc::clone(&core), Arc::clone(&script), st, i, shards)
                .with_live(Arc::clone(&live))
                .with_capture(capture.clone())
                .with_streams(Arc::clone(&streams))
        }
    };
    let runtime = match bound.start(factory) {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start: {e}");
            bail!("cannot start: {e}");
        }
    };
    let started =
        start_management(&cfg, &core, &live, &stats, &listens, &runtime).and_then(|mgmt| {
            log_started(&runtime, shards, &file, &loaded.modules, &listens);
            let fifo = start_fifo(&cfg, &mgmt)?;
            write_pid_file(&cfg)?;
            drop_privileges(&cfg, &identity)?;
            // The registry lives as long as the server: the threads that hold it weakly (the
            // dispatcher's prober, nathelper's pinger) end with it, not when no FIFO or
            // metrics listener happens to hold it.
            Ok((fifo, mgmt))
        });
    let _fifo_and_mgmt = match started {
        Ok(f) => f,
        Err(e) => {
            remove_pid_file(&cfg);
            runtime.shutdown();
            let _ = runtime.join();
            return Err(e);
        }
    };
    daemon::report(Ok(()));

    wait_for_stop(&signals, &live);
    daemon::drain(&signals, &core, &stats, &cfg, &loaded.params, shards);
    runtime.shutdown();
    let _ = runtime.join();
    stop_services(&core, capture.as_ref());
    remove_pid_file(&cfg);
    Ok(0)
}

/// The script: -f, else ./ser.cfg, else the embedded default; loaded and checked. None (after
/// printing `file:line:col: what is wrong`) when it does not load.
fn load_script(cli: &Cli) -> Result<Option<(String, ser::loader::Loaded)>> {
    let (file, src) = match &cli.file {
        Some(f) => (
            f.clone(),
            std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?,
        ),
        None => match std::fs::read_to_string("ser.cfg") {
            Ok(s) => ("ser.cfg".to_string(), s),
            Err(_) => (
                "<embedded default>".to_string(),
                config::DEFAULT_CFG.to_string(),
            ),
        },
    };
    match ser::loader::load(&file, &src, &cli.cfg) {
        Ok(l) => Ok(Some((file, l))),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            let _ = writeln!(std::io::stderr(), "ser: configuration error, exiting");
            Ok(None)
        }
    }
}

/// The configuration as the process runs it: the command line's overrides, logging set up,
/// detached when a daemon, in its working directory. Also whether `fork=no` asked for one shard.
fn settle_config(cli: &Cli, mut cfg: Config) -> Result<(Config, bool)> {
    // Before any chdir (-w, daemon): a relative data_dir is where ser was started.
    cfg.data_dir = config::absolute_dir(&cfg.data_dir);
    if cli.cfg.log_stderror {
        cfg.log_stderror = true; // -E always wins: it is how one watches a daemon start
    }
    // fork=no in the script (the seeds' way to stay on the console) serves with one shard,
    // as SER's fork=no did; -D keeps the configured count (tests, systemd Type=simple).
    let one_shard = !cfg.fork && !cli.foreground;
    if cli.foreground {
        cfg.fork = false;
    }
    ser::log::set_level(cfg.debug);
    if cfg.log_stderror {
        ser::log::set_stderr(true, None);
    } else {
        ser_shards::os::syslog_open();
        ser::log::set_stderr(false, Some(ser_shards::os::syslog));
    }
    if cfg.fork {
        // Before any thread exists: the shard runtime starts them. Returns in the daemon only.
        daemon::detach(&mut cfg)?;
    }
    if let Some(dir) = &cfg.working_dir {
        std::env::set_current_dir(dir).with_context(|| format!("cannot chdir to {dir}"))?;
    }
    Ok((cfg, one_shard))
}

/// Shards: `children`, else one per core; one with `fork=no` (see [`settle_config`]).
fn shard_count(cfg: &Config, one_shard: bool) -> usize {
    let shards = if cfg.children == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.children
    };
    if one_shard && shards > 1 {
        ser::log::always(
            ser::log::L_NOTICE,
            format_args!("fork=no: serving with one shard, not {shards} (-D keeps the count)"),
        );
        1
    } else {
        shards
    }
}

/// The shard runtime's configuration: the listen addresses (UDP sockets, then TCP and TLS
/// listeners), the I/O backend (`SER_IO_BACKEND` or `io_backend`), the receive buffer
/// (`maxbuffer`), the connection limit; and each socket's transport, in socket id order.
fn shard_config(cfg: &Config, shards: usize) -> (ser_shards::Config, Vec<ser::sip::Transport>) {
    let backend = match std::env::var("SER_IO_BACKEND")
        .ok()
        .unwrap_or_else(|| cfg.io_backend.clone())
        .as_str()
    {
        "io_uring" => ser_shards::Backend::IoUring,
        "portable" => ser_shards::Backend::Portable,
        _ => ser_shards::Backend::Auto,
    };
    let all = cfg.bind_addrs();
    let (udp, streams): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(t, _)| *t == ser::sip::Transport::Udp);
    let transports = udp.iter().chain(&streams).map(|(t, _)| *t).collect();
    let c = ser_shards::Config {
        shards,
        listen: udp.into_iter().map(|(_, a)| a).collect(),
        stream_listen: streams.into_iter().map(|(_, a)| a).collect(),
        max_connections: cfg.streams.max_connections,
        reuse_port: true,
        backend,
        pin: true,
        // Bursts (a trunk after an outage, a registration storm) must not overflow the
        // kernel default of ~200 KB: 4 MiB unless maxbuffer says otherwise (the kernel caps it
        // at net.core.rmem_max).
        recv_buffer: Some(cfg.maxbuffer.unwrap_or(4 << 20)),
        max_datagram: 65535,
        blocking_threads: 4,
        name: "ser".to_string(),
        // A proxy answers at once: no coalesced wake-ups.
        batch: None,
        stamp: false,
    };
    (c, transports)
}

/// Each UDP datagram goes straight to the shard that owns it (sip::steer): a reply to the
/// shard in our Via branch, a request (with tm) to its Call-ID's owner, instead of to the
/// shard the kernel's hash picks and on from there. Where the kernel refuses the eBPF
/// program, a classic one steers the replies only; where it refuses that too, the hash stays
/// (and the hand-offs with it).
fn steer_datagrams(bound: &ser_shards::Bound, core: &Core, listens: &[Listen], shards: usize) {
    use ser::sip::steer;
    let udp = listens
        .iter()
        .take_while(|l| l.transport == ser::sip::Transport::Udp);
    let tag = &core.reply.tag_prefix;
    // The program is built for the modules loaded now: a reload that loads tm later leaves
    // requests handed on between shards (as without the program), one that drops it leaves
    // them spread by Call-ID; both stay correct.
    let mut refused = false;
    for (i, l) in udp.enumerate() {
        let prefix = core.local.via(i, "", l.addr);
        // Once the kernel refused eBPF, the other sockets go straight to the classic program.
        let prog = (!refused)
            .then(|| steer::datagram_steering(&prefix, tag, shards, core.calls_owned))
            .flatten();
        if let Some(prog) = prog {
            match bound.steer_datagrams_ebpf(i, &prog, &steer::call_id_tables()) {
                Ok(()) => continue,
                Err(e) => {
                    notice!(
                        "udp:{}: eBPF steering refused ({e}): replies steered by classic BPF, \
                         requests left to the kernel's hash",
                        l.addr
                    );
                    refused = true;
                }
            }
        }
        let Some(prog) = steer::reply_steering(&prefix, tag, shards) else {
            continue;
        };
        let prog: Vec<_> = prog.iter().map(|x| (x.code, x.jt, x.jf, x.k)).collect();
        if let Err(e) = bound.steer_datagrams(i, &prog) {
            notice!("udp:{}: datagrams not steered to their shards: {e}", l.addr);
        }
    }
}

/// What the shards' stream glue shares: connection aliases, timeouts, and TLS when a TLS
/// socket listens or TLS is on (a certificate that does not load stops us here).
fn start_streams(
    cfg: &Config,
    listens: &[Listen],
    aliases: Arc<ser::stream::Aliases>,
) -> Result<ser::stream::Shared> {
    // Without tls and ws, aliases and settings are all its fields.
    #[allow(unused_mut)]
    #[cfg_attr(
        not(any(feature = "tls", feature = "ws")),
        allow(clippy::needless_update)
    )]
    let mut shared = ser::stream::Shared {
        aliases,
        settings: ser::stream::Settings::from_config(&cfg.streams),
        ..Default::default()
    };
    if cfg.streams.tls_wanted() && !cfg.streams.tls() {
        warn!("enable_tls: this ser was built without TLS (cargo feature `tls`); no TLS sockets");
    }
    #[cfg(feature = "ws")]
    {
        shared.ws.allowed_origins = cfg.streams.ws_allowed_origins.clone();
    }
    if !listens.iter().any(|l| l.transport.is_secure()) {
        return Ok(shared);
    }
    #[cfg(feature = "tls")]
    {
        let o = &cfg.streams;
        let mut names: Vec<String> = listens.iter().map(|l| l.addr.ip().to_string()).collect();
        names.extend(cfg.listen.iter().filter_map(|l| l.name.clone()));
        names.extend(cfg.aliases.iter().map(|(n, _)| n.clone()));
        if let Some(h) = ser_shards::os::hostname() {
            names.push(h);
        }
        names.sort();
        names.dedup();
        let settings = ser::tls::TlsSettings {
            certificate: o.tls_certificate.as_ref().map(Into::into),
            private_key: o.tls_private_key.as_ref().map(Into::into),
            ca_list: o.tls_ca_list.as_ref().map(Into::into),
            verify: o.tls_verify,
            require_certificate: o.tls_require_certificate,
            method: o
                .tls_method
                .parse()
                .map_err(|e| anyhow::anyhow!("tls_method: {e}"))?,
            data_dir: Some(std::path::PathBuf::from(&cfg.data_dir)),
            names,
        };
        let tls = match ser::tls::Tls::load(&settings) {
            Ok(t) => t,
            Err(e) => {
                error!("TLS: {e}");
                bail!("TLS: {e}");
            }
        };
        if let Some(p) = &tls.self_signed {
            ser::log::always(
                ser::log::L_NOTICE,
                format_args!(
                    "TLS: no tls_certificate given; using the self-signed certificate {}",
                    p.display()
                ),
            );
        }
        shared.tls = Some(tls);
        Ok(shared)
    }
    #[cfg(not(feature = "tls"))]
    {
        bail!("this ser was built without TLS (cargo feature `tls`); remove the tls and wss listen lines")
    }
}

/// What every shard shares: our sockets and names, the module parameters, the databases
/// (after the fork: their workers are threads; one that does not answer at start stops us
/// with its URL and why), the user location (its stored bindings, its timer) and the
/// dispatcher's sets (a list that does not read stops us with its `file:line:col`).
fn start_services(
    cfg: &Config,
    loaded: &ser::loader::Loaded,
    listens: Vec<Listen>,
    start_dir: &std::path::Path,
) -> Result<Core> {
    let mut core = Core::new(cfg, listens, ser_shards::os::hostname());
    core.params = loaded.params.clone();
    core.calls_owned = loaded.modules.iter().any(|m| m == "tm");
    core.dbs.list = ser::db::open_for(
        &loaded.params.db_urls(),
        &core.dbs.default_url,
        ser::modules::needs_default_db(&loaded.params, &loaded.modules),
        &[],
    )
    .context("database")?;
    core.usrloc = ser::usrloc::start(&core.params, &loaded.modules, &core.dbs)?;
    core.ratelimit
        .configure(&ser::modules::ratelimit::definition(&core.params));
    #[cfg(feature = "xmpp")]
    if loaded.modules.iter().any(|m| m == "jabber") {
        let cfg = ser::xmpp::Config::from_params(&core.params).map_err(|e| {
            error!("{e}");
            anyhow::Error::msg(e)
        })?;
        core.jabber = ser::xmpp::Gateway::new(cfg);
    }
    // The dispatcher's list file is named relative to the directory ser started in.
    #[cfg(not(feature = "dispatcher"))]
    let _ = start_dir;
    #[cfg(feature = "dispatcher")]
    {
        core.dispatcher =
            ser::dispatcher::start(&core.params, &loaded.modules, &core.dbs, start_dir).map_err(
                |e| {
                    error!("{e}");
                    anyhow::Error::msg(e)
                },
            )?;
    }
    #[cfg(feature = "rtpengine")]
    if loaded.modules.iter().any(|m| m == "rtpengine") {
        let cfg = ser::rtpengine::Config::from_params(&core.params).map_err(anyhow::Error::msg)?;
        core.rtpengine = ser::rtpengine::Rtpengine::start(cfg).map_err(anyhow::Error::msg)?;
    }
    #[cfg(feature = "msilo")]
    {
        core.msilo = ser::msilo::start(&core.params, &loaded.modules, &core.dbs).map_err(|e| {
            error!("{e}");
            anyhow::Error::msg(e)
        })?;
    }
    Ok(core)
}

/// The management command registry (FIFO and HTTP share it), and the HTTP listener for
/// metrics and JSON commands when `metrics_listen` is set.
fn start_management(
    cfg: &Config,
    core: &Arc<Core>,
    live: &Arc<ser::live::Live>,
    stats: &[Arc<Stats>],
    listens: &[Listen],
    runtime: &ser_shards::Runtime<ser::server::Event>,
) -> Result<Arc<ser::mgmt::Mgmt>> {
    let mut mgmt = ser::mgmt::Mgmt::new(Arc::clone(live), stats.to_vec(), listens.to_vec());
    if core.usrloc.enabled {
        ser::mgmt::usrloc::register(&mut mgmt);
    }
    let loaded = |m: &str| live.current().modules.iter().any(|x| x == m);
    if loaded("pike") {
        ser::mgmt::pike::register(&mut mgmt);
    }
    if loaded("ratelimit") {
        ser::mgmt::ratelimit::register(&mut mgmt);
    }
    #[cfg(feature = "xmpp")]
    if core.jabber.enabled() {
        ser::mgmt::jabber::register(&mut mgmt);
    }
    #[cfg(feature = "dispatcher")]
    if core.dispatcher.enabled() {
        ser::mgmt::dispatcher::register(&mut mgmt);
    }
    #[cfg(feature = "rtpengine")]
    if core.rtpengine.counters().is_some() {
        ser::mgmt::rtpengine::register(&mut mgmt);
    }
    #[cfg(feature = "msilo")]
    if core.msilo.enabled() {
        ser::mgmt::msilo::register(&mut mgmt);
    }
    let remote = runtime.remote();
    mgmt.set_poster(Arc::new(move |shard, ev| {
        if shard >= remote.shard_count() {
            return false;
        }
        remote.post(shard, ev);
        true
    }));
    let mgmt = Arc::new(mgmt);
    #[cfg(feature = "xmpp")]
    {
        ser::mgmt::jabber::start(&mgmt).context("jabber gateway thread")?;
    }
    #[cfg(feature = "dispatcher")]
    {
        ser::mgmt::dispatcher::start_prober(&mgmt).context("dispatcher prober thread")?;
    }
    #[cfg(feature = "msilo")]
    {
        ser::mgmt::msilo::start_deliverer(&mgmt).context("msilo deliverer thread")?;
    }
    let nat = ser::mgmt::nathelper::start_pinger(&mgmt).context("nathelper pinger thread")?;
    if let Some(addr) = cfg.metrics_listen {
        let mut exporter = ser::metrics::Exporter::new(stats.to_vec());
        if core.usrloc.enabled {
            exporter.add_collector(ser::mgmt::usrloc::collector(Arc::clone(&core.usrloc)));
        }
        if loaded("pike") {
            exporter.add_collector(ser::mgmt::pike::collector(Arc::clone(&core.pike)));
        }
        if loaded("ratelimit") {
            exporter.add_collector(ser::mgmt::ratelimit::collector(Arc::clone(&core.ratelimit)));
        }
        #[cfg(feature = "xmpp")]
        if core.jabber.enabled() {
            exporter.add_collector(ser::mgmt::jabber::collector(Arc::clone(&core.jabber)));
        }
        #[cfg(feature = "dispatcher")]
        if core.dispatcher.enabled() {
            exporter.add_collector(ser::mgmt::dispatcher::collector(Arc::clone(
                &core.dispatcher,
            )));
        }
        #[cfg(feature = "rtpengine")]
        if core.rtpengine.counters().is_some() {
            exporter.add_collector(ser::mgmt::rtpengine::collector(Arc::clone(&core.rtpengine)));
        }
        #[cfg(feature = "msilo")]
        if core.msilo.enabled() {
            exporter.add_collector(ser::mgmt::msilo::collector(Arc::clone(&core.msilo)));
        }
        if loaded("nathelper") {
            exporter.add_collector(ser::mgmt::nathelper::collector(nat));
        }
        let shards_remote = runtime.remote();
        exporter.add_collector(ser::metrics::runtime_collector(move || {
            shards_remote.stats()
        }));
        let api = ser::mgmt_http::mgmt_commands(Arc::clone(&mgmt), exporter.clone());
        match ser::mgmt_http::MgmtHttp::start(addr, exporter, api) {
            Ok(h) => ser::log::always(
                ser::log::L_NOTICE,
                format_args!("metrics on http://{}/metrics", h.local_addr()),
            ),
            Err(e) => {
                error!("cannot listen on metrics_listen {addr}: {e}");
                bail!("metrics_listen {addr}: {e}");
            }
        }
    }
    Ok(mgmt)
}

/// SER's FIFO server when `fifo=` is set.
fn start_fifo(
    cfg: &Config,
    mgmt: &Arc<ser::mgmt::Mgmt>,
) -> Result<Option<ser::mgmt::fifo::FifoServer>> {
    let Some(path) = &cfg.fifo else {
        return Ok(None);
    };
    match ser::mgmt::fifo::start(path, cfg.fifo_mode, Arc::clone(mgmt)) {
        Ok(f) => {
            notice!("FIFO server on {path}");
            Ok(Some(f))
        }
        Err(e) => {
            error!("cannot start the FIFO server on {path}: {e}");
            bail!("cannot start the FIFO server on {path}: {e}");
        }
    }
}

/// The start-up lines: what runs, and one `listening on <transport>:<address>` per socket
/// with the port it got (tests and operators read them).
fn log_started(
    runtime: &ser_shards::Runtime<ser::server::Event>,
    shards: usize,
    file: &str,
    modules: &[String],
    listens: &[Listen],
) {
    ser::log::always(
        ser::log::L_NOTICE,
        format_args!(
            "{} started: {} shard(s), I/O backend {:?}: {}, script {}, modules [{}]",
            server_name(),
            shards,
            runtime.backend(),
            runtime.backend_detail(),
            file,
            modules.join(" ")
        ),
    );
    for s in listens {
        ser::log::always(
            ser::log::L_NOTICE,
            format_args!(
                "listening on {}:{}",
                s.transport,
                ser::sip::hostport(&s.addr)
            ),
        );
    }
}

fn write_pid_file(cfg: &Config) -> Result<()> {
    if let Some(pid_file) = &cfg.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {pid_file}"))?;
    }
    Ok(())
}

fn remove_pid_file(cfg: &Config) {
    if let Some(pid_file) = &cfg.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Serves until SIGTERM/SIGINT; SIGHUP reloads the script.
fn wait_for_stop(signals: &ser_shards::os::SignalSet, live: &ser::live::Live) {
    loop {
        match signals.wait() {
            // A reload logs itself ("NAME: reloaded (generation N)"); only a refusal here.
            ser_shards::os::SIGHUP => {
                if let Err(e) = live.reload() {
                    error!("SIGHUP: reload refused, the running script stays: {e}");
                }
            }
            sig => {
                notice!("signal {sig}: shutting down");
                return;
            }
        }
    }
}

/// After the shards stopped: the user location's cache to its database (db_mode 2), the
/// databases closed (queued writes done, SQLite's WAL checkpointed), the capture's last
/// records.
fn stop_services(core: &Core, capture: Option<&ser::capture::Capture>) {
    core.usrloc.shutdown();
    core.dbs.close_all();
    if let Some(c) = capture {
        c.close();
        ser::log::always(
            ser::log::L_NOTICE,
            format_args!(
                "capture: {} message(s) written, {} not captured, {} write error(s)",
                c.written(),
                c.dropped(),
                c.write_errors()
            ),
        );
    }
}

/// `-t`, `-u`/`-g` (`user=`/`group=`): change root and identity once the sockets are bound.
fn drop_privileges(cfg: &Config, identity: &ser_shards::os::Identity) -> Result<()> {
    if let Some(dir) = &cfg.chroot {
        ser_shards::os::chroot(dir).with_context(|| format!("chroot {dir}"))?;
    }
    ser_shards::os::apply_identity(identity).context("changing user/group")?;
    Ok(())
}
