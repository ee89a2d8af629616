//! Fuzz target: differential test of the bytecode VM against the reference interpreter on
//! generated scripts (`ser_script::testgen::gen_script`).
//!
//! Input: 8 bytes of little-endian seed (zero-padded if shorter), then host-result bytes. The
//! seed picks the script; the host answers calls from the remaining bytes in turn (cycling),
//! or, if there are none, from the seed as `tests/differential.rs` does. Every route block of
//! the script is run on both; outcome and call trace must be identical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ser_script::testgen::{gen_script, registry, Host};
use ser_script::{compile, interp, parse, RouteKind};

fuzz_target!(|data: &[u8]| {
    let mut seed = [0u8; 8];
    let n = data.len().min(8);
    seed[..n].copy_from_slice(&data[..n]);
    let seed = u64::from_le_bytes(seed);
    let host_bytes = &data[n..];
    let src = gen_script(seed);
    let script = parse("gen.cfg", &src).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{src}"));
    let reg = registry();
    let prog = compile(&script, &reg).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{src}"));
    for kind in RouteKind::ALL {
        for index in prog.routes(kind).collect::<Vec<_>>() {
            let mut a = Host::scripted(seed, host_bytes);
            let mut b = Host::scripted(seed, host_bytes);
            let oa = prog.run(kind, index, &mut a);
            let ob = interp::interpret(&script, &reg, kind, index, &mut b)
                .unwrap_or_else(|e| panic!("seed {seed}: interpreter: {e}\n{src}"));
            assert_eq!(
                oa, ob,
                "seed {seed}, {kind}[{index}]: outcome differs\n{src}"
            );
            assert!(
                a.trace == b.trace,
                "seed {seed}, {kind}[{index}]: trace differs\n{src}"
            );
        }
    }
});
