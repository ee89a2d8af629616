//! The transports SIP runs over (RFC 3261 §18, RFC 7118 for WebSocket) and what each implies:
//! its Via token, its default port, whether it is reliable (no retransmissions, RFC 3261
//! §17.1.1.2 and §17.1.2.2) and whether it is secure (`sips:`, RFC 3261 §26.2).
//!
//! Only the names and the rules live here; the sockets and connections that carry the bytes
//! belong to the shard runtime.

use std::fmt;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Every transport, in the order listen lines and metrics name them.
    pub const ALL: [Transport; 5] = [Self::Udp, Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    /// The token in a Via's sent-protocol (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// The lower-case name of `listen=` lines, `;transport=` parameters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// The transport a `;transport=` parameter or a `listen=` prefix names (any case).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// A stream or message transport that delivers or fails: no SIP retransmissions over it.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// Carried inside TLS: what a `sips:` URI requires on every hop.
    pub fn is_secure(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// The port a URI without one means (RFC 3261 §19.1.2; WebSocket: RFC 7118 uses the
    /// HTTP ports of the server's listen line, so the SIP defaults stand in).
    pub fn default_port(self) -> u16 {
        if self.is_secure() {
            5061
        } else {
            5060
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rules() {
        for t in Transport::ALL {
            assert_eq!(Transport::from_name(t.name()), Some(t));
            assert_eq!(Transport::from_name(t.via_token()), Some(t));
        }
        assert_eq!(Transport::from_name("sctp"), None);
        assert!(!Transport::Udp.is_reliable());
        assert!(Transport::Tcp.is_reliable() && Transport::Ws.is_reliable());
        assert_eq!(Transport::Tls.default_port(), 5061);
        assert_eq!(Transport::Udp.default_port(), 5060);
        assert!(Transport::Wss.is_secure() && !Transport::Ws.is_secure());
    }
}
