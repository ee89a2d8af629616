//! The selection algorithms of `ds_select_dst(set, alg)`, sans-IO: given a set's
//! destinations (active or not, calls in flight), a hash of the request and the set's
//! counter, the order in which to try them — the chosen one first, then the fail-over
//! candidates `ds_next_dst` takes. Only active destinations appear.
//!
//! | alg | chooses | fail-over order |
//! |---|---|---|
//! | 0, 1, 2, 3 | hash of the Call-ID, From URI, To URI, Request-URI modulo the set size; an inactive one passes to the next active in list order, so the others' calls keep their destination | list order after it |
//! | 4 | round robin: the set's counter modulo the set size, the next active from there | list order after it |
//! | 8 | the highest priority (the set is sorted by priority, highest first, as Kamailio) | priority order |
//! | 9 | weighted round robin over the `weight` attributes (a smooth interleaving, so weights 50/30/20 give 5/3/2 in every 10) | by weight, highest first |
//! | 10 | the fewest calls in flight (ties: round robin) | fewest calls first |
//!
//! The URI hashes read `user@host:port` (host in lower case; the port only when given), so
//! parameters and display names do not move a caller to another destination.

/// A selection algorithm (Kamailio's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    CallId,
    From,
    To,
    RequestUri,
    RoundRobin,
    Priority,
    Weight,
    Load,
}

impl Alg {
    /// The algorithm of Kamailio's number; None for the ones this module lacks.
    pub fn from_number(n: i64) -> Option<Alg> {
        Some(match n {
            0 => Alg::CallId,
            1 => Alg::From,
            2 => Alg::To,
            3 => Alg::RequestUri,
            4 => Alg::RoundRobin,
            8 => Alg::Priority,
            9 => Alg::Weight,
            10 => Alg::Load,
            _ => return None,
        })
    }

    pub fn number(self) -> u8 {
        match self {
            Alg::CallId => 0,
            Alg::From => 1,
            Alg::To => 2,
            Alg::RequestUri => 3,
            Alg::RoundRobin => 4,
            Alg::Priority => 8,
            Alg::Weight => 9,
            Alg::Load => 10,
        }
    }

    /// Whether the algorithm advances the set's counter (round robin, weight, load ties).
    pub fn uses_counter(self) -> bool {
        matches!(self, Alg::RoundRobin | Alg::Weight | Alg::Load)
    }
}

/// What the algorithms see of one set.
pub struct Input<'a> {
    /// Destinations in the set (list order: priority, highest first).
    pub n: usize,
    /// The request's hash (algorithms 0-3).
    pub hash: u32,
    /// The set's counter for this selection (algorithms 4, 9, 10).
    pub counter: usize,
    /// The weight table of the set ([`weight_table`]).
    pub weights: &'a [u16],
    /// Each destination's weight (fail-over order of algorithm 9).
    pub weight_of: &'a dyn Fn(usize) -> u32,
    pub active: &'a dyn Fn(usize) -> bool,
    /// Calls in flight (algorithm 10).
    pub load: &'a dyn Fn(usize) -> u32,
}

/// The destinations to try, in order: chosen first; empty when none is active.
pub fn order(alg: Alg, inp: &Input<'_>) -> Vec<usize> {
    let n = inp.n;
    if n == 0 {
        return Vec::new();
    }
    let actives_from = |start: usize| -> Vec<usize> {
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| (inp.active)(i))
            .collect()
    };
    match alg {
        Alg::CallId | Alg::From | Alg::To | Alg::RequestUri => actives_from(inp.hash as usize % n),
        Alg::RoundRobin => actives_from(inp.counter % n),
        Alg::Priority => actives_from(0),
        Alg::Weight => {
            let mut rest: Vec<usize> = actives_from(0);
            // Highest weight first (stable: list order among equals).
            rest.sort_by_key(|&i| std::cmp::Reverse((inp.weight_of)(i)));
            let len = inp.weights.len();
            let first = (0..len)
                .filter_map(|k| inp.weights.get(inp.counter.wrapping_add(k) % len))
                .map(|&i| usize::from(i))
                .find(|&i| i < n && (inp.active)(i));
            match first {
                Some(f) => {
                    rest.retain(|&i| i != f);
                    rest.insert(0, f);
                    rest
                }
                None => rest,
            }
        }
        Alg::Load => {
            // Least loaded first (stable: list order among equals); the counter takes turns
            // among those tied for the least load only, so one busy destination does not
            // hand its turns to its neighbour in the rotation.
            // The loads are read once: other shards change them meanwhile, and a sort
            // whose keys change under it may panic.
            let mut v: Vec<(u32, usize)> = actives_from(0)
                .into_iter()
                .map(|i| ((inp.load)(i), i))
                .collect();
            v.sort_by_key(|&(load, _)| load);
            let least = v.first().map(|&(load, _)| load);
            let tied = v.iter().take_while(|&&(l, _)| Some(l) == least).count();
            if let Some(group) = v.get_mut(..tied) {
                if tied > 1 {
                    group.rotate_left(inp.counter % tied);
                }
            }
            v.into_iter().map(|(_, i)| i).collect()
        }
    }
}

