//! Diagnostics: every error is `file:line:col: message`, pointing at the offending construct.

mod common;
use common::error;

#[test]
fn syntax_error_missing_semicolon() {
    let src = "route {\n    log(\"a\")\n    log(\"b\");\n}\n";
    assert_eq!(error(src), "test.cfg:3:5: expected ';' or '}', found 'log'");
}

#[test]
fn syntax_error_bad_condition() {
    let src = "route {\n  if (uri ~ \"x\") { break; }\n}\n";
    assert_eq!(
        error(src),
        "test.cfg:2:11: expected a comparison operator or '(', found '~'"
    );
}

#[test]
fn syntax_error_unterminated_string() {
    let src = "route {\n  log(\"oops);\n}\n";
    assert_eq!(error(src), "test.cfg:2:7: unterminated string");
}

#[test]
fn syntax_error_statement_outside_route() {
    let src = "debug=3\nif (uri==myself) { break; };\n";
    assert_eq!(
        error(src),
        "test.cfg:2:1: expected a global option (name = value), loadmodule, modparam or a route block, found 'if'"
    );
}

#[test]
fn syntax_error_unclosed_block() {
    let src = "route {\n  log(\"a\");\n";
    assert_eq!(
        error(src),
        "test.cfg:3:1: expected a statement or '}', found end of file"
    );
}

#[test]
fn unknown_function() {
    let src = "route {\n  log(\"a\");\n  frobnicate(1);\n}\n";
    assert_eq!(error(src), "test.cfg:3:3: unknown function 'frobnicate'");
}

#[test]
fn unknown_function_with_hint() {
    let src = "route {\n    t_newtran();\n}\n";
    assert_eq!(
        error(src),
        "test.cfg:2:5: unknown function 't_newtran': exported by module 'tm'; is it loaded?"
    );
}

#[test]
fn unknown_function_in_condition() {
    let src = "route {\n  if (!lookup(\"location\")) { break; };\n}\n";
    assert_eq!(error(src), "test.cfg:2:8: unknown function 'lookup'");
}

#[test]
fn wrong_arity() {
    let src = "route {\n  sl_send_reply(\"404\");\n}\n";
    assert_eq!(
        error(src),
        "test.cfg:2:3: function 'sl_send_reply' takes 2 arguments, got 1"
    );
    let src = "route {\n  t_relay(1);\n}\n";
    assert_eq!(
        error(src),
        "test.cfg:2:3: function 't_relay' takes no arguments, got 1"
    );
    let src = "route { log(1, \"a\", 3); }";
    assert_eq!(
        error(src),
        "test.cfg:1:9: function 'log' takes 1 to 2 arguments, got 3"
    );
}

#[test]
fn binder_error_at_argument() {
    let src = "route {\n  forward(uri:host, \"x\");\n}\n";
    assert_eq!(error(src), "test.cfg:2:21: forward: port must be a number");
    let src = "route {\n  t_on_failure(\"2\");\n  t_relay();\n}\nfailure_route[1] { t_relay(); }\n";
    assert_eq!(
        error(src),
        "test.cfg:2:16: t_on_failure: failure_route[2] is not defined"
    );
}

#[test]
fn disallowed_in_failure_route_directly() {
    let src = "route { t_relay(); }\nfailure_route[1] {\n  sl_send_reply(\"500\", \"x\");\n}\n";
    assert_eq!(
        error(src),
        "test.cfg:3:3: function 'sl_send_reply' is not allowed in failure_route"
    );
}

#[test]
fn disallowed_kind_via_route_call() {
    let src = "\
route {
    t_on_failure(\"1\");
    t_relay();
}
failure_route[1] {
    route(2);
}
route[2] {
    log(\"in route 2\");
    route(3);
}
route[3] {
    sl_send_reply(\"500\", \"no\");
}
";
    assert_eq!(
        error(src),
        "test.cfg:13:5: function 'sl_send_reply' is not allowed in failure_route \
         (reached via failure_route[1] -> route[2] -> route[3])"
    );
}

#[test]
fn route_reached_only_from_request_is_fine() {
    let src = "route { route(2); }\nroute[2] { sl_send_reply(\"200\", \"ok\"); }\nfailure_route[1] { t_relay(); }\n";
    assert!(common::build(src).is_ok());
}

#[test]
fn undefined_route() {
    let src = "route {\n  if (x == 1) {\n    route(7);\n  };\n}\n";
    assert_eq!(error(src), "test.cfg:3:5: route[7] is not defined");
}

#[test]
fn duplicate_route() {
    let src = "route { break; }\nroute[1] { break; }\nroute[0] {\n break; }\n";
    assert_eq!(
        error(src),
        "test.cfg:3:1: duplicate route[0] (first defined at 1:1)"
    );
    let src = "failure_route[1] { break; }\n\nfailure_route[1] { break; }\n";
    assert_eq!(
        error(src),
        "test.cfg:3:1: duplicate failure_route[1] (first defined at 1:1)"
    );
}

#[test]
fn unknown_operand() {
    let src = "route {\n  if (method == \"INVITE\" && ruri == \"x\") { break; };\n}\n";
    assert_eq!(error(src), "test.cfg:2:29: unknown operand 'ruri'");
}

#[test]
fn operand_binder_error() {
    let src = "route {\n  if (uri == 5) { break; };\n}\n";
    assert_eq!(
        error(src),
        "test.cfg:2:14: uri == 5: expected a string or myself"
    );
}

#[test]
fn bad_network() {
    let src = "route {\n  if (x == 10.0.0.0/33) { break; };\n}\n";
    assert_eq!(error(src), "test.cfg:2:12: invalid network '10.0.0.0/33'");
}

#[test]
fn columns_count_characters() {
    // A multi-byte character before the error moves the column by one, not by its byte length.
    let src = "route { log(\"é\"); nope(); }";
    assert_eq!(error(src), "test.cfg:1:19: unknown function 'nope'");
}
