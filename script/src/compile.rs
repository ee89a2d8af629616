//! [`Script`] + [`Registry`] → [`Program`]: name resolution, arity and route-kind checks,
//! binding of every call and comparison to the host's typed values, and code generation.
//!
//! Every call site is bound exactly once, with a [`BindCtx`] that tells the binder which route
//! kinds the site can run in (see `check.rs`). Conditions compile to jumps, so `&&`/`||`
//! short-circuit without a value stack. Globals, `loadmodule` and `modparam` are left to the
//! host. Errors stop compilation at the first one, in source order.

use std::cell::Cell;

use crate::ast::{Call, Expr, KindSet, RouteKind, Script, Span, Stmt};
use crate::check::{analyse, Routes};
use crate::error::ScriptError;
use crate::registry::{BindCtx, Registry};
use crate::vm::{Op, Program};

/// Checks `script` against the host's `reg` and compiles it.
pub fn compile<A, C>(script: &Script, reg: &Registry<A, C>) -> Result<Program<A, C>, ScriptError> {
    let routes = analyse(script)?;
    let mut g = Gen {
        file: &script.file,
        reg,
        routes: &routes,
        ops: Vec::new(),
        spans: Vec::new(),
        actions: Vec::new(),
        conds: Vec::new(),
        kinds: KindSet::EMPTY,
        block: 0,
        calls: Vec::new(),
    };
    let mut starts = Vec::with_capacity(routes.blocks.len());
    for (b, r) in routes.blocks.iter().enumerate() {
        starts.push(g.ops.len() as u32);
        g.kinds = routes.kinds[b];
        g.block = b;
        g.stmts(&r.body)?;
        g.emit(Op::Return, r.span);
    }
    // `route(n)` was emitted with the block number; now that every block has an address, point
    // each call at it.
    for &(pc, b) in &g.calls {
        g.ops[pc] = Op::Call(starts[b]);
    }
    let mut entries: [Vec<(u32, u32)>; 5] = Default::default();
    for (b, r) in routes.blocks.iter().enumerate() {
        entries[r.kind.index()].push((r.index, starts[b]));
    }
    for e in &mut entries {
        e.sort_unstable();
    }
    Ok(Program {
        ops: g.ops,
        spans: g.spans,
        actions: g.actions,
        conds: g.conds,
        entries,
    })
}

struct Gen<'a, A, C> {
    file: &'a str,
    reg: &'a Registry<A, C>,
    routes: &'a Routes<'a>,
    ops: Vec<Op>,
    spans: Vec<Span>,
    actions: Vec<A>,
    conds: Vec<C>,
    /// Kinds the block being compiled can run in.
    kinds: KindSet,
    block: usize,
    /// `(address of a Call op, target block)`, patched at the end.
    calls: Vec<(usize, usize)>,
}

