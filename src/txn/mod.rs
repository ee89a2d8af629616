//! SIP transactions (RFC 3261 17): client and server state machines, keys, and a table.
//!
//! Sans-IO in quinn's manner: a transaction never touches a socket or reads the clock. The
//! caller feeds it
//!
//! - inputs from the network: `handle_request(now, &msg)`, `handle_response(now, &msg)`,
//!   `handle_transport_error(now)`, and `handle_timeout(now)` when `next_deadline()` is due;
//! - commands from the TU: [`ClientTransaction::start`], [`ServerTransaction::send_response`];
//!
//! and drains the outputs after each call, in this order: `poll_transmit()` (the datagrams to
//! send, borrowed from the transaction, which keeps its own copy of the last request / response
//! / ACK for retransmission), `poll_event()` ([`TxnEvent`]: timeouts, transport errors,
//! termination) and `next_deadline()`. Time must not go backwards. Whether a received message
//! goes up to the TU is the return value of `handle_*` ([`Disposition`]), not an event, because
//! the caller already holds the parsed datagram and forwarding it must not cost a copy.
//!
//! Where a message goes is not the transaction's business: the caller remembers the next hop of
//! a client transaction and the response address (18.2.2) of a server transaction (in the
//! entry it keeps in the [`Table`]).
//!
//! Reliable transports (TCP, TLS, SCTP; the `reliable` flag of `start`/`new`) follow 17.1.1.2,
//! 17.1.2.2, 17.2.1 and 17.2.2: no retransmissions by timers A, E, G, and timers D, I, J, K
//! are zero (the transaction terminates on the spot).
//!
//! What this module does not do (yet): the TU (t_relay, forking, CANCEL generation, 408/487
//! synthesis), RFC 6026's Accepted state (a 2xx terminates the INVITE transactions as in RFC
//! 3261; a proxy forwards 2xx retransmissions and their ACKs statelessly), DNS failover
//! (RFC 3263), and stream framing.
//!
//! Key types: [`TimerConfig`], [`Key`], [`ClientTransaction`], [`ServerTransaction`],
//! [`Table`] (the one table type: of plain [`Transaction`]s, or of tm's cells), [`Transmit`],
//! [`TxnEvent`], [`Disposition`].

mod client;
mod key;
mod server;
mod table;
mod timers;

#[cfg(test)]
mod lossy_tests;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;

pub use client::{
    ClientState, ClientTransaction, InviteClientState, NonInviteClientState, Retransmit,
};
pub use key::{Key, KeyError, MAGIC_COOKIE};
pub use server::{InviteServerState, NonInviteServerState, ServerState, ServerTransaction};
pub use table::{EntryId, Table, TableError, Timed, Transaction};
pub use timers::{TimerConfig, TimerName};

/// One datagram to send, borrowed from the transaction that keeps it for retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub kind: TransmitKind,
    pub bytes: &'a [u8],
}

/// What a [`Transmit`] carries (statistics and tests tell first sends from retransmissions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransmitKind {
    /// The client's request, first send.
    Request,
    /// The client's request again (timers A, E).
    RequestRetransmission,
    /// The ACK a client INVITE transaction generates for a non-2xx final (17.1.1.3).
    Ack,
    /// A response the TU handed to a server transaction.
    Response,
    /// The last response again: a retransmitted request arrived, or timer G fired.
    ResponseRetransmission,
    /// The automatic `100 Trying` of an INVITE server transaction (17.2.1).
    Trying,
}

/// Something the TU must learn about that did not come with a `handle_*` return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEvent {
    /// A timer ran out: B, F (no final response), [`TimerName::FrInv`] (no final after a
    /// provisional; the TU should CANCEL), H (no ACK for a non-2xx final).
    Timeout(TimerName),
    /// The TU reported that sending failed ([`ClientTransaction::handle_transport_error`]).
    TransportError,
    /// The transaction reached Terminated; the table removes it.
    Terminated,
}

/// What a received message means to the TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Pass it to the TU (a new provisional or final, or a 2xx retransmission after the
    /// transaction ended).
    PassUp,
    /// The transaction consumed it (a retransmission, an ACK for a non-2xx final); whatever it
    /// implies to send is queued for `poll_transmit`.
    Absorbed,
    /// It does not belong to this transaction after all (RFC 2543 ACK whose To tag differs).
    NotMatched,
}

/// Misuse of a transaction by the TU, or a message it cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("not a SIP request")]
    NotARequest,
    #[error("not a SIP response")]
    NotAResponse,
    #[error("ACK does not start a transaction")]
    AckStartsNoTransaction,
    #[error("a final response was already sent")]
    AlreadyFinal,
    #[error("the transaction is terminated")]
    Terminated,
    #[error("bad message: {0}")]
    Parse(#[from] ser_parser::ParseError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The status code of a response in `bytes`, read from the status line ("SIP/2.0 NNN ...").
pub(crate) fn status_of(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..=699).contains(&code).then_some(code)
}
