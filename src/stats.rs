//! The server's counters: what each shard counts as it works (`Stats`, relaxed atomics written
//! by the shard that owns them) and plain copies for management and metrics (`StatsSnapshot`).
//!
//! Nothing here knows where the numbers are shown (FIFO, Prometheus, JSON): that is the
//! application layer's job. Only the tables of names the counters are kept by live here.

use portable_atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// The request methods counted one by one; everything else is "other" (the last index).
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];
pub const N_METHODS: usize = METHODS.len();

/// Reply status classes; index = code / 100 - 1 (codes outside 100..699 count as 6xx's
/// neighbours: clamped, they cannot come from the parser anyway).
pub const REPLY_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// SER's sl_stats list: stateless replies by code, the named codes first, then per class;
/// "xxx" is everything else (1xx, codes outside 100..699).
pub const SL_CODES: [&str; 19] = [
    "200", "202", "2xx", "300", "301", "302", "3xx", "400", "401", "403", "404", "407", "408",
    "483", "4xx", "500", "5xx", "6xx", "xxx",
];
pub const N_SL_CODES: usize = SL_CODES.len();

/// Index into [`METHODS`].
#[inline]
pub fn method_index(m: &ser_parser::Method<'_>) -> usize {
    use ser_parser::Method as M;
    match m {
        M::Invite => 0,
        M::Ack => 1,
        M::Bye => 2,
        M::Cancel => 3,
        M::Register => 4,
        M::Options => 5,
        M::Info => 6,
        M::Prack => 7,
        M::Update => 8,
        M::Subscribe => 9,
        M::Notify => 10,
        M::Refer => 11,
        M::Message => 12,
        M::Publish => 13,
        M::Other(_) => 14,
    }
}

/// Index into [`REPLY_CLASSES`].
#[inline]
pub fn class_index(code: u16) -> usize {
    usize::from(code / 100).clamp(1, 6) - 1
}

/// Index into [`SL_CODES`].
#[inline]
pub fn sl_code_index(code: u16) -> usize {
    match code {
        200 => 0,
        202 => 1,
        300 => 3,
        301 => 4,
        302 => 5,
        400 => 7,
        401 => 8,
        403 => 9,
        404 => 10,
        407 => 11,
        408 => 12,
        483 => 13,
        500 => 15,
        _ => match code / 100 {
            2 => 2,
            3 => 6,
            4 => 14,
            5 => 16,
            6 => 17,
            _ => 18,
        },
    }
}

/// The drop reasons, in the order [`StatsSnapshot::drops`] gives them.
/// Stream connection events, in the order of [`Stats::conn_events`] (the shard runtime counts
/// them; the shard copies them here once a second and at each connection event).
pub const CONN_EVENTS: [&str; 9] = [
    "accepted",
    "refused",
    "connected",
    "connect_failed",
    "closed_by_peer",
    "closed_error",
    "closed_overflow",
    "closed_local",
    "timed_out",
];

pub const DROP_REASONS: [&str; 8] = [
    "bad_request",
    "bad_reply",
    "garbage",
    "reply_not_ours",
    "script",
    "no_route",
    "dns_failure",
    "loop",
];

