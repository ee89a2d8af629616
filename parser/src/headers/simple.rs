//! Single-valued headers with simple grammars: CSeq (RFC 3261 20.16), Call-ID (20.8) and the
//! numeric ones (Max-Forwards 20.22, Expires 20.19, Content-Length 20.14).
//!
//! Numbers are checked with overflow-safe arithmetic and explicit ranges, which is what RFC 4475
//! scalar02/scalarlg exercise.

use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::method::Method;
use crate::scan::{digits, is_token, is_word, run, skip_lws, sub, trim_lws};

/// The CSeq header: sequence number and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'b> {
    pub number: u32,
    pub method: Method<'b>,
}

/// CSeq = 1*DIGIT LWS Method; the number must be below 2^31 (RFC 3261 8.1.1.5).
pub(crate) fn parse_cseq(s: &[u8], base: usize) -> Result<CSeq<'_>, ParseError> {
    let err = |k: usize| ParseError::new(ErrorKind::BadCSeq, base + k);
    let n0 = skip_lws(s, 0);
    let n1 = run(s, n0, |c| c.is_ascii_digit());
    let number = digits(sub(s, n0..n1), (1 << 31) - 1).ok_or(err(n0))? as u32;
    let m0 = skip_lws(s, n1);
    if m0 == n1 {
        return Err(err(n1));
    }
    let m1 = run(s, m0, is_token);
    let method = Method::from_bytes(sub(s, m0..m1)).ok_or(err(m0))?;
    if skip_lws(s, m1) != s.len() {
        return Err(err(m1));
    }
    Ok(CSeq { number, method })
}

/// callid = word [ "@" word ]
pub(crate) fn check_call_id(s: &[u8], base: usize) -> Result<(), ParseError> {
    let v = trim_lws(s);
    let ok = match memchr::memchr(b'@', v) {
        Some(a) => word(sub(v, 0..a)) && word(sub(v, a + 1..v.len())),
        None => word(v),
    };
    if ok {
        Ok(())
    } else {
        Err(ParseError::new(
            ErrorKind::BadHeader(HeaderName::CallId),
            base,
        ))
    }
}

fn word(w: &[u8]) -> bool {
    !w.is_empty() && w.iter().all(|&c| is_word(c))
}

/// A header whose whole value is 1*DIGIT no larger than `max`.
pub(crate) fn parse_number(
    s: &[u8],
    base: usize,
    max: u64,
    hn: HeaderName,
) -> Result<u32, ParseError> {
    let kind = if hn == HeaderName::ContentLength {
        ErrorKind::BadContentLength
    } else {
        ErrorKind::BadHeader(hn)
    };
    digits(trim_lws(s), max.min(u64::from(u32::MAX)))
        .map(|n| n as u32)
        .ok_or(ParseError::new(kind, base))
}
