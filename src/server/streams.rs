//! The server's stream glue: connection events from the shard runtime in, framed SIP
//! messages to the one message path (`Server::on_message`), and messages for a stream
//! destination out over the right connection.
//!
//! - A connection is owned by the shard that accepted or opened it; a message for it that was
//!   made on another shard (the Call-ID's owner) is posted to the owner
//!   ([`Event::StreamSend`]).
//! - Where a destination names no live connection, the aliases (transport + peer address)
//!   give the open one to that peer (RFC 5923 reuse); failing that, a new connection is
//!   opened from the destination's listen socket, and the message waits for it.
//! - An outgoing connection that never comes up fails the branches of the requests that
//!   waited for it at once (tm's `on_send_failed`), instead of after fr_timer.
//! - A sweep every second ends idle connections, slow senders, and connects or TLS
//!   handshakes that take too long.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ser_shards::{CloseReason, Ctx, Inbound, SocketId, StreamEvent};

use super::{Event, Server};
use crate::sip::{Arrival, ConnId, Dest, Transport};
use crate::stats::Stats;
use crate::stream::framing::{Frame, FrameError};
use crate::stream::{StreamConn, MAX_UNSENT};

/// The token of the connection sweep timer.
pub(super) const SWEEP_TIMER: u64 = 2;
/// How often connections are checked for their timeouts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn sip_conn(c: ser_shards::ConnId) -> ConnId {
    ConnId::from_raw(c.0)
}

fn rt_conn(c: ConnId) -> ser_shards::ConnId {
    ser_shards::ConnId(c.get())
}

impl Server {
    /// Copies the runtime's connection counters of this shard into its SIP statistics (what
    /// metrics and the FIFO read).
    pub(super) fn publish_conn_stats(&self, ctx: &Ctx<'_, Event>) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = ctx.stats();
        let e = &self.stats.conn_events;
        let values = [
            s.conns_accepted,
            s.conns_refused,
            s.conns_connected,
            s.conns_connect_failed,
            s.conns_closed_eof,
            s.conns_closed_error,
            s.conns_closed_overflow,
            s.conns_closed_local,
        ];
        for (a, v) in e.iter().zip(values) {
            a.store(v, Relaxed);
        }
        self.stats
            .conns_open
            .store(self.conns.len() as u64, Relaxed);
    }

    /// One line per connection of this shard, for `tcp_list`.
    pub(super) fn list_conns(&self, ctx: &Ctx<'_, Event>) -> Vec<String> {
        let now = ctx.now();
        let mut out = Vec::with_capacity(self.conns.len());
        for (id, c) in &self.conns {
            let info = ctx.conn_info(rt_conn(*id));
            let (bin, bout) = info.map_or((0, 0), |i| (i.bytes_in, i.bytes_out));
            #[allow(unused_mut)]
            let mut tls = String::new();
            #[cfg(feature = "tls")]
            if let Some((v, cipher)) = c.tls.as_ref().and_then(|t| t.describe()) {
                tls = format!(" tls={v} cipher={cipher}");
            }
            out.push(format!(
                "id={} {} {} peer={} local={} shard={} age={}s idle={}s in={} out={}{}{}",
                id.get(),
                c.transport,
                if c.outgoing { "out" } else { "in" },
                crate::sip::hostport(&c.peer),
                crate::sip::hostport(&c.local),
                ctx.shard(),
                now.saturating_duration_since(c.opened).as_secs(),
                now.saturating_duration_since(c.last).as_secs(),
                bin,
                bout,
                if c.up { "" } else { " state=connecting" },
                tls,
            ));
        }
        out
    }

    /// A connection event from the runtime.
    pub(super) fn on_stream_event(&mut self, ctx: &mut Ctx<'_, Event>, ev: StreamEvent<'_>) {
        self.on_stream_event_inner(ctx, ev);
        self.publish_conn_stats(ctx);
    }