/// Counters kept by each shard, read (summed) by management tools.
///
/// Written by the shard that owns it with relaxed atomic adds (an index and a `fetch_add`:
/// nothing slower on the hot path); read from any thread through [`Stats::snapshot`].
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_in: AtomicU64,
    pub replies_in: AtomicU64,
    pub requests_fwd: AtomicU64,
    pub replies_fwd: AtomicU64,
    /// Requests received, by method (index: [`METHODS`]).
    pub requests_in_by_method: [AtomicU64; N_METHODS],
    /// Replies received, by class (index: [`REPLY_CLASSES`]).
    pub replies_in_by_class: [AtomicU64; 6],
    /// Every datagram sent (forwarded, relayed, generated, retransmitted), classified by its
    /// start line: requests by method, replies by class.
    pub requests_out_by_method: [AtomicU64; N_METHODS],
    pub replies_out_by_class: [AtomicU64; 6],
    /// Stateless replies by code (index: [`SL_CODES`]).
    pub sl_by_code: [AtomicU64; N_SL_CODES],
    pub sl_replies: [AtomicU64; 7], // index = class 0..6 (1xx..6xx), 0 = other
    pub sl_200: AtomicU64,
    pub sl_404: AtomicU64,
    pub sl_483: AtomicU64,
    pub drop_bad_request: AtomicU64,
    pub drop_bad_reply: AtomicU64,
    pub drop_garbage: AtomicU64,
    pub drop_reply_not_ours: AtomicU64,
    pub drop_script: AtomicU64,
    pub drop_no_route: AtomicU64,
    pub acks_absorbed: AtomicU64,
    pub loops: AtomicU64,
    pub handoffs: AtomicU64,
    pub dns_failures: AtomicU64,
    /// Stream connections we closed for a timeout (idle, connect, TLS handshake, read).
    pub conns_timed_out: AtomicU64,
    /// Stream connections open on this shard (a gauge).
    pub conns_open: AtomicU64,
    /// Stream connection events ([`CONN_EVENTS`]; the last one is `conns_timed_out`'s).
    pub conn_events: [AtomicU64; 8],
    /// TLS handshakes that completed, and TLS sessions that failed (handshake or record).
    pub tls_handshakes: AtomicU64,
    pub tls_failures: AtomicU64,
    /// WebSocket Upgrades accepted, refused (HTTP error), and connections closed for a
    /// protocol error (unmasked or bad frames, oversize, bad UTF-8).
    pub ws_upgrades: AtomicU64,
    pub ws_refused: AtomicU64,
    pub ws_errors: AtomicU64,
    /// t_stats: live transactions (cells), of which waiting (final sent, only timers left).
    pub tm_current: AtomicU64,
    pub tm_waiting: AtomicU64,
    /// t_stats: transactions ever created, and refused for want of room (503).
    pub tm_total: AtomicU64,
    pub tm_refused: AtomicU64,
    /// t_stats: replies tm generated itself (100, t_reply, 408, 487, 500, 503).
    pub tm_local_replies: AtomicU64,
    /// t_stats: transactions completed with a final of class 2xx..6xx (index 0 = 2xx).
    pub tm_completed: [AtomicU64; 5],
}

impl Stats {
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_sl(&self, code: u16) {
        let class = usize::from(code / 100);
        Self::inc(self.sl_replies.get(class).unwrap_or(&self.sl_replies[0]));
        Self::inc(&self.sl_by_code[sl_code_index(code)]);
        match code {
            200 => Self::inc(&self.sl_200),
            404 => Self::inc(&self.sl_404),
            483 => Self::inc(&self.sl_483),
            _ => {}
        }
    }
    /// A request received (parsed), by method.
    #[inline]
    pub fn count_request_in(&self, m: Option<ser_parser::Method<'_>>) {
        let i = m.as_ref().map_or(N_METHODS - 1, method_index);
        Self::inc(&self.requests_in);
        Self::inc(&self.requests_in_by_method[i]);
    }

    /// A reply received (parsed), by class.
    #[inline]
    pub fn count_reply_in(&self, code: u16) {
        Self::inc(&self.replies_in);
        Self::inc(&self.replies_in_by_class[class_index(code)]);
    }

    /// A datagram about to be sent: classified by the first token of its start line
    /// ("SIP/2.0" = a reply, by the class digit that follows; else a request, by method).
    #[inline]
    pub fn count_sent(&self, data: &[u8]) {
        if let Some(rest) = data.strip_prefix(b"SIP/2.0 ") {
            let class = rest.first().map_or(0, |d| d.wrapping_sub(b'0'));
            Self::inc(&self.replies_out_by_class[usize::from(class).clamp(1, 6) - 1]);
            return;
        }
        let head = data.get(..data.len().min(16)).unwrap_or(data);
        let token = memchr::memchr(b' ', head).map_or(head, |n| &head[..n]);
        let i = ser_parser::Method::from_bytes(token)
            .as_ref()
            .map_or(N_METHODS - 1, method_index);
        Self::inc(&self.requests_out_by_method[i]);
    }

