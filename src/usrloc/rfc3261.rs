//! RFC 3261 section 10.3 ("Processing REGISTER Requests"), steps 6 to 8, sans-IO: the
//! current bindings of one address-of-record, the REGISTER's contacts and `now` go in; the
//! new bindings, what changed (for the database) and the reply's Contact list come out.
//!
//! It does not read the clock, parse messages or touch the store: the registrar gives it a
//! [`SaveRequest`] built from the message and applies the [`Outcome`] under the AOR's lock.
//!
//! Choices where the RFC leaves room, as SER's registrar:
//! - an `expires` below `min_expires` is raised to it, above `max_expires` lowered to it (no
//!   423);
//! - a REGISTER with the same Call-ID and the *same* CSeq as a binding is a retransmission and
//!   changes nothing (its 200 lists the bindings again); a lower CSeq is refused with 400.

use std::net::SocketAddr;

use crate::sip::{Dest, Transport};

/// Binding flag: the UA is behind a NAT (saved after `fix_nated_register()`, or with
/// nathelper's `nat_bflag` set): NAT keep-alives go to it (`ping_nated_only`).
pub const FL_NAT: u32 = 1;

/// Where a REGISTER came from, kept with its bindings by `fix_nated_register()` (Kamailio's
/// `received`): requests for the binding go there, from our socket at `local`, instead of
/// to the Contact's (private) address. Stored in the `received` and `socket` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub transport: Transport,
    /// The source address of the REGISTER (the NAT's public side).
    pub addr: SocketAddr,
    /// Our socket's address it arrived at.
    pub local: SocketAddr,
}

impl Received {
    /// `sip:ip:port` with `;transport=` unless UDP: the `received` column, as Kamailio writes it.
    pub fn uri(&self) -> String {
        crate::nathelper::alias_dst_uri(self.addr, self.transport)
    }

    /// `udp:ip:port`: the `socket` column, as Kamailio writes it.
    pub fn socket(&self) -> String {
        format!(
            "{}:{}",
            self.transport.name(),
            crate::sip::hostport(&self.local)
        )
    }

    /// From the two columns; None when either does not read.
    pub fn from_columns(received: &str, socket: &str) -> Option<Self> {
        let u = ser_parser::parse_uri(received.trim()).ok()?;
        let ip = crate::nathelper::host_ip(u.host_str)?;
        let transport = match u.param("transport") {
            Some(Some(t)) => Transport::from_name(t)?,
            _ => Transport::Udp,
        };
        let addr = SocketAddr::new(ip, u.port.unwrap_or(transport.default_port()));
        let (t, hp) = socket.trim().split_once(':')?;
        if !t.eq_ignore_ascii_case(transport.name()) {
            return None;
        }
        let local: SocketAddr = hp.parse().ok()?;
        Some(Self {
            transport,
            addr,
            local,
        })
    }
}

/// One binding of an address-of-record.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub contact: String,
    /// Unix seconds when it ends (a permanent one: [`PERMANENT`] seconds after it was added).
    pub expires: u64,
    /// q in per mille (0..=1000).
    pub q: u16,
    pub callid: String,
    pub cseq: u32,
    /// Unix seconds of the last change.
    pub last_modified: u64,
    pub user_agent: String,
    /// The flow the REGISTER came over when that was a stream connection (TCP, TLS, WS):
    /// requests for this binding go back over it (transport, our socket, the peer's source
    /// address, the connection), not to the Contact's address, which a UA behind NAT or a
    /// UA that does not listen cannot be reached at. In memory only: never written to the
    /// database, and the binding goes when its connection closes
    /// ([`crate::usrloc::Usrloc::flow_closed`]).
    pub flow: Option<Dest>,
    /// Where the REGISTER came from, when the script kept it (`fix_nated_register()`).
    pub received: Option<Received>,
    /// [`FL_NAT`] and nothing else yet (the `flags` column).
    pub flags: u32,
}

impl Binding {
    pub fn alive(&self, now: u64) -> bool {
        self.expires > now
    }

    /// Seconds left (0 once expired).
    pub fn remaining(&self, now: u64) -> u64 {
        self.expires.saturating_sub(now)
    }

