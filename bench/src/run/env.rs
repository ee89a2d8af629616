//! Where things are and which tools there are: the workspace root ([`repo_root`]), the built
//! binaries, Kamailio and SIPp on PATH, the scratch directory, and so which generator drives
//! each kind of load ([`Env`]).
//!
//! It builds nothing and starts no servers: a missing binary is an error that says how to
//! build it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::process::output_of;
use super::scenarios::{Driver, Load};
use crate::Opts;

/// The workspace root (bench's parent), fixed at build time.
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
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

    pub(super) fn driver_for(&self, opts: &Opts, load: Load) -> Option<Driver> {
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
