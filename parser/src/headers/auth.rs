//! Digest credentials in Authorization / Proxy-Authorization (RFC 3261 20.7, 22.4; RFC 2617).
//!
//! `credentials = "Digest" LWS digest-response *(COMMA digest-response)`. Values borrow the
//! message; quoted values are returned without their quotes (escapes kept, which the digest
//! computation needs as sent). Other schemes (RFC 4475 regaut01) give `ErrorKind::NotDigest`;
//! they are not an error for `parse`, only for whoever wants Digest from them.

use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::scan::{at, is_token, quoted_end, run, skip_lws, sub, sub_str};

/// The parameters of a Digest Authorization header; absent ones are None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestCredentials<'b> {
    pub username: Option<&'b str>,
    pub realm: Option<&'b str>,
    pub nonce: Option<&'b str>,
    pub uri: Option<&'b str>,
    pub response: Option<&'b str>,
    pub algorithm: Option<&'b str>,
    pub cnonce: Option<&'b str>,
    pub opaque: Option<&'b str>,
    pub qop: Option<&'b str>,
    pub nc: Option<&'b str>,
}

const NAMES: [&[u8]; 10] = [
    b"username",
    b"realm",
    b"nonce",
    b"uri",
    b"response",
    b"algorithm",
    b"cnonce",
    b"opaque",
    b"qop",
    b"nc",
];

/// Parses the value of one Authorization or Proxy-Authorization header (`hn`: which, for
/// errors); a request may carry several, one per realm.
pub fn parse_credentials(s: &[u8], hn: HeaderName) -> Result<DigestCredentials<'_>, ParseError> {
    parse_digest(s, 0, hn)
}

pub(crate) fn parse_digest(
    s: &[u8],
    base: usize,
    hn: HeaderName,
) -> Result<DigestCredentials<'_>, ParseError> {
    let err = |k: usize| ParseError::new(ErrorKind::BadHeader(hn), base + k);
    let s0 = skip_lws(s, 0);
    let s1 = run(s, s0, is_token);
    if !sub(s, s0..s1).eq_ignore_ascii_case(b"Digest") {
        return Err(ParseError::new(ErrorKind::NotDigest, base + s0));
    }
    let mut vals: [Option<&str>; 10] = [None; 10];
    let mut i = skip_lws(s, s1);
    if i == s1 {
        return Err(err(i));
    }
    loop {
        let n1 = run(s, i, is_token);
        if n1 == i {
            return Err(err(i));
        }
        let name = sub(s, i..n1);
        let e = skip_lws(s, n1);
        if at(s, e) != b'=' {
            return Err(err(e));
        }
        let v0 = skip_lws(s, e + 1);
        let (v, v1) = if at(s, v0) == b'"' {
            let q1 = quoted_end(s, v0).ok_or(err(v0))?;
            (sub_str(s, v0 + 1..q1 - 1), q1)
        } else {
            let v1 = run(s, v0, is_token);
            if v1 == v0 {
                return Err(err(v0));
            }
            (sub_str(s, v0..v1), v1)
        };
        if let Some(k) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            if let Some(slot) = vals.get_mut(k) {
                *slot = Some(v.ok_or(err(v0))?);
            }
        }
        let j = skip_lws(s, v1);
        match s.get(j) {
            None => {
                let [username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc] =
                    vals;
                return Ok(DigestCredentials {
                    username,
                    realm,
                    nonce,
                    uri,
                    response,
                    algorithm,
                    cnonce,
                    opaque,
                    qop,
                    nc,
                });
            }
            Some(b',') => i = skip_lws(s, j + 1),
            Some(_) => return Err(err(j)),
        }
    }
}
