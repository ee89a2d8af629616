//! Global options of `ser.cfg` and the command line, merged into one typed `Config`.
//!
//! SER's rule: options in the script win over the command line. Unknown options are refused
//! with `file:line:col`. Options that belong to later parts of the server (`fifo`, `fork`, ...)
//! are accepted and kept here so the scripts of the seeds load unchanged.
//! This module does not bind sockets or resolve names at run time; `listen=` names are resolved
//! here, once, at start.

use crate::sip::Transport;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use ser_script::{Item, ScriptError, Span, Value};

/// The embedded default configuration: what `ser` runs when no `-f` is given and `./ser.cfg`
/// does not exist. A stateless proxy: sanity checks, OPTIONS to us answered, everything else
/// forwarded to its Request-URI.
pub const DEFAULT_CFG: &str = include_str!("default.cfg");

/// Where a listen address came from, for the myself check.
#[derive(Debug, Clone)]
pub struct Listen {
    /// `listen=tcp:...`: one transport; None (no prefix): UDP, with TCP beside it unless
    /// `disable_tcp`.
    pub transport: Option<Transport>,
    pub addr: IpAddr,
    /// Port given with this address (`-l ip -p port` or `listen=ip:port`), else `Config::port`.
    pub port: Option<u16>,
    /// The name it was given by, when it was a host name.
    pub name: Option<String>,
}

/// The largest SIP message on any transport: `max_message_size`'s default and its most (a
/// datagram's limit).
pub const MAX_MESSAGE_SIZE: usize = 65_535;

#[derive(Debug, Clone)]
pub struct Config {
    pub debug: i32,
    pub fork: bool,
    pub log_stderror: bool,
    pub listen: Vec<Listen>,
    pub aliases: Vec<(String, Option<u16>)>,
    pub port: u16,
    pub children: usize,
    pub check_via: bool,
    pub dns: bool,
    pub rev_dns: bool,
    pub sip_warning: bool,
    pub server_signature: bool,
    /// `server_header = "Server: ser"`: the Server header of our replies instead of the one
    /// with the version and the platform (Kamailio's option; the `Server:` is optional).
    pub server_header: Option<String>,
    pub reply_to_via: bool,
    pub fifo: Option<String>,
    pub fifo_mode: u32,
    pub mhomed: bool,
    pub maxbuffer: Option<usize>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub syn_branch: bool,
    pub mem_log: i32,
    /// `len_gt(max_len)`: SER's BUF_SIZE, 3040 bytes unless set.
    pub max_len: usize,
    /// `max_message_size = 65535`: the largest SIP message taken on any transport; a request
    /// over it gets 513 (a stream closes after it).
    pub max_message_size: usize,
    /// `io_backend = "auto" | "io_uring" | "portable"`.
    pub io_backend: String,
    /// `dns_server = "127.0.0.1:5353"` (repeatable): the name servers of RFC 3263 next-hop
    /// resolution; none = /etc/resolv.conf's.
    pub dns_servers: Vec<SocketAddr>,
    /// `dns_timeout = ms`: how long one DNS query waits for its answer.
    pub dns_timeout_ms: u64,
    pub pid_file: Option<String>,
    pub working_dir: Option<String>,
    pub chroot: Option<String>,
    /// `data_dir = "/var/lib/ser"`: where the embedded SQLite database lives when a module
    /// needs a database and no `db_url` names one (`sqlite://<data_dir>/ser.db`). Relative
    /// names are taken from the directory ser starts in.
    pub data_dir: String,
    /// `shutdown_timeout = s`: how long SIGTERM waits for transactions still waiting for a
    /// final reply; None = tm's longest final-response timer plus 5 s (see `main`).
    pub shutdown_timeout: Option<u64>,
    /// `metrics_listen = "127.0.0.1:9090"`: the HTTP management listener (Prometheus
    /// `/metrics` and the JSON `/api/<command>`); none unless set.
    pub metrics_listen: Option<SocketAddr>,
    /// `capture_file = "/path/sip.pcap"`: record every SIP datagram there (see `capture`).
    pub capture_file: Option<String>,
    /// `capture_max_size = 100M`: bytes of one capture file before rotation.
    pub capture_max_size: u64,
    /// `capture_files = 10`: capture files kept, the current one included.
    pub capture_files: usize,
    /// Stream transports: TCP and TLS options (SER's later spelling).
    pub streams: StreamOptions,
}

