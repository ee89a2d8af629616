//! Logging with SER's levels, to stderr or syslog, each line naming the thread (shard) it came from.
//!
//! SER's levels: `L_ALERT -3, L_CRIT -2, L_ERR -1, L_WARN 1, L_NOTICE 2, L_INFO 3, L_DBG 4`; a
//! message is printed when its level is at most `debug` (the `debug=N` option or `-d` count).
//! The script's `log([level,] msg)` uses the same scale (level 4 when omitted, as the seeds say).
//! This module does not buffer or rotate: stderr goes to whoever started us, syslog to syslogd.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

pub const L_ALERT: i32 = -3;
pub const L_CRIT: i32 = -2;
pub const L_ERR: i32 = -1;
pub const L_WARN: i32 = 1;
pub const L_NOTICE: i32 = 2;
pub const L_INFO: i32 = 3;
pub const L_DBG: i32 = 4;

static DEBUG: AtomicI32 = AtomicI32::new(L_NOTICE);
static TO_STDERR: AtomicBool = AtomicBool::new(true);
/// Where lines go when not to stderr: set by `main` (the OS call lives in the shards crate).
static SYSLOG: OnceLock<fn(i32, &str)> = OnceLock::new();

thread_local! {
    static THREAD_NAME: RefCell<String> = RefCell::new(String::from("main"));
}

/// Sets the threshold (`debug=N`).
pub fn set_level(level: i32) {
    DEBUG.store(level, Ordering::Relaxed);
}

pub fn level() -> i32 {
    DEBUG.load(Ordering::Relaxed)
}

/// Chooses stderr (`log_stderror=yes`, `-E`) or syslog (through `sink`, which receives the
/// syslog priority and the line).
pub fn set_stderr(yes: bool, sink: Option<fn(i32, &str)>) {
    TO_STDERR.store(yes, Ordering::Relaxed);
    if let Some(f) = sink {
        let _ = SYSLOG.set(f);
    }
}

/// Names the calling thread in its log lines ("main", "shard-0", ...).
pub fn set_thread_name(name: &str) {
    THREAD_NAME.with(|n| {
        let mut n = n.borrow_mut();
        n.clear();
        n.push_str(name);
    });
}

#[inline]
pub fn enabled(level: i32) -> bool {
    level <= DEBUG.load(Ordering::Relaxed)
}

fn level_name(level: i32) -> &'static str {
    match level {
        i32::MIN..=L_ALERT => "ALERT",
        L_CRIT => "CRIT",
        L_ERR => "ERROR",
        0 | L_WARN => "WARNING",
        L_NOTICE => "NOTICE",
        L_INFO => "INFO",
        _ => "DEBUG",
    }
}

/// Writes one line if `level` passes the threshold.
pub fn write(level: i32, args: std::fmt::Arguments<'_>) {
    if enabled(level) {
        emit(level, args);
    }
}

/// Writes one line whatever the threshold: the start-up banner (version, backend, listen
/// addresses), which SER too printed at any debug level.
pub fn always(level: i32, args: std::fmt::Arguments<'_>) {
    emit(level, args);
}

fn emit(level: i32, args: std::fmt::Arguments<'_>) {
    THREAD_NAME.with(|name| {
        let name = name.borrow();
        if TO_STDERR.load(Ordering::Relaxed) {
            let mut line = Vec::with_capacity(128);
            let _ = write!(
                line,
                "ser({}) {} {}: ",
                std::process::id(),
                name,
                level_name(level)
            );
            let _ = line.write_fmt(args);
            if line.last() != Some(&b'\n') {
                line.push(b'\n');
            }
            let _ = std::io::stderr().lock().write_all(&line);
        } else if let Some(sink) = SYSLOG.get() {
            // RFC 5424 severities: alert 1, crit 2, err 3, warning 4, notice 5, info 6, debug 7.
            let prio = match level {
                i32::MIN..=L_ALERT => 1,
                L_CRIT => 2,
                L_ERR => 3,
                0 | L_WARN => 4,
                L_NOTICE => 5,
                L_INFO => 6,
                _ => 7,
            };
            sink(prio, &format!("{} {}: {}", name, level_name(level), args));
        }
    });
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) { $crate::log::write($lvl, format_args!($($arg)*)) }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::L_ERR, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::L_WARN, $($arg)*) }; }
#[macro_export]
macro_rules! notice { ($($arg:tt)*) => { $crate::log_at!($crate::log::L_NOTICE, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::L_INFO, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::L_DBG, $($arg)*) }; }
