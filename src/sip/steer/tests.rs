use super::*;

/// A classic BPF interpreter for what the program uses, with the kernel's rule that a load
/// past the end ends the program with 0.
fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    let (mut a, mut x, mut mem, mut pc) = (0u32, 0u32, [0u32; 16], 0usize);
    let load = |at: u32, size: usize| -> Option<u32> {
        let at = at as usize;
        let b = pkt.get(at..at + size)?;
        Some(b.iter().fold(0u32, |v, &c| (v << 8) | u32::from(c)))
    };
    for _ in 0..10_000 {
        let i = prog[pc];
        pc += 1;
        let cls = i.code & 0x07;
        match cls {
            0x00 => {
                let size = match i.code & 0x18 {
                    0x00 => 4,
                    0x08 => 2,
                    _ => 1,
                };
                a = match i.code & 0xe0 {
                    0x00 => i.k,
                    0x20 => match load(i.k, size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    0x40 => match load(x.wrapping_add(i.k), size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    0x60 => mem[i.k as usize],
                    0x80 => pkt.len() as u32,
                    m => panic!("ld mode {m:x}"),
                };
            }
            0x01 => {
                x = match i.code & 0xe0 {
                    0x00 => i.k,
                    0x60 => mem[i.k as usize],
                    m => panic!("ldx mode {m:x}"),
                }
            }
            0x02 => mem[i.k as usize] = a,
            0x04 => {
                let v = if i.code & 0x08 != 0 { x } else { i.k };
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(v),
                    0x10 => a.wrapping_sub(v),
                    0x60 => a << v,
                    o => panic!("alu {o:x}"),
                };
            }
            0x05 => {
                let v = if i.code & 0x08 != 0 { x } else { i.k };
                let taken = match i.code & 0xf0 {
                    0x00 => {
                        pc += i.k as usize;
                        continue;
                    }
                    0x10 => a == v,
                    0x30 => a >= v,
                    o => panic!("jmp {o:x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return if i.code & 0x18 == 0x10 { a } else { i.k },
            c => panic!("class {c:x}"),
        }
    }
    panic!("no return")
}

const VIA: &str = "SIP/2.0/UDP 127.0.0.1:5060;branch=";
const TAG: &str = "0a1b2c3d";

fn reply(status: &str, branch: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {status}\r\nVia: {VIA}{branch};received=127.0.0.1\r\n\
         Via: SIP/2.0/TCP 10.0.0.7:5070;branch=z9hG4bKupstream\r\n\
         From: <sip:alice@example.org>;tag=a\r\nTo: <sip:bob@example.org>;tag=b\r\n\
         Call-ID: steer-test@example.org\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Both programs for `shards` shards (the eBPF one with Call-ID steering), as functions of a
/// datagram.
type Steer = Box<dyn Fn(&[u8]) -> u32>;

fn programs(shards: usize) -> Vec<(&'static str, Steer)> {
    let c = reply_steering(VIA, TAG, shards).unwrap();
    assert!(c.len() < 4096, "the kernel's limit");
    let e = datagram_steering(VIA, TAG, shards, true).unwrap();
    assert!(
        e.len() < 4096,
        "the kernel's limit for unprivileged programs"
    );
    vec![
        ("cbpf", Box::new(move |p: &[u8]| run(&c, p))),
        ("ebpf", Box::new(move |p: &[u8]| ebpf_tests::run(&e, p))),
    ]
}

#[test]
fn replies_are_steered_to_the_shard_in_our_branch() {
    for (name, run) in programs(4) {
        replies_steered(name, &run);
    }
    for (name, run) in programs(40) {
        // Two hex digits.
        let b = super::super::txn_branch(TAG, 0x27, 9, 0x0123_4567);
        assert_eq!(run(&reply("200 OK", &format!("{b}.3"))), 0x27, "{name}");
        let b = super::super::txn_branch(TAG, 0x5, 9, 0x0123_4567);
        assert_eq!(run(&reply("200 OK", &format!("{b}.3"))), 5, "{name}");
    }
}

fn replies_steered(name: &str, run: &dyn Fn(&[u8]) -> u32) {
    for shard in 0..4 {
        let b = super::super::txn_branch(TAG, shard, 0x1234, 0x0123_4567);
        for status in [
            "100 Trying",
            "180 Ringing",
            "487 Request Terminated",
            "200 OK",
        ] {
            assert_eq!(
                run(&reply(status, &format!("{b}.0"))),
                shard as u32,
                "{name} {status}"
            );
        }
    }
}

#[test]
fn anything_else_falls_back_to_the_kernels_hash() {
    for (name, run) in programs(4) {
        falls_back(name, &run);
    }
}

fn falls_back(name: &str, run: &dyn Fn(&[u8]) -> u32) {
    let ours = super::super::txn_branch(TAG, 1, 7, 0x0123_4567) + ".0";
    // A shard this group does not have.
    let b = super::super::txn_branch(TAG, 9, 7, 0x0123_4567) + ".0";
    assert_eq!(run(&reply("200 OK", &b)), FALLBACK);
    // Another server's tag, a stateless branch, a request, a reordered Via, compact form.
    let other = super::super::txn_branch("ffffffff", 1, 7, 0x0123_4567) + ".0";
    assert_eq!(run(&reply("200 OK", &other)), FALLBACK);
    assert_eq!(run(&reply("200 OK", "z9hG4bKsl0123456789abcdef")), FALLBACK);
    let req = String::from_utf8(reply("200 OK", &ours))
        .unwrap()
        .replace("SIP/2.0 200 OK", "INVITE sip:bob@example.org SIP/2.0")
        .replace("Call-ID", "X-Call-ID");
    assert_eq!(run(req.as_bytes()), FALLBACK, "{name}");
    let moved = String::from_utf8(reply("200 OK", &ours)).unwrap().replacen(
        "Via: ",
        "X-Extra: 1\r\nVia: ",
        1,
    );
    assert_eq!(run(moved.as_bytes()), FALLBACK);
    let compact = String::from_utf8(reply("200 OK", &ours))
        .unwrap()
        .replacen("Via: ", "v: ", 1);
    assert_eq!(run(compact.as_bytes()), FALLBACK);
    // A status line longer than the window.
    let long = format!("200 {}", "O".repeat(120));
    assert_eq!(run(&reply(&long, &ours)), FALLBACK);
    // Short datagrams and every cut of a steered one: never index 0 by an early end.
    let whole = reply("180 Ringing", &ours);
    for n in 0..whole.len() {
        let r = run(&whole[..n]);
        assert!(r == FALLBACK || r == 1, "{name}: cut at {n}: {r}");
    }
    for junk in [&b""[..], b"\r\n\r\n", b"SIP/", &[0xff; 300]] {
        assert_eq!(run(junk), FALLBACK);
    }
}

#[test]
fn nothing_to_steer_with_one_shard() {
    assert!(reply_steering(VIA, TAG, 1).is_none());
    assert!(reply_steering(VIA, "short", 4).is_none());
    assert!(datagram_steering(VIA, TAG, 1, true).is_none());
    assert!(datagram_steering(VIA, "short", 4, true).is_none());
    let huge = format!("SIP/2.0/UDP [{}]:5060;branch=", "f".repeat(400));
    assert!(datagram_steering(&huge, TAG, 4, true).is_none());
}

fn request(call_id_line: &str, pad: usize) -> Vec<u8> {
    format!(
        "INVITE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bKup\r\n\
         X-Pad: {}\r\nFrom: <sip:alice@example.org>;tag=a\r\nTo: <sip:bob@example.org>\r\n\
         Contact: <sip:alice@10.0.0.7:5070>\r\nIn-Reply-To: x@y\r\n{call_id_line}\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        "p".repeat(pad)
    )
    .into_bytes()
}

/// What the server's owner check computes for a datagram (sip::owner).
fn owner(msg: &[u8], shards: usize) -> u32 {
    let cid = super::super::scan_call_id(msg).expect("a Call-ID");
    super::super::owner_shard(cid, shards) as u32
}

#[test]
fn requests_are_steered_to_their_call_ids_owner() {
    for shards in [2, 3, 4, 7, 16] {
        let prog = datagram_steering(VIA, TAG, shards, true).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let cid = format!("{i:x}-{}@host.example", i * 7919);
            for line in [
                format!("Call-ID: {cid}"),
                format!("call-id:{cid}"),
                format!("CALL-ID \t:  {cid} "),
                format!("i: {cid}"),
                format!("I:\t{cid}"),
            ] {
                let msg = request(&line, i % 50);
                let got = ebpf_tests::run(&prog, &msg);
                assert_eq!(got, owner(&msg, shards), "{shards} shards: {line}");
                seen.insert(got);
            }
        }
        assert_eq!(seen.len(), shards, "every shard gets calls");
    }
}

#[test]
fn requests_the_program_cannot_read_fall_back() {
    let prog = datagram_steering(VIA, TAG, 4, true).unwrap();
    let run = |m: &[u8]| ebpf_tests::run(&prog, m);
    // A Call-ID past the window, or ending past it.
    let far = request("Call-ID: far@host", EBPF_WINDOW);
    assert!(far.len() > EBPF_WINDOW);
    assert_eq!(run(&far), FALLBACK);
    let msg = request("Call-ID: abc@host", 0);
    let at = msg.windows(3).position(|w| w == b"abc").unwrap();
    let pad = EBPF_WINDOW - at - 2;
    assert_eq!(run(&request("Call-ID: abc@host", pad)), FALLBACK);
    // No Call-ID before the body; names that only start like it.
    let none = String::from_utf8(request("X-Call-ID: abc", 0)).unwrap();
    assert_eq!(run(none.as_bytes()), FALLBACK);
    let body = none.replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 14\r\n\r\nCall-ID: a@b\r\n",
    );
    assert_eq!(run(body.as_bytes()), FALLBACK);
    assert_eq!(run(&request("Call-IDs: a@b", 0)), FALLBACK);
    assert_eq!(run(&request("Info: a@b", 0)), FALLBACK);
    // Malformed Call-IDs: what the server computes, or the fallback, never a third shard.
    for line in [
        "Call-ID: abc def",
        "Call-ID: abc\tdef",
        "Call-ID: \x0cabc",
        "Call-ID: abc\x0cdef",
        "Call-ID: abc\0def",
        "Call-ID: \rabc",
        "Call-ID: abc\rdef",
        "Call-ID\r: a\r\ni: b",
        "Call-ID: \r\ni: b",
        "i:",
    ] {
        for shards in [2, 3, 4, 7] {
            let prog = datagram_steering(VIA, TAG, shards, true).unwrap();
            let msg = request(line, 0);
            let r = ebpf_tests::run(&prog, &msg);
            assert!(
                r == FALLBACK || r == owner(&msg, shards),
                "{line:?}, {shards}: {r}"
            );
        }
    }
    // Every cut of a request: what the server computes for it, or the fallback.
    let whole = request("Call-ID: cut-me@host", 3);
    for n in 0..whole.len() {
        let cut = &whole[..n];
        let r = run(cut);
        let server = super::super::scan_call_id(cut).map(|_| owner(cut, 4));
        assert!(r == FALLBACK || Some(r) == server, "cut at {n}: {r}");
    }
    for junk in [
        &b""[..],
        b"\r\n\r\n",
        b"INVITE",
        &[0xff; 300],
        &[b'\n'; 600],
    ] {
        assert_eq!(run(junk), FALLBACK);
    }
    // Without Call-ID ownership requests are not steered, replies still are.
    let prog = datagram_steering(VIA, TAG, 4, false).unwrap();
    assert_eq!(ebpf_tests::run(&prog, &whole), FALLBACK);
    let b = super::super::txn_branch(TAG, 2, 1, 0x0123_4567) + ".0";
    assert_eq!(ebpf_tests::run(&prog, &reply("200 OK", &b)), 2);
}

#[test]
#[ignore = "writes the program and its map for bench/steer-cost.py"]
fn dump_for_the_kernel() {
    let prog = datagram_steering(VIA, TAG, 2, true).unwrap();
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write("/tmp/ser-steer.bin", bytes).unwrap();
    std::fs::write("/tmp/ser-steer.map", call_id_tables()).unwrap();
}

#[test]
fn random_header_lines_agree_with_the_server_or_fall_back() {
    // Lines from the bytes the scan cares about, in a deterministic pseudo-random order.
    const ALPHABET: &[u8] = b"cCalLi-dIDx@: \t\r\n\x0c\x00";
    let prog = datagram_steering(VIA, TAG, 7, true).unwrap();
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize
    };
    for _ in 0..3000 {
        let n = next() % 24;
        let mut line: Vec<u8> = (0..n).map(|_| ALPHABET[next() % ALPHABET.len()]).collect();
        if next() % 2 == 0 {
            let mut head = b"Call-ID:".to_vec();
            head.append(&mut line);
            line = head;
        }
        let mut msg = b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n".to_vec();
        msg.extend_from_slice(&line);
        msg.extend_from_slice(b"\r\ni: tail-id\r\nContent-Length: 0\r\n\r\n");
        let r = ebpf_tests::run(&prog, &msg);
        let server = super::super::scan_call_id(&msg).map(|_| owner(&msg, 7));
        assert!(
            r == FALLBACK || Some(r) == server,
            "{:?}: {r} against {server:?}",
            String::from_utf8_lossy(&line)
        );
    }
}
