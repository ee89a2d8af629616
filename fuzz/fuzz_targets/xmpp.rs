//! Fuzz target: the XMPP server's stream as the jabber gateway reads it
//! (`xmpp::stream::StanzaReader` over a socket that returns fuzzer-chosen chunks), and the
//! JIDs of each stanza (`xmpp::addr::parse_jid`). Checks: no panic; the reader ends every
//! input with an error (end of input at the latest), so it never loops; what a stanza keeps
//! is bounded by the size limit plus the reader's read-ahead; cutting the stream differently
//! yields the same items and the same kind of error (unless the size limit, which counts
//! the reads, decided).
#![no_main]

#[path = "common.rs"]
mod common;

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use ser::xmpp::addr::parse_jid;
use ser::xmpp::stream::{Item, Limits, StanzaReader, StreamError};

/// `stream::READ_AHEAD`: a stanza may read this much on top of its limit, and this much of it
/// may have been read before.
const READ_AHEAD: usize = 8 * 1024;

/// A socket that returns the input in the given chunks, then end of file.
struct Chunks<'a> {
    chunks: Vec<&'a [u8]>,
    next: usize,
    off: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(c) = self.chunks.get(self.next) else {
            return Ok(0);
        };
        let rest = &c[self.off..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.off += n;
        if self.off == c.len() {
            self.next += 1;
            self.off = 0;
        }
        Ok(n)
    }
}

fn run(limits: Limits, chunks: Vec<&[u8]>, len: usize) -> (Vec<Item>, StreamError) {
    let mut r = StanzaReader::new(
        Chunks {
            chunks,
            next: 0,
            off: 0,
        },
        limits,
    );
    let mut items = Vec::new();
    // Each item consumes input: at most one per byte, plus the end.
    for _ in 0..=len + 1 {
        match r.next_item() {
            Ok(item) => {
                if let Item::Stanza(s) = &item {
                    let kept = s.name.len()
                        + s.from.len()
                        + s.to.len()
                        + s.id.len()
                        + s.kind.len()
                        + s.body.as_ref().map_or(0, String::len)
                        + s.error.as_ref().map_or(0, String::len)
                        + s.error_text.as_ref().map_or(0, String::len);
                    assert!(
                        kept <= limits.max_stanza + 2 * READ_AHEAD,
                        "{kept} bytes kept"
                    );
                    let _ = (parse_jid(&s.from), parse_jid(&s.to));
                }
                items.push(item);
            }
            Err(e) => return (items, e),
        }
    }
    panic!("more items than input bytes");
}

fuzz_target!(|data: &[u8]| {
    let (flags, sizes, stream) = common::split(data);
    let limits = Limits {
        max_stanza: match flags & 3 {
            0 => 64 * 1024,
            1 => 16,
            2 => 256,
            _ => 4096,
        },
        max_depth: usize::from((flags >> 2) & 7) + 1,
    };
    let (items, err) = run(limits, vec![stream], stream.len());
    let (items_cut, err_cut) = run(limits, common::chunks(stream, &sizes), stream.len());
    let too_big = |e: &StreamError| matches!(e, StreamError::TooBig(_));
    if !too_big(&err) && !too_big(&err_cut) {
        assert_eq!(items, items_cut);
        assert_eq!(
            (err.kind(), err.condition()),
            (err_cut.kind(), err_cut.condition()),
            "{err} / {err_cut}"
        );
    }
});
