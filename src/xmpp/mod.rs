//! The SIP ⇄ XMPP gateway (the seeds' `jabber` module, done as XMPP does it today): ser is an
//! external component of an XMPP server (XEP-0114), e.g. `sip.example.org`, on a thread of
//! its own ([`conn`]), never on a shard.
//!
//! SIP → XMPP: `jab_send_message()` (`modules::jabber`) turns a MESSAGE into an
//! [`Outgoing`] chat message and queues it here ([`Gateway::submit`]); the connection thread
//! writes it to the server. While the server is away the queue holds up to `xmpp_queue`
//! messages (past it the SIP sender gets 503) and they go out, in order, after the
//! reconnect. A message is taken off the queue only once it was written.
//!
//! XMPP → SIP: a `<message>` to the component becomes a SIP MESSAGE that the application
//! layer injects into ser ([`SipSide`]: `mgmt::jabber` sends it with tm's UAC to ser's own
//! address, so the script routes it like any request); a final reply ≥ 300 sends an XMPP
//! error back to the XMPP sender.
//!
//! Files: `addr` (the address form, sans-IO), `ticket` (a SIP sender's wait for its message:
//! written, held for the reconnect, withdrawn at its deadline, or refused by an XMPP error),
//! `stream` (the stream's XML with quick-xml, inside size and depth limits), `conn` (the
//! thread: connect, handshake, read, write, reconnect with back-off). All of it, with the
//! module and its management side, comes with the cargo feature `xmpp` (on by default);
//! without it a script that loads `jabber` is refused at its loadmodule line.
//!
//! Left out: presence (XMPP presence ⇄ SIP PUBLISH/NOTIFY), multi-user chat (SER's
//! `jab_join_jconf`), and XEP-0198 acknowledgements: a stanza written just before the
//! connection broke may be lost with it, as TCP cannot tell.

pub mod addr;
mod conn;
pub mod stream;
mod ticket;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// 64-bit atomics everywhere, armv5te included (no native ones there).
use portable_atomic::AtomicU64;

use crate::config::Params;

pub use addr::AddrMap;
pub use ticket::{Handed, Notify, Ticket, TicketState};

/// The module's parameters: (name, is an integer).
pub const PARAMS: &[(&str, bool)] = &[
    ("xmpp_host", false),
    ("xmpp_port", true),
    ("xmpp_domain", false),
    ("xmpp_secret", false),
    ("xmpp_password", false),
    ("gateway_domain", false),
    ("sip_domain", false),
    ("domain_separator", false),
    ("xmpp_queue", true),
    ("xmpp_send_timeout", true),
    ("xmpp_max_stanza", true),
    ("xmpp_reconnect_max", true),
    ("xmpp_error_wait", true),
    ("outbound_proxy", false),
];

pub const DEFAULT_PORT: u16 = 5347;
pub const DEFAULT_QUEUE: usize = 1000;
pub const DEFAULT_SEND_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_MAX_STANZA: usize = 65536;
pub const DEFAULT_RECONNECT_MAX_S: u64 = 30;

/// The gateway's configuration (from `modparam("jabber", ...)`).
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub secret: String,
    pub addr: AddrMap,
    pub queue: usize,
    pub send_timeout: Duration,
    pub max_stanza: usize,
    pub max_depth: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long a written message waits for an XMPP error before its sender is told it was
    /// handed over (zero: not at all).
    pub error_wait: Duration,
    /// Where injected SIP requests go (None: ser's own first UDP address).
    pub outbound_proxy: Option<String>,
}

