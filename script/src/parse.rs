//! Source text → [`Script`]: runs the pest grammar (`grammar.pest`) and builds the AST.
//!
//! Besides walking pest's pairs this module does the lexical work the grammar leaves open:
//! decoding string escapes the way SER's lexer did, sorting bare words into numbers, booleans,
//! addresses and identifiers ([`classify_word`]), and turning pest's errors into
//! `file:line:col: expected ...` messages. It resolves no names: that is `compile`'s job.
//!
//! Before pest runs, a cheap scan bounds the nesting of brackets ([`MAX_NESTING`]); the grammar
//! recurses only through brackets, so this bounds the recursion of every later pass too.

use std::net::{IpAddr, Ipv6Addr};

use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

use crate::ast::{
    Arg, Call, CmpOp, Expr, IfArm, Item, RouteDef, RouteKind, Script, Span, Stmt, Value,
};
use crate::error::{LineIndex, ScriptError};

mod grammar {
    #[derive(pest_derive::Parser)]
    #[grammar = "grammar.pest"]
    pub struct SerParser;
}
use grammar::{Rule, SerParser};

/// The deepest nesting of `{`, `(` and `[` a script may have.
pub const MAX_NESTING: usize = 64;

/// Parses a whole script. `file` names it in diagnostics.
pub fn parse(file: &str, src: &str) -> Result<Script, ScriptError> {
    let idx = LineIndex::new(src);
    if let Some(pos) = too_deep(src) {
        let (line, col) = idx.line_col(pos);
        return Err(ScriptError {
            file: file.to_owned(),
            line,
            col,
            msg: format!("nesting deeper than {MAX_NESTING} levels"),
        });
    }
    let mut pairs = match SerParser::parse(Rule::script, src) {
        Ok(p) => p,
        Err(_) => {
            // Parse again with pest's token-level tracking ("expected ';'"), which is too slow
            // to leave on. The switch is process-wide: these second parses take turns, so one
            // cannot switch it off while another runs (its message then lost detail: the
            // errors test saw "expected a statement" for "expected a statement or '}'" about
            // once in fifty runs). A first parse racing with one only tracks more than it needs.
            static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let turn = DETAIL
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pest::set_error_detail(true);
            let e = SerParser::parse(Rule::script, src).err();
            pest::set_error_detail(false);
            drop(turn);
            let e =
                e.ok_or_else(|| ScriptError::at(file, Span::default(), "inconsistent parse"))?;
            return Err(syntax_error(file, src, &idx, &e));
        }
    };
    let b = Builder { file, idx: &idx };
    let mut items = Vec::new();
    if let Some(script) = pairs.next() {
        for p in script.into_inner() {
            match p.as_rule() {
                Rule::route_def => items.push(Item::Route(b.route_def(p)?)),
                Rule::loadmodule => items.push(b.loadmodule(p)?),
                Rule::modparam => items.push(b.modparam(p)?),
                Rule::global => items.push(b.global(p)?),
                _ => {}
            }
        }
    }
    Ok(Script {
        file: file.to_owned(),
        items,
    })
}

