//! SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966) and their comparison (RFC 3261 19.1.4).
//!
//! [`parse_uri`] splits an URI into borrowed parts (user, password, host, port, parameters,
//! headers) and checks the grammar: character classes, `%XX` escapes, a numeric port, a valid
//! bracketed IPv6 reference. It does not unescape anything (values borrow the input); [`uri_eq`]
//! compares escaped and unescaped forms as equal instead. Other schemes are rejected here; the
//! message parser accepts them in headers and the Request-URI with a generic syntax check.
//!
//! Key types: [`Uri`], [`Scheme`], [`Host`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use crate::error::{ErrorKind, ParseError};
use crate::scan::{
    at, escaped_run_ok, is_hnvchar, is_hostname, is_paramchar, is_password, is_uric, is_user, sub,
    unescaped_eq,
};

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
}

/// The host part of an URI or a Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host<'a> {
    Name(&'a str),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// tel: URIs have no host.
    None,
}

/// A parsed URI; every field borrows from `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    /// The user part (escapes kept); for tel: the subscriber number.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    /// The host as written (IPv6 references keep their brackets); empty for tel:.
    pub host_str: &'a str,
    pub port: Option<u16>,
    /// The URI parameters without the leading ';' ("transport=tcp;lr"), or "".
    pub params: &'a str,
    /// The URI headers without the leading '?', or "".
    pub headers: &'a str,
    pub raw: &'a str,
    user_range: Option<Range<usize>>,
    host_range: Range<usize>,
    port_range: Option<Range<usize>>,
}

impl<'a> Uri<'a> {
    /// The value of URI parameter `name` (case-insensitive, escapes honoured): `Some(None)` for
    /// a parameter without value ("lr"), None when absent.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        params(self.params)
            .find(|(n, _)| unescaped_eq(n.as_bytes(), name.as_bytes(), true))
            .map(|(_, v)| v)
    }

    /// Offsets of the user part within `raw`, for rewriting it.
    pub fn user_range(&self) -> Option<Range<usize>> {
        self.user_range.clone()
    }

    /// Offsets of the host within `raw` (brackets included).
    pub fn host_range(&self) -> Range<usize> {
        self.host_range.clone()
    }

    /// Offsets of the port digits within `raw`.
    pub fn port_range(&self) -> Option<Range<usize>> {
        self.port_range.clone()
    }
}

/// Splits "a=1;b;c=2" into (name, value) pairs; empty pieces are skipped.
pub(crate) fn params(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
}

fn bad(offset: usize) -> ParseError {
    ParseError::new(ErrorKind::BadUri, offset)
}

