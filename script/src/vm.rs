//! The compiled script ([`Program`]) and the machine that runs it.
//!
//! A `Program` is flat bytecode ([`Op`]) for all route blocks, the host's bound action values
//! (`A`) and condition values (`C`) in two tables the ops index, an entry table per route
//! kind, and a side table of source spans (instructions carry no positions). It is immutable
//! after `compile` and is shared by every shard; `Send + Sync` when `A` and `C` are.
//!
//! [`Program::run`] executes one route block against the host's [`Exec`]: no name lookups, no
//! heap allocation (the `route()` return stack is a fixed array), and bounded work — at most
//! [`MAX_DEPTH`] nested route blocks and [`MAX_STEPS`] host calls per run.
//!
//! Semantics (SER 0.8): an action returns an int; positive is success/true, negative is false,
//! zero ends the whole script. `break` leaves the current block (ending the script in the entry
//! block), `drop` ends the script, `route(n)` runs `route[n]` and continues after it. `&&` and
//! `||` short-circuit.

use std::fmt;

use crate::ast::{RouteKind, Span};

/// Most route blocks active at once in one run, the entry block included.
pub const MAX_DEPTH: usize = 100;

/// Most host interactions (action calls, condition tests, `route()` calls) in one run.
pub const MAX_STEPS: u32 = 100_000;

/// What [`Exec::call`] returns to pause the run: the host started work that must finish
/// off the calling thread (an external program) and will hand the action's result to
/// [`Program::resume`] with the [`Continuation`] the run returned.
pub const SUSPEND: i32 = i32::MIN;

/// Where a suspended run stands: enough to go on with [`Program::resume`] (a few words and
/// the `route()` return addresses; owns nothing of the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// The instruction after the suspending action.
    pc: u32,
    /// Return addresses of the active `route()` calls.
    stack: Vec<u32>,
    steps: u32,
    /// The suspending action was a condition (its result sets the flag).
    test: bool,
}

/// A run that finished, or paused at an action that returned [`SUSPEND`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Done(RunOutcome),
    Suspended(Continuation),
}

/// The host side of a run: performs the bound actions and evaluates the bound conditions.
pub trait Exec<A, C> {
    /// Performs an action: positive is success, negative failure, zero ends the script.
    fn call(&mut self, action: &A) -> i32;
    /// Evaluates a comparison.
    fn test(&mut self, cond: &C) -> bool;
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    /// The entry block finished or executed `break`.
    Completed,
    /// `drop` was executed.
    Dropped,
    /// An action returned this value, zero, which ends the script.
    Exited(i32),
    /// `route()` calls nested deeper than [`MAX_DEPTH`].
    DepthExceeded,
    /// More than [`MAX_STEPS`] host interactions (runaway recursion).
    BudgetExceeded,
    /// The script has no block of the requested kind and index.
    NoSuchRoute,
    /// An action returned [`SUSPEND`] to a plain [`Program::run`], which cannot pause: the
    /// run ended there (use [`Program::start`] to be able to resume).
    Suspended,
}

/// One instruction. The machine has a program counter, one boolean flag (the value of the
/// condition being evaluated) and a stack of return addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Perform action `n` as a statement; a zero result ends the script.
    Exec(u32),
    /// Perform action `n` as a condition: flag = result > 0; a zero result ends the script.
    ExecTest(u32),
    /// flag = test condition `n`.
    Test(u32),
    /// flag = !flag.
    Not,
    /// Continue at the address.
    Jump(u32),
    /// Continue at the address if the flag is false.
    JumpIfFalse(u32),
    /// Continue at the address if the flag is true.
    JumpIfTrue(u32),
    /// Push the return address and continue at the address (a `route[n]` block's start).
    Call(u32),
    /// End of block or `break`: pop a return address, or complete the run in the entry block.
    Return,
    /// `drop`: end the run.
    Drop,
}

/// A compiled script.
pub struct Program<A, C> {
    pub(crate) ops: Vec<Op>,
    /// `spans[pc]`: the source construct `ops[pc]` came from.
    pub(crate) spans: Vec<Span>,
    pub(crate) actions: Vec<A>,
    pub(crate) conds: Vec<C>,
    /// Per kind, `(index, start address)` sorted by index.
    pub(crate) entries: [Vec<(u32, u32)>; 5],
}

impl<A, C> Program<A, C> {
    /// Whether the script defines `kind[index]`.
    pub fn has_route(&self, kind: RouteKind, index: u32) -> bool {
        self.entry(kind, index).is_some()
    }

    fn entry(&self, kind: RouteKind, index: u32) -> Option<u32> {
        let e = &self.entries[kind.index()];
        e.binary_search_by_key(&index, |&(i, _)| i)
            .ok()
            .map(|p| e[p].1)
    }

