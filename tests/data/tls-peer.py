#!/usr/bin/env python3
"""TLS peers for tests/tls.rs, on Python's ssl module (Debian's sipsak fails over TLS).

Every mode writes what it found as `key=value` lines on stdout (flushed at once), and ends with
one of the lines `ready`, `done` or `failed`; the test reads them from a file.

  bridge  TLS client of ser: connects to --port, does the handshake and a keep-alive probe
          (CRLFCRLF out, CRLF pong back: a refusal that TLS 1.3 reports only after the client's
          handshake ends shows here), says what it negotiated, then relays between ser and one
          plain TCP connection the test opens to `bridge=PORT`: the test speaks SIP over plain
          TCP and this script carries it over TLS. When either side closes, so does the other.
  resume  two connections to --port, the second offering the first one's session; says
          whether it was resumed (`reused=True`).
  server  TLS server on 127.0.0.1 (port `port=N`) with --cert/--key: answers each request it
          reads with 200 OK (ACK with nothing) and says `request=<request line>` for each,
          `handshake_failed=<why>` for a failed handshake; stops after --time seconds.

Everything binds and connects to 127.0.0.1 only, and every wait is bounded (--time).
"""

import argparse
import hashlib
import select
import socket
import ssl
import sys
import threading
import time

LOCK = threading.Lock()


def say(key, value=None):
    with LOCK:
        if value is None:
            print(key)
        else:
            print(f"{key}={str(value).replace(chr(10), ' ')}")
        sys.stdout.flush()


def client_context(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if a.ca:
        ctx.load_verify_locations(a.ca)
        ctx.check_hostname = True
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if a.version == "1.2":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif a.version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    if a.no_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def connect(a, ctx, session=None):
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=a.time)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)


def probe(s):
    """A keep-alive ping over the session; the pong proves the server took it."""
    s.sendall(b"\r\n\r\n")
    got = b""
    while len(got) < 2:
        chunk = s.recv(2 - len(got))
        if not chunk:
            raise ConnectionError("closed by the server before the pong")
        got += chunk
    if got != b"\r\n":
        raise ConnectionError(f"not a pong: {got!r}")


def describe(s):
    say("version", s.version())
    say("cipher", s.cipher()[0])
    say("reused", s.session_reused)
    say("local_port", s.getsockname()[1])
    der = s.getpeercert(binary_form=True)
    say("cert_sha256", hashlib.sha256(der).hexdigest() if der else "none")
    cert = s.getpeercert()
    if cert:
        subject = dict(x[0] for x in cert.get("subject", ()))
        say("subject_cn", subject.get("commonName", ""))


def close_cleanly(s):
    # close_notify first: OpenSSL forgets a session whose connection ended without it.
    try:
        s.settimeout(0.5)
        s.unwrap()
    except (OSError, ValueError):
        pass
    s.close()


def bridge(a):
    ctx = client_context(a)
    try:
        s = connect(a, ctx)
        probe(s)
    except (OSError, ssl.SSLError) as e:
        say("error", f"{type(e).__name__}: {e}")
        say("failed")
        return 1
    describe(s)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(a.time)
    say("bridge", ls.getsockname()[1])
    say("ready")
    try:
        plain, _ = ls.accept()
    except OSError:
        say("end", "no client")
        return 0
    ls.close()
    plain.settimeout(5)
    s.settimeout(0.3)
    deadline = time.monotonic() + a.time
    why = "time"
    while time.monotonic() < deadline:
        readable = [s] if s.pending() else select.select([plain, s], [], [], 0.2)[0]
        if s in readable:
            try:
                data = s.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                data = None
            except (OSError, ssl.SSLError) as e:
                why = f"tls error: {e}"
                break
            if data == b"":
                why = "server closed"
                break
            if data:
                try:
                    plain.sendall(data)
                except OSError:
                    why = "test closed"
                    break
        if plain in readable:
            try:
                data = plain.recv(65536)
            except OSError:
                data = b""
            if not data:
                why = "test closed"
                break
            try:
                s.sendall(data)
            except (OSError, ssl.SSLError) as e:
                why = f"tls error: {e}"
                break
    say("end", why)
    plain.close()
    s.close()
    return 0


def resume(a):
    ctx = client_context(a)
    try:
        s = connect(a, ctx)
        probe(s)
        first = s.session_reused
        session = s.session
        close_cleanly(s)
        s = connect(a, ctx, session=session)
        probe(s)
    except (OSError, ssl.SSLError) as e:
        say("error", f"{type(e).__name__}: {e}")
        say("failed")
        return 1
    say("first_reused", first)
    describe(s)
    close_cleanly(s)
    say("done")
    return 0


def response_to(msg):
    head = msg.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    out = ["SIP/2.0 200 OK"]
    for line in lines[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            out.append(line)
        elif name in ("to", "t"):
            out.append(line if "tag=" in line else line + ";tag=py-tls")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return int(value.strip() or b"0")
    return 0


def serve_one(ctx, c, deadline):
    try:
        c.settimeout(5)
        s = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError) as e:
        say("handshake_failed", f"{type(e).__name__}: {e}")
        c.close()
        return
    say("handshake", s.version())
    buf = b""
    s.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except (OSError, ssl.SSLError):
            break
        if not data:
            break
        buf += data
        while True:
            buf = buf.lstrip(b"\r\n")
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            total = end + 4 + content_length(buf[:end])
            if len(buf) < total:
                break
            msg, buf = buf[:total], buf[total:]
            first = msg.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            if first.startswith("SIP/2.0 "):
                continue
            say("request", first)
            if not first.startswith("ACK "):
                s.sendall(response_to(msg))
    s.close()


def server(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(0.5)
    say("port", ls.getsockname()[1])
    say("ready")
    deadline = time.monotonic() + a.time
    while time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve_one, args=(ctx, c, deadline), daemon=True).start()
    say("done")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["bridge", "resume", "server"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--version", choices=["any", "1.2", "1.3"], default="any")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--no-tickets", action="store_true")
    p.add_argument("--time", type=float, default=20.0)
    a = p.parse_args()
    return {"bridge": bridge, "resume": resume, "server": server}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
