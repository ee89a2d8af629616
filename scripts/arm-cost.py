#!/usr/bin/env python3
"""Guest instructions per stateful call of a cross-built `ser` under qemu-user (README "Small ARM
boards"). Debian's qemu-user has no TCG plugins, so this counts the lines of
`qemu-arm -singlestep -d exec,nochain`: one "Trace" line per executed guest instruction (every
guest thread), written into a FIFO and counted here, never stored.

    scripts/arm-cost.py [--calls 300] [--qemu qemu-arm] [--sysroot /usr/arm-linux-gnueabi]
                        [--bin target/armv5te-unknown-linux-gnueabi/small/ser]

A call is INVITE / 100 (tm) / 180 / 200 / ACK / BYE / 200, all through `t_relay()` (tm, stateful),
between a raw UDP UAC and UAS in this process, one call at a time. The count of a quiet period of
the same server before the calls gives its idle rate (timers, the loop's wake-ups), which is
subtracted for the time the calls took. Prints instructions per call and the calls/s that a
400 MHz core reaches at 1 and at 0.5 instructions per cycle.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

SCRIPT = """
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); break; };
    t_relay();
}
"""


class Counter(threading.Thread):
    """Counts newlines read from the FIFO qemu logs into."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.lines = 0

    def run(self):
        with open(self.path, "rb", buffering=0) as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    return
                self.lines += b.count(b"\n")


def msg(method, ruri, via_port, call_id, cseq, tag_to="", branch=None):
    branch = branch or f"z9hG4bK-{call_id}-{cseq}-{method}"
    to = f"<{ruri}>" + (f";tag={tag_to}" if tag_to else "")
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=a-{call_id}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:{via_port}>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def reply(req, code, reason, tag):
    lines = req.decode(errors="replace").split("\r\n")
    out = [f"SIP/2.0 {code} {reason}"]
    for line in lines[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "from", "call-id", "cseq", "record-route"):
            out.append(line)
        elif name == "to":
            out.append(line if "tag=" in line else f"{line};tag={tag}")
    out.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(out).encode()


def recv(sock, what):
    try:
        data, _ = sock.recvfrom(65536)
    except socket.timeout:
        sys.exit(f"timeout waiting for {what}")
    return data


def final(sock, what):
    """The next reply that is not provisional."""
    while True:
        d = recv(sock, what)
        code = int(d[8:11]) if d.startswith(b"SIP/2.0 ") else 0
        if code >= 200:
            return code


def call(i, ser, uac, uas):
    uas_port = uas.getsockname()[1]
    uac_port = uac.getsockname()[1]
    ruri = f"sip:bob@127.0.0.1:{uas_port}"
    cid = f"cost-{i}"
    uac.sendto(msg("INVITE", ruri, uac_port, cid, 1), ser)
    inv = recv(uas, "INVITE at the UAS")
    uas.sendto(reply(inv, 180, "Ringing", "b"), ser)
    uas.sendto(reply(inv, 200, "OK", "b"), ser)
    if final(uac, "200 for INVITE") != 200:
        sys.exit("INVITE not answered 200")
    uac.sendto(msg("ACK", ruri, uac_port, cid, 1, tag_to="b"), ser)
    recv(uas, "ACK at the UAS")
    uac.sendto(msg("BYE", ruri, uac_port, cid, 2, tag_to="b"), ser)
    bye = recv(uas, "BYE at the UAS")
    uas.sendto(reply(bye, 200, "OK", "b"), ser)
    if final(uac, "200 for BYE") != 200:
        sys.exit("BYE not answered 200")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle measurement")
    ap.add_argument("--qemu", default="qemu-arm")
    ap.add_argument("--sysroot", default="/usr/arm-linux-gnueabi")
    ap.add_argument("--bin", default="target/armv5te-unknown-linux-gnueabi/small/ser")
    ap.add_argument("--port", type=int, default=35060)
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="ser-arm-cost-")
    fifo = os.path.join(d, "trace")
    os.mkfifo(fifo)
    cfg = os.path.join(d, "cost.cfg")
    with open(cfg, "w") as f:
        f.write(SCRIPT)
    log = open(os.path.join(d, "ser.log"), "w+")
    counter = Counter(fifo)
    counter.start()
    cmd = [a.qemu, "-L", a.sysroot, "-singlestep", "-d", "exec,nochain", "-D", fifo, a.bin,
           "-f", cfg, "-l", "127.0.0.1", "-p", str(a.port), "-n", "1", "-E", "-D"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 300
        while True:
            log.seek(0)
            if "listening on udp:" in log.read():
                break
            if time.time() > deadline or p.poll() is not None:
                log.seek(0)
                sys.exit("ser did not start:\n" + log.read())
            time.sleep(0.2)
        time.sleep(2.0)
        c0, t0 = counter.lines, time.time()
        time.sleep(a.idle)
        c1, t1 = counter.lines, time.time()
        idle_rate = (c1 - c0) / (t1 - t0)
        ser = ("127.0.0.1", a.port)
        uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (uac, uas):
            s.bind(("127.0.0.1", 0))
            s.settimeout(60)
        # One call first (connects lazily-built state, warms the allocator), not counted.
        call(-1, ser, uac, uas)
        time.sleep(0.5)
        c2, t2 = counter.lines, time.time()
        for i in range(a.calls):
            call(i, ser, uac, uas)
        time.sleep(0.5)
        c3, t3 = counter.lines, time.time()
    finally:
        p.terminate()
        p.wait()
    log.seek(0)
    first = log.read().splitlines()[:1]
    per_call = ((c3 - c2) - idle_rate * (t3 - t2)) / a.calls
    print(f"server: {' '.join(cmd)}")
    print(f"log: {first[0] if first else ''}")
    print(f"idle: {idle_rate:.0f} instructions/s ({c1 - c0} in {t1 - t0:.1f}s)")
    print(f"calls: {a.calls} in {t3 - t2:.1f}s, {c3 - c2} instructions "
          f"(idle share {idle_rate * (t3 - t2):.0f})")
    print(f"per call: {per_call:.0f} instructions")
    for ipc in (1.0, 0.5):
        print(f"400 MHz at IPC {ipc}: {400e6 * ipc / per_call:.0f} calls/s")


if __name__ == "__main__":
    main()
