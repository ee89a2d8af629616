//! Stateless replies to a request (RFC 3261 8.2.6): sl_send_reply, the 400 for a request that
//! failed [`crate::parse`], 483, 513, ...
//!
//! The reply copies the request's Via lines (received= and rport= added to the topmost when
//! asked, RFC 3261 18.2.1 / RFC 3581), From, To (a tag added when the request's To has none
//! and the reply is not 100), Call-ID and CSeq, then the caller's extra lines and
//! `Content-Length: 0`. Lines are copied as written (compact names and folds included), so it
//! works on a [`crate::parse_lenient`] message whose values were never validated: a value that
//! does not parse is copied untouched rather than failing the reply.

use std::io::Write as _;
use std::net::IpAddr;

use crate::edit::fmt_usize;
use crate::header_name::HeaderName;
use crate::message::Message;
use crate::scan::sub;

/// What to answer.
#[derive(Debug, Clone, Copy)]
pub struct ReplySpec<'a> {
    pub code: u16,
    pub reason: &'a [u8],
    /// Added to To when the request's To has no tag (and the code is not 100).
    pub to_tag: Option<&'a [u8]>,
    /// Source address of the request: added as received= to the top Via.
    pub received: Option<IpAddr>,
    /// Source port: filled into the top Via's "rport" parameter if it has one.
    pub rport: Option<u16>,
    /// Whole "Name: value\r\n" lines to add.
    pub extra_headers: &'a [u8],
}

/// Writes the reply to `req` described by `spec`, appending to `out`.
pub fn write_reply(req: &Message<'_>, spec: &ReplySpec<'_>, out: &mut Vec<u8>) {
    let buf = req.buf();
    let mut num = [0u8; 20];
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(fmt_usize(usize::from(spec.code), &mut num));
    out.push(b' ');
    out.extend_from_slice(spec.reason);
    out.extend_from_slice(b"\r\n");

    let mut first_via = true;
    for h in req.headers() {
        match h.name {
            HeaderName::Via if first_via => {
                first_via = false;
                let Ok(via) = req.top_via() else {
                    out.extend_from_slice(sub(buf, h.line.clone()));
                    continue;
                };
                let mut pos = h.line.start;
                if let (Some(r), Some(port)) = (via.rport_range.clone(), spec.rport) {
                    out.extend_from_slice(sub(buf, pos..r.start));
                    out.extend_from_slice(b"rport=");
                    out.extend_from_slice(fmt_usize(usize::from(port), &mut num));
                    pos = r.end;
                }
                if let Some(ip) = spec.received {
                    // An existing received= is replaced, not repeated.
                    let (cut, resume) = match via.received_range.clone() {
                        Some(r) if r.start >= pos => (r.start.saturating_sub(1), r.end),
                        _ => (via.range.end, via.range.end),
                    };
                    out.extend_from_slice(sub(buf, pos..cut));
                    out.extend_from_slice(b";received=");
                    write_ip(out, ip);
                    pos = resume;
                }
                out.extend_from_slice(sub(buf, pos..h.line.end));
            }
            HeaderName::To if spec.code != 100 => match (req.to(), spec.to_tag) {
                (Ok(to), Some(tag)) if to.tag.is_none() => {
                    out.extend_from_slice(sub(buf, h.line.start..to.range.end));
                    out.extend_from_slice(b";tag=");
                    out.extend_from_slice(tag);
                    out.extend_from_slice(sub(buf, to.range.end..h.line.end));
                }
                _ => out.extend_from_slice(sub(buf, h.line.clone())),
            },
            HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq => {
                out.extend_from_slice(sub(buf, h.line.clone()));
            }
            _ => {}
        }
    }
    out.extend_from_slice(spec.extra_headers);
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// An address as `Display` writes it, an IPv4 one without the formatting machinery (every
/// reply to an IPv4 client carries one).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut num = [0u8; 20];
            for (k, o) in v4.octets().into_iter().enumerate() {
                if k > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(fmt_usize(usize::from(o), &mut num));
            }
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.255",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }
}
