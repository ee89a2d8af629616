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

Prints one JSON object. Binds nothing; connects to --target only (use 127.0.0.1).
"""
import argparse
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


def split(n, k):
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["requests", "handshakes", "idle"])
    p.add_argument("--target", required=True)
    p.add_argument("--pid", type=int, required=True, help="server process (its descendants are counted too)")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--tls12", action="store_true", help="offer TLS 1.2 at most")
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--rate", type=float, default=None, help="requests: total per second (default 1000); handshakes: paced at this total (default: unpaced)")
    p.add_argument("--dur", type=float, default=10)
    p.add_argument("--request", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hold", type=float, default=3)
    p.add_argument("--label", default="")
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    a.target = (host, int(port))

    pids = tree(a.pid)
    ready, out, go = mp.Queue(), mp.Queue(), mp.Event()
    workers = []
    res = {"mode": a.mode, "label": a.label, "transport": "tls" if a.tls else "tcp", "server_procs": len(pids)}
    if a.mode == "idle":
        time.sleep(1)
        res["mem_before"] = mem(pids)
    t_setup = time.monotonic()
    for i, c in enumerate(split(a.conns, a.procs)):
        if a.mode == "requests":
            args = (a, i, c, (a.rate or 1000) / a.procs, ready, go, out)
            target = w_requests
        elif a.mode == "handshakes":
            args = (a, i, ready, go, out)
            target = w_handshakes
        else:
            args = (a, i, c, ready, go, out)
            target = w_idle
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
