//! RFC 3263 next-hop resolution: from a SIP URI's host, port and scheme to the ordered list of
//! addresses to try, with a TTL cache shared by every shard.
//!
//! Shards never block, so this is the blocking side: [`Resolver::resolve`] is what the jobs of
//! the blocking pool (`ctx.spawn_blocking`) call, and its result goes back to the shard as an
//! event. The [`Resolver`] is `Send + Sync` and shared as `Arc<Resolver>`; its cache sits behind
//! one mutex, which is fine because only pool threads ever take it, and never across a network
//! exchange.
//!
//! What it does (RFC 3263 sections 4.1 and 4.2, for one transport):
//! - an IP literal is its own target (the given port, else 5060, or 5061 for `sips`);
//! - a host with an explicit port is looked up as A then AAAA, nothing else;
//! - otherwise NAPTR (`SIP+D2U`, or `SIPS+D2T` for `sips`) picks SRV names by order and
//!   preference; without usable NAPTR records the SRV name is `_sip._udp.<host>`
//!   (`_sips._tcp.<host>`); SRV records are ordered by priority and, within a priority, by
//!   RFC 2782's weighted random selection, and every SRV target is looked up as A then AAAA;
//! - without NAPTR and SRV records, the host's A and AAAA records with the default port.
//!
//! Names and the NAPTR/SRV/A/AAAA/CNAME/SOA record data are decoded by `hickory-proto`; the
//! messages around them are written and read by `wire`, which decodes only those record types
//! and skips the others (so hickory's decoders for every other type stay out of the binary).
//! This module sends a query over a std `UdpSocket` (random id, read timeout, the answer's
//! id and question checked), retries over TCP when the answer is truncated, and caches answers
//! by (name, record type): positive ones for their TTL, negative ones (NXDOMAIN, no data) for
//! the SOA's negative TTL capped at [`NEGATIVE_TTL_MAX`].
//!
//! What it deliberately does not do: recursion (it asks the configured recursive servers),
//! DNSSEC, search lists (SIP hosts are fully qualified), and, for now, choosing TCP or TLS
//! from NAPTR for plain `sip` URIs (the transport is the URI's or the action's; `secure` asks
//! for TLS targets). It never panics on what a server sends: a malformed or mismatched
//! datagram is ignored as if it had not arrived.
//!
//! Layout: this file holds the result types ([`Target`], [`Transport`], [`DnsError`]) and the
//! RFC 3263 procedure on [`Resolver`]; `select` orders NAPTR and SRV records (RFC 2782
//! weighted choice), `cache` is the TTL cache and what an answer puts in it, `exchange` is the
//! query over UDP then TCP, `wire` writes the query and decodes the response, and `config`
//! parses resolv.conf and the hosts file.

mod cache;
mod config;
mod exchange;
mod select;
mod wire;

pub use config::{hosts_lookup, parse_resolv_conf};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_proto::rr::domain::Label;
use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{Name, RecordType};

use cache::{Cache, Lookup};
use select::{order_srv, select_naptr};
use wire::Rdata;

/// What the resolver does with a response's bytes, without the network or the clock: decode
/// it, follow the answer's CNAMEs for its first question, pick and order the NAPTR and SRV
/// records found there, read a negative answer's TTL. For the fuzz targets (`fuzz/`), which
/// feed it hostile bytes; returns how many questions, answers and authority records `msg`
/// decoded to, or None when it is malformed.
#[doc(hidden)]
pub fn fuzz_response(msg: &[u8]) -> Option<[usize; 3]> {
    let r = wire::decode_response(msg).ok()?;
    if let Some(q) = r.questions.first() {
        let (_, records, _) = cache::extract_answer(&r, &q.name, q.qtype);
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let _ = select_naptr(&records, t);
        }
        let srvs = records
            .iter()
            .filter_map(|d| match d {
                Rdata::Srv(s) => Some(s),
                _ => None,
            })
            .collect();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let _ = order_srv(srvs, &mut rng);
    }
    let _ = cache::negative_ttl(&r);
    Some([r.questions.len(), r.answers.len(), r.authority.len()])
}

