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

#[test]
fn replies_are_steered_to_the_shard_in_our_branch() {
    let prog = reply_steering(VIA, TAG, 4).unwrap();
    assert!(prog.len() < 4096, "the kernel's limit");
    for shard in 0..4 {
        let b = super::super::txn_branch(TAG, shard, 0x1234, 0x0123_4567);
        for status in [
            "100 Trying",
            "180 Ringing",
            "487 Request Terminated",
            "200 OK",
        ] {
            assert_eq!(
                run(&prog, &reply(status, &format!("{b}.0"))),
                shard as u32,
                "{status}"
            );
        }
    }
    // Two hex digits.
    let prog = reply_steering(VIA, TAG, 40).unwrap();
    let b = super::super::txn_branch(TAG, 0x27, 9, 0x0123_4567);
    assert_eq!(run(&prog, &reply("200 OK", &format!("{b}.3"))), 0x27);
    let b = super::super::txn_branch(TAG, 0x5, 9, 0x0123_4567);
    assert_eq!(run(&prog, &reply("200 OK", &format!("{b}.3"))), 5);
}

#[test]
fn anything_else_falls_back_to_the_kernels_hash() {
    let prog = reply_steering(VIA, TAG, 4).unwrap();
    let ours = super::super::txn_branch(TAG, 1, 7, 0x0123_4567) + ".0";
    // A shard this group does not have.
    let b = super::super::txn_branch(TAG, 9, 7, 0x0123_4567) + ".0";
    assert_eq!(run(&prog, &reply("200 OK", &b)), FALLBACK);
    // Another server's tag, a stateless branch, a request, a reordered Via, compact form.
    let other = super::super::txn_branch("ffffffff", 1, 7, 0x0123_4567) + ".0";
    assert_eq!(run(&prog, &reply("200 OK", &other)), FALLBACK);
    assert_eq!(
        run(&prog, &reply("200 OK", "z9hG4bKsl0123456789abcdef")),
        FALLBACK
    );
    let req = String::from_utf8(reply("200 OK", &ours))
        .unwrap()
        .replace("SIP/2.0 200 OK", "INVITE sip:bob@example.org SIP/2.0");
    assert_eq!(run(&prog, req.as_bytes()), FALLBACK);
    let moved = String::from_utf8(reply("200 OK", &ours)).unwrap().replacen(
        "Via: ",
        "X-Extra: 1\r\nVia: ",
        1,
    );
    assert_eq!(run(&prog, moved.as_bytes()), FALLBACK);
    let compact = String::from_utf8(reply("200 OK", &ours))
        .unwrap()
        .replacen("Via: ", "v: ", 1);
    assert_eq!(run(&prog, compact.as_bytes()), FALLBACK);
    // A status line longer than the window.
    let long = format!("200 {}", "O".repeat(120));
    assert_eq!(run(&prog, &reply(&long, &ours)), FALLBACK);
    // Short datagrams and every cut of a steered one: never index 0 by an early end.
    let whole = reply("180 Ringing", &ours);
    for n in 0..whole.len() {
        let r = run(&prog, &whole[..n]);
        assert!(r == FALLBACK || r == 1, "cut at {n}: {r}");
    }
    for junk in [&b""[..], b"\r\n\r\n", b"SIP/", &[0xff; 300]] {
        assert_eq!(run(&prog, junk), FALLBACK);
    }
}

#[test]
fn nothing_to_steer_with_one_shard() {
    assert!(reply_steering(VIA, TAG, 1).is_none());
    assert!(reply_steering(VIA, "short", 4).is_none());
}
