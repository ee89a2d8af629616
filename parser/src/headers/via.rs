//! The Via header (RFC 3261 20.42, RFC 3581 rport).
//!
//! `via-parm = sent-protocol LWS sent-by *( SEMI via-params )`, with LWS allowed around the
//! slashes of sent-protocol and around ';', ':' and '=' (RFC 4475 wsinv). The view keeps the
//! parameters a proxy needs (branch, received, rport, maddr, ttl) and the ranges the editor
//! needs to rewrite them; unknown parameters are checked for syntax and skipped.

use std::ops::Range;

use super::{next_value, param_at};
use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::scan::{at, digits, is_token, run, skip_lws, sub, sub_str};
use crate::uri::{parse_host_at, Host};

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'b> {
    /// "UDP", "TCP", "TLS", "SCTP", ... as written.
    pub transport: &'b str,
    pub host: Host<'b>,
    /// The sent-by host as written (IPv6 keeps its brackets).
    pub host_str: &'b str,
    pub port: Option<u16>,
    pub branch: Option<&'b str>,
    pub received: Option<&'b str>,
    /// `Some(None)` for a bare "rport", `Some(Some(n))` for "rport=n".
    pub rport: Option<Option<u16>>,
    pub maddr: Option<&'b str>,
    pub ttl: Option<u8>,
    /// The `alias` parameter (RFC 5923: the sender offers this connection for requests to
    /// its sent-by).
    pub alias: bool,
    /// This value in the message (sent-protocol .. end of the last parameter).
    pub range: Range<usize>,
    /// The "rport[=n]" text, to rewrite it.
    pub rport_range: Option<Range<usize>>,
    /// The whole "received=..." parameter text, to replace it.
    pub received_range: Option<Range<usize>>,
}

/// Parses the Via value at `pos` of `s` (see [`super::Values`]).
pub(crate) fn parse_via(s: &[u8], base: usize, pos: usize) -> Result<(Via<'_>, usize), ParseError> {
    let err = |k: usize| ParseError::new(ErrorKind::BadHeader(HeaderName::Via), base + k);
    let start = skip_lws(s, pos);
    // sent-protocol = protocol-name SLASH protocol-version SLASH transport
    let mut i = start;
    let mut parts = [0..0, 0..0, 0..0];
    for (n, part) in parts.iter_mut().enumerate() {
        if n > 0 {
            i = skip_lws(s, i);
            if at(s, i) != b'/' {
                return Err(err(i));
            }
            i = skip_lws(s, i + 1);
        }
        let e = run(s, i, is_token);
        if e == i {
            return Err(err(i));
        }
        *part = i..e;
        i = e;
    }
    let [name, version, transport] = parts;
    if !sub(s, name).eq_ignore_ascii_case(b"SIP") || sub(s, version) != b"2.0" {
        return Err(err(start));
    }
    let transport = sub_str(s, transport).ok_or(err(start))?;
    let h0 = skip_lws(s, i);
    if h0 == i {
        return Err(err(i));
    }
    let (host, h1) = parse_host_at(s, h0).ok_or(err(h0))?;
    let host_str = sub_str(s, h0..h1).ok_or(err(h0))?;
    let mut end = h1;
    let mut port = None;
    let c = skip_lws(s, h1);
    if at(s, c) == b':' {
        let p0 = skip_lws(s, c + 1);
        let p1 = run(s, p0, |b| b.is_ascii_digit());
        port = Some(digits(sub(s, p0..p1), 65535).ok_or(err(p0))? as u16);
        end = p1;
    }
    let mut via = Via {
        transport,
        host,
        host_str,
        port,
        branch: None,
        received: None,
        rport: None,
        maddr: None,
        ttl: None,
        alias: false,
        range: 0..0,
        rport_range: None,
        received_range: None,
    };
    while let Some(p) = param_at(s, end, base, HeaderName::Via)? {
        let name = sub(s, p.name.clone());
        let value = p
            .value
            .clone()
            .map(|v| sub_str(s, v).ok_or(err(p.name.start)));
        let value = value.transpose()?;
        if name.eq_ignore_ascii_case(b"branch") {
            // The branch is a token (RFC 3261 20.42); a quoted or host-like value is not.
            let v = value.ok_or(err(p.name.start))?;
            if !v.bytes().all(is_token) {
                return Err(err(p.name.start));
            }
            via.branch = Some(v);
        } else if name.eq_ignore_ascii_case(b"received") {
            // IPv4, IPv6 with or without brackets (RFC 5118 4.5), or a token.
            via.received = Some(value.ok_or(err(p.name.start))?);
            via.received_range = Some(base + p.name.start..base + p.end);
        } else if name.eq_ignore_ascii_case(b"rport") {
            let v = match value {
                None => None,
                Some(v) => Some(digits(v.as_bytes(), 65535).ok_or(err(p.name.start))? as u16),
            };
            via.rport = Some(v);
            via.rport_range = Some(base + p.name.start..base + p.end);
        } else if name.eq_ignore_ascii_case(b"maddr") {
            via.maddr = Some(value.ok_or(err(p.name.start))?);
        } else if name.eq_ignore_ascii_case(b"alias") {
            via.alias = true;
        } else if name.eq_ignore_ascii_case(b"ttl") {
            let v = value.ok_or(err(p.name.start))?;
            via.ttl = Some(digits(v.as_bytes(), 255).ok_or(err(p.name.start))? as u8);
        }
        end = p.end;
    }
    via.range = base + start..base + end;
    let next = next_value(s, end, base, HeaderName::Via)?;
    Ok((via, next))
}
