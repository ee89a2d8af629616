//! The running ser's FIFO, through ser's own client (`ser::ctl_fifo`, as serctl talks to it),
//! with serweb's bound on the request size (one atomic write: the web form's text must not
//! interleave with other clients' requests); blocking, so callers run it on tokio's blocking
//! pool. Also the parsers of the replies serweb shows (`ul_show_contact`).

use std::path::Path;
use std::time::Duration;

pub use ser::ctl_fifo::Reply;

/// Bytes one request may have: writes up to PIPE_BUF are atomic on a pipe.
pub const MAX_REQUEST: usize = ser::ctl_fifo::ATOMIC_REQUEST;

/// Runs `cmd` on the ser listening on `fifo`. `end` as in `ser::ctl_fifo::request_text`. Err: the FIFO
/// is not there, nobody reads it (ser down), the request is too large, or no reply came
/// within `wait`.
pub fn call(
    fifo: &Path,
    cmd: &str,
    lines: &[String],
    end: &str,
    wait: Duration,
) -> Result<Reply, String> {
    let req = ser::ctl_fifo::Request {
        cmd,
        lines,
        end,
        prefix: "serweb_receiver",
        wait,
        max_len: Some(MAX_REQUEST),
    };
    ser::ctl_fifo::call(fifo, &req).map_err(|e| match e {
        ser::ctl_fifo::Error::Unreachable(e) => {
            format!("ser is not reachable through {} ({e})", fifo.display())
        }
        e => e.to_string(),
    })
}

/// One live contact, as `ul_show_contact` prints it: `<uri>;q=1.00;expires=3600`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub uri: String,
    pub q: String,
    /// Seconds left.
    pub expires: u64,
    /// From the URI's `;transport=` (UDP when none; TLS for sips).
    pub transport: String,
    /// From the database's `location` row, where usrloc writes one (db_mode 1 or 2).
    pub user_agent: String,
}

/// The contacts of a `ul_show_contact` reply body.
pub fn parse_contacts(body: &str) -> Vec<Contact> {
    body.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix('<')?;
            let (uri, params) = rest.split_once('>')?;
            let mut q = String::from("1.00");
            let mut expires = 0;
            for p in params.split(';') {
                if let Some(v) = p.strip_prefix("q=") {
                    q = v.to_string();
                } else if let Some(v) = p.strip_prefix("expires=") {
                    expires = v.parse().unwrap_or(0);
                }
            }
            Some(Contact {
                uri: uri.to_string(),
                q,
                expires,
                transport: transport_of(uri),
                user_agent: String::new(),
            })
        })
        .collect()
}

/// The transport a contact URI names: `;transport=` (upper-cased), TLS for `sips:`, else UDP.
pub fn transport_of(uri: &str) -> String {
    let lower = uri.to_ascii_lowercase();
    if let Some(i) = lower.find(";transport=") {
        let v = &lower[i + ";transport=".len()..];
        let end = v.find([';', '?', '>']).unwrap_or(v.len());
        return v[..end].to_ascii_uppercase();
    }
    if lower.starts_with("sips:") {
        String::from("TLS")
    } else {
        String::from("UDP")
    }
}

/// A body for `t_uac_from`: its lines, with a line that is a single `.` (which would end the
/// body early) written as `..`; line breaks of any kind split lines.
pub fn body_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .map(|l| {
            if l == "." {
                String::from("..")
            } else {
                l.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_of_ul_show_contact() {
        let c = parse_contacts(
            "<sip:bob@127.0.0.1:5062;transport=tcp>;q=0.50;expires=3590\n\
             <sips:bob@10.0.0.1>;q=1.00;expires=10\n<sip:x@y>;q=1.00;expires=5\n",
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].uri, "sip:bob@127.0.0.1:5062;transport=tcp");
        assert_eq!((c[0].q.as_str(), c[0].expires), ("0.50", 3590));
        assert_eq!(c[0].transport, "TCP");
        assert_eq!(c[1].transport, "TLS");
        assert_eq!(c[2].transport, "UDP");
    }

    #[test]
    fn a_body_line_that_is_a_dot_is_doubled() {
        assert_eq!(body_lines("hi\n.\nthere"), ["hi", "..", "there"]);
    }
}