/// The most targets [`Resolver::resolve`] returns.
pub const MAX_TARGETS: usize = 16;
/// How many cache entries a resolver keeps by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// The longest a negative answer (NXDOMAIN, no data) is cached, whatever the SOA says.
pub const NEGATIVE_TTL_MAX: u32 = 60;
/// How long a negative answer that carries no SOA is cached. RFC 2308 would not cache it at
/// all; a few seconds keep a flood of requests for one dead name from becoming a flood of
/// queries, and are short enough not to matter when the name appears.
pub const NEGATIVE_TTL_NO_SOA: u32 = 5;
/// The longest a positive answer is cached, whatever its TTL.
pub const POSITIVE_TTL_MAX: u32 = 86_400;
/// SRV records considered per SRV name, after ordering: bounds the A/AAAA queries per resolve.
const MAX_SRV_RECORDS: usize = 32;

/// The transport a target is to be reached over (RFC 3263 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The NAPTR service field that selects this transport (RFC 3263 4.1, RFC 3263 table).
    pub fn naptr_service(self) -> &'static str {
        match self {
            Transport::Udp => "SIP+D2U",
            Transport::Tcp => "SIP+D2T",
            Transport::Tls => "SIPS+D2T",
        }
    }

    /// The SRV service and protocol labels (`_sip`, `_udp`).
    fn srv_labels(self) -> (&'static str, &'static str) {
        match self {
            Transport::Udp => ("_sip", "_udp"),
            Transport::Tcp => ("_sip", "_tcp"),
            Transport::Tls => ("_sips", "_tcp"),
        }
    }

    /// The transport RFC 3263 looks up for a URI: TLS for `sips`, UDP otherwise.
    pub fn for_scheme(secure: bool) -> Self {
        if secure {
            Transport::Tls
        } else {
            Transport::Udp
        }
    }

    /// The port used when neither the URI nor an SRV record gives one.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SRV record a target came from, for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvOrigin {
    /// The SRV owner name, e.g. `_sip._udp.example.com`.
    pub name: String,
    pub priority: u16,
    pub weight: u16,
}

/// One address to try. [`Resolver::resolve`] returns them in the order to try them: on failure
/// (ICMP error, timer B/F) the transaction moves to the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The host name whose A/AAAA record gave `addr` (the SRV target, or the URI's host); for
    /// an IP literal, the literal as written.
    pub host: String,
    /// The SRV record that named `host`, if one did.
    pub srv: Option<SrvOrigin>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({}", self.transport, self.addr, self.host)?;
        if let Some(srv) = &self.srv {
            write!(
                f,
                " via {} priority {} weight {}",
                srv.name, srv.priority, srv.weight
            )?;
        }
        f.write_str(")")
    }
}

/// Why a name could not be resolved. Each variant names the name that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN, or the name exists without any usable record.
    #[error("{0}: no such host (NXDOMAIN or no usable record)")]
    NotFound(String),
    /// No name server answered within the timeout.
    #[error("{0}: no answer from the name servers in time")]
    Timeout(String),
    /// Every name server that answered said SERVFAIL, REFUSED or another error code.
    #[error("{name}: name server answered {rcode}")]
    ServerFailure { name: String, rcode: String },
    /// Only malformed or mismatched answers came back.
    #[error("{0}: malformed answer from the name servers")]
    Malformed(String),
    /// A socket error (e.g. ICMP port unreachable: nothing listens at the server's address).
    #[error("{name}: {error}")]
    Io { name: String, error: String },
    /// The host is not a valid domain name.
    #[error("{0:?}: not a valid host name")]
    InvalidName(String),
    /// No name server is configured.
    #[error("{0}: no name server configured")]
    NoServers(String),
}

impl DnsError {
    /// How much an error says about the name, to keep the most telling one of several servers'.
    fn rank(&self) -> u8 {
        match self {
            DnsError::ServerFailure { .. } => 4,
            DnsError::Timeout(_) => 3,
            DnsError::Malformed(_) => 2,
            DnsError::Io { .. } => 1,
            _ => 0,
        }
    }
}

