//! The next hop of a request (RFC 3263 §4.1, §4.2): from the URI the request goes to (the
//! Route `loose_route` chose, else the Request-URI) or the host and port a script action names,
//! to the transport, and either an address to send to or a name to resolve off the shard.
//!
//! The transport is the URI's `;transport=` parameter, TLS for `sips:` (RFC 3261 §26.2.2), UDP
//! otherwise (then [`NextHop::defaulted`] says so: a large request may still go over TCP, RFC
//! 3261 §18.1.1, where the caller has a TCP socket). A name with no port is resolved with NAPTR/SRV (the resolver, RFC 3263); with a
//! port, or given by the script, as A/AAAA only. Sending needs a socket of the chosen transport;
//! [`Local::socket_for`](super::Local::socket_for) says whether we have one.

use std::net::{IpAddr, SocketAddr};

use ser_parser::{Host, Scheme, Uri};

use super::Transport;

/// Where the next hop is: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    /// Resolved off the shard: RFC 3263 (NAPTR, SRV, A/AAAA) without a port, A/AAAA with one.
    Name {
        host: String,
        port: Option<u16>,
    },
}

/// The next hop of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub transport: Transport,
    /// `sips:`: every hop must be secure (TLS targets only).
    pub secure: bool,
    /// Nobody asked for the transport (no `;transport=`, not `sips:`, not a script action
    /// that names one): UDP by default, and the caller may pick TCP for a request too large
    /// for UDP (RFC 3261 §18.1.1). A transport that was asked for is kept or the send fails.
    pub defaulted: bool,
    pub target: Target,
}

/// Why a URI gives no next hop, with the status a request gets for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopError {
    pub code: u16,
    pub reason: &'static str,
}

impl NextHop {
    /// The next hop a URI names (RFC 3263 §4.1, §4.2); `port` instead of the URI's when given.
    pub fn of_uri(uri: &Uri<'_>, port: Option<u16>) -> Result<Self, HopError> {
        Self::of_uri_as(uri, port, None)
    }

    /// [`Self::of_uri`] over the transport a script action forces (`forward_tcp(uri:host)`,
    /// ...) when `forced` is given; its default port then applies to a URI without one. A
    /// `sips:` URI cannot be forced onto a transport that is not secure (416).
    pub fn of_uri_as(
        uri: &Uri<'_>,
        port: Option<u16>,
        forced: Option<Transport>,
    ) -> Result<Self, HopError> {
        let secure = uri.scheme == Scheme::Sips;
        let param = uri.param("transport").flatten();
        let transport = match param {
            Some(t) => match Transport::from_name(t) {
                Some(Transport::Udp) if secure => Transport::Tls,
                Some(Transport::Tcp) if secure => Transport::Tls,
                Some(t) => t,
                None => {
                    return Err(HopError {
                        code: 400,
                        reason: "Unsupported transport",
                    })
                }
            },
            None if secure => Transport::Tls,
            None => Transport::Udp,
        };
        let transport = match forced {
            Some(t) if secure && !t.is_secure() => {
                return Err(HopError {
                    code: 416,
                    reason: "Unsupported URI Scheme (sips needs TLS)",
                })
            }
            Some(t) => t,
            None => transport,
        };
        let port = port.or(uri.port);
        let target = match &uri.host {
            Host::V4(ip) => Target::Addr(SocketAddr::new(
                IpAddr::V4(*ip),
                port.unwrap_or(transport.default_port()),
            )),
            Host::V6(ip) => Target::Addr(SocketAddr::new(
                IpAddr::V6(*ip),
                port.unwrap_or(transport.default_port()),
            )),
            Host::Name(n) => Target::Name {
                host: n.to_string(),
                port,
            },
            Host::None => {
                return Err(HopError {
                    code: 416,
                    reason: "Unsupported URI Scheme",
                })
            }
        };
        Ok(Self {
            transport,
            secure,
            defaulted: param.is_none() && !secure && forced.is_none(),
            target,
        })
    }

    /// The next hop of a URI given as text; a URI that does not parse gets [`uri_error`].
    pub fn of_uri_text(uri: &str, port: Option<u16>) -> Result<Self, HopError> {
        Self::of_uri_text_as(uri, port, None)
    }

    /// [`Self::of_uri_as`] of a URI given as text.
    pub fn of_uri_text_as(
        uri: &str,
        port: Option<u16>,
        forced: Option<Transport>,
    ) -> Result<Self, HopError> {
        match ser_parser::parse_uri(uri) {
            Ok(u) => Self::of_uri_as(&u, port, forced),
            Err(_) => Err(uri_error(uri)),
        }
    }

    /// A host the script named (`forward(host, port)`, `t_relay_to(host, port)`): the
    /// transport the action names (`forward_tcp`, `t_relay_to_tls`, ...) or UDP by default,
    /// the given port or the transport's default one (5060, 5061 for TLS).
    pub fn of_host(host: HostTarget<'_>, port: Option<u16>, transport: Option<Transport>) -> Self {
        let defaulted = transport.is_none();
        let transport = transport.unwrap_or(Transport::Udp);
        let port = port.unwrap_or(transport.default_port());
        let target = match host {
            HostTarget::Addr(ip) => Target::Addr(SocketAddr::new(ip, port)),
            HostTarget::Name(n) => Target::Name {
                host: n.to_string(),
                port: Some(port),
            },
        };
        Self {
            transport,
            secure: false,
            defaulted,
            target,
        }
    }
}

/// A host the script named.
#[derive(Debug, Clone, Copy)]
pub enum HostTarget<'a> {
    Addr(IpAddr),
    Name(&'a str),
}

