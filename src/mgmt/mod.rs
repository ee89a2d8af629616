//! Management commands: SER's FIFO commands (`ps`, `which`, `version`, `uptime`, `print`,
//! `sl_stats`, `t_stats`, `t_hash`, `t_uac_from`, `reload`) in one registry that the FIFO
//! server ([`fifo`]), `serctl` (through the FIFO) and the HTTP listener all use.
//!
//! A command takes its parameter lines and returns a [`Reply`]: a status code and reason
//! (SER's first reply line, `200 ok` or `500 command 'x' not available`) and body lines.
//! Modules add theirs with [`Mgmt::register`] (usrloc's `ul_*`, pike's `pike.top` and
//! ratelimit's `rl.*` come that way).
//!
//! Nothing here runs on a shard thread: commands read the shards' counters (relaxed atomics)
//! and reach a shard only by posting it an event (`t_uac_from`).

#[cfg(feature = "dispatcher")]
pub mod dispatcher;
pub mod fifo;
#[cfg(feature = "xmpp")]
pub mod jabber;
#[cfg(feature = "msilo")]
pub mod msilo;
pub mod nathelper;
pub mod pike;
pub mod ratelimit;
#[cfg(feature = "rtpengine")]
pub mod rtpengine;
pub mod usrloc;

use portable_atomic::AtomicU64;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use crate::live::Live;
use crate::server::Event;
use crate::server_name;
use crate::stats::Stats;

/// What a command answers: SER's status line and the lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
    pub body: Vec<String>,
}

impl Reply {
    pub fn ok(body: Vec<String>) -> Self {
        Self {
            code: 200,
            reason: String::from("ok"),
            body,
        }
    }

