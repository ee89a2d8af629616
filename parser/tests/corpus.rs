//! The RFC 4475 and RFC 5118 torture messages: each with its expected outcome (table-driven),
//! the values the RFCs describe for the valid ones, and parse → write → byte-identical.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use ser_parser::{
    parse, parse_lenient, parse_uri, uri_eq, write, Contact, Edits, ErrorKind, HeaderName, Host,
    Method, Outcome,
};

/// What parse must do with a message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    /// Rejected with this outcome and error kind.
    Reject(Outcome, ErrorKind),
}

const fn bad(reason: &'static str, kind: ErrorKind) -> Expect {
    Expect::Reject(Outcome::Reply { code: 400, reason }, kind)
}

fn expectations() -> Vec<(&'static str, Expect)> {
    use ErrorKind as K;
    use Expect::Ok as OK;
    vec![
        // 3.1.1 valid
        ("wsinv", OK),
        ("intmeth", OK),
        ("esc01", OK),
        ("escnull", OK),
        ("esc02", OK),
        ("lwsdisp", OK),
        ("longreq", OK),
        ("dblreq", OK),
        ("semiuri", OK),
        ("transports", OK),
        ("mpart01", OK),
        ("unreason", OK),
        ("noreason", OK),
        // 3.1.2 invalid: all rejected but lwsstart, trws and baddate, which a liberal element may accept
        ("badinv01", bad("Bad Via", K::BadHeader(HeaderName::Via))),
        ("clerr", bad("Bad Content-Length", K::BodyTooShort)),
        ("ncl", bad("Bad Content-Length", K::BadContentLength)),
        ("scalar02", bad("Bad CSeq", K::BadCSeq)),
        ("scalarlg", Expect::Reject(Outcome::Drop, K::BadCSeq)),
        ("quotbal", bad("Bad To", K::BadHeader(HeaderName::To))),
        ("ltgtruri", bad("Bad Request-URI", K::BadRequestUri)),
        ("lwsruri", bad("Bad Request-URI", K::BadRequestUri)),
        ("lwsstart", OK),
        ("trws", OK),
        ("escruri", bad("Bad Request-URI", K::BadRequestUri)),
        ("baddate", OK),
        (
            "regbadct",
            bad("Bad Contact", K::BadHeader(HeaderName::Contact)),
        ),
        ("badaspec", bad("Bad To", K::BadHeader(HeaderName::To))),
        ("baddn", bad("Bad From", K::BadHeader(HeaderName::From))),
        (
            "badvers",
            Expect::Reject(
                Outcome::Reply {
                    code: 505,
                    reason: "Version Not Supported",
                },
                K::VersionNotSupported,
            ),
        ),
        (
            "mismatch01",
            bad("CSeq Method Mismatch", K::CSeqMethodMismatch),
        ),
        (
            "mismatch02",
            bad("CSeq Method Mismatch", K::CSeqMethodMismatch),
        ),
        ("bigcode", Expect::Reject(Outcome::Drop, K::BadStatusCode)),
        // 3.2 transaction layer
        ("badbranch", OK),
        // 3.3 application layer: the element answers these; insuf, multi01 and mcl01 are
        // answered with 400 by the parser itself (missing / repeated mandatory headers, framing).
        (
            "insuf",
            bad("Missing From", K::MissingHeader(HeaderName::From)),
        ),
        ("unkscm", OK),
        ("novelsc", OK),
        ("unksm2", OK),
        ("bext01", OK),
        ("invut", OK),
        ("regaut01", OK),
        (
            "multi01",
            bad("Duplicate Header", K::DuplicateHeader(HeaderName::CSeq)),
        ),
        ("mcl01", bad("Bad Content-Length", K::BadContentLength)),
        ("bcast", OK),
        ("zeromf", OK),
        ("cparam01", OK),
        ("cparam02", OK),
        ("regescrt", OK),
        ("sdp01", OK),
        // 3.4 backward compatibility
        ("inv2543", OK),
        // not referenced by the RFC: a request line without SIP-Version is not SIP
        ("test", Expect::Reject(Outcome::Drop, K::NotSip)),
    ]
}

