//! Outgoing connections: a non-blocking connect from a listener's address family (and
//! address), counted against the runtime's connection limit; its completion comes as
//! readiness in [`poll`](super::poll).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

use super::Streams;
use crate::{ConnId, SocketId};

impl Streams {
    /// Opens a connection to `dst` from listener `socket`'s address family (and address, when
    /// it is not a wildcard), without waiting:
    /// [`StreamEvent::Opened`](super::StreamEvent::Opened) or `Closed` follows.
    pub(crate) fn connect(
        &mut self,
        socket: SocketId,
        dst: SocketAddr,
        now: Instant,
    ) -> io::Result<ConnId> {
        let local = self
            .listeners
            .iter()
            .find(|l| l.id == socket)
            .map(|l| l.local);
        if !self.limit.take() {
            self.counters.refused += 1;
            return Err(io::Error::other("too many connections"));
        }
        let made = (|| {
            let sock = Socket::new(
                Domain::for_address(dst),
                Type::STREAM.cloexec(),
                Some(Protocol::TCP),
            )?;
            sock.set_nonblocking(true)?;
            sock.set_tcp_nodelay(true)?;
            if let Some(l) =
                local.filter(|l| !l.ip().is_unspecified() && l.is_ipv4() == dst.is_ipv4())
            {
                sock.bind(&SocketAddr::new(l.ip(), 0).into())?;
            }
            self.counters.syscalls += 1;
            match sock.connect(&dst.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(sock)
        })();
        let sock = match made {
            Ok(s) => s,
            Err(e) => {
                self.limit.give();
                self.counters.connect_failed += 1;
                return Err(e);
            }
        };
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(dst);
        let made = self.insert(sock, dst, local, socket, true, now);
        match made {
            Ok((id, _)) => Ok(id),
            Err(e) => {
                self.limit.give();
                Err(e)
            }
        }
    }
}
