//! The command line (the contract bench/ relies on: keep the names) and what it builds.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ser_shards::Backend;

use crate::builtin;
use crate::engine::Setup;
use crate::rate::Schedule;
use crate::scenario::{parse_xml, Scenario};
use crate::users::{Inject, Users};

pub const USAGE: &str = "usage: loadgen <options|register|call|uas|message|FILE.xml> [options]
  --target HOST:PORT     where requests go (the proxy or registrar); also positional
  --listen IP:PORT       local address (for uas and XML UAS: where to answer)
  --rate N  --ramp-to N --ramp-secs S   scenarios per second (open loop), linear ramp
  --count N  --duration S               stop starting after N scenarios / S seconds
  --shards N  --ports-per-shard N       shards (threads; default 1 per 20000/s, uas 2), sockets per shard
  --timeout S            per transaction (default 32, RFC 3261 timer B)
  --recv-timeout S       wait for an expected request (default 64)
  --max-fail N|P%        exit 1 when failures exceed this (default 0)
  --users FILE.csv       user,password,domain lines
  --user-pattern P --user-count N --password P --domain D
  --callee-pattern P     R-URI users of call/message/options (default: service)
  --hold MS              call hold time (and SIPp's default <pause/>)
  --fail-share F --noanswer-share F      uas: answered 486 / never answered
  --json FILE  --quiet   report as JSON, no progress/table
  -sf FILE.xml  -inf FILE.csv  -s SERVICE   SIPp-style
  --backend auto|io_uring|portable
  --batch-us N|auto      handle I/O at most every N us (0: every datagram when it comes, calls
                         started on the timers' 1 ms ticks); auto: rounds of 40 calls, 1000
                         to 4000 us (fewer wake-ups, less CPU per call, calls in bursts).
                         Default: a UAC 1000 (each message when it is due, to the
                         millisecond, as SIPp's default -timer_resol), a UAS 0";

/// A UAC's round length with `--batch-us auto`, from its shard's share of the peak rate: long
/// enough that a round starts [`GRAIN_CALLS`] calls (every wake-up costs as much CPU as a few
/// calls), never under 1 ms nor over 4 ms. SIPp (3.6, default options) starts its calls in
/// bursts about 4 ms apart at 1000 to 10 000 calls/s (40 a burst at 10 000/s), so this paces at
/// least as finely as SIPp at every rate. Not the default: a server under test sees bursts it
/// would not see from independent phones (and spends less per call on them).
pub fn default_grain_us(rate_per_shard: f64) -> u64 {
    if rate_per_shard.is_nan() || rate_per_shard <= 0.0 {
        return 1000;
    }
    ((GRAIN_CALLS * 1e6 / rate_per_shard) as u64).clamp(1000, 4000)
}

/// Calls a default round of a UAC starts, when the rate allows a round of at most 4 ms.
pub const GRAIN_CALLS: f64 = 40.0;

/// A UAC's default I/O round: the timers' resolution (and SIPp's default -timer_resol), 1 ms.
pub const TIMER_RESOLUTION_US: u64 = 1000;

/// `--max-fail`: a count or a percentage of attempted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxFail {
    Count(u64),
    Percent(f64),
}

impl MaxFail {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.trim().strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .with_context(|| format!("--max-fail {s}"))?;
            if !(0.0..=100.0).contains(&v) {
                bail!("--max-fail {s}: percentage out of range");
            }
            Ok(MaxFail::Percent(v))
        } else {
            Ok(MaxFail::Count(
                s.trim()
                    .parse()
                    .with_context(|| format!("--max-fail {s}"))?,
            ))
        }
    }

    pub fn exceeded(&self, failed: u64, attempted: u64) -> bool {
        match *self {
            MaxFail::Count(n) => failed > n,
            MaxFail::Percent(p) => attempted > 0 && failed as f64 * 100.0 > p * attempted as f64,
        }
    }
}

pub struct Opts {
    pub setup: Setup,
    pub shards: usize,
    pub listen: Vec<SocketAddr>,
    pub reuse_port: bool,
    pub backend: Backend,
    /// `Config::batch`: wake-ups coalesced over this long (`None`: every datagram).
    pub batch: Option<Duration>,
    pub quiet: bool,
    pub json: Option<String>,
    pub max_fail: MaxFail,
}

fn addr(s: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .with_context(|| format!("{s}: not host:port"))?
        .next()
        .with_context(|| format!("{s}: no address"))
}

