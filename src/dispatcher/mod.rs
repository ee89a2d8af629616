//! The dispatcher's destination sets (Kamailio's dispatcher): read from a list file or a
//! database table, selected from by every shard, probed with OPTIONS, reloaded and changed
//! from the FIFO. The script's face is `modules::dispatcher`; the FIFO commands, metrics and
//! the prober thread are `mgmt::dispatcher`.
//!
//! [`Dispatcher`] is shared by every shard through `Core` (and kept across script reloads,
//! as the user location is). The sets are an immutable [`Sets`] swapped whole by a reload
//! (`ArcSwap`): a shard selecting reads one consistent list without a lock. Each
//! destination's health ([`health`]) and its calls in flight are atomics in a
//! [`DestState`] that a reload hands on to the same set id and URI, so reloading neither
//! brings a dead destination back nor loses the count of calls to a live one.
//!
//! Reading the list (a file or a table) and resolving destination names for
//! `ds_is_from_list` block: they happen at start and on the FIFO's thread, never on a shard.
//!
//! Files: `list` (the file format and table rows), `health` (the up/down state machine),
//! `select` (the algorithms), `probe` (when to probe, what a probe's result means).

pub mod health;
pub mod list;
pub mod probe;
pub mod select;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

// 64-bit atomics everywhere, armv5te included (no native ones there).
use portable_atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::Params;
use crate::sip::Transport;
use health::{Event, Health, State, Thresholds};
use list::Entry;
use select::Alg;

/// The list file when `ds_list_file` is not set.
pub const DEFAULT_LIST_FILE: &str = "/etc/ser/dispatcher.list";
/// The table when `ds_table` is not set.
pub const DEFAULT_TABLE: &str = "dispatcher";

/// Where the sets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// The table `table` of the database `url` (None: the default database).
    Table {
        url: Option<String>,
        table: String,
    },
}

/// Which destinations the prober sends OPTIONS to (`ds_probing_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbingMode {
    /// 0: those in state probing (down).
    Probing,
    /// 1: every destination that is not inactive or disabled.
    All,
}

/// The module's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: Source,
    pub thresholds: Thresholds,
    /// 0: no probing.
    pub ping_interval: Duration,
    pub probing_mode: ProbingMode,
    pub ping_method: String,
    pub ping_from: String,
    /// `ds_mark_failed_branches`: a request relayed to a destination that fails (no reply,
    /// unreachable, 503 from it) counts as one of its failures, as a failed probe does.
    pub mark_failed_branches: bool,
}

/// The module's parameters: (name, kind, default shown in messages). Kamailio's spellings
/// `list_file`, `table_name`, `ds_probing_threshhold` and `ds_inactive_threshhold` are
/// accepted too.
pub const PARAMS: &[(&str, bool)] = &[
    // (name, is an integer)
    ("ds_list_file", false),
    ("list_file", false),
    ("db_url", false),
    ("ds_table", false),
    ("table_name", false),
    ("ds_ping_interval", true),
    ("ds_probing_threshold", true),
    ("ds_probing_threshhold", true),
    ("ds_inactive_threshold", true),
    ("ds_inactive_threshhold", true),
    ("ds_probing_mode", true),
    ("ds_ping_method", false),
    ("ds_ping_from", false),
    ("ds_mark_failed_branches", true),
];

