//! A small eBPF assembler: the instructions [`super::datagram_steering`] needs, with labels for
//! jumps, encoded as the kernel's `struct bpf_insn` (one `u64` each, little-endian fields:
//! opcode, dst and src registers, 16-bit offset, 32-bit immediate). No loader here: the shard
//! runtime hands the words to the kernel (`ser_shards::Bound::steer_datagrams_ebpf`).

/// A register (r0 return value, r1-r5 arguments and scratch, r6-r9 kept across calls, r10 the
/// read-only frame pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg(pub u8);

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
pub const R10: Reg = Reg(10);

// linux/bpf_common.h and linux/bpf.h
pub const LDX: u8 = 0x01;
pub const ST: u8 = 0x02;
pub const ALU: u8 = 0x04;
pub const JMP: u8 = 0x05;
pub const ALU64: u8 = 0x07;
pub const MEM: u8 = 0x60;
pub const W: u8 = 0x00;
pub const B: u8 = 0x10;
pub const DW: u8 = 0x18;
pub const K: u8 = 0x00;
pub const X: u8 = 0x08;
pub const ADD: u8 = 0x00;
pub const MUL: u8 = 0x20;
pub const AND: u8 = 0x50;
pub const LSH: u8 = 0x60;
pub const MOD: u8 = 0x90;
pub const XOR: u8 = 0xa0;
pub const MOV: u8 = 0xb0;
pub const JA: u8 = 0x00;
pub const JEQ: u8 = 0x10;
pub const JGT: u8 = 0x20;
pub const JGE: u8 = 0x30;
pub const JNE: u8 = 0x50;
pub const JLT: u8 = 0xa0;
pub const CALL: u8 = 0x80;
pub const EXIT: u8 = 0x90;

/// A jump target, placed with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// One instruction before encoding; `target` replaces `off` for jumps to a label.
#[derive(Debug, Clone, Copy)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
    target: Option<Label>,
}

impl Insn {
    /// The kernel's encoding.
    pub fn encode(&self) -> u64 {
        u64::from(self.code)
            | u64::from((self.dst & 0x0f) | (self.src << 4)) << 8
            | u64::from(self.off as u16) << 16
            | u64::from(self.imm as u32) << 32
    }

    /// Decodes [`encode`](Self::encode)'s word (for the tests' interpreter).
    #[cfg(test)]
    pub fn decode(w: u64) -> Self {
        Self {
            code: w as u8,
            dst: (w >> 8) as u8 & 0x0f,
            src: (w >> 12) as u8 & 0x0f,
            off: (w >> 16) as u16 as i16,
            imm: (w >> 32) as u32 as i32,
            target: None,
        }
    }
}

#[derive(Default)]
pub struct Asm {
    code: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32, target: Option<Label>) {
        self.code.push(Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
            target,
        });
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Places `l` at the next instruction.
    pub fn bind(&mut self, l: Label) {
        if let Some(slot) = self.labels.get_mut(l.0) {
            *slot = Some(self.code.len());
        }
    }

    /// `dst op= imm`, 64-bit (`ALU64`) or 32-bit (`ALU`, upper half zeroed) by `class`.
    pub fn alu_imm(&mut self, class: u8, op: u8, dst: Reg, imm: i32) {
        self.push(class | op | K, dst, R0, 0, imm, None);
    }

    /// `dst op= src`.
    pub fn alu_reg(&mut self, class: u8, op: u8, dst: Reg, src: Reg) {
        self.push(class | op | X, dst, src, 0, 0, None);
    }

    pub fn mov_imm(&mut self, dst: Reg, imm: i32) {
        self.alu_imm(ALU64, MOV, dst, imm);
    }

    pub fn mov_reg(&mut self, dst: Reg, src: Reg) {
        self.alu_reg(ALU64, MOV, dst, src);
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: u8, dst: Reg, src: Reg, off: i16) {
        self.push(LDX | MEM | size, dst, src, off, 0, None);
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: u8, dst: Reg, off: i16, imm: i32) {
        self.push(ST | MEM | size, dst, R0, off, imm, None);
    }

    /// `dst = the map` (`ld_imm64` with `BPF_PSEUDO_MAP_FD`, two words): the loader puts the
    /// descriptor of the map it made for the program's data in the immediate.
    pub fn map_fd(&mut self, dst: Reg) {
        self.push(0x18, dst, Reg(1), 0, 0, None);
        self.push(0, R0, R0, 0, 0, None);
    }

    /// `if dst <op> imm goto l` (64-bit unsigned compares).
    pub fn jump_imm(&mut self, op: u8, dst: Reg, imm: i32, l: Label) {
        self.push(JMP | op | K, dst, R0, 0, imm, Some(l));
    }

    pub fn goto(&mut self, l: Label) {
        self.push(JMP | JA, R0, R0, 0, 0, Some(l));
    }

    pub fn call(&mut self, helper: i32) {
        self.push(JMP | CALL, R0, R0, 0, helper, None);
    }

    pub fn exit(&mut self) {
        self.push(JMP | EXIT, R0, R0, 0, 0, None);
    }

    /// The encoded program; None when a label was never placed or a jump is out of range.
    pub fn finish(self) -> Option<Vec<u64>> {
        let mut out = Vec::with_capacity(self.code.len());
        for (i, insn) in self.code.iter().enumerate() {
            let mut insn = *insn;
            if let Some(l) = insn.target {
                let at = (*self.labels.get(l.0)?)?;
                insn.off = i16::try_from(at as i64 - i as i64 - 1).ok()?;
            }
            out.push(insn.encode());
        }
        Some(out)
    }
}
