//! Module ratelimit: `rl_check()` (the pipe of the first queue that takes the request's
//! method; true when no queue takes it), `rl_check("pipe_id")` and `rl_check_pipe(["pipe_id"])`
//! (that pipe): false when the request must be refused (the script answers 503 with a
//! Retry-After). The pipes are [`crate::ratelimit`], shared by every shard.
//!
//! Parameters, checked when the script loads: `pipe` ("id:algorithm:limit", repeatable;
//! algorithm TAILDROP or RED, limit in requests per second), `queue` ("pipe_id:METHOD" or
//! "pipe_id:*", repeatable, matched in the order given; its pipe must be defined),
//! `timer_interval` (seconds, 10).

use std::time::Instant;

use ser_script::{Arg, BindCtx, KindSet, Value};

use super::core::f;
use super::ctx::MsgCtx;
use super::{arg_str, Action, Exports, ParamDef, ParamKind, Params};
use crate::ratelimit::{parse_pipe, parse_pipe_id, parse_queue, Definition, MAX_INTERVAL};

const MODULE: &str = "ratelimit";

pub fn register(ex: &mut Exports) {
    ex.function(f("rl_check", 0, 1, KindSet::REQUEST, bind));
    ex.function(f("rl_check_pipe", 0, 1, KindSet::REQUEST, bind));
    for (name, kind) in [
        ("pipe", ParamKind::Strs),
        ("queue", ParamKind::Strs),
        ("timer_interval", ParamKind::Int),
    ] {
        ex.param(MODULE, ParamDef { name, kind });
        ex.check(MODULE, name, check);
    }
}

fn bind(a: &[Arg], ctx: &BindCtx<'_>) -> Result<Action, String> {
    let Some(arg) = a.first() else {
        return Ok(Action::RlCheck(None));
    };
    let id = parse_pipe_id(&arg_str(arg)?).map_err(|e| ctx.fail_at(0, e))?;
    let params = ctx.host::<Params>();
    let defined = params.is_some_and(|p| {
        p.strs(MODULE, "pipe")
            .iter()
            .any(|s| parse_pipe(s).is_ok_and(|(i, _, _)| i == id))
    });
    if params.is_some() && !defined {
        return Err(ctx.fail_at(
            0,
            format!("pipe {id} is not defined: add modparam(\"ratelimit\", \"pipe\", \"{id}:TAILDROP:<limit>\")"),
        ));
    }
    Ok(Action::RlCheck(Some(id)))
}

/// Each value of `pipe`, `queue` and `timer_interval` is well formed; a pipe is defined once;
/// a queue's pipe is defined.
fn check(name: &str, v: &Value, p: &Params) -> Result<(), String> {
    match (name, v) {
        ("timer_interval", Value::Int(n)) => {
            if (1..=MAX_INTERVAL as i64).contains(n) {
                Ok(())
            } else {
                Err(format!(
                    "ratelimit's timer_interval must be 1 to {MAX_INTERVAL} seconds, not {n}"
                ))
            }
        }
        ("pipe", Value::Str(s)) => {
            let (id, _, _) = parse_pipe(s)?;
            let n = p
                .strs(MODULE, "pipe")
                .iter()
                .filter(|x| parse_pipe(x).is_ok_and(|(i, _, _)| i == id))
                .count();
            if n > 1 {
                return Err(format!("pipe {id} is defined {n} times"));
            }
            Ok(())
        }
        ("queue", Value::Str(s)) => {
            let q = parse_queue(s)?;
            let queues = p.strs(MODULE, "queue").len();
            if queues > crate::ratelimit::MAX_QUEUES {
                return Err(format!(
                    "{queues} queues: ratelimit takes at most {}",
                    crate::ratelimit::MAX_QUEUES
                ));
            }
            let defined = p
                .strs(MODULE, "pipe")
                .iter()
                .any(|x| parse_pipe(x).is_ok_and(|(i, _, _)| i == q.pipe));
            if !defined {
                return Err(format!(
                    "queue \"{s}\" names pipe {}, which no pipe parameter defines",
                    q.pipe
                ));
            }
            Ok(())
        }
        _ => Err(format!("ratelimit's {name}: wrong type of value")),
    }
}

