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
//! The DNS wire format (messages, names, NAPTR/SRV/A/AAAA/SOA record data) is `hickory-proto`'s;
//! this module only sends a query over a std `UdpSocket` (random id, read timeout, the answer's
//! id and question checked), retries over TCP when the answer is truncated, and caches answers
//! by (name, record type): positive ones for their TTL, negative ones (NXDOMAIN, no data) for
//! the SOA's negative TTL capped at [`NEGATIVE_TTL_MAX`].
//!
//! What it deliberately does not do: recursion (it asks the configured recursive servers),
//! DNSSEC, search lists (SIP hosts are fully qualified), and, for now, TCP/TLS transport choice
//! for plain `sip` URIs (only UDP is served; `secure` asks for TLS targets, which the caller may
//! not be able to use yet). It never panics on what a server sends: a malformed or mismatched
//! datagram is ignored as if it had not arrived.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::domain::Label;
use hickory_proto::rr::rdata::{NAPTR, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use rand::Rng;

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
/// The EDNS UDP payload size we advertise (the DNS flag day 2020 value: no IP fragmentation).
const EDNS_PAYLOAD: u16 = 1232;
/// CNAME links followed inside one answer, and follow-up queries for a dangling chain.
const MAX_CNAME_CHAIN: usize = 8;
/// SRV records considered per SRV name, after ordering: bounds the A/AAAA queries per resolve.
const MAX_SRV_RECORDS: usize = 32;
/// Receive buffer for one UDP answer: larger than anything we advertise.
const UDP_BUF: usize = 4096;
/// How many times one UDP query is sent within its timeout (evenly spaced).
const UDP_SENDS: u32 = 3;

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

/// What the DNS said about one (name, type), as cached.
#[derive(Clone, Debug)]
enum Lookup {
    /// The records of the asked type (after following CNAMEs), never empty.
    Records(Arc<[RData]>),
    /// The name exists, but has no record of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

#[derive(Clone, Debug)]
struct Entry {
    value: Lookup,
    expires: Instant,
}

/// The TTL cache: (lower-case name, type) → answer. Bounded: when full, expired entries go
/// first, then the eighth that expires soonest.
struct Cache {
    map: HashMap<(String, RecordType), Entry>,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Cache {
            map: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &(String, RecordType), now: Instant) -> Option<Entry> {
        self.map.get(key).filter(|e| e.expires > now).cloned()
    }

    fn insert(&mut self, key: (String, RecordType), entry: Entry, now: Instant) {
        if entry.expires <= now {
            // TTL 0: used once, never cached; drop a stale copy so it is not found again.
            self.map.remove(&key);
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.map.retain(|_, e| e.expires > now);
            if self.map.len() >= self.capacity {
                let mut expiries: Vec<Instant> = self.map.values().map(|e| e.expires).collect();
                let k = (self.capacity / 8).max(1).min(expiries.len() - 1);
                let (_, threshold, _) = expiries.select_nth_unstable(k);
                let threshold = *threshold;
                self.map.retain(|_, e| e.expires > threshold);
            }
        }
        self.map.insert(key, entry);
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

/// Why one exchange with one server gave no answer.
enum ExchangeError {
    Timeout,
    Io(io::Error),
    Malformed,
    /// Our own query could not be encoded (a name hickory refuses).
    Encode,
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
        let transport = if secure {
            Transport::Tls
        } else {
            Transport::Udp
        };
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
                let default = if secure { 5061 } else { 5060 };
                let p = port.unwrap_or(default);
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
                RData::SRV(srv) => Some(srv),
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
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })),
        }
        match self.lookup(name, RecordType::AAAA) {
            Ok(Lookup::Records(records)) => addrs.extend(records.iter().filter_map(|r| match r {
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
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

    fn lock_cache(&self) -> MutexGuard<'_, Cache> {
        // A panic elsewhere while holding the lock leaves a consistent map: keep using it.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Lookup, DnsError> {
        self.lookup_entry(name, rtype, 0).map(|e| e.value)
    }

    /// One (name, type) from the cache, or asked and then cached.
    fn lookup_entry(
        &self,
        name: &Name,
        rtype: RecordType,
        depth: usize,
    ) -> Result<Entry, DnsError> {
        let key = (name.to_lowercase().to_ascii(), rtype);
        if let Some(hit) = self.lock_cache().get(&key, Instant::now()) {
            return Ok(hit);
        }
        let msg = self.ask(name, rtype)?;
        let now = Instant::now();
        let entry = if msg.response_code() == ResponseCode::NXDomain {
            Entry {
                value: Lookup::NxDomain,
                expires: now + secs(negative_ttl(&msg)),
            }
        } else {
            let (canonical, records, ttl) = extract_answer(&msg, name, rtype);
            if !records.is_empty() {
                Entry {
                    value: Lookup::Records(records.into()),
                    expires: now + secs(ttl.min(POSITIVE_TTL_MAX)),
                }
            } else if !canonical.eq_ignore_root(name) && depth < MAX_CNAME_CHAIN {
                // A CNAME chain whose end the server left out: ask for the end ourselves.
                let end = self.lookup_entry(&canonical, rtype, depth + 1)?;
                Entry {
                    value: end.value,
                    expires: end.expires.min(now + secs(ttl.min(POSITIVE_TTL_MAX))),
                }
            } else {
                Entry {
                    value: Lookup::NoData,
                    expires: now + secs(negative_ttl(&msg)),
                }
            }
        };
        self.lock_cache().insert(key, entry.clone(), now);
        Ok(entry)
    }

    /// Asks each server in turn until one answers NOERROR or NXDOMAIN.
    fn ask(&self, name: &Name, rtype: RecordType) -> Result<Message, DnsError> {
        let shown = display_name(name);
        let mut worst: Option<DnsError> = None;
        for &server in &self.servers {
            let err = match self.exchange(server, name, rtype) {
                Ok(msg) => match msg.response_code() {
                    ResponseCode::NoError | ResponseCode::NXDomain => return Ok(msg),
                    rcode => DnsError::ServerFailure {
                        name: shown.clone(),
                        rcode: rcode.to_string(),
                    },
                },
                Err(ExchangeError::Timeout) => DnsError::Timeout(shown.clone()),
                Err(ExchangeError::Malformed) => DnsError::Malformed(shown.clone()),
                Err(ExchangeError::Io(e)) => DnsError::Io {
                    name: shown.clone(),
                    error: format!("name server {server}: {e}"),
                },
                Err(ExchangeError::Encode) => return Err(DnsError::InvalidName(shown)),
            };
            let worse = match &worst {
                Some(w) => err.rank() > w.rank(),
                None => true,
            };
            if worse {
                worst = Some(err);
            }
        }
        Err(worst.unwrap_or(DnsError::NoServers(shown)))
    }

    /// One query to one server: UDP, then TCP when the answer is truncated.
    fn exchange(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Message, ExchangeError> {
        let id: u16 = rand::random();
        let query = build_query(id, name, rtype).ok_or(ExchangeError::Encode)?;
        let deadline = Instant::now() + self.timeout;
        match udp_exchange(server, &query, id, name, rtype, deadline) {
            Ok(msg) if !msg.truncated() => Ok(msg),
            Ok(truncated) => {
                let deadline = Instant::now() + self.timeout;
                // Whatever TCP gives is complete; if it gives nothing, keep what UDP gave.
                Ok(tcp_exchange(server, &query, id, name, rtype, deadline).unwrap_or(truncated))
            }
            Err(UdpOutcome::TruncatedUnparsable) => {
                let deadline = Instant::now() + self.timeout;
                tcp_exchange(server, &query, id, name, rtype, deadline)
                    .map_err(|_| ExchangeError::Malformed)
            }
            Err(UdpOutcome::Failed(e)) => Err(e),
        }
    }
}

enum UdpOutcome {
    /// Our answer, with TC set, cut where hickory cannot decode it: go to TCP.
    TruncatedUnparsable,
    Failed(ExchangeError),
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

/// The query bytes: one question, recursion desired, EDNS with our UDP payload size.
fn build_query(id: u16, name: &Name, rtype: RecordType) -> Option<Vec<u8>> {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    let mut query = Query::query(name.clone(), rtype);
    query.set_query_class(DNSClass::IN);
    msg.add_query(query);
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    msg.to_vec().ok()
}

/// Whether `msg` answers our query: same id, a response to a standard query, same question.
fn answers_query(msg: &Message, id: u16, name: &Name, rtype: RecordType) -> bool {
    msg.id() == id
        && msg.message_type() == MessageType::Response
        && msg.op_code() == OpCode::Query
        && msg.queries().len() == 1
        && msg.queries()[0].name().eq_ignore_root(name)
        && msg.queries()[0].query_type() == rtype
        && msg.queries()[0].query_class() == DNSClass::IN
}

fn io_to_exchange(e: io::Error) -> ExchangeError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ExchangeError::Timeout,
        _ => ExchangeError::Io(e),
    }
}

fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Message, UdpOutcome> {
    let fail = |e: io::Error| UdpOutcome::Failed(io_to_exchange(e));
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(fail)?;
    // Connected: the kernel drops datagrams from anyone but the server, and reports ICMP
    // port unreachable as ECONNREFUSED instead of leaving us to time out.
    socket.connect(server).map_err(fail)?;
    socket.send(query).map_err(fail)?;
    // A lost query or answer should not cost the whole timeout: the query is sent again after
    // a third of it, twice at most (same id, so a late answer to the first copy still counts).
    let start = Instant::now();
    let resend_every = deadline.saturating_duration_since(start) / UDP_SENDS;
    let mut sent = 1u32;
    let mut buf = vec![0u8; UDP_BUF];
    let mut saw_malformed = false;
    loop {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(UdpOutcome::Failed(if saw_malformed {
                ExchangeError::Malformed
            } else {
                ExchangeError::Timeout
            }));
        }
        let next_send = start + resend_every * sent;
        if sent < UDP_SENDS && now >= next_send {
            socket.send(query).map_err(fail)?;
            sent += 1;
            continue;
        }
        let wait = if sent < UDP_SENDS {
            left.min(next_send.saturating_duration_since(now))
        } else {
            left
        };
        socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(fail)?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(fail(e)),
        };
        let datagram = &buf[..n];
        match Message::from_vec(datagram) {
            Ok(msg) if answers_query(&msg, id, name, rtype) => return Ok(msg),
            // Someone else's answer (a late one to an earlier query, or a spoof): keep waiting.
            Ok(_) => {}
            Err(_) => {
                if is_truncated_answer_to(datagram, id) {
                    return Err(UdpOutcome::TruncatedUnparsable);
                }
                saw_malformed = true;
            }
        }
    }
}

/// From the raw header: our id, QR set, TC set.
fn is_truncated_answer_to(datagram: &[u8], id: u16) -> bool {
    datagram.len() >= 12
        && u16::from_be_bytes([datagram[0], datagram[1]]) == id
        && datagram[2] & 0x80 != 0
        && datagram[2] & 0x02 != 0
}

/// DNS over TCP (RFC 1035 4.2.2, RFC 7766): the query and the answer, each after a two-byte
/// length.
fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
    deadline: Instant,
) -> Result<Message, ExchangeError> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ExchangeError::Timeout)
        } else {
            Ok(left)
        }
    };
    let mut stream = TcpStream::connect_timeout(&server, left()?).map_err(io_to_exchange)?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(io_to_exchange)?;
    let len = u16::try_from(query.len()).map_err(|_| ExchangeError::Encode)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(io_to_exchange)?;
    let mut len = [0u8; 2];
    read_exact_by(&mut stream, &mut len, deadline)?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read_exact_by(&mut stream, &mut answer, deadline)?;
    match Message::from_vec(&answer) {
        Ok(msg) if answers_query(&msg, id, name, rtype) => Ok(msg),
        _ => Err(ExchangeError::Malformed),
    }
}

