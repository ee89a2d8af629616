//! How calls are dealt out: which shard owns a Call-ID ([`owner`], the rule in the engine's
//! module comment) and which scenario variant the k-th answered call gets ([`variant`]).
//!
//! Pure functions of their arguments: no call table, no sockets, no handoff (the shard handler
//! hands a datagram to its owner).

/// The shard that owns a Call-ID (see the module comment).
pub fn owner(call_id: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let digits = call_id.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && digits < 19 && call_id.get(digits) == Some(&b'-') {
        let mut n: u64 = 0;
        for b in &call_id[..digits] {
            n = n * 10 + u64::from(b - b'0');
        }
        if n > 0 {
            return ((n - 1) % shards as u64) as usize;
        }
    }
    // FNV-1a.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in call_id {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    (h % shards as u64) as usize
}

/// Which scenario variant the k-th answered call gets: a low-discrepancy sequence, so the
/// shares hold over any stretch of calls, not just on average.
pub fn variant(k: u64, shares: &[f64]) -> usize {
    let x = (k as f64 * 0.618_033_988_749_895).fract();
    let mut acc = 0.0;
    for (i, s) in shares.iter().enumerate() {
        acc += s;
        if x < acc {
            return i + 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        assert_eq!(owner(b"1-99@h", 2), 0);
        assert_eq!(owner(b"2-99@h", 2), 1);
        assert_eq!(owner(b"7-99@h", 3), 0);
        assert_eq!(owner(b"abc", 1), 0);
        assert!(owner(b"abc@def", 4) < 4);
    }

    #[test]
    fn variant_shares() {
        let shares = [0.1, 0.2];
        let mut n = [0usize; 3];
        for k in 0..10_000 {
            n[variant(k, &shares)] += 1;
        }
        assert!((6900..=7100).contains(&n[0]), "{n:?}");
        assert!((900..=1100).contains(&n[1]), "{n:?}");
        assert!((1900..=2100).contains(&n[2]), "{n:?}");
        assert_eq!(variant(5, &[]), 0);
    }
}
