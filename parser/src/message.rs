//! The message index: start line, header lines, body framing, and the header accessors.
//!
//! [`parse`] reads one datagram: leading CRLFs are skipped (RFC 3261 7.5 keep-alives), the
//! start line and every header line are indexed into a [`Message`] (a `SmallVec` of
//! [`Header`] entries that stays inline for up to 32 lines, so a typical INVITE allocates
//! nothing), the body is framed by Content-Length, and then `validate` (a layer below, which
//! sees only the header index) checks every header the RFCs make mandatory or that RFC 4475
//! breaks. [`parse_lenient`] stops after the index; it is how the server finds the
//! Via/From/To/Call-ID/CSeq lines it must echo in a 400.
//!
//! All offsets (`Header::line`, ranges in views, `ParseError::offset`) are relative to
//! [`Message::buf`], i.e. to the start line, leading CRLFs excluded.

use std::ops::Range;

use smallvec::SmallVec;

use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::headers::auth::{parse_digest, DigestCredentials};
use crate::headers::name_addr::{
    parse_contact, parse_record_route, parse_route, parse_single, Contact, NameAddr,
};
use crate::headers::simple::{parse_cseq, parse_number, CSeq};
use crate::headers::via::{parse_via, Via};
use crate::headers::{Header, Values};
use crate::method::Method;
use crate::scan::{at, is_token, run, skip_lws, skip_ws, sub, sub_str, trim_lws};
use crate::uri::{check_uri, Uri};
use crate::validate::{validate, Parsed};

/// The most header lines a message may have; more is `ErrorKind::TooManyHeaders`.
pub const MAX_HEADERS: usize = 256;

/// Header lines kept inline before the index spills to the heap.
const INLINE_HEADERS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
enum StartLine {
    Request {
        method: Range<usize>,
        uri: Range<usize>,
    },
    Response {
        status: u16,
        reason: Range<usize>,
    },
}

/// A parsed SIP message: an index into the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Message<'b> {
    buf: &'b [u8],
    start: StartLine,
    headers: SmallVec<[Header<'b>; INLINE_HEADERS]>,
    headers_end: usize,
    body_start: usize,
    /// What the strict parse checked and every layer above asks for again (keys,
    /// received/rport, reply routing, To-tags, the registrar's AOR and Contact, `myself`):
    /// the top Via and the Via count, From, To, a lone Contact and the Request-URI, parsed
    /// once. Empty after [`parse_lenient`]: then parsed when asked.
    parsed: Parsed<'b>,
}

/// Parses one datagram strictly: everything RFC 4475 says to reject is rejected here.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    let mut slot = None;
    let msg = index_in(buf, true, &mut slot)?;
    let ruri = msg.parsed.ruri.take();
    msg.parsed = validate(&msg.headers, msg.method(), msg.headers_end)
        .map_err(|e| e.in_request(msg.is_request()))?;
    msg.parsed.ruri = ruri;
    slot.ok_or_else(|| ParseError::new(ErrorKind::Truncated, 0))
}

/// Start line and header index only, no value checks: for answering a request that failed
/// [`parse`] (the 400 must echo its Via, From, To, Call-ID and CSeq). None if the first line
/// is not a SIP start line at all.
#[inline]
pub fn parse_lenient(buf: &[u8]) -> Option<Message<'_>> {
    let mut slot = None;
    index_in(buf, false, &mut slot).ok()?;
    slot
}

/// [`parse_lenient`] building the message in `slot`, where the caller keeps it: the inline
/// header index is a few KB, and returning a message by value copies it (twice, as LLVM
/// compiles the `Option`). For a hot loop that reads every datagram (the load generator).
#[inline]
pub fn parse_lenient_in<'s, 'b>(
    buf: &'b [u8],
    slot: &'s mut Option<Message<'b>>,
) -> Option<&'s Message<'b>> {
    index_in(buf, false, slot).ok().map(|m| &*m)
}

