//! Probing, sans-IO: when the next round of OPTIONS is due ([`Pacer`]) and what a probe's
//! result means for the destination's health ([`classify`]). The thread that sends the probes
//! and waits for their results is `mgmt::dispatcher`.
//!
//! A round probes every destination [`super::Dispatcher::probe_targets`] names at once; the
//! next round starts `ds_ping_interval` after this one started, or when this one ends if it
//! took longer (a probe waits up to tm's `fr_timer` for its answer), so rounds never overlap.
//!
//! Any final reply the destination sends counts as alive — 200, and also 404, 405, 501 or
//! even 503: it received the request and answered it (Kamailio's `ds_ping_reply_codes` would
//! have to list them). Only no reply within `fr_timer` (tm's 408) or a transport error counts
//! as a failure.

use std::time::{Duration, Instant};

use super::health::Event;

/// When probe rounds are due.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    /// The first round `interval` after `now`.
    pub fn new(now: Instant, interval: Duration) -> Self {
        Self {
            interval,
            next: now + interval,
        }
    }

    /// When the next round is due.
    pub fn next_deadline(&self) -> Instant {
        self.next
    }

    /// A round started at `started` ended at `now`: the next is an interval after the start,
    /// or now when the round took longer.
    pub fn round_done(&mut self, started: Instant, now: Instant) {
        self.next = (started + self.interval).max(now);
    }
}

/// How one probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A final reply came from the destination.
    Replied(u16),
    /// tm ended it without a reply: 408 after `fr_timer`, 503 on a transport error.
    Local(u16),
    /// It could not be sent (the name does not resolve, no socket of its family).
    NotSent,
    /// The shard never reported (overloaded or stopping): says nothing of the destination.
    Lost,
}

/// What an outcome means for the destination; None: nothing.
pub fn classify(o: &Outcome) -> Option<Event> {
    match o {
        Outcome::Replied(_) => Some(Event::Reply),
        Outcome::Local(_) | Outcome::NotSent => Some(Event::Failure),
        Outcome::Lost => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::health::{Health, State, Thresholds};

    #[test]
    fn rounds_are_paced_and_never_overlap() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pacer::new(t0, 10 * s);
        assert_eq!(p.next_deadline(), t0 + 10 * s);
        // A quick round: the next one an interval after its start.
        p.round_done(t0 + 10 * s, t0 + 10 * s + Duration::from_millis(5));
        assert_eq!(p.next_deadline(), t0 + 20 * s);
        // A round that waited 32 s for a timeout: the next starts when it ended.
        p.round_done(t0 + 20 * s, t0 + 52 * s);
        assert_eq!(p.next_deadline(), t0 + 52 * s);
    }

    #[test]
    fn any_reply_is_alive_and_silence_is_a_failure() {
        for code in [200, 404, 405, 501, 503] {
            assert_eq!(classify(&Outcome::Replied(code)), Some(Event::Reply));
        }
        assert_eq!(classify(&Outcome::Local(408)), Some(Event::Failure));
        assert_eq!(classify(&Outcome::Local(503)), Some(Event::Failure));
        assert_eq!(classify(&Outcome::NotSent), Some(Event::Failure));
        assert_eq!(classify(&Outcome::Lost), None);
    }

    /// On a virtual clock: a destination probed every 2 s (probing threshold 2, inactive
    /// threshold 3) that stops answering at t=10 s and comes back at t=30 s is down from the
    /// second silent round, and up from the third answered one.
    #[test]
    fn probes_on_a_virtual_clock_take_a_destination_down_and_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let th = Thresholds {
            probing: 2,
            inactive: 3,
        };
        let h = Health::new(State::Active);
        let mut p = Pacer::new(t0, 2 * s);
        let mut changes = Vec::new();
        while p.next_deadline() < t0 + 60 * s {
            let now = p.next_deadline();
            let t = now.duration_since(t0).as_secs();
            let alive = !(10..30).contains(&t);
            // A silent destination's probe ends after a 1 s fr_timer.
            let (outcome, end) = if alive {
                (Outcome::Replied(200), now + Duration::from_millis(3))
            } else {
                (Outcome::Local(408), now + s)
            };
            if let Some(ev) = classify(&outcome) {
                if let Some(c) = h.apply(ev, th) {
                    changes.push((t, c));
                }
            }
            p.round_done(now, end);
        }
        assert_eq!(
            changes,
            [
                (12, (State::Active, State::Probing)),
                (34, (State::Probing, State::Active))
            ]
        );
    }
}
