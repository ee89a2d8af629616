//! Header field names: the [`HeaderName`] enum of the names the proxy knows, their lookup
//! (case-insensitive, compact forms included) and their canonical spelling.
//!
//! It sits at the bottom of the crate, below `error` (whose kinds name the header at fault) and
//! `headers` (the index entries and value grammars): it imports nothing from the crate. It
//! does not parse header lines or values; see `headers` for that.

/// Header names the proxy knows; every other name is `Other` (see [`crate::Header::raw_name`]).
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
