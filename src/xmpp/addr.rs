//! The jabber module's address form, both ways, sans-IO.
//!
//! A SIP user writes to an XMPP user as `sip:user<delim>xmpp.domain@gateway_domain` (the
//! delimiter is `*` by default: `sip:alice*jabber.org@sip-xmpp.example.org`), which becomes the
//! JID `alice@jabber.org`. An XMPP user writes to a SIP user as `user@xmpp_domain` (the
//! component's domain) for a user of `sip_domain`, or `user<delim>sip.domain@xmpp_domain` for
//! one of another SIP domain; the SIP sender appears to XMPP the same way, and the XMPP
//! sender appears to SIP as `sip:user<delim>xmpp.domain@gateway_domain`, so a reply goes back
//! through the gateway.
//!
//! The SIP user part is percent-decoded before it is split and percent-encoded (RFC 3261's
//! `user` characters) when it is written; a JID node with characters RFC 7622 forbids, or a
//! domain that is not a host name or address, is refused: nothing from one network reaches a
//! header of the other unchecked.

/// The gateway's names and delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrMap {
    pub delim: char,
    /// The component's own domain (the JIDs of SIP users).
    pub xmpp_domain: String,
    /// The SIP domain of the XMPP users' SIP addresses.
    pub gateway_domain: String,
    /// The SIP domain of users addressed as `user@xmpp_domain`.
    pub sip_domain: String,
}

/// A JID's parts (RFC 7622: `node@domain/resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jid<'a> {
    pub node: Option<&'a str>,
    pub domain: &'a str,
    pub resource: Option<&'a str>,
}

/// Splits a JID; None when a part is empty or not valid.
pub fn parse_jid(s: &str) -> Option<Jid<'_>> {
    let (bare, resource) = match s.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (s, None),
    };
    let (node, domain) = match bare.rsplit_once('@') {
        Some((n, d)) => (Some(n), d),
        None => (None, bare),
    };
    if node.is_some_and(|n| !valid_node(n))
        || !valid_host(domain)
        || resource.is_some_and(|r| r.is_empty() || r.len() > 1023)
    {
        return None;
    }
    Some(Jid {
        node,
        domain,
        resource,
    })
}

/// A JID node (RFC 7622 3.3.1): not empty, at most 1023 bytes, none of `"&'/:<>@`, no
/// white space or control characters.
pub fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 1023
        && !n
            .chars()
            .any(|c| "\"&'/:<>@".contains(c) || c.is_whitespace() || c.is_control())
}

/// A host name or address as both SIP and XMPP take it: letters, digits, `-`, `.`, or an
/// IPv6 reference in brackets.
pub fn valid_host(h: &str) -> bool {
    if let Some(v6) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with('.')
}

/// RFC 3261's `user` characters that need no escaping (unreserved and user-unreserved).
fn user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)
}

