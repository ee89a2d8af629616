//! Running the scenarios: servers (ser, Kamailio), a UAS, the load generator, and the /proc
//! readings of one step. Every process it starts is stopped by its own id when the step ends
//! (SIGTERM through `kill`, then SIGKILL), and every run is bounded by a deadline.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::Opts;

const UAS_PORT: u16 = 5070;
const UAC_PORT: u16 = 5090;
/// Users created for the digest scenario (all with the password [`PASSWORD`]).
const AUTH_USERS: usize = 100;
const PASSWORD: &str = "pw1";
/// Users registered before the calls of `lookup-relay` (bench/sipp/users.csv has 1000).
const PREREG_USERS: u64 = 1000;

/// The workspace root (bench's parent), fixed at build time.
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// How the load of a scenario is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// OPTIONS answered by the server itself.
    Options,
    /// INVITE/ACK/BYE through the server to a UAS.
    Call,
    /// REGISTER -> 200 (a distinct AOR each).
    Register,
    /// REGISTER -> 401 -> REGISTER with credentials -> 200.
    RegisterAuth,
    /// Users registered first, then calls to them (lookup + relay).
    CallToUsers,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    pub port: u16,
    pub load: Load,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "options",
        title: "OPTIONS answered statelessly (sl_send_reply)",
        port: 5066,
        load: Load::Options,
    },
    Scenario {
        name: "relay",
        title: "stateless relay (forward)",
        port: 5061,
        load: Load::Call,
    },
    Scenario {
        name: "stateful",
        title: "stateful relay with record routing (t_relay + record_route)",
        port: 5062,
        load: Load::Call,
    },
    Scenario {
        name: "register",
        title: "registrar (save)",
        port: 5063,
        load: Load::Register,
    },
    Scenario {
        name: "register-auth",
        title: "registrar with digest auth (www_authorize + save)",
        port: 5064,
        load: Load::RegisterAuth,
    },
    Scenario {
        name: "lookup-relay",
        title: "registrar + lookup + stateful relay (calls to registered users)",
        port: 5065,
        load: Load::CallToUsers,
    },
];

/// The server under test in one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Server {
    Ser { shards: usize },
    Kamailio { children: usize },
}

impl Server {
    pub fn label(&self) -> String {
        match self {
            Server::Ser { shards } => format!("ser n={shards}"),
            Server::Kamailio { children } => format!("kamailio c={children}"),
        }
    }
    pub fn is_ser(&self) -> bool {
        matches!(self, Server::Ser { .. })
    }
}

/// Which generator drove a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// loadgen with the JSON contract.
    Loadgen,
    /// Today's loadgen (`options` only, text summary).
    LoadgenLegacy,
    Sipp,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Loadgen => "loadgen",
            Driver::LoadgenLegacy => "loadgen (options, text output)",
            Driver::Sipp => "SIPp",
        }
    }
}

/// One measurement: one server, one offered rate.
#[derive(Debug, Clone)]
pub struct Step {
    pub scenario: &'static str,
    pub server: Server,
    pub driver: Driver,
    pub offered: u64,
    pub secs: f64,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub achieved: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Server CPU (utime+stime) over the step.
    pub cpu_s: f64,
    pub us_per_call: Option<f64>,
    pub rss_kib: u64,
    /// CPU of the load generator over the step, percent of one core (where known).
    pub gen_cpu_pct: Option<f64>,
    pub pass: bool,
    pub why: String,
    pub raw: Value,
}

impl Step {
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario, "server": self.server.label(), "driver": self.driver.name(),
            "offered_rate": self.offered, "secs": self.secs, "attempted": self.attempted,
            "succeeded": self.succeeded, "failed": self.failed, "achieved_rate": self.achieved,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "server_cpu_s": self.cpu_s,
            "us_per_call": self.us_per_call, "peak_rss_kib": self.rss_kib,
            "generator_cpu_pct": self.gen_cpu_pct, "pass": self.pass, "why": self.why,
            "generator": self.raw,
        })
    }
}

/// The tools found, and what the run can do with them.
pub struct Env {
    pub root: PathBuf,
    pub ser: PathBuf,
    pub serctl: PathBuf,
    pub loadgen: PathBuf,
    /// loadgen answers the JSON contract (new scenarios, --json).
    pub loadgen_json: bool,
    pub kamailio: Option<PathBuf>,
    pub kamailio_version: String,
    pub sipp: bool,
    pub work: PathBuf,
    pub notes: Vec<String>,
}

