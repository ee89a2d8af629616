//! Whole exchanges over a lossy, duplicating, reordering network, many seeds each: every run
//! ends (final response or timeout), drains both tables, and replays identically per seed.

use std::time::Duration;

use super::sim::{msgs, NetConfig, Sim, UasScript};
use super::{TimerConfig, TimerName, TransmitKind, TxnEvent};

fn answering(provisional: Option<u16>, code: u16, delay: Duration) -> UasScript {
    UasScript {
        provisional,
        final_code: Some(code),
        delay,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A compact trace of one run, to compare runs with the same seed.
fn fingerprint(sim: &Sim) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        sim.uac_log.sent, sim.uac_log.up, sim.uac_log.events, sim.uas_log.sent, sim.uas_log.up
    )
}

fn lossy_invite(seed: u64) -> Sim {
    let mut sim = Sim::new(
        seed,
        NetConfig::lossy(250),
        TimerConfig::default(),
        answering(Some(180), 486, secs(1)),
    );
    sim.start(&msgs::invite("z9hG4bKlossy", 1, None));
    sim.run(secs(300));
    sim
}

#[test]
fn lossy_invite_runs_complete_or_time_out_deterministically() {
    let mut completed = 0;
    // Runs in which the server had to retransmit its final (G) / the client its INVITE (A).
    let (mut g_runs, mut a_runs) = (0, 0);
    for seed in 0..300 {
        let sim = lossy_invite(seed);
        let has = |log: &[(Duration, TransmitKind)], k| log.iter().any(|(_, x)| *x == k);
        g_runs += usize::from(has(&sim.uas_log.sent, TransmitKind::ResponseRetransmission));
        a_runs += usize::from(has(&sim.uac_log.sent, TransmitKind::RequestRetransmission));
        assert!(
            sim.uac.is_empty() && sim.uas.is_empty(),
            "seed {seed}: tables drained"
        );
        let finals: Vec<&str> = sim
            .uac_log
            .up
            .iter()
            .map(|(_, s)| s.as_str())
            .filter(|s| *s == "486")
            .collect();
        let timed_out = sim
            .uac_log
            .events
            .iter()
            .any(|(_, e)| *e == TxnEvent::Timeout(TimerName::B));
        assert!(
            finals.len() == 1 || timed_out,
            "seed {seed}: {:?}",
            sim.uac_log
        );
        assert!(finals.len() <= 1, "seed {seed}: the final passed up once");
        if finals.len() == 1 {
            completed += 1;
            // Every 486 the UAC received was ACKed.
            assert!(sim
                .uac_log
                .sent
                .iter()
                .any(|(_, k)| *k == TransmitKind::Ack));
        }
        assert_eq!(
            fingerprint(&sim),
            fingerprint(&lossy_invite(seed)),
            "seed {seed}: deterministic"
        );
    }
    assert!(completed > 280, "{completed}/300 completed at 25% loss");
    assert!(
        g_runs > 10 && a_runs > 10,
        "loss exercised G ({g_runs}) and A ({a_runs})"
    );
}

#[test]
fn lossy_non_invite_runs() {
    for seed in 0..300 {
        let mut sim = Sim::new(
            seed,
            NetConfig::lossy(300),
            TimerConfig::default(),
            answering(None, 200, Duration::from_millis(100)),
        );
        sim.start(&msgs::request("MESSAGE", "z9hG4bKm", 1, None));
        sim.run(secs(300));
        assert!(sim.uac.is_empty() && sim.uas.is_empty());
        let got = sim.uac_log.up.iter().filter(|(_, s)| s == "200").count();
        let timed_out = sim
            .uac_log
            .events
            .iter()
            .any(|(_, e)| *e == TxnEvent::Timeout(TimerName::F));
        assert!(
            got == 1 && !timed_out || got == 0 && timed_out,
            "seed {seed}"
        );
        assert_eq!(
            sim.uas_log.up.len(),
            1,
            "seed {seed}: retransmissions never reach the TU"
        );
    }
}
