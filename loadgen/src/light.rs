//! What the generator reads from name-addr headers (a To tag, the Contact URI, the
//! Record-Route URIs), taken from the raw value without validating the URI.
//!
//! The parser's `to()`, `contacts()` and `record_routes()` check every URI they return: right
//! for a proxy, and most of the generator's per-message cost. The generator only copies these
//! back into its next requests, so it scans for the delimiters (quoted strings respected).

/// Positions in `v` of `<` and `>` around the first bracketed URI, outside quoted strings.
fn brackets(v: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut quoted = false;
    let mut open = None;
    let mut i = from;
    while i < v.len() {
        match v[i] {
            b'\\' if quoted => i += 1,
            b'"' if open.is_none() => quoted = !quoted,
            b'<' if !quoted && open.is_none() => open = Some(i),
            b'>' if !quoted => {
                if let Some(o) = open {
                    return Some((o, i));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &v[s..e.max(s)]
}

/// The `tag` parameter of a To/From value (`<sip:a@b>;tag=x` or `sip:a@b;tag=x`).
pub fn tag(v: &[u8]) -> Option<&[u8]> {
    let params = match brackets(v, 0) {
        Some((_, close)) => &v[close + 1..],
        // addr-spec form: the header parameters follow the URI.
        None => v,
    };
    params.split(|&c| c == b';').skip(1).find_map(|p| {
        let (name, value) = match p.iter().position(|&c| c == b'=') {
            Some(eq) => (&p[..eq], &p[eq + 1..]),
            None => (p, &[][..]),
        };
        trim(name)
            .eq_ignore_ascii_case(b"tag")
            .then(|| trim(value))
            .filter(|t| !t.is_empty())
    })
}

/// The URI of the first entry of a Contact value.
pub fn first_uri(v: &[u8]) -> Option<&[u8]> {
    let end_plain = v
        .iter()
        .position(|&c| c == b';' || c == b',')
        .unwrap_or(v.len());
    match brackets(v, 0) {
        // A bracket after a plain entry's end belongs to a later entry.
        Some((o, c)) if !v[..o].contains(&b',') => Some(trim(&v[o + 1..c])),
        _ => Some(trim(&v[..end_plain])).filter(|u| !u.is_empty() && *u != b"*"),
    }
}

/// The URIs of every entry of a Record-Route (or Route) value, in order (these are always
/// bracketed).
pub fn bracketed_uris(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (o, c) = brackets(v, at)?;
        at = c + 1;
        Some(trim(&v[o + 1..c]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag(b"<sip:b@x>;tag=abc"), Some(&b"abc"[..]));
        assert_eq!(
            tag(b"\"B;tag=no\" <sip:b@x;tag=no> ; TAG = yes ;x"),
            Some(&b"yes"[..])
        );
        assert_eq!(tag(b"sip:b@x;tag=plain"), Some(&b"plain"[..]));
        assert_eq!(tag(b"<sip:b@x>"), None);
        assert_eq!(tag(b"<sip:b@x>;tag="), None);
    }

    #[test]
    fn contacts() {
        assert_eq!(
            first_uri(b"<sip:a@1.2.3.4:5060;transport=udp>;expires=60"),
            Some(&b"sip:a@1.2.3.4:5060;transport=udp"[..])
        );
        assert_eq!(first_uri(b"\"A <x>\" <sip:a@h>"), Some(&b"sip:a@h"[..]));
        assert_eq!(
            first_uri(b"sip:a@h;expires=5, <sip:b@h>"),
            Some(&b"sip:a@h"[..])
        );
        assert_eq!(first_uri(b"*"), None);
    }

    #[test]
    fn record_routes() {
        let v = b"<sip:p1;lr>, \"x>\" <sip:p2;lr;ftag=1>,<sip:p3>";
        let got: Vec<&[u8]> = bracketed_uris(v).collect();
        assert_eq!(got, [&b"sip:p1;lr"[..], b"sip:p2;lr;ftag=1", b"sip:p3"]);
    }
}
