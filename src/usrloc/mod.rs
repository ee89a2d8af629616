//! User location: the bindings REGISTERs leave (`save`) and calls look up (`lookup`), in
//! tables by name (`location`, `aliases`, one per domain), shared by every shard.
//!
//! [`Usrloc`] is created once by `main` (an `Arc` carried by `Core` and handed to every new
//! `Core` on a reload). Each [`Table`] is [`SHARDS`] `RwLock<HashMap<AOR, Vec<Binding>>>`
//! picked by a hash of the address-of-record: a lookup takes one read lock for as long as
//! it takes to copy the contact strings, a save one write lock for the RFC 3261 10.3
//! computation ([`rfc3261::process`], sans-IO); no I/O ever happens under a lock.
//!
//! Persistence is usrloc's `db_mode` of the seeds:
//! - 0: memory only;
//! - 1: write-through: `save` changes memory, then the database on its workers, and the 200 OK
//!   goes only once the row is written (a binding acknowledged survives `kill -9`);
//! - 2: write-back: changed AORs are marked dirty and written every `timer_interval`, by
//!   `ul_flush`, and on SIGTERM ([`Usrloc::shutdown`]);
//! - 3: database only: `save` and `lookup` read and write the database (suspending the
//!   script off the shard); several servers can share it.
//!
//! In modes 1 and 2 the tables load from the database at start. Expired bindings are removed
//! by a timer thread every `timer_interval` seconds (lookups skip them in between).
//!
//! The AOR is the user name, lower-cased (SER 0.8), or `user@domain` with usrloc's
//! `use_domain` set ([`Usrloc::aor`]). What this does not do: replication of contacts
//! (`t_replicate` does that in the script), `Path`. A binding saved after nathelper's
//! `fix_nated_register()` keeps where its REGISTER came from ([`Received`]) and the NAT flag
//! ([`FL_NAT`]), in memory and in the `received`, `socket` and `flags` columns.
//!
//! A binding saved from a REGISTER that came over a stream connection keeps its flow
//! ([`Binding::flow`], memory only): lookup hands it out with the contact, and the binding
//! goes when the server reports the connection closed ([`Usrloc::flow_closed`]). With
//! db_mode 3 bindings live in the database only, so they have no flow.

pub mod persist;
pub mod rfc3261;

use portable_atomic::AtomicU64;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use rfc3261::{Binding, Reach, Received, FL_NAT};

use crate::db::{Db, DbError};
use crate::sip::ConnId;

/// Lock shards per table.
pub const SHARDS: usize = 64;

/// usrloc's `db_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbMode {
    Memory,
    WriteThrough,
    WriteBack,
    DbOnly,
}

impl DbMode {
    pub fn from_param(n: i64) -> Result<Self, StartError> {
        Ok(match n {
            0 => Self::Memory,
            1 => Self::WriteThrough,
            2 => Self::WriteBack,
            3 => Self::DbOnly,
            _ => return Err(StartError::DbMode(n)),
        })
    }

    pub fn number(self) -> u8 {
        match self {
            Self::Memory => 0,
            Self::WriteThrough => 1,
            Self::WriteBack => 2,
            Self::DbOnly => 3,
        }
    }
}

/// usrloc's parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub db_mode: DbMode,
    pub use_domain: bool,
    /// Seconds between expiry runs (and write-back flushes).
    pub timer_interval: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            db_mode: DbMode::Memory,
            use_domain: false,
            timer_interval: 60,
        }
    }
}

/// An address-of-record: the key, and the user and domain columns it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aor {
    pub key: String,
    pub user: String,
    pub domain: String,
}

/// Unix seconds now (the registrar's `now`; the sans-IO core takes it as an argument).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type Shard = RwLock<HashMap<String, Vec<Binding>>>;

/// A table's name and its AORs with their bindings (`ul_dump`).
pub type TableDump = (String, Vec<(String, Vec<Binding>)>);

