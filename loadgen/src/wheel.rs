//! The generator's own timers: a hashed timing wheel of 1 ms slots.
//!
//! A generator arms several timers per call (retransmission, transaction timeout, pause) and
//! most never fire: the answer comes first. In the runtime's heap each costs a push, a
//! hash-map entry and a pop; here it is a push onto a slot's vector, and a dead one costs
//! only its epoch check when its slot comes round. The shard wakes the generator through one
//! runtime timer, armed at [`Wheel::next_hint`].
//!
//! Deadlines are rounded up to the millisecond, so a timer never fires early. A deadline
//! beyond one turn of the wheel (4.1 s) stays in its slot, looked at once a turn, until its
//! turn comes. (A bigger wheel costs its memory's first touch at start-up: 65 536 slots
//! were 58 % of a short run's page faults.)

use std::time::{Duration, Instant};

const SLOTS: usize = 1 << 12;
const MASK: u64 = SLOTS as u64 - 1;
const WORDS: usize = SLOTS / 64;

pub struct Wheel {
    origin: Instant,
    /// (deadline in ms since `origin`, token).
    slots: Vec<Vec<(u64, u64)>>,
    /// One bit per non-empty slot.
    bits: Vec<u64>,
    /// Every deadline before this millisecond has fired.
    cursor: u64,
    len: usize,
    /// No entry is due before this millisecond (exact after [`expire`](Self::expire)).
    hint: u64,
    spare: Vec<(u64, u64)>,
}

impl Wheel {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            bits: vec![0; WORDS],
            cursor: 0,
            len: 0,
            hint: u64::MAX,
            spare: Vec::new(),
        }
    }

    fn ms_ceil(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        d.as_millis() as u64 + u64::from(d.subsec_nanos() % 1_000_000 != 0)
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    pub fn set(&mut self, at: Instant, token: u64) {
        let ms = self.ms_ceil(at).max(self.cursor);
        let i = (ms & MASK) as usize;
        self.slots[i].push((ms, token));
        self.bits[i / 64] |= 1 << (i % 64);
        self.len += 1;
        self.hint = self.hint.min(ms);
    }

    /// The first millisecond tick at or after `t`: when a timer set for `t` fires.
    pub fn tick_at_or_after(&self, t: Instant) -> Instant {
        self.at_ms(self.ms_ceil(t))
    }

    /// When the generator should next look (`None`: nothing armed). Never late; may be early.
    pub fn next_hint(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.at_ms(self.hint.max(self.cursor)))
    }

    /// Moves the tokens due at `now` into `out`, earliest slot first.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<u64>) {
        let now_ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        if now_ms < self.cursor {
            return;
        }
        // After a stall longer than a turn, every slot is visited once.
        let steps = (now_ms - self.cursor + 1).min(SLOTS as u64);
        for k in 0..steps {
            let i = ((self.cursor + k) & MASK) as usize;
            if self.bits[i / 64] & (1 << (i % 64)) == 0 {
                continue;
            }
            let mut v = std::mem::replace(&mut self.slots[i], std::mem::take(&mut self.spare));
            for &(ms, token) in &v {
                if ms <= now_ms {
                    out.push(token);
                    self.len -= 1;
                } else {
                    self.slots[i].push((ms, token));
                }
            }
            v.clear();
            self.spare = v;
            if self.slots[i].is_empty() {
                self.bits[i / 64] &= !(1 << (i % 64));
            }
        }
        self.cursor = now_ms + 1;
        self.hint = self.first_marked().unwrap_or(u64::MAX);
    }

    /// The millisecond of the first non-empty slot at or after the cursor (this turn).
    fn first_marked(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let start = (self.cursor & MASK) as usize;
        let (w0, b0) = (start / 64, start % 64);
        for k in 0..=WORDS {
            let w = (w0 + k) % WORDS;
            let mut word = self.bits[w];
            if k == 0 {
                word &= !0u64 << b0;
            } else if k == WORDS {
                word &= (1u64 << b0).wrapping_sub(1);
            }
            if word != 0 {
                let i = w * 64 + word.trailing_zeros() as usize;
                let ahead = (i as u64).wrapping_sub(start as u64) & MASK;
                return Some(self.cursor + ahead);
            }
        }
        None
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fires_in_order_never_early() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.set(t0 + ms(30), 3);
        w.set(t0 + ms(10) + Duration::from_micros(1), 1);
        w.set(t0 + ms(20), 2);
        assert_eq!(w.next_hint(), Some(t0 + ms(11)));
        let mut out = Vec::new();
        w.expire(t0 + ms(10), &mut out);
        assert!(
            out.is_empty(),
            "a timer at 10.001 ms must not fire at 10 ms"
        );
        assert_eq!(w.next_hint(), Some(t0 + ms(11)));
        w.expire(t0 + ms(25), &mut out);
        assert_eq!(out, [1, 2]);
        assert_eq!(w.next_hint(), Some(t0 + ms(30)));
        w.expire(t0 + ms(29), &mut out);
        assert_eq!(out, [1, 2]);
        w.expire(t0 + ms(31), &mut out);
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_hint(), None);
    }

    #[test]
    fn beyond_one_turn_waits_for_its_turn() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let far = SLOTS as u64 + 5;
        w.set(t0 + ms(far), 7);
        w.set(t0 + ms(5), 1);
        let mut out = Vec::new();
        w.expire(t0 + ms(6), &mut out);
        assert_eq!(out, [1]);
        // The far timer shares slot 5's index; the hint may be early, never late.
        let hint = w.next_hint().unwrap();
        assert!(hint <= t0 + ms(far));
        w.expire(t0 + ms(far - 1), &mut out);
        assert_eq!(out, [1]);
        w.expire(t0 + ms(far), &mut out);
        assert_eq!(out, [1, 7]);
    }

    #[test]
    fn past_deadlines_fire_at_the_next_expire() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut out = Vec::new();
        w.expire(t0 + ms(100), &mut out);
        w.set(t0 + ms(50), 9);
        assert_eq!(w.next_hint(), Some(t0 + ms(101)));
        w.expire(t0 + ms(101), &mut out);
        assert_eq!(out, [9]);
    }
}