    /// The indexes of the defined blocks of `kind`, ascending.
    pub fn routes(&self, kind: RouteKind) -> impl Iterator<Item = u32> + '_ {
        self.entries[kind.index()].iter().map(|&(i, _)| i)
    }

    /// The bytecode, for inspection and tests.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The source span an instruction came from.
    pub fn span_of(&self, pc: usize) -> Option<Span> {
        self.spans.get(pc).copied()
    }

    /// The bound action values, in the order the ops refer to them.
    pub fn actions(&self) -> &[A] {
        &self.actions
    }

    /// The bound condition values, in the order the ops refer to them.
    pub fn conds(&self) -> &[C] {
        &self.conds
    }

    /// Runs block `kind[index]` to its end (an action that suspends ends it:
    /// [`RunOutcome::Suspended`]).
    pub fn run<X: Exec<A, C>>(&self, kind: RouteKind, index: u32, x: &mut X) -> RunOutcome {
        match self.start(kind, index, x) {
            Run::Done(o) => o,
            Run::Suspended(_) => RunOutcome::Suspended,
        }
    }

    /// Runs block `kind[index]` until it ends or an action returns [`SUSPEND`].
    pub fn start<X: Exec<A, C>>(&self, kind: RouteKind, index: u32, x: &mut X) -> Run {
        let Some(start) = self.entry(kind, index) else {
            return Run::Done(RunOutcome::NoSuchRoute);
        };
        let mut stack = [0u32; MAX_DEPTH];
        self.exec(start as usize, &mut stack, 1, 0, false, x)
    }

    /// Goes on with a suspended run; `result` is what the suspending action returned in the
    /// end (positive success, negative failure, zero ends the script).
    pub fn resume<X: Exec<A, C>>(&self, k: Continuation, result: i32, x: &mut X) -> Run {
        if result == 0 {
            return Run::Done(RunOutcome::Exited(0));
        }
        let mut stack = [0u32; MAX_DEPTH];
        let depth = k.stack.len().min(MAX_DEPTH - 1);
        stack[..depth].copy_from_slice(&k.stack[..depth]);
        let flag = k.test && result > 0;
        self.exec(k.pc as usize, &mut stack, depth + 1, k.steps, flag, x)
    }

    fn exec<X: Exec<A, C>>(
        &self,
        mut pc: usize,
        stack: &mut [u32; MAX_DEPTH],
        mut depth: usize, // active blocks; stack[..depth - 1] holds return addresses
        mut steps: u32,
        mut flag: bool,
        x: &mut X,
    ) -> Run {
        use RunOutcome as O;
        loop {
            // `compile` guarantees every address is in range and every block ends in Return;
            // a malformed program ends the run instead of panicking.
            let Some(&op) = self.ops.get(pc) else {
                return Run::Done(O::Completed);
            };
            pc += 1;
            match op {
                Op::Exec(a) | Op::ExecTest(a) => {
                    steps += 1;
                    if steps > MAX_STEPS {
                        return Run::Done(O::BudgetExceeded);
                    }
                    let Some(action) = self.actions.get(a as usize) else {
                        return Run::Done(O::Completed);
                    };
                    let r = x.call(action);
                    if r == SUSPEND {
                        return Run::Suspended(Continuation {
                            pc: pc as u32,
                            stack: stack[..depth - 1].to_vec(),
                            steps,
                            test: matches!(op, Op::ExecTest(_)),
                        });
                    }
                    if r == 0 {
                        return Run::Done(O::Exited(0));
                    }
                    if matches!(op, Op::ExecTest(_)) {
                        flag = r > 0;
                    }
                }
                Op::Test(c) => {
                    steps += 1;
                    if steps > MAX_STEPS {
                        return Run::Done(O::BudgetExceeded);
                    }
                    let Some(cond) = self.conds.get(c as usize) else {
                        return Run::Done(O::Completed);
                    };
                    flag = x.test(cond);
                }
                Op::Not => flag = !flag,
                Op::Jump(t) => pc = t as usize,
                Op::JumpIfFalse(t) => {
                    if !flag {
                        pc = t as usize;
                    }
                }
                Op::JumpIfTrue(t) => {
                    if flag {
                        pc = t as usize;
                    }
                }
                Op::Call(t) => {
                    steps += 1;
                    if steps > MAX_STEPS {
                        return Run::Done(O::BudgetExceeded);
                    }
                    if depth >= MAX_DEPTH {
                        return Run::Done(O::DepthExceeded);
                    }
                    stack[depth - 1] = pc as u32;
                    depth += 1;
                    pc = t as usize;
                }
                Op::Return => {
                    if depth == 1 {
                        return Run::Done(O::Completed);
                    }
                    depth -= 1;
                    pc = stack[depth - 1] as usize;
                }
                Op::Drop => return Run::Done(O::Dropped),
            }
        }
    }
}

impl<A, C> fmt::Display for Program<A, C> {
    /// A listing: block headers, then `address  op  ; line:col` per instruction.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut heads: Vec<(u32, RouteKind, u32)> = Vec::new();
        for k in RouteKind::ALL {
            heads.extend(self.entries[k.index()].iter().map(|&(i, s)| (s, k, i)));
        }
        heads.sort();
        for (pc, op) in self.ops.iter().enumerate() {
            for &(_, k, i) in heads.iter().filter(|h| h.0 as usize == pc) {
                writeln!(f, "{k}[{i}]:")?;
            }
            let s = self.spans.get(pc).copied().unwrap_or_default();
            writeln!(
                f,
                "{pc:5}  {:<18} ; {}:{}",
                format!("{op:?}"),
                s.line,
                s.col
            )?;
        }
        Ok(())
    }
}
