//! Where a response goes (RFC 3261 §18.2.2 with RFC 3581 `rport`) and what we write into the
//! Via of a request we received (§18.2.1 `received`, RFC 3581 `rport`).
//!
//! Over a stream transport a response goes back on the connection the request came in on;
//! over UDP to the source address and the Via's port (the source port with `rport`).

use std::net::{IpAddr, SocketAddr};

use ser_parser::{Host, Message, Via};

use super::{Arrival, Dest, Local, Target, Transport};

/// RFC 3261 §18.2.1 and RFC 3581 for a request from `src` whose top Via is `via`: `received`
/// when the sent-by differs from the source address (or `rport` asks for it), `rport` filled
/// in when present.
pub fn received_for(via: &Via<'_>, src: SocketAddr) -> (Option<IpAddr>, Option<u16>) {
    let ip = src.ip();
    let rport = via.rport.map(|_| src.port());
    let same = match via.host {
        Host::V4(v) => IpAddr::V4(v) == ip,
        Host::V6(v) => IpAddr::V6(v) == ip,
        _ => false,
    };
    let received = (!same || rport.is_some()).then_some(ip);
    (received, rport)
}

/// Where a response to `msg` (which arrived as `at`) goes: back on the connection over a
/// reliable transport; over UDP the source address and the Via's port, or the source port
/// when `rport` was asked for; with `reply_to_via` the Via's own address.
pub fn response_dest(local: &Local, msg: &Message<'_>, at: &Arrival) -> Dest {
    if at.transport.is_reliable() {
        return at.back_to(at.src);
    }
    let Ok(via) = msg.top_via() else {
        return at.back_to(at.src);
    };
    if via.rport.is_some() {
        return at.back_to(at.src);
    }
    let port = via.port.unwrap_or(Transport::Udp.default_port());
    if local.reply_to_via {
        let ip = match via.host {
            Host::V4(ip) => Some(IpAddr::V4(ip)),
            Host::V6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = ip {
            return at.back_to(SocketAddr::new(ip, port));
        }
    }
    at.back_to(SocketAddr::new(at.src.ip(), port))
}

/// Where a proxy sends a response on (RFC 3261 §18.2.2 for the Via below ours, RFC 3581):
/// the transport the Via names (UDP when it names one we do not know), to `received` (else the
/// sent-by host) and `rport=n` (else the sent-by port, else the transport's default).
pub fn upstream(via: &Via<'_>) -> Result<(Transport, Target), &'static str> {
    let transport = Transport::from_name(via.transport).unwrap_or(Transport::Udp);
    let port = match via.rport {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(transport.default_port()),
    };
    let addr = |ip| Target::Addr(SocketAddr::new(ip, port));
    let target = match via.received.and_then(|r| r.parse::<IpAddr>().ok()) {
        Some(ip) => addr(ip),
        None => match via.host {
            Host::V4(ip) => addr(IpAddr::V4(ip)),
            Host::V6(ip) => addr(IpAddr::V6(ip)),
            Host::Name(n) => Target::Name {
                host: n.to_string(),
                port: Some(port),
            },
            Host::None => return Err("bad Via host"),
        },
    };
    Ok((transport, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(via: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\n\
             Call-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn udp_responses_follow_rfc_3261_and_3581() {
        let local = Local::default();
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let at = Arrival::udp(src, "127.0.0.1:5060".parse().unwrap(), 0, 0);
        let b = req("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1");
        let m = ser_parser::parse(&b).unwrap();
        assert_eq!(
            response_dest(&local, &m, &at).addr,
            "192.0.2.1:5070".parse().unwrap()
        );
        let v = m.top_via().unwrap();
        assert_eq!(received_for(&v, src), (Some(src.ip()), None));
        let b = req("SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK1");
        let m = ser_parser::parse(&b).unwrap();
        assert_eq!(response_dest(&local, &m, &at).addr, src);
        let v = m.top_via().unwrap();
        assert_eq!(received_for(&v, src), (Some(src.ip()), Some(4000)));
        let b = req("SIP/2.0/UDP 192.0.2.1:4000;branch=z9hG4bK1");
        let m = ser_parser::parse(&b).unwrap();
        let v = m.top_via().unwrap();
        assert_eq!(received_for(&v, src), (None, None));
    }

    #[test]
    fn upstream_follows_received_and_rport() {
        let b = req("SIP/2.0/UDP 10.0.0.1:5070;received=192.0.2.7;rport=4001;branch=z9hG4bK1");
        let m = ser_parser::parse(&b).unwrap();
        let v = m.top_via().unwrap();
        let want = Target::Addr("192.0.2.7:4001".parse().unwrap());
        assert_eq!(upstream(&v).unwrap(), (Transport::Udp, want));
        let b = req("SIP/2.0/TLS proxy.example.org;branch=z9hG4bK1");
        let m = ser_parser::parse(&b).unwrap();
        let v = m.top_via().unwrap();
        let want = Target::Name {
            host: "proxy.example.org".into(),
            port: Some(5061),
        };
        assert_eq!(upstream(&v).unwrap(), (Transport::Tls, want));
    }

    #[test]
    fn stream_responses_go_back_on_their_connection() {
        let local = Local::default();
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut at = Arrival::udp(src, "127.0.0.1:5060".parse().unwrap(), 2, 0);
        at.transport = Transport::Tcp;
        at.conn = Some(super::super::ConnId::new(0, 9));
        let b = req("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK1");
        let m = ser_parser::parse(&b).unwrap();
        let d = response_dest(&local, &m, &at);
        assert_eq!((d.addr, d.conn, d.socket), (src, at.conn, 2));
    }
}
