//! Which shard owns a message: every message of one call (requests, retransmissions, CANCEL,
//! ACK, replies) shares a Call-ID, and the shard its hash picks owns the call's transactions.
//!
//! [`hash64`] is the fixed-key hash behind it, also used where a value must come out the same
//! on every shard and across restarts (stateless branches, To-tags).

/// A fixed-key 64-bit hash: the same on every shard and across restarts, so stateless
/// branches and To-tags come out the same for retransmissions.
pub fn hash64(parts: &[&[u8]]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let state = ahash::RandomState::with_seeds(
        0x5e75_1ad0_2002_0001,
        0x1d7a_c0de_0000_0002,
        0x0ddb_a11f_ace0_0003,
        0x5eed_5eed_5eed_0004,
    );
    let mut h = state.build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    h.finish()
}

/// The Call-ID of a message without parsing it: a scan of the header lines for `Call-ID:`
/// or its compact form `i:`. Only used to pick the owning shard; the full parse comes later.
pub fn scan_call_id(buf: &[u8]) -> Option<&[u8]> {
    let mut pos = memchr::memchr(b'\n', buf)? + 1;
    while pos < buf.len() {
        let rest = buf.get(pos..)?;
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..end)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let colon = memchr::memchr(b':', line)?;
        let name = line.get(..colon)?.trim_ascii_end();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            return Some(line.get(colon + 1..)?.trim_ascii());
        }
        pos += end + 1;
    }
    None
}

/// The shard that owns a Call-ID.
pub fn owner_shard(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    (hash64(&[call_id]) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_scan() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\ni: abc@host \r\n\r\nbody Call-ID: no";
        assert_eq!(scan_call_id(m), Some(&b"abc@host"[..]));
        let m = b"SIP/2.0 200 OK\r\nCALL-ID :  q1\r\n\r\n";
        assert_eq!(scan_call_id(m), Some(&b"q1"[..]));
        assert_eq!(scan_call_id(b"garbage"), None);
        assert_eq!(scan_call_id(b"A\r\n\r\nCall-ID: x\r\n"), None);
    }

    #[test]
    fn owners_spread_and_stay() {
        assert_eq!(owner_shard(b"x", 1), 0);
        let a = owner_shard(b"call-1@host", 4);
        assert_eq!(a, owner_shard(b"call-1@host", 4));
        let spread: std::collections::HashSet<_> = (0..64)
            .map(|i| owner_shard(format!("c{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
