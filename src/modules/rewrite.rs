//! The `rewrite*`/`set*` family, `prefix` and `strip`: edits of the current Request-URI.
//!
//! Each works on the text of the current URI (the original, or what an earlier rewrite left)
//! and splices the new part in, so whatever the action does not touch (parameters, headers,
//! odd spellings) passes through byte for byte. The result is kept in the shard's scratch
//! string; the message itself is only edited when it is written out.

use std::ops::Range;

use ser_parser::parse_uri;

use super::ctx::MsgCtx;

#[derive(Debug, Clone)]
pub enum Rewrite {
    Uri(String),
    Host(String),
    HostPort(String),
    User(String),
    UserPass(String),
    Port(String),
    Prefix(String),
    Strip(usize),
}

/// Offsets of `part` inside `whole` (both from the same string).
fn range_in(whole: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

/// Applies `rw` to `uri`, returning the new URI text.
pub fn apply(uri: &str, rw: &Rewrite) -> Result<String, &'static str> {
    if let Rewrite::Uri(u) = rw {
        return Ok(u.clone());
    }
    let u = parse_uri(uri).map_err(|_| "bad Request-URI")?;
    let raw = u.raw;
    let host = u.host_range();
    let port = u.port_range();
    let user = u.user_range();
    // Where "user[:password]@" starts and ends: just after "scheme:".
    let user_start = raw.find(':').map_or(0, |i| i + 1);
    let userinfo_end = match (&user, u.password) {
        (_, Some(pw)) => range_in(raw, pw).map(|r| r.end),
        (Some(r), None) => Some(r.end),
        (None, None) => None,
    };
    let mut out = String::with_capacity(raw.len() + 16);
    let splice = |out: &mut String, r: Range<usize>, with: &str| -> Result<(), &'static str> {
        out.push_str(raw.get(..r.start).ok_or("bad Request-URI")?);
        out.push_str(with);
        out.push_str(raw.get(r.end..).ok_or("bad Request-URI")?);
        Ok(())
    };
    match rw {
        Rewrite::Uri(_) => {}
        Rewrite::Host(h) => splice(&mut out, host, h)?,
        Rewrite::HostPort(hp) => {
            let end = port.map_or(host.end, |p| p.end);
            splice(&mut out, host.start..end, hp)?
        }
        Rewrite::User(new) => match &user {
            Some(r) => splice(&mut out, r.clone(), new)?,
            None => splice(&mut out, user_start..user_start, &format!("{new}@"))?,
        },
        Rewrite::UserPass(new) => match userinfo_end {
            Some(end) => splice(&mut out, user_start..end, new)?,
            None => splice(&mut out, user_start..user_start, &format!("{new}@"))?,
        },
        Rewrite::Port(p) => match port {
            Some(r) => splice(&mut out, r, p)?,
            None => splice(&mut out, host.end..host.end, &format!(":{p}"))?,
        },
        Rewrite::Prefix(p) => match &user {
            Some(r) => splice(&mut out, r.start..r.start, p)?,
            None => splice(&mut out, user_start..user_start, &format!("{p}@"))?,
        },
        Rewrite::Strip(n) => {
            let r = user.ok_or("no user part to strip")?;
            let len = r.len();
            if *n > len {
                return Err("strip: user part too short");
            }
            // Strip whole characters, not bytes in the middle of one.
            let cut = raw
                .get(r.start..)
                .and_then(|s| s.char_indices().nth(*n).map(|(i, _)| r.start + i))
                .unwrap_or(r.end)
                .min(r.end);
            splice(&mut out, r.start..cut, "")?;
        }
    }
    // An emptied user part leaves "sip:@host", which is not a URI: drop the '@' too.
    if let Some(rest) = out.strip_prefix(raw.get(..user_start).unwrap_or_default()) {
        if rest.starts_with('@') {
            out.remove(user_start);
        }
    }
    Ok(out)
}

impl MsgCtx<'_, '_> {
    pub(crate) fn rewrite(&mut self, rw: &Rewrite) -> i32 {
        match apply(self.current_uri(), rw) {
            Ok(new) => {
                self.s.uri = new;
                self.uri_changed = true;
                1
            }
            Err(why) => {
                crate::debug!("URI rewrite failed: {why}");
                self.fail(400, "Bad Request-URI")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Table 2 of the seeds ("URI-rewriting Using Built-In Actions"), on sip:12345@foo.bar:6060.
    #[test]
    fn seeds_table_2() {
        let u = "sip:12345@foo.bar:6060";
        let t = |rw: Rewrite| apply(u, &rw).unwrap_or_else(|e| e.to_string());
        assert_eq!(
            t(Rewrite::Host("192.168.0.10".into())),
            "sip:12345@192.168.0.10:6060"
        );
        assert_eq!(
            t(Rewrite::Uri("sip:alice@foo.bar".into())),
            "sip:alice@foo.bar"
        );
        assert_eq!(
            t(Rewrite::HostPort("192.168.0.10:3040".into())),
            "sip:12345@192.168.0.10:3040"
        );
        assert_eq!(t(Rewrite::User("alice".into())), "sip:alice@foo.bar:6060");
        assert_eq!(
            t(Rewrite::UserPass("alice:pw".into())),
            "sip:alice:pw@foo.bar:6060"
        );
        assert_eq!(t(Rewrite::Port("1234".into())), "sip:12345@foo.bar:1234");
        assert_eq!(t(Rewrite::Prefix("9".into())), "sip:912345@foo.bar:6060");
        assert_eq!(t(Rewrite::Strip(2)), "sip:345@foo.bar:6060");
    }

    #[test]
    fn quiz() {
        // Example 10: sip:2234@foo.bar, strip(2), no match for ^sip:2, prefix("1").
        let u = apply("sip:2234@foo.bar", &Rewrite::Strip(2)).unwrap_or_default();
        assert_eq!(u, "sip:34@foo.bar");
        let u = apply(&u, &Rewrite::Prefix("1".into())).unwrap_or_default();
        assert_eq!(u, "sip:134@foo.bar");
    }

    #[test]
    fn no_user_and_params() {
        assert_eq!(
            apply("sip:foo.bar;transport=udp", &Rewrite::User("joe".into())).ok(),
            Some("sip:joe@foo.bar;transport=udp".into())
        );
        assert_eq!(
            apply("sip:joe@foo.bar;lr", &Rewrite::Port("5070".into())).ok(),
            Some("sip:joe@foo.bar:5070;lr".into())
        );
        assert_eq!(
            apply("sip:joe:pw@foo.bar", &Rewrite::UserPass("ann".into())).ok(),
            Some("sip:ann@foo.bar".into())
        );
        assert!(apply("sip:ab@foo.bar", &Rewrite::Strip(3)).is_err());
        assert_eq!(
            apply("sip:ab@foo.bar", &Rewrite::Strip(2)).ok(),
            Some("sip:foo.bar".into())
        );
        assert_eq!(
            apply("sip:ab@foo.bar", &Rewrite::User(String::new())).ok(),
            Some("sip:foo.bar".into())
        );
    }
}
