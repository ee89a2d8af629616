//! Fuzz target: parse_uri, and uri_eq of an URI against itself must hold; the ranges point
//! at the parts they name; the one-pass host check agrees with `Ipv4Addr::from_str`.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use ser_parser::{parse_uri, uri_eq, Host, Scheme};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(u) = parse_uri(s) {
            assert!(uri_eq(&u, &u));
            let _ = u.param("transport");
            assert_eq!(u.raw, s);
            if let Some(r) = u.user_range() {
                assert_eq!(s.get(r), u.user);
            }
            if u.scheme != Scheme::Tel {
                assert_eq!(s.get(u.host_range()), Some(u.host_str));
            }
            if let Some(r) = u.port_range() {
                let digits = s.get(r).expect("port range inside the URI");
                assert_eq!(digits.parse::<u16>().ok(), u.port, "{s:?}");
            }
            // A dotted quad is an address, never a name; an address reads as the standard
            // parser reads it.
            match u.host {
                Host::V4(a) => assert_eq!(u.host_str.parse::<Ipv4Addr>(), Ok(a), "{s:?}"),
                Host::Name(n) => {
                    assert_eq!(n, u.host_str);
                    assert!(n.parse::<Ipv4Addr>().is_err(), "{s:?}");
                    let name = n.strip_suffix('.').unwrap_or(n);
                    for label in name.split('.') {
                        assert!(
                            !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'),
                            "{s:?}"
                        );
                    }
                }
                Host::V6(_) | Host::None => {}
            }
        }
    }
});