/// Checks one parameter's value when the script loads (the loader reports the modparam's
/// `file:line:col`).
pub fn check_param(name: &str, value: &ser_script::Value) -> Result<(), String> {
    use ser_script::Value as V;
    let int = match value {
        V::Int(i) => Some(*i),
        V::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    let s = match value {
        V::Str(s) | V::Ident(s) => Some(s.as_str()),
        _ => None,
    };
    match (name, int, s) {
        ("ds_ping_interval", Some(n), _) if !(0..=86_400).contains(&n) => Err(format!(
            "ds_ping_interval {n}: seconds from 0 (off) to 86400"
        )),
        (
            "ds_probing_threshold"
            | "ds_probing_threshhold"
            | "ds_inactive_threshold"
            | "ds_inactive_threshhold",
            Some(n),
            _,
        ) if !(1..=1000).contains(&n) => Err(format!("{name} {n}: a count from 1 to 1000")),
        ("ds_probing_mode", Some(n), _) if !(0..=1).contains(&n) => Err(format!(
            "ds_probing_mode {n}: 0 (probe destinations that are down) or 1 (all)"
        )),
        ("ds_mark_failed_branches", Some(n), _) if !(0..=1).contains(&n) => Err(format!(
            "ds_mark_failed_branches {n}: 1 (a failed relayed request counts against its \
             destination) or 0 (only ds_mark_dst marks)"
        )),
        ("ds_ping_method", _, Some(m))
            if m.is_empty()
                || !m.bytes().all(|b| b.is_ascii_uppercase())
                || matches!(m, "INVITE" | "ACK" | "CANCEL") =>
        {
            Err(format!(
                "ds_ping_method \"{m}\": an upper-case method other than INVITE, ACK, CANCEL"
            ))
        }
        ("ds_ping_from", _, Some(f)) if ser_parser::parse_uri(f).is_err() => {
            Err(format!("ds_ping_from \"{f}\" is not a SIP URI"))
        }
        ("ds_table" | "table_name", _, Some(t)) if !crate::db::schema::is_identifier(t) => Err(
            format!("{name} \"{t}\" must be letters, digits and '_' (a database table)"),
        ),
        ("ds_list_file" | "list_file", _, Some("")) => Err(format!("{name} is empty")),
        _ => Ok(()),
    }
}

impl Config {
    /// From the module parameters (already checked by [`check_param`]); a relative list file
    /// is taken from `start_dir`, where ser was started.
    pub fn from_params(p: &Params, start_dir: &Path) -> Config {
        let s = |a: &str, b: &str| p.str("dispatcher", a).or_else(|| p.str("dispatcher", b));
        let i = |a: &str, b: &str| p.int("dispatcher", a).or_else(|| p.int("dispatcher", b));
        let source = match p.str("dispatcher", "db_url") {
            Some(url) => Source::Table {
                url: Some(url.to_string()),
                table: s("ds_table", "table_name")
                    .unwrap_or(DEFAULT_TABLE)
                    .to_string(),
            },
            None => {
                let f = PathBuf::from(s("ds_list_file", "list_file").unwrap_or(DEFAULT_LIST_FILE));
                Source::File(if f.is_absolute() {
                    f
                } else {
                    start_dir.join(f)
                })
            }
        };
        let count = |a: &str, b: &str| {
            i(a, b)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n >= 1)
                .unwrap_or(1)
        };
        Config {
            source,
            thresholds: Thresholds {
                probing: count("ds_probing_threshold", "ds_probing_threshhold"),
                inactive: count("ds_inactive_threshold", "ds_inactive_threshhold"),
            },
            ping_interval: Duration::from_secs(
                i("ds_ping_interval", "ds_ping_interval")
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            ),
            probing_mode: if i("ds_probing_mode", "ds_probing_mode") == Some(1) {
                ProbingMode::All
            } else {
                ProbingMode::Probing
            },
            ping_method: s("ds_ping_method", "ds_ping_method")
                .unwrap_or("OPTIONS")
                .to_string(),
            ping_from: s("ds_ping_from", "ds_ping_from")
                .unwrap_or("sip:dispatcher@localhost")
                .to_string(),
            mark_failed_branches: i("ds_mark_failed_branches", "ds_mark_failed_branches")
                != Some(0),
        }
    }
}

/// What every shard shares of one destination, kept across reloads for the same set id and
/// URI: its health and its calls in flight.
#[derive(Debug)]
pub struct DestState {
    pub setid: u32,
    pub uri: String,
    pub health: Health,
    /// INVITE transactions relayed to it by the dispatcher whose final reply has not gone
    /// upstream yet (algorithm 10).
    pub load: AtomicU32,
    /// Times it was chosen (by a selection or a fail-over).
    pub selected: AtomicU64,
    /// Probes answered, and probes that got no answer in time.
    pub probes_ok: AtomicU64,
    pub probes_failed: AtomicU64,
    /// Requests relayed to it by the dispatcher that failed (no reply, unreachable, 503
    /// from it), counted whether `ds_mark_failed_branches` marks them or not.
    pub branch_failures: AtomicU64,
}

/// One destination of a set.
#[derive(Debug)]
pub struct Dest {
    pub uri: String,
    pub flags: u32,
    pub priority: i32,
    pub attrs: list::Attrs,
    /// `host[:port]` of the URI, what `ds_select_domain` writes into the Request-URI.
    pub hostport: String,
    /// The transport its requests use (the URI's `transport`, else UDP; TLS for sips).
    pub transport: Transport,
    /// Its addresses, for `ds_is_from_list` (resolved when the list was read).
    pub addrs: Vec<SocketAddr>,
    pub state: Arc<DestState>,
}

impl Dest {
    pub fn is_active(&self) -> bool {
        self.state.health.is_active()
    }
}

