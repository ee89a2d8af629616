//! NAT traversal, sans-IO (Kamailio's nathelper): which addresses are private, the
//! `;alias=ip~port~proto` Contact parameter, SDP rewriting ([`sdp`]) and the pacing of NAT
//! keep-alives ([`ping`]). The script's face is `modules::nathelper`; the keep-alive thread
//! is `mgmt::nathelper`.
//!
//! Nothing here reads a socket or the clock; malformed input (a Contact that is no URI, an SDP
//! without lines) makes a test false or a rewrite return `None`, never a panic.

pub mod ping;
pub mod sdp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::sip::Transport;

/// The networks nat_uac_test calls private (Kamailio's `nets_1918`): RFC 1918, RFC 6598's
/// shared address space (carrier-grade NAT), RFC 6890's IETF protocol assignments
/// (192.0.0.0/29, DS-Lite), and IPv6 unique local addresses (fc00::/7). Loopback is not
/// private: a phone on the server's own host is reached where it says it is.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => (v6.segments()[0] & 0xfe00) == 0xfc00,
        },
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    let within = |net: u32, len: u32| (n ^ net) >> (32 - len) == 0;
    within(0x0a00_0000, 8)
        || within(0xac10_0000, 12)
        || within(0xc0a8_0000, 16)
        || within(0x6440_0000, 10)
        || within(0xc000_0000, 29)
}

/// A host as written in a URI, Via or SDP (`[v6]` brackets allowed) as an address; None for
/// a name.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Is `host` (as written) a private address? A name is not.
pub fn host_is_private(host: &str) -> bool {
    host_ip(host).is_some_and(is_private)
}

/// Does `host` (as written) name `ip` (IPv4-mapped IPv6 compared as IPv4)? A name does not.
pub fn host_is(host: &str, ip: IpAddr) -> bool {
    host_ip(host).is_some_and(|h| unmap(h) == unmap(ip))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip:port` as a URI writes it (`[v6]:port`), IPv4-mapped addresses as IPv4.
pub fn uri_hostport(addr: SocketAddr) -> String {
    crate::sip::hostport(&SocketAddr::new(unmap(addr.ip()), addr.port()))
}

/// Kamailio's protocol numbers in an alias (`enum sip_protos`).
fn proto_number(t: Transport) -> u8 {
    match t {
        Transport::Udp => 1,
        Transport::Tcp => 2,
        Transport::Tls => 3,
        Transport::Ws => 5,
        Transport::Wss => 6,
    }
}

fn proto_of_number(n: &str) -> Option<Transport> {
    Some(match n {
        "1" => Transport::Udp,
        "2" => Transport::Tcp,
        "3" => Transport::Tls,
        "5" => Transport::Ws,
        "6" => Transport::Wss,
        _ => return None,
    })
}

/// The value of `;alias=` for a UA seen at `src` over `t`: `ip~port~proto` (Kamailio's
/// `add_contact_alias`; IPv6 in brackets).
pub fn encode_alias(src: SocketAddr, t: Transport) -> String {
    let ip = unmap(src.ip());
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("{host}~{}~{}", src.port(), proto_number(t))
}

/// An alias value back into the address and transport; None when malformed.
pub fn decode_alias(v: &str) -> Option<(SocketAddr, Transport)> {
    let mut it = v.rsplitn(3, '~');
    let proto = proto_of_number(it.next()?)?;
    let port: u16 = it.next()?.parse().ok().filter(|p| *p != 0)?;
    let ip = host_ip(it.next()?)?;
    Some((SocketAddr::new(ip, port), proto))
}

/// The destination URI of an alias: `sip:ip:port`, with `;transport=` unless UDP.
pub fn alias_dst_uri(addr: SocketAddr, t: Transport) -> String {
    let mut s = format!("sip:{}", uri_hostport(addr));
    if t != Transport::Udp {
        s.push_str(";transport=");
        s.push_str(t.name());
    }
    s
}

/// Splits the `alias` parameter off a URI (`sip:u@h:p;alias=...;other`): the URI without it,
/// and the alias's value. None when the URI has no alias parameter.
pub fn take_alias(uri: &str) -> Option<(String, &str)> {
    // The parameters end where the headers begin ('?'); the alias is one of them.
    let end = uri.find('?').unwrap_or(uri.len());
    let (head, tail) = uri.split_at(end);
    let mut pos = 0;
    while let Some(i) = head.get(pos..).and_then(|s| s.find(';')) {
        let start = pos + i;
        let rest = head.get(start + 1..)?;
        let len = rest.find(';').unwrap_or(rest.len());
        let param = rest.get(..len)?;
        if let Some(v) = param
            .split_once('=')
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("alias"))
            .map(|(_, v)| v.trim())
        {
            let mut out = String::with_capacity(uri.len());
            out.push_str(head.get(..start)?);
            out.push_str(head.get(start + 1 + len..)?);
            out.push_str(tail);
            return Some((out, v));
        }
        pos = start + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.20",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.1",
            "fd00::1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_private(p.parse().unwrap()), "{p}");
        }
        for p in [
            "127.0.0.1",
            "172.32.0.1",
            "172.15.255.255",
            "192.169.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "192.0.0.8",
            "8.8.8.8",
            "::1",
            "2001:db8::1",
        ] {
            assert!(!is_private(p.parse().unwrap()), "{p}");
        }
        assert!(host_is_private("[fc00::5]"));
        assert!(!host_is_private("pbx.example.com"));
        assert!(!host_is_private(""));
        assert!(host_is("127.0.0.1", "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!host_is("h.example", "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn alias_round_trip() {
        let a: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let v = encode_alias(a, Transport::Udp);
        assert_eq!(v, "203.0.113.7~40123~1");
        assert_eq!(decode_alias(&v), Some((a, Transport::Udp)));
        let b: SocketAddr = "[2001:db8::9]:5061".parse().unwrap();
        let v = encode_alias(b, Transport::Tls);
        assert_eq!(v, "[2001:db8::9]~5061~3");
        assert_eq!(decode_alias(&v), Some((b, Transport::Tls)));
        assert_eq!(
            alias_dst_uri(b, Transport::Tls),
            "sip:[2001:db8::9]:5061;transport=tls"
        );
        assert_eq!(alias_dst_uri(a, Transport::Udp), "sip:203.0.113.7:40123");
        for bad in [
            "",
            "1.2.3.4",
            "1.2.3.4~5060",
            "1.2.3.4~0~1",
            "x~5060~1",
            "1.2.3.4~5060~9",
        ] {
            assert_eq!(decode_alias(bad), None, "{bad}");
        }
    }

    #[test]
    fn alias_is_taken_off_a_uri() {
        assert_eq!(
            take_alias("sip:u@192.168.1.20:5060;alias=127.0.0.1~4000~1"),
            Some(("sip:u@192.168.1.20:5060".to_string(), "127.0.0.1~4000~1"))
        );
        assert_eq!(
            take_alias("sip:u@h;transport=tcp;ALIAS=1.2.3.4~5~2;lr?X=y"),
            Some(("sip:u@h;transport=tcp;lr?X=y".to_string(), "1.2.3.4~5~2"))
        );
        assert_eq!(take_alias("sip:u@h;aliases=x"), None);
        assert_eq!(take_alias("sip:u@h;alias"), None);
        assert_eq!(take_alias("sip:u@h"), None);
        assert_eq!(take_alias(";;;="), None);
    }
}