/// `read_exact` that gives up at `deadline`, however slowly the bytes trickle in.
fn read_exact_by(
    stream: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
) -> Result<(), ExchangeError> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(io_to_exchange)?;
        match stream.read(buf) {
            Ok(0) => return Err(ExchangeError::Malformed),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_to_exchange(e)),
        }
    }
    Ok(())
}

/// The answer section's records of `rtype` for `qname`, following CNAMEs: the name the chain
/// ends at, the records there, and the smallest TTL along the way.
fn extract_answer(msg: &Message, qname: &Name, rtype: RecordType) -> (Name, Vec<RData>, u32) {
    let mut current = qname.clone();
    let mut ttl = u32::MAX;
    for _ in 0..MAX_CNAME_CHAIN {
        let link = msg.answers().iter().find_map(|r| match r.data() {
            RData::CNAME(target)
                if r.dns_class() == DNSClass::IN && r.name().eq_ignore_root(&current) =>
            {
                Some((r.ttl(), target.0.clone()))
            }
            _ => None,
        });
        match link {
            Some((link_ttl, target)) => {
                ttl = ttl.min(link_ttl);
                current = target;
            }
            None => break,
        }
    }
    let mut records = Vec::new();
    for r in msg.answers() {
        if r.record_type() == rtype
            && r.dns_class() == DNSClass::IN
            && r.name().eq_ignore_root(&current)
        {
            ttl = ttl.min(r.ttl());
            records.push(r.data().clone());
        }
    }
    (current, records, ttl)
}

