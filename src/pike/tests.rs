//! pike on a virtual clock: `now` is an `Instant` the tests move by hand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn cfg(density: u32) -> Config {
    Config {
        unit: Duration::from_secs(2),
        density,
        remove_latency: Duration::from_secs(10),
        max_addresses: 65536,
    }
}

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn the_request_that_reaches_the_density_is_refused_and_logged_once() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = cfg(10);
    let a = ip(1);
    for i in 0..9 {
        assert!(l.check(at(t0, 10 * i), a, &c, &shared), "request {i}");
    }
    assert!(!l.check(at(t0, 100), a, &c, &shared), "the 10th is refused");
    for i in 0..50 {
        assert!(!l.check(at(t0, 200 + i), a, &c, &shared));
    }
    assert_eq!(l.events, vec![Event::Blocked(a)], "one log line per block");
    assert_eq!(shared.blocked_count(), 1);
    // Another address is not affected.
    assert!(l.check(at(t0, 300), ip(2), &c, &shared));
    let [checked, refused, ..] = shared.totals();
    assert_eq!((checked, refused), (61, 51));
}

#[test]
fn blocked_while_hot_released_after_a_calm_unit() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = cfg(10);
    let a = ip(1);
    for i in 0..20 {
        l.check(at(t0, i), a, &c, &shared);
    }
    l.events.clear();
    // Unit 1: the previous unit's 20 keep it hot even at one request.
    assert!(!l.check(at(t0, 2_100), a, &c, &shared));
    // Unit 2: one request in unit 1, none yet here: not hot any more, it passes.
    assert!(l.check(at(t0, 4_100), a, &c, &shared));
    assert!(l.events.is_empty(), "{:?}", l.events);
    // Unit 3 starts: a whole unit went by without it hot: released, logged once.
    assert!(l.check(at(t0, 6_100), ip(9), &c, &shared));
    assert_eq!(
        l.events,
        vec![Event::Released {
            ip: a,
            for_: Duration::from_millis(6_100 - 9)
        }]
    );
    assert_eq!(shared.blocked_count(), 0);
    // A new flood blocks (and logs) it again.
    l.events.clear();
    for i in 0..10 {
        l.check(at(t0, 6_200 + i), a, &c, &shared);
    }
    assert_eq!(l.events, vec![Event::Blocked(a)]);
}

#[test]
fn a_steady_rate_under_the_density_always_passes() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = cfg(10);
    // 9 per 2-second unit for a minute.
    for i in 0..270u64 {
        assert!(l.check(at(t0, i * 2000 / 9), ip(1), &c, &shared), "{i}");
    }
}

#[test]
fn the_window_is_this_unit_or_the_last() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = cfg(10);
    // 9 at the end of unit 0, 9 at the start of unit 1: neither unit reaches 10.
    for i in 0..9 {
        assert!(l.check(at(t0, 1_900 + i), ip(1), &c, &shared));
    }
    for i in 0..9 {
        assert!(l.check(at(t0, 2_000 + i), ip(1), &c, &shared));
    }
    assert!(!l.check(at(t0, 2_100), ip(1), &c, &shared));
}

#[test]
fn idle_addresses_are_forgotten_after_remove_latency() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = cfg(10); // remove_latency 10 s = 5 units
    for n in 0..100 {
        l.check(t0, ip(n), &c, &shared);
    }
    assert_eq!(l.len(), 100);
    l.check(at(t0, 8_000), ip(1000), &c, &shared);
    assert_eq!(l.len(), 101, "4 units idle: still tracked");
    l.check(at(t0, 10_000), ip(1000), &c, &shared);
    assert_eq!(l.len(), 1, "5 units idle: forgotten");
}

#[test]
fn a_full_table_evicts_cold_addresses_and_keeps_blocked_ones() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = Config {
        max_addresses: 100,
        ..cfg(10)
    };
    let flooder = ip(1_000_000);
    for i in 0..10 {
        l.check(at(t0, i), flooder, &c, &shared);
    }
    assert!(!l.check(at(t0, 10), flooder, &c, &shared));
    // 200 000 spoofed sources, one request each.
    for n in 0..200_000 {
        assert!(l.check(at(t0, 20), ip(n), &c, &shared));
        assert!(l.len() <= 100);
    }
    let [_, _, evicted, untracked] = shared.totals();
    assert!(evicted >= 199_900, "{evicted}");
    assert_eq!(untracked, 0);
    assert!(!l.check(at(t0, 30), flooder, &c, &shared), "still blocked");
}

#[test]
fn a_table_full_of_blocked_addresses_passes_new_ones_counted() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = Config {
        max_addresses: 10,
        ..cfg(2)
    };
    for n in 0..10 {
        l.check(t0, ip(n), &c, &shared);
        assert!(!l.check(t0, ip(n), &c, &shared));
    }
    assert!(l.check(t0, ip(99), &c, &shared));
    assert!(l.check(t0, ip(99), &c, &shared), "untracked: never refused");
    assert_eq!(shared.totals()[3], 2);
}

