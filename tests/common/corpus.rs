//! The RFC 4475 and RFC 5118 torture corpora (parser/tests/data) as the live-server tests
//! send them (tests/torture.rs over UDP, tests/stream_hostile.rs over TCP): each message with
//! what an element must do with it, and the loopback-only network namespace they run in (the
//! messages name foreign hosts).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{repo_root, run_bounded};

/// A stateless script for the corpora: OPTIONS to us answered, everything else forwarded to
/// the test's own UDP socket (127.0.0.1:5060 in the namespace).
pub const STATELESS: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/maxfwd/maxfwd.so"
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (uri==myself) {
        if (method=="OPTIONS") { sl_send_reply("200", "OK"); break; };
    };
    # To the test's own socket: a stateless forward is never answered, so its arrival there
    # is how the test sees a message accepted (the hosts the messages name do not exist here).
    forward(127.0.0.1, 5060);
}
"#;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Want {
    /// A request the element must reject with this code.
    Reply(u16),
    /// Dropped: no answer at all.
    Nothing,
    /// Valid and taken: a final reply that is not a 400, or (stateless) the message forwarded
    /// to the test's socket; silence (or a 100 Trying alone) fails: the message was lost.
    Accept,
    /// Valid and never answered (a documented drop): an ACK (RFC 3261 17.2.1: no reply to
    /// an ACK) or a response (forwarded by its Via or dropped, never answered): no 400, and
    /// no reply at all.
    AcceptSilently,
}

pub fn rfc4475_expectation(name: &str) -> Want {
    match name {
        "badinv01" | "clerr" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri"
        | "escruri" | "regbadct" | "badaspec" | "baddn" | "mismatch01" | "mismatch02" | "insuf"
        | "multi01" | "mcl01" => Want::Reply(400),
        "badvers" => Want::Reply(505),
        "zeromf" => Want::Reply(483),
        "scalarlg" | "bigcode" | "test" => Want::Nothing,
        _ => Want::Accept,
    }
}

/// What matches a reply to its request's server transaction (RFC 3261 17.2.3): the top Via's
/// sent-by and branch, which a reply copies. Not the Call-ID: two corpus messages (escnull and
/// regescrt) share branch, sent-by and method, so the second is answered as a retransmission
/// of the first, with the first one's reply.
pub fn via_key(msg: &str) -> Option<(String, String)> {
    let via = msg
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim().to_ascii_lowercase();
            (name == "via" || name == "v").then_some(value)
        })?;
    let top = via.split(',').next()?;
    let mut parts = top.split(';');
    let sent_by = parts
        .next()?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let branch = parts
        .find_map(|p| p.trim().strip_prefix("branch="))
        .unwrap_or("");
    Some((sent_by.to_ascii_lowercase(), branch.to_string()))
}

/// A valid message that is an ACK or a response is not answered; any other is.
pub fn valid(data: &[u8]) -> Want {
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    if first.starts_with(b"SIP/2.0 ") || first.starts_with(b"ACK ") {
        Want::AcceptSilently
    } else {
        Want::Accept
    }
}

/// The files of one corpus under parser/tests/data, in name order.
pub fn corpus_files(corpus: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("parser/tests/data").join(corpus);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names
}

pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    out
}

/// RFC 5118's SDP examples were published with Content-Length values that do not match their
/// bodies (testdata/README.md); once their line ends are CRLF, set it to the real body length.
pub fn fix_content_length(data: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&data).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return data;
    };
    let lines: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{}", lines.join("\r\n"), body).into_bytes()
}

/// Every message of both corpora: (corpus/name, bytes, what an element must do with it when
/// it comes in a datagram).
pub fn cases() -> Vec<(String, Vec<u8>, Want)> {
    let mut cases: Vec<(String, Vec<u8>, Want)> = Vec::new();
    for p in corpus_files("rfc4475") {
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let data = std::fs::read(&p).expect("read");
        let want = match rfc4475_expectation(&name) {
            Want::Accept => valid(&data),
            w => w,
        };
        cases.push((format!("rfc4475/{name}"), data, want));
    }
    for p in corpus_files("rfc5118") {
        let name = p
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".md") {
            continue;
        }
        let data = fix_content_length(to_crlf(&std::fs::read(&p).expect("read")));
        let want = if name == "ipv6-bad" {
            Want::Reply(400)
        } else {
            valid(&data)
        };
        cases.push((format!("rfc5118/{name}"), data, want));
    }
    assert!(cases.len() >= 60, "corpus incomplete: {}", cases.len());
    cases
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs this test binary's test `inner` (an ignored test that checks `env` is set) inside a
/// new network namespace with only loopback up (`unshare -n`, or `-rn` when not root), with
/// `env`=1; (exit ok, output).
pub fn run_in_namespace(inner: &str, env: &str, limit: Duration) -> (bool, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new("unshare");
    cmd.arg(if is_root() { "-n" } else { "-rn" });
    cmd.args([
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" \"$1\" --exact --include-ignored --nocapture",
    ]);
    cmd.arg(&exe).arg(inner);
    cmd.env(env, "1");
    run_bounded(&mut cmd, limit)
}
