//! ratelimit's management commands, by Kamailio's RPC names: `rl.set_pipe <id> <algorithm>
//! <limit>`, `rl.get_pipes`, `rl.set_queue <queue_id> <method> <pipe_id>`, `rl.get_queues`,
//! `rl.stats`; and its metrics. Changes are atomic stores into the pipes every shard reads.

use std::sync::Arc;
use std::time::Instant;

use super::{Command, Mgmt, Params, Reply};
use crate::ratelimit::{parse_limit, parse_pipe_id, Algo, PipeState, Pipes};

const COMMANDS: &[Command] = &[
    Command {
        name: "rl.set_pipe",
        module: "ratelimit",
        params: Params::Lines,
        help: "set a pipe: <pipe_id> <TAILDROP|RED|NOP> <limit (requests per second)>",
        slow: false,
        run: set_pipe,
    },
    Command {
        name: "rl.get_pipes",
        module: "ratelimit",
        params: Params::Lines,
        help: "the pipes in use: id, algorithm, limit, requests this interval",
        slow: false,
        run: get_pipes,
    },
    Command {
        name: "rl.set_queue",
        module: "ratelimit",
        params: Params::Lines,
        help: "set a queue: <queue_id> <METHOD|*> <pipe_id>",
        slow: false,
        run: set_queue,
    },
    Command {
        name: "rl.get_queues",
        module: "ratelimit",
        params: Params::Lines,
        help: "the queues in use: id, method, pipe",
        slow: false,
        run: get_queues,
    },
    Command {
        name: "rl.stats",
        module: "ratelimit",
        params: Params::Lines,
        help: "the interval, and per pipe the requests counted, accepted and refused",
        slow: false,
        run: stats,
    },
];

/// Adds ratelimit's commands (main calls it when ratelimit is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

fn pipes(m: &Mgmt) -> Arc<Pipes> {
    Arc::clone(&m.live.current().core.ratelimit)
}

/// The parameters as words: one per line, or several on one line (`serctl fifo` sends each
/// argument on its own line; a FIFO client may write `0 TAILDROP 10`).
fn words(p: &[String]) -> Vec<&str> {
    p.iter().flat_map(|l| l.split_whitespace()).collect()
}

fn set_pipe(m: &Mgmt, p: &[String]) -> Reply {
    let w = words(p);
    let [id, algo, limit] = w.as_slice() else {
        return Reply::error(400, "rl.set_pipe: <pipe_id> <algorithm> <limit> expected");
    };
    let r = parse_pipe_id(id)
        .and_then(|id| Ok((id, Algo::parse(algo)?, parse_limit(limit)?)))
        .and_then(|(id, algo, limit)| {
            pipes(m).set_pipe(id, algo, limit)?;
            Ok((id, algo, limit))
        });
    match r {
        Ok((id, algo, limit)) => {
            crate::notice!("ratelimit: pipe {id} set to {} {limit}/s", algo.name());
            Reply::ok(Vec::new())
        }
        Err(e) => Reply::error(400, format!("rl.set_pipe: {e}")),
    }
}

fn set_queue(m: &Mgmt, p: &[String]) -> Reply {
    let w = words(p);
    let [qid, method, pipe] = w.as_slice() else {
        return Reply::error(400, "rl.set_queue: <queue_id> <method> <pipe_id> expected");
    };
    let Ok(qid) = qid.parse::<usize>() else {
        return Reply::error(400, format!("rl.set_queue: bad queue id \"{qid}\""));
    };
    let r = parse_pipe_id(pipe).and_then(|pipe| pipes(m).set_queue(qid, method, pipe));
    match r {
        Ok(()) => {
            crate::notice!("ratelimit: queue {qid} set to {method} -> pipe {pipe}");
            Reply::ok(Vec::new())
        }
        Err(e) => Reply::error(400, format!("rl.set_queue: {e}")),
    }
}

fn pipe_line(s: &PipeState, interval: u64) -> String {
    format!(
        "PIPE: id={} algorithm={} limit={} counter={} (limit {} per {interval} s interval)",
        s.id,
        s.algo.name(),
        s.limit,
        s.counter,
        s.limit.saturating_mul(interval)
    )
}

fn get_pipes(m: &Mgmt, _: &[String]) -> Reply {
    let p = pipes(m);
    let interval = p.interval();
    Reply::ok(
        p.pipes_in_use(Instant::now())
            .iter()
            .map(|s| pipe_line(s, interval))
            .collect(),
    )
}

fn get_queues(m: &Mgmt, _: &[String]) -> Reply {
    Reply::ok(
        pipes(m)
            .queues()
            .iter()
            .map(|(id, q)| format!("QUEUE: id={id} method={} pipe={}", q.method, q.pipe))
            .collect(),
    )
}

fn stats(m: &Mgmt, _: &[String]) -> Reply {
    let p = pipes(m);
    let mut lines = vec![format!("timer_interval: {} s", p.interval())];
    for s in p.pipes_in_use(Instant::now()) {
        lines.push(format!(
            "PIPE[{}]: counter={} last_counter={} accepted={} refused={}",
            s.id, s.counter, s.last_counter, s.accepted, s.refused
        ));
    }
    Reply::ok(lines)
}

/// ratelimit's metrics, per pipe in use: requests accepted and refused, and the limit.
pub fn collector(p: Arc<Pipes>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let mut accepted = Family::counter(
            "ser_ratelimit_accepted_total",
            "Requests rl_check let through, by pipe.",
        );
        let mut refused = Family::counter(
            "ser_ratelimit_refused_total",
            "Requests rl_check refused, by pipe.",
        );
        let mut limit = Family::gauge(
            "ser_ratelimit_limit",
            "A pipe's limit in requests per second.",
        );
        for s in p.pipes_in_use(Instant::now()) {
            let id = s.id.to_string();
            let l = [("pipe", id.as_str())];
            accepted.sample(&l, s.accepted);
            refused.sample(&l, s.refused);
            limit.sample(
                &[("pipe", id.as_str()), ("algorithm", s.algo.name())],
                s.limit,
            );
        }
        v.extend([accepted, refused, limit]);
    })
}
