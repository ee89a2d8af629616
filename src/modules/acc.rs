//! Module acc: transaction accounting to the log (`log_flag`/`acc_flag`, `log_missed_flag`,
//! `acc_request`, `log_level`). The reports are written by `crate::tm` when a transaction
//! completes; the database backend comes with the Users issue.

use ser_script::KindSet;

use super::core::f;
use super::{arg_str, Exports, ParamDef, ParamKind};
use crate::route::Action;

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
    ] {
        ex.param(
            "acc",
            ParamDef {
                name,
                kind: ParamKind::Int,
            },
        );
    }
    ex.param(
        "acc",
        ParamDef {
            name: "log_fmt",
            kind: ParamKind::Str,
        },
    );
}
