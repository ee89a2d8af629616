//! Steering datagrams to the shard that owns them, in the kernel: a program for the
//! `SO_REUSEPORT` group of a UDP socket.
//!
//! Every shard has a socket on the same UDP port and the kernel picks one per datagram by a
//! hash of the addresses, so a message lands on any shard, and one that belongs to another
//! costs a hand-off (a copy and a wake-up of the other shard). Two programs say where it
//! belongs instead, each returning the shard's index in the group (the shards' sockets join
//! it in shard order) or an index past the group, for which the kernel falls back to its hash
//! (the message goes where it went without a program, and the shards hand it on as before):
//!
//! - [`datagram_steering`] (eBPF, `SO_ATTACH_REUSEPORT_EBPF`, Linux 5.3 for its bounded
//!   loops): a reply by the shard in our Via branch as below, and a request, when the server
//!   owns calls by Call-ID, by the hash of its `Call-ID` ([`super::owner_shard`]: FNV-1a,
//!   which the program computes the same way). A single trunk (one source address and port)
//!   then reaches every shard with no hand-off at all.
//! - [`reply_steering`] (classic BPF, `SO_ATTACH_REUSEPORT_CBPF`), where eBPF is refused:
//!   replies only.
//!
//! A reply is recognised when it starts `SIP/`, its status line ends within the first 100
//! bytes, and its next line is `Via: ` followed by exactly the Via we write for this socket
//! and our tag prefix, then one or two hex digits and `-` ([`super::txn_branch`]). A request's
//! Call-ID is the first header line named `Call-ID` or `i` (any case, blanks before the
//! colon), its value up to the first blank or line end, within the first [`EBPF_WINDOW`]
//! bytes. Anything else (a reordered or rewritten Via, other servers' branches, short
//! datagrams, a Call-ID further in) falls back. Every load is inside the length checked
//! first, so neither program ends early (an out-of-bounds load in classic BPF would return
//! index 0).

mod ebpf;

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

/// Bytes of a datagram the eBPF program reads (copied to its stack, which holds 512).
pub const EBPF_WINDOW: usize = 480;
/// `bpf_skb_load_bytes`.
const SKB_LOAD_BYTES: i32 = 26;

