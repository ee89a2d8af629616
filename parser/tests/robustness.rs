//! Hostile input never panics: every prefix of every corpus message and deterministic random
//! mutations of them go through parse, parse_lenient, every accessor, the writer with edits,
//! write_reply and parse_uri.

mod common;

use ser_parser::{
    parse, parse_lenient, parse_uri, uri_eq, write, write_reply, Edits, Message, ReplySpec,
};

/// xorshift64*: deterministic, no rand crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn exercise(msg: &Message<'_>) {
    let _ = (
        msg.buf(),
        msg.method(),
        msg.request_uri(),
        msg.status(),
        msg.reason(),
        msg.body(),
    );
    let _ = (
        msg.call_id(),
        msg.cseq(),
        msg.top_via(),
        msg.from(),
        msg.to(),
    );
    let _ = (msg.max_forwards(), msg.content_length(), msg.expires());
    let _ = (msg.authorization(), msg.proxy_authorization());
    for v in msg.vias().flatten() {
        let _ = v.range;
    }
    let _ = msg.contacts().count() + msg.routes().count() + msg.record_routes().count();
    for s in [msg.request_uri()].into_iter().flatten() {
        if let Ok(u) = parse_uri(s) {
            assert!(uri_eq(&u, &u));
        }
    }
    if let Ok(to) = msg.to() {
        let _ = parse_uri(to.uri);
    }
    let mut e = Edits::new();
    e.push_via(msg, b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr");
    let _ = e.remove_top_via(msg);
    let _ = e.set_via_received(msg, Some(b"192.0.2.2"), Some(5060));
    let _ = e.remove_top_route(msg);
    e.add_record_route(msg, b"<sip:192.0.2.1;lr>");
    e.set_request_uri(msg, b"sip:x@y");
    e.append_header(msg, b"X: y");
    let reversed = std::ops::Range { start: 3, end: 1 };
    e.delete(reversed);
    e.replace(usize::MAX - 1..usize::MAX, b"z");
    let mut out = Vec::new();
    write(msg, &e, &mut out);
    let spec = ReplySpec {
        code: 400,
        reason: b"Bad Request",
        to_tag: Some(b"t"),
        received: Some([192, 0, 2, 3].into()),
        rport: Some(1),
        extra_headers: b"",
    };
    out.clear();
    write_reply(msg, &spec, &mut out);
}

fn feed(buf: &[u8]) {
    if let Ok(m) = parse(buf) {
        exercise(&m);
    }
    if let Some(m) = parse_lenient(buf) {
        exercise(&m);
    }
    if let Ok(s) = std::str::from_utf8(buf) {
        if let Ok(u) = parse_uri(s) {
            assert!(uri_eq(&u, &u));
        }
    }
}

#[test]
fn every_prefix() {
    for (_, buf) in common::all() {
        for n in 0..=buf.len() {
            feed(&buf[..n]);
        }
    }
}

#[test]
fn random_mutations() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    const INTERESTING: &[u8] = b"\r\n \t:;,<>\"\\%[]@=?/*0123456789";
    for (_, buf) in common::all() {
        for _ in 0..300 {
            let mut m = buf.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len());
                match rng.below(4) {
                    0 => m[i] = rng.next() as u8,
                    1 => m[i] = INTERESTING[rng.below(INTERESTING.len())],
                    2 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, INTERESTING[rng.below(INTERESTING.len())]),
                }
                if m.is_empty() {
                    break;
                }
            }
            feed(&m);
        }
    }
}

#[test]
fn uri_prefixes_and_junk() {
    let uris = [
        "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=project%20x&priority=urgent",
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        "tel:+1-201-555-0123;phone-context=example.com",
        "sip:[2001:db8:::192.0.2.1]",
    ];
    for u in uris {
        for n in 0..=u.len() {
            if let Some(p) = u.get(..n) {
                feed(p.as_bytes());
            }
        }
    }
}
