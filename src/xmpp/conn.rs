//! The component connection: one thread (`ser-xmpp`) that connects to the XMPP server,
//! opens the `jabber:component:accept` stream, authenticates with the XEP-0114 handshake,
//! then writes the queue; a second, scoped thread reads the server's stanzas for as long as
//! the connection lives. When either side fails (connection lost, bad input from the
//! server, our write failing) the connection is closed (with a stream error when the input
//! was at fault) and made again after a back-off that doubles from 0.5 s up to
//! `xmpp_reconnect_max`. The queue survives: a message leaves it only once written.
//!
//! Messages from XMPP are turned into SIP requests on the reading thread and handed to the
//! [`SipSide`]; their final replies are polled here (every 50 ms while any is pending) and a
//! failure becomes an error stanza back to the XMPP sender.

use std::io::Write;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::addr::parse_jid;
use super::stream::{self, Item, Limits, Stanza, StanzaReader, StreamError};
use super::{
    sip_error_condition, Config, Gateway, PendingSip, Queued, QueuedXml, SipRequest, SipSide,
    TicketState,
};

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whitespace keepalive after this long without a write (RFC 6120 4.6.1).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// How often pending SIP requests are looked at.
const POLL: Duration = Duration::from_millis(50);
/// The largest message body taken from XMPP into a SIP MESSAGE.
pub const MAX_SIP_BODY: usize = 32 * 1024;
/// Messages from XMPP whose SIP request is still pending, at most; more are refused
/// (`resource-constraint`) until some end.
const MAX_PENDING: usize = 4096;

/// A message from XMPP whose SIP request is pending, and how to answer its sender.
struct Pending {
    sip: Box<dyn PendingSip>,
    /// The XMPP message's to (our JID), from (its sender), id and body.
    ours: String,
    theirs: String,
    id: String,
    body: String,
}

type PendingList = Mutex<Vec<Pending>>;

/// The thread's body: connections one after another until the gateway stops.
pub(super) fn run(gw: &Gateway, sip: &dyn SipSide) {
    crate::log::set_thread_name("xmpp");
    let Some(cfg) = gw.config().cloned() else {
        return;
    };
    let pending: PendingList = Mutex::new(Vec::new());
    let mut delay = cfg.reconnect_min;
    let mut connected_before = false;
    let mut msg_id: u64 = 0;
    loop {
        if gw.lock().stop {
            return;
        }
        let s = Session {
            gw,
            cfg: &cfg,
            sip,
            pending: &pending,
        };
        let r = s.run(&mut connected_before, &mut delay, &mut msg_id);
        let was_up = gw.is_connected();
        gw.set_connected(false);
        hold_tickets(gw);
        gw.release_sent();
        match r {
            Ok(()) => {
                crate::notice!("xmpp: stopped");
                return;
            }
            Err(e) => {
                if was_up {
                    crate::warn!("xmpp: connection to {}:{} lost: {e}", cfg.host, cfg.port);
                } else {
                    crate::warn!(
                        "xmpp: cannot connect to {}:{} as {}: {e} (again in {} ms)",
                        cfg.host,
                        cfg.port,
                        cfg.addr.xmpp_domain,
                        delay.as_millis()
                    );
                }
                let mut st = gw.lock();
                st.last_error = Some(e);
                st.connected_since = None;
            }
        }
        // The back-off, still answering pending SIP results.
        let until = Instant::now() + delay;
        loop {
            poll_pending(gw, &pending);
            let left = until.saturating_duration_since(Instant::now());
            let st = gw.lock();
            if st.stop {
                return;
            }
            if left.is_zero() {
                break;
            }
            let _ = gw.wake.wait_timeout(st, left.min(POLL * 4));
        }
        delay = (delay * 2).min(cfg.reconnect_max);
    }
}

/// The connection went down: senders still waiting are told their message stays queued.
fn hold_tickets(gw: &Gateway) {
    let held: Vec<_> = {
        let mut st = gw.lock();
        st.queue
            .iter_mut()
            .filter(|q| {
                q.ticket
                    .as_ref()
                    .is_some_and(|t| t.state() != TicketState::Cancelled)
            })
            .filter_map(|q| q.ticket.take())
            .collect()
    };
    for t in held {
        t.set(TicketState::Held);
    }
}

