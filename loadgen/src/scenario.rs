//! Scenarios: SIPp's XML scenario files of the common kind, compiled once into steps and
//! message templates, and the built-in scenarios (written in the same XML, see `builtin`).
//!
//! Supported: `send` (retrans, start_txn, ack_txn, next), `recv` (request=/response=, optional, rrs,
//! timeout, ontimeout, auth, response_txn, next), `pause` (milliseconds), `nop`, `label`,
//! `timewait`, and the keywords listed in `Kw`. Anything else (actions, variables, `test=`,
//! `chance=`, unknown keywords ...) is refused with `file:line: what` rather than run wrongly.
//! Only UDP: the generator's point is datagram load.

use anyhow::{bail, Result};

/// A keyword in a message template.
#[derive(Clone, Debug, PartialEq)]
pub enum Kw {
    Service,
    RemoteIp,
    RemotePort,
    LocalIp,
    LocalPort,
    Transport,
    /// `[branch]`, `[branch-N]`: per step, so every request and its retransmissions share one.
    Branch(u32),
    CallId,
    CallNumber,
    Cseq,
    Len,
    Pid,
    MediaIp,
    MediaPort,
    LocalIpType,
    MediaIpType,
    /// `[last_Name:]` (whole header lines) or `[last_Name]` (values only).
    Last {
        name: String,
        colon: bool,
    },
    LastRequestUri,
    Routes,
    NextUrl,
    PeerTagParam,
    Field(usize),
    /// `[authentication]` (optionally `username=` / `password=`): the answer to the last
    /// 401/407 challenge, as a whole header line.
    Authentication {
        user: Option<String>,
        password: Option<String>,
    },
    /// loadgen's own: the call's user, password, domain (from `--users` or the pattern) and
    /// callee (`--callee-pattern`).
    User,
    Password,
    Domain,
    Callee,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    Lit(Vec<u8>),
    Kw(Kw),
}

/// A message to send: header lines (a line that expands to nothing is left out, as SIPp does
/// for an empty `[routes]`) and body lines.
#[derive(Clone, Debug)]
pub struct Template {
    pub head: Vec<Vec<Seg>>,
    pub body: Vec<Vec<Seg>>,
    /// Request method (`None` for a response).
    pub method: Option<String>,
    /// Response status (`None` for a request).
    pub code: Option<u16>,
    pub uses_last: bool,
    pub uses_cseq: bool,
    /// Per line of `head`, whether it can never expand to blank (and so need not be checked);
    /// empty when not worked out: every line is checked.
    pub solid: Vec<bool>,
}

#[derive(Clone, Debug)]
pub enum Step {
    Send {
        tpl: Template,
        retrans: Option<u64>,
        next: Option<usize>,
    },
    Recv {
        request: Option<String>,
        response: Option<u16>,
        optional: bool,
        rrs: bool,
        auth: bool,
        timeout: Option<u64>,
        ontimeout: Option<usize>,
        next: Option<usize>,
        /// Method whose responses this step takes (`response_txn`), else the last request's.
        txn_method: Option<String>,
        line: u32,
    },
    Pause {
        ms: Option<u64>,
        next: Option<usize>,
    },
    Nop {
        next: Option<usize>,
    },
    Label,
    /// Keep the call a while to absorb retransmissions, then end it (successfully).
    Timewait(u64),
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
    /// Starts with a `recv` of a request: calls are created by what arrives (UAS).
    pub server: bool,
    pub uses_last: bool,
    /// Some message has `[peer_tag_param]`: keep the other side's tag.
    pub uses_peer_tag: bool,
}

fn err_at(file: &str, line: u32, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{file}:{line}: {what}")
}

