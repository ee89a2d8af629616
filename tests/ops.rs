//! Operations against a live `ser`: the FIFO server (the seeds' `t_uac_from` shell script, an
//! unknown command, a half-written request), `serctl` commands, live reload under a sipp call
//! load, and the exec module (the seeds' examples, and a program that outlives its time).
//!
//! Every FIFO lives under a per-test path; every wait is bounded; processes are stopped by PID.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sipp::*;
use common::*;

const RELAY: &str = r#"
loadmodule "sl.so"
loadmodule "tm.so"
route {
    if (uri=~"^sip:local@") { sl_send_reply("200", "local"); break; };
    t_relay();
}
"#;

fn with_fifo(script: &str, fifo: &Path) -> String {
    format!("fifo=\"{}\"\n{script}", fifo.display())
}

/// Answers one request on `peer` with `code`, copying Via/From/To/Call-ID/CSeq; returns it.
fn answer(peer: &Peer, code: u16, ms: u64) -> Option<String> {
    let req = peer.recv_timeout(ms)?;
    let out = response_to(&req, code, "Answer", "peer");
    let via = req
        .split("\r\n")
        .find(|l| l.starts_with("Via:"))
        .unwrap_or_default()
        .to_string();
    // Back to the top Via's sent-by (ser's socket).
    let hostport = via
        .split_whitespace()
        .nth(2)
        .and_then(|h| h.split(';').next())
        .unwrap_or_default()
        .to_string();
    if let Ok(dst) = hostport.parse() {
        peer.send(dst, out.as_bytes());
    }
    Some(req)
}

#[test]
fn fifo_runs_the_seeds_t_uac_from_script_and_refuses_unknown_commands() {
    let fifo = fifo_path("uac");
    let ser = Ser::start("ops-uac", &with_fifo(RELAY, &fifo), 0, 2, "auto");
    wait_fifo(&fifo, &ser);
    let peer = Peer::new();
    let reply = format!("ser-test-uac-reply-{}", std::process::id());
    let _ = std::fs::remove_file(Path::new("/tmp").join(&reply));
    // The seeds' "Sending IM From Shell Script", with our FIFO, reply file and receiver.
    let script = format!(
        "cat > {fifo} <<EOF\n:t_uac_from:{reply}\nNOTIFY\nsip:originator@foo.bar\n\
sip:receiver@127.0.0.1:{peer}\nfoo: bar_special_header\nx: y\np_header: p_value\n\
Contact: <sip:devnull@192.168.0.100:9>\nContent-Type: text/plain; charset=UTF-8\n\n\
Hello world!!!!\n$@\n.\nEOF\n",
        fifo = fifo.display(),
        peer = peer.port()
    );
    let (ok, out) = run_bounded(
        Command::new("sh").args(["-c", &script, "im", "from", "the", "shell"]),
        Duration::from_secs(5),
    );
    assert!(ok, "{out}");
    let req = answer(&peer, 200, 3000).expect("the NOTIFY reaches the receiver");
    assert!(req.starts_with("NOTIFY sip:receiver@127.0.0.1:"), "{req}");
    assert!(req.contains("\r\nfoo: bar_special_header\r\n"), "{req}");
    assert!(
        req.contains("\r\nFrom: <sip:originator@foo.bar>;tag="),
        "{req}"
    );
    assert!(
        req.contains("Hello world!!!!\r\nfrom the shell\r\n"),
        "{req}"
    );
    // The FIFO reply is the transaction's final reply.
    let path = Path::new("/tmp").join(&reply);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(text, "200 Answer\n", "{}", ser.log_text());
    let (_, t_stats, _) = serctl(&fifo, &["t_stats"]);
    assert!(t_stats.contains("(1 local)"), "{t_stats}");

    // SER's answer to an unknown command.
    let (code, out, _) = serctl(&fifo, &["fifo", "foobar"]);
    assert_eq!(code, 1);
    assert_eq!(out, "500 command 'foobar' not available\n");
}