/// The offset of the first bracket nested deeper than [`MAX_NESTING`], skipping strings and
/// comments the way the grammar does.
fn too_deep(src: &str) -> Option<usize> {
    let b = src.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// A readable message for a pest error: what was expected at the furthest point the parser
/// reached, and what was found there instead.
fn syntax_error(
    file: &str,
    src: &str,
    idx: &LineIndex<'_>,
    e: &pest::error::Error<Rule>,
) -> ScriptError {
    let rule_pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    // pest tracks rules and literal tokens separately; either may have got further.
    let mut tokens: Vec<String> = Vec::new();
    let mut tok_pos = 0;
    if let Some(attempts) = e.parse_attempts() {
        tok_pos = attempts.max_position;
        for t in attempts.expected_tokens() {
            let t = t.to_string();
            // Whitespace and comment openers are possible almost everywhere; word characters
            // only continue the word before; keywords are covered by the rule names; ranges
            // (`a..z`) tell a reader nothing.
            let noise = t.trim().is_empty()
                || matches!(t.as_str(), "#" | "/*" | "-" | "." | "/" | ":" | "_")
                || t.contains("..")
                || t.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
            if !noise && !tokens.contains(&t) {
                tokens.push(t);
            }
        }
    }
    if tokens.is_empty() {
        tok_pos = 0;
    }
    let pos = rule_pos.max(tok_pos);
    let mut expected: Vec<String> = Vec::new();
    let mut stmt_context = false;
    if rule_pos == pos {
        if let ErrorVariant::ParsingError { positives, .. } = &e.variant {
            for r in positives {
                stmt_context |= matches!(
                    r,
                    Rule::if_stmt
                        | Rule::block
                        | Rule::break_stmt
                        | Rule::drop_stmt
                        | Rule::route_call
                        | Rule::bare_call
                );
                if let Some(name) = rule_name(*r) {
                    if !expected.iter().any(|x| x == name) {
                        expected.push(name.to_owned());
                    }
                }
            }
        }
    }
    if stmt_context {
        expected.retain(|s| !s.starts_with("a ") && !s.starts_with("an ") && s != "'if'");
        expected.insert(0, "a statement".to_owned());
    }
    if tok_pos == pos {
        for t in tokens {
            // A statement may start with `{`; a value with a quote or `[`.
            let covered = (stmt_context && (t == "{" || t == ";"))
                || (matches!(t.as_str(), "\"" | "'" | "[")
                    && expected.iter().any(|x| x == "a value"));
            let t = format!("'{t}'");
            if !covered && !expected.contains(&t) {
                expected.push(t);
            }
        }
    }
    if expected.iter().any(|x| x == "a comparison operator") {
        let ops = ["'=='", "'!='", "'=~'", "'<'", "'<='", "'>'", "'>='"];
        expected.retain(|x| !ops.contains(&x.as_str()));
    }
    let mut pos = pos;
    if expected == ["'='"] {
        // `name (` at the top level: a statement outside any route block, not a bad option.
        pos = rule_pos;
        expected = vec![
            "a global option (name = value), loadmodule, modparam or a route block".to_owned(),
        ];
    }
    if pos >= src.len() {
        if let Some(open) = unterminated_string(src) {
            let (line, col) = idx.line_col(open);
            return ScriptError {
                file: file.to_owned(),
                line,
                col,
                msg: "unterminated string".to_owned(),
            };
        }
    }
    let rest = src.get(pos..).unwrap_or("");
    let msg = match rest.chars().next() {
        Some(q @ ('"' | '\'')) if !rest[1..].contains(q) => "unterminated string".to_owned(),
        _ if expected.is_empty() => format!("unexpected {}", found_at(src, pos)),
        _ => format!(
            "expected {}, found {}",
            join_or(&expected),
            found_at(src, pos)
        ),
    };
    let (line, col) = idx.line_col(pos);
    ScriptError {
        file: file.to_owned(),
        line,
        col,
        msg,
    }
}

/// The start of a quoted string that runs to the end of the input, if any.
fn unterminated_string(src: &str) -> Option<usize> {
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                let open = i;
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return Some(open);
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn rule_name(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of file",
        Rule::route_def | Rule::route_kw => "a route block",
        Rule::loadmodule | Rule::kw_loadmodule => "loadmodule",
        Rule::modparam | Rule::kw_modparam => "modparam",
        Rule::global => "a global option",
        Rule::ident => "a name",
        Rule::route_index => "a route number",
        Rule::if_stmt | Rule::kw_if => "'if'",
        Rule::else_if | Rule::else_part | Rule::kw_else => "'else'",
        Rule::if_body => "a statement",
        Rule::call | Rule::bare_call => "an action call",
        Rule::cond | Rule::and_expr | Rule::unary | Rule::not_op | Rule::cmp | Rule::operand => {
            "a condition"
        }
        Rule::cmp_op => "a comparison operator",
        Rule::kw_and => "'&&'",
        Rule::kw_or => "'||'",
        Rule::arg | Rule::string | Rule::word | Rule::ip6_bracket => "a value",
        Rule::dq_inner | Rule::sq_inner => "a closing quote",
        _ => return None,
    })
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What stands at `pos`: a quoted word, a character, or "end of file".
fn found_at(src: &str, pos: usize) -> String {
    let rest = src.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return "end of file".to_owned();
    };
    if c.is_ascii_alphanumeric() || c == '_' {
        let w: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(32)
            .collect();
        format!("'{w}'")
    } else if c == '\n' || c == '\r' {
        "end of line".to_owned()
    } else {
        format!("'{}'", c.escape_debug())
    }
}

struct Builder<'a> {
    file: &'a str,
    idx: &'a LineIndex<'a>,
}

type Res<T> = Result<T, ScriptError>;

