//! The ARM builds work: `ser` cross-built for small boards (scripts/build-arm.sh) runs under
//! qemu-user on this machine, and does a proxy's basic jobs there: answers OPTIONS, relays a
//! call statelessly (`forward`) and statefully (`t_relay`), registers a user and relays a call
//! to the registered contact (`lookup`).
//!
//! qemu-user has no io_uring (ENOSYS), so the log must show that the portable backend runs.
//!
//! A target is tested when its binary exists (target/<triple>/small/ser, else .../release/ser)
//! and its qemu is installed; otherwise the test says so and skips it. `SER_ARM_REQUIRE`
//! (comma-separated targets, or short names `aarch64,armv7,armv5te`) turns a skip into a failure:
//! scripts/test.sh builds aarch64 and armv5te and requires them, so CI cannot pass without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// (target triple, short name, qemu binary, sysroot of the cross libc).
const TARGETS: [(&str, &str, &str, &str); 3] = [
    (
        "aarch64-unknown-linux-gnu",
        "aarch64",
        "qemu-aarch64",
        "/usr/aarch64-linux-gnu",
    ),
    (
        "armv7-unknown-linux-gnueabihf",
        "armv7",
        "qemu-arm",
        "/usr/arm-linux-gnueabihf",
    ),
    (
        "armv5te-unknown-linux-gnueabi",
        "armv5te",
        "qemu-arm",
        "/usr/arm-linux-gnueabi",
    ),
];

const SCRIPT: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (method=="REGISTER") { save("location"); break; };
    if (uri==myself) {
        if (method=="OPTIONS") { sl_send_reply("200", "OK"); break; };
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); break; };
        t_relay();
        break;
    };
    if (search("^X-Mode: stateless")) { forward(uri:host, uri:port); break; };
    t_relay();
}
"#;

/// The cross build under `target/` (or `$SER_ARM_TARGET_DIR`, relative to the repository:
/// `target/tiny` for `scripts/build-arm.sh --tiny`).
fn binary(triple: &str) -> Option<PathBuf> {
    let dir = std::env::var("SER_ARM_TARGET_DIR").unwrap_or_else(|_| "target".into());
    ["small", "release"]
        .iter()
        .map(|p| repo_root().join(&dir).join(triple).join(p).join("ser"))
        .find(|p| p.is_file())
}

