//! Which shard owns a message: every message of one call (requests, retransmissions, CANCEL,
//! ACK, replies) shares a Call-ID, and the shard its hash picks owns the call's transactions.
//!
//! Exceptions spare a hop between shards. A request that arrives on a stream connection is
//! handled by the shard that owns the connection (a stream has no retransmissions, and its
//! ACK and CANCEL come on the same connection, RFC 3261 §17.1.1.3); a CANCEL that finds
//! nothing there goes on to the Call-ID's owner. Without tm no request has a transaction to
//! find, and each stays where it arrived. Replies go to the shard their branch names: every
//! transaction's branch, and those of the requests the server starts itself, name their
//! shard ([`txn_branch`], [`reply_shard`]); a reply to a stateless forward is forwarded by
//! whichever shard it reaches.
//!
//! The Call-ID's owner is its FNV-1a hash modulo the shards, which the kernel's steering
//! program computes too (super::steer), so a UDP request usually arrives at its owner; the
//! check here hands on whatever the program could not place. [`hash64`] is the fixed-key hash
//! for values that must come out the same on every shard and across restarts (stateless
//! branches, To-tags).

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
    let v = scan_header(buf, b"call-id", b"i")?;
    // RFC 3261's callid has no blank or control character: the value ends at the first one,
    // where the kernel's steering program ends it too (super::steer), so that both name the
    // same owner.
    let end = v
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | 0 | 0x0c))
        .unwrap_or(v.len());
    v.get(..end)
}

/// The value of the first header line named `long` or `short`, without parsing the message
/// (no folded lines: those are for the parser).
fn scan_header<'a>(buf: &'a [u8], long: &[u8], short: &[u8]) -> Option<&'a [u8]> {
    let mut pos = memchr::memchr(b'\n', buf)? + 1;
    while pos < buf.len() {
        let rest = buf.get(pos..)?;
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..end)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        // A line without a colon (malformed: the parser refuses it later) is passed over,
        // as the steering program passes it over.
        if let Some(colon) = memchr::memchr(b':', line) {
            let name = line.get(..colon)?.trim_ascii_end();
            if name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short) {
                return Some(line.get(colon + 1..)?.trim_ascii());
            }
        }
        pos += end + 1;
    }
    None
}

/// The branch of a transaction's forwarded requests: our tag prefix, the shard in hex, a
/// `-`, a per-shard sequence, a `-` and the loop mark (32 bits of the request's loop hash,
/// RFC 3261 16.6 step 8; [`txn_branch_mark`] reads it back); the branch index follows after a
/// `.`. [`reply_shard`] reads the shard back.
pub fn txn_branch(prefix: &str, shard: usize, seq: u64, mark: u32) -> String {
    format!("z9hG4bK{prefix}{shard:x}-{seq:x}-{mark:08x}")
}

/// The loop mark of a branch that [`txn_branch`] made with this `prefix` (its index after the
/// `.` ignored); None for anyone else's branch.
pub fn txn_branch_mark(branch: &str, prefix: &str) -> Option<u32> {
    let rest = branch.strip_prefix("z9hG4bK")?.strip_prefix(prefix)?;
    let base = rest.split_once('.').map_or(rest, |(b, _)| b);
    let mut parts = base.split('-');
    let (shard, seq, mark) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.next().is_some() || !hex(shard) || !hex(seq) || mark.len() != 8 {
        return None;
    }
    u32::from_str_radix(mark, 16).ok()
}

/// The shard a reply belongs to: the one named in its top Via branch when that branch is one
/// of a transaction's ([`txn_branch`] with this `prefix`; the requests the server starts
/// itself have such branches too). None for any other (a stateless branch of ours: any shard
/// forwards it; someone else's: dropped wherever it is), or when it cannot be read.
pub fn reply_shard(buf: &[u8], prefix: &str, shards: usize) -> Option<usize> {
    scan_header(buf, b"via", b"v")
        .and_then(top_branch)
        .and_then(|b| b.strip_prefix(b"z9hG4bK"))
        .and_then(|b| b.strip_prefix(prefix.as_bytes()))
        .and_then(|rest| {
            let end = memchr::memchr(b'-', rest)?;
            let hex = std::str::from_utf8(rest.get(..end)?).ok()?;
            usize::from_str_radix(hex, 16).ok()
        })
        .filter(|&s| s < shards)
}

