//! The one builder of the replies we make ourselves, statelessly (sl, a 400 for a request that
//! does not parse, a 503 while draining or when the transaction table is full) or as a
//! transaction's own reply (tm's 100, t_reply, 408, 487, 500).
//!
//! Every such reply copies Via, From, To, Call-ID and CSeq from the request (RFC 3261
//! §8.2.6.2), carries our To-tag (one derived from the request, so a retransmission gets the
//! same reply; none on a 100), `received`/`rport` on the top Via (§18.2.1, RFC 3581), the
//! caller's header lines and our `Server:` header when `server_signature` is on.

use std::net::SocketAddr;

use ser_parser::{Message, Method, ReplySpec};

use super::{hash64, received_for, response_dest, Arrival, Local, Outbox};

/// What our own replies carry: our To-tag prefix and the Server header.
#[derive(Debug, Clone, Default)]
pub struct ReplyIdentity {
    /// Prefix of the To-tags of our replies; lets sl recognise ACKs to them.
    pub tag_prefix: String,
    /// `Server: ...\r\n`, added when `server_signature` is on; empty when off.
    pub server_header: String,
}

/// One reply to make.
#[derive(Debug, Clone, Copy)]
pub struct LocalReply<'a> {
    pub code: u16,
    pub reason: &'a [u8],
    /// Whole header lines, each ending in CRLF (Retry-After, Contact, WWW-Authenticate...).
    pub headers: &'a str,
}

/// `{:08x}` of `v`, without the formatting machinery (every reply's To-tag has one).
fn push_hex8(out: &mut String, v: u32) {
    for k in (0..8).rev() {
        let d = (v >> (k * 4)) & 0xf;
        out.push(char::from_digit(d, 16).unwrap_or('0'));
    }
}

impl ReplyIdentity {
    /// The identity of server process `pid`; `server_header` empty for no Server header.
    pub fn new(pid: u32, server_header: String) -> Self {
        Self {
            tag_prefix: format!("{:08x}", hash64(&[&pid.to_be_bytes(), b"ser-tag"]) as u32),
            server_header,
        }
    }

    /// The To-tag of our replies to `msg`: the prefix and a hash of the request's identity.
    pub fn to_tag(&self, msg: &Message<'_>, out: &mut String) {
        let call_id = msg.call_id().unwrap_or_default();
        let from_tag = msg.from().ok().and_then(|f| f.tag).unwrap_or_default();
        let branch = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch)
            .unwrap_or_default();
        let cseq = msg.cseq().map(|c| c.number).unwrap_or(0);
        let h = hash64(&[
            call_id,
            from_tag.as_bytes(),
            branch.as_bytes(),
            &cseq.to_be_bytes(),
        ]);
        out.clear();
        out.reserve(self.tag_prefix.len() + 9);
        out.push_str(&self.tag_prefix);
        out.push('-');
        push_hex8(out, h as u32);
    }

    /// An ACK whose To-tag is one of ours acknowledges a negative reply we sent statelessly:
    /// it ends there.
    pub fn is_ack_to_local_reply(&self, msg: &Message<'_>) -> bool {
        if !matches!(msg.method(), Some(Method::Ack)) {
            return false;
        }
        msg.to().ok().and_then(|t| t.tag).is_some_and(|tag| {
            tag.len() > self.tag_prefix.len() && tag.starts_with(&self.tag_prefix)
        })
    }

    /// Writes reply `r` to `req`, which came from `src`, into `buf`.
    pub fn write(&self, req: &Message<'_>, src: SocketAddr, r: &LocalReply<'_>, buf: &mut Vec<u8>) {
        let mut tag = String::new();
        if r.code > 100 {
            self.to_tag(req, &mut tag);
        }
        let (received, rport) = match req.top_via() {
            Ok(v) => received_for(&v, src),
            Err(_) => (Some(src.ip()), None),
        };
        let headers;
        let extra = if self.server_header.is_empty() {
            r.headers
        } else {
            headers = format!("{}{}", r.headers, self.server_header);
            &headers
        };
        let spec = ReplySpec {
            code: r.code,
            reason: r.reason,
            to_tag: (r.code > 100).then_some(tag.as_bytes()),
            received,
            rport,
            extra_headers: extra.as_bytes(),
        };
        ser_parser::write_reply(req, &spec, buf);
    }

    /// Writes reply `r` to `req` (which arrived as `at`) into `out`, addressed as RFC 3261
    /// §18.2.2 says. An ACK is never answered.
    pub fn reply(
        &self,
        local: &Local,
        req: &Message<'_>,
        at: &Arrival,
        r: &LocalReply<'_>,
        out: &mut Outbox,
    ) {
        if matches!(req.method(), Some(Method::Ack)) {
            return;
        }
        let dst = response_dest(local, req, at);
        out.push(dst, |buf| self.write(req, at.src, r, buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_tags_are_eight_lowercase_digits() {
        for v in [0u32, 1, 0xabc, 0xdead_beef, u32::MAX] {
            let mut s = String::new();
            push_hex8(&mut s, v);
            assert_eq!(s, format!("{v:08x}"));
        }
    }

    const REQ: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\n\
From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn replies_carry_tag_received_headers_and_server() {
        let id = ReplyIdentity::new(42, "Server: ser\r\n".into());
        let m = ser_parser::parse(REQ).unwrap();
        let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut buf = Vec::new();
        let r = LocalReply {
            code: 503,
            reason: b"Service Unavailable",
            headers: "Retry-After: 5\r\n",
        };
        id.write(&m, src, &r, &mut buf);
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains(";received=192.0.2.1"), "{text}");
        assert!(text.contains("Retry-After: 5\r\nServer: ser\r\n"), "{text}");
        let reply = ser_parser::parse(&buf).unwrap();
        let tag = reply.to().unwrap().tag.unwrap().to_string();
        assert!(tag.starts_with(&id.tag_prefix));
        // The same request gets the same tag; a 100 gets none.
        let mut again = String::new();
        id.to_tag(&m, &mut again);
        assert_eq!(tag, again);
        let mut buf = Vec::new();
        let trying = LocalReply {
            code: 100,
            reason: b"Trying",
            headers: "",
        };
        id.write(&m, src, &trying, &mut buf);
        assert!(ser_parser::parse(&buf).unwrap().to().unwrap().tag.is_none());
    }
}