/// Parses one keyword (the text between `[` and `]`).
pub fn keyword(s: &str) -> Result<Kw, String> {
    let s = s.trim();
    let (name, args) = match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let no_args = |k: Kw| {
        if args.is_empty() {
            Ok(k)
        } else {
            Err(format!(
                "keyword [{name}] takes no arguments here ('{args}' is not supported)"
            ))
        }
    };
    match name {
        "service" => no_args(Kw::Service),
        "remote_ip" => no_args(Kw::RemoteIp),
        "remote_port" => no_args(Kw::RemotePort),
        "local_ip" => no_args(Kw::LocalIp),
        "local_port" => no_args(Kw::LocalPort),
        "transport" => no_args(Kw::Transport),
        "branch" => no_args(Kw::Branch(0)),
        "call_id" => no_args(Kw::CallId),
        "call_number" => no_args(Kw::CallNumber),
        "cseq" => no_args(Kw::Cseq),
        "len" => no_args(Kw::Len),
        "pid" => no_args(Kw::Pid),
        "media_ip" => no_args(Kw::MediaIp),
        "media_port" => no_args(Kw::MediaPort),
        "local_ip_type" => no_args(Kw::LocalIpType),
        "media_ip_type" => no_args(Kw::MediaIpType),
        "routes" => no_args(Kw::Routes),
        "next_url" => no_args(Kw::NextUrl),
        "peer_tag_param" => no_args(Kw::PeerTagParam),
        "last_Request_URI" => no_args(Kw::LastRequestUri),
        "user" => no_args(Kw::User),
        "password" => no_args(Kw::Password),
        "domain" => no_args(Kw::Domain),
        "callee" => no_args(Kw::Callee),
        "authentication" => {
            let (mut user, mut password) = (None, None);
            for a in args.split_whitespace() {
                match a.split_once('=') {
                    Some(("username", v)) => user = Some(v.to_string()),
                    Some(("password", v)) => password = Some(v.to_string()),
                    _ => return Err(format!("[authentication {a}] is not supported")),
                }
            }
            Ok(Kw::Authentication { user, password })
        }
        _ => {
            if let Some(n) = name.strip_prefix("branch-") {
                let n = n
                    .parse()
                    .map_err(|_| format!("bad branch offset in [{name}]"))?;
                return no_args(Kw::Branch(n));
            }
            if let Some(n) = name.strip_prefix("field") {
                if let Ok(n) = n.parse() {
                    return no_args(Kw::Field(n));
                }
            }
            if let Some(h) = name.strip_prefix("last_") {
                if h.is_empty() {
                    return Err("empty header name in [last_]".into());
                }
                let (h, colon) = match h.strip_suffix(':') {
                    Some(h) => (h, true),
                    None => (h, false),
                };
                return no_args(Kw::Last {
                    name: h.to_string(),
                    colon,
                });
            }
            Err(format!("keyword [{s}] is not supported"))
        }
    }
}

/// Splits one template line into literal text and keywords.
fn compile_line(line: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find('[') {
        let Some(j) = rest[i..].find(']') else {
            break;
        };
        let inner = &rest[i + 1..i + j];
        // SIPp's keywords are identifiers; anything else in brackets (an IPv6 literal in an
        // SDP line, say) is text.
        let looks_kw = inner
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
        if !looks_kw {
            segs.push(Seg::Lit(rest.as_bytes()[..i + j + 1].to_vec()));
            rest = &rest[i + j + 1..];
            continue;
        }
        if i > 0 {
            segs.push(Seg::Lit(rest.as_bytes()[..i].to_vec()));
        }
        segs.push(Seg::Kw(keyword(inner)?));
        rest = &rest[i + j + 1..];
    }
    if !rest.is_empty() {
        segs.push(Seg::Lit(rest.as_bytes().to_vec()));
    }
    // Merge neighbouring literals.
    let mut out: Vec<Seg> = Vec::with_capacity(segs.len());
    for s in segs {
        match (out.last_mut(), s) {
            (Some(Seg::Lit(a)), Seg::Lit(b)) => a.extend_from_slice(&b),
            (_, s) => out.push(s),
        }
    }
    Ok(out)
}

