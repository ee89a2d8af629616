//! The component stream's XML, both ways: [`StanzaReader`] pulls the server's stream header
//! and one stanza at a time out of the socket with quick-xml's pull reader, inside our own
//! limits, and the `write_*` functions make what we send (stream header, XEP-0114 handshake,
//! messages, errors), every value escaped by quick-xml.
//!
//! Every byte read is the XMPP server's, and so untrusted: a stanza larger than
//! `max_stanza` bytes (counted from the socket, so a huge text or attribute cannot grow a
//! buffer past it), nesting deeper than `max_depth`, anything not well-formed (quick-xml
//! checks tags, end names, attributes, references, UTF-8), and what RFC 6120 restricts
//! (DTDs, processing instructions, comments, undefined entities) end the stream with a
//! typed [`StreamError`]; the connection sends the matching stream error and reconnects.
//!
//! What it does not keep: a stanza is reduced to what the gateway uses ([`Stanza`]: its
//! name, addressing attributes, `<body>` text and error condition); other children (chat
//! states, XHTML-IM, delays) are read, checked and dropped.

use std::borrow::Cow;
use std::io::{BufReader, Read};

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;

/// Limits on what the server may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest stanza in bytes, as read from the socket.
    pub max_stanza: usize,
    /// Deepest element nesting, the stream element counting 1.
    pub max_depth: usize,
}

/// Why the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("stanza over {0} bytes")]
    TooBig(usize),
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("restricted XML ({0}) in the stream")]
    Restricted(&'static str),
    #[error("the server's stream error: {0}")]
    Remote(String),
    #[error("{0}")]
    Protocol(String),
}

impl StreamError {
    /// The stream error condition (RFC 6120 4.9.3) we send before closing, if any.
    pub fn condition(&self) -> Option<&'static str> {
        match self {
            Self::TooBig(_) => Some("policy-violation"),
            Self::TooDeep(_) => Some("policy-violation"),
            Self::NotWellFormed(_) => Some("not-well-formed"),
            Self::Restricted(_) => Some("restricted-xml"),
            Self::Protocol(_) => Some("invalid-xml"),
            Self::Io(_) | Self::Closed | Self::Remote(_) => None,
        }
    }

    /// A short word for the metrics' `kind` label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) | Self::Closed => "connection",
            Self::TooBig(_) | Self::TooDeep(_) => "limit",
            Self::NotWellFormed(_) | Self::Restricted(_) | Self::Protocol(_) => "bad_xml",
            Self::Remote(_) => "stream_error",
        }
    }
}

/// One top-level element of the server's stream, reduced to what the gateway reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    /// The element's local name: `message`, `presence`, `iq`, `handshake`, `error`
    /// (`stream:error`), `features`, ...
    pub name: String,
    /// The element's prefix was `stream:` (a stream-level element, not a stanza).
    pub stream_level: bool,
    pub from: String,
    pub to: String,
    pub id: String,
    /// The `type` attribute.
    pub kind: String,
    /// The text of a `<body>` child, when there is one.
    pub body: Option<String>,
    /// The defined condition of an `<error>` child (of a stream error: its first child).
    pub error: Option<String>,
    /// The `<text>` of that error.
    pub error_text: Option<String>,
}

/// What the reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The server's stream header (`<stream:stream ... id=...>`).
    Header {
        id: String,
        from: String,
    },
    Stanza(Stanza),
    /// `</stream:stream>`: the server ended the stream.
    End,
}

/// The socket under the reader, counting what each stanza may still read.
struct Budget<R> {
    inner: R,
    left: usize,
    exceeded: bool,
    /// Nothing read yet: see [`BOM`].
    first: bool,
}

/// The UTF-8 byte order mark. quick-xml drops one at the start of the stream only when its
/// first read returns all of it: the first read waits for three bytes (or the end), so that a
/// BOM cut over TCP segments is dropped too, not read as text before the stream header.
const BOM: usize = 3;

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            self.exceeded = true;
            return Err(std::io::Error::other("stanza size limit"));
        }
        let n = buf.len().min(self.left);
        let mut got = self.inner.read(&mut buf[..n])?;
        if std::mem::take(&mut self.first) {
            while got > 0 && got < n.min(BOM) {
                match self.inner.read(&mut buf[got..n]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Given with the next read.
                    Err(_) => break,
                }
            }
        }
        self.left -= got;
        Ok(got)
    }
}

