#!/usr/bin/env python3
"""Load over SIP streams (TCP, TLS) that Debian's SIPp cannot make (it has no TLS), measured as
the SERVER's cost: its CPU (utime+stime from /proc, summed over the given process and its
descendants) per request or per handshake, and its memory (PSS from /proc/PID/smaps_rollup,
summed, so that Kamailio's shared memory is counted once) per idle connection. The client is
Python and costs far more CPU than the server: its throughput is not the figure, the server's
cost per operation is.

  stream-load.py requests   --target 127.0.0.1:15067 --tls --pid PID --conns 100 --rate 2000 --dur 10
      C connections (spread over --procs worker processes) opened first, then OPTIONS at a
      fixed total rate, each connection in turn (at most one request per connection per 5 ms
      round unless the rate asks for more), every reply read. CPU counted from the moment all
      connections are up to the last reply.
  stream-load.py handshakes --target ... --tls --pid PID --procs 2 --dur 10 [--request] [--resume] [--rate R]
      each worker: connect, TLS handshake, [one OPTIONS and its reply,] close, again, as fast
      as it goes, or paced to R a second in all. --resume offers the session (TLS 1.3 ticket) of the worker's previous
      connection; the ticket only arrives with data, so --resume implies --request.
  stream-load.py idle       --target ... [--tls] --pid PID --conns 10000 --procs 4 [--request] --hold 5
      server memory before, with N idle connections open (handshake done where TLS; with
      --request each has carried one OPTIONS and its reply first), and after they closed.
  stream-load.py calls      --target 127.0.0.1:15067 --tls --pid PID --rate 200 --dur 10 [--per-call-connection] --procs 1
      full calls through a record-routing proxy, as the anchors' uac-call.xml over SIPp:
      INVITE with SDP -> (100) (180) 200 -> ACK -> 1 ms -> BYE -> 200, ACK and BYE sent to the
      200's Contact with the route set of its Record-Route (reversed, as SIPp's [routes]).
      rate*dur calls started at a fixed pace (split over --procs processes, each an asyncio
      loop doing TLS through a memory BIO). Default: one connection per process for all of its
      calls (SIPp -t t1), opened before the measured window; --per-call-connection: a new
      connection per call (SIPp -t tn), closed (close_notify) after the BYE's 200, offering the
      session (TLS 1.3 ticket) of the process's last finished connection, and counting the
      handshakes that resumed it (`resumed`). CPU per completed call; `lag_ms_p50`/`lag_ms_max`
      (how late calls were started) and `rate_per_s` (completed calls a second) say whether
      the client kept its pace, `failed` (reasons in `why`) the calls that did not complete,
      `unexpected` the replies that came while another was awaited (retransmitted 200s).

  stream-load.py requests   --ws --ws-method REGISTER|MESSAGE --target 127.0.0.1:15068 --pid PID --conns 100 --rate 1000 --dur 10
      SIP over WebSocket (RFC 7118, plain ws): each connection an HTTP/1.1 Upgrade offering
      `Sec-WebSocket-Protocol: sip`, then one SIP message per masked text frame, the server's
      unmasked frames read back (pings answered). Each connection is a browser-like user
      w<proc>u<i> with a random `.invalid` host (Via, Contact `<sip:user@X.invalid;transport=ws>`).
      REGISTER: each connection refreshes its own binding (Expires 600, one Call-ID, CSeq + 1),
      the first REGISTER of each connection in the window creating it. MESSAGE: every
      connection registers once before the window; then each MESSAGE goes from one
      connection's user to the next connection's user (same process), the proxy's lookup
      finding its WebSocket, the client answering it 200 there, the 200 relayed back: one
      stateful transaction a MESSAGE. Open loop at the fixed rate (sends do not wait for
      replies), replies matched by CSeq; `lost` = unanswered --recv-timeout after the last send,
      `sent_rate_per_s`/`lag_ms_max` say whether the client kept its pace, `lat_ms_*` the time
      from send to final reply.
  stream-load.py idle --ws  --target 127.0.0.1:15068 --pid PID --conns 10000 --procs 4 [--request] --hold 5
      N upgraded WebSocket connections held (with --request each has registered its user first,
      as a browser does), server memory as for TCP/TLS.

Prints one JSON object. Binds nothing; connects to --target only (use 127.0.0.1).
"""
import argparse
import asyncio
import base64
import hashlib
import selectors
import json
import multiprocessing as mp
import os
import random
import socket
import ssl
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def tree(root):
    """root and all its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, q = [], [root]
    while q:
        p = q.pop()
        out.append(p)
        q.extend(kids.get(p, []))
    return out


def cpu(pids):
    """(user s, system s) summed over pids."""
    u = s = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                f_ = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        u += int(f_[11])
        s += int(f_[12])
    return u / HZ, s / HZ


def mem(pids):
    """{'pss_kb', 'rss_kb'} summed over pids."""
    pss = rss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
    return {"pss_kb": pss, "rss_kb": rss}


def client_ctx(tls12=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(target, ctx, session=None):
    s = socket.create_connection(target, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        s = ctx.wrap_socket(s, session=session)
    return s


def options(tr, local, n, tag):
    host, port = local
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{tr} {host}:{port};branch=z9hG4bK{tag}x{n};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:load@127.0.0.1>;tag={tag}\r\n"
        f"To: <sip:127.0.0.1>\r\n"
        f"Call-ID: {tag}-{n}@127.0.0.1\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Reader:
    """Counts whole SIP messages (head + Content-Length body) arriving on a socket."""

    def __init__(self, s):
        self.s, self.buf, self.ok, self.bad = s, bytearray(), 0, 0

    def read_until(self, want):
        """Reads until `want` messages came (in all); False on timeout or close."""
        while self.ok + self.bad < want:
            if not self._take():
                try:
                    d = self.s.recv(65536)
                except (socket.timeout, OSError):
                    return False
                if not d:
                    return False
                self.buf += d
        return True

    def _take(self):
        i = self.buf.find(b"\r\n\r\n")
        if i < 0:
            return False
        head = bytes(self.buf[:i]).lower()
        cl = 0
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:") or line.startswith(b"l:"):
                cl = int(line.split(b":", 1)[1])
        if len(self.buf) < i + 4 + cl:
            return False
        if head.startswith(b"sip/2.0 200"):
            self.ok += 1
        else:
            self.bad += 1
        del self.buf[: i + 4 + cl]
        return True


def w_requests(a, idx, nconns, rate, ready, go, out):
    ctx = client_ctx(a.tls12) if a.tls else None
    tr = "TLS" if a.tls else "TCP"
    tag = f"w{idx}r{random.randrange(1 << 30)}"
    conns, readers, sent = [], [], []
    try:
        for _ in range(nconns):
            s = connect(a.target, ctx)
            s.settimeout(5)
            conns.append(s)
            readers.append(Reader(s))
            sent.append(0)
    except OSError as e:
        ready.put(("error", str(e)))
        return
    ready.put(("ready", nconns))
    go.wait()
    t0 = time.monotonic()
    n = rr = errors = 0
    while True:
        now = time.monotonic()
        if now - t0 >= a.dur:
            break
        due = int(rate * (now - t0)) - n
        touched = set()
        for _ in range(due):
            i = rr % nconns
            rr += 1
            s = conns[i]
            try:
                s.sendall(options(tr, s.getsockname(), n, tag))
            except OSError:
                errors += 1
            n += 1
            sent[i] += 1
            touched.add(i)
        for i in touched:
            if not readers[i].read_until(sent[i]):
                errors += 1
        time.sleep(0.005)
    el = time.monotonic() - t0
    ok = sum(r.ok for r in readers)
    bad = sum(r.bad for r in readers)
    for s in conns:
        s.close()
    out.put({"sent": n, "ok": ok, "bad": bad, "errors": errors, "elapsed": el})


def w_handshakes(a, idx, ready, go, out):
    ctx = client_ctx(a.tls12) if a.tls else None
    tr = "TLS" if a.tls else "TCP"
    tag = f"h{idx}r{random.randrange(1 << 30)}"
    request = a.request or a.resume
    ready.put(("ready", 0))
    go.wait()
    t0 = time.monotonic()
    n = ok = errors = resumed = 0
    sess = None
    rate = (a.rate or 0) / a.procs  # 0: as fast as it goes
    while time.monotonic() - t0 < a.dur:
        if rate:
            wait = t0 + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            s = connect(a.target, ctx, sess if a.resume else None)
            if a.tls and s.session_reused:
                resumed += 1
            if request:
                s.settimeout(5)
                s.sendall(options(tr, s.getsockname(), n, tag))
                r = Reader(s)
                if r.read_until(1) and r.ok == 1:
                    ok += 1
                else:
                    errors += 1
                if a.resume:
                    sess = s.session
            else:
                ok += 1
            s.close()
        except (OSError, ssl.SSLError):
            errors += 1
        n += 1
    out.put({"ops": n, "ok": ok, "errors": errors, "resumed": resumed, "elapsed": time.monotonic() - t0})


def w_idle(a, idx, nconns, ready, go, out):
    ctx = client_ctx(a.tls12) if a.tls else None
    tr = "TLS" if a.tls else "TCP"
    tag = f"i{idx}r{random.randrange(1 << 30)}"
    conns, errors, cipher = [], 0, None
    for k in range(nconns):
        try:
            s = connect(a.target, ctx)
            if a.request:
                s.settimeout(5)
                s.sendall(options(tr, s.getsockname(), k, tag))
                if not Reader(s).read_until(1):
                    errors += 1
            if a.tls and cipher is None:
                cipher = list(s.cipher()[:2])
            conns.append(s)
        except (OSError, ssl.SSLError):
            errors += 1
    ready.put(("ready", (len(conns), errors, cipher)))
    go.wait()  # hold until told to close
    for s in conns:
        s.close()
    out.put({"closed": len(conns)})



# ---- WebSocket (RFC 6455 / RFC 7118) ------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_upgrade(s, target):
    """The HTTP/1.1 Upgrade with `Sec-WebSocket-Protocol: sip` on a connected socket; returns
    the bytes that came after the 101's head (frames already sent). Raises OSError if refused."""
    key = base64.b64encode(os.urandom(16))
    host, port = target
    s.sendall(
        b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n"
        b"Origin: http://%s\r\n\r\n" % (host.encode(), port, key, host.encode())
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise OSError("closed during the WebSocket Upgrade")
        buf += d
        if len(buf) > 16384:
            raise OSError("WebSocket Upgrade: head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 101"):
        raise OSError(f"WebSocket Upgrade refused: {lines[0].decode(errors='replace')}")
    h = {}
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        h[n.strip().lower()] = v.strip()
    want = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    if h.get(b"sec-websocket-accept") != want:
        raise OSError("WebSocket Upgrade: bad Sec-WebSocket-Accept")
    if h.get(b"sec-websocket-protocol", b"").lower() != b"sip":
        raise OSError("WebSocket Upgrade: no sip subprotocol in the 101")
    return rest


def ws_frame(payload, opcode=0x1):
    """One client frame: FIN, the opcode (text by default), masked with a random key."""
    n = len(payload)
    if n < 126:
        hdr = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        hdr = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        hdr = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = random.randbytes(4)
    k = (key * (n // 4 + 1))[:n]
    return hdr + key + (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class WsReader:
    """Whole WebSocket messages from the server's (unmasked) frames: `feed` bytes, `messages()`
    yields (opcode, payload) of each complete message (fragments joined). Masked server frames
    are counted (`masked`), not refused."""

    def __init__(self, initial=b""):
        self.buf = bytearray(initial)
        self.frag = None
        self.frag_op = 0
        self.masked = 0

    def feed(self, d):
        self.buf += d

    def messages(self):
        out = []
        buf = self.buf
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            h = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                h = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                h = 10
            key = None
            if b1 & 0x80:
                self.masked += 1
                if len(buf) - pos < h + 4:
                    break
                key = bytes(buf[pos + h : pos + h + 4])
                h += 4
            if len(buf) - pos < h + n:
                break
            payload = bytes(buf[pos + h : pos + h + n])
            pos += h + n
            if key is not None:
                k = (key * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")
            op, fin = b0 & 0x0F, b0 & 0x80
            if op == 0:  # continuation
                if self.frag is None:
                    continue
                self.frag += payload
                if fin:
                    out.append((self.frag_op, bytes(self.frag)))
                    self.frag = None
            elif op in (1, 2) and not fin:
                self.frag, self.frag_op = bytearray(payload), op
            else:
                out.append((op, payload))
        del buf[:pos]
        return out


def ws_connect(target):
    """A TCP connection upgraded to WebSocket (subprotocol sip): (socket, WsReader)."""
    s = connect(target, None)
    s.settimeout(10)
    rest = ws_upgrade(s, target)
    return s, WsReader(rest)


class WsUser:
    """One browser-like user on one WebSocket connection: its AOR, its random `.invalid` host
    (Via, Contact), its REGISTER Call-ID and CSeq."""

    def __init__(self, s, reader, user, target):
        self.s, self.r, self.user = s, reader, user
        self.host = "%08x.invalid" % random.randrange(1 << 32)
        self.thost, self.tport = target
        self.cid = f"reg-{user}-{random.randrange(1 << 30)}"
        self.cseq = 0
        self.pending = {}  # (method, cseq) -> send time
        self.closed = False

    def register(self, expires=600):
        self.cseq += 1
        n = self.cseq
        msg = (
            f"REGISTER sip:{self.thost}:{self.tport} SIP/2.0\r\n"
            f"Via: SIP/2.0/WS {self.host};branch=z9hG4bK{self.user}r{n}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{self.thost}>;tag={self.user}\r\n"
            f"To: <sip:{self.user}@{self.thost}>\r\n"
            f"Call-ID: {self.cid}\r\n"
            f"CSeq: {n} REGISTER\r\n"
            f"Contact: <sip:{self.user}@{self.host};transport=ws>\r\n"
            f"Expires: {expires}\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        self.pending[(b"REGISTER", n)] = time.monotonic()
        self.s.sendall(ws_frame(msg))

    def message(self, to_user, n, body=b"Hello over WebSocket, a short instant message."):
        """A MESSAGE to another registered user, found by the proxy's lookup."""
        msg = (
            f"MESSAGE sip:{to_user}@{self.thost}:{self.tport} SIP/2.0\r\n"
            f"Via: SIP/2.0/WS {self.host};branch=z9hG4bK{self.user}m{n}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{self.thost}>;tag={self.user}m\r\n"
            f"To: <sip:{to_user}@{self.thost}>\r\n"
            f"Call-ID: msg-{self.user}-{n}\r\n"
            f"CSeq: {n} MESSAGE\r\n"
            f"Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.pending[(b"MESSAGE", n)] = time.monotonic()
        self.s.sendall(ws_frame(msg))


def sip_head_fields(msg):
    """(first line, {lower name: [values]}, head lines) of a SIP message's head (compact forms
    of the headers used here expanded)."""
    i = msg.find(b"\r\n\r\n")
    head = msg[: i if i >= 0 else len(msg)]
    lines = head.split(b"\r\n")
    h = {}
    compact = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id", b"l": b"content-length"}
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        n = n.strip().lower()
        h.setdefault(compact.get(n, n), []).append(v.strip())
    return lines[0], h, lines


def answer_200(msg):
    """A 200 OK to a request received (a relayed MESSAGE): its Vias, From, To (with a tag),
    Call-ID and CSeq copied."""
    first, h, lines = sip_head_fields(msg)
    out = [b"SIP/2.0 200 OK"]
    compact = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}
    for line in lines[1:]:
        n = line.partition(b":")[0].strip().lower()
        n = compact.get(n, n)
        if n in (b"via", b"from", b"call-id", b"cseq"):
            out.append(line)
        elif n == b"to":
            out.append(line if b";tag=" in line else line + b";tag=ws-uas")
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


class WsLoad:
    """Drives a set of WsUsers with a selector: replies matched to what was sent (by CSeq
    method and number), MESSAGEs that arrive answered 200, pings answered, latencies kept."""

    def __init__(self, users):
        self.users = users
        self.sel = selectors.DefaultSelector()
        for u in users:
            u.s.setblocking(False)
            self.sel.register(u.s, selectors.EVENT_READ, u)
        self.ok = self.bad = self.incoming = self.unmatched = self.closed = self.pings = 0
        self.statuses = {}
        self.lat = []

    def pending(self):
        return sum(len(u.pending) for u in self.users)

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout):
            u = key.data
            try:
                d = u.s.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                if not u.closed:
                    u.closed = True
                    self.closed += 1
                    self.sel.unregister(u.s)
                continue
            u.r.feed(d)
            for op, payload in u.r.messages():
                if op == 0x9:
                    self.pings += 1
                    self._send(u, ws_frame(payload, 0xA))
                    continue
                if op == 0x8:
                    if not u.closed:
                        u.closed = True
                        self.closed += 1
                        self.sel.unregister(u.s)
                    break
                if op not in (1, 2):
                    continue
                if payload.startswith(b"SIP/2.0 "):
                    code = int(payload[8:11])
                    j = payload.find(b"\r\nCSeq:")
                    if j < 0:
                        j = payload.lower().find(b"\r\ncseq:")
                    cs = payload[j + 7 : payload.find(b"\r\n", j + 2)].split() if j >= 0 else [b"0", b""]
                    if code < 200:
                        continue
                    t = u.pending.pop((cs[1].upper(), int(cs[0])), None)
                    if t is None:
                        self.unmatched += 1
                        continue
                    self.lat.append(time.monotonic() - t)
                    if code == 200:
                        self.ok += 1
                    else:
                        self.bad += 1
                        self.statuses[code] = self.statuses.get(code, 0) + 1
                else:
                    self.incoming += 1
                    self._send(u, ws_frame(answer_200(payload)))

    def _send(self, u, frame):
        # Small frames on a socket with an empty send buffer: sent whole, or the connection is in
        # trouble (counted as closed).
        try:
            u.s.setblocking(True)
            u.s.sendall(frame)
            u.s.setblocking(False)
        except OSError:
            if not u.closed:
                u.closed = True
                self.closed += 1


def ws_open_users(a, idx, nconns, register=True):
    """nconns upgraded connections, each with its user (w<idx>u<i>), registered once (and the
    200 read) when `register`. Returns (users, errors)."""
    users, errors = [], 0
    for i in range(nconns):
        try:
            s, r = ws_connect(a.target)
            u = WsUser(s, r, f"w{idx}u{i}", a.target)
            if register:
                u.register()
                ok = False
                while not ok:
                    d = s.recv(65536)
                    if not d:
                        raise OSError("closed before the REGISTER's reply")
                    r.feed(d)
                    for op, payload in r.messages():
                        if op in (1, 2) and payload.startswith(b"SIP/2.0 ") and b"REGISTER" in payload:
                            if int(payload[8:11]) >= 200:
                                if int(payload[8:11]) != 200:
                                    raise OSError(f"REGISTER answered {payload[8:11].decode()}")
                                ok = True
                u.pending.clear()
            users.append(u)
        except (OSError, ValueError):
            errors += 1
    return users, errors


def w_ws_requests(a, idx, nconns, rate, ready, go, out):
    """WebSocket requests at a fixed rate, open loop: REGISTER refreshes of each connection's own
    binding, or MESSAGEs from each connection's user to the next connection's user (registered
    before the window, reached through the proxy's lookup and answered 200 by the client)."""
    users, errors = ws_open_users(a, idx, nconns, register=(a.ws_method == "MESSAGE"))
    if errors or not users:
        ready.put(("error", f"{errors} WebSocket connections failed to open{' or register' if a.ws_method == 'MESSAGE' else ''}"))
        return
    load = WsLoad(users)
    ready.put(("ready", nconns))
    go.wait()
    t0 = time.monotonic()
    n = 0
    nu = len(users)
    total = round(rate * a.dur)
    lags = []
    while n < total:
        now = time.monotonic()
        due = min(total, int(rate * (now - t0)) + 1) - n
        if due > 0:
            lags.append(now - (t0 + n / rate))
        for _ in range(max(due, 0)):
            u = users[n % nu]
            if not u.closed:
                try:
                    if a.ws_method == "REGISTER":
                        u.register()
                    else:
                        u.message(users[(n + 1) % nu].user, n + 2)
                except OSError:
                    errors += 1
            n += 1
        nxt = t0 + n / rate - time.monotonic()
        load.poll(max(0.0, min(nxt, 0.005)))
    t_sent = time.monotonic() - t0
    deadline = time.monotonic() + a.recv_timeout
    while load.pending() and time.monotonic() < deadline:
        load.poll(0.05)
    el = time.monotonic() - t0
    lost = load.pending()
    lat = sorted(load.lat)
    lags.sort()
    for u in users:
        u.s.close()
    out.put(
        {
            "sent": n, "ok": load.ok, "bad": load.bad, "lost": lost, "errors": errors + load.closed,
            "incoming": load.incoming, "unmatched": load.unmatched, "pings": load.pings,
            "masked_server_frames": sum(u.r.masked for u in users),
            "statuses": load.statuses,
            "send_window_s": t_sent, "elapsed": el,
            "lat_ms_p50": 1000 * lat[len(lat) // 2] if lat else 0,
            "lat_ms_p99": 1000 * lat[int(len(lat) * 0.99)] if lat else 0,
            "lat_ms_max": 1000 * lat[-1] if lat else 0,
            "lag_ms_max": 1000 * lags[-1] if lags else 0,
        }
    )


def w_ws_idle(a, idx, nconns, ready, go, out):
    users, errors = ws_open_users(a, idx, nconns, register=a.request)
    ready.put(("ready", (len(users), errors, None)))
    go.wait()
    for u in users:
        u.s.close()
    out.put({"closed": len(users)})


# ---- calls mode -------------------------------------------------------------------------------

SDP = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
).encode()


class Msg:
    __slots__ = ("status", "method", "callid", "rr", "contact", "to")

    def __init__(self, head):
        lines = head.split(b"\r\n")
        first = lines[0]
        self.status = int(first[8:11]) if first.startswith(b"SIP/2.0 ") else 0
        self.method = self.callid = self.contact = self.to = None
        self.rr = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name in (b"call-id", b"i"):
                self.callid = value
            elif name == b"cseq":
                self.method = value.split()[-1].upper()
            elif name == b"record-route":
                self.rr.extend(v.strip() for v in split_commas(value))
            elif name in (b"contact", b"m"):
                self.contact = value
            elif name in (b"to", b"t"):
                self.to = value


def split_commas(v):
    """Splits a header value at the commas outside <...> and quotes."""
    out, depth, q, start = [], 0, False, 0
    for i, c in enumerate(v):
        if c == 0x22:
            q = not q
        elif not q and c == 0x3C:
            depth += 1
        elif not q and c == 0x3E:
            depth -= 1
        elif not q and depth == 0 and c == 0x2C:
            out.append(v[start:i])
            start = i + 1
    out.append(v[start:])
    return [x for x in out if x.strip()]


def uri_of(v):
    v = v.decode()
    if "<" in v:
        return v[v.index("<") + 1 : v.index(">")]
    return v.split(";")[0].strip()


class SipConn(asyncio.Protocol):
    """A SIP connection (TLS through a memory BIO, or plain TCP) on an asyncio transport: whole
    messages are handed to the queue of their Call-ID."""

    def __init__(self, ctx, session, stats):
        self.ctx, self.session, self.stats = ctx, session, stats
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()
        self.closed = self.loop.create_future()
        self.calls = {}  # Call-ID -> asyncio.Queue
        self.buf = bytearray()
        self.tr = self.obj = None
        self.handshaking = ctx is not None

    def connection_made(self, tr):
        self.tr = tr
        tr.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local = tr.get_extra_info("sockname")
        if self.ctx is None:
            self.ready.set_result(False)
            return
        self.inc, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = self.ctx.wrap_bio(self.inc, self.outb, session=self.session)
        self._handshake()

    def _handshake(self):
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as e:
            self._flush()
            if not self.ready.done():
                self.ready.set_exception(e)
            self.tr.close()
            return
        self._flush()
        self.handshaking = False
        if not self.ready.done():
            self.ready.set_result(self.obj.session_reused)
        self._read_plain()

    def _flush(self):
        d = self.outb.read()
        if d:
            self.tr.write(d)

    def data_received(self, d):
        if self.obj is None:
            self.buf += d
            self._messages()
            return
        self.inc.write(d)
        if self.handshaking:
            self._handshake()
        else:
            self._read_plain()

    def _read_plain(self):
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                break
            if not chunk:
                break
            self.buf += chunk
        self._flush()
        self._messages()

    def _messages(self):
        buf = self.buf
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i])
            cl = 0
            j = head.lower().find(b"\r\ncontent-length:")
            if j >= 0:
                cl = int(head[j + 17 :].split(b"\r\n", 1)[0])
            else:
                j = head.find(b"\r\nl:")
                if j >= 0:
                    cl = int(head[j + 4 :].split(b"\r\n", 1)[0])
            if len(buf) < i + 4 + cl:
                return
            del buf[: i + 4 + cl]
            m = Msg(head)
            q = self.calls.get(m.callid)
            if q is None:
                self.stats["stray"] += 1
            else:
                q.put_nowait(m)

    def send(self, data):
        if self.tr.is_closing():
            raise ConnectionError("connection closed")
        if self.obj is None:
            self.tr.write(data)
        else:
            self.obj.write(data)
            self._flush()

    def close(self):
        if self.obj is not None and not self.tr.is_closing():
            try:
                self.obj.unwrap()  # close_notify out; the peer's is not waited for
            except ssl.SSLError:
                pass
            self._flush()
        self.tr.close()

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))
        for q in self.calls.values():
            q.put_nowait(None)
        if not self.closed.done():
            self.closed.set_result(True)


async def open_conn(a, ctx, session, stats):
    loop = asyncio.get_running_loop()
    _, c = await loop.create_connection(lambda: SipConn(ctx, session, stats), *a.target)
    reused = await asyncio.wait_for(c.ready, 10)
    return c, reused


class CallFailed(Exception):
    pass


async def one_call(a, conn, tr, tag, n, stats):
    host, port = conn.local
    thost, tport = a.target
    cid = f"{tag}-{n}@{host}"
    bcid = cid.encode()
    q = asyncio.Queue()
    conn.calls[bcid] = q
    frm = f"sipp <sip:sipp@{host}:{port}>;tag={tag}{n}"
    ruri = f"sip:test@{thost}:{tport}"
    contact = f"<sip:sipp@{host}:{port};transport={tr.lower()}>"

    async def wait_for(method, final_only=True):
        while True:
            try:
                m = await asyncio.wait_for(q.get(), a.recv_timeout)
            except asyncio.TimeoutError:
                raise CallFailed(f"timeout waiting for {method} reply")
            if m is None:
                raise CallFailed("connection closed")
            if m.method != method.encode():
                stats["unexpected"] += 1
                continue
            if m.status < 200:
                stats["provisional"] += 1
                continue
            return m

    try:
        conn.send(
            (
                f"INVITE {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/{tr} {host}:{port};branch=z9hG4bK{tag}i{n}\r\n"
                f"From: {frm}\r\n"
                f"To: <{ruri}>\r\n"
                f"Call-ID: {cid}\r\n"
                f"CSeq: 1 INVITE\r\n"
                f"Contact: {contact}\r\n"
                f"Max-Forwards: 70\r\n"
                f"Content-Type: application/sdp\r\n"
                f"Content-Length: {len(SDP)}\r\n\r\n"
            ).encode()
            + SDP
        )
        ok = await wait_for("INVITE")
        if ok.status != 200:
            raise CallFailed(f"INVITE answered {ok.status}")
        # The UAC's route set: the 200's Record-Route in reverse order (RFC 3261 12.1.2).
        routes = "".join(f"Route: {r.decode()}\r\n" for r in reversed(ok.rr))
        target = uri_of(ok.contact) if ok.contact else ruri
        to = ok.to.decode()
        dialog = (
            f"From: {frm}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {cid}\r\n"
        )
        conn.send(
            (
                f"ACK {target} SIP/2.0\r\n"
                f"Via: SIP/2.0/{tr} {host}:{port};branch=z9hG4bK{tag}a{n}\r\n"
                f"{routes}{dialog}"
                f"CSeq: 1 ACK\r\n"
                f"Max-Forwards: 70\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode()
        )
        await asyncio.sleep(0.001)
        conn.send(
            (
                f"BYE {target} SIP/2.0\r\n"
                f"Via: SIP/2.0/{tr} {host}:{port};branch=z9hG4bK{tag}b{n}\r\n"
                f"{routes}{dialog}"
                f"CSeq: 2 BYE\r\n"
                f"Max-Forwards: 70\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode()
        )
        if a.show and n == 0:
            print(f"first call's 200 Record-Route: {[r.decode() for r in ok.rr]}\nits ACK/BYE go to {target} with\n{routes}", file=sys.stderr)
        m = await wait_for("BYE")
        if m.status != 200:
            raise CallFailed(f"BYE answered {m.status}")
        return True
    except (CallFailed, ConnectionError, OSError) as e:
        stats["failed"] += 1
        k = str(e)
        stats["why"][k] = stats["why"].get(k, 0) + 1
        return False
    finally:
        del conn.calls[bcid]


async def calls_main(a, idx, rate, ncalls, ready, go_evt):
    import collections

    loop = asyncio.get_running_loop()
    ctx = client_ctx(a.tls12) if a.tls else None
    tr = "TLS" if a.tls else "TCP"
    tag = f"c{idx}r{random.randrange(1 << 30)}"
    stats = collections.Counter()
    for k in ("failed", "conn_errors", "conns", "resumed", "provisional", "unexpected", "stray"):
        stats[k] = 0
    stats["why"] = {}
    shared = None
    if not a.per_call_connection:
        try:
            shared, _ = await open_conn(a, ctx, None, stats)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
            ready.put(("error", str(e)))
            return None
    ready.put(("ready", 0))
    await loop.run_in_executor(None, go_evt.wait)
    t0 = time.monotonic()
    last_session = [None]
    lags = []

    async def per_call(n):
        try:
            c, reused = await open_conn(a, ctx, last_session[0], stats)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as e:
            stats["failed"] += 1
            stats["conn_errors"] += 1
            k = f"connect: {e}"
            stats["why"][k] = stats["why"].get(k, 0) + 1
            return False
        stats["conns"] += 1
        if reused:
            stats["resumed"] += 1
        ok = await one_call(a, c, tr, tag, n, stats)
        if c.obj is not None and ok:
            last_session[0] = c.obj.session  # its ticket came with the replies
        c.close()
        return ok

    tasks = []
    for n in range(ncalls):
        due = t0 + n / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
            now = time.monotonic()
        lags.append(now - due)
        if shared is not None:
            tasks.append(asyncio.ensure_future(one_call(a, shared, tr, tag, n, stats)))
        else:
            tasks.append(asyncio.ensure_future(per_call(n)))
    t_started = time.monotonic()
    res = await asyncio.gather(*tasks)
    el = time.monotonic() - t0
    if shared is not None:
        stats["conns"] = 1
        shared.close()
    lags.sort()
    why = stats.pop("why")
    out = dict(stats)
    out.update(
        {
            "calls": ncalls,
            "ok": sum(1 for r in res if r),
            "elapsed": el,
            "start_window_s": t_started - t0,
            "lag_ms_p50": 1000 * lags[len(lags) // 2] if lags else 0,
            "lag_ms_max": 1000 * lags[-1] if lags else 0,
            "why": why,
        }
    )
    return out


def w_calls(a, idx, rate, ncalls, ready, go, out):
    r = asyncio.run(calls_main(a, idx, rate, ncalls, ready, go))
    if r is not None:
        out.put(r)


def split(n, k):
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["requests", "handshakes", "idle", "calls"])
    p.add_argument("--target", required=True)
    p.add_argument("--pid", type=int, required=True, help="server process (its descendants are counted too)")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--tls12", action="store_true", help="offer TLS 1.2 at most")
    p.add_argument("--ws", action="store_true", help="requests, idle: SIP over WebSocket (RFC 7118), plain ws")
    p.add_argument("--ws-method", choices=["REGISTER", "MESSAGE"], default="REGISTER",
                   help="requests --ws: REGISTER refreshes, or MESSAGEs between registered users")
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--rate", type=float, default=None, help="requests: total per second (default 1000); handshakes: paced at this total (default: unpaced)")
    p.add_argument("--dur", type=float, default=10)
    p.add_argument("--request", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hold", type=float, default=3)
    p.add_argument("--per-call-connection", action="store_true", help="calls: a connection per call (SIPp -t tn), resuming the last session")
    p.add_argument("--show", action="store_true", help="calls: print the first call's route set to stderr")
    p.add_argument("--recv-timeout", type=float, default=5, help="calls: seconds to wait for a reply before the call fails")
    p.add_argument("--label", default="")
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    a.target = (host, int(port))

    pids = tree(a.pid)
    ready, out, go = mp.Queue(), mp.Queue(), mp.Event()
    workers = []
    if a.ws and (a.tls or a.mode not in ("requests", "idle")):
        p.error("--ws: requests and idle, over plain ws")
    res = {"mode": a.mode, "label": a.label, "transport": "ws" if a.ws else "tls" if a.tls else "tcp", "server_procs": len(pids)}
    if a.mode == "idle":
        time.sleep(1)
        res["mem_before"] = mem(pids)
    t_setup = time.monotonic()
    ncalls = split(round((a.rate or 200) * a.dur), a.procs)
    for i, c in enumerate(split(a.conns, a.procs)):
        if a.mode == "requests":
            args = (a, i, c, (a.rate or 1000) / a.procs, ready, go, out)
            target = w_ws_requests if a.ws else w_requests
        elif a.mode == "handshakes":
            args = (a, i, ready, go, out)
            target = w_handshakes
        elif a.mode == "calls":
            args = (a, i, (a.rate or 200) / a.procs, ncalls[i], ready, go, out)
            target = w_calls
        else:
            args = (a, i, c, ready, go, out)
            target = w_ws_idle if a.ws else w_idle
        w = mp.Process(target=target, args=args, daemon=True)
        w.start()
        workers.append(w)
    infos = [ready.get(timeout=600) for _ in workers]
    errs = [x for x in infos if x[0] == "error"]
    if errs:
        go.set()
        print(json.dumps({"error": errs}), flush=True)
        sys.exit(1)
    res["setup_s"] = round(time.monotonic() - t_setup, 2)
    if a.mode == "idle":
        res["open"] = sum(x[1][0] for x in infos)
        res["errors"] = sum(x[1][1] for x in infos)
        res["cipher"] = next((x[1][2] for x in infos if x[1][2]), None)
        time.sleep(2)
        c0 = cpu(pids)
        time.sleep(a.hold)
        c1 = cpu(pids)
        res["mem_open"] = mem(pids)
        res["idle_cpu_pct"] = round(100 * (sum(c1) - sum(c0)) / a.hold, 2)
        go.set()
        for _ in workers:
            out.get(timeout=120)
        time.sleep(3)
        res["mem_after_close"] = mem(pids)
        n = max(res["open"], 1)
        res["pss_bytes_per_conn"] = round(1024 * (res["mem_open"]["pss_kb"] - res["mem_before"]["pss_kb"]) / n)
        res["rss_bytes_per_conn"] = round(1024 * (res["mem_open"]["rss_kb"] - res["mem_before"]["rss_kb"]) / n)
    else:
        c0 = cpu(pids)
        t0 = time.monotonic()
        go.set()
        rs = [out.get(timeout=a.dur + 120) for _ in workers]
        el = time.monotonic() - t0
        c1 = cpu(pids)
        u, s = c1[0] - c0[0], c1[1] - c0[1]
        if a.mode == "calls":
            tot = {}
            for r in rs:
                for k, v in r.items():
                    if k in ("elapsed", "start_window_s", "lag_ms_p50", "lag_ms_max"):
                        tot[k] = round(max(tot.get(k, 0), v), 3)
                    elif k == "why":
                        for w, c in v.items():
                            tot.setdefault("why", {})[w] = tot.get("why", {}).get(w, 0) + c
                    else:
                        tot[k] = tot.get(k, 0) + v
            tot.pop("elapsed")
            tot["mode_conn"] = "per-call" if a.per_call_connection else "one-per-proc"
            tot["procs"] = a.procs
            tot["target_rate"] = a.rate or 200
            # calls started per second over the window they were started in (the pace kept)
            tot["start_rate_per_s"] = round((tot["calls"] - a.procs) / max(tot["start_window_s"], 1e-9), 1)
        elif a.ws:
            tot = {}
            for r in rs:
                for k, v in r.items():
                    if k in ("elapsed", "send_window_s", "lat_ms_p50", "lat_ms_p99", "lat_ms_max", "lag_ms_max"):
                        tot[k] = round(max(tot.get(k, 0), v), 3)
                    elif k == "statuses":
                        for c, m in v.items():
                            tot.setdefault("statuses", {})[c] = tot.get("statuses", {}).get(c, 0) + m
                    else:
                        tot[k] = tot.get(k, 0) + v
            tot.pop("elapsed")
            tot["method"] = a.ws_method
            tot["target_rate"] = a.rate or 1000
            tot["sent_rate_per_s"] = round(tot["sent"] / max(tot["send_window_s"], 1e-9), 1)
        else:
            tot = {k: sum(r[k] for r in rs) for k in rs[0] if k != "elapsed"}
        res.update(tot)
        done = tot["ok"]
        res["elapsed_s"] = round(el, 2)
        res["rate_per_s"] = round(done / el, 1)
        res["server_user_s"], res["server_sys_s"] = round(u, 2), round(s, 2)
        res["server_cpu_pct"] = round(100 * (u + s) / el, 1)
        res["server_us_per_op"] = round(1e6 * (u + s) / done, 1) if done else None
        res["server_user_us_per_op"] = round(1e6 * u / done, 1) if done else None
        res["server_sys_us_per_op"] = round(1e6 * s / done, 1) if done else None
    for w in workers:
        w.join(timeout=30)
        if w.is_alive():
            w.kill()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