    /// `<uri>;q=1.00;expires=N`, as SER's `ul_show_contact` and the 200 OK list it.
    pub fn show(&self, now: u64) -> String {
        format!(
            "<{}>;q={};expires={}",
            self.contact,
            q_str(self.q),
            self.remaining(now)
        )
    }
}

/// How long a "permanent" contact (`serctl ul add`) lives: 2^30 s, as SER (its
/// `expires=1073741812` in the seeds is this less the seconds since it was added).
pub const PERMANENT: u64 = 1 << 30;

/// Most contacts one address-of-record may have; more are refused (503).
pub const MAX_CONTACTS: usize = 64;

/// q in per mille as SER printed it: `1.00`, `0.50` (`0.375` where a third decimal is set).
pub fn q_str(q: u16) -> String {
    let mut s = String::with_capacity(4);
    push_q(&mut s, q);
    s
}

/// [`q_str`] appended to `s`: `1.00`, `0.50`, `0.05` (per mille in, two decimals out, as SER
/// printed it), and a third decimal where the value has one (`0.375`, `0.005`): two alone
/// would hand the phone back another q than it registered (`0.005` as `0.00`, i.e. q=0).
fn push_q(s: &mut String, q: u16) {
    push_decimal(s, u64::from(q / 1000));
    s.push('.');
    let m = q % 1000;
    s.push(char::from(b'0' + (m / 100) as u8));
    s.push(char::from(b'0' + (m / 10 % 10) as u8));
    if m % 10 != 0 {
        s.push(char::from(b'0' + (m % 10) as u8));
    }
}

/// `n` in decimal appended to `s` (as a u64: through a usize it was clamped to 4294967295 on
/// the 32-bit boards).
fn push_decimal(s: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    for &d in ser_parser::fmt_u64(n, &mut buf) {
        s.push(char::from(d));
    }
}

/// `0.5`, `1`, `1.00` → per mille (rounded, half up); None when out of 0..=1 or not a decimal
/// number (`digits[.digits]`, RFC 3261's qvalue and what SER took). Read in fixed point: no
/// float parsing code in the binary for this.
pub fn parse_q(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    // Above 1 whatever the fraction: any non-zero digit before the point but a single 1.
    let int = int.trim_start_matches('0');
    let whole: u32 = match int {
        "" => 0,
        "1" => 1,
        _ => return None,
    };
    // In 1/10000, then rounded to per mille; 1 with any non-zero fraction is above 1.
    let f = frac.as_bytes();
    let tenth_mille = (0..4).fold(0u32, |a, k| {
        a * 10 + f.get(k).map_or(0, |d| u32::from(d - b'0'))
    });
    if whole == 1 && f.iter().any(|&d| d != b'0') {
        return None;
    }
    let per_mille = whole * 1000 + (tenth_mille + 5) / 10;
    u16::try_from(per_mille).ok()
}

/// The registrar's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub default_expires: u32,
    /// 0: no lower bound.
    pub min_expires: u32,
    /// 0: no upper bound.
    pub max_expires: u32,
    /// q of a contact without one, per mille.
    pub default_q: u16,
    /// Bindings an address of record may hold (`max_contacts`); past it a REGISTER that adds
    /// one gets 503.
    pub max_contacts: usize,
    /// Refuse (403) a Contact that points at this server itself (`refuse_self_contact`).
    pub refuse_self: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_expires: 3600,
            min_expires: 0,
            max_expires: 0,
            default_q: 1000,
            max_contacts: MAX_CONTACTS,
            refuse_self: true,
        }
    }
}

/// One Contact of the REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactParam {
    pub uri: String,
    pub expires: Option<u32>,
    /// Per mille.
    pub q: Option<u16>,
}

/// The Contact header fields of the REGISTER.
#[derive(Debug, Clone, PartialEq)]
pub enum Contacts {
    /// None: a query for the current bindings.
    None,
    /// `Contact: *`.
    Star,
    List(Vec<ContactParam>),
}

/// What step 6-8 need of a REGISTER.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    pub contacts: Contacts,
    /// The Expires header field.
    pub expires: Option<u32>,
    pub callid: String,
    pub cseq: u32,
    pub user_agent: String,
    /// The stream connection the REGISTER came over (see [`Binding::flow`]).
    pub flow: Option<Dest>,
    /// See [`Binding::received`].
    pub received: Option<Received>,
    /// See [`Binding::flags`].
    pub flags: u32,
}

