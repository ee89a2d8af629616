//! Transactions this server starts itself (SER's `t_uac`): the FIFO command `t_uac_from`
//! sends a request (an instant message, a NOTIFY) and reports its final reply.
//!
//! The management thread builds and resolves the request and posts it to the shard that owns
//! its Call-ID; the shard runs a plain RFC 3261 client transaction for it here, beside the
//! proxy's cells: replies are matched by their client key, retransmissions and timers come
//! from [`ClientTransaction`], and the final reply (or 408 when none came within `fr_timer`)
//! goes back to the waiting management thread over a channel. It goes over the transport
//! the destination URI names (the dispatcher probes a `;transport=tcp` destination over
//! TCP); a stream connection that cannot be opened ends it at once with a local 503.
//!
//! The outcome goes to whoever started it through its [`Notify`]: a channel the FIFO thread
//! waits on, or a callback that posts it as an event (msilo's deliverer).
//!
//! What it does not do: INVITE (a dialog needs a UAC core that ACKs 2xx; `t_uac_from` refuses
//! INVITE, ACK and CANCEL), authentication challenges, and more than one destination.

use std::sync::mpsc::SyncSender;
use std::time::Instant;

use ser_parser::{Message, Method};

use crate::sip::{Dest, Outbox};
use crate::txn::{ClientTransaction, Disposition, Key, TimerConfig, TxnEvent};

/// Most locally started transactions one shard keeps at once; more get 503 at once.
pub const MAX_LOCAL: usize = 1024;

/// A request to send, written completely (our Via with `branch`) by the management side.
#[derive(Debug)]
pub struct UacRequest {
    /// Where it goes: over a stream transport the shard opens a connection (or uses one).
    pub dst: Dest,
    /// The name `dst` was resolved from, when it was one (what a TLS connection verifies).
    pub name: Option<String>,
    pub bytes: Vec<u8>,
    pub branch: String,
    pub method: String,
    pub done: Notify,
}

/// Who hears how a locally started transaction ended: called once, on the shard, so it must
/// not block (a `try_send`, a post to another thread's queue).
pub struct Notify(Box<dyn FnOnce(UacResult) + Send + 'static>);

impl Notify {
    /// The result goes into `tx` (a waiting management thread); dropped when it is full.
    pub fn channel(tx: SyncSender<UacResult>) -> Self {
        Self(Box::new(move |r| {
            let _ = tx.try_send(r);
        }))
    }

    /// The result goes to `f`.
    pub fn call(f: impl FnOnce(UacResult) + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    fn send(self, r: UacResult) {
        (self.0)(r);
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notify")
    }
}

/// How a locally started transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UacResult {
    pub code: u16,
    pub reason: String,
    /// Made here, not received: a timeout (408), a transport error (503), a refusal.
    pub local: bool,
}

struct Entry {
    txn: ClientTransaction,
    dst: Dest,
    /// Taken when the final reply is reported.
    done: Option<Notify>,
}

/// One shard's locally started transactions (few: a linear scan is enough).
#[derive(Default)]
pub struct LocalUac {
    list: Vec<Entry>,
}

impl LocalUac {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Starts the transaction and queues its first transmission.
    pub fn start(&mut self, now: Instant, cfg: &TimerConfig, req: UacRequest, out: &mut Outbox) {
        let done = req.done;
        let report = |done: Notify, code: u16, reason: &str| {
            done.send(UacResult {
                code,
                reason: reason.to_string(),
                local: true,
            });
        };
        if self.list.len() >= MAX_LOCAL {
            report(done, 503, "Too Many Local Transactions");
            return;
        }
        let Some(method) = Method::from_bytes(req.method.as_bytes()) else {
            report(done, 400, "Bad Method");
            return;
        };
        if matches!(method, Method::Invite | Method::Ack | Method::Cancel) {
            report(done, 400, "Method Not Supported Here");
            return;
        }
        let key = Key::client_from(&req.branch, method.as_str());
        let txn = match ClientTransaction::start_known(
            now,
            cfg,
            req.bytes,
            key,
            method,
            req.dst.transport.is_reliable(),
        ) {
            Ok(t) => t,
            Err(e) => {
                report(done, 400, &e.to_string());
                return;
            }
        };
        let mut e = Entry {
            txn,
            dst: req.dst,
            done: Some(done),
        };
        drain(&mut e, out);
        self.list.push(e);
    }

    /// A reply: true when it belonged to one of ours.
    pub fn on_reply(&mut self, now: Instant, msg: &Message<'_>, out: &mut Outbox) -> bool {
        if self.list.is_empty() {
            return false;
        }
        let Ok(key) = Key::client(msg) else {
            return false;
        };
        let Some(i) = self.list.iter().position(|e| *e.txn.key() == key) else {
            return false;
        };
        let Some(e) = self.list.get_mut(i) else {
            return false;
        };
        if e.txn.handle_response(now, msg) == Disposition::PassUp {
            if let Some(code) = msg.status().filter(|c| *c >= 200) {
                let reason = String::from_utf8_lossy(msg.reason().unwrap_or_default()).into_owned();
                finish(e, code, reason, false);
            }
        }
        drain(e, out);
        self.sweep();
        true
    }

    /// A request could not be sent (its stream connection was refused or failed): when it is
    /// one of ours, it ends now with a local 503 rather than after `fr_timer`. True when it
    /// was.
    pub fn on_send_failed(&mut self, req: &Message<'_>) -> bool {
        if self.list.is_empty() {
            return false;
        }
        let Ok(key) = Key::client(req) else {
            return false;
        };
        let Some(i) = self.list.iter().position(|e| *e.txn.key() == key) else {
            return false;
        };
        let mut e = self.list.swap_remove(i);
        finish(
            &mut e,
            503,
            String::from("Service Unavailable (cannot reach it)"),
            true,
        );
        true
    }

    pub fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        for e in &mut self.list {
            if e.txn.next_deadline().is_some_and(|d| d <= now) {
                e.txn.handle_timeout(now);
                drain(e, out);
            }
        }
        self.sweep();
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.list.iter().filter_map(|e| e.txn.next_deadline()).min()
    }

    fn sweep(&mut self) {
        self.list.retain(|e| !e.txn.is_terminated());
    }
}

fn finish(e: &mut Entry, code: u16, reason: String, local: bool) {
    if let Some(done) = e.done.take() {
        done.send(UacResult {
            code,
            reason,
            local,
        });
    }
}

fn drain(e: &mut Entry, out: &mut Outbox) {
    while let Some(t) = e.txn.poll_transmit() {
        out.push(e.dst, |b| b.extend_from_slice(t.bytes));
    }
    while let Some(ev) = e.txn.poll_event() {
        match ev {
            TxnEvent::Timeout(_) => finish(e, 408, String::from("Request Timeout"), true),
            TxnEvent::TransportError => finish(e, 503, String::from("Service Unavailable"), true),
            TxnEvent::Terminated => finish(e, 408, String::from("Request Timeout"), true),
        }
    }
}