/// Looks at the pending SIP requests; a failed one answers its XMPP sender with an error.
fn poll_pending(gw: &Gateway, pending: &PendingList) {
    let mut done = Vec::new();
    {
        let mut list = pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = 0;
        while i < list.len() {
            match list[i].sip.poll() {
                Some(r) => done.push((list.swap_remove(i), r)),
                None => i += 1,
            }
        }
    }
    for (p, (code, reason)) in done {
        if code < 300 {
            gw.counters.delivered.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        bounce(
            gw,
            &p.ours,
            &p.theirs,
            &p.id,
            &p.body,
            (code, &reason),
            "delivered",
        );
    }
}

/// A message from XMPP that SIP refused (`code`, `reason`): counted, logged ("not
/// `outcome`"), and an error stanza to its sender, from `ours`, the address it was sent to.
fn bounce(
    gw: &Gateway,
    ours: &str,
    theirs: &str,
    id: &str,
    body: &str,
    (code, reason): (u16, &str),
    outcome: &str,
) {
    gw.counters.sip_errors.fetch_add(1, Ordering::Relaxed);
    crate::info!("xmpp: message {id} from {theirs} not {outcome}: SIP {code} {reason}");
    let (cond, kind) = sip_error_condition(code);
    gw.push_raw(stream::write_message_error(
        ours,
        theirs,
        id,
        Some(body),
        cond,
        kind,
        &format!("SIP {code} {reason}"),
    ));
}

struct Session<'a> {
    gw: &'a Gateway,
    cfg: &'a Config,
    sip: &'a dyn SipSide,
    pending: &'a PendingList,
}

/// What the writer does next.
enum Next {
    Write(Queued),
    Keepalive,
    Stop,
    Dead,
    /// Woken (or a wait ran out): look again.
    Tick,
}

