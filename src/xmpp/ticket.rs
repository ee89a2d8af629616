//! A SIP sender's wait for its message ([`Ticket`]): nothing blocks on it. The connection
//! thread decides its fate — written, held in the queue for the reconnect, withdrawn at its
//! deadline (`xmpp_send_timeout`), or refused by an XMPP error that came within
//! `xmpp_error_wait` — and calls the sender back once ([`Notify`]), which posts the result to
//! the shard where the script waits.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How far a queued message went, for the SIP sender waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    Queued,
    /// The connection thread took it to write (it will be written or queued again).
    Taken,
    Written,
    /// The connection went down while it waited: it stays queued for the reconnect.
    Held,
    /// Its sender stopped waiting (timeout) before it was taken: it is never sent.
    Cancelled,
    /// Written; an XMPP error for it may still come within `xmpp_error_wait`.
    Sent,
    /// Written, and the server answered with an error: the SIP status it maps to.
    Refused(u16, &'static str),
}

impl TicketState {
    /// What the sender is told, once there is something to tell.
    fn handed(self) -> Option<Handed> {
        match self {
            TicketState::Written => Some(Handed::Written),
            TicketState::Held => Some(Handed::Queued),
            TicketState::Cancelled => Some(Handed::TimedOut),
            TicketState::Refused(code, reason) => Some(Handed::Refused { code, reason }),
            TicketState::Queued | TicketState::Taken | TicketState::Sent => None,
        }
    }
}

/// What the SIP sender is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// Written to the XMPP server.
    Written,
    /// Queued while the server is away: it goes out after the reconnect.
    Queued,
    /// Not taken within the timeout: withdrawn, never sent.
    TimedOut,
    /// The XMPP server answered with an error within `xmpp_error_wait`: this SIP status.
    Refused { code: u16, reason: &'static str },
}

/// Called once with the fate of a message (from the connection thread, or at once): must
/// not block (it posts the result to the sender's shard).
pub type Notify = Box<dyn FnOnce(Handed) + Send + 'static>;

/// A SIP sender's wait for its message: the connection thread decides it (written, held
/// for the reconnect, or withdrawn at its deadline) and calls the sender back; nothing
/// blocks on it.
pub struct Ticket {
    inner: Mutex<TicketInner>,
    pub(super) deadline: Instant,
}

struct TicketInner {
    state: TicketState,
    notify: Option<Notify>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({:?})", self.state())
    }
}

impl Ticket {
    pub(super) fn new(deadline: Instant) -> Arc<Ticket> {
        Arc::new(Ticket {
            inner: Mutex::new(TicketInner {
                state: TicketState::Queued,
                notify: None,
            }),
            deadline,
        })
    }

    fn lock(&self) -> MutexGuard<'_, TicketInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> TicketState {
        self.lock().state
    }

    /// `f` hears the message's fate: later, or at once when it is known already.
    pub fn on_done(&self, f: Notify) {
        let mut g = self.lock();
        match g.state.handed() {
            Some(h) => {
                drop(g);
                f(h);
            }
            None => g.notify = Some(f),
        }
    }

    /// A new state; a final one calls the sender back (outside the lock).
    pub(super) fn set(&self, s: TicketState) {
        let f = {
            let mut g = self.lock();
            g.state = s;
            if s.handed().is_some() {
                g.notify.take()
            } else {
                None
            }
        };
        if let (Some(f), Some(h)) = (f, s.handed()) {
            f(h);
        }
    }

    /// Moves it to `to` if it is in one of `from`; true if so (a final state calls the
    /// sender back, outside the lock).
    pub(super) fn settle(&self, from: &[TicketState], to: TicketState) -> bool {
        let f = {
            let mut g = self.lock();
            if !from.contains(&g.state) {
                return false;
            }
            g.state = to;
            if to.handed().is_some() {
                g.notify.take()
            } else {
                None
            }
        };
        if let (Some(f), Some(h)) = (f, to.handed()) {
            f(h);
        }
        true
    }

    /// Takes it to write, unless its sender stopped waiting; false: drop it.
    pub(super) fn take(&self) -> bool {
        let mut g = self.lock();
        if g.state == TicketState::Cancelled {
            return false;
        }
        g.state = TicketState::Taken;
        true
    }

    /// Withdraws it when `now` is past its deadline and it was not taken; true if so.
    pub(super) fn expire(&self, now: Instant) -> bool {
        let f = {
            let mut g = self.lock();
            if g.state != TicketState::Queued || now < self.deadline {
                return false;
            }
            g.state = TicketState::Cancelled;
            g.notify.take()
        };
        if let Some(f) = f {
            f(Handed::TimedOut);
        }
        true
    }
}
