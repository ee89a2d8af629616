//! Module exec: `exec_msg(cmd)`, `exec_uri(cmd)`, `exec_user(cmd)` — external programs in
//! the routing script, as SER's exec module.
//!
//! - `exec_msg(cmd)`: runs `cmd` with `/bin/sh -c`, the request on its standard input and
//!   SER's variables in its environment (`SRC_IP`, also spelled `SRCIP` and `SIP_SRCIP`,
//!   `SIP_RURI`, `SIP_ORURI`, `SIP_USER`, `SIP_OUSER`, and `SIP_HF_<NAME>` per header field);
//!   true when it exits with status 0.
//! - `exec_uri(cmd)` / `exec_user(cmd)`: runs `cmd <uri>` (`cmd <user>`), with the same
//!   environment, and rewrites the destination set from its output: the first URI line becomes
//!   the Request-URI, the others the branches; true when at least one URI came out.
//!
//! A program never runs on a shard thread: the action suspends the script
//! ([`ser_script::SUSPEND`]), the program runs in the blocking pool with a time limit
//! (`modparam("exec", "time_to_kill", seconds)`, default 10; the whole process group is
//! killed when it runs out, and the action is false), and the script resumes on its shard
//! with the result. A slow program delays only its own request.
//!
//! What it does not do: exec in reply, failure or branch routes (refused when the script is
//! loaded), and SER's `exec_dset`/`exec_serialize` of later versions.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ser_script::KindSet;

use super::core::f;
use super::Action;
use super::{arg_str, Exports, ParamDef, ParamKind};

/// Most bytes of a program's output that are read.
const MAX_OUTPUT: usize = 64 * 1024;
/// Default `time_to_kill`, seconds.
pub const DEFAULT_TIME_TO_KILL: u64 = 10;

/// Which exec action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecKind {
    Msg,
    Uri,
    User,
}

pub fn register(ex: &mut Exports) {
    ex.function(f("exec_msg", 1, 1, KindSet::REQUEST, |a, _| {
        bind(a, ExecKind::Msg)
    }));
    ex.function(f("exec_uri", 1, 1, KindSet::REQUEST, |a, _| {
        bind(a, ExecKind::Uri)
    }));
    ex.function(f("exec_user", 1, 1, KindSet::REQUEST, |a, _| {
        bind(a, ExecKind::User)
    }));
    ex.param(
        "exec",
        ParamDef {
            name: "time_to_kill",
            kind: ParamKind::Int,
        },
    );
}

fn bind(a: &[ser_script::Arg], kind: ExecKind) -> Result<Action, String> {
    let cmd = a.first().map(arg_str).transpose()?.unwrap_or_default();
    if cmd.trim().is_empty() {
        return Err(String::from("an empty command"));
    }
    if cmd.contains('\0') {
        return Err(String::from("the command contains a NUL byte"));
    }
    Ok(Action::Exec { kind, cmd })
}

/// One program to run, built on the shard; runs in the blocking pool.
#[derive(Debug)]
pub struct ExecJob {
    pub kind: ExecKind,
    /// The shell command line (`cmd` with the URI or user appended for exec_uri/exec_user).
    pub command: String,
    /// The request, for exec_msg.
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// How the program ended.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// Exit status; None when it was killed or did not start.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub timed_out: bool,
    pub error: Option<String>,
}

