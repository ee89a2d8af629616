//! Process-level operating-system calls the daemon needs around the runtime: detaching from
//! the terminal (double fork, with a start-up report back to the process that was started),
//! waiting for signals synchronously, changing identity and root after the sockets are bound,
//! the host name, and syslog. Kept here so that `unsafe` stays in this crate's leaf modules.
//!
//! Nothing here is used on a shard's hot path.

use std::ffi::{CStr, CString};
use std::io;

/// Signals blocked in the calling thread (and so in every thread started after it), to be
/// taken one at a time with [`SignalSet::wait`].
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// Blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT. Call before starting the runtime.
    pub fn block_standard() -> Self {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Self(set)
        }
    }

    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(&self) -> i32 {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: self.0 is an initialised set; sig is a valid out pointer.
            if unsafe { libc::sigwait(&self.0, &mut sig) } == 0 {
                return sig;
            }
        }
    }

    /// Waits at most `timeout` for one of the blocked signals; `None` when none came.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Below 10^9: fits a 32-bit c_long too.
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: self.0 is an initialised set; the info pointer may be NULL; ts is a valid
        // timespec that lives across the call.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}

pub const SIGHUP: i32 = libc::SIGHUP;

/// `chroot(dir)` then `chdir("/")`.
pub fn chroot(dir: &str) -> io::Result<()> {
    let c = CString::new(dir).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated string.
    if unsafe { libc::chroot(c.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

/// Who to become after the sockets are bound (`-u`/`-g`): looked up by name before any
/// chroot, applied with [`apply_identity`].
#[derive(Debug, Clone, Default)]
pub struct Identity {
    uid: Option<u32>,
    gid: Option<u32>,
    /// The user's name, for its supplementary groups.
    user: Option<CString>,
}

/// Resolves `user` and `group` (names or numbers). Without `group`, the user's primary group
/// is taken, as SER did.
pub fn resolve_identity(user: Option<&str>, group: Option<&str>) -> io::Result<Identity> {
    let not_found = |what: String| io::Error::new(io::ErrorKind::NotFound, what);
    let mut id = Identity::default();
    if let Some(u) = user {
        let c = CString::new(u).map_err(|_| not_found(format!("bad user name {u:?}")))?;
        // SAFETY: valid C string; the result is checked for NULL and read at once, before any
        // other getpw* call could overwrite it.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if pw.is_null() {
            let uid = u
                .parse::<u32>()
                .map_err(|_| not_found(format!("unknown user {u}")))?;
            id.uid = Some(uid);
        } else {
            // SAFETY: pw is non-null and points to a struct passwd.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            id.uid = Some(uid);
            id.gid = Some(gid);
            id.user = Some(c);
        }
    }
    if let Some(g) = group {
        let c = CString::new(g).map_err(|_| not_found(format!("bad group name {g:?}")))?;
        // SAFETY: valid C string; the result is checked for NULL before use.
        let gr = unsafe { libc::getgrnam(c.as_ptr()) };
        id.gid = Some(if gr.is_null() {
            g.parse::<u32>()
                .map_err(|_| not_found(format!("unknown group {g}")))?
        } else {
            // SAFETY: gr is non-null and points to a struct group.
            unsafe { (*gr).gr_gid }
        });
    }
    Ok(id)
}

/// Drops root's supplementary groups (or takes the user's own), then sets the group and the
/// user id. glibc applies each to every thread of the process.
pub fn apply_identity(id: &Identity) -> io::Result<()> {
    if let Some(gid) = id.gid {
        let rc = match &id.user {
            // SAFETY: valid C string and a plain gid.
            Some(name) => unsafe { libc::initgroups(name.as_ptr(), gid) },
            // SAFETY: one gid, read from a valid pointer for the given count.
            None => unsafe { libc::setgroups(1, &gid) },
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain system call.
        if unsafe { libc::setgid(gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if let Some(uid) = id.uid {
        // SAFETY: plain system call.
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The machine's host name.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for writes of len-1 bytes; one byte stays NUL.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } != 0 {
        return None;
    }
    let s = CStr::from_bytes_until_nul(&buf).ok()?.to_str().ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

/// Opens syslog with ident "ser", facility daemon, pid in each line.
pub fn syslog_open() {
    static IDENT: &CStr = c"ser";
    // SAFETY: IDENT is a static NUL-terminated string that outlives every syslog call.
    unsafe { libc::openlog(IDENT.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

/// Severities for [`syslog`].
pub mod prio {
    pub const ALERT: i32 = libc::LOG_ALERT;
    pub const CRIT: i32 = libc::LOG_CRIT;
    pub const ERR: i32 = libc::LOG_ERR;
    pub const WARNING: i32 = libc::LOG_WARNING;
    pub const NOTICE: i32 = libc::LOG_NOTICE;
    pub const INFO: i32 = libc::LOG_INFO;
    pub const DEBUG: i32 = libc::LOG_DEBUG;
}

/// Sends one line to syslog.
pub fn syslog(priority: i32, line: &str) {
    let clean = line.trim_end_matches('\n').replace('\0', " ");
    if let Ok(c) = CString::new(clean) {
        // SAFETY: "%s" with one valid C string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), c.as_ptr()) };
    }
}

/// Creates a named pipe (FIFO) at `path` with permission bits `mode` (the FIFO server's
/// `fifo`/`fifo_mode`, serctl's reply pipe). The umask applies, as for any file; callers that
/// need exact bits set them afterwards with `std::fs::set_permissions`.
pub fn mkfifo(path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; mkfifo only reads it.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to every process of the process group `pgid` (exec's programs run in a
/// group of their own, so a timeout kills what their shell started too).
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "process group out of range"))?;
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group 0 or 1",
        ));
    }
    // SAFETY: kill takes plain integers; a negative pid names the process group.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Which side of [`detach`] the caller is on.
pub enum Detached {
    /// The process that was started: read the daemon's start-up report from `report` (to its
    /// end), then exit.
    Parent { report: std::fs::File },
    /// The daemon: a new session, no controlling terminal, not a process-group leader. Write
    /// "ok" (or the error that stopped the start) to `report`, then drop it.
    Daemon { report: std::fs::File },
}

/// The classic double fork of a daemon, with a pipe from the daemon back to the process that
/// was started, so that it can wait for the start-up to succeed or fail before it exits:
/// `fork`; the child calls `setsid` and forks again, and that intermediate child exits, so the
/// daemon can never reacquire a terminal; the first parent reaps the intermediate child.
///
/// Must be called while the process has a single thread: after `fork` only the calling thread
/// exists in the child, and locks held by others would stay locked forever.
pub fn detach() -> io::Result<Detached> {
    use std::os::fd::FromRawFd;
    // Refuse rather than fork a process whose other threads would vanish in the child.
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        if tasks.count() > 1 {
            return Err(io::Error::other(
                "cannot fork into daemon mode: threads are running already",
            ));
        }
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors that nothing else owns.
    let (rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: the caller guarantees a single-threaded process (see above).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(rd);
            // SAFETY: plain system call in the child.
            if unsafe { libc::setsid() } == -1 {
                // SAFETY: ends the intermediate child at once; its parent sees the pipe close
                // without a report.
                unsafe { libc::_exit(1) };
            }
            // SAFETY: still single-threaded (we are the only thread of the child).
            match unsafe { libc::fork() } {
                // SAFETY: as above; _exit runs no destructors or atexit handlers, which
                // belong to the daemon now.
                -1 => unsafe { libc::_exit(1) },
                0 => Ok(Detached::Daemon { report: wr }),
                // SAFETY: as above.
                _ => unsafe { libc::_exit(0) },
            }
        }
        child => {
            drop(wr);
            let mut status = 0;
            // SAFETY: child is our own child's pid; status is a valid out pointer. The
            // intermediate child exits right after its fork, so this returns promptly.
            unsafe { libc::waitpid(child, &mut status, 0) };
            Ok(Detached::Parent { report: rd })
        }
    }
}

/// Points stdin and stdout (and stderr unless `keep_stderr`) at /dev/null, as a daemon's are.
pub fn null_stdio(keep_stderr: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let mut targets = vec![libc::STDIN_FILENO, libc::STDOUT_FILENO];
    if !keep_stderr {
        targets.push(libc::STDERR_FILENO);
    }
    for fd in targets {
        // SAFETY: null is an open descriptor for the duration of the call; dup2 onto a
        // standard descriptor replaces it atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
