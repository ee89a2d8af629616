//! The SDP parts of nathelper (RFC 4566 text, line by line): whether a connection address is
//! private (`nat_uac_test` 8) or not the source (256), and `fix_nated_sdp`'s rewriting of the
//! `c=` lines (session and media), the `o=` line and `a=direction:active`.
//!
//! Only the lines named are read; everything else is copied as it is, line endings included.
//! A body with no `c=` line is not SDP to these functions: tests are false, a rewrite is
//! `None`.

use std::net::IpAddr;

/// `fix_nated_sdp` flag 1: add `a=direction:active` (the UA behind NAT is told to open the
/// media connection itself, for TCP media/comedia).
pub const ADD_DIRECTION: u32 = 1;
/// Flag 2: the `c=` lines get the source address.
pub const FIX_MEDIA_IP: u32 = 2;
/// Flag 8: the `o=` line gets it too.
pub const FIX_ORIGIN_IP: u32 = 8;
/// The flags `fix_nated_sdp` takes.
pub const FLAGS: u32 = ADD_DIRECTION | FIX_MEDIA_IP | FIX_ORIGIN_IP;

/// The lines of `body`, each with its line ending.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split_inclusive(|b| *b == b'\n')
}

/// A line without its line ending.
fn trim_eol(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// `c=IN IP4 addr[/ttl]`: the address (without a multicast TTL) as text.
fn conn_addr(line: &[u8]) -> Option<&str> {
    let v = trim_eol(line).strip_prefix(b"c=")?;
    let v = std::str::from_utf8(v).ok()?;
    let mut f = v.split_ascii_whitespace();
    let (_net, _kind, addr) = (f.next()?, f.next()?, f.next()?);
    addr.split('/').next()
}

/// The connection addresses of the SDP body (session and media).
pub fn connection_addresses(body: &[u8]) -> impl Iterator<Item = &str> {
    lines(body).filter_map(conn_addr)
}

/// Does a `c=` line name a private address (`nat_uac_test` 8)?
pub fn has_private(body: &[u8]) -> bool {
    connection_addresses(body).any(super::host_is_private)
}

/// Does a `c=` line name another address than `src` (`nat_uac_test` 256)? The hold address
/// (0.0.0.0, ::) and names do not count.
pub fn differs_from(body: &[u8], src: IpAddr) -> bool {
    connection_addresses(body).any(|a| {
        super::host_ip(a).is_some_and(|ip| !ip.is_unspecified() && !super::host_is(a, src))
    })
}

/// `IP4 a.b.c.d` / `IP6 x::y` for `ip` (IPv4-mapped written as IPv4).
fn addr_fields(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("IP4 {v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("IP4 {v4}"),
            None => format!("IP6 {v6}"),
        },
    }
}

/// `fix_nated_sdp(flags)` over `body`, with `ip` the address to write: the new body, or None
/// when `body` has no `c=` line. A `c=` line on hold (0.0.0.0 or ::) keeps its address.
pub fn rewrite(body: &[u8], flags: u32, ip: IpAddr) -> Option<Vec<u8>> {
    if !lines(body).any(|l| conn_addr(l).is_some()) {
        return None;
    }
    let new = addr_fields(ip);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut has_direction = false;
    for line in lines(body) {
        let text = trim_eol(line);
        let eol = &line[text.len()..];
        if text.eq_ignore_ascii_case(b"a=direction:active") {
            has_direction = true;
        }
        if flags & FIX_MEDIA_IP != 0 {
            if let Some(addr) = conn_addr(line) {
                let hold = super::host_ip(addr).is_some_and(|a| a.is_unspecified());
                if !hold {
                    // "c=IN " then the address type and address; a multicast TTL goes (a
                    // unicast source address has none).
                    let net = std::str::from_utf8(&text[2..])
                        .ok()
                        .and_then(|v| v.split_ascii_whitespace().next())
                        .unwrap_or("IN");
                    out.extend_from_slice(format!("c={net} {new}").as_bytes());
                    out.extend_from_slice(eol);
                    continue;
                }
            }
        }
        if flags & FIX_ORIGIN_IP != 0 {
            if let Some(o) = origin(text, &new) {
                out.extend_from_slice(o.as_bytes());
                out.extend_from_slice(eol);
                continue;
            }
        }
        out.extend_from_slice(line);
    }
    if flags & ADD_DIRECTION != 0 && !has_direction {
        // End the last line first: after a bare CR (its line end, as trim_eol reads it)
        // only the LF is missing; a CRLF there would make the CR part of the line.
        if out.ends_with(b"\r") {
            out.push(b'\n');
        } else if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"a=direction:active\r\n");
    }
    Some(out)
}

