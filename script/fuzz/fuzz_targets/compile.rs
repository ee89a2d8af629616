//! Fuzz target: arbitrary text through `parse` → `compile` (permissive registry) → `Program::run`
//! of every route block, plus checks of the compiled program's invariants and, for scripts of
//! modest nesting, the reference interpreter as an oracle.
//!
//! Input: `script [0x00 host-bytes]`. The script part is read as UTF-8 (lossily). The host
//! answers action calls and condition tests from the host bytes in turn (cycling); without
//! them every action returns 1 and conditions alternate true/false.
#![no_main]

use std::collections::{BTreeSet, HashSet};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use ser_script::{
    compile, interp, parse, Arg, BindCtx, CmpOp, Exec, Expr, FnEntry, Item, KindSet, Op,
    OperandEntry, Program, Registry, RouteKind, RunOutcome, Script, Stmt, Value,
};

/// Most route blocks run per input, to keep every input within a few milliseconds.
const MAX_RUNS: usize = 24;
/// The interpreter recurses in Rust per `if` level and per `route()` level; it is only used as
/// an oracle where that recursion stays small.
const MAX_IF_NESTING_FOR_INTERP: usize = 8;

/// Registry names must be `&'static str`: intern every name once (a few bytes per distinct
/// name the fuzzer invents; reachable from a static, so not a leak to LeakSanitizer).
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = set.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
    set.insert(s);
    s
}

#[derive(Default)]
struct Names {
    fns: BTreeSet<String>,
    operands: BTreeSet<String>,
    /// Deepest nesting of `if` statements.
    if_depth: usize,
}

fn walk_stmts(body: &[Stmt], depth: usize, n: &mut Names) {
    n.if_depth = n.if_depth.max(depth);
    for s in body {
        match s {
            Stmt::Call(c) => {
                n.fns.insert(c.name.clone());
            }
            Stmt::If {
                arms, otherwise, ..
            } => {
                for a in arms {
                    walk_expr(&a.cond, n);
                    walk_stmts(&a.body, depth + 1, n);
                }
                if let Some(o) = otherwise {
                    walk_stmts(o, depth + 1, n);
                }
            }
            Stmt::Break(_) | Stmt::Drop(_) | Stmt::Route { .. } => {}
        }
    }
}

fn walk_expr(e: &Expr, n: &mut Names) {
    match e {
        Expr::Or(t, _) | Expr::And(t, _) => t.iter().for_each(|t| walk_expr(t, n)),
        Expr::Not(i, _) => walk_expr(i, n),
        Expr::Call(c) => {
            n.fns.insert(c.name.clone());
        }
        Expr::Cmp { operand, .. } => {
            n.operands.insert(operand.clone());
        }
    }
}

/// Asks the context about every integer argument, as a host binder checking route numbers
/// would; accepts everything.
fn touch(args: &[Arg], ctx: &BindCtx<'_>) -> u32 {
    let mut h = args.len() as u32;
    for a in args {
        if let Value::Int(i) = a.value {
            if let Ok(i) = u32::try_from(i) {
                for k in RouteKind::ALL {
                    h = h.wrapping_mul(31) + u32::from(ctx.has_route(k, i));
                }
            }
        }
        let _ = a.value.to_string();
    }
    // `compile` passes every kind the call site can run in, the interpreter only the kind of
    // the run at hand, so the value must not depend on it (the oracle compares values).
    let _ = ctx.kinds().iter().count();
    h
}

fn permissive(names: &Names) -> Registry<u32, u32> {
    let mut reg = Registry::new();
    for f in &names.fns {
        reg.function(FnEntry {
            name: intern(f),
            min_args: 0,
            max_args: u8::MAX,
            kinds: KindSet::ALL,
            bind: |args, ctx| Ok(touch(args, ctx)),
        });
    }
    for o in &names.operands {
        reg.operand(OperandEntry {
            name: intern(o),
            bind: |op: CmpOp, rhs, ctx| Ok(touch(std::slice::from_ref(rhs), ctx) ^ op as u32),
        });
    }
    reg
}

