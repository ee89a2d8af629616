//! Debian's `dnsmasq` as a real DNS server on loopback for resolution tests: records from
//! its command line, a free high port, killed by PID when dropped. scripts/test.sh installs
//! `dnsmasq-base`; without it the tests that need it fail and say so.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn dnsmasq_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "dnsmasq not found (PATH, /usr/sbin, /sbin): these tests need a real DNS \
                 server; install Debian's dnsmasq-base (scripts/test.sh does: \
                 apt-get install -y dnsmasq-base)"
            )
        })
}

/// Whether a DNS server answers a query for `probe.test` A at `addr` within 200 ms.
fn answers_udp(addr: SocketAddr) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    if sock.connect(addr).is_err()
        || sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
    {
        return false;
    }
    let mut query = vec![0x5e, 0x12, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["probe", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if sock.send(&query).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv(&mut buf), Ok(n) if n >= 12 && buf[..2] == [0x5e, 0x12] && buf[2] & 0x80 != 0)
}

/// A dnsmasq answering only from its command line, killed by PID when dropped.
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq with `records` (dnsmasq options) for the `test` domain, whose unknown
    /// names are NXDOMAIN, and waits until it accepts TCP (it binds UDP first).
    pub fn start(records: &[String]) -> Dnsmasq {
        let bin = dnsmasq_bin();
        let mut last_log = String::new();
        for _attempt in 0..5 {
            // dnsmasq cannot report a port it picked: a reserved one (super::free_port_udp_tcp),
            // and another one when dnsmasq finds it taken after all.
            let port = super::free_port_udp_tcp();
            let mut cmd = Command::new(&bin);
            cmd.args([
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--keep-in-foreground",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
                "--local=/test/",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_log.clear();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut last_log);
                    }
                    if last_log.contains("in use") {
                        break; // lost the port to someone else: try another
                    }
                    panic!("dnsmasq exited ({status}) at start:\n{last_log}");
                }
                // Ready when it answers a query over UDP (what the tests use) and accepts TCP;
                // a TCP accept alone could come from a process about to exit because its UDP
                // port was taken meanwhile (then queries would go to whoever holds it).
                if answers_udp(addr)
                    && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
                    && matches!(child.try_wait(), Ok(None))
                {
                    return Dnsmasq {
                        child: Some(child),
                        addr,
                    };
                }
                if Instant::now() > deadline {
                    super::stop_child(&mut child, Duration::ZERO);
                    panic!("dnsmasq did not listen on {addr} within 5 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("dnsmasq could not get a free port:\n{last_log}");
    }

    /// Kills it (SIGKILL) and reaps it: afterwards its port answers ICMP port unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::stop_child(&mut child, Duration::ZERO);
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
