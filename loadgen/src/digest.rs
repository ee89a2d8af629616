//! RFC 2617 digest (MD5) answers to 401/407 challenges, `qop=auth` and without.
//!
//! Written here on the `md-5` crate, not taken from `ser`, so the generator checks the server
//! instead of sharing its bugs. Only MD5 and `qop=auth` (or no qop): what SER challenges with.

use md5::{Digest, Md5};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub qop_auth: bool,
    pub algorithm: Option<String>,
    /// 407 (Proxy-Authorization) rather than 401 (Authorization).
    pub proxy: bool,
}

/// Parses a `Digest realm="..", nonce="..", qop="auth,auth-int"` challenge value.
pub fn parse_challenge(value: &[u8], proxy: bool) -> Option<Challenge> {
    let s = std::str::from_utf8(value).ok()?.trim();
    let rest = s
        .strip_prefix("Digest")
        .or_else(|| s.strip_prefix("digest"))?;
    let mut c = Challenge {
        proxy,
        ..Challenge::default()
    };
    let mut have_nonce = false;
    for (k, v) in params(rest) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => c.realm = v,
            "nonce" => {
                c.nonce = v;
                have_nonce = true
            }
            "opaque" => c.opaque = Some(v),
            "qop" => c.qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")),
            "algorithm" => c.algorithm = Some(v),
            _ => {}
        }
    }
    if let Some(a) = &c.algorithm {
        if !a.eq_ignore_ascii_case("MD5") {
            return None;
        }
    }
    have_nonce.then_some(c)
}

/// `k=v` pairs separated by commas; values may be quoted (commas inside quotes kept).
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_string();
        if i >= b.len() || b[i] == b',' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let val;
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            val = s.get(vs..i.min(b.len())).unwrap_or("").to_string();
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        out.push((key, val));
    }
    out
}

fn hex_md5(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p);
    }
    let d = h.finalize();
    let mut s = String::with_capacity(32);
    for b in d {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The `Authorization`/`Proxy-Authorization` header line (without CRLF) answering `c`.
pub fn authorization(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = hex_md5(&[user.as_bytes(), c.realm.as_bytes(), password.as_bytes()]);
    let ha2 = hex_md5(&[method.as_bytes(), uri.as_bytes()]);
    let name = if c.proxy {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    let mut h = format!(
        "{name}: Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\"",
        c.realm, c.nonce
    );
    let response = if c.qop_auth {
        let nc = format!("{nc:08x}");
        let r = hex_md5(&[
            ha1.as_bytes(),
            c.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]);
        h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        r
    } else {
        hex_md5(&[ha1.as_bytes(), c.nonce.as_bytes(), ha2.as_bytes()])
    };
    h.push_str(&format!(", response=\"{response}\", algorithm=MD5"));
    if let Some(o) = &c.opaque {
        h.push_str(&format!(", opaque=\"{o}\""));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 3.5 (the example's method/uri, MD5 qop=auth).
        let c = parse_challenge(
            br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
            false,
        )
        .expect("challenge");
        assert!(c.qop_auth);
        let h = authorization(
            &c,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            h.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{h}"
        );
        assert!(h.starts_with("Authorization: Digest username=\"Mufasa\""));
        assert!(h.contains("nc=00000001"));
    }

    #[test]
    fn no_qop_and_refusals() {
        let c = parse_challenge(b"Digest realm=\"r\", nonce=\"n\"", true).expect("challenge");
        assert!(!c.qop_auth && c.proxy);
        let h = authorization(&c, "u", "p", "REGISTER", "sip:r", 1, "x");
        let ha1 = hex_md5(&[b"u", b"r", b"p"]);
        let ha2 = hex_md5(&[b"REGISTER", b"sip:r"]);
        let want = hex_md5(&[ha1.as_bytes(), b"n", ha2.as_bytes()]);
        assert!(h.contains(&want) && h.starts_with("Proxy-Authorization"));
        assert!(parse_challenge(b"Basic realm=\"r\"", false).is_none());
        assert!(
            parse_challenge(b"Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256", false).is_none()
        );
    }
}