/// The `o=` line with its address fields replaced: `o=user id version IN <new>`.
fn origin(text: &[u8], new: &str) -> Option<String> {
    let v = std::str::from_utf8(text.strip_prefix(b"o=")?).ok()?;
    let f: Vec<&str> = v.split_ascii_whitespace().collect();
    if f.len() < 6 {
        return None;
    }
    Some(format!("o={} {} {} {} {new}", f[0], f[1], f[2], f[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &[u8] = b"v=0\r\n\
o=user1 53655765 2353687637 IN IP4 192.168.1.20\r\n\
s=-\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
c=IN IP4 10.0.0.5/127\r\n\
a=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn private_and_differing_connection_addresses() {
        assert!(has_private(SDP));
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(differs_from(SDP, src));
        let public = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n";
        assert!(!has_private(public));
        assert!(!differs_from(public, src));
        assert!(!has_private(b"not sdp at all"));
        assert!(!has_private(b"c=\r\nc=IN\r\nc=IN IP4\r\n\xff\xfe"));
        assert_eq!(rewrite(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n", 2, src), None);
        assert_eq!(rewrite(b"", 3, src), None);
    }

    /// Fuzzing (fuzz/ sdp, flags 11): a body whose last line ended in a bare CR got the
    /// direction line after a CRLF, so that line ended in CR CR LF, and rewriting the result
    /// again dropped a CR (the rewrite was not stable). The CR now gets its LF.
    #[test]
    fn a_last_line_ending_in_a_bare_cr_gets_its_lf() {
        let ip: IpAddr = "fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let fuzzed: &[u8] = b"\xff\xff\xff\x0bv=0\r\x0bv:\nts\nc=o=mhandley \
            2$9\x0e\x00\x00\x00\x00\x00\x00\x0093IP8 \x1av=0e\x00\x00\x00\r";
        let out = rewrite(fuzzed, FLAGS, ip).unwrap();
        assert!(out.ends_with(
            b"c=o=mhandley IP6 fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff\r\na=direction:active\r\n"
        ));
        assert_eq!(rewrite(&out, FLAGS, ip).unwrap(), out);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let out = rewrite(b"v=0\r\nc=IN IP4 10.0.0.1\r", FLAGS, ip).unwrap();
        assert_eq!(out, b"v=0\r\nc=IN IP4 192.0.2.1\r\na=direction:active\r\n");
        assert_eq!(rewrite(&out, FLAGS, ip).unwrap(), out);
    }

    #[test]
    fn media_lines_origin_and_direction() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let out = rewrite(SDP, FIX_MEDIA_IP, ip).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "v=0\r\no=user1 53655765 2353687637 IN IP4 192.168.1.20\r\ns=-\r\n\
c=IN IP4 203.0.113.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\nc=IN IP4 203.0.113.7\r\n\
a=rtpmap:0 PCMU/8000\r\n"
        );
        let out = rewrite(SDP, FLAGS, ip).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("o=user1 53655765 2353687637 IN IP4 203.0.113.7\r\n"),
            "{s}"
        );
        assert!(
            s.ends_with("a=rtpmap:0 PCMU/8000\r\na=direction:active\r\n"),
            "{s}"
        );
        // Twice: one direction line.
        let again = rewrite(s.as_bytes(), FLAGS, ip).unwrap();
        assert_eq!(again, s.as_bytes());
        // IPv6 source; a held stream keeps 0.0.0.0; LF-only bodies keep their endings.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let held = b"v=0\nc=IN IP4 0.0.0.0\nm=audio 1 RTP/AVP 0\nc=IN IP4 192.168.0.2\n";
        let out = String::from_utf8(rewrite(held, 3, v6).unwrap()).unwrap();
        assert_eq!(
            out,
            "v=0\nc=IN IP4 0.0.0.0\nm=audio 1 RTP/AVP 0\nc=IN IP6 2001:db8::1\na=direction:active\r\n"
        );
        // Flag 1 only: the addresses stay.
        let out = rewrite(b"c=IN IP4 10.0.0.1", ADD_DIRECTION, ip).unwrap();
        assert_eq!(out, b"c=IN IP4 10.0.0.1\r\na=direction:active\r\n");
    }
}
