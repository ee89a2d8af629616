//! The request's side of digest authentication: the credentials for a realm among its
//! Authorization or Proxy-Authorization headers ([`find_credentials`]), the realm a check
//! uses when the script gives none, and the user and host of a URI.
//!
//! It checks nothing: nonces and responses are [`super::authorize`]'s.

use ser_parser::{DigestCredentials, HeaderName, Method};

use super::AuthKind;
use crate::modules::ctx::MsgCtx;

/// The credentials for a realm among a request's Authorization (or Proxy-Authorization)
/// headers.
pub(super) enum Found<'b> {
    None,
    /// A header that does not parse (and none for our realm that does).
    Malformed,
    Creds(DigestCredentials<'b>),
}

pub(super) fn find_credentials<'b>(
    msg: &ser_parser::Message<'b>,
    kind: AuthKind,
    realm: &str,
) -> Found<'b> {
    let name = match kind {
        AuthKind::Www => HeaderName::Authorization,
        AuthKind::Proxy => HeaderName::ProxyAuthorization,
    };
    let mut malformed = false;
    for h in msg.headers_named(name) {
        match ser_parser::parse_credentials(h.value, name) {
            Ok(c) if c.realm.is_some_and(|r| r.eq_ignore_ascii_case(realm)) => {
                return Found::Creds(c)
            }
            Ok(_) => {}
            Err(e) if e.kind() == ser_parser::ErrorKind::NotDigest => {}
            Err(_) => malformed = true,
        }
    }
    if malformed {
        Found::Malformed
    } else {
        Found::None
    }
}

/// The user and host of a SIP URI (empty when it has none).
pub(super) fn user_host(uri: &str) -> Option<(String, String)> {
    let u = ser_parser::parse_uri(uri).ok()?;
    Some((u.user.unwrap_or("").to_string(), u.host_str.to_string()))
}

impl MsgCtx<'_, '_> {
    /// The realm of a challenge or check: the script's, or for "" the request's domain
    /// (SER: the To's for REGISTER, which names the user being registered, else the From's).
    pub(super) fn auth_realm(&self, realm: &str) -> String {
        if !realm.is_empty() {
            return realm.to_string();
        }
        let hdr = if matches!(self.msg.method(), Some(Method::Register)) {
            self.msg.to()
        } else {
            self.msg.from()
        };
        hdr.ok()
            .and_then(|n| user_host(n.uri))
            .map(|(_, h)| h)
            .or_else(|| user_host(self.current_uri()).map(|(_, h)| h))
            .unwrap_or_default()
    }
}