    /// A consistent-enough copy of every counter (each read on its own, relaxed: a scrape
    /// taken while the shard works may see one counter a message ahead of another).
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        fn arr<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
            std::array::from_fn(|i| a[i].load(Ordering::Relaxed))
        }
        StatsSnapshot {
            requests_in: g(&self.requests_in),
            replies_in: g(&self.replies_in),
            requests_fwd: g(&self.requests_fwd),
            replies_fwd: g(&self.replies_fwd),
            requests_in_by_method: arr(&self.requests_in_by_method),
            replies_in_by_class: arr(&self.replies_in_by_class),
            requests_out_by_method: arr(&self.requests_out_by_method),
            replies_out_by_class: arr(&self.replies_out_by_class),
            sl_by_code: arr(&self.sl_by_code),
            sl_replies: arr(&self.sl_replies),
            sl_200: g(&self.sl_200),
            sl_404: g(&self.sl_404),
            sl_483: g(&self.sl_483),
            drop_bad_request: g(&self.drop_bad_request),
            drop_bad_reply: g(&self.drop_bad_reply),
            drop_garbage: g(&self.drop_garbage),
            drop_reply_not_ours: g(&self.drop_reply_not_ours),
            drop_script: g(&self.drop_script),
            drop_no_route: g(&self.drop_no_route),
            acks_absorbed: g(&self.acks_absorbed),
            loops: g(&self.loops),
            handoffs: g(&self.handoffs),
            dns_failures: g(&self.dns_failures),
            conns_timed_out: g(&self.conns_timed_out),
            conns_open: g(&self.conns_open),
            conn_events: {
                let mut e = [0; 9];
                for (d, a) in e.iter_mut().zip(&self.conn_events) {
                    *d = g(a);
                }
                e[8] = g(&self.conns_timed_out);
                e
            },
            tls_handshakes: g(&self.tls_handshakes),
            tls_failures: g(&self.tls_failures),
            ws_upgrades: g(&self.ws_upgrades),
            ws_refused: g(&self.ws_refused),
            ws_errors: g(&self.ws_errors),
            tm_current: g(&self.tm_current),
            tm_waiting: g(&self.tm_waiting),
            tm_total: g(&self.tm_total),
            tm_refused: g(&self.tm_refused),
            tm_local_replies: g(&self.tm_local_replies),
            tm_completed: arr(&self.tm_completed),
        }
    }
}

/// A plain copy of one shard's [`Stats`] (or their sum): what management commands and the
/// metrics exposition read. Field names and meanings are those of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests_in: u64,
    pub replies_in: u64,
    pub requests_fwd: u64,
    pub replies_fwd: u64,
    pub requests_in_by_method: [u64; N_METHODS],
    pub replies_in_by_class: [u64; 6],
    pub requests_out_by_method: [u64; N_METHODS],
    pub replies_out_by_class: [u64; 6],
    pub sl_by_code: [u64; N_SL_CODES],
    pub sl_replies: [u64; 7],
    pub sl_200: u64,
    pub sl_404: u64,
    pub sl_483: u64,
    pub drop_bad_request: u64,
    pub drop_bad_reply: u64,
    pub drop_garbage: u64,
    pub drop_reply_not_ours: u64,
    pub drop_script: u64,
    pub drop_no_route: u64,
    pub acks_absorbed: u64,
    pub loops: u64,
    pub handoffs: u64,
    pub dns_failures: u64,
    pub conns_timed_out: u64,
    pub conns_open: u64,
    pub conn_events: [u64; 9],
    pub tls_handshakes: u64,
    pub tls_failures: u64,
    pub ws_upgrades: u64,
    pub ws_refused: u64,
    pub ws_errors: u64,
    pub tm_current: u64,
    pub tm_waiting: u64,
    pub tm_total: u64,
    pub tm_refused: u64,
    pub tm_local_replies: u64,
    pub tm_completed: [u64; 5],
}

impl StatsSnapshot {
    /// Snapshots of every shard, in shard order.
    pub fn all(stats: &[std::sync::Arc<Stats>]) -> Vec<StatsSnapshot> {
        stats.iter().map(|s| s.snapshot()).collect()
    }

