//! Differential test: random programs run on the bytecode VM and on the reference AST
//! interpreter must produce the same outcome and the same sequence of host calls. A divergence
//! is a compiler or VM bug. The generator and the host are driven by a seeded xorshift, so a
//! failure names its seed and reproduces exactly; a fuzz target can reuse `gen_script`.

use ser_script::{
    compile, interp, parse, Exec, FnEntry, KindSet, OperandEntry, Registry, RouteKind, RunOutcome,
    Value,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Action `f(id)`/`g(id, k)` and condition `c == id` carry a call-site id the host hashes.
fn registry() -> Registry<u32, u32> {
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
struct Host {
    seed: u64,
    n: u64,
    trace: Vec<(char, u32)>,
}

impl Host {
    fn mix(&mut self, id: u32) -> u64 {
        self.n += 1;
        let mut r =
            Rng(self.seed ^ (u64::from(id) << 20) ^ self.n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        r.next();
        r.next()
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

/// Kept small for debug builds; raise it (or use the fuzz target) for a deeper search.
const SEEDS: u64 = 300;

#[test]
fn vm_agrees_with_interpreter() {
    let reg = registry();
    let mut outcomes = std::collections::HashMap::new();
    for seed in 1..=SEEDS {
        let src = gen_script(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let script = parse("gen.cfg", &src).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{src}"));
        let prog = compile(&script, &reg).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{src}"));
        for (kind, index) in [(RouteKind::Request, 0), (RouteKind::Failure, 1)] {
            for host_seed in 0..2u64 {
                let mut a = Host {
                    seed: seed * 7 + host_seed,
                    n: 0,
                    trace: Vec::new(),
                };
                let mut b = Host {
                    seed: seed * 7 + host_seed,
                    n: 0,
                    trace: Vec::new(),
                };
                let oa = prog.run(kind, index, &mut a);
                let ob = interp::interpret(&script, &reg, kind, index, &mut b).expect("interpret");
                assert_eq!(oa, ob, "outcome differs, seed {seed}/{host_seed}:\n{src}");
                assert_eq!(
                    a.trace, b.trace,
                    "trace differs, seed {seed}/{host_seed}:\n{src}"
                );
                *outcomes.entry(format!("{oa:?}")).or_insert(0u32) += 1;
            }
        }
    }
    eprintln!("outcomes: {outcomes:?}");
    // The generator must actually reach the interesting outcomes.
    for o in [
        RunOutcome::Completed,
        RunOutcome::Dropped,
        RunOutcome::Exited(0),
        RunOutcome::DepthExceeded,
    ] {
        assert!(
            outcomes.contains_key(&format!("{o:?}")),
            "never saw {o:?}: {outcomes:?}"
        );
    }
}
