//! Shared helpers for the integration tests: loading the RFC 4475 / RFC 5118 corpora.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// An RFC 4475 message, bit-exact.
pub fn rfc4475(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join("rfc4475").join(format!("{name}.dat"))).expect("corpus file")
}

/// An RFC 5118 message with its LF line ends turned into CRLF. Where the published
/// Content-Length exceeds the body (ipv6-in-sdp: the RFC's figure is wrong), it is rewritten
/// to the body length: RFC 5118 tests IPv6 addresses, not framing.
pub fn rfc5118(name: &str) -> Vec<u8> {
    let raw = std::fs::read(data_dir().join("rfc5118").join(name)).expect("corpus file");
    let mut crlf = Vec::with_capacity(raw.len() * 2);
    for &b in &raw {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    let text = String::from_utf8_lossy(&crlf).into_owned();
    if let Some(split) = text.find("\r\n\r\n") {
        let body_len = text.len() - split - 4;
        if let Some(cl_at) = text.find("Content-Length: ") {
            let num_start = cl_at + "Content-Length: ".len();
            let num_end = num_start + text[num_start..].find("\r\n").unwrap();
            let declared: usize = text[num_start..num_end].parse().unwrap();
            if declared > body_len {
                return format!("{}{}{}", &text[..num_start], body_len, &text[num_end..])
                    .into_bytes();
            }
        }
    }
    crlf
}

pub const RFC4475: &[&str] = &[
    "badaspec",
    "badbranch",
    "baddate",
    "baddn",
    "badinv01",
    "badvers",
    "bcast",
    "bext01",
    "bigcode",
    "clerr",
    "cparam01",
    "cparam02",
    "dblreq",
    "esc01",
    "esc02",
    "escnull",
    "escruri",
    "insuf",
    "intmeth",
    "inv2543",
    "invut",
    "longreq",
    "ltgtruri",
    "lwsdisp",
    "lwsruri",
    "lwsstart",
    "mcl01",
    "mismatch01",
    "mismatch02",
    "mpart01",
    "multi01",
    "ncl",
    "noreason",
    "novelsc",
    "quotbal",
    "regaut01",
    "regbadct",
    "regescrt",
    "scalar02",
    "scalarlg",
    "sdp01",
    "semiuri",
    "test",
    "transports",
    "trws",
    "unkscm",
    "unksm2",
    "unreason",
    "wsinv",
    "zeromf",
];

pub const RFC5118: &[&str] = &[
    "ipv4-mapped-ipv6",
    "ipv6-bad",
    "ipv6-bug-abnf-3-colons",
    "ipv6-correct-abnf-2-colons",
    "ipv6-good",
    "ipv6-in-sdp",
    "mult-ip-in-header",
    "mult-ip-in-sdp",
    "port-ambiguous",
    "port-unambiguous",
    "via-received-param-no-delim",
    "via-received-param-with-delim",
];

/// Every corpus message (name, bytes).
pub fn all() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = RFC4475
        .iter()
        .map(|n| (n.to_string(), rfc4475(n)))
        .collect();
    v.extend(RFC5118.iter().map(|n| (n.to_string(), rfc5118(n))));
    v
}
