//! Writing messages from scenario templates: [`write_seg`] expands one segment (literal or
//! keyword) for a call, and [`fold`] writes out, once per socket, every keyword that is the same
//! for all calls from that socket to its peer ([`Folded`]), so sending copies fewer, longer
//! literals.
//!
//! It only writes bytes into buffers: sending, retransmitting and the transaction accounting
//! are [`super::transmit`]'s.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use ser_parser::Message;

use super::call::Call;
use super::setup::Setup;
use crate::digest;
use crate::scenario::{Kw, Seg, Template};
use crate::users::digits;

/// Per scenario, per step: a send step's template folded for one socket (see `fold`).
pub(super) type Folded = Vec<Vec<Option<Template>>>;

fn canonical(name: &[u8]) -> &[u8] {
    match name {
        b"v" | b"V" => b"via",
        b"f" | b"F" => b"from",
        b"t" | b"T" => b"to",
        b"i" | b"I" => b"call-id",
        b"m" | b"M" => b"contact",
        b"l" | b"L" => b"content-length",
        b"c" | b"C" => b"content-type",
        b"k" | b"K" => b"supported",
        b"s" | b"S" => b"subject",
        b"e" | b"E" => b"content-encoding",
        _ => name,
    }
}

fn header_is(raw: &[u8], want: &str) -> bool {
    canonical(raw).eq_ignore_ascii_case(canonical(want.as_bytes()))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_seg(
    out: &mut Vec<u8>,
    s: &Seg,
    call: &Call,
    setup: &Setup,
    last: Option<&Message<'_>>,
    step: usize,
    body_len: usize,
    tpl: &Template,
) {
    let kw = match s {
        Seg::Lit(b) => {
            out.extend_from_slice(b);
            return;
        }
        Seg::Kw(k) => k,
    };
    let _ = match kw {
        Kw::Branch(off) => {
            out.extend_from_slice(b"z9hG4bK-");
            let _ = put(out, &setup.pid_text);
            out.push(b'-');
            let _ = put_u64(out, call.number);
            out.push(b'-');
            put_u64(out, step.saturating_sub(*off as usize) as u64)
        }
        Kw::CallId => put(out, &call.call_id),
        Kw::CallNumber => put_u64(out, call.number),
        Kw::Cseq => put_u64(out, u64::from(call.cseq)),
        Kw::Len => put_u64(out, body_len as u64),
        // The same for every call from this socket to this peer (see fold).
        Kw::Service
        | Kw::RemoteIp
        | Kw::RemotePort
        | Kw::LocalIp
        | Kw::MediaIp
        | Kw::LocalPort
        | Kw::Transport
        | Kw::Pid
        | Kw::MediaPort
        | Kw::LocalIpType
        | Kw::MediaIpType => {
            write_fixed(out, kw, call.local, Some(call.peer), setup);
            Ok(())
        }
        Kw::Last { name, colon } => {
            if let Some(m) = last {
                let mut first = true;
                for h in m.headers().iter().filter(|h| header_is(h.raw_name, name)) {
                    if *colon {
                        if !first {
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(h.raw_name);
                        out.extend_from_slice(b": ");
                    } else if !first {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(h.value);
                    first = false;
                }
            }
            Ok(())
        }
        Kw::LastRequestUri => write!(out, "{}", last.and_then(|m| m.request_uri()).unwrap_or("")),
        Kw::Routes => {
            if !call.routes.is_empty() {
                out.extend_from_slice(b"Route: ");
                out.extend_from_slice(call.routes.as_bytes());
            }
            Ok(())
        }
        Kw::NextUrl => {
            if call.next_url.is_empty() {
                write!(out, "sip:{}@{}", setup.service, call.peer)
            } else {
                put(out, &call.next_url)
            }
        }
        Kw::PeerTagParam => {
            if !call.peer_tag.is_empty() {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(call.peer_tag.as_bytes());
            }
            Ok(())
        }
        Kw::Field(n) => write!(
            out,
            "{}",
            setup
                .inject
                .as_ref()
                .map(|i| i.field(call.number - 1, *n))
                .unwrap_or("")
        ),
        Kw::Authentication { user, password } => {
            if let Some(c) = &call.challenge {
                // The Request-URI is the second word of the request line already written.
                let line_end = out.iter().position(|b| *b == b'\r').unwrap_or(out.len());
                let uri = out[..line_end]
                    .split(|b| *b == b' ')
                    .nth(1)
                    .map(|u| String::from_utf8_lossy(u).into_owned())
                    .unwrap_or_default();
                let u = user.as_deref().unwrap_or(&call.user.user);
                let p = password.as_deref().unwrap_or(&call.user.password);
                let m = tpl.method.as_deref().unwrap_or("");
                let cnonce = format!("{:x}{:x}", call.number, setup.pid);
                write!(
                    out,
                    "{}",
                    digest::authorization(c, u, p, m, &uri, 1, &cnonce)
                )
            } else {
                Ok(())
            }
        }
        Kw::User => put(out, &call.user.user),
        Kw::Password => put(out, &call.user.password),
        Kw::Domain => put(out, &call.user.domain),
        Kw::Callee => put(out, &call.callee),
    };
}

/// Writes a keyword whose text depends only on the local socket, the peer (when known) and
/// the setup; false (nothing written) for any other.
fn write_fixed(
    out: &mut Vec<u8>,
    kw: &Kw,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    setup: &Setup,
) -> bool {
    let _ = match (kw, remote) {
        (Kw::Service, _) => put(out, &setup.service),
        (Kw::RemoteIp, Some(r)) => match r.ip() {
            IpAddr::V6(a) => write!(out, "[{a}]"),
            IpAddr::V4(a) => put(out, &setup.remote_ip_text(a)),
        },
        (Kw::RemotePort, Some(r)) => put_u64(out, u64::from(r.port())),
        (Kw::LocalIp | Kw::MediaIp, _) => put(out, &setup.local_ip_text),
        (Kw::LocalPort, _) => put_u64(out, u64::from(local.port())),
        (Kw::Transport, _) => put(out, "UDP"),
        (Kw::Pid, _) => put(out, &setup.pid_text),
        (Kw::MediaPort, _) => put_u64(out, u64::from(setup.media_port)),
        (Kw::LocalIpType | Kw::MediaIpType, _) => {
            out.push(if setup.local_ip.is_ipv6() { b'6' } else { b'4' });
            Ok(())
        }
        _ => return false,
    };
    true
}

/// The text of a keyword that is the same for every call sent from `local` to `remote` (when
/// known), else `None`: [`write_fixed`]'s, and the domain and password when every user has
/// the same.
fn fixed_value(
    kw: &Kw,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    setup: &Setup,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if write_fixed(&mut out, kw, local, remote, setup) {
        return Some(out);
    }
    let (password, domain) = setup.users.fixed()?;
    match kw {
        Kw::Domain => Some(domain.as_bytes().to_vec()),
        Kw::Password => Some(password.as_bytes().to_vec()),
        _ => None,
    }
}

/// `tpl` with every keyword that is the same for all calls from `local` to `remote` written
/// out, and the literals around it joined: fewer, longer copies per message. Header lines that
/// cannot expand to blank are joined too (their CRLFs become literal text), as are all body
/// lines, and `solid` marks them so that sending skips the blank-line check.
pub(super) fn fold(
    tpl: &Template,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    setup: &Setup,
) -> Template {
    let line = |l: &[Seg], out: &mut Vec<Seg>| {
        for seg in l {
            let lit = match seg {
                Seg::Lit(b) => Some(b.clone()),
                Seg::Kw(k) => fixed_value(k, local, remote, setup),
            };
            push_seg(out, lit.map_or_else(|| seg.clone(), Seg::Lit));
        }
    };
    let mut head: Vec<Vec<Seg>> = Vec::new();
    let mut solid: Vec<bool> = Vec::new();
    for l in &tpl.head {
        let mut segs = Vec::with_capacity(l.len());
        line(l, &mut segs);
        // Blank only if no literal part holds anything but white space.
        let keeps = segs.iter().any(|s| match s {
            Seg::Lit(b) => !b.iter().all(u8::is_ascii_whitespace),
            Seg::Kw(_) => false,
        });
        match (keeps, solid.last(), head.last_mut()) {
            (true, Some(true), Some(prev)) => {
                push_seg(prev, Seg::Lit(b"\r\n".to_vec()));
                for s in segs {
                    push_seg(prev, s);
                }
            }
            _ => {
                head.push(segs);
                solid.push(keeps);
            }
        }
    }
    // The body lines as one (sending ends each line with CRLF, so the last keeps its own).
    let mut joined: Vec<Seg> = Vec::new();
    for (i, l) in tpl.body.iter().enumerate() {
        if i > 0 {
            push_seg(&mut joined, Seg::Lit(b"\r\n".to_vec()));
        }
        line(l, &mut joined);
    }
    let body = if tpl.body.is_empty() {
        Vec::new()
    } else {
        vec![joined]
    };
    Template {
        head,
        body,
        solid,
        ..tpl.clone()
    }
}

/// Appends a segment, joining it to a literal before it.
fn push_seg(out: &mut Vec<Seg>, s: Seg) {
    match (s, out.last_mut()) {
        (Seg::Lit(b), Some(Seg::Lit(prev))) => prev.extend_from_slice(&b),
        (s, _) => out.push(s),
    }
}

fn put(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_u64(out: &mut Vec<u8>, n: u64) -> std::io::Result<()> {
    out.extend_from_slice(digits(n, &mut [0u8; 20]));
    Ok(())
}