    pub fn error(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            body: Vec::new(),
        }
    }

    /// The reply as the FIFO writes it: status line, then the body, each line ended by `\n`.
    pub fn to_fifo(&self) -> String {
        let mut s = format!("{} {}\n", self.code, self.reason);
        for l in &self.body {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// How the FIFO reads a command's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    /// Lines up to an empty line.
    Lines,
    /// `fixed` lines, then header lines up to an empty line, then body lines up to a line
    /// holding a single `.` (SER's `t_uac_from`). The parameters handed to the command are
    /// the fixed lines, the header lines, an empty line, the body lines.
    HeadersAndBody { fixed: usize },
}

/// A command's code.
pub type Handler = fn(&Mgmt, &[String]) -> Reply;

/// One registered command.
#[derive(Clone, Copy)]
pub struct Command {
    pub name: &'static str,
    /// The module that exports it (`core` for the built-in ones).
    pub module: &'static str,
    pub params: Params,
    /// One line for `which` and `serctl`: what it does and its parameters.
    pub help: &'static str,
    /// Runs long (waits on the network): the FIFO server runs it on its own thread.
    pub slow: bool,
    pub run: Handler,
}

/// Posts an event to a shard (the runtime's `Remote::post`, given by main).
pub type Poster = Arc<dyn Fn(usize, Event) -> bool + Send + Sync>;

/// What commands can see, and the registry.
pub struct Mgmt {
    pub started: SystemTime,
    pub live: Arc<Live>,
    /// Per shard, in shard order.
    pub stats: Vec<Arc<Stats>>,
    /// Listen sockets (every shard has one of each).
    pub sockets: Vec<crate::sip::Listen>,
    post: Option<Poster>,
    commands: BTreeMap<&'static str, Command>,
    /// Transactions started by `t_uac_from` (t_stats' "local").
    pub uac_started: AtomicU64,
}

impl Mgmt {
    /// A registry with the core and tm commands.
    pub fn new(live: Arc<Live>, stats: Vec<Arc<Stats>>, sockets: Vec<crate::sip::Listen>) -> Self {
        let mut m = Self {
            started: SystemTime::now(),
            live,
            stats,
            sockets,
            post: None,
            commands: BTreeMap::new(),
            uac_started: AtomicU64::new(0),
        };
        for c in CORE_COMMANDS {
            m.register(*c);
        }
        m
    }

    /// How commands reach the shards (set once the runtime runs).
    pub fn set_poster(&mut self, post: Poster) {
        self.post = Some(post);
    }

    /// How commands reach the shards, for a thread of its own (the dispatcher's prober).
    pub fn poster(&self) -> Option<Poster> {
        self.post.clone()
    }

    /// Adds (or replaces) a command.
    pub fn register(&mut self, c: Command) {
        self.commands.insert(c.name, c);
    }

    pub fn command(&self, name: &str) -> Option<&Command> {
        self.commands.get(name)
    }

    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.commands.values()
    }

    /// Runs `name` with its parameter lines.
    pub fn call(&self, name: &str, params: &[String]) -> Reply {
        match self.commands.get(name) {
            Some(c) => (c.run)(self, params),
            None => not_available(name),
        }
    }

    /// Counters summed over the shards: `f` picks one counter.
    pub fn sum(&self, f: impl Fn(&Stats) -> &AtomicU64) -> u64 {
        self.stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    pub fn uptime(&self) -> Duration {
        SystemTime::now()
            .duration_since(self.started)
            .unwrap_or_default()
    }
}

/// SER's answer to an unknown command.
pub fn not_available(name: &str) -> Reply {
    Reply::error(500, format!("command '{name}' not available"))
}

const CORE_COMMANDS: &[Command] = &[
    Command {
        name: "ps",
        module: "core",
        params: Params::Lines,
        help: "running threads: main, each shard with its sockets, FIFO, listeners, workers",
        slow: false,
        run: cmd_ps,
    },
    Command {
        name: "which",
        module: "core",
        params: Params::Lines,
        help: "list of available commands",
        slow: false,
        run: cmd_which,
    },
    Command {
        name: "version",
        module: "core",
        params: Params::Lines,
        help: "version of ser",
        slow: false,
        run: cmd_version,
    },
    Command {
        name: "uptime",
        module: "core",
        params: Params::Lines,
        help: "running time",
        slow: false,
        run: cmd_uptime,
    },
    Command {
        name: "print",
        module: "core",
        params: Params::Lines,
        help: "prints its parameter lines back (a FIFO test)",
        slow: false,
        run: cmd_print,
    },
    Command {
        name: "reload",
        module: "core",
        params: Params::Lines,
        help: "compiles the script again and swaps it in between two messages",
        slow: false,
        run: cmd_reload,
    },
    Command {
        name: "sl_stats",
        module: "sl",
        params: Params::Lines,
        help: "stateless replies sent, by code",
        slow: false,
        run: cmd_sl_stats,
    },
    Command {
        name: "t_stats",
        module: "tm",
        params: Params::Lines,
        help: "transaction statistics",
        slow: false,
        run: cmd_t_stats,
    },
    Command {
        name: "t_hash",
        module: "tm",
        params: Params::Lines,
        help: "occupation of each shard's transaction table",
        slow: false,
        run: cmd_t_hash,
    },
    Command {
        name: "t_uac_from",
        module: "tm",
        params: Params::HeadersAndBody { fixed: 3 },
        help: "method, sender's URI, destination URI, header lines, empty line, body, '.': \
               starts a transaction and answers its final reply",
        slow: true,
        run: cmd_t_uac_from,
    },
    Command {
        name: "tcp_list",
        module: "core",
        params: Params::Lines,
        help: "open TCP and TLS connections: id, transport, direction, peer, local address, \
               shard, age, idle time, bytes in and out, TLS version and cipher",
        slow: true,
        run: cmd_tcp_list,
    },
];

fn cmd_ps(m: &Mgmt, _: &[String]) -> Reply {
    let pid = std::process::id();
    let mut rows: Vec<(u32, String)> = Vec::new();
    let socks: Vec<String> = m
        .sockets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "sock={i} @ {}:{}",
                s.transport,
                crate::sip::hostport(&s.addr)
            )
        })
        .collect();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let comm = comm.trim();
            let what = if tid == pid {
                String::from("main (attendant: signals, reload)")
            } else if let Some(n) = comm.rsplit_once("-shard-").map(|(_, n)| n) {
                format!(
                    "shard {n} (receiver, transactions, timers) {}",
                    socks.join(" ")
                )
            } else if let Some(n) = comm.rsplit_once("-blocking-").map(|(_, n)| n) {
                format!("worker {n} (DNS, exec)")
            } else if comm == "ser-fifo" {
                String::from("fifo server")
            } else if comm == "ser-fifo-read" {
                String::from("fifo reader")
            } else if comm == "ser-fifo-cmd" {
                String::from("fifo command (t_uac_from waiting for its reply)")
            } else if comm == "mgmt-http" {
                String::from("http listener (metrics, JSON commands)")
            } else if comm == "mgmt-http-conn" {
                String::from("http connection")
            } else if let Some(n) = comm.strip_prefix("ser-db-") {
                format!("database worker {n}")
            } else if comm == "ser-ds-ping" {
                String::from("dispatcher prober (OPTIONS to the destinations)")
            } else if comm == "ser-natping" {
                String::from("nathelper pinger (NAT keep-alives)")
            } else if comm == "ser-usrloc-timer" {
                String::from("usrloc timer (expiry, write-back)")
            } else if comm.starts_with("ser-capture") {
                String::from("capture writer (pcap)")
            } else if comm.starts_with("ser-exec") {
                String::from("exec pipe (program input/output)")
            } else {
                comm.to_string()
            };
            rows.push((tid, what));
        }
    }
    if rows.is_empty() {
        rows.push((pid, String::from("main")));
    }
    rows.sort_by_key(|(tid, _)| (*tid != pid, *tid));
    Reply::ok(
        rows.into_iter()
            .enumerate()
            .map(|(i, (tid, what))| format!("{i} {tid} {what}"))
            .collect(),
    )
}

