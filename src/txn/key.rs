//! Transaction keys: which transaction a message belongs to (RFC 3261 17.1.3 and 17.2.3).
//!
//! A [`Key`] is built from a parsed [`Message`] and owns its bytes (one allocation), so it
//! outlives the datagram and can sit in a hash map; hashing it is hashing one short byte
//! string (the table uses ahash). Three kinds never collide, because the first byte tags them:
//!
//! - server keys, RFC 3261 (top Via branch starts with the magic cookie `z9hG4bK`): branch +
//!   sent-by + method, where ACK counts as INVITE (an ACK for a non-2xx final matches the
//!   INVITE server transaction) and CANCEL is its own transaction;
//! - server keys, RFC 2543 fallback (no magic cookie): Request-URI, From tag, Call-ID, CSeq
//!   number, top Via and method (ACK as INVITE). The To tag is left out for the INVITE class,
//!   because the INVITE usually has none while its ACK carries the tag of the response; the
//!   server transaction checks that tag itself ([`super::ServerTransaction::handle_request`]).
//!   For other methods the To tag is part of the key;
//! - client keys (17.1.3): top Via branch + CSeq method, for the responses a client
//!   transaction receives (and for the request that starts it).
//!
//! [`Key::cancelled_invite`] gives, for a CANCEL, the key of the INVITE it cancels (same rule,
//! method INVITE). What this module does not do: look anything up (see [`super::Table`]) or
//! decide what an unmatched message means (a stray ACK for a 2xx is forwarded by the proxy).

use ser_parser::{Message, Method, ParseError};

/// The RFC 3261 branch prefix (20.42): its presence says the branch is unique per transaction.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

const TAG_SERVER_3261: u8 = 1;
const TAG_SERVER_2543: u8 = 2;
const TAG_CLIENT: u8 = 3;

/// Why no key could be built from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected a request")]
    NotARequest,
    #[error("expected a response")]
    NotAResponse,
    #[error("expected a CANCEL")]
    NotACancel,
    #[error("top Via has no branch parameter")]
    NoBranch,
    #[error("missing Call-ID")]
    NoCallId,
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// An owned, hashable transaction identifier (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    bytes: Box<[u8]>,
}

impl Key {
    /// The server transaction a received request belongs to (17.2.3): ACK maps to its INVITE,
    /// CANCEL to a CANCEL transaction of its own.
    pub fn server(msg: &Message<'_>) -> Result<Self, KeyError> {
        let method = msg.method().ok_or(KeyError::NotARequest)?;
        let method = match method {
            Method::Ack => Method::Invite,
            m => m,
        };
        Self::server_with_method(msg, method)
    }

    /// For a CANCEL, the key of the INVITE server transaction it cancels (9.2: same matching
    /// rule, method INVITE).
    pub fn cancelled_invite(msg: &Message<'_>) -> Result<Self, KeyError> {
        if msg.method() != Some(Method::Cancel) {
            return Err(KeyError::NotACancel);
        }
        Self::server_with_method(msg, Method::Invite)
    }

    /// The client transaction a received response belongs to, or the key of a request this
    /// element sends (17.1.3: top Via branch + CSeq method).
    pub fn client(msg: &Message<'_>) -> Result<Self, KeyError> {
        let via = msg.top_via()?;
        let branch = via.branch.ok_or(KeyError::NoBranch)?;
        let cseq = msg.cseq()?;
        let mut b = Builder::new(TAG_CLIENT);
        b.part(branch.as_bytes());
        b.part(cseq.method.as_str().as_bytes());
        Ok(b.finish())
    }

    /// The client key of a request this element writes itself, from its Via branch and
    /// CSeq method, without parsing it (what [`Self::client`] gives for the written bytes).
    pub fn client_from(branch: &str, method: &str) -> Self {
        let mut b = Builder::new(TAG_CLIENT);
        b.part(branch.as_bytes());
        b.part(method.as_bytes());
        b.finish()
    }

    /// True for a server key built by the RFC 2543 fallback.
    pub fn is_rfc2543(&self) -> bool {
        self.bytes.first() == Some(&TAG_SERVER_2543)
    }

    /// True for a client key.
    pub fn is_client(&self) -> bool {
        self.bytes.first() == Some(&TAG_CLIENT)
    }

    fn server_with_method(msg: &Message<'_>, method: Method<'_>) -> Result<Self, KeyError> {
        let via = msg.top_via()?;
        let method = method.as_str().as_bytes();
        match via.branch {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => {
                let mut b = Builder::new(TAG_SERVER_3261);
                b.part(branch.as_bytes());
                // sent-by: host compared case-insensitively, port as written.
                b.part_lower(via.host_str.as_bytes());
                match via.port {
                    Some(p) => b.part(&p.to_be_bytes()),
                    None => b.part(b""),
                }
                b.part(method);
                Ok(b.finish())
            }
            _ => {
                let buf = msg.buf();
                let mut b = Builder::new(TAG_SERVER_2543);
                b.part(msg.request_uri().unwrap_or_default().as_bytes());
                b.part(msg.from()?.tag.unwrap_or_default().as_bytes());
                // For INVITE/ACK/CANCEL the To tag is checked by the transaction instead.
                if method != b"INVITE" {
                    b.part(msg.to()?.tag.unwrap_or_default().as_bytes());
                }
                b.part(msg.call_id().ok_or(KeyError::NoCallId)?);
                b.part(&msg.cseq()?.number.to_be_bytes());
                b.part(buf.get(via.range.clone()).unwrap_or_default());
                b.part(method);
                Ok(b.finish())
            }
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Key({})",
            String::from_utf8_lossy(&self.bytes).escape_debug()
        )
    }
}

