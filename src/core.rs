//! What every shard shares and only reads: who we are on the network (the SIP layer's
//! [`Local`] and [`ReplyIdentity`]), the global options the script's actions need, the
//! module parameters, and the services below the script (resolver, databases, user location).
//!
//! Built once at start (and again on a reload, later); shards hold it through an `Arc`.
//! Nothing here changes while messages are processed, so reading it needs no lock.

use std::sync::atomic::Ordering;

use crate::config::Config;
use crate::sip::{Listen, Local, ReplyIdentity};

/// Read-only server state shared by all shards.
#[derive(Debug)]
pub struct Core {
    /// Our sockets, names and Vias (the SIP layer's view of us).
    pub local: Local,
    /// What our own replies carry (To-tag prefix, Server header).
    pub reply: ReplyIdentity,
    pub sip_warning: bool,
    pub max_len: usize,
    /// Requests over UDP go to the shard that owns their Call-ID (tm is loaded: a
    /// retransmission, a CANCEL or an ACK must find its transaction there). Without tm no
    /// request leaves the shard it arrived on.
    pub calls_owned: bool,
    /// `max_message_size`: the largest message taken, on any transport.
    pub max_message: usize,
    pub pid: u32,
    /// The script's module parameters (see [`crate::config::Params`]).
    pub params: crate::config::Params,
    /// RFC 3263 next-hop resolution (blocking: used from the blocking pool only).
    pub resolver: std::sync::Arc<crate::dns::Resolver>,
    /// Set once by `main` on SIGTERM/SIGINT: shards refuse new transactions (503) while the
    /// ones in flight finish. Shared (not copied) when a `Core` is rebuilt.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Open databases by `db_url` (see [`crate::db::open_for`]); shared across reloads.
    pub dbs: crate::db::OpenDbs,
    /// The user location (set by `main` when usrloc is loaded); shared across reloads.
    pub usrloc: std::sync::Arc<crate::usrloc::Usrloc>,
    /// The open stream connections by transport and peer (RFC 5923 aliases), written by the
    /// shards' stream glue; read here to know a peer that takes TCP. Shared across reloads.
    pub aliases: std::sync::Arc<crate::stream::Aliases>,
    /// pike's state shared by the shards (its sketch and blocked list); shared across reloads.
    pub pike: std::sync::Arc<crate::pike::Shared>,
    /// The jabber module's SIP-XMPP gateway (set by `main` when the module is loaded);
    /// shared across reloads.
    #[cfg(feature = "xmpp")]
    pub jabber: std::sync::Arc<crate::xmpp::Gateway>,
    /// ratelimit's pipes and queues (configured from the script's parameters by `main` and
    /// by each reload); shared across reloads.
    pub ratelimit: std::sync::Arc<crate::ratelimit::Pipes>,
    /// The dispatcher's destination sets (set by `main` when the module is loaded); shared
    /// across reloads.
    #[cfg(feature = "dispatcher")]
    pub dispatcher: std::sync::Arc<crate::dispatcher::Dispatcher>,
    /// rtpengine's client (its service thread; started by `main` when the module is
    /// loaded); shared across reloads.
    #[cfg(feature = "rtpengine")]
    pub rtpengine: std::sync::Arc<crate::rtpengine::Rtpengine>,
    /// msilo's silo (set by `main` when the module is loaded); shared across reloads.
    #[cfg(feature = "msilo")]
    pub msilo: std::sync::Arc<crate::msilo::Silo>,
}

impl Core {
    /// `hostname` is the machine's name (ours too when listening on every interface).
    pub fn new(cfg: &Config, sockets: Vec<Listen>, hostname: Option<String>) -> Self {
        let mut names: Vec<(String, u16)> = cfg
            .aliases
            .iter()
            .map(|(n, p)| (n.to_ascii_lowercase(), p.unwrap_or(0)))
            .collect();
        for l in &cfg.listen {
            if let Some(n) = &l.name {
                names.push((n.to_ascii_lowercase(), l.port.unwrap_or(cfg.port)));
            }
        }
        if cfg.listen.is_empty() || cfg.listen.iter().any(|l| l.addr.is_unspecified()) {
            // Listening on every interface: the machine's own name is ours too (SER took it
            // from the interfaces' reverse DNS; the host name is what that gives here).
            if let Some(h) = hostname {
                names.push((h.to_ascii_lowercase(), cfg.port));
            }
            names.push((String::from("localhost"), cfg.port));
        }
        let pid = std::process::id();
        let server_header = match (&cfg.server_header, cfg.server_signature) {
            (_, false) => String::new(),
            (Some(v), true) => format!("Server: {v}\r\n"),
            (None, true) => format!("Server: {}\r\n", crate::server_name()),
        };
        Self {
            local: Local::new(sockets, names, cfg.reply_to_via),
            reply: ReplyIdentity::new(pid, server_header),
            sip_warning: cfg.sip_warning,
            max_len: cfg.max_len,
            calls_owned: true,
            max_message: cfg.max_message_size,
            pid,
            params: crate::config::Params::default(),
            resolver: std::sync::Arc::new(crate::dns::Resolver::new(
                (!cfg.dns_servers.is_empty()).then(|| cfg.dns_servers.clone()),
                std::time::Duration::from_millis(cfg.dns_timeout_ms),
            )),
            draining: Default::default(),
            dbs: crate::db::OpenDbs {
                default_url: crate::db::default_url(&cfg.data_dir),
                list: Vec::new(),
            },
            usrloc: Default::default(),
            aliases: Default::default(),
            pike: Default::default(),
            #[cfg(feature = "xmpp")]
            jabber: Default::default(),
            ratelimit: Default::default(),
            #[cfg(feature = "dispatcher")]
            dispatcher: Default::default(),
            #[cfg(feature = "rtpengine")]
            rtpengine: Default::default(),
            #[cfg(feature = "msilo")]
            msilo: Default::default(),
        }
    }

    /// Is the server stopping (see [`Core::draining`])? One relaxed load per request.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
