//! The reference interpreter: runs a [`Script`]'s syntax tree directly, as an oracle for the
//! bytecode VM in differential tests and fuzzing.
//!
//! It shares nothing with `compile.rs` and `vm.rs` but the registry: it looks names up and
//! binds every call each time it is executed, recurses in Rust for `route(n)`, and does no
//! route-kind checking. It is slow on purpose — simple enough to be obviously right — and is
//! not for production use. It implements the same limits ([`MAX_DEPTH`], [`MAX_STEPS`]) counted
//! the same way, so outcomes agree exactly.

use std::collections::HashMap;

use crate::ast::{Expr, KindSet, RouteDef, RouteKind, Script, Stmt};
use crate::error::ScriptError;
use crate::registry::{BindCtx, Registry};
use crate::vm::{Exec, RunOutcome, MAX_DEPTH, MAX_STEPS};

/// Runs `kind[index]` of `script` with the functions of `reg`. Errors are name or binding
/// errors `compile` would have reported (the interpreter meets them only when it executes
/// them).
pub fn interpret<A, C, X: Exec<A, C>>(
    script: &Script,
    reg: &Registry<A, C>,
    kind: RouteKind,
    index: u32,
    x: &mut X,
) -> Result<RunOutcome, ScriptError> {
    let routes: HashMap<(RouteKind, u32), &RouteDef> =
        script.routes().map(|r| ((r.kind, r.index), r)).collect();
    let Some(entry) = routes.get(&(kind, index)) else {
        return Ok(RunOutcome::NoSuchRoute);
    };
    let mut it = Interp {
        script,
        reg,
        routes: &routes,
        kinds: kind.set(),
        steps: 0,
        x,
    };
    Ok(match it.block(&entry.body, 1)? {
        Flow::Next | Flow::Break => RunOutcome::Completed,
        Flow::End(o) => o,
    })
}

enum Flow {
    Next,
    /// `break`: leave the current route block.
    Break,
    /// The whole run is over.
    End(RunOutcome),
}

struct Interp<'a, A, C, X> {
    script: &'a Script,
    reg: &'a Registry<A, C>,
    routes: &'a HashMap<(RouteKind, u32), &'a RouteDef>,
    kinds: KindSet,
    steps: u32,
    x: &'a mut X,
}

/// The value of a condition, or the end of the run (an action in it returned zero).
enum Truth {
    Val(bool),
    End(RunOutcome),
}

impl<A, C, X: Exec<A, C>> Interp<'_, A, C, X> {
    fn err(&self, span: crate::ast::Span, msg: String) -> ScriptError {
        ScriptError::at(&self.script.file, span, msg)
    }

    fn step(&mut self) -> bool {
        self.steps += 1;
        self.steps <= MAX_STEPS
    }

    /// Runs statements of a block at route depth `depth`.
    fn block(&mut self, body: &[Stmt], depth: usize) -> Result<Flow, ScriptError> {
        for s in body {
            let f = match s {
                Stmt::Call(c) => match self.call(c)? {
                    Truth::End(o) => Flow::End(o),
                    Truth::Val(_) => Flow::Next,
                },
                Stmt::If {
                    arms, otherwise, ..
                } => {
                    let mut chosen = None;
                    for arm in arms {
                        match self.cond(&arm.cond)? {
                            Truth::End(o) => return Ok(Flow::End(o)),
                            Truth::Val(true) => {
                                chosen = Some(&arm.body);
                                break;
                            }
                            Truth::Val(false) => {}
                        }
                    }
                    match chosen.or(otherwise.as_ref()) {
                        Some(b) => self.block(b, depth)?,
                        None => Flow::Next,
                    }
                }
                Stmt::Break(_) => Flow::Break,
                Stmt::Drop(_) => Flow::End(RunOutcome::Dropped),
                Stmt::Route { index, span } => {
                    if !self.step() {
                        return Ok(Flow::End(RunOutcome::BudgetExceeded));
                    }
                    let Some(r) = self.routes.get(&(RouteKind::Request, *index)) else {
                        return Err(self.err(*span, format!("route[{index}] is not defined")));
                    };
                    if depth >= MAX_DEPTH {
                        return Ok(Flow::End(RunOutcome::DepthExceeded));
                    }
                    match self.block(&r.body, depth + 1)? {
                        Flow::End(o) => Flow::End(o),
                        Flow::Next | Flow::Break => Flow::Next,
                    }
                }
            };
            if !matches!(f, Flow::Next) {
                return Ok(f);
            }
        }
        Ok(Flow::Next)
    }

    fn call(&mut self, c: &crate::ast::Call) -> Result<Truth, ScriptError> {
        let Some(f) = self.reg.get_function(&c.name) else {
            return Err(self.err(c.span, format!("unknown function '{}'", c.name)));
        };
        if c.args.len() < f.min_args as usize || c.args.len() > f.max_args as usize {
            return Err(self.err(
                c.span,
                format!("function '{}': wrong number of arguments", c.name),
            ));
        }
        let routes = self.routes;
        let lookup = |k: RouteKind, i: u32| routes.contains_key(&(k, i));
        let a = BindCtx::detached(&lookup, self.kinds, |ctx| (f.bind)(&c.args, ctx))
            .map_err(|m| self.err(c.span, m))?;
        if !self.step() {
            return Ok(Truth::End(RunOutcome::BudgetExceeded));
        }
        Ok(match self.x.call(&a) {
            0 => Truth::End(RunOutcome::Exited(0)),
            r => Truth::Val(r > 0),
        })
    }

    fn cond(&mut self, e: &Expr) -> Result<Truth, ScriptError> {
        Ok(match e {
            Expr::Or(terms, _) | Expr::And(terms, _) => {
                let or = matches!(e, Expr::Or(..));
                let mut v = false;
                for t in terms {
                    match self.cond(t)? {
                        Truth::End(o) => return Ok(Truth::End(o)),
                        Truth::Val(b) => v = b,
                    }
                    if v == or {
                        break;
                    }
                }
                Truth::Val(v)
            }
            Expr::Not(inner, _) => match self.cond(inner)? {
                Truth::Val(b) => Truth::Val(!b),
                end => end,
            },
            Expr::Call(c) => self.call(c)?,
            Expr::Cmp {
                operand,
                operand_span,
                op,
                rhs,
                ..
            } => {
                let Some(o) = self.reg.get_operand(operand) else {
                    return Err(self.err(*operand_span, format!("unknown operand '{operand}'")));
                };
                let routes = self.routes;
                let lookup = |k: RouteKind, i: u32| routes.contains_key(&(k, i));
                let c = BindCtx::detached(&lookup, self.kinds, |ctx| (o.bind)(*op, rhs, ctx))
                    .map_err(|m| self.err(rhs.span, m))?;
                if !self.step() {
                    return Ok(Truth::End(RunOutcome::BudgetExceeded));
                }
                Truth::Val(self.x.test(&c))
            }
        })
    }
}
