//! Edits and the writer: each helper, written out and parsed again; stateless replies.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ser_parser::{
    parse, parse_lenient, write, write_reply, Edits, HeaderName, Message, Method, ReplySpec,
};

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn apply(msg: &Message<'_>, edits: &Edits) -> Vec<u8> {
    let mut out = Vec::new();
    write(msg, edits, &mut out);
    out
}

#[test]
fn request_uri_via_record_route_append() {
    let msg = parse(INVITE).unwrap();
    let mut e = Edits::new();
    e.set_request_uri(&msg, b"sip:bob@192.0.2.4:5062;transport=udp");
    e.push_via(&msg, b"SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew");
    e.add_record_route(&msg, b"<sip:proxy.example.com;lr>");
    e.append_header(&msg, b"X-Test: yes");
    e.remove_top_route(&msg).unwrap();
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out)));
    assert_eq!(
        m.request_uri(),
        Some("sip:bob@192.0.2.4:5062;transport=udp")
    );
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 2);
    assert_eq!(
        (vias[0].host_str, vias[0].branch),
        ("proxy.example.com", Some("z9hG4bKnew"))
    );
    assert_eq!(vias[1].branch, Some("z9hG4bK776asdhds"));
    let rr: Vec<_> = m.record_routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(rr, ["sip:proxy.example.com;lr"]);
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(routes, ["sip:p2.example.com;lr"]);
    let last = m.headers().last().unwrap();
    assert_eq!((last.raw_name, last.value), (&b"X-Test"[..], &b"yes"[..]));
    assert_eq!(m.body(), b"v=0\n");
    assert_eq!(m.cseq().unwrap().method, Method::Invite);
}

#[test]
fn remove_top_via_line_or_value() {
    let resp = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp, SIP/2.0/UDP pc33.example.com;branch=z9hG4bKc\r\n\
Via: SIP/2.0/TCP other.example.com;branch=z9hG4bKo\r\n\
To: <sip:bob@example.com>;tag=a\r\nFrom: <sip:alice@example.com>;tag=b\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
    let msg = parse(resp).unwrap();
    let mut e = Edits::new();
    e.remove_top_via(&msg).unwrap();
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap();
    let b: Vec<_> = m.vias().map(|v| v.unwrap().branch.unwrap()).collect();
    assert_eq!(b, ["z9hG4bKc", "z9hG4bKo"]);
    assert_eq!(m.headers_named(HeaderName::Via).count(), 2);

    // Again: now the first line has one value and goes entirely.
    let mut e = Edits::new();
    e.remove_top_via(&m).unwrap();
    let out2 = apply(&m, &e);
    let m2 = parse(&out2).unwrap();
    let b: Vec<_> = m2.vias().map(|v| v.unwrap().branch.unwrap()).collect();
    assert_eq!(b, ["z9hG4bKo"]);
    assert_eq!(m2.headers_named(HeaderName::Via).count(), 1);
}

#[test]
fn via_received_and_rport() {
    let msg = parse(INVITE).unwrap();
    let mut e = Edits::new();
    e.set_via_received(&msg, Some(b"192.0.2.9"), Some(5060))
        .unwrap();
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.received, Some("192.0.2.9"));
    assert_eq!(v.rport, Some(Some(5060)));
    assert_eq!(v.branch, Some("z9hG4bK776asdhds"));
    assert!(out.windows(26).any(|w| w == b";rport=5060;received=192.0"));

    // An existing received= is replaced; no rport parameter means none is added.
    let buf = common::rfc5118("via-received-param-with-delim");
    let msg = parse(&buf).unwrap();
    let mut e = Edits::new();
    e.set_via_received(&msg, Some(b"2001:db8::1"), Some(5070))
        .unwrap();
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!((v.received, v.rport), (Some("2001:db8::1"), None));
}

#[test]
fn same_offset_inserts_keep_order_and_reuse() {
    let msg = parse(INVITE).unwrap();
    let mut e = Edits::new();
    let at = msg.headers_end();
    e.insert(at, b"A: 1\r\n");
    e.insert(at, b"B: 2\r\n");
    e.append_header(&msg, b"C: 3");
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap();
    let names: Vec<_> = m
        .headers()
        .iter()
        .rev()
        .take(3)
        .map(|h| h.raw_name)
        .collect();
    assert_eq!(names, [&b"C"[..], b"B", b"A"]);

    // Deleting a line and inserting at its start: the insert survives.
    e.clear();
    assert!(e.is_empty());
    let line = msg.header(HeaderName::MaxForwards).unwrap().line.clone();
    e.delete(line.clone());
    e.insert(line.start, b"Max-Forwards: 69\r\n");
    let out = apply(&msg, &e);
    assert_eq!(parse(&out).unwrap().max_forwards().unwrap().unwrap(), 69);
    let mf = parse(&out).unwrap();
    assert_eq!(mf.headers().len(), msg.headers().len());

    e.clear();
    e.replace(msg.request_uri_range().unwrap(), b"sip:x@y");
    assert_eq!(
        parse(&apply(&msg, &e)).unwrap().request_uri(),
        Some("sip:x@y")
    );
}