/// An RFC 3263 resolver with its cache. `Send + Sync`: share it as `Arc<Resolver>`.
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<Cache>,
    /// Read (at each use, on the blocking pool) for names DNS does not know.
    hosts_file: std::path::PathBuf,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `servers` over UDP (then TCP for truncated answers), one after the
    /// other, each query given `timeout` per server before the next is asked.
    ///
    /// `servers` comes from the global option `dns_server = "127.0.0.1:5353"` in ser.cfg (an
    /// address and port; the tests point it at a dnsmasq on loopback). `None` uses the
    /// `nameserver` lines of /etc/resolv.conf (port 53), and 127.0.0.1:53 if there are none, as
    /// the C library does.
    pub fn new(servers: Option<Vec<SocketAddr>>, timeout: Duration) -> Self {
        let servers = servers.unwrap_or_else(|| {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let found = parse_resolv_conf(&text);
            if found.is_empty() {
                vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
            } else {
                found
            }
        });
        Resolver {
            servers,
            timeout,
            cache: Mutex::new(Cache::new(DEFAULT_CACHE_CAPACITY)),
            hosts_file: std::path::PathBuf::from("/etc/hosts"),
        }
    }

    /// The same resolver reading another hosts file (tests).
    pub fn with_hosts_file(self, path: impl Into<std::path::PathBuf>) -> Self {
        Resolver {
            hosts_file: path.into(),
            ..self
        }
    }

    /// The same resolver with a cache of at most `capacity` entries.
    pub fn with_cache_capacity(self, capacity: usize) -> Self {
        Resolver {
            cache: Mutex::new(Cache::new(capacity)),
            ..self
        }
    }

    /// The name servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The per-query, per-server timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Entries in the cache, expired ones not yet evicted included.
    pub fn cache_len(&self) -> usize {
        self.lock_cache().map.len()
    }

    /// Forgets every cached answer.
    pub fn clear_cache(&self) {
        self.lock_cache().map.clear();
    }

    /// RFC 3263 4.1/4.2 for a SIP URI's `host`, `port` (`None`: not given) and scheme
    /// (`secure`: sips, so TLS): the targets to try, in order, at most [`MAX_TARGETS`].
    ///
    /// - an IP literal (`192.0.2.1`, `[2001:db8::1]` or `2001:db8::1`): that address, with
    ///   `port` or 5060 (5061 for sips);
    /// - a port given: the host's A then AAAA records with that port;
    /// - else NAPTR records whose service is `SIP+D2U` (`SIPS+D2T`) and flag `s`, by order and
    ///   preference, name SRV records; without them, SRV `_sip._udp.<host>` (`_sips._tcp`);
    ///   SRV records go by priority and, within one, by RFC 2782 weighted random selection,
    ///   each target's A then AAAA records with the SRV port;
    /// - no NAPTR and no SRV records: the host's A then AAAA records with port 5060 (5061).
    ///
    /// Blocking: up to a few queries, each bounded by the timeout per server. A timeout stops
    /// the resolution rather than trying the next step against a server that does not answer.
    pub fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        secure: bool,
    ) -> Result<Vec<Target>, DnsError> {
        let transport = Transport::for_scheme(secure);
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![Target {
                addr: SocketAddr::new(ip, port.unwrap_or(transport.default_port())),
                transport,
                host: host.to_owned(),
                srv: None,
            }]);
        }
        let name = parse_host(host)?;
        match port {
            Some(port) => self.host_targets(&name, port, transport, None),
            None => self.service_targets(&name, transport),
        }
    }

    /// The addresses of a next hop, best first: [`Self::resolve`], and for a name DNS does
    /// not know (or a server that refuses it), the hosts file, as operators expect of
    /// `localhost` and of names they pin there. The one resolution path of the server:
    /// stateless forwarding, tm's branches and the management UAC all come here.
    pub fn next_hop(
        &self,
        host: &str,
        port: Option<u16>,
        secure: bool,
    ) -> Result<Vec<SocketAddr>, String> {
        match self.resolve(host, port, secure) {
            Ok(targets) if !targets.is_empty() => {
                for t in &targets {
                    crate::debug!("{host}: target {t}");
                }
                Ok(targets.into_iter().map(|t| t.addr).collect())
            }
            Ok(_) => Err(format!("{host}: no address")),
            Err(e @ DnsError::Timeout(_)) => Err(e.to_string()),
            Err(e) => {
                let p = port.unwrap_or(Transport::for_scheme(secure).default_port());
                let text = std::fs::read_to_string(&self.hosts_file).unwrap_or_default();
                let found: Vec<SocketAddr> = hosts_lookup(&text, host)
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, p))
                    .collect();
                if found.is_empty() {
                    Err(e.to_string())
                } else {
                    Ok(found)
                }
            }
        }
    }

    /// NAPTR → SRV → A/AAAA, falling back to the host's A/AAAA with the default port.
    fn service_targets(&self, name: &Name, transport: Transport) -> Result<Vec<Target>, DnsError> {
        let mut srv_names = Vec::new();
        let host_exists = true;
        match self.lookup(name, RecordType::NAPTR) {
            Ok(Lookup::Records(records)) => srv_names = select_naptr(&records, transport),
            Ok(Lookup::NoData) => {}
            // RFC 3263 4.1: no NAPTR records, so ask for SRV. NXDOMAIN here would mean nothing
            // exists below the name either (RFC 8020), but servers built from configured
            // records (dnsmasq's --srv-host) answer NXDOMAIN for a name that has only
            // _sip._udp SRV records under it: SRV is asked all the same.
            Ok(Lookup::NxDomain) => {}
            Err(e @ DnsError::Timeout(_)) => return Err(e),
            // NAPTR is optional in RFC 3263; a server refusing the type is no reason to stop.
            Err(_) => {}
        }

        if host_exists {
            let (service, proto) = transport.srv_labels();
            let default_srv = Label::from_ascii(proto)
                .and_then(|p| name.prepend_label(p))
                .and_then(|n| Label::from_ascii(service).and_then(|s| n.prepend_label(s)))
                .map_err(|_| DnsError::InvalidName(display_name(name)))?;
            let mut had_srv = false;
            let mut last_err = None;
            let mut targets = Vec::new();
            // NAPTR-named SRV names first; the conventional one when those give nothing.
            let naptr_count = srv_names.len();
            if !srv_names.iter().any(|n| n.eq_ignore_root(&default_srv)) {
                srv_names.push(default_srv);
            }
            for (i, srv_name) in srv_names.iter().enumerate() {
                if i >= naptr_count && (had_srv || !targets.is_empty()) {
                    break;
                }
                match self.srv_targets(srv_name, transport) {
                    Ok(None) => {}
                    Ok(Some(found)) => {
                        had_srv = true;
                        push_targets(&mut targets, found);
                    }
                    Err(e) => {
                        had_srv = true;
                        let timeout = matches!(e, DnsError::Timeout(_));
                        last_err = Some(e);
                        if timeout {
                            break;
                        }
                    }
                }
                if targets.len() >= MAX_TARGETS {
                    break;
                }
            }
            if !targets.is_empty() {
                return Ok(targets);
            }
            if let Some(e @ DnsError::Timeout(_)) = last_err {
                return Err(e);
            }
            if had_srv {
                // SRV records exist but none of their targets resolved: RFC 3263 4.2 does not
                // fall back to the host's own address records then.
                return Err(last_err.unwrap_or_else(|| DnsError::NotFound(display_name(name))));
            }
        }
        self.host_targets(name, transport.default_port(), transport, None)
    }

    /// The targets of one SRV name: `Ok(None)` when it has no SRV records, `Ok(Some)` with at
    /// least one target, or the error that left every SRV target unresolved.
    fn srv_targets(
        &self,
        srv_name: &Name,
        transport: Transport,
    ) -> Result<Option<Vec<Target>>, DnsError> {
        let records = match self.lookup(srv_name, RecordType::SRV) {
            Ok(Lookup::Records(records)) => records,
            Ok(Lookup::NoData | Lookup::NxDomain) => return Ok(None),
            Err(e @ DnsError::Timeout(_)) => return Err(e),
            Err(_) => return Ok(None),
        };
        let srvs: Vec<&SRV> = records
            .iter()
            .filter_map(|r| match r {
                Rdata::Srv(srv) => Some(srv),
                _ => None,
            })
            .collect();
        if srvs.is_empty() {
            return Ok(None);
        }
        let origin_name = display_name(srv_name);
        let mut targets = Vec::new();
        let mut last_err = None;
        for srv in order_srv(srvs, &mut rand::rng())
            .into_iter()
            .take(MAX_SRV_RECORDS)
        {
            // Target "." : the service is decidedly not available at this domain (RFC 2782).
            if srv.target().is_root() {
                continue;
            }
            let origin = SrvOrigin {
                name: origin_name.clone(),
                priority: srv.priority(),
                weight: srv.weight(),
            };
            match self.host_targets(srv.target(), srv.port(), transport, Some(origin)) {
                Ok(found) => push_targets(&mut targets, found),
                Err(e) => {
                    let timeout = matches!(e, DnsError::Timeout(_));
                    last_err = Some(e);
                    if timeout {
                        // The server stopped answering: return what we have, without waiting
                        // a timeout per remaining target.
                        break;
                    }
                }
            }
            if targets.len() >= MAX_TARGETS {
                break;
            }
        }
        if targets.is_empty() {
            Err(last_err.unwrap_or(DnsError::NotFound(origin_name)))
        } else {
            Ok(Some(targets))
        }
    }

    /// A then AAAA records of `name`, each with `port`.
    fn host_targets(
        &self,
        name: &Name,
        port: u16,
        transport: Transport,
        srv: Option<SrvOrigin>,
    ) -> Result<Vec<Target>, DnsError> {
        let host = display_name(name);
        let mut addrs: Vec<IpAddr> = Vec::new();
        match self.lookup(name, RecordType::A)? {
            Lookup::NxDomain => return Err(DnsError::NotFound(host)),
            Lookup::NoData => {}
            Lookup::Records(records) => addrs.extend(records.iter().filter_map(|r| match r {
                Rdata::A(a) => Some(IpAddr::V4(*a)),
                _ => None,
            })),
        }
        match self.lookup(name, RecordType::AAAA) {
            Ok(Lookup::Records(records)) => addrs.extend(records.iter().filter_map(|r| match r {
                Rdata::Aaaa(a) => Some(IpAddr::V6(*a)),
                _ => None,
            })),
            Ok(Lookup::NoData | Lookup::NxDomain) => {}
            Err(e) if addrs.is_empty() => return Err(e),
            // IPv4 addresses in hand: an AAAA failure only costs the IPv6 ones.
            Err(_) => {}
        }
        if addrs.is_empty() {
            return Err(DnsError::NotFound(host));
        }
        Ok(addrs
            .into_iter()
            .map(|ip| Target {
                addr: SocketAddr::new(ip, port),
                transport,
                host: host.clone(),
                srv: srv.clone(),
            })
            .collect())
    }
}

