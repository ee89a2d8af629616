//! Edits to a parsed message, recorded as splices and applied once by [`write`].
//!
//! The script changes a message many times (Request-URI, Via, Record-Route, Route, appended
//! headers); rewriting the buffer each time would copy it each time. Instead each change is a
//! splice — "replace `start..end` of `msg.buf()` with these bytes" (an insert is an empty
//! range, a delete empty bytes) — kept sorted by offset in a reusable arena, and [`write`]
//! copies the message once, applying them in order. Inserts at the same offset keep the order
//! they were made in. A splice that starts inside text an earlier one already removed is
//! dropped (its bytes would land in a deleted region).
//!
//! This module does not re-validate: the bytes given are written as they are, and
//! Content-Length is not recomputed, except by [`Edits::replace_body`], which sets it.

use std::ops::Range;

use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::headers::name_addr::parse_name_addr;
use crate::headers::next_value;
use crate::headers::via::Via;
use crate::message::Message;
use crate::scan::sub;

#[derive(Debug, Clone, Copy)]
struct Splice {
    start: usize,
    end: usize,
    /// The replacement bytes: `data[at..at + len]` of the arena.
    at: usize,
    len: usize,
    /// Order of recording, for [`Edits::rollback`].
    seq: usize,
}

/// A point in the recording of [`Edits`] to go back to ([`Edits::mark`], [`Edits::rollback`]).
#[derive(Debug, Clone, Copy)]
pub struct EditMark {
    seq: usize,
    data: usize,
}

/// Recorded changes to one message; reusable ([`Edits::clear`] keeps capacity, so no
/// allocation per message once warm).
#[derive(Debug, Clone, Default)]
pub struct Edits {
    splices: Vec<Splice>,
    data: Vec<u8>,
    next_seq: usize,
}

impl Edits {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.splices.clear();
        self.data.clear();
        self.next_seq = 0;
    }

    /// Remembers the edits recorded so far, so that edits made for one outgoing copy (a
    /// branch's Request-URI and Via) can be taken back after it is written.
    pub fn mark(&self) -> EditMark {
        EditMark {
            seq: self.next_seq,
            data: self.data.len(),
        }
    }

    /// Forgets every edit recorded after `mark`.
    pub fn rollback(&mut self, mark: EditMark) {
        self.splices.retain(|s| s.seq < mark.seq);
        self.data.truncate(mark.data);
        self.next_seq = mark.seq;
    }

    pub fn is_empty(&self) -> bool {
        self.splices.is_empty()
    }

    /// Number of recorded splices.
    pub fn len(&self) -> usize {
        self.splices.len()
    }

    /// Inserts `bytes` at offset `at` of `msg.buf()`.
    pub fn insert(&mut self, at: usize, bytes: &[u8]) {
        self.splice(at..at, &[bytes]);
    }

    pub fn delete(&mut self, range: Range<usize>) {
        self.splice(range, &[]);
    }

    pub fn replace(&mut self, range: Range<usize>, bytes: &[u8]) {
        self.splice(range, &[bytes]);
    }

    /// Records one splice whose bytes are the concatenation of `parts`.
    fn splice(&mut self, range: Range<usize>, parts: &[&[u8]]) {
        let at = self.data.len();
        for p in parts {
            self.data.extend_from_slice(p);
        }
        let end = range.end.max(range.start);
        let s = Splice {
            start: range.start,
            end,
            at,
            len: self.data.len() - at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        // Keep sorted by start; equal starts stay in the order they were made.
        let pos = self.splices.partition_point(|x| x.start <= s.start);
        self.splices.insert(pos, s);
    }

    pub fn set_request_uri(&mut self, msg: &Message<'_>, uri: &[u8]) {
        if let Some(r) = msg.request_uri_range() {
            self.replace(r, uri);
        }
    }

    /// A new topmost "Via: value" line, above the current first Via (or first header).
    pub fn push_via(&mut self, msg: &Message<'_>, value: &[u8]) {
        let at = msg
            .header(HeaderName::Via)
            .or(msg.headers().first())
            .map_or(msg.headers_end(), |h| h.line.start);
        self.splice(at..at, &[b"Via: ", value, b"\r\n"]);
    }

    /// Removes the topmost Via value: the whole line, or only the first value when the line
    /// holds several.
    pub fn remove_top_via(&mut self, msg: &Message<'_>) -> Result<(), ParseError> {
        self.remove_first_value(msg, HeaderName::Via)
    }

    /// Sets received= and, if the Via has an "rport" parameter, its value (RFC 3261 18.2.1,
    /// RFC 3581 4): "rport" becomes "rport=5060". An existing received= is replaced.
    pub fn set_via_received(
        &mut self,
        msg: &Message<'_>,
        received: Option<&[u8]>,
        rport: Option<u16>,
    ) -> Result<(), ParseError> {
        let via = msg.top_via()?;
        self.set_received_on(&via, received, rport);
        Ok(())
    }

    /// [`Edits::set_via_received`] on a Via the caller has already parsed (any Via of the
    /// message, usually the top one).
    pub fn set_received_on(&mut self, via: &Via<'_>, received: Option<&[u8]>, rport: Option<u16>) {
        if let (Some(r), Some(port)) = (via.rport_range.clone(), rport) {
            let mut num = [0u8; 20];
            self.splice(r, &[b"rport=", fmt_usize(usize::from(port), &mut num)]);
        }
        if let Some(ip) = received {
            match via.received_range.clone() {
                Some(r) => self.splice(r, &[b"received=", ip]),
                None => self.splice(via.range.end..via.range.end, &[b";received=", ip]),
            }
        }
    }

    /// A new topmost "Record-Route: value" line.
    pub fn add_record_route(&mut self, msg: &Message<'_>, value: &[u8]) {
        let at = msg
            .header(HeaderName::RecordRoute)
            .or(msg.headers().first())
            .map_or(msg.headers_end(), |h| h.line.start);
        self.splice(at..at, &[b"Record-Route: ", value, b"\r\n"]);
    }

    /// Removes the topmost Route value (the line, or the first value of it).
    pub fn remove_top_route(&mut self, msg: &Message<'_>) -> Result<(), ParseError> {
        self.remove_first_value(msg, HeaderName::Route)
    }

    /// Appends "line\r\n" after the last header (before the empty line).
    pub fn append_header(&mut self, msg: &Message<'_>, line: &[u8]) {
        let at = msg.headers_end();
        self.splice(at..at, &[line, b"\r\n"]);
    }

    /// Replaces the body with `body` and sets every Content-Length to its length (adds one
    /// when the message has none). Each call records one more replacement of the same ranges:
    /// call it once per message (the later splices would be dropped by [`write`]).
    pub fn replace_body(&mut self, msg: &Message<'_>, body: &[u8]) {
        let mut n = [0u8; 20];
        let len = fmt_usize(body.len(), &mut n);
        let mut had = false;
        for h in msg.headers_named(HeaderName::ContentLength) {
            self.replace(h.value_range.clone(), len);
            had = true;
        }
        if !had {
            let at = msg.headers_end();
            self.splice(at..at, &[b"Content-Length: ", len, b"\r\n"]);
        }
        let start = msg.body_start();
        if start <= msg.headers_end() {
            // No empty line after the headers: write one before the body.
            self.splice(start..msg.buf().len(), &[b"\r\n", body]);
        } else {
            self.replace(start..msg.buf().len(), body);
        }
    }

    fn remove_first_value(
        &mut self,
        msg: &Message<'_>,
        name: HeaderName,
    ) -> Result<(), ParseError> {
        let req = msg.is_request();
        let h = msg.header(name).ok_or_else(|| {
            ParseError::new(ErrorKind::MissingHeader(name), msg.headers_end()).in_request(req)
        })?;
        let (start, next) = match name {
            // The top Via the strict parse kept (parsed here otherwise): only where it
            // ends is needed, to find the value after it.
            HeaderName::Via => msg.top_via().and_then(|v| {
                let end = v.range.end.saturating_sub(h.value_range.start);
                next_value(h.value, end, h.value_range.start, name).map(|n| (v.range.start, n))
            }),
            _ => parse_name_addr(h.value, h.value_range.start, 0, name)
                .map(|(a, n)| (a.range.start, n)),
        }
        .map_err(|e| e.in_request(req))?;
        if next >= h.value.len() {
            self.delete(h.line.clone());
        } else {
            self.delete(start..h.value_range.start + next);
        }
        Ok(())
    }
}

