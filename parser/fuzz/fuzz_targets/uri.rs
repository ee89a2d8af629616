//! Fuzz target: parse_uri, and uri_eq of an URI against itself must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ser_parser::{parse_uri, uri_eq};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(u) = parse_uri(s) {
            assert!(uri_eq(&u, &u));
            let _ = (u.param("transport"), u.user_range(), u.host_range(), u.port_range());
        }
    }
});