/// The weight table of a set: destination indices interleaved by weight (smooth weighted
/// round robin), one slot per unit of weight after dividing by the weights' common divisor.
/// Destinations without a weight count 1 when no destination of the set has one, else 0.
pub fn weight_table(weights: &[Option<u32>]) -> Vec<u16> {
    let any = weights.iter().any(Option::is_some);
    let w: Vec<u64> = weights
        .iter()
        .map(|w| u64::from(w.unwrap_or(u32::from(!any))))
        .collect();
    let g = w.iter().fold(0u64, |a, &b| gcd(a, b));
    if g == 0 {
        // Every weight is 0: plain rotation.
        return (0..weights.len())
            .filter_map(|i| u16::try_from(i).ok())
            .collect();
    }
    let w: Vec<i64> = w.iter().map(|x| (x / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, x) in current.iter_mut().zip(&w) {
            *c += x;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        if let Some(c) = current.get_mut(best) {
            *c -= total;
        }
        if let Ok(b) = u16::try_from(best) {
            out.push(b);
        }
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// FNV-1a, 32 bits: the hash of algorithms 0-3 (stable across runs and builds).
pub fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// What algorithms 1-3 hash of a URI: `user@host[:port]`, host in lower case; None when it
/// does not parse.
pub fn uri_key(uri: &str) -> Option<String> {
    let u = ser_parser::parse_uri(uri).ok()?;
    let mut k = String::with_capacity(uri.len());
    if let Some(user) = u.user {
        k.push_str(user);
        k.push('@');
    }
    k.push_str(&u.host_str.to_ascii_lowercase());
    if let Some(p) = u.port {
        k.push(':');
        k.push_str(&p.to_string());
    }
    Some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        alg: Alg,
        n: usize,
        hash: u32,
        counter: usize,
        down: &[usize],
        load: &[u32],
    ) -> Vec<usize> {
        let weights = weight_table(&vec![None; n]);
        let active = |i: usize| !down.contains(&i);
        let ld = |i: usize| load.get(i).copied().unwrap_or(0);
        let w = |_: usize| 1;
        order(
            alg,
            &Input {
                n,
                hash,
                counter,
                weights: &weights,
                weight_of: &w,
                active: &active,
                load: &ld,
            },
        )
    }

    #[test]
    fn numbers() {
        for n in [0, 1, 2, 3, 4, 8, 9, 10] {
            assert_eq!(Alg::from_number(n).map(|a| i64::from(a.number())), Some(n));
        }
        for n in [-1, 5, 6, 7, 11, 99] {
            assert_eq!(Alg::from_number(n), None);
        }
    }

    #[test]
    fn round_robin_is_exact_and_skips_inactive() {
        let picks: Vec<usize> = (0..9)
            .map(|c| run(Alg::RoundRobin, 3, 0, c, &[], &[])[0])
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // 1 is down: its turn goes to the next one; fail-over lists hold only the active.
        assert_eq!(run(Alg::RoundRobin, 3, 0, 1, &[1], &[]), [2, 0]);
        assert_eq!(
            run(Alg::RoundRobin, 3, 0, 0, &[0, 1, 2], &[]),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn hash_keeps_others_in_place_when_one_is_down() {
        for h in 0..30u32 {
            let all = run(Alg::CallId, 3, h, 0, &[], &[]);
            assert_eq!(all[0], h as usize % 3);
            assert_eq!(all.len(), 3);
            let without = run(Alg::CallId, 3, h, 0, &[2], &[]);
            if all[0] != 2 {
                assert_eq!(without[0], all[0], "hash {h}");
            } else {
                assert_eq!(without[0], 0);
            }
        }
        // Call-IDs spread evenly enough over three destinations.
        let mut count = [0usize; 3];
        for i in 0..3000 {
            let h = hash(format!("{i:08x}-call@10.0.0.1").as_bytes());
            count[h as usize % 3] += 1;
        }
        assert!(
            count.iter().all(|&c| (900..=1100).contains(&c)),
            "{count:?}"
        );
    }

    #[test]
    fn priority_takes_the_first_active() {
        assert_eq!(run(Alg::Priority, 3, 7, 5, &[], &[]), [0, 1, 2]);
        assert_eq!(run(Alg::Priority, 3, 7, 5, &[0], &[]), [1, 2]);
    }

    #[test]
    fn weights_interleave_in_proportion() {
        let t = weight_table(&[Some(50), Some(30), Some(20)]);
        assert_eq!(t.len(), 10);
        let count = |i: u16| t.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2)), (5, 3, 2));
        // Interleaved, not 0 0 0 0 0 1 1 1 2 2.
        assert!(t.windows(2).filter(|w| w[0] == w[1]).count() <= 2, "{t:?}");
        // Without weights: equal shares; some weights given: the others get none.
        assert_eq!(weight_table(&[None, None]), [0, 1]);
        assert_eq!(weight_table(&[Some(3), None]), [0]);
        assert_eq!(weight_table(&[Some(0), Some(0)]), [0, 1]);
        let w = [50u32, 30, 20];
        let weight_of = |i: usize| w.get(i).copied().unwrap_or(0);
        let mut picks = [0usize; 3];
        for c in 0..100 {
            let active = |i: usize| i != 3;
            let ld = |_: usize| 0;
            let o = order(
                Alg::Weight,
                &Input {
                    n: 3,
                    hash: 0,
                    counter: c,
                    weights: &t,
                    weight_of: &weight_of,
                    active: &active,
                    load: &ld,
                },
            );
            picks[o[0]] += 1;
            assert_eq!(o.len(), 3);
        }
        assert_eq!(picks, [50, 30, 20]);
        // The heaviest down: its slots go to the next in the table, fail-over by weight.
        let active = |i: usize| i != 0;
        let ld = |_: usize| 0;
        let o = order(
            Alg::Weight,
            &Input {
                n: 3,
                hash: 0,
                counter: 0,
                weights: &t,
                weight_of: &weight_of,
                active: &active,
                load: &ld,
            },
        );
        assert_eq!(o.len(), 2);
        assert!(!o.contains(&0));
    }

    #[test]
    fn least_loaded_first_ties_rotate() {
        assert_eq!(run(Alg::Load, 3, 0, 0, &[], &[4, 1, 2]), [1, 2, 0]);
        assert_eq!(run(Alg::Load, 3, 0, 0, &[1], &[4, 1, 2]), [2, 0]);
        assert_eq!(run(Alg::Load, 3, 0, 1, &[], &[0, 0, 0])[0], 1);
        assert_eq!(run(Alg::Load, 3, 0, 2, &[], &[0, 0, 0])[0], 2);
        // One busy destination: the others take turns evenly (not 2:1 for its neighbour).
        let firsts: Vec<usize> = (0..6)
            .map(|c| run(Alg::Load, 3, 0, c, &[], &[3, 0, 0])[0])
            .collect();
        assert_eq!(firsts, [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn uri_keys() {
        assert_eq!(
            uri_key("sip:Bob@Example.COM;transport=tcp").as_deref(),
            Some("Bob@example.com")
        );
        assert_eq!(
            uri_key("sip:bob@example.com:5070").as_deref(),
            Some("bob@example.com:5070")
        );
        assert_eq!(uri_key("nonsense"), None);
    }
}