/// A parameter's check at load time (`file:line:col` of the modparam on failure).
pub fn check_param(name: &str, value: &ser_script::Value) -> Result<(), String> {
    use ser_script::Value as V;
    match (name, value) {
        ("xmpp_port", V::Int(n)) if !(1..=65535).contains(n) => {
            Err(format!("xmpp_port {n}: a port is 1-65535"))
        }
        ("xmpp_queue", V::Int(n)) if !(1..=1_000_000).contains(n) => {
            Err(format!("xmpp_queue {n}: 1-1000000 messages"))
        }
        ("xmpp_send_timeout", V::Int(n)) if !(1..=600_000).contains(n) => {
            Err(format!("xmpp_send_timeout {n}: 1-600000 ms"))
        }
        ("xmpp_max_stanza", V::Int(n)) if !(1024..=16 * 1024 * 1024).contains(n) => {
            Err(format!("xmpp_max_stanza {n}: 1024 bytes to 16 MiB"))
        }
        ("xmpp_reconnect_max", V::Int(n)) if !(1..=3600).contains(n) => {
            Err(format!("xmpp_reconnect_max {n}: 1-3600 s"))
        }
        ("xmpp_error_wait", V::Int(n)) if !(0..=10_000).contains(n) => {
            Err(format!("xmpp_error_wait {n}: 0-10000 ms"))
        }
        ("domain_separator", V::Str(s)) if s.chars().count() != 1 || s == "@" || s == ":" => Err(
            format!("domain_separator \"{s}\": one character, not @ or : (e.g. * or %)"),
        ),
        ("xmpp_domain" | "gateway_domain" | "sip_domain", V::Str(s)) if !addr::valid_host(s) => {
            Err(format!("{name} \"{s}\": not a domain name"))
        }
        _ => Ok(()),
    }
}

impl Config {
    /// The configuration, or why the script's parameters cannot make one.
    pub fn from_params(p: &Params) -> Result<Config, String> {
        let s = |n: &str| p.str("jabber", n).map(str::to_string);
        let i = |n: &str| p.int("jabber", n);
        let xmpp_domain = s("xmpp_domain")
            .ok_or("jabber: modparam(\"jabber\", \"xmpp_domain\", ...) is required (the component's domain)")?;
        let secret = s("xmpp_secret").or_else(|| s("xmpp_password")).ok_or(
            "jabber: modparam(\"jabber\", \"xmpp_secret\", ...) is required (the component's secret)",
        )?;
        let gateway_domain = s("gateway_domain").unwrap_or_else(|| xmpp_domain.clone());
        let sip_domain = s("sip_domain").unwrap_or_else(|| gateway_domain.clone());
        let delim = s("domain_separator")
            .and_then(|d| d.chars().next())
            .unwrap_or('*');
        let num = |n: &str, d: u64| i(n).and_then(|v| u64::try_from(v).ok()).unwrap_or(d);
        Ok(Config {
            host: s("xmpp_host").unwrap_or_else(|| String::from("127.0.0.1")),
            port: u16::try_from(num("xmpp_port", u64::from(DEFAULT_PORT))).unwrap_or(DEFAULT_PORT),
            secret,
            addr: AddrMap {
                delim,
                xmpp_domain,
                gateway_domain,
                sip_domain,
            },
            queue: usize::try_from(num("xmpp_queue", DEFAULT_QUEUE as u64))
                .unwrap_or(DEFAULT_QUEUE),
            send_timeout: Duration::from_millis(num("xmpp_send_timeout", DEFAULT_SEND_TIMEOUT_MS)),
            max_stanza: usize::try_from(num("xmpp_max_stanza", DEFAULT_MAX_STANZA as u64))
                .unwrap_or(DEFAULT_MAX_STANZA),
            max_depth: 16,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(num("xmpp_reconnect_max", DEFAULT_RECONNECT_MAX_S)),
            error_wait: Duration::from_millis(num("xmpp_error_wait", 0)),
            outbound_proxy: s("outbound_proxy"),
        })
    }
}

/// A chat message for the XMPP server (from a SIP MESSAGE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub from: String,
    pub to: String,
    pub body: String,
}

/// One queued stanza: a message from SIP (with its sender's ticket while it waits), or an
/// error or reply the gateway itself sends.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) xml: QueuedXml,
    pub(crate) ticket: Option<Arc<Ticket>>,
}

#[derive(Debug)]
pub(crate) enum QueuedXml {
    Message(Outgoing),
    /// A stanza written already (errors, iq replies).
    Raw(String),
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The module is not running (not loaded, or built without the `xmpp` feature).
    Off,
    /// `xmpp_queue` messages wait already.
    Full,
}

