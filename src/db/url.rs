//! `db_url`: parsing it into a [`Url`] (SQLite file or MySQL/MariaDB server, in the seeds'
//! spellings too), hiding its password for messages ([`redact`]), and the default URL in the
//! data directory ([`default_url`]).
//!
//! It does not connect (that is the backends, through [`super::Db::open`]).

use std::path::PathBuf;

use super::DbError;

/// A database address, parsed from `db_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    Sqlite(PathBuf),
    Mysql {
        user: String,
        password: String,
        host: String,
        port: u16,
        db: String,
    },
}

/// Parses `db_url`.
pub fn parse_url(s: &str) -> Result<Url, DbError> {
    let bad = |why: &str| DbError::Url(redact(s), why.to_string());
    if let Some(path) = s.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(bad("no file: sqlite:///path/to/ser.db"));
        }
        return Ok(Url::Sqlite(PathBuf::from(path)));
    }
    let rest = s
        .strip_prefix("mysql://")
        .or_else(|| s.strip_prefix("sql://"))
        .or_else(|| s.strip_prefix("mysql:"))
        .or_else(|| s.strip_prefix("sql:"))
        .ok_or_else(|| bad("expected sqlite:///path or mysql://user:password@host/db"))?;
    let (cred, hostdb) = rest
        .rsplit_once('@')
        .ok_or_else(|| bad("expected user:password@host/db"))?;
    let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
    let (hostport, db) = hostdb
        .split_once('/')
        .ok_or_else(|| bad("no database name after the host"))?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
        }
        _ => (hostport, 3306),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if user.is_empty() || host.is_empty() || db.is_empty() {
        return Err(bad("user, host and database must not be empty"));
    }
    Ok(Url::Mysql {
        user: user.to_string(),
        password: password.to_string(),
        host: host.to_string(),
        port,
        db: db.to_string(),
    })
}

/// The URL without its password, for messages.
pub fn redact(s: &str) -> String {
    match (
        s.find("//")
            .map(|i| i + 2)
            .or_else(|| s.find(':').map(|i| i + 1)),
        s.rfind('@'),
    ) {
        (Some(start), Some(at)) if start < at => {
            let cred = &s[start..at];
            match cred.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &s[..start], &s[at..]),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

/// `sqlite://<dir>/ser.db` with `dir` made absolute (from the current directory).
pub fn default_url(dir: &str) -> String {
    let p = std::path::Path::new(dir);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    format!("sqlite://{}", abs.join("ser.db").display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("sqlite:///var/lib/ser/ser.db"),
            Ok(Url::Sqlite(PathBuf::from("/var/lib/ser/ser.db")))
        );
        let m = Url::Mysql {
            user: "ser".into(),
            password: "secret".into(),
            host: "dbhost".into(),
            port: 3306,
            db: "ser".into(),
        };
        assert_eq!(parse_url("mysql://ser:secret@dbhost/ser"), Ok(m.clone()));
        assert_eq!(parse_url("mysql:ser:secret@dbhost/ser"), Ok(m.clone()));
        assert_eq!(parse_url("sql://ser:secret@dbhost/ser"), Ok(m));
        assert!(matches!(
            parse_url("mysql://ser:pw@127.0.0.1:3307/ser"),
            Ok(Url::Mysql { port: 3307, .. })
        ));
        assert!(parse_url("postgres://x@y/z").is_err());
        assert!(parse_url("mysql://ser:pw@host").is_err());
        assert_eq!(
            redact("mysql://ser:secret@dbhost/ser"),
            "mysql://ser:***@dbhost/ser"
        );
        assert_eq!(
            redact("mysql:ser:secret@dbhost/ser"),
            "mysql:ser:***@dbhost/ser"
        );
    }
}
