//! The HTTP management listener of a real `ser` (`metrics_listen`): the Prometheus exposition
//! checked by a parser of the text format, scraped while sipp runs calls through a stateful
//! record-routing proxy (the counters must match what sipp itself counted), the JSON API, and
//! hostile clients that must not stop the listener.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The record-routing stateful proxy of tests/tm.rs, with short tm timers so the
/// transactions of the load are gone a few seconds after it (T1 = 100 ms: Timer J of the BYE
/// server transactions is 64*T1 = 6.4 s; wt_timer 1 s).
fn proxy(metrics: SocketAddr) -> String {
    format!(
        r#"
metrics_listen = "{metrics}"
loadmodule "modules/sl/sl.so"
loadmodule "modules/tm/tm.so"
loadmodule "modules/rr/rr.so"
loadmodule "modules/maxfwd/maxfwd.so"
modparam("tm", "retr_timer1", 100)
modparam("tm", "wt_timer", 1)
route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); break; }};
    if (loose_route()) {{ t_relay(); break; }};
    if (method=="INVITE") record_route();
    if (!t_relay()) {{ sl_reply_error(); break; }};
}}
"#
    )
}

/// A free TCP port on 127.0.0.1.
fn free_tcp() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    l.local_addr().expect("addr")
}

/// One HTTP/1.0 GET: (status, head, body); bounded by socket timeouts.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    get_with(addr, path, "")
}

/// [`get`] with more header lines (each ending in CRLF).
fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

// ---------------------------------------------------------------------------------------
// A parser of the text exposition format 0.0.4, strict where ser must be.

#[derive(Debug, Default)]
struct Exposition {
    /// family name -> type
    types: HashMap<String, String>,
    /// (name, labels) -> value
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn valid_label(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

type Labels = Vec<(String, String)>;

/// `{a="x",b="y\"z"}` → labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => return Err("raw newline in label value".into()),
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated label value")?;
        labels.push((name.to_string(), value));
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("junk after label value: {rest:?}"));
        }
    }
}

fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut helps: HashMap<String, ()> = HashMap::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("does not end with a line feed".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) || helps.insert(name.to_string(), ()).is_some() {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (Some(name), Some(ty), None) = (it.next(), it.next(), it.next()) else {
                return Err(at("bad TYPE".into()));
            };
            if !matches!(
                ty,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(at(format!("unknown type {ty}")));
            }
            if e.samples.keys().any(|(n, _)| n == name) {
                return Err(at("TYPE after samples".into()));
            }
            if e.types.insert(name.to_string(), ty.to_string()).is_some() {
                return Err(at("repeated TYPE".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest.trim_start_matches(' ').split(' ');
        let value: f64 = match fields.next() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some("NaN") => f64::NAN,
            Some(v) => v.parse().map_err(|_| at("bad value".into()))?,
            None => return Err(at("no value".into())),
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at("bad timestamp".into()))?;
        }
        // Every sample's family has HELP and TYPE (the sample name is the family name for
        // counters and gauges in 0.0.4).
        let ty = e
            .types
            .get(name)
            .ok_or_else(|| at("sample without TYPE".into()))?;
        if !helps.contains_key(name) {
            return Err(at("sample without HELP".into()));
        }
        if ty == "counter" && !(value >= 0.0 && value.fract() == 0.0) {
            return Err(at("counter not a non-negative integer".into()));
        }
        let mut sorted = labels.clone();
        sorted.sort();
        sorted.dedup_by(|a, b| a.0 == b.0);
        if sorted.len() != labels.len() {
            return Err(at("repeated label".into()));
        }
        if e.samples
            .insert((name.to_string(), sorted), value)
            .is_some()
        {
            return Err(at("duplicate series".into()));
        }
    }
    Ok(e)
}

