//! Diagnostics: [`ScriptError`], printed as `file:line:col: message`, and [`LineIndex`], which
//! turns byte offsets into 1-based line and column numbers.
//!
//! Every error the crate reports — syntax, unknown names, arity, route kinds, a host binder's
//! complaint — is a `ScriptError` pointing at the offending construct. There is no error
//! recovery: parsing and compiling stop at the first error.

use crate::ast::Span;

/// An error in a script, located in its source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {msg}")]
pub struct ScriptError {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub msg: String,
}

impl ScriptError {
    /// An error at `span` of `file`.
    pub fn at(file: &str, span: Span, msg: impl Into<String>) -> ScriptError {
        ScriptError {
            file: file.to_owned(),
            line: span.line,
            col: span.col,
            msg: msg.into(),
        }
    }
}

/// Start offsets of the lines of a source text, for offset → (line, column) in O(log n).
/// (pest's own `line_col` rescans the input from the start on every call.)
pub struct LineIndex<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub fn new(src: &'s str) -> LineIndex<'s> {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { src, starts }
    }

    /// 1-based line and column (counted in characters) of byte offset `pos`.
    pub fn line_col(&self, pos: usize) -> (u32, u32) {
        let pos = pos.min(self.src.len());
        let line = self.starts.partition_point(|&s| s <= pos) - 1;
        let start = self.starts[line];
        let col = self
            .src
            .get(start..pos)
            .map_or(pos - start, |s| s.chars().count());
        (to_u32(line + 1), to_u32(col + 1))
    }

    /// The span of bytes `start..end`.
    pub fn span(&self, start: usize, end: usize) -> Span {
        let (line, col) = self.line_col(start);
        Span {
            line,
            col,
            start,
            end,
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
