//! Header grammars one at a time: compact forms, folding, lists, Contact, Digest, numbers.

use ser_parser::{parse, Contact, ErrorKind, HeaderName, Method, Outcome};

fn req(extra: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\nCall-ID: c1@a\r\nCSeq: 1 OPTIONS\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn kind(extra: &str) -> ErrorKind {
    parse(&req(extra)).expect_err(extra).kind()
}

#[test]
fn names_and_compact_forms() {
    for (raw, name) in [
        ("v", HeaderName::Via),
        ("f", HeaderName::From),
        ("t", HeaderName::To),
        ("i", HeaderName::CallId),
        ("m", HeaderName::Contact),
        ("l", HeaderName::ContentLength),
        ("c", HeaderName::ContentType),
        ("k", HeaderName::Supported),
        ("s", HeaderName::Subject),
        ("e", HeaderName::ContentEncoding),
        ("o", HeaderName::Event),
        ("u", HeaderName::AllowEvents),
        ("RECORD-route", HeaderName::RecordRoute),
        ("proxy-authorization", HeaderName::ProxyAuthorization),
        ("www-authenticate", HeaderName::WwwAuthenticate),
        ("call-id", HeaderName::CallId),
        ("X-Foo", HeaderName::Other),
        ("x", HeaderName::Other),
    ] {
        assert_eq!(HeaderName::from_bytes(raw.as_bytes()), name, "{raw}");
    }
}

#[test]
fn every_known_name_round_trips_in_any_case() {
    use HeaderName::*;
    let all = [
        Via,
        From,
        To,
        CallId,
        CSeq,
        MaxForwards,
        ContentLength,
        ContentType,
        Contact,
        Expires,
        Route,
        RecordRoute,
        Authorization,
        ProxyAuthorization,
        WwwAuthenticate,
        ProxyAuthenticate,
        Require,
        ProxyRequire,
        Supported,
        Unsupported,
        Allow,
        Server,
        UserAgent,
        Warning,
        Date,
        Subject,
        Event,
        Accept,
        ContentEncoding,
        AllowEvents,
    ];
    for n in all {
        let s = n.as_str();
        assert_eq!(HeaderName::from_bytes(s.as_bytes()), n, "{s}");
        assert_eq!(
            HeaderName::from_bytes(s.to_ascii_uppercase().as_bytes()),
            n,
            "{s}"
        );
        assert_eq!(
            HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()),
            n,
            "{s}"
        );
        // One letter off, same length and first letter: not this header.
        let mut wrong = s.as_bytes().to_vec();
        let last = wrong.len() - 1;
        wrong[last] = b'#';
        assert_eq!(HeaderName::from_bytes(&wrong), Other, "{s}");
    }
    for raw in ["", "Cxll-ID", "Callid", "Contacts", "To:", "V1a"] {
        assert_eq!(HeaderName::from_bytes(raw.as_bytes()), Other, "{raw}");
    }
}

#[test]
fn lists_across_lines_and_commas() {
    let buf = req(
        "Route: <sip:a.example.com;lr>,<sip:b.example.com;lr>\r\nRoute: <sip:c.example.com;lr>\r\n",
    );
    let m = parse(&buf).unwrap();
    let r: Vec<_> = m.routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(
        r,
        [
            "sip:a.example.com;lr",
            "sip:b.example.com;lr",
            "sip:c.example.com;lr"
        ]
    );
    assert_eq!(m.headers_named(HeaderName::Route).count(), 2);
}

#[test]
fn contact_forms() {
    let buf = req("Contact: *\r\nExpires: 0\r\n");
    let m = parse(&buf).unwrap();
    assert_eq!(m.contacts().next().unwrap().unwrap(), Contact::Star);
    assert_eq!(m.expires().unwrap().unwrap(), 0);
    assert_eq!(
        kind("Contact: *, <sip:a@b>\r\n"),
        ErrorKind::BadHeader(HeaderName::Contact)
    );
    assert_eq!(
        kind("Contact: *\r\nContact: <sip:a@b>\r\n"),
        ErrorKind::BadHeader(HeaderName::Contact)
    );

    let buf = req("Contact: \"A, B\" <sip:a@b>;q=1.0;expires=99999999999, sip:c@d;q=0.5\r\n");
    let m = parse(&buf).unwrap();
    let c: Vec<_> = m.contacts().map(Result::unwrap).collect();
    let Contact::Addr { addr, q, expires } = &c[0] else {
        panic!()
    };
    assert_eq!(
        (addr.display, *q, *expires),
        (Some("A, B"), Some(1000), Some(u32::MAX))
    );
    let Contact::Addr { addr, q, .. } = &c[1] else {
        panic!()
    };
    assert_eq!((addr.uri, *q), ("sip:c@d", Some(500)));
    assert_eq!(
        kind("Contact: <sip:a@b>;q=1.5\r\n"),
        ErrorKind::BadHeader(HeaderName::Contact)
    );
    assert_eq!(
        kind("Contact: <sip:a@b>;expires=soon\r\n"),
        ErrorKind::BadHeader(HeaderName::Contact)
    );
    assert_eq!(
        kind("Contact: <sip:a@b>,\r\n"),
        ErrorKind::BadHeader(HeaderName::Contact)
    );
    assert_eq!(
        kind("Contact: <sip:a@b\r\n"),
        ErrorKind::BadHeader(HeaderName::Contact)
    );
}

