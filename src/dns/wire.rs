//! The DNS messages the resolver writes and reads, in the wire format of RFC 1035 4.1: the
//! query (one question, recursion desired, an EDNS OPT record with our UDP payload size), and
//! a response decoder that keeps only what the resolver uses.
//!
//! The decoder reads the header, the questions, and the answer and authority sections, and of
//! their records decodes the data of A, AAAA, CNAME, SRV, NAPTR and SOA only, each with
//! hickory-proto's decoder for that type, confined to the record's RDLENGTH; every other record
//! is skipped by its RDLENGTH. The additional section is only searched for the OPT record's
//! upper RCODE bits (RFC 6891 6.1.3). Malformed input (short, a bad length or compression
//! pointer, data that does not fill its RDLENGTH) is an error, never a panic.
//!
//! Why not hickory's `Message::from_vec`: it decodes every record with `RData::read`, which
//! dispatches over all record types on the type read from the wire, so the decoders of types
//! we never ask for (CAA with its URL and IDNA parsing, SVCB, DNSSEC, ...) cannot be left out
//! of the binary; they cost tens of KB on the small boards. Key items: [`encode_query`],
//! [`decode_response`], [`Response`], [`Rdata`].

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NAPTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// RR type codes (RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 3403, RFC 6891).
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_NAPTR: u16 = 35;
const TYPE_OPT: u16 = 41;
/// The IN class.
const CLASS_IN: u16 = 1;
/// Header bits (RFC 1035 4.1.1): QR, TC and RD in the third byte, opcode in its bits 3-6.
const FLAG_QR: u8 = 0x80;
const FLAG_TC: u8 = 0x02;
const FLAG_RD: u8 = 0x01;

/// The query for `name`/`rtype`, class IN, with message id `id`: recursion desired, and an
/// OPT record (EDNS version 0, no DNSSEC) advertising `payload` bytes over UDP. `None` if the
/// name cannot be written (a label over 63 bytes, which hickory's `Name` does not allow).
pub(super) fn encode_query(
    id: u16,
    name: &Name,
    rtype: RecordType,
    payload: u16,
) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(12 + 256 + 4 + 11);
    q.extend_from_slice(&id.to_be_bytes());
    // Opcode QUERY, RD; then RA, Z, AD, CD, RCODE all zero.
    q.extend_from_slice(&[FLAG_RD, 0]);
    // One question, no answer or authority records, one additional (the OPT record).
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.iter() {
        let len = u8::try_from(label.len()).ok().filter(|&l| l <= 63)?;
        q.push(len);
        q.extend_from_slice(label);
    }
    q.push(0);
    q.extend_from_slice(&u16::from(rtype).to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT (RFC 6891 6.1.2): root owner, the class field is the UDP payload size, the TTL field
    // holds extended RCODE 0, version 0 and the flags (DO clear); no options.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&payload.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Some(q)
}

/// A response that could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Malformed;

/// The record data the resolver uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
    Srv(SRV),
    Naptr(NAPTR),
    Soa(SOA),
}

impl Rdata {
    pub(super) fn record_type(&self) -> RecordType {
        match self {
            Rdata::A(_) => RecordType::A,
            Rdata::Aaaa(_) => RecordType::AAAA,
            Rdata::Cname(_) => RecordType::CNAME,
            Rdata::Srv(_) => RecordType::SRV,
            Rdata::Naptr(_) => RecordType::NAPTR,
            Rdata::Soa(_) => RecordType::SOA,
        }
    }
}

/// One record of a type the resolver uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) name: Name,
    pub(super) class: DNSClass,
    pub(super) ttl: u32,
    pub(super) data: Rdata,
}

/// One entry of the question section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Question {
    pub(super) name: Name,
    pub(super) qtype: RecordType,
    pub(super) qclass: DNSClass,
}

/// What the resolver reads of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) id: u16,
    /// The QR bit: a response, not a query.
    pub(super) is_response: bool,
    /// The 4-bit opcode (0: a standard query).
    pub(super) op_code: u8,
    /// The TC bit: the answer did not fit (in UDP).
    pub(super) truncated: bool,
    /// The header's RCODE with the OPT record's upper bits, if there is one.
    pub(super) rcode: ResponseCode,
    pub(super) questions: Vec<Question>,
    /// The answer section's records of the types in [`Rdata`], in order; others are left out.
    pub(super) answers: Vec<Record>,
    /// The authority section's records of the types in [`Rdata`] (the SOA of a negative
    /// answer, RFC 2308).
    pub(super) authority: Vec<Record>,
}