/// The `branch` parameter of the first Via value of a header line's value.
fn top_branch(value: &[u8]) -> Option<&[u8]> {
    let first = value.split(|&b| b == b',').next()?;
    first.split(|&b| b == b';').skip(1).find_map(|p| {
        let (name, v) = p.split_at(memchr::memchr(b'=', p)?);
        name.trim_ascii()
            .eq_ignore_ascii_case(b"branch")
            .then(|| v.get(1..).unwrap_or_default().trim_ascii())
    })
}

/// The shard that owns a Call-ID: FNV-1a of its bytes, which the kernel's steering program
/// computes the same way ([`super::steer::datagram_steering`]), so that a request lands on
/// its owner without a hand-off.
pub fn owner_shard(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    (super::steer::fnv1a32(call_id) % shards as u32) as usize
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
        let m = b"BYE sip:a SIP/2.0\r\nCall-ID:  a b\tc\r\n\r\n";
        assert_eq!(scan_call_id(m), Some(&b"a"[..]));
        assert_eq!(scan_call_id(b"A\r\n\r\nCall-ID: x\r\n"), None);
    }

    #[test]
    fn replies_go_to_the_shard_in_our_branch() {
        let b = txn_branch("0a1b2c3d", 3, 0x2f, 0xdead_beef);
        assert_eq!(b, "z9hG4bK0a1b2c3d3-2f-deadbeef");
        assert_eq!(
            txn_branch_mark(&format!("{b}.3"), "0a1b2c3d"),
            Some(0xdead_beef)
        );
        assert_eq!(txn_branch_mark(&b, "0a1b2c3d"), Some(0xdead_beef));
        assert_eq!(txn_branch_mark(&b, "0a1b2c3e"), None);
        for other in [
            "z9hG4bK0a1b2c3d3-2f",
            "z9hG4bK0a1b2c3d3-2f-deadbee",
            "z9hG4bK0a1b2c3d3-2f-deadbeef-1",
            "z9hG4bK0a1b2c3dx-2f-deadbeef",
            "z9hG4bKsl0123",
        ] {
            assert_eq!(txn_branch_mark(other, "0a1b2c3d"), None, "{other}");
        }
        let reply =
            |via: &str| format!("SIP/2.0 200 OK\r\n{via}\r\nCall-ID: c-7@h\r\n\r\n").into_bytes();
        let ours = reply(&format!(
            "Via: SIP/2.0/TCP 10.0.0.1;branch={b}.0, SIP/2.0/UDP x"
        ));
        assert_eq!(reply_shard(&ours, "0a1b2c3d", 4), Some(3));
        let compact = reply(&format!("v: SIP/2.0/UDP 10.0.0.1 ; rport ; BRANCH = {b}.1"));
        assert_eq!(reply_shard(&compact, "0a1b2c3d", 4), Some(3));
        // Another instance's prefix, a shard we do not have, a stateless branch, no branch:
        // no shard in particular (the arrival shard forwards or drops it).
        assert_eq!(reply_shard(&ours, "ffffffff", 4), None);
        assert_eq!(reply_shard(&ours, "0a1b2c3d", 2), None);
        let sl = reply("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKsl0123456789abcdef");
        assert_eq!(reply_shard(&sl, "0a1b2c3d", 4), None);
        let other = reply("Via: SIP/2.0/UDP 10.0.0.1, SIP/2.0/UDP y;branch=z9hG4bK0a1b2c3d1-1");
        assert_eq!(reply_shard(&other, "0a1b2c3d", 4), None);
        assert_eq!(reply_shard(b"SIP/2.0 200 OK\r\n\r\n", "0a1b2c3d", 4), None);
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
