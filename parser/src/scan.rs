//! Byte classes (RFC 3261 section 25.1) and small panic-free scanning helpers.
//!
//! Every parser in the crate walks byte slices with positions; these helpers read through
//! `get()` so that a position past the end reads as a NUL sentinel instead of panicking (NUL is
//! never valid where the parsers look for a delimiter). Character classes are 256-entry tables
//! built at compile time, as httparse does. Nothing here allocates or knows about headers.

use std::ops::Range;

const fn class(extra: &[u8], alnum: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        if alnum && (i as u8).is_ascii_alphanumeric() {
            t[i] = true;
        }
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
}

/// token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
static TOKEN: [bool; 256] = class(b"-.!%*_+`'~", true);
/// word (Call-ID) = token chars plus ( ) < > : \ DQUOTE / [ ] ? { }
static WORD: [bool; 256] = class(b"-.!%*_+`'~()<>:\\\"/[]?{}", true);
/// A generic parameter value: token, or a host (IPv6 references included, bracketed or not).
static GEN_VALUE: [bool; 256] = class(b"-.!%*_+`'~:[]", true);
/// Host names: alphanum, "-", "." (and "_", seen in the wild).
static HOSTNAME: [bool; 256] = class(b"-._", true);
/// user = 1*( unreserved / escaped / user-unreserved ), user-unreserved = & = + $ , ; ? /
static USER: [bool; 256] = class(b"-_.!~*'()&=+$,;?/", true);
/// password = *( unreserved / escaped / & = + $ , )
static PASSWORD: [bool; 256] = class(b"-_.!~*'()&=+$,", true);
/// paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
static PARAMCHAR: [bool; 256] = class(b"-_.!~*'()[]/:&+$", true);
/// hname/hvalue chars: hnv-unreserved / unreserved / escaped; hnv-unreserved = [ ] / ? : + $
static HNVCHAR: [bool; 256] = class(b"-_.!~*'()[]/?:+$", true);
/// Characters allowed in an URI of an unknown scheme (RFC 2396 uric plus "#" and "%").
static URIC: [bool; 256] = class(b"-_.!~*'();/?:@&=+$,%[]#", true);

#[inline]
pub(crate) fn is_token(c: u8) -> bool {
    TOKEN[c as usize]
}
#[inline]
pub(crate) fn is_word(c: u8) -> bool {
    WORD[c as usize]
}
#[inline]
pub(crate) fn is_gen_value(c: u8) -> bool {
    GEN_VALUE[c as usize]
}
#[inline]
pub(crate) fn is_hostname(c: u8) -> bool {
    HOSTNAME[c as usize]
}
#[inline]
pub(crate) fn is_user(c: u8) -> bool {
    USER[c as usize]
}
#[inline]
pub(crate) fn is_password(c: u8) -> bool {
    PASSWORD[c as usize]
}
#[inline]
pub(crate) fn is_paramchar(c: u8) -> bool {
    PARAMCHAR[c as usize]
}
#[inline]
pub(crate) fn is_hnvchar(c: u8) -> bool {
    HNVCHAR[c as usize]
}
#[inline]
pub(crate) fn is_uric(c: u8) -> bool {
    URIC[c as usize]
}

/// The byte at `i`, or NUL past the end.
#[inline]
pub(crate) fn at(s: &[u8], i: usize) -> u8 {
    match s.get(i) {
        Some(&b) => b,
        None => 0,
    }
}

/// `s[r]`, or empty when the range does not fit.
#[inline]
pub(crate) fn sub(s: &[u8], r: Range<usize>) -> &[u8] {
    s.get(r).unwrap_or(&[])
}

/// `s[r]` as text; header values are bytes, but every piece we hand out as `&str` is checked.
#[inline]
pub(crate) fn sub_str(s: &[u8], r: Range<usize>) -> Option<&str> {
    std::str::from_utf8(s.get(r)?).ok()
}

/// Skips SP and HT.
#[inline]
pub(crate) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(at(s, i), b' ' | b'\t') {
        i += 1;
    }
    i
}

/// Skips linear white space, folds included: inside an indexed header value a CR or LF only
/// ever occurs as part of a fold (the indexer checked), so they count as white space here.
#[inline]
pub(crate) fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while matches!(at(s, i), b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// End of the run of bytes from `i` that satisfy `f`.
#[inline]
pub(crate) fn run(s: &[u8], mut i: usize, f: fn(u8) -> bool) -> usize {
    while let Some(&c) = s.get(i) {
        if !f(c) {
            break;
        }
        i += 1;
    }
    i
}

/// With `s[i] == '"'`, the index just past the closing quote (quoted-pairs honoured), or None
/// when the quote never closes or holds a raw CR/LF outside a fold.
pub(crate) fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    if at(s, i) != b'"' {
        return None;
    }
    let mut j = i + 1;
    loop {
        match *s.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                let c = *s.get(j + 1)?;
                if c == b'\r' || c == b'\n' || c > 0x7f {
                    return None;
                }
                j += 2;
            }
            _ => j += 1,
        }
    }
}

/// A run of ASCII digits as a number; None if empty, not all digits, or above `max`.
pub(crate) fn digits(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        if v > max {
            return None;
        }
    }
    Some(v)
}

/// Whether every `%` in `s` starts a valid escape (`%` HEX HEX) and every other byte passes `f`.
pub(crate) fn escaped_run_ok(s: &[u8], f: fn(u8) -> bool) -> bool {
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        if c == b'%' {
            if !(at(s, i + 1).is_ascii_hexdigit() && at(s, i + 2).is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if f(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Value of a hex digit (caller checked it is one).
#[inline]
pub(crate) fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Iterates the octets of an URI component with `%XX` escapes decoded (RFC 3261 19.1.4 says
/// escaped and unescaped forms compare equal). Does not allocate.
pub(crate) struct Unescape<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Unescape<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Unescape { s, i: 0 }
    }
}

impl Iterator for Unescape<'_> {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        let c = *self.s.get(self.i)?;
        let (h, l) = (at(self.s, self.i + 1), at(self.s, self.i + 2));
        if c == b'%' && h.is_ascii_hexdigit() && l.is_ascii_hexdigit() {
            self.i += 3;
            Some(hex_val(h) << 4 | hex_val(l))
        } else {
            self.i += 1;
            Some(c)
        }
    }
}

/// Compares two URI components after unescaping, optionally ignoring ASCII case.
pub(crate) fn unescaped_eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if a == b {
        return true;
    }
    let (mut x, mut y) = (Unescape::new(a), Unescape::new(b));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) => {
                let same = if ignore_case {
                    p.eq_ignore_ascii_case(&q)
                } else {
                    p == q
                };
                if !same {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Trims SP/HT/CR/LF from both ends.
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let mut end = s.len();
    while end > start && matches!(at(s, end - 1), b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    sub(s, start..end)
}