/// One usrloc table.
pub struct Table {
    pub name: String,
    shards: Box<[Shard]>,
    /// AORs changed since the last write-back (db_mode 2).
    dirty: Mutex<HashSet<String>>,
    /// Bindings removed because they expired.
    pub expired: AtomicU64,
    /// REGISTERs that changed this table.
    pub saved: AtomicU64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.name)
    }
}

impl Table {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            dirty: Mutex::new(HashSet::new()),
            expired: AtomicU64::new(0),
            saved: AtomicU64::new(0),
        }
    }

    fn shard(&self, aor: &str) -> &Shard {
        let h = crate::sip::hash64(&[aor.as_bytes()]) as usize;
        &self.shards[h % self.shards.len()]
    }

    /// The AOR's bindings (a copy; expired ones included until the timer runs).
    pub fn get(&self, aor: &str) -> Vec<Binding> {
        let s = self.shard(aor).read().unwrap_or_else(|p| p.into_inner());
        s.get(aor).cloned().unwrap_or_default()
    }

    /// The contacts of the AOR's live bindings in lookup order (q, then newest first), each
    /// with the flow it registered over and where its REGISTER came from.
    pub fn lookup(&self, aor: &str, now: u64) -> Vec<Reach> {
        let s = self.shard(aor).read().unwrap_or_else(|p| p.into_inner());
        match s.get(aor) {
            Some(v) => rfc3261::lookup_order(v, now)
                .into_iter()
                .map(Reach::from)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Removes the bindings whose flow is connection `conn`; returns each AOR that lost
    /// some, with the contacts it lost.
    pub fn flow_closed(&self, conn: ConnId) -> Vec<(String, Vec<String>)> {
        let on_conn = |b: &Binding| b.flow.is_some_and(|f| f.conn == Some(conn));
        let mut gone = Vec::new();
        for shard in self.shards.iter() {
            // Look first with a read lock: most shards hold no binding of this connection.
            let any = {
                let s = shard.read().unwrap_or_else(|p| p.into_inner());
                s.values().any(|v| v.iter().any(on_conn))
            };
            if !any {
                continue;
            }
            let mut s = shard.write().unwrap_or_else(|p| p.into_inner());
            s.retain(|aor, v| {
                let lost: Vec<String> = v
                    .iter()
                    .filter(|b| on_conn(b))
                    .map(|b| b.contact.clone())
                    .collect();
                if !lost.is_empty() {
                    v.retain(|b| !on_conn(b));
                    gone.push((aor.clone(), lost));
                }
                !v.is_empty()
            });
        }
        gone
    }

    /// Runs `f` on the AOR's bindings under its write lock; an AOR left without bindings is
    /// removed. `f` must be quick (no I/O).
    pub fn update<R>(&self, aor: &str, f: impl FnOnce(&mut Vec<Binding>) -> R) -> R {
        let mut s = self.shard(aor).write().unwrap_or_else(|p| p.into_inner());
        let v = s.entry(aor.to_string()).or_default();
        let r = f(v);
        if v.is_empty() {
            s.remove(aor);
        }
        r
    }

    /// Removes every binding of the AOR; false when it had none.
    pub fn remove_aor(&self, aor: &str) -> bool {
        let mut s = self.shard(aor).write().unwrap_or_else(|p| p.into_inner());
        s.remove(aor).is_some()
    }

    /// Removes expired bindings; returns the AORs that lost some.
    pub fn expire(&self, now: u64) -> Vec<String> {
        let mut touched = Vec::new();
        for shard in self.shards.iter() {
            // Look first with a read lock: most passes find nothing to do.
            let any = {
                let s = shard.read().unwrap_or_else(|p| p.into_inner());
                s.values().any(|v| v.iter().any(|b| !b.alive(now)))
            };
            if !any {
                continue;
            }
            let mut s = shard.write().unwrap_or_else(|p| p.into_inner());
            s.retain(|aor, v| {
                let before = v.len();
                v.retain(|b| b.alive(now));
                if v.len() != before {
                    self.expired
                        .fetch_add((before - v.len()) as u64, Ordering::Relaxed);
                    touched.push(aor.clone());
                }
                !v.is_empty()
            });
        }
        touched
    }

    /// Every AOR with its bindings (a copy).
    pub fn snapshot(&self) -> Vec<(String, Vec<Binding>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|p| p.into_inner());
            out.extend(s.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// (AORs, bindings).
    pub fn counts(&self) -> (u64, u64) {
        let mut aors = 0;
        let mut contacts = 0;
        for shard in self.shards.iter() {
            let s = shard.read().unwrap_or_else(|p| p.into_inner());
            aors += s.len() as u64;
            contacts += s.values().map(|v| v.len() as u64).sum::<u64>();
        }
        (aors, contacts)
    }

    pub fn mark_dirty(&self, aor: &str) {
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(aor.to_string());
        }
    }

    fn take_dirty(&self) -> Vec<String> {
        match self.dirty.lock() {
            Ok(mut d) => d.drain().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Table names the loaded scripts use (`save("x")`, `lookup("x")`), noted by the binders so
/// that they are created and loaded at start.
static SCRIPT_TABLES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Notes a table name a script uses.
pub fn note_table(name: &str) {
    if let Ok(mut t) = SCRIPT_TABLES.lock() {
        t.insert(name.to_string());
    }
}

/// The user location of the server.
pub struct Usrloc {
    pub cfg: Config,
    /// The database of db_mode 1-3.
    pub db: Option<Arc<Db>>,
    tables: RwLock<HashMap<String, Arc<Table>>>,
    /// Whether the usrloc module is loaded (the FIFO commands answer only then).
    pub enabled: bool,
}

impl std::fmt::Debug for Usrloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Usrloc(db_mode {})", self.cfg.db_mode.number())
    }
}

/// A user location for a server without usrloc: empty, and its FIFO commands are not there.
impl Default for Usrloc {
    fn default() -> Self {
        let mut u = Self::new(Config::default(), None);
        u.enabled = false;
        u
    }
}

impl Usrloc {
    pub fn new(cfg: Config, db: Option<Arc<Db>>) -> Self {
        Self {
            cfg,
            db,
            tables: RwLock::new(HashMap::new()),
            enabled: true,
        }
    }

    /// The table `name`, created (empty) when it is new.
    pub fn table(&self, name: &str) -> Arc<Table> {
        if let Some(t) = self.find(name) {
            return t;
        }
        let mut m = self.tables.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            m.entry(name.to_string())
                .or_insert_with(|| Arc::new(Table::new(name))),
        )
    }

    pub fn find(&self, name: &str) -> Option<Arc<Table>> {
        let m = self.tables.read().unwrap_or_else(|p| p.into_inner());
        m.get(name).cloned()
    }

    /// Every table, by name.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        let m = self.tables.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<Table>> = m.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Table names for the database: `location`, `aliases`, those the scripts use and those
    /// in memory.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: BTreeSet<String> = ["location", "aliases"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Ok(t) = SCRIPT_TABLES.lock() {
            names.extend(t.iter().cloned());
        }
        names.extend(self.tables().iter().map(|t| t.name.clone()));
        names.into_iter().collect()
    }

    /// The AOR of a user at a domain: `user` (SER 0.8), or `user@domain` with `use_domain`;
    /// lower-cased.
    pub fn aor(&self, user: &str, domain: &str) -> Aor {
        let user = user.to_ascii_lowercase();
        if self.cfg.use_domain && !domain.is_empty() {
            let domain = domain.to_ascii_lowercase();
            Aor {
                key: format!("{user}@{domain}"),
                user,
                domain,
            }
        } else {
            Aor {
                key: user.clone(),
                user,
                domain: String::new(),
            }
        }
    }

    /// The AOR of a FIFO/serctl user name (`user` or `user@domain`).
    pub fn aor_of_name(&self, name: &str) -> Aor {
        match name.rsplit_once('@') {
            Some((u, d)) if self.cfg.use_domain => self.aor(u, d),
            _ => self.aor(name, ""),
        }
    }

    /// The AOR of a stored key.
    fn aor_of_key(&self, key: &str) -> Aor {
        self.aor_of_name(key)
    }

    fn db(&self) -> Result<&Arc<Db>, DbError> {
        self.db.as_ref().ok_or(DbError::Closed)
    }

    /// Writes the AORs changed since the last flush (db_mode 2; nothing to do otherwise).
    /// Returns how many AORs were written. A failure marks them dirty again.
    pub fn flush(&self) -> Result<usize, DbError> {
        if self.cfg.db_mode != DbMode::WriteBack {
            return Ok(0);
        }
        let db = self.db()?;
        let mut n = 0;
        for t in self.tables() {
            let dirty = t.take_dirty();
            if dirty.is_empty() {
                continue;
            }
            let rows: Vec<(Aor, Vec<Binding>)> = dirty
                .iter()
                .map(|k| (self.aor_of_key(k), t.get(k)))
                .collect();
            let r = db.with_conn(|c| persist::write_aors(c, &t.name, &rows));
            if let Err(e) = r {
                for k in &dirty {
                    t.mark_dirty(k);
                }
                return Err(e);
            }
            n += rows.len();
        }
        Ok(n)
    }

    /// Creates the tables in the database and, in db_mode 1 and 2, loads their bindings.
    pub fn load(&self) -> Result<usize, DbError> {
        let Some(db) = &self.db else {
            return Ok(0);
        };
        let now = now();
        let mut n = 0;
        for name in self.table_names() {
            if let Err(e) = db.with_conn(|c| c.exec(&crate::db::schema::usrloc_table(&name), &[])) {
                crate::warn!("usrloc: cannot create table {name} in {}: {e}", db.name());
            }
            db.with_conn(|c| persist::migrate(c, &name))?;
            if self.cfg.db_mode == DbMode::DbOnly {
                continue;
            }
            let rows = db.with_conn(|c| persist::load_table(c, &name))?;
            let t = self.table(&name);
            for (user, domain, b) in rows {
                if !b.alive(now) {
                    continue;
                }
                let aor = self.aor(&user, &domain);
                t.update(&aor.key, |v| {
                    v.retain(|x| !rfc3261::same_contact(&x.contact, &b.contact));
                    v.push(b);
                });
                n += 1;
            }
        }
        Ok(n)
    }

    /// One timer pass: expired bindings go (from memory and, in modes 1 and 3, from the
    /// database); db_mode 2 writes what changed.
    pub fn timer(&self, now: u64) {
        match self.cfg.db_mode {
            DbMode::DbOnly | DbMode::WriteThrough => {
                if self.cfg.db_mode == DbMode::WriteThrough {
                    for t in self.tables() {
                        t.expire(now);
                    }
                }
                if let Ok(db) = self.db() {
                    for name in self.table_names() {
                        if let Err(e) = db.with_conn(|c| persist::delete_expired(c, &name, now)) {
                            crate::warn!("usrloc: expiring {name}: {e}");
                        }
                    }
                }
            }
            DbMode::Memory => {
                for t in self.tables() {
                    t.expire(now);
                }
            }
            DbMode::WriteBack => {
                for t in self.tables() {
                    for aor in t.expire(now) {
                        t.mark_dirty(&aor);
                    }
                }
                if let Err(e) = self.flush() {
                    crate::warn!("usrloc: write-back: {e}");
                }
            }
        }
    }

    /// Connection `conn` closed: every binding registered over it goes, from every table
    /// (nothing can reach its UA any more; it registers again over a new connection).
    /// Returns how many went. Never blocks, so the shard that owns the connection calls it:
    /// db_mode 2 marks the AORs for the next write-back, db_mode 1 hands the deletes to the
    /// database's workers (fire and forget); db_mode 3 keeps no flows.
    pub fn flow_closed(&self, conn: ConnId) -> usize {
        if self.cfg.db_mode == DbMode::DbOnly {
            return 0;
        }
        let mut n = 0;
        for t in self.tables() {
            for (aor, contacts) in t.flow_closed(conn) {
                n += contacts.len();
                match self.cfg.db_mode {
                    DbMode::WriteBack => t.mark_dirty(&aor),
                    DbMode::WriteThrough => self.delete_later(&t.name, &aor, contacts),
                    _ => {}
                }
            }
        }
        if n > 0 {
            crate::debug!(
                "usrloc: connection {} closed: {n} binding(s) removed",
                conn.get()
            );
        }
        n
    }

    /// Deletes an AOR's `contacts` from the database on its workers (db_mode 1).
    fn delete_later(&self, table: &str, key: &str, contacts: Vec<String>) {
        let Some(db) = &self.db else {
            return;
        };
        let table = table.to_string();
        let aor = self.aor_of_key(key);
        let job: crate::db::Job = Box::new(move |db: &Db| {
            for c in &contacts {
                if let Err(e) = db.with_conn(|conn| persist::delete(conn, &table, &aor, Some(c))) {
                    crate::warn!("usrloc: removing {c} of a closed connection: {e}");
                }
            }
        });
        if let Err(e) = db.submit(job) {
            crate::warn!("usrloc: the bindings of a closed connection stay in the database: {e}");
        }
    }

    /// At SIGTERM: db_mode 2 writes its cache.
    pub fn shutdown(&self) {
        match self.flush() {
            Ok(0) => {}
            Ok(n) => crate::log::always(
                crate::log::L_NOTICE,
                format_args!("usrloc: {n} AOR(s) written to the database at shutdown"),
            ),
            Err(e) => crate::error!("usrloc: cannot write the cache at shutdown: {e}"),
        }
    }

    // ---- blocking operations for the FIFO commands (never on a shard) ----

    /// The AOR's bindings (db_mode 3: from the database).
    pub fn get_blocking(&self, table: &str, aor: &Aor) -> Result<Vec<Binding>, DbError> {
        if self.cfg.db_mode == DbMode::DbOnly {
            let db = self.db()?;
            return db.with_conn(|c| persist::get(c, table, aor));
        }
        Ok(self
            .find(table)
            .map(|t| t.get(&aor.key))
            .unwrap_or_default())
    }

    /// Adds or replaces one binding.
    pub fn add_blocking(&self, table: &str, aor: &Aor, b: Binding) -> Result<(), DbError> {
        if self.cfg.db_mode != DbMode::DbOnly {
            let t = self.table(table);
            t.update(&aor.key, |v| {
                v.retain(|x| !rfc3261::same_contact(&x.contact, &b.contact));
                v.push(b.clone());
            });
            if self.cfg.db_mode == DbMode::WriteBack {
                t.mark_dirty(&aor.key);
            }
        }
        if matches!(self.cfg.db_mode, DbMode::WriteThrough | DbMode::DbOnly) {
            let db = self.db()?;
            db.with_conn(|c| persist::upsert(c, table, aor, &b))?;
        }
        Ok(())
    }

    /// Removes the AOR's bindings (`contact` None: all of them); false when none matched.
    pub fn remove_blocking(
        &self,
        table: &str,
        aor: &Aor,
        contact: Option<&str>,
    ) -> Result<bool, DbError> {
        let mut found = false;
        if self.cfg.db_mode != DbMode::DbOnly {
            if let Some(t) = self.find(table) {
                found = match contact {
                    None => t.remove_aor(&aor.key),
                    Some(c) => t.update(&aor.key, |v| {
                        let before = v.len();
                        v.retain(|x| !rfc3261::same_contact(&x.contact, c));
                        v.len() != before
                    }),
                };
                if found && self.cfg.db_mode == DbMode::WriteBack {
                    t.mark_dirty(&aor.key);
                }
            }
        }
        if matches!(self.cfg.db_mode, DbMode::WriteThrough | DbMode::DbOnly) {
            let db = self.db()?;
            let n = db.with_conn(|c| persist::delete(c, table, aor, contact))?;
            found |= n > 0;
        }
        Ok(found)
    }

    /// Every table's AORs and bindings (db_mode 3: the database's).
    pub fn dump_blocking(&self) -> Result<Vec<TableDump>, DbError> {
        if self.cfg.db_mode == DbMode::DbOnly {
            let db = self.db()?;
            let mut out = Vec::new();
            for name in self.table_names() {
                let rows = db.with_conn(|c| persist::load_table(c, &name))?;
                let mut by: Vec<(String, Vec<Binding>)> = Vec::new();
                for (u, d, b) in rows {
                    let key = self.aor(&u, &d).key;
                    match by.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push(b),
                        None => by.push((key, vec![b])),
                    }
                }
                out.push((name, by));
            }
            return Ok(out);
        }
        Ok(self
            .tables()
            .iter()
            .map(|t| (t.name.clone(), t.snapshot()))
            .collect())
    }
}

