//! The text of the requests msilo sends: a stored message delivered to the contact that just
//! registered ([`compose`]), and the notice to a sender that its message was stored
//! ([`compose_notice`]). Pure: the caller gives the Via, Call-ID and tag.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{Config, Message, Notice};

/// What the transport layer decided for one request: where it goes and its identifiers.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The Request-URI (the registered contact, or the notice's target).
    pub ruri: &'a str,
    /// Our Via header's value, with its branch.
    pub via: &'a str,
    pub call_id: &'a str,
    pub from_tag: &'a str,
}

/// `Mon, 07 Dec 2026 06:00:49 GMT` (RFC 3261's SIP-date, RFC 1123's format).
pub fn rfc1123(t: SystemTime) -> String {
    let u = crate::utc::utc(t);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d) = u.date;
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[u.days.rem_euclid(7) as usize],
        d,
        MON[(mo as usize).saturating_sub(1).min(11)],
        y,
        u.secs / 3600,
        u.secs % 3600 / 60,
        u.secs % 60
    )
}

/// An address as a From/To value: kept when it is a name-addr already, else in `<>`.
fn name_addr(a: &str) -> String {
    if a.contains('<') {
        a.to_string()
    } else {
        format!("<{a}>")
    }
}

fn head(out: &mut String, env: &Envelope<'_>, from: &str, to: &str) {
    let _ = write!(
        out,
        "MESSAGE {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {}\r\n\
         Call-ID: {}\r\nCSeq: 1 MESSAGE\r\n",
        env.ruri,
        env.via,
        name_addr(from),
        env.from_tag,
        name_addr(to),
        env.call_id
    );
}

fn finish(mut out: String, body: &str) -> Vec<u8> {
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.push_str(body);
    out.into_bytes()
}

/// A stored message as delivered: the original sender in From, the original To, the
/// original Content-Type and body; the time it was stored in a `Date` header
/// (`use_date_hdr`) and as the body's `[Offline message - <date>] ` prefix (`add_date`).
pub fn compose(cfg: &Config, m: &Message, env: &Envelope<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(512 + m.body.len());
    head(&mut out, env, &m.from, &m.to);
    if let (true, Some(t)) = (cfg.use_date_hdr, m.inc_time) {
        let _ = write!(out, "Date: {}\r\n", rfc1123(t));
    }
    out.push_str(&cfg.contact_hdr);
    let _ = write!(out, "Content-Type: {}\r\n", m.ctype);
    let body = match (cfg.add_date, m.inc_time) {
        (true, Some(t)) => format!("[Offline message - {}] {}", crate::utc::ctime(t), m.body),
        _ => m.body.clone(),
    };
    finish(out, &body)
}

/// The notice to a sender that its message was stored, from `from_address`, with
/// `offline_message` (`$ru`: the recipient's URI, `$rU`: its user) as body.
pub fn compose_notice(cfg: &Config, from_address: &str, n: &Notice, env: &Envelope<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    head(&mut out, env, from_address, &n.to);
    out.push_str(&cfg.contact_hdr);
    out.push_str(&cfg.content_type_hdr);
    let user = ser_parser::parse_uri(&n.recipient)
        .ok()
        .and_then(|u| u.user)
        .unwrap_or("")
        .to_string();
    let body = cfg
        .offline_message
        .replace("$rU", &user)
        .replace("$ru", &n.recipient);
    finish(out, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn env() -> Envelope<'static> {
        Envelope {
            ruri: "sip:bob@127.0.0.1:5070",
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",
            call_id: "c1@127.0.0.1",
            from_tag: "abc",
        }
    }

    #[test]
    fn sip_date() {
        // 2002-12-06 17:56:10 UTC, a Friday (SER's own example date).
        let t = UNIX_EPOCH + Duration::from_secs(1_039_197_370);
        assert_eq!(rfc1123(t), "Fri, 06 Dec 2002 17:56:10 GMT");
    }

    #[test]
    fn a_delivered_message_keeps_sender_type_and_body_and_says_when() {
        let cfg = Config::from_params(&crate::config::Params::default());
        let t = UNIX_EPOCH + Duration::from_secs(1_039_197_370);
        let m = Message {
            mid: 7,
            from: "\"Alice\" <sip:alice@example.org>".into(),
            to: "sip:bob@example.org".into(),
            ctype: "text/plain; charset=UTF-8".into(),
            body: "h\u{e9}llo".into(),
            inc_time: Some(t),
        };
        let bytes = compose(&cfg, &m, &env());
        let msg = ser_parser::parse(&bytes).expect("parses");
        assert_eq!(msg.request_uri(), Some("sip:bob@127.0.0.1:5070"));
        let from = msg.from().expect("from");
        assert_eq!(from.uri, "sip:alice@example.org");
        assert_eq!(from.display, Some("Alice"));
        assert_eq!(from.tag, Some("abc"));
        assert_eq!(msg.to().expect("to").uri, "sip:bob@example.org");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(
            text.contains("\r\nDate: Fri, 06 Dec 2002 17:56:10 GMT\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Type: text/plain; charset=UTF-8\r\n"));
        let body = "[Offline message - Fri Dec  6 17:56:10 2002] h\u{e9}llo";
        assert_eq!(msg.body(), body.as_bytes());
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        // Without the date options: the body as stored, no Date.
        let mut plain = cfg.clone();
        plain.add_date = false;
        plain.use_date_hdr = false;
        plain.contact_hdr = "Contact: <sip:ser@example.org>\r\n".into();
        let bytes = compose(&plain, &m, &env());
        let msg = ser_parser::parse(&bytes).expect("parses");
        assert_eq!(msg.body(), "h\u{e9}llo".as_bytes());
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(!text.contains("Date:"));
        assert!(text.contains("\r\nContact: <sip:ser@example.org>\r\n"));
    }

    #[test]
    fn the_notice_names_the_recipient() {
        let cfg = Config::from_params(&crate::config::Params::default());
        let n = Notice {
            to: "sip:alice@example.org".into(),
            recipient: "sip:bob@example.org".into(),
        };
        let bytes = compose_notice(&cfg, "sip:registrar@example.org", &n, &env());
        let msg = ser_parser::parse(&bytes).expect("parses");
        assert_eq!(msg.from().expect("from").uri, "sip:registrar@example.org");
        assert_eq!(msg.to().expect("to").uri, "sip:alice@example.org");
        assert_eq!(
            msg.body(),
            b"User [sip:bob@example.org] is offline. The message will be delivered when the \
              user goes online."
        );
        let mut c = cfg.clone();
        c.offline_message = "*** $rU is offline".into();
        let msg2 = compose_notice(&c, "sip:r@example.org", &n, &env());
        assert!(msg2.ends_with(b"\r\n\r\n*** bob is offline"));
    }
}
