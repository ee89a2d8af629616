//! What a module keeps with a transaction ([`Attachment`]: the dispatcher's fail-over
//! candidates and calls-in-flight count) and what tm tells it as the transaction runs: how
//! each branch ended ([`Attached::branch_ended`]).
//!
//! tm never looks inside an attachment and knows no module: it keeps it while the
//! transaction runs, lends it to the failure route's actions ([`super::Tm::attachment_mut`]),
//! reports each branch's end to it, and drops it when the first final goes upstream, or
//! with the cell — so whatever the module counts in its `Drop` ends with the transaction.

use std::any::Any;
use std::fmt::Debug;

/// How one branch of a transaction ended: the first final it got, or why it got none.
/// Reported once per branch, before the transaction's answer goes upstream (and before the
/// failure route runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchEnd {
    /// A final reply came from downstream, with this status (a 503 only once no other
    /// target of the branch's name is left to try, RFC 3263).
    Replied(u16),
    /// It answered a provisional but no final came within `fr_inv_timer`: tm cancelled it
    /// (408). The destination is alive; the callee did not answer.
    Unanswered,
    /// No reply at all within the timer (timer B/F, `fr_timer`): tm's 408.
    Timeout,
    /// The request could not be delivered: the connection was refused or failed, the name
    /// did not resolve, no address of a usable family (tm's 503).
    Unreachable,
}

impl BranchEnd {
    /// The status the branch counts with in the best-response choice.
    pub fn code(self) -> u16 {
        match self {
            Self::Replied(c) => c,
            Self::Unanswered | Self::Timeout => 408,
            Self::Unreachable => 503,
        }
    }

    /// Whether it says the destination failed (no reply, unreachable, or a 503 from it);
    /// false: the destination answered, whatever the answer was.
    pub fn destination_failed(self) -> bool {
        matches!(self, Self::Timeout | Self::Unreachable | Self::Replied(503))
    }
}

/// State a module keeps with a transaction (see the module documentation).
pub trait Attached: Any + Send + Debug {
    /// A branch was started by the script's relay: its index in the transaction and the URI
    /// it went to (the destination URI when one was set for it, else its Request-URI).
    fn branch_added(&mut self, _index: usize, _hop: &str) {}

    /// A branch ended (see [`BranchEnd`]).
    fn branch_ended(&mut self, _index: usize, _end: BranchEnd) {}

    /// For [`dyn Attached::downcast_mut`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl dyn Attached {
    /// The module's own type, when this attachment is one.
    pub fn downcast_mut<T: Attached>(&mut self) -> Option<&mut T> {
        self.as_any_mut().downcast_mut::<T>()
    }
}

/// A module's state kept with a transaction.
pub type Attachment = Box<dyn Attached>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_a_failed_destination() {
        for e in [
            BranchEnd::Timeout,
            BranchEnd::Unreachable,
            BranchEnd::Replied(503),
        ] {
            assert!(e.destination_failed(), "{e:?}");
        }
        for e in [
            BranchEnd::Replied(200),
            BranchEnd::Replied(404),
            BranchEnd::Replied(408),
            BranchEnd::Replied(486),
            BranchEnd::Replied(500),
            BranchEnd::Replied(603),
            BranchEnd::Unanswered,
        ] {
            assert!(!e.destination_failed(), "{e:?}");
        }
        assert_eq!(BranchEnd::Timeout.code(), 408);
        assert_eq!(BranchEnd::Unanswered.code(), 408);
        assert_eq!(BranchEnd::Unreachable.code(), 503);
        assert_eq!(BranchEnd::Replied(486).code(), 486);
    }
}