/// What a destination URI that does not parse deserves: 416 when its scheme is one we do not
/// route (RFC 4475 novelsc, unkscm), 400 when it claims to be SIP.
pub fn uri_error(uri: &str) -> HopError {
    let scheme = uri.split(':').next().unwrap_or("");
    let ours = ["sip", "sips", "tel"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s));
    if ours || scheme.is_empty() || scheme.len() == uri.len() {
        HopError {
            code: 400,
            reason: "Bad Request-URI",
        }
    } else {
        HopError {
            code: 416,
            reason: "Unsupported URI Scheme",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(uri: &str) -> Result<NextHop, HopError> {
        NextHop::of_uri_text(uri, None)
    }

    #[test]
    fn transport_from_the_uri() {
        let h = hop("sip:a@192.0.2.1").unwrap();
        assert_eq!(h.transport, Transport::Udp);
        assert_eq!(h.target, Target::Addr("192.0.2.1:5060".parse().unwrap()));
        let h = hop("sip:a@192.0.2.1:5070;transport=TCP").unwrap();
        assert_eq!(h.transport, Transport::Tcp);
        assert_eq!(h.target, Target::Addr("192.0.2.1:5070".parse().unwrap()));
        let h = hop("sips:a@192.0.2.1").unwrap();
        assert_eq!((h.transport, h.secure), (Transport::Tls, true));
        assert_eq!(h.target, Target::Addr("192.0.2.1:5061".parse().unwrap()));
        let h = hop("sip:x@abc.invalid;transport=ws").unwrap();
        assert_eq!(h.transport, Transport::Ws);
        assert_eq!(hop("sip:a@b;transport=sctp").unwrap_err().code, 400);
    }

    #[test]
    fn names_resolve_later_with_or_without_port() {
        let h = hop("sip:bob@example.org").unwrap();
        assert_eq!(
            h.target,
            Target::Name {
                host: "example.org".into(),
                port: None
            }
        );
        let h = NextHop::of_uri_text("sip:bob@example.org:5080", Some(6000)).unwrap();
        assert_eq!(
            h.target,
            Target::Name {
                host: "example.org".into(),
                port: Some(6000)
            }
        );
    }

    #[test]
    fn bad_uris_get_400_or_416() {
        assert_eq!(hop("sip:").unwrap_err().code, 400);
        assert_eq!(hop("mailto:a@b").unwrap_err().code, 416);
        assert_eq!(hop("tel:+1234").unwrap_err().code, 416);
    }

    #[test]
    fn script_hosts_are_udp() {
        let h = NextHop::of_host(HostTarget::Name("gw"), None, None);
        assert_eq!(
            h.target,
            Target::Name {
                host: "gw".into(),
                port: Some(5060)
            }
        );
        assert!(h.defaulted && h.transport == Transport::Udp);
    }

    #[test]
    fn script_hosts_with_a_forced_transport() {
        let ip = HostTarget::Addr("192.0.2.7".parse().unwrap());
        let h = NextHop::of_host(ip, None, Some(Transport::Tls));
        assert_eq!((h.transport, h.defaulted), (Transport::Tls, false));
        assert_eq!(h.target, Target::Addr("192.0.2.7:5061".parse().unwrap()));
        let h = NextHop::of_host(ip, Some(5080), Some(Transport::Tcp));
        assert_eq!((h.transport, h.defaulted), (Transport::Tcp, false));
        assert_eq!(h.target, Target::Addr("192.0.2.7:5080".parse().unwrap()));
        let h = NextHop::of_host(ip, None, Some(Transport::Udp));
        assert!(!h.defaulted, "forward_udp asked for UDP");
    }

    #[test]
    fn only_a_uri_without_transport_is_defaulted() {
        assert!(hop("sip:a@192.0.2.1").unwrap().defaulted);
        assert!(!hop("sip:a@192.0.2.1;transport=udp").unwrap().defaulted);
        assert!(!hop("sip:a@192.0.2.1;transport=tcp").unwrap().defaulted);
        assert!(!hop("sips:a@192.0.2.1").unwrap().defaulted);
        // A Contact registered over TCP or TLS keeps its transport.
        let h = hop("sip:alice@192.0.2.5:5090;transport=tls").unwrap();
        assert_eq!(h.transport, Transport::Tls);
        assert_eq!(h.target, Target::Addr("192.0.2.5:5090".parse().unwrap()));
        let h = hop("sip:alice@192.0.2.5;transport=TLS").unwrap();
        assert_eq!(h.target, Target::Addr("192.0.2.5:5061".parse().unwrap()));
    }

    #[test]
    fn a_forced_transport_over_a_uri() {
        let f = |uri, t| NextHop::of_uri_text_as(uri, None, Some(t));
        let h = f("sip:a@192.0.2.1", Transport::Tls).unwrap();
        assert_eq!((h.transport, h.defaulted), (Transport::Tls, false));
        assert_eq!(h.target, Target::Addr("192.0.2.1:5061".parse().unwrap()));
        let h = f("sip:a@192.0.2.1:5070;transport=udp", Transport::Tcp).unwrap();
        assert_eq!(h.transport, Transport::Tcp);
        assert_eq!(h.target, Target::Addr("192.0.2.1:5070".parse().unwrap()));
        assert_eq!(f("sips:a@192.0.2.1", Transport::Udp).unwrap_err().code, 416);
        assert_eq!(
            f("sips:a@192.0.2.1", Transport::Tls).unwrap().transport,
            Transport::Tls
        );
    }
}
