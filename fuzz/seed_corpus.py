#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ for the ser crate's fuzz targets.

Inputs of stream_framing, ws and xmpp start with two parameter bytes and the chunk sizes
(fuzz_targets/common.rs): the seeds use flags 0 and a few cuts. Sources:
- stream_framing: the RFC 4475 messages with a Content-Length (parser/tests/data/rfc4475),
  alone, two in a row, and with CRLF keep-alives between them.
- ws: a valid Upgrade (flag bit 0 adds it) followed by masked text, binary, fragmented, ping
  and close frames carrying those messages; and a few Upgrade requests alone.
- dns: responses written here: A, AAAA, CNAME chain, SRV, NAPTR, NXDOMAIN with SOA, with
  compression pointers and an OPT record.
- bencode: rtpengine ng replies (ok with SDP, error, query stats).
- sdp: the SDP bodies of those messages and a few written here, after a selector byte.
- xmpp: a component stream: header, handshake, messages, an error, a stream error, the end.

Run from anywhere: python3 fuzz/seed_corpus.py. Idempotent (file names are content hashes);
the corpus directories are git-ignored.
"""

import hashlib
import os
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
RFC4475 = FUZZ.parent / "parser" / "tests" / "data" / "rfc4475"


def put(target, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def params(flags, sizes, stream):
    return bytes([flags, len(sizes)]) + bytes(s - 1 for s in sizes) + stream


def messages():
    out = []
    for p in sorted(RFC4475.glob("*.dat")):
        raw = p.read_bytes()
        head = raw.split(b"\r\n\r\n", 1)[0].lower()
        if b"\ncontent-length:" in head or b"\nl:" in head:
            out.append(raw)
    return out


def frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44"):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + masked


UPGRADE = (b"GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
           b"Origin: http://example.com\r\n\r\n")


def name(n, ptrs=None):
    out = b""
    for label in n.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def rr(owner, rtype, rdata, ttl=300):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def dns(qname, qtype, answers=(), authority=(), rcode=0, opt=True):
    head = struct.pack(">HBBHHHH", 0x1234, 0x81, 0x80 | rcode, 1, len(answers),
                       len(authority), 1 if opt else 0)
    q = name(qname) + struct.pack(">HH", qtype, 1)
    body = head + q + b"".join(answers) + b"".join(authority)
    if opt:
        body += b"\x00" + struct.pack(">HHIH", 41, 1232, 0, 0)
    return body


PTR = b"\xc0\x0c"  # the question's name


def dns_seeds():
    a = rr(PTR, 1, bytes([192, 0, 2, 1]))
    aaaa = rr(PTR, 28, bytes(15) + b"\x01")
    cname = rr(PTR, 5, name("sip.example.com"))
    srv = rr(PTR, 33, struct.pack(">HHH", 10, 60, 5060) + name("sip1.example.com"))
    srv2 = rr(PTR, 33, struct.pack(">HHH", 10, 0, 5061) + PTR)
    naptr = rr(PTR, 35, struct.pack(">HH", 10, 50) + b"\x01s" + b"\x07SIP+D2U" + b"\x00"
               + name("_sip._udp.example.com"))
    soa = rr(PTR, 6, name("ns.example.com") + name("host.example.com")
             + struct.pack(">IIIII", 1, 3600, 600, 86400, 60))
    return [
        dns("example.com", 1, [a]),
        dns("example.com", 28, [aaaa], opt=False),
        dns("www.example.com", 1, [cname, rr(b"\xc0\x2d", 1, bytes([10, 0, 0, 1]))]),
        dns("_sip._udp.example.com", 33, [srv, srv2]),
        dns("example.com", 35, [naptr]),
        dns("nx.example.com", 1, [], [soa], rcode=3),
    ]


SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 192.168.1.20\r\ns=-\r\n"
       b"c=IN IP4 192.168.1.20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
       b"c=IN IP4 10.0.0.5/127\r\na=rtpmap:0 PCMU/8000\r\n")


def main():
    msgs = messages()
    for m in msgs:
        put("stream_framing", params(0, [], m))
        put("stream_framing", params(1, [7, 100], m + b"\r\n\r\n" + m))
        body = m.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in m else b""
        if body.startswith(b"v=0"):
            for sel in (0x0b, 0x2b, 0x1a):
                put("sdp", bytes([sel]) + body)
    for m in msgs[:12]:
        put("ws", params(1, [], frame(1, m)))
        put("ws", params(1, [3, 50], frame(2, m) + frame(9, b"hi") + frame(1, m)))
        half = len(m) // 2
        put("ws", params(1, [], frame(1, m[:half], fin=False) + frame(10, b"")
                         + frame(0, m[half:])))
    put("ws", params(1, [], frame(8, b"\x03\xe8")))
    put("ws", params(0, [], UPGRADE))
    put("ws", params(8, [20], UPGRADE.replace(b"example.com\r\n\r\n", b"evil.example\r\n\r\n")))
    put("ws", params(0, [], UPGRADE.replace(b"GET", b"POST")))
    for d in dns_seeds():
        put("dns", d)
    for b in [
        b"d6:result2:oke",
        b"d3:sdp" + str(len(SDP)).encode() + b":" + SDP + b"6:result2:oke",
        b"d6:result5:error12:error-reason13:Unknown call-ie",
        b"d6:result2:ok7:createdi1700000000e6:totalsd3:RTPd7:packetsi10e5:bytesi1600eeel1:a1:bei-5eee",
    ]:
        put("bencode", b)
    put("sdp", b"\x0b" + SDP)
    put("sdp", b"\x2a" + SDP.replace(b"\r\n", b"\n"))
    put("sdp", b"\x1b" + b"v=0\r\nc=IN IP4 0.0.0.0\r\na=direction:active")
    header = (b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
              b"xmlns='jabber:component:accept' from='sip.example.org' id='3BF96D32'>")
    stanzas = [
        b"<handshake/>",
        b"<message from='alice@xmpp.example.org/home' to='bob*example.com@sip.example.org' "
        b"type='chat' id='m1'><body>hi &amp; bye &#x263A;</body><active xmlns='x'/></message>",
        b"<message type='error' id='ser-7' from='x@y' to='a@b'><body>orig</body>"
        b"<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text></error></message>",
        b"<iq type='get' id='p1' from='a@b' to='c@d'><ping xmlns='urn:xmpp:ping'/></iq>",
        b" \n",
        b"<message><body><![CDATA[x<y]]></body></message>",
    ]
    put("xmpp", params(0, [], header + b"".join(stanzas) + b"</stream:stream>"))
    put("xmpp", params(3, [5, 64], header + b"".join(stanzas)))
    put("xmpp", params(0, [], header + b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                       b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bye</text></stream:error>"))
    for t in sorted(os.listdir(FUZZ / "corpus")):
        print(f"{t}: {len(os.listdir(FUZZ / 'corpus' / t))} seeds")


main()