/// The gateway's counters (metrics `ser_xmpp_*`, `jabber.status`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages from SIP written to the XMPP server.
    pub sent: AtomicU64,
    /// Messages from XMPP handed to SIP.
    pub received: AtomicU64,
    /// Of those, the ones SIP answered with 2xx.
    pub delivered: AtomicU64,
    /// XMPP error stanzas for what we sent.
    pub xmpp_errors: AtomicU64,
    /// Messages from XMPP that SIP could not deliver (final reply ≥ 300, or not sendable).
    pub sip_errors: AtomicU64,
    /// Messages from XMPP refused before SIP (bad address, unexpected domain, too large).
    pub refused: AtomicU64,
    /// Streams ended for bad input from the server (not well-formed, over a limit).
    pub stream_errors: AtomicU64,
    /// Connections made again after one was lost.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed (connect, handshake).
    pub connect_failures: AtomicU64,
    /// SIP messages refused because the queue was full.
    pub queue_full: AtomicU64,
    /// SIP senders that stopped waiting (`xmpp_send_timeout`).
    pub timeouts: AtomicU64,
}

/// What the connection thread and the shards share.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) queue: VecDeque<Queued>,
    /// The connection thread must stop.
    pub(crate) stop: bool,
    pub(crate) last_error: Option<String>,
    pub(crate) connected_since: Option<std::time::SystemTime>,
}

/// A written message whose sender waits for a possible error: stanza id, ticket, until when.
type SentEntry = (String, Arc<Ticket>, Option<Instant>);

/// The gateway: shared through `Core` by every shard (to submit) and the connection thread.
#[derive(Debug, Default)]
pub struct Gateway {
    cfg: Option<Config>,
    state: Mutex<State>,
    /// The tickets of the queue in the order they were made (so by deadline too).
    waiting: Mutex<VecDeque<Arc<Ticket>>>,
    /// Messages that may still get an XMPP error their sender waits for (`xmpp_error_wait`),
    /// in the order written: stanza id, ticket, and until when (None while it is being
    /// written: the error may come back before the write call returns).
    sent: Mutex<VecDeque<SentEntry>>,
    /// Wakes the connection thread (new stanza, stop).
    pub(crate) wake: Condvar,
    connected: AtomicBool,
    pub counters: Counters,
}

impl Gateway {
    /// A gateway with this configuration; nothing runs until [`Gateway::start`].
    pub fn new(cfg: Config) -> Arc<Gateway> {
        Arc::new(Gateway {
            cfg: Some(cfg),
            ..Gateway::default()
        })
    }

    pub fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    pub fn config(&self) -> Option<&Config> {
        self.cfg.as_ref()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Queues a message from SIP. With `wait` (and a connected server) it comes back with
    /// the ticket to wait on; a message queued while the server is away needs no wait.
    pub fn submit(&self, msg: Outgoing, wait: bool) -> Result<Option<Arc<Ticket>>, SubmitError> {
        let Some(cfg) = &self.cfg else {
            return Err(SubmitError::Off);
        };
        let mut st = self.lock();
        if st.queue.len() >= cfg.queue {
            drop(st);
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Full);
        }
        let ticket =
            (wait && self.is_connected()).then(|| Ticket::new(Instant::now() + cfg.send_timeout));
        st.queue.push_back(Queued {
            xml: QueuedXml::Message(msg),
            ticket: ticket.clone(),
        });
        if let Some(t) = &ticket {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(Arc::clone(t));
        }
        drop(st);
        self.wake.notify_all();
        Ok(ticket)
    }

