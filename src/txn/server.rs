//! Server transactions (RFC 3261 17.2): the INVITE machine of figure 7 and the non-INVITE
//! machine of figure 8.
//!
//! A [`ServerTransaction`] is created for a received request that matched none
//! ([`ServerTransaction::new`]), absorbs the request's retransmissions (re-sending the last
//! response, if any), sends what the TU answers ([`ServerTransaction::send_response`]),
//! retransmits a non-2xx final to an INVITE until the ACK arrives (timers G, H) and absorbs
//! the ACK and late retransmissions (I, J). The INVITE machine can send `100 Trying` itself when
//! the TU stays silent for [`TimerConfig::trying_100`].
//!
//! It does not build responses other than that 100 (the TU does), nor does it handle CANCEL:
//! a CANCEL is a non-INVITE server transaction of its own, and the TU finds the INVITE it
//! cancels with [`Key::cancelled_invite`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ser_parser::{Message, Method, ReplySpec};

use super::client::Retransmit;
use super::{
    status_of, Disposition, Key, TimerConfig, TimerName, Transmit, TransmitKind, TxnError, TxnEvent,
};

/// INVITE server transaction, RFC 3261 figure 7.
///
/// ```text
///  INVITE: pass to TU, (100 after 200 ms)
///  Proceeding --300-699 from TU--> Completed --ACK--> Confirmed --Timer I--> Terminated
///     |  1xx from TU: send          |  Timer G: resend final (min(2^n*T1, T2))
///     |  INVITE: resend last 1xx    |  Timer H: Timeout -> Terminated
///     +--2xx from TU: send---------------------------------------------> Terminated
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// Waiting for the TU; `trying` is when the automatic 100 goes out (None once any response
    /// was sent, or when turned off).
    Proceeding {
        trying: Option<Instant>,
    },
    /// A 300-699 was sent; G retransmits it (None on reliable transports), H gives up on the ACK.
    Completed {
        g: Option<Retransmit>,
        h: Instant,
        code: u16,
    },
    /// The ACK arrived; timer I absorbs further ACKs.
    Confirmed {
        i: Instant,
    },
    Terminated,
}

/// Non-INVITE server transaction, RFC 3261 figure 8.
///
/// ```text
///  Trying --1xx from TU--> Proceeding --200-699 from TU--> Completed --Timer J--> Terminated
///    +--------200-699 from TU----------------------------> Completed
///  request retransmissions: absorbed in Trying, answered with the last response after
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    Trying,
    Proceeding,
    /// A final was sent; timer J absorbs request retransmissions.
    Completed {
        j: Instant,
    },
    Terminated,
}

/// The state of either machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Invite(InviteServerState),
    NonInvite(NonInviteServerState),
}

/// One server transaction (see the module documentation).
#[derive(Debug)]
pub struct ServerTransaction {
    key: Key,
    cfg: TimerConfig,
    reliable: bool,
    state: ServerState,
    /// The request that created the transaction (for the automatic 100 and the TU).
    request: Vec<u8>,
    /// The last response sent, for retransmission.
    response: Vec<u8>,
    transmits: VecDeque<TransmitKind>,
    events: VecDeque<TxnEvent>,
    last_code: Option<u16>,
}

