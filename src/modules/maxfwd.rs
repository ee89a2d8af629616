//! Module maxfwd: `mf_process_maxfwd_header(limit)`.
//!
//! A request without Max-Forwards gets one with `limit`; one with 0 makes the function return
//! false (the script answers 483); otherwise the value is decremented in the forwarded copy.
//! An unparsable value is a 400 via `sl_reply_error`. This module keeps no state.

use ser_script::{Arg, BindCtx, KindSet};

use super::core::f;
use super::ctx::MsgCtx;
use super::Action;
use super::{arg_int, Exports};

pub fn register(ex: &mut Exports) {
    ex.function(f("mf_process_maxfwd_header", 1, 1, KindSet::REQUEST, bind));
}

fn bind(a: &[Arg], _: &BindCtx<'_>) -> Result<Action, String> {
    let n = a.first().map(arg_int).transpose()?.unwrap_or(-1);
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= 255)
        .map(Action::MaxFwd)
        .ok_or_else(|| format!("Max-Forwards limit {n} out of range 0..255"))
}

impl MsgCtx<'_, '_> {
    pub(crate) fn maxfwd(&mut self, limit: u32) -> i32 {
        if let Some(r) = self.maxfwd_result {
            return r;
        }
        let r = self.maxfwd_once(limit);
        self.maxfwd_result = Some(r);
        r
    }

    fn maxfwd_once(&mut self, limit: u32) -> i32 {
        let Some(h) = self.msg.header(ser_parser::HeaderName::MaxForwards) else {
            let line = format!("Max-Forwards: {limit}");
            self.s.edits.append_header(self.msg, line.as_bytes());
            return 2;
        };
        match self.msg.max_forwards() {
            Some(Ok(0)) => -1,
            Some(Ok(n)) => {
                let buf = itoa_buf(n - 1);
                let range = h.value_range.clone();
                self.s.edits.replace(range, buf.bytes());
                1
            }
            _ => self.fail(400, "Bad Max-Forwards header"),
        }
    }
}

/// A decimal number formatted on the stack.
struct Num([u8; 10], usize);
impl Num {
    fn bytes(&self) -> &[u8] {
        self.0.get(self.1..).unwrap_or_default()
    }
}
fn itoa_buf(mut n: u32) -> Num {
    let mut b = [0u8; 10];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    Num(b, i)
}
