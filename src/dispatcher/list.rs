//! The destination list: Kamailio's `dispatcher.list` text format and the `dispatcher` table,
//! read into [`Entry`]s. Sans-IO: text or rows in, entries or a located error out.
//!
//! A line is `setid destination [flags [priority [attrs [description...]]]]`, fields
//! separated by blanks; `#` starts a comment (at the start of a line or of a field). The
//! destination is a `sip:` or `sips:` URI; flags are Kamailio's state bits (1 inactive,
//! 2 probing, 4 disabled; 8, "no DNS", is accepted and has no effect here); the priority
//! is an integer (higher first for algorithm 8); attrs are `name=value` pairs separated by
//! `;`, of which `weight` (0-100, algorithm 9) and `duid` are used, the rest kept as text.
//! A destination may appear once per set.

use std::fmt;

/// One destination as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub setid: u32,
    pub uri: String,
    pub flags: u32,
    pub priority: i32,
    pub attrs: Attrs,
    /// Where it was listed, for messages ("line 3", "id 17").
    pub origin: String,
}

/// The attributes of a destination (`weight=50;duid=abc`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// `weight`, None when not given.
    pub weight: Option<u32>,
    pub duid: Option<String>,
    /// The attribute text as written.
    pub raw: String,
}

/// Flag bits of the list's third column.
pub const FLAG_INACTIVE: u32 = 1;
pub const FLAG_PROBING: u32 = 2;
pub const FLAG_DISABLED: u32 = 4;
pub const FLAG_NO_DNS: u32 = 8;
const FLAGS_KNOWN: u32 = FLAG_INACTIVE | FLAG_PROBING | FLAG_DISABLED | FLAG_NO_DNS;

/// Largest weight a destination may have.
pub const MAX_WEIGHT: u32 = 100;
/// Most destinations a list may hold (a bound on memory and on the per-call candidate list).
pub const MAX_ENTRIES: usize = 4096;

/// A refused list: `file:line:col: what is wrong` (for a table row, col 0:
/// `table dispatcher, id 17: what is wrong`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.col == 0 {
            write!(f, "{} {}: {}", self.file, self.line, self.msg)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
        }
    }
}

impl std::error::Error for ListError {}

/// Parses the text of a list file named `file` (in messages).
pub fn parse(file: &str, text: &str) -> Result<Vec<Entry>, ListError> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let fields = fields(line);
        if fields.is_empty() {
            continue;
        }
        let err = |col: usize, msg: String| ListError {
            file: file.to_string(),
            line: lineno,
            col,
            msg,
        };
        let at = |k: usize| fields.get(k).copied();
        let (col, setid) = at(0).unwrap_or((1, ""));
        let (ucol, uri) = at(1).ok_or_else(|| {
            err(
                col + setid.len(),
                String::from("a destination URI is expected after the set id"),
            )
        })?;
        let mut e = entry(
            setid,
            uri,
            at(2).map(|(_, s)| s),
            at(3).map(|(_, s)| s),
            at(4).map(|(_, s)| s),
        )
        .map_err(|(k, msg)| {
            let col = match k {
                0 => col,
                1 => ucol,
                k => at(k).map_or(col, |(c, _)| c),
            };
            err(col, msg)
        })?;
        e.origin = format!("line {lineno}");
        check_duplicate(&out, &e).map_err(|m| err(ucol, m))?;
        if out.len() >= MAX_ENTRIES {
            return Err(err(1, format!("more than {MAX_ENTRIES} destinations")));
        }
        out.push(e);
    }
    Ok(out)
}

/// A row of the `dispatcher` table: (id, setid, destination, flags, priority, attrs).
pub struct Row<'a> {
    pub id: i64,
    pub setid: &'a str,
    pub destination: &'a str,
    pub flags: &'a str,
    pub priority: &'a str,
    pub attrs: &'a str,
}