/// A SIP URI's user part, percent-encoded where RFC 3261 wants it.
pub fn escape_user(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if user_char(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A SIP URI's user part decoded; None when an escape is broken or the result is not UTF-8.
pub fn unescape_user(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits: from_str_radix alone would take a sign ("%+f").
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl AddrMap {
    /// The JID a SIP Request-URI names: `user<delim>domain@gateway_domain` → `user@domain`.
    /// None when the URI is not of that form.
    pub fn sip_to_jid(&self, user: &str, host: &str) -> Option<String> {
        if !host.eq_ignore_ascii_case(&self.gateway_domain) {
            return None;
        }
        let user = unescape_user(user)?;
        let (node, domain) = user.rsplit_once(self.delim)?;
        (valid_node(node) && valid_host(domain)).then(|| format!("{node}@{domain}"))
    }

    /// The JID a SIP sender (its From URI's user and host) has on the XMPP side.
    pub fn sip_sender_jid(&self, user: &str, host: &str) -> Option<String> {
        let user = unescape_user(user)?;
        let node = if host.eq_ignore_ascii_case(&self.sip_domain) {
            user
        } else if valid_host(host) {
            format!("{user}{}{host}", self.delim)
        } else {
            return None;
        };
        valid_node(&node).then(|| format!("{node}@{}", self.xmpp_domain))
    }

    /// The SIP Request-URI for a JID's node on the component (`user` → `sip:user@sip_domain`,
    /// `user<delim>domain` → `sip:user@domain`).
    pub fn jid_to_sip(&self, node: &str) -> Option<String> {
        let (user, host) = match node.rsplit_once(self.delim) {
            Some((u, h)) if !u.is_empty() && valid_host(h) => (u, h),
            Some(_) => return None,
            None => (node, self.sip_domain.as_str()),
        };
        Some(format!("sip:{}@{host}", escape_user(user)))
    }

    /// The SIP address of an XMPP sender (its bare JID): `sip:node<delim>domain@gateway_domain`.
    pub fn xmpp_sender_sip(&self, jid: &Jid<'_>) -> Option<String> {
        let node = jid.node?;
        Some(format!(
            "sip:{}@{}",
            escape_user(&format!("{node}{}{}", self.delim, jid.domain)),
            self.gateway_domain
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> AddrMap {
        AddrMap {
            delim: '*',
            xmpp_domain: String::from("sip.xmpp.example"),
            gateway_domain: String::from("xmpp.sip.example"),
            sip_domain: String::from("sip.example"),
        }
    }

    #[test]
    fn sip_to_xmpp_addresses() {
        let m = map();
        assert_eq!(
            m.sip_to_jid("alice*jabber.org", "XMPP.sip.example")
                .as_deref(),
            Some("alice@jabber.org")
        );
        // The last delimiter splits; escapes are decoded first.
        assert_eq!(
            m.sip_to_jid("a*b%2Ac*jabber.org", "xmpp.sip.example")
                .as_deref(),
            Some("a*b*c@jabber.org")
        );
        assert_eq!(m.sip_to_jid("alice", "xmpp.sip.example"), None);
        assert_eq!(m.sip_to_jid("alice*jabber.org", "other.example"), None);
        assert_eq!(m.sip_to_jid("al<ice*jabber.org", "xmpp.sip.example"), None);
        assert_eq!(m.sip_to_jid("alice*bad host", "xmpp.sip.example"), None);
        assert_eq!(m.sip_to_jid("%ZZ*x.org", "xmpp.sip.example"), None);
        // A sign is no hex digit (u8::from_str_radix alone took "%+f" as 0x0f).
        assert_eq!(unescape_user("a%+fb"), None);
        assert_eq!(unescape_user("a%2fb").as_deref(), Some("a/b"));
        assert_eq!(
            m.sip_sender_jid("bob", "sip.example").as_deref(),
            Some("bob@sip.xmpp.example")
        );
        assert_eq!(
            m.sip_sender_jid("bob", "other.example").as_deref(),
            Some("bob*other.example@sip.xmpp.example")
        );
        assert_eq!(m.sip_sender_jid("b%40b", "sip.example"), None);
    }

    #[test]
    fn xmpp_to_sip_addresses() {
        let m = map();
        assert_eq!(m.jid_to_sip("bob").as_deref(), Some("sip:bob@sip.example"));
        assert_eq!(
            m.jid_to_sip("bob*other.example").as_deref(),
            Some("sip:bob@other.example")
        );
        assert_eq!(m.jid_to_sip("bob*bad\r\nhost"), None);
        assert_eq!(m.jid_to_sip("*other.example"), None);
        assert_eq!(
            m.jid_to_sip("j\u{f6}rg%").as_deref(),
            Some("sip:j%C3%B6rg%25@sip.example")
        );
        let j = parse_jid("alice@jabber.org/phone").unwrap();
        assert_eq!(j.node, Some("alice"));
        assert_eq!(j.resource, Some("phone"));
        assert_eq!(
            m.xmpp_sender_sip(&j).as_deref(),
            Some("sip:alice*jabber.org@xmpp.sip.example")
        );
        // Round trip: the SIP side's reply address names the same JID.
        assert_eq!(
            m.sip_to_jid("alice*jabber.org", "xmpp.sip.example")
                .as_deref(),
            Some("alice@jabber.org")
        );
        assert_eq!(m.xmpp_sender_sip(&parse_jid("jabber.org").unwrap()), None);
    }

    #[test]
    fn jids_are_checked() {
        assert!(parse_jid("a@b").is_some());
        assert!(parse_jid("b").is_some());
        assert!(parse_jid("a@[::1]").is_some());
        for bad in ["@b", "a@", "a b@c", "a@b c", "a@b/", "a:b@c", "a@b\r\n", ""] {
            assert_eq!(parse_jid(bad), None, "{bad:?}");
        }
        assert_eq!(unescape_user("%e2%98%ba").as_deref(), Some("\u{263A}"));
        assert_eq!(unescape_user("%ff"), None);
        assert_eq!(unescape_user("%4"), None);
        assert_eq!(escape_user("a b@c:%"), "a%20b%40c%3A%25");
    }
}