fn on_path(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .or_else(|| {
            let p = PathBuf::from("/usr/sbin").join(cmd);
            p.is_file().then_some(p)
        })
}

fn output_of(cmd: &mut Command) -> String {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        }
        Err(_) => String::new(),
    }
}

impl Env {
    pub fn discover(opts: &Opts) -> Result<Env> {
        let root = repo_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("release");
        let (ser, serctl, loadgen) = (
            target.join("ser"),
            target.join("serctl"),
            target.join("loadgen"),
        );
        let missing: Vec<_> = [&ser, &serctl, &loadgen]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing {}: build them first with\n  cargo build --release --bin ser --bin serctl --bin loadgen",
                missing.join(", ")
            );
        }
        let help = output_of(Command::new(&loadgen).arg("--help"));
        // The contract's loadgen documents --json; today's prints only the options usage.
        let loadgen_json = help.contains("--json");
        let kamailio = if opts.kamailio {
            on_path("kamailio")
        } else {
            None
        };
        let kamailio_version = kamailio
            .as_ref()
            .map(|k| {
                output_of(Command::new(k).arg("-v"))
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        let sipp = on_path("sipp").is_some();
        if opts.sipp && !sipp {
            bail!("--sipp: sipp is not on PATH");
        }
        let work = std::env::temp_dir().join(format!("ser-bench-report-{}", std::process::id()));
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let mut notes = Vec::new();
        if !loadgen_json && !opts.sipp {
            notes.push(
                "loadgen has only its first scenario (options, text output) in this build: \
                 the call and registration scenarios ran with SIPp"
                    .to_string(),
            );
        }
        if opts.kamailio && kamailio.is_none() {
            notes.push("kamailio is not on PATH: ser only".to_string());
        }
        Ok(Env {
            root,
            ser,
            serctl,
            loadgen,
            loadgen_json,
            kamailio,
            kamailio_version,
            sipp,
            work,
            notes,
        })
    }

    fn driver_for(&self, opts: &Opts, load: Load) -> Option<Driver> {
        if opts.sipp {
            return (load != Load::Options).then_some(Driver::Sipp);
        }
        match (load, self.loadgen_json) {
            (_, true) => Some(Driver::Loadgen),
            (Load::Options, false) => Some(Driver::LoadgenLegacy),
            (_, false) => self.sipp.then_some(Driver::Sipp),
        }
    }
}

/// A process of ours, stopped by its id when dropped.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str, log: &Path) -> Result<Proc> {
        let out = fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what: what.to_string(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end by itself, up to `limit`; kills it past that.
    fn wait(&mut self, limit: Duration) -> Result<bool> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.success());
            }
            if Instant::now() > end {
                eprintln!("  {} ran past {:?}: killed", self.what, limit);
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first: Kamailio's main process then stops its children.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (pid, ppid, utime+stime ticks) of every process, from /proc.
fn all_stats() -> Vec<(u32, u32, u64)> {
    let mut v = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, ticks)) = stat_of(pid) {
            v.push((pid, ppid, ticks));
        }
    }
    v
}

/// ppid and utime+stime (ticks) of one process (all its threads).
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, ut + st))
}

/// The process and its descendants.
fn tree(root: u32) -> Vec<u32> {
    let all = all_stats();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|s| s.1 == p).map(|s| s.0));
        i += 1;
    }
    out
}

fn ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| stat_of(*p)).map(|s| s.1).sum()
}

fn hz() -> f64 {
    let s = output_of(Command::new("getconf").arg("CLK_TCK"));
    s.trim().parse().unwrap_or(100.0)
}

/// VmHWM summed over the processes, KiB. For Kamailio this counts its shared memory once per
/// process that touched it, so it overstates; ser is one process.
fn vm_hwm(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

/// Whether something listens on UDP 127.0.0.1:`port` (from /proc/net/udp).
fn udp_bound(port: u16) -> bool {
    let want = format!(":{port:04X}");
    fs::read_to_string("/proc/net/udp")
        .map(|s| {
            s.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|a| a.ends_with(&want))
        })
        .unwrap_or(false)
}