fn cmd_which(m: &Mgmt, _: &[String]) -> Reply {
    Reply::ok(m.commands().map(|c| c.name.to_string()).collect())
}

fn cmd_version(m: &Mgmt, _: &[String]) -> Reply {
    let g = m.live.current();
    Reply::ok(vec![
        format!("Server: {}", server_name()),
        format!("Modules: {}", g.modules.join(" ")),
    ])
}

fn cmd_uptime(m: &Mgmt, _: &[String]) -> Reply {
    let now = SystemTime::now();
    Reply::ok(vec![
        format!("Now: {}", crate::utc::ctime(now)),
        format!("Up Since: {}", crate::utc::ctime(m.started)),
        format!("Up time: {} [sec]", m.uptime().as_secs()),
    ])
}

fn cmd_print(_: &Mgmt, p: &[String]) -> Reply {
    Reply::ok(p.to_vec())
}

fn cmd_reload(m: &Mgmt, _: &[String]) -> Reply {
    match m.live.reload() {
        Ok(msg) => Reply::ok(vec![msg]),
        Err(e) => {
            crate::error!("reload refused: {e}");
            Reply::error(500, format!("reload failed: {e}"))
        }
    }
}

/// SER's sl_stats: stateless replies by code, in its order (200 202 2xx 300 ... xxx).
fn cmd_sl_stats(m: &Mgmt, _: &[String]) -> Reply {
    Reply::ok(
        crate::stats::SL_CODES
            .iter()
            .enumerate()
            .map(|(i, code)| {
                let n = m.sum(|s| s.sl_by_code.get(i).unwrap_or(&s.sl_200));
                format!("{code}: {n}")
            })
            .collect(),
    )
}

fn cmd_t_stats(m: &Mgmt, _: &[String]) -> Reply {
    let current = m.sum(|s| &s.tm_current);
    let waiting = m.sum(|s| &s.tm_waiting);
    let total = m.sum(|s| &s.tm_total);
    let local = m.uac_started.load(Ordering::Relaxed);
    let replied = m.sum(|s| &s.tm_local_replies);
    let c = |i: usize| m.sum(|s| &s.tm_completed[i]);
    Reply::ok(vec![
        format!("Current: {current} ({waiting} waiting) Total: {total} ({local} local)"),
        format!("Replied localy: {replied}"),
        format!(
            "Completion status 6xx: {}, 5xx: {}, 4xx: {}, 3xx: {}, 2xx: {}",
            c(4),
            c(3),
            c(2),
            c(1),
            c(0)
        ),
        format!("Refused (table full): {}", m.sum(|s| &s.tm_refused)),
    ])
}

fn cmd_t_hash(m: &Mgmt, _: &[String]) -> Reply {
    let g = m.live.current();
    let shards = m.stats.len().max(1);
    let cap = crate::tm::TmConfig::from_params(&g.core.params, shards).max_transactions;
    Reply::ok(
        m.stats
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "shard {i}: {} transactions ({} waiting), capacity {cap}",
                    s.tm_current.load(Ordering::Relaxed),
                    s.tm_waiting.load(Ordering::Relaxed)
                )
            })
            .collect(),
    )
}

