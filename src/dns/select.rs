//! Ordering what NAPTR and SRV records offer: the SRV names of the usable NAPTR records by
//! order and preference (RFC 3263 4.1, RFC 3403), and SRV records by priority and RFC 2782's
//! weighted random selection.
//!
//! Pure functions over records already fetched: no queries, no cache, no address lookups.
//! Key functions: [`select_naptr`], [`order_srv`].

use hickory_proto::rr::rdata::{NAPTR, SRV};
use hickory_proto::rr::Name;
use rand::Rng;

use super::wire::Rdata;
use super::Transport;

/// The SRV names of the usable NAPTR records (flag `s`, our transport's service), by order
/// then preference (RFC 3263 4.1, RFC 3403).
pub(super) fn select_naptr(records: &[Rdata], transport: Transport) -> Vec<Name> {
    let service = transport.naptr_service().as_bytes();
    let mut usable: Vec<&NAPTR> = records
        .iter()
        .filter_map(|r| match r {
            Rdata::Naptr(n) => Some(n),
            _ => None,
        })
        .filter(|n| {
            n.flags().eq_ignore_ascii_case(b"s")
                && n.services().eq_ignore_ascii_case(service)
                && !n.replacement().is_root()
        })
        .collect();
    usable.sort_by_key(|n| (n.order(), n.preference()));
    let mut names: Vec<Name> = Vec::new();
    for n in usable {
        if !names.iter().any(|x| x.eq_ignore_root(n.replacement())) {
            names.push(n.replacement().clone());
        }
    }
    names
}

/// RFC 2782 ordering: by priority, and within a priority by weighted random selection (weight
/// 0 records first in the running sum, so they are picked only when the draw is 0).
pub(crate) fn order_srv<'a, R: Rng + ?Sized>(mut srvs: Vec<&'a SRV>, rng: &mut R) -> Vec<&'a SRV> {
    srvs.sort_by_key(|s| (s.priority(), s.weight() != 0));
    let mut out = Vec::with_capacity(srvs.len());
    let mut rest = srvs.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|s| s.priority() == first.priority())
            .count();
        let mut group: Vec<&SRV> = rest[..same].to_vec();
        rest = &rest[same..];
        while !group.is_empty() {
            let total: u32 = group.iter().map(|s| u32::from(s.weight())).sum();
            let draw = rng.random_range(0..=total);
            let mut running = 0u32;
            let pick = group
                .iter()
                .position(|s| {
                    running += u32::from(s.weight());
                    running >= draw
                })
                .unwrap_or(group.len() - 1);
            out.push(group.remove(pick));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::display_name;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn srv_order_priority_then_weight() {
        let recs = [
            SRV::new(20, 0, 1, name("c.")),
            SRV::new(10, 0, 2, name("zero.")),
            SRV::new(10, 100, 3, name("heavy.")),
            SRV::new(30, 5, 4, name("d.")),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let order = order_srv(recs.iter().collect(), &mut rng);
            let prios: Vec<u16> = order.iter().map(|s| s.priority()).collect();
            assert_eq!(prios, [10, 10, 20, 30]);
            if order[0].port() == 3 {
                heavy_first += 1;
            }
        }
        // Weight 0 goes first only on a draw of 0 out of 0..=100.
        assert!(heavy_first > 950, "heavy first {heavy_first}/1000");
    }

    #[test]
    fn srv_order_all_zero_weights_is_a_permutation() {
        let recs = [SRV::new(1, 0, 1, name("a.")), SRV::new(1, 0, 2, name("b."))];
        let mut rng = StdRng::seed_from_u64(1);
        let order = order_srv(recs.iter().collect(), &mut rng);
        let mut ports: Vec<u16> = order.iter().map(|s| s.port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [1, 2]);
    }

    #[test]
    fn naptr_selection_filters_and_orders() {
        let mk = |order, pref, flags: &[u8], service: &[u8], repl: &str| {
            Rdata::Naptr(NAPTR::new(
                order,
                pref,
                flags.into(),
                service.into(),
                Box::default(),
                name(repl),
            ))
        };
        let recs = vec![
            mk(20, 10, b"s", b"SIP+D2U", "_sip._udp.late."),
            mk(10, 20, b"S", b"sip+d2u", "_sip._udp.second."),
            mk(10, 10, b"s", b"SIP+D2U", "_sip._udp.first."),
            mk(5, 10, b"s", b"SIP+D2T", "_sip._tcp.tcp."),
            mk(5, 10, b"a", b"SIP+D2U", "aflag."),
            mk(1, 1, b"s", b"SIP+D2U", "."),
        ];
        let got: Vec<String> = select_naptr(&recs, Transport::Udp)
            .iter()
            .map(display_name)
            .collect();
        assert_eq!(
            got,
            ["_sip._udp.first", "_sip._udp.second", "_sip._udp.late"]
        );
        let tls: Vec<String> = select_naptr(&recs, Transport::Tls)
            .iter()
            .map(display_name)
            .collect();
        assert!(tls.is_empty());
    }
}