#[test]
fn edits_on_corpus_round_trip() {
    for (name, buf) in common::all() {
        let Ok(msg) = parse(&buf) else { continue };
        if !msg.is_request() {
            continue;
        }
        let mut e = Edits::new();
        e.push_via(&msg, b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtest;rport");
        e.add_record_route(&msg, b"<sip:192.0.2.1;lr>");
        e.append_header(&msg, b"X-Edited: 1");
        if msg.routes().next().is_some() {
            e.remove_top_route(&msg).unwrap();
        }
        let out = apply(&msg, &e);
        let m = parse(&out).unwrap_or_else(|err| panic!("{name}: {err}"));
        let top = m.top_via().unwrap();
        assert_eq!(top.branch, Some("z9hG4bKtest"), "{name}");
        assert_eq!(m.vias().count(), msg.vias().count() + 1, "{name}");
        assert_eq!(
            m.record_routes().next().unwrap().unwrap().uri,
            "sip:192.0.2.1;lr",
            "{name}"
        );
        assert_eq!(m.body(), msg.body(), "{name}");
        assert_eq!(m.call_id(), msg.call_id(), "{name}");
    }
}

#[test]
fn stateless_reply() {
    let msg = parse(INVITE).unwrap();
    let mut out = Vec::new();
    let spec = ReplySpec {
        code: 404,
        reason: b"Not Found",
        to_tag: Some(b"abc123"),
        received: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))),
        rport: Some(5070),
        extra_headers: b"Server: ser\r\n",
    };
    write_reply(&msg, &spec, &mut out);
    let r = parse(&out).unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out)));
    assert_eq!(r.status(), Some(404));
    assert_eq!(r.reason(), Some(&b"Not Found"[..]));
    let v = r.top_via().unwrap();
    assert_eq!((v.received, v.rport), (Some("192.0.2.7"), Some(Some(5070))));
    assert_eq!(r.to().unwrap().tag, Some("abc123"));
    assert_eq!(r.from().unwrap().tag, Some("1928301774"));
    assert_eq!(r.call_id(), msg.call_id());
    assert_eq!(r.cseq().unwrap(), msg.cseq().unwrap());
    assert_eq!(r.content_length(), Some(0));
    assert!(r.header(HeaderName::Server).is_some());
    assert!(r.header(HeaderName::Route).is_none() && r.header(HeaderName::Contact).is_none());

    // 100 Trying never gets a To tag; an existing tag is kept.
    let mut out2 = Vec::new();
    write_reply(
        &msg,
        &ReplySpec {
            code: 100,
            reason: b"Trying",
            to_tag: Some(b"x"),
            received: None,
            rport: None,
            extra_headers: b"",
        },
        &mut out2,
    );
    let r = parse(&out2).unwrap();
    assert_eq!(r.to().unwrap().tag, None);
    assert_eq!(r.top_via().unwrap().rport, Some(None));

    // IPv6 source, on a request with several Vias.
    let buf = common::rfc5118("mult-ip-in-header");
    let msg = parse(&buf).unwrap();
    let mut out = Vec::new();
    let spec = ReplySpec {
        code: 200,
        reason: b"OK",
        to_tag: Some(b"zz"),
        received: Some(IpAddr::V6("2001:db8::5".parse::<Ipv6Addr>().unwrap())),
        rport: None,
        extra_headers: b"",
    };
    write_reply(&msg, &spec, &mut out);
    let r = parse(&out).unwrap();
    assert_eq!(r.vias().count(), 3);
    assert_eq!(r.top_via().unwrap().received, Some("2001:db8::5"));
    assert_eq!(r.to().unwrap().tag, Some("9817--94"));
}

#[test]
fn bad_request_reply_from_lenient_parse() {
    for name in [
        "badinv01",
        "quotbal",
        "scalar02",
        "mismatch01",
        "baddn",
        "badaspec",
    ] {
        let buf = common::rfc4475(name);
        let err = parse(&buf).unwrap_err();
        let ser_parser::Outcome::Reply { code, reason } = err.outcome() else {
            panic!("{name}")
        };
        let msg = parse_lenient(&buf).unwrap();
        let mut out = Vec::new();
        let spec = ReplySpec {
            code,
            reason: reason.as_bytes(),
            to_tag: Some(b"t1"),
            received: None,
            rport: None,
            extra_headers: b"",
        };
        write_reply(&msg, &spec, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("SIP/2.0 400 "), "{name}: {text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{name}");
        assert!(parse_lenient(&out).is_some(), "{name}");
        for h in [HeaderName::Via, HeaderName::CallId, HeaderName::CSeq] {
            assert_eq!(
                parse_lenient(&out).unwrap().header(h).map(|h| h.value),
                msg.header(h).map(|h| h.value),
                "{name}"
            );
        }
    }
}

#[test]
fn via_alias_parameter() {
    let with =
        b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5070 ; ALIAS ;branch=z9hG4bKa\r\n\
                 From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n";
    let v = parse(with).unwrap().top_via().unwrap();
    assert!(v.alias);
    assert_eq!(v.branch, Some("z9hG4bKa"));
    let without = parse(INVITE).unwrap().top_via().unwrap();
    assert!(!without.alias);
}

/// replace_body: the body and Content-Length change together (rtpengine's SDP), a
/// message without Content-Length gets one, other edits still apply.
#[test]
fn replace_body_sets_content_length() {
    let msg = parse(INVITE).unwrap();
    let mut e = Edits::new();
    e.push_via(&msg, b"SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew");
    e.replace_body(&msg, b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap();
    assert_eq!(m.body(), b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
    assert_eq!(m.content_length(), Some(31));
    assert_eq!(m.vias().count(), 2);

    let no_cl = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
To: <sip:b@x>;tag=2\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\nold";
    let msg = parse(no_cl).unwrap();
    let mut e = Edits::new();
    e.replace_body(&msg, b"new body");
    let out = apply(&msg, &e);
    let m = parse(&out).unwrap();
    assert_eq!(m.body(), b"new body");
    assert_eq!(m.content_length(), Some(8));
    // To an empty body.
    let msg = parse(INVITE).unwrap();
    let mut e = Edits::new();
    e.replace_body(&msg, b"");
    let m = apply(&msg, &e);
    let m = parse(&m).unwrap();
    assert_eq!((m.body(), m.content_length()), (&b""[..], Some(0)));
}
