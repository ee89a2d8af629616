//! Module tm's script face: `t_relay`, `t_relay_to` and `t_relay_to_udp`/`_tcp`/`_tls`
//! (which name the transport), `t_newtran`, `t_reply`,
//! `t_on_negative`, `t_on_failure`, `t_on_branch`, `t_on_reply`, `t_replicate`, and the
//! module's timer parameters; and [`TmShard`], which runs what the transaction layer asks
//! for: the onreply_route over a reply, the failure route (or SER 0.8's negative reply
//! route) of a cell whose branches all failed, and accounting when a transaction completes.
//! Both routes may pause for off-shard work: the shard parks them ([`ParkedReply`],
//! [`ParkedFailure`]) and tm goes on with the reply or the transaction when they end.
//! The transaction user itself (cells, forking, best response, CANCEL, timers) is
//! `crate::tm`, which never calls the script.
//!
//! The files: `exports` (the export table: functions, their route kinds and argument
//! binding, the timer parameters), `actions` (what those functions do in the script's
//! context: create the transaction, reply in it, relay it over its branches), `shard`
//! ([`TmShard`]: one shard's tm, its generations, timers and events) and `routes` (the
//! onreply_route and failure route tm asks for, and their parking while they wait).

mod actions;
mod exports;
mod routes;
mod shard;

pub use exports::register;
pub use routes::{OnReply, ParkedFailure, ParkedReply};
pub use shard::{identity, TmShard};