#[test]
fn digest_credentials() {
    let buf = req("Authorization: Digest username=\"bob\", realm=\"biloxi.com\",\r\n nonce=\"dcd98b\", uri=\"sip:bob@example.com\",\r\n response=\"6629fae4\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\", opaque=\"5ccc\"\r\n");
    let m = parse(&buf).unwrap();
    let d = m.authorization().unwrap().unwrap();
    assert_eq!(
        (d.username, d.realm, d.nonce),
        (Some("bob"), Some("biloxi.com"), Some("dcd98b"))
    );
    assert_eq!(
        (d.uri, d.response, d.algorithm),
        (Some("sip:bob@example.com"), Some("6629fae4"), Some("MD5"))
    );
    assert_eq!(
        (d.qop, d.nc, d.cnonce, d.opaque),
        (
            Some("auth"),
            Some("00000001"),
            Some("0a4f113b"),
            Some("5ccc")
        )
    );
    assert!(m.proxy_authorization().is_none());
    let buf = req("Proxy-Authorization: Digest username=\"bob\" realm=x\r\n");
    let m = parse(&buf).unwrap();
    assert!(m.proxy_authorization().unwrap().is_err());
}

#[test]
fn numbers_and_single_headers() {
    assert_eq!(
        kind("Max-Forwards: 256\r\n"),
        ErrorKind::BadHeader(HeaderName::MaxForwards)
    );
    assert_eq!(
        kind("Max-Forwards: -1\r\n"),
        ErrorKind::BadHeader(HeaderName::MaxForwards)
    );
    assert_eq!(
        kind("Expires: 4294967296\r\n"),
        ErrorKind::BadHeader(HeaderName::Expires)
    );
    assert_eq!(
        kind("Expires: soon\r\n"),
        ErrorKind::BadHeader(HeaderName::Expires)
    );
    assert_eq!(kind("Content-Length: 5\r\n"), ErrorKind::BadContentLength);
    let short = String::from_utf8(req(""))
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: 5")
        + "abc";
    assert_eq!(
        parse(short.as_bytes()).unwrap_err().kind(),
        ErrorKind::BodyTooShort
    );
    assert_eq!(
        kind("Call-ID: two@a\r\n"),
        ErrorKind::DuplicateHeader(HeaderName::CallId)
    );
    assert_eq!(
        kind("Via: SIP/2.0/UDP\r\n"),
        ErrorKind::BadHeader(HeaderName::Via)
    );
    assert_eq!(
        kind("Via: SIP/2.0/UDP h;branch=\"q\"\r\n"),
        ErrorKind::BadHeader(HeaderName::Via)
    );
    assert_eq!(
        kind("Via: SIP/2.0/UDP h:70000\r\n"),
        ErrorKind::BadHeader(HeaderName::Via)
    );
    assert_eq!(kind("Bad Header: x\r\n"), ErrorKind::BadHeaderName);
    assert_eq!(kind("X-Nul: a\0b\r\n"), ErrorKind::BadHeaderValue);
    let e = parse(&req("Max-Forwards: 300\r\n")).unwrap_err();
    assert_eq!(
        e.outcome(),
        Outcome::Reply {
            code: 400,
            reason: "Bad Max-Forwards"
        }
    );
    assert!(e.is_request());
}

#[test]
fn framing_details() {
    // Leading CRLFs are skipped; offsets start at the request line.
    let mut buf = b"\r\n\r\n".to_vec();
    buf.extend_from_slice(&req(""));
    let m = parse(&buf).unwrap();
    assert!(m.buf().starts_with(b"OPTIONS "));
    assert_eq!(
        &m.buf()[m.request_uri_range().unwrap()],
        b"sip:bob@example.com"
    );
    // Bare LF line ends are tolerated.
    let lf: Vec<u8> = req("").into_iter().filter(|&b| b != b'\r').collect();
    let m = parse(&lf).unwrap();
    assert_eq!(m.method(), Some(Method::Options));
    assert_eq!(m.headers().len(), 6);
    // A header line cut short is a truncated message.
    let e = parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Truncated);
    // Responses: anything wrong is dropped.
    let e = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n").unwrap_err();
    assert_eq!(
        (e.kind(), e.outcome()),
        (ErrorKind::MissingHeader(HeaderName::From), Outcome::Drop)
    );
    let e = parse(b"SIP/3.0 200 OK\r\n\r\n").unwrap_err();
    assert_eq!(e.outcome(), Outcome::Drop);
    assert_eq!(
        parse(b"\x16\x03\x01 garbage").unwrap_err().outcome(),
        Outcome::Drop
    );
    assert_eq!(parse(b"").unwrap_err().outcome(), Outcome::Drop);
}