/// Parses a sip:, sips: or tel: URI (no surrounding whitespace or angle brackets).
pub fn parse_uri(s: &str) -> Result<Uri<'_>, ParseError> {
    let b = s.as_bytes();
    let colon = memchr::memchr(b':', b).ok_or(bad(0))?;
    let scheme_text = sub(b, 0..colon);
    let scheme = if scheme_text.eq_ignore_ascii_case(b"sip") {
        Scheme::Sip
    } else if scheme_text.eq_ignore_ascii_case(b"sips") {
        Scheme::Sips
    } else if scheme_text.eq_ignore_ascii_case(b"tel") {
        Scheme::Tel
    } else {
        return Err(bad(0));
    };
    let start = colon + 1;
    if scheme == Scheme::Tel {
        return parse_tel(s, start);
    }

    // userinfo: up to the first '@'. No valid host, parameter or header may hold a raw '@',
    // while the user part may hold ';', '?' and ',' (RFC 4475 intmeth, semiuri).
    let mut user_range = None;
    let mut password = None;
    let mut hp = start;
    if let Some(rel) = memchr::memchr(b'@', sub(b, start..b.len())) {
        let at_pos = start + rel;
        let info = sub(b, start..at_pos);
        let (user_end, pass) = match memchr::memchr(b':', info) {
            Some(c) => (start + c, Some(start + c + 1..at_pos)),
            None => (at_pos, None),
        };
        let user = sub(b, start..user_end);
        if user.is_empty() || !escaped_run_ok(user, is_user) {
            return Err(bad(start));
        }
        if let Some(p) = pass {
            if !escaped_run_ok(sub(b, p.clone()), is_password) {
                return Err(bad(p.start));
            }
            password = s.get(p);
        }
        user_range = Some(start..user_end);
        hp = at_pos + 1;
    }

    // host
    let (host, host_end) = if at(b, hp) == b'[' {
        parse_host_at(b, hp)
    } else {
        // A name or IPv4 address: sliced from the &str, no second UTF-8 check.
        let end = crate::scan::run(b, hp, is_hostname);
        s.get(hp..end).and_then(host_from_text).map(|h| (h, end))
    }
    .ok_or(bad(hp))?;
    let host_range = hp..host_end;
    let mut i = host_end;

    // port
    let mut port = None;
    let mut port_range = None;
    if at(b, i) == b':' {
        let p0 = i + 1;
        let mut p1 = p0;
        while at(b, p1).is_ascii_digit() {
            p1 += 1;
        }
        let v = crate::scan::digits(sub(b, p0..p1), 65535).ok_or(bad(p0))?;
        port = Some(v as u16);
        port_range = Some(p0..p1);
        i = p1;
    }

    // parameters, then headers
    let mut params_range = i..i;
    if at(b, i) == b';' {
        let p0 = i + 1;
        let p1 = memchr::memchr(b'?', sub(b, p0..b.len())).map_or(b.len(), |r| p0 + r);
        for piece in sub(b, p0..p1).split(|&c| c == b';') {
            if !uri_param_ok(piece) {
                return Err(bad(p0));
            }
        }
        params_range = p0..p1;
        i = p1;
    }
    let mut headers_range = i..i;
    if at(b, i) == b'?' {
        let h0 = i + 1;
        for piece in sub(b, h0..b.len()).split(|&c| c == b'&') {
            let (n, v) = match memchr::memchr(b'=', piece) {
                Some(e) => (sub(piece, 0..e), sub(piece, e + 1..piece.len())),
                None => return Err(bad(h0)),
            };
            if n.is_empty() || !escaped_run_ok(n, is_hnvchar) || !escaped_run_ok(v, is_hnvchar) {
                return Err(bad(h0));
            }
        }
        headers_range = h0..b.len();
        i = b.len();
    }
    if i != b.len() {
        return Err(bad(i));
    }
    Ok(Uri {
        scheme,
        user: user_range.clone().and_then(|r| s.get(r)),
        password,
        host,
        host_str: s.get(host_range.clone()).unwrap_or(""),
        port,
        params: s.get(params_range).unwrap_or(""),
        headers: s.get(headers_range).unwrap_or(""),
        raw: s,
        user_range,
        host_range,
        port_range,
    })
}

/// pname [ "=" pvalue ], both 1*paramchar.
fn uri_param_ok(piece: &[u8]) -> bool {
    let (n, v) = match memchr::memchr(b'=', piece) {
        Some(e) => (sub(piece, 0..e), Some(sub(piece, e + 1..piece.len()))),
        None => (piece, None),
    };
    !n.is_empty()
        && escaped_run_ok(n, is_paramchar)
        && v.map_or(true, |v| !v.is_empty() && escaped_run_ok(v, is_paramchar))
}

/// tel: telephone-subscriber *(";" par): lenient about the number's visual separators.
fn parse_tel(s: &str, start: usize) -> Result<Uri<'_>, ParseError> {
    let b = s.as_bytes();
    let end = memchr::memchr(b';', sub(b, start..b.len())).map_or(b.len(), |r| start + r);
    let number = sub(b, start..end);
    let ok_char = |c: u8| c.is_ascii_hexdigit() || b"+-.()*#pPwW".contains(&c);
    if number.is_empty() || !number.iter().all(|&c| ok_char(c)) {
        return Err(bad(start));
    }
    let mut params = "";
    if end < b.len() {
        let p0 = end + 1;
        for piece in sub(b, p0..b.len()).split(|&c| c == b';') {
            if !uri_param_ok(piece) {
                return Err(bad(p0));
            }
        }
        params = s.get(p0..).unwrap_or("");
    }
    Ok(Uri {
        scheme: Scheme::Tel,
        user: s.get(start..end),
        password: None,
        host: Host::None,
        host_str: "",
        port: None,
        params,
        headers: "",
        raw: s,
        user_range: Some(start..end),
        host_range: end..end,
        port_range: None,
    })
}

