//! SIP request methods (RFC 3261 7.1 and the extensions a proxy meets every day).
//!
//! Methods are case-sensitive tokens: `INVITE` is INVITE, `invite` is an extension method, and
//! `RE%47IST%45R` (RFC 4475 esc02) is not REGISTER. Unknown methods borrow their text.

use crate::scan::is_token;

/// A request method; unknown methods keep their text (RFC 4475 intmeth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'b> {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Prack,
    Update,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(&'b str),
}

impl<'b> Method<'b> {
    /// The method named by `b`, or None when `b` is not a token.
    pub fn from_bytes(b: &'b [u8]) -> Option<Method<'b>> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => {
                if b.is_empty() || !b.iter().all(|&c| is_token(c)) {
                    return None;
                }
                // Tokens are ASCII, so this never fails.
                Method::Other(std::str::from_utf8(b).ok()?)
            }
        })
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &'b str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
