//! Timer values of the transaction layer (RFC 3261 17 and table 4) and SER's tm parameters.
//!
//! Timers here are data: each transaction state carries the deadlines it is waiting for and
//! reports the earliest through `next_deadline()`; nothing in this module sleeps, spawns or
//! reads a clock. This module only says *how long* each timer runs.
//!
//! Which knob drives which RFC timer:
//!
//! | field          | RFC 3261 timer(s)                                  | RFC default | SER default |
//! |----------------|----------------------------------------------------|-------------|-------------|
//! | `t1`           | base of H, J (64*T1)                               | 500 ms      | 500 ms      |
//! | `t2`           | documentation of the cap; see `retr_timer2`        | 4 s         | 4 s         |
//! | `t4`           | I and K (T4)                                       | 5 s         | 5 s         |
//! | `retr_timer1`  | first interval of A, E, G (T1)                     | 500 ms      | 500 ms      |
//! | `retr_timer2`  | cap of E and G, E's interval in Proceeding (T2)    | 4 s         | 4 s         |
//! | `fr_timer`     | B (INVITE, no provisional yet) and F (non-INVITE)  | 64*T1 = 32 s| 30 s        |
//! | `fr_inv_timer` | INVITE after a provisional (SER's FR_INV; the role | 180 s       | 120 s       |
//! |                | of the proxy's Timer C, RFC 3261 16.6 step 11)     |             |             |
//! | `wt_timer`     | D (client INVITE, wait for final retransmissions)  | 32 s        | 5 s         |
//! | `trying_100`   | the 200 ms of 17.2.1 before an automatic 100       | 200 ms      | off         |
//!
//! Timer A is not capped (17.1.1.2 doubles it until B stops it); E and G are capped at
//! `retr_timer2`. On a reliable transport A, E and G are not started and D, I, J, K are zero.

use std::time::Duration;

/// The timer durations one transaction runs with (copied into each transaction: it is small and
/// `Copy`, and a reconfiguration must not change the timers of transactions already running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RT estimate (T1): base of timers H and J (64*T1).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (T2); the value
    /// actually used is `retr_timer2`, which defaults to it.
    pub t2: Duration,
    /// Maximum time a message stays in the network (T4): timers I and K.
    pub t4: Duration,
    /// Non-INVITE final-response timer F, and INVITE timer B while no provisional has arrived
    /// (SER `fr_timer`).
    pub fr_timer: Duration,
    /// How long an INVITE client transaction waits for a final response once a provisional has
    /// arrived, restarted by each provisional (SER `fr_inv_timer`).
    pub fr_inv_timer: Duration,
    /// Timer D: how long a completed INVITE client transaction absorbs retransmitted finals
    /// (SER `wt_timer`).
    pub wt_timer: Duration,
    /// First retransmission interval of timers A, E and G (SER `retr_timer1`, T1).
    pub retr_timer1: Duration,
    /// Cap of the E and G intervals (SER `retr_timer2`, T2).
    pub retr_timer2: Duration,
    /// When the INVITE server transaction sends `100 Trying` itself if the TU has not answered
    /// (17.2.1); `None` turns it off (SER's t_relay sends the 100 at once).
    pub trying_100: Option<Duration>,
}

impl TimerConfig {
    /// The RFC 3261 values (table 4).
    pub const fn rfc3261() -> Self {
        let t1 = Duration::from_millis(500);
        Self {
            t1,
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            fr_timer: Duration::from_secs(32),
            fr_inv_timer: Duration::from_secs(180),
            wt_timer: Duration::from_secs(32),
            retr_timer1: t1,
            retr_timer2: Duration::from_secs(4),
            trying_100: Some(Duration::from_millis(200)),
        }
    }

    /// SER's tm defaults: `fr_timer` 30 s, `fr_inv_timer` 120 s, `wt_timer` 5 s, and no
    /// automatic 100 (t_relay sends it).
    pub const fn ser() -> Self {
        let mut c = Self::rfc3261();
        c.fr_timer = Duration::from_secs(30);
        c.fr_inv_timer = Duration::from_secs(120);
        c.wt_timer = Duration::from_secs(5);
        c.trying_100 = None;
        c
    }

    /// Timer H (wait for ACK) and J (absorb non-INVITE retransmissions): 64*T1.
    pub fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// The retransmission interval after `interval`: doubled, and capped at `retr_timer2`
    /// when `capped` (E and G; A is not capped).
    pub(crate) fn next_interval(&self, interval: Duration, capped: bool) -> Duration {
        let doubled = interval.saturating_mul(2);
        if capped {
            doubled.min(self.retr_timer2)
        } else {
            doubled
        }
    }
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self::rfc3261()
    }
}

/// Names of the RFC 3261 timers, for events and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerName {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    /// SER's fr_inv_timer: no final response after a provisional.
    FrInv,
    /// The 200 ms automatic `100 Trying` of 17.2.1.
    Trying100,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_rfc_table_4() {
        let c = TimerConfig::default();
        assert_eq!(c.t1_x64(), Duration::from_secs(32));
        assert_eq!(c.fr_timer, c.t1_x64());
        assert!(c.wt_timer >= Duration::from_secs(32));
        let mut i = c.retr_timer1;
        let mut seen = vec![];
        for _ in 0..6 {
            seen.push(i.as_millis());
            i = c.next_interval(i, true);
        }
        assert_eq!(seen, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(
            c.next_interval(Duration::from_secs(8), false),
            Duration::from_secs(16)
        );
        let s = TimerConfig::ser();
        assert_eq!(s.fr_timer, Duration::from_secs(30));
        assert_eq!(s.fr_inv_timer, Duration::from_secs(120));
        assert_eq!(s.trying_100, None);
    }
}
