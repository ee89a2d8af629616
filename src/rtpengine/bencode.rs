//! Bencode, the encoding of rtpengine's ng control protocol: integers (`i42e`), byte strings
//! (`4:spam`), lists (`l…e`) and dictionaries (`d…e`, keys byte strings).
//!
//! Written here rather than taken from a crate: the whole codec is ~150 lines, the crates
//! that exist either pull in serde derive machinery for one wire type or are unmaintained,
//! and the decoder must treat a daemon's reply as hostile input (bounded nesting and sizes,
//! an error, never a panic). Dictionaries keep their keys in the order given; the encoder
//! writes them sorted, as bencode asks (rtpengine accepts either).

use std::fmt;

/// One bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(Vec<(Vec<u8>, Value)>),
}

/// Why a byte string is not one bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// It ends before the value does.
    Truncated,
    /// A byte where none of `i`, `l`, `d`, or a digit may stand, at this offset.
    Unexpected(usize),
    /// An integer or length that is not a decimal number in range.
    BadNumber(usize),
    /// Lists and dictionaries nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A dictionary key that is not a byte string.
    BadKey(usize),
    /// Bytes after the value.
    Trailing(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("bencode ends early"),
            Error::Unexpected(at) => write!(f, "bencode: unexpected byte at {at}"),
            Error::BadNumber(at) => write!(f, "bencode: bad number at {at}"),
            Error::TooDeep => write!(f, "bencode nested deeper than {MAX_DEPTH}"),
            Error::BadKey(at) => write!(f, "bencode: dictionary key at {at} is not a string"),
            Error::Trailing(at) => write!(f, "bencode: bytes after the value at {at}"),
        }
    }
}

impl std::error::Error for Error {}

/// Deepest nesting the decoder takes (rtpengine's query replies nest about 8 deep).
pub const MAX_DEPTH: usize = 32;