/// One destination set.
#[derive(Debug)]
pub struct Set {
    pub id: u32,
    /// By priority, highest first (list order among equals).
    pub dests: Vec<Arc<Dest>>,
    /// Algorithm 9's table (see [`select::weight_table`]).
    weights: Vec<u16>,
    /// Round robin position (algorithms 4, 9 and 10's ties).
    counter: AtomicUsize,
}

/// Every set, as read by one load of the list.
#[derive(Debug, Default)]
pub struct Sets {
    /// By set id.
    pub sets: Vec<Set>,
}

impl Sets {
    pub fn set(&self, id: u32) -> Option<&Set> {
        self.sets
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .and_then(|i| self.sets.get(i))
    }

    pub fn dests(&self) -> impl Iterator<Item = &Arc<Dest>> {
        self.sets.iter().flat_map(|s| s.dests.iter())
    }

    fn find_state(&self, setid: u32, uri: &str) -> Option<Arc<DestState>> {
        self.set(setid)?
            .dests
            .iter()
            .find(|d| d.uri.eq_ignore_ascii_case(uri))
            .map(|d| Arc::clone(&d.state))
    }
}

/// The destination sets and their settings (see the module documentation).
pub struct Dispatcher {
    /// None when the module is not loaded.
    pub cfg: Option<Config>,
    sets: ArcSwap<Sets>,
    db: Option<Arc<crate::db::Db>>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self {
            cfg: None,
            sets: ArcSwap::from_pointee(Sets::default()),
            db: None,
            reloading: Mutex::new(()),
        }
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("cfg", &self.cfg)
            .field("sets", &self.sets.load().sets.len())
            .finish()
    }
}

/// Starts the dispatcher when the script loaded the module: reads the list (an error stops
/// ser, with the list's `file:line:col`).
pub fn start(
    p: &Params,
    modules: &[String],
    dbs: &crate::db::OpenDbs,
    start_dir: &Path,
) -> Result<Arc<Dispatcher>, String> {
    if !modules.iter().any(|m| m == "dispatcher") {
        return Ok(Arc::new(Dispatcher::default()));
    }
    let cfg = Config::from_params(p, start_dir);
    let db = match &cfg.source {
        Source::Table { url, .. } => Some(dbs.get(url.as_deref()).ok_or_else(|| {
            format!(
                "dispatcher: database {} is not open",
                crate::db::redact(url.as_deref().unwrap_or(&dbs.default_url))
            )
        })?),
        Source::File(_) => None,
    };
    let d = Dispatcher {
        cfg: Some(cfg),
        sets: ArcSwap::from_pointee(Sets::default()),
        db,
        reloading: Mutex::new(()),
    };
    let n = d.reload()?;
    crate::log::always(crate::log::L_NOTICE, format_args!("dispatcher: {n}"));
    Ok(Arc::new(d))
}

/// `ser -c`: reads and checks the list file when the script loads the module (a table is
/// read only when ser starts); `Err` is the list's `file:line:col: what is wrong`.
pub fn check_list(p: &Params, modules: &[String], start_dir: &Path) -> Result<(), String> {
    if !modules.iter().any(|m| m == "dispatcher") {
        return Ok(());
    }
    let d = Dispatcher {
        cfg: Some(Config::from_params(p, start_dir)),
        ..Dispatcher::default()
    };
    match d.cfg.as_ref().map(|c| &c.source) {
        Some(Source::File(_)) => d.reload().map(|_| ()),
        _ => Ok(()),
    }
}

impl Dispatcher {
    pub fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// The sets now (a lock-free snapshot).
    pub fn sets(&self) -> arc_swap::Guard<Arc<Sets>> {
        self.sets.load()
    }

    pub fn thresholds(&self) -> Thresholds {
        self.cfg.as_ref().map(|c| c.thresholds).unwrap_or_default()
    }

    /// `ds_mark_failed_branches` (on unless set to 0).
    pub fn marks_failed_branches(&self) -> bool {
        self.cfg.as_ref().map_or(true, |c| c.mark_failed_branches)
    }

    /// Reads the list again and swaps it in whole; a destination kept (same set, same URI)
    /// keeps its health and calls in flight, a new one starts in the state its flags say.
    /// `Err` (the list's `file:line:col`, or the database's error) leaves the running sets.
    /// Blocks (file, database, DNS): never call it on a shard.
    pub fn reload(&self) -> Result<String, String> {
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(cfg) = &self.cfg else {
            return Err(String::from("the dispatcher module is not loaded"));
        };
        let (entries, from) = self.read(cfg)?;
        let old = self.sets.load_full();
        let sets = build(entries, &old);
        let msg = format!(
            "{} destination(s) in {} set(s) from {from}",
            sets.dests().count(),
            sets.sets.len()
        );
        self.sets.store(Arc::new(sets));
        Ok(msg)
    }