impl ServerTransaction {
    /// A server transaction for `request`, which matched no existing one. `reliable`: the
    /// request came over TCP/TLS/SCTP (no G; I and J are zero).
    pub fn new(
        now: Instant,
        cfg: &TimerConfig,
        request: &Message<'_>,
        reliable: bool,
    ) -> Result<Self, TxnError> {
        let method = request.method().ok_or(TxnError::NotARequest)?;
        let key = Key::server(request)?;
        let state = match method {
            Method::Ack => return Err(TxnError::AckStartsNoTransaction),
            Method::Invite => ServerState::Invite(InviteServerState::Proceeding {
                trying: cfg.trying_100.map(|d| now + d),
            }),
            _ => ServerState::NonInvite(NonInviteServerState::Trying),
        };
        Ok(Self {
            key,
            cfg: *cfg,
            reliable,
            state,
            request: request.buf().to_vec(),
            response: Vec::new(),
            transmits: VecDeque::with_capacity(2),
            events: VecDeque::new(),
            last_code: None,
        })
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn is_invite(&self) -> bool {
        matches!(self.state, ServerState::Invite(_))
    }

    /// The request that created the transaction.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The status of the last response sent.
    pub fn last_code(&self) -> Option<u16> {
        self.last_code
    }

    /// The final status sent, if any.
    pub fn final_code(&self) -> Option<u16> {
        self.last_code.filter(|&c| c >= 200)
    }

    pub fn is_terminated(&self) -> bool {
        matches!(
            self.state,
            ServerState::Invite(InviteServerState::Terminated)
                | ServerState::NonInvite(NonInviteServerState::Terminated)
        )
    }

    /// A final was sent and the transaction only waits (SER's "waiting" transactions).
    pub fn is_completed(&self) -> bool {
        matches!(
            self.state,
            ServerState::Invite(
                InviteServerState::Completed { .. } | InviteServerState::Confirmed { .. }
            ) | ServerState::NonInvite(NonInviteServerState::Completed { .. })
        )
    }

    /// A request matched to this transaction by [`Key::server`] arrived: a retransmission of
    /// the request, or the ACK of an INVITE's non-2xx final.
    pub fn handle_request(&mut self, now: Instant, msg: &Message<'_>) -> Disposition {
        use InviteServerState as I;
        use NonInviteServerState as N;
        let is_ack = msg.method() == Some(Method::Ack);
        match (self.state, is_ack) {
            (ServerState::Invite(I::Completed { .. }), true) => {
                if self.key.is_rfc2543() && !self.ack_tag_matches(msg) {
                    return Disposition::NotMatched;
                }
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.cfg.t4
                };
                self.state = ServerState::Invite(I::Confirmed { i: now + i });
                if i.is_zero() {
                    self.terminate();
                }
                Disposition::Absorbed
            }
            (ServerState::Invite(I::Confirmed { .. } | I::Proceeding { .. }), true) => {
                Disposition::Absorbed
            }
            // An ACK after a 2xx is end to end: not ours (the proxy forwards it).
            (ServerState::Invite(I::Terminated) | ServerState::NonInvite(_), true) => {
                Disposition::NotMatched
            }
            (
                ServerState::Invite(I::Proceeding { .. } | I::Completed { .. })
                | ServerState::NonInvite(N::Proceeding | N::Completed { .. }),
                false,
            ) => {
                // 17.2.1, 17.2.2: a retransmitted request is answered with the last response.
                if !self.response.is_empty() {
                    self.transmits
                        .push_back(TransmitKind::ResponseRetransmission);
                }
                Disposition::Absorbed
            }
            (_, false) => Disposition::Absorbed,
        }
    }

    /// The TU answers with `response` (whole bytes; kept for retransmission) and it is queued.
    pub fn send_response(&mut self, now: Instant, response: &[u8]) -> Result<(), TxnError> {
        use InviteServerState as I;
        use NonInviteServerState as N;
        let code = status_of(response).ok_or(TxnError::NotAResponse)?;
        match self.state {
            ServerState::Invite(I::Proceeding { .. }) => {
                self.store(response, code);
                if code < 200 {
                    self.state = ServerState::Invite(I::Proceeding { trying: None });
                } else if code < 300 {
                    // RFC 3261 17.2.1: the 2xx ends the transaction; the UAS core retransmits
                    // it and a proxy forwards the ACK.
                    self.terminate();
                } else {
                    let g = (!self.reliable).then(|| Retransmit {
                        at: now + self.cfg.retr_timer1,
                        interval: self.cfg.retr_timer1,
                    });
                    let h = now + self.cfg.t1_x64();
                    self.state = ServerState::Invite(I::Completed { g, h, code });
                }
                Ok(())
            }
            ServerState::NonInvite(N::Trying | N::Proceeding) => {
                self.store(response, code);
                if code < 200 {
                    self.state = ServerState::NonInvite(N::Proceeding);
                } else {
                    let j = if self.reliable {
                        Duration::ZERO
                    } else {
                        self.cfg.t1_x64()
                    };
                    self.state = ServerState::NonInvite(N::Completed { j: now + j });
                    if j.is_zero() {
                        self.terminate();
                    }
                }
                Ok(())
            }
            ServerState::Invite(I::Completed { .. } | I::Confirmed { .. })
            | ServerState::NonInvite(N::Completed { .. }) => Err(TxnError::AlreadyFinal),
            ServerState::Invite(I::Terminated) | ServerState::NonInvite(N::Terminated) => {
                Err(TxnError::Terminated)
            }
        }
    }