/// Reads the table's rows; an error names the table and the row's id.
pub fn from_rows(table: &str, rows: &[Row<'_>]) -> Result<Vec<Entry>, ListError> {
    let mut out: Vec<Entry> = Vec::new();
    for r in rows {
        let err = |msg: String| ListError {
            file: format!("table {table}, id"),
            line: usize::try_from(r.id).unwrap_or(0),
            col: 0,
            msg,
        };
        let mut e = entry(
            r.setid.trim(),
            r.destination.trim(),
            opt(r.flags),
            opt(r.priority),
            opt(r.attrs),
        )
        .map_err(|(_, m)| err(m))?;
        e.origin = format!("id {}", r.id);
        check_duplicate(&out, &e).map_err(err)?;
        if out.len() >= MAX_ENTRIES {
            return Err(err(format!("more than {MAX_ENTRIES} destinations")));
        }
        out.push(e);
    }
    Ok(out)
}

/// A column's text, None when empty.
fn opt(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

fn check_duplicate(seen: &[Entry], e: &Entry) -> Result<(), String> {
    match seen
        .iter()
        .find(|x| x.setid == e.setid && x.uri.eq_ignore_ascii_case(&e.uri))
    {
        Some(x) => Err(format!(
            "{} is already in set {} ({})",
            e.uri, e.setid, x.origin
        )),
        None => Ok(()),
    }
}

/// The blank-separated fields of a line before any comment, with their 1-based columns.
fn fields(line: &str) -> Vec<(usize, &str)> {
    let mut v = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                v.push((s + 1, &line[s..i]));
            }
        } else if start.is_none() {
            if c == '#' {
                return v;
            }
            start = Some(i);
        }
    }
    if let Some(s) = start {
        v.push((s + 1, &line[s..]));
    }
    v
}

/// One destination from its fields; `Err((field index, what is wrong))`.
fn entry(
    setid: &str,
    uri: &str,
    flags: Option<&str>,
    priority: Option<&str>,
    attrs: Option<&str>,
) -> Result<Entry, (usize, String)> {
    let setid: u32 = setid.parse().map_err(|_| {
        (
            0,
            format!("set id \"{setid}\" is not a number (0 to 4294967295)"),
        )
    })?;
    let u = ser_parser::parse_uri(uri)
        .map_err(|e| (1, format!("bad destination URI \"{uri}\": {e}")))?;
    if !matches!(u.scheme, ser_parser::Scheme::Sip | ser_parser::Scheme::Sips) {
        return Err((
            1,
            format!("destination \"{uri}\" is not a sip: or sips: URI"),
        ));
    }
    if u.host_str.is_empty() {
        return Err((1, format!("destination \"{uri}\" has no host")));
    }
    if let Some(Some(t)) = u.param("transport") {
        if crate::sip::Transport::from_name(t).is_none() {
            return Err((
                1,
                format!("destination \"{uri}\": unknown transport \"{t}\""),
            ));
        }
    }
    let flags = match flags {
        None => 0,
        Some(f) => {
            let n: u32 =
                parse_number(f).ok_or_else(|| (2, format!("flags \"{f}\" are not a number")))?;
            if n & !FLAGS_KNOWN != 0 {
                return Err((
                    2,
                    format!("flags {n}: known bits are 1 (inactive), 2 (probing), 4 (disabled), 8 (no DNS)"),
                ));
            }
            n
        }
    };
    let priority = match priority {
        None => 0,
        Some(p) => p
            .parse()
            .map_err(|_| (3, format!("priority \"{p}\" is not an integer")))?,
    };
    let attrs = match attrs {
        None => Attrs::default(),
        Some(a) => parse_attrs(a).map_err(|m| (4, m))?,
    };
    Ok(Entry {
        setid,
        uri: uri.to_string(),
        flags,
        priority,
        attrs,
        origin: String::new(),
    })
}