/// Compiles a `<send>` body: leading whitespace of each line trimmed (SIPp does the same), the
/// first empty line ends the headers. `base_line` is the file line of the text's first line.
pub fn compile_template(text: &str, file: &str, base_line: u32) -> Result<Template> {
    let mut lines: Vec<(u32, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (base_line + i as u32, l.trim()))
        .collect();
    while lines.first().is_some_and(|(_, l)| l.is_empty()) {
        lines.remove(0);
    }
    while lines.last().is_some_and(|(_, l)| l.is_empty()) {
        lines.pop();
    }
    let Some(&(first_no, first)) = lines.first() else {
        bail!("{file}:{base_line}: empty message");
    };
    let split = lines
        .iter()
        .position(|(_, l)| l.is_empty())
        .unwrap_or(lines.len());
    let mut head = Vec::new();
    let mut body = Vec::new();
    let mut uses_last = false;
    let mut uses_cseq = false;
    for (k, (no, l)) in lines.iter().enumerate() {
        if k == split {
            continue;
        }
        let segs = compile_line(l).map_err(|e| err_at(file, *no, e))?;
        for s in &segs {
            match s {
                Seg::Kw(Kw::Last { .. } | Kw::LastRequestUri) => uses_last = true,
                Seg::Kw(Kw::Cseq) => uses_cseq = true,
                _ => {}
            }
        }
        if k < split {
            head.push(segs);
        } else {
            body.push(segs);
        }
    }
    let (method, code) = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        let code = rest
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| err_at(file, first_no, "a response needs a 3-digit status code"))?;
        (None, Some(code))
    } else {
        let m = first.split_whitespace().next().unwrap_or("");
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            bail!("{file}:{first_no}: the message does not start with a request or status line");
        }
        (Some(m.to_string()), None)
    };
    Ok(Template {
        head,
        body,
        method,
        code,
        uses_last,
        uses_cseq,
        solid: Vec::new(),
    })
}

fn bool_attr(n: &roxmltree::Node<'_, '_>, name: &str, file: &str, line: u32) -> Result<bool> {
    match n.attribute(name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => bail!("{file}:{line}: {name}=\"{v}\" is not supported (true or false)"),
    }
}

fn num_attr(n: &roxmltree::Node<'_, '_>, name: &str, file: &str, line: u32) -> Result<Option<u64>> {
    n.attribute(name)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| err_at(file, line, format!("{name}=\"{v}\" is not a number")))
        })
        .transpose()
}