// Inlined into its callers so that the message is built in their slot. On an error what the
// slot holds is not a message to read.
#[inline(always)]
fn index_in<'s, 'b>(
    buf: &'b [u8],
    strict: bool,
    slot: &'s mut Option<Message<'b>>,
) -> Result<&'s mut Message<'b>, ParseError> {
    // RFC 3261 7.5: CRLFs before the start line are ignored.
    let mut skip = 0;
    while matches!(at(buf, skip), b'\r' | b'\n') {
        skip += 1;
    }
    let buf = sub(buf, skip..buf.len());
    let (start, hpos, ruri) = start_line(buf, strict)?;
    let request = matches!(start, StartLine::Request { .. });
    let msg = slot.insert(Message {
        buf,
        start,
        headers: SmallVec::new(),
        headers_end: 0,
        body_start: 0,
        parsed: Parsed {
            ruri,
            ..Parsed::default()
        },
    });
    let framed = index_headers(buf, hpos, strict, &mut msg.headers).and_then(|(he, bs)| {
        msg.headers_end = he;
        msg.body_start = bs;
        frame_body(msg, strict)
    });
    let end = framed.map_err(|e| e.in_request(request))?;
    msg.buf = sub(buf, 0..end);
    Ok(msg)
}

/// Parses the start line; returns it, the offset of the first header line and, when strict,
/// the Request-URI as its check parsed it.
fn start_line(buf: &[u8], strict: bool) -> Result<(StartLine, usize, Option<Uri<'_>>), ParseError> {
    let lf = memchr::memchr(b'\n', buf);
    let (mut end, next) = match lf {
        Some(p) => (
            if p > 0 && at(buf, p - 1) == b'\r' {
                p - 1
            } else {
                p
            },
            Some(p + 1),
        ),
        None => (buf.len(), None),
    };
    // Trailing white space after the version (RFC 4475 trws) is tolerated.
    while end > 0 && matches!(at(buf, end - 1), b' ' | b'\t') {
        end -= 1;
    }
    let line = sub(buf, 0..end);
    let mut ruri = None;
    let is_response = line.len() >= 4 && sub(line, 0..4).eq_ignore_ascii_case(b"SIP/");
    let err = |kind, at| Err(ParseError::new(kind, at).in_request(!is_response));
    let start = if is_response {
        let Some(sp) = memchr::memchr(b' ', line) else {
            return err(ErrorKind::NotSip, 0);
        };
        if !sub(line, 0..sp).eq_ignore_ascii_case(b"SIP/2.0") && strict {
            return err(ErrorKind::VersionNotSupported, 0);
        }
        let c0 = sp + 1;
        let c1 = run(line, c0, |c| c.is_ascii_digit());
        let code = crate::scan::digits(sub(line, c0..c1), 999).unwrap_or(0) as u16;
        if c1 != c0 + 3
            || !(100..=699).contains(&code)
            || !(c1 == line.len() || at(line, c1) == b' ')
        {
            return err(ErrorKind::BadStatusCode, c0);
        }
        let r0 = (c1 + 1).min(line.len());
        if strict
            && sub(line, r0..line.len())
                .iter()
                .any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)
        {
            return err(ErrorKind::NotSip, r0);
        }
        StartLine::Response {
            status: code,
            reason: r0..line.len(),
        }
    } else {
        let m1 = run(line, 0, is_token);
        if m1 == 0 || at(line, m1) != b' ' {
            return err(ErrorKind::NotSip, 0);
        }
        let last_sp = memchr::memrchr(b' ', line).unwrap_or(m1);
        let version = sub(line, last_sp + 1..line.len());
        if version.len() < 4 || !sub(version, 0..4).eq_ignore_ascii_case(b"SIP/") {
            return err(ErrorKind::NotSip, last_sp + 1);
        }
        if strict && !version.eq_ignore_ascii_case(b"SIP/2.0") {
            return err(ErrorKind::VersionNotSupported, last_sp + 1);
        }
        // Extra spaces around the Request-URI (RFC 4475 lwsstart) are tolerated; spaces
        // inside it (lwsruri) are not.
        let u0 = skip_ws(line, m1);
        let mut u1 = last_sp;
        while u1 > u0 && matches!(at(line, u1 - 1), b' ' | b'\t') {
            u1 -= 1;
        }
        if strict {
            ruri = check_request_uri(sub(line, u0..u1))
                .map_err(|()| ParseError::new(ErrorKind::BadRequestUri, u0))?;
        }
        StartLine::Request {
            method: 0..m1,
            uri: u0..u1,
        }
    };
    match next {
        Some(n) => Ok((start, n, ruri)),
        None => err(ErrorKind::Truncated, buf.len()),
    }
}

