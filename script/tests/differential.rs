//! Differential test: random programs run on the bytecode VM and on the reference AST
//! interpreter must produce the same outcome and the same sequence of host calls. A divergence
//! is a compiler or VM bug. The generator and the host are driven by a seeded xorshift, so a
//! failure names its seed and reproduces exactly. Both live in `ser_script::testgen`, shared
//! with the `vm_diff` fuzz target (`script/fuzz/`).

use ser_script::testgen::{gen_script, registry, Host};
use ser_script::{compile, interp, parse, RouteKind, RunOutcome};

/// Kept small for debug builds; raise it (or use the fuzz target) for a deeper search.
const SEEDS: u64 = 300;

#[test]
fn vm_agrees_with_interpreter() {
    let reg = registry();
    let mut outcomes = std::collections::HashMap::new();
    for seed in 1..=SEEDS {
        let src = gen_script(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let script = parse("gen.cfg", &src).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{src}"));
        let prog = compile(&script, &reg).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{src}"));
        for (kind, index) in [(RouteKind::Request, 0), (RouteKind::Failure, 1)] {
            for host_seed in 0..2u64 {
                let mut a = Host::seeded(seed * 7 + host_seed);
                let mut b = Host::seeded(seed * 7 + host_seed);
                let oa = prog.run(kind, index, &mut a);
                let ob = interp::interpret(&script, &reg, kind, index, &mut b).expect("interpret");
                assert_eq!(oa, ob, "outcome differs, seed {seed}/{host_seed}:\n{src}");
                assert_eq!(
                    a.trace, b.trace,
                    "trace differs, seed {seed}/{host_seed}:\n{src}"
                );
                *outcomes.entry(format!("{oa:?}")).or_insert(0u32) += 1;
            }
        }
    }
    eprintln!("outcomes: {outcomes:?}");
    // The generator must actually reach the interesting outcomes.
    for o in [
        RunOutcome::Completed,
        RunOutcome::Dropped,
        RunOutcome::Exited(0),
        RunOutcome::DepthExceeded,
    ] {
        assert!(
            outcomes.contains_key(&format!("{o:?}")),
            "never saw {o:?}: {outcomes:?}"
        );
    }
}