    /// Withdraws the queued messages whose senders' time is up (they are told: 504); returns
    /// the next deadline of one still waiting.
    pub(crate) fn expire_tickets(&self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        let next = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let Some(t) = w.front() else {
                    break None;
                };
                if t.state() == TicketState::Queued && now < t.deadline {
                    break Some(t.deadline);
                }
                if let Some(t) = w.pop_front() {
                    expired.push(t);
                }
            }
        };
        for t in expired {
            if t.expire(now) {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Written messages no error came for: handed over.
        let mut done = Vec::new();
        let next_sent = {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let Some((_, t, until)) = sent.front() else {
                    break None;
                };
                match (t.state(), *until) {
                    // Being written (only the newest can be): nothing after it is due.
                    (TicketState::Taken, None) => break None,
                    (TicketState::Sent, Some(u)) if u > now => break Some(u),
                    _ => done.extend(sent.pop_front()),
                }
            }
        };
        for (_, t, _) in done {
            t.settle(&[TicketState::Sent], TicketState::Written);
        }
        match (next, next_sent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Before a message with a ticket is written as stanza `id`: with `xmpp_error_wait` an
    /// error for `id` is watched for from now on (it may come before the write returns).
    pub(crate) fn writing(&self, id: String, t: &Arc<Ticket>) {
        if self.error_wait().is_zero() {
            return;
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((id, Arc::clone(t), None));
    }

    /// It was written: its sender hears now, or after `xmpp_error_wait` unless an error for
    /// it came or comes first.
    pub(crate) fn written(&self, t: &Arc<Ticket>) {
        let wait = self.error_wait();
        if wait.is_zero() {
            t.settle(&[TicketState::Taken], TicketState::Written);
            return;
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if t.settle(&[TicketState::Taken], TicketState::Sent) {
            if let Some(e) = sent.iter_mut().rev().find(|e| Arc::ptr_eq(&e.1, t)) {
                e.2 = Some(Instant::now() + wait);
            }
        }
    }

    fn error_wait(&self) -> Duration {
        self.cfg.as_ref().map_or(Duration::ZERO, |c| c.error_wait)
    }

    /// The server answered stanza `id` with the error `condition`: its sender, if still
    /// waiting, gets the SIP status it maps to. True when one was waiting.
    pub(crate) fn refused(&self, id: &str, condition: &str) -> bool {
        let t = {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            let Some(i) = sent.iter().position(|(s, _, _)| s == id) else {
                return false;
            };
            sent.remove(i).map(|(_, t, _)| t)
        };
        let Some(t) = t else {
            return false;
        };
        let (code, reason) = xmpp_error_status(condition);
        t.settle(
            &[TicketState::Taken, TicketState::Sent],
            TicketState::Refused(code, reason),
        )
    }

    /// The connection is gone: messages waiting for a possible error were written.
    pub(crate) fn release_sent(&self) {
        let all: Vec<_> = self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for (_, t, _) in all {
            t.settle(&[TicketState::Sent], TicketState::Written);
        }
    }

    /// Queues a stanza of the gateway's own at the front (errors go out before the backlog).
    pub(crate) fn push_raw(&self, xml: String) {
        self.lock().queue.push_front(Queued {
            xml: QueuedXml::Raw(xml),
            ticket: None,
        });
        self.wake.notify_all();
    }

    /// Stops the connection thread (it closes the stream).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// `jabber.status`: one `name: value` line each.
    pub fn status_lines(&self) -> Vec<String> {
        let Some(cfg) = &self.cfg else {
            return vec![String::from("enabled: no")];
        };
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = self.lock();
        let mut v = vec![
            format!(
                "connected: {}",
                if self.is_connected() { "yes" } else { "no" }
            ),
            format!(
                "server: {}:{} as {}",
                cfg.host, cfg.port, cfg.addr.xmpp_domain
            ),
            format!("gateway_domain: {}", cfg.addr.gateway_domain),
            format!("sip_domain: {}", cfg.addr.sip_domain),
            format!("queue: {}/{}", st.queue.len(), cfg.queue),
        ];
        if let Some(t) = st.connected_since {
            v.push(format!("connected_since: {}", crate::utc::ctime(t)));
        }
        for (name, a) in [
            ("sent", &c.sent),
            ("received", &c.received),
            ("delivered", &c.delivered),
            ("xmpp_errors", &c.xmpp_errors),
            ("sip_errors", &c.sip_errors),
            ("refused", &c.refused),
            ("stream_errors", &c.stream_errors),
            ("reconnects", &c.reconnects),
            ("connect_failures", &c.connect_failures),
            ("queue_full", &c.queue_full),
            ("timeouts", &c.timeouts),
        ] {
            v.push(format!("{name}: {}", n(a)));
        }
        if let Some(e) = &st.last_error {
            v.push(format!("last_error: {e}"));
        }
        v
    }
}

/// The XMPP error (defined condition, type) for a SIP final reply (RFC 6120 8.3.3, 8.3.2).
pub fn sip_error_condition(code: u16) -> (&'static str, &'static str) {
    match code {
        404 | 604 => ("item-not-found", "cancel"),
        480 => ("recipient-unavailable", "wait"),
        408 => ("remote-server-timeout", "wait"),
        401 | 407 => ("not-authorized", "auth"),
        403 | 603 => ("forbidden", "auth"),
        413 => ("policy-violation", "modify"),
        415 | 488 | 606 => ("not-acceptable", "modify"),
        486 | 600 => ("resource-constraint", "wait"),
        500 => ("internal-server-error", "wait"),
        503 => ("service-unavailable", "wait"),
        _ => ("undefined-condition", "cancel"),
    }
}

/// The SIP status for an XMPP error condition (RFC 6120 8.3.3) that came back for a message.
pub fn xmpp_error_status(condition: &str) -> (u16, &'static str) {
    match condition {
        "item-not-found" | "remote-server-not-found" | "jid-malformed" | "gone" => {
            (404, "Not Found")
        }
        "service-unavailable" | "recipient-unavailable" => (480, "Temporarily Unavailable"),
        "forbidden" | "not-allowed" | "not-authorized" | "policy-violation" => (403, "Forbidden"),
        "remote-server-timeout" => (504, "Server Time-out"),
        "not-acceptable" | "bad-request" => (488, "Not Acceptable Here"),
        "resource-constraint" => (503, "Service Unavailable"),
        _ => (500, "Server Internal Error"),
    }
}

/// A SIP MESSAGE to inject for a message from XMPP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipRequest {
    /// Request-URI and To.
    pub ruri: String,
    /// From (the XMPP sender as a SIP address of the gateway).
    pub from: String,
    pub body: String,
}

/// How the gateway sends SIP requests into ser (given by the application layer).
pub trait SipSide: Send + Sync {
    /// Sends the request; its final status comes through the [`PendingSip`], or Err at once.
    fn send(&self, req: &SipRequest) -> Result<Box<dyn PendingSip>, (u16, String)>;
}

/// A request sent into ser whose final reply is awaited.
pub trait PendingSip: Send {
    /// The final status and reason once known (a timeout is one too).
    fn poll(&mut self) -> Option<(u16, String)>;
}

/// Starts the connection thread.
pub fn start(gw: &Arc<Gateway>, sip: Arc<dyn SipSide>) -> std::io::Result<()> {
    let gw = Arc::clone(gw);
    std::thread::Builder::new()
        .name(String::from("ser-xmpp"))
        .spawn(move || conn::run(&gw, &*sip))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(queue: usize) -> Config {
        let mut p = Params::default();
        p.set(
            "jabber",
            "xmpp_domain",
            ser_script::Value::Str("sip.x".into()),
        );
        p.set("jabber", "xmpp_secret", ser_script::Value::Str("s".into()));
        p.set("jabber", "xmpp_queue", ser_script::Value::Int(queue as i64));
        Config::from_params(&p).unwrap()
    }

    fn msg(n: usize) -> Outgoing {
        Outgoing {
            from: String::from("a@sip.x"),
            to: String::from("b@x"),
            body: n.to_string(),
        }
    }

    #[test]
    fn defaults_and_required_parameters() {
        let c = cfg(1000);
        assert_eq!(c.port, DEFAULT_PORT);
        assert_eq!(c.addr.delim, '*');
        assert_eq!(c.addr.gateway_domain, "sip.x");
        assert_eq!(c.addr.sip_domain, "sip.x");
        assert_eq!(c.queue, 1000);
        assert_eq!(c.reconnect_max, Duration::from_secs(30));
        assert!(Config::from_params(&Params::default()).is_err());
        use ser_script::Value as V;
        assert!(check_param("domain_separator", &V::Str("%".into())).is_ok());
        assert!(check_param("domain_separator", &V::Str("@".into())).is_err());
        assert!(check_param("domain_separator", &V::Str("ab".into())).is_err());
        assert!(check_param("xmpp_port", &V::Int(0)).is_err());
        assert!(check_param("xmpp_domain", &V::Str("a b".into())).is_err());
    }

    #[test]
    fn the_queue_is_bounded_and_counts_refusals() {
        let gw = Gateway::new(cfg(2));
        assert!(
            matches!(gw.submit(msg(1), true), Ok(None)),
            "disconnected: no wait"
        );
        assert!(gw.submit(msg(2), true).is_ok());
        assert!(matches!(gw.submit(msg(3), true), Err(SubmitError::Full)));
        assert_eq!(gw.counters.queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(gw.queue_len(), 2);
        assert!(matches!(
            Gateway::default().submit(msg(1), true),
            Err(SubmitError::Off)
        ));
    }

    /// The sender's callback with what it is told, through a channel.
    fn notified(t: &Ticket) -> std::sync::mpsc::Receiver<Handed> {
        let (tx, rx) = std::sync::mpsc::channel();
        t.on_done(Box::new(move |h| {
            let _ = tx.send(h);
        }));
        rx
    }

    #[test]
    fn a_ticket_is_withdrawn_at_its_deadline_unless_taken() {
        let gw = Gateway::new(cfg(10));
        gw.set_connected(true);
        let t = gw.submit(msg(1), true).unwrap().unwrap();
        let rx = notified(&t);
        assert!(rx.try_recv().is_err(), "nothing decided yet");
        let now = Instant::now();
        assert!(gw.expire_tickets(now).is_some(), "still waiting");
        assert!(rx.try_recv().is_err());
        assert_eq!(gw.expire_tickets(now + Duration::from_secs(6)), None);
        assert_eq!(rx.try_recv(), Ok(Handed::TimedOut));
        assert_eq!(t.state(), TicketState::Cancelled);
        assert_eq!(gw.counters.timeouts.load(Ordering::Relaxed), 1);
        // A withdrawn message is never taken to be written.
        assert!(!t.take());
        // Written: told so; a ticket decided before the callback is set calls it at once.
        let t = gw.submit(msg(2), true).unwrap().unwrap();
        let rx = notified(&t);
        assert!(t.take());
        assert!(
            !t.expire(now + Duration::from_secs(60)),
            "taken: never withdrawn"
        );
        t.set(TicketState::Written);
        assert_eq!(rx.try_recv(), Ok(Handed::Written));
        let t = gw.submit(msg(3), true).unwrap().unwrap();
        t.set(TicketState::Held);
        assert_eq!(notified(&t).try_recv(), Ok(Handed::Queued));
    }

    #[test]
    fn an_error_within_xmpp_error_wait_reaches_the_sip_sender() {
        let mut c = cfg(10);
        c.error_wait = Duration::from_millis(200);
        let gw = Gateway::new(c);
        gw.set_connected(true);
        // Refused: the error for its stanza id comes in time.
        let t = gw.submit(msg(1), true).unwrap().unwrap();
        let rx = notified(&t);
        assert!(t.take());
        gw.writing(String::from("ser-1"), &t);
        // The error may come back before the write call returns.
        assert!(gw.refused("ser-1", "not-allowed"));
        gw.written(&t);
        assert!(!gw.refused("ser-9", "item-not-found"), "another stanza");
        assert_eq!(
            rx.try_recv(),
            Ok(Handed::Refused {
                code: 403,
                reason: "Forbidden"
            })
        );
        // No error: written once the wait is over; a late error changes nothing.
        let t = gw.submit(msg(2), true).unwrap().unwrap();
        let rx = notified(&t);
        assert!(t.take());
        gw.writing(String::from("ser-2"), &t);
        gw.written(&t);
        assert!(rx.try_recv().is_err(), "waits for a possible error");
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(gw.expire_tickets(later), None);
        assert_eq!(rx.try_recv(), Ok(Handed::Written));
        assert!(!gw.refused("ser-2", "item-not-found"));
        // The connection goes: what was written is written.
        let t = gw.submit(msg(3), true).unwrap().unwrap();
        let rx = notified(&t);
        assert!(t.take());
        gw.writing(String::from("ser-3"), &t);
        gw.written(&t);
        gw.release_sent();
        assert_eq!(rx.try_recv(), Ok(Handed::Written));
        assert_eq!(xmpp_error_status("item-not-found"), (404, "Not Found"));
        assert_eq!(xmpp_error_status("service-unavailable").0, 480);
        assert_eq!(xmpp_error_status("something-else").0, 500);
    }
}
