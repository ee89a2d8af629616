//! [`TmShard`]: one shard's transaction layer as the script sees it. Its state (tm's cells,
//! accounting, the route buffers), its construction and reload, and the entry points that
//! drive tm (timers, resolved next hops) and then serve the events tm emits: accounting of
//! completed transactions and failure routes (run in `routes`). Running the routes
//! themselves is not here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::routes::ParkedFailure;
use crate::core::Core;
use crate::modules::acc::{self, AccConfig};
use crate::modules::ctx::Scratch;
use crate::modules::Script;
use crate::sip::Outbox;
use crate::stats::Stats;
use crate::tm::{CellId, Identity, Tm, TmConfig, TmEvent};

/// One shard's transaction layer as the script sees it: tm's state machine (each cell keeps
/// the script it started under), accounting for its completions, and the buffers of the
/// routes it asks to run from replies and timers. The shard calls the `on_*` methods here
/// rather than tm's, so what tm asks for is served before the call returns.
pub struct TmShard {
    pub tm: Tm<Arc<Script>>,
    pub acc: AccConfig,
    pub(super) core: Arc<Core>,
    pub(super) stats: Arc<Stats>,
    /// Buffers for the routes run from replies and timers.
    pub(super) scratch: Scratch,
    /// 2xx replies an onreply_route changed (rtpengine's SDP), by a hash of the reply as
    /// received: the callee's retransmissions, which pass statelessly, go out the same.
    pub(super) rewritten: std::collections::HashMap<u64, (Vec<u8>, Instant)>,
    /// Failure routes that paused, for the shard to start their work.
    pub(super) parked_failures: Vec<ParkedFailure>,
    /// How many more runs may pause (the shard keeps it to its own bound); 0: a failure
    /// route's pausing actions behave as where nothing can pause.
    pub park_room: usize,
}

/// What tm needs of the server: our sockets, names and reply identity.
pub fn identity(core: &Core) -> Arc<Identity> {
    Arc::new(Identity {
        local: core.local.clone(),
        reply: core.reply.clone(),
    })
}

/// tm's and acc's configuration from the module parameters of `core`.
fn configs(core: &Core, shards: usize) -> (TmConfig, AccConfig) {
    let mut acc = AccConfig::from_params(&core.params);
    acc.attach(core);
    let mut cfg = TmConfig::from_params(&core.params, shards);
    cfg.report_flags = acc.report_flags();
    (cfg, acc)
}

impl TmShard {
    pub fn new(
        core: Arc<Core>,
        script: Arc<Script>,
        stats: Arc<Stats>,
        shard: usize,
        shards: usize,
    ) -> Self {
        let (cfg, acc) = configs(&core, shards);
        let tm = Tm::new(identity(&core), script, Arc::clone(&stats), shard, cfg);
        Self {
            tm,
            acc,
            core,
            stats,
            scratch: Scratch::default(),
            rewritten: std::collections::HashMap::new(),
            parked_failures: Vec::new(),
            park_room: 0,
        }
    }

    /// A reload: new transactions use the new generation; those in flight keep their script.
    pub fn set_generation(&mut self, core: Arc<Core>, script: Arc<Script>, shards: usize) {
        let (cfg, acc) = configs(&core, shards);
        self.tm.set_generation(identity(&core), script, cfg);
        self.acc = acc;
        self.core = core;
    }

    /// The transactions' timers.
    pub fn on_timer(&mut self, now: Instant, out: &mut Outbox) {
        self.tm.on_timer(now, out);
        self.run_events(now, out);
    }

    /// A branch's next hop resolved (or not).
    pub fn on_resolved(
        &mut self,
        now: Instant,
        cell: CellId,
        branch: usize,
        result: Result<Vec<SocketAddr>, String>,
        out: &mut Outbox,
    ) {
        self.tm.on_resolved(now, cell, branch, result, out);
        self.run_events(now, out);
    }

    /// Serves what tm asked for: failure routes, accounting. Called after every tm call
    /// (the request route's too: its `t_reply` completes transactions).
    pub fn run_events(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(e) = self.tm.poll_event() {
            match e {
                TmEvent::Completed(c) => acc::report_completion(&self.acc, &c),
                TmEvent::Failure(run) => self.run_failure(now, run, out),
            }
        }
    }
}