/// Requests of one source spread over `n` shards as the Call-ID spreads them (round robin
/// here): how many pass in the first unit before the first refusal, and how many pass in all.
fn passes_over_shards(n: usize, density: u32, sent: u32) -> (u32, u32) {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 7);
    let mut shards: Vec<Local> = (0..n).map(|i| Local::new(i, n)).collect();
    let c = cfg(density);
    let (mut before_first_refusal, mut passed, mut refused_yet) = (0, 0, false);
    for i in 0..sent {
        let l = &mut shards[i as usize % n];
        if l.check(at(t0, u64::from(i)), ip(1), &c, &shared) {
            passed += 1;
            if !refused_yet {
                before_first_refusal += 1;
            }
        } else {
            refused_yet = true;
        }
    }
    (before_first_refusal, passed)
}

#[test]
fn shards_do_not_multiply_the_limit() {
    let d = 30;
    for n in [1, 2, 4, 8] {
        let (first, total) = passes_over_shards(n, d, 10 * d);
        // Exactly d - 1 with one shard; at most d/4 more with several (see the module doc).
        assert!(
            (d - 1..=d - 1 + d / 4).contains(&first),
            "{n} shards: {first} passed before the first refusal"
        );
        assert!(
            total <= d - 1 + d / 4,
            "{n} shards: {total} passed of {}",
            10 * d
        );
    }
    assert_eq!(passes_over_shards(1, d, 10 * d), (d - 1, d - 1));
}

#[test]
fn without_the_sketch_each_shard_would_pass_the_density() {
    // The check above can fail: shards that do not share (each its own Shared) pass n times
    // as much.
    let t0 = Instant::now();
    let c = cfg(30);
    let mut passed = 0;
    let sh: Vec<Shared> = (0..4).map(|_| Shared::new(t0, 1)).collect();
    let mut ls: Vec<Local> = (0..4).map(|i| Local::new(i, 1)).collect();
    for i in 0..300 {
        if ls[i % 4].check(t0, ip(1), &c, &sh[i % 4]) {
            passed += 1;
        }
    }
    assert_eq!(passed, 4 * 29);
}

#[test]
fn one_request_sources_publish_nothing_to_the_sketch() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 3);
    let mut ls: Vec<Local> = (0..4).map(|i| Local::new(i, 4)).collect();
    let c = cfg(30);
    assert!(ls[0].publish_every(30) >= 2);
    for n in 0..100_000 {
        ls[n as usize % 4].check(t0, ip(n), &c, &shared);
    }
    for n in 0..100_000 {
        assert_eq!(shared.estimate(key(ip(n)), 0), 0);
    }
}

#[test]
fn sketch_counts_per_unit_and_never_less_than_published() {
    let t0 = Instant::now();
    let s = Shared::new(t0, 5);
    let a = key(ip(1));
    s.add(a, 4, 3);
    s.add(a, 4, 2);
    assert_eq!(s.estimate(a, 4), 5);
    assert_eq!(s.estimate(a, 5), 0);
    s.add(a, 5, 1);
    assert_eq!((s.estimate(a, 4), s.estimate(a, 5)), (5, 1));
    // Unit 6 takes unit 4's slots over.
    s.add(a, 6, 7);
    assert_eq!((s.estimate(a, 4), s.estimate(a, 6)), (0, 7));
    for n in 0..20_000 {
        s.add(key(ip(n + 10)), 6, 1);
    }
    assert!(s.estimate(a, 6) >= 7);
}

#[test]
fn ipv4_mapped_ipv6_is_the_same_source() {
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    assert_eq!(key(v4), key(mapped));
    assert_eq!(key_ip(key(mapped)), v4);
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    assert_eq!(key_ip(key(v6)), v6);
}

#[test]
fn readers_release_a_source_that_went_quiet() {
    let t0 = Instant::now();
    let shared = Shared::new(t0, 1);
    let mut l = Local::new(0, 1);
    let c = cfg(5);
    for i in 0..10 {
        l.check(at(t0, i), ip(1), &c, &shared);
    }
    assert_eq!(shared.blocked_count(), 1);
    let mut ev = Vec::new();
    shared.sweep_now(at(t0, 2_500), &mut ev);
    assert_eq!(shared.blocked_count(), 1, "hot in the last unit");
    shared.sweep_now(at(t0, 4_500), &mut ev);
    assert_eq!(shared.blocked_count(), 0);
    assert!(matches!(ev.as_slice(), [Event::Released { .. }]));
    assert_eq!(shared.unlisted.load(Ordering::Relaxed), 0);
}