#[test]
fn rfc4475_outcomes() {
    let table = expectations();
    assert_eq!(
        table.len(),
        common::RFC4475.len(),
        "every file has an expectation"
    );
    for (name, expect) in table {
        let buf = common::rfc4475(name);
        let got = parse(&buf);
        match (&got, expect) {
            (Ok(_), Expect::Ok) => {}
            (Err(e), Expect::Reject(outcome, kind)) => {
                assert_eq!(e.kind(), kind, "{name}: {e}");
                assert_eq!(e.outcome(), outcome, "{name}: {e}");
            }
            _ => panic!("{name}: expected {expect:?}, got {got:?}"),
        }
    }
}

#[test]
fn rfc5118_outcomes() {
    for name in common::RFC5118 {
        let buf = common::rfc5118(name);
        let r = parse(&buf);
        if *name == "ipv6-bad" {
            let e = r.expect_err("ipv6-bad is invalid");
            assert_eq!(e.kind(), ErrorKind::BadRequestUri);
            assert_eq!(
                e.outcome(),
                Outcome::Reply {
                    code: 400,
                    reason: "Bad Request-URI"
                }
            );
        } else {
            assert!(r.is_ok(), "{name}: {r:?}");
        }
    }
}

#[test]
fn round_trip_without_edits_is_identical() {
    for (name, buf) in common::all() {
        let Ok(msg) = parse(&buf) else { continue };
        let mut out = Vec::new();
        write(&msg, &Edits::new(), &mut out);
        assert_eq!(out, msg.buf(), "{name}");
        let again = parse(&out).expect("written message parses");
        assert_eq!(again.headers().len(), msg.headers().len(), "{name}");
    }
}

#[test]
fn lenient_indexes_requests_that_fail_parse() {
    for name in [
        "badinv01",
        "clerr",
        "ncl",
        "scalar02",
        "quotbal",
        "ltgtruri",
        "lwsruri",
        "escruri",
        "regbadct",
        "badaspec",
        "baddn",
        "badvers",
        "mismatch01",
        "mismatch02",
        "insuf",
        "multi01",
        "mcl01",
    ] {
        let buf = common::rfc4475(name);
        let msg = parse_lenient(&buf).unwrap_or_else(|| panic!("{name}: lenient parse"));
        assert!(msg.is_request(), "{name}");
        assert!(msg.header(HeaderName::Via).is_some(), "{name}");
    }
    assert!(parse_lenient(b"hello world\r\n\r\n").is_none());
    assert!(parse_lenient(&common::rfc4475("test")).is_none());
}

