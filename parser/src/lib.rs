//! `ser-parser`: SIP (RFC 3261) messages on the wire, zero copy.
//!
//! A received datagram is parsed into a [`Message`], which is an index of offsets into the
//! receive buffer: the start line, one [`Header`] entry per header field line (kept inline in a
//! `SmallVec`, so a typical INVITE allocates nothing) and the body. Header values are parsed on
//! demand by the accessors ([`Message::top_via`], [`Message::cseq`], [`Message::from`], ...);
//! [`parse`] additionally validates eagerly everything RFC 4475 says an element must reject, so
//! that a broken message is answered with a typed error (and [`ParseError::outcome`]) even when
//! the routing script would never look at the broken header.
//!
//! Changes to a message are recorded as splices in [`Edits`] and applied once by [`write`] into
//! a buffer the caller owns; [`write_reply`] builds a stateless reply to a request.
//!
//! What this crate does not do: it never touches sockets or clocks, does not frame stream
//! transports (a buffer given to [`parse`] is one whole datagram), does not interpret bodies
//! (SDP, multipart) and does not unescape or copy values: every value borrows from the buffer.
//!
//! Key types: [`Message`], [`Header`], [`HeaderName`], [`Method`], [`Via`], [`NameAddr`],
//! [`Contact`], [`CSeq`], [`DigestCredentials`], [`Uri`], [`Edits`], [`ReplySpec`],
//! [`ParseError`] and [`Outcome`].

mod edit;
mod error;
mod header_name;
mod headers;
mod message;
mod method;
mod reply;
mod scan;
mod uri;
mod validate;

pub use edit::{fmt_u64, fmt_usize, write, EditMark, Edits};
pub use error::{ErrorKind, Outcome, ParseError};
pub use header_name::HeaderName;
pub use headers::auth::{parse_credentials, DigestCredentials};
pub use headers::name_addr::{Contact, NameAddr};
pub use headers::simple::CSeq;
pub use headers::via::Via;
pub use headers::{Header, Values};
pub use message::{parse, parse_lenient, parse_lenient_in, Message, MAX_HEADERS};
pub use method::Method;
pub use reply::{write_reply, ReplySpec};
pub use uri::{parse_uri, uri_eq, Host, Scheme, Uri};
