//! Readings from /proc: a process tree ([`tree`]), its CPU time in clock ticks ([`ticks`],
//! [`stat_of`], [`hz`]), its peak RSS ([`vm_hwm`]), and whether a UDP port on loopback is bound
//! ([`wait_bound`], [`wait_free`]).
//!
//! Readings only: it starts and stops nothing, and decides nothing from what it reads.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::output_of;

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
pub(super) fn stat_of(pid: u32) -> Option<(u32, u64)> {
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
pub(super) fn tree(root: u32) -> Vec<u32> {
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

pub(super) fn ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| stat_of(*p)).map(|s| s.1).sum()
}

pub(super) fn hz() -> f64 {
    let s = output_of(Command::new("getconf").arg("CLK_TCK"));
    s.trim().parse().unwrap_or(100.0)
}

/// VmHWM summed over the processes, KiB. For Kamailio this counts its shared memory once per
/// process that touched it, so it overstates; ser is one process.
pub(super) fn vm_hwm(pids: &[u32]) -> u64 {
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

pub(super) fn wait_bound(port: u16, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if udp_bound(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub(super) fn wait_free(port: u16) {
    let end = Instant::now() + Duration::from_secs(5);
    while udp_bound(port) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}