/// The read-ahead of the buffered reader: bytes of the next stanza may already have been
/// counted against this one, so each stanza gets this much on top of `max_stanza`; and up
/// to this much of a stanza may have been read before its budget began. A stanza of up to
/// `max_stanza` bytes always passes, one over `max_stanza + 2 * READ_AHEAD` never does.
const READ_AHEAD: usize = 8 * 1024;

/// Where the reader is inside the current stanza.
#[derive(Debug, Default)]
struct Current {
    stanza: Stanza,
    /// Inside `<body>` (a child of the stanza).
    in_body: bool,
    /// Inside the error's `<text>`.
    in_error_text: bool,
    /// Inside the stanza's `<error>` child.
    in_error: bool,
}

/// Pulls the server's stream out of `R`, one [`Item`] at a time (blocking on `R`).
pub struct StanzaReader<R: Read> {
    xml: Reader<BufReader<Budget<R>>>,
    buf: Vec<u8>,
    limits: Limits,
    /// Open elements: 0 before the stream header, 1 between stanzas.
    depth: usize,
    cur: Current,
}

impl<R: Read> StanzaReader<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        let budget = Budget {
            inner,
            left: limits.max_stanza + READ_AHEAD,
            exceeded: false,
            first: true,
        };
        let mut xml = Reader::from_reader(BufReader::with_capacity(READ_AHEAD, budget));
        let c = xml.config_mut();
        c.check_end_names = true;
        c.check_comments = true;
        c.allow_dangling_amp = false;
        c.allow_unmatched_ends = false;
        c.expand_empty_elements = false;
        Self {
            xml,
            buf: Vec::new(),
            limits,
            depth: 0,
            cur: Current::default(),
        }
    }

    /// The next header, stanza or end of stream.
    pub fn next_item(&mut self) -> Result<Item, StreamError> {
        loop {
            if self.depth <= 1 {
                // Between stanzas: the next one gets its whole budget.
                let b = self.xml.get_mut().get_mut();
                b.left = self.limits.max_stanza + READ_AHEAD;
                if self.buf.capacity() > 64 * 1024 {
                    self.buf = Vec::new();
                }
            }
            self.buf.clear();
            let ev = match self.xml.read_event_into(&mut self.buf) {
                Ok(ev) => ev,
                Err(e) => {
                    let b = self.xml.get_ref().get_ref();
                    if b.exceeded {
                        return Err(StreamError::TooBig(self.limits.max_stanza));
                    }
                    return Err(match e {
                        quick_xml::Error::Io(io) => {
                            StreamError::Io(std::io::Error::new(io.kind(), io.to_string()))
                        }
                        other => StreamError::NotWellFormed(other.to_string()),
                    });
                }
            };
            if let Some(item) = step(&mut self.cur, &mut self.depth, self.limits, ev)? {
                return Ok(item);
            }
        }
    }
}