    fn on_stream_event_inner(&mut self, ctx: &mut Ctx<'_, Event>, ev: StreamEvent<'_>) {
        match ev {
            StreamEvent::Opened {
                conn,
                peer,
                local,
                socket,
                outgoing,
            } => self.opened(ctx, sip_conn(conn), peer, local, socket, outgoing),
            StreamEvent::Data { conn, data } => self.data(ctx, sip_conn(conn), data),
            StreamEvent::Closed { conn, reason } => {
                let why = match reason {
                    CloseReason::Eof => "closed by the peer".to_string(),
                    CloseReason::Error(k) => format!("error: {k}"),
                    CloseReason::ConnectFailed(k) => format!("connect failed: {k}"),
                    CloseReason::Overflow => "peer does not read (write queue full)".to_string(),
                };
                self.gone(ctx, sip_conn(conn), &why);
            }
        }
    }

    fn opened(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        conn: ConnId,
        peer: SocketAddr,
        local: SocketAddr,
        socket: SocketId,
        outgoing: bool,
    ) {
        let now = ctx.now();
        let sock = socket.0 as usize;
        let transport = self
            .core
            .local
            .sockets
            .get(sock)
            .map_or(Transport::Tcp, |l| l.transport);
        if outgoing {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            c.last = now;
            c.local = local;
            crate::debug!("connected to {} over {}", peer, c.transport);
            if c.transport != Transport::Tls {
                c.up = true;
                c.unsent.clear();
            } else {
                // The client hello waits in the session until the socket is up.
                self.tls_flush(ctx, conn);
            }
            return;
        }
        let max = self.core.max_message;
        #[allow(unused_mut)]
        let mut c = StreamConn::new(transport, peer, local, sock, false, now, max);
        #[cfg(feature = "ws")]
        if matches!(transport, Transport::Ws | Transport::Wss) {
            c.ws = Some(Box::new(crate::stream::ws::WsConn::new(max)));
        }
        if transport.is_secure() {
            #[cfg(feature = "tls")]
            match self.tls_server_session() {
                Some(s) => c.tls = Some(s),
                None => {
                    crate::notice!("TLS connection from {peer} refused: no TLS configured");
                    ctx.close(rt_conn(conn), false);
                    return;
                }
            }
            #[cfg(not(feature = "tls"))]
            {
                ctx.close(rt_conn(conn), false);
                return;
            }
        }
        self.streams.aliases.set(transport, peer, conn);
        self.conns.insert(conn, c);
        self.arm_sweep(ctx);
    }