    fn read(&self, cfg: &Config) -> Result<(Vec<Entry>, String), String> {
        match &cfg.source {
            Source::File(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("dispatcher: cannot read {name}: {e}"))?;
                let v = list::parse(&name, &text).map_err(|e| e.to_string())?;
                Ok((v, name))
            }
            Source::Table { table, .. } => {
                let db = self
                    .db
                    .as_ref()
                    .ok_or_else(|| String::from("dispatcher: no database"))?;
                let sql =
                    format!("SELECT id, setid, destination, flags, priority, attrs FROM {table}");
                let rows = db
                    .with_conn(|c| c.query(&sql, &[]))
                    .map_err(|e| format!("dispatcher: table {table}: {e}"))?;
                let text: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| r.iter().map(crate::db::Value::text).collect())
                    .collect();
                let col = |r: &'_ Vec<String>, i: usize| -> String {
                    r.get(i).cloned().unwrap_or_default()
                };
                let owned: Vec<(i64, [String; 5])> = text
                    .iter()
                    .map(|r| {
                        (
                            col(r, 0).parse().unwrap_or(0),
                            [col(r, 1), col(r, 2), col(r, 3), col(r, 4), col(r, 5)],
                        )
                    })
                    .collect();
                let rows: Vec<list::Row<'_>> = owned
                    .iter()
                    .map(|(id, c)| list::Row {
                        id: *id,
                        setid: &c[0],
                        destination: &c[1],
                        flags: &c[2],
                        priority: &c[3],
                        attrs: &c[4],
                    })
                    .collect();
                let v = list::from_rows(table, &rows).map_err(|e| e.to_string())?;
                Ok((v, format!("table {table} of {}", db.name())))
            }
        }
    }

    /// The destinations to try for a request of `set`: chosen first, then the fail-over
    /// candidates; None when the set does not exist or has no active destination.
    pub fn select(&self, set: u32, alg: Alg, hash: u32) -> Option<Vec<Arc<Dest>>> {
        let sets = self.sets.load();
        let s = sets.set(set)?;
        let counter = if alg.uses_counter() {
            s.counter.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let active = |i: usize| s.dests.get(i).is_some_and(|d| d.is_active());
        let load = |i: usize| {
            s.dests
                .get(i)
                .map_or(u32::MAX, |d| d.state.load.load(Ordering::Relaxed))
        };
        let weight_of = |i: usize| s.dests.get(i).and_then(|d| d.attrs.weight).unwrap_or(0);
        let order = select::order(
            alg,
            &select::Input {
                n: s.dests.len(),
                hash,
                counter,
                weights: &s.weights,
                weight_of: &weight_of,
                active: &active,
                load: &load,
            },
        );
        if order.is_empty() {
            return None;
        }
        Some(
            order
                .into_iter()
                .filter_map(|i| s.dests.get(i).cloned())
                .collect(),
        )
    }

    /// Applies `ev` to a destination; a change of state is logged (once: by whoever made it).
    pub fn event(&self, d: &DestState, ev: Event, why: &str) {
        apply_event(d, ev, self.thresholds(), why);
    }

    /// The operator sets a destination's state (`serctl dispatcher set`).
    pub fn set_state(&self, setid: u32, uri: &str, state: State) -> Result<(), String> {
        let st = self
            .sets
            .load()
            .find_state(setid, uri)
            .ok_or_else(|| format!("no destination {uri} in set {setid}"))?;
        self.event(&st, Event::Set(state), "set by the operator");
        Ok(())
    }

    /// The destinations the prober sends to now (see [`ProbingMode`]).
    pub fn probe_targets(&self) -> Vec<Arc<Dest>> {
        let mode = self
            .cfg
            .as_ref()
            .map_or(ProbingMode::Probing, |c| c.probing_mode);
        self.sets
            .load()
            .dests()
            .filter(|d| match d.state.health.get().state {
                State::Probing => true,
                State::Active => mode == ProbingMode::All,
                State::Inactive | State::Disabled => false,
            })
            .cloned()
            .collect()
    }

    /// `ds_is_from_list([set])`: is `src` (over `transport`) one of the destinations?
    pub fn is_from(&self, set: Option<u32>, transport: Transport, src: SocketAddr) -> bool {
        let src = unmapped(src);
        let sets = self.sets.load();
        let hit = |s: &Set| {
            s.dests
                .iter()
                .any(|d| d.transport == transport && d.addrs.contains(&src))
        };
        match set {
            Some(id) => sets.set(id).is_some_and(hit),
            None => sets.sets.iter().any(hit),
        }
    }

    /// `dispatcher list`: one line per set and destination (Kamailio's flags, the state,
    /// priority, attributes, calls in flight).
    pub fn list_lines(&self) -> Vec<String> {
        let sets = self.sets.load();
        let mut v = Vec::new();
        for s in &sets.sets {
            v.push(format!("SET {}", s.id));
            for d in &s.dests {
                let h = d.state.health.get();
                v.push(format!(
                    "    {} flags={} state={} priority={} attrs={} load={} selected={}",
                    d.uri,
                    h.state.flags(),
                    h.state,
                    d.priority,
                    if d.attrs.raw.is_empty() {
                        "-"
                    } else {
                        &d.attrs.raw
                    },
                    d.state.load.load(Ordering::Relaxed),
                    d.state.selected.load(Ordering::Relaxed)
                ));
            }
        }
        v
    }
}

