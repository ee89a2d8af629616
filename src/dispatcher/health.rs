//! A destination's health: the state machine that probes and failed branches drive, and the
//! shared cell every shard reads it from.
//!
//! States (Kamailio's names in brackets):
//!
//! ```text
//!            probing_threshold failures in a row
//!   Active ──────────────────────────────────────▶ Probing
//!   [AX]   ◀────────────────────────────────────── [IP]
//!            inactive_threshold good replies in a row
//!
//!   Inactive [IX], Disabled [DX]: set by the list's flags or the operator; probes and
//!   failures do not move them.
//! ```
//!
//! Only Active destinations are selected. A failure is a probe that got no reply in time, a
//! request relayed to it that failed (no reply, unreachable, a 503 from it;
//! `ds_mark_failed_branches`), or a branch the script marked with `ds_mark_dst()`; a reply to
//! a probe or to a relayed request resets the failure count, a failure resets the good-reply
//! count. Only probe replies count towards bringing a destination back. The transition function [`step`] is pure; [`Health`]
//! keeps state and counters in one atomic word and applies steps with compare-and-swap, so
//! shards (ds_mark_dst), the prober and the FIFO change it without locks, and exactly one of
//! them sees each change of state (and logs it).

use std::fmt;
use std::sync::atomic::Ordering;

// 64-bit atomics everywhere, armv5te included (no native ones there).
use portable_atomic::AtomicU64;

/// Where a destination stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Selected; failures counted.
    Active,
    /// Not selected; probed, and back to Active after enough good replies.
    Probing,
    /// Not selected, not moved by probes (the operator's or the list's choice).
    Inactive,
    /// Not selected, not probed.
    Disabled,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Probing => "probing",
            State::Inactive => "inactive",
            State::Disabled => "disabled",
        }
    }

    /// Kamailio's two-letter flags, as `dispatcher.list` shows them.
    pub fn flags(self) -> &'static str {
        match self {
            State::Active => "AX",
            State::Probing => "IP",
            State::Inactive => "IX",
            State::Disabled => "DX",
        }
    }

    /// An operator's name for a state: `active`/`a`, `probing`/`p`/`ip`,
    /// `inactive`/`i`, `disabled`/`d` (any case).
    pub fn parse(s: &str) -> Option<State> {
        match s.to_ascii_lowercase().as_str() {
            "active" | "a" | "ax" => Some(State::Active),
            "probing" | "p" | "ip" | "ap" => Some(State::Probing),
            "inactive" | "i" | "ix" => Some(State::Inactive),
            "disabled" | "d" | "dx" => Some(State::Disabled),
            _ => None,
        }
    }

    /// The state a list entry starts in from its flags (disabled wins, then probing).
    pub fn from_flags(flags: u32) -> State {
        if flags & super::list::FLAG_DISABLED != 0 {
            State::Disabled
        } else if flags & super::list::FLAG_PROBING != 0 {
            State::Probing
        } else if flags & super::list::FLAG_INACTIVE != 0 {
            State::Inactive
        } else {
            State::Active
        }
    }

    fn code(self) -> u64 {
        match self {
            State::Active => 0,
            State::Probing => 1,
            State::Inactive => 2,
            State::Disabled => 3,
        }
    }

    fn from_code(c: u64) -> State {
        match c {
            0 => State::Active,
            1 => State::Probing,
            2 => State::Inactive,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happened to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It answered a probe.
    Reply,
    /// A probe got no reply in time, a request relayed to it failed (no reply, unreachable,
    /// 503 from it), or the script said so (`ds_mark_dst`).
    Failure,
    /// It answered a request relayed to it: the failures in a row start again. Only
    /// probes bring a destination back up, so nothing else changes.
    Answered,
    /// The operator (or the script) set its state.
    Set(State),
}

/// The two thresholds of the module (`ds_probing_threshold`, `ds_inactive_threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Failures in a row that take an Active destination to Probing (at least 1).
    pub probing: u16,
    /// Good replies in a row that bring a Probing destination back (at least 1).
    pub inactive: u16,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            probing: 1,
            inactive: 1,
        }
    }
}

/// A state with its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub state: State,
    /// Failures in a row (while Active).
    pub failures: u16,
    /// Good replies in a row (while Probing).
    pub replies: u16,
}

impl Snapshot {
    pub fn new(state: State) -> Self {
        Self {
            state,
            failures: 0,
            replies: 0,
        }
    }

    fn pack(self) -> u64 {
        self.state.code() | (u64::from(self.failures) << 8) | (u64::from(self.replies) << 24)
    }

    fn unpack(w: u64) -> Self {
        Self {
            state: State::from_code(w & 0xff),
            failures: ((w >> 8) & 0xffff) as u16,
            replies: ((w >> 24) & 0xffff) as u16,
        }
    }
}

