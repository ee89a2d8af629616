//! Who we are on the network: our listen sockets with their transports, the names that mean
//! us (`myself`), and our Via for each socket.
//!
//! Built once at start from the configuration (by the application) and shared read-only by
//! every shard; it does no I/O and reads no clock.

use std::net::{IpAddr, SocketAddr};

use ser_parser::Host;

use super::{hostport, Transport};

/// One listen socket: its transport and the address it is bound to. Its index in
/// [`Local::sockets`] is the shard runtime's socket id on every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Listen {
    /// A UDP socket at `addr`.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Udp,
            addr,
        }
    }
}

/// Our sockets and names.
#[derive(Debug, Clone, Default)]
pub struct Local {
    pub sockets: Vec<Listen>,
    /// Names that mean "us": aliases, listen names, the host name. Lower case; port 0 = any.
    pub names: Vec<(String, u16)>,
    /// `reply_to_via`: replies go to the Via's address rather than the source (SER option).
    pub reply_to_via: bool,
    /// "SIP/2.0/<T> host:port;branch=" for each socket: our Via, ready for its branch.
    via_prefix: Vec<String>,
}

impl Local {
    pub fn new(sockets: Vec<Listen>, names: Vec<(String, u16)>, reply_to_via: bool) -> Self {
        let via_prefix = sockets
            .iter()
            .map(|s| via_prefix(s.transport, &s.addr))
            .collect();
        Self {
            sockets,
            names,
            reply_to_via,
            via_prefix,
        }
    }

    /// The address of socket `sock`.
    pub fn addr(&self, sock: usize) -> Option<SocketAddr> {
        self.sockets.get(sock).map(|s| s.addr)
    }

    /// Our Via for a message leaving on socket `sock` with `branch`. `fallback` stands in for
    /// a socket we do not know (a request built before a reload changed the sockets).
    pub fn via(&self, sock: usize, branch: &str, fallback: SocketAddr) -> String {
        match self.via_prefix.get(sock) {
            Some(prefix) => {
                let mut v = String::with_capacity(prefix.len() + branch.len());
                v.push_str(prefix);
                v.push_str(branch);
                v
            }
            None => via_prefix(Transport::Udp, &fallback) + branch,
        }
    }

    /// Is `ip` one of our listen addresses?
    pub fn is_my_ip(&self, ip: IpAddr) -> bool {
        self.sockets.iter().any(|s| s.addr.ip() == ip)
    }

    /// `myself` for a host and port as written in a URI or Via (port None = 5060).
    pub fn is_myself(&self, host: &Host<'_>, host_str: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or(Transport::Udp.default_port());
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
            .any(|s| s.addr.ip() == ip && s.addr.port() == port)
    }

    fn is_my_name(&self, name: &str, port: u16) -> bool {
        let name = name.trim_end_matches('.');
        self.names
            .iter()
            .any(|(n, p)| n.eq_ignore_ascii_case(name) && (*p == 0 || *p == port))
    }

    /// Our socket of `transport` bound to exactly `addr` (`force_send_socket`, the socket a
    /// Record-Route of ours names).
    pub fn socket_at(&self, transport: Transport, addr: &SocketAddr) -> Option<usize> {
        self.sockets
            .iter()
            .position(|s| s.transport == transport && s.addr == *addr)
    }

    /// The socket to send to `dst` over `transport` from: the one the request came in on
    /// when transport and address family match, else the first that matches.
    pub fn socket_for(
        &self,
        transport: Transport,
        dst: &SocketAddr,
        arrived_on: usize,
    ) -> Option<usize> {
        let fits = |s: &Listen| s.transport == transport && s.addr.is_ipv4() == dst.is_ipv4();
        if self.sockets.get(arrived_on).is_some_and(fits) {
            return Some(arrived_on);
        }
        self.sockets.iter().position(fits)
    }
}

/// "SIP/2.0/<T> host:port;branch=": our Via for `transport` at `addr`, ready for its branch.
/// Over TCP and TLS it carries `;alias` (RFC 5923): the peer may send its requests to us over
/// the connection this one leaves on, as we do with its (we take requests on any). A
/// WebSocket peer is a browser: nothing to offer there.
fn via_prefix(transport: Transport, addr: &SocketAddr) -> String {
    let alias = if matches!(transport, Transport::Tcp | Transport::Tls) {
        ";alias"
    } else {
        ""
    };
    format!(
        "SIP/2.0/{} {}{alias};branch=",
        transport.via_token(),
        hostport(addr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local::new(
            vec![
                Listen {
                    transport: Transport::Udp,
                    addr: "127.0.0.1:5060".parse().unwrap(),
                },
                Listen {
                    transport: Transport::Udp,
                    addr: "[::1]:5062".parse().unwrap(),
                },
            ],
            vec![("sip.example.org".into(), 0)],
            false,
        )
    }

    #[test]
    fn our_via_names_transport_and_address() {
        let l = local();
        let fallback = "10.0.0.1:5060".parse().unwrap();
        assert_eq!(
            l.via(0, "z9hG4bKx", fallback),
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"
        );
        assert_eq!(l.via(1, "b", fallback), "SIP/2.0/UDP [::1]:5062;branch=b");
        assert_eq!(
            l.via(9, "b", fallback),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=b"
        );
    }

    #[test]
    fn socket_by_transport_and_family() {
        let l = local();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        let v4: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        assert_eq!(l.socket_for(Transport::Udp, &v6, 0), Some(1));
        assert_eq!(l.socket_for(Transport::Udp, &v4, 1), Some(0));
        assert_eq!(l.socket_for(Transport::Tcp, &v4, 0), None);
    }

    #[test]
    fn stream_sockets_by_transport() {
        let a: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let t: SocketAddr = "10.0.0.1:5061".parse().unwrap();
        let l = Local::new(
            vec![
                Listen::udp(a),
                Listen {
                    transport: Transport::Tcp,
                    addr: a,
                },
                Listen {
                    transport: Transport::Tls,
                    addr: t,
                },
            ],
            vec![],
            false,
        );
        let peer: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert_eq!(l.socket_for(Transport::Tcp, &peer, 0), Some(1));
        assert_eq!(l.socket_for(Transport::Tls, &peer, 0), Some(2));
        assert_eq!(l.socket_for(Transport::Udp, &peer, 2), Some(0));
        assert_eq!(l.socket_at(Transport::Tcp, &a), Some(1));
        assert_eq!(l.socket_at(Transport::Tls, &a), None);
        assert_eq!(l.socket_at(Transport::Tls, &t), Some(2));
        assert_eq!(
            l.via(2, "b", a),
            "SIP/2.0/TLS 10.0.0.1:5061;alias;branch=b",
            "the Via names the socket's transport (and offers the connection, RFC 5923)"
        );
        let u = ser_parser::parse_uri("sip:10.0.0.1:5061;transport=tls;lr").unwrap();
        assert!(l.is_myself(&u.host, u.host_str, u.port));
    }

    #[test]
    fn myself_by_address_and_name() {
        let l = local();
        let u = ser_parser::parse_uri("sip:a@127.0.0.1").unwrap();
        assert!(l.is_myself(&u.host, u.host_str, u.port));
        let u = ser_parser::parse_uri("sip:a@127.0.0.1:5070").unwrap();
        assert!(!l.is_myself(&u.host, u.host_str, u.port));
        let u = ser_parser::parse_uri("sip:a@SIP.example.org.:9").unwrap();
        assert!(l.is_myself(&u.host, u.host_str, u.port));
    }
}