impl<A, C> Gen<'_, A, C> {
    fn emit(&mut self, op: Op, span: Span) -> usize {
        self.ops.push(op);
        self.spans.push(span);
        self.ops.len() - 1
    }

    fn here(&self) -> u32 {
        self.ops.len() as u32
    }

    fn patch(&mut self, at: usize, target: u32) {
        self.ops[at] = match self.ops[at] {
            Op::Jump(_) => Op::Jump(target),
            Op::JumpIfFalse(_) => Op::JumpIfFalse(target),
            Op::JumpIfTrue(_) => Op::JumpIfTrue(target),
            other => other,
        };
    }

    fn err(&self, span: Span, msg: impl Into<String>) -> ScriptError {
        ScriptError::at(self.file, span, msg)
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), ScriptError> {
        for s in body {
            match s {
                Stmt::Call(c) => {
                    let a = self.bind_call(c)?;
                    self.emit(Op::Exec(a), c.span);
                }
                Stmt::If {
                    arms,
                    otherwise,
                    span,
                } => {
                    let mut ends = Vec::new();
                    for arm in arms {
                        self.cond(&arm.cond)?;
                        let skip = self.emit(Op::JumpIfFalse(0), arm.cond.span());
                        self.stmts(&arm.body)?;
                        ends.push(self.emit(Op::Jump(0), *span));
                        let next = self.here();
                        self.patch(skip, next);
                    }
                    if let Some(o) = otherwise {
                        self.stmts(o)?;
                    }
                    let end = self.here();
                    for e in ends {
                        self.patch(e, end);
                    }
                }
                Stmt::Break(span) => {
                    self.emit(Op::Return, *span);
                }
                Stmt::Drop(span) => {
                    self.emit(Op::Drop, *span);
                }
                Stmt::Route { index, span } => {
                    let Some(t) = self.routes.lookup(RouteKind::Request, *index) else {
                        return Err(self.err(*span, format!("route[{index}] is not defined")));
                    };
                    let pc = self.emit(Op::Call(0), *span);
                    self.calls.push((pc, t));
                }
            }
        }
        Ok(())
    }

    /// Leaves the condition's value in the flag.
    fn cond(&mut self, e: &Expr) -> Result<(), ScriptError> {
        match e {
            Expr::Or(terms, span) | Expr::And(terms, span) => {
                let or = matches!(e, Expr::Or(..));
                let mut exits = Vec::new();
                for (i, t) in terms.iter().enumerate() {
                    self.cond(t)?;
                    if i + 1 < terms.len() {
                        let op = if or {
                            Op::JumpIfTrue(0)
                        } else {
                            Op::JumpIfFalse(0)
                        };
                        exits.push(self.emit(op, *span));
                    }
                }
                let end = self.here();
                for x in exits {
                    self.patch(x, end);
                }
            }
            Expr::Not(inner, span) => {
                self.cond(inner)?;
                self.emit(Op::Not, *span);
            }
            Expr::Call(c) => {
                let a = self.bind_call(c)?;
                self.emit(Op::ExecTest(a), c.span);
            }
            Expr::Cmp {
                operand,
                operand_span,
                op,
                rhs,
                span,
            } => {
                let Some(entry) = self.reg.get_operand(operand) else {
                    return Err(self.err(*operand_span, format!("unknown operand '{operand}'")));
                };
                let routes = self.routes;
                let lookup = |k: RouteKind, i: u32| routes.lookup(k, i).is_some();
                let ctx = BindCtx {
                    routes: &lookup,
                    kinds: self.kinds,
                    blame: Cell::new(None),
                    host: self.reg.host(),
                };
                let c = (entry.bind)(*op, rhs, &ctx).map_err(|m| {
                    let at = if ctx.blame.get().is_some() {
                        rhs.span
                    } else {
                        *span
                    };
                    self.err(at, format!("{operand} {op} {}: {m}", rhs.value))
                })?;
                let n = self.conds.len() as u32;
                self.conds.push(c);
                self.emit(Op::Test(n), *span);
            }
        }
        Ok(())
    }

    /// Resolves, checks and binds one call site; returns its action number.
    fn bind_call(&mut self, c: &Call) -> Result<u32, ScriptError> {
        let Some(f) = self.reg.get_function(&c.name) else {
            let msg = match self.reg.hint_for(&c.name) {
                Some(h) => format!("unknown function '{}': {h}", c.name),
                None => format!("unknown function '{}'", c.name),
            };
            return Err(self.err(c.span, msg));
        };
        let n = c.args.len();
        if n < f.min_args as usize || n > f.max_args as usize {
            let want = match (f.min_args, f.max_args) {
                (0, 0) => "no arguments".to_owned(),
                (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
                (a, b) => format!("{a} to {b} arguments"),
            };
            return Err(self.err(
                c.span,
                format!("function '{}' takes {want}, got {n}", c.name),
            ));
        }
        if let Some(bad) = self.kinds.iter().find(|k| !f.kinds.contains(*k)) {
            let mut msg = format!("function '{}' is not allowed in {bad}", c.name);
            if let Some(path) = self.routes.path_from_entry(self.block, bad) {
                msg.push_str(&format!(" (reached via {path})"));
            }
            return Err(self.err(c.span, msg));
        }
        let routes = self.routes;
        let lookup = |k: RouteKind, i: u32| routes.lookup(k, i).is_some();
        let ctx = BindCtx {
            routes: &lookup,
            kinds: self.kinds,
            blame: Cell::new(None),
            host: self.reg.host(),
        };
        let a = (f.bind)(&c.args, &ctx).map_err(|m| {
            match ctx.blame.get().and_then(|i| c.args.get(i)) {
                Some(arg) => self.err(arg.span, format!("{}: {m}", c.name)),
                None => self.err(c.span, format!("{}: {m}", c.name)),
            }
        })?;
        let id = self.actions.len() as u32;
        self.actions.push(a);
        Ok(id)
    }
}
