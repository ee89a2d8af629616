//! Module textops: `search(re)`, `append_hf(text)`, `append_urihf(prefix, suffix)`,
//! `is_present_hf(name)`, `append_to_reply(text)`.
//!
//! `search` matches an extended, case-insensitive regular expression against the whole
//! message, line by line (`^`/`$` at line ends), as SER's did. Appended header fields go just
//! before the empty line that ends the headers. Nothing is changed in place: edits are applied
//! when the message is written out. `append_to_reply` (Kamailio's) keeps a header line for the
//! replies the server itself makes to the request (`sl_send_reply`, `sl_reply_error`,
//! `t_reply`, the registrar's and auth's replies), e.g. a `Retry-After` on a ratelimit's 503.

use ser_parser::{HeaderName, Message};
use ser_script::{Arg, BindCtx, KindSet};

use super::core::f;
use super::Action;
use super::{arg_str, Exports};

pub fn register(ex: &mut Exports) {
    ex.function(f("search", 1, 1, KindSet::ALL, bind_search));
    ex.function(f("append_hf", 1, 1, KindSet::ALL, |a, _| {
        let t = a.first().map(arg_str).transpose()?.unwrap_or_default();
        check_header_text(&t)?;
        Ok(Action::AppendHf(t))
    }));
    ex.function(f("append_urihf", 2, 2, KindSet::ALL, |a, _| {
        let pre = a.first().map(arg_str).transpose()?.unwrap_or_default();
        let post = a.get(1).map(arg_str).transpose()?.unwrap_or_default();
        check_header_text(&pre)?;
        Ok(Action::AppendUriHf(pre, post))
    }));
    ex.function(f("append_to_reply", 1, 1, KindSet::REQUEST, |a, _| {
        let t = a.first().map(arg_str).transpose()?.unwrap_or_default();
        check_header_text(&t)?;
        if !t.contains(':') {
            return Err(format!("\"{t}\" is not a header line (Name: value)"));
        }
        Ok(Action::AppendToReply(t))
    }));
    ex.function(f("is_present_hf", 1, 1, KindSet::ALL, |a, _| {
        let name = a.first().map(arg_str).transpose()?.unwrap_or_default();
        if name.is_empty() || name.contains([':', ' ', '\r', '\n']) {
            return Err(format!("\"{name}\" is not a header field name"));
        }
        Ok(Action::IsPresentHf(name))
    }));
}

fn check_header_text(t: &str) -> Result<(), String> {
    let body = t.trim_end_matches(['\r', '\n']);
    if body.contains(['\r', '\n']) {
        return Err("a header field must be one line".into());
    }
    Ok(())
}

fn bind_search(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let s = a.first().map(arg_str).transpose()?.unwrap_or_default();
    regex::bytes::RegexBuilder::new(&s)
        .case_insensitive(true)
        .unicode(false)
        .multi_line(true)
        .crlf(true)
        .build()
        .map(Action::Search)
        .map_err(|e| format!("bad regular expression \"{s}\": {e}"))
}

/// Compact forms of RFC 3261 7.3.3, so `is_present_hf("From")` finds an `f:` line too.
fn compact(name: &str) -> Option<&'static str> {
    const PAIRS: &[(&str, &str)] = &[
        ("via", "v"),
        ("from", "f"),
        ("to", "t"),
        ("call-id", "i"),
        ("contact", "m"),
        ("content-length", "l"),
        ("content-type", "c"),
        ("supported", "k"),
        ("subject", "s"),
        ("content-encoding", "e"),
        ("event", "o"),
        ("allow-events", "u"),
    ];
    PAIRS.iter().find_map(|(l, s)| {
        if name.eq_ignore_ascii_case(l) {
            Some(*s)
        } else if name.eq_ignore_ascii_case(s) {
            Some(*l)
        } else {
            None
        }
    })
}

pub fn has_header(msg: &Message<'_>, name: &str) -> bool {
    let other = compact(name);
    msg.headers().iter().any(|h| {
        h.raw_name.eq_ignore_ascii_case(name.as_bytes())
            || other.is_some_and(|o| h.raw_name.eq_ignore_ascii_case(o.as_bytes()))
    }) || (name.eq_ignore_ascii_case("call-id") && msg.header(HeaderName::CallId).is_some())
}