impl Exposition {
    /// The sum over every series of `name` whose labels include all of `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        let mut found = false;
        let mut total = 0.0;
        for ((n, labels), v) in &self.samples {
            if n == name
                && want
                    .iter()
                    .all(|(k, w)| labels.iter().any(|(lk, lv)| lk == k && lv == w))
            {
                found = true;
                total += v;
            }
        }
        assert!(found, "no series {name}{want:?}");
        total as u64
    }

    fn shards_of(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .keys()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, l)| l.iter().find(|(k, _)| k == "shard").map(|(_, v)| v.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn scrape(addr: SocketAddr) -> Exposition {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse_exposition(&body).unwrap_or_else(|e| panic!("bad exposition: {e}\n{body}"))
}

/// Every counter of `b` is at least its value in `a` (a later scrape never goes back).
fn assert_monotonic(a: &Exposition, b: &Exposition) {
    for ((name, labels), va) in &a.samples {
        if a.types.get(name).map(String::as_str) != Some("counter") {
            continue;
        }
        let vb = b
            .samples
            .get(&(name.clone(), labels.clone()))
            .unwrap_or_else(|| panic!("{name}{labels:?} vanished"));
        assert!(vb >= va, "{name}{labels:?} went from {va} to {vb}");
    }
}

#[test]
fn the_exposition_parser_rejects_what_the_format_forbids() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\"} 1\n";
    assert!(parse_exposition(ok).is_ok());
    for bad in [
        "a_total 1\n",                                  // no HELP/TYPE
        "# TYPE a_total counter\na_total 1\n",          // no HELP
        "# HELP a x\n# TYPE a gauge\na{l=\"x} 1\n",     // unterminated
        "# HELP a x\n# TYPE a gauge\na{1l=\"x\"} 1\n",  // bad label name
        "# HELP a x\n# TYPE a gauge\na{l=\"\\q\"} 1\n", // bad escape
        "# HELP a x\n# TYPE a counter\na -1\n",         // negative counter
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",       // duplicate series
        "# HELP 9a x\n# TYPE 9a gauge\n9a 1\n",         // bad name
        "# HELP a x\n# TYPE a gauge\na 1",              // no final LF
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------------------
// sipp

fn require_sipp() {
    assert!(
        have("sipp"),
        "sipp (Debian sip-tester) is required; scripts/test.sh installs it"
    );
}

/// A scenario of tests/data/sipp with `@CALLEE@` replaced, as `dir/<name>.xml`: sipp names
/// its `-trace_counts` file `<name>_<pid>_counts.csv` in its working directory.
fn scenario(dir: &Path, src: &str, name: &str, callee: &str) -> PathBuf {
    let text =
        std::fs::read_to_string(repo_root().join("tests/data/sipp").join(src)).expect("scenario");
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, text.replace("@CALLEE@", callee)).expect("write scenario");
    path
}

/// The last row of sipp's `<name>_<pid>_counts.csv` in `dir`: column → count.
fn sipp_counts(dir: &Path, name: &str) -> HashMap<String, u64> {
    let prefix = format!("{name}_");
    let file = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&prefix) && f.ends_with("_counts.csv"))
        })
        .unwrap_or_else(|| panic!("no {name} counts file in {}", dir.display()));
    let text = std::fs::read_to_string(&file).expect("counts file");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("a row").split(';').collect();
    header
        .iter()
        .zip(last)
        .filter_map(|(h, v)| Some((h.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Sent/received plus retransmissions of one scenario step, e.g. `c(&m, "0_INVITE")`.
fn both(m: &HashMap<String, u64>, step: &str, first: &str) -> u64 {
    let get = |k: String| {
        *m.get(&k)
            .unwrap_or_else(|| panic!("no column {k} in {m:?}"))
    };
    get(format!("{step}_{first}")) + get(format!("{step}_Retrans"))
}

#[test]
fn counters_match_sipps_own_numbers_under_a_call_load() {
    require_sipp();
    const CALLS: u64 = 200;
    let dir = temp_dir("metrics-load");
    for e in std::fs::read_dir(&dir).expect("dir").flatten() {
        let _ = std::fs::remove_file(e.path()); // counts files of an earlier run
    }
    let http = free_tcp();
    let uas_port = free_port();
    let callee = format!("127.0.0.1:{uas_port}");
    let ser = Ser::start("metrics-load", &proxy(http), 0, 2, "auto");
    let port = ser.port;

    let before = scrape(http);
    assert_eq!(
        before.shards_of("ser_sip_requests_received_total"),
        ["0", "1"]
    );
    assert_eq!(before.sum("ser_sip_requests_received_total", &[]), 0);

    let uas_scen = scenario(&dir, "uas-rr.xml", "uas", &callee);
    let mut uas = Command::new("sipp")
        .current_dir(&dir)
        .arg("-sf")
        .arg(&uas_scen)
        .args(["-i", "127.0.0.1", "-p", &uas_port.to_string()])
        .args(["-m", &CALLS.to_string()])
        .args([
            "-nostdin",
            "-timeout",
            "60",
            "-timeout_error",
            "-trace_counts",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));

    // 200 calls at 50 calls/s: about 4 s of load, scraped twice while it runs.
    let uac_scen = scenario(&dir, "uac-rr.xml", "uac", &callee);
    let uac_dir = dir.to_path_buf();
    let uac = std::thread::spawn(move || {
        let uac_port = free_port();
        run_bounded(
            Command::new("sipp")
                .current_dir(&uac_dir)
                .arg("-sf")
                .arg(&uac_scen)
                .arg(format!("127.0.0.1:{port}"))
                .args(["-i", "127.0.0.1", "-p", &uac_port.to_string()])
                .args(["-m", &CALLS.to_string(), "-r", "50"])
                .args(["-timeout", "40", "-timeout_error", "-nostdin"])
                .args(["-trace_counts", "-trace_err", "-error_file", "/dev/null"]),
            Duration::from_secs(50),
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mid1 = scrape(http);
    std::thread::sleep(Duration::from_millis(1200));
    let mid2 = scrape(http);
    assert_monotonic(&before, &mid1);
    assert_monotonic(&mid1, &mid2);
    assert!(
        mid1.sum("ser_sip_requests_received_total", &[("method", "INVITE")]) > 0,
        "no INVITE counted 1.5 s into the load"
    );
    // Within one scrape, per shard: the transactions alive now are some of those created
    // (the shard counts a creation before it shows the new live count), and there are some.
    for mid in [&mid1, &mid2] {
        for sh in ["0", "1"] {
            let live = mid.sum("ser_tm_transactions", &[("shard", sh)]);
            let created = mid.sum("ser_tm_transactions_total", &[("shard", sh)]);
            assert!(
                live <= created,
                "shard {sh}: {live} alive of {created} created"
            );
        }
    }
    assert!(
        mid2.sum("ser_tm_transactions_total", &[]) > 0,
        "no transaction created"
    );

    let (ok, out) = uac.join().expect("uac thread");
    assert!(ok, "UAC failed:\n{out}\n{}", ser.log_text());
    // The UAS ends after its last call's 4 s timewait.
    let deadline = Instant::now() + Duration::from_secs(30);
    let uas_ok = loop {
        if let Ok(Some(st)) = uas.try_wait() {
            break st.success();
        }
        if Instant::now() > deadline {
            let _ = uas.kill();
            let _ = uas.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(uas_ok, "UAS failed\n{}", ser.log_text());

    let end = scrape(http);
    assert_monotonic(&mid2, &end);
    let uac_n = sipp_counts(&dir, "uac");
    let uas_n = sipp_counts(&dir, "uas");
    let rq_in = |m: &str| end.sum("ser_sip_requests_received_total", &[("method", m)]);
    let rq_out = |m: &str| end.sum("ser_sip_requests_sent_total", &[("method", m)]);
    let rp_in = |c: &str| end.sum("ser_sip_replies_received_total", &[("class", c)]);
    let rp_out = |c: &str| end.sum("ser_sip_replies_sent_total", &[("class", c)]);

    // Every call completed: sipp sent CALLS INVITEs, ACKs and BYEs (first copies).
    assert_eq!(uac_n["0_INVITE_Sent"], CALLS, "{uac_n:?}");
    assert_eq!(uac_n["6_BYE_Sent"], CALLS, "{uac_n:?}");

    // What ser received from the caller is what the caller sent, retransmissions included
    // (loopback loses nothing); the uac scenario steps are 0 INVITE, 4 ACK, 6 BYE.
    assert_eq!(rq_in("INVITE"), both(&uac_n, "0_INVITE", "Sent"));
    assert_eq!(rq_in("ACK"), both(&uac_n, "4_ACK", "Sent"));
    assert_eq!(rq_in("BYE"), both(&uac_n, "6_BYE", "Sent"));
    // ...and nothing else: the load has no other requests.
    assert_eq!(end.sum("ser_sip_requests_received_total", &[]), {
        both(&uac_n, "0_INVITE", "Sent")
            + both(&uac_n, "4_ACK", "Sent")
            + both(&uac_n, "6_BYE", "Sent")
    });
    // What ser sent to the callee is what the callee received (steps 0 INVITE, 3 ACK, 4 BYE;
    // tm's own retransmissions land in the callee's Retrans columns).
    assert_eq!(rq_out("INVITE"), both(&uas_n, "0_INVITE", "Recv"));
    assert_eq!(rq_out("ACK"), both(&uas_n, "3_ACK", "Recv"));
    assert_eq!(rq_out("BYE"), both(&uas_n, "4_BYE", "Recv"));
    // Replies from the callee: its 180 (step 1) and its two 200s (steps 2 and 5).
    assert_eq!(rp_in("1xx"), both(&uas_n, "1_180", "Sent"));
    assert_eq!(
        rp_in("2xx"),
        both(&uas_n, "2_200", "Sent") + both(&uas_n, "5_200", "Sent")
    );
    // Replies to the caller: tm's 100 and the relayed 180 (steps 1, 2), the 200s (3, 7).
    assert_eq!(
        rp_out("1xx"),
        both(&uac_n, "1_100", "Recv") + both(&uac_n, "2_180", "Recv")
    );
    assert_eq!(
        rp_out("2xx"),
        both(&uac_n, "3_200", "Recv") + both(&uac_n, "7_200", "Recv")
    );
    for c in ["3xx", "4xx", "5xx", "6xx"] {
        assert_eq!(rp_in(c) + rp_out(c), 0, "{c}");
    }

    // One transaction per INVITE and per BYE (retransmissions are absorbed, the ACK of a 2xx
    // is stateless), each completed with a 2xx; one local reply (the 100) per INVITE.
    assert_eq!(end.sum("ser_tm_transactions_total", &[]), 2 * CALLS);
    assert_eq!(end.sum("ser_tm_local_replies_total", &[]), CALLS);
    assert_eq!(end.sum("ser_tm_refused_total", &[]), 0);
    assert_eq!(end.sum("ser_sl_replies_total", &[]), 0);
    assert_eq!(end.sum("ser_drops_total", &[]), 0);
    // Both shards took part (the Call-IDs spread over them).
    for sh in ["0", "1"] {
        assert!(
            end.sum("ser_tm_transactions_total", &[("shard", sh)]) > 0,
            "shard {sh}"
        );
    }

    // The transactions end once their timers run out (Timer J = 6.4 s here): the gauges go
    // back to 0 and every one of them counts as completed with a 2xx.
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let e = scrape(http);
        let live = e.sum("ser_tm_transactions", &[]) + e.sum("ser_tm_transactions_waiting", &[]);
        if live == 0 || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(last.sum("ser_tm_transactions", &[]), 0);
    assert_eq!(last.sum("ser_tm_transactions_waiting", &[]), 0);
    assert_eq!(
        last.sum("ser_tm_completed_total", &[("class", "2xx")]),
        2 * CALLS
    );
    assert_eq!(last.sum("ser_tm_completed_total", &[]), 2 * CALLS);
    assert!(last.sum("ser_uptime_seconds", &[]) >= 1);

    // The JSON t_stats says the same.
    let (status, _, body) = get(http, "/api/t_stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["body"]["total"].as_u64(), Some(2 * CALLS), "{v}");
    assert_eq!(v["body"]["completed_2xx"].as_u64(), Some(2 * CALLS), "{v}");
    assert_eq!(v["body"]["current"].as_u64(), Some(0), "{v}");
}

/// ser with its metrics listener on a free port, answering every request 404 statelessly.
fn start_answering_404(tag: &str) -> (Ser, SocketAddr) {
    let http = free_tcp();
    let script = format!(
        "metrics_listen = \"{http}\"\nloadmodule \"modules/sl/sl.so\"\n\
         route {{ sl_send_reply(\"404\", \"Not Here\"); }}\n"
    );
    (Ser::start(tag, &script, 0, 1, "auto"), http)
}

/// A web page of another site can make the operator's browser send a GET anywhere (an
/// `<img>`, no CORS preflight): such a request, recognised by its `Origin` or `Sec-Fetch-Site`,
/// runs no management command (`rl.set_pipe`, `reload`, ...); Prometheus, curl and serweb send
/// neither header and are served as before, and `/metrics` (read-only) stays open to all.
#[test]
fn api_commands_are_refused_to_other_sites_pages() {
    let (ser, http) = start_answering_404("metrics-cross-site");
    for headers in [
        "Origin: https://evil.example\r\n",
        "Origin: null\r\n",
        "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n",
        "sec-fetch-site: same-site\r\n",
    ] {
        let (status, _, body) = get_with(http, "/api/reload", headers);
        assert_eq!(status, 403, "{headers:?}: {body}");
        let (status, _, body) = get_with(http, "/metrics", headers);
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    assert!(
        !ser.log_text().contains("reloaded"),
        "a cross-site request reloaded: {}",
        ser.log_text()
    );
    // Typed into the address bar (none), the listener's own page (same-origin), no browser.
    for headers in [
        "",
        "Sec-Fetch-Site: none\r\n",
        "Sec-Fetch-Site: same-origin\r\n",
    ] {
        let (status, _, body) = get_with(http, "/api/version", headers);
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
}

#[test]
fn json_api_and_hostile_clients() {
    let (ser, http) = start_answering_404("metrics-api");

    let (status, _, body) = get(http, "/api/version");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], 200);
    assert!(v["body"]["version"].is_string(), "{v}");

    let (status, _, body) = get(http, "/api/t_stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["body"]["current"].as_u64(), Some(0), "{v}");

    // One stateless 404: counted by code, and a request received.
    let peer = Peer::new();
    peer.send(
        ser.addr(),
        request("OPTIONS", "sip:x@127.0.0.1", peer.port(), "api-1", "").as_bytes(),
    );
    let reply = peer.recv().expect("a reply");
    assert_eq!(common::status(&reply), Some(404));
    let (status, _, body) = get(http, "/api/sl_stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["body"]["404"].as_u64(), Some(1), "{v}");
    let e = scrape(http);
    assert_eq!(e.sum("ser_sl_replies_total", &[("code", "404")]), 1);
    assert_eq!(
        e.sum("ser_sip_requests_received_total", &[("method", "OPTIONS")]),
        1
    );
    assert_eq!(e.sum("ser_sip_replies_sent_total", &[("class", "4xx")]), 1);

    let (status, _, body) = get(http, "/api/nosuch?arg=a&arg=b");
    assert_eq!(status, 404, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["code"], 500);
    let (status, _, _) = get(http, "/api/bad%20name");
    assert_eq!(status, 400);
    let (status, _, _) = get(http, "/nowhere");
    assert_eq!(status, 404);
    let (status, _, body) = get(http, "/");
    assert_eq!(status, 200);
    assert!(body.contains("/metrics"));

    // A half-open client (a partial request, never finished, never closed) and one that
    // sends nothing at all hold connections while a scrape must still be answered at once.
    let mut half = TcpStream::connect(http).expect("connect");
    half.write_all(b"GET /metr").expect("partial");
    let _silent = TcpStream::connect(http).expect("connect");
    // Answered at all (scrape's socket timeouts bound it) while those two hold connections;
    // how fast is measured by benchmarks, not tests.
    scrape(http);

    // Garbage and an oversized head get an error or a close, never a dead listener.
    for junk in [
        b"\x00\x01\x02 garbage\xff\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"POST /metrics HTTP/1.1\r\n\r\n".to_vec(),
        vec![b'a'; 20_000],
    ] {
        let mut s = TcpStream::connect(http).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(6)))
            .expect("timeout");
        let _ = s.write_all(&junk);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{junk:?} got {text}"
        );
    }
    // A client that connects and closes at once.
    drop(TcpStream::connect(http).expect("connect"));
    // More clients than the listener serves at once: the extra ones are refused, and once
    // they are gone the listener answers again.
    let hogs: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(http).ok())
        .collect();
    drop(hogs);
    drop(half);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Not `get`: a refused connection may be reset on a loaded machine; retry then too.
        let answered = TcpStream::connect(http).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).ok()?;
            Some(raw.starts_with(b"HTTP/1.1 200"))
        });
        if answered == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "listener still busy");
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = scrape(http);
    assert_eq!(e.shards_of("ser_drops_total"), ["0"]);
}