#[test]
fn wsinv_values() {
    let buf = common::rfc4475("wsinv");
    let m = parse(&buf).unwrap();
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(
        m.request_uri(),
        Some("sip:vivekg@chair-dnrc.example.com;unknownparam")
    );
    let to = m.to().unwrap();
    assert_eq!(to.uri, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag, Some("1918181833n"));
    let from = m.from().unwrap();
    assert_eq!(from.display, Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.uri, "sip:jdrosen@example.com");
    assert_eq!(from.tag, Some("98asjd8"));
    assert_eq!(m.max_forwards().unwrap().unwrap(), 68);
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.number, cseq.method), (9, Method::Invite));
    assert_eq!(m.call_id(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (vias[0].transport, vias[0].host_str, vias[0].branch),
        ("UDP", "192.0.2.2", Some("390skdjuw"))
    );
    assert_eq!(vias[0].host, Host::V4(Ipv4Addr::new(192, 0, 2, 2)));
    assert_eq!(
        (vias[1].transport, vias[1].host_str, vias[1].branch),
        ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8"))
    );
    assert_eq!(
        (vias[2].transport, vias[2].host_str, vias[2].branch),
        ("UDP", "192.168.255.111", Some("z9hG4bK30239"))
    );
    let contacts: Vec<_> = m.contacts().map(Result::unwrap).collect();
    match &contacts[..] {
        [Contact::Addr { addr, q, expires }] => {
            assert_eq!(addr.display, Some(r#"Quoted string \"\""#));
            assert_eq!(addr.uri, "sip:jdrosen@example.com");
            assert_eq!(*q, Some(330));
            assert_eq!(*expires, None);
        }
        other => panic!("{other:?}"),
    }
    let routes: Vec<_> = m.routes().map(Result::unwrap).collect();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].uri,
        "sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    );
    let subject = m.header(HeaderName::Subject).unwrap();
    assert_eq!((subject.raw_name, subject.value), (&b"s"[..], &b""[..]));
    let other = m
        .headers()
        .iter()
        .find(|h| h.raw_name == b"NewFangledHeader")
        .unwrap();
    assert_eq!(other.name, HeaderName::Other);
    assert_eq!(
        other.value,
        b"newfangled value\r\n continued newfangled value"
    );
}

#[test]
fn intmeth_values() {
    let buf = common::rfc4475("intmeth");
    let m = parse(&buf).unwrap();
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(m.method(), Some(Method::Other(method)));
    assert_eq!(m.cseq().unwrap().method.as_str(), method);
    let uri = parse_uri(m.request_uri().unwrap()).unwrap();
    assert_eq!(
        uri.user,
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        uri.password,
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(uri.host, Host::Name("example.com"));
    let from = m.from().unwrap();
    assert_eq!(from.display, Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(from.tag, Some("_token~1'+`*%!-."));
    assert_eq!(
        m.to().unwrap().uri,
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com"
    );
    assert_eq!(
        m.call_id(),
        Some(&br#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#[..])
    );
    assert_eq!(m.max_forwards().unwrap().unwrap(), 255);
}

#[test]
fn escapes_values() {
    let buf = common::rfc4475("esc01");
    let m = parse(&buf).unwrap();
    let ruri = parse_uri(m.request_uri().unwrap()).unwrap();
    assert_eq!(ruri.user, Some("sips%3Auser%40example.com"));
    assert_eq!(ruri.host, Host::Name("example.net"));
    let to = parse_uri(m.to().unwrap().uri).unwrap();
    assert!(uri_eq(&to, &parse_uri("sip:user@example.com").unwrap()));
    assert_eq!(m.from().unwrap().uri, "sip:I%20have%20spaces@example.net");
    let Some(Ok(Contact::Addr { addr, .. })) = m.contacts().next() else {
        panic!()
    };
    let c = parse_uri(addr.uri).unwrap();
    assert_eq!(c.user, Some("cal%6Cer"));
    assert_eq!(c.param("lr"), Some(None));
    assert_eq!(c.param("name"), Some(Some("v%61lue%25%34%31")));
    assert_eq!(m.header(HeaderName::ContentType).unwrap().raw_name, b"C");

    let buf = common::rfc4475("escnull");
    let m = parse(&buf).unwrap();
    assert_eq!(m.contacts().count(), 2);
    assert_eq!(
        parse_uri(m.to().unwrap().uri).unwrap().user,
        Some("null-%00-null")
    );

    let buf = common::rfc4475("esc02");
    let m = parse(&buf).unwrap();
    assert_eq!(m.method(), Some(Method::Other("RE%47IST%45R")));
    assert_eq!(m.from().unwrap().display, Some("%Z%45"));
    // "C%6Fntact" is an extension header, not Contact.
    assert_eq!(m.contacts().count(), 2);
    assert!(m
        .headers()
        .iter()
        .any(|h| h.raw_name == b"C%6Fntact" && h.name == HeaderName::Other));
    assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bK209%fzsnel234"));
}

#[test]
fn display_names_and_uris() {
    let m_buf = common::rfc4475("lwsdisp");
    let m = parse(&m_buf).unwrap();
    let from = m.from().unwrap();
    assert_eq!(
        (from.display, from.uri, from.tag),
        (Some("caller"), "sip:caller@example.com", Some("323"))
    );

    let buf = common::rfc4475("semiuri");
    let m = parse(&buf).unwrap();
    let u = parse_uri(m.request_uri().unwrap()).unwrap();
    assert_eq!(u.user, Some("user;par=u%40example.net"));
    assert_eq!(u.host, Host::Name("example.com"));
    assert_eq!(u.params, "");
    assert_eq!(m.headers_named(HeaderName::Accept).count(), 1);

    let buf = common::rfc4475("unksm2");
    let m = parse(&buf).unwrap();
    assert_eq!(m.to().unwrap().uri, "isbn:2983792873");
    assert_eq!(m.from().unwrap().uri, "http://www.example.com");
    let buf = common::rfc4475("novelsc");
    assert_eq!(
        parse(&buf).unwrap().request_uri(),
        Some("soap.beep://192.0.2.103:3002")
    );

    let buf = common::rfc4475("cparam01");
    let m = parse(&buf).unwrap();
    let Some(Ok(Contact::Addr { addr, .. })) = m.contacts().next() else {
        panic!()
    };
    assert_eq!(
        (addr.uri, addr.params),
        ("sip:+19725552222@gw1.example.net", ";unknownparam")
    );
    let buf = common::rfc4475("cparam02");
    let m = parse(&buf).unwrap();
    let Some(Ok(Contact::Addr { addr, .. })) = m.contacts().next() else {
        panic!()
    };
    assert_eq!(
        (addr.uri, addr.params),
        ("sip:+19725552222@gw1.example.net;unknownparam", "")
    );

    let buf = common::rfc4475("regescrt");
    let m = parse(&buf).unwrap();
    let Some(Ok(Contact::Addr { addr, .. })) = m.contacts().next() else {
        panic!()
    };
    assert_eq!(
        parse_uri(addr.uri).unwrap().headers,
        "Route=%3Csip:sip.example.com%3E"
    );
}

#[test]
fn longreq_values() {
    let buf = common::rfc4475("longreq");
    let m = parse(&buf).unwrap();
    assert!(m.headers().len() > 32, "spills past the inline index");
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 34);
    assert_eq!(vias[0].host_str, "sip33.example.com");
    assert_eq!(vias[32].host_str, "sip1.example.com");
    assert_eq!(
        (vias[33].host_str, vias[33].received),
        ("host.example.com", Some("192.0.2.5"))
    );
    assert!(vias[33].branch.unwrap().starts_with("verylonglong"));
    assert!(vias.iter().all(|v| v.transport == "TCP"));
    let to = m.to().unwrap();
    assert!(to
        .display
        .unwrap()
        .starts_with("I have a user name of extremeextreme"));
    assert_eq!(parse_uri(to.uri).unwrap().port, Some(6000));
    assert!(m.from().unwrap().tag.unwrap().starts_with("1298298298"));
    assert_eq!(m.cseq().unwrap().number, 3882340);
    assert_eq!(m.max_forwards().unwrap().unwrap(), 70);
    assert_eq!(m.body().len(), 150);
}

#[test]
fn dblreq_keeps_only_the_first_message() {
    let buf = common::rfc4475("dblreq");
    let m = parse(&buf).unwrap();
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.content_length(), Some(0));
    assert!(m.body().is_empty());
    let first_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(m.buf().len(), first_end);
    assert_eq!(
        m.call_id(),
        Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..])
    );
    assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bKkdjuw23492"));
}