    /// A message on a WebSocket connection whose Contact host is a `.invalid` name (a
    /// browser's, RFC 7118 §5.2): that name now leads to this connection (for calls via the
    /// registrar and for in-dialog requests, whose Request-URI is that Contact).
    pub(super) fn take_ws_names(
        &mut self,
        conn: ser_shards::ConnId,
        msg: &ser_parser::Message<'_>,
    ) {
        let conn = sip_conn(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !matches!(c.transport, Transport::Ws | Transport::Wss) {
            return;
        }
        for contact in msg.contacts() {
            let Ok(ser_parser::Contact::Addr { addr, .. }) = contact else {
                continue;
            };
            let Ok(u) = addr.parse_uri() else {
                continue;
            };
            // Known already (each message of a browser carries its name): no allocation.
            let known = u.host_str.trim_end_matches('.');
            if c.names.iter().any(|n| n.eq_ignore_ascii_case(known)) {
                continue;
            }
            let Some(host) = crate::stream::invalid_name(u.host_str) else {
                continue;
            };
            if c.names.len() >= crate::stream::MAX_NAMES_PER_CONN {
                break;
            }
            let flow = crate::stream::Flow {
                conn,
                transport: c.transport,
                peer: c.peer,
                socket: c.socket,
            };
            self.streams.aliases.set_name(&host, flow);
            c.names.push(host);
        }
    }

    /// RFC 5923: a request whose top Via carries `;alias` offers its connection for requests
    /// to the Via's port at the peer's address (`tcp_accept_aliases`; only the address the
    /// connection comes from, never the Via's host, so a peer can alias only itself).
    pub(super) fn take_via_alias(
        &mut self,
        conn: ser_shards::ConnId,
        peer: SocketAddr,
        msg: &ser_parser::Message<'_>,
    ) {
        if !self.streams.settings.accept_aliases {
            return;
        }
        let Ok(via) = msg.top_via() else {
            return;
        };
        let conn = sip_conn(conn);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !via.alias || !via.transport.eq_ignore_ascii_case(c.transport.via_token()) {
            return;
        }
        let port = via.port.unwrap_or(c.transport.default_port());
        let at = SocketAddr::new(peer.ip(), port);
        if at != peer {
            crate::debug!("{peer}: connection aliased as {at} (Via alias)");
            self.streams.aliases.set(c.transport, at, conn);
        }
    }

    /// Bytes read from `conn`: decrypted where TLS, framed, each message handled.
    fn data(&mut self, ctx: &mut Ctx<'_, Event>, conn: ConnId, data: &[u8]) {
        let now = ctx.now();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last = now;
        c.last_in = now;
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        #[cfg(feature = "tls")]
        let is_tls = c.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let is_tls = false;
        let bytes: &[u8] = if is_tls {
            #[cfg(feature = "tls")]
            {
                let was_up = c.up;
                let r = c.tls.as_mut().map(|t| t.read(data, &mut plain));
                if let Some(Err(e)) = r {
                    self.tls_plain = plain;
                    Stats::inc(&self.stats.tls_failures);
                    crate::info!("TLS error from {}: {e}", c.peer);
                    // The alert rustls queued goes out before the close.
                    self.tls_flush(ctx, conn);
                    self.drop_conn(ctx, conn, true, "TLS error");
                    return;
                }
                let handshaken = c.tls.as_ref().is_some_and(|t| !t.handshaking());
                if handshaken && !was_up {
                    c.up = true;
                    c.unsent.clear();
                    Stats::inc(&self.stats.tls_handshakes);
                    if let Some(t) = c.tls.as_ref() {
                        if let Some((v, cipher)) = t.describe() {
                            crate::debug!(
                                "TLS with {}: {v} {cipher}{}",
                                c.peer,
                                if t.resumed() { " (resumed)" } else { "" }
                            );
                        }
                    }
                }
                self.tls_flush(ctx, conn);
            }
            &plain
        } else {
            data
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            self.tls_plain = plain;
            return;
        };
        #[cfg(feature = "ws")]
        if c.ws.is_some() {
            self.ws_data(ctx, conn, bytes, now);
            self.tls_plain = plain;
            return;
        }
        let mut buf = std::mem::take(&mut self.frame_buf);
        let mut frames = std::mem::take(&mut self.frames);
        let r = c.framer.feed(bytes, now, &mut buf, &mut frames);
        let (peer, local, socket) = (c.peer, c.local, c.socket);
        self.tls_plain = plain;
        for f in &frames {
            match *f {
                Frame::Ping => {
                    self.write_conn(ctx, conn, b"\r\n");
                }
                Frame::Message(a, b) => {
                    let msg = Inbound {
                        data: &buf[a..b],
                        conn: Some(rt_conn(conn)),
                        peer,
                        local,
                        socket: SocketId(socket as u32),
                        handed_off: false,
                        at: now,
                    };
                    self.on_inbound(ctx, msg);
                }
                Frame::Unframable(a, b, why) => {
                    self.reply_unframable(ctx, conn, &buf[a..b], peer, local, socket, why);
                }
            }
        }
        self.frame_buf = buf;
        self.frames = frames;
        if let Err(e) = r {
            match e {
                FrameError::NoContentLength => Stats::inc(&self.stats.drop_bad_request),
                _ => Stats::inc(&self.stats.drop_garbage),
            }
            crate::info!("closing connection from {peer}: {e}");
            self.drop_conn(ctx, conn, true, "framing error");
        }
    }

    /// Bytes of a WebSocket connection (decrypted where wss): the Upgrade, then frames;
    /// each SIP message to the one message door, what the layer answers (the 101, pongs,
    /// closes, HTTP errors) straight onto the connection.
    #[cfg(feature = "ws")]
    fn ws_data(&mut self, ctx: &mut Ctx<'_, Event>, conn: ConnId, bytes: &[u8], now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(w) = c.ws.as_mut() else {
            return;
        };
        let mut out = std::mem::take(&mut self.frame_buf);
        let mut msgs = std::mem::take(&mut self.ws_msgs);
        let mut write = Vec::new();
        let was_open = w.is_open();
        let r = w.feed(
            bytes,
            now,
            &self.streams.ws,
            &mut out,
            &mut msgs,
            &mut write,
        );
        let upgraded = !was_open && w.is_open();
        let (peer, local, socket, transport) = (c.peer, c.local, c.socket, c.transport);
        if upgraded {
            Stats::inc(&self.stats.ws_upgrades);
            crate::debug!("{transport} connection from {peer}: upgraded");
        }
        if !write.is_empty() {
            self.write_raw(ctx, conn, &write);
        }
        for &(a, b) in &msgs {
            let Some(data) = out.get(a..b) else {
                continue;
            };
            let msg = Inbound {
                data,
                conn: Some(rt_conn(conn)),
                peer,
                local,
                socket: SocketId(socket as u32),
                handed_off: false,
                at: now,
            };
            self.on_inbound(ctx, msg);
        }
        self.frame_buf = out;
        self.ws_msgs = msgs;
        if let Err(e) = r {
            use crate::stream::ws::WsError;
            match e {
                WsError::Refused(..) => Stats::inc(&self.stats.ws_refused),
                WsError::PeerClosed => {}
                _ => Stats::inc(&self.stats.ws_errors),
            }
            crate::info!("closing {transport} connection from {peer}: {e}");
            self.drop_conn(ctx, conn, true, e.as_str());
        }
    }