/// Decimal digits of `n` in `buf`.
pub fn fmt_usize(n: usize, buf: &mut [u8; 20]) -> &[u8] {
    fmt_u64(u64::try_from(n).unwrap_or(u64::MAX), buf)
}

/// Decimal digits of `n` in `buf` (20 digits hold `u64::MAX`): for the numbers that are u64
/// on every target, which a usize would clamp on the 32-bit boards.
pub fn fmt_u64(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    sub(buf, i..buf.len())
}

/// Writes `msg` with `edits` applied, appending to `out`.
pub fn write(msg: &Message<'_>, edits: &Edits, out: &mut Vec<u8>) {
    let buf = msg.buf();
    out.reserve(buf.len() + edits.data.len());
    let mut pos = 0;
    // Start of the splice that last moved `pos`: inserts at that same offset still apply.
    let mut region_start = 0;
    for s in &edits.splices {
        let data = sub(&edits.data, s.at..s.at + s.len);
        if s.start >= pos {
            out.extend_from_slice(sub(buf, pos..s.start.min(buf.len())));
            out.extend_from_slice(data);
            region_start = s.start;
            pos = pos.max(s.end);
        } else if s.start == region_start {
            out.extend_from_slice(data);
            pos = pos.max(s.end);
        } else {
            pos = pos.max(s.end);
        }
    }
    out.extend_from_slice(sub(buf, pos.min(buf.len())..buf.len()));
}

impl Edits {
    /// The recorded splices in offset order: the range of `msg.buf()` each one replaces and
    /// its new bytes (an empty range is an insert, empty bytes a delete). Read-only; lets a
    /// caller see whether a change is already recorded (e.g. `record_route` called twice).
    pub fn splices(&self) -> impl Iterator<Item = (Range<usize>, &[u8])> + '_ {
        self.splices
            .iter()
            .map(|s| (s.start..s.end, sub(&self.data, s.at..s.at + s.len)))
    }
}
