//! dist/ser.cfg, the public-facing sample, against sipvicious (Debian's package: svmap,
//! svwar, svcrack), as an operator's new server meets it within minutes of going online.
//! ser runs on 127.0.0.1:5060 (the scanners' default port, as on a real address) inside a
//! network namespace of its own with only loopback, with two subscribers (one registered) in
//! its SQLite database.
//!
//! - As shipped, the scanners' User-Agent gets no answer at all: svmap finds no server, svwar
//!   no extension, svcrack no password.
//! - Without that rule (a scanner that hides its name), what the script says still holds:
//!   svmap finds a server whose Server header names no version; svwar finds no extension,
//!   registered or not, by REGISTER or INVITE (every one gets the same challenge); a wrong
//!   password and an unknown user get the same answer; svcrack cracks nothing and pike blocks
//!   it (logged once).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const INNER: &str = "SER_SCANNERS_NETNS";
const PORT: u16 = 5060;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// dist/ser.cfg for loopback: its domain 127.0.0.1, our data_dir and FIFO, in the foreground,
/// the listen lines given by the test harness (`-l 127.0.0.1 -p 5060`); optionally without
/// the User-Agent rule.
fn dist_script(data: &Path, fifo: &Path, ua_rule: bool) -> String {
    let text = std::fs::read_to_string(repo_root().join("dist/ser.cfg")).expect("dist/ser.cfg");
    let mut text = text
        .lines()
        .filter(|l| !l.starts_with("listen=") && !l.starts_with("fifo="))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "data_dir=\"/var/lib/ser\"",
            &format!("data_dir=\"{}\"", data.display()),
        )
        .replace("example\\.com", "127\\.0\\.0\\.1")
        .replace("example.com", "127.0.0.1")
        .replace("fork=yes", "fork=no")
        .replace("log_stderror=no", "log_stderror=yes");
    assert!(
        text.contains("pike_check_req()"),
        "dist/ser.cfg has no pike"
    );
    if !ua_rule {
        let start = text
            .find("\t# scanners: no answer")
            .expect("the User-Agent rule");
        let end = text.find("\t# floods:").expect("the pike rule");
        text.replace_range(start..end, "");
    }
    format!("fifo=\"{}\"\n{text}\n", fifo.display())
}

/// Runs one sipvicious tool (bounded); its output, stdout and stderr.
fn sipvicious(tool: &str, args: &[&str]) -> String {
    let (_, out) = run_bounded(
        Command::new(tool)
            .args(args)
            .args(["-b", "127.0.0.1", "-x", "127.0.0.1", "127.0.0.1"]),
        Duration::from_secs(60),
    );
    out
}

fn svwar(args: &[&str]) -> String {
    sipvicious("svwar", &[&["-e", "100-110", "-p", "5060"], args].concat())
}

/// The extensions svwar's result table lists ("| 101 | reqauth |").
fn extensions_found(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 3
                && cells[1].chars().all(|c| c.is_ascii_digit())
                && !cells[1].is_empty())
            .then(|| cells[1].to_string())
        })
        .collect()
}

