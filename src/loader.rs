//! Loading a script: parse, apply its global options, map `loadmodule` to built-in modules,
//! check `modparam`, compile to bytecode. Every refusal is `file:line:col: what is wrong`.
//!
//! Used at start, by `ser -c` (check only) and later by reload; it never touches sockets.

use std::sync::Arc;

use ser_script::{Item, ScriptError, Span, Value};

use crate::config::Config;
use crate::modules::Script;
use crate::modules::{self, ParamKind};

/// A script ready to run, and the configuration it produced.
pub struct Loaded {
    pub config: Config,
    pub script: Arc<Script>,
    pub modules: Vec<String>,
    /// The script's `modparam` values, checked.
    pub params: modules::Params,
}

fn err_at(file: &str, span: &Span, msg: impl Into<String>) -> ScriptError {
    ScriptError {
        file: file.to_string(),
        line: span.line,
        col: span.col,
        msg: msg.into(),
    }
}

/// Loads `src` (named `file` in messages) over the command line's configuration `base`.
pub fn load(file: &str, src: &str, base: &Config) -> Result<Loaded, ScriptError> {
    let parsed = ser_script::parse(file, src)?;
    let mut config = base.clone();
    config.apply_script(file, &parsed.items)?;

    let mut names: Vec<&str> = Vec::new();
    for item in &parsed.items {
        if let Item::LoadModule { path, span } = item {
            let name = modules::module_name(path);
            modules::find_module(name).map_err(|m| err_at(file, span, m))?;
            names.push(name);
        }
    }
    let exports = modules::exports_for(&names).map_err(|m| ScriptError {
        file: file.to_string(),
        line: 1,
        col: 1,
        msg: m,
    })?;
    let mut params = modules::Params::default();
    for item in &parsed.items {
        if let Item::ModParam {
            module,
            param,
            value,
            span,
        } = item
        {
            if !names.contains(&module.as_str()) {
                return Err(err_at(
                    file,
                    span,
                    format!("modparam for module '{module}', which is not loaded"),
                ));
            }
            let def = exports
                .params
                .iter()
                .find(|(m, d)| m == module && d.name == param)
                .map(|(_, d)| *d)
                .ok_or_else(|| {
                    err_at(
                        file,
                        span,
                        format!("module '{module}' has no parameter '{param}'"),
                    )
                })?;
            let ok = match def.kind {
                ParamKind::Int => matches!(value, Value::Int(_) | Value::Bool(_)),
                ParamKind::Str | ParamKind::Strs => matches!(value, Value::Str(_)),
            };
            if !ok {
                return Err(err_at(
                    file,
                    span,
                    format!("modparam '{module}.{param}': wrong type of value"),
                ));
            }
            if def.kind == ParamKind::Strs {
                params.add(module, param, value.clone());
            } else {
                params.set(module, param, value.clone());
            }
        }
    }
    // The modules' own checks of their values, now that every value is known.
    for item in &parsed.items {
        if let Item::ModParam {
            module,
            param,
            value,
            span,
        } = item
        {
            for (_, _, check) in exports
                .checks
                .iter()
                .filter(|(m, n, _)| m == module && n == param)
            {
                check(param, value, &params).map_err(|m| err_at(file, span, m))?;
            }
        }
    }
    // Binders resolve the module parameters they need into their actions now.
    let host: Arc<modules::Params> = Arc::new(params.clone());
    // A script that calls a module's function without loading the module (the seeds'
    // fragments do) gets the module loaded for it, with a warning, as long as this version
    // has it; modparam still needs an explicit loadmodule.
    let mut exports = exports;
    exports.registry.set_host(host.clone());
    let program = loop {
        match ser_script::compile(&parsed, &exports.registry) {
            Ok(p) => break p,
            Err(e) => {
                let Some(module) = implicit_module(&e.msg) else {
                    return Err(e);
                };
                if names.contains(&module) {
                    return Err(e);
                }
                crate::warn!(
                    "{}:{}:{}: {}; loading module '{module}' implicitly",
                    e.file,
                    e.line,
                    e.col,
                    e.msg
                );
                names.push(module);
                exports = modules::exports_for(&names).map_err(|m| ScriptError {
                    file: file.to_string(),
                    line: e.line,
                    col: e.col,
                    msg: m,
                })?;
                exports.registry.set_host(host.clone());
            }
        }
    };
    Ok(Loaded {
        config,
        script: Arc::new(program),
        modules: names.iter().map(|s| s.to_string()).collect(),
        params,
    })
}

