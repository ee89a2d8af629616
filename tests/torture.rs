//! The RFC 4475 and RFC 5118 torture messages sent to a live `ser`. The messages name foreign
//! hosts, so the server runs in its own network namespace with only loopback up (`unshare -n`,
//! or `unshare -rn` when not root): whatever it forwards or answers cannot leave the machine.
//!
//! The outer test re-executes this test binary inside the namespace, where `torture_inner`
//! starts the server and checks: every invalid request the RFC says to reject gets its error
//! reply, invalid responses get nothing, valid requests are answered (never with a 400) or, on
//! the stateless path, forwarded, valid ACKs and responses are not answered, and after each
//! message the server still answers an OPTIONS.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SCRIPT: &str = r#"
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

/// The same checks through a stateful, record-routing script: the transaction layer sees
/// every hostile message the stateless path sees.
const STATEFUL: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/maxfwd/maxfwd.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
dns_timeout = 200
# A request sent towards a host that never answers ends in tm's 408: soon, not after 30 s.
modparam("tm", "fr_timer", 2)
modparam("tm", "fr_inv_timer", 2)
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (uri==myself) {
        if (method=="OPTIONS") { sl_send_reply("200", "OK"); break; };
    };
    if (loose_route()) { t_relay(); break; };
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); };
}
"#;

#[test]
fn torture_corpora_in_a_network_namespace() {
    let exe = std::env::current_exe().expect("test binary");
    let root = unsafe_free_is_root();
    let mut cmd = Command::new("unshare");
    cmd.arg(if root { "-n" } else { "-rn" });
    cmd.args([
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" torture_inner --exact --include-ignored --nocapture",
    ]);
    cmd.arg(&exe);
    cmd.env("SER_TORTURE_INNER", "1");
    let (ok, out) = run_bounded(&mut cmd, Duration::from_secs(240));
    assert!(ok, "torture run inside the namespace failed:\n{out}");
    assert!(out.contains("torture: all checks passed"), "{out}");
}

fn unsafe_free_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
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