    /// 400 to a request that came without Content-Length on a stream, 513 to one larger than
    /// `max_message_size` (when its head still reads as a request); the connection closes
    /// after it.
    #[allow(clippy::too_many_arguments)]
    fn reply_unframable(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        conn: ConnId,
        head: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
        socket: usize,
        why: FrameError,
    ) {
        let Some(msg) = ser_parser::parse_lenient(head) else {
            return;
        };
        if !msg.is_request() {
            return;
        }
        let transport = self
            .conns
            .get(&conn)
            .map_or(Transport::Tcp, |c| c.transport);
        let at = Arrival {
            transport,
            src: peer,
            local,
            socket,
            shard: ctx.shard(),
            conn: Some(conn),
        };
        let (code, reason): (u16, &[u8]) = match why {
            FrameError::TooLarge(_) => (513, b"Message Too Large"),
            _ => (400, b"Missing Content-Length"),
        };
        self.reply_unparsed(ctx, &msg, &at, code, reason);
    }

    /// Sends `data` to a stream destination: on its connection (posted to the shard that
    /// owns it), the aliased one, or a new one.
    pub(super) fn send_stream(&mut self, ctx: &mut Ctx<'_, Event>, dst: Dest, data: &[u8]) {
        let known = dst
            .conn
            .or_else(|| self.streams.aliases.get(dst.transport, dst.addr));
        if let Some(conn) = known {
            if self.send_on(ctx, conn, dst, data) {
                return;
            }
        }
        // The named connection is gone: the alias, else a new connection.
        if let Some(conn) = self.streams.aliases.get(dst.transport, dst.addr) {
            if Some(conn) != known && self.send_on(ctx, conn, dst, data) {
                return;
            }
        }
        let dst = match reopen_for_response(dst, data) {
            Some(again) => {
                if let Some(conn) = self.streams.aliases.get(again.transport, again.addr) {
                    if self.send_on(ctx, conn, again, data) {
                        return;
                    }
                }
                again
            }
            None => dst,
        };
        self.connect_and_send(ctx, dst, data);
    }

