//! Whole-script checks that need no host: the route table (no duplicate blocks, every
//! `route(n)` names a defined `route[n]`) and the route kinds each block can run in.
//!
//! A `route[n]` block runs in the kind of whatever calls it: `route(2)` from a
//! `failure_route` makes `route[2]` failure-route code, subject to the same restrictions on
//! host functions. [`analyse`] computes, for every block, the set of kinds it can run in by
//! propagating entry kinds along `route()` calls to a fixed point (recursion is legal in SER,
//! so the call graph may have cycles). Entries are every non-request block in its own kind,
//! `route[0]`, and every `route[n]` no other block calls (the host may run it directly).
//! Checking calls against those sets is `compile`'s job; this module only explains, for a
//! diagnostic, which entry leads to a block ([`Routes::path_from_entry`]).

use std::collections::HashMap;

use crate::ast::{KindSet, RouteDef, RouteKind, Script, Span, Stmt};
use crate::error::ScriptError;

/// The route blocks of a script and the kinds each can run in.
pub(crate) struct Routes<'s> {
    /// In source order.
    pub blocks: Vec<&'s RouteDef>,
    pub by_key: HashMap<(RouteKind, u32), usize>,
    /// `kinds[b]`: the kinds block `b` can run in.
    pub kinds: Vec<KindSet>,
    /// `via[b][k]`: the caller through which kind `k` first reached block `b`; `None` where
    /// `b` is itself an entry of kind `k`.
    via: Vec<[Option<usize>; 5]>,
}

/// Builds the route table and the kinds of every block.
pub(crate) fn analyse(script: &Script) -> Result<Routes<'_>, ScriptError> {
    let blocks: Vec<&RouteDef> = script.routes().collect();
    let mut by_key = HashMap::new();
    for (i, r) in blocks.iter().enumerate() {
        if let Some(&first) = by_key.get(&(r.kind, r.index)) {
            let f: &RouteDef = blocks[first];
            return Err(ScriptError::at(
                &script.file,
                r.span,
                format!(
                    "duplicate {}[{}] (first defined at {}:{})",
                    r.kind, r.index, f.span.line, f.span.col
                ),
            ));
        }
        by_key.insert((r.kind, r.index), i);
    }

    // Call graph: edges[b] lists the blocks `b` calls with route(n).
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); blocks.len()];
    let mut called = vec![false; blocks.len()];
    for (b, r) in blocks.iter().enumerate() {
        let mut targets = Vec::new();
        route_calls(&r.body, &mut targets);
        for (index, span) in targets {
            let Some(&t) = by_key.get(&(RouteKind::Request, index)) else {
                return Err(ScriptError::at(
                    &script.file,
                    span,
                    format!("route[{index}] is not defined"),
                ));
            };
            if !edges[b].contains(&t) {
                edges[b].push(t);
            }
            if t != b {
                called[t] = true;
            }
        }
    }

    let mut kinds = vec![KindSet::EMPTY; blocks.len()];
    let mut via = vec![[None; 5]; blocks.len()];
    for (b, r) in blocks.iter().enumerate() {
        if r.kind != RouteKind::Request || r.index == 0 || !called[b] {
            kinds[b] = r.kind.set();
        }
    }
    propagate(&edges, &mut kinds, &mut via);
    // Blocks only reachable from a cycle nobody enters: the host may still run them directly.
    if kinds.iter().any(|k| k.is_empty()) {
        for k in kinds.iter_mut().filter(|k| k.is_empty()) {
            *k = KindSet::REQUEST;
        }
        propagate(&edges, &mut kinds, &mut via);
    }
    Ok(Routes {
        blocks,
        by_key,
        kinds,
        via,
    })
}

/// Spreads kinds along call edges until nothing changes; records the first caller that
/// brought each kind.
fn propagate(edges: &[Vec<usize>], kinds: &mut [KindSet], via: &mut [[Option<usize>; 5]]) {
    let mut work: Vec<usize> = (0..edges.len()).collect();
    while let Some(b) = work.pop() {
        for &t in &edges[b] {
            let new = kinds[b] | kinds[t];
            if new != kinds[t] {
                for k in kinds[b].iter() {
                    if !kinds[t].contains(k) {
                        via[t][k.index()] = Some(b);
                    }
                }
                kinds[t] = new;
                work.push(t);
            }
        }
    }
}

/// Collects `(n, span)` of every `route(n)` in `body`, nested ones included.
fn route_calls(body: &[Stmt], out: &mut Vec<(u32, Span)>) {
    for s in body {
        match s {
            Stmt::Route { index, span } => out.push((*index, *span)),
            Stmt::If {
                arms, otherwise, ..
            } => {
                for a in arms {
                    route_calls(&a.body, out);
                }
                if let Some(o) = otherwise {
                    route_calls(o, out);
                }
            }
            Stmt::Call(_) | Stmt::Break(_) | Stmt::Drop(_) => {}
        }
    }
}

impl Routes<'_> {
    /// The block defined as `kind[index]`.
    pub fn lookup(&self, kind: RouteKind, index: u32) -> Option<usize> {
        self.by_key.get(&(kind, index)).copied()
    }

    /// `failure_route[1] -> route[3] -> route[2]`: how kind `k` reaches block `b`, or `None`
    /// if `b` is itself an entry of kind `k`.
    pub fn path_from_entry(&self, b: usize, k: RouteKind) -> Option<String> {
        let mut chain = vec![b];
        let mut cur = b;
        while let Some(p) = self.via[cur][k.index()] {
            if chain.contains(&p) || chain.len() > self.blocks.len() {
                break;
            }
            chain.push(p);
            cur = p;
        }
        if chain.len() == 1 {
            return None;
        }
        let names: Vec<String> = chain
            .iter()
            .rev()
            .map(|&i| format!("{}[{}]", self.blocks[i].kind, self.blocks[i].index))
            .collect();
        Some(names.join(" -> "))
    }
}
