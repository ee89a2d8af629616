//! Client transactions (RFC 3261 17.1): the INVITE machine of figure 5 and the non-INVITE
//! machine of figure 6.
//!
//! A [`ClientTransaction`] is started by the TU with the bytes of the request it sends
//! ([`ClientTransaction::start`]); it queues the first send, retransmits on an unreliable
//! transport (timers A, E), matches nothing itself (the caller looks it up by [`Key::client`])
//! and tells the TU through the return value of [`ClientTransaction::handle_response`] which
//! responses to pass up. For a non-2xx final to an INVITE it builds and sends the ACK itself
//! (17.1.1.3) and re-sends it for every retransmitted final while timer D runs.
//!
//! It does not choose destinations, send CANCELs or synthesize 408s: those are the TU's, on
//! [`TxnEvent::Timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ser_parser::{HeaderName, Message, Method};

use super::{Disposition, Key, TimerConfig, TimerName, Transmit, TransmitKind, TxnError, TxnEvent};

/// A pending retransmission: when, and the interval that led to it (doubled next time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    pub at: Instant,
    pub interval: Duration,
}

/// INVITE client transaction, RFC 3261 figure 5.
///
/// ```text
///            |INVITE from TU, Timer A fires: INVITE sent, Timer B fires: Timeout
///  Calling --+-- 1xx --> Proceeding --+-- 300-699: ACK sent --> Completed --Timer D--> Terminated
///     |                     |
///     +------ 2xx ----------+---------------> Terminated (2xx to TU)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    /// INVITE sent; timer A (retransmit, `None` on reliable transports) and B (give up).
    Calling {
        a: Option<Retransmit>,
        b: Instant,
    },
    /// A provisional arrived. `fr_inv` is SER's fr_inv_timer; once it has fired
    /// (`timed_out`) it guards the wait for the final the TU's CANCEL provokes.
    Proceeding {
        fr_inv: Instant,
        timed_out: bool,
    },
    /// A 300-699 arrived and was ACKed; timer D absorbs its retransmissions.
    Completed {
        d: Instant,
        code: u16,
    },
    /// A lingering transaction gave up (timer B, or fr_inv_timer and the wait for the final
    /// the CANCEL provokes) and stays until `until` (the TU's wait timer): a late 300-699 is
    /// ACKed and absorbed, a late 2xx passed up, anything else absorbed.
    TimedOut {
        until: Instant,
    },
    Terminated,
}

/// Non-INVITE client transaction, RFC 3261 figure 6.
///
/// ```text
///  Trying --1xx--> Proceeding --200-699--> Completed --Timer K--> Terminated
///    |  Timer E: retransmit (min(2^n*T1, T2); T2 in Proceeding), Timer F: Timeout
///    +--200-699--> Completed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    Trying {
        e: Option<Retransmit>,
        f: Instant,
    },
    Proceeding {
        e: Option<Retransmit>,
        f: Instant,
    },
    /// A final arrived; timer K absorbs its retransmissions.
    Completed {
        k: Instant,
        code: u16,
    },
    /// A lingering transaction gave up (timer F) and absorbs late responses until `until`.
    TimedOut {
        until: Instant,
    },
    Terminated,
}

/// The state of either machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Invite(InviteClientState),
    NonInvite(NonInviteClientState),
}

/// One client transaction (see the module documentation).
#[derive(Debug)]
pub struct ClientTransaction {
    key: Key,
    cfg: TimerConfig,
    state: ClientState,
    /// The request as sent, for retransmissions and for building the ACK.
    request: Vec<u8>,
    /// The ACK for a non-2xx final, once built.
    ack: Vec<u8>,
    transmits: VecDeque<TransmitKind>,
    events: VecDeque<TxnEvent>,
    final_code: Option<u16>,
    /// The last status passed up, for the TU and statistics.
    last_code: Option<u16>,
    /// Stay `wt_timer` after giving up instead of terminating (see [`Self::lingering`]).
    linger: bool,
    /// Sent over TCP/TLS/SCTP: no A/E, and D and K are zero.
    reliable: bool,
}

impl ClientTransaction {
    /// Starts a client transaction for `request` (the bytes to send, kept for retransmission)
    /// and queues its first transmission. `reliable` (TCP, TLS, SCTP) turns off timers A and E
    /// and makes D and K zero.
    pub fn start(
        now: Instant,
        cfg: &TimerConfig,
        request: &[u8],
        reliable: bool,
    ) -> Result<Self, TxnError> {
        let msg = ser_parser::parse(request)?;
        let method = msg.method().ok_or(TxnError::NotARequest)?;
        let key = Key::client(&msg)?;
        Self::start_known(now, cfg, msg.buf().to_vec(), key, method, reliable)
    }