impl Builder<'_> {
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        self.idx.span(s.start(), s.end())
    }

    fn err(&self, span: Span, msg: impl Into<String>) -> ScriptError {
        ScriptError::at(self.file, span, msg)
    }

    fn route_def(&self, p: Pair<'_, Rule>) -> Res<RouteDef> {
        let whole = p.as_span();
        let mut kind = RouteKind::Request;
        let mut index = 0;
        let mut header_end = whole.start();
        let mut body = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::route_kw => {
                    header_end = c.as_span().end();
                    kind = match c.as_str() {
                        "reply_route" => RouteKind::Reply,
                        "failure_route" => RouteKind::Failure,
                        "onreply_route" => RouteKind::OnReply,
                        "branch_route" => RouteKind::Branch,
                        _ => RouteKind::Request,
                    };
                }
                Rule::route_index => {
                    // Include the closing bracket in the header span.
                    header_end = c.as_span().end() + 1;
                    index = self.route_index(&c)?;
                }
                _ => self.stmt(c, &mut body)?,
            }
        }
        let span = self.idx.span(whole.start(), header_end.min(whole.end()));
        Ok(RouteDef {
            kind,
            index,
            body,
            span,
        })
    }

    fn route_index(&self, p: &Pair<'_, Rule>) -> Res<u32> {
        p.as_str()
            .parse()
            .map_err(|_| self.err(self.span(p), "route number too large"))
    }

    fn loadmodule(&self, p: Pair<'_, Rule>) -> Res<Item> {
        let span = self.span(&p);
        let s = p.into_inner().find(|c| c.as_rule() == Rule::string);
        let path = s.map(|s| self.string(s)).unwrap_or_default();
        Ok(Item::LoadModule { path, span })
    }

    fn modparam(&self, p: Pair<'_, Rule>) -> Res<Item> {
        let span = self.span(&p);
        let mut it = p.into_inner().filter(|c| c.as_rule() != Rule::kw_modparam);
        let (Some(m), Some(n), Some(v)) = (it.next(), it.next(), it.next()) else {
            return Err(self.err(span, "malformed modparam"));
        };
        Ok(Item::ModParam {
            module: self.string(m),
            param: self.string(n),
            value: self.value(v)?.value,
            span,
        })
    }

    fn global(&self, p: Pair<'_, Rule>) -> Res<Item> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let (Some(n), Some(v)) = (it.next(), it.next()) else {
            return Err(self.err(span, "malformed option"));
        };
        Ok(Item::Global {
            name: n.as_str().to_owned(),
            value: self.value(v)?.value,
            span,
        })
    }

    /// Appends the statement(s) of pair `p` to `out`; blocks are spliced, `;` leaves nothing.
    fn stmt(&self, p: Pair<'_, Rule>, out: &mut Vec<Stmt>) -> Res<()> {
        match p.as_rule() {
            Rule::block | Rule::if_body => {
                for c in p.into_inner() {
                    self.stmt(c, out)?;
                }
            }
            Rule::if_stmt => out.push(self.if_stmt(p)?),
            Rule::break_stmt => out.push(Stmt::Break(self.span(&p))),
            Rule::drop_stmt => out.push(Stmt::Drop(self.span(&p))),
            Rule::route_call => {
                let span = self.span(&p);
                let index = match p.into_inner().find(|c| c.as_rule() == Rule::route_index) {
                    Some(i) => self.route_index(&i)?,
                    None => 0,
                };
                out.push(Stmt::Route { index, span });
            }
            Rule::call | Rule::bare_call => out.push(Stmt::Call(self.call(p)?)),
            _ => {}
        }
        Ok(())
    }

    fn if_stmt(&self, p: Pair<'_, Rule>) -> Res<Stmt> {
        let span = self.span(&p);
        let mut arms = Vec::new();
        let mut otherwise = None;
        let mut cond = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::cond => cond = Some(self.cond(c)?),
                Rule::if_body => {
                    let mut body = Vec::new();
                    self.stmt(c, &mut body)?;
                    if let Some(cond) = cond.take() {
                        arms.push(IfArm { cond, body });
                    }
                }
                Rule::else_if => {
                    let mut cond = None;
                    for e in c.into_inner() {
                        match e.as_rule() {
                            Rule::cond => cond = Some(self.cond(e)?),
                            Rule::if_body => {
                                let mut body = Vec::new();
                                self.stmt(e, &mut body)?;
                                if let Some(cond) = cond.take() {
                                    arms.push(IfArm { cond, body });
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Rule::else_part => {
                    let mut body = Vec::new();
                    for e in c.into_inner() {
                        self.stmt(e, &mut body)?;
                    }
                    otherwise = Some(body);
                }
                _ => {}
            }
        }
        Ok(Stmt::If {
            arms,
            otherwise,
            span,
        })
    }

    fn call(&self, p: Pair<'_, Rule>) -> Res<Call> {
        let span = self.span(&p);
        let mut name = String::new();
        let mut args = Vec::new();
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::ident => name = c.as_str().to_owned(),
                Rule::arg => args.push(self.arg(c)?),
                _ => {}
            }
        }
        Ok(Call { name, args, span })
    }

    fn arg(&self, p: Pair<'_, Rule>) -> Res<Arg> {
        match p.into_inner().next() {
            Some(v) => self.value(v),
            None => Err(ScriptError::at(
                self.file,
                Span::default(),
                "empty argument",
            )),
        }
    }

    /// A `string`, `ip6_bracket` or `word` pair as a located value.
    fn value(&self, p: Pair<'_, Rule>) -> Res<Arg> {
        let span = self.span(&p);
        let value = match p.as_rule() {
            Rule::string => Value::Str(self.string(p)),
            Rule::ip6_bracket => {
                let mut it = p.into_inner();
                let addr = it.next().map(|a| a.as_str()).unwrap_or("");
                let addr: Ipv6Addr = addr
                    .parse()
                    .map_err(|_| self.err(span, format!("invalid IPv6 address '{addr}'")))?;
                match it.next() {
                    Some(len) => Value::Net(
                        IpAddr::V6(addr),
                        self.prefix_len(&len.as_str()[1..], 128, span)?,
                    ),
                    None => Value::Ip(IpAddr::V6(addr)),
                }
            }
            Rule::arg => return self.arg(p),
            _ => classify_word(p.as_str()).map_err(|m| self.err(span, m))?,
        };
        Ok(Arg { value, span })
    }

    fn prefix_len(&self, s: &str, max: u8, span: Span) -> Res<u8> {
        match s.parse::<u8>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(self.err(span, format!("invalid network prefix length '/{s}'"))),
        }
    }

    fn string(&self, p: Pair<'_, Rule>) -> String {
        p.into_inner()
            .next()
            .map(|i| unescape(i.as_str()))
            .unwrap_or_default()
    }

    fn cond(&self, p: Pair<'_, Rule>) -> Res<Expr> {
        self.chain(p, Rule::and_expr, Self::and_expr, Expr::Or)
    }

    fn and_expr(&self, p: Pair<'_, Rule>) -> Res<Expr> {
        self.chain(p, Rule::unary, Self::unary, Expr::And)
    }

    /// An n-ary chain (`a || b || c`, `a && b`): one term stands for itself.
    fn chain(
        &self,
        p: Pair<'_, Rule>,
        rule: Rule,
        term: fn(&Self, Pair<'_, Rule>) -> Res<Expr>,
        make: fn(Vec<Expr>, Span) -> Expr,
    ) -> Res<Expr> {
        let span = self.span(&p);
        let mut terms = Vec::new();
        for c in p.into_inner() {
            if c.as_rule() == rule {
                terms.push(term(self, c)?);
            }
        }
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or_else(|| make(Vec::new(), span))
        } else {
            make(terms, span)
        })
    }

    fn unary(&self, p: Pair<'_, Rule>) -> Res<Expr> {
        let span = self.span(&p);
        let mut nots = 0usize;
        let mut atom = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::not_op => nots += 1,
                Rule::cond => atom = Some(self.cond(c)?),
                Rule::call => atom = Some(Expr::Call(self.call(c)?)),
                Rule::cmp => atom = Some(self.cmp(c)?),
                _ => {}
            }
        }
        let atom = atom.ok_or_else(|| self.err(span, "expected a condition"))?;
        // `!!x` tests the same as `x`: an action's zero still ends the script either way.
        Ok(if nots % 2 == 1 {
            Expr::Not(Box::new(atom), span)
        } else {
            atom
        })
    }

    fn cmp(&self, p: Pair<'_, Rule>) -> Res<Expr> {
        let span = self.span(&p);
        let mut operand = String::new();
        let mut operand_span = span;
        let mut op = CmpOp::Eq;
        let mut rhs = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::operand => {
                    operand_span = self.span(&c);
                    operand = c.as_str().to_owned();
                }
                Rule::cmp_op => {
                    op = match c.as_str() {
                        "!=" => CmpOp::Ne,
                        "=~" => CmpOp::Match,
                        ">" => CmpOp::Gt,
                        ">=" => CmpOp::Ge,
                        "<" => CmpOp::Lt,
                        "<=" => CmpOp::Le,
                        _ => CmpOp::Eq,
                    }
                }
                Rule::arg => rhs = Some(self.arg(c)?),
                _ => {}
            }
        }
        let rhs = rhs.ok_or_else(|| self.err(span, "expected a value"))?;
        Ok(Expr::Cmp {
            operand,
            operand_span,
            op,
            rhs,
            span,
        })
    }
}