/// The transition function: where `ev` takes `s`.
pub fn step(s: Snapshot, ev: Event, th: Thresholds) -> Snapshot {
    match (s.state, ev) {
        (_, Event::Set(state)) => Snapshot::new(state),
        (State::Active, Event::Failure) => {
            let failures = s.failures.saturating_add(1);
            if failures >= th.probing.max(1) {
                Snapshot::new(State::Probing)
            } else {
                Snapshot { failures, ..s }
            }
        }
        (State::Active, Event::Reply | Event::Answered) => Snapshot::new(State::Active),
        (_, Event::Answered) => s,
        (State::Probing, Event::Reply) => {
            let replies = s.replies.saturating_add(1);
            if replies >= th.inactive.max(1) {
                Snapshot::new(State::Active)
            } else {
                Snapshot { replies, ..s }
            }
        }
        (State::Probing, Event::Failure) => Snapshot::new(State::Probing),
        (State::Inactive | State::Disabled, _) => s,
    }
}

/// A destination's health, shared by every shard.
#[derive(Debug)]
pub struct Health(AtomicU64);

impl Health {
    pub fn new(state: State) -> Self {
        Self(AtomicU64::new(Snapshot::new(state).pack()))
    }

    pub fn get(&self) -> Snapshot {
        Snapshot::unpack(self.0.load(Ordering::Acquire))
    }

    /// One relaxed load: what selection asks per candidate.
    #[inline]
    pub fn is_active(&self) -> bool {
        Snapshot::unpack(self.0.load(Ordering::Relaxed)).state == State::Active
    }

    /// Applies `ev`; `Some((from, to))` to exactly the caller whose step changed the state.
    pub fn apply(&self, ev: Event, th: Thresholds) -> Option<(State, State)> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let old = Snapshot::unpack(cur);
            let new = step(old, ev, th);
            if new == old {
                return None;
            }
            match self
                .0
                .compare_exchange_weak(cur, new.pack(), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (old.state != new.state).then_some((old.state, new.state)),
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: Thresholds = Thresholds {
        probing: 3,
        inactive: 2,
    };

    #[test]
    fn failures_in_a_row_take_it_down_and_replies_bring_it_back() {
        let h = Health::new(State::Active);
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Failure, TH), None);
        // A good reply in between starts the count again.
        assert_eq!(h.apply(Event::Reply, TH), None);
        assert_eq!(h.get(), Snapshot::new(State::Active));
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert!(h.is_active());
        assert_eq!(
            h.apply(Event::Failure, TH),
            Some((State::Active, State::Probing))
        );
        assert!(!h.is_active());
        // More failures while probing: no new change (logged once).
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Reply, TH), None);
        // A failure resets the good replies.
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Reply, TH), None);
        assert_eq!(
            h.apply(Event::Reply, TH),
            Some((State::Probing, State::Active))
        );
        assert_eq!(h.apply(Event::Reply, TH), None);
    }

    #[test]
    fn answered_requests_reset_failures_but_bring_nothing_back() {
        let h = Health::new(State::Active);
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Answered, TH), None);
        assert_eq!(h.get(), Snapshot::new(State::Active));
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(
            h.apply(Event::Failure, TH),
            Some((State::Active, State::Probing))
        );
        // A late answer of a call in flight does not count as a probe reply.
        for _ in 0..3 {
            assert_eq!(h.apply(Event::Answered, TH), None);
        }
        assert_eq!(h.get(), Snapshot::new(State::Probing));
        let h = Health::new(State::Disabled);
        assert_eq!(h.apply(Event::Answered, TH), None);
        assert_eq!(h.get().state, State::Disabled);
    }

    #[test]
    fn operator_states_stay_put() {
        let h = Health::new(State::Inactive);
        for ev in [Event::Reply, Event::Failure, Event::Reply] {
            assert_eq!(h.apply(ev, TH), None);
        }
        assert_eq!(h.get().state, State::Inactive);
        assert_eq!(
            h.apply(Event::Set(State::Active), TH),
            Some((State::Inactive, State::Active))
        );
        assert_eq!(h.apply(Event::Set(State::Active), TH), None);
        assert_eq!(
            h.apply(Event::Set(State::Disabled), TH),
            Some((State::Active, State::Disabled))
        );
        assert_eq!(h.apply(Event::Failure, TH), None);
        assert_eq!(h.get().state, State::Disabled);
    }

    #[test]
    fn threshold_one_and_list_flags() {
        let th = Thresholds::default();
        let s = step(Snapshot::new(State::Active), Event::Failure, th);
        assert_eq!(s.state, State::Probing);
        assert_eq!(step(s, Event::Reply, th).state, State::Active);
        assert_eq!(State::from_flags(0), State::Active);
        assert_eq!(State::from_flags(1), State::Inactive);
        assert_eq!(State::from_flags(3), State::Probing);
        assert_eq!(State::from_flags(6), State::Disabled);
        assert_eq!(State::parse("IP"), Some(State::Probing));
        assert_eq!(State::parse("nonsense"), None);
    }

    #[test]
    fn concurrent_failures_change_the_state_once() {
        let h = std::sync::Arc::new(Health::new(State::Active));
        let th = Thresholds {
            probing: 100,
            inactive: 1,
        };
        let changes: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let h = std::sync::Arc::clone(&h);
                    sc.spawn(move || {
                        (0..100)
                            .filter(|_| h.apply(Event::Failure, th).is_some())
                            .count()
                    })
                })
                .collect();
            hs.into_iter().map(|j| j.join().unwrap_or(0)).sum()
        });
        assert_eq!(changes, 1);
        assert_eq!(h.get().state, State::Probing);
    }
}
