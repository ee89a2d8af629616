//! SIP over stream connections (TCP, TLS), without I/O: what one shard knows about each of
//! its connections (transport, peer, framing, TLS session, timestamps), the connection
//! aliases every shard shares (RFC 5923 reuse: transport + peer address → connection), and the
//! timeouts that end a connection.
//!
//! The bytes move in `ser-shards` (accept, connect, read, write); the server's stream glue
//! (`server::streams`) feeds them through here and sends what comes out. A connection lives
//! on the shard that accepted or opened it; its [`ConnId`] says which.
//!
//! Not here: the socket calls, SIP parsing beyond framing ([`framing`]), routing decisions.

pub mod framing;
#[cfg(feature = "tls")]
pub mod session;
#[cfg(feature = "ws")]
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::sip::{ConnId, Transport};

/// The largest SIP message a stream may carry (head and body): the default and the most of
/// `max_message_size`.
pub const MAX_MESSAGE: usize = crate::config::MAX_MESSAGE_SIZE;

/// How long a message may take to arrive once its first byte came, unless `tcp_read_timeout`
/// says otherwise: slow senders (one byte a second, the "slowloris" pattern) are cut off here.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages kept per outgoing connection until it is up: if it never comes up, their
/// branches fail at once. More than this waiting on one connection are sent but not tracked.
pub const MAX_UNSENT: usize = 64;

/// Timeouts of stream connections (from `tcp_connection_lifetime`, `tcp_connect_timeout`,
/// `tls_handshake_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lifetime: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub read_timeout: Duration,
    /// `tcp_accept_aliases`: honour `;alias` in the top Via of requests (RFC 5923).
    pub accept_aliases: bool,
    /// `ws_keepalive_interval` (zero: no pings) and `ws_idle_timeout`.
    pub ws_keepalive: Duration,
    pub ws_idle: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            read_timeout: READ_TIMEOUT,
            accept_aliases: false,
            ws_keepalive: Duration::from_secs(30),
            ws_idle: Duration::from_secs(90),
        }
    }
}

impl Settings {
    pub fn from_config(o: &crate::config::StreamOptions) -> Self {
        Self {
            lifetime: Duration::from_secs(o.connection_lifetime_s),
            connect_timeout: Duration::from_secs(o.connect_timeout_s),
            handshake_timeout: Duration::from_secs(o.tls_handshake_timeout_s),
            read_timeout: Duration::from_secs(o.read_timeout_s),
            accept_aliases: o.accept_aliases,
            ws_keepalive: Duration::from_secs(o.ws_keepalive_interval_s),
            ws_idle: Duration::from_secs(o.ws_idle_timeout_s),
        }
    }
}

/// Why we end a connection ourselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing either way for `tcp_connection_lifetime`.
    Idle,
    /// An outgoing connection not up within `tcp_connect_timeout`.
    Connect,
    /// A TLS handshake not done within `tls_handshake_timeout`.
    Handshake,
    /// A message begun and not finished within `tcp_read_timeout`.
    Read,
    /// Nothing from a WebSocket peer (not even a pong) for `ws_idle_timeout`.
    WsIdle,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle past tcp_connection_lifetime",
            Self::Connect => "not connected within tcp_connect_timeout",
            Self::Handshake => "TLS handshake not done within tls_handshake_timeout",
            Self::Read => "message not complete within the read timeout",
            Self::WsIdle => "nothing from the WebSocket peer within ws_idle_timeout",
        }
    }
}

/// One connection as the SIP layer sees it.
pub struct StreamConn {
    pub transport: Transport,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The listen socket (index in `Local::sockets`) it belongs to.
    pub socket: usize,
    pub outgoing: bool,
    /// Connected (outgoing) and, on TLS, handshake done.
    pub up: bool,
    pub opened: Instant,
    /// Last traffic either way.
    pub last: Instant,
    /// Last bytes from the peer, and our last keep-alive ping (WebSocket).
    pub last_in: Instant,
    pub pinged: Option<Instant>,
    pub framer: framing::Framer,
    /// The WebSocket layer of a `ws:`/`wss:` connection (inside TLS for wss).
    #[cfg(feature = "ws")]
    pub ws: Option<Box<ws::WsConn>>,
    #[cfg(feature = "tls")]
    pub tls: Option<Box<session::Session>>,
    /// Copies of the messages written before the connection was up (see [`MAX_UNSENT`]).
    pub unsent: Vec<Vec<u8>>,
    /// The `.invalid` names the peer gave itself here ([`Aliases::by_name`]), lower case.
    pub names: Vec<String>,
}

