//! Every complete script example of the SER documents (tests/data/seeds/*.cfg) must parse;
//! the fragments kept in tests/data/seeds/excluded/ must not (they are not whole scripts, or
//! are broken in the seed itself — see the README there).

use std::path::{Path, PathBuf};

fn cfgs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cfg"))
        .collect();
    v.sort();
    v
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/seeds")
}

#[test]
fn every_seed_script_parses() {
    let files = cfgs(&seeds_dir());
    assert!(
        files.len() >= 15,
        "expected the extracted seed scripts, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).expect("read seed");
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        match ser_script::parse(name, &src) {
            Ok(s) => assert!(!s.items.is_empty(), "{name}: no items"),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "seed scripts failed to parse:\n{}",
        failures.join("\n")
    );
}

#[test]
fn excluded_fragments_do_not_parse() {
    let files = cfgs(&seeds_dir().join("excluded"));
    assert!(!files.is_empty());
    for f in &files {
        let src = std::fs::read_to_string(f).expect("read fragment");
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        assert!(
            ser_script::parse(name, &src).is_err(),
            "{name} parses; move it out of excluded/"
        );
    }
}

/// Every name a script calls or compares, so a permissive registry can be built for it.
fn names(body: &[ser_script::Stmt], fns: &mut Vec<String>, ops: &mut Vec<String>) {
    use ser_script::{Expr, Stmt};
    fn expr(e: &Expr, fns: &mut Vec<String>, ops: &mut Vec<String>) {
        match e {
            Expr::Or(t, _) | Expr::And(t, _) => t.iter().for_each(|e| expr(e, fns, ops)),
            Expr::Not(e, _) => expr(e, fns, ops),
            Expr::Call(c) => fns.push(c.name.clone()),
            Expr::Cmp { operand, .. } => ops.push(operand.clone()),
        }
    }
    for s in body {
        match s {
            Stmt::Call(c) => fns.push(c.name.clone()),
            Stmt::If {
                arms, otherwise, ..
            } => {
                for a in arms {
                    expr(&a.cond, fns, ops);
                    names(&a.body, fns, ops);
                }
                if let Some(o) = otherwise {
                    names(o, fns, ops);
                }
            }
            _ => {}
        }
    }
}

/// With every function allowed everywhere, the seed scripts also pass the whole-script checks
/// (route targets, duplicates) and compile.
#[test]
fn every_seed_script_compiles_with_a_permissive_host() {
    use ser_script::{FnEntry, KindSet, OperandEntry, Registry};
    for f in cfgs(&seeds_dir()) {
        let src = std::fs::read_to_string(&f).expect("read seed");
        let script = ser_script::parse("seed.cfg", &src).expect("parses");
        let (mut fns, mut ops) = (Vec::new(), Vec::new());
        for r in script.routes() {
            names(&r.body, &mut fns, &mut ops);
        }
        fns.sort();
        fns.dedup();
        ops.sort();
        ops.dedup();
        let mut reg: Registry<(), ()> = Registry::new();
        for n in fns {
            let name: &'static str = Box::leak(n.into_boxed_str());
            reg.function(FnEntry {
                name,
                min_args: 0,
                max_args: 255,
                kinds: KindSet::ALL,
                bind: |_, _| Ok(()),
            });
        }
        for n in ops {
            let name: &'static str = Box::leak(n.into_boxed_str());
            reg.operand(OperandEntry {
                name,
                bind: |_, _, _| Ok(()),
            });
        }
        if let Err(e) = ser_script::compile(&script, &reg) {
            panic!("{}: {e}", f.display());
        }
    }
}