impl Value {
    pub fn str(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// An empty dictionary.
    pub fn dict() -> Self {
        Value::Dict(Vec::new())
    }

    /// The value of `key` in a dictionary (the first, when a key repeats).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` in a dictionary (replacing a value it had); nothing for other values.
    pub fn set(&mut self, key: &str, v: Value) {
        if let Value::Dict(d) = self {
            match d.iter_mut().find(|(k, _)| k == key.as_bytes()) {
                Some((_, old)) => *old = v,
                None => d.push((key.as_bytes().to_vec(), v)),
            }
        }
    }

    /// The list under `key` of a dictionary, made when missing: where `v` is appended.
    pub fn push_to(&mut self, key: &str, v: Value) {
        if let Value::Dict(d) = self {
            match d.iter_mut().find(|(k, _)| k == key.as_bytes()) {
                Some((_, Value::List(l))) => l.push(v),
                Some((_, other)) => *other = Value::List(vec![v]),
                None => d.push((key.as_bytes().to_vec(), Value::List(vec![v]))),
            }
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A byte string as text (lossy), or an integer written out.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// Appends the encoding to `out` (dictionary keys sorted).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => bytes(b, out),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                let mut keys: Vec<&(Vec<u8>, Value)> = d.iter().collect();
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, v) in keys {
                    bytes(k, out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Decodes exactly one value from `buf` (nothing may follow it).
pub fn decode(buf: &[u8]) -> Result<Value, Error> {
    let mut pos = 0;
    let v = value(buf, &mut pos, 0)?;
    if pos != buf.len() {
        return Err(Error::Trailing(pos));
    }
    Ok(v)
}

fn value(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Value, Error> {
    let at = *pos;
    match buf.get(at).copied() {
        None => Err(Error::Truncated),
        Some(b'i') => {
            *pos += 1;
            let n = number_until(buf, pos, b'e')?;
            let s = std::str::from_utf8(n).map_err(|_| Error::BadNumber(at))?;
            // Bencode forbids "-0" and leading zeros; rtpengine never writes them, and a
            // number that parses is taken.
            s.parse::<i64>()
                .map(Value::Int)
                .map_err(|_| Error::BadNumber(at))
        }
        Some(b'0'..=b'9') => string(buf, pos).map(|s| Value::Bytes(s.to_vec())),
        Some(b'l') => {
            if depth >= MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            *pos += 1;
            let mut l = Vec::new();
            loop {
                match buf.get(*pos) {
                    None => return Err(Error::Truncated),
                    Some(b'e') => {
                        *pos += 1;
                        return Ok(Value::List(l));
                    }
                    Some(_) => l.push(value(buf, pos, depth + 1)?),
                }
            }
        }
        Some(b'd') => {
            if depth >= MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            *pos += 1;
            let mut d = Vec::new();
            loop {
                match buf.get(*pos) {
                    None => return Err(Error::Truncated),
                    Some(b'e') => {
                        *pos += 1;
                        return Ok(Value::Dict(d));
                    }
                    Some(b'0'..=b'9') => {
                        let k = string(buf, pos)?.to_vec();
                        let v = value(buf, pos, depth + 1)?;
                        d.push((k, v));
                    }
                    Some(_) => return Err(Error::BadKey(*pos)),
                }
            }
        }
        Some(_) => Err(Error::Unexpected(at)),
    }
}

/// The digits (and sign) from `pos` to the next `end`, which is consumed.
fn number_until<'a>(buf: &'a [u8], pos: &mut usize, end: u8) -> Result<&'a [u8], Error> {
    let start = *pos;
    let rest = buf.get(start..).ok_or(Error::Truncated)?;
    // An integer has at most 20 characters; a longer run is not one.
    let len = rest
        .iter()
        .take(21)
        .position(|&b| b == end)
        .ok_or(if rest.len() <= 21 {
            Error::Truncated
        } else {
            Error::BadNumber(start)
        })?;
    *pos = start + len + 1;
    Ok(&rest[..len])
}

/// A `len:bytes` string at `pos`.
fn string<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], Error> {
    let at = *pos;
    let digits = number_until(buf, pos, b':')?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadNumber(at));
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Error::BadNumber(at))?;
    let start = *pos;
    let end = start.checked_add(len).ok_or(Error::BadNumber(at))?;
    let s = buf.get(start..end).ok_or(Error::Truncated)?;
    *pos = end;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sorted_keys() {
        let mut d = Value::dict();
        d.set("sdp", Value::str("v=0\r\n"));
        d.set("command", Value::str("offer"));
        d.push_to("flags", Value::str("trust-address"));
        d.push_to("flags", Value::str("symmetric"));
        d.set("n", Value::Int(-42));
        let enc = d.to_bytes();
        assert_eq!(
            enc,
            b"d7:command5:offer5:flagsl13:trust-address9:symmetrice1:ni-42e3:sdp5:v=0\r\ne"
        );
        let back = decode(&enc).unwrap();
        assert_eq!(
            back.get("command").and_then(Value::as_bytes),
            Some(&b"offer"[..])
        );
        assert_eq!(back.get("n").and_then(Value::as_int), Some(-42));
        assert_eq!(decode(&back.to_bytes()).unwrap(), back);
    }

    #[test]
    fn rtpengine_reply() {
        let r = decode(b"d3:sdp5:v=0\r\n6:result2:oke").unwrap();
        assert_eq!(
            r.get("result").and_then(Value::as_text).as_deref(),
            Some("ok")
        );
        assert_eq!(decode(b"de").unwrap(), Value::dict());
        assert_eq!(decode(b"0:").unwrap(), Value::Bytes(Vec::new()));
        assert_eq!(decode(b"le").unwrap(), Value::List(Vec::new()));
    }

    #[test]
    fn hostile_input_is_an_error_never_a_panic() {
        let bad: &[&[u8]] = &[
            b"",
            b"d",
            b"l",
            b"i",
            b"ie",
            b"i12",
            b"i-e",
            b"i99999999999999999999999e",
            b"i1111111111111111111111111111111111111111111",
            b"5:abc",
            b"99999999999999999999999999:x",
            b"18446744073709551615:x",
            b"-1:x",
            b":x",
            b"3x:abc",
            b"d3:abce",
            b"di1ei2ee",
            b"dle",
            b"x",
            b"i1ei2e",
            b"d3:sdp5:v=0\r\n6:result2:okee",
            b"\xff\xfe",
        ];
        for b in bad {
            assert!(decode(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        // Deep nesting stops at MAX_DEPTH instead of exhausting the stack.
        let deep: Vec<u8> = vec![b'l'; 100_000];
        assert_eq!(decode(&deep), Err(Error::TooDeep));
        let mut ok_deep = vec![b'l'; MAX_DEPTH];
        ok_deep.extend(vec![b'e'; MAX_DEPTH]);
        assert!(decode(&ok_deep).is_ok());
        // Every prefix of a valid message fails cleanly; so does every one-byte corruption.
        let good = b"d3:sdp5:v=0\r\n6:resultl2:oki-3ed1:ai1eeee".to_vec();
        assert!(decode(&good).is_ok());
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err());
        }
        for i in 0..good.len() {
            for b in [0u8, b'e', b'd', b'l', b'i', b':', b'9', 0xff] {
                let mut g = good.clone();
                g[i] = b;
                let _ = decode(&g);
            }
        }
    }
}
