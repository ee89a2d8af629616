//! The live dashboard's data: serweb scrapes ser's Prometheus endpoint (`metrics_listen`,
//! `GET /metrics`) every few seconds, keeps the last hour of samples itself, and turns them
//! into series (rates of counters, values of gauges) drawn as small inline SVG charts.
//!
//! Only the text exposition's sample lines are read (`name{labels} value`); comments and
//! timestamps are skipped. A scrape that fails leaves a gap (the series restart after it) and
//! the dashboard says what failed. No I/O here except [`scrape`]; parsing, history and charts
//! take their inputs as arguments.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One sample: the metric name, its labels (sorted), its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the sample lines of a Prometheus text exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => continue,
        };
        let mut labels = Vec::new();
        let rest = if let Some(r) = rest.strip_prefix('{') {
            let Some((inside, after)) = split_labels(r) else {
                continue;
            };
            labels = inside;
            after
        } else {
            rest
        };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        labels.sort();
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// `k="v",k2="v2"} rest` → the labels and `rest`.
fn split_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (k, r) = rest.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    o => v.push(o),
                },
                '"' => break i,
                c => v.push(c),
            }
        };
        labels.push((k.trim().to_string(), v));
        rest = &r[end + 1..];
    }
}

/// `GET /metrics` from ser's listener (HTTP/1.0, one request per connection as it serves).
pub fn scrape(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        format!("cannot reach ser's metrics at {addr} ({e}); is metrics_listen set?")
    })?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("metrics request: {e}"))?;
    let mut data = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut data)
        .map_err(|e| format!("metrics reply: {e}"))?;
    let text = String::from_utf8_lossy(&data);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| String::from("metrics reply without a head"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "metrics: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// The numbers the dashboard follows, from one scrape: series name → value (counters as
/// totals, gauges as they are).
pub fn digest(samples: &[Sample]) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> = BTreeMap::new();
    let mut add = |k: String, v: f64| *m.entry(k).or_default() += v;
    for s in samples {
        match s.name.as_str() {
            "ser_sip_requests_received_total" => {
                match s.label("method") {
                    Some("INVITE") => add("calls".into(), s.value),
                    Some("REGISTER") => add("registrations".into(), s.value),
                    Some("MESSAGE") => add("messages".into(), s.value),
                    _ => {}
                }
                add("requests".into(), s.value);
            }
            "ser_sip_replies_sent_total" => {
                if let Some(c) = s.label("class") {
                    add(format!("replies {c}"), s.value);
                }
            }
            "ser_tm_transactions" => add("transactions".into(), s.value),
            "ser_connections_open" => add("connections".into(), s.value),
            "ser_usrloc_contacts" => add("contacts".into(), s.value),
            "ser_drops_total" => {
                add("drops".into(), s.value);
                if let Some(r) = s.label("reason") {
                    add(format!("drops {r}"), s.value);
                }
            }
            "ser_shard_datagrams_received_total" | "ser_shard_events_total" => {
                if let Some(sh) = s.label("shard") {
                    add(format!("shard {sh}"), s.value);
                }
            }
            "ser_uptime_seconds" => add("uptime".into(), s.value),
            _ => {}
        }
    }
    m
}

/// Whether a digest key is a counter (shown as a rate per second) or a gauge.
pub fn is_counter(key: &str) -> bool {
    !matches!(key, "transactions" | "connections" | "contacts" | "uptime")
}

/// One scrape's digest at a time (seconds since serweb started); None: the scrape failed.
#[derive(Debug, Clone)]
pub struct Point {
    pub t: f64,
    pub values: Option<BTreeMap<String, f64>>,
}

/// The last hour of points.
#[derive(Debug, Default)]
pub struct History {
    pub points: VecDeque<Point>,
    pub last_error: Option<String>,
}

/// Seconds of history kept.
pub const KEEP: f64 = 3600.0;

impl History {
    pub fn push(&mut self, p: Point) {
        let t = p.t;
        self.points.push_back(p);
        while self.points.front().is_some_and(|f| t - f.t > KEEP) {
            self.points.pop_front();
        }
    }

