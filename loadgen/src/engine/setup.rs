//! What every shard of the generator shares: [`Setup`], the scenario(s) and options each shard
//! reads (with the address texts written into every message, formatted once), and [`Shared`],
//! the totals the shards add to and the main thread watches.
//!
//! Plain data: it neither runs calls nor decides when the run ends; the shard handler
//! ([`super::Gen`]) and `main` do.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rate::Schedule;
use crate::scenario::Scenario;
use crate::stats::Stats;
use crate::users::{Inject, Users};

/// What every shard reads: the scenario(s) and the options.
pub struct Setup {
    /// For a UAC, one scenario; for the built-in UAS, answer / busy / no answer.
    pub scenarios: Vec<Scenario>,
    /// Shares of scenarios 1.. (the rest go to scenario 0): busy, no answer.
    pub shares: Vec<f64>,
    pub server: bool,
    pub target: SocketAddr,
    pub local_ip: IpAddr,
    pub service: String,
    pub users: Users,
    pub callee_pattern: String,
    pub callee_count: u64,
    pub inject: Option<Inject>,
    pub hold_ms: u64,
    pub timeout: Duration,
    pub recv_timeout: Duration,
    pub schedule: Schedule,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub pid: u32,
    pub media_port: u16,
    /// Calls due within this long of a wake-up start together (the shards' batch interval);
    /// zero: each call starts on the first millisecond tick of the timers at or after the
    /// instant it is due (the default pacing: as SIPp's 1 ms timer resolution, so a call's
    /// start and another's pause ending in the same millisecond go out together).
    pub grain: Duration,
    /// Texts written into every message, formatted once.
    pub local_ip_text: String,
    pub pid_text: String,
    pub target_ip_text: String,
}

impl Setup {
    /// The target's address text when the peer is the target (the common case), else formatted.
    pub(super) fn remote_ip_text(&self, a: std::net::Ipv4Addr) -> std::borrow::Cow<'_, str> {
        if IpAddr::V4(a) == self.target.ip() {
            std::borrow::Cow::Borrowed(&self.target_ip_text)
        } else {
            std::borrow::Cow::Owned(a.to_string())
        }
    }
}

/// Totals the shards add to, and what the main thread watches.
pub struct Shared {
    pub stats: Mutex<Stats>,
    pub attempted: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Shards that have started every call they will start.
    pub starting_done: AtomicUsize,
    /// Shards with nothing left in flight after that.
    pub done: AtomicUsize,
    pub started_at: Mutex<Option<Instant>>,
    pub stop_starting: AtomicBool,
}

impl Shared {
    pub fn new(name: &str) -> Self {
        Self {
            stats: Mutex::new(Stats::new(name)),
            attempted: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            starting_done: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            started_at: Mutex::new(None),
            stop_starting: AtomicBool::new(false),
        }
    }
}