/// Request-URI: no white space, no angle brackets (ltgtruri), valid escapes, and for sip/sips
/// no headers component (RFC 3261 19.1.1; RFC 4475 escruri).
fn check_request_uri(u: &[u8]) -> Result<Option<Uri<'_>>, ()> {
    if u.is_empty()
        || u.iter()
            .any(|c| matches!(c, b' ' | b'\t' | b'<' | b'>' | b'"'))
    {
        return Err(());
    }
    match check_uri(u)? {
        Some(uri) if !uri.headers.is_empty() => Err(()),
        parsed => Ok(parsed),
    }
}

/// Indexes the header lines from `pos`; returns the offset of the empty line and of the body.
/// A datagram that ends right after a header line, without the empty line, is accepted as
/// having no body (RFC 5118's ipv6-*-abnf-*-colons messages are published that way).
fn index_headers<'b>(
    buf: &'b [u8],
    mut pos: usize,
    strict: bool,
    headers: &mut SmallVec<[Header<'b>; INLINE_HEADERS]>,
) -> Result<(usize, usize), ParseError> {
    loop {
        match at(buf, pos) {
            b'\r' if at(buf, pos + 1) == b'\n' => return Ok((pos, pos + 2)),
            b'\n' => return Ok((pos, pos + 1)),
            _ if pos >= buf.len() => return Ok((buf.len(), buf.len())),
            _ => {}
        }
        let line_start = pos;
        // The end of the field: the first LF not followed by SP/HT (a fold).
        let mut e = pos;
        let field_end = loop {
            match memchr::memchr(b'\n', sub(buf, e..buf.len())) {
                Some(r) => {
                    let lf = e + r;
                    if matches!(at(buf, lf + 1), b' ' | b'\t') {
                        e = lf + 1;
                        continue;
                    }
                    break lf + 1;
                }
                None if strict => return Err(ParseError::new(ErrorKind::Truncated, buf.len())),
                None => break buf.len(),
            }
        };
        pos = field_end;
        let n1 = run(buf, line_start, is_token);
        let colon = skip_ws(buf, n1);
        if n1 == line_start || at(buf, colon) != b':' || colon >= field_end {
            if strict {
                return Err(ParseError::new(ErrorKind::BadHeaderName, line_start));
            }
            continue;
        }
        let mut value_end = field_end;
        while value_end > colon + 1
            && matches!(at(buf, value_end - 1), b' ' | b'\t' | b'\r' | b'\n')
        {
            value_end -= 1;
        }
        let value_start = skip_lws(buf, colon + 1).min(value_end);
        let v = sub(buf, value_start..value_end);
        // Fast path: most values hold no control character at all (one simple, vectorisable
        // scan); only those that do (folds, escapes, garbage) get the byte-by-byte check.
        if strict && v.iter().any(|&c| c < 0x20 || c == 0x7f) {
            for (k, &c) in v.iter().enumerate() {
                let bad = match c {
                    b'\t' => false,
                    b'\r' => at(v, k + 1) != b'\n',
                    b'\n' => !matches!(at(v, k + 1), b' ' | b'\t'),
                    // quoted-pair may escape control characters (RFC 4475 intmeth).
                    0x7f => at(v, k.wrapping_sub(1)) != b'\\',
                    c => c < 0x20 && at(v, k.wrapping_sub(1)) != b'\\',
                };
                if bad {
                    return Err(ParseError::new(ErrorKind::BadHeaderValue, value_start + k));
                }
            }
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::new(ErrorKind::TooManyHeaders, line_start));
        }
        let raw_name = sub(buf, line_start..n1);
        headers.push(Header {
            name: HeaderName::from_bytes(raw_name),
            raw_name,
            value: sub(buf, value_start..value_end),
            line: line_start..field_end,
            value_range: value_start..value_end,
        });
    }
}

