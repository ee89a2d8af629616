//! `ser`, the SIP Express Router: a SIP (RFC 3261) proxy, registrar and redirect server whose
//! behaviour the operator writes in a routing script (`ser.cfg`).
//!
//! The crate is built in layers that import only downward (`docs/architecture.md` has the
//! picture and the path of a request through them):
//! 1. `sip`: addressing without I/O (transports, where a message goes, our Via, the response
//!    address of RFC 3261 18.2.2, the RFC 3263 next hop, the replies we make, owner shard);
//!    `stats`, `config`, `utc`, `log` beside it;
//! 2. `txn`: the RFC 3261 17 transactions, sans-IO;
//! 3. `tm`: the stateful proxy core on them, sans-IO;
//! 4. services: `dns` (RFC 3263 resolution), `db` (SQLite, MySQL), `usrloc` (user location),
//!    `pike` (requests per source address), `ratelimit` (pipes and queues), `nathelper` (NAT
//!    traversal's pure parts), `rtpengine` (the media relay's control protocol, on threads of
//!    its own), `dispatcher` (destination sets and their health), `msilo` (stored messages),
//!    `xmpp` (the SIP-XMPP gateway's component connection, on a thread of its own); these last
//!    four, with their modules, management commands and metrics, come with the
//!    cargo features of their names (on by default, out of the small boards' builds);
//! 5. the script on SIP: `core` (what every shard reads), `modules` (the per-message context
//!    `modules::ctx`, the actions with one export table per module, tm's glue), `loader`;
//! 6. the application: `server` (the shard handler), `live` (reload), `mgmt` and `mgmt_http`
//!    (FIFO, JSON), `metrics`, `capture`, `ctl_db`, and `main`.
//!
//! The SIP wire format lives in `ser-parser`, the language in `ser-script`, the thread-per-core
//! runtime in `ser-shards`; only the application layer touches the runtime.

pub mod log;

pub mod capture;
pub mod config;
pub mod core;
pub mod ctl_db;
pub mod ctl_fifo;
pub mod db;
#[cfg(feature = "dispatcher")]
pub mod dispatcher;
pub mod dns;
pub mod live;
pub mod loader;
pub mod metrics;
pub mod mgmt;
pub mod mgmt_http;
pub mod modules;
#[cfg(feature = "msilo")]
pub mod msilo;
pub mod nathelper;
pub mod pike;
pub mod ratelimit;
#[cfg(feature = "rtpengine")]
pub mod rtpengine;
pub mod server;
pub mod sip;
pub mod stats;
pub mod stream;
#[cfg(test)]
mod stream_tests;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tm;
pub mod txn;
pub mod usrloc;
pub mod utc;
#[cfg(feature = "xmpp")]
pub mod xmpp;

// msilo keeps its messages in a database: a build with it needs a backend too (Cargo cannot
// say "one of these" in a feature's requirements).
#[cfg(all(feature = "msilo", not(any(feature = "sqlite", feature = "mysql"))))]
compile_error!(
    "the cargo feature \"msilo\" stores messages in a database: build it with \"sqlite\" or \"mysql\" too"
);

/// This build's version (Cargo's package version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The server's name and version as SER printed it (`Server:` header, `-V`).
pub fn server_name() -> String {
    format!(
        "ser ({} ({}/{}))",
        VERSION,
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}