/// Appends `found` to `targets`, skipping addresses already there, up to [`MAX_TARGETS`].
fn push_targets(targets: &mut Vec<Target>, found: Vec<Target>) {
    for t in found {
        if targets.len() >= MAX_TARGETS {
            return;
        }
        if !targets
            .iter()
            .any(|x| x.addr == t.addr && x.transport == t.transport)
        {
            targets.push(t);
        }
    }
}

/// An IP literal host: `192.0.2.1`, `[2001:db8::1]` (the SIP URI form) or `2001:db8::1`.
fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse().ok()
}

/// A SIP URI host as a fully qualified DNS name (no search list: SIP hosts are FQDNs).
fn parse_host(host: &str) -> Result<Name, DnsError> {
    let invalid = || DnsError::InvalidName(host.to_owned());
    if host.is_empty() || host == "." || !host.is_ascii() {
        return Err(invalid());
    }
    let mut name = Name::from_ascii(host).map_err(|_| invalid())?;
    name.set_fqdn(true);
    Ok(name)
}

/// A name as people write it: no trailing dot.
fn display_name(name: &Name) -> String {
    let mut s = name.to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_names() {
        assert_eq!(
            ip_literal("127.0.0.1"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(ip_literal("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal("::1"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(ip_literal("[127.0.0.1]"), None);
        assert_eq!(ip_literal("example.com"), None);
        assert!(parse_host("").is_err());
        assert!(parse_host("bad..name").is_err());
        assert!(parse_host(&"a".repeat(64)).is_err());
        assert_eq!(
            display_name(&parse_host("Example.COM.").unwrap()),
            "Example.COM"
        );
    }

    #[test]
    fn resolver_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Resolver>();
        check::<DnsError>();
        check::<Target>();
    }
}