/// Where the message ends: headers end + Content-Length, which must fit in the datagram
/// (RFC 4475 clerr) and agree across lines (mcl01); without Content-Length the datagram's end.
/// Octets past Content-Length are not part of the message (dblreq).
fn frame_body(msg: &Message<'_>, strict: bool) -> Result<usize, ParseError> {
    let remaining = msg.buf.len().saturating_sub(msg.body_start);
    let mut cl: Option<u32> = None;
    for h in msg.headers_named(HeaderName::ContentLength) {
        match parse_number(
            h.value,
            h.value_range.start,
            u64::from(u32::MAX),
            HeaderName::ContentLength,
        ) {
            Ok(n) => match cl {
                Some(prev) if prev != n && strict => {
                    return Err(ParseError::new(
                        ErrorKind::BadContentLength,
                        h.value_range.start,
                    ))
                }
                Some(_) => {}
                None => cl = Some(n),
            },
            Err(e) if strict => return Err(e),
            Err(_) => {}
        }
    }
    match cl {
        Some(n) if n as usize > remaining => {
            if strict {
                Err(ParseError::new(ErrorKind::BodyTooShort, msg.buf.len()))
            } else {
                Ok(msg.buf.len())
            }
        }
        Some(n) => Ok(msg.body_start + n as usize),
        None => Ok(msg.buf.len()),
    }
}

impl<'b> Message<'b> {
    /// The bytes of this message only: start line to end of body (leading CRLFs and octets
    /// past Content-Length excluded).
    pub fn buf(&self) -> &'b [u8] {
        self.buf
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<Method<'b>> {
        match &self.start {
            StartLine::Request { method, .. } => Method::from_bytes(sub(self.buf, method.clone())),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written.
    pub fn request_uri(&self) -> Option<&'b str> {
        sub_str(self.buf, self.request_uri_range()?)
    }

