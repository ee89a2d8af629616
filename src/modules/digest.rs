//! HTTP Digest (RFC 2617, MD5, with `qop=auth` and without) and SER's signed nonces: the
//! sans-IO half of the auth modules. Nothing here reads the clock, a socket or a database:
//! times come in as arguments (seconds since the epoch), credentials as strings.
//!
//! A nonce is 48 hex digits: 8 of its expiry time, 8 of salt, and 32 of
//! `MD5(expiry_hex salt_hex secret)`. Any server that knows the secret can check it without
//! keeping state, which is how two servers that share `secret` (the seeds' replication
//! setup) accept each other's challenges; an expired nonce with a good signature is *stale*
//! (RFC 2617 3.2.1: the client may retry with a new nonce without asking the user).
//!
//! Not here: `auth-int` (the body is not hashed), `MD5-sess`, `nc` replay tracking (SER 0.8
//! did not track it either: a nonce is good until it expires).

use md5::{Digest, Md5};

/// The lowercase hex MD5 of the parts joined by `:`.
pub fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(D[usize::from(b >> 4)]));
        s.push(char::from(D[usize::from(b & 15)]));
    }
    s
}

/// HA1 = MD5(username:realm:password).
pub fn ha1(username: &str, realm: &str, password: &str) -> String {
    md5_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// The credentials' values that enter the response, as sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Response<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `qop=auth` with its `nc` and `cnonce`; None without qop.
    pub qop: Option<(&'a str, &'a str, &'a str)>,
}

/// The expected `response` value for `ha1` (RFC 2617 3.2.2.1).
pub fn expected_response(ha1: &str, r: &Response<'_>) -> String {
    let ha2 = md5_hex(&[r.method.as_bytes(), r.uri.as_bytes()]);
    match r.qop {
        Some((qop, nc, cnonce)) => md5_hex(&[
            ha1.as_bytes(),
            r.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            qop.as_bytes(),
            ha2.as_bytes(),
        ]),
        None => md5_hex(&[ha1.as_bytes(), r.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Whether `response` (as sent; hex in either case) is right for `ha1`.
pub fn check_response(ha1: &str, r: &Response<'_>, response: &str) -> bool {
    let want = expected_response(&ha1.to_ascii_lowercase(), r);
    // Compare all of it (no early exit on the first difference).
    want.len() == response.len()
        && want
            .bytes()
            .zip(response.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
            == 0
}

/// Length of a nonce we issue.
pub const NONCE_LEN: usize = 48;

/// A nonce that expires at `expires` (seconds since the epoch), signed with `secret`.
pub fn make_nonce(expires: u64, salt: u32, secret: &str) -> String {
    let head = format!("{:08x}{salt:08x}", expires & 0xffff_ffff);
    let sig = md5_hex(&[format!("{head}{secret}").as_bytes()]);
    format!("{head}{sig}")
}

/// What a received nonce is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours (or a peer's with the same secret) and not expired.
    Valid,
    /// Ours, but expired: challenge again with `stale=true`.
    Stale,
    /// Not signed with our secret, or not a nonce of ours at all.
    Invalid,
}

/// Checks a nonce against `secret` at time `now` (seconds since the epoch).
pub fn check_nonce(nonce: &str, secret: &str, now: u64) -> NonceCheck {
    if nonce.len() != NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return NonceCheck::Invalid;
    }
    let (head, sig) = nonce.split_at(16);
    let want = md5_hex(&[format!("{}{secret}", head.to_ascii_lowercase()).as_bytes()]);
    if !want.eq_ignore_ascii_case(sig) {
        return NonceCheck::Invalid;
    }
    let Ok(expires) = u64::from_str_radix(&head[..8], 16) else {
        return NonceCheck::Invalid;
    };
    if (now & 0xffff_ffff) >= expires {
        NonceCheck::Stale
    } else {
        NonceCheck::Valid
    }
}

/// The value of a `WWW-Authenticate`/`Proxy-Authenticate` header.
pub fn challenge_value(realm: &str, nonce: &str, qop: bool, stale: bool) -> String {
    let mut v = format!("Digest realm=\"{}\", nonce=\"{nonce}\"", quote_safe(realm));
    if qop {
        v.push_str(", qop=\"auth\"");
    }
    if stale {
        v.push_str(", stale=true");
    }
    v.push_str(", algorithm=MD5");
    v
}

/// A realm fit for a quoted-string: no quotes, backslashes or control characters.
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 3.5: Mufasa / Circle Of Life, qop=auth.
        let ha1 = ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let r = Response {
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop: Some(("auth", "00000001", "0a4f113b")),
        };
        assert_eq!(
            expected_response(&ha1, &r),
            "6629fae49393a05397450978507c4ef1"
        );
        assert!(check_response(&ha1, &r, "6629FAE49393A05397450978507C4EF1"));
        assert!(!check_response(&ha1, &r, "6629fae49393a05397450978507c4ef"));
        assert!(!check_response(
            &ha1,
            &r,
            "x629fae49393a05397450978507c4ef1"
        ));
    }

    #[test]
    fn rfc2069_style_without_qop() {
        let ha1 = ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let r = Response {
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop: None,
        };
        // MD5(HA1:nonce:HA2), computed independently.
        let ha2 = md5_hex(&[b"GET", b"/dir/index.html"]);
        let want = md5_hex(&[
            ha1.as_bytes(),
            b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            ha2.as_bytes(),
        ]);
        assert_eq!(expected_response(&ha1, &r), want);
    }

    #[test]
    fn nonces_verify_across_servers_and_expire() {
        let n = make_nonce(1_000_300, 0xdead_beef, "alsdkhglaksdhfkloiwr");
        assert_eq!(n.len(), NONCE_LEN);
        // Another server with the same secret: no shared state but the secret.
        assert_eq!(
            check_nonce(&n, "alsdkhglaksdhfkloiwr", 1_000_000),
            NonceCheck::Valid
        );
        assert_eq!(
            check_nonce(&n.to_ascii_uppercase(), "alsdkhglaksdhfkloiwr", 1_000_000),
            NonceCheck::Valid
        );
        assert_eq!(
            check_nonce(&n, "alsdkhglaksdhfkloiwr", 1_000_300),
            NonceCheck::Stale
        );
        assert_eq!(check_nonce(&n, "other", 1_000_000), NonceCheck::Invalid);
        let mut forged = n.clone().into_bytes();
        forged[3] = if forged[3] == b'f' { b'e' } else { b'f' };
        let forged = String::from_utf8(forged).unwrap_or_default();
        assert_eq!(
            check_nonce(&forged, "alsdkhglaksdhfkloiwr", 1_000_000),
            NonceCheck::Invalid
        );
        for junk in [
            "",
            "zz",
            &"g".repeat(48),
            &"0".repeat(48),
            "é".repeat(24).as_str(),
        ] {
            assert_eq!(check_nonce(junk, "s", 0), NonceCheck::Invalid, "{junk}");
        }
    }

    #[test]
    fn challenge_header() {
        assert_eq!(
            challenge_value("foo.bar", "abc", true, true),
            "Digest realm=\"foo.bar\", nonce=\"abc\", qop=\"auth\", stale=true, algorithm=MD5"
        );
        assert_eq!(
            challenge_value("a\"b", "n", false, false),
            "Digest realm=\"ab\", nonce=\"n\", algorithm=MD5"
        );
    }
}
