//! Fuzz target: SIP over WebSocket (`stream::ws::WsConn`): the HTTP Upgrade and the frames
//! after it, fed in fuzzer-chosen chunks. With flag bit 0 a valid Upgrade request comes first,
//! so the fuzzer works on frames. Checks: no panic; buffered bytes within MAX_HEAD before the
//! Upgrade and the message limit plus one frame header after it; no message over the limit;
//! a text message is UTF-8; cutting the stream differently yields the same messages, the same
//! bytes to write and the same outcome.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ser::stream::ws::{WsConn, WsError, WsSettings, MAX_HEAD};

const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\nOrigin: http://example.com\r\n\r\n";

fn run(
    max: usize,
    settings: &WsSettings,
    chunks: &[&[u8]],
) -> (Vec<Vec<u8>>, Vec<u8>, Option<WsError>) {
    let now = Instant::now();
    let mut ws = WsConn::new(max);
    let (mut out, mut msgs, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let mut got = Vec::new();
    for c in chunks {
        let r = ws.feed(c, now, settings, &mut out, &mut msgs, &mut write);
        for &(a, b) in &msgs {
            assert!(b - a <= max, "message of {} bytes, limit {max}", b - a);
            got.push(out[a..b].to_vec());
        }
        let bound = if ws.is_open() { max + 14 } else { MAX_HEAD };
        assert!(
            ws.buffered() <= bound,
            "{} buffered, bound {bound}",
            ws.buffered()
        );
        if let Err(e) = r {
            assert_eq!(ws.buffered(), 0);
            return (got, write, Some(e));
        }
    }
    (got, write, None)
}

fuzz_target!(|data: &[u8]| {
    let (flags, sizes, stream) = common::split(data);
    let max = match (flags >> 1) & 3 {
        0 => 65_535,
        1 => 16,
        2 => 200,
        _ => 1500,
    };
    let settings = WsSettings {
        allowed_origins: if flags & 8 != 0 {
            vec!["http://example.com".to_string()]
        } else {
            Vec::new()
        },
    };
    let mut input = Vec::new();
    if flags & 1 != 0 {
        input.extend_from_slice(UPGRADE);
    }
    input.extend_from_slice(stream);
    let whole = run(max, &settings, &[&input]);
    let cut = run(max, &settings, &common::chunks(&input, &sizes));
    assert_eq!(whole.0, cut.0);
    // A head that is both too long and malformed is refused as one or the other depending
    // on how much of it had come when it went over MAX_HEAD.
    let refused = |e: &Option<WsError>| matches!(e, Some(WsError::Refused(..)));
    if !(refused(&whole.2) && refused(&cut.2)) {
        assert_eq!(whole, cut);
    }
});
