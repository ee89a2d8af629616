#!/usr/bin/env python3
"""A tiny XMPP client for tests/xmpp.rs, on the standard library alone.

Logs in over a plain c2s stream (the test's prosody has c2s_require_encryption = false) with
SASL PLAIN, binds a resource, sends initial presence, then:
  - each line on stdin `send <jid> <body...>` sends a chat message, `quit` ends;
  - each stanza received is printed on stdout as one JSON line
    {"kind": "message", "from": ..., "to": ..., "type": ..., "id": ..., "body": ..., "error": ...}
  - `ready` is printed once logged in.
Usage: client.py <host> <port> <user> <domain> <password>
"""
import base64
import json
import select
import socket
import sys
import xml.etree.ElementTree as ET

STREAM = "{http://etherx.jabber.org/streams}"
CLIENT = "{jabber:client}"
SASL = "{urn:ietf:params:xml:ns:xmpp-sasl}"
BIND = "{urn:ietf:params:xml:ns:xmpp-bind}"
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Stream:
    def __init__(self, sock, domain):
        self.sock = sock
        self.domain = domain
        self.pending = []
        self.open()

    def open(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.sock.sendall(
            (
                "<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
                "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                % self.domain
            ).encode()
        )

    def feed(self, data):
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.pending.append(el)
                elif self.depth == 0:
                    raise SystemExit("stream closed by the server")

    def next(self, timeout=10.0):
        while not self.pending:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                raise SystemExit("timeout waiting for the server")
            data = self.sock.recv(65536)
            if not data:
                raise SystemExit("connection closed")
            self.feed(data)
        return self.pending.pop(0)

    def send(self, text):
        self.sock.sendall(text.encode())


def esc(s):
    return (
        s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;").replace('"', "&quot;")
    )


def main():
    host, port, user, domain, password = sys.argv[1:6]
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(None)
    s = Stream(sock, domain)
    feats = s.next()
    if feats.tag != STREAM + "features":
        raise SystemExit("no stream features: %s" % feats.tag)
    token = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
    s.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % token)
    r = s.next()
    if r.tag != SASL + "success":
        raise SystemExit("authentication failed: %s" % r.tag)
    s.open()
    s.next()  # features after the restart
    s.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>test</resource></bind></iq>")
    while True:
        r = s.next()
        if r.tag == CLIENT + "iq" and r.get("id") == "b1":
            break
    if r.get("type") != "result":
        raise SystemExit("bind failed")
    s.send("<presence/>")
    out({"kind": "ready"})
    n = 0
    while True:
        r, _, _ = select.select([sock, sys.stdin], [], [], 60)
        if sock in r:
            data = sock.recv(65536)
            if not data:
                raise SystemExit("connection closed")
            s.feed(data)
            while s.pending:
                el = s.pending.pop(0)
                kind = el.tag.replace(CLIENT, "")
                if kind != "message":
                    continue
                body = el.find(CLIENT + "body")
                err = el.find(CLIENT + "error")
                cond = None
                if err is not None:
                    cond = [c.tag.replace(STANZAS, "") for c in err if c.tag != STANZAS + "text"]
                    cond = cond[0] if cond else ""
                if body is None and err is None:
                    continue
                out(
                    {
                        "kind": kind,
                        "from": el.get("from"),
                        "to": el.get("to"),
                        "type": el.get("type"),
                        "id": el.get("id"),
                        "body": body.text if body is not None else None,
                        "error": cond,
                    }
                )
        if sys.stdin in r:
            line = sys.stdin.readline()
            if not line or line.strip() == "quit":
                s.send("</stream:stream>")
                return
            parts = line.rstrip("\n").split(" ", 2)
            if parts[0] == "send" and len(parts) == 3:
                n += 1
                s.send(
                    "<message type='chat' to='%s' id='c%d'><body>%s</body></message>" % (esc(parts[1]), n, esc(parts[2]))
                )
                out({"kind": "sent", "id": "c%d" % n})


if __name__ == "__main__":
    main()