    /// [`Self::start`] for a request the TU wrote itself and need not parse again: its key
    /// ([`Key::client_from`] of the branch it put in its Via) and method are known. The
    /// caller vouches that `request` is a well-formed request with that branch and method.
    pub fn start_known(
        now: Instant,
        cfg: &TimerConfig,
        request: Vec<u8>,
        key: Key,
        method: Method<'_>,
        reliable: bool,
    ) -> Result<Self, TxnError> {
        let a = (!reliable).then(|| Retransmit {
            at: now + cfg.retr_timer1,
            interval: cfg.retr_timer1,
        });
        let state = match method {
            Method::Ack => return Err(TxnError::AckStartsNoTransaction),
            Method::Invite => ClientState::Invite(InviteClientState::Calling {
                a,
                b: now + cfg.fr_timer,
            }),
            _ => ClientState::NonInvite(NonInviteClientState::Trying {
                e: a,
                f: now + cfg.fr_timer,
            }),
        };
        let mut transmits = VecDeque::with_capacity(2);
        transmits.push_back(TransmitKind::Request);
        Ok(Self {
            key,
            cfg: *cfg,
            state,
            request,
            ack: Vec::new(),
            transmits,
            events: VecDeque::new(),
            final_code: None,
            last_code: None,
            linger: false,
            reliable,
        })
    }

