//! Header fields: names (case-insensitive, compact forms), the index entry [`Header`], and the
//! iterator [`Values`] over the comma-separated values of every line of one name.
//!
//! The value grammars live in submodules, each a function over one header value that returns a
//! borrowed view plus the offset where the next comma-separated value starts: `via` (Via),
//! `name_addr` (From, To, Contact, Route, Record-Route), `simple` (CSeq, Call-ID, numbers) and
//! `auth` (Digest credentials). Nothing here allocates or copies.

pub mod auth;
pub mod name_addr;
pub mod simple;
pub mod via;

use std::ops::Range;

use crate::error::{ErrorKind, ParseError};
use crate::scan::{at, is_gen_value, is_token, quoted_end, run, skip_lws};

/// Header names the proxy knows; every other name is `Other` (see [`Header::raw_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Contact,
    Expires,
    Route,
    RecordRoute,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Allow,
    Server,
    UserAgent,
    Warning,
    Date,
    Subject,
    Event,
    Accept,
    ContentEncoding,
    AllowEvents,
    Other,
}

impl HeaderName {
    /// Looks a name up case-insensitively, compact forms included (RFC 3261 7.3.3 and the
    /// IANA registry: v f t i m l c k s e o u).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name.first().map(u8::to_ascii_lowercase) {
                Some(b'v') => HeaderName::Via,
                Some(b'f') => HeaderName::From,
                Some(b't') => HeaderName::To,
                Some(b'i') => HeaderName::CallId,
                Some(b'm') => HeaderName::Contact,
                Some(b'l') => HeaderName::ContentLength,
                Some(b'c') => HeaderName::ContentType,
                Some(b'k') => HeaderName::Supported,
                Some(b's') => HeaderName::Subject,
                Some(b'e') => HeaderName::ContentEncoding,
                Some(b'o') => HeaderName::Event,
                Some(b'u') => HeaderName::AllowEvents,
                _ => HeaderName::Other,
            };
        }
        // Length and first letter pick the one candidate (Call-ID and Contact also need the
        // second); one comparison then settles it. On every header of every message.
        let low = |k: usize| name.get(k).map_or(0, |b| b | 0x20);
        let candidate = match (name.len(), low(0)) {
            (2, b't') => HeaderName::To,
            (3, b'v') => HeaderName::Via,
            (4, b'f') => HeaderName::From,
            (4, b'c') => HeaderName::CSeq,
            (4, b'd') => HeaderName::Date,
            (5, b'r') => HeaderName::Route,
            (5, b'a') => HeaderName::Allow,
            (5, b'e') => HeaderName::Event,
            (6, b's') => HeaderName::Server,
            (6, b'a') => HeaderName::Accept,
            (7, b'c') if low(1) == b'a' => HeaderName::CallId,
            (7, b'c') => HeaderName::Contact,
            (7, b'e') => HeaderName::Expires,
            (7, b'r') => HeaderName::Require,
            (7, b's') => HeaderName::Subject,
            (7, b'w') => HeaderName::Warning,
            (9, b's') => HeaderName::Supported,
            (10, b'u') => HeaderName::UserAgent,
            (11, b'u') => HeaderName::Unsupported,
            (12, b'm') => HeaderName::MaxForwards,
            (12, b'r') => HeaderName::RecordRoute,
            (12, b'c') => HeaderName::ContentType,
            (12, b'a') => HeaderName::AllowEvents,
            (13, b'a') => HeaderName::Authorization,
            (13, b'p') => HeaderName::ProxyRequire,
            (14, b'c') => HeaderName::ContentLength,
            (16, b'w') => HeaderName::WwwAuthenticate,
            (16, b'c') => HeaderName::ContentEncoding,
            (18, b'p') => HeaderName::ProxyAuthenticate,
            (19, b'p') => HeaderName::ProxyAuthorization,
            _ => return HeaderName::Other,
        };
        // Case folded by one bit: the canonical names are letters (either case matches) and
        // dashes (only a dash matches).
        let same = candidate
            .as_str()
            .bytes()
            .zip(name)
            .all(|(c, &n)| (c | 0x20) == (n | 0x20) && (c.is_ascii_alphabetic() || c == n));
        if same {
            candidate
        } else {
            HeaderName::Other
        }
    }

    /// The canonical (long) name; "" for `Other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Contact => "Contact",
            HeaderName::Expires => "Expires",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::Server => "Server",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Warning => "Warning",
            HeaderName::Date => "Date",
            HeaderName::Subject => "Subject",
            HeaderName::Event => "Event",
            HeaderName::Accept => "Accept",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::Other => "",
        }
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if *self == HeaderName::Other {
            "extension"
        } else {
            self.as_str()
        })
    }
}

