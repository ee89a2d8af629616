//! name-addr / addr-spec values: From, To, Contact, Route, Record-Route (RFC 3261 20.10,
//! 20.20, 20.34, 20.30, 20.39).
//!
//! `( name-addr / addr-spec ) *( SEMI param )` with `name-addr = [ display-name ] "<" addr-spec
//! ">"`. The checks RFC 4475 relies on live here: balanced quotes (quotbal), no white space
//! inside the angle brackets (badaspec), a display name of tokens or a quoted-string, never a
//! comma (baddn), and an addr-spec without brackets may not hold '?' or ',' (regbadct). The URI
//! itself is checked strictly for sip/sips/tel and generically for other schemes (unksm2).

use std::ops::Range;

use super::{next_value, param_at};
use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::scan::{at, digits, is_token, quoted_end, run, skip_lws, sub, sub_str};
use crate::uri::{check_uri, Uri};

/// A name-addr or addr-spec with its header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'b> {
    /// The display name without its quotes (escapes kept), or the tokens as written.
    pub display: Option<&'b str>,
    /// The URI, without angle brackets.
    pub uri: &'b str,
    pub tag: Option<&'b str>,
    /// The header parameters after the URI, from the first ';' (or "").
    pub params: &'b str,
    /// This value in the message.
    pub range: Range<usize>,
    /// The URI in the message (without angle brackets).
    pub uri_range: Range<usize>,
    /// `uri` as the strict check parsed it (sip, sips and tel; None for other schemes).
    parsed: Option<Uri<'b>>,
}

impl<'b> NameAddr<'b> {
    /// The URI parsed ([`crate::parse_uri`]'s answer, without parsing it again: the check
    /// that accepted this value parsed it already).
    pub fn parse_uri(&self) -> Result<Uri<'b>, ParseError> {
        match &self.parsed {
            Some(u) => Ok(u.clone()),
            None => crate::uri::parse_uri(self.uri),
        }
    }
}

/// One Contact value.
// A view on the stack or in the Message, never stored in bulk: boxing the address (now with
// its parsed URI) would allocate for every Contact read, to save the size of a rare `*`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact<'b> {
    /// "Contact: *" (REGISTER removing every binding).
    Star,
    Addr {
        addr: NameAddr<'b>,
        /// The q parameter in per mille (q=0.33 is 330).
        q: Option<u16>,
        /// The expires parameter; values above 2^32-1 read as 2^32-1 (RFC 3261 20.19 lets a
        /// registrar treat them as the largest value).
        expires: Option<u32>,
    },
}