impl StreamConn {
    /// `max`: the largest message taken on it (`max_message_size`).
    pub fn new(
        transport: Transport,
        peer: SocketAddr,
        local: SocketAddr,
        socket: usize,
        outgoing: bool,
        now: Instant,
        max: usize,
    ) -> Self {
        Self {
            transport,
            peer,
            local,
            socket,
            outgoing,
            up: !outgoing && !transport.is_secure(),
            opened: now,
            last: now,
            last_in: now,
            pinged: None,
            framer: framing::Framer::new(max),
            #[cfg(feature = "ws")]
            ws: None,
            #[cfg(feature = "tls")]
            tls: None,
            unsent: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Whether the TLS handshake is still going on.
    pub fn handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(t) = &self.tls {
            return t.handshaking();
        }
        false
    }

    /// Whether a WebSocket keep-alive ping is due: the peer silent for `ws_keepalive` since
    /// it last sent anything and since our last ping.
    pub fn ping_due(&self, now: Instant, s: &Settings) -> bool {
        #[cfg(feature = "ws")]
        if self.ws.as_ref().is_some_and(|w| w.is_open()) && !s.ws_keepalive.is_zero() {
            let since = self.pinged.map_or(self.last_in, |p| p.max(self.last_in));
            return now.saturating_duration_since(since) >= s.ws_keepalive;
        }
        let _ = (now, s);
        false
    }

    /// Why this connection should end now, if it should.
    pub fn expired(&self, now: Instant, s: &Settings) -> Option<Expiry> {
        let age = now.saturating_duration_since(self.opened);
        if self.outgoing && !self.up && age > s.connect_timeout {
            return Some(Expiry::Connect);
        }
        if self.handshaking() && age > s.handshake_timeout {
            return Some(Expiry::Handshake);
        }
        if let Some(t) = self.framer.incomplete_since() {
            if now.saturating_duration_since(t) > s.read_timeout {
                return Some(Expiry::Read);
            }
        }
        #[cfg(feature = "ws")]
        if let Some(w) = &self.ws {
            if let Some(t) = w.incomplete_since() {
                if now.saturating_duration_since(t) > s.read_timeout {
                    return Some(Expiry::Read);
                }
            }
            // Keep-alive pings, not the connection lifetime, keep a WebSocket open.
            return (now.saturating_duration_since(self.last_in) > s.ws_idle)
                .then_some(Expiry::WsIdle);
        }
        if now.saturating_duration_since(self.last) > s.lifetime {
            return Some(Expiry::Idle);
        }
        None
    }
}

/// Connection aliases every shard reads (RFC 5923; Kamailio's tcp aliases): the open
/// connection to a peer, by transport and address, so that a request to a phone goes back
/// over the connection it registered on, and replies and later requests to a peer reuse the
/// connection it opened.
///
/// And the names WebSocket peers give themselves: a browser's Contact host is a random
/// `.invalid` name (RFC 7118 §5.2) that resolves nowhere; the connection the name came on is
/// the only way to it, for calls and for in-dialog requests in both directions.
#[derive(Debug, Default)]
pub struct Aliases {
    map: RwLock<HashMap<(Transport, SocketAddr), ConnId>>,
    names: RwLock<HashMap<String, Flow>>,
}

/// A connection as a destination: what a [`crate::sip::Dest`] needs to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub conn: ConnId,
    pub transport: Transport,
    pub peer: SocketAddr,
    /// The listen socket it belongs to.
    pub socket: usize,
}

/// Names kept per connection (a browser uses one; more is someone probing).
pub const MAX_NAMES_PER_CONN: usize = 4;

/// `host` as a WebSocket peer's `.invalid` name (RFC 7118 §5.2, RFC 6761): lower case,
/// without a trailing dot; None for any other host.
pub fn invalid_name(host: &str) -> Option<String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h.ends_with(".invalid").then_some(h)
}