/// Parses a host starting at `i` (hostname, IPv4 or "[IPv6]"); returns it and its end.
pub(crate) fn parse_host_at(b: &[u8], i: usize) -> Option<(Host<'_>, usize)> {
    if at(b, i) == b'[' {
        let close = i + 1 + memchr::memchr(b']', sub(b, i + 1..b.len()))?;
        let inner = std::str::from_utf8(sub(b, i + 1..close)).ok()?;
        return Some((Host::V6(parse_v6(inner)?), close + 1));
    }
    let end = crate::scan::run(b, i, is_hostname);
    let text = std::str::from_utf8(sub(b, i..end)).ok()?;
    Some((host_from_text(text)?, end))
}

/// A hostname or IPv4 address (no brackets). One pass: the characters, whether it is all
/// digits and dots, and the labels (none empty, none starting or ending with '-'; one
/// trailing '.' allowed).
pub(crate) fn host_from_text(text: &str) -> Option<Host<'_>> {
    let tb = text.as_bytes();
    if tb.is_empty() {
        return None;
    }
    let name_len = tb.len() - usize::from(tb.last() == Some(&b'.'));
    let mut numeric = true;
    let mut labels_ok = true;
    // The previous character of the name ('.' before the first label).
    let mut prev = b'.';
    for (k, &c) in tb.iter().enumerate() {
        if !is_hostname(c) {
            return None;
        }
        numeric &= c.is_ascii_digit() || c == b'.';
        if k < name_len {
            if c == b'.' {
                labels_ok &= prev != b'.' && prev != b'-';
            } else if c == b'-' && prev == b'.' {
                labels_ok = false;
            }
            prev = c;
        }
    }
    labels_ok &= prev != b'.' && prev != b'-';
    if numeric {
        if let Some(v4) = ipv4(tb) {
            return Some(Host::V4(v4));
        }
    }
    labels_ok.then_some(Host::Name(text))
}

/// Dotted-quad IPv4 as `Ipv4Addr::from_str` reads it (four decimal octets up to 255, no
/// leading zeros), for the digits-and-dots text the host check found: a host in every Via and
/// most URIs, so parsed without the general parser.
fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut k = 0;
    let mut i = 0;
    loop {
        let start = i;
        let mut v: u32 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() || i - start == 3 {
                break;
            }
            v = v * 10 + u32::from(c - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || v > 255 || (len > 1 && b.get(start) == Some(&b'0')) {
            return None;
        }
        *octets.get_mut(k)? = v as u8;
        k += 1;
        match b.get(i) {
            None if k == 4 => return Some(Ipv4Addr::from(octets)),
            Some(b'.') if k < 4 => i += 1,
            _ => return None,
        }
    }
}

/// An IPv6 address; tolerates the ":::" typo RFC 5118 4.3 (ipv6-bug-abnf-3-colons) asks
/// implementations to accept, by reading it as "::".
pub(crate) fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Some(a);
    }
    let b = s.as_bytes();
    let pos = b.windows(3).position(|w| w == b":::")?;
    let mut tmp = [0u8; 64];
    let mut n = 0;
    for (k, &c) in b.iter().enumerate() {
        if k == pos {
            continue;
        }
        *tmp.get_mut(n)? = c;
        n += 1;
    }
    std::str::from_utf8(tmp.get(..n)?).ok()?.parse().ok()
}