struct Setup {
    dir: TempDir,
    fifo: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        assert!(
            have("svwar") && have("svmap") && have("svcrack"),
            "sipvicious is required; scripts/test.sh installs it (Debian package sipvicious)"
        );
        let dir = temp_dir(&format!("scanners-{tag}"));
        let fifo = dir.join("fifo");
        let s = Setup { dir, fifo };
        assert!(s.serctl(&["db", "init"]).starts_with("tables created"));
        for (u, pw) in [("100", "k7#Vq9!pLm2xR4"), ("101", "Zt8&wN3$hQ6yB1")] {
            assert_eq!(
                s.serctl(&["add", u, pw, "u@example.org"]),
                "new user added\n"
            );
        }
        s
    }

    fn serctl(&self, args: &[&str]) -> String {
        let (ok, out) = run_bounded(
            Command::new(SERCTL)
                .args(args)
                .env(
                    "DB_URL",
                    format!("sqlite://{}", self.dir.join("ser.db").display()),
                )
                .env("SIP_DOMAIN", "127.0.0.1")
                .env("SER_FIFO", &self.fifo)
                .env("SERCTL_TIMEOUT", "10"),
            Duration::from_secs(20),
        );
        assert!(ok, "serctl {args:?}: {out}");
        out
    }

    fn start(&self, tag: &str, ua_rule: bool) -> Ser {
        let ser = Ser::start(
            tag,
            &dist_script(&self.dir, &self.fifo, ua_rule),
            PORT,
            1,
            "auto",
        );
        wait_fifo(&self.fifo, &ser);
        // 101's phone is registered (and would ring): svwar must not find it either.
        self.serctl(&["ul", "add", "101", "sip:101@127.0.0.1:46100"]);
        ser
    }
}

#[test]
fn scanners_named_in_the_user_agent_get_nothing() {
    netns::in_netns(
        INNER,
        "scanners_named_in_the_user_agent_get_nothing",
        Duration::from_secs(240),
        || {
            let s = Setup::new("ua");
            let ser = s.start("scan-ua", true);
            let out = sipvicious("svmap", &["-p", "5060"]);
            assert!(out.contains("found nothing"), "svmap: {out}");
            for args in [&[][..], &["-m", "INVITE"][..]] {
                let out = svwar(args);
                assert!(
                    extensions_found(&out).is_empty() && out.contains("found nothing"),
                    "svwar {args:?}: {out}"
                );
            }
            let out = sipvicious(
                "svcrack",
                &["-u", "100", "-r", "1-50", "--maximumtime=3", "-p", "5060"],
            );
            assert!(
                !out.contains("| 100") && out.contains("found nothing"),
                "svcrack: {out}"
            );
            // Not a word went back to them.
            assert_eq!(transactions_and_replies(&s.fifo), 0, "{}", ser.log_text());
        },
    );
}

