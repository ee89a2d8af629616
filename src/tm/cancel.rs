//! CANCEL (RFC 3261 9.1, 16.10): an upstream CANCEL cancels every pending branch of its
//! INVITE; a 2xx or 6xx on one branch, or a final from the script, cancels the others. A
//! branch is cancelled at once if it has a provisional, else when one arrives; a branch still
//! resolving just ends. Also the CANCEL request itself.

use std::time::Instant;

use ser_parser::Message;

use crate::sip::Outbox;
use crate::txn::{ClientTransaction, Key};

use super::cell::client_tag;
use super::{CellId, Tm};

impl<S: Clone> Tm<S> {
    /// Cancels every branch still pending but `except`.
    pub(super) fn cancel_others(
        &mut self,
        now: Instant,
        id: CellId,
        except: Option<usize>,
        out: &mut Outbox,
    ) {
        let n = self.branch_count(id);
        for i in 0..n {
            if Some(i) != except {
                self.cancel_branch(now, id, i, out);
            }
        }
    }

    /// CANCEL for one branch: at once if it has a provisional, else when one arrives; a
    /// branch still resolving just ends.
    fn cancel_branch(&mut self, now: Instant, id: CellId, index: usize, out: &mut Outbox) {
        let Some(b) = self.branch_mut(id, index) else {
            return;
        };
        if b.final_code.is_some() || b.cancel.is_some() || b.cancel_pending {
            return;
        }
        if b.uac.is_none() {
            b.resolving = false;
            b.final_code = Some(487);
            return;
        }
        if b.last_code == 0 {
            b.cancel_pending = true;
            return;
        }
        self.send_cancel(now, id, index, out);
    }

    /// Sends the CANCEL of a branch's INVITE (once), in a client transaction of its own.
    pub(super) fn send_cancel(&mut self, now: Instant, id: CellId, index: usize, out: &mut Outbox) {
        let timers = self.cfg.timers;
        let Some(b) = self.branch_mut(id, index) else {
            return;
        };
        b.cancel_pending = false;
        if b.cancel.is_some() {
            return;
        }
        let (Some(uac), Some(dst)) = (b.uac.as_ref(), b.dst) else {
            return;
        };
        if !uac.is_invite() || uac.final_code().is_some() {
            return;
        }
        let Some(cancel) = build_cancel(uac.request()) else {
            return;
        };
        let Ok(mut c) =
            ClientTransaction::start(now, &timers, &cancel, dst.transport.is_reliable())
        else {
            return;
        };
        while let Some(t) = c.poll_transmit() {
            out.push(dst, |buf| buf.extend_from_slice(t.bytes));
        }
        let key = c.key().clone();
        b.cancel = Some(c);
        b.cancel_key = Some(key.clone());
        let _ = self.cells.index(key, id, client_tag(index, true));
    }

    /// An upstream CANCEL for the INVITE transaction `invite`: cancel its branches.
    pub fn cancel_invite(&mut self, now: Instant, invite: CellId, out: &mut Outbox) -> bool {
        let Some(cell) = self.cell_mut(invite) else {
            return false;
        };
        if cell.final_sent.is_some() {
            return true;
        }
        cell.canceled = true;
        self.cancel_others(now, invite, None, out);
        self.check_completion(now, invite, out);
        self.refresh(invite);
        true
    }

    /// The INVITE transaction a CANCEL cancels, if we have it.
    pub fn find_invite_for_cancel(&self, msg: &Message<'_>) -> Option<CellId> {
        let key = Key::cancelled_invite(msg).ok()?;
        self.cells.lookup(&key).map(|(id, _)| id)
    }
}

/// The CANCEL for an INVITE we sent (RFC 3261 9.1): same Request-URI, our Via only (same
/// branch), Route, From, To, Call-ID, CSeq number; method CANCEL.
pub fn build_cancel(invite: &[u8]) -> Option<Vec<u8>> {
    use ser_parser::HeaderName;
    let msg = ser_parser::parse(invite).ok()?;
    let ruri = msg.request_uri()?;
    let mut out = Vec::with_capacity(invite.len() / 2);
    out.extend_from_slice(b"CANCEL ");
    out.extend_from_slice(ruri.as_bytes());
    out.extend_from_slice(b" SIP/2.0\r\n");
    let mut via_done = false;
    for h in msg.headers() {
        let keep = match h.name {
            HeaderName::Via => {
                if via_done {
                    continue;
                }
                via_done = true;
                // Only the first value of the first Via line (ours).
                let v = h.value;
                let end = first_value_end(v);
                out.extend_from_slice(b"Via: ");
                out.extend_from_slice(v.get(..end).unwrap_or(v).trim_ascii());
                out.extend_from_slice(b"\r\n");
                continue;
            }
            HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::Route => true,
            HeaderName::CSeq => {
                let n = msg.cseq().ok()?.number;
                out.extend_from_slice(format!("CSeq: {n} CANCEL\r\n").as_bytes());
                continue;
            }
            _ => false,
        };
        if keep {
            out.extend_from_slice(h.raw_name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    Some(out)
}

/// End of the first comma-separated value of a header (commas in quotes don't count).
pub(super) fn first_value_end(v: &[u8]) -> usize {
    let mut quoted = false;
    for (i, &c) in v.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b',' if !quoted => return i,
            _ => {}
        }
    }
    v.len()
}
