//! `Backend::Auto` picks io_uring where the probe passes, the portable backend otherwise.
#[macro_use]
mod common;

use ser_shards::{Backend, BackendKind};

#[test]
fn auto_matches_probe() {
    let (rt, _notes) = common::start(common::config(Backend::Auto, 1, "127.0.0.1:0"), false);
    let want = if ser_shards::io_uring_probe().is_ok() {
        BackendKind::IoUring
    } else {
        BackendKind::Portable
    };
    assert_eq!(rt.backend(), want);
    eprintln!("auto: {} ({})", rt.backend(), rt.backend_detail());
}

#[test]
fn auto_echo() {
    common::echo_many_ports(Backend::Auto);
}