#[test]
fn a_half_written_fifo_request_disturbs_no_other_client() {
    let fifo = fifo_path("half");
    let ser = Ser::start("ops-half", &with_fifo(RELAY, &fifo), 0, 1, "auto");
    wait_fifo(&fifo, &ser);
    // A client that writes half a request and stays; garbage from another.
    let mut half = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    half.write_all(b":print:never-answered\nfirst line")
        .expect("write");
    // The stalled client stays silent (were both writes to reach the pipe before the server
    // reads it, one read would hold both, glued: no FIFO server can tell them apart then).
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = serctl(&fifo, &["fifo", "print", "hello", "there"]);
    assert_eq!((code, out.as_str()), (0, "hello\nthere\n"), "{err}");
    // (Answered despite the half-written request; how fast is for benchmarks, not tests.)
    let mut junk = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    junk.write_all(b"garbage without a colon\n\x00\xff\xfe\n:\n::\n\n")
        .expect("write");
    let (code, out, _) = serctl(&fifo, &["uptime"]);
    assert_eq!(code, 0, "{}", ser.log_text());
    assert!(out.contains("Up time: "), "{out}");
    // And SIP goes on.
    let p = Peer::new();
    p.send(
        ser.addr(),
        request("OPTIONS", "sip:local@127.0.0.1", p.port(), "half-1", "").as_bytes(),
    );
    assert_eq!(p.recv_timeout(2000).and_then(|r| status(&r)), Some(200));
    drop(half);
}

/// Reads a reply pipe opened now (without blocking: an answer never written must fail the
/// test, not hang it) until its writer has written and closed, or `limit` passes.
fn read_reply_pipe(p: &Path, limit: Duration) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .expect("open reply pipe");
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) if !out.is_empty() => break,
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client that writes its request first and opens its reply pipe only later (as SER's
/// shell tools do: `cat` starts after the request is written) still gets its answer; one that
/// never opens it costs a logged, bounded wait and disturbs nobody else.
#[test]
fn a_reply_pipe_opened_late_still_gets_its_answer() {
    let fifo = fifo_path("late");
    let ser = Ser::start("ops-late", &with_fifo(RELAY, &fifo), 0, 1, "auto");
    wait_fifo(&fifo, &ser);
    let mkfifo = |p: &Path| {
        let _ = std::fs::remove_file(p);
        let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
        assert!(st.success());
    };
    let late = std::env::temp_dir().join(format!("ser-test-late-reply-{}", std::process::id()));
    let never = std::env::temp_dir().join(format!("ser-test-never-reply-{}", std::process::id()));
    mkfifo(&late);
    mkfifo(&never);
    let send = |reply: &Path, cmd: &str| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open fifo");
        f.write_all(format!(":{cmd}:{}\nfirst\nsecond\n\n", reply.display()).as_bytes())
            .expect("write request");
    };
    for round in 0..3 {
        send(&late, "print");
        // The server answers within microseconds; the reader comes 200 ms later.
        std::thread::sleep(Duration::from_millis(200));
        let out = read_reply_pipe(&late, Duration::from_secs(3));
        assert_eq!(
            out,
            "200 ok\nfirst\nsecond\n",
            "round {round}: {}",
            ser.log_text()
        );
    }
    // Nobody ever reads this one: given up after the wait, logged, and the next client is served.
    send(&never, "print");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = serctl(&fifo, &["fifo", "print", "after"]);
    assert_eq!((code, out.as_str()), (0, "after\n"), "{err}");
    assert!(
        ser.log_text()
            .contains("is lost: no reader opened the reply pipe"),
        "{}",
        ser.log_text()
    );
    let _ = std::fs::remove_file(&late);
    let _ = std::fs::remove_file(&never);
}

