//! The SIP layer: addressing without I/O. What every part above it (transactions, tm, the
//! script's actions, the shard handler) asks of "the network" in SIP's terms:
//!
//! - [`Transport`]: UDP, TCP, TLS, WS, WSS, and the rules each implies;
//! - [`Dest`] and [`Arrival`]: where a message goes and where one came in (transport, our
//!   socket, the peer, the connection on streams); [`Outbox`] carries outgoing messages;
//! - [`Local`]: our sockets and names (`myself`) and our Via per socket;
//! - [`NextHop`]: the next hop of RFC 3263 (transport from `;transport=`, `sips:`, names to
//!   resolve);
//! - [`response_dest`], [`received_for`]: RFC 3261 §18.2.2 response address with RFC 3581;
//! - [`ReplyIdentity`]: the one builder of the replies we make ourselves;
//! - [`owner_shard`]: which shard owns a message (by Call-ID).
//!
//! Nothing here touches a socket, a clock or the configuration file: the application builds a
//! [`Local`] from the configuration, the shard runtime moves the bytes.

use std::net::{IpAddr, SocketAddr};

mod dest;
mod local;
mod next_hop;
mod outbox;
mod owner;
mod reply;
mod response;
pub mod steer;
mod transport;

pub use dest::{Arrival, ConnId, Dest};
pub use local::{Listen, Local};
pub use next_hop::{uri_error, HopError, HostTarget, NextHop, Target};
pub use outbox::{Out, Outbox, PendingSend};
pub use owner::{hash64, owner_shard, reply_shard, scan_call_id, txn_branch, txn_branch_mark};
pub use reply::{LocalReply, ReplyIdentity};
pub use response::{received_for, response_dest, upstream};
pub use transport::Transport;

/// Formats `host:port` for a Via or Warning (IPv6 in brackets).
pub fn hostport(addr: &SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{}:{}", ip, addr.port()),
        IpAddr::V6(ip) => format!("[{}]:{}", ip, addr.port()),
    }
}

/// Formats an address into a stack buffer (no allocation).
pub fn fmt_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = usize::try_from(cur.position()).unwrap_or(0);
    buf.get(..n).unwrap_or_default()
}
