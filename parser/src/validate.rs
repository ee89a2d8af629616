//! The eager checks of [`crate::parse`]: every value whose breakage RFC 4475 (section 3.1.2)
//! says must be answered with an error, checked whether or not anyone reads it later.
//!
//! It works on the header index (the [`Header`] lines, the request method, where the headers
//! end), not on a `Message`: it sits below `message`, which builds the index and then calls
//! [`validate`], so the two never import each other.
//!
//! Checked: every Via value (badinv01); From and To as one name-addr each (quotbal, badaspec,
//! baddn); Contact, Route and Record-Route lists (regbadct); Call-ID syntax; CSeq number and
//! method (scalar02, mismatch01/02); Max-Forwards and Expires ranges; the mandatory headers
//! (Via, From, To, Call-ID, CSeq: RFC 3261 8.1.1, RFC 4475 insuf) and that the single-valued
//! ones appear once (multi01). Start line and Content-Length are checked while indexing.
//! Not checked: headers a proxy never interprets (Date: baddate, Content-Type, Accept, ...).

use crate::error::{ErrorKind, ParseError};
use crate::header_name::HeaderName;
use crate::headers::name_addr::{parse_contact, parse_name_addr, parse_single, Contact, NameAddr};
use crate::headers::simple::{check_call_id, parse_cseq, parse_number};
use crate::headers::via::{parse_via, Via};
use crate::headers::Header;
use crate::method::Method;

/// What [`validate`] parsed on the way and the message keeps, so that the layers above, which
/// all ask for them (transaction keys, To-tags, replies, the registrar), do not parse them
/// again: the top Via, From and To.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parsed<'b> {
    pub top: Option<Via<'b>>,
    /// How many Via values the message has (over all its Via lines).
    pub vias: u32,
    pub from: Option<NameAddr<'b>>,
    pub to: Option<NameAddr<'b>>,
    /// The Contact when the message has exactly one value (a REGISTER's, an INVITE's).
    pub contact: Option<Contact<'b>>,
    /// The Request-URI (sip, sips, tel), parsed by the start line's check, not by validate.
    pub ruri: Option<crate::uri::Uri<'b>>,
}

/// Checks the header lines of one message: `method` is its request method (None for a
/// response), `headers_end` the offset of the empty line after them. On success returns the
/// values parsed on the way ([`Parsed`]). The error is not yet marked request or response
/// ([`ParseError::in_request`]); the caller knows which.
pub(crate) fn validate<'b>(
    headers: &[Header<'b>],
    method: Option<Method<'b>>,
    headers_end: usize,
) -> Result<Parsed<'b>, ParseError> {
    let mut top: Option<Via<'b>> = None;
    let mut from = None;
    let mut to = None;
    let mut first_contact = None;
    let mut vias = 0u32;
    // Counts of Via, From, To, Call-ID, CSeq, Max-Forwards lines.
    let mut count = [0u32; 6];
    let mut contacts = 0u32;
    let mut star = false;
    for h in headers {
        let (v, base) = (h.value, h.value_range.start);
        let bad = |hn| ParseError::new(ErrorKind::BadHeader(hn), base);
        let slot = match h.name {
            HeaderName::Via => {
                if v.is_empty() {
                    return Err(bad(HeaderName::Via));
                }
                let mut pos = 0;
                while pos < v.len() {
                    let (via, next) = parse_via(v, base, pos)?;
                    vias += 1;
                    if top.is_none() {
                        top = Some(via);
                    }
                    pos = next;
                }
                Some(0)
            }
            HeaderName::From => {
                from = Some(parse_single(v, base, h.name)?);
                Some(1)
            }
            HeaderName::To => {
                to = Some(parse_single(v, base, h.name)?);
                Some(2)
            }
            HeaderName::Contact => {
                if v.is_empty() {
                    return Err(bad(HeaderName::Contact));
                }
                let mut pos = 0;
                while pos < v.len() {
                    let (c, next) = parse_contact(v, base, pos)?;
                    star |= c == Contact::Star;
                    contacts += 1;
                    first_contact.get_or_insert(c);
                    pos = next;
                }
                None
            }
            HeaderName::Route | HeaderName::RecordRoute => {
                if v.is_empty() {
                    return Err(bad(h.name));
                }
                let mut pos = 0;
                while pos < v.len() {
                    pos = parse_name_addr(v, base, pos, h.name)?.1;
                }
                None
            }
            HeaderName::CallId => {
                check_call_id(v, base)?;
                Some(3)
            }
            HeaderName::CSeq => {
                let cseq = parse_cseq(v, base)?;
                if let Some(m) = method {
                    if m != cseq.method {
                        return Err(ParseError::new(ErrorKind::CSeqMethodMismatch, base));
                    }
                }
                Some(4)
            }
            HeaderName::MaxForwards => {
                parse_number(v, base, 255, h.name)?;
                Some(5)
            }
            HeaderName::Expires => {
                parse_number(v, base, u64::from(u32::MAX), h.name)?;
                None
            }
            _ => None,
        };
        if let Some(k) = slot {
            if let Some(c) = count.get_mut(k) {
                *c += 1;
                // Via may repeat; the others are single-valued (RFC 4475 multi01).
                if k > 0 && *c > 1 {
                    return Err(ParseError::new(
                        ErrorKind::DuplicateHeader(h.name),
                        h.line.start,
                    ));
                }
            }
        }
    }
    if star && contacts > 1 {
        let at = headers
            .iter()
            .find(|h| h.name == HeaderName::Contact)
            .map_or(0, |h| h.value_range.start);
        return Err(ParseError::new(
            ErrorKind::BadHeader(HeaderName::Contact),
            at,
        ));
    }
    let required = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    for (k, name) in required.into_iter().enumerate() {
        if count.get(k).copied().unwrap_or(0) == 0 {
            return Err(ParseError::new(ErrorKind::MissingHeader(name), headers_end));
        }
    }
    let contact = first_contact.filter(|_| contacts == 1);
    Ok(Parsed {
        top,
        vias,
        from,
        to,
        contact,
        ruri: None,
    })
}