impl Session<'_> {
    /// One connection: Ok when stopped, Err(why) when it failed or was lost.
    fn run(
        &self,
        connected_before: &mut bool,
        delay: &mut Duration,
        msg_id: &mut u64,
    ) -> Result<(), String> {
        let cfg = self.cfg;
        let limits = Limits {
            max_stanza: cfg.max_stanza,
            max_depth: cfg.max_depth,
        };
        let fail = |e: String| {
            self.gw
                .counters
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            e
        };
        let addr = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| fail(format!("cannot resolve {}: {e}", cfg.host)))?
            .next()
            .ok_or_else(|| fail(format!("no address for {}", cfg.host)))?;
        let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| fail(format!("connect: {e}")))?;
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(CONNECT_TIMEOUT));
        let _ = sock.set_write_timeout(Some(CONNECT_TIMEOUT));
        let reader_sock = sock.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut reader = StanzaReader::new(reader_sock, limits);
        // XEP-0114: our header, the server's (with the stream id), the handshake, its answer.
        (&sock)
            .write_all(stream::write_header(&cfg.addr.xmpp_domain).as_bytes())
            .map_err(|e| fail(format!("write: {e}")))?;
        let id = match reader.next_item() {
            Ok(Item::Header { id, .. }) if !id.is_empty() => id,
            Ok(_) => return Err(fail(String::from("the server's stream header has no id"))),
            Err(e) => return Err(fail(format!("stream header: {e}"))),
        };
        (&sock)
            .write_all(stream::write_handshake(&id, &cfg.secret).as_bytes())
            .map_err(|e| fail(format!("write: {e}")))?;
        loop {
            match reader.next_item() {
                Ok(Item::Stanza(s)) if s.name == "handshake" => break,
                Ok(Item::Stanza(s)) if s.stream_level && s.name == "error" => {
                    return Err(fail(format!(
                        "handshake refused: {}",
                        s.error.unwrap_or_default()
                    )))
                }
                Ok(Item::Stanza(_)) => continue,
                Ok(_) => return Err(fail(String::from("stream closed during the handshake"))),
                Err(e) => return Err(fail(format!("handshake: {e}"))),
            }
        }
        let _ = sock.set_read_timeout(None);
        *delay = cfg.reconnect_min;
        if *connected_before {
            self.gw.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        *connected_before = true;
        self.gw.lock().connected_since = Some(std::time::SystemTime::now());
        self.gw.set_connected(true);
        crate::notice!(
            "xmpp: connected to {}:{} as component {}",
            cfg.host,
            cfg.port,
            cfg.addr.xmpp_domain
        );
        let reader_done = AtomicBool::new(false);
        let ended: Mutex<Option<StreamError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name(String::from("ser-xmpp-read"))
                .spawn_scoped(scope, || {
                    crate::log::set_thread_name("xmpp-read");
                    let e = self.read_loop(&mut reader);
                    *ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    // Under the gateway's lock, so the writer cannot miss the wake-up.
                    let _st = self.gw.lock();
                    reader_done.store(true, Ordering::Release);
                    self.gw.wake.notify_all();
                });
            if let Err(e) = spawned {
                let _ = sock.shutdown(Shutdown::Both);
                return Err(format!("reader thread: {e}"));
            }
            let r = self.write_loop(&sock, &reader_done, &ended, msg_id);
            // Ends the reader's blocking read.
            let _ = sock.shutdown(Shutdown::Both);
            r
        })
    }

    /// Reads stanzas until the stream ends; returns why it ended.
    fn read_loop(&self, reader: &mut StanzaReader<TcpStream>) -> StreamError {
        loop {
            match reader.next_item() {
                Ok(Item::Stanza(s)) => {
                    if let Err(e) = self.inbound(s) {
                        return e;
                    }
                }
                Ok(Item::End) => return StreamError::Closed,
                Ok(Item::Header { .. }) => {}
                Err(e) => return e,
            }
        }
    }

    /// Writes the queue until stopped or the connection fails.
    fn write_loop(
        &self,
        sock: &TcpStream,
        reader_done: &AtomicBool,
        ended: &Mutex<Option<StreamError>>,
        msg_id: &mut u64,
    ) -> Result<(), String> {
        let gw = self.gw;
        let mut last_write = Instant::now();
        loop {
            // Outside the queue's lock: SIP results in, senders whose time is up told.
            let busy = !self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if busy {
                poll_pending(gw, self.pending);
            }
            let now = Instant::now();
            let deadline = gw.expire_tickets(now);
            let next = {
                let mut st = gw.lock();
                // Read once: a message taken must be written, not dropped by a flag that
                // changed in between.
                let dead = reader_done.load(Ordering::Acquire);
                let q = if st.stop || dead {
                    None
                } else {
                    take_next(&mut st.queue)
                };
                if st.stop {
                    Next::Stop
                } else if dead {
                    Next::Dead
                } else if let Some(q) = q {
                    Next::Write(q)
                } else {
                    let idle = last_write.elapsed();
                    if idle >= KEEPALIVE {
                        Next::Keepalive
                    } else {
                        let mut wait = KEEPALIVE - idle;
                        if busy {
                            wait = wait.min(POLL);
                        }
                        if let Some(d) = deadline {
                            wait = wait.min(d.saturating_duration_since(now));
                        }
                        let _ = gw.wake.wait_timeout(st, wait);
                        Next::Tick
                    }
                }
            };
            match next {
                Next::Tick => {}
                Next::Stop => {
                    let _ = (&*sock).write_all(b"</stream:stream>");
                    return Ok(());
                }
                Next::Dead => {
                    let e = ended
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                        .unwrap_or(StreamError::Closed);
                    if let Some(cond) = e.condition() {
                        gw.counters.stream_errors.fetch_add(1, Ordering::Relaxed);
                        crate::warn!("xmpp: bad input from the server, closing the stream: {e}");
                        let _ = (&*sock).write_all(stream::write_stream_error(cond).as_bytes());
                    }
                    return Err(e.to_string());
                }
                Next::Keepalive => {
                    (&*sock)
                        .write_all(b" ")
                        .map_err(|e| format!("write: {e}"))?;
                    last_write = Instant::now();
                }
                Next::Write(q) => {
                    *msg_id += 1;
                    let id = format!("ser-{msg_id}");
                    let xml = match &q.xml {
                        QueuedXml::Message(m) => {
                            stream::write_message(&m.from, &m.to, &id, &m.body)
                        }
                        QueuedXml::Raw(x) => x.clone(),
                    };
                    if let Some(t) = &q.ticket {
                        gw.writing(id.clone(), t);
                    }
                    if let Err(e) = (&*sock).write_all(xml.as_bytes()) {
                        // Back at the front, for the next connection.
                        if let Some(t) = &q.ticket {
                            t.set(TicketState::Held);
                        }
                        gw.lock().queue.push_front(Queued {
                            xml: q.xml,
                            ticket: None,
                        });
                        return Err(format!("write: {e}"));
                    }
                    last_write = Instant::now();
                    if let QueuedXml::Message(m) = &q.xml {
                        gw.counters.sent.fetch_add(1, Ordering::Relaxed);
                        crate::debug!("xmpp: message from {} to {} written", m.from, m.to);
                    }
                    if let Some(t) = &q.ticket {
                        gw.written(t);
                    }
                }
            }
        }
    }

    /// One stanza from the server. Err ends the stream (the server's own stream error).
    fn inbound(&self, s: Stanza) -> Result<(), StreamError> {
        match (s.stream_level, s.name.as_str()) {
            (true, "error") => {
                let mut why = s.error.unwrap_or_default();
                if let Some(t) = s.error_text {
                    why = format!("{why} ({t})");
                }
                Err(StreamError::Remote(why))
            }
            (false, "message") => {
                self.message(s);
                Ok(())
            }
            (false, "iq") if s.kind == "get" || s.kind == "set" => {
                // Nothing is served over iq: RFC 6120 8.2.3 wants an answer all the same.
                self.gw
                    .push_raw(stream::write_iq_error(&s.to, &s.from, &s.id));
                Ok(())
            }
            // Presence, iq results, anything else: not handled (see the module doc).
            _ => Ok(()),
        }
    }

    /// A message to the component: into SIP, or an error back.
    fn message(&self, s: Stanza) {
        let gw = self.gw;
        let cfg = self.cfg;
        if s.kind == "error" {
            gw.counters.xmpp_errors.fetch_add(1, Ordering::Relaxed);
            let cond = s.error.as_deref().unwrap_or("undefined-condition");
            // Its sender still waiting (xmpp_error_wait) gets the SIP status it maps to.
            let answered = gw.refused(&s.id, cond);
            crate::warn!(
                "xmpp: error for message {} to {}{}: {}{}",
                s.id,
                s.from,
                if answered {
                    " (told its SIP sender)"
                } else {
                    ""
                },
                cond,
                s.error_text
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            );
            return;
        }
        // Chat states and receipts without a body carry nothing for SIP.
        let Some(body) = s.body else {
            return;
        };
        if !matches!(s.kind.as_str(), "" | "chat" | "normal") {
            return;
        }
        let Some(sender) = parse_jid(&s.from) else {
            gw.counters.refused.fetch_add(1, Ordering::Relaxed);
            crate::info!(
                "xmpp: message from a malformed address '{}' dropped",
                s.from
            );
            return;
        };
        let refuse = |cond: &str, kind: &str, text: &str| {
            gw.counters.refused.fetch_add(1, Ordering::Relaxed);
            crate::info!(
                "xmpp: message {} from {} to {} refused: {text}",
                s.id,
                s.from,
                s.to
            );
            gw.push_raw(stream::write_message_error(
                &s.to,
                &s.from,
                &s.id,
                Some(&body),
                cond,
                kind,
                text,
            ));
        };
        let Some(to) = parse_jid(&s.to) else {
            return refuse("jid-malformed", "modify", "malformed recipient");
        };
        if !to.domain.eq_ignore_ascii_case(&cfg.addr.xmpp_domain) {
            return refuse("item-not-found", "cancel", "not this gateway's domain");
        }
        let Some(node) = to.node else {
            return refuse("service-unavailable", "cancel", "no user named");
        };
        let Some(ruri) = cfg.addr.jid_to_sip(node) else {
            return refuse("jid-malformed", "modify", "not a SIP address");
        };
        let Some(from) = cfg.addr.xmpp_sender_sip(&sender) else {
            return refuse("jid-malformed", "modify", "the sender has no SIP address");
        };
        if body.len() > MAX_SIP_BODY {
            return refuse("policy-violation", "modify", "message too large for SIP");
        }
        if self.pending.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_PENDING {
            return refuse(
                "resource-constraint",
                "wait",
                "too many messages on their way into SIP",
            );
        }
        let req = SipRequest { ruri, from, body };
        match self.sip.send(&req) {
            Ok(p) => {
                gw.counters.received.fetch_add(1, Ordering::Relaxed);
                crate::debug!("xmpp: message from {} to {} into SIP", s.from, req.ruri);
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Pending {
                        sip: p,
                        ours: s.to,
                        theirs: s.from,
                        id: s.id,
                        body: req.body,
                    });
                // The writer polls while anything is pending.
                let _st = gw.lock();
                gw.wake.notify_all();
            }
            Err((code, reason)) => {
                bounce(
                    gw,
                    &s.to,
                    &s.from,
                    &s.id,
                    &req.body,
                    (code, &reason),
                    "sent",
                );
            }
        }
    }
}

/// The next stanza to write: messages whose sender stopped waiting are dropped.
fn take_next(queue: &mut std::collections::VecDeque<Queued>) -> Option<Queued> {
    while let Some(q) = queue.pop_front() {
        let keep = match &q.ticket {
            Some(t) => t.take(),
            None => true,
        };
        if keep {
            return Some(q);
        }
    }
    None
}