    /// Drives the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        use InviteServerState as I;
        use NonInviteServerState as N;
        match self.state {
            ServerState::Invite(I::Proceeding { trying: Some(t) }) if t <= now => {
                self.state = ServerState::Invite(I::Proceeding { trying: None });
                let Ok(req) = ser_parser::parse(&self.request) else {
                    return;
                };
                let spec = ReplySpec {
                    code: 100,
                    reason: b"Trying",
                    to_tag: None,
                    received: None,
                    rport: None,
                    extra_headers: b"",
                };
                self.response.clear();
                ser_parser::write_reply(&req, &spec, &mut self.response);
                self.last_code = Some(100);
                self.transmits.push_back(TransmitKind::Trying);
            }
            ServerState::Invite(I::Completed { h, .. }) if h <= now => {
                self.events.push_back(TxnEvent::Timeout(TimerName::H));
                self.terminate();
            }
            ServerState::Invite(I::Completed {
                g: Some(g),
                h,
                code,
            }) if g.at <= now => {
                self.transmits
                    .push_back(TransmitKind::ResponseRetransmission);
                let interval = self.cfg.next_interval(g.interval, true);
                let g = Some(Retransmit {
                    at: now + interval,
                    interval,
                });
                self.state = ServerState::Invite(I::Completed { g, h, code });
            }
            ServerState::Invite(I::Confirmed { i }) if i <= now => self.terminate(),
            ServerState::NonInvite(N::Completed { j }) if j <= now => self.terminate(),
            _ => {}
        }
    }

    /// Sending a response failed (17.2.4: inform the TU, go to Terminated).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !self.is_terminated() {
            self.events.push_back(TxnEvent::TransportError);
            self.terminate();
        }
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        use InviteServerState as I;
        use NonInviteServerState as N;
        match self.state {
            ServerState::Invite(I::Proceeding { trying }) => trying,
            ServerState::Invite(I::Completed { g, h, .. }) => Some(g.map_or(h, |g| g.at.min(h))),
            ServerState::Invite(I::Confirmed { i }) => Some(i),
            ServerState::NonInvite(N::Completed { j }) => Some(j),
            ServerState::Invite(I::Terminated)
            | ServerState::NonInvite(N::Trying | N::Proceeding | N::Terminated) => None,
        }
    }

    /// The next datagram to send (always the last response; the transaction keeps it).
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        let kind = self.transmits.pop_front()?;
        Some(Transmit {
            kind,
            bytes: &self.response,
        })
    }

    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    fn store(&mut self, response: &[u8], code: u16) {
        self.response.clear();
        self.response.extend_from_slice(response);
        self.last_code = Some(code);
        // A response replaces anything not yet sent: only the newest one matters.
        self.transmits.clear();
        self.transmits.push_back(TransmitKind::Response);
    }

    /// RFC 2543 (17.2.3): the ACK's To tag must be the tag of the response it acknowledges.
    fn ack_tag_matches(&self, ack: &Message<'_>) -> bool {
        let Ok(resp) = ser_parser::parse(&self.response) else {
            return false;
        };
        match (resp.to(), ack.to()) {
            (Ok(r), Ok(a)) => r.tag == a.tag,
            _ => false,
        }
    }

    fn terminate(&mut self) {
        self.state = match self.state {
            ServerState::Invite(_) => ServerState::Invite(InviteServerState::Terminated),
            ServerState::NonInvite(_) => ServerState::NonInvite(NonInviteServerState::Terminated),
        };
        self.events.push_back(TxnEvent::Terminated);
    }
}
