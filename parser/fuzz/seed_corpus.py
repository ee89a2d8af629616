#!/usr/bin/env python3
"""Seeds fuzz/corpus/{message,uri}/ from the parser's test data.

message: every RFC 4475 message as published (CRLF), every RFC 5118 message with its LF line
ends turned into CRLF (plus, where the published Content-Length exceeds the body, a copy with
it rewritten to the body length, as tests/common/mod.rs does).
uri: the Request-URI of every request and the URIs in From, To, Contact, Route and
Record-Route lines (angle-bracketed or bare addr-specs), deduplicated.

Run from anywhere: python3 parser/fuzz/seed_corpus.py. Idempotent (file names are content
hashes); the corpus directories are git-ignored.
"""

import hashlib
import pathlib
import re

FUZZ = pathlib.Path(__file__).resolve().parent
DATA = FUZZ.parent / "tests" / "data"


def put(target, data):
    d = FUZZ / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def crlf(raw):
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def fix_content_length(msg):
    split = msg.find(b"\r\n\r\n")
    m = re.search(rb"\r\nContent-Length: *(\d+)", msg)
    if split < 0 or not m:
        return None
    body_len = len(msg) - split - 4
    if int(m.group(1)) <= body_len:
        return None
    return msg[: m.start(1)] + str(body_len).encode() + msg[m.end(1):]


HDR_URI = re.compile(
    rb"^(?:from|f|to|t|contact|m|route|record-route)[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE
)


def uris(msg):
    out = set()
    head = msg.split(b"\r\n\r\n", 1)[0]
    first = head.split(b"\r\n", 1)[0]
    parts = first.split()
    if len(parts) >= 3 and not first.upper().startswith(b"SIP/"):
        out.add(parts[1])
    for m in HDR_URI.finditer(head):
        value = m.group(1)
        for u in re.findall(rb"<([^<>]*)>", value):
            out.add(u.strip())
        if b"<" not in value:
            for piece in value.split(b","):
                u = piece.strip().split(b";", 1)[0].strip()
                if u:
                    out.add(u)
    return out


# The test data has no tel: URI and few sips: or header-bearing ones; a few by hand.
EXTRA_URIS = {
    b"tel:+1-201-555-0123",
    b"tel:7042;phone-context=example.com",
    b"sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent",
    b"sip:[::1]:5060;maddr=[2001:db8::1];ttl=15",
}


def main():
    messages = []
    for f in sorted((DATA / "rfc4475").glob("*.dat")):
        messages.append(f.read_bytes())
    for f in sorted((DATA / "rfc5118").iterdir()):
        m = crlf(f.read_bytes())
        messages.append(m)
        fixed = fix_content_length(m)
        if fixed:
            messages.append(fixed)
    all_uris = set()
    for m in messages:
        put("message", m)
        all_uris |= uris(m)
    all_uris |= EXTRA_URIS
    for u in sorted(all_uris):
        put("uri", u)
    print(f"message: {len(messages)} seeds, uri: {len(all_uris)} seeds")


if __name__ == "__main__":
    main()
