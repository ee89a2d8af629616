//! The load generator against real processes on loopback: `call` through ser's t_relay to a
//! `loadgen uas` and to a sipp UAS, `register` with digest (qop=auth and without) against
//! ser's www_authorize, and a SIPp XML pair (uac-rr.xml → ser → uas-rr.xml) run by loadgen on
//! both sides. Every run is bounded in time; processes are stopped by PID.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sipp::*;
use common::*;

const RR_PROXY: &str = r#"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    if (loose_route()) { t_relay(); break; };
    if (method=="INVITE") record_route();
    if (!t_relay()) { sl_reply_error(); break; };
}
"#;

fn loadgen() -> PathBuf {
    let p = std::path::Path::new(SER).with_file_name("loadgen");
    assert!(p.exists(), "build loadgen first (cargo build --bins)");
    p
}

/// A `loadgen` answering on a port, stopped by PID when dropped.
struct Answerer(Child);

impl Answerer {
    fn start(args: &[&str]) -> Answerer {
        let child = Command::new(loadgen())
            .args(args)
            .arg("--quiet")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("loadgen uas");
        std::thread::sleep(Duration::from_millis(300));
        Answerer(child)
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("loadgen wrote --json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn run_loadgen(args: &[String], limit: Duration) -> (bool, String) {
    run_bounded(Command::new(loadgen()).args(args), limit)
}

fn call_args(ser_port: u16, uas_port: u16, count: u32, out: &std::path::Path) -> Vec<String> {
    [
        "call",
        "--target",
        &format!("127.0.0.1:{ser_port}"),
        "--domain",
        &format!("127.0.0.1:{uas_port}"),
        "--rate",
        "100",
        "--count",
        &count.to_string(),
        "--hold",
        "50",
        "--timeout",
        "5",
        "--json",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn call_through_t_relay_to_a_loadgen_uas() {
    let dir = temp_dir("lg-call-lg");
    let uas_port = free_port();
    let ser = Ser::start("lg-call-lg", RR_PROXY, 0, 2, "auto");
    let port = ser.port;
    let uas_json = dir.join("uas.json");
    let _uas = Answerer::start(&[
        "uas",
        "--listen",
        &format!("127.0.0.1:{uas_port}"),
        "--duration",
        "20",
        "--fail-share",
        "0.1",
        "--json",
        &uas_json.display().to_string(),
    ]);
    let out = dir.join("call.json");
    let mut args = call_args(port, uas_port, 200, &out);
    args.extend(["--max-fail".to_string(), "12%".to_string()]);
    let (ok, text) = run_loadgen(&args, Duration::from_secs(30));
    assert!(ok, "loadgen call failed:\n{text}\n{}", ser.log_text());
    let v = json(&out);
    assert_eq!(v["attempted"], 200, "{v}");
    // A tenth answered 486 (ACKed by the caller, counted by code), the rest completed.
    let busy = v["failures"]["486"].as_u64().unwrap_or(0);
    assert!((15..=25).contains(&busy), "{v}");
    assert_eq!(v["succeeded"].as_u64().unwrap_or(0) + busy, 200, "{v}");
    let t = v["transactions"].as_array().expect("transactions");
    assert_eq!(t[0]["type"], "INVITE");
    assert_eq!(t[1]["type"], "BYE");
    assert_eq!(t[1]["succeeded"], v["succeeded"]);
    assert!(v["latency_us"]["p50"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["cpu_s"].as_f64().is_some());
}

#[test]
fn call_through_t_relay_to_a_sipp_uas() {
    require_sipp();
    let dir = temp_dir("lg-call-sipp");
    let uas_port = free_port();
    let ser = Ser::start("lg-call-sipp", RR_PROXY, 0, 2, "auto");
    let port = ser.port;
    let callee = format!("127.0.0.1:{uas_port}");
    let uas = Uas::start(&scenario(&dir, "uas-rr.xml", &callee), uas_port, 50, &dir);
    let out = dir.join("call.json");
    let (ok, text) = run_loadgen(
        &call_args(port, uas_port, 50, &out),
        Duration::from_secs(30),
    );
    assert!(ok, "loadgen call failed:\n{text}\n{}", ser.log_text());
    let v = json(&out);
    assert_eq!(
        (v["attempted"].as_u64(), v["succeeded"].as_u64()),
        (Some(50), Some(50)),
        "{v}"
    );
    let (uas_ok, log) = uas.finish(Duration::from_secs(20));
    assert!(uas_ok, "sipp UAS failed:\n{log}\n{}", ser.log_text());
}

#[test]
fn xml_uac_rr_against_xml_uas_rr_through_ser() {
    let dir = temp_dir("lg-xml");
    let uas_port = free_port();
    let ser = Ser::start("lg-xml", RR_PROXY, 0, 2, "auto");
    let port = ser.port;
    let callee = format!("127.0.0.1:{uas_port}");
    let uas_scen = scenario(&dir, "uas-rr.xml", &callee);
    let uac_scen = scenario(&dir, "uac-rr.xml", &callee);
    let uas_json = dir.join("uas.json");
    let uas = Answerer::start(&[
        uas_scen.to_str().expect("path"),
        "--listen",
        &callee,
        "--count",
        "30",
        "--json",
        &uas_json.display().to_string(),
    ]);
    let out = dir.join("uac.json");
    let args: Vec<String> = [
        "-sf",
        uac_scen.to_str().expect("path"),
        "--target",
        &format!("127.0.0.1:{port}"),
        "--rate",
        "50",
        "--count",
        "30",
        "--timeout",
        "5",
        "--json",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, text) = run_loadgen(&args, Duration::from_secs(30));
    assert!(ok, "loadgen XML UAC failed:\n{text}\n{}", ser.log_text());
    let v = json(&out);
    assert_eq!(v["succeeded"], 30, "{v}");
    // The UAS side (timewait 4 s after the last call) ends by itself with its report.
    let mut uas = uas;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while uas.0.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let u = json(&uas_json);
    assert_eq!(u["succeeded"], 30, "{u}");
}

const WWW_SCRIPT: &str = r#"
loadmodule "sl.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "DBURL")
modparam("auth", "secret", "alsdkhglaksdhfkloiwr")
route{
    if (method=="REGISTER") {
        if (!www_authorize("127.0.0.1", "subscriber")) {
            www_challenge("127.0.0.1", "QOP");
            break;
        };
        if (!check_to()) { sl_send_reply("403", "Not Yours"); break; };
        sl_send_reply("200", "OK");
        break;
    };
    sl_send_reply("403", "No");
}
"#;

#[test]
fn register_answers_digest_challenges() {
    let dir = temp_dir("lg-register");
    let _ = std::fs::remove_file(dir.join("ser.db"));
    let url = format!("sqlite://{}", dir.join("ser.db").display());
    let serctl = |args: &[&str]| {
        run_bounded(
            Command::new(SERCTL)
                .args(args)
                .env("DB_URL", &url)
                .env("SIP_DOMAIN", "127.0.0.1")
                .env("SER_FIFO", dir.join("no_fifo"))
                .env("SERCTL_TIMEOUT", "2")
                .current_dir(&dir),
            Duration::from_secs(20),
        )
    };
    let (ok, out) = serctl(&["db", "init"]);
    assert!(ok, "{out}");
    let mut csv = String::new();
    for i in 1..=3 {
        let (ok, out) = serctl(&["add", &format!("lg{i}"), &format!("pw{i}"), "lg@x"]);
        assert!(ok, "{out}");
        csv.push_str(&format!("lg{i},pw{i},127.0.0.1\n"));
    }
    let users = dir.join("users.csv");
    std::fs::write(&users, csv).expect("users.csv");
    for qop in ["1", "0"] {
        let script = WWW_SCRIPT.replace("DBURL", &url).replace("QOP", qop);
        let ser = Ser::start_4digit(&format!("lg-reg-{qop}"), &script, 1, "auto");
        let port = ser.port;
        let out = dir.join(format!("reg-{qop}.json"));
        let args: Vec<String> = [
            "register",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--users",
            users.to_str().expect("path"),
            "--rate",
            "50",
            "--count",
            "30",
            "--timeout",
            "5",
            "--json",
            &out.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (ok, text) = run_loadgen(&args, Duration::from_secs(30));
        assert!(
            ok,
            "register (qop {qop}) failed:\n{text}\n{}",
            ser.log_text()
        );
        let v = json(&out);
        assert_eq!(v["succeeded"], 30, "{v}");
        assert_eq!(v["transactions"][0]["type"], "REGISTER", "{v}");
        assert_eq!(v["transactions"][0]["succeeded"], 30, "{v}");
    }
    // A wrong password is refused: every REGISTER ends in a failure counted by code.
    std::fs::write(&users, "lg1,wrong,127.0.0.1\n").expect("users.csv");
    let script = WWW_SCRIPT.replace("DBURL", &url).replace("QOP", "1");
    let ser = Ser::start_4digit("lg-reg-bad", &script, 1, "auto");
    let port = ser.port;
    let out = dir.join("reg-bad.json");
    let (ok, text) = run_loadgen(
        &[
            "register".to_string(),
            "--target".into(),
            format!("127.0.0.1:{port}"),
            "--users".into(),
            users.display().to_string(),
            "--count".into(),
            "5".into(),
            "--rate".into(),
            "50".into(),
            "--timeout".into(),
            "3".into(),
            "--json".into(),
            out.display().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert!(
        !ok,
        "a wrong password must fail the run:\n{text}\n{}",
        ser.log_text()
    );
    let v = json(&out);
    assert_eq!(v["failed"], 5, "{v}");
}
