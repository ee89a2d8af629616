//! Fuzz target: parse (strict and lenient), every accessor, write with edits, write_reply;
//! the values the strict parse keeps (top Via, From, To, lone Contact, Request-URI, each
//! name-addr's URI) agree with a fresh parse of the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ser_parser::{
    parse, parse_credentials, parse_lenient, parse_uri, uri_eq, write, write_reply, Contact, Edits,
    HeaderName, Message, NameAddr, ReplySpec,
};

/// A name-addr's kept URI (`NameAddr::parse_uri`) is what `parse_uri` reads from its text.
fn check_name_addr(na: &NameAddr<'_>) {
    let kept = na.parse_uri();
    assert_eq!(
        kept.as_ref().ok(),
        parse_uri(na.uri).as_ref().ok(),
        "{na:?}"
    );
    if let Ok(u) = kept {
        assert!(uri_eq(&u, &u));
    }
}

fn exercise(msg: &Message<'_>, edits: &mut Edits, out: &mut Vec<u8>) {
    let _ = (
        msg.method(),
        msg.request_uri(),
        msg.status(),
        msg.reason(),
        msg.body(),
        msg.call_id(),
    );
    let _ = (
        msg.cseq(),
        msg.top_via(),
        msg.max_forwards(),
        msg.content_length(),
    );
    let _ = (
        msg.expires(),
        msg.authorization(),
        msg.proxy_authorization(),
    );
    let _ = msg.vias().count() + msg.routes().count() + msg.record_routes().count();
    for na in [msg.from(), msg.to()].iter().flatten() {
        check_name_addr(na);
    }
    for c in msg.contacts().flatten() {
        if let Contact::Addr { addr, .. } = c {
            check_name_addr(&addr);
        }
    }
    for na in msg.routes().chain(msg.record_routes()).flatten() {
        check_name_addr(&na);
    }
    if let Some(Ok(u)) = msg.request_uri().map(parse_uri) {
        assert!(uri_eq(&u, &u));
    }
    if let Some(u) = msg.parsed_request_uri() {
        assert!(uri_eq(&u, &u));
    }
    for h in msg.headers() {
        if matches!(
            h.name,
            HeaderName::Authorization | HeaderName::ProxyAuthorization
        ) {
            let _ = parse_credentials(h.value, h.name);
        }
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

/// What the strict parse kept equals what a fresh parse of the same headers reads: `lenient`
/// indexes the same bytes and keeps nothing, so its accessors parse each value when asked.
fn check_kept(strict: &Message<'_>, lenient: &Message<'_>) {
    assert_eq!(strict.buf(), lenient.buf());
    assert_eq!(strict.headers(), lenient.headers());
    assert_eq!(strict.top_via().ok(), lenient.top_via().ok());
    assert!(strict.top_via().is_ok());
    assert_eq!(strict.from().ok(), lenient.from().ok());
    assert!(strict.from().is_ok() && strict.to().is_ok());
    assert_eq!(strict.to().ok(), lenient.to().ok());
    assert!(strict
        .vias()
        .map(|v| v.ok())
        .eq(lenient.vias().map(|v| v.ok())));
    assert!(strict
        .contacts()
        .map(|c| c.ok())
        .eq(lenient.contacts().map(|c| c.ok())));
    assert_eq!(lenient.parsed_request_uri(), None);
    match (strict.request_uri(), strict.parsed_request_uri()) {
        (Some(text), Some(kept)) => assert_eq!(parse_uri(text).ok(), Some(kept)),
        // Kept for sip, sips and tel; other schemes are checked generically.
        (Some(text), None) => assert!(parse_uri(text).is_err(), "{text:?}"),
        (None, kept) => assert_eq!(kept, None),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut edits = Edits::new();
    let mut out = Vec::new();
    let strict = parse(data);
    if let Ok(msg) = &strict {
        exercise(msg, &mut edits, &mut out);
        // What we accept and write back unchanged must parse again.
        out.clear();
        write(msg, &Edits::new(), &mut out);
        assert_eq!(out.as_slice(), msg.buf());
    }
    let lenient = parse_lenient(data);
    if let Some(msg) = &lenient {
        exercise(msg, &mut edits, &mut out);
    }
    match (&strict, &lenient) {
        (Ok(s), Some(l)) => check_kept(s, l),
        (Ok(_), None) => panic!("parse accepted what parse_lenient refused"),
        _ => {}
    }
});