    /// After a timeout (B, F, or fr_inv_timer and the wait after it) the transaction stays
    /// for `wt_timer` in `TimedOut` rather than terminating, as a stateful proxy keeps a
    /// branch until its wait timer (SER, Kamailio): a late final then meets its transaction
    /// (an INVITE's negative one is ACKed and absorbed, a 2xx passed up) instead of being
    /// taken for a stray reply and forwarded statelessly as a second final. RFC 3261 itself
    /// terminates at once (the default).
    #[must_use]
    pub fn lingering(mut self) -> Self {
        self.linger = true;
        self
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_invite(&self) -> bool {
        matches!(self.state, ClientState::Invite(_))
    }

    pub fn is_terminated(&self) -> bool {
        matches!(
            self.state,
            ClientState::Invite(InviteClientState::Terminated)
                | ClientState::NonInvite(NonInviteClientState::Terminated)
        )
    }

    /// Completed: a final arrived and the transaction only absorbs retransmissions now.
    pub fn is_completed(&self) -> bool {
        matches!(
            self.state,
            ClientState::Invite(InviteClientState::Completed { .. })
                | ClientState::NonInvite(NonInviteClientState::Completed { .. })
        )
    }

    /// The final status received, if any.
    pub fn final_code(&self) -> Option<u16> {
        self.final_code
    }

    /// The last status passed up to the TU.
    pub fn last_code(&self) -> Option<u16> {
        self.last_code
    }

    /// The request as sent.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// A response matched to this transaction (by [`Key::client`]) arrived.
    pub fn handle_response(&mut self, now: Instant, msg: &Message<'_>) -> Disposition {
        let Some(code) = msg.status() else {
            return Disposition::NotMatched;
        };
        match self.state {
            ClientState::Invite(s) => self.invite_response(now, s, code, msg),
            ClientState::NonInvite(s) => self.non_invite_response(now, s, code),
        }
    }

    fn invite_response(
        &mut self,
        now: Instant,
        s: InviteClientState,
        code: u16,
        msg: &Message<'_>,
    ) -> Disposition {
        use InviteClientState as S;
        match s {
            S::Calling { .. } | S::Proceeding { .. } => {
                self.last_code = Some(code);
                if code < 200 {
                    // Each provisional restarts SER's fr_inv_timer, unless it already fired
                    // and the TU is cancelling.
                    if !matches!(
                        s,
                        S::Proceeding {
                            timed_out: true,
                            ..
                        }
                    ) {
                        self.state = ClientState::Invite(S::Proceeding {
                            fr_inv: now + self.cfg.fr_inv_timer,
                            timed_out: false,
                        });
                    }
                } else if code < 300 {
                    // RFC 3261 17.1.1.2: the 2xx goes up and the transaction ends; the TU
                    // (or the UAC core) ACKs it end to end.
                    self.final_code = Some(code);
                    self.terminate();
                } else {
                    self.final_code = Some(code);
                    self.build_ack(msg);
                    self.transmits.push_back(TransmitKind::Ack);
                    let d = if self.reliable() {
                        Duration::ZERO
                    } else {
                        self.cfg.wt_timer
                    };
                    self.state = ClientState::Invite(S::Completed { d: now + d, code });
                    if d.is_zero() {
                        self.terminate();
                    }
                }
                Disposition::PassUp
            }
            S::Completed { .. } => {
                if code >= 300 {
                    // A retransmitted final: our ACK was lost (17.1.1.2).
                    self.transmits.push_back(TransmitKind::Ack);
                }
                Disposition::Absorbed
            }
            S::TimedOut { .. } if (200..300).contains(&code) => {
                // A late 2xx still goes up (RFC 3261 16.7 step 5): the caller's dialog needs it.
                self.final_code.get_or_insert(code);
                self.terminate();
                Disposition::PassUp
            }
            S::TimedOut { .. } => {
                if code >= 300 {
                    // A late negative final: ACKed (else its UAS retransmits it for 32 s)
                    // and absorbed, its retransmissions too.
                    self.build_ack(msg);
                    self.transmits.push_back(TransmitKind::Ack);
                }
                Disposition::Absorbed
            }
            // A proxy forwards 2xx retransmissions statelessly (RFC 3261 16.7 step 10).
            S::Terminated if (200..300).contains(&code) => Disposition::PassUp,
            S::Terminated => Disposition::Absorbed,
        }
    }

    fn non_invite_response(
        &mut self,
        now: Instant,
        s: NonInviteClientState,
        code: u16,
    ) -> Disposition {
        use NonInviteClientState as S;
        match s {
            S::Trying { e, f } | S::Proceeding { e, f } => {
                self.last_code = Some(code);
                if code < 200 {
                    self.state = ClientState::NonInvite(S::Proceeding { e, f });
                } else {
                    self.final_code = Some(code);
                    let k = if self.reliable() {
                        Duration::ZERO
                    } else {
                        self.cfg.t4
                    };
                    self.state = ClientState::NonInvite(S::Completed { k: now + k, code });
                    if k.is_zero() {
                        self.terminate();
                    }
                }
                Disposition::PassUp
            }
            S::Completed { .. } | S::TimedOut { .. } | S::Terminated => Disposition::Absorbed,
        }
    }

    /// Drives the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ClientState::Invite(s) => self.invite_timeout(now, s),
            ClientState::NonInvite(s) => self.non_invite_timeout(now, s),
        }
    }

    fn invite_timeout(&mut self, now: Instant, s: InviteClientState) {
        use InviteClientState as S;
        match s {
            S::Calling { b, .. } if b <= now => {
                self.events.push_back(TxnEvent::Timeout(TimerName::B));
                self.give_up(now);
            }
            S::Calling { a: Some(a), b } if a.at <= now => {
                self.transmits
                    .push_back(TransmitKind::RequestRetransmission);
                let interval = self.cfg.next_interval(a.interval, false);
                let a = Some(Retransmit {
                    at: now + interval,
                    interval,
                });
                self.state = ClientState::Invite(S::Calling { a, b });
            }
            S::Proceeding { fr_inv, timed_out } if fr_inv <= now => {
                if timed_out {
                    // The final the TU's CANCEL should have provoked never came.
                    self.give_up(now);
                } else {
                    self.events.push_back(TxnEvent::Timeout(TimerName::FrInv));
                    self.state = ClientState::Invite(S::Proceeding {
                        fr_inv: now + self.cfg.fr_timer,
                        timed_out: true,
                    });
                }
            }
            S::Completed { d, .. } if d <= now => self.terminate(),
            S::TimedOut { until } if until <= now => self.terminate(),
            _ => {}
        }
    }

    fn non_invite_timeout(&mut self, now: Instant, s: NonInviteClientState) {
        use NonInviteClientState as S;
        match s {
            S::Trying { f, .. } | S::Proceeding { f, .. } if f <= now => {
                self.events.push_back(TxnEvent::Timeout(TimerName::F));
                self.give_up(now);
            }
            S::Trying { e: Some(e), f } if e.at <= now => {
                self.transmits
                    .push_back(TransmitKind::RequestRetransmission);
                let interval = self.cfg.next_interval(e.interval, true);
                let e = Some(Retransmit {
                    at: now + interval,
                    interval,
                });
                self.state = ClientState::NonInvite(S::Trying { e, f });
            }
            S::Proceeding { e: Some(e), f } if e.at <= now => {
                // 17.1.2.2: in Proceeding E is reset to T2.
                self.transmits
                    .push_back(TransmitKind::RequestRetransmission);
                let interval = self.cfg.retr_timer2;
                let e = Some(Retransmit {
                    at: now + interval,
                    interval,
                });
                self.state = ClientState::NonInvite(S::Proceeding { e, f });
            }
            S::Completed { k, .. } if k <= now => self.terminate(),
            S::TimedOut { until } if until <= now => self.terminate(),
            _ => {}
        }
    }

    /// The TU could not send (17.1.1.2, 17.1.2.2: inform the TU, go to Terminated).
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if !self.is_terminated() {
            self.events.push_back(TxnEvent::TransportError);
            self.terminate();
        }
    }

    /// The earliest time `handle_timeout` has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        use InviteClientState as I;
        use NonInviteClientState as N;
        match self.state {
            ClientState::Invite(I::Calling { a, b }) => Some(a.map_or(b, |a| a.at.min(b))),
            ClientState::Invite(I::Proceeding { fr_inv, .. }) => Some(fr_inv),
            ClientState::Invite(I::Completed { d, .. }) => Some(d),
            ClientState::NonInvite(N::Trying { e, f } | N::Proceeding { e, f }) => {
                Some(e.map_or(f, |e| e.at.min(f)))
            }
            ClientState::NonInvite(N::Completed { k, .. }) => Some(k),
            ClientState::Invite(I::TimedOut { until })
            | ClientState::NonInvite(N::TimedOut { until }) => Some(until),
            ClientState::Invite(I::Terminated) | ClientState::NonInvite(N::Terminated) => None,
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        let kind = self.transmits.pop_front()?;
        let bytes = match kind {
            TransmitKind::Ack => &self.ack,
            _ => &self.request,
        };
        Some(Transmit { kind, bytes })
    }

    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    fn reliable(&self) -> bool {
        // Kept as a flag: Proceeding has no timer A/E left to tell it by, and a reliable
        // INVITE that got a provisional must still get D = 0 (17.1.1.2).
        self.reliable
    }

    /// A timeout: Terminated (RFC 3261), or `TimedOut` for `wt_timer` when lingering.
    fn give_up(&mut self, now: Instant) {
        if !self.linger || self.cfg.wt_timer.is_zero() {
            self.terminate();
            return;
        }
        let until = now + self.cfg.wt_timer;
        self.state = match self.state {
            ClientState::Invite(_) => ClientState::Invite(InviteClientState::TimedOut { until }),
            ClientState::NonInvite(_) => {
                ClientState::NonInvite(NonInviteClientState::TimedOut { until })
            }
        };
    }

    fn terminate(&mut self) {
        self.state = match self.state {
            ClientState::Invite(_) => ClientState::Invite(InviteClientState::Terminated),
            ClientState::NonInvite(_) => ClientState::NonInvite(NonInviteClientState::Terminated),
        };
        self.events.push_back(TxnEvent::Terminated);
    }

    /// The ACK for a non-2xx final (17.1.1.3): Request-URI, Call-ID, From, CSeq number and the
    /// single top Via of the request, the request's Route lines, To from the response.
    fn build_ack(&mut self, resp: &Message<'_>) {
        self.ack.clear();
        // The request parsed when the transaction started; it cannot fail now, but a failure
        // must not panic: the ACK is then left empty and the retransmissions go unanswered.
        let Ok(req) = ser_parser::parse(&self.request) else {
            return;
        };
        let buf = req.buf();
        let (Some(ruri), Ok(via), Ok(cseq), Some(call_id)) =
            (req.request_uri(), req.top_via(), req.cseq(), req.call_id())
        else {
            return;
        };
        let from = req.header(HeaderName::From).map_or(&b""[..], |h| h.value);
        let to = resp.header(HeaderName::To).map_or(&b""[..], |h| h.value);
        let out = &mut self.ack;
        out.extend_from_slice(b"ACK ");
        out.extend_from_slice(ruri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\nVia: ");
        out.extend_from_slice(buf.get(via.range.clone()).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
        for h in req.headers_named(HeaderName::Route) {
            out.extend_from_slice(buf.get(h.line.clone()).unwrap_or_default());
        }
        out.extend_from_slice(b"From: ");
        out.extend_from_slice(from);
        out.extend_from_slice(b"\r\nTo: ");
        out.extend_from_slice(to);
        out.extend_from_slice(b"\r\nCall-ID: ");
        out.extend_from_slice(call_id);
        out.extend_from_slice(b"\r\nCSeq: ");
        out.extend_from_slice(cseq.number.to_string().as_bytes());
        out.extend_from_slice(b" ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    }
}