/// Why a REGISTER is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with the reason phrase.
    BadRequest(&'static str),
    /// 503: more than [`Policy::max_contacts`] bindings.
    TooManyContacts,
    /// 403: a Contact that points at this server.
    SelfContact,
}

impl From<&'static str> for Refusal {
    fn from(reason: &'static str) -> Self {
        Refusal::BadRequest(reason)
    }
}

impl Refusal {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::BadRequest(r) => (400, r),
            Refusal::TooManyContacts => (503, "Too Many Registered Contacts"),
            Refusal::SelfContact => (403, "Contact Points At This Server"),
        }
    }
}

/// The result of a REGISTER that is accepted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// Every binding of the AOR afterwards (alive ones only).
    pub bindings: Vec<Binding>,
    /// Bindings written (new or updated), for the database.
    pub upserts: Vec<Binding>,
    /// Contacts removed (by the REGISTER or because they had expired), for the database.
    pub removed: Vec<String>,
}

impl Outcome {
    /// Did the REGISTER change anything?
    pub fn changed(&self) -> bool {
        !self.upserts.is_empty() || !self.removed.is_empty()
    }

    /// The 200 OK's Contact header fields: one per binding with its remaining time.
    pub fn contact_headers(&self, now: u64) -> String {
        let len: usize = self.bindings.iter().map(|b| b.contact.len() + 48).sum();
        let mut s = String::with_capacity(len);
        for b in &self.bindings {
            s.push_str("Contact: <");
            s.push_str(&b.contact);
            s.push_str(">;q=");
            push_q(&mut s, b.q);
            s.push_str(";expires=");
            push_decimal(&mut s, b.remaining(now));
            s.push_str("\r\n");
        }
        s
    }
}

/// Contact URIs compared as RFC 3261 19.1.4 would for the usual cases: scheme and host are
/// case-insensitive; here the whole URI is compared without case.
pub fn same_contact(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Steps 6-8 of RFC 3261 10.3 for one AOR.
pub fn process(
    current: &[Binding],
    req: &SaveRequest,
    pol: &Policy,
    now: u64,
) -> Result<Outcome, Refusal> {
    let mut out = Outcome::default();
    // Expired bindings are gone whatever the request says.
    let mut set: Vec<Binding> = Vec::with_capacity(current.len() + 1);
    for b in current {
        if b.alive(now) {
            set.push(b.clone());
        } else {
            out.removed.push(b.contact.clone());
        }
    }
    match &req.contacts {
        Contacts::None => {}
        Contacts::Star => {
            // Step 6: "*" only with Expires: 0 and no other Contact (the caller checked the
            // latter: a "*" among others is a List error).
            if req.expires != Some(0) {
                return Err(Refusal::BadRequest(
                    "Bad Request (Contact * needs Expires: 0)",
                ));
            }
            for b in &set {
                if b.callid == req.callid && b.cseq > req.cseq {
                    return Err(Refusal::BadRequest("Bad Request (CSeq out of order)"));
                }
            }
            out.removed.extend(set.drain(..).map(|b| b.contact));
        }
        Contacts::List(list) => {
            for c in list {
                let mut secs = c.expires.or(req.expires).unwrap_or(pol.default_expires);
                if secs != 0 {
                    if pol.min_expires > 0 && secs < pol.min_expires {
                        secs = pol.min_expires;
                    }
                    if pol.max_expires > 0 && secs > pol.max_expires {
                        secs = pol.max_expires;
                    }
                }
                let pos = set.iter().position(|b| same_contact(&b.contact, &c.uri));
                if let Some(i) = pos {
                    let b = &set[i];
                    if b.callid == req.callid {
                        if req.cseq < b.cseq {
                            return Err(Refusal::BadRequest("Bad Request (CSeq out of order)"));
                        }
                        if req.cseq == b.cseq {
                            // A retransmission (or the same contact twice in one request).
                            continue;
                        }
                    }
                    if secs == 0 {
                        out.removed.push(set.remove(i).contact);
                        continue;
                    }
                }
                if secs == 0 {
                    continue; // removing a binding that does not exist
                }
                let nb = Binding {
                    contact: c.uri.clone(),
                    expires: now + u64::from(secs),
                    q: c.q.unwrap_or(pol.default_q),
                    callid: req.callid.clone(),
                    cseq: req.cseq,
                    last_modified: now,
                    user_agent: req.user_agent.clone(),
                    flow: req.flow,
                    received: req.received,
                    flags: req.flags,
                };
                out.removed.retain(|r| !same_contact(r, &nb.contact));
                out.upserts
                    .retain(|u| !same_contact(&u.contact, &nb.contact));
                out.upserts.push(nb.clone());
                match pos {
                    Some(i) => set[i] = nb,
                    None => set.push(nb),
                }
            }
            if set.len() > pol.max_contacts {
                return Err(Refusal::TooManyContacts);
            }
        }
    }
    out.bindings = set;
    Ok(out)
}

/// What lookup hands out of a binding: its Contact and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub contact: String,
    /// See [`Binding::flow`].
    pub flow: Option<Dest>,
    /// See [`Binding::received`].
    pub received: Option<Received>,
}