/// Generic absolute-URI check for schemes we do not interpret (RFC 4475 unkscm, novelsc,
/// unksm2): scheme ":" 1*uric, escapes valid, no whitespace, no angle brackets or quotes.
pub(crate) fn generic_uri_ok(b: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', b) else {
        return false;
    };
    let scheme = sub(b, 0..colon);
    let scheme_ok = scheme.first().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    let rest = sub(b, colon + 1..b.len());
    scheme_ok && !rest.is_empty() && escaped_run_ok(rest, |c| c != b'%' && is_uric(c))
}

/// Checks an URI found in a header or the Request-URI: sip/sips/tel strictly, others
/// generically. Returns the parsed URI when the scheme is one we know.
pub(crate) fn check_uri(b: &[u8]) -> Result<Option<Uri<'_>>, ()> {
    let colon = memchr::memchr(b':', b).ok_or(())?;
    let scheme = sub(b, 0..colon);
    let known = [&b"sip"[..], b"sips", b"tel"]
        .iter()
        .any(|k| scheme.eq_ignore_ascii_case(k));
    if known {
        let s = std::str::from_utf8(b).map_err(|_| ())?;
        parse_uri(s).map(Some).map_err(|_| ())
    } else if generic_uri_ok(b) {
        Ok(None)
    } else {
        Err(())
    }
}

/// Parameters whose presence in only one URI makes them differ (RFC 3261 19.1.4).
const SIGNIFICANT: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

/// URI equality per RFC 3261 19.1.4: scheme and host case-insensitive, user and password
/// case-sensitive, escapes equal to the octets they encode, an explicit port never equal to
/// an absent one, parameters compared where both have them (user/ttl/method/maddr/transport
/// must be in both or neither), and headers compared as sets.
pub fn uri_eq(a: &Uri<'_>, b: &Uri<'_>) -> bool {
    if a.scheme != b.scheme {
        return false;
    }
    let opt_eq = |x: Option<&str>, y: Option<&str>, ci: bool| match (x, y) {
        (None, None) => true,
        (Some(x), Some(y)) => unescaped_eq(x.as_bytes(), y.as_bytes(), ci),
        _ => false,
    };
    if a.scheme == Scheme::Tel {
        // RFC 3966 5: visual separators are not significant.
        let (x, y) = (
            tel_digits(a.user.unwrap_or("")),
            tel_digits(b.user.unwrap_or("")),
        );
        if !x
            .map(|c| c.to_ascii_lowercase())
            .eq(y.map(|c| c.to_ascii_lowercase()))
        {
            return false;
        }
    } else {
        if !opt_eq(a.user, b.user, false) || !opt_eq(a.password, b.password, false) {
            return false;
        }
        let host_eq = match (a.host, b.host) {
            (Host::Name(x), Host::Name(y)) => unescaped_eq(x.as_bytes(), y.as_bytes(), true),
            (x, y) => x == y,
        };
        if !host_eq || a.port != b.port {
            return false;
        }
    }
    for (k, (n, v)) in params(a.params).enumerate() {
        // A repeated parameter counts once, by its first occurrence (as `param` reads it).
        if params(a.params)
            .take(k)
            .any(|(m, _)| unescaped_eq(m.as_bytes(), n.as_bytes(), true))
        {
            continue;
        }
        match b.param(n) {
            Some(w) => {
                if !opt_eq(v, w, true) {
                    return false;
                }
            }
            None => {
                if is_significant(n) {
                    return false;
                }
            }
        }
    }
    for (n, _) in params(b.params) {
        if is_significant(n) && a.param(n).is_none() {
            return false;
        }
    }
    headers_subset(a.headers, b.headers) && headers_subset(b.headers, a.headers)
}

fn tel_digits(s: &str) -> impl Iterator<Item = u8> + '_ {
    s.bytes()
        .filter(|c| !matches!(c, b'-' | b'.' | b'(' | b')'))
}

fn is_significant(name: &str) -> bool {
    SIGNIFICANT
        .iter()
        .any(|s| unescaped_eq(name.as_bytes(), s.as_bytes(), true))
}

