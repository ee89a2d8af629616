//! Typed parse errors and the SIP outcome each one calls for.
//!
//! A [`ParseError`] is small and `Copy` (httparse's habit): a kind, the offset in the message
//! where the problem was seen, and whether the message was a request. [`ParseError::outcome`]
//! turns it into what the element must do (RFC 3261 8.2, 16.3; RFC 4475 section 3.1.2): a bad
//! request is answered (400, or 505 for a SIP version we do not speak), while a bad response
//! or bytes that are not SIP at all are dropped, since nobody may answer a response.
//!
//! This module does not build the reply itself; see [`crate::write_reply`].

use crate::header_name::HeaderName;

/// What went wrong while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The first line is neither a SIP request line nor a SIP status line.
    #[error("not a SIP message")]
    NotSip,
    /// The message ends in the middle of the start line or of a header field.
    #[error("message truncated")]
    Truncated,
    /// The Request-URI has whitespace, angle brackets, bad escapes, URI headers, ...
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// The SIP-Version is not SIP/2.0.
    #[error("SIP version not supported")]
    VersionNotSupported,
    /// The status code is not three digits in 100..=699.
    #[error("bad status code")]
    BadStatusCode,
    /// A header line has no colon or its name is not a token.
    #[error("malformed header name")]
    BadHeaderName,
    /// A header value holds control characters.
    #[error("malformed header value")]
    BadHeaderValue,
    /// More header lines than [`crate::MAX_HEADERS`].
    #[error("too many headers")]
    TooManyHeaders,
    /// A mandatory header (Via, From, To, Call-ID, CSeq) is absent.
    #[error("missing {0} header")]
    MissingHeader(HeaderName),
    /// A header that may appear only once appears with different values.
    #[error("duplicate {0} header")]
    DuplicateHeader(HeaderName),
    /// The value of this header does not follow its grammar.
    #[error("malformed {0} header")]
    BadHeader(HeaderName),
    /// Content-Length is not a number, negative, too large, or given twice with different values.
    #[error("bad Content-Length")]
    BadContentLength,
    /// The datagram holds fewer body octets than Content-Length says.
    #[error("body shorter than Content-Length")]
    BodyTooShort,
    /// The CSeq number is not a number below 2^31 or its method is not a token.
    #[error("bad CSeq")]
    BadCSeq,
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// A URI does not follow RFC 3261 19.1 (or RFC 3966 for tel).
    #[error("malformed URI")]
    BadUri,
    /// An Authorization header whose scheme is not Digest.
    #[error("authorization scheme is not Digest")]
    NotDigest,
}

/// A parse failure: what, where (offset into the message), and whether it was a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at offset {offset}")]
pub struct ParseError {
    kind: ErrorKind,
    offset: u32,
    request: bool,
}

/// What the element does with a message that failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Discard silently: responses, and bytes that are not SIP.
    Drop,
    /// Answer the request statelessly with this status.
    Reply { code: u16, reason: &'static str },
}

impl ParseError {
    /// An error seen at `offset`; assumed to be about a request until [`Self::in_request`] says.
    pub(crate) fn new(kind: ErrorKind, offset: usize) -> Self {
        ParseError {
            kind,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            request: true,
        }
    }

    /// Records whether the message was a request (accessors know, the value parsers do not).
    pub(crate) fn in_request(mut self, request: bool) -> Self {
        self.request = request;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Offset into the message (`Message::buf`, or the string given to `parse_uri`).
    pub fn offset(&self) -> usize {
        self.offset as usize
    }

    pub fn is_request(&self) -> bool {
        self.request
    }

    /// The SIP outcome: a request gets 400 (505 for the version), a response is dropped.
    pub fn outcome(&self) -> Outcome {
        if !self.request {
            return Outcome::Drop;
        }
        let reason = match self.kind {
            ErrorKind::NotSip => return Outcome::Drop,
            ErrorKind::VersionNotSupported => {
                return Outcome::Reply {
                    code: 505,
                    reason: "Version Not Supported",
                }
            }
            ErrorKind::BadRequestUri => "Bad Request-URI",
            ErrorKind::MissingHeader(h) => match h {
                HeaderName::Via => "Missing Via",
                HeaderName::From => "Missing From",
                HeaderName::To => "Missing To",
                HeaderName::CallId => "Missing Call-ID",
                HeaderName::CSeq => "Missing CSeq",
                _ => "Missing Header",
            },
            ErrorKind::DuplicateHeader(_) => "Duplicate Header",
            ErrorKind::BadHeader(h) => match h {
                HeaderName::Via => "Bad Via",
                HeaderName::From => "Bad From",
                HeaderName::To => "Bad To",
                HeaderName::CallId => "Bad Call-ID",
                HeaderName::Contact => "Bad Contact",
                HeaderName::MaxForwards => "Bad Max-Forwards",
                HeaderName::Expires => "Bad Expires",
                HeaderName::Route => "Bad Route",
                HeaderName::RecordRoute => "Bad Record-Route",
                _ => "Bad Header",
            },
            ErrorKind::BadContentLength | ErrorKind::BodyTooShort => "Bad Content-Length",
            ErrorKind::BadCSeq => "Bad CSeq",
            ErrorKind::CSeqMethodMismatch => "CSeq Method Mismatch",
            _ => "Bad Request",
        };
        Outcome::Reply { code: 400, reason }
    }
}