/// A decimal or `0x` hexadecimal number.
fn parse_number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `weight=50;duid=abc;anything=else`.
pub fn parse_attrs(a: &str) -> Result<Attrs, String> {
    let mut out = Attrs {
        raw: a.to_string(),
        ..Attrs::default()
    };
    for part in a.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let name = name.trim();
        let value = value.trim();
        if name.is_empty() {
            return Err(format!("attribute \"{part}\" has no name"));
        }
        if name.eq_ignore_ascii_case("weight") {
            let w: u32 = value
                .parse()
                .ok()
                .filter(|w| *w <= MAX_WEIGHT)
                .ok_or_else(|| {
                    format!("weight \"{value}\" is not a number from 0 to {MAX_WEIGHT}")
                })?;
            out.weight = Some(w);
        } else if name.eq_ignore_ascii_case("duid") {
            out.duid = Some(value.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamailio_list_format() {
        let text = "\
# farm
1 sip:10.0.0.1:5060
1 sip:10.0.0.2:5070 0 10 weight=50;duid=b   # the big one
 2  sips:gw.example.com  2 -5 weight=0 the gateway

2 sip:10.0.0.3;transport=tcp 4
";
        let v = parse("ds.list", text).expect("parses");
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].setid, 1);
        assert_eq!(v[0].uri, "sip:10.0.0.1:5060");
        assert_eq!((v[0].flags, v[0].priority, v[0].attrs.weight), (0, 0, None));
        assert_eq!(v[1].priority, 10);
        assert_eq!(v[1].attrs.weight, Some(50));
        assert_eq!(v[1].attrs.duid.as_deref(), Some("b"));
        assert_eq!(v[1].attrs.raw, "weight=50;duid=b");
        assert_eq!(
            (v[2].setid, v[2].flags, v[2].priority),
            (2, FLAG_PROBING, -5)
        );
        assert_eq!(v[2].attrs.weight, Some(0));
        assert_eq!(v[3].flags, FLAG_DISABLED);
        assert_eq!(v[3].origin, "line 6");
    }

    #[test]
    fn bad_lines_name_file_line_and_column() {
        let e = |t: &str| {
            parse("d.list", t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(
            e("x sip:a").starts_with("d.list:1:1: set id \"x\""),
            "{}",
            e("x sip:a")
        );
        assert!(
            e("\n\n  7").starts_with("d.list:3:4: a destination URI is expected"),
            "{}",
            e("\n\n  7")
        );
        assert!(
            e("1 http://a").starts_with("d.list:1:3: "),
            "{}",
            e("1 http://a")
        );
        assert!(e("1 sip:a\n1   sip:b  zz").starts_with("d.list:2:12: flags \"zz\""));
        assert!(e("1 sip:a 16").starts_with("d.list:1:9: flags 16"));
        assert!(e("1 sip:a 0 high").starts_with("d.list:1:11: priority \"high\""));
        assert!(e("1 sip:a 0 0 weight=101").starts_with("d.list:1:13: weight \"101\""));
        assert!(e("1 sip:a 0 0 =5").starts_with("d.list:1:13: attribute"));
        assert!(e("1 sip:a;transport=foo").starts_with("d.list:1:3: "));
        assert!(
            e("1 sip:a\n1 SIP:a").starts_with("d.list:2:3: SIP:a is already in set 1 (line 1)"),
            "{}",
            e("1 sip:a\n1 SIP:a")
        );
        // The same destination in two sets is fine.
        assert_eq!(parse("d.list", "1 sip:a\n2 sip:a").map(|v| v.len()), Ok(2));
        // Comments and blank lines only: an empty list.
        assert_eq!(
            parse("d.list", "# nothing\n\n   # here\n").map(|v| v.len()),
            Ok(0)
        );
    }

    #[test]
    fn table_rows() {
        let rows = [
            Row {
                id: 1,
                setid: "3",
                destination: "sip:10.0.0.9:5080",
                flags: "0",
                priority: "5",
                attrs: "weight=20",
            },
            Row {
                id: 2,
                setid: "3",
                destination: "sip:10.0.0.10",
                flags: "",
                priority: "",
                attrs: "",
            },
        ];
        let v = from_rows("dispatcher", &rows).expect("rows");
        assert_eq!(v[0].attrs.weight, Some(20));
        assert_eq!(v[1].priority, 0);
        let bad = [Row {
            id: 17,
            setid: "3",
            destination: "nonsense",
            flags: "",
            priority: "",
            attrs: "",
        }];
        let e = from_rows("dispatcher", &bad).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("table dispatcher, id 17: bad destination URI")),
            "{e:?}"
        );
    }
}
