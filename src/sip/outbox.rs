//! What processing one message produced to send: outgoing messages written into one buffer,
//! each with its [`Dest`], and those that wait for a host name to resolve.
//!
//! The shard handler drains it after each message; nothing here sends.

use std::ops::Range;

use super::{Dest, Transport};

/// An outgoing message written into the outbox buffer.
#[derive(Debug, Clone)]
pub struct Out {
    pub dst: Dest,
    pub range: Range<usize>,
}

/// A message that waits for a host name to resolve (off the shard).
#[derive(Debug)]
pub struct PendingSend {
    pub host: String,
    /// None: RFC 3263 (NAPTR, SRV) picks it.
    pub port: Option<u16>,
    /// `sips:`: TLS targets only.
    pub secure: bool,
    pub transport: Transport,
    /// The listen socket its Via was written for.
    pub socket_hint: usize,
    pub data: Vec<u8>,
}

/// What one message's processing produced; drained by the server.
#[derive(Debug, Default)]
pub struct Outbox {
    pub buf: Vec<u8>,
    pub sends: Vec<Out>,
    pub pending: Vec<PendingSend>,
}

impl Outbox {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.sends.clear();
        self.pending.clear();
    }

    /// Writes one message with `f` and queues it for `dst`.
    pub fn push(&mut self, dst: Dest, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        let end = self.buf.len();
        self.sends.push(Out {
            dst,
            range: start..end,
        });
    }

    /// Moves everything queued in `from` to the end of this outbox.
    pub fn append(&mut self, from: &mut Outbox) {
        let base = self.buf.len();
        self.buf.extend_from_slice(&from.buf);
        for o in from.sends.drain(..) {
            self.sends.push(Out {
                dst: o.dst,
                range: o.range.start + base..o.range.end + base,
            });
        }
        self.pending.append(&mut from.pending);
        from.buf.clear();
    }
}