/// Decodes a whole response (a UDP datagram, or a TCP message without its length prefix).
pub(super) fn decode_response(msg: &[u8]) -> Result<Response, Malformed> {
    let mut d = BinDecoder::new(msg);
    let id = read_u16(&mut d)?;
    let flags = read_u8(&mut d)?;
    let rcode_low = read_u8(&mut d)? & 0x0f;
    let qdcount = read_u16(&mut d)?;
    let ancount = read_u16(&mut d)?;
    let nscount = read_u16(&mut d)?;
    let arcount = read_u16(&mut d)?;
    let mut questions = Vec::new();
    for _ in 0..qdcount {
        questions.push(Question {
            name: read_name(&mut d)?,
            qtype: RecordType::from(read_u16(&mut d)?),
            qclass: DNSClass::from(read_u16(&mut d)?),
        });
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        if let Some(r) = read_record(&mut d, msg)? {
            answers.push(r);
        }
    }
    let mut authority = Vec::new();
    for _ in 0..nscount {
        if let Some(r) = read_record(&mut d, msg)? {
            authority.push(r);
        }
    }
    let mut rcode_high = None;
    for _ in 0..arcount {
        let header = read_record_header(&mut d)?;
        if header.rtype == TYPE_OPT {
            // RFC 6891 6.1.1: at most one OPT record, owned by the root.
            if rcode_high.is_some() || !header.name.is_root() {
                return Err(Malformed);
            }
            rcode_high = Some((header.ttl >> 24) as u8);
        }
        skip(&mut d, header.rdlength)?;
    }
    Ok(Response {
        id,
        is_response: flags & FLAG_QR != 0,
        op_code: (flags >> 3) & 0x0f,
        truncated: flags & FLAG_TC != 0,
        rcode: ResponseCode::from(rcode_high.unwrap_or(0), rcode_low),
        questions,
        answers,
        authority,
    })
}

struct RecordHeader {
    name: Name,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdlength: usize,
}

fn read_record_header(d: &mut BinDecoder<'_>) -> Result<RecordHeader, Malformed> {
    Ok(RecordHeader {
        name: read_name(d)?,
        rtype: read_u16(d)?,
        class: read_u16(d)?,
        ttl: read_u32(d)?,
        rdlength: usize::from(read_u16(d)?),
    })
}

/// One record: `Some` if its type is one of [`Rdata`]'s, `None` if skipped. A record with no
/// data (RDLENGTH 0, which only dynamic updates use) is skipped too.
fn read_record(d: &mut BinDecoder<'_>, msg: &[u8]) -> Result<Option<Record>, Malformed> {
    let header = read_record_header(d)?;
    let start = d.index();
    let end = start + header.rdlength;
    if end > msg.len() {
        return Err(Malformed);
    }
    let data = if header.rdlength == 0 {
        None
    } else {
        read_rdata(msg, start, end, header.rtype)?
    };
    skip(d, header.rdlength)?;
    Ok(data.map(|data| Record {
        name: header.name,
        class: DNSClass::from(header.class),
        ttl: header.ttl,
        data,
    }))
}

/// The data of a record of type `rtype` at `msg[start..end]`, if the type is one we use. The
/// type's decoder reads from the message cut at `end`, so it cannot read past the record, while
/// compression pointers (which point backwards) still reach the names before it; it must use
/// up exactly the RDLENGTH bytes.
fn read_rdata(
    msg: &[u8],
    start: usize,
    end: usize,
    rtype: u16,
) -> Result<Option<Rdata>, Malformed> {
    let whole = BinDecoder::new(msg.get(..end).ok_or(Malformed)?);
    let mut d = whole.clone(u16::try_from(start).map_err(|_| Malformed)?);
    let data = match rtype {
        TYPE_A => A::read(&mut d).map(|a| Rdata::A(a.0)),
        TYPE_AAAA => AAAA::read(&mut d).map(|a| Rdata::Aaaa(a.0)),
        TYPE_CNAME => CNAME::read(&mut d).map(|c| Rdata::Cname(c.0)),
        TYPE_SRV => SRV::read(&mut d).map(Rdata::Srv),
        TYPE_NAPTR => NAPTR::read(&mut d).map(Rdata::Naptr),
        TYPE_SOA => SOA::read(&mut d).map(Rdata::Soa),
        _ => return Ok(None),
    }
    .map_err(|_| Malformed)?;
    if d.index() != end {
        return Err(Malformed);
    }
    Ok(Some(data))
}

