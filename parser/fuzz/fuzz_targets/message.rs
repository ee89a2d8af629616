//! Fuzz target: parse (strict and lenient), every accessor, write with edits, write_reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ser_parser::{parse, parse_lenient, parse_uri, uri_eq, write, write_reply, Edits, Message, ReplySpec};

fn exercise(msg: &Message<'_>, edits: &mut Edits, out: &mut Vec<u8>) {
    let _ = (msg.method(), msg.request_uri(), msg.status(), msg.reason(), msg.body(), msg.call_id());
    let _ = (msg.cseq(), msg.top_via(), msg.from(), msg.to(), msg.max_forwards(), msg.content_length());
    let _ = (msg.expires(), msg.authorization(), msg.proxy_authorization());
    let _ = msg.vias().count() + msg.contacts().count() + msg.routes().count() + msg.record_routes().count();
    if let Some(Ok(u)) = msg.request_uri().map(parse_uri) {
        assert!(uri_eq(&u, &u));
    }
    edits.clear();
    edits.push_via(msg, b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfuzz");
    let _ = edits.remove_top_via(msg);
    let _ = edits.set_via_received(msg, Some(b"192.0.2.2"), Some(5060));
    let _ = edits.remove_top_route(msg);
    edits.add_record_route(msg, b"<sip:192.0.2.1;lr>");
    edits.set_request_uri(msg, b"sip:fuzz@example.com");
    edits.append_header(msg, b"X-Fuzz: 1");
    out.clear();
    write(msg, edits, out);
    let spec = ReplySpec {
        code: 400,
        reason: b"Bad Request",
        to_tag: Some(b"fuzz"),
        received: Some([192, 0, 2, 3].into()),
        rport: Some(5060),
        extra_headers: b"",
    };
    out.clear();
    write_reply(msg, &spec, out);
}

fuzz_target!(|data: &[u8]| {
    let mut edits = Edits::new();
    let mut out = Vec::new();
    if let Ok(msg) = parse(data) {
        exercise(&msg, &mut edits, &mut out);
        // What we accept and write back unchanged must parse again.
        out.clear();
        write(&msg, &Edits::new(), &mut out);
        assert_eq!(out.as_slice(), msg.buf());
    }
    if let Some(msg) = parse_lenient(data) {
        exercise(&msg, &mut edits, &mut out);
    }
});