/// The eBPF program for a UDP socket whose Via we write as `via_prefix`, with branches
/// `z9hG4bK<tag_prefix><shard hex>-...`, for `shards` shards: replies by their branch and,
/// with `calls` (tm owns transactions by Call-ID), requests by their Call-ID. None when there
/// is nothing to steer (one shard, more than 256), the reply's Via would not fit the window, or
/// the machine is big-endian.
pub fn datagram_steering(
    via_prefix: &str,
    tag_prefix: &str,
    shards: usize,
    calls: bool,
) -> Option<Vec<u64>> {
    use ebpf::*;
    // The encoding (register nibbles, the map's native-order masks) is written for the
    // little-endian machines ser runs on; elsewhere the classic program stays.
    if !(2..=256).contains(&shards) || tag_prefix.len() != 8 || cfg!(target_endian = "big") {
        return None;
    }
    let win = EBPF_WINDOW as i32;
    // As the classic program: the tag's offset in the Via line, the last byte read.
    let off = (5 + via_prefix.len() + 7) as i32;
    let min_len = 8 + WINDOW as i32 + 1 + off + 11;
    if min_len > win {
        return None;
    }
    let mut a = Asm::default();
    let fallback = a.label();
    let request = a.label();
    // r6 ctx, r7 bytes copied (n), r8 position, r9 the copy on the stack.
    a.mov_reg(R6, R1);
    a.load(W, R7, R6, 0); // __sk_buff.len: the UDP payload here
    a.jump_imm(JLT, R7, 16, fallback);
    let clamped = a.label();
    a.jump_imm(JGT, R7, win, clamped);
    let copy = a.label();
    a.goto(copy);
    a.bind(clamped);
    a.mov_imm(R7, win);
    a.bind(copy);
    // The copy's tail past the datagram reads as zeros: the scans below then run to the
    // window's end without comparing positions with the length.
    for k in (8..=win).step_by(8) {
        a.store_imm(DW, R10, -k as i16, 0);
    }
    a.mov_reg(R1, R6);
    a.mov_imm(R2, 0);
    a.mov_reg(R3, R10);
    a.alu_imm(ALU64, ADD, R3, -win);
    a.mov_reg(R4, R7);
    a.call(SKB_LOAD_BYTES);
    a.jump_imm(JNE, R0, 0, fallback);
    a.mov_reg(R9, R10);
    a.alu_imm(ALU64, ADD, R9, -win);
    // r1 = the byte at r8 + k (r2 scratch).
    let byte = |a: &mut Asm, k: i16| {
        a.mov_reg(R2, R9);
        a.alu_reg(ALU64, ADD, R2, R8);
        a.load(B, R1, R2, k);
    };
    // Replies: "SIP/", the status line's end in bytes 8..8+WINDOW, "Via: " and our tag.
    a.mov_imm(R8, 0);
    for (k, c) in b"SIP/".iter().enumerate() {
        byte(&mut a, k as i16);
        a.jump_imm(JNE, R1, i32::from(*c), request);
    }
    a.jump_imm(JLT, R7, min_len, fallback);
    a.mov_imm(R8, 8);
    let scan = a.label();
    a.bind(scan);
    a.jump_imm(JGE, R8, 8 + WINDOW as i32, fallback);
    byte(&mut a, 0);
    a.alu_imm(ALU64, ADD, R8, 1);
    a.jump_imm(JNE, R1, i32::from(b'\n'), scan);
    // r8: the second line.
    let fixed = b"Via: ".iter().enumerate().map(|(k, c)| (k as i32, *c));
    let tag = tag_prefix
        .bytes()
        .enumerate()
        .map(|(k, c)| (off + k as i32, c));
    for (k, c) in fixed.chain(tag) {
        byte(&mut a, k as i16);
        a.jump_imm(JNE, R1, i32::from(c), fallback);
    }
    // One hex digit then '-', or two then '-'.
    let hex = |a: &mut Asm, dst: Reg| {
        // r1 = the value of the hex digit in r1 (lower case), else fallback; into dst.
        let lower = a.label();
        let check = a.label();
        a.jump_imm(JGE, R1, i32::from(b'a'), lower);
        a.alu_imm(ALU64, ADD, R1, -0x30);
        a.goto(check);
        a.bind(lower);
        a.alu_imm(ALU64, ADD, R1, -0x57);
        a.bind(check);
        a.jump_imm(JGE, R1, 16, fallback);
        a.mov_reg(dst, R1);
    };
    let two = a.label();
    let done = a.label();
    byte(&mut a, (off + 9) as i16);
    a.jump_imm(JNE, R1, i32::from(b'-'), two);
    byte(&mut a, (off + 8) as i16);
    hex(&mut a, R0);
    a.goto(done);
    a.bind(two);
    byte(&mut a, (off + 10) as i16);
    a.jump_imm(JNE, R1, i32::from(b'-'), fallback);
    byte(&mut a, (off + 8) as i16);
    hex(&mut a, R3);
    a.alu_imm(ALU64, MUL, R3, 16);
    byte(&mut a, (off + 9) as i16);
    hex(&mut a, R0);
    a.alu_reg(ALU64, ADD, R0, R3);
    a.bind(done);
    a.jump_imm(JGE, R0, shards as i32, fallback);
    a.exit();

    // Requests: the first header line named Call-ID or i, its value hashed (FNV-1a, 32
    // bits), by the state machine of [`call_id_tables`], one byte a round with no branch but
    // the way out: the verifier then walks the loop once, not once per path through it.
    a.bind(request);
    if calls {
        // r6 = the tables (the map's one value); the key, 0, below the copy.
        a.store_imm(W, R10, -(win as i16) - 8, 0);
        a.map_fd(R1);
        a.mov_reg(R2, R10);
        a.alu_imm(ALU64, ADD, R2, -win - 8);
        a.call(MAP_LOOKUP_ELEM);
        a.jump_imm(JEQ, R0, 0, fallback);
        a.mov_reg(R6, R0);
        // r0 hash, r3 state, r8 position.
        a.alu_imm(ALU, MOV, R0, FNV_OFFSET as i32);
        a.mov_imm(R3, cid::FIRST as i32);
        a.mov_imm(R8, 0);
        let round = a.label();
        let out = a.label();
        a.bind(round);
        a.jump_imm(JGE, R8, win, fallback);
        byte(&mut a, 0);
        // r2 = class of r1; r3 = next state.
        a.mov_reg(R2, R6);
        a.alu_reg(ALU64, ADD, R2, R1);
        a.load(B, R2, R2, 0);
        a.alu_imm(ALU64, AND, R2, 15);
        a.alu_imm(ALU64, AND, R3, 15);
        a.alu_imm(ALU64, LSH, R3, 4);
        a.alu_reg(ALU64, ADD, R3, R2);
        a.alu_reg(ALU64, ADD, R3, R6);
        a.load(B, R3, R3, 256);
        // Hash r1 when the new state says so: r0 ^= (r0 ^ (r0 ^ r1) * P) & mask.
        a.mov_reg(R2, R3);
        a.alu_imm(ALU64, AND, R2, 15);
        a.alu_imm(ALU64, LSH, R2, 2);
        a.alu_reg(ALU64, ADD, R2, R6);
        a.load(W, R2, R2, 512);
        a.mov_reg(R4, R0);
        a.alu_reg(ALU, XOR, R4, R1);
        a.alu_imm(ALU, MUL, R4, FNV_PRIME as i32);
        a.alu_reg(ALU, XOR, R4, R0);
        a.alu_reg(ALU, AND, R4, R2);
        a.alu_reg(ALU, XOR, R0, R4);
        a.alu_imm(ALU64, ADD, R8, 1);
        a.jump_imm(JGE, R3, cid::DONE as i32, out);
        a.goto(round);
        a.bind(out);
        a.jump_imm(JNE, R3, cid::DONE as i32, fallback);
        a.alu_imm(ALU, MOD, R0, shards as i32);
        a.exit();
    }
    a.bind(fallback);
    a.alu_imm(ALU, MOV, R0, FALLBACK as i32);
    a.exit();
    a.finish()
}