/// One event: the item it completes, if any.
fn step(
    cur: &mut Current,
    depth: &mut usize,
    limits: Limits,
    ev: Event<'_>,
) -> Result<Option<Item>, StreamError> {
    match ev {
        Event::Decl(_) if *depth == 0 => Ok(None),
        Event::Decl(_) | Event::PI(_) => Err(StreamError::Restricted("processing instruction")),
        Event::DocType(_) => Err(StreamError::Restricted("DTD")),
        Event::Comment(_) => Err(StreamError::Restricted("comment")),
        Event::Eof => Err(StreamError::Closed),
        Event::Start(e) => {
            if *depth + 1 > limits.max_depth {
                return Err(StreamError::TooDeep(limits.max_depth));
            }
            *depth += 1;
            open(cur, *depth, &e).map(|_| {
                (*depth == 1).then(|| {
                    let a = attrs(&e).unwrap_or_default();
                    Item::Header {
                        id: a.id,
                        from: a.from,
                    }
                })
            })
        }
        Event::Empty(e) => {
            if *depth == 0 {
                return Err(StreamError::Protocol(String::from(
                    "the stream element is empty",
                )));
            }
            if *depth + 1 > limits.max_depth {
                return Err(StreamError::TooDeep(limits.max_depth));
            }
            open(cur, *depth + 1, &e)?;
            close(cur, *depth + 1);
            Ok((*depth == 1).then(|| Item::Stanza(std::mem::take(&mut cur.stanza))))
        }
        Event::End(_) => {
            close(cur, *depth);
            *depth = depth.saturating_sub(1);
            Ok(match *depth {
                0 => Some(Item::End),
                1 => Some(Item::Stanza(std::mem::take(&mut cur.stanza))),
                _ => None,
            })
        }
        Event::Text(t) => {
            if *depth <= 1 {
                // Between stanzas only whitespace (keepalives) may come.
                if !t.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
                    return Err(StreamError::NotWellFormed(String::from(
                        "text outside of a stanza",
                    )));
                }
                return Ok(None);
            }
            text(cur, &t.xml10_content());
            Ok(None)
        }
        Event::CData(t) => {
            if *depth <= 1 {
                return Err(StreamError::NotWellFormed(String::from(
                    "CDATA outside of a stanza",
                )));
            }
            let s = t.xml10_content();
            text(cur, &s);
            Ok(None)
        }
        Event::GeneralRef(r) => {
            if *depth <= 1 {
                return Err(StreamError::NotWellFormed(String::from(
                    "a reference outside of a stanza",
                )));
            }
            let s = reference(&r)?;
            text(cur, &s);
            Ok(None)
        }
    }
}

/// A reference in text: a character reference or one of XML's five entities; anything
/// else is undefined (no DTD may define more).
fn reference(r: &BytesRef<'_>) -> Result<Cow<'static, str>, StreamError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if allowed_char(c) => Ok(Cow::Owned(c.to_string())),
            _ => Err(StreamError::NotWellFormed(format!(
                "bad character reference &{};",
                &**r
            ))),
        };
    }
    quick_xml::escape::resolve_predefined_entity(r)
        .map(Cow::Borrowed)
        .ok_or_else(|| StreamError::NotWellFormed(format!("undefined entity &{};", &**r)))
}

/// A character XML 1.0 allows in a document.
pub fn allowed_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[derive(Debug, Default)]
struct Attrs {
    from: String,
    to: String,
    id: String,
    kind: String,
}

/// The addressing attributes (unprefixed), values normalized; a malformed or duplicated
/// attribute is an error.
fn attrs(e: &BytesStart<'_>) -> Result<Attrs, StreamError> {
    let mut a = Attrs::default();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| StreamError::NotWellFormed(err.to_string()))?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| StreamError::NotWellFormed(err.to_string()))?;
        let slot = match attr.key.as_ref() {
            "from" => &mut a.from,
            "to" => &mut a.to,
            "id" => &mut a.id,
            "type" => &mut a.kind,
            _ => continue,
        };
        *slot = value.into_owned();
    }
    Ok(a)
}

