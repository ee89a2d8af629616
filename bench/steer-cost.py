#!/usr/bin/env python3
"""What the kernel's steering program (src/sip/steer.rs, datagram_steering) costs per datagram:
loads it with its map as ser does and times it with BPF_PROG_TEST_RUN (200 000 runs each) on a
SIPp INVITE, a reply of ours, and a request with no Call-ID in the window (the longest scan).

    cargo test -q -p ser --lib dump_for_the_kernel -- --ignored   # writes /tmp/ser-steer.{bin,map}
    python3 bench/steer-cost.py                                   # as root (bpf(2))
"""
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_bpf = 321
def bpf(cmd, attr):
    r = libc.syscall(SYS_bpf, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if r < 0: raise OSError(ctypes.get_errno(), f"bpf cmd {cmd}")
    return r
prog = bytearray(open('/tmp/ser-steer.bin','rb').read())
mapv = open('/tmp/ser-steer.map','rb').read()
class MC(ctypes.Structure): _fields_=[("t",ctypes.c_uint32),("k",ctypes.c_uint32),("v",ctypes.c_uint32),("n",ctypes.c_uint32),("pad",ctypes.c_uint8*48)]
mfd = bpf(0, MC(2,4,len(mapv),1))
key = ctypes.c_uint32(0); val = ctypes.create_string_buffer(mapv, len(mapv))
class MU(ctypes.Structure): _fields_=[("fd",ctypes.c_uint32),("pad",ctypes.c_uint32),("key",ctypes.c_uint64),("val",ctypes.c_uint64),("flags",ctypes.c_uint64)]
bpf(2, MU(mfd,0,ctypes.addressof(key),ctypes.addressof(val),0))
for i in range(0, len(prog), 8):
    w = struct.unpack_from('<Q', prog, i)[0]
    if w & 0xff == 0x18 and (w >> 12) & 0xf == 1:
        struct.pack_into('<Q', prog, i, (w & 0xffffffff) | (mfd << 32))
buf = ctypes.create_string_buffer(bytes(prog), len(prog)); lic = ctypes.create_string_buffer(b"GPL")
class PL(ctypes.Structure): _fields_=[("t",ctypes.c_uint32),("n",ctypes.c_uint32),("insns",ctypes.c_uint64),("lic",ctypes.c_uint64),("pad",ctypes.c_uint8*96)]
for _ in range(5):
    try: pfd = bpf(5, PL(1, len(prog)//8, ctypes.addressof(buf), ctypes.addressof(lic))); break
    except OSError as e:
        if e.errno != 11: raise
class TR(ctypes.Structure): _fields_=[("fd",ctypes.c_uint32),("retval",ctypes.c_uint32),("size_in",ctypes.c_uint32),("size_out",ctypes.c_uint32),("data_in",ctypes.c_uint64),("data_out",ctypes.c_uint64),("repeat",ctypes.c_uint32),("duration",ctypes.c_uint32),("pad",ctypes.c_uint8*64)]
sipp_invite = ("INVITE sip:service@127.0.0.1:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-12345-1-0\r\n"
  "From: sipp <sip:sipp@127.0.0.1:5090>;tag=12345SIPpTag001\r\nTo: service <sip:service@127.0.0.1:5062>\r\n"
  "Call-ID: 1-12345@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5090\r\nMax-Forwards: 70\r\n"
  "Subject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: 135\r\n\r\n" + "v=0\r\n"*27)
reply = ("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK0a1b2c3d1-2f-deadbeef.0\r\n" + "X: y\r\n"*20 + "\r\n")
nocid = "OPTIONS sip:x SIP/2.0\r\n" + "X-Long-Header: " + "a"*60 + "\r\n" * 1 + ("Y: " + "b"*40 + "\r\n")*9 + "\r\n"
for name, m in [("INVITE (Call-ID at %d)" % sipp_invite.index("Call-ID"), sipp_invite), ("reply", reply), ("no Call-ID in 480 bytes", nocid)]:
    # BPF_PROG_TEST_RUN gives a socket filter the packet after its Ethernet header: the SIP
    # message right after a fake one, as the reuseport hook gives it the UDP payload.
    data = b"\x00"*12 + b"\x08\x00" + m.encode()
    din = ctypes.create_string_buffer(data, len(data))
    t = TR(pfd, 0, len(data), 0, ctypes.addressof(din), 0, 200000, 0)
    bpf(10, t)
    print(f"{name}: ret {t.retval:#x}, {t.duration} ns a run")