impl From<&Binding> for Reach {
    fn from(b: &Binding) -> Self {
        Self {
            contact: b.contact.clone(),
            flow: b.flow,
            received: b.received,
        }
    }
}

/// Bindings in the order lookup tries them: highest q first, then the most recently
/// refreshed. Expired ones are dropped.
pub fn lookup_order(bindings: &[Binding], now: u64) -> Vec<&Binding> {
    let mut v: Vec<&Binding> = bindings.iter().filter(|b| b.alive(now)).collect();
    v.sort_by(|a, b| b.q.cmp(&a.q).then(b.last_modified.cmp(&a.last_modified)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(uri: &str, expires: Option<u32>, q: Option<u16>) -> ContactParam {
        ContactParam {
            uri: uri.into(),
            expires,
            q,
        }
    }

    fn req(contacts: Contacts, expires: Option<u32>, callid: &str, cseq: u32) -> SaveRequest {
        SaveRequest {
            contacts,
            expires,
            callid: callid.into(),
            cseq,
            user_agent: String::new(),
            flow: None,
            received: None,
            flags: 0,
        }
    }

    const NOW: u64 = 1_000_000;

    fn one(uri: &str, callid: &str, cseq: u32, expires: u64) -> Binding {
        Binding {
            contact: uri.into(),
            expires,
            q: 1000,
            callid: callid.into(),
            cseq,
            last_modified: NOW - 10,
            user_agent: String::new(),
            flow: None,
            received: None,
            flags: 0,
        }
    }

    #[test]
    fn new_binding_with_default_expires_and_q() {
        let p = Policy::default();
        let r = req(
            Contacts::List(vec![c("sip:a@1.2.3.4", None, None)]),
            None,
            "c1",
            1,
        );
        let o = process(&[], &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings.len(), 1);
        assert_eq!(o.bindings[0].expires, NOW + 3600);
        assert_eq!(o.bindings[0].q, 1000);
        assert_eq!(o.upserts.len(), 1);
        assert_eq!(
            o.contact_headers(NOW),
            "Contact: <sip:a@1.2.3.4>;q=1.00;expires=3600\r\n"
        );
    }

    #[test]
    fn a_binding_keeps_the_flow_of_the_register_that_made_it() {
        use crate::sip::{ConnId, Transport};
        let p = Policy::default();
        let flow = |n| Dest {
            transport: Transport::Tcp,
            socket: 1,
            addr: "198.51.100.9:40000".parse().expect("addr"),
            conn: Some(ConnId::new(0, n)),
        };
        let mut r = req(
            Contacts::List(vec![c("sip:a@h;transport=tcp", None, None)]),
            None,
            "c1",
            1,
        );
        r.flow = Some(flow(1));
        let o = process(&[], &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings[0].flow, Some(flow(1)));
        // A retransmission changes nothing, even over another connection.
        r.flow = Some(flow(2));
        let again = process(&o.bindings, &r, &p, NOW).expect("ok");
        assert_eq!(again.bindings[0].flow, Some(flow(1)));
        // A refresh takes the flow it came over; one over UDP has none.
        r.cseq = 2;
        let o = process(&o.bindings, &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings[0].flow, Some(flow(2)));
        r.cseq = 3;
        r.flow = None;
        let o = process(&o.bindings, &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings[0].flow, None);
    }

    #[test]
    fn contact_expires_wins_over_header_which_wins_over_default() {
        let p = Policy::default();
        let r = req(
            Contacts::List(vec![
                c("sip:a@h", Some(60), Some(500)),
                c("sip:b@h", None, None),
            ]),
            Some(120),
            "c1",
            1,
        );
        let o = process(&[], &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings[0].expires, NOW + 60);
        assert_eq!(o.bindings[0].q, 500);
        assert_eq!(o.bindings[1].expires, NOW + 120);
    }

    #[test]
    fn min_and_max_expires_clamp() {
        let p = Policy {
            min_expires: 60,
            max_expires: 600,
            ..Policy::default()
        };
        let r = req(
            Contacts::List(vec![
                c("sip:a@h", Some(5), None),
                c("sip:b@h", Some(9999), None),
            ]),
            None,
            "c1",
            1,
        );
        let o = process(&[], &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings[0].expires, NOW + 60);
        assert_eq!(o.bindings[1].expires, NOW + 600);
    }

    #[test]
    fn zero_expires_removes_and_unknown_zero_is_ignored() {
        let p = Policy::default();
        let cur = [one("sip:a@h", "c1", 1, NOW + 100)];
        let r = req(
            Contacts::List(vec![
                c("sip:a@h", Some(0), None),
                c("sip:x@h", Some(0), None),
            ]),
            None,
            "c2",
            1,
        );
        let o = process(&cur, &r, &p, NOW).expect("ok");
        assert!(o.bindings.is_empty());
        assert_eq!(o.removed, ["sip:a@h"]);
        assert!(o.upserts.is_empty());
    }

    #[test]
    fn star_needs_expires_zero_and_removes_all() {
        let p = Policy::default();
        let cur = [
            one("sip:a@h", "c1", 1, NOW + 100),
            one("sip:b@h", "c9", 7, NOW + 100),
        ];
        let bad = req(Contacts::Star, Some(10), "c2", 1);
        assert!(matches!(
            process(&cur, &bad, &p, NOW),
            Err(Refusal::BadRequest(_))
        ));
        let none = req(Contacts::Star, None, "c2", 1);
        assert!(process(&cur, &none, &p, NOW).is_err());
        let ok = req(Contacts::Star, Some(0), "c2", 1);
        let o = process(&cur, &ok, &p, NOW).expect("ok");
        assert!(o.bindings.is_empty());
        assert_eq!(o.removed.len(), 2);
        // Same Call-ID with an older CSeq than a binding: refused.
        let old = req(Contacts::Star, Some(0), "c9", 3);
        assert!(process(&cur, &old, &p, NOW).is_err());
    }

    #[test]
    fn same_callid_older_cseq_is_refused_same_cseq_is_a_retransmission() {
        let p = Policy::default();
        let cur = [one("sip:a@h", "c1", 5, NOW + 100)];
        let older = req(
            Contacts::List(vec![c("sip:a@h", Some(50), None)]),
            None,
            "c1",
            4,
        );
        assert_eq!(
            process(&cur, &older, &p, NOW),
            Err(Refusal::BadRequest("Bad Request (CSeq out of order)"))
        );
        let same = req(
            Contacts::List(vec![c("sip:a@h", Some(50), None)]),
            None,
            "c1",
            5,
        );
        let o = process(&cur, &same, &p, NOW).expect("ok");
        assert!(!o.changed());
        assert_eq!(o.bindings[0].expires, NOW + 100);
        let newer = req(
            Contacts::List(vec![c("sip:a@h", Some(50), None)]),
            None,
            "c1",
            6,
        );
        let o = process(&cur, &newer, &p, NOW).expect("ok");
        assert_eq!(o.bindings[0].expires, NOW + 50);
        assert_eq!(o.bindings[0].cseq, 6);
    }

    #[test]
    fn other_callid_replaces_whatever_its_cseq() {
        let p = Policy::default();
        let cur = [one("sip:a@h", "c1", 50, NOW + 100)];
        let r = req(
            Contacts::List(vec![c("sip:A@h", Some(30), None)]),
            None,
            "c2",
            1,
        );
        let o = process(&cur, &r, &p, NOW).expect("ok");
        assert_eq!(o.bindings.len(), 1);
        assert_eq!(o.bindings[0].callid, "c2");
        assert_eq!(o.bindings[0].expires, NOW + 30);
    }

    #[test]
    fn query_lists_alive_bindings_and_drops_expired() {
        let p = Policy::default();
        let cur = [
            one("sip:a@h", "c1", 1, NOW + 100),
            one("sip:old@h", "c1", 1, NOW - 1),
        ];
        let o = process(&cur, &req(Contacts::None, None, "c2", 1), &p, NOW).expect("ok");
        assert_eq!(o.bindings.len(), 1);
        assert_eq!(o.removed, ["sip:old@h"]);
        assert_eq!(
            o.contact_headers(NOW),
            "Contact: <sip:a@h>;q=1.00;expires=100\r\n"
        );
    }

    #[test]
    fn max_contacts_is_the_policy_s() {
        let p = Policy {
            max_contacts: 2,
            ..Policy::default()
        };
        let two = [c("sip:a@h", None, None), c("sip:b@h", None, None)];
        let o = process(
            &[],
            &req(Contacts::List(two.to_vec()), None, "c1", 1),
            &p,
            NOW,
        )
        .expect("two fit");
        assert_eq!(o.bindings.len(), 2);
        let third = req(
            Contacts::List(vec![c("sip:x@h", None, None)]),
            None,
            "c1",
            2,
        );
        assert_eq!(
            process(&o.bindings, &third, &p, NOW),
            Err(Refusal::TooManyContacts)
        );
        // Refreshing one already bound is no new binding.
        let again = req(
            Contacts::List(vec![c("sip:a@h", None, None)]),
            None,
            "c1",
            3,
        );
        assert!(process(&o.bindings, &again, &p, NOW).is_ok());
    }

    #[test]
    fn too_many_contacts() {
        let p = Policy::default();
        let list = (0..=MAX_CONTACTS)
            .map(|i| c(&format!("sip:{i}@h"), None, None))
            .collect();
        let r = req(Contacts::List(list), None, "c", 1);
        assert_eq!(process(&[], &r, &p, NOW), Err(Refusal::TooManyContacts));
    }

    #[test]
    fn lookup_orders_by_q_then_newest() {
        let mut a = one("sip:a@h", "c", 1, NOW + 10);
        a.q = 500;
        let mut b = one("sip:b@h", "c", 1, NOW + 10);
        b.q = 900;
        let mut c2 = one("sip:c@h", "c", 1, NOW + 10);
        c2.q = 900;
        c2.last_modified = NOW;
        let d = one("sip:d@h", "c", 1, NOW - 5);
        let v = [a, b, c2, d];
        let order: Vec<&str> = lookup_order(&v, NOW)
            .iter()
            .map(|b| b.contact.as_str())
            .collect();
        assert_eq!(order, ["sip:c@h", "sip:b@h", "sip:a@h"]);
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.00"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q(" .25 "), Some(250));
        assert_eq!(parse_q("0.0005"), Some(1));
        assert_eq!(parse_q("0.9996"), Some(1000));
        assert_eq!(parse_q("0.333333"), Some(333));
        assert_eq!(parse_q("00.5"), Some(500));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.0001"), None);
        assert_eq!(parse_q("2"), None);
        for bad in [
            "", ".", "x", "-0.5", "+0.5", "5e-1", "0.5.1", "inf", "NaN", "0,5",
        ] {
            assert_eq!(parse_q(bad), None, "{bad}");
        }
        for q in 0..=1200u16 {
            let want = if q % 10 == 0 {
                format!("{}.{:02}", q / 1000, (q % 1000) / 10)
            } else {
                format!("{}.{:03}", q / 1000, q % 1000)
            };
            assert_eq!(q_str(q), want);
            // What we print reads back as what was registered.
            assert_eq!(parse_q(&q_str(q)), (q <= 1000).then_some(q), "{q}");
        }
        // Past u32 too: a usize clamps there on the 32-bit boards.
        for n in [0u64, 7, 10, 3600, 4_294_967_295, 4_294_967_296, u64::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        assert_eq!(q_str(1000), "1.00");
        assert_eq!(q_str(330), "0.33");
        assert_eq!(q_str(375), "0.375");
        assert_eq!(q_str(5), "0.005");
    }
}
