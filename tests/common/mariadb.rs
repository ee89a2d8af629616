//! A private MariaDB server for a test binary: Debian's `mariadbd` on 127.0.0.1 and a free
//! port, its data directory under the temp dir, database `ser` and user `ser` with a
//! password, killed by PID and its data directory removed when dropped. scripts/test.sh
//! installs `mariadb-server`; without it these tests fail and say so.
//!
//! A server kept in a `static` (see [`shared`]) is never dropped: a watchdog shell, whose
//! stdin is a pipe from this process, kills the server (by the PID in its pid file) and
//! removes its data directory when this process exits, however it exits.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The password of user `ser` in every test server.
pub const PASSWORD: &str = "ser-test-pw";

/// Bounded waits, generous for a loaded 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(30);

fn find(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found (PATH, /usr/sbin): the MariaDB tests need a real server; \
                 install Debian's mariadb-server and mariadb-client (scripts/test.sh does)"
            )
        })
}

/// A TCP port for a server (mariadbd cannot report a port it picked): see
/// [`super::free_port_udp_tcp`]; [`MariaDb::start`] takes another when mariadbd finds it taken.
pub fn free_tcp_port() -> u16 {
    super::free_port_udp_tcp()
}

/// A running private `mariadbd`.
pub struct MariaDb {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    watchdog: Option<(Child, ChildStdin)>,
}

impl MariaDb {
    /// Installs a data directory and starts the server; panics (with its log) when it does
    /// not accept connections within the limit.
    pub fn start(tag: &str) -> MariaDb {
        let t0 = Instant::now();
        let dir = std::env::temp_dir().join(format!("ser-mariadb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Its own tmpdir: two servers bootstrapping at once in one /tmp collide.
        std::fs::create_dir_all(dir.join("tmp")).expect("mariadb temp dir");
        let install = Command::new(find("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run mariadb-install-db");
        if !install.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            panic!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&install.stderr)
            );
        }
        // The watchdog: when this process goes (its end of the pipe closes), the server goes.
        let mut wd = Command::new("sh")
            .args([
                "-c",
                "read _ignored; p=$(cat \"$1\" 2>/dev/null); \
                 [ -n \"$p\" ] && kill -KILL \"$p\" 2>/dev/null; sleep 1; rm -rf \"$2\"",
                "ser-mariadb-watchdog",
            ])
            .arg(dir.join("mariadbd.pid"))
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the watchdog");
        let wd_in = wd.stdin.take().expect("watchdog stdin");
        let mut db = MariaDb {
            child: None,
            port: free_tcp_port(),
            dir,
            watchdog: Some((wd, wd_in)),
        };
        for attempt in 1.. {
            match db.try_launch() {
                Ok(()) => break,
                Err(e) if attempt < 4 && e.contains("Address already in use") => {
                    db.port = free_tcp_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        db.root_sql(&format!(
            "CREATE DATABASE IF NOT EXISTS ser; \
             CREATE USER IF NOT EXISTS 'ser'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
             CREATE USER IF NOT EXISTS 'ser'@'localhost' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON *.* TO 'ser'@'127.0.0.1'; GRANT ALL ON *.* TO 'ser'@'localhost';"
        ));
        eprintln!(
            "mariadb {tag}: up on port {} in {:?}",
            db.port,
            t0.elapsed()
        );
        db
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mariadbd.sock")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("mariadbd.pid")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("mariadbd.err")
    }

    /// Starts `mariadbd` on the data directory and port, and waits until it answers.
    fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// [`Self::launch`]; Err with the server's log when it exits or does not answer in time.
    fn try_launch(&mut self) -> Result<(), String> {
        let child = Command::new(find("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-networking=0",
                "--skip-name-resolve",
                "--user=root",
                // Small and quick: a test server holds a few rows.
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M",
                "--performance-schema=0",
                "--max-connections=200",
            ])
            .arg(format!("--pid-file={}", self.pid_file().display()))
            .arg(format!("--log-error={}", self.log().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if self.answers() {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("mariadbd exited ({st}):\n{}", self.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "mariadbd did not accept connections within {START_LIMIT:?}:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the server accepts a connection and a query (as root, on its socket).
    fn answers(&self) -> bool {
        Command::new(find("mariadb"))
            .args([
                "--no-defaults",
                "-uroot",
                "--connect-timeout=2",
                "-e",
                "SELECT 1",
            ])
            .arg(format!("--socket={}", self.socket().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs SQL as root on the server's socket; panics with the client's message on failure.
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new(find("mariadb"))
            .args(["--no-defaults", "-uroot", "--batch", "--skip-column-names"])
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-e", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "mariadb -e {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `mysql://ser:pw@127.0.0.1:PORT/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://ser:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// The seeds' spelling of [`Self::url`]: `mysql:ser:pw@127.0.0.1:PORT/<db>`.
    pub fn seed_url(&self, db: &str) -> String {
        format!("mysql:ser:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database `name` (dropped first if it exists); its URL.
    pub fn database(&self, name: &str) -> String {
        self.root_sql(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`;"
        ));
        self.url(name)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([sig, &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after a bounded wait); the data stays.
    pub fn stop(&mut self) {
        self.signal("-CONT");
        self.signal("-TERM");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_file(self.pid_file());
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// SIGSTOP: the server keeps its port (connections are accepted by the kernel) but
    /// answers nothing, like a hung database.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.signal("-CONT");
        if let Some(mut c) = self.child.take() {
            super::stop_child(&mut c, Duration::ZERO);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // Its work is done: stop the watchdog (our child, by PID).
        if let Some((mut wd, input)) = self.watchdog.take() {
            drop(input);
            let _ = wd.kill();
            let _ = wd.wait();
        }
    }
}

/// One server for the whole test binary, started on first use (tests use their own
/// databases in it: [`MariaDb::database`]).
pub fn shared() -> &'static MariaDb {
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    SERVER.get_or_init(|| MariaDb::start("shared"))
}