fn wait_bound(port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if udp_bound(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_free(port: u16) {
    let end = Instant::now() + Duration::from_secs(5);
    while udp_bound(port) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a scenario needs prepared once per run (databases, user tables).
struct Prepared {
    db_url: String,
    dbtext: PathBuf,
}

fn prepare(env: &Env) -> Result<Prepared> {
    let db = env.work.join("auth.db");
    let _ = fs::remove_file(&db);
    let db_url = format!("sqlite://{}", db.display());
    let serctl = |args: &[&str]| -> Result<()> {
        let out = Command::new(&env.serctl)
            .args(args)
            .env("DB_URL", &db_url)
            .env("SIP_DOMAIN", "anchor.test")
            .env("SER_FIFO", env.work.join("no_fifo"))
            .env("SERCTL_TIMEOUT", "2")
            .env_remove("PW")
            .current_dir(&env.work)
            .stdin(Stdio::null())
            .output()
            .context("running serctl")?;
        if !out.status.success() {
            bail!(
                "serctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    serctl(&["db", "init"])?;
    for i in 1..=AUTH_USERS {
        let u = format!("u{i}");
        serctl(&["add", &u, PASSWORD, &format!("{u}@anchor.test")])?;
    }
    // Kamailio's db_text table with the same users (plain passwords, HA1 per request).
    let dbtext = env.work.join("dbtext");
    fs::create_dir_all(&dbtext)?;
    let mut sub = String::from("id(int,auto) username(str) domain(str) password(str)\n");
    for i in 1..=AUTH_USERS {
        sub.push_str(&format!("{i}:u{i}:anchor.test:{PASSWORD}\n"));
    }
    fs::write(dbtext.join("subscriber"), sub)?;
    fs::write(
        dbtext.join("version"),
        "table_name(str) table_version(int)\nsubscriber:7\n",
    )?;
    // loadgen's --users file: user,password,domain.
    let mut csv = String::new();
    for i in 1..=AUTH_USERS {
        csv.push_str(&format!("u{i},{PASSWORD},anchor.test\n"));
    }
    fs::write(env.work.join("users.csv"), csv)?;
    Ok(Prepared { db_url, dbtext })
}

fn start_server(
    env: &Env,
    prep: &Prepared,
    sc: &Scenario,
    server: &Server,
    dir: &Path,
) -> Result<Proc> {
    wait_free(sc.port);
    let log = dir.join("server.log");
    let p = match server {
        Server::Ser { shards } => {
            let src = fs::read_to_string(env.root.join(format!("bench/cfg/{}.cfg", sc.name)))
                .context("reading the scenario's ser script")?;
            let cfg = dir.join("ser.cfg");
            fs::write(&cfg, src.replace("DBURL", &prep.db_url))?;
            let mut c = Command::new(&env.ser);
            c.arg("-f")
                .arg(&cfg)
                .args(["-n", &shards.to_string(), "-E", "-D"])
                .current_dir(dir);
            Proc::spawn(c, "ser", &log)?
        }
        Server::Kamailio { children } => {
            let Some(k) = &env.kamailio else {
                bail!("kamailio is not on PATH");
            };
            let mut c = Command::new(k);
            c.arg("-f")
                .arg(env.root.join(format!("bench/kamailio/{}.cfg", sc.name)))
                .args(["-A", &format!("CHILDREN={children}")])
                .args(["-A", &format!("DBURL=\"text://{}\"", prep.dbtext.display())])
                .args(["-DD", "-E", "-m", "1024", "-M", "16", "-w"])
                .arg(dir)
                .arg("-Y")
                .arg(dir)
                .arg("-P")
                .arg(dir.join("kam.pid"))
                .current_dir(env.root.join("bench/kamailio"));
            Proc::spawn(c, "kamailio", &log)?
        }
    };
    if !wait_bound(sc.port, Duration::from_secs(15)) {
        let tail = fs::read_to_string(&log).unwrap_or_default();
        bail!(
            "{} did not bind udp 127.0.0.1:{}; its log ends:\n{}",
            server.label(),
            sc.port,
            tail.lines().rev().take(8).collect::<Vec<_>>().join("\n")
        );
    }
    // Let Kamailio finish forking its children.
    std::thread::sleep(Duration::from_millis(500));
    Ok(p)
}

fn sipp_file(env: &Env, name: &str) -> PathBuf {
    env.root.join("bench/sipp").join(name)
}

fn start_uas(env: &Env, driver: Driver, dir: &Path) -> Result<Proc> {
    wait_free(UAS_PORT);
    let p = if driver == Driver::Loadgen {
        let mut c = Command::new(&env.loadgen);
        c.args([
            "uas",
            "--listen",
            &format!("127.0.0.1:{UAS_PORT}"),
            "--quiet",
        ]);
        Proc::spawn(c, "loadgen uas", &dir.join("uas.log"))?
    } else {
        let mut c = Command::new("sipp");
        c.arg("-sf")
            .arg(sipp_file(env, "uas-call.xml"))
            .args(["-i", "127.0.0.1", "-p", &UAS_PORT.to_string(), "-nostdin"])
            .args(["-buff_size", "4194304"])
            .current_dir(dir);
        Proc::spawn(c, "sipp uas", &dir.join("uas.log"))?
    };
    if !wait_bound(UAS_PORT, Duration::from_secs(10)) {
        bail!("the UAS did not bind udp 127.0.0.1:{UAS_PORT}");
    }
    Ok(p)
}

/// Registers u1..u1000 with the UAS as contact (bench/sipp/users.csv), before the calls.
fn preregister(env: &Env, sc: &Scenario, dir: &Path) -> Result<()> {
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(sipp_file(env, "uac-register-inf.xml"))
        .arg(format!("127.0.0.1:{}", sc.port))
        .args(["-i", "127.0.0.1", "-p", &(UAC_PORT + 1).to_string()])
        .arg("-inf")
        .arg(sipp_file(env, "users.csv"))
        .args(["-r", "500", "-m", &PREREG_USERS.to_string(), "-nostdin"])
        .args(["-timeout", "30s", "-recv_timeout", "5000"])
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("prereg.csv"))
        .args(["-fd", "1"])
        .current_dir(dir);
    let mut p = Proc::spawn(c, "sipp pre-registration", &dir.join("prereg.log"))?;
    p.wait(Duration::from_secs(40))?;
    let st = sipp_stats(&dir.join("prereg.csv"));
    let ok = st.get("SuccessfulCall(C)").copied().unwrap_or(0);
    if ok < PREREG_USERS {
        bail!("pre-registration: {ok} of {PREREG_USERS} users registered");
    }
    Ok(())
}

/// The last line of a SIPp statistics file, by column name.
fn sipp_stats(path: &Path) -> HashMap<String, u64> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(head) = lines.next() else {
        return HashMap::new();
    };
    let Some(last) = lines.next_back() else {
        return HashMap::new();
    };
    head.split(';')
        .zip(last.split(';'))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse::<u64>().ok()?)))
        .collect()
}

/// Response times (ms, SIPp's resolution) from SIPp's -trace_rtt files in `dir`.
fn sipp_rtts(dir: &Path) -> Vec<f64> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with("_rtt.csv") || name.starts_with("uac-register-inf") {
            continue;
        }
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        v.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok()),
        );
    }
    v
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

