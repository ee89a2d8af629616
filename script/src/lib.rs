//! The SER routing language (`ser.cfg`): parse, check, compile once, run many times.
//!
//! This crate knows nothing of SIP. The host (the server) registers its functions and
//! comparison operands in a [`Registry`]; [`compile`] resolves every name in the script against
//! it, checks arity and the route kinds each function may run in, and lets the host bind each
//! call's literal arguments into its own typed value once. The resulting [`Program`] is run per
//! message with [`Program::run`] against the host's [`Exec`], with no name lookups and no
//! allocation.
//!
//! | file | role |
//! |---|---|
//! | `grammar.pest` | the syntax, single source of truth |
//! | [`ast`] | syntax tree with spans |
//! | `parse.rs` | pest pairs → AST, value classification, readable syntax errors |
//! | `error.rs` | [`ScriptError`] (`file:line:col: msg`), line index |
//! | `registry.rs` | [`Registry`], [`FnEntry`], [`OperandEntry`], [`BindCtx`] |
//! | `check.rs` | route table, `route(n)` targets, route kinds by reachability |
//! | `compile.rs` | binding and code generation |
//! | `vm.rs` | [`Program`], [`Op`], [`Exec`], [`RunOutcome`] |
//! | [`interp`] | reference AST interpreter, the oracle for differential tests |
//! | `testgen.rs` | random-script generator and fake host for differential tests and fuzzing (hidden) |
//!
//! ```
//! use ser_script::{compile, parse, Exec, FnEntry, KindSet, Registry, RouteKind, RunOutcome};
//! # fn main() -> Result<(), ser_script::ScriptError> {
//!
//! let mut reg: Registry<&'static str, ()> = Registry::new();
//! reg.function(FnEntry { name: "t_relay", min_args: 0, max_args: 0, kinds: KindSet::ALL,
//!                        bind: |_, _| Ok("relay") });
//! let script = parse("ser.cfg", "route { t_relay(); break; }")?;
//! let program = compile(&script, &reg)?;
//!
//! struct Host(Vec<&'static str>);
//! impl Exec<&'static str, ()> for Host {
//!     fn call(&mut self, a: &&'static str) -> i32 { self.0.push(*a); 1 }
//!     fn test(&mut self, _: &()) -> bool { true }
//! }
//! let mut host = Host(Vec::new());
//! assert_eq!(program.run(RouteKind::Request, 0, &mut host), RunOutcome::Completed);
//! assert_eq!(host.0, ["relay"]);
//! # Ok(())
//! # }
//! ```

pub mod ast;
mod check;
mod compile;
mod error;
#[doc(hidden)]
pub mod interp;
mod parse;
mod registry;
#[doc(hidden)]
pub mod testgen;
mod vm;

pub use ast::{
    Arg, Call, CmpOp, Expr, IfArm, Item, KindSet, RouteDef, RouteKind, Script, Span, Stmt, Value,
};
pub use compile::compile;
pub use error::{LineIndex, ScriptError};
pub use parse::{classify_word, parse, unescape, MAX_NESTING};
pub use registry::{BindCtx, FnEntry, OperandEntry, Registry};
pub use vm::{Continuation, Exec, Op, Program, Run, RunOutcome, MAX_DEPTH, MAX_STEPS, SUSPEND};