/// Parses a name-addr/addr-spec at `pos`; also returns the q and expires parameters (for
/// Contact) and the position of the next value.
pub(crate) fn parse_name_addr_full(
    s: &[u8],
    base: usize,
    pos: usize,
    hn: HeaderName,
) -> Result<(NameAddr<'_>, Option<u16>, Option<u32>, usize), ParseError> {
    let err = |k: usize| ParseError::new(ErrorKind::BadHeader(hn), base + k);
    let start = skip_lws(s, pos);
    let mut display = None;
    let uri_range;
    let mut end;
    // Decide between name-addr and addr-spec by what follows the leading tokens.
    let (lt, disp) = if at(s, start) == b'"' {
        let q1 = quoted_end(s, start).ok_or(err(start))?;
        let lt = skip_lws(s, q1);
        if at(s, lt) != b'<' {
            return Err(err(lt));
        }
        (Some(lt), Some(start + 1..q1 - 1))
    } else if at(s, start) == b'<' {
        (Some(start), None)
    } else {
        let mut i = start;
        let mut last = start;
        let mut found = None;
        loop {
            let e = run(s, i, is_token);
            if e == i {
                break;
            }
            last = e;
            let k = skip_lws(s, e);
            if at(s, k) == b'<' {
                found = Some(k);
                break;
            }
            i = k;
        }
        match found {
            Some(lt) => (Some(lt), Some(start..last)),
            None => (None, None),
        }
    };
    if let Some(d) = disp {
        display = Some(sub_str(s, d).ok_or(err(start))?);
    }
    if let Some(lt) = lt {
        let u0 = lt + 1;
        let gt = u0 + memchr::memchr(b'>', sub(s, u0..s.len())).ok_or(err(lt))?;
        uri_range = u0..gt;
        end = gt + 1;
    } else {
        // addr-spec: the URI runs to the first ';', ',' or white space; header parameters
        // follow. A '?' here means an URI with headers that should have been bracketed.
        let u1 = run(s, start, |c| {
            !matches!(c, b';' | b',' | b' ' | b'\t' | b'\r' | b'\n')
        });
        if memchr::memchr2(b'?', b'<', sub(s, start..u1)).is_some() {
            return Err(err(start));
        }
        uri_range = start..u1;
        end = u1;
    }
    let uri_bytes = sub(s, uri_range.clone());
    if uri_bytes
        .iter()
        .any(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'<' | b'>' | b'"'))
    {
        return Err(err(uri_range.start));
    }
    let parsed = check_uri(uri_bytes).map_err(|_| err(uri_range.start))?;
    let uri = match &parsed {
        Some(u) => u.raw,
        None => sub_str(s, uri_range.clone()).ok_or(err(uri_range.start))?,
    };

    let params_start = end;
    let mut tag = None;
    let mut q = None;
    let mut expires = None;
    while let Some(p) = param_at(s, end, base, hn)? {
        let name = sub(s, p.name.clone());
        let value = p.value.clone().map(|v| sub(s, v));
        if name.eq_ignore_ascii_case(b"tag") {
            let v = value.ok_or(err(p.name.start))?;
            if !v.iter().all(|&c| is_token(c)) {
                return Err(err(p.name.start));
            }
            tag = std::str::from_utf8(v).ok();
        } else if hn == HeaderName::Contact && name.eq_ignore_ascii_case(b"q") {
            q = Some(qvalue(value.unwrap_or(b"")).ok_or(err(p.name.start))?);
        } else if hn == HeaderName::Contact && name.eq_ignore_ascii_case(b"expires") {
            let v = value.ok_or(err(p.name.start))?;
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(err(p.name.start));
            }
            expires = Some(digits(v, u64::from(u32::MAX)).map_or(u32::MAX, |n| n as u32));
        }
        end = p.end;
    }
    // The parameters' text: from the first ';' after the URI to the end of the last one.
    let semi = skip_lws(s, params_start);
    let params = if end > params_start {
        sub_str(s, semi..end).unwrap_or("")
    } else {
        ""
    };
    let next = next_value(s, end, base, hn)?;
    let addr = NameAddr {
        display,
        uri,
        tag,
        params,
        range: base + start..base + end,
        uri_range: base + uri_range.start..base + uri_range.end,
        parsed,
    };
    Ok((addr, q, expires, next))
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in per mille.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match memchr::memchr(b'.', v) {
        Some(d) => (sub(v, 0..d), sub(v, d + 1..v.len())),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut f: u16 = 0;
    for k in 0..3 {
        f = f * 10 + frac.get(k).map_or(0, |c| u16::from(c - b'0'));
    }
    match int {
        b"0" => Some(f),
        b"1" if f == 0 => Some(1000),
        _ => None,
    }
}

pub(crate) fn parse_name_addr(
    s: &[u8],
    base: usize,
    pos: usize,
    hn: HeaderName,
) -> Result<(NameAddr<'_>, usize), ParseError> {
    parse_name_addr_full(s, base, pos, hn).map(|(a, _, _, n)| (a, n))
}

pub(crate) fn parse_route(
    s: &[u8],
    base: usize,
    pos: usize,
) -> Result<(NameAddr<'_>, usize), ParseError> {
    parse_name_addr(s, base, pos, HeaderName::Route)
}

pub(crate) fn parse_record_route(
    s: &[u8],
    base: usize,
    pos: usize,
) -> Result<(NameAddr<'_>, usize), ParseError> {
    parse_name_addr(s, base, pos, HeaderName::RecordRoute)
}

/// A Contact value: "*" alone, or a name-addr with q and expires.
pub(crate) fn parse_contact(
    s: &[u8],
    base: usize,
    pos: usize,
) -> Result<(Contact<'_>, usize), ParseError> {
    let start = skip_lws(s, pos);
    if at(s, start) == b'*' {
        let next = next_value(s, start + 1, base, HeaderName::Contact)?;
        if start == skip_lws(s, 0) && next >= s.len() {
            return Ok((Contact::Star, next));
        }
        return Err(ParseError::new(
            ErrorKind::BadHeader(HeaderName::Contact),
            base + start,
        ));
    }
    let (addr, q, expires, next) = parse_name_addr_full(s, base, start, HeaderName::Contact)?;
    Ok((Contact::Addr { addr, q, expires }, next))
}

/// A whole From or To value: exactly one name-addr.
pub(crate) fn parse_single(
    s: &[u8],
    base: usize,
    hn: HeaderName,
) -> Result<NameAddr<'_>, ParseError> {
    let (addr, next) = parse_name_addr(s, base, 0, hn)?;
    if next < s.len() {
        return Err(ParseError::new(ErrorKind::BadHeader(hn), base + next));
    }
    Ok(addr)
}
