//! Parser throughput: strict `parse` of a typical INVITE (with SDP), a REGISTER and a
//! 30-header message, plus parse + the accessors a proxy reads on every INVITE.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ser_parser::{parse, write, Edits};

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n\
Supported: replaces, timer\r\n\
User-Agent: softphone/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 142\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

const REGISTER: &[u8] = b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>;expires=7200\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\
\r\n";

/// A request with 30 header lines (several Vias and Record-Routes, as after a few proxies).
fn thirty_headers() -> Vec<u8> {
    let mut m = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n".to_vec();
    for i in 0..6 {
        m.extend_from_slice(
            format!("Via: SIP/2.0/UDP proxy{i}.example.com:5060;branch=z9hG4bK{i}abcdef;rport\r\n")
                .as_bytes(),
        );
    }
    for i in 0..6 {
        m.extend_from_slice(format!("Record-Route: <sip:proxy{i}.example.com;lr>\r\n").as_bytes());
    }
    m.extend_from_slice(
        b"Max-Forwards: 64\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n\
Supported: replaces, timer\r\n\
User-Agent: softphone/1.0\r\n\
Accept: application/sdp\r\n\
Subject: benchmark\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
X-Custom-1: one\r\n\
X-Custom-2: two\r\n\
X-Custom-3: three\r\n\
X-Custom-4: four\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\
\r\n",
    );
    m
}

fn bench_parse(c: &mut Criterion) {
    let thirty = thirty_headers();
    assert_eq!(parse(&thirty).expect("valid").headers().len(), 30);
    let mut g = c.benchmark_group("parse");
    for (name, msg) in [
        ("invite_sdp", INVITE),
        ("register", REGISTER),
        ("30_headers", thirty.as_slice()),
    ] {
        parse(msg).expect("benchmark message is valid");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse(black_box(msg)).map(|m| m.headers().len()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse_and_read");
    g.throughput(Throughput::Bytes(INVITE.len() as u64));
    g.bench_function("invite_via_cseq_from_to", |b| {
        b.iter(|| {
            let m = parse(black_box(INVITE)).expect("valid");
            let via = m.top_via().expect("via");
            let cseq = m.cseq().expect("cseq");
            let from = m.from().expect("from");
            let to = m.to().expect("to");
            (via.branch, cseq.number, from.tag, to.tag)
        })
    });
    let mut edits = Edits::new();
    let mut out = Vec::with_capacity(2048);
    g.bench_function("invite_parse_edit_write", |b| {
        b.iter(|| {
            let m = parse(black_box(INVITE)).expect("valid");
            edits.clear();
            edits.push_via(&m, b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy");
            edits.add_record_route(&m, b"<sip:192.0.2.1;lr>");
            edits
                .set_via_received(&m, Some(b"192.0.2.101"), Some(5060))
                .expect("via");
            out.clear();
            write(&m, &edits, &mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
