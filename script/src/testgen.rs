//! The random-script generator and fake host of the differential test (VM against the
//! reference interpreter), shared by `tests/differential.rs` and the `vm_diff` fuzz target.
//! Not part of the crate's API.
//!
//! [`gen_script`] writes a random script over the functions `f(id)`, `g(id, k)` and the operand
//! `c == id` of [`registry`]; [`Host`] answers each call from a seeded xorshift (or from fuzz
//! input bytes) and records the call trace, so a divergence reproduces from its seed.

use crate::ast::{KindSet, Value};
use crate::registry::{FnEntry, OperandEntry, Registry};
use crate::vm::Exec;

/// xorshift64; a zero seed is forced odd by its users.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        // xorshift64
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Action `f(id)`/`g(id, k)` and condition `c == id` carry a call-site id the host hashes.
pub fn registry() -> Registry<u32, u32> {
    let mut r = Registry::new();
    r.function(FnEntry {
        name: "f",
        min_args: 1,
        max_args: 1,
        kinds: KindSet::ALL,
        bind: |a, _| Ok(id_of(&a[0].value)),
    });
    r.function(FnEntry {
        name: "g",
        min_args: 2,
        max_args: 2,
        kinds: KindSet::ALL,
        bind: |a, _| Ok(id_of(&a[0].value) + 1000 * id_of(&a[1].value)),
    });
    r.operand(OperandEntry {
        name: "c",
        bind: |_, rhs, _| Ok(id_of(&rhs.value)),
    });
    r
}

fn id_of(v: &Value) -> u32 {
    match v {
        Value::Int(n) => *n as u32,
        _ => 0,
    }
}

/// Results depend on the call-site id and on how many host calls came before, so repeated
/// calls of one site (recursion) see different values.
pub struct Host {
    pub seed: u64,
    pub n: u64,
    /// Every host interaction in order: `('a', action)` or `('t', condition)`.
    pub trace: Vec<(char, u32)>,
    /// When not empty, results are read from these bytes in turn (cycling) instead of being
    /// derived from `seed`: the fuzz target's input.
    pub script: Vec<u8>,
}

impl Host {
    /// A host whose results are derived from `seed`.
    pub fn seeded(seed: u64) -> Host {
        Host {
            seed,
            n: 0,
            trace: Vec::new(),
            script: Vec::new(),
        }
    }

    /// A host whose results are read from `bytes` (falling back to `seed` if it is empty).
    pub fn scripted(seed: u64, bytes: &[u8]) -> Host {
        Host {
            script: bytes.to_vec(),
            ..Host::seeded(seed)
        }
    }
}

impl Host {
    fn mix(&mut self, id: u32) -> u64 {
        self.n += 1;
        if !self.script.is_empty() {
            let i = ((self.n - 1) % self.script.len() as u64) as usize;
            return u64::from(self.script[i]);
        }
        let mut r =
            Rng(self.seed ^ (u64::from(id) << 20) ^ self.n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        r.next_u64();
        r.next_u64()
    }
}

impl Exec<u32, u32> for Host {
    fn call(&mut self, a: &u32) -> i32 {
        self.trace.push(('a', *a));
        match self.mix(*a) % 16 {
            0 => 0,
            1..=7 => -1 - (self.n % 3) as i32,
            _ => 1 + (self.n % 2) as i32,
        }
    }
    fn test(&mut self, c: &u32) -> bool {
        self.trace.push(('t', *c));
        self.mix(*c) % 2 == 0
    }
}

struct Gen {
    rng: Rng,
    next_id: u32,
    routes: u32,
    /// The block being generated; calls mostly go to later blocks so that recursion (which
    /// multiplies the work of a run) stays occasional.
    current: u32,
}

impl Gen {
    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn cond(&mut self, depth: u32) -> String {
        let pick = if depth > 1 {
            self.rng.below(3)
        } else {
            self.rng.below(7)
        };
        match pick {
            0 => format!("f({})", self.id()),
            1 => format!("c == {}", self.id()),
            2 => format!("!c == {}", self.id()),
            3 => format!("{} && {}", self.cond(depth + 1), self.cond(depth + 1)),
            4 => format!(
                "{} || {} | {}",
                self.cond(depth + 1),
                self.cond(depth + 1),
                self.cond(depth + 1)
            ),
            5 => format!("!({})", self.cond(depth + 1)),
            _ => format!(
                "({} or {} and {})",
                self.cond(depth + 1),
                self.cond(depth + 1),
                self.cond(depth + 1)
            ),
        }
    }

    fn stmts(&mut self, depth: u32, out: &mut String) {
        let n = 1 + self.rng.below(4);
        for _ in 0..n {
            let pick = if depth > 2 {
                self.rng.below(6)
            } else {
                self.rng.below(10)
            };
            match pick {
                0..=2 => out.push_str(&format!("f({});\n", self.id())),
                3 => {
                    let (a, b) = (self.id(), self.rng.below(5));
                    out.push_str(&format!("g({a}, {b});\n"));
                }
                4 => {
                    let back = self.rng.below(6) == 0;
                    let later = self.routes - 1 - self.current.min(self.routes - 1);
                    let r = if back || later == 0 {
                        self.rng.below(u64::from(self.routes)) as u32
                    } else {
                        self.current + 1 + self.rng.below(u64::from(later)) as u32
                    };
                    out.push_str(&format!("route({r});\n"));
                }
                5 => out.push_str(if self.rng.below(4) == 0 {
                    "drop;\n"
                } else {
                    "break;\n"
                }),
                _ => {
                    let c = self.cond(0);
                    out.push_str(&format!("if ({c}) {{\n"));
                    self.stmts(depth + 1, out);
                    let chain = self.rng.below(3);
                    for _ in 0..chain {
                        let c = self.cond(0);
                        out.push_str(&format!("}} else if ({c}) {{\n"));
                        self.stmts(depth + 1, out);
                    }
                    if self.rng.below(2) == 0 {
                        out.push_str("} else {\n");
                        self.stmts(depth + 1, out);
                    }
                    out.push_str("};\n");
                }
            }
        }
    }
}

/// A random script with `route[0..n]` and `failure_route[1]`.
pub fn gen_script(seed: u64) -> String {
    let mut g = Gen {
        rng: Rng(seed | 1),
        next_id: 0,
        routes: 0,
        current: 0,
    };
    g.routes = 1 + g.rng.below(5) as u32;
    let mut src = String::new();
    for r in 0..g.routes {
        g.current = r;
        src.push_str(&format!("route[{r}] {{\n"));
        g.stmts(0, &mut src);
        src.push_str("}\n");
    }
    g.current = 0;
    src.push_str("failure_route[1] {\n");
    g.stmts(0, &mut src);
    src.push_str("}\n");
    src
}
