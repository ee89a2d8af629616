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
use std::time::{Duration, Instant};

use common::corpus::*;
use common::*;

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
    let (ok, out) = run_in_namespace(
        "torture_inner",
        "SER_TORTURE_INNER",
        Duration::from_secs(240),
    );
    assert!(ok, "torture run inside the namespace failed:\n{out}");
    assert!(out.contains("torture: all checks passed"), "{out}");
}

#[test]
#[ignore = "runs inside the network namespace made by torture_corpora_in_a_network_namespace"]
fn torture_inner() {
    if std::env::var("SER_TORTURE_INNER").is_err() {
        eprintln!("torture_inner only runs inside its network namespace");
        return;
    }
    for (tag, script) in [("torture", STATELESS), ("torture-tm", STATEFUL)] {
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
    let cases = cases();

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
