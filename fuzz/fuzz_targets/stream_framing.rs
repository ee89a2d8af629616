//! Fuzz target: SIP framing on a TCP/TLS stream (`stream::framing::Framer`), fed the stream
//! in fuzzer-chosen chunks. Checks: no panic; never more buffered than the message limit;
//! every message framed is a head with a Content-Length and exactly that much body, no
//! larger than the limit; cutting the stream differently frames the same messages and pings
//! and ends with the same error.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ser::stream::framing::{Frame, FrameError, Framer};

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Message(Vec<u8>),
    Ping,
    Unframable(Vec<u8>, FrameError),
}

fn run(max: usize, chunks: &[&[u8]]) -> (Vec<Got>, Option<FrameError>) {
    let now = Instant::now();
    let mut f = Framer::new(max);
    let (mut out, mut frames, mut got) = (Vec::new(), Vec::new(), Vec::new());
    for c in chunks {
        let r = f.feed(c, now, &mut out, &mut frames);
        for fr in &frames {
            match *fr {
                Frame::Message(a, b) => {
                    let m = out[a..b].to_vec();
                    assert!(m.len() <= max);
                    let head = memchr::memmem::find(&m, b"\r\n\r\n").expect("a head") + 4;
                    assert!(head <= m.len());
                    got.push(Got::Message(m));
                }
                Frame::Ping => got.push(Got::Ping),
                Frame::Unframable(a, b, e) => {
                    assert!(b - a <= max);
                    got.push(Got::Unframable(out[a..b].to_vec(), e));
                }
            }
        }
        assert!(
            f.buffered() <= max,
            "{} buffered, limit {max}",
            f.buffered()
        );
        if let Err(e) = r {
            assert_eq!(f.buffered(), 0);
            return (got, Some(e));
        }
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
    let (flags, sizes, stream) = common::split(data);
    // Small limits reach the size checks; 65535 is the server's.
    let max = match flags & 3 {
        0 => 65_535,
        1 => 64,
        2 => 300,
        _ => 2048,
    };
    let whole = run(max, &[stream]);
    let cut = run(max, &common::chunks(stream, &sizes));
    assert_eq!(whole, cut);
});
