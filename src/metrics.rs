//! Prometheus metrics: the text exposition format (version 0.0.4) of the per-shard
//! [`StatsSnapshot`]s, and a small [`Family`] builder other parts of the server use to add
//! their own families (a [`Collector`] registered on the [`Exporter`]).
//!
//! Every family is written with `# HELP` and `# TYPE`; per-shard series carry `shard="N"`;
//! counters are named `ser_..._total`. Label values and help texts are escaped as the format
//! says. This module renders text only: serving it is [`crate::mgmt_http`]'s job, and it
//! never touches a shard: it reads the shards' atomic counters through [`Stats::snapshot`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::{Stats, StatsSnapshot, METHODS, N_METHODS, REPLY_CLASSES, SL_CODES};
use crate::VERSION;

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A sample's value: counters are integers; a gauge may be fractional (uptime).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

/// One series of a family: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

/// One metric family: name, help, type and its samples.
///
/// ```
/// let mut f = ser::metrics::Family::counter("ser_usrloc_registrations_total", "REGISTERs saved");
/// f.sample(&[("shard", "0")], 3);
/// let mut out = String::new();
/// f.render(&mut out);
/// assert!(out.contains("ser_usrloc_registrations_total{shard=\"0\"} 3\n"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    /// A counter family; by convention its name ends in `_total`.
    pub fn counter(name: &str, help: &str) -> Family {
        Self::new(name, help, Kind::Counter)
    }

    pub fn gauge(name: &str, help: &str) -> Family {
        Self::new(name, help, Kind::Gauge)
    }

    fn new(name: &str, help: &str, kind: Kind) -> Family {
        debug_assert!(valid_metric_name(name), "bad metric name {name:?}");
        Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds an integer sample.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Family {
        self.push(labels, Value::Int(value))
    }

    /// Adds a fractional sample (gauges such as uptime).
    pub fn sample_f64(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Family {
        self.push(labels, Value::Float(value))
    }

    fn push(&mut self, labels: &[(&str, &str)], value: Value) -> &mut Family {
        debug_assert!(labels.iter().all(|(n, _)| valid_label_name(n)));
        self.samples.push(Sample {
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value,
        });
        self
    }

    /// Appends the family in the text format: HELP, TYPE, then one line per sample.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP ");
        out.push_str(&self.name);
        out.push(' ');
        escape_help(&self.help, out);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        for s in &self.samples {
            out.push_str(&self.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (n, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(n);
                    out.push_str("=\"");
                    escape_label_value(v, out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            match s.value {
                Value::Int(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::Float(v) if v.is_nan() => out.push_str("NaN"),
                Value::Float(v) if v.is_infinite() => {
                    out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" })
                }
                Value::Float(v) => {
                    let _ = write!(out, "{v}");
                }
            }
            out.push('\n');
        }
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved).
pub fn valid_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    !n.starts_with("__")
        && matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Label values: backslash, double quote and line feed escaped.
fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP texts: backslash and line feed escaped.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders families one after the other.
pub fn render(families: &[Family]) -> String {
    let mut out = String::with_capacity(families.len() * 512);
    for f in families {
        f.render(&mut out);
    }
    out
}

/// The server's own families from the shards' snapshots (index = shard number).
pub fn ser_families(shards: &[StatsSnapshot], uptime: Duration) -> Vec<Family> {
    let shard_names: Vec<String> = (0..shards.len()).map(|i| i.to_string()).collect();
    let per_shard = || shards.iter().zip(shard_names.iter().map(String::as_str));
    let mut v = Vec::new();

    let by_method = |name: &str, help: &str, get: fn(&StatsSnapshot) -> &[u64; N_METHODS]| {
        let mut f = Family::counter(name, help);
        for (s, sh) in per_shard() {
            for (m, n) in METHODS.iter().zip(get(s)) {
                f.sample(&[("method", m), ("shard", sh)], *n);
            }
        }
        f
    };
    let by_class = |name: &str, help: &str, get: fn(&StatsSnapshot) -> &[u64; 6]| {
        let mut f = Family::counter(name, help);
        for (s, sh) in per_shard() {
            for (c, n) in REPLY_CLASSES.iter().zip(get(s)) {
                f.sample(&[("class", c), ("shard", sh)], *n);
            }
        }
        f
    };
    let scalar = |kind: Kind, name: &str, help: &str, get: fn(&StatsSnapshot) -> u64| {
        let mut f = Family::new(name, help, kind);
        for (s, sh) in per_shard() {
            f.sample(&[("shard", sh)], get(s));
        }
        f
    };

    v.push(by_method(
        "ser_sip_requests_received_total",
        "SIP requests received (parsed), by method.",
        |s| &s.requests_in_by_method,
    ));
    v.push(by_class(
        "ser_sip_replies_received_total",
        "SIP replies received (parsed), by status class.",
        |s| &s.replies_in_by_class,
    ));
    v.push(by_method(
        "ser_sip_requests_sent_total",
        "SIP requests sent (forwarded, generated or retransmitted), by method.",
        |s| &s.requests_out_by_method,
    ));
    v.push(by_class(
        "ser_sip_replies_sent_total",
        "SIP replies sent (relayed, generated or retransmitted), by status class.",
        |s| &s.replies_out_by_class,
    ));

    let mut sl = Family::counter(
        "ser_sl_replies_total",
        "Stateless replies sent, by code (SER's sl_stats list; xxx = any other code).",
    );
    for (s, sh) in per_shard() {
        for (c, n) in SL_CODES.iter().zip(&s.sl_by_code) {
            sl.sample(&[("code", c), ("shard", sh)], *n);
        }
    }
    v.push(sl);
    v.push(scalar(
        Kind::Counter,
        "ser_sl_acks_absorbed_total",
        "ACKs to our own stateless replies, absorbed.",
        |s| s.acks_absorbed,
    ));

    v.push(scalar(
        Kind::Gauge,
        "ser_tm_transactions",
        "Transactions alive now.",
        |s| s.tm_current,
    ));
    v.push(scalar(
        Kind::Gauge,
        "ser_tm_transactions_waiting",
        "Transactions alive now that have sent their final reply (only timers left).",
        |s| s.tm_waiting,
    ));
    v.push(scalar(
        Kind::Counter,
        "ser_tm_transactions_total",
        "Transactions created.",
        |s| s.tm_total,
    ));
    v.push(scalar(
        Kind::Gauge,
        "ser_connections_open",
        "TCP and TLS connections open.",
        |s| s.conns_open,
    ));
    let mut ev = Family::counter(
        "ser_connection_events_total",
        "TCP and TLS connection events: accepted, refused (past tcp_max_connections), \
         connected, connect_failed, closed (by the peer, an error, a full write queue, us), \
         timed_out (idle, connect, TLS handshake, read).",
    );
    for (s, sh) in per_shard() {
        for (e, n) in crate::stats::CONN_EVENTS.iter().zip(&s.conn_events) {
            ev.sample(&[("event", e), ("shard", sh)], *n);
        }
    }
    v.push(ev);
    v.push(scalar(
        Kind::Counter,
        "ser_tls_handshakes_total",
        "TLS handshakes completed.",
        |s| s.tls_handshakes,
    ));
    v.push(scalar(
        Kind::Counter,
        "ser_tls_failures_total",
        "TLS sessions that failed (handshake or record errors).",
        |s| s.tls_failures,
    ));
    v.push(scalar(
        Kind::Counter,
        "ser_ws_upgrades_total",
        "WebSocket Upgrades accepted (SIP over WebSocket, RFC 7118).",
        |s| s.ws_upgrades,
    ));
    v.push(scalar(
        Kind::Counter,
        "ser_ws_refused_total",
        "WebSocket Upgrades refused with an HTTP error (not an Upgrade, no sip subprotocol, \
         origin not allowed, bad key or version).",
        |s| s.ws_refused,
    ));
    v.push(scalar(
        Kind::Counter,
        "ser_ws_errors_total",
        "WebSocket connections closed for a protocol error (unmasked or bad frames, \
         messages over the size limit, text that is not UTF-8).",
        |s| s.ws_errors,
    ));
    let mut done = Family::counter(
        "ser_tm_completed_total",
        "Transactions ended after a final reply, by the class of that reply.",
    );
    for (s, sh) in per_shard() {
        for (c, n) in REPLY_CLASSES[1..].iter().zip(&s.tm_completed) {
            done.sample(&[("class", c), ("shard", sh)], *n);
        }
    }
    v.push(done);
    v.push(scalar(
        Kind::Counter,
        "ser_tm_local_replies_total",
        "Replies tm generated itself (100, t_reply, 408, 487, 500, 503).",
        |s| s.tm_local_replies,
    ));
    v.push(scalar(
        Kind::Counter,
        "ser_tm_refused_total",
        "Requests refused with 503 because the transaction table was full.",
        |s| s.tm_refused,
    ));

    let mut drops = Family::counter("ser_drops_total", "Messages dropped, by reason.");
    for (s, sh) in per_shard() {
        for (r, n) in s.drops() {
            drops.sample(&[("reason", r), ("shard", sh)], n);
        }
    }
    v.push(drops);
    v.push(scalar(
        Kind::Counter,
        "ser_handoffs_total",
        "Messages handed to another shard: to the Call-ID's owner, or a reply to the shard its branch names when the kernel put it elsewhere.",
        |s| s.handoffs,
    ));

    let mut up = Family::gauge("ser_uptime_seconds", "Seconds since ser started.");
    up.sample_f64(&[], uptime.as_secs_f64());
    v.push(up);
    let mut info = Family::gauge("ser_build_info", "Always 1; the version as a label.");
    info.sample(&[("version", VERSION)], 1);
    v.push(info);
    v
}

/// Something that adds families to a scrape (a module's own counters).
pub type Collector = Arc<dyn Fn(&mut Vec<Family>) + Send + Sync>;

/// The shard runtime's own counters, per shard: what a call costs in wake-ups, system calls
/// and hand-offs (divide by calls; bench/wakeups.sh does). `stats` reads the runtime's
/// snapshot.
pub fn runtime_collector(
    stats: impl Fn() -> Vec<ser_shards::ShardStats> + Send + Sync + 'static,
) -> Collector {
    type Field = fn(&ser_shards::ShardStats) -> u64;
    const COUNTERS: [(&str, &str, Field); 8] = [
        (
            "ser_shard_wakeups_total",
            "Event loop iterations (each a wake-up, or a pass without sleeping).",
            |s| s.loops,
        ),
        (
            "ser_shard_syscalls_total",
            "System calls of the I/O loop (io_uring_enter; epoll_wait, recvmmsg, sendmmsg on the portable backend).",
            |s| s.syscalls,
        ),
        (
            "ser_shard_datagrams_received_total",
            "Datagrams read from the shard's sockets.",
            |s| s.datagrams_received,
        ),
        (
            "ser_shard_datagrams_sent_total",
            "Datagrams the kernel took for sending.",
            |s| s.datagrams_sent,
        ),
        (
            "ser_shard_handoffs_in_total",
            "Messages other shards handed to this one.",
            |s| s.handoffs_in,
        ),
        (
            "ser_shard_handoffs_out_total",
            "Messages this shard handed to others.",
            |s| s.handoffs_out,
        ),
        (
            "ser_shard_events_total",
            "Events delivered to the shard (posts from other shards and threads, finished blocking jobs).",
            |s| s.events,
        ),
        (
            "ser_shard_timers_total",
            "Timers fired.",
            |s| s.timers_fired,
        ),
    ];
    Arc::new(move |v: &mut Vec<Family>| {
        let all = stats();
        for (name, help, field) in COUNTERS {
            let mut f = Family::counter(name, help);
            for (i, s) in all.iter().enumerate() {
                f.sample(&[("shard", &i.to_string())], field(s));
            }
            v.push(f);
        }
    })
}

/// What a scrape reads: the shards' counters, the start time, and extra collectors.
#[derive(Clone)]
pub struct Exporter {
    stats: Vec<Arc<Stats>>,
    started: Instant,
    started_unix: u64,
    collectors: Vec<Collector>,
}

impl Exporter {
    /// `stats`: one per shard, in shard order. The start time is now.
    pub fn new(stats: Vec<Arc<Stats>>) -> Exporter {
        Exporter {
            stats,
            started: Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            collectors: Vec::new(),
        }
    }

    /// Adds families of another part of the server to every scrape.
    pub fn add_collector(&mut self, c: Collector) {
        self.collectors.push(c);
    }

    pub fn snapshots(&self) -> Vec<StatsSnapshot> {
        StatsSnapshot::all(&self.stats)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Seconds since the Unix epoch at start.
    pub fn started_unix(&self) -> u64 {
        self.started_unix
    }

    /// The families of one scrape.
    pub fn families(&self) -> Vec<Family> {
        let mut v = ser_families(&self.snapshots(), self.uptime());
        for c in &self.collectors {
            c(&mut v);
        }
        v
    }

    /// The exposition text of one scrape.
    pub fn render(&self) -> String {
        render(&self.families())
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("shards", &self.stats.len())
            .field("collectors", &self.collectors.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_layout() {
        let mut f = Family::counter("x_total", "a \\ help\nline");
        f.sample(&[("l", "q\"u\\o\nte")], 7);
        f.sample(&[], 0);
        let mut out = String::new();
        f.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\n\
             x_total{l=\"q\\\"u\\\\o\\nte\"} 7\nx_total 0\n"
        );
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("ser_a:b_total"));
        assert!(!valid_metric_name("1abc"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("shard"));
        assert!(!valid_label_name("__x"));
        assert!(!valid_label_name("a-b"));
    }

    #[test]
    fn every_family_is_typed_and_per_shard() {
        let st: Vec<Arc<Stats>> = (0..2).map(|_| Arc::new(Stats::default())).collect();
        st[1].count_sent(b"INVITE sip:x SIP/2.0\r\n");
        let mut e = Exporter::new(st);
        e.add_collector(Arc::new(|v: &mut Vec<Family>| {
            let mut f = Family::gauge("ser_usrloc_contacts", "Contacts.");
            f.sample(&[], 5);
            v.push(f);
        }));
        let text = e.render();
        assert!(text.contains("ser_sip_requests_sent_total{method=\"INVITE\",shard=\"1\"} 1\n"));
        assert!(text.contains("ser_sip_requests_sent_total{method=\"INVITE\",shard=\"0\"} 0\n"));
        assert!(text.contains("# TYPE ser_tm_transactions gauge\n"));
        assert!(text.contains("ser_usrloc_contacts 5\n"));
        assert!(text.contains(&format!("ser_build_info{{version=\"{VERSION}\"}} 1\n")));
        for f in e.families() {
            assert!(text.contains(&format!("# HELP {} ", f.name)));
            assert!(text.contains(&format!("# TYPE {} ", f.name)));
            if f.kind == Kind::Counter {
                assert!(f.name.ends_with("_total"), "{}", f.name);
            }
        }
    }
}