/// RFC 2308: the SOA's own TTL or its minimum field, whichever is smaller, capped.
fn negative_ttl(msg: &Message) -> u32 {
    msg.name_servers()
        .iter()
        .find_map(|r| match r.data() {
            RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
            _ => None,
        })
        .map_or(NEGATIVE_TTL_NO_SOA, |ttl| ttl.min(NEGATIVE_TTL_MAX))
}

/// The SRV names of the usable NAPTR records (flag `s`, our transport's service), by order
/// then preference (RFC 3263 4.1, RFC 3403).
fn select_naptr(records: &[RData], transport: Transport) -> Vec<Name> {
    let service = transport.naptr_service().as_bytes();
    let mut usable: Vec<&NAPTR> = records
        .iter()
        .filter_map(|r| match r {
            RData::NAPTR(n) => Some(n),
            _ => None,
        })
        .filter(|n| {
            n.flags().eq_ignore_ascii_case(b"s")
                && n.services().eq_ignore_ascii_case(service)
                && !n.replacement().is_root()
        })
        .collect();
    usable.sort_by_key(|n| (n.order(), n.preference()));
    let mut names: Vec<Name> = Vec::new();
    for n in usable {
        if !names.iter().any(|x| x.eq_ignore_root(n.replacement())) {
            names.push(n.replacement().clone());
        }
    }
    names
}