/// Why usrloc could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("usrloc: db_mode {0} is not 0, 1, 2 or 3")]
    DbMode(i64),
    #[error("usrloc: db_mode {mode} needs a database, and {url} is not open")]
    NoDatabase { mode: u8, url: String },
    #[error("usrloc: cannot load the bindings from {name}: {err}")]
    Load { name: String, err: DbError },
    #[error("usrloc: cannot start the timer: {0}")]
    Timer(std::io::Error),
}

/// Sets up usrloc for a server that loaded it: its parameters, its database (from the open
/// ones, `dbs`), the bindings stored there (db_mode 1 and 2), and the timer thread. Called by
/// `main` once the databases are open; the result goes into `Core::usrloc`.
pub fn start(
    p: &crate::config::Params,
    modules: &[String],
    dbs: &crate::db::OpenDbs,
) -> Result<Arc<Usrloc>, StartError> {
    if !modules.iter().any(|m| m == "usrloc" || m == "registrar") {
        return Ok(Arc::new(Usrloc::default()));
    }
    let cfg = Config {
        db_mode: DbMode::from_param(p.int("usrloc", "db_mode").unwrap_or(0))?,
        use_domain: p.int("usrloc", "use_domain").unwrap_or(0) != 0,
        timer_interval: p
            .int("usrloc", "timer_interval")
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(60),
    };
    let db = if cfg.db_mode == DbMode::Memory {
        None
    } else {
        let url = p.str("usrloc", "db_url");
        Some(dbs.get(url).ok_or_else(|| StartError::NoDatabase {
            mode: cfg.db_mode.number(),
            url: crate::db::redact(url.unwrap_or(&dbs.default_url)),
        })?)
    };
    let interval = cfg.timer_interval;
    let ul = Arc::new(Usrloc::new(cfg, db));
    let n = ul.load().map_err(|err| StartError::Load {
        name: ul
            .db
            .as_ref()
            .map(|d| d.name().to_string())
            .unwrap_or_default(),
        err,
    })?;
    if n > 0 {
        crate::notice!("usrloc: {n} binding(s) loaded from the database");
    }
    let weak = Arc::downgrade(&ul);
    std::thread::Builder::new()
        .name(String::from("ser-usrloc-timer"))
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(interval));
            match weak.upgrade() {
                Some(ul) => ul.timer(now()),
                None => return,
            }
        })
        .map_err(StartError::Timer)?;
    Ok(ul)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(contact: &str, expires: u64) -> Binding {
        Binding {
            contact: contact.into(),
            expires,
            q: 1000,
            callid: "c".into(),
            cseq: 1,
            last_modified: 0,
            user_agent: String::new(),
            flow: None,
            received: None,
            flags: 0,
        }
    }

    #[test]
    fn tables_update_lookup_expire() {
        let ul = Usrloc::new(Config::default(), None);
        let t = ul.table("location");
        t.update("alice", |v| v.push(b("sip:a@h", 100)));
        t.update("alice", |v| v.push(b("sip:b@h", 50)));
        let contacts = |now| -> Vec<String> {
            t.lookup("alice", now)
                .into_iter()
                .map(|r| r.contact)
                .collect()
        };
        assert_eq!(contacts(10), ["sip:a@h", "sip:b@h"]);
        assert_eq!(contacts(60), ["sip:a@h"]);
        assert_eq!(t.counts(), (1, 2));
        assert_eq!(t.expire(60), ["alice"]);
        assert_eq!(t.expired.load(Ordering::Relaxed), 1);
        assert_eq!(t.expire(200), ["alice"]);
        assert_eq!(t.counts(), (0, 0));
        assert!(ul.find("aliases").is_none());
    }

    #[test]
    fn a_closed_connection_takes_its_bindings_from_every_table() {
        use crate::sip::{Dest, Transport};
        let on = |contact: &str, conn: u64| Binding {
            flow: Some(Dest {
                transport: Transport::Tls,
                socket: 2,
                addr: "198.51.100.9:40000".parse().expect("addr"),
                conn: Some(ConnId::new(1, conn)),
            }),
            ..b(contact, 100)
        };
        let cfg = Config {
            db_mode: DbMode::WriteBack,
            ..Config::default()
        };
        let ul = Usrloc::new(cfg, None);
        let loc = ul.table("location");
        let other = ul.table("other");
        loc.update("alice", |v| {
            v.push(on("sip:a@h;transport=tls", 7));
            v.push(on("sip:a2@h;transport=tls", 8));
            v.push(b("sip:a3@h", 100));
        });
        loc.update("bob", |v| v.push(on("sip:b@h;transport=tls", 7)));
        other.update("carol", |v| v.push(on("sip:c@h;transport=tls", 7)));
        assert_eq!(ul.flow_closed(ConnId::new(1, 99)), 0);
        assert_eq!(ul.flow_closed(ConnId::new(2, 7)), 0, "another shard's 7th");
        assert_eq!(ul.flow_closed(ConnId::new(1, 7)), 3);
        let contacts = |t: &Table, aor| -> Vec<String> {
            t.lookup(aor, 10).into_iter().map(|r| r.contact).collect()
        };
        assert_eq!(
            contacts(&loc, "alice"),
            ["sip:a2@h;transport=tls", "sip:a3@h"]
        );
        assert!(contacts(&loc, "bob").is_empty());
        assert_eq!(loc.counts(), (1, 2), "bob's AOR went with its last binding");
        assert_eq!(other.counts(), (0, 0));
        // db_mode 2: what changed is written at the next flush.
        let mut dirty = loc.take_dirty();
        dirty.sort();
        assert_eq!(dirty, ["alice", "bob"]);
        assert_eq!(other.take_dirty(), ["carol"]);
        assert_eq!(ul.flow_closed(ConnId::new(1, 7)), 0);
    }

    #[test]
    fn aor_with_and_without_domain() {
        let ul = Usrloc::default();
        assert_eq!(ul.aor("Alice", "Foo.Bar").key, "alice");
        let cfg = Config {
            use_domain: true,
            ..Config::default()
        };
        let ul = Usrloc::new(cfg, None);
        let a = ul.aor("Alice", "Foo.Bar");
        assert_eq!(a.key, "alice@foo.bar");
        assert_eq!(ul.aor_of_name("alice@foo.bar"), a);
    }

    /// A location table made before nathelper (no `received`, `socket` columns) gets them
    /// when usrloc opens it; its rows still load, and a NATed binding's source address and
    /// socket round-trip through the columns.
    #[cfg(feature = "sqlite")]
    #[test]
    fn old_tables_gain_the_received_columns() {
        use crate::sip::Transport;
        let dir = std::env::temp_dir().join(format!("ser-ul-mig-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let url = format!("sqlite://{}/ul.db", dir.display());
        let _ = std::fs::remove_file(dir.join("ul.db"));
        let db = Db::open(&url, 1).expect("open");
        let old = "CREATE TABLE location (username VARCHAR(64) NOT NULL, \
                   domain VARCHAR(128) NOT NULL DEFAULT '', contact VARCHAR(255) NOT NULL, \
                   expires DATETIME NOT NULL, q FLOAT NOT NULL DEFAULT 1.0, \
                   callid VARCHAR(255) NOT NULL DEFAULT '', cseq INT NOT NULL DEFAULT 0, \
                   last_modified DATETIME, replicate INT NOT NULL DEFAULT 0, \
                   state INT NOT NULL DEFAULT 0, flags INT NOT NULL DEFAULT 0, \
                   user_agent VARCHAR(64) NOT NULL DEFAULT '', \
                   PRIMARY KEY (username, domain, contact))";
        db.with_conn(|c| c.exec(old, &[])).expect("old table");
        let far = crate::db::datetime(UNIX_EPOCH + Duration::from_secs(now() + 1000));
        db.with_conn(|c| {
            c.exec(
                "INSERT INTO location (username, contact, expires) VALUES ('old', 'sip:old@h', ?)",
                &[crate::db::Value::Text(far.clone())],
            )
        })
        .expect("old row");
        let cfg = Config {
            db_mode: DbMode::WriteThrough,
            ..Config::default()
        };
        let ul = Usrloc::new(cfg.clone(), Some(Arc::clone(&db)));
        assert_eq!(ul.load().expect("load migrates"), 1);
        let rcv = Received {
            transport: Transport::Udp,
            addr: "127.0.0.1:40000".parse().expect("addr"),
            local: "127.0.0.1:5060".parse().expect("addr"),
        };
        assert_eq!(rcv.uri(), "sip:127.0.0.1:40000");
        assert_eq!(rcv.socket(), "udp:127.0.0.1:5060");
        let nated = Binding {
            received: Some(rcv),
            flags: FL_NAT,
            ..b("sip:u@192.168.1.20:5060", now() + 1000)
        };
        ul.add_blocking("location", &ul.aor("u", ""), nated)
            .expect("add");
        let ul2 = Usrloc::new(cfg, Some(db));
        assert_eq!(ul2.load().expect("load again"), 2);
        let found = ul2.table("location").lookup("u", now());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].received, Some(rcv));
        assert_eq!(ul2.table("location").get("u")[0].flags, FL_NAT);
        assert_eq!(ul2.table("location").lookup("old", now())[0].received, None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn write_back_and_load_through_sqlite() {
        let dir = std::env::temp_dir().join(format!("ser-ul-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let url = format!("sqlite://{}/ul.db", dir.display());
        let db = Db::open(&url, 1).expect("open");
        db.init_schema().expect("schema");
        let cfg = Config {
            db_mode: DbMode::WriteBack,
            ..Config::default()
        };
        let ul = Usrloc::new(cfg.clone(), Some(Arc::clone(&db)));
        let aor = ul.aor("bob", "");
        let far = now() + 1000;
        ul.add_blocking("location", &aor, b("sip:bob@h", far))
            .expect("add");
        assert_eq!(ul.flush().expect("flush"), 1);
        let ul2 = Usrloc::new(cfg, Some(db));
        assert_eq!(ul2.load().expect("load"), 1);
        let found = ul2.table("location").lookup("bob", now());
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].contact.as_str(), found[0].flow),
            ("sip:bob@h", None)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