/// FNV-1a, 32 bits: the Call-ID hash behind [`super::owner_shard`], simple enough for the
/// eBPF program to compute the same.
pub const FNV_OFFSET: u32 = 0x811c_9dc5;
pub const FNV_PRIME: u32 = 0x0100_0193;

/// `bpf_map_lookup_elem`.
const MAP_LOOKUP_ELEM: i32 = 1;

/// The Call-ID scan's states ([`call_id_tables`]).
mod cid {
    /// In the request line.
    pub const FIRST: u8 = 0;
    /// At the start of a header line.
    pub const LINE: u8 = 1;
    /// In a line that is not the Call-ID.
    pub const SKIP: u8 = 2;
    /// `c`, `ca`, `cal`, `call`, `call-`, `call-i` seen (3..=8).
    pub const C1: u8 = 3;
    /// After the name: blanks, then the colon.
    pub const NAME: u8 = 9;
    /// After the colon: blanks.
    pub const BLANKS: u8 = 10;
    /// In the value: hashed.
    pub const VALUE: u8 = 11;
    /// The value ended: its hash is the answer.
    pub const DONE: u8 = 12;
    /// No Call-ID before the blank line (or the datagram's end).
    pub const FAIL: u8 = 13;
}

/// The tables of the Call-ID scan, the one value of the program's array map: byte → class
/// (256 bytes), state × class → state (16 × 16), and per state a mask, all ones where the
/// byte that led to it is hashed (16 × u32, native order).
pub fn call_id_tables() -> Vec<u8> {
    use cid::*;
    // Classes: 0 other, 1 LF, 2 CR, 3 blank (SP, HT), 4 ':', 5 NUL or FF (ends a value),
    // then the letters of "call-id" after the c: 6 c, 7 a, 8 l, 9 -, 10 i, 11 d.
    const NAME_CLASSES: [(u8, u8); 6] = [
        (b'c', 6),
        (b'a', 7),
        (b'l', 8),
        (b'-', 9),
        (b'i', 10),
        (b'd', 11),
    ];
    let mut t = vec![0u8; 256 + 256 + 64];
    t[usize::from(b'\n')] = 1;
    t[usize::from(b'\r')] = 2;
    t[usize::from(b' ')] = 3;
    t[usize::from(b'\t')] = 3;
    t[usize::from(b':')] = 4;
    t[0] = 5;
    t[0x0c] = 5;
    for (c, class) in NAME_CLASSES {
        t[usize::from(c)] = class;
        t[usize::from(c.to_ascii_uppercase())] = class;
    }
    let mut set = |state: u8, class: u8, next: u8| {
        t[256 + usize::from(state) * 16 + usize::from(class)] = next
    };
    for class in 0..16 {
        set(
            FIRST,
            class,
            if class == 1 {
                LINE
            } else if class == 5 {
                FAIL
            } else {
                FIRST
            },
        );
        set(
            LINE,
            class,
            match class {
                1 | 2 | 5 => FAIL,
                6 => C1,
                10 => NAME,
                _ => SKIP,
            },
        );
        set(
            SKIP,
            class,
            match class {
                1 => LINE,
                5 => FAIL,
                _ => SKIP,
            },
        );
        // c → a → l → l → - → i → d: each letter in turn, else the rest of the line.
        let word: [u8; 6] = [7, 8, 8, 9, 10, 11];
        for (k, want) in word.iter().enumerate() {
            let state = C1 + k as u8;
            let next = if k + 1 == word.len() { NAME } else { state + 1 };
            set(
                state,
                class,
                match class {
                    c if c == *want => next,
                    1 => LINE,
                    5 => FAIL,
                    _ => SKIP,
                },
            );
        }
        set(
            NAME,
            class,
            match class {
                3 => NAME,
                4 => BLANKS,
                1 => LINE,
                // The server trims a CR off a name: not a line to skip.
                2 | 5 => FAIL,
                _ => SKIP,
            },
        );
        set(
            BLANKS,
            class,
            match class {
                3 => BLANKS,
                1 => DONE,
                // The server trims these too, and would hash what follows.
                2 | 5 => FAIL,
                _ => VALUE,
            },
        );
        set(
            VALUE,
            class,
            match class {
                1 | 2 | 3 | 5 => DONE,
                _ => VALUE,
            },
        );
        set(DONE, class, DONE);
        set(FAIL, class, FAIL);
        set(14, class, FAIL);
        set(15, class, FAIL);
    }
    t[512 + 4 * usize::from(VALUE)..][..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    t
}

pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
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
mod ebpf_tests;
#[cfg(test)]
mod tests;