/// RFC 2782 ordering: by priority, and within a priority by weighted random selection (weight
/// 0 records first in the running sum, so they are picked only when the draw is 0).
pub(crate) fn order_srv<'a, R: Rng + ?Sized>(mut srvs: Vec<&'a SRV>, rng: &mut R) -> Vec<&'a SRV> {
    srvs.sort_by_key(|s| (s.priority(), s.weight() != 0));
    let mut out = Vec::with_capacity(srvs.len());
    let mut rest = srvs.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|s| s.priority() == first.priority())
            .count();
        let mut group: Vec<&SRV> = rest[..same].to_vec();
        rest = &rest[same..];
        while !group.is_empty() {
            let total: u32 = group.iter().map(|s| u32::from(s.weight())).sum();
            let draw = rng.random_range(0..=total);
            let mut running = 0u32;
            let pick = group
                .iter()
                .position(|s| {
                    running += u32::from(s.weight());
                    running >= draw
                })
                .unwrap_or(group.len() - 1);
            out.push(group.remove(pick));
        }
    }
    out
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

/// The addresses the hosts file (`/etc/hosts` format) gives `name` (case-insensitive, a
/// trailing dot ignored), in file order; comments and malformed lines are skipped.
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words
            .next()
            .and_then(|w| w.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if words.any(|w| w.trim_end_matches('.').eq_ignore_ascii_case(name)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The `nameserver` lines of a resolv.conf, port 53; a zone index (`fe80::1%eth0`) is dropped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn hosts_file_lines() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost # v6\n# 10.0.0.1 gone\n\
                    192.0.2.5  Pbx.Example.org pbx\nbad line\n";
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(hosts_lookup(text, "localhost"), vec![v4, v6]);
        assert_eq!(
            hosts_lookup(text, "pbx.example.org."),
            vec!["192.0.2.5".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(text, "gone").is_empty());
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn srv_order_priority_then_weight() {
        let recs = [
            SRV::new(20, 0, 1, name("c.")),
            SRV::new(10, 0, 2, name("zero.")),
            SRV::new(10, 100, 3, name("heavy.")),
            SRV::new(30, 5, 4, name("d.")),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let order = order_srv(recs.iter().collect(), &mut rng);
            let prios: Vec<u16> = order.iter().map(|s| s.priority()).collect();
            assert_eq!(prios, [10, 10, 20, 30]);
            if order[0].port() == 3 {
                heavy_first += 1;
            }
        }
        // Weight 0 goes first only on a draw of 0 out of 0..=100.
        assert!(heavy_first > 950, "heavy first {heavy_first}/1000");
    }

    #[test]
    fn srv_order_all_zero_weights_is_a_permutation() {
        let recs = [SRV::new(1, 0, 1, name("a.")), SRV::new(1, 0, 2, name("b."))];
        let mut rng = StdRng::seed_from_u64(1);
        let order = order_srv(recs.iter().collect(), &mut rng);
        let mut ports: Vec<u16> = order.iter().map(|s| s.port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [1, 2]);
    }

    #[test]
    fn naptr_selection_filters_and_orders() {
        let mk = |order, pref, flags: &[u8], service: &[u8], repl: &str| {
            RData::NAPTR(NAPTR::new(
                order,
                pref,
                flags.into(),
                service.into(),
                Box::default(),
                name(repl),
            ))
        };
        let recs = vec![
            mk(20, 10, b"s", b"SIP+D2U", "_sip._udp.late."),
            mk(10, 20, b"S", b"sip+d2u", "_sip._udp.second."),
            mk(10, 10, b"s", b"SIP+D2U", "_sip._udp.first."),
            mk(5, 10, b"s", b"SIP+D2T", "_sip._tcp.tcp."),
            mk(5, 10, b"a", b"SIP+D2U", "aflag."),
            mk(1, 1, b"s", b"SIP+D2U", "."),
        ];
        let got: Vec<String> = select_naptr(&recs, Transport::Udp)
            .iter()
            .map(display_name)
            .collect();
        assert_eq!(
            got,
            ["_sip._udp.first", "_sip._udp.second", "_sip._udp.late"]
        );
        let tls: Vec<String> = select_naptr(&recs, Transport::Tls)
            .iter()
            .map(display_name)
            .collect();
        assert!(tls.is_empty());
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let now = Instant::now();
        let mut cache = Cache::new(16);
        let entry = |s| Entry {
            value: Lookup::NoData,
            expires: now + Duration::from_secs(s),
        };
        for i in 0..100u64 {
            cache.insert((format!("n{i}"), RecordType::A), entry(i + 1), now);
            assert!(cache.map.len() <= 16);
        }
        // The latest (longest-lived) survive.
        assert!(cache.get(&("n99".into(), RecordType::A), now).is_some());
        assert!(cache.get(&("n0".into(), RecordType::A), now).is_none());
        let later = now + Duration::from_secs(1000);
        assert!(cache.get(&("n99".into(), RecordType::A), later).is_none());
        // TTL 0: not kept.
        cache.insert(("zero".into(), RecordType::A), entry(0), now);
        assert!(cache.get(&("zero".into(), RecordType::A), now).is_none());
    }

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
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\n;nameserver 192.0.2.9\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(text),
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn garbage_is_not_an_answer() {
        assert!(Message::from_vec(&[0xff; 7]).is_err());
        assert!(!is_truncated_answer_to(&[0x12, 0x34, 0x83, 0, 0], 0x1234));
        assert!(is_truncated_answer_to(
            &[0x12, 0x34, 0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
        assert!(!is_truncated_answer_to(
            &[0x12, 0x35, 0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
    }

    #[test]
    fn resolver_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Resolver>();
        check::<DnsError>();
        check::<Target>();
    }
}