fn rfc4475_expectation(name: &str) -> Want {
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
fn via_key(msg: &str) -> Option<(String, String)> {
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
fn valid(data: &[u8]) -> Want {
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    if first.starts_with(b"SIP/2.0 ") || first.starts_with(b"ACK ") {
        Want::AcceptSilently
    } else {
        Want::Accept
    }
}

/// The files of one corpus under parser/tests/data, in name order.
fn corpus_files(corpus: &str) -> Vec<std::path::PathBuf> {
    let dir = repo_root().join("parser/tests/data").join(corpus);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names
}

fn to_crlf(data: &[u8]) -> Vec<u8> {
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
fn fix_content_length(data: Vec<u8>) -> Vec<u8> {
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

#[test]
#[ignore = "runs inside the network namespace made by torture_corpora_in_a_network_namespace"]
fn torture_inner() {
    if std::env::var("SER_TORTURE_INNER").is_err() {
        eprintln!("torture_inner only runs inside its network namespace");
        return;
    }
    for (tag, script) in [("torture", SCRIPT), ("torture-tm", STATEFUL)] {
        run_corpora(tag, script, tag == "torture-tm");
    }
    println!("torture: all checks passed");
}

/// `stateful`: a transaction answers what a stateless forward silently loses (a next hop that
/// does not resolve in the namespace gets a 5xx), so "nothing" becomes "no 400" there.
fn run_corpora(tag: &str, script: &str, stateful: bool) {
    let ser = Ser::start(tag, script, 0, 2, "auto");
    let port = ser.port;
    // Replies go to the source address and the Via's port (5060 when none): listen there.
    let main = UdpSocket::bind("127.0.0.1:5060").expect("bind 5060 in the namespace");
    let mut extra: HashMap<u16, UdpSocket> = HashMap::new();
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

    let mut failures = Vec::new();
    for (i, (name, data, want)) in cases.iter().enumerate() {
        // Where would a reply go? The top Via's port, when it has one.
        let via_port = ser_parser::parse_lenient(data)
            .and_then(|m| m.top_via().ok().and_then(|v| v.port))
            .unwrap_or(5060);
        if via_port != 5060 && !extra.contains_key(&via_port) {
            if let Ok(s) = UdpSocket::bind(("127.0.0.1", via_port)) {
                extra.insert(via_port, s);
            }
        }
        main.send_to(data, ser.addr()).expect("send");
        let mut replies: Vec<String> = Vec::new();
        // A valid request's final answer may wait for the resolver (several queries of up to
        // dns_timeout each): wait (bounded) for a final reply or the forwarded request, so it
        // is neither missed nor taken for a later message's.
        // (To the Via's port, or with rport to the source's: both are listened to.)
        if *want == Want::Accept {
            let deadline = Instant::now() + Duration::from_secs(10);
            let socks: Vec<&UdpSocket> =
                std::iter::once(&main).chain(extra.get(&via_port)).collect();
            let mut buf = vec![0u8; 65536];
            'wait: while Instant::now() < deadline {
                for s in &socks {
                    s.set_read_timeout(Some(Duration::from_millis(50)))
                        .expect("timeout");
                    if let Ok((n, _)) = s.recv_from(&mut buf) {
                        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let mine = via_key(&m) == via_key(&String::from_utf8_lossy(data));
                        let done = status(&m).map_or(true, |c| mine && c >= 200);
                        replies.push(m);
                        if done {
                            break 'wait;
                        }
                    }
                }
            }
        }
        for s in std::iter::once(&main).chain(extra.values()) {
            s.set_read_timeout(Some(Duration::from_millis(150)))
                .expect("timeout");
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        // tm retransmits an INVITE's final reply until the ACK this test never sends (RFC 3261
        // 17.2.1): those of earlier messages are not this message's answer.
        if let Some(key) = via_key(&String::from_utf8_lossy(data)) {
            replies.retain(|r| status(r).is_none() || via_key(r).map_or(true, |k| k == key));
        }
        let codes: Vec<u16> = replies.iter().filter_map(|r| status(r)).collect();
        let ok = match want {
            Want::Reply(c) => codes.contains(c),
            Want::Nothing if stateful => !codes.contains(&400) && codes.iter().all(|c| *c >= 500),
            Want::Nothing => replies.is_empty(),
            // A final answer that is not a 400, or (stateless) forwarded to the test's socket.
            Want::Accept => {
                !codes.contains(&400)
                    && replies.iter().any(|r| status(r).map_or(true, |c| c >= 200))
            }
            // Not answered (a stateless forward of an ACK reaches the test's socket).
            Want::AcceptSilently => codes.is_empty(),
        };
        if !ok {
            let got: Vec<String> = replies
                .iter()
                .map(|r| {
                    let first = r.lines().next().unwrap_or("");
                    let call_id = r
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("call-id:"))
                        .unwrap_or("");
                    format!("{first} ({call_id})")
                })
                .collect();
            failures.push(format!("{name}: wanted {want:?}, got {codes:?}: {got:?}"));
        }
        // Still alive and answering?
        let call_id = format!("alive-{i}");
        let opt = request(
            "OPTIONS",
            &format!("sip:ser@127.0.0.1:{port}"),
            5060,
            &call_id,
            "",
        );
        main.send_to(opt.as_bytes(), ser.addr()).expect("send");
        main.set_read_timeout(Some(Duration::from_millis(2000)))
            .expect("timeout");
        let mut alive = false;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = main.recv_from(&mut buf) {
            let r = String::from_utf8_lossy(&buf[..n]);
            if r.contains(&call_id) && status(&r) == Some(200) {
                alive = true;
                break;
            }
        }
        assert!(
            alive,
            "no answer to OPTIONS after {name}\n{}",
            ser.log_text()
        );
    }
    assert!(
        failures.is_empty(),
        "torture failures:\n{}\n{}",
        failures.join("\n"),
        ser.log_text()
    );
    println!(
        "torture ({tag}): {} messages, all checks passed",
        cases.len()
    );
}
