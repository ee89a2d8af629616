//! Live reload: the script and what is derived from it (module parameters, aliases) as one
//! immutable [`Generation`], swapped atomically by `serctl reload`, the FIFO `reload` command
//! or SIGHUP.
//!
//! Shards compare [`Live::number`] (one relaxed atomic load) with the generation they run
//! before each message and take the new one between two messages: transactions in flight keep
//! the script they started under (tm stores it in the cell), new requests use the new one,
//! nothing is dropped. A script that does not load is refused with `file:line:col` and the
//! running one stays.
//!
//! What a reload cannot change: the sockets, the number of shards, the process identity, the
//! FIFO and the listeners. Those global options are compared with the running ones; a change
//! is reported as needing a restart and otherwise ignored.

use portable_atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::core::Core;
use crate::modules::Script;

/// One loaded script with the state built from it.
pub struct Generation {
    /// 1 for the script loaded at start, +1 per successful reload.
    pub number: u64,
    pub core: Arc<Core>,
    pub script: Arc<Script>,
    pub config: Config,
    pub modules: Vec<String>,
}

/// The generation every shard should be running, and how to make the next one.
pub struct Live {
    number: AtomicU64,
    current: ArcSwap<Generation>,
    /// The script file (None: the embedded default).
    file: Option<String>,
    /// The command line's configuration, under the script's options.
    base: Config,
    sockets: Vec<crate::sip::Listen>,
    hostname: Option<String>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// Where ser started (relative data_dir names are taken from there).
    start_dir: std::path::PathBuf,
}

impl Live {
    pub fn new(
        first: Generation,
        file: Option<String>,
        base: Config,
        sockets: Vec<crate::sip::Listen>,
        hostname: Option<String>,
    ) -> Self {
        Self {
            number: AtomicU64::new(first.number),
            current: ArcSwap::from_pointee(first),
            file,
            base,
            sockets,
            hostname,
            reloading: Mutex::new(()),
            start_dir: std::env::current_dir().unwrap_or_default(),
        }
    }

    /// Where ser started, for a relative script name (`-f ser.cfg`) and relative `data_dir`
    /// names in reloaded scripts (the daemon's current directory is `/` by then).
    pub fn with_start_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.start_dir = dir;
        self
    }

    /// The number of the generation shards should run (cheap: checked per message).
    #[inline]
    pub fn number(&self) -> u64 {
        self.number.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The script file reloads read.
    pub fn file(&self) -> &str {
        self.file.as_deref().unwrap_or("<embedded default>")
    }

    /// Reads and compiles the script again and makes it current. `Ok` names the new
    /// generation (and any global option that needs a restart to change); `Err` is the load
    /// error, `file:line:col: what is wrong`, and the running script stays.
    pub fn reload(&self) -> Result<String, String> {
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (name, src) = match &self.file {
            // A relative script name is where ser started, as at start: a daemon's current
            // directory is `/` (or `-w`) by now. Messages keep the name as given.
            Some(f) => match std::fs::read_to_string(self.start_dir.join(f)) {
                Ok(s) => (f.clone(), s),
                Err(e) => return Err(format!("cannot read {f}: {e}")),
            },
            None => (
                String::from("<embedded default>"),
                crate::config::DEFAULT_CFG.to_string(),
            ),
        };
        let loaded = crate::loader::load(&name, &src, &self.base).map_err(|e| e.to_string())?;
        let old = self.current();
        let mut config = loaded.config;
        // -D on the command line keeps the process in the foreground whatever the script
        // says, as at start: not a change of `fork` that would need a restart.
        if !self.base.fork {
            config.fork = false;
        }
        let restart = needs_restart(&old.config, &config);
        // A relative data_dir means where ser started, as at start.
        if !std::path::Path::new(&config.data_dir).is_absolute() {
            config.data_dir = self.start_dir.join(&config.data_dir).display().to_string();
        }
        let mut core = Core::new(&config, self.sockets.clone(), self.hostname.clone());
        // Databases: the open ones are kept, new URLs are opened now (a failure refuses the
        // reload, the running script stays).
        core.dbs.list = crate::db::open_for(
            &loaded.params.db_urls(),
            &core.dbs.default_url,
            crate::modules::needs_default_db(&loaded.params, &loaded.modules),
            &old.core.dbs.list,
        )
        .map_err(|e| e.to_string())?;
        core.params = loaded.params;
        core.calls_owned = loaded.modules.iter().any(|m| m == "tm");
        // One drain flag for the process: a SIGTERM after a reload must reach every shard.
        core.draining = Arc::clone(&old.core.draining);
        // The user location outlives the script (its db_mode stays until a restart).
        core.usrloc = Arc::clone(&old.core.usrloc);
        core.aliases = Arc::clone(&old.core.aliases);
        // The XMPP gateway's connection and queue (its parameters stay until a restart).
        #[cfg(feature = "xmpp")]
        {
            core.jabber = Arc::clone(&old.core.jabber);
        }
        // pike's counts and blocks, and ratelimit's counters, go on; the new script's pipes
        // and queues replace those in use (rl.set_pipe/rl.set_queue changes included).
        core.pike = Arc::clone(&old.core.pike);
        core.ratelimit = Arc::clone(&old.core.ratelimit);
        core.ratelimit
            .configure(&crate::modules::ratelimit::definition(&core.params));
        // The dispatcher's sets and their health too (`serctl dispatcher reload` re-reads
        // the list; its parameters stay until a restart).
        #[cfg(feature = "dispatcher")]
        {
            core.dispatcher = Arc::clone(&old.core.dispatcher);
        }
        // rtpengine's daemons and the calls placed on them (its parameters stay until a
        // restart).
        #[cfg(feature = "rtpengine")]
        {
            core.rtpengine = Arc::clone(&old.core.rtpengine);
        }
        // msilo's silo, its counters and its deliverer (parameters stay until a restart).
        #[cfg(feature = "msilo")]
        {
            core.msilo = Arc::clone(&old.core.msilo);
        }
        // The resolver's cache survives a reload unless its servers changed.
        if config.dns_servers == old.config.dns_servers
            && config.dns_timeout_ms == old.config.dns_timeout_ms
        {
            core.resolver = Arc::clone(&old.core.resolver);
        }
        if config.debug != old.config.debug {
            crate::log::set_level(config.debug);
        }
        let number = old.number + 1;
        let next = Generation {
            number,
            core: Arc::new(core),
            script: loaded.script,
            config,
            modules: loaded.modules,
        };
        self.current.store(Arc::new(next));
        self.number.store(number, Ordering::Release);
        let mut msg = format!("{name}: reloaded (generation {number})");
        if !restart.is_empty() {
            msg.push_str(&format!(
                "; changed options that need a restart: {}",
                restart.join(", ")
            ));
        }
        // An operator's action: always logged, whatever the debug level.
        crate::log::always(crate::log::L_NOTICE, format_args!("{msg}"));
        Ok(msg)
    }
}

/// Global options a reload cannot apply.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let listen = |c: &Config| {
        c.listen
            .iter()
            .map(|l| (l.addr, l.port))
            .collect::<Vec<_>>()
    };
    if listen(old) != listen(new) || old.port != new.port {
        v.push("listen/port");
    }
    if old.children != new.children {
        v.push("children");
    }
    if old.fork != new.fork {
        v.push("fork");
    }
    if old.user != new.user || old.group != new.group {
        v.push("user/group");
    }
    if old.fifo != new.fifo || old.fifo_mode != new.fifo_mode {
        v.push("fifo");
    }
    if old.io_backend != new.io_backend {
        v.push("io_backend");
    }
    v
}
