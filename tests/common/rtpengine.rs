//! A private rtpengine (Debian's rtpengine-daemon, userspace forwarding) on 127.0.0.1 for the
//! media relay tests: its ng port and RTP ports from free ranges, stopped by PID, and a small
//! ng client (bencode from ser's own codec) to ask it what it has.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ser::rtpengine::bencode::{self, Value};

use super::{free_port, have, stop_child};

/// A private rtpengine on 127.0.0.1, stopped by PID when dropped.
pub struct Rtpe {
    child: Child,
    pub ng: SocketAddr,
    /// Its RTP port range.
    pub ports: (u16, u16),
    log: std::path::PathBuf,
}

impl Rtpe {
    pub fn start(dir: &Path) -> Rtpe {
        assert!(
            have("rtpengine"),
            "rtpengine (Debian rtpengine-daemon) is required; scripts/test.sh installs it"
        );
        let ng_port = free_port();
        // RTP ports: 200 from a random spot of 33000-59000 (above free_port's range); the
        // daemon skips ports in use.
        let base = 33000 + (std::process::id() as u16 % 130) * 200;
        let ports = (base, base + 199);
        let log = dir.join(format!("rtpengine-{ng_port}.log"));
        let child = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--table=-1",
            ])
            .args(["--interface=127.0.0.1", "--delete-delay=0", "--log-level=6"])
            .arg(format!("--listen-ng=127.0.0.1:{ng_port}"))
            .arg(format!("--port-min={}", ports.0))
            .arg(format!("--port-max={}", ports.1))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start rtpengine");
        let mut r = Rtpe {
            child,
            ng: SocketAddr::from(([127, 0, 0, 1], ng_port)),
            ports,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut ping = Value::dict();
            ping.set("command", Value::str("ping"));
            if r.ng_try(&ping).is_some() {
                return r;
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("rtpengine exited at start ({st}):\n{}", r.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "rtpengine does not answer:\n{}",
                r.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ng_try(&self, cmd: &Value) -> Option<Value> {
        let s = UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
        // A cookie of its own each time: rtpengine answers a cookie it saw lately from its
        // cache.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut data = format!("t{}_{n} ", std::process::id()).into_bytes();
        cmd.encode(&mut data);
        s.send_to(&data, self.ng).ok()?;
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf).ok()?;
        let sp = buf[..n].iter().position(|&b| b == b' ')?;
        bencode::decode(&buf[sp + 1..n]).ok()
    }

    pub fn ng(&self, command: &str, call_id: Option<&str>) -> Value {
        let mut cmd = Value::dict();
        cmd.set("command", Value::str(command));
        if let Some(c) = call_id {
            cmd.set("call-id", Value::str(c));
        }
        self.ng_try(&cmd)
            .unwrap_or_else(|| panic!("rtpengine did not answer {command}"))
    }

    /// The Call-IDs rtpengine has.
    pub fn calls(&self) -> Vec<String> {
        match self.ng("list", None).get("calls") {
            Some(Value::List(l)) => l.iter().filter_map(Value::as_text).collect(),
            _ => Vec::new(),
        }
    }

    pub fn in_range(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }
}

impl Drop for Rtpe {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}
