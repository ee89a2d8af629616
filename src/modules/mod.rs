//! Built-in modules and the core actions, each with one declarative export table.
//!
//! `loadmodule "…/sl.so"` in a script maps to the built-in module of that name; the functions
//! a script may call are the core's plus those of the modules it loaded, as in SER. Each module's
//! `register` lists its functions (arity, route kinds, binder) and its parameters. Modules of
//! SER that this version does not have yet, and those this build left out (`dispatcher`,
//! `rtpengine`, `msilo` are cargo features), are refused by name at load time, with the line.

use ser_script::{Arg, BindCtx, CmpOp, FnEntry, OperandEntry, Registry, Span, Value};

pub use action::{Action, AddrMatch, Cond, HostArg, PortArg, Script};

pub mod acc;
pub mod action;
pub mod auth;
pub mod core;
pub mod ctx;
pub mod digest;
#[cfg(feature = "dispatcher")]
pub mod dispatcher;
pub mod exec;
#[cfg(feature = "xmpp")]
pub mod jabber;
pub mod maxfwd;
#[cfg(feature = "msilo")]
pub mod msilo;
pub mod nathelper;
pub mod pike;
pub mod ratelimit;
pub mod registrar;
pub mod rewrite;
pub mod rr;
#[cfg(feature = "rtpengine")]
pub mod rtpengine;
pub mod sl;
pub mod textops;
pub mod tm;
pub mod usrloc;

pub use crate::config::Params;

/// A module's parameter: its name and the kind of value it takes.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Int,
    Str,
    /// A string that may be given many times, each `modparam` adding one (ratelimit's `pipe`).
    Strs,
}

/// A module's check of one value of its parameter (named by the first argument), given every
/// parameter of the script (for checks across parameters); `Err` is reported at that
/// `modparam`'s line and column.
pub type ParamCheck = fn(&str, &Value, &Params) -> Result<(), String>;

/// What modules export into: the script registry and the parameter table.
pub struct Exports {
    pub registry: Registry<Action, Cond>,
    pub params: Vec<(&'static str, ParamDef)>,
    pub checks: Vec<(&'static str, &'static str, ParamCheck)>,
}

impl Exports {
    pub fn function(&mut self, entry: FnEntry<Action>) {
        self.registry.function(entry);
    }

    pub fn alias(&mut self, alias: &'static str, of: &'static str) {
        self.registry.alias(alias, of);
    }

    pub fn param(&mut self, module: &'static str, def: ParamDef) {
        self.params.push((module, def));
    }

