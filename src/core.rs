//! What every shard shares and only reads: our sockets, our names (`myself`), the global
//! options the SIP layer needs, and the per-shard statistics.
//!
//! Built once at start (and again on a reload, later); shards hold it through an `Arc`.
//! Nothing here changes while messages are processed, so reading it needs no lock.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use ser_parser::Host;

use crate::config::Config;

/// Read-only server state shared by all shards.
#[derive(Debug)]
pub struct Core {
    /// Listen sockets; the index is the shard runtime's socket id on every shard.
    pub sockets: Vec<SocketAddr>,
    /// Names that mean "us": aliases, listen names, the host name. Lower case; port 0 = any.
    pub names: Vec<(String, u16)>,
    pub sip_warning: bool,
    pub server_signature: bool,
    pub reply_to_via: bool,
    pub max_len: usize,
    /// `Server: ...\r\n`, ready to append.
    pub server_header: String,
    /// "SIP/2.0/UDP host:port;branch=" for each socket: our Via, ready for its branch.
    pub via_prefix: Vec<String>,
    /// Prefix of the To-tags of our stateless replies; lets sl recognise ACKs to them.
    pub tag_prefix: String,
    pub pid: u32,
    /// The script's module parameters (see [`crate::modules::Params`]).
    pub params: crate::modules::Params,
    /// RFC 3263 next-hop resolution (blocking: used from the blocking pool only).
    pub resolver: std::sync::Arc<crate::dns::Resolver>,
    /// Set once by `main` on SIGTERM/SIGINT: shards refuse new transactions (503) while the
    /// ones in flight finish. Shared (not copied) when a `Core` is rebuilt.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The server's name and version as SER printed it (`Server:` header, `-V`).
pub fn server_name() -> String {
    format!(
        "ser ({} ({}/{}))",
        VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

impl Core {
    /// `hostname` is the machine's name (ours too when listening on every interface).
    pub fn new(cfg: &Config, sockets: Vec<SocketAddr>, hostname: Option<String>) -> Self {
        let mut names: Vec<(String, u16)> = cfg
            .aliases
            .iter()
            .map(|(n, p)| (n.to_ascii_lowercase(), p.unwrap_or(0)))
            .collect();
        for l in &cfg.listen {
            if let Some(n) = &l.name {
                names.push((n.to_ascii_lowercase(), l.port.unwrap_or(cfg.port)));
            }
        }
        if cfg.listen.is_empty() {
            // Listening on every interface: the machine's own name is ours too (SER took it
            // from the interfaces' reverse DNS; the host name is what that gives here).
            if let Some(h) = hostname {
                names.push((h.to_ascii_lowercase(), cfg.port));
            }
            names.push((String::from("localhost"), cfg.port));
        }
        let pid = std::process::id();
        let via_prefix = sockets
            .iter()
            .map(|s| {
                let host = match s.ip() {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                };
                format!("SIP/2.0/UDP {}:{};branch=", host, s.port())
            })
            .collect();
        Self {
            via_prefix,
            sockets,
            names,
            sip_warning: cfg.sip_warning,
            server_signature: cfg.server_signature,
            reply_to_via: cfg.reply_to_via,
            max_len: cfg.max_len,
            server_header: format!("Server: {}\r\n", server_name()),
            tag_prefix: format!("{:08x}", hash64(&[&pid.to_be_bytes(), b"ser-tag"]) as u32),
            pid,
            params: crate::modules::Params::default(),
            resolver: std::sync::Arc::new(crate::dns::Resolver::new(
                (!cfg.dns_servers.is_empty()).then(|| cfg.dns_servers.clone()),
                std::time::Duration::from_millis(cfg.dns_timeout_ms),
            )),
            draining: Default::default(),
        }
    }

    /// Is the server stopping (see [`Core::draining`])? One relaxed load per request.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Is `ip` one of our listen addresses?
    pub fn is_my_ip(&self, ip: IpAddr) -> bool {
        self.sockets.iter().any(|s| s.ip() == ip)
    }

    /// `myself` for a host and port as written in a URI or Via (port None = 5060).
    pub fn is_myself(&self, host: &Host<'_>, host_str: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        match host {
            Host::V4(ip) => self.has_socket(IpAddr::V4(*ip), port),
            Host::V6(ip) => self.has_socket(IpAddr::V6(*ip), port),
            Host::Name(name) => self.is_my_name(name, port),
            Host::None => {
                let h = host_str.trim_start_matches('[').trim_end_matches(']');
                match h.parse::<IpAddr>() {
                    Ok(ip) => self.has_socket(ip, port),
                    Err(_) => self.is_my_name(h, port),
                }
            }
        }
    }

    fn has_socket(&self, ip: IpAddr, port: u16) -> bool {
        self.sockets
            .iter()
            .any(|s| s.ip() == ip && s.port() == port)
    }

    fn is_my_name(&self, name: &str, port: u16) -> bool {
        let name = name.trim_end_matches('.');
        self.names
            .iter()
            .any(|(n, p)| n.eq_ignore_ascii_case(name) && (*p == 0 || *p == port))
    }

    /// The socket to send to `dst` from: the one the request came in on when the address
    /// family matches, else the first of the right family.
    pub fn socket_for(&self, dst: &SocketAddr, arrived_on: usize) -> Option<usize> {
        if let Some(s) = self.sockets.get(arrived_on) {
            if s.is_ipv4() == dst.is_ipv4() {
                return Some(arrived_on);
            }
        }
        self.sockets
            .iter()
            .position(|s| s.is_ipv4() == dst.is_ipv4())
    }
}

/// A fixed-key 64-bit hash: the same on every shard and across restarts, so stateless
/// branches and To-tags come out the same for retransmissions.
pub fn hash64(parts: &[&[u8]]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let state = ahash::RandomState::with_seeds(
        0x5e75_1ad0_2002_0001,
        0x1d7a_c0de_0000_0002,
        0x0ddb_a11f_ace0_0003,
        0x5eed_5eed_5eed_0004,
    );
    let mut h = state.build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    h.finish()
}

/// Counters kept by each shard, read (summed) by management tools.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_in: AtomicU64,
    pub replies_in: AtomicU64,
    pub requests_fwd: AtomicU64,
    pub replies_fwd: AtomicU64,
    pub sl_replies: [AtomicU64; 7], // index = class 0..6 (1xx..6xx), 0 = other
    pub sl_200: AtomicU64,
    pub sl_404: AtomicU64,
    pub sl_483: AtomicU64,
    pub drop_bad_request: AtomicU64,
    pub drop_bad_reply: AtomicU64,
    pub drop_garbage: AtomicU64,
    pub drop_reply_not_ours: AtomicU64,
    pub drop_script: AtomicU64,
    pub drop_no_route: AtomicU64,
    pub acks_absorbed: AtomicU64,
    pub loops: AtomicU64,
    pub handoffs: AtomicU64,
    pub dns_failures: AtomicU64,
    /// t_stats: live transactions (cells), of which waiting (final sent, only timers left).
    pub tm_current: AtomicU64,
    pub tm_waiting: AtomicU64,
    /// t_stats: transactions ever created, and refused for want of room (503).
    pub tm_total: AtomicU64,
    pub tm_refused: AtomicU64,
    /// t_stats: replies tm generated itself (100, t_reply, 408, 487, 500, 503).
    pub tm_local_replies: AtomicU64,
    /// t_stats: transactions completed with a final of class 2xx..6xx (index 0 = 2xx).
    pub tm_completed: [AtomicU64; 5],
}

impl Stats {
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_sl(&self, code: u16) {
        let class = usize::from(code / 100);
        Self::inc(self.sl_replies.get(class).unwrap_or(&self.sl_replies[0]));
        match code {
            200 => Self::inc(&self.sl_200),
            404 => Self::inc(&self.sl_404),
            483 => Self::inc(&self.sl_483),
            _ => {}
        }
    }
}