/// Applies `ev` to a destination under `th` (what [`Dispatcher::event`] does, for callers
/// that keep the thresholds: a transaction's selection); a change of state is logged once,
/// by whoever made it, with `why`.
pub fn apply_event(d: &DestState, ev: Event, th: Thresholds, why: &str) {
    if let Some((from, to)) = d.health.apply(ev, th) {
        crate::log::always(
            crate::log::L_NOTICE,
            format_args!(
                "dispatcher: set {} destination {}: {from} -> {to} ({why})",
                d.setid, d.uri
            ),
        );
    }
}

fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

/// The sets of `entries`, taking the state of destinations `old` already has.
fn build(entries: Vec<Entry>, old: &Sets) -> Sets {
    let mut ids: Vec<u32> = entries.iter().map(|e| e.setid).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut sets = Vec::with_capacity(ids.len());
    for id in ids {
        let mut dests: Vec<Arc<Dest>> = entries
            .iter()
            .filter(|e| e.setid == id)
            .map(|e| Arc::new(dest(e, old)))
            .collect();
        // Highest priority first; the sort is stable, so list order among equals.
        dests.sort_by_key(|d| std::cmp::Reverse(d.priority));
        let weights =
            select::weight_table(&dests.iter().map(|d| d.attrs.weight).collect::<Vec<_>>());
        sets.push(Set {
            id,
            dests,
            weights,
            counter: AtomicUsize::new(0),
        });
    }
    Sets { sets }
}

fn dest(e: &Entry, old: &Sets) -> Dest {
    let state = old.find_state(e.setid, &e.uri).unwrap_or_else(|| {
        Arc::new(DestState {
            setid: e.setid,
            uri: e.uri.clone(),
            health: Health::new(State::from_flags(e.flags)),
            load: AtomicU32::new(0),
            selected: AtomicU64::new(0),
            probes_ok: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            branch_failures: AtomicU64::new(0),
        })
    });
    let (hostport, transport, addrs) = match ser_parser::parse_uri(&e.uri) {
        Ok(u) => {
            let secure = matches!(u.scheme, ser_parser::Scheme::Sips);
            let transport = match u.param("transport").flatten() {
                Some(t) => Transport::from_name(t).unwrap_or(Transport::Udp),
                None if secure => Transport::Tls,
                None => Transport::Udp,
            };
            let hostport = match u.port {
                Some(p) => format!("{}:{p}", u.host_str),
                None => u.host_str.to_string(),
            };
            let port = u.port.unwrap_or(if secure { 5061 } else { 5060 });
            let host = u.host_str.trim_start_matches('[').trim_end_matches(']');
            let addrs =
                if e.flags & list::FLAG_NO_DNS != 0 && host.parse::<std::net::IpAddr>().is_err() {
                    Vec::new()
                } else {
                    match crate::config::resolve_at_start(host) {
                        Ok(ips) => ips
                            .into_iter()
                            .map(|ip| SocketAddr::new(ip, port))
                            .collect(),
                        Err(why) => {
                            crate::warn!(
                                "dispatcher: {} ({}): {why}; ds_is_from_list will not know it",
                                e.uri,
                                e.origin
                            );
                            Vec::new()
                        }
                    }
                };
            (hostport, transport, addrs)
        }
        // The list parser checked every URI.
        Err(_) => (String::new(), Transport::Udp, Vec::new()),
    };
    Dest {
        uri: e.uri.clone(),
        flags: e.flags,
        priority: e.priority,
        attrs: e.attrs.clone(),
        hostport,
        transport,
        addrs,
        state,
    }
}

#[cfg(test)]
mod tests;