fn secs(s: &str) -> Result<Duration> {
    let v: f64 = s
        .parse()
        .with_context(|| format!("{s}: not a number of seconds"))?;
    if !(v >= 0.0 && v.is_finite()) {
        bail!("{s}: not a number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn share(s: &str) -> Result<f64> {
    let v: f64 = s.parse().with_context(|| format!("{s}: not a share"))?;
    if !(0.0..=1.0).contains(&v) {
        bail!("{s}: a share is between 0 and 1");
    }
    Ok(v)
}

pub fn parse(args: Vec<OsString>) -> Result<Opts> {
    use lexopt::prelude::*;
    // SIPp spells its long options with one dash; lexopt would read "-sf" as -s f.
    let args = args.into_iter().map(|a| match a.to_str() {
        Some("-sf") => OsString::from("--sf"),
        Some("-sn") => OsString::from("--sn"),
        Some("-inf") => OsString::from("--inf"),
        _ => a,
    });
    let mut p = lexopt::Parser::from_args(args);
    let mut scenario: Option<String> = None;
    let mut target: Option<String> = None;
    let mut listen: Option<String> = None;
    let (mut rate, mut ramp_to, mut ramp_secs) = (10.0f64, None::<f64>, 0.0f64);
    let (mut count, mut duration) = (None::<u64>, None::<Duration>);
    let (mut shards, mut ports) = (None::<usize>, 1usize);
    let (mut timeout, mut recv_timeout) = (Duration::from_secs(32), Duration::from_secs(64));
    let mut max_fail = MaxFail::Count(0);
    let mut users_file: Option<String> = None;
    let (mut pattern, mut user_count, mut password, mut domain) = (
        "user%d".to_string(),
        1000u64,
        "password".to_string(),
        None::<String>,
    );
    let mut callee: Option<String> = None;
    let mut service = "service".to_string();
    let (mut hold, mut fail_share, mut noanswer_share) = (0u64, 0.0, 0.0);
    let (mut json, mut quiet, mut inf) = (None, false, None::<String>);
    let mut backend = Backend::Auto;
    // None: each message when it is due; Some(None): `auto` rounds; Some(Some(n)): n us.
    let mut batch_us: Option<Option<u64>> = None;
    while let Some(arg) = p.next()? {
        match arg {
            Long("target") => target = Some(p.value()?.string()?),
            Long("listen") => listen = Some(p.value()?.string()?),
            Long("rate") | Short('r') => rate = p.value()?.parse()?,
            Long("ramp-to") => ramp_to = Some(p.value()?.parse()?),
            Long("ramp-secs") => ramp_secs = p.value()?.parse()?,
            Long("count") | Short('m') => count = Some(p.value()?.parse()?),
            Long("duration") => duration = Some(secs(&p.value()?.string()?)?),
            Long("shards") | Short('n') => shards = Some(p.value()?.parse()?),
            Long("ports-per-shard") => ports = p.value()?.parse()?,
            Long("timeout") => timeout = secs(&p.value()?.string()?)?,
            Long("recv-timeout") => recv_timeout = secs(&p.value()?.string()?)?,
            Long("max-fail") => max_fail = MaxFail::parse(&p.value()?.string()?)?,
            Long("users") => users_file = Some(p.value()?.string()?),
            Long("user-pattern") => pattern = p.value()?.string()?,
            Long("user-count") => user_count = p.value()?.parse()?,
            Long("password") => password = p.value()?.string()?,
            Long("domain") => domain = Some(p.value()?.string()?),
            Long("callee-pattern") => callee = Some(p.value()?.string()?),
            Long("hold") | Short('d') => hold = p.value()?.parse()?,
            Long("fail-share") => fail_share = share(&p.value()?.string()?)?,
            Long("noanswer-share") => noanswer_share = share(&p.value()?.string()?)?,
            Long("json") => json = Some(p.value()?.string()?),
            Long("quiet") | Short('q') => quiet = true,
            Long("sf") | Long("sn") => scenario = Some(p.value()?.string()?),
            Long("inf") => inf = Some(p.value()?.string()?),
            Short('s') => service = p.value()?.string()?,
            Long("batch-us") => {
                let v = p.value()?.string()?;
                batch_us = Some(if v == "auto" {
                    None
                } else {
                    Some(
                        v.parse()
                            .context("--batch-us: a number of microseconds or auto")?,
                    )
                });
            }
            Long("backend") => {
                backend = p.value()?.string()?.parse().map_err(anyhow::Error::msg)?
            }
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if scenario.is_none() => scenario = Some(v.string()?),
            Value(v) if target.is_none() => target = Some(v.string()?),
            _ => bail!("{}\n{USAGE}", arg.unexpected()),
        }
    }
    let Some(scenario) = scenario else {
        bail!("{USAGE}")
    };
    if shards == Some(0) || ports == 0 {
        bail!("--shards and --ports-per-shard must be positive");
    }
    if rate.is_nan() || rate <= 0.0 || ramp_to.is_some_and(|r| r < 0.0) {
        bail!("--rate must be positive");
    }
    if fail_share + noanswer_share > 1.0 {
        bail!("--fail-share + --noanswer-share exceed 1");
    }
    let schedule = match ramp_to {
        Some(to) if ramp_secs > 0.0 => Schedule {
            from: rate,
            to,
            ramp_secs,
        },
        Some(to) => Schedule::constant(to),
        None => Schedule::constant(rate),
    };
    let (scenarios, shares) = match scenario.as_str() {
        "options" => (vec![parse_xml(builtin::OPTIONS, "options")?], vec![]),
        "message" => (vec![parse_xml(builtin::MESSAGE, "message")?], vec![]),
        "register" => (vec![parse_xml(builtin::REGISTER, "register")?], vec![]),
        "call" => (vec![parse_xml(builtin::CALL, "call")?], vec![]),
        "uas" => (
            vec![
                parse_xml(builtin::UAS_ANSWER, "uas")?,
                parse_xml(builtin::UAS_BUSY, "uas-busy")?,
                parse_xml(builtin::UAS_NOANSWER, "uas-noanswer")?,
            ],
            vec![fail_share, noanswer_share],
        ),
        f if f.ends_with(".xml") => {
            let bytes = std::fs::read(f).with_context(|| format!("reading {f}"))?;
            // SIPp's files say ISO-8859-1; their markup is ASCII, and any other byte is kept
            // as the character it names.
            let text: String = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
            };
            (vec![parse_xml(&text, f)?], vec![])
        }
        other => {
            bail!("unknown scenario '{other}' (options, register, call, uas, message or FILE.xml)")
        }
    };
    let server = scenarios[0].server;
    // One shard keeps up with tens of thousands of calls per second, and every shard more
    // wakes up on its own: a UAC takes one per 20 000/s of peak rate (up to the cores); a UAS,
    // two.
    let peak = ramp_to.unwrap_or(rate).max(rate);
    let shards = shards.unwrap_or_else(|| {
        if server {
            return 2;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ((peak / 20_000.0).ceil() as usize).clamp(1, cores.max(1))
    });
    // By default a UAS answers every datagram when it comes (it stands in the path being
    // measured), and a UAC sends each message when it is due, to the millisecond: its I/O and
    // timers on 1 ms ticks, as SIPp's (default -timer_resol 1 ms), whose clustering of the
    // messages due within a millisecond a server then sees alike (bench/RESULTS.md, "loadgen
    // and SIPp as seen by ser"); `--batch-us auto` handles a UAC's I/O in rounds of 40 calls
    // (see default_grain_us), `--batch-us 0` every datagram when it comes.
    let batch_us = match batch_us {
        None if server => 0,
        None => TIMER_RESOLUTION_US,
        Some(Some(n)) => n,
        Some(None) if server => 0,
        Some(None) => default_grain_us(peak / shards as f64),
    };
    let target_addr = match &target {
        Some(t) => addr(t)?,
        None if server => SocketAddr::from(([127, 0, 0, 1], 5060)),
        None => bail!("--target HOST:PORT is needed for a caller"),
    };
    let listen_addr = match &listen {
        Some(l) => addr(l)?,
        None if server => bail!("--listen IP:PORT is needed to answer"),
        None => SocketAddr::new(
            if target_addr.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ),
    };
    let local_ip = if !listen_addr.ip().is_unspecified() {
        listen_addr.ip()
    } else {
        // The address the kernel would send from towards the target.
        UdpSocket::bind(SocketAddr::new(listen_addr.ip(), 0))
            .and_then(|s| s.connect(target_addr).and_then(|_| s.local_addr()))
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    };
    let reuse_port = listen_addr.port() != 0;
    let listen_v = if reuse_port {
        vec![listen_addr]
    } else {
        vec![listen_addr; ports]
    };
    let domain = domain.unwrap_or_else(|| target_addr.ip().to_string());
    let users = match &users_file {
        Some(f) => Users::load_csv(f, &password, &domain)?,
        None => Users::Pattern {
            pattern,
            count: user_count.max(1),
            start: 1,
            password,
            domain,
        },
    };
    let inject = inf.map(|f| -> Result<Inject> {
        Inject::parse(&std::fs::read_to_string(&f).with_context(|| format!("reading {f}"))?)
            .with_context(|| f.clone())
    });
    let inject = inject.transpose()?;
    let setup = Setup {
        scenarios: scenarios.into_iter().collect::<Vec<Scenario>>(),
        shares,
        server,
        target: target_addr,
        local_ip,
        callee_pattern: callee.unwrap_or_else(|| service.clone()),
        callee_count: if users_file.is_some() {
            users.len()
        } else {
            user_count.max(1)
        },
        service,
        users,
        inject,
        hold_ms: hold,
        timeout,
        recv_timeout,
        schedule,
        count,
        duration,
        pid: std::process::id(),
        media_port: 6000,
        grain: Duration::from_micros(batch_us),
        local_ip_text: match local_ip {
            IpAddr::V6(a) => format!("[{a}]"),
            IpAddr::V4(a) => a.to_string(),
        },
        pid_text: std::process::id().to_string(),
        target_ip_text: target_addr.ip().to_string(),
    };
    Ok(Opts {
        setup,
        shards,
        listen: listen_v,
        reuse_port,
        backend,
        batch: (batch_us > 0).then(|| Duration::from_micros(batch_us)),
        quiet,
        json,
        max_fail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn max_fail() {
        assert_eq!(MaxFail::parse("3").ok(), Some(MaxFail::Count(3)));
        assert_eq!(MaxFail::parse("0.1%").ok(), Some(MaxFail::Percent(0.1)));
        assert!(MaxFail::parse("x").is_err() && MaxFail::parse("120%").is_err());
        assert!(!MaxFail::Percent(0.1).exceeded(1, 1000));
        assert!(MaxFail::Percent(0.1).exceeded(2, 1000));
        assert!(MaxFail::Count(0).exceeded(1, 10));
        assert!(!MaxFail::Percent(1.0).exceeded(0, 0));
    }

    #[test]
    fn contract_options() {
        let o = parse(args(
            "call --target 127.0.0.1:5060 --rate 100 --ramp-to 500 --ramp-secs 10 --count 1000 \
             --duration 30 --shards 3 --timeout 5 --max-fail 0.1% --user-pattern u%d \
             --user-count 5 --password pw --domain d.example --callee-pattern c%d --hold 200 \
             --json out.json --quiet",
        ))
        .expect("parses");
        let s = &o.setup;
        assert_eq!(
            (s.schedule.from, s.schedule.to, s.schedule.ramp_secs),
            (100.0, 500.0, 10.0)
        );
        assert_eq!(
            (s.count, s.duration),
            (Some(1000), Some(Duration::from_secs(30)))
        );
        assert_eq!(
            (o.shards, s.timeout, s.hold_ms),
            (3, Duration::from_secs(5), 200)
        );
        assert_eq!(s.users.get(0).user, "u1");
        assert_eq!(s.users.get(0).domain, "d.example");
        assert_eq!(s.callee_pattern, "c%d");
        assert!(o.quiet && o.json.as_deref() == Some("out.json"));
        assert!(!s.server && !o.reuse_port);
        let u = parse(args(
            "uas --listen 127.0.0.1:5070 --fail-share 0.1 --noanswer-share 0.05",
        ))
        .expect("uas");
        assert!(u.setup.server && u.reuse_port);
        assert_eq!(u.setup.shares, vec![0.1, 0.05]);
        assert!(parse(args("call")).is_err());
        assert!(parse(args("uas")).is_err());
        assert!(parse(args("bogus --target 127.0.0.1:1")).is_err());
        assert!(parse(args(
            "uas --listen 127.0.0.1:5070 --fail-share 0.7 --noanswer-share 0.5"
        ))
        .is_err());
    }

    #[test]
    fn rounds_follow_each_shards_rate() {
        let grain = |a: &str| parse(args(a)).expect("parses").batch;
        let us = |n: u64| Some(Duration::from_micros(n));
        // By default each message when it is due, to the millisecond; 0: at once.
        assert_eq!(grain("call --target 127.0.0.1:1 --rate 1000"), us(1000));
        assert_eq!(grain("call --target 127.0.0.1:1 --rate 20000"), us(1000));
        assert_eq!(
            grain("call --target 127.0.0.1:1 --rate 20000 --batch-us 0"),
            None
        );
        assert_eq!(grain("uas --listen 127.0.0.1:1"), None);
        // auto: rounds of 40 calls, between 1 and 4 ms; a UAS answers on every datagram.
        let auto = |a: &str| grain(&format!("{a} --batch-us auto"));
        assert_eq!(auto("call --target 127.0.0.1:1 --rate 1000"), us(4000));
        assert_eq!(auto("call --target 127.0.0.1:1 --rate 10000"), us(4000));
        assert_eq!(auto("call --target 127.0.0.1:1 --rate 20000"), us(2000));
        assert_eq!(
            auto("call --target 127.0.0.1:1 --rate 10 --ramp-to 16000 --ramp-secs 5"),
            us(2500)
        );
        // A shard's share of the rate counts.
        assert_eq!(
            auto("call --target 127.0.0.1:1 --rate 40000 --shards 2"),
            us(2000)
        );
        assert_eq!(
            auto("call --target 127.0.0.1:1 --rate 80000 --shards 1"),
            us(1000)
        );
        assert_eq!(auto("uas --listen 127.0.0.1:1"), None);
        assert_eq!(
            grain("call --target 127.0.0.1:1 --rate 1000 --batch-us 500"),
            us(500)
        );
        assert_eq!(grain("uas --listen 127.0.0.1:1"), None);
        assert_eq!(default_grain_us(0.0), 1000);
    }
}
