//! A small fake host shared by the integration tests: a handful of functions and operands,
//! and an `Exec` that records what ran.

#![allow(dead_code)]

use ser_script::{
    compile, interp, parse, Arg, CmpOp, Exec, FnEntry, KindSet, OperandEntry, Program, Registry,
    RouteKind, RunOutcome, ScriptError, Value,
};

#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Return this value.
    Ret(i32),
    /// Record the number in the trace, return 1.
    Mark(i64),
    /// Record the name in the trace, return 1.
    Named(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub operand: &'static str,
    pub op: CmpOp,
    pub rhs: Value,
}

fn int(a: &Arg) -> Option<i64> {
    match &a.value {
        Value::Int(n) => Some(*n),
        Value::Str(s) => s.parse().ok(),
        _ => None,
    }
}

pub fn registry() -> Registry<Act, Cond> {
    let mut r = Registry::new();
    r.function(FnEntry {
        name: "ret",
        min_args: 1,
        max_args: 1,
        kinds: KindSet::ALL,
        bind: |a, ctx| match int(&a[0]) {
            Some(n) => Ok(Act::Ret(n as i32)),
            None => Err(ctx.fail_at(0, "expected a number")),
        },
    });
    r.function(FnEntry {
        name: "mark",
        min_args: 1,
        max_args: 1,
        kinds: KindSet::ALL,
        bind: |a, ctx| {
            int(&a[0])
                .map(Act::Mark)
                .ok_or_else(|| ctx.fail_at(0, "expected a number"))
        },
    });
    r.function(FnEntry {
        name: "log",
        min_args: 1,
        max_args: 2,
        kinds: KindSet::ALL,
        bind: |_, _| Ok(Act::Named("log")),
    });
    r.function(FnEntry {
        name: "sl_send_reply",
        min_args: 2,
        max_args: 2,
        kinds: KindSet::REQUEST,
        bind: |_, _| Ok(Act::Named("sl_send_reply")),
    });
    r.function(FnEntry {
        name: "t_relay",
        min_args: 0,
        max_args: 0,
        kinds: KindSet::REQUEST | KindSet::FAILURE,
        bind: |_, _| Ok(Act::Named("t_relay")),
    });
    r.function(FnEntry {
        name: "t_on_failure",
        min_args: 1,
        max_args: 1,
        kinds: KindSet::REQUEST,
        bind: |a, ctx| match int(&a[0]) {
            Some(n) if ctx.has_route(RouteKind::Failure, n as u32) => {
                Ok(Act::Named("t_on_failure"))
            }
            Some(n) => Err(ctx.fail_at(0, format!("failure_route[{n}] is not defined"))),
            None => Err(ctx.fail_at(0, "expected a route number")),
        },
    });
    r.function(FnEntry {
        name: "forward",
        min_args: 1,
        max_args: 2,
        kinds: KindSet::REQUEST,
        bind: |a, ctx| match a.get(1).map(|p| &p.value) {
            None | Some(Value::Int(_)) | Some(Value::Ident(_)) => Ok(Act::Named("forward")),
            Some(_) => Err(ctx.fail_at(1, "port must be a number")),
        },
    });
    r.alias("relay", "t_relay");
    r.operand(OperandEntry {
        name: "x",
        bind: |op, rhs, _| {
            Ok(Cond {
                operand: "x",
                op,
                rhs: rhs.value.clone(),
            })
        },
    });
    r.operand(OperandEntry {
        name: "method",
        bind: |op, rhs, _| {
            Ok(Cond {
                operand: "method",
                op,
                rhs: rhs.value.clone(),
            })
        },
    });
    r.operand(OperandEntry {
        name: "uri",
        bind: |op, rhs, ctx| match (&rhs.value, op) {
            (Value::Myself, CmpOp::Eq | CmpOp::Ne) | (Value::Str(_), _) => Ok(Cond {
                operand: "uri",
                op,
                rhs: rhs.value.clone(),
            }),
            _ => Err(ctx.fail_at(0, "expected a string or myself")),
        },
    });
    r.unknown_hint(|name| {
        name.starts_with("t_")
            .then(|| "exported by module 'tm'; is it loaded?".to_owned())
    });
    r
}

/// Records what ran. Conditions `x == n` are true when the host's `x` equals `n`.
#[derive(Default)]
pub struct Host {
    pub x: i64,
    pub trace: Vec<String>,
}

impl Exec<Act, Cond> for Host {
    fn call(&mut self, a: &Act) -> i32 {
        match a {
            Act::Ret(n) => {
                self.trace.push(format!("ret({n})"));
                *n
            }
            Act::Mark(n) => {
                self.trace.push(n.to_string());
                1
            }
            Act::Named(s) => {
                self.trace.push((*s).to_owned());
                1
            }
        }
    }
    fn test(&mut self, c: &Cond) -> bool {
        self.trace.push(format!("{}{}", c.operand, c.op));
        let v = match &c.rhs {
            Value::Int(n) => *n == self.x,
            Value::Bool(b) => *b,
            _ => true,
        };
        match c.op {
            CmpOp::Ne => !v,
            _ => v,
        }
    }
}

pub fn build(src: &str) -> Result<Program<Act, Cond>, ScriptError> {
    compile(&parse("test.cfg", src)?, &registry())
}

/// The compile error's `file:line:col: msg`.
pub fn error(src: &str) -> String {
    match build(src) {
        Ok(_) => panic!("expected an error for:\n{src}"),
        Err(e) => e.to_string(),
    }
}

/// Runs `kind[index]` with both the VM and the reference interpreter, checks they agree, and
/// returns the outcome and trace.
pub fn run_both(src: &str, kind: RouteKind, index: u32, x: i64) -> (RunOutcome, Vec<String>) {
    let script = parse("test.cfg", src).unwrap_or_else(|e| panic!("{e}"));
    let reg = registry();
    let prog = compile(&script, &reg).unwrap_or_else(|e| panic!("{e}"));
    let mut h1 = Host {
        x,
        ..Host::default()
    };
    let o1 = prog.run(kind, index, &mut h1);
    let mut h2 = Host {
        x,
        ..Host::default()
    };
    let o2 =
        interp::interpret(&script, &reg, kind, index, &mut h2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (o1, &h1.trace),
        (o2, &h2.trace),
        "VM and interpreter disagree on:\n{src}"
    );
    (o1, h1.trace)
}

pub fn run(src: &str, x: i64) -> (RunOutcome, Vec<String>) {
    run_both(src, RouteKind::Request, 0, x)
}
