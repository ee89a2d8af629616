//! Accounting reports (SER's acc module, log backend): one line per completed transaction
//! whose flags ask for it, written when its first final response goes upstream — so
//! retransmissions, which the transaction absorbs, never report twice.

use ser_parser::{HeaderName, Message};

use crate::modules::Params;

/// acc's parameters.
#[derive(Debug, Clone, Default)]
pub struct AccConfig {
    /// `log_flag` (SER 0.8.x) or `acc_flag` (older): report every transaction with it set.
    pub log_flag: Option<u32>,
    /// `log_missed_flag`: report transactions with it set that end negative (>= 300).
    pub missed_flag: Option<u32>,
    /// `log_level`: the SER log level of the reports (default L_NOTICE).
    pub level: i32,
}

impl AccConfig {
    pub fn from_params(p: &Params) -> Self {
        let flag = |name: &str| {
            p.int("acc", name)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n < 32)
        };
        Self {
            log_flag: flag("log_flag").or_else(|| flag("acc_flag")),
            missed_flag: flag("log_missed_flag"),
            level: p
                .int("acc", "log_level")
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(crate::log::L_NOTICE),
        }
    }

    /// Whether a transaction with `flags` that completed with `code` is reported.
    pub fn wants(&self, flags: u32, code: u16) -> bool {
        let set = |f: Option<u32>| f.is_some_and(|f| flags & (1 << f) != 0);
        set(self.log_flag) || (code >= 300 && set(self.missed_flag))
    }
}

fn header<'a>(msg: &Message<'a>, name: HeaderName) -> &'a str {
    msg.header(name)
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or("")
}

fn write_fields(line: &mut String, req: &Message<'_>, out_uri: &str) {
    use std::fmt::Write;
    let method = req.method().map_or("", |m| m.as_str());
    let _ = write!(
        line,
        "method={}, i-uri={}, o-uri={}, call_id={}, from={}, to={}",
        method,
        req.request_uri().unwrap_or(""),
        if out_uri.is_empty() {
            req.request_uri().unwrap_or("")
        } else {
            out_uri
        },
        header(req, HeaderName::CallId),
        header(req, HeaderName::From),
        header(req, HeaderName::To),
    );
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The report of a completed transaction: `reply` is the final that went upstream when it
/// was relayed (its To carries the callee's tag), None for a local one.
pub fn report_transaction(
    cfg: &AccConfig,
    req: &Message<'_>,
    out_uri: &str,
    code: u16,
    reply: Option<&Message<'_>>,
    flags: u32,
) {
    use std::fmt::Write;
    let missed = code >= 300
        && cfg.missed_flag.is_some_and(|f| flags & (1 << f) != 0)
        && !cfg.log_flag.is_some_and(|f| flags & (1 << f) != 0);
    let mut line = String::with_capacity(256);
    line.push_str(if missed {
        "ACC: call missed: "
    } else {
        "ACC: transaction answered: "
    });
    write_fields(&mut line, req, out_uri);
    let reason = reply
        .and_then(|r| r.reason())
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let _ = write!(
        line,
        ", status={} {}, time={}",
        code,
        reason.trim(),
        unix_time()
    );
    crate::log_at!(cfg.level, "{}", line);
}

/// `acc_request("404 Not Found")`: an explicit report of the current request.
pub fn report_request(cfg: &AccConfig, req: &Message<'_>, out_uri: &str, status: &str) {
    use std::fmt::Write;
    let mut line = String::with_capacity(256);
    line.push_str("ACC: request accounted: ");
    write_fields(&mut line, req, out_uri);
    let _ = write!(line, ", status={}, time={}", status, unix_time());
    crate::log_at!(cfg.level, "{}", line);
}
