//! Fuzz target: rtpengine's bencode (`rtpengine::bencode::decode`), which reads the media
//! relay's replies. Checks: no panic; a value decoded encodes to bytes that decode to the
//! same value, and encoding is stable (encode . decode . encode = encode); nesting stays within
//! MAX_DEPTH.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ser::rtpengine::bencode::{decode, Value, MAX_DEPTH};

fn depth(v: &Value) -> usize {
    match v {
        Value::Int(_) | Value::Bytes(_) => 0,
        Value::List(l) => 1 + l.iter().map(depth).max().unwrap_or(0),
        Value::Dict(d) => 1 + d.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Int(_) | Value::Bytes(_) => v.clone(),
        Value::List(l) => Value::List(l.iter().map(sorted).collect()),
        Value::Dict(d) => {
            let mut d: Vec<(Vec<u8>, Value)> =
                d.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
            d.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Dict(d)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode(data) {
        assert!(depth(&v) <= MAX_DEPTH);
        let _ = (v.as_bytes(), v.as_text(), v.as_int(), v.get("result"));
        let enc = v.to_bytes();
        let back = decode(&enc).expect("what we encode decodes");
        // The encoder writes dictionary keys sorted; the decoder keeps them as given.
        assert_eq!(sorted(&back), sorted(&v));
        assert_eq!(back.to_bytes(), enc);
    }
});