fn read_name(d: &mut BinDecoder<'_>) -> Result<Name, Malformed> {
    Name::read(d).map_err(|_| Malformed)
}

fn read_u8(d: &mut BinDecoder<'_>) -> Result<u8, Malformed> {
    d.read_u8().map(|v| v.unverified()).map_err(|_| Malformed)
}

fn read_u16(d: &mut BinDecoder<'_>) -> Result<u16, Malformed> {
    d.read_u16().map(|v| v.unverified()).map_err(|_| Malformed)
}

fn read_u32(d: &mut BinDecoder<'_>) -> Result<u32, Malformed> {
    d.read_u32().map(|v| v.unverified()).map_err(|_| Malformed)
}

fn skip(d: &mut BinDecoder<'_>, len: usize) -> Result<(), Malformed> {
    d.read_slice(len).map(|_| ()).map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{RData, Record as HRecord};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn response(qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_recursion_available(true);
        let mut q = Query::query(name(qname), qtype);
        q.set_query_class(DNSClass::IN);
        m.add_query(q);
        m
    }

    fn rec(owner: &str, ttl: u32, data: RData) -> HRecord {
        HRecord::from_rdata(name(owner), ttl, data)
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().expect("encode")
    }

    /// A NOERROR answer with a CNAME chain, addresses, a TXT record in between, an SOA in the
    /// authority section and an OPT record: names compressed by hickory's encoder.
    fn mixed() -> Vec<u8> {
        let mut m = response("www.example.com.", RecordType::A);
        m.add_answer(rec(
            "www.example.com.",
            300,
            RData::CNAME(CNAME(name("host.example.com."))),
        ));
        m.add_answer(rec(
            "host.example.com.",
            60,
            RData::TXT(TXT::new(vec!["v=not for us".into(), "x".into()])),
        ));
        m.add_answer(rec(
            "host.example.com.",
            120,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m.add_answer(rec("host.example.com.", 90, RData::A(A::new(192, 0, 2, 2))));
        m.add_answer(rec(
            "host.example.com.",
            90,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ));
        m.add_name_server(rec(
            "example.com.",
            3600,
            RData::SOA(SOA::new(
                name("ns.example.com."),
                name("hostmaster.example.com."),
                7,
                3600,
                600,
                86400,
                30,
            )),
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        bytes(&m)
    }

    #[test]
    fn query_is_what_hickory_writes() {
        for (qname, rtype) in [
            ("example.com.", RecordType::A),
            ("_sip._udp.Example.COM.", RecordType::SRV),
            ("a.b.c.d.e.f.", RecordType::NAPTR),
            ("x.", RecordType::AAAA),
        ] {
            let mut m = Message::new();
            m.set_id(0xbeef)
                .set_message_type(MessageType::Query)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(true);
            let mut q = Query::query(name(qname), rtype);
            q.set_query_class(DNSClass::IN);
            m.add_query(q);
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            m.set_edns(edns);
            assert_eq!(
                encode_query(0xbeef, &name(qname), rtype, 1232),
                Some(bytes(&m)),
                "{qname}"
            );
        }
    }

    #[test]
    fn mixed_answer_keeps_our_types_and_skips_the_rest() {
        let wire = mixed();
        let r = decode_response(&wire).expect("decode");
        assert_eq!(r.id, 0x1234);
        assert!(r.is_response && !r.truncated);
        assert_eq!(r.op_code, 0);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(
            r.questions,
            [Question {
                name: name("www.example.com."),
                qtype: RecordType::A,
                qclass: DNSClass::IN,
            }]
        );
        let got: Vec<(String, u32, Rdata)> = r
            .answers
            .iter()
            .map(|r| (r.name.to_ascii(), r.ttl, r.data.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "www.example.com.".into(),
                    300,
                    Rdata::Cname(name("host.example.com."))
                ),
                (
                    "host.example.com.".into(),
                    120,
                    Rdata::A([192, 0, 2, 1].into())
                ),
                (
                    "host.example.com.".into(),
                    90,
                    Rdata::A([192, 0, 2, 2].into())
                ),
                (
                    "host.example.com.".into(),
                    90,
                    Rdata::Aaaa("2001:db8::1".parse().unwrap())
                ),
            ]
        );
        assert!(r.answers.iter().all(|r| r.class == DNSClass::IN));
        assert_eq!(r.authority.len(), 1);
        let Rdata::Soa(soa) = &r.authority[0].data else {
            panic!("not an SOA: {:?}", r.authority[0]);
        };
        assert_eq!(soa.minimum(), 30);
        assert_eq!(soa.rname(), &name("hostmaster.example.com."));
        assert_eq!(r.authority[0].ttl, 3600);
        // The names after the first are compression pointers.
        assert!(wire.windows(2).any(|w| w[0] & 0xc0 == 0xc0));
    }

    #[test]
    fn srv_naptr_and_header_bits() {
        let mut m = response("example.com.", RecordType::NAPTR);
        m.set_truncated(true)
            .set_response_code(ResponseCode::NXDomain);
        m.add_answer(rec(
            "example.com.",
            10,
            RData::NAPTR(NAPTR::new(
                10,
                20,
                b"s".to_vec().into(),
                b"SIP+D2U".to_vec().into(),
                Box::default(),
                name("_sip._udp.example.com."),
            )),
        ));
        m.add_answer(rec(
            "_sip._udp.example.com.",
            20,
            RData::SRV(SRV::new(1, 2, 5060, name("sip.example.com."))),
        ));
        let r = decode_response(&bytes(&m)).expect("decode");
        assert!(r.truncated);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        let Rdata::Naptr(n) = &r.answers[0].data else {
            panic!("{:?}", r.answers[0]);
        };
        assert_eq!((n.order(), n.preference()), (10, 20));
        assert_eq!(n.services(), b"SIP+D2U");
        assert_eq!(n.replacement(), &name("_sip._udp.example.com."));
        assert_eq!(
            r.answers[1].data,
            Rdata::Srv(SRV::new(1, 2, 5060, name("sip.example.com.")))
        );
        assert_eq!(r.answers[1].data.record_type(), RecordType::SRV);
    }

    #[test]
    fn rcode_matches_hickory_with_and_without_opt() {
        for rcode in [
            ResponseCode::NoError,
            ResponseCode::ServFail,
            ResponseCode::NXDomain,
            ResponseCode::Refused,
            ResponseCode::BADVERS,
        ] {
            for with_edns in [false, true] {
                let mut m = response("example.com.", RecordType::A);
                m.set_response_code(rcode);
                if with_edns {
                    m.set_edns(Edns::new());
                }
                let wire = bytes(&m);
                let ours = decode_response(&wire).expect("decode").rcode;
                let theirs = Message::from_vec(&wire).expect("hickory").response_code();
                assert_eq!(ours, theirs, "{rcode:?} edns {with_edns}");
            }
        }
    }

    #[test]
    fn every_cut_is_malformed() {
        let wire = mixed();
        for n in 0..wire.len() {
            assert_eq!(decode_response(&wire[..n]), Err(Malformed), "cut at {n}");
        }
    }

    /// The offset of the RDLENGTH of the first answer record of type `rtype`.
    fn rdlength_at(wire: &[u8], rtype: u16) -> usize {
        let mut d = BinDecoder::new(wire);
        d.read_slice(12).unwrap();
        read_name(&mut d).unwrap();
        d.read_slice(4).unwrap();
        loop {
            let h = read_record_header(&mut d).unwrap();
            if h.rtype == rtype {
                return d.index() - 2;
            }
            skip(&mut d, h.rdlength).unwrap();
        }
    }

    #[test]
    fn bad_rdlength_is_malformed() {
        let wire = mixed();
        for (rtype, lens) in [
            // A: 4 bytes; a longer or shorter RDLENGTH misaligns the rest or the address.
            (TYPE_A, &[0u16, 3, 5, 0xffff][..]),
            // CNAME: its name ends in a pointer (2 bytes + label); shorter cuts it.
            (TYPE_CNAME, &[1, 2, 3, 0xffff][..]),
            // TXT is skipped by its length: a wrong one misaligns or overruns.
            (16, &[1, 200, 0xffff][..]),
        ] {
            let at = rdlength_at(&wire, rtype);
            for &len in lens {
                let mut bad = wire.clone();
                bad[at..at + 2].copy_from_slice(&len.to_be_bytes());
                let r = decode_response(&bad);
                // RDLENGTH 0 on an A record skips it, and the next records then misalign.
                assert!(r.is_err(), "type {rtype} rdlength {len}: {r:?}");
            }
        }
    }

    /// A minimal response to `example.com A`, the answer's owner and data given as bytes.
    fn handmade(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut w = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        w.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        w.extend_from_slice(owner);
        w.extend_from_slice(&rtype.to_be_bytes());
        w.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        w.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        w.extend_from_slice(rdata);
        w
    }

    #[test]
    fn compression_pointers() {
        // Owner: pointer to the question's name (offset 12); CNAME data: "www" then a pointer.
        let ok = handmade(&[0xc0, 12], TYPE_CNAME, b"\x03www\xc0\x0c");
        let r = decode_response(&ok).expect("decode");
        assert_eq!(r.answers[0].name, name("example.com."));
        assert_eq!(r.answers[0].data, Rdata::Cname(name("www.example.com.")));
        // SRV target pointing into the question (at "com").
        let srv = handmade(
            &[0xc0, 12],
            TYPE_SRV,
            b"\x00\x01\x00\x02\x13\xc4\x03sip\xc0\x14",
        );
        let r = decode_response(&srv).expect("decode");
        assert_eq!(
            r.answers[0].data,
            Rdata::Srv(SRV::new(1, 2, 5060, name("sip.com.")))
        );
        // Pointers forward, at themselves, past the end, all ones: malformed.
        for owner in [&[0xc0u8, 40][..], &[0xc0, 29], &[0xc0, 0xff], &[0xff, 0xff]] {
            let bad = handmade(owner, TYPE_A, &[192, 0, 2, 1]);
            assert_eq!(decode_response(&bad), Err(Malformed), "{owner:?}");
        }
        // A pointer into the name being read.
        // A pointer into the name being read.
        let looped = handmade(&[0xc0, 12], TYPE_CNAME, b"\x03www\xc0\x2b");
        assert_eq!(decode_response(&looped), Err(Malformed));
        // A name in RDATA that runs past RDLENGTH into the next bytes: malformed, even though
        // the bytes after it would finish the name.
        let mut overrun = handmade(&[0xc0, 12], TYPE_CNAME, b"\x03www");
        overrun.extend_from_slice(&[0xc0, 0x0c]);
        assert_eq!(decode_response(&overrun), Err(Malformed));
        // An A record of class CH is decoded (the cache filters the class).
        let mut ch = handmade(&[0xc0, 12], TYPE_A, &[192, 0, 2, 1]);
        ch[34] = 3;
        assert_eq!(decode_response(&ch).unwrap().answers[0].class, DNSClass::CH);
    }

    #[test]
    fn two_opt_records_are_malformed() {
        let mut w = handmade(&[0xc0, 12], TYPE_A, &[192, 0, 2, 1]);
        w[11] = 2;
        for _ in 0..2 {
            w.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(decode_response(&w), Err(Malformed));
        w[11] = 1;
        w.truncate(w.len() - 11);
        assert!(decode_response(&w).is_ok());
    }

    #[test]
    fn mangled_answers_never_panic() {
        let wire = mixed();
        let mut rng = StdRng::seed_from_u64(3263);
        for _ in 0..20_000 {
            let mut bad = wire.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bad.len());
                bad[i] = rng.random();
            }
            let cut = rng.random_range(0..=bad.len());
            let _ = decode_response(&bad[..cut]);
            let _ = decode_response(&bad);
        }
    }
}
