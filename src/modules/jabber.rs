//! Module jabber's script face (SER's SIP-Jabber gateway, as an XMPP component today):
//! `jab_send_message()` (also by Kamailio's name `xmpp_send_message()`) and the module's
//! parameters. The connection, the queue and the address form are [`crate::xmpp`]; the FIFO
//! command, the metrics and the way messages from XMPP enter ser are `mgmt::jabber`.
//!
//! `jab_send_message()` takes a MESSAGE for `sip:user<delim>xmpp.domain@gateway_domain`
//! with a `text/plain` body (others: 415 with `Accept: text/plain` on the reply) and queues
//! it as a chat message from the sender's JID (trailing line breaks of the body dropped).
//! While the server is connected the script pauses (`Suspend::Service`: the shard goes on
//! with other messages, no thread waits) until the connection thread has written the
//! message to the server, up to `xmpp_send_timeout` (then it fails with 504 and the message
//! is withdrawn), and with `xmpp_error_wait` that long more for an XMPP error for it (then it
//! fails with the SIP status the error maps to); while the server is away the message is
//! queued for the reconnect and the function succeeds at once; a full queue fails with 503. The script answers: `sl_send_reply("202",
//! "Accepted")` on success, `sl_reply_error()` otherwise.

use std::sync::Arc;

use ser_parser::{HeaderName, Method};
use ser_script::KindSet;

use super::core::f;
use super::ctx::{MsgCtx, Resumed, Suspend};
use super::{Action, Exports, ParamDef, ParamKind};
use crate::xmpp::{Handed, Outgoing, SubmitError};

pub fn register(ex: &mut Exports) {
    ex.function(f("jab_send_message", 0, 0, KindSet::REQUEST, |_, _| {
        Ok(Action::JabSendMessage)
    }));
    ex.alias("xmpp_send_message", "jab_send_message");
    for (name, int) in crate::xmpp::PARAMS {
        ex.param(
            "jabber",
            ParamDef {
                name,
                kind: if *int { ParamKind::Int } else { ParamKind::Str },
            },
        );
        ex.check("jabber", name, |name, value, _| {
            crate::xmpp::check_param(name, value)
        });
    }
}

/// Is this Content-Type value plain text we can carry (UTF-8 or ASCII)?
fn plain_text(ct: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    let mut parts = ct.split(';');
    if parts.next().map(str::trim) != Some("text/plain") {
        return false;
    }
    parts.all(|p| match p.trim().split_once('=') {
        Some(("charset", v)) => matches!(v.trim().trim_matches('"'), "utf-8" | "utf8" | "us-ascii"),
        _ => true,
    })
}

impl MsgCtx<'_, '_> {
    /// `jab_send_message()`: the MESSAGE to the XMPP server (see the module documentation).
    pub(crate) fn jab_send_message(&mut self) -> i32 {
        let gw = Arc::clone(&self.core.jabber);
        let Some(cfg) = gw.config() else {
            crate::error!("jab_send_message: the jabber gateway is not running");
            return self.fail(500, "Gateway Not Running");
        };
        if !matches!(self.msg.method(), Some(Method::Message)) {
            return self.fail(405, "Method Not Allowed");
        }
        let body = self.msg.body();
        if let Some(ct) = self.msg.header(HeaderName::ContentType) {
            if !plain_text(ct.value) {
                self.s.reply_hfs.push_str("Accept: text/plain\r\n");
                return self.fail(415, "Unsupported Media Type");
            }
        } else if !body.is_empty() {
            self.s.reply_hfs.push_str("Accept: text/plain\r\n");
            return self.fail(415, "Unsupported Media Type");
        }
        let Ok(body) = std::str::from_utf8(body) else {
            return self.fail(400, "Body Not UTF-8");
        };
        // The line break many SIP clients end a body with is not part of the chat text.
        let body = body.trim_end_matches(['\r', '\n']);
        let target = self
            .current_uri_parsed()
            .ok()
            .and_then(|u| cfg.addr.sip_to_jid(u.user.unwrap_or(""), u.host_str));
        let Some(to) = target else {
            crate::info!(
                "jab_send_message: {} is not an XMPP address (sip:user{}domain@{})",
                self.current_uri(),
                cfg.addr.delim,
                cfg.addr.gateway_domain
            );
            return self.fail(404, "Not An XMPP Address");
        };
        let sender = self.msg.from().ok().and_then(|f| {
            let u = f.parse_uri().ok()?;
            cfg.addr.sip_sender_jid(u.user?, u.host_str)
        });
        let Some(from) = sender else {
            return self.fail(400, "Sender Has No XMPP Address");
        };
        // The stanza's markup and escapes stay well under the limit for any real message.
        if body.len() + from.len() + to.len() + 256 > cfg.max_stanza {
            return self.fail(413, "Request Entity Too Large");
        }
        let msg = Outgoing {
            from,
            to,
            body: body.to_string(),
        };
        match gw.submit(msg, self.can_suspend) {
            Err(SubmitError::Full) => {
                crate::warn!("jab_send_message: the XMPP queue is full; 503");
                self.fail(503, "Service Unavailable")
            }
            Err(SubmitError::Off) => self.fail(500, "Gateway Not Running"),
            Ok(None) => 1,
            Ok(Some(ticket)) => {
                // The connection thread calls back when the stanza is written (or held for
                // the reconnect, or withdrawn at xmpp_send_timeout): no thread waits.
                self.suspend = Some(Suspend::Service(Box::new(move |resume| {
                    ticket.on_done(Box::new(move |handed| {
                        resume(Resumed::Apply(Box::new(move |m| match handed {
                            Handed::Written | Handed::Queued => 1,
                            Handed::TimedOut => m.fail(504, "Gateway Time-out"),
                            Handed::Refused { code, reason } => m.fail(code, reason),
                        })))
                    }));
                })));
                ser_script::SUSPEND
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plain_text;

    #[test]
    fn only_plain_text_in_utf8_or_ascii() {
        assert!(plain_text(b"text/plain"));
        assert!(plain_text(b"Text/Plain; charset=UTF-8"));
        assert!(plain_text(b"text/plain;charset=\"us-ascii\""));
        assert!(!plain_text(b"text/plain; charset=iso-8859-1"));
        assert!(!plain_text(b"text/html"));
        assert!(!plain_text(b"message/cpim"));
        assert!(!plain_text(b"application/im-iscomposing+xml"));
    }
}