    /// Sends `data` on connection `conn`: posted to its shard when that is another one
    /// (true), written here when this shard has it (true), else false (it is gone).
    fn send_on(&mut self, ctx: &mut Ctx<'_, Event>, conn: ConnId, dst: Dest, data: &[u8]) -> bool {
        if conn.shard() != ctx.shard() && conn.shard() < ctx.shard_count() {
            let dst = Dest {
                conn: Some(conn),
                ..dst
            };
            let data = data.to_vec();
            ctx.post(conn.shard(), Event::StreamSend { dst, data });
            return true;
        }
        self.write_conn(ctx, conn, data)
    }

    /// Opens a connection to `dst` and queues `data` on it.
    fn connect_and_send(&mut self, ctx: &mut Ctx<'_, Event>, dst: Dest, data: &[u8]) {
        let now = ctx.now();
        if !matches!(dst.transport, Transport::Tcp | Transport::Tls) {
            // WebSocket peers (browsers) are reached only over the connection they opened.
            Stats::inc(&self.stats.drop_no_route);
            crate::notice!(
                "no {} connection to {}; message dropped",
                dst.transport,
                dst.addr
            );
            self.send_failed(ctx, data);
            return;
        }
        let fits = self
            .core
            .local
            .sockets
            .get(dst.socket)
            .is_some_and(|l| l.transport == dst.transport);
        let socket = if fits {
            Some(dst.socket)
        } else {
            self.core
                .local
                .socket_for(dst.transport, &dst.addr, dst.socket)
        };
        let Some(socket) = socket else {
            Stats::inc(&self.stats.drop_no_route);
            crate::notice!("no {} socket to reach {}", dst.transport, dst.addr);
            self.send_failed(ctx, data);
            return;
        };
        #[cfg(feature = "tls")]
        let session = if dst.transport == Transport::Tls {
            match self.tls_client_session(dst.addr) {
                Some(s) => Some(s),
                None => {
                    crate::notice!("no TLS client configured; cannot reach {}", dst.addr);
                    self.send_failed(ctx, data);
                    return;
                }
            }
        } else {
            None
        };
        #[cfg(not(feature = "tls"))]
        if dst.transport == Transport::Tls {
            self.send_failed(ctx, data);
            return;
        }
        let conn = match ctx.connect(SocketId(socket as u32), dst.addr) {
            Ok(c) => sip_conn(c),
            Err(e) => {
                crate::notice!("cannot connect to {} over {}: {e}", dst.addr, dst.transport);
                self.send_failed(ctx, data);
                return;
            }
        };
        let local = self.core.local.addr(socket).unwrap_or(dst.addr);
        let max = self.core.max_message;
        #[allow(unused_mut)]
        let mut c = StreamConn::new(dst.transport, dst.addr, local, socket, true, now, max);
        #[cfg(feature = "tls")]
        {
            c.tls = session;
        }
        self.streams.aliases.set(dst.transport, dst.addr, conn);
        self.conns.insert(conn, c);
        self.arm_sweep(ctx);
        self.write_conn(ctx, conn, data);
    }