/// An element opens at `depth` (1: the stream, 2: a stanza, 3: a stanza's child ...).
fn open(cur: &mut Current, depth: usize, e: &BytesStart<'_>) -> Result<(), StreamError> {
    let qname = e.name();
    let local = e.local_name();
    let local = local.as_ref();
    match depth {
        1 => {
            if qname.as_ref() != "stream:stream" {
                return Err(StreamError::Protocol(format!(
                    "the stream starts with <{}>, not <stream:stream>",
                    qname.as_ref()
                )));
            }
            attrs(e)?;
        }
        2 => {
            let a = attrs(e)?;
            cur.stanza = Stanza {
                name: local.to_string(),
                stream_level: qname.as_ref().starts_with("stream:"),
                from: a.from,
                to: a.to,
                id: a.id,
                kind: a.kind,
                ..Stanza::default()
            };
            cur.in_body = false;
            cur.in_error = false;
            cur.in_error_text = false;
        }
        3 => {
            // Attributes of children are checked too (malformed ones end the stream).
            attrs(e)?;
            if cur.stanza.stream_level && cur.stanza.name == "error" {
                if local == "text" {
                    cur.in_error_text = true;
                } else if cur.stanza.error.is_none() {
                    cur.stanza.error = Some(local.to_string());
                }
            } else if local == "body" && cur.stanza.body.is_none() {
                cur.in_body = true;
                cur.stanza.body = Some(String::new());
            } else if local == "error" {
                cur.in_error = true;
            }
        }
        4 if cur.in_error => {
            attrs(e)?;
            if local == "text" {
                cur.in_error_text = true;
            } else if cur.stanza.error.is_none() {
                cur.stanza.error = Some(local.to_string());
            }
        }
        _ => {
            attrs(e)?;
        }
    }
    Ok(())
}

/// The element at `depth` closes.
fn close(cur: &mut Current, depth: usize) {
    match depth {
        3 => {
            cur.in_body = false;
            cur.in_error = false;
            if cur.stanza.stream_level {
                cur.in_error_text = false;
            }
        }
        4 => cur.in_error_text = false,
        _ => {}
    }
}

fn text(cur: &mut Current, s: &str) {
    if cur.in_body {
        if let Some(b) = cur.stanza.body.as_mut() {
            b.push_str(s);
        }
    } else if cur.in_error_text {
        cur.stanza
            .error_text
            .get_or_insert_with(String::new)
            .push_str(s);
    }
}

// ---- what we send ----

/// Text and attribute values as XML: quick-xml's escaping, with the characters XML 1.0
/// does not allow at all dropped.
pub fn esc(s: &str) -> Cow<'_, str> {
    if s.chars().all(allowed_char) {
        quick_xml::escape::escape(s)
    } else {
        let clean: String = s.chars().filter(|c| allowed_char(*c)).collect();
        Cow::Owned(quick_xml::escape::escape(clean.as_str()).into_owned())
    }
}

/// Our stream header (XEP-0114: the component's domain in `to`).
pub fn write_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        esc(domain)
    )
}

/// XEP-0114's handshake: the lower-case hex SHA-1 of the stream id and the secret.
pub fn write_handshake(stream_id: &str, secret: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret.as_bytes());
    let mut hex = String::with_capacity(40);
    for b in h.finalize() {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("<handshake>{hex}</handshake>")
}

/// A chat message.
pub fn write_message(from: &str, to: &str, id: &str, body: &str) -> String {
    format!(
        "<message type='chat' from='{}' to='{}' id='{}'><body>{}</body></message>",
        esc(from),
        esc(to),
        esc(id),
        esc(body)
    )
}

/// An error reply to a message (RFC 6120 8.3): from and to swapped, the same id, the
/// original body, the condition with its type, a text.
pub fn write_message_error(
    from: &str,
    to: &str,
    id: &str,
    body: Option<&str>,
    condition: &str,
    err_type: &str,
    text: &str,
) -> String {
    let body = body
        .map(|b| format!("<body>{}</body>", esc(b)))
        .unwrap_or_default();
    format!(
        "<message type='error' from='{}' to='{}' id='{}'>{body}<error type='{}'><{} \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{}</text></error></message>",
        esc(from),
        esc(to),
        esc(id),
        esc(err_type),
        esc(condition),
        esc(text)
    )
}

/// The error reply to an `iq` get or set we do not serve.
pub fn write_iq_error(from: &str, to: &str, id: &str) -> String {
    format!(
        "<iq type='error' from='{}' to='{}' id='{}'><error type='cancel'><service-unavailable \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        esc(from),
        esc(to),
        esc(id)
    )
}

/// A stream error and the stream's end.
pub fn write_stream_error(condition: &str) -> String {
    format!(
        "<stream:error><{} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
         </stream:stream>",
        esc(condition)
    )
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