/// Decodes a quoted string's body as SER's lexer did: `\n \r \t \a \\ \" \'` become the
/// character; any other backslash is kept with what follows, so regexes like `\+` and `\.`
/// reach the host unchanged.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('a') => out.push('\u{7}'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Sorts a bare word by its shape. An address followed by `/` must be a valid network; any
/// other word that is not a number, boolean, address or `myself` is an identifier.
pub fn classify_word(w: &str) -> Result<Value, String> {
    match w {
        "myself" => return Ok(Value::Myself),
        "yes" | "on" | "true" | "enable" => return Ok(Value::Bool(true)),
        "no" | "off" | "false" | "disable" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Some(n) = parse_int(w) {
        return n.map(Value::Int);
    }
    if let Ok(a) = w.parse::<IpAddr>() {
        return Ok(Value::Ip(a));
    }
    if let Some((addr, rest)) = w.split_once('/') {
        if let Ok(a) = addr.parse::<IpAddr>() {
            let max = if a.is_ipv4() { 32 } else { 128 };
            if let Ok(len) = rest.parse::<u8>() {
                if len <= max {
                    return Ok(Value::Net(a, len));
                }
            } else if let Ok(m) = rest.parse::<IpAddr>() {
                if m.is_ipv4() == a.is_ipv4() {
                    return Ok(Value::NetMask(a, m));
                }
            }
            return Err(format!("invalid network '{w}'"));
        }
    }
    Ok(Value::Ident(w.to_owned()))
}

/// `Some(Ok(n))` for a number, `Some(Err)` for a number that does not fit, `None` if `w` is
/// not a number at all.
fn parse_int(w: &str) -> Option<Result<i64, String>> {
    let (neg, digits) = match w.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, w),
    };
    let (radix, body) = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, h)
    } else if digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let r = i64::from_str_radix(body, radix).map(|n| if neg { -n } else { n });
    Some(r.map_err(|_| format!("number '{w}' out of range")))
}