#[test]
fn serctl_commands_against_a_running_server() {
    let fifo = fifo_path("serctl");
    let ser = Ser::start("ops-serctl", &with_fifo(RELAY, &fifo), 0, 2, "auto");
    wait_fifo(&fifo, &ser);

    let (code, ps, _) = serctl(&fifo, &["ps"]);
    assert_eq!(code, 0);
    let first = ps.lines().next().unwrap_or_default();
    assert!(first.starts_with("0 ") && first.contains(" main"), "{ps}");
    for want in [
        "shard 0 ",
        "shard 1 ",
        "fifo server",
        "sock=0 @ udp:127.0.0.1:",
    ] {
        assert!(ps.contains(want), "ps lacks {want}:\n{ps}");
    }
    let (_, v, _) = serctl(&fifo, &["version"]);
    assert!(v.contains("ser (") && v.contains("Modules: sl tm"), "{v}");
    let (_, which, _) = serctl(&fifo, &["which"]);
    for c in [
        "ps",
        "which",
        "version",
        "uptime",
        "print",
        "sl_stats",
        "t_stats",
        "t_hash",
        "t_uac_from",
        "reload",
    ] {
        assert!(which.lines().any(|l| l == c), "which lacks {c}:\n{which}");
    }
    let (_, up, _) = serctl(&fifo, &["fifo", "uptime"]);
    assert!(
        up.starts_with("Now: ") && up.contains("\nUp Since: ") && up.contains("[sec]"),
        "{up}"
    );

    // A relayed transaction and a stateless reply show in the statistics.
    let peer = Peer::new();
    let caller = Peer::new();
    caller.send(
        ser.addr(),
        request(
            "OPTIONS",
            &format!("sip:x@127.0.0.1:{}", peer.port()),
            caller.port(),
            "ctl-1",
            "",
        )
        .as_bytes(),
    );
    answer(&peer, 200, 2000).expect("relayed");
    assert_eq!(
        caller.recv_timeout(2000).and_then(|r| status(&r)),
        Some(200)
    );
    caller.send(
        ser.addr(),
        request("OPTIONS", "sip:local@127.0.0.1", caller.port(), "ctl-2", "").as_bytes(),
    );
    assert_eq!(
        caller.recv_timeout(2000).and_then(|r| status(&r)),
        Some(200)
    );
    let (_, t, _) = serctl(&fifo, &["t_stats"]);
    assert!(t.contains("Total: 1 "), "{t}");
    assert!(t.contains("2xx: 1"), "{t}");
    let (_, sl, _) = serctl(&fifo, &["sl_stats"]);
    assert!(sl.lines().any(|l| l == "200: 1"), "{sl}");
    let (_, h, _) = serctl(&fifo, &["t_hash"]);
    assert_eq!(h.lines().count(), 2, "{h}");

    let (code, moni, _) = serctl(&fifo, &["moni", "-c", "2", "-i", "0.1"]);
    assert_eq!(code, 0);
    assert!(
        moni.contains("[cycle #: 2; if constant make sure server lives and fifo is on]"),
        "{moni}"
    );
    assert!(
        moni.contains("Transaction Statistics") && moni.contains("Stateless Server Statistics"),
        "{moni}"
    );
    assert!(moni.contains("Up time:"), "{moni}");

    // Without a server: a clear error, not a hang.
    let (code, _, err) = serctl(Path::new("/tmp/ser-test-no-such-fifo"), &["ps"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach ser"), "{err}");
}

/// Two relaying scripts to swap between, and a broken one.
fn reload_script(variant: u32, uas_port: u16) -> String {
    format!(
        r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/textops/textops.so"
route {{
    if (loose_route()) {{ t_relay(); break; }};
    if (method=="INVITE") record_route();
    append_hf("X-Generation: {variant}\r\n");
    if (!t_relay_to_udp("127.0.0.1", "{uas_port}")) {{ sl_reply_error(); break; }};
}}
"#
    )
}

#[test]
fn live_reload_under_load_loses_no_call() {
    require_sipp();
    let dir = temp_dir("ops-reload");
    let fifo = fifo_path("reload");
    let uas_port = free_port();
    let cfg = dir.join("reload.cfg");
    let write = |text: &str| std::fs::write(&cfg, with_fifo(text, &fifo)).expect("write cfg");
    write(&reload_script(0, uas_port));
    let ser = Ser::start_file("ops-reload", &cfg, 0, 2, "auto");
    let port = ser.port;
    wait_fifo(&fifo, &ser);
    let callee = format!("127.0.0.1:{uas_port}");
    let calls = 300;
    let uas = Uas::start(
        &scenario(&dir, "uas-rr.xml", &callee),
        uas_port,
        calls,
        &dir,
    );
    let uac_scen = scenario(&dir, "uac-rr.xml", &callee);
    let load = std::thread::spawn(move || uac(&uac_scen, port, calls, 50, Duration::from_secs(40)));
    // Ten reloads over the ~6 s of calls, and one broken script in the middle.
    for i in 1..=10u32 {
        std::thread::sleep(Duration::from_millis(450));
        write(&reload_script(i, uas_port));
        let (code, out, err) = serctl(&fifo, &["reload"]);
        assert_eq!(code, 0, "reload {i}: {out}{err}");
        assert!(out.contains(&format!("(generation {})", i + 1)), "{out}");
        if i == 5 {
            write("route {\n    t_relay(;\n}\n");
            let (code, out, _) = serctl(&fifo, &["reload"]);
            assert_eq!(code, 1);
            assert!(out.starts_with("500 reload failed: "), "{out}");
            assert!(out.contains(&format!("{}:3:13: ", cfg.display())), "{out}");
        }
    }
    let (ok, out) = load.join().expect("uac thread");
    assert!(
        ok,
        "calls failed across reloads:\n{out}\n{}",
        ser.log_text()
    );
    let (uas_ok, log) = uas.finish(Duration::from_secs(20));
    assert!(uas_ok, "UAS:\n{log}");
    assert!(
        ser.log_text().contains("reloaded (generation 11)"),
        "{}",
        ser.log_text()
    );
}

#[test]
fn sighup_reloads_and_a_broken_script_keeps_the_old_one() {
    let dir = temp_dir("ops-hup");
    let cfg = dir.join("hup.cfg");
    let script = |reason: &str| {
        // fork=yes as in the seeds' scripts; -D (the harness's) keeps ser in the foreground.
        format!(
            "fork=yes\nloadmodule \"sl.so\"\nroute {{ sl_send_reply(\"200\", \"{reason}\"); }}\n"
        )
    };
    std::fs::write(&cfg, script("first")).expect("cfg");
    let ser = Ser::start_file("ops-hup", &cfg, 0, 2, "auto");
    let p = Peer::new();
    let ask = |n: u32| {
        p.send(
            ser.addr(),
            request(
                "OPTIONS",
                "sip:x@127.0.0.1",
                p.port(),
                &format!("hup-{n}"),
                "",
            )
            .as_bytes(),
        );
        p.recv_timeout(2000).unwrap_or_default()
    };
    assert!(ask(1).starts_with("SIP/2.0 200 first"));
    std::fs::write(&cfg, script("second")).expect("cfg");
    let pid = ser.child.id().to_string();
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill -HUP");
    };
    hup();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 2;
    let mut got = String::new();
    while Instant::now() < deadline {
        got = ask(n);
        n += 1;
        if got.starts_with("SIP/2.0 200 second") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        got.starts_with("SIP/2.0 200 second"),
        "{got}\n{}",
        ser.log_text()
    );
    // Nothing that needs a restart changed: the script's fork=yes is what it said at start,
    // where -D kept ser in the foreground as it does now.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ser.log_text().contains("reloaded (generation 2)") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = ser.log_text();
    assert!(
        log.contains("reloaded (generation 2)") && !log.contains("need a restart"),
        "{log}"
    );
    std::fs::write(&cfg, "route { sl_send_reply(\"200\"; }\n").expect("cfg");
    hup();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ask(100).starts_with("SIP/2.0 200 second"));
    let log = ser.log_text();
    assert!(
        log.contains("reload refused") && log.contains(&format!("{}:1:", cfg.display())),
        "{log}"
    );
}