    /// A series over the history: for a counter the rate between successive good scrapes
    /// (a counter that went down, ser restarted, gives no point), for a gauge its value.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        let counter = is_counter(key);
        let mut out = Vec::new();
        let mut prev: Option<(f64, f64)> = None;
        for p in &self.points {
            let Some(v) = p.values.as_ref() else {
                prev = None;
                continue;
            };
            let x = v.get(key).copied().unwrap_or(0.0);
            if counter {
                if let Some((pt, pv)) = prev {
                    if p.t > pt && x >= pv {
                        out.push((p.t, (x - pv) / (p.t - pt)));
                    }
                }
                prev = Some((p.t, x));
            } else {
                out.push((p.t, x));
            }
        }
        out
    }

    /// Keys of the latest good digest that start with `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.points
            .iter()
            .rev()
            .find_map(|p| p.values.as_ref())
            .map(|v| {
                v.keys()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The span the charts show: the history's own (10 s at least) up to an hour, so a fresh
/// serweb's first minutes fill the width.
pub fn span(first: Option<f64>, now: f64) -> f64 {
    first.map_or(60.0, |f| (now - f).clamp(10.0, KEEP))
}

/// A small line chart of `points` (x: seconds, y: value) as SVG markup, `now` at the right
/// edge and `span` seconds to the left, with the top value and the span written on it. Only
/// numbers go into the markup.
pub fn svg(points: &[(f64, f64)], now: f64, span: f64) -> String {
    const W: f64 = 300.0;
    const H: f64 = 60.0;
    let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    let mut path = String::new();
    for (i, (t, v)) in points.iter().enumerate() {
        let x = (W - (now - t) / span * W).clamp(0.0, W);
        let y = H - (v / top * H).clamp(0.0, H);
        path.push_str(&format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" }));
    }
    let minutes = (span / 60.0).round();
    let ago = if span < 120.0 {
        format!("-{} s", span.round())
    } else {
        format!("-{minutes} min")
    };
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"last {minutes} min, max {max:.2}\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" class=\"bg\"/>\
         <text x=\"3\" y=\"10\" class=\"axis\">max {}</text>\
         <text x=\"3\" y=\"{}\" class=\"axis\">{ago}</text>\
         <text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">now</text>\
         <path d=\"{path}\" class=\"line\"/></svg>",
        number(max),
        H - 3.0,
        W - 3.0,
        H - 3.0
    )
}

/// A value as the dashboard prints it: whole numbers without decimals, small rates with two.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP ser_sip_requests_received_total Requests.\n\
        # TYPE ser_sip_requests_received_total counter\n\
        ser_sip_requests_received_total{method=\"INVITE\",shard=\"0\"} 10\n\
        ser_sip_requests_received_total{method=\"INVITE\",shard=\"1\"} 5\n\
        ser_sip_requests_received_total{method=\"REGISTER\",shard=\"0\"} 7\n\
        ser_sip_replies_sent_total{class=\"4xx\",shard=\"0\"} 3\n\
        ser_tm_transactions{shard=\"0\"} 2\n\
        ser_drops_total{reason=\"parse \\\"x\\\"\",shard=\"0\"} 1\n\
        ser_uptime_seconds 42\n";

    #[test]
    fn parses_and_digests_the_exposition() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 7);
        assert_eq!(s[0].label("shard"), Some("0"));
        assert_eq!(s[5].label("reason"), Some("parse \"x\""));
        let d = digest(&s);
        assert_eq!(d["calls"], 15.0);
        assert_eq!(d["registrations"], 7.0);
        assert_eq!(d["replies 4xx"], 3.0);
        assert_eq!(d["transactions"], 2.0);
        assert_eq!(d["uptime"], 42.0);
    }

    #[test]
    fn rates_gauges_and_gaps() {
        let mut h = History::default();
        let pt = |t: f64, calls: f64| Point {
            t,
            values: Some(BTreeMap::from([
                (String::from("calls"), calls),
                (String::from("transactions"), 3.0),
            ])),
        };
        h.push(pt(0.0, 0.0));
        h.push(pt(10.0, 50.0));
        h.push(Point {
            t: 20.0,
            values: None,
        });
        h.push(pt(30.0, 60.0));
        h.push(pt(40.0, 80.0));
        assert_eq!(h.series("calls"), vec![(10.0, 5.0), (40.0, 2.0)]);
        assert_eq!(h.series("transactions").len(), 4);
        h.push(pt(40.0 + KEEP + 1.0, 90.0));
        assert_eq!(h.points.len(), 1);
        let svg = svg(&[(0.0, 1.0), (10.0, 2.0)], 10.0, span(Some(0.0), 10.0));
        assert_eq!(
            (number(2.0), number(0.5), number(1234.5)),
            ("2".into(), "0.50".into(), "1234".into())
        );
        assert!(svg.starts_with("<svg") && svg.contains("M"));
    }
}
