//! The jabber module's management side: its FIFO command (`jabber.status`; `serctl jabber
//! status`), its metrics (`ser_xmpp_*`), and how messages from XMPP enter ser.
//!
//! A message from XMPP becomes a SIP MESSAGE that tm's UAC sends (as `t_uac_from` does,
//! [`super::prepare_uac_to`]) to ser's own address (`outbound_proxy`, by default ser's first
//! UDP socket, `127.0.0.1` for one on every address): ser receives it as any request, so the
//! script routes it (`lookup("location")` then `t_relay()`, or msilo's `m_store()` for a user
//! who is offline) and nothing in the gateway repeats what the script decides. The request's
//! final reply comes back to the UAC's transaction and from there to the gateway's thread,
//! which answers the XMPP sender with an error when it is ≥ 300. Running the request route
//! on the message directly (without the network hop) was the other choice: it would need a
//! shard to run a script on a request that never arrived, with a source address and socket
//! made up for it; over loopback the request costs two datagrams and arrives as any other.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::{Command, Mgmt, Params, Reply};
use crate::server::Event;
use crate::xmpp::{Gateway, PendingSip, SipRequest, SipSide};

const COMMANDS: &[Command] = &[Command {
    name: "jabber.status",
    module: "jabber",
    params: Params::Lines,
    help: "the SIP-XMPP gateway: connected or not, queue length, counters, last error",
    slow: false,
    run: status,
}];

/// Adds the gateway's commands (main calls it when the module is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

fn status(m: &Mgmt, _: &[String]) -> Reply {
    let gw = Arc::clone(&m.live.current().core.jabber);
    if !gw.enabled() {
        return super::not_available("jabber.status");
    }
    Reply::ok(gw.status_lines())
}

/// The gateway's metrics.
pub fn collector(gw: Arc<Gateway>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let c = &gw.counters;
        let n = |a: &portable_atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut connected = Family::gauge(
            "ser_xmpp_connected",
            "1 while the component stream to the XMPP server is up (handshake done).",
        );
        connected.sample(&[], u64::from(gw.is_connected()));
        let mut queue = Family::gauge(
            "ser_xmpp_queue_length",
            "Stanzas waiting to be written to the XMPP server.",
        );
        queue.sample(&[], gw.queue_len() as u64);
        let mut sent = Family::counter(
            "ser_xmpp_sent_total",
            "Messages from SIP written to the XMPP server.",
        );
        sent.sample(&[], n(&c.sent));
        let mut received = Family::counter(
            "ser_xmpp_received_total",
            "Messages from XMPP sent into SIP, by result (delivered: a 2xx came back).",
        );
        received.sample(&[("result", "sent")], n(&c.received));
        received.sample(&[("result", "delivered")], n(&c.delivered));
        let mut errors = Family::counter(
            "ser_xmpp_errors_total",
            "Errors by kind: xmpp (error stanzas for what we sent), sip (messages from XMPP \
             that SIP did not deliver), refused (messages from XMPP with a bad address or too \
             large), stream (streams closed for bad input from the server), connect (failed \
             connection attempts), timeout (SIP senders that stopped waiting).",
        );
        for (kind, a) in [
            ("xmpp", &c.xmpp_errors),
            ("sip", &c.sip_errors),
            ("refused", &c.refused),
            ("stream", &c.stream_errors),
            ("connect", &c.connect_failures),
            ("timeout", &c.timeouts),
        ] {
            errors.sample(&[("kind", kind)], n(a));
        }
        let mut reconnects = Family::counter(
            "ser_xmpp_reconnects_total",
            "Connections to the XMPP server made again after one was lost.",
        );
        reconnects.sample(&[], n(&c.reconnects));
        let mut full = Family::counter(
            "ser_xmpp_queue_full_total",
            "MESSAGEs refused with 503 because xmpp_queue stanzas were waiting.",
        );
        full.sample(&[], n(&c.queue_full));
        v.extend([connected, queue, sent, received, errors, reconnects, full]);
    })
}

/// Starts the gateway's connection thread when the module is loaded.
pub fn start(m: &Arc<Mgmt>) -> std::io::Result<()> {
    let gw = Arc::clone(&m.live.current().core.jabber);
    let Some(cfg) = gw.config() else {
        return Ok(());
    };
    let hop = match &cfg.outbound_proxy {
        Some(p) => p.clone(),
        None => own_address(&m.sockets).ok_or_else(|| {
            std::io::Error::other(
                "jabber: no UDP socket to send messages from XMPP to (set outbound_proxy)",
            )
        })?,
    };
    let post = m
        .poster()
        .ok_or_else(|| std::io::Error::other("jabber: the shards are not running"))?;
    let sip = Injector {
        live: Arc::clone(&m.live),
        shards: m.stats.len(),
        post,
        hop,
    };
    crate::xmpp::start(&gw, Arc::new(sip))
}

/// ser's own first UDP address as a SIP URI (loopback for a socket on every address).
fn own_address(sockets: &[crate::sip::Listen]) -> Option<String> {
    let l = sockets
        .iter()
        .find(|l| l.transport == crate::sip::Transport::Udp)?;
    let mut a = l.addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Some(format!("sip:{}", crate::sip::hostport(&a)))
}

/// Sends the gateway's SIP requests with tm's UAC to `hop`.
struct Injector {
    live: Arc<crate::live::Live>,
    shards: usize,
    post: super::Poster,
    hop: String,
}

impl SipSide for Injector {
    fn send(&self, req: &SipRequest) -> Result<Box<dyn PendingSip>, (u16, String)> {
        let g = self.live.current();
        let (shard, uac, rx) = super::prepare_uac_to(
            &g.core,
            self.shards,
            "MESSAGE",
            &req.from,
            &self.hop,
            &req.ruri,
            &[String::from("Content-Type: text/plain; charset=UTF-8")],
            &req.body,
        )
        .map_err(|r| (r.code, r.reason))?;
        if !(self.post)(shard, Event::Uac(uac)) {
            return Err((500, String::from("shard not reachable")));
        }
        // The shard answers within fr_timer (408 then); a margin for a loaded shard.
        let limit = crate::tm::TmConfig::from_params(&g.core.params, 1)
            .timers
            .fr_timer
            + Duration::from_secs(5);
        Ok(Box::new(Waiting {
            rx,
            deadline: Instant::now() + limit,
        }))
    }
}

/// A request's result, polled by the gateway's thread.
struct Waiting {
    rx: mpsc::Receiver<crate::tm::uac::UacResult>,
    deadline: Instant,
}

impl PendingSip for Waiting {
    fn poll(&mut self) -> Option<(u16, String)> {
        match self.rx.try_recv() {
            Ok(r) => Some((r.code, r.reason)),
            Err(mpsc::TryRecvError::Empty) if Instant::now() < self.deadline => None,
            Err(_) => Some((500, String::from("no answer from the shard"))),
        }
    }
}
