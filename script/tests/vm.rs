//! Run-time semantics (SER 0.8), each checked on the VM and the reference interpreter alike.

mod common;
use common::{run, run_both};
use ser_script::{RouteKind, RunOutcome, MAX_DEPTH};

#[test]
fn completes_at_end_of_entry_block() {
    assert_eq!(
        run("route { mark(1); mark(2); }", 0),
        (RunOutcome::Completed, vec!["1".into(), "2".into()])
    );
}

#[test]
fn break_in_entry_block_completes() {
    let (o, t) = run("route { mark(1); if (x == 0) { break; }; mark(2); }", 0);
    assert_eq!(
        (o, t),
        (RunOutcome::Completed, vec!["1".into(), "x==".into()])
    );
}

#[test]
fn break_in_nested_route_returns_to_caller() {
    let src = "route { mark(1); route(1); mark(4); }\n\
               route[1] { mark(2); if (x == 0) { route(2); break; }; mark(99); }\n\
               route[2] { mark(3); break; mark(98); }";
    let (o, t) = run(src, 0);
    assert_eq!(o, RunOutcome::Completed);
    assert_eq!(t, ["1", "2", "x==", "3", "4"]);
}

#[test]
fn zero_return_ends_the_script_as_statement() {
    let src = "route { mark(1); route(1); mark(3); }\nroute[1] { ret(0); mark(2); }";
    assert_eq!(
        run(src, 0),
        (RunOutcome::Exited(0), vec!["1".into(), "ret(0)".into()])
    );
}

#[test]
fn zero_return_ends_the_script_in_condition() {
    let src = "route { if (ret(0)) { mark(1); } else { mark(2); }; mark(3); }";
    assert_eq!(run(src, 0), (RunOutcome::Exited(0), vec!["ret(0)".into()]));
    let src = "route { if (!ret(0) || ret(1)) { mark(1); }; }";
    assert_eq!(run(src, 0).0, RunOutcome::Exited(0));
}

#[test]
fn negative_is_false_positive_is_true() {
    let src = "route { if (ret(-1)) { mark(1); } else { mark(2); }; if (ret(5)) mark(3); }";
    assert_eq!(run(src, 0).1, ["ret(-1)", "2", "ret(5)", "3"]);
    // A failing action as a plain statement does not stop anything.
    assert_eq!(
        run("route { ret(-3); mark(1); }", 0),
        (RunOutcome::Completed, vec!["ret(-3)".into(), "1".into()])
    );
}

#[test]
fn drop_ends_everything() {
    let src = "route { route(1); mark(2); }\nroute[1] { if (x == 0) drop; mark(1); }";
    assert_eq!(run(src, 0), (RunOutcome::Dropped, vec!["x==".into()]));
    assert_eq!(run(src, 1).1, ["x==", "1", "2"]);
}

#[test]
fn short_circuit_and_or() {
    let (_, t) = run("route { if (ret(-1) && mark(1)) mark(2); }", 0);
    assert_eq!(t, ["ret(-1)"]);
    let (_, t) = run("route { if (ret(1) || mark(1)) mark(2); }", 0);
    assert_eq!(t, ["ret(1)", "2"]);
    let (_, t) = run("route { if (ret(-1) || ret(-2) or mark(7)) mark(2); }", 0);
    assert_eq!(t, ["ret(-1)", "ret(-2)", "7", "2"]);
    // AND binds tighter than OR: a || (b && c).
    let (_, t) = run("route { if (ret(1) | ret(-1) && mark(9)) mark(2); }", 0);
    assert_eq!(t, ["ret(1)", "2"]);
    let (_, t) = run(
        "route { if (ret(-1) || ret(1) and ret(-1)) mark(2); else mark(3); }",
        0,
    );
    assert_eq!(t, ["ret(-1)", "ret(1)", "ret(-1)", "3"]);
}

#[test]
fn not_binds_to_the_next_term() {
    let (_, t) = run("route { if (!x == 1 && ret(1)) mark(1); }", 0);
    assert_eq!(t, ["x==", "ret(1)", "1"]);
    let (_, t) = run("route { if (!(ret(1) && ret(-1))) mark(1); }", 0);
    assert_eq!(t, ["ret(1)", "ret(-1)", "1"]);
    let (_, t) = run("route { if (!!ret(-1)) mark(1); else mark(2); }", 0);
    assert_eq!(t, ["ret(-1)", "2"]);
}

#[test]
fn else_if_chain() {
    let src = "route { if (x == 1) mark(1); else if (x == 2) { mark(2); } else if (x == 3) mark(3); else mark(4); mark(5); }";
    assert_eq!(run(src, 1).1, ["x==", "1", "5"]);
    assert_eq!(run(src, 2).1, ["x==", "x==", "2", "5"]);
    assert_eq!(run(src, 3).1, ["x==", "x==", "x==", "3", "5"]);
    assert_eq!(run(src, 9).1, ["x==", "x==", "x==", "4", "5"]);
}

