//! The handler that drives the shards: each shard runs a `Server` over its datagrams, stream
//! messages, events and timers.
//!
//! Per message: keep-alives are ignored; the Call-ID picks the owning shard and a message
//! that arrived elsewhere is handed over before anything else happens (so one trunk on one
//! 4-tuple still spreads over every core, and later transaction tables need no locks); the
//! message is parsed; a request runs the script's main route, a reply is routed back along its
//! Via; what the script wrote into the outbox goes to the runtime's batched sends. Bad input gets
//! a 400 (requests) or a counted drop, never a panic. Host names that need DNS are resolved in the
//! blocking pool and come back as events.
//!
//! This file holds [`Server`], its construction, reload following and the [`Handler`] dispatch;
//! the work is in:
//! - `inbound`: the message path (keep-alives, ownership checks and hand-offs, parsing, the
//!   reply path, refusals of bad input);
//! - `run`: running the request route, and parking and resuming runs that wait for off-shard
//!   work (requests, replies, failure routes);
//! - `events`: events from off-shard work, the transaction timer, and the outbox's sends;
//! - `streams`: stream connections (TCP, TLS, WebSocket).

use std::net::SocketAddr;
use std::sync::Arc;

use ser_shards::{Ctx, Handler, Inbound, TimerId};

mod events;
mod inbound;
mod run;
mod streams;

use self::run::{Parked, MAX_PARKED};
use crate::capture::Capture;
use crate::core::Core;
use crate::modules::ctx::{Resumed, Scratch};
use crate::modules::tm::{ParkedFailure, ParkedReply, TmShard};
use crate::modules::Script;
use crate::sip::{ConnId, Dest, Transport};
use crate::stats::Stats;
use crate::tm::CellId;

