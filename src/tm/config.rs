//! tm's configuration, from its module parameters (SER's units: seconds for the final-response
//! and wait timers, milliseconds for the retransmission timers).

use std::time::Duration;

use crate::config::Params;
use crate::txn::TimerConfig;

/// tm's configuration.
#[derive(Debug, Clone)]
pub struct TmConfig {
    pub timers: TimerConfig,
    /// Live transactions per shard; past it a new request gets 503.
    pub max_transactions: usize,
    /// Seconds in the Retry-After of that 503.
    pub retry_after: u32,
    /// Longest life of a transaction that never completes (t_newtran with no reply).
    pub max_lifetime: Duration,
    /// Script flags (a bit mask) whose transactions are reported with
    /// [`super::TmEvent::Completed`] when they complete; the caller (accounting) sets it.
    pub report_flags: u32,
}

impl TmConfig {
    /// `fr_timer`, `fr_inv_timer`, `wt_timer` in seconds (as SER); `retr_timer1`,
    /// `retr_timer2` in milliseconds; `max_transactions` for the whole server (split over the
    /// shards); `retry_after` in seconds.
    pub fn from_params(p: &Params, shards: usize) -> Self {
        let mut t = TimerConfig::ser();
        let secs = |n: i64| Duration::from_secs(u64::try_from(n.max(1)).unwrap_or(1));
        let ms = |n: i64| Duration::from_millis(u64::try_from(n.max(10)).unwrap_or(10));
        if let Some(n) = p.int("tm", "fr_timer") {
            t.fr_timer = secs(n);
        }
        if let Some(n) = p.int("tm", "fr_inv_timer") {
            t.fr_inv_timer = secs(n);
        }
        if let Some(n) = p.int("tm", "wt_timer") {
            t.wt_timer = secs(n);
        }
        if let Some(n) = p.int("tm", "retr_timer1") {
            t.retr_timer1 = ms(n);
            t.t1 = t.retr_timer1;
        }
        if let Some(n) = p.int("tm", "retr_timer2") {
            t.retr_timer2 = ms(n);
            t.t2 = t.retr_timer2;
        }
        let total = p
            .int("tm", "max_transactions")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(262_144);
        let max_transactions = (total / shards.max(1)).max(1);
        let retry_after = p
            .int("tm", "retry_after")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(5);
        let max_lifetime = t.fr_inv_timer + t.fr_timer + t.t1_x64();
        Self {
            timers: t,
            max_transactions,
            retry_after,
            max_lifetime,
            report_flags: 0,
        }
    }
}