impl Flow {
    /// The connection as a destination.
    pub fn dest(&self) -> crate::sip::Dest {
        crate::sip::Dest {
            transport: self.transport,
            socket: self.socket,
            addr: self.peer,
            conn: Some(self.conn),
        }
    }
}

impl Aliases {
    /// The connection a name ([`invalid_name`]'s form) came on.
    pub fn by_name(&self, name: &str) -> Option<Flow> {
        let m = self.names.read().unwrap_or_else(|e| e.into_inner());
        m.get(name).copied()
    }

    /// `name` ([`invalid_name`]'s form) came on `flow` (the newest connection wins, as for
    /// the addresses).
    pub fn set_name(&self, name: &str, flow: Flow) {
        let mut m = self.names.write().unwrap_or_else(|e| e.into_inner());
        m.insert(name.to_string(), flow);
    }

    /// Forgets the names that lead to `conn`.
    pub fn remove_names(&self, names: &[String], conn: ConnId) {
        let mut m = self.names.write().unwrap_or_else(|e| e.into_inner());
        for n in names {
            if m.get(n).is_some_and(|f| f.conn == conn) {
                m.remove(n);
            }
        }
    }

    pub fn get(&self, transport: Transport, peer: SocketAddr) -> Option<ConnId> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        m.get(&(transport, peer)).copied()
    }

    /// `conn` is (now) the connection to `peer` over `transport`.
    pub fn set(&self, transport: Transport, peer: SocketAddr, conn: ConnId) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        m.insert((transport, peer), conn);
    }

    /// Forgets `conn` as the connection to `peer` (a newer one stays).
    pub fn remove(&self, transport: Transport, peer: SocketAddr, conn: ConnId) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        if m.get(&(transport, peer)) == Some(&conn) {
            m.remove(&(transport, peer));
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every shard's stream glue shares: the aliases, the timeouts, TLS.
#[derive(Default)]
pub struct Shared {
    /// The same aliases as `Core::aliases` (main hands both one `Arc`).
    pub aliases: std::sync::Arc<Aliases>,
    pub settings: Settings,
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Tls>,
    /// What a WebSocket Upgrade must bring (`ws_allowed_origins`).
    #[cfg(feature = "ws")]
    pub ws: ws::WsSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(outgoing: bool, t: Transport, now: Instant) -> StreamConn {
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        StreamConn::new(t, a, a, 0, outgoing, now, MAX_MESSAGE)
    }

    #[test]
    fn expiry_on_a_virtual_clock() {
        let s = Settings::default();
        let t0 = Instant::now();
        let sec = |n| t0 + Duration::from_secs(n);
        let mut c = conn(false, Transport::Tcp, t0);
        assert!(c.up);
        assert_eq!(c.expired(sec(119), &s), None);
        assert_eq!(c.expired(sec(121), &s), Some(Expiry::Idle));
        c.last = sec(100);
        assert_eq!(
            c.expired(sec(121), &s),
            None,
            "traffic refreshes the lifetime"
        );

        let mut out = conn(true, Transport::Tcp, t0);
        assert!(!out.up);
        assert_eq!(out.expired(sec(11), &s), Some(Expiry::Connect));
        out.up = true;
        assert_eq!(out.expired(sec(11), &s), None);

        // A message begun and never finished.
        let mut slow = conn(false, Transport::Tcp, t0);
        let (mut buf, mut frames) = (Vec::new(), Vec::new());
        slow.framer
            .feed(b"INVITE sip:a SIP/2.0\r\n", sec(1), &mut buf, &mut frames)
            .unwrap();
        slow.last = sec(10);
        assert_eq!(slow.expired(sec(10), &s), None);
        assert_eq!(slow.expired(sec(12), &s), Some(Expiry::Read));
    }

    #[test]
    fn aliases_keep_the_newest_connection() {
        let a = Aliases::default();
        let p: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let (c1, c2) = (ConnId::new(0, 1), ConnId::new(1, 2));
        a.set(Transport::Tcp, p, c1);
        a.set(Transport::Tcp, p, c2);
        a.remove(Transport::Tcp, p, c1);
        assert_eq!(a.get(Transport::Tcp, p), Some(c2));
        assert_eq!(a.get(Transport::Tls, p), None);
        a.remove(Transport::Tcp, p, c2);
        assert!(a.is_empty());
    }
}
