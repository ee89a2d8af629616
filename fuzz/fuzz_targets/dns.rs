//! Fuzz target: a DNS response as the resolver reads it (`dns::fuzz_response`: the decoder,
//! the CNAME chain, NAPTR selection, SRV ordering, the negative TTL). Checks: no panic, and
//! what is decoded is bounded by the input (no record or question without its bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some([questions, answers, authority]) = ser::dns::fuzz_response(data) {
        // A question takes at least 5 bytes (a root name and type and class), a record kept
        // at least 12 (name, type, class, TTL, RDLENGTH, and data, which may not be empty).
        assert!(12 + 5 * questions + 12 * (answers + authority) <= data.len().max(12));
    }
});
