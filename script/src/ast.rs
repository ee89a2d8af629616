//! The syntax tree of a parsed `ser.cfg`, with a source span on every node.
//!
//! The tree is what [`crate::parse`] produces and what [`crate::compile`] and the reference
//! interpreter consume. It records syntax only: names are not resolved, arguments are literal
//! [`Value`]s, and nothing here knows what `t_relay` or `uri` mean; the host's registry decides.
//!
//! Key types: [`Script`], [`Item`], [`RouteDef`], [`Stmt`], [`Expr`], [`Value`], and the route
//! kinds [`RouteKind`] / [`KindSet`] shared with the registry.

use std::fmt;
use std::net::IpAddr;

/// A place in the source: 1-based line and column (in characters) of the first character, and
/// the byte range `start..end` of the whole construct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub start: usize,
    pub end: usize,
}

/// A whole script: its file name (for diagnostics) and its top-level items in source order.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub file: String,
    pub items: Vec<Item>,
}

impl Script {
    /// The route blocks, in source order.
    pub fn routes(&self) -> impl Iterator<Item = &RouteDef> {
        self.items.iter().filter_map(|i| match i {
            Item::Route(r) => Some(r),
            _ => None,
        })
    }
}

/// One top-level item. Globals, `loadmodule` and `modparam` are carried for the host to apply;
/// the script crate does not interpret them.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `name = value` (`debug=3`, `listen=udp:10.0.0.1:5060`, `alias="foo.bar"`).
    Global {
        name: String,
        value: Value,
        span: Span,
    },
    /// `loadmodule "path"` or `loadmodule("path");`.
    LoadModule { path: String, span: Span },
    /// `modparam("module", "param", value)`.
    ModParam {
        module: String,
        param: String,
        value: Value,
        span: Span,
    },
    /// A route block of any kind.
    Route(RouteDef),
}

/// The kinds of route block. SER 0.8 knows `route` and `reply_route` (its failure route);
/// `failure_route`, `onreply_route` and `branch_route` come from its successors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// `route[n]`: requests; `route[0]` (or `route` without index) is the entry.
    Request,
    /// `reply_route[n]`.
    Reply,
    /// `failure_route[n]`.
    Failure,
    /// `onreply_route[n]`.
    OnReply,
    /// `branch_route[n]`.
    Branch,
}

impl RouteKind {
    /// Every kind, in declaration order.
    pub const ALL: [RouteKind; 5] = [
        RouteKind::Request,
        RouteKind::Reply,
        RouteKind::Failure,
        RouteKind::OnReply,
        RouteKind::Branch,
    ];

