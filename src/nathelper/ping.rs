//! NAT keep-alives, sans-IO: when each ping of a round goes ([`Round`]) and what a binding's
//! answers and silences mean ([`Failures`]). The thread that reads the bindings, sends the
//! pings through the shards and waits for the OPTIONS replies is `mgmt::nathelper`.
//!
//! A round starts every `natping_interval`. Its N pings are spread evenly over the interval
//! (one every interval/N), but never closer than 1/`natping_rate` s: with more bindings than
//! rate × interval the round takes longer than the interval, and the next round starts when
//! it ends (rounds never overlap, the rate is never exceeded).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The spacing of one round's pings.
pub fn spacing(n: usize, interval: Duration, rate: u32) -> Duration {
    let floor = Duration::from_secs(1) / rate.max(1);
    if n == 0 {
        return floor;
    }
    let even = interval / u32::try_from(n).unwrap_or(u32::MAX);
    even.max(floor)
}

/// One round of pings: its start, and when ping `k` of `n` is due.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub start: Instant,
    pub n: usize,
    pub step: Duration,
    pub interval: Duration,
}

impl Round {
    pub fn new(start: Instant, n: usize, interval: Duration, rate: u32) -> Self {
        Self {
            start,
            n,
            step: spacing(n, interval, rate),
            interval,
        }
    }

    /// When ping `k` (0-based) goes.
    pub fn due(&self, k: usize) -> Instant {
        self.start + self.step * u32::try_from(k).unwrap_or(u32::MAX)
    }

    /// When the next round starts: an interval after this one's start, or after its last
    /// ping's slot when it took longer.
    pub fn next_start(&self) -> Instant {
        (self.start + self.interval).max(self.due(self.n))
    }
}

/// What a ping's result means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report.
    Quiet,
    /// The first unanswered ping after answered ones: report it (a WARNING, once).
    Unanswered,
    /// It answers again after failures: report it.
    Recovered(u32),
    /// `natping_max_failures` pings in a row went unanswered: remove the binding.
    Remove(u32),
}

/// Unanswered OPTIONS pings in a row, per binding (by a key the caller chooses).
#[derive(Debug, Default)]
pub struct Failures {
    map: HashMap<String, u32>,
    /// 0: never remove.
    max: u32,
}

impl Failures {
    pub fn new(max: u32) -> Self {
        Self {
            map: HashMap::new(),
            max,
        }
    }

    /// Bindings failing now.
    pub fn failing(&self) -> usize {
        self.map.len()
    }

    /// A ping of `key` was answered (`true`) or not.
    pub fn result(&mut self, key: &str, answered: bool) -> Verdict {
        if answered {
            return match self.map.remove(key) {
                Some(n) => Verdict::Recovered(n),
                None => Verdict::Quiet,
            };
        }
        let n = self.map.entry(key.to_string()).or_insert(0);
        *n += 1;
        let n = *n;
        if self.max > 0 && n >= self.max {
            self.map.remove(key);
            Verdict::Remove(n)
        } else if n == 1 {
            Verdict::Unanswered
        } else {
            Verdict::Quiet
        }
    }

    /// Forgets the keys not in `live` (bindings that went: expired, unregistered).
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.map.retain(|k, _| live(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_spread_over_the_interval_under_the_rate() {
        let s = Duration::from_secs(1);
        assert_eq!(spacing(10, 10 * s, 100), s);
        // 2000 bindings, 10 s, 100/s: 10 ms apart, the round takes 20 s.
        assert_eq!(spacing(2000, 10 * s, 100), Duration::from_millis(10));
        assert_eq!(spacing(0, 10 * s, 100), Duration::from_millis(10));
        assert_eq!(spacing(1, 10 * s, 0), 10 * s);
        let t0 = Instant::now();
        let r = Round::new(t0, 4, 2 * s, 100);
        assert_eq!(r.due(0), t0);
        assert_eq!(r.due(3), t0 + Duration::from_millis(1500));
        assert_eq!(r.next_start(), t0 + 2 * s);
        let r = Round::new(t0, 2000, 10 * s, 100);
        assert_eq!(r.next_start(), t0 + 20 * s);
        // On a virtual clock: no second holds more than `rate` pings.
        let r = Round::new(t0, 450, s, 100);
        let mut per_sec = HashMap::new();
        for k in 0..r.n {
            *per_sec
                .entry(r.due(k).duration_since(t0).as_secs())
                .or_insert(0) += 1;
        }
        assert!(per_sec.values().all(|n| *n <= 100), "{per_sec:?}");
    }

    #[test]
    fn failures_report_once_and_remove_after_the_limit() {
        let mut f = Failures::new(3);
        assert_eq!(f.result("a", true), Verdict::Quiet);
        assert_eq!(f.result("a", false), Verdict::Unanswered);
        assert_eq!(f.result("a", false), Verdict::Quiet);
        assert_eq!(f.failing(), 1);
        assert_eq!(f.result("a", true), Verdict::Recovered(2));
        assert_eq!(f.result("a", false), Verdict::Unanswered);
        assert_eq!(f.result("a", false), Verdict::Quiet);
        assert_eq!(f.result("a", false), Verdict::Remove(3));
        assert_eq!(f.failing(), 0);
        let mut never = Failures::new(0);
        for _ in 0..100 {
            never.result("b", false);
        }
        assert_eq!(never.failing(), 1);
        never.retain(|k| k != "b");
        assert_eq!(never.failing(), 0);
    }
}
