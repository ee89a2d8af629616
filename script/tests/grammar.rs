//! The grammar: every construct of the SER 0.8 dialect, comments everywhere, and the shapes
//! the parser builds.

use ser_script::{parse, CmpOp, Expr, Item, RouteKind, Script, Stmt, Value};

fn ok(src: &str) -> Script {
    parse("t.cfg", src).unwrap_or_else(|e| panic!("{e}\n--- source:\n{src}"))
}

fn body(src: &str) -> Vec<Stmt> {
    let s = ok(src);
    let b = s.routes().next().expect("a route").body.clone();
    b
}

fn global(src: &str) -> Value {
    match &ok(src).items[0] {
        Item::Global { value, .. } => value.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn globals() {
    assert_eq!(global("debug=3"), Value::Int(3));
    assert_eq!(global("fork = yes ;"), Value::Bool(true));
    assert_eq!(
        global("log_stderror=no# (cmd line: -E)"),
        Value::Bool(false)
    );
    assert_eq!(
        global("fifo=\"/tmp/ser_fifo\""),
        Value::Str("/tmp/ser_fifo".into())
    );
    assert_eq!(
        global("listen=192.168.0.16"),
        Value::Ip("192.168.0.16".parse().unwrap())
    );
    assert_eq!(
        global("listen=udp:10.0.0.1:5060"),
        Value::Ident("udp:10.0.0.1:5060".into())
    );
    assert_eq!(global("listen=[::1]"), Value::Ip("::1".parse().unwrap()));
    assert_eq!(
        global("alias=sip.foo.bar"),
        Value::Ident("sip.foo.bar".into())
    );
    assert_eq!(global("fifo_mode=0666"), Value::Int(0o666));
    let s = ok(
        "debug=3 fork=no\nport=5060; children=4\nsip_warning=off server_signature=on mhomed=true",
    );
    let names: Vec<&str> = s
        .items
        .iter()
        .map(|i| match i {
            Item::Global { name, .. } => name.as_str(),
            _ => "?",
        })
        .collect();
    assert_eq!(
        names,
        [
            "debug",
            "fork",
            "port",
            "children",
            "sip_warning",
            "server_signature",
            "mhomed"
        ]
    );
}

#[test]
fn modules() {
    let s = ok(
        "loadmodule \"modules/sl/sl.so\"\nloadmodule(\"modules/tm/tm.so\");\n\
                modparam(\"usrloc\", \"db_mode\", 2)\nmodparam(\"auth\", \"calculate_ha1\", yes);\n\
                modparam(\"acc\", \"log_missed_flag\", 3 );\nmodparam(\"x\", \"y\", \"z\")",
    );
    assert!(matches!(&s.items[0], Item::LoadModule { path, .. } if path == "modules/sl/sl.so"));
    assert!(matches!(&s.items[1], Item::LoadModule { path, .. } if path == "modules/tm/tm.so"));
    assert!(
        matches!(&s.items[2], Item::ModParam { module, param, value: Value::Int(2), .. } if module == "usrloc" && param == "db_mode")
    );
    assert!(matches!(
        &s.items[3],
        Item::ModParam {
            value: Value::Bool(true),
            ..
        }
    ));
    assert!(matches!(&s.items[5], Item::ModParam { value: Value::Str(v), .. } if v == "z"));
}

#[test]
fn route_kinds_and_indexes() {
    let s = ok(
        "route { } route[1] { } reply_route[1] { } failure_route[2] { }\n\
                onreply_route[3] { } branch_route[4] { } route [ 5 ] { };",
    );
    let k: Vec<(RouteKind, u32)> = s.routes().map(|r| (r.kind, r.index)).collect();
    assert_eq!(
        k,
        [
            (RouteKind::Request, 0),
            (RouteKind::Request, 1),
            (RouteKind::Reply, 1),
            (RouteKind::Failure, 2),
            (RouteKind::OnReply, 3),
            (RouteKind::Branch, 4),
            (RouteKind::Request, 5)
        ]
    );
    let r = s.routes().nth(3).unwrap();
    assert_eq!((r.span.line, r.span.col), (1, 43));
}

#[test]
fn statements() {
    let b = body("route { t_relay(); break; drop; route(2); revert_uri; ; ; log(1, \"x\") }");
    assert!(matches!(&b[0], Stmt::Call(c) if c.name == "t_relay" && c.args.is_empty()));
    assert!(matches!(b[1], Stmt::Break(_)));
    assert!(matches!(b[2], Stmt::Drop(_)));
    assert!(matches!(b[3], Stmt::Route { index: 2, .. }));
    assert!(matches!(&b[4], Stmt::Call(c) if c.name == "revert_uri"));
    assert!(matches!(&b[5], Stmt::Call(c) if c.name == "log" && c.args.len() == 2));
    assert_eq!(b.len(), 6);
    // Keywords are case-sensitive, as in SER: `BREAK` is an ordinary name.
    assert!(matches!(&body("route { BREAK; }")[0], Stmt::Call(c) if c.name == "BREAK"));
    // Bare blocks are spliced into their parent.
    assert_eq!(
        body("route { { mark(1); { mark(2); } }; mark(3); }").len(),
        3
    );
}

#[test]
fn arguments() {
    let b = body(
        "route { forward(uri:host, uri:port); forward(192.168.0.10, 5060); forward(backup.foo.bar);\n\
         len_gt( max_len ); f(-1, 0x1F, [2001:db8::1], 2001:db8::2, 10.0.0.0/8, 10.0.0.0/255.0.0.0, 'single', \"\");\n\
         proxy_authorize(\"foo.bar\" /* realm */, \"subscriber\" /* table */); }",
    );
    let args = |i: usize| match &b[i] {
        Stmt::Call(c) => c.args.iter().map(|a| a.value.clone()).collect::<Vec<_>>(),
        _ => panic!(),
    };
    assert_eq!(
        args(0),
        [
            Value::Ident("uri:host".into()),
            Value::Ident("uri:port".into())
        ]
    );
    assert_eq!(
        args(1),
        [Value::Ip("192.168.0.10".parse().unwrap()), Value::Int(5060)]
    );
    assert_eq!(args(2), [Value::Ident("backup.foo.bar".into())]);
    assert_eq!(args(3), [Value::Ident("max_len".into())]);
    assert_eq!(
        args(4),
        [
            Value::Int(-1),
            Value::Int(31),
            Value::Ip("2001:db8::1".parse().unwrap()),
            Value::Ip("2001:db8::2".parse().unwrap()),
            Value::Net("10.0.0.0".parse().unwrap(), 8),
            Value::NetMask("10.0.0.0".parse().unwrap(), "255.0.0.0".parse().unwrap()),
            Value::Str("single".into()),
            Value::Str(String::new()),
        ]
    );
    assert_eq!(
        args(5),
        [
            Value::Str("foo.bar".into()),
            Value::Str("subscriber".into())
        ]
    );
}

#[test]
fn strings_keep_regex_backslashes() {
    let b = body(r#"route { if (uri=~"sip:\+?[0-9]+@.*") append_hf("P-hint: x\r\n"); }"#);
    let Stmt::If { arms, .. } = &b[0] else {
        panic!()
    };
    assert!(
        matches!(&arms[0].cond, Expr::Cmp { rhs, op: CmpOp::Match, .. } if rhs.value == Value::Str(r"sip:\+?[0-9]+@.*".into()))
    );
    assert!(
        matches!(&arms[0].body[0], Stmt::Call(c) if c.args[0].value == Value::Str("P-hint: x\r\n".into()))
    );
}

#[test]
fn if_forms() {
    // SER style `};`, C style `; else`, SER's `f() else`, a one-statement body, else-if chains.
    let b = body(
        "route {\n\
         if (method==\"REGISTER\") { save(\"location\"); break; };\n\
         if (!method==\"REGISTER\") record_route();\n\
         if (x==1) f(); else g();\n\
         if (x==1) f() else g();\n\
         if (x==1) { a(); } else if (x==2) { b(); } else if (x==3) c(); else { d(); };\n\
         if(x==1){a();}else{b();}\n\
         }",
    );
    assert_eq!(b.len(), 6);
    let Stmt::If {
        arms, otherwise, ..
    } = &b[4]
    else {
        panic!()
    };
    assert_eq!(arms.len(), 3);
    assert!(otherwise.is_some());
    let Stmt::If {
        arms, otherwise, ..
    } = &b[1]
    else {
        panic!()
    };
    assert!(otherwise.is_none() && arms[0].body.len() == 1);
    assert!(matches!(&arms[0].cond, Expr::Not(inner, _) if matches!(**inner, Expr::Cmp { .. })));
}

#[test]
fn conditions() {
    let cond = |src: &str| match &body(&format!("route {{ if ({src}) f(); }}"))[0] {
        Stmt::If { arms, .. } => arms[0].cond.clone(),
        _ => panic!(),
    };
    // AND binds tighter than OR; `|`, `or`, `and` are spellings of the same.
    assert!(
        matches!(cond("a() || b() && c()"), Expr::Or(t, _) if t.len() == 2 && matches!(t[1], Expr::And(..)))
    );
    assert!(matches!(cond("a() | b() | c()"), Expr::Or(t, _) if t.len() == 3));
    assert!(matches!(cond("a() or b() and c()"), Expr::Or(t, _) if t.len() == 2));
    assert!(matches!(cond("(a() || b()) && c()"), Expr::And(t, _) if matches!(t[0], Expr::Or(..))));
    // `!` applies to the next comparison only.
    assert!(matches!(cond("!uri=~\"x\" && a()"), Expr::And(t, _) if matches!(t[0], Expr::Not(..))));
    assert!(
        matches!(cond("src_ip==192.168.0.0/16"), Expr::Cmp { rhs, .. } if matches!(rhs.value, Value::Net(_, 16)))
    );
    assert!(matches!(cond("dst_ip==127.0.0.1"), Expr::Cmp { .. }));
    assert!(
        matches!(cond("src_ip==backup.foo.bar"), Expr::Cmp { rhs, .. } if rhs.value == Value::Ident("backup.foo.bar".into()))
    );
    assert!(
        matches!(cond("uri==myself"), Expr::Cmp { rhs, op: CmpOp::Eq, .. } if rhs.value == Value::Myself)
    );
    assert!(matches!(
        cond("uri!=myself"),
        Expr::Cmp { op: CmpOp::Ne, .. }
    ));
    assert!(
        matches!(cond("msg:len >= max_len"), Expr::Cmp { operand, op: CmpOp::Ge, .. } if operand == "msg:len")
    );
    assert!(matches!(
        cond("( src_ip==192.68.77.110 and method==\"INVITE\")"),
        Expr::And(..)
    ));
    // Kamailio's core keywords for the transport and address family: operands like any.
    for (src, op, operand, value) in [
        ("proto==UDP", CmpOp::Eq, "proto", "UDP"),
        ("proto != tls", CmpOp::Ne, "proto", "tls"),
        ("af==INET6", CmpOp::Eq, "af", "INET6"),
        ("af == inet", CmpOp::Eq, "af", "inet"),
    ] {
        assert!(
            matches!(&cond(src), Expr::Cmp { operand: o, op: p, rhs, .. }
                if o == operand && *p == op && rhs.value == Value::Ident(value.into())),
            "{src}"
        );
    }
    assert!(matches!(
        cond("proto == TCP && af == inet6 || src_ip == 10.0.0.0/8"),
        Expr::Or(t, _) if matches!(t[0], Expr::And(..))
    ));
    assert!(matches!(
        cond("is_user_in(\"Request-URI\", \"free-pstn\") /* free */ | uri=~\"sip:[79]\" /* pbx */"),
        Expr::Or(..)
    ));
}

#[test]
fn comments_everywhere() {
    let src = "# leading\n/* block\n comment */ debug=3 /* after */ # trailing\n\
               loadmodule /* x */ \"sl.so\" # y\n\
               route /* a */ [ /* b */ 1 /* c */ ] /* d */ { # e\n\
               if /* f */ ( /* g */ uri /* h */ == /* i */ myself /* j */ ) /* k */ { /* l */ f( /* m */ 1 /* n */ , /* o */ 2 /* p */ ) /* q */ ; # r\n\
               } /* s */ else /* t */ g(); /* u */\n\
               } # end";
    let s = ok(src);
    assert_eq!(s.items.len(), 3);
    assert_eq!(s.routes().next().unwrap().index, 1);
}

#[test]
fn missing_final_semicolon() {
    assert_eq!(body("route { f(); g() }").len(), 2);
    assert_eq!(body("route { if (x==1) { f() } else { break } }").len(), 1);
    assert_eq!(body("route { f(); route(1) }\nroute[1] { drop }").len(), 2);
}

#[test]
fn spans() {
    let s = ok("route {\n  if (uri == myself) {\n    t_relay();\n  };\n}");
    let Stmt::If { arms, span, .. } = &s.routes().next().unwrap().body[0] else {
        panic!()
    };
    assert_eq!((span.line, span.col), (2, 3));
    let Expr::Cmp {
        operand_span, rhs, ..
    } = &arms[0].cond
    else {
        panic!()
    };
    assert_eq!((operand_span.line, operand_span.col), (2, 7));
    assert_eq!(
        (rhs.span.line, rhs.span.col, rhs.span.end - rhs.span.start),
        (2, 14, 6)
    );
    let Stmt::Call(c) = &arms[0].body[0] else {
        panic!()
    };
    assert_eq!((c.span.line, c.span.col), (3, 5));
    assert_eq!(
        &"route {\n  if (uri == myself) {\n    t_relay();\n  };\n}"[c.span.start..c.span.end],
        "t_relay()"
    );
}

#[test]
fn empty_and_whitespace_scripts() {
    assert!(ok("").items.is_empty());
    assert!(ok("  # nothing\n/* here */\n").items.is_empty());
}