/// `tcp_list`: every open stream connection, one line each (asks every shard, waits at most
/// 2 s for each).
fn cmd_tcp_list(m: &Mgmt, _: &[String]) -> Reply {
    let Some(post) = &m.post else {
        return Reply::error(500, "no shards running");
    };
    let mut lines = Vec::new();
    for shard in 0..m.stats.len() {
        let (tx, rx) = mpsc::channel();
        if !post(shard, Event::ListConns(tx)) {
            continue;
        }
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(l) => lines.extend(l),
            Err(_) => lines.push(format!("shard {shard}: no answer")),
        }
    }
    Reply::ok(lines)
}

/// `t_uac_from`: method, From URI, To/Request-URI, header lines, empty line, body lines.
fn cmd_t_uac_from(m: &Mgmt, p: &[String]) -> Reply {
    let Some(post) = &m.post else {
        return Reply::error(500, "no shards running");
    };
    let (Some(method), Some(from), Some(to)) = (p.first(), p.get(1), p.get(2)) else {
        return Reply::error(400, "t_uac_from: method, from and to lines expected");
    };
    let method = method.trim();
    let from = from.trim();
    let to = to.trim();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Reply::error(400, format!("t_uac_from: bad method '{method}'"));
    }
    if ser_parser::parse_uri(to).is_err() {
        return Reply::error(400, format!("t_uac_from: bad destination URI '{to}'"));
    }
    if ser_parser::parse_uri(from).is_err() {
        return Reply::error(400, format!("t_uac_from: bad sender URI '{from}'"));
    }
    let rest = p.get(3..).unwrap_or_default();
    let split = rest.iter().position(|l| l.is_empty()).unwrap_or(rest.len());
    let (headers, body) = rest.split_at(split);
    let body: Vec<String> = body.iter().skip(1).cloned().collect();
    for h in headers {
        if !h.contains(':') || h.contains('\r') {
            return Reply::error(400, format!("t_uac_from: bad header line '{h}'"));
        }
    }
    let g = m.live.current();
    let (shard, uac, rx) =
        match prepare_uac(&g.core, m.stats.len(), method, from, to, headers, &body) {
            Ok(x) => x,
            Err(r) => return r,
        };
    if !post(shard, Event::Uac(uac)) {
        return Reply::error(500, "shard not reachable");
    }
    m.uac_started.fetch_add(1, Ordering::Relaxed);
    // The shard answers within fr_timer (408 then); a margin for a loaded shard.
    let wait = crate::tm::TmConfig::from_params(&g.core.params, 1)
        .timers
        .fr_timer
        + Duration::from_secs(5);
    match rx.recv_timeout(wait) {
        Ok(r) => Reply::error(r.code, r.reason),
        Err(_) => Reply::error(500, "no answer from the shard"),
    }
}

/// A request this server starts (`t_uac_from`, the dispatcher's OPTIONS probes): `to` is
/// resolved (RFC 3263; this blocks, so never call it on a shard) and goes over the transport
/// its URI names, as `t_relay` would send it (`;transport=tcp`, TLS for `sips:`, else UDP);
/// the request is written with our Via for that transport and a fresh Call-ID, and comes back with the shard that owns that Call-ID and the
/// receiver of its final result. `Err` is the reply to give when it cannot be sent.
pub fn prepare_uac(
    core: &crate::core::Core,
    shards: usize,
    method: &str,
    from: &str,
    to: &str,
    headers: &[String],
    body: &[String],
) -> Result<PreparedUac, Reply> {
    let mut body_text = String::new();
    for l in body {
        body_text.push_str(l);
        body_text.push_str("\r\n");
    }
    prepare_uac_to(core, shards, method, from, to, to, headers, &body_text)
}

/// What [`prepare_uac`] makes: the shard to post to, the request, the receiver of its result.
pub type PreparedUac = (
    usize,
    crate::tm::uac::UacRequest,
    mpsc::Receiver<crate::tm::uac::UacResult>,
);

