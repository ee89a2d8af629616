//! Module acc: transaction accounting to the log (`log_flag`/`acc_flag`, `log_missed_flag`,
//! `acc_request`, `log_level`) and to the database (SER 0.8's `db_flag`, `db_missed_flag`,
//! `db_url`: rows in `acc` and `missed_calls`). The reports are made by `crate::tm` when a
//! transaction completes (`crate::tm::AccConfig`).

use ser_script::KindSet;

use super::core::f;
use super::Action;
use super::{arg_str, Exports, ParamDef, ParamKind};

pub fn register(ex: &mut Exports) {
    ex.function(f(
        "acc_request",
        1,
        1,
        KindSet::REQUEST | KindSet::FAILURE,
        |a, _| {
            let s = a.first().map(arg_str).transpose()?.unwrap_or_default();
            if s.contains(['\r', '\n']) {
                return Err("status must be one line".into());
            }
            Ok(Action::AccRequest(s))
        },
    ));
    for name in [
        "log_level",
        "log_flag",
        "acc_flag",
        "log_missed_flag",
        "report_ack",
        "db_flag",
        "db_missed_flag",
    ] {
        ex.param(
            "acc",
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
    }
    for name in ["log_fmt", "db_url"] {
        ex.param(
            "acc",
            ParamDef {
                name,
                kind: ParamKind::Str,
            },
        );
    }
}
