//! `ser`, the SIP Express Router: a SIP (RFC 3261) proxy, registrar and redirect server whose
//! behaviour the operator writes in a routing script (`ser.cfg`).
//!
//! This crate is the server: configuration (`config`), the shared read-only state (`core`),
//! the script glue (`route`: typed actions and the per-message context the VM runs against),
//! the built-in modules (`modules`: core, sl, maxfwd, textops, tm, rr, acc, exec), script loading
//! (`loader`) and the shard handler (`server`). The SIP wire format lives in `ser-parser`, the
//! language in `ser-script`, the thread-per-core runtime in `ser-shards`; only `server` and
//! `main` touch the runtime. `txn` holds the sans-IO RFC 3261 transactions, `tm` the stateful
//! proxy built on them, `dns` RFC 3263 resolution. Operations: `live` (script reload by
//! generations), `mgmt` (the FIFO server and its command registry), `mgmt_http` and `metrics`
//! (Prometheus and JSON over HTTP), `capture` (pcap files).

pub mod log;

pub mod capture;
pub mod config;
pub mod core;
pub mod ctl_db;
pub mod db;
pub mod dns;
pub mod live;
pub mod loader;
pub mod metrics;
pub mod mgmt;
pub mod mgmt_http;
pub mod modules;
pub mod route;
pub mod server;
pub mod sip;
pub mod stats;
pub mod tm;
pub mod txn;
pub mod usrloc;
pub mod utc;

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