/// One header field line of the index (a folded field is one entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'b> {
    pub name: HeaderName,
    /// The name as written ("v", "MaX-fOrWaRdS").
    pub raw_name: &'b [u8],
    /// The value: from the first non-blank octet after the colon to the last one before the
    /// line end. Folds inside stay as they are (CRLF + white space).
    pub value: &'b [u8],
    /// The whole field including its line end, as offsets into the message.
    pub line: Range<usize>,
    pub value_range: Range<usize>,
}

/// One generic parameter (`;name[=value]`) of a header value, as positions in the value.
pub(crate) struct Param {
    pub(crate) name: Range<usize>,
    /// The value, quotes included for a quoted-string.
    pub(crate) value: Option<Range<usize>>,
    /// Just past the parameter.
    pub(crate) end: usize,
}

/// If the next non-blank byte at `i` is ';', parses the parameter after it: a token name,
/// optionally "=" and a token, host or quoted-string value (LWS allowed around both, as in
/// RFC 4475 wsinv). Empty names or values are errors (RFC 4475 badinv01).
pub(crate) fn param_at(
    s: &[u8],
    i: usize,
    base: usize,
    hn: HeaderName,
) -> Result<Option<Param>, ParseError> {
    let j = skip_lws(s, i);
    if at(s, j) != b';' {
        return Ok(None);
    }
    let err = |k: usize| ParseError::new(ErrorKind::BadHeader(hn), base + k);
    let n0 = skip_lws(s, j + 1);
    let n1 = run(s, n0, is_token);
    if n1 == n0 {
        return Err(err(n0));
    }
    let k = skip_lws(s, n1);
    if at(s, k) != b'=' {
        return Ok(Some(Param {
            name: n0..n1,
            value: None,
            end: n1,
        }));
    }
    let v0 = skip_lws(s, k + 1);
    let v1 = if at(s, v0) == b'"' {
        quoted_end(s, v0).ok_or(err(v0))?
    } else {
        run(s, v0, is_gen_value)
    };
    if v1 == v0 {
        return Err(err(v0));
    }
    Ok(Some(Param {
        name: n0..n1,
        value: Some(v0..v1),
        end: v1,
    }))
}

/// After a value ended at `i`: skip LWS, then a comma (next value) or the end; else an error.
pub(crate) fn next_value(
    s: &[u8],
    i: usize,
    base: usize,
    name: HeaderName,
) -> Result<usize, ParseError> {
    let j = skip_lws(s, i);
    match s.get(j) {
        None => Ok(s.len()),
        Some(b',') => {
            let k = skip_lws(s, j + 1);
            if k >= s.len() {
                // A trailing comma promises a value that never comes.
                Err(ParseError::new(ErrorKind::BadHeader(name), base + k))
            } else {
                Ok(k)
            }
        }
        Some(_) => Err(ParseError::new(ErrorKind::BadHeader(name), base + j)),
    }
}

/// Parses one comma-separated value at `pos` of a header value whose message offset is
/// `base`; returns the view and where the next value starts (or the value's length).
pub(crate) type ValueParser<'b, T> = fn(&'b [u8], usize, usize) -> Result<(T, usize), ParseError>;

/// Every value of every line named `name`, in order (RFC 3261 7.3.1: lines of one name are
/// one comma-separated list). Stops after the first error.
pub struct Values<'m, 'b, T> {
    headers: std::slice::Iter<'m, Header<'b>>,
    name: HeaderName,
    cur: Option<(&'m Header<'b>, usize)>,
    parse: ValueParser<'b, T>,
    request: bool,
    done: bool,
}

impl<'m, 'b, T> Values<'m, 'b, T> {
    pub(crate) fn new(
        headers: &'m [Header<'b>],
        name: HeaderName,
        parse: ValueParser<'b, T>,
        request: bool,
    ) -> Self {
        Values {
            headers: headers.iter(),
            name,
            cur: None,
            parse,
            request,
            done: false,
        }
    }
}

impl<'b, T> Iterator for Values<'_, 'b, T> {
    type Item = Result<T, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let (h, pos) = match self.cur {
                Some(c) => c,
                None => {
                    let name = self.name;
                    let h = self.headers.find(|h| h.name == name)?;
                    if h.value.is_empty() {
                        self.done = true;
                        let e = ParseError::new(ErrorKind::BadHeader(name), h.value_range.start);
                        return Some(Err(e.in_request(self.request)));
                    }
                    (h, 0)
                }
            };
            if pos >= h.value.len() {
                self.cur = None;
                continue;
            }
            return Some(match (self.parse)(h.value, h.value_range.start, pos) {
                Ok((t, next)) => {
                    self.cur = Some((h, next));
                    Ok(t)
                }
                Err(e) => {
                    self.done = true;
                    Err(e.in_request(self.request))
                }
            });
        }
    }
}
