//! An eBPF interpreter for what [`super::datagram_steering`] uses, for the tests: the packet
//! behind `bpf_skb_load_bytes`, `__sk_buff.len` at offset 0 of the context, the array map's
//! one value ([`super::call_id_tables`]) behind `bpf_map_lookup_elem`, a 512-byte stack
//! whose bytes must be written before they are read (a read of a byte the program neither
//! cleared nor copied fails the test, as it would be garbage in the kernel).

use super::ebpf::{Insn, ALU, ALU64, JMP, LDX, ST};

const CTX: u64 = 0x1000;
const MAP: u64 = 0x2000;
const VALUE: u64 = 0x1_0000_0000;
const STACK_TOP: u64 = 0x7000_0000_0200;
const STACK: usize = 512;

pub fn run(prog: &[u64], pkt: &[u8]) -> u32 {
    let map = super::call_id_tables();
    let mut r = [0u64; 11];
    let mut stack: [Option<u8>; STACK] = [None; STACK];
    r[1] = CTX;
    r[10] = STACK_TOP;
    let slot = |addr: u64| -> usize {
        let below = STACK_TOP.checked_sub(addr).expect("above the stack");
        assert!(
            below >= 1 && below as usize <= STACK,
            "outside the stack: {addr:x}"
        );
        STACK - below as usize
    };
    let mut pc = 0usize;
    for _ in 0..1_000_000 {
        let i = Insn::decode(prog[pc]);
        pc += 1;
        if i.code == 0x18 {
            assert_eq!(i.src, 1, "only map references");
            r[usize::from(i.dst)] = MAP;
            pc += 1;
            continue;
        }
        let (d, s) = (usize::from(i.dst), usize::from(i.src));
        let class = i.code & 0x07;
        let src = if i.code & 0x08 != 0 {
            r[s]
        } else {
            i64::from(i.imm) as u64
        };
        match class {
            ALU64 => {
                r[d] = match i.code & 0xf0 {
                    0x00 => r[d].wrapping_add(src),
                    0x20 => r[d].wrapping_mul(src),
                    0x50 => r[d] & src,
                    0x60 => r[d] << src,
                    0xa0 => r[d] ^ src,
                    0xb0 => src,
                    o => panic!("alu64 {o:x}"),
                }
            }
            ALU => {
                let (a, b) = (r[d] as u32, src as u32);
                r[d] = u64::from(match i.code & 0xf0 {
                    0x20 => a.wrapping_mul(b),
                    0x50 => a & b,
                    0x90 => a % b,
                    0xa0 => a ^ b,
                    0xb0 => b,
                    o => panic!("alu {o:x}"),
                });
            }
            ST => {
                let size = if i.code & 0x18 == 0x18 { 8 } else { 4 };
                assert_eq!(i.code & 0x18 == 0, size == 4, "4- and 8-byte stores");
                let at = slot(r[d].wrapping_add(i.off as i64 as u64));
                let v = (i64::from(i.imm) as u64).to_le_bytes();
                for (k, b) in v.iter().take(size).enumerate() {
                    stack[at + k] = Some(*b);
                }
            }
            LDX => {
                let addr = r[s].wrapping_add(i.off as i64 as u64);
                let size = match i.code & 0x18 {
                    0x10 => 1,
                    0x00 => 4,
                    sz => panic!("load size {sz:x}"),
                };
                if let Some(at) = addr.checked_sub(VALUE).filter(|&a| a < 1 << 20) {
                    let b = map
                        .get(at as usize..at as usize + size)
                        .expect("inside the map value");
                    r[d] = b.iter().rev().fold(0u64, |v, &c| (v << 8) | u64::from(c));
                    continue;
                }
                r[d] = match i.code & 0x18 {
                    0x10 => u64::from(stack[slot(addr)].expect("a byte never written")),
                    0x00 if addr == CTX => pkt.len() as u64,
                    sz => panic!("load size {sz:x} at {addr:x}"),
                };
            }
            JMP => {
                let taken = match i.code & 0xf0 {
                    0x00 => true,
                    0x10 => r[d] == src,
                    0x20 => r[d] > src,
                    0x30 => r[d] >= src,
                    0x50 => r[d] != src,
                    0xa0 => r[d] < src,
                    0x80 if i.imm == 1 => {
                        assert_eq!(r[1], MAP);
                        let key = slot(r[2]);
                        assert!(stack[key..key + 4].iter().all(|b| *b == Some(0)), "key 0");
                        r[0] = VALUE;
                        false
                    }
                    0x80 => {
                        assert_eq!(i.imm, 26, "only bpf_skb_load_bytes");
                        let (off, len) = (r[2] as usize, r[4] as usize);
                        assert_eq!(r[1], CTX);
                        r[0] = match pkt.get(off..off + len) {
                            Some(b) => {
                                let at = slot(r[3]);
                                for (k, &c) in b.iter().enumerate() {
                                    stack[at + k] = Some(c);
                                }
                                0
                            }
                            None => u64::MAX - 13, // -EFAULT
                        };
                        false
                    }
                    0x90 => return r[0] as u32,
                    o => panic!("jmp {o:x}"),
                };
                if taken {
                    pc = (pc as i64 + i64::from(i.off)) as usize;
                }
            }
            c => panic!("class {c:x}"),
        }
    }
    panic!("no exit")
}
