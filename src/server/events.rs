//! What comes back to the shard and what leaves it: events from off-shard work and the
//! management interface, the transaction timer, and the outbox handed to the runtime.
//!
//! [`Server::flush`] sends what a run wrote (datagrams at once, stream messages through
//! `streams`) and hands host names that need DNS to the blocking pool, at most
//! [`MAX_DNS_INFLIGHT`] at a time; their answers come back as [`Event::Resolved`]. One runtime
//! timer stays armed at the transactions' earliest deadline, on a 25 ms grid ([`Server::arm`]).
//! Not here: resuming paused script runs (`run`), stream connections (`streams`).

use std::net::SocketAddr;
use std::sync::Arc;

use ser_shards::{Ctx, SocketId, TimerId};

use super::{Event, Server};
use crate::core::Core;
use crate::sip::{Dest, PendingSend, Transport};
use crate::stats::Stats;

/// The token of the transaction timer.
const TM_TIMER: u64 = 1;

/// Resolution of the transaction timer (see [`Server::arm`]).
const TIMER_GRID: std::time::Duration = std::time::Duration::from_millis(25);

/// Most name lookups one shard keeps in flight: each holds a copy of its datagram, and a flood
/// of requests for slow domains must not grow the queue without bound.
const MAX_DNS_INFLIGHT: usize = 1024;

