//! URI parsing and RFC 3261 19.1.4 comparison.

use std::net::Ipv4Addr;

use ser_parser::{parse_uri, uri_eq, ErrorKind, Host, Scheme};

fn eq(a: &str, b: &str) -> bool {
    uri_eq(&parse_uri(a).unwrap(), &parse_uri(b).unwrap())
}

#[test]
fn parts() {
    let u = parse_uri(
        "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=project%20x&priority=urgent",
    )
    .unwrap();
    assert_eq!(u.scheme, Scheme::Sips);
    assert_eq!((u.user, u.password), (Some("alice"), Some("secret")));
    assert_eq!(u.host_str, "[2001:db8::1]");
    assert_eq!(u.port, Some(5061));
    assert_eq!(u.params, "transport=tcp;lr");
    assert_eq!(u.headers, "subject=project%20x&priority=urgent");
    assert_eq!(u.param("TRANSPORT"), Some(Some("tcp")));
    assert_eq!(u.param("lr"), Some(None));
    assert_eq!(u.param("maddr"), None);
    assert_eq!(&u.raw[u.user_range().unwrap()], "alice");
    assert_eq!(&u.raw[u.host_range()], "[2001:db8::1]");
    assert_eq!(&u.raw[u.port_range().unwrap()], "5061");

    let u = parse_uri("sip:192.0.2.4").unwrap();
    assert_eq!(
        (u.user, u.host, u.port),
        (None, Host::V4(Ipv4Addr::new(192, 0, 2, 4)), None)
    );
    assert!(u.user_range().is_none());

    let t = parse_uri("tel:+1-201-555-0123;phone-context=example.com").unwrap();
    assert_eq!(
        (t.scheme, t.user, t.host),
        (Scheme::Tel, Some("+1-201-555-0123"), Host::None)
    );
    assert_eq!(t.param("phone-context"), Some(Some("example.com")));
}

#[test]
fn rejects() {
    for bad in [
        "",
        "sip:",
        "sip:@host",
        "http://x",
        "sip:user@",
        "sip:host:99999",
        "sip:host:",
        "sip:2001:db8::10",
        "sip:host;;lr",
        "sip:host;=x",
        "sip:host?a",
        "sip:us er@host",
        "sip:host%2",
        "sip:[::1",
        "sip:[zz::1]",
        "sip:a@b@c",
        "sip:host>x",
        "tel:",
        "tel:xyz;x",
        "sip:-bad-.com",
    ] {
        let e = parse_uri(bad).expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::BadUri, "{bad}");
    }
}

/// RFC 3261 19.1.4: the equal and unequal examples.
#[test]
fn rfc3261_comparison_examples() {
    assert!(eq(
        "sip:%61lice@atlanta.com;transport=TCP",
        "sip:alice@AtLanTa.CoM;Transport=tcp"
    ));
    assert!(eq(
        "sip:carol@chicago.com",
        "sip:carol@chicago.com;newparam=5"
    ));
    assert!(eq(
        "sip:carol@chicago.com",
        "sip:carol@chicago.com;security=on"
    ));
    assert!(eq(
        "sip:carol@chicago.com;newparam=5",
        "sip:carol@chicago.com;security=on"
    ));
    assert!(eq(
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
    ));
    assert!(eq(
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
    ));

    assert!(!eq(
        "SIP:ALICE@AtLanTa.CoM;Transport=udp",
        "sip:alice@AtLanTa.CoM;Transport=UDP"
    ));
    assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
    assert!(!eq(
        "sip:bob@biloxi.com",
        "sip:bob@biloxi.com;transport=udp"
    ));
    assert!(!eq(
        "sip:bob@biloxi.com",
        "sip:bob@biloxi.com:6000;transport=tcp"
    ));
    assert!(!eq(
        "sip:carol@chicago.com",
        "sip:carol@chicago.com?Subject=next%20meeting"
    ));
    assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
    assert!(!eq(
        "sip:carol@chicago.com;security=on",
        "sip:carol@chicago.com;security=off"
    ));
    assert!(!eq("sip:alice@atlanta.com", "sips:alice@atlanta.com"));
    assert!(!eq(
        "sip:alice@atlanta.com;maddr=1.2.3.4",
        "sip:alice@atlanta.com"
    ));
    assert!(!eq("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com"));
    assert!(eq("sip:[2001:db8::1]:5060", "sip:[2001:DB8:0::1]:5060"));
    assert!(eq("tel:+1-201-555-0123", "tel:+12015550123"));
    assert!(eq("sip:%75se%72@example.com", "sip:user@example.com"));
    assert!(eq("sip:h;a=1;A=2", "sip:h;a=1;A=2"));
}
