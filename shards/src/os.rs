//! Process-level operating-system calls the daemon needs around the runtime: waiting for
//! signals synchronously, changing identity and root after the sockets are bound, the host
//! name, and syslog. Kept here so that `unsafe` stays in this crate's leaf modules.
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
