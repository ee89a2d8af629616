//! The seeds' script examples (tests/data/seeds, extracted from ../shared/seeds): those that
//! use only this version's modules load unchanged and behave as the seeds describe; the others
//! are refused only because a module they load is not there yet, with the line.

mod common;

use std::process::Command;

use common::*;

fn seeds_dir() -> std::path::PathBuf {
    repo_root().join("tests/data/seeds")
}

/// Seed scripts that use only the modules this version has (core, sl, maxfwd, textops, tm,
/// rr, acc, exec, auth, auth_db, group, uri, usrloc, registrar).
const LOADS_NOW: &[&str] = &[
    "redirect.cfg",
    "route-blocks.cfg",
    "accounting.cfg",
    "accounting-0.8.cfg",
    "failure-route.cfg",
    "reply-route.cfg",
    "uas.cfg",
    "myself-aliases.cfg",
    "exec.cfg",
    "gateway-acl.cfg",
    "gateway-acl-0.8.cfg",
    "module-params.cfg",
    "default.cfg",
    "default-0.8.cfg",
    "usrloc-persistence.cfg",
    "replication.cfg",
];

#[test]
fn every_seed_script_loads_or_names_the_missing_module() {
    let mut seen = 0;
    for entry in std::fs::read_dir(seeds_dir()).expect("seeds dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("cfg") {
            continue;
        }
        seen += 1;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let out = Command::new(SER)
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .expect("ser -c");
        let err = String::from_utf8_lossy(&out.stderr);
        if LOADS_NOW.contains(&name.as_str()) {
            assert!(out.status.success(), "{name} must load:\n{err}");
        } else {
            assert!(!out.status.success(), "{name} loaded; add it to LOADS_NOW");
            let first = err.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(&format!("{}:", path.display()))
                    && (first.contains("is not available in this version of ser")
                        || first.contains("which this version of ser does not have yet")),
                "{name} refused for another reason than a missing module:\n{err}"
            );
        }
    }
    assert!(seen >= 10, "only {seen} seed scripts found");
}

#[test]
fn seed_redirect_server_answers_300_with_both_contacts() {
    let ser = Ser::start_file(
        "seed-redirect",
        &seeds_dir().join("redirect.cfg"),
        0,
        2,
        "auto",
    );
    let peer = Peer::new();
    let invite = request(
        "INVITE",
        "sip:someone@example.net",
        peer.port(),
        "redir-1",
        "",
    );
    peer.send(ser.addr(), invite.as_bytes());
    let reply = peer
        .recv()
        .unwrap_or_else(|| panic!("no reply\n{}", ser.log_text()));
    assert!(reply.starts_with("SIP/2.0 300 Redirect\r\n"), "{reply}");
    let contacts: Vec<&str> = reply
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("contact:"))
        .collect();
    let all = contacts.join("\n");
    assert!(all.contains("<sip:parallel@iptel.org:9>"), "{reply}");
    assert!(all.contains("<sip:redirect@iptel.org:9>"), "{reply}");

    // "for testing purposes, simply okay all REGISTERs"
    let reg = request("REGISTER", "sip:example.net", peer.port(), "redir-2", "");
    peer.send(ser.addr(), reg.as_bytes());
    let reply = peer.recv().expect("reply to REGISTER");
    assert!(reply.starts_with("SIP/2.0 200 ok\r\n"), "{reply}");

    // The ACK for the 300 is absorbed: nothing comes back, and the server goes on.
    let to_tag = invite_to_tag(&peer, &ser);
    let ack = request("ACK", "sip:someone@example.net", peer.port(), "redir-3", "").replace(
        "To: <sip:someone@example.net>",
        &format!("To: <sip:someone@example.net>;tag={to_tag}"),
    );
    peer.send(ser.addr(), ack.as_bytes());
    assert!(peer.recv_timeout(300).is_none(), "an ACK got an answer");
}

/// Sends another INVITE and returns the To-tag of its 300.
fn invite_to_tag(peer: &Peer, ser: &Ser) -> String {
    let invite = request(
        "INVITE",
        "sip:someone@example.net",
        peer.port(),
        "redir-3",
        "",
    );
    peer.send(ser.addr(), invite.as_bytes());
    let reply = peer.recv().expect("300");
    let to = reply
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("To header")
        .to_string();
    to.split(";tag=")
        .nth(1)
        .expect("a To-tag")
        .trim()
        .to_string()
}