#[test]
fn exec_seed_redirects_from_program_output_and_logs_the_source() {
    let cfg = repo_root().join("tests/data/seeds/exec.cfg");
    let _ = std::fs::remove_file("/tmp/exectest.txt");
    let ser = Ser::start_file("ops-exec-seed", &cfg, 0, 2, "auto");
    let p = Peer::new();
    p.send(
        ser.addr(),
        request("INVITE", "sip:bob@127.0.0.1", p.port(), "exec-seed-1", "").as_bytes(),
    );
    let r = p.recv_timeout(5000).expect("a reply");
    assert_eq!(status(&r), Some(300), "{r}");
    assert!(
        r.contains("Contact: <sip:mra@iptel.org>, <sip:mrb@iptel.org>"),
        "{r}"
    );
    // exec_msg wrote the source address (printenv SRCIP) and the request (cat).
    let text = std::fs::read_to_string("/tmp/exectest.txt").unwrap_or_default();
    assert!(text.starts_with("127.0.0.1\n"), "{text}");
    assert!(
        text.contains("INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"),
        "{text}"
    );
    let _ = std::fs::remove_file("/tmp/exectest.txt");
}

#[test]
fn exec_uri_quiz_gives_sip_134_at_foo_bar() {
    // The seeds' quiz, forwarding to a local peer instead of uri:host (foo.bar).
    let peer = Peer::new();
    let script = format!(
        r#"
loadmodule "exec.so"
route {{
    exec_uri("echo sip:2234@foo.bar; echo > /dev/null");
    strip(2);
    if (uri=~"^sip:2") {{ prefix("0"); }} else {{ prefix("1"); }};
    forward("127.0.0.1", {});
}}
"#,
        peer.port()
    );
    let ser = Ser::start("ops-exec-quiz", &script, 0, 1, "auto");
    let p = Peer::new();
    p.send(
        ser.addr(),
        request("MESSAGE", "sip:someone@127.0.0.1", p.port(), "quiz-1", "").as_bytes(),
    );
    let got = peer.recv_timeout(5000).expect("forwarded");
    assert!(
        got.starts_with("MESSAGE sip:134@foo.bar SIP/2.0\r\n"),
        "{got}\n{}",
        ser.log_text()
    );
}