/// [`prepare_uac`] with the next hop apart from the Request-URI: the request (Request-URI
/// and To `ruri`) goes to `to` (a SIP URI), with `body_text` as it is. The jabber
/// gateway sends its messages from XMPP to ser's own address this way, so the script routes
/// them.
#[allow(clippy::too_many_arguments)]
pub fn prepare_uac_to(
    core: &crate::core::Core,
    shards: usize,
    method: &str,
    from: &str,
    to: &str,
    ruri: &str,
    headers: &[String],
    body_text: &str,
) -> Result<PreparedUac, Reply> {
    use crate::sip::{NextHop, Target, Transport};
    // The transport as t_relay picks it (RFC 3263 4.1): the URI's `;transport=`, TLS for
    // sips, else UDP.
    let hop = match NextHop::of_uri_text(to, None) {
        Ok(h) => h,
        Err(e) => {
            return Err(Reply::error(
                e.code,
                format!("{} (destination URI '{to}')", e.reason),
            ))
        }
    };
    if matches!(hop.transport, Transport::Ws | Transport::Wss) {
        return Err(Reply::error(
            478,
            format!("cannot open a {} connection to '{to}'", hop.transport),
        ));
    }
    let (targets, name) = match &hop.target {
        Target::Addr(a) => (vec![*a], None),
        Target::Name { host, port } => {
            let secure = hop.secure || hop.transport.is_secure();
            match core.resolver.next_hop(host, *port, secure) {
                Ok(t) => (t, Some(host.clone())),
                Err(e) => return Err(Reply::error(478, format!("Unresolvable destination ({e})"))),
            }
        }
    };
    let Some((dst, socket)) = targets
        .iter()
        .find_map(|d| core.local.socket_for(hop.transport, d, 0).map(|s| (*d, s)))
    else {
        return Err(Reply::error(
            478,
            format!(
                "Unresolvable destination (no {} socket of that address family)",
                hop.transport
            ),
        ));
    };
    let dst = crate::sip::Dest {
        transport: hop.transport,
        socket,
        addr: dst,
        conn: None,
    };
    build_uac_to(
        core, shards, method, from, ruri, dst, name, headers, body_text,
    )
}

/// A request this server starts to a known destination (`dst`: our socket, the peer, the
/// connection; `name`: the host name a TLS connection verifies): written with our Via for
/// that socket and a fresh Call-ID; returns the shard that owns the Call-ID and the receiver
/// of the transaction's final result. Never blocks.
#[allow(clippy::too_many_arguments)]
pub fn build_uac(
    core: &crate::core::Core,
    shards: usize,
    method: &str,
    from: &str,
    to: &str,
    dst: crate::sip::Dest,
    name: Option<String>,
    headers: &[String],
    body: &[String],
) -> Result<PreparedUac, Reply> {
    let mut body_text = String::new();
    for l in body {
        body_text.push_str(l);
        body_text.push_str("\r\n");
    }
    build_uac_to(
        core, shards, method, from, to, dst, name, headers, &body_text,
    )
}

/// [`build_uac`] with the body as it is (`ruri` is the Request-URI and To).
#[allow(clippy::too_many_arguments)]
fn build_uac_to(
    core: &crate::core::Core,
    shards: usize,
    method: &str,
    from: &str,
    ruri: &str,
    dst: crate::sip::Dest,
    name: Option<String>,
    headers: &[String],
    body_text: &str,
) -> Result<PreparedUac, Reply> {
    let socket = dst.socket;
    let Some(local) = core.local.addr(socket) else {
        return Err(Reply::error(500, "no socket"));
    };
    let n: u64 = rand::random();
    let call_id = format!("{n:016x}-fifo@{}", crate::sip::hostport(&local));
    let shard = crate::sip::owner_shard(call_id.as_bytes(), shards.max(1));
    // A transaction's branch on the Call-ID's shard: the replies go there (sip::reply_shard).
    let branch = crate::sip::txn_branch(&core.reply.tag_prefix, shard, n, 0);
    let via = core.local.via(socket, &branch, local);
    let mut req = format!(
        "{method} {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: <{from}>;tag={:08x}\r\nTo: <{ruri}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n",
        n as u32 ^ 0x5e5e_5e5e
    );
    for h in headers {
        req.push_str(h.trim_end());
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\n\r\n{body_text}",
        body_text.len()
    ));
    let (tx, rx) = mpsc::sync_channel(1);
    let uac = crate::tm::uac::UacRequest {
        dst,
        name,
        bytes: req.into_bytes(),
        branch,
        method: method.to_string(),
        done: crate::tm::uac::Notify::channel(tx),
    };
    Ok((shard, uac, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_to_fifo_text() {
        let r = Reply::ok(vec!["a".into(), "b".into()]);
        assert_eq!(r.to_fifo(), "200 ok\na\nb\n");
        assert_eq!(
            not_available("foobar").to_fifo(),
            "500 command 'foobar' not available\n"
        );
    }
}
