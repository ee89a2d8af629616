//! What tm asks its caller to run, and what the caller feeds back: the script's routes on a
//! transaction (onreply_route, failure_route, SER 0.8's negative reply route) and the report
//! of a completed transaction (accounting). tm never calls the script itself.
//!
//! Also the per-run transaction state the script's actions keep ([`TState`]): which cell the
//! request has, the routes armed so far, and which kind of route is running.

use std::time::Instant;

use ser_script::RouteKind;

use crate::sip::Arrival;

use super::CellId;

/// The routes a transaction runs later, armed by `t_on_*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Routes {
    pub on_negative: Option<u32>,
    pub on_failure: Option<u32>,
    pub on_branch: Option<u32>,
    pub on_reply: Option<u32>,
}

/// What an onreply_route knows of its transaction's request (rtpengine_manage's rules: a
/// 2xx with SDP to an INVITE without one is an offer; a negative reply ends the media of an
/// initial INVITE only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The request had a body.
    pub body: bool,
    /// Its To had a tag (a request within a dialog, a re-INVITE).
    pub in_dialog: bool,
}

/// Per script run: the transaction this request has (t_newtran/t_relay), the routes armed so
/// far, and where the run is (request route, failure route of a cell, branch route).
#[derive(Debug, Clone, Copy, Default)]
pub struct TState {
    /// The shard's time for this message (None only outside the server, in tests).
    pub now: Option<Instant>,
    pub cell: Option<CellId>,
    pub routes: Routes,
    pub kind: RouteKindDefault,
    /// In an onreply_route: what the transaction's request was.
    pub request: Option<RequestFacts>,
}

/// `RouteKind` has no default; the request route is where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKindDefault(pub RouteKind);

impl Default for RouteKindDefault {
    fn default() -> Self {
        Self(RouteKind::Request)
    }
}

/// What [`super::Tm::on_reply`] made of a reply.
#[derive(Debug)]
pub enum ReplyMatch<S> {
    /// Not one of our branches: route it statelessly (a 2xx retransmission after the
    /// transaction ended, a stray reply).
    NotOurs,
    /// Handled: absorbed, or relayed / acted on already.
    Done,
    /// Run the cell's onreply_route over the reply, then call [`super::Tm::onreply_done`].
    OnReply(OnReplyRun<S>),
}

/// An onreply_route to run over a reply (see [`ReplyMatch::OnReply`]).
#[derive(Debug)]
pub struct OnReplyRun<S> {
    pub cell: CellId,
    pub branch: usize,
    pub code: u16,
    /// `onreply_route[route]`.
    pub route: u32,
    /// The script the transaction started under.
    pub script: S,
    /// Where the transaction's request came from (the route's `src_ip` and the like).
    pub arrival: Arrival,
    pub flags: u32,
    pub request: RequestFacts,
}

/// A failure route to run (see [`TmEvent::Failure`]).
#[derive(Debug)]
pub struct FailureRun<S> {
    pub cell: CellId,
    /// [`RouteKind::Failure`] (`t_on_failure`) or [`RouteKind::Reply`] (SER 0.8's
    /// `t_on_negative`; the branches it appends are relayed when it ends).
    pub kind: RouteKind,
    pub route: u32,
    pub script: S,
    /// The transaction's request, as received.
    pub request: Vec<u8>,
    pub arrival: Arrival,
    pub flags: u32,
    /// The routes still armed (the one running is disarmed).
    pub routes: Routes,
}

/// What the failure route left, fed back with [`super::Tm::failure_done`]: its flags and the
/// routes it armed. Its branches, relays and replies went through the `Tm` while it ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailureOutcome {
    pub flags: u32,
    pub routes: Routes,
}

/// A transaction's first final went upstream and its flags matched
/// [`super::TmConfig::report_flags`].
#[derive(Debug)]
pub struct Completion {
    pub code: u16,
    pub flags: u32,
    /// The transaction's request, as received.
    pub request: Vec<u8>,
    /// The Request-URI it was relayed with (empty when not relayed).
    pub out_uri: String,
    /// The final as it went upstream (relayed or ours), when tm has it.
    pub reply: Option<Vec<u8>>,
}

/// Drained with [`super::Tm::poll_event`].
#[derive(Debug)]
pub enum TmEvent<S> {
    /// Every branch failed and a failure route is armed: run it over the cell's request (it
    /// may add branches and relay or reply through the `Tm`), then call
    /// [`super::Tm::failure_done`]. Until then the cell waits.
    Failure(FailureRun<S>),
    /// Report a completed transaction (accounting).
    Completed(Completion),
}