#[test]
fn exec_msg_mails_on_call() {
    // The seeds' "send email if a request for johndoe arrives", with a `mail` of our own
    // first on ser's PATH that records its arguments and input.
    let dir = temp_dir("ops-exec-mail");
    let out = dir.join("mail.out");
    let _ = std::fs::remove_file(&out);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let mail = bin.join("mail");
    std::fs::write(
        &mail,
        format!(
            "#!/bin/sh\necho \"args: $*\" > {o}\ncat >> {o}\n",
            o = out.display()
        ),
    )
    .expect("mail");
    Command::new("chmod")
        .arg("+x")
        .arg(&mail)
        .status()
        .expect("chmod");
    let script = r#"
loadmodule "sl.so"
loadmodule "exec.so"
route {
    # send email if a request for johndoe arrives
    if (uri=~"^sip:johndoe@") {
        exec_msg("echo 'body: call arrived'|mail -s 'call for you' johndoe");
    };
    sl_send_reply("200", "ok");
}
"#;
    let cfg = dir.join("mail.cfg");
    std::fs::write(&cfg, script).expect("cfg");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ser = Ser::start_file_env("ops-exec-mail", &cfg, 0, 1, "auto", &[], &[("PATH", path)]);
    let p = Peer::new();
    for (i, user) in ["alice", "johndoe"].iter().enumerate() {
        p.send(
            ser.addr(),
            request(
                "INVITE",
                &format!("sip:{user}@127.0.0.1"),
                p.port(),
                &format!("mail-{i}"),
                "",
            )
            .as_bytes(),
        );
        assert_eq!(p.recv_timeout(5000).and_then(|r| status(&r)), Some(200));
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        text,
        "args: -s call for you johndoe\nbody: call arrived\n",
        "{}",
        ser.log_text()
    );
}

#[test]
fn a_program_past_its_time_delays_only_its_own_request() {
    require_sipp();
    let dir = temp_dir("ops-exec-slow");
    let uas_port = free_port();
    let script = format!(
        r#"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "exec.so"
modparam("exec", "time_to_kill", 4)
route {{
    if (loose_route()) {{ t_relay(); break; }};
    if (uri=~"^sip:slow@") {{
        if (!exec_msg("sleep 30")) {{ sl_send_reply("500", "program killed"); break; }};
        sl_send_reply("200", "slow done");
        break;
    }};
    if (uri=~"^sip:exec@") {{
        if (exec_user("echo sip:rewritten@127.0.0.1; true")) {{
            sl_send_reply("200", "fast exec");
            break;
        }};
    }};
    if (uri=~"^sip:fast@") {{ sl_send_reply("200", "fast"); break; }};
    if (method=="INVITE") record_route();
    t_relay_to_udp("127.0.0.1", "{uas_port}");
}}
"#
    );
    // One shard: every request below goes through the same thread as the slow one.
    let ser = Ser::start("ops-exec-slow", &script, 0, 1, "auto");
    let port = ser.port;
    let slow = Peer::new();
    let start = Instant::now();
    slow.send(
        ser.addr(),
        request("OPTIONS", "sip:slow@127.0.0.1", slow.port(), "slow-1", "").as_bytes(),
    );
    let fast = Peer::new();
    for i in 0..20 {
        let user = if i % 2 == 0 { "fast" } else { "exec" };
        fast.send(
            ser.addr(),
            request(
                "OPTIONS",
                &format!("sip:{user}@127.0.0.1"),
                fast.port(),
                &format!("fast-{i}"),
                "",
            )
            .as_bytes(),
        );
        let r = fast
            .recv_timeout(3000)
            .expect("a fast answer while the slow program runs");
        let want = if user == "fast" {
            "SIP/2.0 200 fast\r\n"
        } else {
            "SIP/2.0 200 fast exec\r\n"
        };
        assert!(r.starts_with(want), "{r}");
    }
    // Whole calls complete meanwhile too.
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 10, &dir);
    let (ok, out) = uac(
        &scenario(&dir, "uac-rr.xml", &callee),
        port,
        10,
        20,
        Duration::from_secs(10),
    );
    assert!(ok, "calls failed while a program ran:\n{out}");
    // The point is the order, not the speed (that is for benchmarks): the fast requests and
    // the calls were answered while the slow request still waited for its program.
    assert!(
        slow.recv_timeout(10).is_none(),
        "the slow request was answered before the others finished (a slow machine?)"
    );
    let (uas_ok, log) = uas.finish(Duration::from_secs(10));
    assert!(uas_ok, "{log}");
    let r = slow.recv_timeout(6000).expect("the slow request's answer");
    assert!(r.starts_with("SIP/2.0 500 program killed"), "{r}");
    let took = start.elapsed();
    // Killed at time_to_kill (4 s), not before.
    assert!(took >= Duration::from_millis(3900), "{took:?}");
}