    /// The keyword that opens a block of this kind.
    pub fn keyword(self) -> &'static str {
        match self {
            RouteKind::Request => "route",
            RouteKind::Reply => "reply_route",
            RouteKind::Failure => "failure_route",
            RouteKind::OnReply => "onreply_route",
            RouteKind::Branch => "branch_route",
        }
    }

    /// Position in [`RouteKind::ALL`], used to index per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The one-element set of this kind.
    pub fn set(self) -> KindSet {
        KindSet(1 << self as u8)
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// A set of route kinds: where a host function may be called, or where a block may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KindSet(u8);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);
    pub const REQUEST: KindSet = KindSet(1 << RouteKind::Request as u8);
    pub const REPLY: KindSet = KindSet(1 << RouteKind::Reply as u8);
    pub const FAILURE: KindSet = KindSet(1 << RouteKind::Failure as u8);
    pub const ONREPLY: KindSet = KindSet(1 << RouteKind::OnReply as u8);
    pub const BRANCH: KindSet = KindSet(1 << RouteKind::Branch as u8);
    pub const ALL: KindSet = KindSet(0b1_1111);

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: RouteKind) -> bool {
        self.0 & kind.set().0 != 0
    }

    /// Whether every kind of `other` is in the set.
    pub fn contains_all(self, other: KindSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`RouteKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = RouteKind> {
        RouteKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }

    /// The raw bits (bit `k.index()` for kind `k`).
    pub fn bits(self) -> u8 {
        self.0
    }
}

impl std::ops::BitOr for KindSet {
    type Output = KindSet;
    fn bitor(self, rhs: KindSet) -> KindSet {
        KindSet(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for KindSet {
    fn bitor_assign(&mut self, rhs: KindSet) {
        self.0 |= rhs.0;
    }
}

impl From<RouteKind> for KindSet {
    fn from(k: RouteKind) -> KindSet {
        k.set()
    }
}

impl fmt::Display for KindSet {
    /// `route, failure_route`; `none` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, k) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(k.keyword())?;
        }
        Ok(())
    }
}

/// One route block: `kind[index] { body }`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDef {
    pub kind: RouteKind,
    /// `route { }` without an index is `route[0]`.
    pub index: u32,
    pub body: Vec<Stmt>,
    /// The header (`failure_route[1]`), where diagnostics about the block point.
    pub span: Span,
}

/// A literal value: a global's or modparam's value, an action argument, or the right-hand side
/// of a comparison. Bare words are classified by their shape; the host decides what they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, escapes `\n \r \t \a \\ \" \'` decoded; other backslashes kept (regexes).
    Str(String),
    /// A decimal (optionally signed), `0x` hexadecimal or `0`-prefixed octal number.
    Int(i64),
    /// `yes`/`no`, `on`/`off`, `true`/`false`, `enable`/`disable`.
    Bool(bool),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// `address/prefix-length`.
    Net(IpAddr, u8),
    /// `address/netmask`.
    NetMask(IpAddr, IpAddr),
    /// Any other bare word: `uri:host`, `max_len`, `foo.bar.com`, `udp:1.2.3.4:5060`.
    Ident(String),
    /// The `myself` keyword (the server's own names and addresses).
    Myself,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => f.write_str(if *b { "yes" } else { "no" }),
            Value::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Value::Ip(a) => write!(f, "{a}"),
            Value::Net(a, l) => write!(f, "{a}/{l}"),
            Value::NetMask(a, m) => write!(f, "{a}/{m}"),
            Value::Ident(s) => f.write_str(s),
            Value::Myself => f.write_str("myself"),
        }
    }
}

/// A value with its place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub value: Value,
    pub span: Span,
}

/// An action call `name(args)` (or bare `name`), as a statement or as a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
    /// The whole call, name to closing parenthesis.
    pub span: Span,
}

/// A statement. Empty statements (`;`) and bare blocks `{ ... }` leave no node: a bare block's
/// statements are spliced into the enclosing list, since the language has no scopes.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Call(Call),
    /// `if (c) a else if (d) b else e`: the arms are tried in order.
    If {
        arms: Vec<IfArm>,
        otherwise: Option<Vec<Stmt>>,
        span: Span,
    },
    /// `break`: leave the current route block (ends the script in the entry block).
    Break(Span),
    /// `drop`: end the script; the host discards the message.
    Drop(Span),
    /// `route(n)`: run `route[n]`, then continue here.
    Route {
        index: u32,
        span: Span,
    },
}

/// One `if`/`else if` arm.
#[derive(Debug, Clone, PartialEq)]
pub struct IfArm {
    pub cond: Expr,
    pub body: Vec<Stmt>,
}

/// Comparison operators. SER 0.8 has `==`, `!=` and `=~`; the ordering operators appear in
/// the seeds' default script (`msg:len >= max_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    /// `=~`: regular expression match (the host compiles it, case-insensitively in SER).
    Match,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Match => "=~",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition. `And`/`Or` are n-ary (chains are flat, so long chains cost no recursion);
/// evaluation short-circuits left to right.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>, Span),
    And(Vec<Expr>, Span),
    Not(Box<Expr>, Span),
    /// An action used as a condition: positive is true, negative false, zero ends the script.
    Call(Call),
    /// `operand op value`, e.g. `uri == myself`, `src_ip == 10.0.0.0/8`.
    Cmp {
        operand: String,
        operand_span: Span,
        op: CmpOp,
        rhs: Arg,
        span: Span,
    },
}

impl Expr {
    pub fn span(&self) -> Span {
        match self {
            Expr::Or(_, s) | Expr::And(_, s) | Expr::Not(_, s) => *s,
            Expr::Call(c) => c.span,
            Expr::Cmp { span, .. } => *span,
        }
    }
}
