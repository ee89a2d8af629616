//! ratelimit on a virtual clock.

use std::time::{Duration, Instant};

use super::*;

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn pipes(interval: u64, pipes: &[(usize, Algo, u64)], queues: &[(usize, &str)]) -> Pipes {
    let p = Pipes::new(Instant::now(), 42);
    p.configure(&Definition {
        interval,
        pipes: pipes.to_vec(),
        queues: queues
            .iter()
            .map(|(pipe, m)| Queue {
                pipe: *pipe,
                method: m.to_string(),
            })
            .collect(),
    });
    p
}

#[test]
fn taildrop_passes_limit_times_interval_per_interval() {
    let p = pipes(10, &[(0, Algo::Taildrop, 5)], &[]);
    let t0 = p.epoch;
    for iv in 0..3u64 {
        let passed = (0..200)
            .filter(|i| p.check(0, at(t0, iv * 10_000 + i * 40)))
            .count();
        assert_eq!(passed, 50, "interval {iv}");
    }
    let s = p.pipe(0, at(t0, 29_000)).unwrap();
    assert_eq!((s.counter, s.last_counter), (200, 200));
    assert_eq!((s.accepted, s.refused), (150, 450));
    // The first 50 pass, then none.
    let seq: Vec<bool> = (0..60).map(|i| p.check(0, at(t0, 30_000 + i))).collect();
    assert!(seq[..50].iter().all(|x| *x) && seq[50..].iter().all(|x| !*x));
}

#[test]
fn a_limit_raised_at_run_time_lets_more_through_at_once() {
    let p = pipes(1, &[(0, Algo::Taildrop, 10)], &[]);
    let t0 = p.epoch;
    let passed = (0..30).filter(|_| p.check(0, t0)).count();
    assert_eq!(passed, 10);
    p.set_pipe(0, Algo::Taildrop, 20).unwrap();
    let more = (0..30).filter(|_| p.check(0, t0)).count();
    // 30 already counted in this interval: 20 allowed, none more pass.
    assert_eq!(more, 0);
    let next = (0..30).filter(|_| p.check(0, at(t0, 1_000))).count();
    assert_eq!(next, 20);
    p.set_pipe(0, Algo::Nop, 0).unwrap();
    assert!((0..100).all(|_| p.check(0, at(t0, 1_000))));
    assert!(p.set_pipe(MAX_PIPES, Algo::Red, 1).is_err());
}

#[test]
fn limit_zero_refuses_everything() {
    let p = pipes(1, &[(0, Algo::Taildrop, 0), (1, Algo::Red, 0)], &[]);
    assert!(!p.check(0, p.epoch));
    assert!(!p.check(1, p.epoch));
}

#[test]
fn red_drop_probability_is_monotonic_and_shaped() {
    let mut last = 0.0;
    for i in 0..=1000 {
        let rho = f64::from(i) / 100.0;
        let pr = red_drop_probability(rho);
        assert!(pr >= last, "p({rho}) = {pr} < {last}");
        assert!((0.0..1.0).contains(&pr));
        last = pr;
    }
    assert_eq!(red_drop_probability(0.5), 0.0);
    assert!((red_drop_probability(1.0) - RED_MAX_P).abs() < 1e-12);
    assert!((red_drop_probability(4.0) - 0.75).abs() < 1e-12);
    assert_eq!(red_drop_probability(f64::NAN), 0.0);
}

/// Drops of a RED pipe of 100 per interval when `offered` requests arrive in each of 10
/// intervals.
fn red_run(offered: u64, seed: u64) -> (u64, Vec<bool>) {
    let p = Pipes::new(Instant::now(), seed);
    p.configure(&Definition {
        interval: 1,
        pipes: vec![(0, Algo::Red, 100)],
        queues: Vec::new(),
    });
    let mut seq = Vec::new();
    for iv in 0..10 {
        for i in 0..offered {
            seq.push(p.check(0, at(p.epoch, iv * 1000 + i * 999 / offered)));
        }
    }
    (seq.iter().filter(|x| !**x).count() as u64, seq)
}