fn required(triple: &str, short: &str) -> bool {
    std::env::var("SER_ARM_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .any(|t| t == triple || t == short)
}

/// Starts the cross-built `ser` under qemu-user on a port it picks (`-p 0`); waits (bounded)
/// until it listens.
fn start(triple: &str, qemu: &str, sysroot: &str, bin: &Path) -> Ser {
    let tag = format!("arm-{triple}");
    let dir = temp_dir(&tag);
    let cfg = dir.join("arm.cfg");
    std::fs::write(&cfg, SCRIPT).expect("write cfg");
    let mut cmd = Command::new(qemu);
    cmd.args(["-L", sysroot])
        .arg(bin)
        .arg("-f")
        .arg(&cfg)
        .args(["-l", "127.0.0.1", "-p", "0"])
        .args(["-n", "2", "-E", "-D"])
        .env("SER_IO_BACKEND", "auto");
    Ser::spawn(dir, &tag, cfg, &mut cmd, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{triple}: ser did not start under {qemu}: {e}"))
}

/// The next datagram that is not a 100 Trying (emulated code is slower: generous timeout).
fn next(peer: &Peer, what: &str, ser: &Ser) -> String {
    loop {
        let m = peer
            .recv_timeout(10_000)
            .unwrap_or_else(|| panic!("{what}: nothing received\n{}", ser.log_text()));
        if status(&m) != Some(100) {
            return m;
        }
    }
}

/// A call from `uac` through `ser` to `uas`: the INVITE arrives, the UAS's 200 comes back.
fn call(ser: &Ser, uac: &Peer, uas: &Peer, ruri: &str, call_id: &str, extra: &str, what: &str) {
    let inv = request("INVITE", ruri, uac.port(), call_id, extra);
    uac.send(ser.addr(), inv.as_bytes());
    let got = next(uas, what, ser);
    assert!(got.starts_with("INVITE "), "{what}: {got}");
    assert!(
        got.contains(&format!("Call-ID: {call_id}")),
        "{what}: {got}"
    );
    let via_ser = format!("Via: SIP/2.0/UDP 127.0.0.1:{}", ser.port);
    assert!(got.contains(&via_ser), "{what}: ser's Via on top: {got}");
    uas.send(ser.addr(), response_to(&got, 200, "OK", "uas").as_bytes());
    let ok = next(uac, what, ser);
    assert_eq!(status(&ok), Some(200), "{what}: {ok}");
    assert!(ok.contains(&format!("Call-ID: {call_id}")), "{what}: {ok}");
    assert!(!ok.contains(&via_ser), "{what}: ser's Via removed: {ok}");
}

fn check_target(triple: &str, qemu: &str, sysroot: &str, bin: &Path) {
    let ser = start(triple, qemu, sysroot, bin);
    let port = ser.port;
    let log = ser.log_text();
    assert!(
        log.contains("I/O backend Portable"),
        "{triple}: the portable backend carries it under qemu-user:\n{log}"
    );
    let (uac, uas) = (Peer::new(), Peer::new());

    // OPTIONS to the server itself.
    let opt = request(
        "OPTIONS",
        &format!("sip:ser@127.0.0.1:{port}"),
        uac.port(),
        "arm-opt",
        "",
    );
    uac.send(ser.addr(), opt.as_bytes());
    let r = next(&uac, "OPTIONS", &ser);
    assert_eq!(status(&r), Some(200), "{triple}: {r}");
    assert!(r.contains("Call-ID: arm-opt"), "{r}");

    let to_uas = format!("sip:bob@127.0.0.1:{}", uas.port());
    call(
        &ser,
        &uac,
        &uas,
        &to_uas,
        "arm-sl",
        "X-Mode: stateless\r\n",
        "stateless",
    );
    call(&ser, &uac, &uas, &to_uas, "arm-tm", "", "stateful");

    // REGISTER alice at the UAS, then call her through the server: lookup relays to the contact.
    let reg = format!(
        "REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{pp};branch=z9hG4bK-arm-reg\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=f-arm-reg\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: arm-reg\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:alice@127.0.0.1:{up}>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n",
        pp = uac.port(),
        up = uas.port()
    );
    uac.send(ser.addr(), reg.as_bytes());
    let r = next(&uac, "REGISTER", &ser);
    assert_eq!(status(&r), Some(200), "{triple}: {r}");
    assert!(
        r.contains(&format!("<sip:alice@127.0.0.1:{}>", uas.port())),
        "{triple}: the 200 lists the binding: {r}"
    );
    let to_alice = format!("sip:alice@127.0.0.1:{port}");
    call(&ser, &uac, &uas, &to_alice, "arm-lookup", "", "lookup");
    eprintln!("{triple}: OPTIONS, forward, t_relay, REGISTER and lookup work under {qemu}");
}

#[test]
fn arm_builds_work_under_qemu_user() {
    let mut tested = 0;
    for (triple, short, qemu, sysroot) in TARGETS {
        let need = required(triple, short);
        let Some(bin) = binary(triple) else {
            assert!(
                !need,
                "{triple}: no binary; run scripts/build-arm.sh {short}"
            );
            eprintln!("{triple}: skipped, no binary (scripts/build-arm.sh {short} builds it)");
            continue;
        };
        if !have(qemu) || !Path::new(sysroot).is_dir() {
            assert!(
                !need,
                "{triple}: {qemu} or {sysroot} missing (qemu-user, libc6-*-cross)"
            );
            eprintln!("{triple}: skipped, {qemu} or {sysroot} missing");
            continue;
        }
        check_target(triple, qemu, sysroot, &bin);
        tested += 1;
    }
    eprintln!("{tested} ARM target(s) tested under qemu-user");
}