impl Server {
    /// Keeps one runtime timer armed at the transactions' earliest deadline, rounded up to a
    /// 25 ms grid: thousands of transactions a second each ending at their own instant would
    /// otherwise wake the shard thousands of extra times a second (on a VM every wake-up from
    /// idle is expensive); SER's own timer ticked in 100 ms steps.
    pub(super) fn arm(&mut self, ctx: &mut Ctx<'_, Event>) {
        let next = match (self.tm.tm.next_deadline(), self.uac.next_deadline()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        // The grid's origin is the shard's start: every deadline lies after it.
        let epoch = *self.epoch.get_or_insert_with(|| ctx.now());
        let next = on_grid(epoch, next, TIMER_GRID);
        match self.timer {
            Some((at, _)) if at <= next => {}
            Some((_, id)) => {
                ctx.cancel_timer(id);
                self.timer = Some((next, ctx.set_timer(next, TM_TIMER)));
            }
            None => self.timer = Some((next, ctx.set_timer(next, TM_TIMER))),
        }
    }

    /// Hands what the script produced to the runtime.
    pub(super) fn flush(&mut self, ctx: &mut Ctx<'_, Event>) {
        let out = &mut self.scratch.out;
        let mut streamed: Vec<(Dest, std::ops::Range<usize>)> = Vec::new();
        for o in &out.sends {
            let Some(data) = out.buf.get(o.range.clone()) else {
                continue;
            };
            if o.dst.transport != Transport::Udp {
                // Sent below, from the outbox's buffer taken out of it (a send may open a
                // connection, or fail a branch, which writes into the outbox again).
                self.stats.count_sent(data);
                streamed.push((o.dst, o.range.clone()));
                continue;
            }
            self.stats.count_sent(data);
            if let Some(c) = &self.capture {
                c.record(sent_from(ctx, o.dst.socket as u32), o.dst.addr, data);
            }
            ctx.send(SocketId(o.dst.socket as u32), o.dst.addr, data);
        }
        for p in out.pending.drain(..) {
            if self.dns_inflight >= MAX_DNS_INFLIGHT {
                Stats::inc(&self.stats.dns_failures);
                crate::notice!(
                    "too many name lookups in flight; dropped a message for {}",
                    p.host
                );
                continue;
            }
            self.dns_inflight += 1;
            let PendingSend {
                host,
                port,
                secure,
                transport,
                socket_hint,
                data,
            } = p;
            let resolver = Arc::clone(&self.core.resolver);
            ctx.spawn_blocking(move || Event::Resolved {
                result: resolver.next_hop(&host, port, secure),
                host,
                data,
                socket_hint,
                transport,
            });
        }
        out.sends.clear();
        if streamed.is_empty() {
            out.buf.clear();
            return;
        }
        let mut buf = std::mem::take(&mut out.buf);
        for (dst, range) in streamed {
            let Some(data) = buf.get(range) else {
                continue;
            };
            if let Some(c) = &self.capture {
                c.record_stream(dst_local(&self.core, &dst), dst.addr, data);
            }
            self.send_stream(ctx, dst, data);
        }
        // The buffer (its capacity) goes back, unless a send refilled the outbox meanwhile.
        buf.clear();
        if self.scratch.out.buf.is_empty() {
            self.scratch.out.buf = buf;
        }
    }

    pub(super) fn on_event_inner(&mut self, ctx: &mut Ctx<'_, Event>, event: Event) {
        match event {
            Event::StreamSend { dst, data } => self.send_stream(ctx, dst, &data),
            Event::Send { dst, data } => {
                self.scratch.clear();
                self.scratch.out.push(dst, |b| b.extend_from_slice(&data));
                self.flush(ctx);
            }
            Event::ListConns(reply) => {
                let _ = reply.send(self.list_conns(ctx));
            }
            Event::Resolved {
                data,
                socket_hint,
                transport,
                host,
                result,
            } => match result {
                Ok(targets) => {
                    self.remember_names(&host, &targets);
                    self.dns_inflight = self.dns_inflight.saturating_sub(1);
                    // The message's Via names the socket it was written for: send from that
                    // one, to the best target of its address family, or not at all.
                    let local = &self.core.local;
                    let hit = targets.iter().find(|dst| {
                        local.socket_for(transport, dst, socket_hint) == Some(socket_hint)
                    });
                    match hit {
                        Some(&addr) => {
                            let dst = Dest {
                                transport,
                                socket: socket_hint,
                                addr,
                                conn: None,
                            };
                            self.scratch.clear();
                            self.scratch.out.push(dst, |b| b.extend_from_slice(&data));
                            self.flush(ctx);
                        }
                        None => crate::notice!(
                            "{}: no target of the address family this message was written for",
                            targets.first().map_or(String::new(), |a| a.to_string())
                        ),
                    }
                }
                Err(e) => {
                    self.dns_inflight = self.dns_inflight.saturating_sub(1);
                    Stats::inc(&self.stats.dns_failures);
                    crate::notice!("cannot resolve next hop: {e}");
                }
            },
            Event::Resumed { id, result } => {
                self.follow_reload();
                self.resume_parked(ctx, id, result);
            }
            Event::Uac(req) => {
                self.follow_reload();
                if let Some(name) = &req.name {
                    // A TLS connection to it verifies the name it was resolved from.
                    self.remember_names(name, &[req.dst.addr]);
                }
                self.scratch.clear();
                self.uac.start(
                    ctx.now(),
                    &self.tm.tm.cfg.timers,
                    req,
                    &mut self.scratch.out,
                );
                self.flush(ctx);
                self.arm(ctx);
            }
            Event::TmResolved {
                cell,
                branch,
                host,
                result,
            } => {
                if let Ok(targets) = &result {
                    self.remember_names(&host, targets);
                }
                self.scratch.clear();
                self.tm
                    .on_resolved(ctx.now(), cell, branch, result, &mut self.scratch.out);
                self.flush(ctx);
                self.start_tm_dns(ctx);
                self.arm(ctx);
            }
        }
    }

    pub(super) fn on_tm_timer(&mut self, ctx: &mut Ctx<'_, Event>, timer: TimerId, token: u64) {
        if token != TM_TIMER || self.timer.is_some_and(|(_, id)| id != timer) {
            return;
        }
        self.timer = None;
        self.scratch.clear();
        self.tm.on_timer(ctx.now(), &mut self.scratch.out);
        self.uac.on_timer(ctx.now(), &mut self.scratch.out);
        self.flush(ctx);
        self.start_tm_dns(ctx);
        self.arm(ctx);
    }
}

/// The address a stream message leaves from, for the capture: its listen socket's.
fn dst_local(core: &Core, dst: &Dest) -> SocketAddr {
    core.local
        .addr(dst.socket)
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The address a datagram sent on `socket` leaves from (for the capture).
fn sent_from(ctx: &Ctx<'_, Event>, socket: u32) -> SocketAddr {
    ctx.sockets()
        .get(socket as usize)
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |s| s.local)
}

/// `at` rounded up to the grid of `step` that starts at `epoch` (an `at` before the epoch
/// stays as it is: rounding must never make a deadline later than the next grid point).
fn on_grid(
    epoch: std::time::Instant,
    at: std::time::Instant,
    step: std::time::Duration,
) -> std::time::Instant {
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let grid = step.as_nanos().max(1);
    let steps = since.as_nanos().div_ceil(grid);
    let nanos = u64::try_from(steps * grid).unwrap_or(u64::MAX);
    epoch + std::time::Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_grid_rounds_up_and_never_past_the_next_point() {
        use std::time::{Duration, Instant};
        let e = Instant::now();
        let g = Duration::from_millis(25);
        assert_eq!(on_grid(e, e, g), e);
        assert_eq!(on_grid(e, e + Duration::from_millis(1), g), e + g);
        assert_eq!(on_grid(e, e + g, g), e + g);
        assert_eq!(
            on_grid(e, e + Duration::from_millis(510), g),
            e + Duration::from_millis(525)
        );
        // Before the epoch: left alone (the bug this guards against pushed such deadlines to
        // the epoch, minutes later).
        let early = e - Duration::from_millis(3);
        assert_eq!(on_grid(e, early, g), early);
    }
}
