//! The values the strict parse keeps (top Via, Vias, From, To, a lone Contact, the URIs they
//! hold, the Request-URI) equal what a fresh parse of the same bytes reads: a
//! [`parse_lenient`] message keeps none and parses each when asked.

mod common;

use ser_parser::{parse, parse_lenient, parse_uri, write, Edits};

fn check(buf: &[u8], name: &str) {
    let Ok(m) = parse(buf) else { return };
    let l = parse_lenient(buf).expect("lenient");
    assert_eq!(m.top_via().ok(), l.top_via().ok(), "{name} top via");
    let a: Vec<_> = m.vias().map(|v| v.ok()).collect();
    let b: Vec<_> = l.vias().map(|v| v.ok()).collect();
    assert_eq!(a, b, "{name} vias");
    assert_eq!(m.from().ok(), l.from().ok(), "{name} from");
    assert_eq!(m.to().ok(), l.to().ok(), "{name} to");
    let a: Vec<_> = m.contacts().map(|v| v.ok()).collect();
    let b: Vec<_> = l.contacts().map(|v| v.ok()).collect();
    assert_eq!(a, b, "{name} contacts");
    for c in m.contacts().flatten() {
        if let ser_parser::Contact::Addr { addr, .. } = c {
            assert_eq!(
                addr.parse_uri().ok(),
                parse_uri(addr.uri).ok(),
                "{name} contact uri"
            );
        }
    }
    if let Ok(f) = m.from() {
        assert_eq!(f.parse_uri().ok(), parse_uri(f.uri).ok(), "{name} from uri");
    }
    if let Ok(f) = m.to() {
        assert_eq!(f.parse_uri().ok(), parse_uri(f.uri).ok(), "{name} to uri");
    }
    if let Some(u) = m.request_uri() {
        let fresh = parse_uri(u).ok();
        match m.parsed_request_uri() {
            Some(p) => assert_eq!(Some(p), fresh, "{name} ruri"),
            None => assert!(fresh.is_none(), "{name} ruri none but parses"),
        }
    }
    // remove_top_via: same output as on the lenient message.
    {
        let mut e1 = Edits::default();
        let r1 = e1.remove_top_via(&m);
        let mut e2 = Edits::default();
        let r2 = e2.remove_top_via(&l);
        assert_eq!(r1.is_ok(), r2.is_ok(), "{name} remove ok");
        let mut o1 = Vec::new();
        let mut o2 = Vec::new();
        write(&m, &e1, &mut o1);
        write(&l, &e2, &mut o2);
        assert_eq!(o1, o2, "{name} remove_top_via");
    }
}

#[test]
fn kept_values_equal_fresh_ones() {
    for dir in ["rfc4475", "rfc5118"] {
        for e in std::fs::read_dir(common::data_dir().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            if n.ends_with(".md") {
                continue;
            }
            let buf = if dir == "rfc4475" {
                common::rfc4475(n.trim_end_matches(".dat"))
            } else {
                common::rfc5118(&n)
            };
            check(&buf, &n);
        }
    }
    let msgs: &[&str] = &[
        "INVITE sip:bob@[::1]:5060;transport=tcp SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2\r\nv: SIP/2.0/UDP h.example\r\nf: \"A\" <sips:alice@example.com>;tag=1\r\nt: tel:+1-555-0100\r\ni: c\r\nCSeq: 1 INVITE\r\nm: <sip:a@1.2.3.4;ob>;q=0.5;expires=60\r\nl: 0\r\n\r\n",
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1;rport;received=9.9.9.9\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nFrom: sip:a@example.com;tag=1\r\nTo: sip:a@example.com\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@1.1.1.1>;q=1, <sip:a@2.2.2.2>;q=0.125\r\nContact: <sip:%61@h>\r\nContent-Length: 0\r\n\r\n",
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060\r\n ;branch=z9hG4bK1\r\nFrom: sip:a@example.com\r\n ;tag=1\r\nTo: sip:a@example.com\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact:\r\n <sip:a@1.1.1.1>\r\n ;q=1\r\nContent-Length: 0\r\n\r\n",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 5.6.7.8;branch=z9hG4bK2\r\nFrom: sip:a@example.com;tag=1\r\nTo: sip:a@example.com;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <urn:x:y>\r\nContent-Length: 0\r\n\r\n",
        "MESSAGE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nFrom: <sip:a@EXAMPLE.com.>;tag=1\r\nTo: <mailto:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        "\r\n\r\nOPTIONS sip:a@01.2.3.4 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1 ,\r\n SIP/2.0/UDP x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        "INVITE tel:+1-555-0100;phone-context=example.com SIP/2.0\r\nVia: SIP/2.0/TLS [2001:db8::9]:5061;branch=z9hG4bK1\r\nFrom: <sips:a@[2001:db8::9]>;tag=1\r\nTo: <tel:+1-555-0100>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: \"A, B\" <sips:a@[2001:db8::9]:5061;transport=tls>;expires=30\r\nContent-Length: 0\r\n\r\n",
        "OPTIONS SIPS:A%40b@EXAMPLE.COM SIP/2.0\r\nVIA: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\nFROM: <sip:a@b>;tag=1\r\nTO: <sip:a@b>\r\nCALL-ID: c\r\nCSEQ: 1 OPTIONS\r\nCONTENT-LENGTH: 0\r\n\r\n",
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1 \r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    ];
    for (k, m) in msgs.iter().enumerate() {
        assert!(
            parse(m.as_bytes()).is_ok(),
            "msg {k} parses: {:?}",
            parse(m.as_bytes()).err()
        );
        check(m.as_bytes(), &format!("msg {k}"));
    }
}
