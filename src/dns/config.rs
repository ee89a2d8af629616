//! The system's resolver configuration files: the `nameserver` lines of resolv.conf (the
//! default name servers) and the hosts file (the fallback for names DNS does not know).
//!
//! Parsing only, over text the caller read: it opens no file and sends no query; options,
//! search lists and malformed lines are ignored. Key functions: [`hosts_lookup`],
//! [`parse_resolv_conf`].

use std::net::{IpAddr, SocketAddr};

/// The addresses the hosts file (`/etc/hosts` format) gives `name` (case-insensitive, a
/// trailing dot ignored), in file order; comments and malformed lines are skipped.
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words
            .next()
            .and_then(|w| w.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if words.any(|w| w.trim_end_matches('.').eq_ignore_ascii_case(name)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The `nameserver` lines of a resolv.conf, port 53; a zone index (`fe80::1%eth0`) is dropped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_lines() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost # v6\n# 10.0.0.1 gone\n\
                    192.0.2.5  Pbx.Example.org pbx\nbad line\n";
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(hosts_lookup(text, "localhost"), vec![v4, v6]);
        assert_eq!(
            hosts_lookup(text, "pbx.example.org."),
            vec!["192.0.2.5".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(text, "gone").is_empty());
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\n;nameserver 192.0.2.9\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(text),
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
