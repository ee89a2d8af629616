//! Module pike: `pike_check_req()`, false when the request's source address sends more than
//! `reqs_density_per_unit` requests per `sampling_time_unit` (the script decides: drop, or
//! `sl_send_reply("503", ...)`). The counting is [`crate::pike`] (sans-IO, one table per
//! shard, a shared sketch across shards); this file binds it into the script and logs what it
//! reports: one WARNING when an address is blocked and one when it is released.
//!
//! Parameters (checked when the script loads): `sampling_time_unit` (seconds, 2),
//! `reqs_density_per_unit` (30), `remove_latency` (seconds, 120), and ser's own
//! `max_addresses` (addresses tracked per shard, 65536).

use std::time::{Duration, Instant};

use ser_script::{KindSet, Value};

use super::core::f;
use super::ctx::MsgCtx;
use super::{Action, Exports, ParamDef, ParamKind, Params};
use crate::pike::{Config, Event};

const MODULE: &str = "pike";

/// Each parameter and its accepted range (defaults: [`Config::default`]).
const PARAMS: &[(&str, i64, i64)] = &[
    ("sampling_time_unit", 1, 3600),
    ("reqs_density_per_unit", 1, 1_000_000),
    ("remove_latency", 1, 7 * 86400),
    ("max_addresses", 16, 16_777_216),
];

pub fn register(ex: &mut Exports) {
    ex.function(f("pike_check_req", 0, 0, KindSet::REQUEST, |_, ctx| {
        Ok(Action::Pike(config(
            ctx.host::<Params>().unwrap_or(&Params::default()),
        )))
    }));
    for (name, _, _) in PARAMS {
        ex.param(
            MODULE,
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
        ex.check(MODULE, name, check_range);
    }
}

/// A parameter's value lies in its range.
fn check_range(name: &str, v: &Value, _: &Params) -> Result<(), String> {
    let Value::Int(n) = v else {
        return Err(format!("pike's {name} is a number"));
    };
    match PARAMS.iter().find(|(p, _, _)| *p == name) {
        Some((_, lo, hi)) if !(*lo..=*hi).contains(n) => {
            Err(format!("pike's {name} must be {lo} to {hi}, not {n}"))
        }
        _ => Ok(()),
    }
}

/// pike's configuration from the script's parameters (defaults for those not set).
pub fn config(p: &Params) -> Config {
    let d = Config::default();
    let int = |name: &str| p.int(MODULE, name).and_then(|n| u64::try_from(n).ok());
    Config {
        unit: int("sampling_time_unit").map_or(d.unit, Duration::from_secs),
        density: int("reqs_density_per_unit")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.density),
        remove_latency: int("remove_latency").map_or(d.remove_latency, Duration::from_secs),
        max_addresses: int("max_addresses")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(d.max_addresses),
    }
}

impl MsgCtx<'_, '_> {
    /// `pike_check_req()`: 1 when the source may go on, -1 when it is over the limit.
    pub(crate) fn pike_check(&mut self, cfg: &Config) -> i32 {
        let Some(local) = self.pike.as_deref_mut() else {
            // Outside a shard (no table): nothing is counted.
            return 1;
        };
        let now = self.t.now.unwrap_or_else(Instant::now);
        let pass = local.check(now, self.at.src.ip(), cfg, &self.core.pike);
        for ev in local.events.drain(..) {
            log_event(&ev, cfg);
        }
        if pass {
            1
        } else {
            -1
        }
    }
}

/// The one log line of a block, a release, or a full block list: at WARNING whatever the
/// `debug` level (an operator wants to see blocks, and there is one line per block, not per
/// request, so a flood cannot fill the log).
pub fn log_event(ev: &Event, cfg: &Config) {
    let warn = |args: std::fmt::Arguments<'_>| crate::log::always(crate::log::L_WARN, args);
    match ev {
        Event::Blocked(ip) => warn(format_args!(
            "pike: blocking {ip}: {} or more requests in {} s",
            cfg.density,
            cfg.unit.as_secs()
        )),
        Event::Released { ip, for_ } => warn(format_args!(
            "pike: releasing {ip} (blocked for {} s)",
            for_.as_secs()
        )),
        Event::ListFull => warn(format_args!(
            "pike: {} addresses blocked; more are refused but not listed",
            crate::pike::shared::MAX_LISTED
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;
    use crate::loader::load;
    use crate::modules::Action;

    const SRC: &str = "loadmodule \"modules/pike/pike.so\"
modparam(\"pike\", \"sampling_time_unit\", 5)
modparam(\"pike\", \"reqs_density_per_unit\", 16)
route {
    if (!pike_check_req()) { drop; };
}
";

    #[test]
    fn parameters_are_bound_into_the_action_and_checked() {
        let loaded = load("t.cfg", SRC, &Config::default()).expect("loads");
        let cfg = loaded.script.actions().iter().find_map(|a| match a {
            Action::Pike(c) => Some(*c),
            _ => None,
        });
        let cfg = cfg.expect("pike_check_req bound");
        assert_eq!((cfg.unit, cfg.density), (Duration::from_secs(5), 16));
        assert_eq!(cfg.remove_latency, Duration::from_secs(120));
        let bad = SRC.replace(
            "\"reqs_density_per_unit\", 16",
            "\"reqs_density_per_unit\", 0",
        );
        let e = load("t.cfg", &bad, &Config::default())
            .err()
            .expect("refused");
        assert_eq!((e.line, e.col), (3, 1), "{e}");
        assert!(e.msg.contains("reqs_density_per_unit must be 1 to"), "{e}");
    }
}
