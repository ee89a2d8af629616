//! Header fields: the index entry [`Header`] and the iterator [`Values`] over the
//! comma-separated values of every line of one name. The names themselves ([`HeaderName`])
//! live in `header_name`, below the error type that mentions them.
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
use crate::header_name::HeaderName;
use crate::scan::{at, is_gen_value, is_token, quoted_end, run, skip_lws};

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
    /// A value the message had already parsed: when set, the only one there is.
    only: Option<T>,
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
            only: None,
        }
    }

    /// The values of a header that has exactly one, already parsed: `value` and nothing
    /// more, without parsing it again.
    pub(crate) fn only(value: T, parse: ValueParser<'b, T>) -> Self {
        Values {
            headers: [].iter(),
            name: HeaderName::Other,
            cur: None,
            parse,
            request: false,
            done: true,
            only: Some(value),
        }
    }
}

impl<'b, T> Iterator for Values<'_, 'b, T> {
    type Item = Result<T, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(v) = self.only.take() {
            return Some(Ok(v));
        }
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