#[test]
fn red_drops_more_as_load_grows_and_is_deterministic() {
    let mut last = 0.0;
    for offered in [40, 60, 80, 100, 150, 200, 400, 800] {
        let (dropped, _) = red_run(offered, 9);
        let rate = dropped as f64 / (offered * 10) as f64;
        assert!(
            rate + 0.02 >= last,
            "{offered}/interval: drop rate {rate} fell below {last}"
        );
        last = rate.max(last);
        if offered <= 50 {
            assert_eq!(dropped, 0, "{offered}: nothing below half the limit");
        }
        if offered >= 200 {
            // Past the limit about the limit passes (100 per interval, ±30 %).
            let passed = offered * 10 - dropped;
            assert!((700..=1300).contains(&passed), "{offered}: {passed} passed");
        }
    }
    assert!(last > 0.8);
    assert_eq!(
        red_run(300, 9).1,
        red_run(300, 9).1,
        "same seed, same drops"
    );
    assert_ne!(red_run(300, 9).1, red_run(300, 10).1);
}

#[test]
fn queues_pick_the_pipe_by_method_in_order() {
    let p = pipes(
        10,
        &[(0, Algo::Taildrop, 1), (2, Algo::Taildrop, 1)],
        &[(0, "REGISTER"), (2, "*"), (0, "INVITE")],
    );
    assert_eq!(p.pipe_for("REGISTER"), Some(0));
    assert_eq!(p.pipe_for("INVITE"), Some(2), "* comes first");
    assert_eq!(
        p.pipe_for("register"),
        Some(2),
        "methods are case-sensitive"
    );
    p.set_queue(1, "OPTIONS", 0).unwrap();
    assert_eq!(p.pipe_for("OPTIONS"), Some(0));
    assert!(p.set_queue(MAX_QUEUES, "X", 0).is_err());
    assert!(p.set_queue(0, "BAD METHOD", 0).is_err());
    // A pipe that is not defined (NOP) takes no queue: its method would pass unlimited.
    let e = p.set_queue(1, "INVITE", 9).unwrap_err();
    assert!(e.contains("pipe 9 is not defined"), "{e}");
    assert_eq!(p.pipe_for("OPTIONS"), Some(0), "queue 1 is as it was");
    let q = pipes(10, &[], &[(1, "INVITE")]);
    assert_eq!(q.pipe_for("BYE"), None);
    assert_eq!(
        q.pipes_in_use(q.epoch).len(),
        1,
        "a queued NOP pipe is listed"
    );
}

#[test]
fn parameters_parse_as_kamailio_writes_them() {
    assert_eq!(parse_pipe("0:TAILDROP:100"), Ok((0, Algo::Taildrop, 100)));
    assert_eq!(parse_pipe("15:red:7"), Ok((15, Algo::Red, 7)));
    for bad in [
        "16:TAILDROP:1",
        "0:TAILDROP",
        "0:TAILDROP:1:2",
        "x:RED:1",
        "0:RED:-1",
        "0:FOO:1",
        "0:FEEDBACK:80",
    ] {
        assert!(parse_pipe(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_queue("3:INVITE"),
        Ok(Queue {
            pipe: 3,
            method: "INVITE".into()
        })
    );
    assert_eq!(parse_queue("2:*").map(|q| q.method), Ok("*".into()));
    for bad in ["INVITE", "0:", "0:IN VITE", "99:INVITE", "0:INV*"] {
        assert!(parse_queue(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_reload_keeps_counting_and_a_new_interval_starts_afresh() {
    let p = pipes(10, &[(0, Algo::Taildrop, 1)], &[]);
    let t0 = p.epoch;
    assert_eq!((0..20).filter(|_| p.check(0, t0)).count(), 10);
    p.configure(&Definition {
        interval: 10,
        pipes: vec![(0, Algo::Taildrop, 1)],
        queues: Vec::new(),
    });
    assert!(!p.check(0, t0), "same interval: the count went on");
    p.configure(&Definition {
        interval: 5,
        pipes: vec![(0, Algo::Taildrop, 1)],
        queues: Vec::new(),
    });
    assert_eq!((0..20).filter(|_| p.check(0, t0)).count(), 5);
}