#[cfg(test)]
mod tests {
    /// A literal test address (the tests' own constants, never input).
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    use super::*;

    #[test]
    fn words() {
        assert_eq!(classify_word("5060"), Ok(Value::Int(5060)));
        assert_eq!(classify_word("-1"), Ok(Value::Int(-1)));
        assert_eq!(classify_word("0666"), Ok(Value::Int(0o666)));
        assert_eq!(classify_word("0x10"), Ok(Value::Int(16)));
        assert_eq!(classify_word("0"), Ok(Value::Int(0)));
        assert_eq!(classify_word("yes"), Ok(Value::Bool(true)));
        assert_eq!(
            classify_word("192.168.0.10"),
            Ok(Value::Ip(ip("192.168.0.10")))
        );
        assert_eq!(
            classify_word("10.0.0.0/8"),
            Ok(Value::Net(ip("10.0.0.0"), 8))
        );
        assert_eq!(
            classify_word("10.0.0.0/255.0.0.0"),
            Ok(Value::NetMask(ip("10.0.0.0"), ip("255.0.0.0")))
        );
        assert!(classify_word("10.0.0.0/33").is_err());
        assert_eq!(classify_word("::1"), Ok(Value::Ip(ip("::1"))));
        assert_eq!(classify_word("fe80::/10"), Ok(Value::Net(ip("fe80::"), 10)));
        assert_eq!(
            classify_word("uri:host"),
            Ok(Value::Ident("uri:host".into()))
        );
        assert_eq!(
            classify_word("backup.foo.bar"),
            Ok(Value::Ident("backup.foo.bar".into()))
        );
        assert_eq!(
            classify_word("udp:1.2.3.4:5060"),
            Ok(Value::Ident("udp:1.2.3.4:5060".into()))
        );
        assert!(classify_word("99999999999999999999").is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"P-hint: rr\r\n"), "P-hint: rr\r\n");
        assert_eq!(unescape(r"sip:\+?[0-9]+@.*"), r"sip:\+?[0-9]+@.*");
        assert_eq!(unescape(r#"a\"b\\c"#), "a\"b\\c");
    }

    #[test]
    fn nesting_limit() {
        let deep = format!("route {{ {} }}", "{".repeat(100));
        let e = parse("t.cfg", &deep).unwrap_err();
        assert!(e.msg.contains("nesting"), "{e}");
        // Brackets inside strings and comments do not count.
        let ok = format!(
            "route {{ log(\"{}\"); # {}\n }}",
            "(".repeat(100),
            "{".repeat(100)
        );
        assert!(parse("t.cfg", &ok).is_ok());
    }
}