    /// A check the loader runs on each value of `module`'s parameter `name`.
    pub fn check(&mut self, module: &'static str, name: &'static str, check: ParamCheck) {
        self.checks.push((module, name, check));
    }
}

type Register = fn(&mut Exports);

/// What this build has of a module.
enum Impl {
    /// Built in: its export table.
    Built(Register),
    /// A module of SER this version does not have yet (what kind of module it is).
    NotYet(&'static str),
    /// Left out of this build: the cargo feature that brings it.
    // Made only where one of the optional modules is left out, not in the default build.
    #[cfg_attr(
        all(
            feature = "dispatcher",
            feature = "rtpengine",
            feature = "msilo",
            feature = "xmpp"
        ),
        allow(dead_code)
    )]
    NotBuilt(&'static str),
}

/// The module `$module` when the cargo feature `$feature` is on, else what it would take.
macro_rules! with_feature {
    ($feature:literal, $module:ident) => {{
        #[cfg(feature = $feature)]
        const IMPL: Impl = Impl::Built($module::register);
        #[cfg(not(feature = $feature))]
        const IMPL: Impl = Impl::NotBuilt($feature);
        IMPL
    }};
}

/// Every module name SER's scripts load, with our implementation where there is one.
const MODULES: &[(&str, Impl)] = &[
    ("sl", Impl::Built(sl::register)),
    ("maxfwd", Impl::Built(maxfwd::register)),
    ("textops", Impl::Built(textops::register)),
    ("tm", Impl::Built(tm::register)),
    ("rr", Impl::Built(rr::register)),
    ("usrloc", Impl::Built(usrloc::register)),
    ("registrar", Impl::Built(registrar::register)),
    ("auth", Impl::Built(auth::register_auth)),
    ("auth_db", Impl::Built(auth::register_auth_db)),
    ("group", Impl::Built(auth::register_group)),
    ("uri", Impl::Built(auth::register_uri)),
    ("acc", Impl::Built(acc::register)),
    ("exec", Impl::Built(exec::register)),
    ("jabber", with_feature!("xmpp", jabber)),
    ("pike", Impl::Built(pike::register)),
    ("ratelimit", Impl::Built(ratelimit::register)),
    ("dispatcher", with_feature!("dispatcher", dispatcher)),
    ("rtpengine", with_feature!("rtpengine", rtpengine)),
    ("msilo", with_feature!("msilo", msilo)),
    ("nathelper", Impl::Built(nathelper::register)),
    // The database driver: nothing to export; `db_url` of the modules picks the backend.
    ("mysql", Impl::Built(|_| {})),
    ("postgres", Impl::NotYet("database")),
    ("dbtext", Impl::NotYet("database")),
];

/// Functions by module, for a helpful message when a script calls one without loading it.
const FUNCTION_HOME: &[(&str, &str)] = &[
    ("sl_send_reply", "sl"),
    ("sl_reply_error", "sl"),
    ("mf_process_maxfwd_header", "maxfwd"),
    ("search", "textops"),
    ("append_hf", "textops"),
    ("append_urihf", "textops"),
    ("is_present_hf", "textops"),
    ("append_to_reply", "textops"),
    ("t_relay", "tm"),
    ("t_relay_to_udp", "tm"),
    ("t_newtran", "tm"),
    ("t_reply", "tm"),
    ("t_on_negative", "tm"),
    ("t_on_failure", "tm"),
    ("t_replicate", "tm"),
    ("t_on_branch", "tm"),
    ("t_on_reply", "tm"),
    ("t_relay_to", "tm"),
    ("t_relay_to_tcp", "tm"),
    ("t_relay_to_tls", "tm"),
    ("acc_request", "acc"),
    ("record_route", "rr"),
    ("loose_route", "rr"),
    ("addRecordRoute", "rr"),
    ("rewriteFromRoute", "rr"),
    ("save", "registrar"),
    ("lookup", "registrar"),
    ("www_authorize", "auth_db"),
    ("proxy_authorize", "auth_db"),
    ("www_challenge", "auth"),
    ("proxy_challenge", "auth"),
    ("is_user_in", "group"),
    ("is_in_group", "group"),
    ("check_to", "auth_db"),
    ("check_from", "auth_db"),
    ("is_user", "auth"),
    ("exec_msg", "exec"),
    ("exec_uri", "exec"),
    ("exec_user", "exec"),
    ("jab_send_message", "jabber"),
    ("xmpp_send_message", "jabber"),
    ("pike_check_req", "pike"),
    ("rl_check", "ratelimit"),
    ("rl_check_pipe", "ratelimit"),
    ("ds_select_dst", "dispatcher"),
    ("ds_select_domain", "dispatcher"),
    ("ds_next_dst", "dispatcher"),
    ("ds_next_domain", "dispatcher"),
    ("ds_mark_dst", "dispatcher"),
    ("ds_is_from_list", "dispatcher"),
    ("rtpengine_offer", "rtpengine"),
    ("rtpengine_answer", "rtpengine"),
    ("rtpengine_manage", "rtpengine"),
    ("rtpengine_delete", "rtpengine"),
    ("m_store", "msilo"),
    ("m_dump", "msilo"),
    ("nat_uac_test", "nathelper"),
    ("fix_nated_contact", "nathelper"),
    ("fix_nated_register", "nathelper"),
    ("fix_nated_sdp", "nathelper"),
    ("force_rport", "nathelper"),
    ("add_contact_alias", "nathelper"),
    ("handle_ruri_alias", "nathelper"),
];

fn unknown_hint(name: &str) -> Option<String> {
    let (_, module) = FUNCTION_HOME.iter().find(|(f, _)| *f == name)?;
    let (_, imp) = MODULES.iter().find(|(m, _)| m == module)?;
    Some(match imp {
        Impl::Built(_) => format!("function '{name}' is exported by module '{module}': load it with loadmodule \"{module}.so\""),
        Impl::NotYet(_) => format!("function '{name}' belongs to module '{module}', which this version of ser does not have yet"),
        Impl::NotBuilt(feature) => format!("function '{name}' belongs to module '{module}', which is not in this build (built without the cargo feature \"{feature}\")"),
    })
}

/// Whether a loaded module will use the default database (`sqlite://<data_dir>/ser.db`): it
/// keeps data in a database and the script gave it no `db_url`.
pub fn needs_default_db(params: &Params, modules: &[String]) -> bool {
    let loaded = |m: &str| modules.iter().any(|x| x == m);
    let no_url = |m: &str| params.str(m, "db_url").is_none();
    (loaded("usrloc") && params.int("usrloc", "db_mode").unwrap_or(0) > 0 && no_url("usrloc"))
        || auth::needs_default_db(params, modules)
        || (loaded("acc")
            && (params.int("acc", "db_flag").is_some()
                || params.int("acc", "db_missed_flag").is_some())
            && no_url("acc"))
        || (loaded("msilo") && no_url("msilo"))
}

/// The module name of a `loadmodule` path: "modules/tm/tm.so" → "tm".
pub fn module_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.strip_suffix(".so").unwrap_or(base)
}

