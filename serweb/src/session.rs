//! Web sessions kept in memory, their CSRF tokens, and the limit on login failures per client
//! address. No I/O and no clock: every call takes `now`, so the tests drive time.
//!
//! A session is a random 256-bit token (the cookie) mapping to who logged in, whether they
//! hold the admin privilege, and the session's CSRF token (another random 256 bits that every
//! form carries and every POST must send back). Sessions end on logout, after
//! [`IDLE_LIMIT`] unused, or when there are more than [`MAX_SESSIONS`] (the oldest go).
//! Nothing is stored in the database (SER's `active_sessions` table is left to PHP serweb):
//! a restart of serweb logs everyone out, which is the safe side.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A session unused this long is gone.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Sessions at most; more log the least recently used out.
pub const MAX_SESSIONS: usize = 10_000;
/// Failed logins per client address within [`FAIL_WINDOW`] before logins from it are refused.
pub const MAX_FAILURES: usize = 5;
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered by the limiter at most (the oldest are forgotten first).
const MAX_TRACKED: usize = 65_536;

/// 256 random bits as hex, from the thread's CSPRNG (ChaCha, seeded by the OS).
pub fn token() -> String {
    let b: [u8; 32] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Equality that takes the same time wherever the strings differ (tokens are secrets).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub domain: String,
    pub admin: bool,
    pub csrf: String,
    last_used: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: HashMap<String, Session>,
}

impl Sessions {
    /// A new session; returns its token (the cookie's value).
    pub fn create(&mut self, user: &str, domain: &str, admin: bool, now: Instant) -> String {
        self.expire(now);
        if self.map.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let t = token();
        self.map.insert(
            t.clone(),
            Session {
                user: user.to_string(),
                domain: domain.to_string(),
                admin,
                csrf: token(),
                last_used: now,
            },
        );
        t
    }

    /// The session of `token`, touched; None when unknown or idle too long.
    pub fn get(&mut self, token: &str, now: Instant) -> Option<Session> {
        let s = self.map.get_mut(token)?;
        if now.saturating_duration_since(s.last_used) > IDLE_LIMIT {
            self.map.remove(token);
            return None;
        }
        s.last_used = now;
        Some(s.clone())
    }

    pub fn remove(&mut self, token: &str) {
        self.map.remove(token);
    }

    /// Ends every session of a user (their password changed or they were removed), but
    /// `keep`.
    pub fn remove_user(&mut self, user: &str, domain: &str, keep: Option<&str>) {
        self.map
            .retain(|t, s| Some(t.as_str()) == keep || s.user != user || s.domain != domain);
    }

    fn expire(&mut self, now: Instant) {
        self.map
            .retain(|_, s| now.saturating_duration_since(s.last_used) <= IDLE_LIMIT);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Failed logins per client address: at most [`MAX_FAILURES`] in any [`FAIL_WINDOW`].
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: HashMap<IpAddr, VecDeque<Instant>>,
}

impl LoginLimiter {
    /// May `ip` try to log in now?
    pub fn allowed(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.failures.get_mut(&ip) {
            None => true,
            Some(q) => {
                while q
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) >= FAIL_WINDOW)
                {
                    q.pop_front();
                }
                if q.is_empty() {
                    self.failures.remove(&ip);
                    true
                } else {
                    q.len() < MAX_FAILURES
                }
            }
        }
    }

    /// Counts a failed login of `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
            self.failures.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < FAIL_WINDOW)
            });
            if self.failures.len() >= MAX_TRACKED {
                // Still full of recent failures: forget one address to make room.
                if let Some(k) = self.failures.keys().next().copied() {
                    self.failures.remove(&k);
                }
            }
        }
        let q = self.failures.entry(ip).or_default();
        q.push_back(now);
        while q.len() > MAX_FAILURES {
            q.pop_front();
        }
    }
}

/// The value of cookie `name` in a `Cookie` request header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, and Secure when served over TLS.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(a) = max_age {
        c.push_str(&format!("; Max-Age={a}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let tok = s.create("alice", "example.org", true, t0);
        assert_eq!(tok.len(), 64);
        let got = s.get(&tok, t0 + Duration::from_secs(60)).unwrap();
        assert!(got.admin && got.user == "alice");
        assert_ne!(got.csrf, tok);
        assert!(s.get("nope", t0).is_none());
        assert!(s
            .get(&tok, t0 + Duration::from_secs(60) + IDLE_LIMIT * 2)
            .is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn remove_user_keeps_the_current_session() {
        let t0 = Instant::now();
        let mut s = Sessions::default();
        let a = s.create("bob", "d", false, t0);
        let b = s.create("bob", "d", false, t0);
        let c = s.create("carol", "d", false, t0);
        s.remove_user("bob", "d", Some(&a));
        assert!(s.get(&a, t0).is_some());
        assert!(s.get(&b, t0).is_none());
        assert!(s.get(&c, t0).is_some());
    }

    #[test]
    fn five_failures_a_minute_then_refused() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut l = LoginLimiter::default();
        for i in 0..MAX_FAILURES {
            assert!(l.allowed(ip, t0), "try {i}");
            l.failed(ip, t0 + Duration::from_secs(i as u64));
        }
        assert!(!l.allowed(ip, t0 + Duration::from_secs(10)));
        assert!(l.allowed(other, t0 + Duration::from_secs(10)));
        // The first failure leaves the window a minute after it.
        assert!(l.allowed(ip, t0 + FAIL_WINDOW + Duration::from_millis(1)));
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie("a=1; serweb=xyz; b=2", "serweb"), Some("xyz"));
        assert_eq!(cookie("serwebx=1", "serweb"), None);
        let c = set_cookie("serweb", "t", true, None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("serweb", "t", false, Some(0)).contains("Secure"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
