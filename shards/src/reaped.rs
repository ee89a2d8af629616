//! What a backend's reap hands to the shard: [`Received`] datagrams and, on io_uring's native
//! stream paths, accept, stream receive and send completions ([`Reaped`]). Plain data, shared by
//! the backends, the loop (`shard`) and the per-shard state (`ctx`).

use std::time::Instant;

/// One received datagram as a backend reports it.
pub(crate) struct Received<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) socket: u32,
    /// The kernel's receive time, where the socket stamps datagrams.
    pub(crate) at: Option<Instant>,
}

/// What a backend's reap hands over: a datagram, or (native stream paths) an accept, stream
/// receive or send completion.
pub(crate) enum Reaped<'a> {
    Datagram(Received<'a>),
    /// Listener `listener`'s multishot accept completed: `res` a new descriptor, which the
    /// receiver owns from now on (it must close it if it does not keep it), or -errno;
    /// `more`: the accept stays armed.
    Accepted {
        listener: u32,
        res: i32,
        more: bool,
    },
    /// Bytes read from connection `token` (`more`: its receive stays armed).
    StreamData {
        token: u64,
        data: &'a [u8],
        more: bool,
    },
    /// The receive of connection `token` ended: 0 at the peer's close, else an errno.
    StreamEnd {
        token: u64,
        err: i32,
    },
    /// A send of connection `token` completed (bytes, or -errno); its buffers come back.
    StreamSent {
        token: u64,
        res: i32,
        bufs: Vec<Vec<u8>>,
        offset: usize,
    },
}