/// The module an "unknown function" error names when this version has it (see
/// `modules::unknown_hint`).
fn implicit_module(msg: &str) -> Option<&'static str> {
    let rest = msg.split("is exported by module '").nth(1)?;
    let name = rest.split('\'').next()?;
    modules::find_module(name).ok()?;
    modules::static_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::registrar::Op;
    use crate::modules::Action;

    #[test]
    fn module_parameters_are_resolved_into_the_actions_at_load() {
        let src = r#"
loadmodule "modules/rr/rr.so"
loadmodule "modules/usrloc/usrloc.so"
loadmodule "modules/registrar/registrar.so"
modparam("rr", "enable_full_lr", 1)
modparam("registrar", "max_expires", 60)
modparam("registrar", "append_branches", 0)
route {
    record_route();
    if (method == "REGISTER") { save("location"); break; };
    lookup("location");
}
"#;
        let loaded = load("t.cfg", src, &Config::default()).expect("loads");
        let actions = loaded.script.actions();
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::RecordRoute { full_lr: true })));
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Registrar(Op::Save { policy, .. }) if policy.max_expires == 60
                && policy.default_expires == 3600
        )));
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Registrar(Op::Lookup {
                append_branches: false,
                ..
            })
        )));
        // Without the parameters: the modules' defaults.
        let plain = src.replace("modparam", "# modparam");
        let loaded = load("t.cfg", &plain, &Config::default()).expect("loads");
        assert!(loaded.script.actions().iter().any(|a| matches!(
            a,
            Action::Registrar(Op::Lookup {
                append_branches: true,
                ..
            })
        )));
        assert!(loaded
            .script
            .actions()
            .iter()
            .any(|a| matches!(a, Action::RecordRoute { full_lr: false })));
    }

    /// A script that loads `module` (on line 2, after a comment), refused.
    fn refused_load(module: &str) -> ScriptError {
        let src = format!(
            "# a module this ser may not have\nloadmodule \"modules/{module}/{module}.so\"\nroute {{ break; }}\n"
        );
        load("t.cfg", &src, &Config::default())
            .err()
            .expect("refused")
    }

    /// One of SER's modules this version does not have is refused at its loadmodule line.
    #[test]
    fn a_module_this_version_lacks_is_refused_at_its_loadmodule() {
        let e = refused_load("postgres");
        assert_eq!(
            e.to_string(),
            "t.cfg:2:1: module 'postgres' (database) is not available in this version of ser"
        );
    }

    /// A module this build left out (its cargo feature off: the small boards' builds) is
    /// refused at its loadmodule line, naming the feature; so is a call of one of its
    /// functions without the loadmodule (not loaded for the script as a module of this build).
    #[cfg(not(all(feature = "dispatcher", feature = "rtpengine", feature = "msilo")))]
    #[test]
    fn a_module_left_out_of_this_build_is_refused_naming_its_feature() {
        let left_out = [
            (
                cfg!(feature = "dispatcher"),
                "dispatcher",
                "ds_select_dst(\"1\", \"4\")",
            ),
            (
                cfg!(feature = "rtpengine"),
                "rtpengine",
                "rtpengine_offer()",
            ),
            (cfg!(feature = "msilo"), "msilo", "m_store()"),
        ];
        for (built, module, call) in left_out {
            if built {
                continue;
            }
            let e = refused_load(module);
            assert_eq!(
                e.to_string(),
                format!("t.cfg:2:1: module \"{module}\" is not in this build (built without the cargo feature \"{module}\")")
            );
            let src = format!("route {{\n    {call};\n}}\n");
            let e = load("t.cfg", &src, &Config::default())
                .err()
                .expect("refused");
            assert_eq!((e.line, e.col), (2, 5), "{e}");
            assert!(
                e.msg.contains(&format!("belongs to module '{module}', which is not in this build (built without the cargo feature \"{module}\")")),
                "{e}"
            );
        }
    }

    #[test]
    fn auth_parameters_are_checked_when_the_script_loads() {
        let src = r#"loadmodule "modules/auth/auth.so"
loadmodule "modules/auth_db/auth_db.so"
modparam("auth_db", "user_column", "user; DROP TABLE subscriber")
route {
    if (!www_authorize("example.org", "subscriber")) { www_challenge("example.org", "0"); break; };
}
"#;
        let e = load("t.cfg", src, &Config::default())
            .err()
            .expect("refused");
        assert_eq!((e.line, e.col), (5, 10), "{e}");
        assert!(e.msg.contains("is not a column or table name"), "{e}");
        let ok = src.replace("user; DROP TABLE subscriber", "uname");
        let loaded = load("t.cfg", &ok, &Config::default()).expect("loads");
        assert!(loaded.script.actions().iter().any(|a| matches!(
            a,
            Action::Auth(_, st) if st.user_column == "uname" && st.nonce_expire == 300
        )));
    }
}
