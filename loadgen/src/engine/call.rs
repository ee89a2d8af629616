//! One call's record ([`Call`]) and its open transaction ([`Txn`]), with the reuse of a finished
//! call's buffers ([`reuse`]) and [`push_text`], which copies message bytes into a call's text.
//!
//! Data only: what happens to a call (its steps, timers, messages) is in the state machine
//! ([`super::machine`]) and the call table ([`super::table`]).

use std::net::SocketAddr;
use std::time::Instant;

use ser_shards::SocketId;

use crate::digest::Challenge;
use crate::users::User;

pub(super) struct Txn {
    /// The transaction type: an index into the shard's `Stats::txns`.
    pub(super) method: usize,
    pub(super) start: Instant,
    pub(super) challenged: bool,
    pub(super) uas: bool,
}

pub(super) struct Call {
    pub(super) scen: usize,
    pub(super) step: usize,
    pub(super) number: u64,
    pub(super) call_id: String,
    pub(super) sock: SocketId,
    pub(super) local: SocketAddr,
    pub(super) peer: SocketAddr,
    pub(super) cseq: u32,
    pub(super) last: Vec<u8>,
    pub(super) last_sent: Vec<u8>,
    pub(super) routes: String,
    pub(super) next_url: String,
    pub(super) peer_tag: String,
    pub(super) retrans_ms: u64,
    pub(super) retrans_base: u64,
    pub(super) retrans_cap: u64,
    pub(super) retrans_first: Instant,
    pub(super) retrans_epoch: u64,
    pub(super) step_epoch: u64,
    pub(super) txn_epoch: u64,
    pub(super) txn: Option<Txn>,
    pub(super) challenge: Option<Challenge>,
    pub(super) invite_ruri: String,
    pub(super) user: User,
    pub(super) callee: String,
    pub(super) started: Instant,
}

/// A buffer a finished call leaves for the next one.
pub(super) trait Empty: Default {
    fn empty(&mut self);
}

impl Empty for String {
    fn empty(&mut self) {
        self.clear();
    }
}

impl Empty for Vec<u8> {
    fn empty(&mut self) {
        self.clear();
    }
}

impl Empty for User {
    fn empty(&mut self) {
        self.user.clear();
        self.password.clear();
        self.domain.clear();
    }
}

/// `field` of the finished call `old`, emptied (its allocation kept), or a new one.
pub(super) fn reuse<T: Empty>(
    old: &mut Option<Call>,
    field: impl FnOnce(&mut Call) -> &mut T,
) -> T {
    let mut v = old
        .as_mut()
        .map(|c| std::mem::take(field(c)))
        .unwrap_or_default();
    v.empty();
    v
}

/// Appends bytes taken from a message: as they are when they are UTF-8 (almost always, and
/// checked faster than a lossy conversion walks them), else with U+FFFD for what is not.
pub(super) fn push_text(to: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(t) => to.push_str(t),
        Err(_) => to.push_str(&String::from_utf8_lossy(b)),
    }
}