/// `disable_tcp`, `enable_tls`, `tcp_*` and `tls_*` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// `disable_tcp = yes`: no TCP beside UDP on listen lines without a transport (and on the
    /// default interfaces). Default no.
    pub disable_tcp: bool,
    /// `enable_tls = yes`: TLS on port+1 (5061) beside them. Default no; a `tls_certificate`
    /// turns it on too.
    pub enable_tls: bool,
    /// `tcp_connection_lifetime = s`: an idle connection is closed after this long (traffic
    /// either way refreshes it). Default 120.
    pub connection_lifetime_s: u64,
    /// `tcp_max_connections = n`: connections open at once; past it new ones are refused and
    /// counted. Default 2048.
    pub max_connections: usize,
    /// `tcp_connect_timeout = s`: an outgoing connection (with its TLS handshake) not up by
    /// then fails, and so does the branch it was for. Default 10.
    pub connect_timeout_s: u64,
    /// `tcp_read_timeout = s`: a message begun on a stream must be complete within this
    /// long (slow senders are cut off). Default 10.
    pub read_timeout_s: u64,
    /// `tcp_accept_aliases = yes`: a request over TCP or TLS whose top Via has `;alias`
    /// (RFC 5923) makes its connection the one to the Via's port at the peer's address, so
    /// requests to that port reuse it. Default no (as Kamailio: another client behind the
    /// same NAT address could claim that port).
    pub accept_aliases: bool,
    /// `tls_certificate = "path"` (PEM chain); none: a self-signed one under data_dir.
    pub tls_certificate: Option<String>,
    /// `tls_private_key = "path"` (PEM).
    pub tls_private_key: Option<String>,
    /// `tls_ca_list = "path"` (PEM): whom we trust, as servers and as clients.
    pub tls_ca_list: Option<String>,
    /// `tls_verify = yes`: verify the certificates of servers we connect to. Default yes.
    pub tls_verify: bool,
    /// `tls_require_certificate = yes`: demand client certificates (checked against
    /// tls_ca_list). Default no.
    pub tls_require_certificate: bool,
    /// `tls_method = "TLSv1.2+"`: `TLSv1.2+` (1.2 and 1.3, the default), `TLSv1.2`, `TLSv1.3`.
    pub tls_method: String,
    /// `tls_handshake_timeout = s`: a TLS handshake not done by then closes the connection.
    /// Default 30.
    pub tls_handshake_timeout_s: u64,
    /// `ws_allowed_origins = "https://a.example, https://b.example"`: the browser origins a
    /// WebSocket Upgrade may come from (others get 403). Default empty: any.
    pub ws_allowed_origins: Vec<String>,
    /// `ws_keepalive_interval = s`: a WebSocket connection the peer has been silent on this
    /// long gets a ping. 0: none. Default 30.
    pub ws_keepalive_interval_s: u64,
    /// `ws_idle_timeout = s`: a WebSocket connection the peer has sent nothing on (not even
    /// a pong) this long is closed. Default 90.
    pub ws_idle_timeout_s: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            disable_tcp: false,
            enable_tls: false,
            connection_lifetime_s: 120,
            max_connections: 2048,
            connect_timeout_s: 10,
            read_timeout_s: 10,
            accept_aliases: false,
            tls_certificate: None,
            tls_private_key: None,
            tls_ca_list: None,
            tls_verify: true,
            tls_require_certificate: false,
            tls_method: String::from("TLSv1.2+"),
            tls_handshake_timeout_s: 30,
            ws_allowed_origins: Vec::new(),
            ws_keepalive_interval_s: 30,
            ws_idle_timeout_s: 90,
        }
    }
}