/// What a generator run gave.
struct GenResult {
    attempted: u64,
    succeeded: u64,
    failed: u64,
    achieved: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    raw: Value,
}

fn run_sipp(
    env: &Env,
    sc: &Scenario,
    rate: u64,
    secs: u64,
    dir: &Path,
) -> Result<(GenResult, Proc)> {
    let n = rate * secs;
    let (file, extra): (&str, Vec<String>) = match sc.load {
        Load::Call => ("uac-call.xml", vec!["-s".into(), "test".into()]),
        Load::CallToUsers => (
            "uac-call-aor.xml",
            vec![
                "-inf".into(),
                sipp_file(env, "users.csv").display().to_string(),
            ],
        ),
        Load::Register => ("uac-register.xml", vec![]),
        Load::RegisterAuth => (
            "uac-register-auth.xml",
            vec!["-au".into(), "u1".into(), "-ap".into(), PASSWORD.into()],
        ),
        Load::Options => bail!("no SIPp scenario for options"),
    };
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(sipp_file(env, file))
        .arg(format!("127.0.0.1:{}", sc.port))
        .args(["-i", "127.0.0.1", "-p", &UAC_PORT.to_string()])
        .args(&extra)
        .args(["-r", &rate.to_string(), "-m", &n.to_string(), "-nostdin"])
        .args(["-timeout", &format!("{}s", secs + 30), "-timeout_error"])
        .args(["-recv_timeout", "5000", "-buff_size", "4194304"])
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("uac.csv"))
        .args(["-fd", "1", "-trace_rtt", "-rtt_freq", "1"])
        .current_dir(dir);
    let t0 = Instant::now();
    let mut p = Proc::spawn(c, "sipp uac", &dir.join("uac.log"))?;
    let pid = p.pid();
    let g0 = ticks(&[pid]);
    // Sample the generator's CPU while it runs (it is gone once it has exited).
    let mut g_last = g0;
    let end = Instant::now() + Duration::from_secs(secs + 40);
    while p.child.try_wait()?.is_none() && Instant::now() < end {
        if let Some((_, t)) = stat_of(pid) {
            g_last = t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p.wait(Duration::from_secs(1))?;
    let wall = t0.elapsed().as_secs_f64();
    let st = sipp_stats(&dir.join("uac.csv"));
    let get = |k: &str| st.get(k).copied().unwrap_or(0);
    let created = get("TotalCallCreated");
    let ok = get("SuccessfulCall(C)");
    let failed = get("FailedCall(C)") + created.saturating_sub(ok + get("FailedCall(C)"));
    let mut rtt = sipp_rtts(dir);
    rtt.sort_by(f64::total_cmp);
    // SIPp starts in ~0.2 s; its calls are created over n/rate s nominally.
    let achieved = (ok as f64 / (wall - 0.2).max(secs as f64)).min(rate as f64);
    let gen_s = (g_last - g0) as f64 / hz();
    let raw = json!({
        "tool": "sipp", "scenario": file, "created": created, "successful": ok,
        "failed": get("FailedCall(C)"), "retransmissions": get("Retransmissions(C)"),
        "unexpected": get("FailedUnexpectedMessage(C)"), "wall_s": wall,
        "rtt_samples": rtt.len(), "cpu_s": gen_s,
    });
    Ok((
        GenResult {
            attempted: n,
            succeeded: ok,
            failed: failed.max(n.saturating_sub(ok)),
            achieved,
            p50_ms: percentile(&rtt, 0.5),
            p99_ms: percentile(&rtt, 0.99),
            raw,
        },
        p,
    ))
}

fn run_loadgen(
    env: &Env,
    sc: &Scenario,
    rate: u64,
    secs: u64,
    dir: &Path,
) -> Result<(GenResult, Proc)> {
    let json_path = dir.join("loadgen.json");
    let mut c = Command::new(&env.loadgen);
    let target = format!("127.0.0.1:{}", sc.port);
    let scenario = match sc.load {
        Load::Options => "options",
        Load::Call | Load::CallToUsers => "call",
        Load::Register | Load::RegisterAuth => "register",
    };
    c.arg(scenario)
        .args(["--target", &target, "--rate", &rate.to_string()])
        .args(["--duration", &secs.to_string(), "--timeout", "5"])
        // Calls offered in 1 ms rounds whatever the rate: the server sees the same smooth
        // load at every step (loadgen's default grows its rounds up to 4 ms, which
        // saves the generator CPU but offers bursts of up to 40 calls).
        .args(["--batch-us", "1000"])
        .arg("--json")
        .arg(&json_path)
        .arg("--quiet");
    match sc.load {
        Load::RegisterAuth => {
            c.arg("--users").arg(env.work.join("users.csv"));
        }
        Load::Register => {
            c.args(["--user-pattern", "user%d", "--user-count", "100000"])
                .args(["--password", "x", "--domain", "anchor.test"]);
        }
        Load::CallToUsers => {
            c.args(["--callee-pattern", "u%d", "--user-count"])
                .arg(PREREG_USERS.to_string())
                .args(["--domain", "anchor.test"]);
        }
        Load::Call | Load::Options => {}
    }
    let mut p = Proc::spawn(c, "loadgen", &dir.join("loadgen.log"))?;
    p.wait(Duration::from_secs(secs + 60))?;
    let text = fs::read_to_string(&json_path)
        .with_context(|| format!("loadgen wrote no {}", json_path.display()))?;
    let v: Value = serde_json::from_str(&text).context("loadgen's JSON")?;
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let lat = |k: &str| {
        v.get("latency_us")
            .and_then(|l| l.get(k))
            .and_then(Value::as_f64)
            .map(|us| us / 1000.0)
    };
    Ok((
        GenResult {
            attempted: u("attempted"),
            succeeded: u("succeeded"),
            failed: u("failed"),
            achieved: v
                .get("achieved_rate")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            p50_ms: lat("p50"),
            p99_ms: lat("p99"),
            raw: v,
        },
        p,
    ))
}

/// Today's loadgen: `loadgen options TARGET --rate --count`, a text summary.
fn run_loadgen_legacy(
    env: &Env,
    sc: &Scenario,
    rate: u64,
    secs: u64,
    dir: &Path,
) -> Result<(GenResult, Proc)> {
    let n = rate * secs;
    let mut c = Command::new(&env.loadgen);
    c.arg("options")
        .arg(format!("127.0.0.1:{}", sc.port))
        .args(["--rate", &rate.to_string(), "--count", &n.to_string()])
        .args(["--timeout", "5000", "--max-fail", &n.to_string()]);
    let log = dir.join("loadgen.log");
    let t0 = Instant::now();
    let mut p = Proc::spawn(c, "loadgen", &log)?;
    p.wait(Duration::from_secs(secs + 60))?;
    let wall = t0.elapsed().as_secs_f64();
    let text = fs::read_to_string(&log).unwrap_or_default();
    // "scenario options: attempted N ok N failed N (timeouts N)"
    // "response time us: p50 A p90 B p99 C p99.9 D max E"
    let after = |line_start: &str, key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(line_start))?;
        let mut it = line.split_whitespace();
        it.find(|w| *w == key)?;
        it.next()?.parse().ok()
    };
    let ok = after("scenario options:", "ok").unwrap_or(0.0) as u64;
    let failed = after("scenario options:", "failed").unwrap_or(n as f64) as u64;
    let p50 = after("response time us:", "p50").map(|x| x / 1000.0);
    let p99 = after("response time us:", "p99").map(|x| x / 1000.0);
    // The run ends once every request is answered: its wall time is the sending time.
    let achieved = (ok as f64 / (wall - 0.3).max(secs as f64)).min(rate as f64);
    let raw = json!({"tool": "loadgen options (text)", "attempted": n, "ok": ok,
        "failed": failed, "p50_us": p50.map(|x| x * 1000.0), "p99_us": p99.map(|x| x * 1000.0),
        "wall_s": wall});
    Ok((
        GenResult {
            attempted: n,
            succeeded: ok,
            failed,
            achieved,
            p50_ms: p50,
            p99_ms: p99,
            raw,
        },
        p,
    ))
}