/// The pipes, queues and interval the script's parameters define (checked at load).
pub fn definition(p: &Params) -> Definition {
    Definition {
        interval: p
            .int(MODULE, "timer_interval")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(Definition::default().interval),
        pipes: p
            .strs(MODULE, "pipe")
            .iter()
            .filter_map(|s| parse_pipe(s).ok())
            .collect(),
        queues: p
            .strs(MODULE, "queue")
            .iter()
            .filter_map(|s| parse_queue(s).ok())
            .collect(),
    }
}

impl MsgCtx<'_, '_> {
    /// `rl_check`: 1 when the request may pass (or no queue takes its method), -1 when not.
    pub(crate) fn rl_check(&mut self, pipe: Option<usize>) -> i32 {
        let pipes = &self.core.ratelimit;
        let pipe = match pipe {
            Some(p) => p,
            None => {
                let method = self.msg.method().map(|m| m.as_str()).unwrap_or("");
                match pipes.pipe_for(method) {
                    Some(p) => p,
                    None => return 1,
                }
            }
        };
        let now = self.t.now.unwrap_or_else(Instant::now);
        if pipes.check(pipe, now) {
            1
        } else {
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::loader::load;
    use crate::modules::Action;

    fn script(params: &str, route: &str) -> String {
        format!(
            "loadmodule \"modules/sl/sl.so\"\nloadmodule \"modules/ratelimit/ratelimit.so\"\n{params}\nroute {{\n{route}\n}}\n"
        )
    }

    fn refused(params: &str, route: &str) -> (u32, u32, String) {
        let e = load("t.cfg", &script(params, route), &Config::default())
            .err()
            .expect("refused");
        (e.line, e.col, e.msg)
    }

    #[test]
    fn pipes_and_queues_are_checked_at_their_modparam() {
        let ok = "if (!rl_check()) { sl_send_reply(\"503\", \"Limiting\"); break; };";
        let (l, c, m) = refused(
            "modparam(\"ratelimit\", \"pipe\", \"0:TAILDROP:10\")\nmodparam(\"ratelimit\", \"pipe\", \"1:FOO:1\")",
            ok,
        );
        assert_eq!((l, c), (4, 1), "{m}");
        assert!(m.contains("unknown ratelimit algorithm"), "{m}");
        let (l, _, m) = refused(
            "modparam(\"ratelimit\", \"queue\", \"2:INVITE\")\nmodparam(\"ratelimit\", \"pipe\", \"0:RED:10\")",
            ok,
        );
        assert_eq!(l, 3, "{m}");
        assert!(m.contains("names pipe 2"), "{m}");
        let (l, _, m) = refused(
            "modparam(\"ratelimit\", \"pipe\", \"0:RED:10\")\nmodparam(\"ratelimit\", \"pipe\", \"0:TAILDROP:1\")",
            ok,
        );
        assert_eq!(l, 3, "{m}");
        assert!(m.contains("defined 2 times"), "{m}");
        let (l, _, m) = refused("modparam(\"ratelimit\", \"timer_interval\", 0)", ok);
        assert_eq!(l, 3, "{m}");
        let (l, c, m) = refused(
            "modparam(\"ratelimit\", \"pipe\", \"0:RED:10\")",
            "if (!rl_check(\"3\")) { drop; };",
        );
        assert_eq!((l, c), (5, 15), "{m}");
        assert!(m.contains("pipe 3 is not defined"), "{m}");
    }

    #[test]
    fn a_good_script_binds_its_pipes() {
        let src = script(
            "modparam(\"ratelimit\", \"pipe\", \"0:TAILDROP:10\")\nmodparam(\"ratelimit\", \"pipe\", \"3:RED:5\")\nmodparam(\"ratelimit\", \"queue\", \"3:INVITE\")\nmodparam(\"ratelimit\", \"queue\", \"0:*\")\nmodparam(\"ratelimit\", \"timer_interval\", 2)",
            "if (!rl_check()) { drop; }; if (!rl_check_pipe(\"3\")) { drop; };",
        );
        let loaded = load("t.cfg", &src, &Config::default()).expect("loads");
        let acts = loaded.script.actions();
        assert!(acts.iter().any(|a| matches!(a, Action::RlCheck(None))));
        assert!(acts.iter().any(|a| matches!(a, Action::RlCheck(Some(3)))));
        let d = super::definition(&loaded.params);
        assert_eq!(d.interval, 2);
        assert_eq!(d.pipes.len(), 2);
        assert_eq!(
            d.queues
                .iter()
                .map(|q| q.method.as_str())
                .collect::<Vec<_>>(),
            ["INVITE", "*"]
        );
    }
}