/// The module table's own copy of a module name.
pub fn static_name(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(m, _)| *m == name).map(|(m, _)| *m)
}

/// Looks a module up; `Err` says why it can't be loaded.
pub fn find_module(name: &str) -> Result<Register, String> {
    match MODULES.iter().find(|(m, _)| *m == name) {
        Some((_, Impl::Built(reg))) => Ok(*reg),
        Some((_, Impl::NotYet(what))) => Err(format!(
            "module '{name}' ({what}) is not available in this version of ser"
        )),
        Some((_, Impl::NotBuilt(feature))) => Err(format!(
            "module \"{name}\" is not in this build (built without the cargo feature \"{feature}\")"
        )),
        None => Err(format!("unknown module '{name}'")),
    }
}

/// The registry for a script that loaded `modules`.
pub fn exports_for(modules: &[&str]) -> Result<Exports, String> {
    let mut ex = Exports {
        registry: Registry::new(),
        params: Vec::new(),
        checks: Vec::new(),
    };
    core::register(&mut ex);
    let mut seen: Vec<&str> = Vec::new();
    for m in modules {
        if seen.contains(m) {
            continue;
        }
        seen.push(m);
        find_module(m)?(&mut ex);
    }
    ex.registry.unknown_hint(unknown_hint);
    // The left-hand operands of comparisons (the seeds' Table 1, and msg:len).
    type OperandBind = fn(CmpOp, &Arg, &BindCtx<'_>) -> Result<Cond, String>;
    let operands: [(&'static str, OperandBind); 7] = [
        ("method", bind_method),
        ("uri", bind_uri),
        ("msg:len", bind_msg_len),
        ("src_ip", bind_src_ip),
        ("dst_ip", bind_dst_ip),
        ("proto", bind_proto),
        ("af", bind_af),
    ];
    for (name, bind) in operands {
        ex.registry.operand(OperandEntry { name, bind });
    }
    Ok(ex)
}

// ---- argument helpers shared by the modules' binders ----

/// A string argument: quoted, or a bare word/number where SER took one.
pub fn arg_str(a: &Arg) -> Result<String, String> {
    match &a.value {
        Value::Str(s) | Value::Ident(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Ip(ip) => Ok(ip.to_string()),
        other => Err(format!("expected a string, found {other:?}")),
    }
}

/// A number argument: SER's module functions take numbers in quotes ("10").
pub fn arg_int(a: &Arg) -> Result<i64, String> {
    match &a.value {
        Value::Int(i) => Ok(*i),
        Value::Str(s) | Value::Ident(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected a number, found \"{s}\"")),
        other => Err(format!("expected a number, found {other:?}")),
    }
}

pub fn no_span() -> Span {
    Span {
        line: 0,
        col: 0,
        start: 0,
        end: 0,
    }
}

/// A regex as SER compiled them: extended, case-insensitive, over bytes (POSIX regcomp in the
/// C locale: `.` is any byte, classes are ASCII).
fn regex(s: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::RegexBuilder::new(s)
        .case_insensitive(true)
        .unicode(false)
        .build()
        .map_err(|e| format!("bad regular expression \"{s}\": {e}"))
}

fn bind_method(op: CmpOp, rhs: &Arg, _: &BindCtx<'_>) -> Result<Cond, String> {
    let s = arg_str(rhs).map_err(|_| "method is compared with a string".to_string())?;
    Ok(match op {
        CmpOp::Eq => Cond::MethodEq(s),
        CmpOp::Ne => Cond::Not(Box::new(Cond::MethodEq(s))),
        CmpOp::Match => Cond::MethodRe(regex(&s)?),
        other => return Err(format!("method cannot be compared with {other:?}")),
    })
}

fn bind_uri(op: CmpOp, rhs: &Arg, _: &BindCtx<'_>) -> Result<Cond, String> {
    if matches!(rhs.value, Value::Myself) {
        return match op {
            CmpOp::Eq => Ok(Cond::UriMyself),
            CmpOp::Ne => Ok(Cond::Not(Box::new(Cond::UriMyself))),
            _ => Err("myself is compared with == or !=".into()),
        };
    }
    let s = arg_str(rhs).map_err(|_| "uri is compared with a string or myself".to_string())?;
    Ok(match op {
        CmpOp::Eq => Cond::UriEq(s),
        CmpOp::Ne => Cond::Not(Box::new(Cond::UriEq(s))),
        CmpOp::Match => Cond::UriRe(regex(&s)?),
        other => return Err(format!("uri cannot be compared with {other:?}")),
    })
}

/// `msg:len >= max_len` (the seeds' default script) or against a number of bytes.
fn bind_msg_len(op: CmpOp, rhs: &Arg, _: &BindCtx<'_>) -> Result<Cond, String> {
    if op == CmpOp::Match {
        return Err("msg:len is compared with a number".into());
    }
    let n = match &rhs.value {
        Value::Ident(s) if s == "max_len" => None,
        _ => Some(
            usize::try_from(arg_int(rhs)?).map_err(|_| "msg:len: expected a length".to_string())?,
        ),
    };
    Ok(Cond::MsgLen(op, n))
}

fn addr_match(op: CmpOp, rhs: &Arg) -> Result<(AddrMatch, bool), String> {
    let negate = match op {
        CmpOp::Eq => false,
        CmpOp::Ne => true,
        _ => return Err("addresses are compared with == or !=".into()),
    };
    let m = match &rhs.value {
        Value::Ip(ip) => AddrMatch::Any(vec![*ip]),
        Value::Net(ip, len) => AddrMatch::Net(*ip, *len),
        Value::NetMask(ip, mask) => {
            // Only contiguous masks (255.255.0.0), which are what a prefix length can say.
            let (ones, bits) = match mask {
                std::net::IpAddr::V4(m) => (u128::from(u32::from(*m)) << 96, 32),
                std::net::IpAddr::V6(m) => (u128::from(*m), 128),
            };
            let len = ones.leading_ones();
            if ones.count_ones() != len || len > bits {
                return Err(format!("{mask} is not a contiguous netmask"));
            }
            AddrMatch::Net(*ip, len as u8)
        }
        Value::Myself => AddrMatch::Myself,
        Value::Str(s) | Value::Ident(s) => {
            if let Some((ip, len)) = s.split_once('/') {
                let ip: std::net::IpAddr =
                    ip.parse().map_err(|_| format!("bad address \"{s}\""))?;
                let len: u8 = len.parse().map_err(|_| format!("bad prefix \"{s}\""))?;
                if len > if ip.is_ipv4() { 32 } else { 128 } {
                    return Err(format!("prefix /{len} is too long for {ip}"));
                }
                AddrMatch::Net(ip, len)
            } else {
                match crate::config::resolve_at_start(s) {
                    Ok(ips) => AddrMatch::Any(ips),
                    // A name DNS does not know now (the seeds' replication script names its
                    // peer, backup.foo.bar) loads with a warning and matches no address: the
                    // comparison is false until a reload finds the name.
                    Err(e) => {
                        crate::warn!("{e}: src_ip/dst_ip == {s} matches nothing");
                        AddrMatch::Any(Vec::new())
                    }
                }
            }
        }
        other => return Err(format!("expected an address, found {other:?}")),
    };
    Ok((m, negate))
}

fn bind_src_ip(op: CmpOp, rhs: &Arg, _: &BindCtx<'_>) -> Result<Cond, String> {
    let (m, neg) = addr_match(op, rhs)?;
    let c = Cond::SrcIp(m);
    Ok(if neg { Cond::Not(Box::new(c)) } else { c })
}

fn bind_dst_ip(op: CmpOp, rhs: &Arg, _: &BindCtx<'_>) -> Result<Cond, String> {
    let (m, neg) = addr_match(op, rhs)?;
    let c = Cond::DstIp(m);
    Ok(if neg { Cond::Not(Box::new(c)) } else { c })
}

/// `==` or `!=` around a condition.
fn eq_or_ne(op: CmpOp, c: Cond, what: &str) -> Result<Cond, String> {
    match op {
        CmpOp::Eq => Ok(c),
        CmpOp::Ne => Ok(Cond::Not(Box::new(c))),
        _ => Err(format!("{what} is compared with == or !=")),
    }
}

/// `proto == udp|tcp|tls|ws|wss` (any case; Kamailio's core keyword): the transport the
/// message came over. SCTP and anything else this server cannot listen on is refused.
fn bind_proto(op: CmpOp, rhs: &Arg, ctx: &BindCtx<'_>) -> Result<Cond, String> {
    const WHAT: &str = "proto is udp, tcp, tls, ws or wss";
    let s = arg_str(rhs).map_err(|_| ctx.fail_at(0, WHAT))?;
    let t = crate::sip::Transport::from_name(&s)
        .ok_or_else(|| ctx.fail_at(0, format!("unknown transport \"{s}\": {WHAT}")))?;
    eq_or_ne(op, Cond::Proto(t), "proto")
}

/// `af == inet|inet6` (any case): the address family the message came from.
fn bind_af(op: CmpOp, rhs: &Arg, ctx: &BindCtx<'_>) -> Result<Cond, String> {
    let s = arg_str(rhs).map_err(|_| ctx.fail_at(0, "af is inet or inet6"))?;
    let v6 = if s.eq_ignore_ascii_case("inet") {
        false
    } else if s.eq_ignore_ascii_case("inet6") {
        true
    } else {
        return Err(ctx.fail_at(
            0,
            format!("unknown address family \"{s}\": af is inet or inet6"),
        ));
    };
    eq_or_ne(op, Cond::AfInet6(v6), "af")
}

#[cfg(test)]
mod tests {
    use super::regex;

    /// Script regexes behave as SER's POSIX ones in the C locale: extended syntax, case
    /// folded in ASCII, over bytes, classes ASCII.
    #[test]
    fn script_regexes_are_posix_like_over_bytes() {
        let re = regex("^sip:[0-9]+@foo\\.bar").unwrap();
        assert!(re.is_match(b"SIP:0049123@FOO.bar"));
        assert!(!re.is_match(b"sip:bob@foo.bar"));
        // `.` is any byte, even one that is not UTF-8; `\w` and `[[:alpha:]]` are ASCII.
        assert!(regex("^a.b$").unwrap().is_match(b"a\xffb"));
        assert!(regex("^\\w+$").unwrap().is_match(b"Bob_42"));
        assert!(!regex("^\\w+$").unwrap().is_match("Jos\u{e9}".as_bytes()));
        assert!(regex("^[[:alpha:]]+$").unwrap().is_match(b"Alice"));
        // A literal non-ASCII character matches its UTF-8 bytes.
        assert!(regex("^jos\u{e9}$")
            .unwrap()
            .is_match("JOS\u{e9}".as_bytes()));
        assert!(regex("(unclosed").is_err());
    }
}