/// Compiles a SIPp XML scenario. `file` names it in errors.
pub fn parse_xml(text: &str, file: &str) -> Result<Scenario> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| anyhow::anyhow!("{file}: XML: {e}"))?;
    let root = doc.root_element();
    let line_of = |n: &roxmltree::Node<'_, '_>| doc.text_pos_at(n.range().start).row;
    if root.tag_name().name() != "scenario" {
        bail!(
            "{file}:{}: the root element must be <scenario>",
            line_of(&root)
        );
    }
    let name = root.attribute("name").unwrap_or(file).to_string();
    // Steps first with label names unresolved, then resolve.
    let mut steps = Vec::new();
    let mut labels: Vec<(String, usize)> = Vec::new();
    let mut jumps: Vec<(usize, String, u32, bool)> = Vec::new(); // step, label, line, ontimeout
                                                                 // Sends that start a named transaction, and ACKs that belong to one: (step, name, line).
    let mut txn_starts: Vec<(usize, String)> = Vec::new();
    let mut txn_acks: Vec<(usize, String, u32)> = Vec::new();
    for n in root.children().filter(|n| n.is_element()) {
        let line = line_of(&n);
        let tag = n.tag_name().name();
        let allowed: &[&str] = match tag {
            "send" => &[
                "retrans",
                "start_txn",
                "ack_txn",
                "next",
                "crlf",
                "rtd",
                "start_rtd",
                "repeat_rtd",
                "counter",
                "display",
                "hide",
            ],
            "recv" => &[
                "request",
                "response",
                "optional",
                "rrs",
                "auth",
                "timeout",
                "ontimeout",
                "next",
                "response_txn",
                "crlf",
                "rtd",
                "start_rtd",
                "repeat_rtd",
                "counter",
                "display",
                "hide",
            ],
            "pause" => &[
                "milliseconds",
                "next",
                "crlf",
                "rtd",
                "start_rtd",
                "counter",
                "display",
                "hide",
            ],
            "nop" => &[
                "next",
                "crlf",
                "rtd",
                "start_rtd",
                "counter",
                "display",
                "hide",
            ],
            "label" => &["id"],
            "timewait" => &["milliseconds"],
            "ResponseTimeRepartition" | "CallLengthRepartition" => &["value"],
            other => bail!("{file}:{line}: <{other}> is not supported"),
        };
        for a in n.attributes() {
            if !allowed.contains(&a.name()) {
                bail!(
                    "{file}:{line}: attribute {}=\"{}\" of <{tag}> is not supported",
                    a.name(),
                    a.value()
                );
            }
        }
        let idx = steps.len();
        if let Some(l) = n.attribute("next") {
            jumps.push((idx, l.to_string(), line, false));
        }
        // Children: only the message text of <send>; actions are refused.
        if let Some(c) = n.children().find(|c| c.is_element()) {
            bail!(
                "{file}:{}: <{}> inside <{tag}> is not supported",
                line_of(&c),
                c.tag_name().name()
            );
        }
        match tag {
            "send" => {
                let text: String = n.children().filter_map(|c| c.text()).collect();
                let first_text = n.children().find(|c| c.is_text());
                let base = first_text.map(|c| line_of(&c)).unwrap_or(line);
                let tpl = compile_template(&text, file, base)?;
                let retrans = num_attr(&n, "retrans", file, line)?;
                if let Some(t) = n.attribute("start_txn") {
                    txn_starts.push((steps.len(), t.to_string()));
                }
                if let Some(t) = n.attribute("ack_txn") {
                    txn_acks.push((steps.len(), t.to_string(), line));
                }
                steps.push(Step::Send {
                    tpl,
                    retrans,
                    next: None,
                });
            }
            "recv" => {
                let request = n.attribute("request").map(str::to_string);
                let response = match n.attribute("response") {
                    Some(v) => Some(v.trim().parse::<u16>().map_err(|_| {
                        err_at(file, line, format!("response=\"{v}\" is not a status code"))
                    })?),
                    None => None,
                };
                if request.is_some() == response.is_some() {
                    bail!("{file}:{line}: <recv> needs exactly one of request= or response=");
                }
                if n.attribute("optional") == Some("global") {
                    bail!("{file}:{line}: optional=\"global\" is not supported");
                }
                if let Some(l) = n.attribute("ontimeout") {
                    jumps.push((idx, l.to_string(), line, true));
                }
                steps.push(Step::Recv {
                    request,
                    response,
                    optional: bool_attr(&n, "optional", file, line)?,
                    rrs: bool_attr(&n, "rrs", file, line)?,
                    auth: bool_attr(&n, "auth", file, line)?,
                    timeout: num_attr(&n, "timeout", file, line)?,
                    ontimeout: None,
                    next: None,
                    txn_method: n.attribute("response_txn").map(str::to_string),
                    line,
                });
            }
            "pause" => steps.push(Step::Pause {
                ms: num_attr(&n, "milliseconds", file, line)?,
                next: None,
            }),
            "nop" => steps.push(Step::Nop { next: None }),
            "label" => {
                let Some(id) = n.attribute("id") else {
                    bail!("{file}:{line}: <label> needs id=");
                };
                labels.push((id.to_string(), idx));
                steps.push(Step::Label);
            }
            "timewait" => steps.push(Step::Timewait(
                num_attr(&n, "milliseconds", file, line)?.unwrap_or(0),
            )),
            _ => {} // repartition tables: SIPp's screen statistics, not needed here
        }
    }
    // ack_txn: the ACK belongs to the transaction a start_txn names (SIPp): its [branch] is
    // that request's (the ACK of a negative final reply must carry the INVITE's branch).
    for (at, name, line) in txn_acks {
        let Some((start, _)) = txn_starts.iter().find(|(_, t)| *t == name) else {
            bail!("{file}:{line}: ack_txn=\"{name}\" names no start_txn");
        };
        let off = u32::try_from(at - start).unwrap_or(u32::MAX);
        if let Some(Step::Send { tpl, .. }) = steps.get_mut(at) {
            for seg in tpl.head.iter_mut().chain(tpl.body.iter_mut()).flatten() {
                if let Seg::Kw(Kw::Branch(0)) = seg {
                    *seg = Seg::Kw(Kw::Branch(off));
                }
            }
        }
    }
    // start_txn / response_txn name transactions by the request they start; map them to methods.
    let mut txn_methods: Vec<(String, String)> = Vec::new();
    for n in root.children().filter(|n| n.has_tag_name("send")) {
        if let Some(t) = n.attribute("start_txn") {
            let text: String = n.children().filter_map(|c| c.text()).collect();
            let m = text.split_whitespace().next().unwrap_or("").to_string();
            txn_methods.push((t.to_string(), m));
        }
    }
    for s in &mut steps {
        if let Step::Recv {
            txn_method: Some(t),
            line,
            ..
        } = s
        {
            match txn_methods.iter().find(|(k, _)| k == t) {
                Some((_, m)) => *t = m.clone(),
                None => bail!("{file}:{line}: response_txn=\"{t}\" names no start_txn"),
            }
        }
    }
    // A response is taken for the request sent last before its step (SIPp checks the CSeq
    // method the same way), unless response_txn names another.
    let mut last_method: Option<String> = None;
    for s in &mut steps {
        match s {
            Step::Send {
                tpl: Template {
                    method: Some(m), ..
                },
                ..
            } if m != "ACK" => last_method = Some(m.clone()),
            Step::Recv {
                response: Some(_),
                txn_method: t @ None,
                ..
            } => t.clone_from(&last_method),
            _ => {}
        }
    }
    for (idx, label, line, ontimeout) in jumps {
        let Some(&(_, to)) = labels.iter().find(|(l, _)| *l == label) else {
            bail!("{file}:{line}: no <label id=\"{label}\">");
        };
        match &mut steps[idx] {
            Step::Recv { ontimeout: o, .. } if ontimeout => *o = Some(to),
            Step::Send { next, .. }
            | Step::Recv { next, .. }
            | Step::Pause { next, .. }
            | Step::Nop { next } => *next = Some(to),
            _ => {}
        }
    }
    if steps
        .iter()
        .all(|s| !matches!(s, Step::Send { .. } | Step::Recv { .. }))
    {
        bail!("{file}: the scenario has no <send> or <recv>");
    }
    let first = steps
        .iter()
        .find(|s| !matches!(s, Step::Label | Step::Nop { .. }));
    let server = matches!(
        first,
        Some(Step::Recv {
            request: Some(_),
            ..
        })
    );
    if !server
        && !matches!(
            first,
            Some(Step::Send {
                tpl: Template {
                    method: Some(_),
                    ..
                },
                ..
            })
        )
    {
        bail!("{file}: a scenario must start with <send> of a request or <recv request=...>");
    }
    let uses_last = steps
        .iter()
        .any(|s| matches!(s, Step::Send { tpl, .. } if tpl.uses_last));
    let uses_peer_tag = steps.iter().any(|s| {
        matches!(s, Step::Send { tpl, .. }
            if tpl.head.iter().flatten().any(|g| *g == Seg::Kw(Kw::PeerTagParam)))
    });
    Ok(Scenario {
        name,
        steps,
        server,
        uses_last,
        uses_peer_tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="t">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      Call-ID: [call_id]
      CSeq: [cseq] INVITE
      Content-Length: [len]

      v=0
      c=IN IP[media_ip_type] [media_ip]

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true" next="end"/>
  <pause milliseconds="10"/>
  <label id="end"/>
</scenario>
"#;

    #[test]
    fn compiles_sipp_uac() {
        let s = parse_xml(UAC, "t.xml").expect("parse");
        assert!(!s.server);
        assert_eq!(s.steps.len(), 5);
        let Step::Send { tpl, retrans, .. } = &s.steps[0] else {
            panic!("send")
        };
        assert_eq!(*retrans, Some(500));
        assert_eq!(tpl.method.as_deref(), Some("INVITE"));
        assert_eq!(tpl.head.len(), 6);
        assert_eq!(tpl.body.len(), 2);
        assert_eq!(tpl.head[2], vec![Seg::Kw(Kw::Routes)]);
        let Step::Recv { next, rrs, .. } = &s.steps[2] else {
            panic!("recv")
        };
        assert_eq!((*next, *rrs), (Some(4), true));
    }

    #[test]
    fn an_ack_txn_takes_its_transaction_s_branch() {
        let x = r#"<scenario>
  <send start_txn="inv"><![CDATA[
INVITE sip:a@b SIP/2.0
Via: SIP/2.0/UDP h;branch=[branch]
]]></send>
  <recv response="486" response_txn="inv"/>
  <send ack_txn="inv"><![CDATA[
ACK sip:a@b SIP/2.0
Via: SIP/2.0/UDP h;branch=[branch]
]]></send>
</scenario>"#;
        let s = parse_xml(x, "a.xml").expect("parse");
        let Step::Send { tpl, .. } = &s.steps[2] else {
            panic!("send")
        };
        assert!(
            tpl.head[1].contains(&Seg::Kw(Kw::Branch(2))),
            "{:?}",
            tpl.head
        );
        let bad = x.replace("ack_txn=\"inv\"", "ack_txn=\"nope\"");
        let e = parse_xml(&bad, "a.xml").unwrap_err().to_string();
        assert!(
            e.contains("a.xml:7: ack_txn=\"nope\" names no start_txn"),
            "{e}"
        );
    }

    #[test]
    fn keywords() {
        assert_eq!(
            keyword("last_Via:"),
            Ok(Kw::Last {
                name: "Via".into(),
                colon: true
            })
        );
        assert_eq!(
            keyword("last_CSeq"),
            Ok(Kw::Last {
                name: "CSeq".into(),
                colon: false
            })
        );
        assert_eq!(keyword("field3"), Ok(Kw::Field(3)));
        assert_eq!(keyword("branch-2"), Ok(Kw::Branch(2)));
        assert!(matches!(
            keyword("authentication username=a password=b"),
            Ok(Kw::Authentication { .. })
        ));
        assert!(keyword("clock_tick").is_err());
        assert!(keyword("field0 line=2").is_err());
        assert!(keyword("$var").is_err());
        // An IPv6 literal in brackets is text, not a keyword.
        assert_eq!(
            compile_line("c=IN IP6 [::1]"),
            Ok(vec![Seg::Lit(b"c=IN IP6 [::1]".to_vec())])
        );
    }

    fn refusal(body: &str) -> String {
        let x = format!("<?xml version=\"1.0\"?>\n<scenario name=\"r\">\n{body}\n</scenario>\n");
        parse_xml(&x, "r.xml")
            .map(|_| ())
            .expect_err("must refuse")
            .to_string()
    }

    #[test]
    fn refusals_name_file_and_line() {
        let e = refusal("<send>\n<![CDATA[\nOPTIONS sip:a SIP/2.0\nX: [tdmmap]\n]]>\n</send>");
        assert!(
            e.starts_with("r.xml:6: keyword [tdmmap] is not supported"),
            "{e}"
        );
        let e = refusal("<send><![CDATA[\nOPTIONS sip:a SIP/2.0\n]]></send>\n<recv response=\"200\">\n<action><ereg/></action>\n</recv>");
        assert!(e.starts_with("r.xml:7: <action> inside <recv>"), "{e}");
        let e = refusal("<send><![CDATA[\nOPTIONS sip:a SIP/2.0\n]]></send>\n<recv response=\"200\" chance=\"0.5\"/>");
        assert!(e.starts_with("r.xml:6: attribute chance"), "{e}");
        let e = refusal("<sendCmd/>");
        assert!(e.starts_with("r.xml:3: <sendCmd>"), "{e}");
        let e = refusal("<send><![CDATA[\nOPTIONS sip:a SIP/2.0\n]]></send>\n<recv response=\"200\" next=\"nowhere\"/>");
        assert!(e.starts_with("r.xml:6: no <label"), "{e}");
        let e = refusal("<recv response=\"200\" optional=\"global\"/>");
        assert!(e.contains("r.xml:3: optional=\"global\""), "{e}");
        let e = refusal("<send><![CDATA[\n\n  SIP/2.0 abc OK\n]]></send>");
        assert!(e.starts_with("r.xml:5: a response needs"), "{e}");
    }

    #[test]
    fn the_test_data_scenarios_compile() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/sipp");
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("tests/data/sipp") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "xml") {
                let text = std::fs::read_to_string(&p).expect("read");
                let text = text.replace("@CALLEE@", "127.0.0.1:5070");
                let r = parse_xml(&text, &p.display().to_string());
                if text.contains("<action>") {
                    // SIPp's actions (<ereg> into variables, play_pcap_audio, ...) are the
                    // sipp-only scenarios': refused, with the file and line.
                    let e = r.map(|_| ()).expect_err("actions are refused").to_string();
                    assert!(
                        e.starts_with(&format!("{}:", p.display())) && e.contains("<action>"),
                        "{e}"
                    );
                } else {
                    r.expect("compiles");
                }
                n += 1;
            }
        }
        assert!(n >= 5);
    }
}
