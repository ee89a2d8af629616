//! Module usrloc: the user location tables' parameters (`db_mode` 0-3, `db_url`,
//! `timer_interval`, `use_domain`). The store is [`crate::usrloc`]; its functions (`save`,
//! `lookup`) are the registrar module's, its FIFO commands `ul_*` are added by `main`.

use super::{Exports, ParamDef, ParamKind};

pub fn register(ex: &mut Exports) {
    for (name, kind) in [
        ("db_mode", ParamKind::Int),
        ("db_url", ParamKind::Str),
        ("timer_interval", ParamKind::Int),
        ("use_domain", ParamKind::Int),
    ] {
        ex.param("usrloc", ParamDef { name, kind });
    }
}
