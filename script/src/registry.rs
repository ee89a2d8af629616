//! What the host offers a script: its functions ([`FnEntry`]) and comparison operands
//! ([`OperandEntry`]), collected in a [`Registry`] that `compile` resolves names against.
//!
//! Each entry carries a `bind` function that turns the call's literal arguments into the host's
//! own typed value (`A` for actions, `C` for conditions) once, at load time: regexes compiled,
//! addresses parsed, route numbers checked through [`BindCtx`]. The VM then only hands those
//! values back to the host's [`crate::Exec`]. The registry itself knows no SIP and no modules.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::ast::{Arg, CmpOp, KindSet, RouteKind};

/// A host function callable from the script.
pub struct FnEntry<A> {
    pub name: &'static str,
    pub min_args: u8,
    pub max_args: u8,
    /// The route kinds it may run in; a call reachable from any other kind is refused.
    pub kinds: KindSet,
    /// Turns the literal arguments into the host's action value; an `Err` is reported at the
    /// call (or at the argument chosen with [`BindCtx::fail_at`]).
    pub bind: fn(&[Arg], &BindCtx<'_>) -> Result<A, String>,
}

/// A left-hand operand of comparisons (`method`, `uri`, `src_ip`, ...).
pub struct OperandEntry<C> {
    pub name: &'static str,
    /// Turns `operand op rhs` into the host's condition value; an `Err` is reported at the
    /// comparison (or at the right-hand side with `ctx.fail_at(0, ..)`).
    pub bind: fn(CmpOp, &Arg, &BindCtx<'_>) -> Result<C, String>,
}

/// What a binder may ask about the script and the call site.
pub struct BindCtx<'a> {
    pub(crate) routes: &'a dyn Fn(RouteKind, u32) -> bool,
    pub(crate) kinds: KindSet,
    pub(crate) blame: Cell<Option<usize>>,
    pub(crate) host: Option<&'a (dyn Any + Send + Sync)>,
}

impl BindCtx<'_> {
    /// Whether the script defines `kind[index]` (e.g. for `t_on_failure("1")`).
    pub fn has_route(&self, kind: RouteKind, index: u32) -> bool {
        (self.routes)(kind, index)
    }

    /// The route kinds the call site can run in.
    pub fn kinds(&self) -> KindSet {
        self.kinds
    }

    /// Marks argument `arg` (0-based) as the culprit of the error being returned, so the
    /// diagnostic points at it: `return Err(ctx.fail_at(1, "not a port number"))`.
    pub fn fail_at(&self, arg: usize, msg: impl Into<String>) -> String {
        self.blame.set(Some(arg));
        msg.into()
    }

    /// The host's settings given to [`Registry::set_host`], when they are a `T` (e.g. the
    /// module parameters a binder resolves into its action at load time).
    pub fn host<T: 'static>(&self) -> Option<&T> {
        self.host.and_then(|h| h.downcast_ref::<T>())
    }

    /// A context for calling a binder outside `compile` (the reference interpreter, tests).
    pub fn detached<R>(
        routes: &dyn Fn(RouteKind, u32) -> bool,
        kinds: KindSet,
        f: impl FnOnce(&BindCtx<'_>) -> R,
    ) -> R {
        let ctx = BindCtx {
            routes,
            kinds,
            blame: Cell::new(None),
            host: None,
        };
        f(&ctx)
    }
}

/// The host's functions and operands, by name.
pub struct Registry<A, C> {
    fns: Vec<FnEntry<A>>,
    fn_names: HashMap<&'static str, usize>,
    operands: Vec<OperandEntry<C>>,
    operand_names: HashMap<&'static str, usize>,
    hint: Option<fn(&str) -> Option<String>>,
    host: Option<Arc<dyn Any + Send + Sync>>,
}

impl<A, C> Default for Registry<A, C> {
    fn default() -> Self {
        Registry {
            fns: Vec::new(),
            fn_names: HashMap::new(),
            operands: Vec::new(),
            operand_names: HashMap::new(),
            hint: None,
            host: None,
        }
    }
}

impl<A, C> Registry<A, C> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings of the host every binder may read through [`BindCtx::host`] (opaque to the
    /// language: the host decides what they are).
    pub fn set_host(&mut self, host: Arc<dyn Any + Send + Sync>) -> &mut Self {
        self.host = Some(host);
        self
    }

    pub(crate) fn host(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.host.as_deref()
    }

    /// Registers a function.
    ///
    /// # Panics
    /// If the name is already taken, or `min_args > max_args`: both are bugs in the host's
    /// export tables, found the first time any script is compiled.
    pub fn function(&mut self, f: FnEntry<A>) -> &mut Self {
        assert!(
            f.min_args <= f.max_args,
            "function '{}': min_args > max_args",
            f.name
        );
        let i = self.fns.len();
        let prev = self.fn_names.insert(f.name, i);
        assert!(prev.is_none(), "function '{}' registered twice", f.name);
        self.fns.push(f);
        self
    }

    /// Makes `new` another name for the registered function `existing` (`seturi` for
    /// `rewriteuri`).
    ///
    /// # Panics
    /// If `existing` is unknown or `new` is taken.
    pub fn alias(&mut self, new: &'static str, existing: &str) -> &mut Self {
        let i = *self
            .fn_names
            .get(existing)
            .unwrap_or_else(|| panic!("alias '{new}': unknown function '{existing}'"));
        let prev = self.fn_names.insert(new, i);
        assert!(prev.is_none(), "function '{new}' registered twice");
        self
    }

    /// Registers a comparison operand.
    ///
    /// # Panics
    /// If the name is already taken.
    pub fn operand(&mut self, o: OperandEntry<C>) -> &mut Self {
        let i = self.operands.len();
        let prev = self.operand_names.insert(o.name, i);
        assert!(prev.is_none(), "operand '{}' registered twice", o.name);
        self.operands.push(o);
        self
    }

    /// Sets a function that explains an unknown function name, e.g. "exported by module
    /// 'tm', which is not loaded"; its text is appended to the error.
    pub fn unknown_hint(&mut self, hint: fn(&str) -> Option<String>) -> &mut Self {
        self.hint = Some(hint);
        self
    }

    /// The function registered under `name` (or an alias of it).
    pub fn get_function(&self, name: &str) -> Option<&FnEntry<A>> {
        self.fn_names.get(name).map(|&i| &self.fns[i])
    }

    /// The operand registered under `name`.
    pub fn get_operand(&self, name: &str) -> Option<&OperandEntry<C>> {
        self.operand_names.get(name).map(|&i| &self.operands[i])
    }

    /// The hint for an unknown function name, if the host gives one.
    pub fn hint_for(&self, name: &str) -> Option<String> {
        self.hint.and_then(|h| h(name))
    }
}
