//! Open-loop schedule: how many scenarios are due by a given time, with an optional linear ramp.
//!
//! The rate goes linearly from `from` to `to` over `ramp_secs`, then stays at `to`. `due(t)` is
//! the integral of the rate from 0 to `t` (so bursts never build up when a shard falls behind
//! for a moment: it sends what is due, whatever came back). Each shard runs its own schedule
//! with its share of the rate.

#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub from: f64,
    pub to: f64,
    pub ramp_secs: f64,
}

impl Schedule {
    pub fn constant(rate: f64) -> Self {
        Self {
            from: rate,
            to: rate,
            ramp_secs: 0.0,
        }
    }

    /// This schedule scaled to one shard's share (`1/n` of the rate).
    pub fn share(&self, n: usize) -> Self {
        let n = n.max(1) as f64;
        Self {
            from: self.from / n,
            to: self.to / n,
            ramp_secs: self.ramp_secs,
        }
    }

    /// Rate at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        if self.ramp_secs <= 0.0 || t >= self.ramp_secs {
            self.to
        } else {
            self.from + (self.to - self.from) * t.max(0.0) / self.ramp_secs
        }
    }

    /// Scenarios due by `t` seconds (the integral of the rate).
    pub fn due(&self, t: f64) -> u64 {
        let t = t.max(0.0);
        let v = if self.ramp_secs <= 0.0 {
            self.to * t
        } else if t < self.ramp_secs {
            self.from * t + (self.to - self.from) * t * t / (2.0 * self.ramp_secs)
        } else {
            (self.from + self.to) * self.ramp_secs / 2.0 + self.to * (t - self.ramp_secs)
        };
        // A hair of slack so that 1000/s for 1 s gives 1000, not 999 from rounding.
        (v + 1e-9).floor() as u64
    }

    /// The first time, in seconds, by which `n` scenarios are due (`None`: never).
    pub fn time_of(&self, n: u64) -> Option<f64> {
        let n = n as f64;
        if self.ramp_secs <= 0.0 || self.from == self.to {
            return (self.to > 0.0).then(|| n / self.to);
        }
        let ramp_total = (self.from + self.to) * self.ramp_secs / 2.0;
        if n > ramp_total {
            return (self.to > 0.0).then(|| self.ramp_secs + (n - ramp_total) / self.to);
        }
        // Within the ramp the integral grows monotonically: bisect it.
        let (mut lo, mut hi) = (0.0f64, self.ramp_secs);
        for _ in 0..64 {
            let mid = (lo + hi) / 2.0;
            if self.due(mid) as f64 >= n {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// The offered rate averaged over `secs` seconds (for the report).
    pub fn mean_rate(&self, secs: f64) -> f64 {
        if secs <= 0.0 {
            self.rate_at(0.0)
        } else {
            self.due(secs) as f64 / secs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate() {
        let s = Schedule::constant(1000.0);
        assert_eq!(s.due(0.0), 0);
        assert_eq!(s.due(1.0), 1000);
        assert_eq!(s.due(0.0105), 10);
        assert_eq!(s.share(3).due(3.0), 1000);
    }

    #[test]
    fn ramp_integral() {
        // 0 → 100/s over 10 s: 500 by the end of the ramp, then 100/s.
        let s = Schedule {
            from: 0.0,
            to: 100.0,
            ramp_secs: 10.0,
        };
        assert_eq!(s.due(10.0), 500);
        assert_eq!(s.due(5.0), 125);
        assert_eq!(s.due(12.0), 700);
        assert_eq!(s.rate_at(5.0), 50.0);
        assert_eq!(s.rate_at(20.0), 100.0);
        // Ramp down works the same way.
        let d = Schedule {
            from: 100.0,
            to: 0.0,
            ramp_secs: 10.0,
        };
        assert_eq!(d.due(10.0), 500);
        assert_eq!(d.due(30.0), 500);
        let half = s.share(2);
        assert_eq!(half.due(10.0), 250);
    }

    #[test]
    fn time_of_inverts_due() {
        let c = Schedule::constant(1000.0);
        assert_eq!(c.time_of(1500), Some(1.5));
        assert_eq!(Schedule::constant(0.0).time_of(1), None);
        let r = Schedule {
            from: 0.0,
            to: 100.0,
            ramp_secs: 10.0,
        };
        for n in [1, 10, 125, 499, 500, 501, 700] {
            let t = r.time_of(n).unwrap();
            assert!(r.due(t) >= n, "due({t}) < {n}");
            assert!(r.due(t - 1e-6) < n, "{n} due before {t}");
        }
    }
}
