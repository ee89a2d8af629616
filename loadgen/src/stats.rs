//! Counters and HDR histograms per transaction type and for the whole scenario; each shard
//! keeps its own and adds them to the shared totals (counters every 250 ms, histograms every
//! second, everything when it stops), so the hot path takes no lock.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Code(u16),
    Timeout,
    Unexpected,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Code(c) => write!(f, "{c}"),
            Reason::Timeout => f.write_str("timeout"),
            Reason::Unexpected => f.write_str("unexpected"),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Three significant figures, auto-resizing: valid arguments, so this cannot fail.
    Histogram::new(3).expect("valid histogram precision")
}

#[derive(Clone, Debug)]
pub struct Counts {
    pub name: String,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub failures: BTreeMap<Reason, u64>,
    pub hist: Histogram<u64>,
}

impl Counts {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            attempted: 0,
            succeeded: 0,
            failed: 0,
            failures: BTreeMap::new(),
            hist: histogram(),
        }
    }

    pub fn fail(&mut self, r: Reason) {
        self.failed += 1;
        *self.failures.entry(r).or_default() += 1;
    }

    pub fn record_us(&mut self, us: u64) {
        let _ = self.hist.record(us.max(1));
    }

    fn merge(&mut self, o: &Counts) {
        self.attempted += o.attempted;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        for (r, n) in &o.failures {
            *self.failures.entry(*r).or_default() += n;
        }
        let _ = self.hist.add(&o.hist);
    }

    fn reset(&mut self) {
        self.attempted = 0;
        self.succeeded = 0;
        self.failed = 0;
        self.failures.clear();
        self.hist.reset();
    }

    pub fn latency(&self) -> [u64; 5] {
        let h = &self.hist;
        if h.is_empty() {
            return [0; 5];
        }
        [
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ]
    }

    pub fn latency_json(&self) -> Value {
        let [p50, p90, p99, p999, max] = self.latency();
        json!({"p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max})
    }

    pub fn failures_json(&self) -> Value {
        let m: serde_json::Map<String, Value> = self
            .failures
            .iter()
            .map(|(r, n)| (r.to_string(), json!(n)))
            .collect();
        Value::Object(m)
    }

    pub fn failures_text(&self) -> String {
        if self.failures.is_empty() {
            return "-".into();
        }
        self.failures
            .iter()
            .map(|(r, n)| format!("{r}:{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A scenario's counters (`calls`), its transactions by type, in order of first use, and
/// retransmissions sent.
#[derive(Clone, Debug)]
pub struct Stats {
    pub calls: Counts,
    pub txns: Vec<Counts>,
    pub retrans: u64,
}

impl Stats {
    pub fn new(name: &str) -> Self {
        Self {
            calls: Counts::new(name),
            txns: Vec::new(),
            retrans: 0,
        }
    }

    pub fn txn(&mut self, name: &str) -> &mut Counts {
        let i = self.txn_index(name);
        &mut self.txns[i]
    }

    /// The index of transaction type `name` in `txns` (added if new); stable, as
    /// [`reset`](Self::reset) keeps the names.
    pub fn txn_index(&mut self, name: &str) -> usize {
        match self.txns.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                self.txns.push(Counts::new(name));
                self.txns.len() - 1
            }
        }
    }

    /// Adds `o` to these totals.
    pub fn merge(&mut self, o: &Stats) {
        self.calls.merge(&o.calls);
        for t in &o.txns {
            self.txn(&t.name).merge(t);
        }
        self.retrans += o.retrans;
    }

    /// Zeroes the counts (names and allocations kept).
    pub fn reset(&mut self) {
        self.calls.reset();
        for t in &mut self.txns {
            t.reset();
        }
        self.retrans = 0;
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<14} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  failures\n",
            "type",
            "attempted",
            "succeeded",
            "failed",
            "p50 us",
            "p90 us",
            "p99 us",
            "p99.9 us",
            "max us"
        );
        for c in self.txns.iter().chain(std::iter::once(&self.calls)) {
            let [a, b, cc, d, e] = c.latency();
            let name = if std::ptr::eq(c, &self.calls) {
                format!("[{}]", c.name)
            } else {
                c.name.clone()
            };
            s.push_str(&format!(
                "{:<14} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
                name,
                c.attempted,
                c.succeeded,
                c.failed,
                a,
                b,
                cc,
                d,
                e,
                c.failures_text()
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_reset() {
        let mut a = Stats::new("call");
        a.txn("INVITE").attempted += 2;
        a.txn("INVITE").fail(Reason::Code(486));
        a.txn("INVITE").record_us(100);
        a.calls.fail(Reason::Timeout);
        let mut total = Stats::new("call");
        total.merge(&a);
        total.merge(&a);
        assert_eq!(total.txns[0].attempted, 4);
        assert_eq!(total.txns[0].failures[&Reason::Code(486)], 2);
        assert_eq!(total.txns[0].hist.len(), 2);
        assert_eq!(total.calls.failures_json(), json!({"timeout": 2}));
        a.reset();
        assert_eq!(a.txns[0].attempted, 0);
        assert!(a.txns[0].hist.is_empty());
        assert!(total.table().contains("486:2"));
    }
}
