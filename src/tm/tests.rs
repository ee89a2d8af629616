//! Unit tests of the transaction user's pure parts: the CANCEL it builds, its parameters.
//! Message flows on a virtual clock are in `sim_tests`; through a live shard in tests/tm.rs.

use std::time::Duration;

use ser_parser::Method;
use ser_script::Value;

use super::cancel::first_value_end;
use super::*;
use crate::config::Params;
use crate::txn::Key;

const INVITE: &[u8] = b"INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc.0, SIP/2.0/UDP 10.0.0.1:5090;branch=z9hG4bKup\r\n\
Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKfar\r\n\
Route: <sip:10.9.9.9;lr>\r\n\
Record-Route: <sip:127.0.0.1:5060;lr>\r\n\
From: \"A, B\" <sip:alice@example.com>;tag=f1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1@example.com\r\n\
CSeq: 7 INVITE\r\n\
Max-Forwards: 69\r\n\
Contact: <sip:alice@10.0.0.1:5090>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

#[test]
fn cancel_copies_what_rfc_3261_9_1_says() {
    let cancel = build_cancel(INVITE).expect("cancel");
    let text = String::from_utf8(cancel.clone()).expect("utf8");
    let msg = ser_parser::parse(&cancel).expect("the CANCEL parses");
    assert_eq!(msg.method(), Some(Method::Cancel));
    assert_eq!(msg.request_uri(), Some("sip:bob@127.0.0.1:5070"));
    // Our Via only, with the INVITE's branch: the downstream matches it to the INVITE.
    let vias: Vec<_> = msg.vias().collect();
    assert_eq!(vias.len(), 1, "{text}");
    assert_eq!(
        vias[0].as_ref().ok().and_then(|v| v.branch),
        Some("z9hG4bKabc.0")
    );
    let cseq = msg.cseq().expect("cseq");
    assert_eq!(cseq.number, 7);
    assert_eq!(cseq.method, Method::Cancel);
    assert!(text.contains("Route: <sip:10.9.9.9;lr>\r\n"), "{text}");
    assert!(!text.contains("Record-Route"), "{text}");
    assert!(
        text.contains("From: \"A, B\" <sip:alice@example.com>;tag=f1\r\n"),
        "{text}"
    );
    assert!(text.contains("To: <sip:bob@example.com>\r\n"), "{text}");
    assert!(text.contains("Call-ID: c1@example.com\r\n"), "{text}");
    assert!(!text.contains("Contact"), "{text}");
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    // Its client key is the INVITE branch with method CANCEL.
    assert_eq!(
        Key::client(&msg).expect("key"),
        Key::client_from("z9hG4bKabc.0", "CANCEL")
    );
}

#[test]
fn cancel_of_garbage_is_none() {
    assert!(build_cancel(b"not sip").is_none());
}

#[test]
fn first_value_ignores_commas_in_quotes() {
    assert_eq!(first_value_end(b"a, b"), 1);
    assert_eq!(first_value_end(b"\"x,y\" <sip:a>, b"), 13);
    assert_eq!(first_value_end(b"abc"), 3);
}

#[test]
fn parameters_in_ser_units() {
    let mut p = Params::default();
    p.set("tm", "fr_timer", Value::Int(10));
    p.set("tm", "fr_inv_timer", Value::Int(15));
    p.set("tm", "retr_timer1", Value::Int(250));
    p.set("tm", "max_transactions", Value::Int(1000));
    let c = TmConfig::from_params(&p, 4);
    assert_eq!(c.timers.fr_timer, Duration::from_secs(10));
    assert_eq!(c.timers.fr_inv_timer, Duration::from_secs(15));
    assert_eq!(c.timers.retr_timer1, Duration::from_millis(250));
    assert_eq!(c.max_transactions, 250, "split over the shards");
    assert_eq!(c.retry_after, 5);
    let d = TmConfig::from_params(&Params::default(), 1);
    assert_eq!(d.timers.fr_timer, Duration::from_secs(30));
    assert_eq!(d.timers.fr_inv_timer, Duration::from_secs(120));
}