    /// The whole server's figures: every field summed over `shards` (saturating).
    pub fn sum(shards: &[StatsSnapshot]) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in shards {
            t.add(s);
        }
        t
    }

    /// Adds `o` into `self`, field by field.
    pub fn add(&mut self, o: &StatsSnapshot) {
        fn a(x: &mut u64, y: u64) {
            *x = x.saturating_add(y);
        }
        fn aa<const N: usize>(x: &mut [u64; N], y: &[u64; N]) {
            for (x, y) in x.iter_mut().zip(y) {
                *x = x.saturating_add(*y);
            }
        }
        a(&mut self.requests_in, o.requests_in);
        a(&mut self.replies_in, o.replies_in);
        a(&mut self.requests_fwd, o.requests_fwd);
        a(&mut self.replies_fwd, o.replies_fwd);
        aa(&mut self.requests_in_by_method, &o.requests_in_by_method);
        aa(&mut self.replies_in_by_class, &o.replies_in_by_class);
        aa(&mut self.requests_out_by_method, &o.requests_out_by_method);
        aa(&mut self.replies_out_by_class, &o.replies_out_by_class);
        aa(&mut self.sl_by_code, &o.sl_by_code);
        aa(&mut self.sl_replies, &o.sl_replies);
        a(&mut self.sl_200, o.sl_200);
        a(&mut self.sl_404, o.sl_404);
        a(&mut self.sl_483, o.sl_483);
        a(&mut self.drop_bad_request, o.drop_bad_request);
        a(&mut self.drop_bad_reply, o.drop_bad_reply);
        a(&mut self.drop_garbage, o.drop_garbage);
        a(&mut self.drop_reply_not_ours, o.drop_reply_not_ours);
        a(&mut self.drop_script, o.drop_script);
        a(&mut self.drop_no_route, o.drop_no_route);
        a(&mut self.acks_absorbed, o.acks_absorbed);
        a(&mut self.loops, o.loops);
        a(&mut self.handoffs, o.handoffs);
        a(&mut self.dns_failures, o.dns_failures);
        a(&mut self.conns_timed_out, o.conns_timed_out);
        a(&mut self.conns_open, o.conns_open);
        aa(&mut self.conn_events, &o.conn_events);
        a(&mut self.tls_handshakes, o.tls_handshakes);
        a(&mut self.tls_failures, o.tls_failures);
        a(&mut self.ws_upgrades, o.ws_upgrades);
        a(&mut self.ws_refused, o.ws_refused);
        a(&mut self.ws_errors, o.ws_errors);
        a(&mut self.tm_current, o.tm_current);
        a(&mut self.tm_waiting, o.tm_waiting);
        a(&mut self.tm_total, o.tm_total);
        a(&mut self.tm_refused, o.tm_refused);
        a(&mut self.tm_local_replies, o.tm_local_replies);
        aa(&mut self.tm_completed, &o.tm_completed);
    }

    /// Drops by reason, in [`DROP_REASONS`] order.
    pub fn drops(&self) -> [(&'static str, u64); 8] {
        [
            (DROP_REASONS[0], self.drop_bad_request),
            (DROP_REASONS[1], self.drop_bad_reply),
            (DROP_REASONS[2], self.drop_garbage),
            (DROP_REASONS[3], self.drop_reply_not_ours),
            (DROP_REASONS[4], self.drop_script),
            (DROP_REASONS[5], self.drop_no_route),
            (DROP_REASONS[6], self.dns_failures),
            (DROP_REASONS[7], self.loops),
        ]
    }

    /// Requests received with method `name` (one of [`METHODS`]).
    pub fn requests_in_of(&self, name: &str) -> u64 {
        METHODS
            .iter()
            .position(|m| *m == name)
            .map_or(0, |i| self.requests_in_by_method[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_datagrams_are_classified_by_their_start_line() {
        let s = Stats::default();
        s.count_sent(b"INVITE sip:a@b SIP/2.0\r\n");
        s.count_sent(b"BYE sip:a@b SIP/2.0\r\n");
        s.count_sent(b"FOO sip:a@b SIP/2.0\r\n");
        s.count_sent(b"SIP/2.0 180 Ringing\r\n");
        s.count_sent(b"SIP/2.0 200 OK\r\n");
        s.count_sent(b"SIP/2.0 603 Decline\r\n");
        s.count_sent(b"");
        let t = s.snapshot();
        assert_eq!(t.requests_out_by_method[0], 1);
        assert_eq!(t.requests_out_by_method[2], 1);
        assert_eq!(t.requests_out_by_method[N_METHODS - 1], 2);
        assert_eq!(t.replies_out_by_class, [1, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn sl_codes_follow_sers_list_and_snapshots_sum() {
        let s = Stats::default();
        for c in [200, 202, 204, 302, 305, 404, 486, 483, 503, 603, 100, 999] {
            s.count_sl(c);
        }
        let t = s.snapshot();
        let by = |name: &str| t.sl_by_code[SL_CODES.iter().position(|c| *c == name).unwrap()];
        assert_eq!(
            [by("200"), by("202"), by("2xx"), by("302"), by("3xx")],
            [1, 1, 1, 1, 1]
        );
        assert_eq!(
            [by("404"), by("483"), by("4xx"), by("5xx"), by("6xx")],
            [1; 5]
        );
        assert_eq!(by("xxx"), 2);
        let sum = StatsSnapshot::sum(&[t.clone(), t.clone()]);
        assert_eq!(sum.sl_by_code.iter().sum::<u64>(), 24);
        assert_eq!(sum.sl_200, 2);
    }
}