#[test]
fn transports_and_bodies() {
    let buf = common::rfc4475("transports");
    let m = parse(&buf).unwrap();
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);

    let buf = common::rfc4475("mpart01");
    let m = parse(&buf).unwrap();
    assert_eq!(m.method(), Some(Method::Message));
    assert_eq!(m.body().len(), 553);
    let v = m.top_via().unwrap();
    assert_eq!((v.port, v.rport), (Some(5070), Some(None)));
    assert_eq!(
        m.routes().next().unwrap().unwrap().uri,
        "sip:127.0.0.1:5080"
    );

    let buf = common::rfc4475("inv2543");
    let m = parse(&buf).unwrap();
    assert!(m.max_forwards().is_none());
    assert_eq!(m.top_via().unwrap().branch, None);
    assert_eq!(m.content_length(), None);
    assert!(!m.body().is_empty());
    let rr = m.record_routes().next().unwrap().unwrap();
    assert_eq!(
        parse_uri(rr.uri).unwrap().param("maddr"),
        Some(Some("ss1.example.com"))
    );

    let buf = common::rfc4475("zeromf");
    assert_eq!(parse(&buf).unwrap().max_forwards().unwrap().unwrap(), 0);
    let buf = common::rfc4475("regaut01");
    let m = parse(&buf).unwrap();
    assert_eq!(
        m.authorization().unwrap().unwrap_err().kind(),
        ErrorKind::NotDigest
    );
}

