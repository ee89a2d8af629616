//! Fuzz target: nathelper's SDP reading and rewriting (`nathelper::sdp`: fix_nated_sdp,
//! nat_uac_test 8 and 256) on a message body. Checks: no panic; the rewritten body keeps the
//! body's lines (plus at most the direction line), grows by a bounded factor, and rewriting it
//! again changes nothing.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use ser::nathelper::sdp;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let flags = u32::from(sel & 0x0f) & sdp::FLAGS;
    let ip: IpAddr = match sel >> 4 {
        0 => Ipv4Addr::new(192, 0, 2, 1).into(),
        1 => Ipv4Addr::UNSPECIFIED.into(),
        2 => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        3 => "::ffff:10.0.0.1"
            .parse::<Ipv6Addr>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6),
        _ => Ipv6Addr::new(
            0xfd00, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        )
        .into(),
    };
    let _ = sdp::has_private(body);
    let _ = sdp::differs_from(body, ip);
    let _ = sdp::connection_addresses(body).count();
    if let Some(out) = sdp::rewrite(body, flags, ip) {
        let lines = |b: &[u8]| b.split_inclusive(|&c| c == b'\n').count();
        let added = usize::from(flags & sdp::ADD_DIRECTION != 0);
        assert!(
            lines(&out) <= lines(body) + added,
            "{} lines from {}",
            lines(&out),
            lines(body)
        );
        // The longest rewrite: "c=x y z" (8 bytes with its LF) to "c=x IP6 <39 bytes>".
        assert!(
            out.len() <= 6 * body.len() + 64,
            "{} bytes from {}",
            out.len(),
            body.len()
        );
        let again = sdp::rewrite(&out, flags, ip).expect("still has its c= line");
        assert_eq!(again, out);
    }
});