/// Results of off-shard work.
#[derive(Debug)]
pub enum Event {
    /// A stateless message's next hop resolved (or not): it goes to the best target of the
    /// address family its Via was written for.
    Resolved {
        data: Vec<u8>,
        socket_hint: usize,
        transport: Transport,
        /// The name resolved (what a TLS connection to the target verifies).
        host: String,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// The targets of a stateful branch's next hop (RFC 3263), best first.
    TmResolved {
        cell: CellId,
        branch: usize,
        /// The name resolved (what a TLS connection to the targets verifies).
        host: String,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// A request the management interface starts here (FIFO `t_uac_from`).
    Uac(crate::tm::uac::UacRequest),
    /// A message for a stream connection this shard owns (made on another shard), or for a
    /// stream destination whose connection was this shard's.
    StreamSend { dst: Dest, data: Vec<u8> },
    /// Bytes to send as they are (nathelper's keep-alive datagrams), from `dst.socket`.
    Send { dst: Dest, data: Vec<u8> },
    /// The management interface asks for this shard's connections (`tcp_list`).
    ListConns(std::sync::mpsc::Sender<Vec<String>>),
    /// Off-shard work of a suspended script run ended (exec, database); `id` names the run.
    Resumed { id: u64, result: Resumed },
}

/// One shard's request processing.
pub struct Server {
    core: Arc<Core>,
    script: Arc<Script>,
    stats: Arc<Stats>,
    scratch: Scratch,
    /// Name lookups handed to the blocking pool and not back yet.
    dns_inflight: usize,
    /// This shard's transactions, and what they ask the script to run.
    tm: TmShard,
    /// This shard's pike table.
    pike: crate::pike::Local,
    shards: usize,
    /// The runtime timer armed for the transactions' earliest deadline.
    timer: Option<(std::time::Instant, TimerId)>,
    /// Origin of the timer grid.
    epoch: Option<std::time::Instant>,
    /// Where reloaded scripts come from, and the generation this shard runs.
    live: Option<(Arc<crate::live::Live>, u64)>,
    /// Transactions started from the management interface (FIFO `t_uac_from`).
    uac: crate::tm::uac::LocalUac,
    /// Script runs waiting for an external program (exec), by id.
    parked: std::collections::HashMap<u64, Parked>,
    /// Replies whose onreply_route waits for off-shard work (rtpengine), by id (one
    /// sequence with `parked`).
    parked_replies: std::collections::HashMap<u64, Box<ParkedReply>>,
    /// Failure routes waiting for off-shard work (m_store, exec, rtpengine), by id (the same
    /// sequence); their transactions wait with them.
    parked_failures: std::collections::HashMap<u64, Box<ParkedFailure>>,
    park_seq: u64,
    /// Message capture (`capture_file`): every datagram received and sent.
    capture: Option<Capture>,
    /// This shard's stream connections, as the SIP layer sees them.
    conns: ahash::AHashMap<ConnId, crate::stream::StreamConn>,
    /// What every shard's stream glue shares (aliases, timeouts, TLS).
    streams: Arc<crate::stream::Shared>,
    /// Reused buffers of the stream path: decrypted bytes, framed messages and their list.
    tls_plain: Vec<u8>,
    frame_buf: Vec<u8>,
    frames: Vec<crate::stream::framing::Frame>,
    /// The WebSocket path's list of messages (ranges of `frame_buf`).
    #[cfg(feature = "ws")]
    ws_msgs: Vec<(usize, usize)>,
    /// The connection sweep timer is set.
    sweep_armed: bool,
    /// Host names that resolved to an address: what an outgoing TLS connection to that
    /// address verifies the server's certificate against (a `Dest` carries no name).
    tls_names: std::collections::HashMap<SocketAddr, String>,
}

impl Server {
    pub fn new(
        core: Arc<Core>,
        script: Arc<Script>,
        stats: Arc<Stats>,
        shard: usize,
        shards: usize,
    ) -> Self {
        let shards_n = shards;
        let mut tm = TmShard::new(
            Arc::clone(&core),
            Arc::clone(&script),
            Arc::clone(&stats),
            shard,
            shards,
        );
        tm.park_room = MAX_PARKED;
        Self {
            core,
            script,
            stats,
            scratch: Scratch::default(),
            dns_inflight: 0,
            tm,
            pike: crate::pike::Local::new(shard, shards_n),
            shards: shards_n,
            timer: None,
            epoch: None,
            live: None,
            uac: crate::tm::uac::LocalUac::default(),
            parked: std::collections::HashMap::new(),
            parked_replies: std::collections::HashMap::new(),
            parked_failures: std::collections::HashMap::new(),
            park_seq: 0,
            capture: None,
            conns: ahash::AHashMap::default(),
            streams: Arc::new(crate::stream::Shared::default()),
            tls_plain: Vec::new(),
            frame_buf: Vec::new(),
            frames: Vec::new(),
            #[cfg(feature = "ws")]
            ws_msgs: Vec::new(),
            sweep_armed: false,
            tls_names: std::collections::HashMap::new(),
        }
    }

    /// Shares the stream glue's aliases, timeouts and TLS with every other shard.
    pub fn with_streams(mut self, streams: Arc<crate::stream::Shared>) -> Self {
        self.streams = streams;
        self
    }

    /// Follows reloads: before each message the shard takes the newest generation of `live`.
    pub fn with_live(mut self, live: Arc<crate::live::Live>) -> Self {
        let n = live.number();
        self.live = Some((live, n));
        self
    }

    /// Takes a newer script generation, between two messages.
    #[inline]
    fn follow_reload(&mut self) {
        let Some((live, running)) = &self.live else {
            return;
        };
        if live.number() == *running {
            return;
        }
        let g = live.current();
        self.core = Arc::clone(&g.core);
        self.script = Arc::clone(&g.script);
        self.tm
            .set_generation(Arc::clone(&g.core), Arc::clone(&g.script), self.shards);
        if let Some((_, running)) = &mut self.live {
            *running = g.number;
        }
        crate::info!("now running script generation {}", g.number);
    }

    /// Records every datagram this shard receives and sends to `capture`.
    pub fn with_capture(mut self, capture: Option<Capture>) -> Self {
        self.capture = capture;
        self
    }
}

impl Handler for Server {
    type Event = Event;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Event>) {
        crate::log::set_thread_name(&format!("shard-{}", ctx.shard()));
        self.epoch = Some(ctx.now());
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Event>, d: Inbound<'_>) {
        self.on_inbound(ctx, d);
    }

    fn on_stream(&mut self, ctx: &mut Ctx<'_, Event>, ev: ser_shards::StreamEvent<'_>) {
        self.on_stream_event(ctx, ev);
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_, Event>, event: Event) {
        self.on_event_inner(ctx, event);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Event>, timer: TimerId, token: u64) {
        if token == streams::SWEEP_TIMER {
            self.sweep(ctx);
            return;
        }
        self.on_tm_timer(ctx, timer, token);
    }
}