/// Runs the job (blocking: the pool's threads only).
pub fn run_job(job: &ExecJob) -> ExecOutput {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&job.command)
        .stdin(if job.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so a timeout kills what the shell started too.
        .process_group(0);
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ExecOutput {
                error: Some(format!("cannot start /bin/sh: {e}")),
                ..ExecOutput::default()
            }
        }
    };
    let pid = child.id();
    // Feed stdin and read stdout on their own threads: a program that reads nothing, or
    // writes a lot before reading, must not deadlock us.
    if let (Some(mut sin), Some(data)) = (child.stdin.take(), job.stdin.clone()) {
        let _ = std::thread::Builder::new()
            .name(String::from("ser-exec-in"))
            .spawn(move || {
                let _ = sin.write_all(&data);
            });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::thread::Builder::new()
            .name(String::from("ser-exec-out"))
            .spawn(move || {
                let mut buf = Vec::new();
                let _ = (&mut out).take(MAX_OUTPUT as u64).read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
    }
    let deadline = Instant::now() + job.timeout;
    let mut result = ExecOutput::default();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                result.status = st.code();
                break;
            }
            Ok(None) => {}
            Err(e) => {
                result.error = Some(e.to_string());
                break;
            }
        }
        if Instant::now() >= deadline {
            result.timed_out = true;
            let _ = ser_shards::os::kill_group(pid, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // What it printed: the reader ends when every holder of the pipe is gone.
    let wait = if result.timed_out {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    if let Ok(out) = rx.recv_timeout(wait) {
        result.stdout = out;
    }
    if !result.timed_out {
        // The shell is gone; anything it left behind in its group goes with it.
        let _ = ser_shards::os::kill_group(pid, libc::SIGKILL);
    }
    result
}

impl crate::modules::ctx::MsgCtx<'_, '_> {
    /// The exec actions: build the job and suspend the script (the runner takes the job).
    pub(crate) fn exec(&mut self, kind: ExecKind, cmd: &str) -> i32 {
        if !self.can_suspend {
            crate::error!("exec: cannot run '{cmd}' here (the script cannot pause in this place)");
            return -1;
        }
        let uri = self.current_uri().to_string();
        let command = match kind {
            ExecKind::Msg => cmd.to_string(),
            ExecKind::Uri => format!("{cmd} {}", shell_word(&uri)),
            ExecKind::User => {
                let user = ser_parser::parse_uri(&uri)
                    .ok()
                    .and_then(|u| u.user.map(str::to_string))
                    .unwrap_or_default();
                format!("{cmd} {}", shell_word(&user))
            }
        };
        let secs = self
            .core
            .params
            .int("exec", "time_to_kill")
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_TIME_TO_KILL);
        let job = ExecJob {
            kind,
            command,
            stdin: (kind == ExecKind::Msg).then(|| self.msg.buf().to_vec()),
            env: self.exec_env(),
            timeout: Duration::from_secs(secs),
        };
        self.suspend = Some(crate::modules::ctx::Suspend::Work {
            pool: crate::modules::ctx::Pool::Blocking,
            work: Box::new(move || {
                let kind = job.kind;
                let out = run_job(&job);
                crate::modules::ctx::Resumed::Apply(Box::new(move |m| m.exec_result(kind, &out)))
            }),
        });
        ser_script::SUSPEND
    }

    /// SER's variables for the program.
    fn exec_env(&self) -> Vec<(String, String)> {
        let src = self.at.src.ip().to_string();
        let ruri = self.current_uri().to_string();
        let oruri = self.msg.request_uri().unwrap_or_default().to_string();
        let user_of = |u: &str| {
            ser_parser::parse_uri(u)
                .ok()
                .and_then(|u| u.user.map(str::to_string))
                .unwrap_or_default()
        };
        let mut env = vec![
            (String::from("SRC_IP"), src.clone()),
            (String::from("SRCIP"), src.clone()),
            (String::from("SIP_SRCIP"), src),
            (String::from("SIP_USER"), user_of(&ruri)),
            (String::from("SIP_OUSER"), user_of(&oruri)),
            (String::from("SIP_RURI"), ruri),
            (String::from("SIP_ORURI"), oruri),
        ];
        for h in self.msg.headers() {
            let name: String = String::from_utf8_lossy(h.raw_name)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            let key = format!("SIP_HF_{name}");
            let value = String::from_utf8_lossy(h.value).replace('\0', "");
            match env.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(&value);
                }
                None => env.push((key, value)),
            }
        }
        env
    }

    /// The action's result once its program ended; exec_uri/exec_user rewrite the
    /// destination set from the output.
    pub fn exec_result(&mut self, kind: ExecKind, out: &ExecOutput) -> i32 {
        if let Some(e) = &out.error {
            crate::error!("exec: {e}");
            return -1;
        }
        if out.timed_out {
            crate::notice!("exec: the program ran out of time (time_to_kill) and was killed");
            return -1;
        }
        match kind {
            ExecKind::Msg => {
                if out.status == Some(0) {
                    1
                } else {
                    -1
                }
            }
            ExecKind::Uri | ExecKind::User => {
                let mut uris = output_uris(&out.stdout).into_iter();
                let Some(first) = uris.next() else {
                    return -1;
                };
                self.s.uri = first;
                self.uri_changed = true;
                self.s.dst = None;
                self.s.branches.clear();
                self.s.branches.extend(
                    uris.take(super::core::MAX_BRANCHES)
                        .map(super::ctx::Branch::uri),
                );
                1
            }
        }
    }
}

/// `s` quoted for /bin/sh as one word.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The URIs of exec_uri/exec_user output: one per line, blank lines skipped, lines that are
/// not URIs skipped with a notice.
pub fn output_uris(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    let mut v = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if ser_parser::parse_uri(l).is_ok() {
            v.push(l.to_string());
        } else {
            crate::notice!("exec: output line is not a URI, ignored: {:.80}", l);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmd: &str, timeout_ms: u64) -> ExecJob {
        ExecJob {
            kind: ExecKind::Uri,
            command: cmd.to_string(),
            stdin: None,
            env: vec![("SRC_IP".into(), "127.0.0.9".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn output_and_status() {
        let o = run_job(&job(
            "echo sip:a@b; echo; echo junk; echo $SRC_IP; exit 3",
            5000,
        ));
        assert_eq!(o.status, Some(3));
        assert!(!o.timed_out);
        assert_eq!(output_uris(&o.stdout), ["sip:a@b"]);
        assert!(String::from_utf8_lossy(&o.stdout).contains("127.0.0.9"));
    }

    #[test]
    fn stdin_is_the_message() {
        let mut j = job("cat", 5000);
        j.stdin = Some(b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec());
        let o = run_job(&j);
        assert_eq!(o.status, Some(0));
        assert_eq!(o.stdout, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    }

    #[test]
    fn a_slow_program_is_killed_with_its_children() {
        let start = Instant::now();
        let o = run_job(&job("sleep 5; echo sip:late@x", 200));
        assert!(o.timed_out);
        assert!(o.stdout.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}