struct Host<'a> {
    bytes: &'a [u8],
    n: usize,
    trace: Vec<(bool, u32)>,
}

impl Host<'_> {
    fn next(&mut self) -> Option<u8> {
        self.n += 1;
        if self.bytes.is_empty() {
            None
        } else {
            Some(self.bytes[(self.n - 1) % self.bytes.len()])
        }
    }
}

impl Exec<u32, u32> for Host<'_> {
    fn call(&mut self, a: &u32) -> i32 {
        self.trace.push((true, *a));
        match self.next() {
            None => 1,
            Some(b) => match b % 8 {
                0 => 0,
                1..=3 => -1 - i32::from(b >> 6),
                _ => 1 + i32::from(b >> 6),
            },
        }
    }
    fn test(&mut self, c: &u32) -> bool {
        self.trace.push((false, *c));
        match self.next() {
            None => self.n % 2 == 0,
            Some(b) => b & 0x10 != 0,
        }
    }
}

/// What `compile` guarantees and the VM relies on (it ends the run instead of panicking on a
/// malformed program, which would hide a compiler bug).
fn check_program(p: &Program<u32, u32>) {
    let ops = p.ops();
    assert!(p.span_of(ops.len().saturating_sub(1)).is_some() || ops.is_empty());
    assert!(p.span_of(ops.len()).is_none());
    for (pc, op) in ops.iter().enumerate() {
        match *op {
            Op::Exec(a) | Op::ExecTest(a) => assert!((a as usize) < p.actions().len(), "{pc}"),
            Op::Test(c) => assert!((c as usize) < p.conds().len(), "{pc}"),
            Op::Jump(t) | Op::JumpIfFalse(t) | Op::JumpIfTrue(t) | Op::Call(t) => {
                assert!(
                    (t as usize) < ops.len(),
                    "jump out of range at {pc}: {op:?}"
                )
            }
            Op::Not | Op::Return | Op::Drop => {}
        }
    }
    if let Some(last) = ops.last() {
        assert_eq!(*last, Op::Return, "the last block does not end in Return");
    }
}

fn run_one(data: &[u8]) {
    let (text, host_bytes) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let src = String::from_utf8_lossy(text);
    let script: Script = match parse("fuzz.cfg", &src) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut names = Names::default();
    for item in &script.items {
        if let Item::Route(r) = item {
            walk_stmts(&r.body, 0, &mut names);
        }
    }
    let reg = permissive(&names);
    let prog = match compile(&script, &reg) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    check_program(&prog);
    let _ = prog.to_string();
    let oracle = names.if_depth <= MAX_IF_NESTING_FOR_INTERP;
    let mut runs = 0;
    for kind in RouteKind::ALL {
        let indexes: Vec<u32> = prog.routes(kind).collect();
        for index in indexes {
            if runs == MAX_RUNS {
                return;
            }
            runs += 1;
            assert!(prog.has_route(kind, index));
            let mut a = Host {
                bytes: host_bytes,
                n: 0,
                trace: Vec::new(),
            };
            let oa = prog.run(kind, index, &mut a);
            assert_ne!(oa, RunOutcome::NoSuchRoute);
            if oracle {
                let mut b = Host {
                    bytes: host_bytes,
                    n: 0,
                    trace: Vec::new(),
                };
                let ob = interp::interpret(&script, &reg, kind, index, &mut b)
                    .unwrap_or_else(|e| panic!("interpreter rejects a compiled script: {e}"));
                assert_eq!(oa, ob, "{kind}[{index}]: VM and interpreter disagree");
                assert!(a.trace == b.trace, "{kind}[{index}]: call traces differ");
            }
        }
        if !prog.has_route(kind, u32::MAX) {
            let mut h = Host {
                bytes: host_bytes,
                n: 0,
                trace: Vec::new(),
            };
            assert_eq!(prog.run(kind, u32::MAX, &mut h), RunOutcome::NoSuchRoute);
        }
    }
}

fuzz_target!(|data: &[u8]| run_one(data));