    /// Writes `data` on this shard's connection `conn` (through its TLS session); false when
    /// there is no such connection (any more).
    pub(super) fn write_conn(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        conn: ConnId,
        data: &[u8],
    ) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.last = ctx.now();
        if !c.up && c.unsent.len() < MAX_UNSENT {
            c.unsent.push(data.to_vec());
        }
        #[cfg(feature = "ws")]
        if c.ws.is_some() {
            let mut framed = Vec::with_capacity(data.len() + 4);
            crate::stream::ws::message_frame(&mut framed, data);
            return self.write_raw(ctx, conn, &framed);
        }
        self.write_raw(ctx, conn, data)
    }

    /// Writes bytes as they are (through the TLS session, if any) on `conn`; false when
    /// there is no such connection (any more).
    fn write_raw(&mut self, ctx: &mut Ctx<'_, Event>, conn: ConnId, data: &[u8]) -> bool {
        #[cfg(feature = "tls")]
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        #[cfg(feature = "tls")]
        if let Some(t) = c.tls.as_mut() {
            if t.write(data).is_err() {
                self.drop_conn(ctx, conn, false, "TLS write failed");
                return false;
            }
            self.tls_flush(ctx, conn);
            return true;
        }
        match ctx.write(rt_conn(conn), data) {
            Ok(()) => true,
            Err(ser_shards::WriteError::Overflow) => {
                self.gone(ctx, conn, "peer does not read (write queue full)");
                false
            }
            Err(ser_shards::WriteError::NoConnection) => {
                self.gone(ctx, conn, "connection gone");
                false
            }
        }
    }

    /// Moves what `conn`'s TLS session has to send onto the connection.
    #[allow(unused_variables)]
    fn tls_flush(&mut self, ctx: &mut Ctx<'_, Event>, conn: ConnId) {
        #[cfg(feature = "tls")]
        {
            let Some(t) = self.conns.get_mut(&conn).and_then(|c| c.tls.as_mut()) else {
                return;
            };
            let mut out = Vec::new();
            t.drain(&mut out);
            if !out.is_empty() {
                let _ = ctx.write_owned(rt_conn(conn), out);
            }
        }
    }

    /// Ends `conn` from our side (after what is queued, when `after_writes`).
    pub(super) fn drop_conn(
        &mut self,
        ctx: &mut Ctx<'_, Event>,
        conn: ConnId,
        after_writes: bool,
        why: &str,
    ) {
        ctx.close(rt_conn(conn), after_writes);
        self.gone(ctx, conn, why);
    }

    /// `conn` ended (either side): forget it, its alias and the bindings that used it, and
    /// fail the branches whose requests never left on it.
    fn gone(&mut self, ctx: &mut Ctx<'_, Event>, conn: ConnId, why: &str) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.streams.aliases.remove(c.transport, c.peer, conn);
        self.streams.aliases.remove_names(&c.names, conn);
        // Bindings registered over this connection: their flow is gone (RFC 5626).
        let removed = self.core.usrloc.flow_closed(conn);
        if removed > 0 {
            crate::info!(
                "{removed} binding(s) of {} went with its connection",
                c.peer
            );
        }
        crate::debug!(
            "{} connection {} {} ended: {why}",
            c.transport,
            if c.outgoing { "to" } else { "from" },
            c.peer
        );
        if c.outgoing && !c.up {
            crate::notice!("cannot reach {} over {}: {why}", c.peer, c.transport);
            for m in &c.unsent {
                self.send_failed(ctx, m);
            }
        }
    }

    /// A message could not be sent: a request of a transaction fails its branch at once.
    fn send_failed(&mut self, ctx: &mut Ctx<'_, Event>, data: &[u8]) {
        let Ok(msg) = ser_parser::parse(data) else {
            return;
        };
        if !msg.is_request() {
            return;
        }
        self.scratch.clear();
        let now = ctx.now();
        if self.tm.tm.on_send_failed(now, &msg, &mut self.scratch.out) {
            self.tm.run_events(now, &mut self.scratch.out);
            self.flush(ctx);
            self.start_tm_dns(ctx);
            self.arm(ctx);
        } else if self.uac.on_send_failed(&msg) {
            // A request this server started (t_uac_from, a dispatcher probe): failed now.
            self.arm(ctx);
        }
    }

    /// A server-side TLS session for an accepted connection, when TLS is configured.
    #[cfg(feature = "tls")]
    fn tls_server_session(&self) -> Option<Box<crate::stream::session::Session>> {
        let tls = self.streams.tls.as_ref()?;
        match crate::stream::session::Session::server(std::sync::Arc::clone(&tls.server)) {
            Ok(s) => Some(Box::new(s)),
            Err(e) => {
                crate::error!("cannot start a TLS session: {e}");
                None
            }
        }
    }

    /// Remembers which name `targets` were resolved from: what a TLS connection to one of
    /// them verifies (read only then; bounded). A tm branch's transport is not known here,
    /// so every resolved name is kept.
    pub(super) fn remember_names(&mut self, host: &str, targets: &[SocketAddr]) {
        if host.parse::<std::net::IpAddr>().is_ok() {
            return;
        }
        if self.tls_names.len() >= 4096 {
            self.tls_names.clear();
        }
        for t in targets {
            self.tls_names.insert(*t, host.to_string());
        }
    }

    /// A client-side TLS session to `addr`, verified against the name it was resolved from
    /// (and SNI), else against the address.
    #[cfg(feature = "tls")]
    fn tls_client_session(&self, addr: SocketAddr) -> Option<Box<crate::stream::session::Session>> {
        let tls = self.streams.tls.as_ref()?;
        let name = self
            .tls_names
            .get(&addr)
            .and_then(|h| rustls::pki_types::ServerName::try_from(h.clone()).ok())
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
        match crate::stream::session::Session::client(std::sync::Arc::clone(&tls.client), name) {
            Ok(s) => Some(Box::new(s)),
            Err(e) => {
                crate::error!("cannot start a TLS session to {addr}: {e}");
                None
            }
        }
    }

    fn arm_sweep(&mut self, ctx: &mut Ctx<'_, Event>) {
        if self.sweep_armed || self.conns.is_empty() {
            return;
        }
        self.sweep_armed = true;
        let at = ctx.now() + SWEEP_EVERY;
        ctx.set_timer(at, SWEEP_TIMER);
    }

    /// Ends the connections whose time is up.
    pub(super) fn sweep(&mut self, ctx: &mut Ctx<'_, Event>) {
        self.sweep_armed = false;
        let now: Instant = ctx.now();
        let settings = self.streams.settings;
        let due: Vec<(ConnId, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.expired(now, &settings).map(|e| (*id, e.as_str())))
            .collect();
        #[cfg(feature = "ws")]
        {
            let pings: Vec<ConnId> = self
                .conns
                .iter_mut()
                .filter(|(_, c)| c.ping_due(now, &settings))
                .map(|(id, c)| {
                    c.pinged = Some(now);
                    *id
                })
                .collect();
            let mut ping = Vec::new();
            crate::stream::ws::WsConn::ping_frame(&mut ping);
            for conn in pings {
                self.write_raw(ctx, conn, &ping);
            }
        }
        for (conn, why) in due {
            if let Some(c) = self.conns.get(&conn) {
                crate::info!("closing {} connection with {}: {why}", c.transport, c.peer);
            }
            Stats::inc(&self.stats.conns_timed_out);
            self.drop_conn(ctx, conn, false, why);
        }
        self.publish_conn_stats(ctx);
        self.arm_sweep(ctx);
    }
}

/// Where a response goes when the connection its request came on is gone (RFC 3261 18.2.2):
/// a new connection to the address the request came from (its Via's `received`) and the
/// port of the Via's sent-by (the transport's default without one), where the client
/// listens; not the source port of its old connection, which nothing listens on now.
/// `rport` is UDP's (RFC 3581 §4). None for a request, or a response we cannot read.
fn reopen_for_response(dst: Dest, data: &[u8]) -> Option<Dest> {
    if !data.starts_with(b"SIP/2.0 ") {
        return None;
    }
    let msg = ser_parser::parse(data).ok()?;
    let via = msg.top_via().ok()?;
    let port = via.port.unwrap_or(dst.transport.default_port());
    Some(Dest {
        addr: SocketAddr::new(dst.addr.ip(), port),
        conn: None,
        ..dst
    })
}