impl StreamOptions {
    /// TLS is served on listen lines without a transport: asked for, or a certificate given
    /// (and this ser built with TLS: without it, `enable_tls` is a warning at start, and only
    /// an explicit `listen=tls:` line stops it).
    pub fn tls(&self) -> bool {
        self.tls_wanted() && cfg!(feature = "tls")
    }

    /// TLS asked for on listen lines without a transport.
    pub fn tls_wanted(&self) -> bool {
        self.enable_tls || self.tls_certificate.is_some()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            debug: 0,
            fork: true,
            log_stderror: false,
            listen: Vec::new(),
            aliases: Vec::new(),
            port: 5060,
            children: 0,
            check_via: false,
            dns: false,
            rev_dns: false,
            sip_warning: true,
            server_signature: true,
            server_header: None,
            reply_to_via: false,
            fifo: None,
            fifo_mode: 0o600,
            mhomed: false,
            maxbuffer: None,
            user: None,
            group: None,
            syn_branch: true,
            mem_log: 0,
            max_len: 3040,
            max_message_size: MAX_MESSAGE_SIZE,
            io_backend: String::from("auto"),
            dns_servers: Vec::new(),
            dns_timeout_ms: 2000,
            pid_file: None,
            working_dir: None,
            chroot: None,
            data_dir: String::from("ser-data"),
            shutdown_timeout: None,
            metrics_listen: None,
            capture_file: None,
            capture_max_size: 100 << 20,
            capture_files: 10,
            streams: StreamOptions::default(),
        }
    }
}

/// `dir` made absolute against the current directory.
pub fn absolute_dir(dir: &str) -> String {
    let p = std::path::Path::new(dir);
    if p.is_absolute() {
        return dir.to_string();
    }
    std::env::current_dir()
        .map(|c| c.join(p).display().to_string())
        .unwrap_or_else(|_| dir.to_string())
}

fn err(file: &str, span: &Span, msg: impl Into<String>) -> ScriptError {
    ScriptError {
        file: file.to_string(),
        line: span.line,
        col: span.col,
        msg: msg.into(),
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Ident(s) | Value::Str(s) => match s.to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" | "1" => Some(true),
            "no" | "off" | "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) | Value::Ident(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::Ident(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Ip(ip) => ip.to_string(),
        Value::Net(ip, len) => format!("{ip}/{len}"),
        Value::NetMask(ip, m) => format!("{ip}/{m}"),
        Value::Myself => "myself".to_string(),
    }
}

/// Splits `[proto:]host[:port]` (IPv6 in brackets, or bare when there is no port).
pub fn split_hostport(s: &str) -> Result<(String, Option<u16>), String> {
    let (_, s) = split_transport(s)?;
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{s}': unbalanced '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| format!("'{s}': bad port"))?),
            None if after.is_empty() => None,
            None => return Err(format!("'{s}': junk after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok((s.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            Some(p.parse().map_err(|_| format!("'{s}': bad port"))?),
        )),
        None => Ok((s.to_string(), None)),
    }
}

/// Resolves a host name (or parses an address) at start; blocking is fine here.
pub fn resolve_at_start(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!("cannot resolve '{host}': no address"));
    }
    Ok(addrs)
}