    /// The Request-URI parsed, as the strict parse checked it: None after
    /// [`parse_lenient`], for a response, or for a scheme other than sip, sips and tel.
    pub fn parsed_request_uri(&self) -> Option<Uri<'b>> {
        self.parsed.ruri.clone()
    }

    pub fn request_uri_range(&self) -> Option<Range<usize>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.clone()),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase (may be empty, may be UTF-8: RFC 4475 noreason, unreason).
    pub fn reason(&self) -> Option<&'b [u8]> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(sub(self.buf, reason.clone())),
            StartLine::Request { .. } => None,
        }
    }

    /// One entry per header field line, in order.
    pub fn headers(&self) -> &[Header<'b>] {
        &self.headers
    }

    /// The first header line of that name.
    pub fn header(&self, name: HeaderName) -> Option<&Header<'b>> {
        self.headers.iter().find(|h| h.name == name)
    }

    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &Header<'b>> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    /// Offset of the empty line that ends the headers (the end of the buffer if it lacks one).
    pub fn headers_end(&self) -> usize {
        self.headers_end
    }

    pub fn body(&self) -> &'b [u8] {
        sub(self.buf, self.body_start..self.buf.len())
    }

    /// Offset of the body.
    pub fn body_start(&self) -> usize {
        self.body_start
    }

    pub fn call_id(&self) -> Option<&'b [u8]> {
        self.header(HeaderName::CallId).map(|h| trim_lws(h.value))
    }

    fn missing(&self, name: HeaderName) -> ParseError {
        ParseError::new(ErrorKind::MissingHeader(name), self.headers_end)
            .in_request(self.is_request())
    }

    pub fn cseq(&self) -> Result<CSeq<'b>, ParseError> {
        let h = self
            .header(HeaderName::CSeq)
            .ok_or_else(|| self.missing(HeaderName::CSeq))?;
        parse_cseq(h.value, h.value_range.start).map_err(|e| e.in_request(self.is_request()))
    }

    pub fn top_via(&self) -> Result<Via<'b>, ParseError> {
        if let Some(v) = &self.parsed.top {
            return Ok(v.clone());
        }
        self.vias()
            .next()
            .unwrap_or_else(|| Err(self.missing(HeaderName::Via)))
    }

    /// Every Via value, across lines and commas, topmost first.
    pub fn vias(&self) -> Values<'_, 'b, Via<'b>> {
        // A request from a UA has one Via: the one the strict parse kept.
        if let (1, Some(top)) = (self.parsed.vias, &self.parsed.top) {
            return Values::only(top.clone(), parse_via);
        }
        Values::new(&self.headers, HeaderName::Via, parse_via, self.is_request())
    }

    pub fn from(&self) -> Result<NameAddr<'b>, ParseError> {
        match &self.parsed.from {
            Some(f) => Ok(f.clone()),
            None => self.single(HeaderName::From),
        }
    }

    pub fn to(&self) -> Result<NameAddr<'b>, ParseError> {
        match &self.parsed.to {
            Some(t) => Ok(t.clone()),
            None => self.single(HeaderName::To),
        }
    }

    fn single(&self, name: HeaderName) -> Result<NameAddr<'b>, ParseError> {
        let h = self.header(name).ok_or_else(|| self.missing(name))?;
        parse_single(h.value, h.value_range.start, name)
            .map_err(|e| e.in_request(self.is_request()))
    }

    pub fn max_forwards(&self) -> Option<Result<u32, ParseError>> {
        self.number(HeaderName::MaxForwards, 255)
    }

    /// The Content-Length value; None when absent or not a number.
    pub fn content_length(&self) -> Option<u32> {
        self.number(HeaderName::ContentLength, u64::from(u32::MAX))?
            .ok()
    }

    pub fn expires(&self) -> Option<Result<u32, ParseError>> {
        self.number(HeaderName::Expires, u64::from(u32::MAX))
    }

    fn number(&self, name: HeaderName, max: u64) -> Option<Result<u32, ParseError>> {
        let h = self.header(name)?;
        Some(
            parse_number(h.value, h.value_range.start, max, name)
                .map_err(|e| e.in_request(self.is_request())),
        )
    }

    pub fn contacts(&self) -> Values<'_, 'b, Contact<'b>> {
        if let Some(c) = &self.parsed.contact {
            return Values::only(c.clone(), parse_contact);
        }
        Values::new(
            &self.headers,
            HeaderName::Contact,
            parse_contact,
            self.is_request(),
        )
    }

    pub fn routes(&self) -> Values<'_, 'b, NameAddr<'b>> {
        Values::new(
            &self.headers,
            HeaderName::Route,
            parse_route,
            self.is_request(),
        )
    }

    pub fn record_routes(&self) -> Values<'_, 'b, NameAddr<'b>> {
        Values::new(
            &self.headers,
            HeaderName::RecordRoute,
            parse_record_route,
            self.is_request(),
        )
    }

    pub fn authorization(&self) -> Option<Result<DigestCredentials<'b>, ParseError>> {
        self.digest(HeaderName::Authorization)
    }

    pub fn proxy_authorization(&self) -> Option<Result<DigestCredentials<'b>, ParseError>> {
        self.digest(HeaderName::ProxyAuthorization)
    }

    fn digest(&self, name: HeaderName) -> Option<Result<DigestCredentials<'b>, ParseError>> {
        let h = self.header(name)?;
        Some(
            parse_digest(h.value, h.value_range.start, name)
                .map_err(|e| e.in_request(self.is_request())),
        )
    }
}