/// One step: fresh server (and UAS), load for `secs` at `rate`, readings, everything stopped.
#[allow(clippy::too_many_arguments)]
fn step(
    opts: &Opts,
    env: &Env,
    prep: &Prepared,
    sc: &Scenario,
    server: &Server,
    driver: Driver,
    rate: u64,
    secs: u64,
) -> Result<Step> {
    let tag = server.label().replace([' ', '='], "");
    let dir = env.work.join(format!("{}-{tag}-{rate}", sc.name));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut srv = start_server(env, prep, sc, server, &dir)?;
    let needs_uas = matches!(sc.load, Load::Call | Load::CallToUsers);
    let mut uas = if needs_uas {
        Some(start_uas(env, driver, &dir)?)
    } else {
        None
    };
    if sc.load == Load::CallToUsers {
        preregister(env, sc, &dir)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let pids = tree(srv.pid());
    let k0 = ticks(&pids);
    let (g, gen) = match driver {
        Driver::Sipp => run_sipp(env, sc, rate, secs, &dir)?,
        Driver::Loadgen => run_loadgen(env, sc, rate, secs, &dir)?,
        Driver::LoadgenLegacy => run_loadgen_legacy(env, sc, rate, secs, &dir)?,
    };
    let k1 = ticks(&pids);
    let rss = vm_hwm(&pids);
    drop(gen);
    if let Some(u) = uas.as_mut() {
        u.stop();
    }
    srv.stop();
    let cpu_s = k1.saturating_sub(k0) as f64 / hz();
    let us_per_call = (g.succeeded > 0).then(|| 1e6 * cpu_s / g.succeeded as f64);
    let gen_cpu_pct = g
        .raw
        .get("cpu_s")
        .and_then(Value::as_f64)
        .map(|c| 100.0 * c / secs as f64);
    let fail_ratio = if g.attempted > 0 {
        g.failed as f64 / g.attempted as f64
    } else {
        1.0
    };
    let mut why = Vec::new();
    if fail_ratio > 0.001 {
        why.push(format!("failures {:.2} %", 100.0 * fail_ratio));
    }
    match g.p99_ms {
        Some(p) if p > opts.p99_limit_ms => why.push(format!("p99 {p:.0} ms")),
        None => why.push("no latency".into()),
        _ => {}
    }
    if g.achieved < 0.95 * rate as f64 {
        why.push(format!("achieved {:.0}/s", g.achieved));
    }
    let s = Step {
        scenario: sc.name,
        server: server.clone(),
        driver,
        offered: rate,
        secs: secs as f64,
        attempted: g.attempted,
        succeeded: g.succeeded,
        failed: g.failed,
        achieved: g.achieved,
        p50_ms: g.p50_ms,
        p99_ms: g.p99_ms,
        cpu_s,
        us_per_call,
        rss_kib: rss,
        gen_cpu_pct,
        pass: why.is_empty(),
        why: why.join(", "),
        raw: g.raw,
    };
    eprintln!(
        "  {:<13} {:<14} {:>5}/s  ok {:>6} failed {:>5}  ach {:>7.0}/s  p50 {:>6} p99 {:>6} ms  cpu {:>6} us/call  rss {:>6} KiB  {}",
        s.scenario,
        s.server.label(),
        s.offered,
        s.succeeded,
        s.failed,
        s.achieved,
        fmt_opt(s.p50_ms),
        fmt_opt(s.p99_ms),
        fmt_opt(s.us_per_call),
        s.rss_kib,
        if s.pass { "PASS".to_string() } else { format!("stop: {}", s.why) }
    );
    Ok(s)
}

pub fn fmt_opt(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// Everything a run produced.
pub struct Results {
    pub steps: Vec<Step>,
    pub started: String,
    pub host: String,
    pub notes: Vec<String>,
    pub secs: u64,
}

pub fn run_all(opts: &Opts, env: &Env) -> Result<Results> {
    let secs = opts.step_secs.unwrap_or(if opts.quick { 3 } else { 5 });
    let rates = opts.rates.clone().unwrap_or_else(|| {
        if opts.quick {
            vec![500, 1000, 2000, 4000, 8000]
        } else {
            vec![250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000]
        }
    });
    let started = output_of(Command::new("date").arg("+%Y-%m-%d %H:%M:%S %z"))
        .trim()
        .to_string();
    let host = output_of(&mut Command::new("hostname")).trim().to_string();
    let prep = prepare(env)?;
    let mut notes = env.notes.clone();
    let mut steps = Vec::new();
    for sc in SCENARIOS {
        if let Some(only) = &opts.scenarios {
            if !only.iter().any(|s| s == sc.name) {
                continue;
            }
        }
        let Some(driver) = env.driver_for(opts, sc.load) else {
            notes.push(format!("{}: no load generator for it in this run", sc.name));
            continue;
        };
        let mut servers: Vec<Server> = opts
            .shards
            .iter()
            .map(|&shards| Server::Ser { shards })
            .collect();
        if env.kamailio.is_some() {
            servers.push(Server::Kamailio {
                children: opts.kam_children,
            });
        }
        eprintln!(
            "scenario {} ({}), driver {}",
            sc.name,
            sc.title,
            driver.name()
        );
        let mut live: Vec<bool> = vec![true; servers.len()];
        // Step by step, each server in turn, until every server has stopped.
        for &rate in &rates {
            for (i, server) in servers.iter().enumerate() {
                if !live[i] {
                    continue;
                }
                match step(opts, env, &prep, sc, server, driver, rate, secs) {
                    Ok(s) => {
                        live[i] = s.pass;
                        steps.push(s);
                    }
                    Err(e) => {
                        eprintln!("  {} {} at {rate}/s: {e:#}", sc.name, server.label());
                        notes.push(format!(
                            "{} {} at {rate}/s did not run: {}",
                            sc.name,
                            server.label(),
                            format!("{e:#}").lines().next().unwrap_or("")
                        ));
                        live[i] = false;
                    }
                }
            }
            if !live.iter().any(|l| *l) {
                break;
            }
        }
    }
    let _ = fs::remove_dir_all(&env.work);
    Ok(Results {
        steps,
        started,
        host,
        notes,
        secs,
    })
}