/// Length-prefixed concatenation, so that ("ab","c") and ("a","bc") differ.
struct Builder(Vec<u8>);

impl Builder {
    fn new(tag: u8) -> Self {
        let mut v = Vec::with_capacity(96);
        v.push(tag);
        Self(v)
    }

    fn len(&mut self, n: usize) {
        // Parts come from one datagram (< 64 KiB), but saturate rather than wrap.
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn part(&mut self, p: &[u8]) {
        self.len(p.len());
        self.0.extend_from_slice(p);
    }

    fn part_lower(&mut self, p: &[u8]) {
        self.len(p.len());
        self.0.extend(p.iter().map(u8::to_ascii_lowercase));
    }

    fn finish(self) -> Key {
        Key {
            bytes: self.0.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::sim::msgs;

    fn key(b: &[u8]) -> Key {
        Key::server(&ser_parser::parse(b).unwrap()).unwrap()
    }

    #[test]
    fn rfc3261_ack_matches_invite_cancel_is_its_own() {
        let inv = msgs::invite("z9hG4bKabc", 1, None);
        let ack = msgs::ack_for("z9hG4bKabc", 1, Some("totag"));
        let cancel = msgs::cancel("z9hG4bKabc", 1);
        assert!(!key(&inv).is_rfc2543());
        assert_eq!(key(&inv), key(&ack));
        assert_ne!(key(&inv), key(&cancel));
        let c = ser_parser::parse(&cancel).unwrap();
        assert_eq!(Key::cancelled_invite(&c).unwrap(), key(&inv));
        // Another branch, another transaction.
        assert_ne!(key(&inv), key(&msgs::invite("z9hG4bKabd", 1, None)));
    }

    #[test]
    fn sent_by_host_is_case_insensitive() {
        let a = msgs::invite("z9hG4bKx", 1, None);
        let b = String::from_utf8(a.clone())
            .unwrap()
            .replace("uac.example.com", "UAC.Example.COM");
        assert_eq!(key(&a), key(b.as_bytes()));
        let c = String::from_utf8(a.clone())
            .unwrap()
            .replace("uac.example.com:5060", "uac.example.com:5070");
        assert_ne!(key(&a), key(c.as_bytes()));
    }

    #[test]
    fn rfc2543_fallback() {
        let inv = msgs::invite("1234", 7, None);
        let ack = msgs::ack_for("1234", 7, Some("totag"));
        let cancel = msgs::cancel("1234", 7);
        assert!(key(&inv).is_rfc2543());
        assert_eq!(key(&inv), key(&ack));
        assert_ne!(key(&inv), key(&cancel));
        let c = ser_parser::parse(&cancel).unwrap();
        assert_eq!(Key::cancelled_invite(&c).unwrap(), key(&inv));
        // A different CSeq number is a different transaction.
        assert_ne!(key(&inv), key(&msgs::invite("1234", 8, None)));
        // Without a branch at all the fallback applies too.
        let nob = String::from_utf8(inv.clone())
            .unwrap()
            .replace(";branch=1234", "");
        assert!(key(nob.as_bytes()).is_rfc2543());
        // Non-INVITE: the To tag counts.
        let bye1 = msgs::request("BYE", "1234", 9, Some("a"));
        let bye2 = msgs::request("BYE", "1234", 9, Some("b"));
        assert_ne!(key(&bye1), key(&bye2));
    }

    #[test]
    fn client_key_is_branch_and_cseq_method() {
        let inv_bytes = msgs::invite("z9hG4bKc", 3, None);
        let inv = ser_parser::parse(&inv_bytes).unwrap();
        let resp_bytes = msgs::response(&msgs::invite("z9hG4bKc", 3, None), 486, Some("t"));
        let resp = ser_parser::parse(&resp_bytes).unwrap();
        let k = Key::client(&inv).unwrap();
        assert!(k.is_client());
        assert_eq!(k, Key::client(&resp).unwrap());
        let cancel_resp = msgs::response(&msgs::cancel("z9hG4bKc", 3), 200, Some("t"));
        let cr = ser_parser::parse(&cancel_resp).unwrap();
        assert_ne!(k, Key::client(&cr).unwrap());
        assert_ne!(k, Key::server(&inv).unwrap());
        assert_eq!(Key::server(&resp), Err(KeyError::NotARequest));
    }
}
