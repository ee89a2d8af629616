//! Where a message came from and where one goes: [`Arrival`] for a received message,
//! [`Dest`] for an outgoing one, both naming the transport, our local socket, the peer's
//! address and, on stream transports, the connection ([`ConnId`]).
//!
//! One destination type flows from the script to the send: the script's actions and tm decide
//! a `Dest`, the outbox carries it, the shard runtime sends on its socket or connection.

use std::net::SocketAddr;

use super::Transport;

/// A stream connection: which shard owns it (the only one that may write to it) and its
/// number there. Messages for a connection another shard owns go to that shard first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    const SHARD_BITS: u32 = 16;

    /// The `seq`th connection of shard `shard`.
    pub fn new(shard: usize, seq: u64) -> Self {
        let shard = (shard as u64) & ((1 << Self::SHARD_BITS) - 1);
        Self((seq << Self::SHARD_BITS) | shard)
    }

    /// The shard that owns the connection.
    pub fn shard(self) -> usize {
        (self.0 & ((1 << Self::SHARD_BITS) - 1)) as usize
    }

    /// The raw value (for logs and management listings, and the shard runtime's own id of
    /// the connection, which uses the same encoding).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The connection whose raw value is `raw` (see [`Self::get`]).
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub transport: Transport,
    /// Our listen socket it leaves from (the shard runtime's socket id).
    pub socket: usize,
    /// The peer.
    pub addr: SocketAddr,
    /// The connection it must use on a stream transport (None: any to `addr`, or a new one).
    pub conn: Option<ConnId>,
}

impl Dest {
    /// A datagram from socket `socket` to `addr`.
    pub fn udp(socket: usize, addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Udp,
            socket,
            addr,
            conn: None,
        }
    }
}

/// Where a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub transport: Transport,
    /// The peer that sent it.
    pub src: SocketAddr,
    /// Our address it arrived at.
    pub local: SocketAddr,
    /// Index of the listen socket it arrived on.
    pub socket: usize,
    /// The shard running it.
    pub shard: usize,
    /// The connection it arrived on (stream transports).
    pub conn: Option<ConnId>,
}

impl Arrival {
    /// A datagram from `src` received on socket `socket` (at `local`) by shard `shard`.
    pub fn udp(src: SocketAddr, local: SocketAddr, socket: usize, shard: usize) -> Self {
        Self {
            transport: Transport::Udp,
            src,
            local,
            socket,
            shard,
            conn: None,
        }
    }

    /// Back the way it came, to `addr`: the same transport, socket and connection.
    pub fn back_to(&self, addr: SocketAddr) -> Dest {
        Dest {
            transport: self.transport,
            socket: self.socket,
            addr,
            conn: self.conn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_names_its_shard() {
        let c = ConnId::new(7, 123_456);
        assert_eq!(c.shard(), 7);
        assert_ne!(c, ConnId::new(6, 123_456));
        assert_ne!(c, ConnId::new(7, 123_457));
    }
}