impl Config {
    /// Applies the script's global options over `self` (which holds the command line's values).
    pub fn apply_script(&mut self, file: &str, items: &[Item]) -> Result<(), ScriptError> {
        let mut listen_from_script = Vec::new();
        for item in items {
            let Item::Global { name, value, span } = item else {
                continue;
            };
            let bad = |what: &str| err(file, span, format!("option '{name}': expected {what}"));
            match name.as_str() {
                "debug" => self.debug = as_int(value).ok_or_else(|| bad("a number"))? as i32,
                "fork" => self.fork = as_bool(value).ok_or_else(|| bad("yes or no"))?,
                "log_stderror" => {
                    self.log_stderror = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "listen" => {
                    let text = as_text(value);
                    let (transport, rest) =
                        split_transport(&text).map_err(|m| err(file, span, m))?;
                    let (host, port) = split_hostport(rest).map_err(|m| err(file, span, m))?;
                    let ips = resolve_at_start(&host).map_err(|m| err(file, span, m))?;
                    let name = host.parse::<IpAddr>().is_err().then(|| host.clone());
                    for ip in ips {
                        listen_from_script.push(Listen {
                            transport,
                            addr: ip,
                            port,
                            name: name.clone(),
                        });
                    }
                }
                "alias" => {
                    let text = as_text(value);
                    let (_, rest) = split_transport(&text).map_err(|m| err(file, span, m))?;
                    let (host, port) = split_hostport(rest).map_err(|m| err(file, span, m))?;
                    self.aliases.push((host.to_ascii_lowercase(), port));
                }
                "port" => {
                    let p = as_int(value).ok_or_else(|| bad("a port number"))?;
                    self.port = u16::try_from(p)
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad("a port number 1..65535"))?;
                }
                "children" => {
                    let n = as_int(value).ok_or_else(|| bad("a number"))?;
                    if !(0..=1024).contains(&n) {
                        return Err(bad("a number 0..1024 (0: one per core)"));
                    }
                    self.children = n as usize;
                }
                "check_via" => self.check_via = as_bool(value).ok_or_else(|| bad("yes or no"))?,
                "dns" => self.dns = as_bool(value).ok_or_else(|| bad("yes or no"))?,
                "rev_dns" => self.rev_dns = as_bool(value).ok_or_else(|| bad("yes or no"))?,
                "sip_warning" => {
                    self.sip_warning = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "server_signature" => {
                    self.server_signature = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "server_header" => {
                    let text = as_text(value);
                    let v = match text.split_once(':') {
                        Some((name, v)) if name.trim().eq_ignore_ascii_case("server") => v,
                        _ => text.as_str(),
                    }
                    .trim()
                    .to_string();
                    if v.is_empty() || v.bytes().any(|b| b.is_ascii_control()) {
                        return Err(bad("a Server header value on one line"));
                    }
                    self.server_header = Some(v);
                }
                "reply_to_via" => {
                    self.reply_to_via = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "fifo" => self.fifo = Some(as_text(value)),
                "fifo_mode" => {
                    self.fifo_mode = as_int(value).ok_or_else(|| bad("a number"))? as u32
                }
                "mhomed" => self.mhomed = as_bool(value).ok_or_else(|| bad("yes or no"))?,
                "maxbuffer" => {
                    let n = as_int(value).ok_or_else(|| bad("a number of bytes"))?;
                    self.maxbuffer = Some(n.max(0) as usize);
                }
                "user" | "uid" => self.user = Some(as_text(value)),
                "group" | "gid" => self.group = Some(as_text(value)),
                "syn_branch" => self.syn_branch = as_bool(value).ok_or_else(|| bad("yes or no"))?,
                "mem_log" => self.mem_log = as_int(value).ok_or_else(|| bad("a number"))? as i32,
                "max_len" => {
                    let n = as_int(value).ok_or_else(|| bad("a number of bytes"))?;
                    self.max_len = n.max(0) as usize;
                }
                "max_message_size" => {
                    self.max_message_size = as_int(value)
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| (512..=MAX_MESSAGE_SIZE).contains(n))
                        .ok_or_else(|| bad("a number of bytes from 512 to 65535"))?;
                }
                "io_backend" => {
                    let b = as_text(value);
                    if !matches!(b.as_str(), "auto" | "io_uring" | "portable") {
                        return Err(bad("\"auto\", \"io_uring\" or \"portable\""));
                    }
                    self.io_backend = b;
                }
                "dns_server" => {
                    let t = as_text(value);
                    let addr = t
                        .parse::<SocketAddr>()
                        .or_else(|_| t.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| bad("an address, \"ip\" or \"ip:port\""))?;
                    self.dns_servers.push(addr);
                }
                "disable_tcp" => {
                    self.streams.disable_tcp = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "enable_tls" => {
                    self.streams.enable_tls = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "tcp_accept_aliases" => {
                    self.streams.accept_aliases = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "tls_verify" => {
                    self.streams.tls_verify = as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "tls_require_certificate" => {
                    self.streams.tls_require_certificate =
                        as_bool(value).ok_or_else(|| bad("yes or no"))?
                }
                "tcp_connection_lifetime" => {
                    let n = as_int(value).ok_or_else(|| bad("seconds"))?;
                    self.streams.connection_lifetime_s = n.clamp(1, 86_400 * 7) as u64;
                }
                "tcp_max_connections" => {
                    let n = as_int(value).ok_or_else(|| bad("a number"))?;
                    self.streams.max_connections = n.clamp(0, 1 << 24) as usize;
                }
                "tcp_connect_timeout" => {
                    let n = as_int(value).ok_or_else(|| bad("seconds"))?;
                    self.streams.connect_timeout_s = n.clamp(1, 600) as u64;
                }
                "tcp_read_timeout" => {
                    let n = as_int(value).ok_or_else(|| bad("seconds"))?;
                    self.streams.read_timeout_s = n.clamp(1, 600) as u64;
                }
                "ws_keepalive_interval" => {
                    let n = as_int(value).ok_or_else(|| bad("seconds"))?;
                    self.streams.ws_keepalive_interval_s = n.clamp(0, 86_400) as u64;
                }
                "ws_idle_timeout" => {
                    let n = as_int(value).ok_or_else(|| bad("seconds"))?;
                    self.streams.ws_idle_timeout_s = n.clamp(1, 86_400 * 7) as u64;
                }
                "ws_allowed_origins" => {
                    let Value::Str(v) = value else {
                        return Err(bad("a string in quotes: origins separated by commas"));
                    };
                    self.streams.ws_allowed_origins = v
                        .split([',', ' '])
                        .map(|o| o.trim().trim_end_matches('/').to_string())
                        .filter(|o| !o.is_empty())
                        .collect();
                }
                "tls_handshake_timeout" => {
                    let n = as_int(value).ok_or_else(|| bad("seconds"))?;
                    self.streams.tls_handshake_timeout_s = n.clamp(1, 600) as u64;
                }
                "tls_certificate" | "tls_private_key" | "tls_ca_list" | "tls_method" => {
                    let Value::Str(v) = value else {
                        return Err(bad("a string in quotes"));
                    };
                    let v = Some(v.clone()).filter(|v| !v.is_empty());
                    match name.as_str() {
                        "tls_certificate" => self.streams.tls_certificate = v,
                        "tls_private_key" => self.streams.tls_private_key = v,
                        "tls_ca_list" => self.streams.tls_ca_list = v,
                        _ => {
                            let m = v.unwrap_or_default();
                            if !valid_tls_method(&m) {
                                return Err(bad(
                                    "TLSv1.2+, TLSv1.2 or TLSv1.3 (only TLS 1.2 and 1.3 are offered)",
                                ));
                            }
                            self.streams.tls_method = m;
                        }
                    }
                }
                "data_dir" => match value {
                    Value::Str(s) if !s.is_empty() => self.data_dir = s.clone(),
                    _ => return Err(bad("a directory name in quotes")),
                },
                "dns_timeout" => {
                    let n = as_int(value).ok_or_else(|| bad("milliseconds"))?;
                    self.dns_timeout_ms = n.clamp(10, 60_000) as u64;
                }
                "shutdown_timeout" => {
                    let n = as_int(value).ok_or_else(|| bad("a number of seconds"))?;
                    self.shutdown_timeout = Some(n.clamp(0, 86_400) as u64);
                }
                "metrics_listen" => {
                    let t = as_text(value);
                    let addr = t
                        .parse::<SocketAddr>()
                        .ok()
                        .or_else(|| t.to_socket_addrs().ok().and_then(|mut a| a.next()))
                        .ok_or_else(|| bad("an address and port, \"127.0.0.1:9090\""))?;
                    self.metrics_listen = Some(addr);
                }
                "capture_file" => match value {
                    Value::Str(s) if !s.is_empty() => self.capture_file = Some(s.clone()),
                    _ => return Err(bad("a file name in quotes")),
                },
                "capture_max_size" => {
                    let n = match value {
                        Value::Int(i) => u64::try_from(*i).ok(),
                        Value::Str(s) | Value::Ident(s) => parse_size(s),
                        _ => None,
                    };
                    let min = MIN_CAPTURE_FILE_SIZE;
                    self.capture_max_size = n.filter(|n| *n >= min).ok_or_else(|| {
                        bad("a size of at least 1024 bytes: bytes or \"10k\", \"100M\", \"1G\"")
                    })?;
                }
                "capture_files" => {
                    let n = as_int(value).ok_or_else(|| bad("a number"))?;
                    if !(1..=1000).contains(&n) {
                        return Err(bad("a number of files 1..1000"));
                    }
                    self.capture_files = n as usize;
                }
                _ => return Err(err(file, span, format!("unknown option '{name}'"))),
            }
        }
        if !listen_from_script.is_empty() {
            // Script options win over the command line (SER's rule).
            self.listen = listen_from_script;
        }
        Ok(())
    }

    /// The sockets to bind, by transport: every listen address, or every interface address
    /// (IPv4 and IPv6) when none was given, as SER did. A listen line without a transport
    /// gives UDP, TCP on the same port (unless `disable_tcp`) and, when TLS is on, TLS on
    /// the port after it (5061; port 0 stays 0).
    pub fn bind_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        let mut ips: Vec<(Option<Transport>, IpAddr, Option<u16>)> = Vec::new();
        if self.listen.is_empty() {
            for ip in interface_ips() {
                ips.push((None, ip, None));
            }
            if ips.is_empty() {
                ips.push((None, IpAddr::from([127, 0, 0, 1]), None));
            }
        } else {
            for l in &self.listen {
                if l.addr.is_unspecified() {
                    // `listen=0.0.0.0` (or `::`): every interface address of that family, as
                    // with no listen at all. A wildcard socket would put 0.0.0.0 in our Via
                    // and Record-Route, which no peer can reach (RFC 3261 18.1.1, 16.6).
                    let each: Vec<IpAddr> = interface_ips()
                        .into_iter()
                        .filter(|ip| ip.is_ipv4() == l.addr.is_ipv4())
                        .collect();
                    if !each.is_empty() {
                        ips.extend(each.into_iter().map(|ip| (l.transport, ip, l.port)));
                        continue;
                    }
                }
                ips.push((l.transport, l.addr, l.port));
            }
        }
        let mut out: Vec<(Transport, SocketAddr)> = Vec::new();
        for (t, ip, given) in ips {
            let port = given.unwrap_or(self.port);
            match t {
                // `listen=tls:ip` without a port: TLS's own, beside the plain one.
                Some(Transport::Tls) if given.is_none() => {
                    out.push((Transport::Tls, SocketAddr::new(ip, tls_port(port))));
                }
                // WebSocket without a port: HTTP's (RFC 7118 §4).
                Some(Transport::Ws) if given.is_none() => {
                    out.push((Transport::Ws, SocketAddr::new(ip, 80)));
                }
                Some(Transport::Wss) if given.is_none() => {
                    out.push((Transport::Wss, SocketAddr::new(ip, 443)));
                }
                Some(t) => out.push((t, SocketAddr::new(ip, port))),
                None => {
                    out.push((Transport::Udp, SocketAddr::new(ip, port)));
                    if !self.streams.disable_tcp {
                        out.push((Transport::Tcp, SocketAddr::new(ip, port)));
                    }
                    if self.streams.tls() {
                        out.push((Transport::Tls, SocketAddr::new(ip, tls_port(port))));
                    }
                }
            }
        }
        let key =
            |(t, a): &(Transport, SocketAddr)| (Transport::ALL.iter().position(|x| x == t), *a);
        out.sort_by_key(key);
        out.dedup();
        out
    }
}

/// The addresses of this machine's interfaces, IPv6 link-local ones left out (they need a
/// scope id we can't put in a Via).
fn interface_ips() -> Vec<IpAddr> {
    let Ok(ifs) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    ifs.into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect()
}

/// TLS's port beside a plain one: the next (5061 for 5060); 0 stays 0 (the kernel picks).
pub fn tls_port(port: u16) -> u16 {
    match port {
        0 => 0,
        p => p.saturating_add(1),
    }
}

/// `tls_method` values: only TLS 1.2 and 1.3 are offered.
pub fn valid_tls_method(m: &str) -> bool {
    matches!(
        m.to_ascii_lowercase().replace('_', ".").as_str(),
        "tlsv1.2+" | "tlsv1.2" | "tlsv1.3" | "tlsv1.3+" | "any" | ""
    )
}

/// Splits a `proto:` prefix off a listen or alias value (`udp:`, `tcp:`, `tls:`, `ws:`,
/// `wss:`; any case).
pub fn split_transport(s: &str) -> Result<(Option<Transport>, &str), String> {
    let s = s.trim();
    if let Some((p, rest)) = s.split_once(':') {
        let t = match p.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            "ws" | "wss" if cfg!(feature = "ws") => Some(if p.eq_ignore_ascii_case("ws") {
                Transport::Ws
            } else {
                Transport::Wss
            }),
            "ws" | "wss" => {
                return Err(format!(
                    "'{s}': this ser was built without WebSocket (cargo feature `ws`)"
                ));
            }
            "sctp" => {
                return Err(format!("'{s}': {p} is not served in this version"));
            }
            // `foo:127.0.0.1:5060`: a word before an address is a transport we do not know
            // (`name:port` is a host and its port, `localhost:5060`).
            _ if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_alphabetic())
                && !rest.bytes().all(|b| b.is_ascii_digit()) =>
            {
                return Err(format!(
                    "'{s}': unknown transport '{p}' (udp, tcp, tls, ws or wss)"
                ));
            }
            _ => None,
        };
        if let Some(t) = t {
            return Ok((Some(t), rest));
        }
    }
    Ok((None, s))
}

/// The smallest `capture_max_size` accepted.
pub const MIN_CAPTURE_FILE_SIZE: u64 = 1024;

/// Parses `capture_max_size`: bytes, or a number with a `k`, `M` or `G` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (s.get(..i)?, 1u64 << 10),
        (i, 'm' | 'M') => (s.get(..i)?, 1 << 20),
        (i, 'g' | 'G') => (s.get(..i)?, 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// The `modparam` values of a loaded script, checked against the modules' parameter tables;
/// each module reads its own when the server starts (unset ones keep the module's default).
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: Vec<(String, String, Value)>,
}

impl Params {
    pub fn set(&mut self, module: &str, name: &str, value: Value) {
        self.values.retain(|(m, n, _)| !(m == module && n == name));
        self.values
            .push((module.to_string(), name.to_string(), value));
    }

    /// Adds one more value of a repeatable parameter (ratelimit's `pipe`, `queue`).
    pub fn add(&mut self, module: &str, name: &str, value: Value) {
        self.values
            .push((module.to_string(), name.to_string(), value));
    }

    /// Every string value of a repeatable parameter, in the script's order.
    pub fn strs(&self, module: &str, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(m, n, _)| m == module && n == name)
            .filter_map(|(_, _, v)| match v {
                Value::Str(s) | Value::Ident(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn get(&self, module: &str, name: &str) -> Option<&Value> {
        self.values
            .iter()
            .find(|(m, n, _)| m == module && n == name)
            .map(|(_, _, v)| v)
    }

    /// An integer parameter (`yes`/`no` count as 1/0).
    pub fn int(&self, module: &str, name: &str) -> Option<i64> {
        match self.get(module, name)? {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Every module's `db_url` value, and whether some database module setting needs the
    /// default database: `(urls, needs_default)`. A module that uses a database reads its
    /// `db_url`, falling back to the default (`Core::default_db_url`).
    pub fn db_urls(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for (_, n, val) in &self.values {
            if n == "db_url" {
                if let Value::Str(s) | Value::Ident(s) = val {
                    if !v.contains(s) {
                        v.push(s.clone());
                    }
                }
            }
        }
        v
    }

    /// A string parameter.
    pub fn str(&self, module: &str, name: &str) -> Option<&str> {
        match self.get(module, name)? {
            Value::Str(s) | Value::Ident(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_is_every_interface_address_of_its_family() {
        let wild = |ip: &str| Listen {
            transport: Some(Transport::Udp),
            addr: ip.parse().unwrap(),
            port: Some(5099),
            name: None,
        };
        let cfg = Config {
            listen: vec![wild("0.0.0.0")],
            ..Config::default()
        };
        let got = cfg.bind_addrs();
        assert!(
            got.contains(&(Transport::Udp, "127.0.0.1:5099".parse().unwrap())),
            "{got:?}"
        );
        assert!(got
            .iter()
            .all(|(t, a)| *t == Transport::Udp && a.is_ipv4() && !a.ip().is_unspecified()));
        let cfg = Config {
            listen: vec![wild("::")],
            ..Config::default()
        };
        let got = cfg.bind_addrs();
        // Where the machine has IPv6 (::1 at least), those addresses; else the wildcard.
        assert!(got.iter().all(|(_, a)| a.is_ipv6()), "{got:?}");
        assert!(
            got.iter().all(|(_, a)| !a.ip().is_unspecified())
                || got == [(Transport::Udp, "[::]:5099".parse().unwrap())],
            "{got:?}"
        );
    }

    #[test]
    fn an_unknown_transport_is_named_as_such() {
        let e = split_transport("foo:127.0.0.1:5060").unwrap_err();
        assert!(e.contains("unknown transport 'foo'"), "{e}");
        assert!(split_transport("FOO:[::1]").is_err());
        for ok in [
            "localhost:5060",
            "127.0.0.1:5060",
            "::1",
            "[::1]:5060",
            "sip.example.com",
        ] {
            assert_eq!(split_transport(ok), Ok((None, ok)), "{ok}");
        }
        assert_eq!(
            split_transport("Tcp:10.0.0.1:5060"),
            Ok((Some(Transport::Tcp), "10.0.0.1:5060"))
        );
    }

    #[test]
    fn ipv6_listen_lines_with_a_transport_or_a_port() {
        let src = "listen=udp:[::1]:5960\nlisten=[::1]:5961\nlisten=tls:[::1]\n\
                   listen=[::1]\nalias=[2001:db8::1]:5062\nroute { if (src_ip==[::1]) drop; }\n";
        let script = ser_script::parse("t.cfg", src).expect("parses");
        let mut cfg = Config::default();
        cfg.apply_script("t.cfg", &script.items).expect("applies");
        let got: Vec<_> = cfg
            .listen
            .iter()
            .map(|l| (l.transport, l.addr.to_string(), l.port))
            .collect();
        assert_eq!(
            got,
            [
                (Some(Transport::Udp), "::1".to_string(), Some(5960)),
                (None, "::1".to_string(), Some(5961)),
                (Some(Transport::Tls), "::1".to_string(), None),
                (None, "::1".to_string(), None),
            ]
        );
        assert!(cfg
            .aliases
            .contains(&("2001:db8::1".to_string(), Some(5062))));
        let e = ser_script::parse("t.cfg", "listen=udp:[::1:5960\n").unwrap_err();
        assert!(e.to_string().starts_with("t.cfg:1:"), "{e}");
    }

    #[test]
    fn hostport_forms() {
        assert_eq!(
            split_hostport("udp:127.0.0.1:5070").ok(),
            Some(("127.0.0.1".into(), Some(5070)))
        );
        assert_eq!(split_hostport("::1").ok(), Some(("::1".into(), None)));
        assert_eq!(
            split_hostport("[::1]:5060").ok(),
            Some(("::1".into(), Some(5060)))
        );
        assert_eq!(
            split_hostport("foo.bar").ok(),
            Some(("foo.bar".into(), None))
        );
        assert_eq!(
            split_transport("tcp:1.2.3.4:5060").ok(),
            Some((Some(Transport::Tcp), "1.2.3.4:5060"))
        );
        assert_eq!(
            split_transport("TLS:[::1]:5061").ok(),
            Some((Some(Transport::Tls), "[::1]:5061"))
        );
        assert_eq!(split_transport("::1").ok(), Some((None, "::1")));
        assert!(split_transport("sctp:1.2.3.4").is_err());
    }
}