#[test]
fn responses() {
    let buf = common::rfc4475("unreason");
    let m = parse(&buf).unwrap();
    assert_eq!(m.status(), Some(200));
    assert!(m.reason().unwrap().starts_with(b"= 2**3 * 5**2 "));
    assert!(std::str::from_utf8(m.reason().unwrap()).is_ok());
    assert_eq!(m.body().len(), 154);
    assert!(!m.is_request());
    assert_eq!(m.method(), None);

    let buf = common::rfc4475("noreason");
    let m = parse(&buf).unwrap();
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason(), Some(&b""[..]));

    let buf = common::rfc4475("bcast");
    let m = parse(&buf).unwrap();
    let v: Vec<_> = m.vias().map(|v| v.unwrap().host).collect();
    assert_eq!(v[1], Host::V4(Ipv4Addr::BROADCAST));
}

fn v6(s: &str) -> Host<'static> {
    Host::V6(s.parse::<Ipv6Addr>().unwrap())
}

#[test]
fn rfc5118_values() {
    let m_buf = common::rfc5118("ipv6-good");
    let m = parse(&m_buf).unwrap();
    assert_eq!(
        parse_uri(m.request_uri().unwrap()).unwrap().host,
        v6("2001:db8::10")
    );
    let via = m.top_via().unwrap();
    assert_eq!(
        (via.host, via.host_str),
        (v6("2001:db8::9:1"), "[2001:db8::9:1]")
    );
    let Some(Ok(Contact::Addr { addr, .. })) = m.contacts().next() else {
        panic!()
    };
    assert_eq!(parse_uri(addr.uri).unwrap().host, v6("2001:db8::1"));

    let buf = common::rfc5118("port-ambiguous");
    let u_buf = parse(&buf).unwrap();
    let u = parse_uri(u_buf.request_uri().unwrap()).unwrap();
    assert_eq!((u.host, u.port), (v6("2001:db8::10:5070"), None));
    let buf = common::rfc5118("port-unambiguous");
    let u_buf = parse(&buf).unwrap();
    let u = parse_uri(u_buf.request_uri().unwrap()).unwrap();
    assert_eq!((u.host, u.port), (v6("2001:db8::10"), Some(5070)));

    let buf = common::rfc5118("via-received-param-no-delim");
    assert_eq!(
        parse(&buf).unwrap().top_via().unwrap().received,
        Some("2001:db8::9:255")
    );
    let buf = common::rfc5118("via-received-param-with-delim");
    assert_eq!(
        parse(&buf).unwrap().top_via().unwrap().received,
        Some("[2001:db8::9:255]")
    );

    let buf = common::rfc5118("mult-ip-in-header");
    let m = parse(&buf).unwrap();
    let v: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!((v[0].host, v[0].port), (v6("2001:db8::9:1"), Some(6050)));
    assert_eq!(v[1].host, Host::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(
        (v[2].host, v[2].received, v[2].transport),
        (v6("2001:db8::9:255"), Some("192.0.2.200"), "TCP")
    );

    let buf = common::rfc5118("ipv4-mapped-ipv6");
    let m = parse(&buf).unwrap();
    let v = m.top_via().unwrap();
    assert_eq!((v.host, v.port), (v6("::ffff:192.0.2.10"), Some(19823)));
    assert_eq!(m.body().len(), 236);

    for name in ["ipv6-bug-abnf-3-colons", "ipv6-correct-abnf-2-colons"] {
        let buf = common::rfc5118(name);
        let m = parse(&buf).unwrap();
        let u = parse_uri(m.request_uri().unwrap()).unwrap();
        assert_eq!(u.host, v6("2001:db8::192.0.2.1"), "{name}");
        assert_eq!(m.cseq().unwrap().number, 689);
    }
}
