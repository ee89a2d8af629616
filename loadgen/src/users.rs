//! Users (`user,password,domain` CSV or a `user%d` pattern with a counter) and SIPp injection
//! files (`-inf`: an optional SEQUENTIAL/RANDOM/USER first line, then `;`-separated fields).

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct User {
    pub user: String,
    pub password: String,
    pub domain: String,
}

/// Where users come from; `get(n)` picks the n-th (wrapping around).
#[derive(Clone, Debug)]
pub enum Users {
    List(Vec<User>),
    Pattern {
        pattern: String,
        count: u64,
        start: u64,
        password: String,
        domain: String,
    },
}

/// `user%d` with `n` in place of `%d` (also `%u`); a pattern without one gets `n` appended.
#[cfg(test)]
pub fn expand(pattern: &str, n: u64) -> String {
    let mut s = String::new();
    expand_into(&mut s, pattern, n);
    s
}

/// [`expand`], appended to `out` (which keeps its allocation from call to call).
pub fn expand_into(out: &mut String, pattern: &str, n: u64) {
    // A byte scan: patterns are short, and this runs for every call.
    let b = pattern.as_bytes();
    let find = |m: &[u8; 2]| b.windows(2).position(|w| w == m);
    let (head, tail) = match find(b"%d").or_else(|| find(b"%u")) {
        Some(i) => (&pattern[..i], &pattern[i + 2..]),
        None => (pattern, ""),
    };
    out.push_str(head);
    push_u64(out, n);
    out.push_str(tail);
}

/// The decimal digits of `n`, written at the end of `buf`: no formatting machinery, as this
/// is on every message's path.
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// [`digits`] appended to a string.
pub fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    // Digits are ASCII: this never fails.
    if let Ok(d) = std::str::from_utf8(digits(n, &mut buf)) {
        out.push_str(d);
    }
}

impl Users {
    pub fn len(&self) -> u64 {
        match self {
            Users::List(v) => v.len() as u64,
            Users::Pattern { count, .. } => *count,
        }
    }

    #[cfg(test)]
    pub fn get(&self, n: u64) -> User {
        let mut u = User::default();
        self.fill(n, &mut u);
        u
    }

    /// The password and domain when every user has the same (a pattern), else `None`.
    pub fn fixed(&self) -> Option<(&str, &str)> {
        match self {
            Users::List(_) => None,
            Users::Pattern {
                password, domain, ..
            } => Some((password, domain)),
        }
    }

    /// Writes the n-th user into `u`, reusing its strings' allocations.
    pub fn fill(&self, n: u64, u: &mut User) {
        u.user.clear();
        u.password.clear();
        u.domain.clear();
        let (password, domain) = match self {
            Users::List(v) => {
                let Some(x) = v.get((n % v.len().max(1) as u64) as usize) else {
                    return;
                };
                u.user.push_str(&x.user);
                (&x.password, &x.domain)
            }
            Users::Pattern {
                pattern,
                count,
                start,
                password,
                domain,
            } => {
                expand_into(&mut u.user, pattern, start + n % (*count).max(1));
                (password, domain)
            }
        };
        u.password.push_str(password);
        u.domain.push_str(domain);
    }

    /// Parses `user,password,domain` lines; `#` comments and blank lines skipped; a missing
    /// password or domain takes the defaults.
    pub fn parse_csv(text: &str, default_password: &str, default_domain: &str) -> Result<Self> {
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split(',').map(str::trim);
            let user = f.next().unwrap_or("").to_string();
            if user.is_empty() {
                bail!("line {}: empty user", i + 1);
            }
            let password = f
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or(default_password)
                .to_string();
            let domain = f
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or(default_domain)
                .to_string();
            v.push(User {
                user,
                password,
                domain,
            });
        }
        if v.is_empty() {
            bail!("no users");
        }
        Ok(Users::List(v))
    }

    pub fn load_csv(path: &str, default_password: &str, default_domain: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        Self::parse_csv(&text, default_password, default_domain).with_context(|| path.to_string())
    }
}

/// A SIPp injection file: rows of fields for `[fieldN]`.
#[derive(Clone, Debug, Default)]
pub struct Inject {
    pub rows: Vec<Vec<String>>,
}

impl Inject {
    pub fn parse(text: &str) -> Result<Self> {
        let mut rows = Vec::new();
        let mut first = true;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if first {
                first = false;
                let l = line.trim();
                if ["SEQUENTIAL", "RANDOM", "USER"]
                    .iter()
                    .any(|m| l.starts_with(m))
                {
                    continue;
                }
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            rows.push(line.split(';').map(str::to_string).collect());
        }
        if rows.is_empty() {
            bail!("injection file has no rows");
        }
        Ok(Self { rows })
    }

    pub fn field(&self, call: u64, n: usize) -> &str {
        if self.rows.is_empty() {
            return "";
        }
        let row = &self.rows[(call % self.rows.len() as u64) as usize];
        row.get(n).map(String::as_str).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_users() {
        let u = Users::parse_csv(
            "# users\nalice,secret,example.com\n\nbob,,\ncarol\n",
            "pw",
            "d",
        )
        .expect("csv");
        assert_eq!(u.len(), 3);
        assert_eq!(
            u.get(0),
            User {
                user: "alice".into(),
                password: "secret".into(),
                domain: "example.com".into()
            }
        );
        assert_eq!(u.get(1).password, "pw");
        assert_eq!(u.get(1).domain, "d");
        assert_eq!(u.get(5).user, "carol");
        assert!(Users::parse_csv("# nothing\n", "", "").is_err());
        assert!(Users::parse_csv(",x,y\n", "", "").is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(expand("user%d", 7), "user7");
        assert_eq!(expand("u%d-x", 7), "u7-x");
        assert_eq!(expand("bob", 7), "bob7");
        let u = Users::Pattern {
            pattern: "user%d".into(),
            count: 10,
            start: 1,
            password: "p".into(),
            domain: "d".into(),
        };
        assert_eq!(u.get(0).user, "user1");
        assert_eq!(u.get(12).user, "user3");
    }

    #[test]
    fn injection_file() {
        let i = Inject::parse("SEQUENTIAL\n# c\nalice;a.com;[authentication]\nbob;b.com\n")
            .expect("inf");
        assert_eq!(i.field(0, 0), "alice");
        assert_eq!(i.field(1, 1), "b.com");
        assert_eq!(i.field(2, 0), "alice");
        assert_eq!(i.field(1, 5), "");
    }
}