/// Replies ser sent statelessly plus transactions it created (sl_stats, t_stats).
fn transactions_and_replies(fifo: &Path) -> u64 {
    let (_, sl, _) = serctl(fifo, &["fifo", "sl_stats"]);
    let (_, t, _) = serctl(fifo, &["fifo", "t_stats"]);
    let total = |text: &str, key: &str| -> u64 {
        text.split(key)
            .nth(1)
            .and_then(|r| {
                r.split(|c: char| !c.is_ascii_digit())
                    .find(|x| !x.is_empty())
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // sl_stats lines are "200: n" and the like; sum every count.
    let sl_sum: u64 = sl
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .filter_map(|n| n.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    sl_sum + total(&t, "Total: ")
}

#[test]
fn a_scanner_that_hides_its_name_learns_nothing_either() {
    netns::in_netns(
        INNER,
        "a_scanner_that_hides_its_name_learns_nothing_either",
        Duration::from_secs(240),
        || {
            let s = Setup::new("hidden");
            let ser = s.start("scan-hidden", false);
            // The server is there, and says no version.
            let out = sipvicious("svmap", &["-p", "5060"]);
            assert!(out.contains("127.0.0.1:5060"), "svmap: {out}");
            assert!(
                out.contains("| ser "),
                "svmap shows the Server header: {out}"
            );
            // No extension, by REGISTER or INVITE (--force: every unknown one gets a challenge
            // too, which svwar notices and gives up on without it).
            for args in [
                &["--force"][..],
                &["--force", "-m", "INVITE"][..],
                &["-m", "INVITE"][..],
            ] {
                let out = svwar(args);
                assert!(
                    extensions_found(&out).is_empty(),
                    "svwar {args:?} found extensions: {out}"
                );
                assert!(out.contains("found nothing"), "svwar {args:?}: {out}");
            }
            // A wrong password and an unknown user: the same answer.
            let p = Peer::new();
            let wrong = register_with_bad_password(&p, "100");
            let unknown = register_with_bad_password(&p, "999");
            assert_eq!(
                status_line(&wrong),
                status_line(&unknown),
                "{wrong}\n{unknown}"
            );
            assert_eq!(status(&wrong), Some(401), "{wrong}");
            // svcrack guesses 100's password as fast as it can: nothing cracked; pike blocks
            // it (one log line), and svcrack gives up when no answer comes for 5 s.
            assert!(transactions_and_replies(&s.fifo) > 0);
            let out = sipvicious(
                "svcrack",
                &["-u", "100", "-r", "1-300", "--maximumtime=5", "-p", "5060"],
            );
            assert!(
                !out.contains("| 100") && out.contains("found nothing"),
                "svcrack: {out}"
            );
            let log = ser.log_text();
            assert_eq!(
                log.matches("pike: blocking 127.0.0.1").count(),
                1,
                "pike did not block svcrack once: {log}"
            );
        },
    );
}

/// dist/ser.cfg: a request whose From claims one of our users is challenged however the From
/// is written (RFC 3261 7.3.1: blanks before the colon, a value folded onto the next line;
/// header names in any case): none reaches 101's registered phone unauthenticated.
#[test]
fn a_from_claiming_one_of_ours_is_challenged_however_it_is_written() {
    netns::in_netns(
        INNER,
        "a_from_claiming_one_of_ours_is_challenged_however_it_is_written",
        Duration::from_secs(120),
        || {
            let s = Setup::new("from");
            let ser = s.start("scan-from", false);
            let to = std::net::SocketAddr::from(([127, 0, 0, 1], PORT));
            let p = Peer::new();
            for (i, from) in [
                "From: <sip:100@127.0.0.1>",
                "FROM: <sip:100@127.0.0.1>",
                "From : <sip:100@127.0.0.1>",
                "f\t: <sip:100@127.0.0.1>",
                "From:\r\n <sip:100@127.0.0.1>",
                "From: \"Bob\"\r\n\t<sip:100@127.0.0.1>",
            ]
            .iter()
            .enumerate()
            {
                let invite = format!(
                    "INVITE sip:101@127.0.0.1 SIP/2.0\r\n\
                     Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-from-{i}\r\n\
                     Max-Forwards: 70\r\n\
                     {from};tag=from-{i}\r\n\
                     To: <sip:101@127.0.0.1>\r\n\
                     Call-ID: from-{i}\r\n\
                     CSeq: 1 INVITE\r\n\
                     Contact: <sip:100@127.0.0.1:{port}>\r\n\
                     Content-Length: 0\r\n\r\n",
                    port = p.port()
                );
                p.send(to, invite.as_bytes());
                let reply = final_reply(&p, Duration::from_secs(5)).unwrap_or_else(|| {
                    panic!(
                        "no final answer to {from:?} (relayed unchallenged?): {}",
                        ser.log_text()
                    )
                });
                assert_eq!(status(&reply), Some(407), "{from:?} got: {reply}");
            }
        },
    );
}

fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

/// A REGISTER for `user` answered with a challenge's nonce and a wrong response; the reply.
fn register_with_bad_password(p: &Peer, user: &str) -> String {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], PORT));
    let reg = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bad-{user}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@127.0.0.1>;tag=bad-{user}\r\n\
             To: <sip:{user}@127.0.0.1>\r\n\
             Call-ID: bad-{user}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:{port}>\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            port = p.port()
        )
    };
    p.send(to, reg(1, "").as_bytes());
    let challenge = final_reply(p, Duration::from_secs(5)).expect("a challenge");
    assert_eq!(status(&challenge), Some(401), "{challenge}");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a nonce");
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"127.0.0.1\", nonce=\"{nonce}\", \
         uri=\"sip:127.0.0.1\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n"
    );
    p.send(to, reg(2, &auth).as_bytes());
    final_reply(p, Duration::from_secs(5)).expect("an answer to the wrong password")
}
