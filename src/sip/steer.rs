//! Steering replies to the shard that waits for them, in the kernel: a classic BPF program
//! for the `SO_REUSEPORT` group of a UDP socket (`SO_ATTACH_REUSEPORT_CBPF`).
//!
//! Every shard has a socket on the same UDP port and the kernel picks one per datagram by a
//! hash of the addresses, so a reply lands on any shard; the transaction it belongs to lives
//! on the shard named in our Via branch ([`super::txn_branch`]), which then costs a hand-off
//! (a wake-up of the other shard) per reply. The program reads that branch where we wrote it
//! and returns the shard's index in the group (the shards' sockets join it in shard order).
//!
//! What it recognises: a reply (`SIP/` first), whose status line ends within the first 100
//! bytes, whose next line is `Via: ` followed by exactly the Via we write for this socket and
//! our tag prefix, then one or two hex digits and `-`. Anything else (requests, a reordered or
//! rewritten Via, other servers' branches, short datagrams) returns an index past the group,
//! and the kernel falls back to its hash: the message goes where it went without steering,
//! and the shards hand it on as before. Every load is inside the length checked first, so
//! the program never ends early (an out-of-bounds load would return index 0).

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// linux/filter.h
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const ST: u16 = 0x02;
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const LSH: u16 = 0x60;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGE: u16 = 0x30;
const K: u16 = 0x00;
const X: u16 = 0x08;
const RET_A: u16 = 0x10;

/// "Not steered": past any group, so the kernel hashes.
pub const FALLBACK: u32 = u32::MAX;
/// Where the status line's end is looked for: bytes 8..8+WINDOW.
const WINDOW: usize = 100;

/// The program for a UDP socket whose Via we write as `via_prefix` (`SIP/2.0/UDP host:port;
/// branch=`), with branches `z9hG4bK<tag_prefix><shard hex>-...`, for `shards` shards. None
/// when there is nothing to steer (one shard, more than 256).
pub fn reply_steering(via_prefix: &str, tag_prefix: &str, shards: usize) -> Option<Vec<Insn>> {
    if !(2..=256).contains(&shards) || tag_prefix.len() != 8 {
        return None;
    }
    let tag = tag_prefix.as_bytes();
    // Offset of the tag from the start of the Via line ("Via: " + prefix + magic cookie).
    let off = (5 + via_prefix.len() + 7) as u32;
    // The furthest byte read: the line start (at most 8 + WINDOW + 1) + off + 10.
    let min_len = 8 + WINDOW as u32 + 1 + off + 11;
    let mut p = Prog::default();
    p.op(LD | W | LEN, 0);
    p.skip_unless(JGE, min_len);
    p.op(LD | W | ABS, 0);
    p.skip_unless(JEQ, u32::from_be_bytes(*b"SIP/"));
    // The status line's end: a load and a test per position, each match to its own block
    // that puts the next line's start in X.
    let scan = p.code.len();
    for i in 0..WINDOW {
        p.op(LD | B | ABS, (8 + i) as u32);
        // To block i: past the rest of the scan, the fallback after it and i blocks.
        let to_block = (2 * (WINDOW - i - 1) + 1 + 2 * i) as u8;
        p.jump(JMP | JEQ | K, u32::from(b'\n'), to_block, 0);
    }
    p.ret(FALLBACK);
    let blocks = p.code.len();
    debug_assert_eq!(blocks, scan + 2 * WINDOW + 1);
    let common = blocks + 2 * WINDOW;
    for i in 0..WINDOW {
        p.op(LDX | W | IMM, (8 + i + 1) as u32);
        let here = p.code.len();
        p.op(JMP | JA, (common - here - 1) as u32);
    }
    debug_assert_eq!(p.code.len(), common);
    p.op(LD | W | IND, 0);
    p.skip_unless(JEQ, u32::from_be_bytes(*b"Via:"));
    p.op(LD | B | IND, 4);
    p.skip_unless(JEQ, u32::from(b' '));
    p.op(LD | W | IND, off);
    p.skip_unless(JEQ, u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]));
    p.op(LD | W | IND, off + 4);
    p.skip_unless(JEQ, u32::from_be_bytes([tag[4], tag[5], tag[6], tag[7]]));
    // One digit then '-', or two then '-'.
    p.op(LD | B | IND, off + 9);
    let two = p.placeholder();
    p.op(LD | B | IND, off + 8);
    p.hex_digit();
    p.below_or_fallback(shards as u32);
    p.op(RET | RET_A, 0);
    let two_at = p.code.len();
    p.patch_jeq_dash(two, two_at);
    p.op(LD | B | IND, off + 10);
    p.skip_unless(JEQ, u32::from(b'-'));
    p.op(LD | B | IND, off + 8);
    p.hex_digit();
    p.op(ALU | LSH | K, 4);
    p.op(ST, 0);
    p.op(LD | B | IND, off + 9);
    p.hex_digit();
    p.op(LDX | W | MEM, 0);
    p.op(ALU | ADD | X, 0);
    p.below_or_fallback(shards as u32);
    p.op(RET | RET_A, 0);
    Some(p.code)
}

#[derive(Default)]
struct Prog {
    code: Vec<Insn>,
}

impl Prog {
    fn op(&mut self, code: u16, k: u32) {
        self.jump(code, k, 0, 0);
    }

    fn jump(&mut self, code: u16, k: u32, jt: u8, jf: u8) {
        self.code.push(Insn { code, jt, jf, k });
    }

    fn ret(&mut self, k: u32) {
        self.op(RET | K, k);
    }

    /// Goes on when `A <cond> k`, else returns [`FALLBACK`].
    fn skip_unless(&mut self, cond: u16, k: u32) {
        self.jump(JMP | cond | K, k, 1, 0);
        self.ret(FALLBACK);
    }

    /// A `jeq '-'` whose false branch is patched later; returns its index.
    fn placeholder(&mut self) -> usize {
        self.jump(JMP | JEQ | K, u32::from(b'-'), 0, 0);
        self.code.len() - 1
    }

    fn patch_jeq_dash(&mut self, at: usize, target: usize) {
        let d = target - at - 1;
        if let Some(i) = self.code.get_mut(at) {
            i.jf = u8::try_from(d).unwrap_or(u8::MAX);
        }
    }

    /// A = the value of the hex digit in A (lower case), or returns [`FALLBACK`].
    fn hex_digit(&mut self) {
        // A >= 'a' ? A - 0x57 : A - 0x30; then A < 16 (a char below '0' wraps high).
        self.jump(JMP | JGE | K, u32::from(b'a'), 0, 2);
        self.op(ALU | SUB | K, 0x57);
        self.op(JMP | JA, 1);
        self.op(ALU | SUB | K, 0x30);
        self.jump(JMP | JGE | K, 16, 0, 1);
        self.ret(FALLBACK);
    }

    /// Returns [`FALLBACK`] unless `A < n`.
    fn below_or_fallback(&mut self, n: u32) {
        self.jump(JMP | JGE | K, n, 0, 1);
        self.ret(FALLBACK);
    }
}

#[cfg(test)]
mod tests;
