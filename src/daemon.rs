//! Daemon mode and the clean stop, for the `ser` binary (a module of `main.rs`, not of the
//! library: like `main.rs` it drives `ser_shards::os`).
//!
//! `fork=yes` (SER's default): [`detach`] forks twice before any thread exists; the process
//! that was started waits on a pipe until the daemon reports "ok" (sockets bound, pid file
//! written, privileges dropped) or the error that stopped it, and exits 0 or prints that error
//! and exits non-zero. So `ser && echo started` and systemd's `Type=forking` mean what they say.
//!
//! SIGTERM/SIGINT: [`drain`] raises [`Core::draining`] (shards answer new requests 503 with
//! Retry-After and keep serving the transactions they hold) and waits until no transaction
//! still waits for a final reply, or until `shutdown_timeout`, or a second signal.
//!
//! Not here: a reload on SIGHUP (`main.rs`), the shards' own stop (`Runtime::shutdown`).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ser::config::Config;
use ser::core::Core;
use ser::stats::Stats;

/// The daemon's end of the start-up pipe, until it has reported.
static REPORT: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Stop messages are printed whatever `debug` says, like the start-up banner.
fn always(args: std::fmt::Arguments<'_>) {
    ser::log::always(ser::log::L_NOTICE, args);
}

/// What the daemon writes when it is up.
const OK: &str = "ok";

/// Detaches from the terminal. Returns only in the daemon; the process that was started
/// waits for the daemon's report and exits with its outcome.
pub fn detach(cfg: &mut Config) -> Result<()> {
    // The daemon works in "/" (or -w): a relative pid file is meant relative to where we
    // were started.
    if let Some(pid_file) = &cfg.pid_file {
        if std::path::Path::new(pid_file).is_relative() {
            let cwd = std::env::current_dir().context("current directory")?;
            cfg.pid_file = Some(cwd.join(pid_file).to_string_lossy().into_owned());
        }
    }
    match ser_shards::os::detach().context("fork=yes: cannot detach")? {
        ser_shards::os::Detached::Parent { mut report } => {
            let mut text = String::new();
            let _ = report.read_to_string(&mut text);
            let text = text.trim();
            if text == OK {
                std::process::exit(0);
            }
            let why = if text.is_empty() {
                "the daemon exited during start-up (see the log)"
            } else {
                text
            };
            let _ = writeln!(std::io::stderr(), "ser: {why}");
            std::process::exit(255);
        }
        ser_shards::os::Detached::Daemon { report } => {
            if let Ok(mut r) = REPORT.lock() {
                *r = Some(report);
            }
            if cfg.working_dir.is_none() {
                std::env::set_current_dir("/").context("chdir /")?;
            }
            // -E / log_stderror=yes keeps stderr: it is how one watches a daemon start.
            ser_shards::os::null_stdio(cfg.log_stderror).context("/dev/null")?;
            Ok(())
        }
    }
}

/// The daemon's start-up outcome, sent to the process that was started (once; later calls
/// do nothing). Returns whether there was such a process to tell.
pub fn report(outcome: std::result::Result<(), &str>) -> bool {
    let Some(mut pipe) = REPORT.lock().ok().and_then(|mut r| r.take()) else {
        return false;
    };
    let text = match outcome {
        Ok(()) => OK,
        Err(e) => e,
    };
    let _ = pipe.write_all(text.as_bytes());
    true
}

/// How long a stop waits for transactions: `shutdown_timeout`, else tm's longest
/// final-response timer plus 5 s: by then tm has answered every transaction itself (408).
pub fn shutdown_limit(cfg: &Config, params: &ser::modules::Params, shards: usize) -> Duration {
    if let Some(s) = cfg.shutdown_timeout {
        return Duration::from_secs(s);
    }
    let t = ser::tm::TmConfig::from_params(params, shards).timers;
    t.fr_inv_timer.max(t.fr_timer) + Duration::from_secs(5)
}

/// Transactions that have not sent their final reply yet, over all shards.
fn in_flight(stats: &[Arc<Stats>]) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    stats
        .iter()
        .map(|s| {
            s.tm_current
                .load(Relaxed)
                .saturating_sub(s.tm_waiting.load(Relaxed))
        })
        .sum()
}

/// The clean stop after SIGTERM/SIGINT: new requests are refused while the transactions in
/// flight get their final replies; returns when none is left, at the deadline, or on a
/// second SIGTERM/SIGINT/SIGQUIT.
pub fn drain(
    signals: &ser_shards::os::SignalSet,
    core: &Core,
    stats: &[Arc<Stats>],
    cfg: &Config,
    params: &ser::modules::Params,
    shards: usize,
) {
    let limit = shutdown_limit(cfg, params, shards);
    core.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + limit;
    let mut told = false;
    loop {
        let left = in_flight(stats);
        if left == 0 {
            always(format_args!(
                "stopping: no transaction waits for a final reply"
            ));
            return;
        }
        if !told {
            always(format_args!(
                "stopping: waiting up to {}s for {left} transaction(s) to get their final \
                 reply; new requests get 503 (a second SIGTERM stops at once)",
                limit.as_secs()
            ));
            told = true;
        }
        let now = Instant::now();
        if now >= deadline {
            always(format_args!(
                "shutdown_timeout: {left} transaction(s) still without a final reply"
            ));
            return;
        }
        match signals.wait_timeout((deadline - now).min(Duration::from_millis(20))) {
            Some(ser_shards::os::SIGHUP) | None => {}
            Some(sig) => {
                always(format_args!(
                    "signal {sig} again: stopping at once ({left} transaction(s) left)"
                ));
                return;
            }
        }
    }
}