#[test]
fn recursion_depth_limit() {
    let src = "route { route(1); }\nroute[1] { mark(1); route(1); }";
    let (o, t) = run(src, 0);
    assert_eq!(o, RunOutcome::DepthExceeded);
    assert_eq!(t.len(), MAX_DEPTH - 1);
    // Bounded recursion is fine: the condition flips once the host says so.
    let src = "route { route(1); mark(0); }\nroute[1] { if (ret(-1)) route(1); mark(1); }";
    assert_eq!(run(src, 0).0, RunOutcome::Completed);
}

#[test]
fn mutual_recursion_depth_limit() {
    let src = "route[0] { route(1); }\nroute[1] { route(2); }\nroute[2] { route(1); }";
    assert_eq!(run(src, 0).0, RunOutcome::DepthExceeded);
}

#[test]
fn runaway_recursion_hits_the_budget() {
    // Each block calls itself twice while the depth stays under the limit: 2^99 calls.
    let src = "route { route(1); }\nroute[1] { if (x == 0) { route(1); route(1); }; }";
    let (o, _) = run(src, 1);
    assert_eq!(o, RunOutcome::Completed);
    let src = "route { route(1); }\nroute[1] { if (ret(-1)) route(1); if (ret(1)) { if (ret(-1)) route(1); }; route(2); }\n\
               route[2] { route(3); route(3); }\nroute[3] { route(4); route(4); }\nroute[4] { route(5); route(5); }\n\
               route[5] { route(6); route(6); }\nroute[6] { route(7); route(7); }\nroute[7] { route(8); route(8); }\n\
               route[8] { route(9); route(9); }\nroute[9] { route(10); route(10); }\nroute[10] { route(11); route(11); }\n\
               route[11] { route(12); route(12); }\nroute[12] { route(13); route(13); }\nroute[13] { route(14); route(14); }\n\
               route[14] { route(15); route(15); }\nroute[15] { route(16); route(16); }\nroute[16] { route(17); route(17); }\n\
               route[17] { mark(1); mark(2); }";
    assert_eq!(run(src, 0).0, RunOutcome::BudgetExceeded);
}

#[test]
fn other_kinds_and_missing_routes() {
    let src = "route { t_on_failure(\"1\"); t_relay(); }\nfailure_route[1] { mark(7); t_relay(); }";
    let (o, t) = run_both(src, RouteKind::Failure, 1, 0);
    assert_eq!(
        (o, t),
        (RunOutcome::Completed, vec!["7".into(), "t_relay".into()])
    );
    assert_eq!(
        run_both(src, RouteKind::Failure, 2, 0).0,
        RunOutcome::NoSuchRoute
    );
    assert_eq!(
        run_both(src, RouteKind::Reply, 0, 0).0,
        RunOutcome::NoSuchRoute
    );
    let p = common::build(src).unwrap();
    assert!(p.has_route(RouteKind::Failure, 1) && p.has_route(RouteKind::Request, 0));
    assert!(!p.has_route(RouteKind::Request, 1));
}

#[test]
fn aliases_bind_to_the_same_function() {
    assert_eq!(run("route { relay(); }", 0).1, ["t_relay"]);
}

#[test]
fn program_is_shareable() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let p = common::build("route { mark(1); }").unwrap();
    assert_send_sync(&p);
    assert!(p.to_string().contains("route[0]:"));
}

#[test]
fn suspended_run_resumes_where_it_stopped_even_inside_route_calls() {
    use ser_script::{Run, SUSPEND};
    let src = r#"
route {
    mark(1);
    if (ret("-2147483648")) { mark(2); } else { mark(3); };
    route(1);
    mark(5);
}
route[1] { ret("-2147483648"); mark(4); }
"#;
    assert_eq!(SUSPEND, -2147483648);
    let p = common::build(src).unwrap();
    let mut h = common::Host::default();
    let Run::Suspended(k) = p.start(RouteKind::Request, 0, &mut h) else {
        panic!("expected a suspension at the condition");
    };
    assert_eq!(h.trace, ["1", "ret(-2147483648)"]);
    // The condition's action succeeded in the end: the then-branch runs.
    let Run::Suspended(k2) = p.resume(k.clone(), 1, &mut h) else {
        panic!("expected a suspension inside route[1]");
    };
    assert_eq!(h.trace[2..], ["2", "ret(-2147483648)"]);
    // A statement's result does not matter unless zero; route[1] returns to its caller.
    assert_eq!(
        p.resume(k2.clone(), -1, &mut h),
        Run::Done(RunOutcome::Completed)
    );
    assert_eq!(h.trace[4..], ["4", "5"]);
    // The failed condition takes the else-branch.
    let mut h = common::Host::default();
    assert!(matches!(p.resume(k.clone(), -1, &mut h), Run::Suspended(_)));
    assert_eq!(h.trace, ["3", "ret(-2147483648)"]);
    // Zero ends the script, as from any action.
    let mut h = common::Host::default();
    assert_eq!(p.resume(k2, 0, &mut h), Run::Done(RunOutcome::Exited(0)));
    assert!(h.trace.is_empty());
    // A plain run cannot pause: it says so.
    let mut h = common::Host::default();
    assert_eq!(p.run(RouteKind::Request, 0, &mut h), RunOutcome::Suspended);
}