/// Every header of `x` is in `y` with an equal value.
fn headers_subset(x: &str, y: &str) -> bool {
    x.split('&').filter(|h| !h.is_empty()).all(|h| {
        let (n, v) = split_hdr(h);
        y.split('&').filter(|g| !g.is_empty()).any(|g| {
            let (m, w) = split_hdr(g);
            unescaped_eq(n.as_bytes(), m.as_bytes(), true)
                && unescaped_eq(v.as_bytes(), w.as_bytes(), false)
        })
    })
}

fn split_hdr(h: &str) -> (&str, &str) {
    h.split_once('=').unwrap_or((h, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to `max` characters of `alphabet` (ASCII), shortest first.
    fn every_string(alphabet: &'static [u8], max: u32) -> impl Iterator<Item = String> {
        (0..=max).flat_map(move |len| {
            (0..alphabet.len().pow(len)).map(move |mut k| {
                let mut s = String::new();
                for _ in 0..len {
                    s.push(char::from(alphabet[k % alphabet.len()]));
                    k /= alphabet.len();
                }
                s
            })
        })
    }

    /// The straightforward reading of the rules, as `host_from_text` was written before it
    /// became one pass.
    fn reference(text: &str) -> Option<Host<'_>> {
        let tb = text.as_bytes();
        if tb.is_empty() || !tb.iter().all(|&c| is_hostname(c)) {
            return None;
        }
        if tb.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
            if let Ok(v4) = text.parse::<Ipv4Addr>() {
                return Some(Host::V4(v4));
            }
        }
        for label in text.strip_suffix('.').unwrap_or(text).split('.') {
            if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
                return None;
            }
        }
        Some(Host::Name(text))
    }

    #[test]
    fn ipv4_reads_what_the_standard_parser_reads() {
        for t in every_string(b"01259.", 8) {
            assert_eq!(ipv4(t.as_bytes()), t.parse::<Ipv4Addr>().ok(), "{t:?}");
        }
        for t in [
            "127.0.0.1",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3.4.",
            "01.2.3.4",
            "0.0.0.0",
            "192.168.100.200",
            "1.2.3.4.5",
            "1.2.3",
            "1..2.3",
            "1234.1.1.1",
            "10.0.0.255",
        ] {
            assert_eq!(ipv4(t.as_bytes()), t.parse::<Ipv4Addr>().ok(), "{t:?}");
        }
    }

    #[test]
    fn one_pass_host_check_agrees_with_the_rules_on_every_short_string() {
        let mut n = 0;
        for s in every_string(b"a1.-_", 7) {
            assert_eq!(host_from_text(&s), reference(&s), "{s:?}");
            n += 1;
        }
        for s in [
            "127.0.0.1",
            "10.0.0.255.",
            "1.2.3.4.5",
            "256.1.1.1",
            "a.b.invalid",
            "x-y.z.",
        ] {
            assert_eq!(host_from_text(s), reference(s), "{s:?}");
        }
        assert!(n > 90_000);
    }

    #[test]
    fn ipv4_and_host_check_agree_with_the_rules_on_longer_random_strings() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let alpha = b"0123456789..";
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 20) as usize;
            let mut t = String::new();
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                t.push(char::from(alpha[((y >> 33) % 12) as usize]));
            }
            assert_eq!(ipv4(t.as_bytes()), t.parse::<Ipv4Addr>().ok(), "{t:?}");
            assert_eq!(host_from_text(&t), reference(&t), "{t:?}");
        }
        // structured: four octets of 0..=999 with optional leading zeros
        for a in [
            "0", "00", "1", "01", "255", "256", "999", "0255", "25", "001",
        ] {
            for b in ["0", "10", "255", "300", "05"] {
                let t = format!("{a}.{b}.{b}.{a}");
                assert_eq!(ipv4(t.as_bytes()), t.parse::<Ipv4Addr>().ok(), "{t:?}");
                assert_eq!(host_from_text(&t), reference(&t), "{t:?}");
                let t = format!("{a}.{b}.{b}.{a}.");
                assert_eq!(host_from_text(&t), reference(&t), "{t:?}");
            }
        }
    }
}
