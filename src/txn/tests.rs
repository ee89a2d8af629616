//! Timer paths of RFC 3261 17, on a virtual clock: directly against single transactions where
//! exact instants matter, and through [`super::sim`] for whole exchanges, lossy ones included.

use std::time::{Duration, Instant};

use ser_parser::parse;

use super::sim::{msgs, NetConfig, Sim, UasScript};
use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn kinds(log: &[(Duration, TransmitKind)], kind: TransmitKind) -> Vec<u128> {
    log.iter()
        .filter(|(_, k)| *k == kind)
        .map(|(t, _)| t.as_millis())
        .collect()
}

fn silent() -> UasScript {
    UasScript {
        provisional: None,
        final_code: None,
        delay: Duration::ZERO,
    }
}

fn answering(provisional: Option<u16>, code: u16, delay: Duration) -> UasScript {
    UasScript {
        provisional,
        final_code: Some(code),
        delay,
    }
}

/// Drains a transaction's transmits into (kind, bytes).
fn sent_client(c: &mut ClientTransaction) -> Vec<(TransmitKind, Vec<u8>)> {
    std::iter::from_fn(|| c.poll_transmit().map(|t| (t.kind, t.bytes.to_vec()))).collect()
}

fn sent_server(s: &mut ServerTransaction) -> Vec<(TransmitKind, Vec<u8>)> {
    std::iter::from_fn(|| s.poll_transmit().map(|t| (t.kind, t.bytes.to_vec()))).collect()
}

fn events_client(c: &mut ClientTransaction) -> Vec<TxnEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn events_server(s: &mut ServerTransaction) -> Vec<TxnEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn timer_a_doubles_and_b_times_out() {
    let mut sim = Sim::new(1, NetConfig::lossy(1000), TimerConfig::default(), silent());
    sim.start(&msgs::invite("z9hG4bKa1", 1, None));
    sim.run(secs(120));
    assert_eq!(kinds(&sim.uac_log.sent, TransmitKind::Request), [0]);
    // 17.1.1.2: A starts at T1 and doubles; B (64*T1) stops it.
    assert_eq!(
        kinds(&sim.uac_log.sent, TransmitKind::RequestRetransmission),
        [500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(
        sim.uac_log.events,
        [
            (secs(32), TxnEvent::Timeout(TimerName::B)),
            (secs(32), TxnEvent::Terminated)
        ]
    );
    assert!(sim.uac.is_empty());
}

#[test]
fn timer_e_capped_at_t2_and_f_times_out() {
    let mut sim = Sim::new(1, NetConfig::lossy(1000), TimerConfig::default(), silent());
    sim.start(&msgs::request("OPTIONS", "z9hG4bKe1", 1, None));
    sim.run(secs(120));
    // 17.1.2.2: E = min(2^n * T1, T2); F at 64*T1.
    assert_eq!(
        kinds(&sim.uac_log.sent, TransmitKind::RequestRetransmission),
        [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(
        sim.uac_log.events[0],
        (secs(32), TxnEvent::Timeout(TimerName::F))
    );
}

#[test]
fn timer_e_in_proceeding_is_t2_and_k_absorbs() {
    let t0 = Instant::now();
    let cfg = TimerConfig::default();
    let req = msgs::request("REGISTER", "z9hG4bKk1", 1, None);
    let mut c = ClientTransaction::start(t0, &cfg, &req, false).unwrap();
    assert_eq!(sent_client(&mut c).len(), 1);
    let trying = msgs::response(&req, 100, None);
    let d = c.handle_response(t0 + ms(100), &parse(&trying).unwrap());
    assert_eq!(d, Disposition::PassUp);
    assert!(matches!(
        c.state(),
        ClientState::NonInvite(NonInviteClientState::Proceeding { .. })
    ));
    // E still fires at T1, then every T2.
    let mut at = vec![];
    while let Some(dl) = c.next_deadline() {
        if dl > t0 + secs(10) {
            break;
        }
        c.handle_timeout(dl);
        at.extend(sent_client(&mut c).iter().map(|_| (dl - t0).as_millis()));
    }
    assert_eq!(at, [500, 4500, 8500]);
    let ok = msgs::response(&req, 200, Some("x"));
    let now = t0 + secs(10);
    assert_eq!(
        c.handle_response(now, &parse(&ok).unwrap()),
        Disposition::PassUp
    );
    assert_eq!(c.final_code(), Some(200));
    // K (T4) absorbs retransmitted finals, then terminates.
    assert_eq!(
        c.handle_response(now + secs(1), &parse(&ok).unwrap()),
        Disposition::Absorbed
    );
    assert!(sent_client(&mut c).is_empty());
    assert_eq!(c.next_deadline(), Some(now + secs(5)));
    c.handle_timeout(now + secs(5));
    assert!(c.is_terminated());
    assert_eq!(events_client(&mut c), [TxnEvent::Terminated]);
}

#[test]
fn ack_for_non_2xx_is_built_per_17_1_1_3() {
    let t0 = Instant::now();
    let req = msgs::invite("z9hG4bKack", 5, None);
    let mut c = ClientTransaction::start(t0, &TimerConfig::default(), &req, false).unwrap();
    sent_client(&mut c);
    let busy = msgs::response(&req, 486, Some("uastag"));
    assert_eq!(
        c.handle_response(t0 + ms(50), &parse(&busy).unwrap()),
        Disposition::PassUp
    );
    let out = sent_client(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, TransmitKind::Ack);
    let ack = parse(&out[0].1).unwrap();
    let inv = parse(&req).unwrap();
    assert_eq!(ack.method(), Some(ser_parser::Method::Ack));
    assert_eq!(ack.request_uri(), inv.request_uri());
    assert_eq!(ack.call_id(), inv.call_id());
    assert_eq!(ack.from().unwrap().tag, Some("fromtag"));
    assert_eq!(ack.to().unwrap().tag, Some("uastag"));
    let cseq = ack.cseq().unwrap();
    assert_eq!((cseq.number, cseq.method), (5, ser_parser::Method::Ack));
    assert_eq!(ack.vias().count(), 1);
    assert_eq!(ack.top_via().unwrap().branch, Some("z9hG4bKack"));
    assert_eq!(ack.routes().count(), 1);
    // The ACK matches the INVITE's server transaction.
    assert_eq!(Key::server(&ack).unwrap(), Key::server(&inv).unwrap());
    // Timer D: retransmitted finals are absorbed and re-ACKed.
    let d = c.handle_response(t0 + secs(1), &parse(&busy).unwrap());
    assert_eq!(d, Disposition::Absorbed);
    assert_eq!(sent_client(&mut c)[0].0, TransmitKind::Ack);
    assert_eq!(c.next_deadline(), Some(t0 + ms(50) + secs(32)));
    c.handle_timeout(t0 + ms(50) + secs(32));
    assert!(c.is_terminated());
}

#[test]
fn invite_2xx_passes_up_and_terminates() {
    let t0 = Instant::now();
    let req = msgs::invite("z9hG4bK2xx", 1, None);
    let mut c = ClientTransaction::start(t0, &TimerConfig::default(), &req, false).unwrap();
    sent_client(&mut c);
    let ringing = msgs::response(&req, 180, Some("t"));
    let ok = msgs::response(&req, 200, Some("t"));
    assert_eq!(
        c.handle_response(t0, &parse(&ringing).unwrap()),
        Disposition::PassUp
    );
    assert_eq!(
        c.handle_response(t0, &parse(&ok).unwrap()),
        Disposition::PassUp
    );
    assert!(c.is_terminated());
    assert!(
        sent_client(&mut c).is_empty(),
        "no ACK for a 2xx from the transaction"
    );
    assert_eq!(events_client(&mut c), [TxnEvent::Terminated]);
    // A 2xx retransmission still goes up (a proxy forwards it).
    assert_eq!(
        c.handle_response(t0, &parse(&ok).unwrap()),
        Disposition::PassUp
    );
    assert_eq!(
        c.handle_response(t0, &parse(&ringing).unwrap()),
        Disposition::Absorbed
    );
}

#[test]
fn fr_inv_timer_after_provisional() {
    let t0 = Instant::now();
    let cfg = TimerConfig::ser();
    let req = msgs::invite("z9hG4bKfr", 1, None);
    let mut c = ClientTransaction::start(t0, &cfg, &req, false).unwrap();
    let ringing = msgs::response(&req, 180, Some("t"));
    c.handle_response(t0 + secs(1), &parse(&ringing).unwrap());
    // A stops in Proceeding; the next deadline is fr_inv_timer after the last provisional.
    c.handle_response(t0 + secs(10), &parse(&ringing).unwrap());
    assert_eq!(c.next_deadline(), Some(t0 + secs(130)));
    c.handle_timeout(t0 + secs(130));
    assert_eq!(events_client(&mut c), [TxnEvent::Timeout(TimerName::FrInv)]);
    assert!(
        !c.is_terminated(),
        "waits for the final the TU's CANCEL provokes"
    );
    let terminated = c.handle_response(
        t0 + secs(131),
        &parse(&msgs::response(&req, 487, Some("t"))).unwrap(),
    );
    assert_eq!(terminated, Disposition::PassUp);
    assert_eq!(
        sent_client(&mut c).last().map(|t| t.0),
        Some(TransmitKind::Ack)
    );
}

#[test]
fn reliable_transport_has_no_retransmissions_and_zero_d() {
    let t0 = Instant::now();
    let req = msgs::invite("z9hG4bKtcp", 1, None);
    let mut c = ClientTransaction::start(t0, &TimerConfig::default(), &req, true).unwrap();
    assert_eq!(c.next_deadline(), Some(t0 + secs(32)), "only B");
    let busy = msgs::response(&req, 486, Some("t"));
    c.handle_response(t0 + secs(1), &parse(&busy).unwrap());
    assert!(c.is_terminated(), "D is zero on reliable transports");
    let inv = parse(&req).unwrap();
    let mut s = ServerTransaction::new(t0, &TimerConfig::default(), &inv, true).unwrap();
    s.send_response(t0, &busy).unwrap();
    let ServerState::Invite(InviteServerState::Completed { g, .. }) = s.state() else {
        panic!("expected Completed");
    };
    assert_eq!(g, None, "no timer G on reliable transports");
}

#[test]
fn timer_g_retransmits_until_ack_then_i() {
    let t0 = Instant::now();
    let req = msgs::invite("z9hG4bKg", 1, None);
    let inv = parse(&req).unwrap();
    let mut s = ServerTransaction::new(t0, &TimerConfig::ser(), &inv, false).unwrap();
    assert_eq!(
        s.next_deadline(),
        None,
        "automatic 100 off in SER's profile"
    );
    s.send_response(t0, &msgs::response(&req, 486, Some("t")))
        .unwrap();
    assert_eq!(sent_server(&mut s)[0].0, TransmitKind::Response);
    let mut at = vec![];
    while let Some(dl) = s.next_deadline().filter(|&d| d < t0 + secs(13)) {
        s.handle_timeout(dl);
        assert_eq!(
            sent_server(&mut s)[0].0,
            TransmitKind::ResponseRetransmission
        );
        at.push((dl - t0).as_millis());
    }
    assert_eq!(at, [500, 1500, 3500, 7500, 11500]);
    // The ACK stops G; I (T4) absorbs further ACKs.
    let ack = msgs::ack_for("z9hG4bKg", 1, Some("t"));
    let now = t0 + secs(13);
    assert_eq!(
        s.handle_request(now, &parse(&ack).unwrap()),
        Disposition::Absorbed
    );
    assert!(matches!(
        s.state(),
        ServerState::Invite(InviteServerState::Confirmed { .. })
    ));
    assert_eq!(
        s.handle_request(now + secs(1), &parse(&ack).unwrap()),
        Disposition::Absorbed
    );
    assert!(sent_server(&mut s).is_empty());
    assert_eq!(s.next_deadline(), Some(now + secs(5)));
    s.handle_timeout(now + secs(5));
    assert!(s.is_terminated());
    assert_eq!(events_server(&mut s), [TxnEvent::Terminated]);
}

#[test]
fn timer_h_fires_without_ack() {
    let mut sim = Sim::new(
        3,
        NetConfig::perfect(),
        TimerConfig::default(),
        answering(None, 603, ms(0)),
    );
    // The UAC is reduced to a request thrown on the wire: no client transaction ACKs.
    sim.start(&msgs::invite("z9hG4bKh", 1, None));
    let key = Key::client(&parse(&msgs::invite("z9hG4bKh", 1, None)).unwrap()).unwrap();
    sim.uac.remove(&key);
    sim.run(secs(100));
    let g = kinds(&sim.uas_log.sent, TransmitKind::ResponseRetransmission);
    assert_eq!(g.len(), 10, "G until H: {g:?}");
    assert!(sim
        .uas_log
        .events
        .contains(&(secs(32) + ms(10), TxnEvent::Timeout(TimerName::H))));
    assert!(sim.uas.is_empty());
    assert_eq!(sim.uas.stats().completed, [0, 0, 0, 0, 1]);
}

#[test]
fn non_2xx_acked_by_client_and_absorbed_by_server() {
    let mut sim = Sim::new(
        4,
        NetConfig::perfect(),
        TimerConfig::default(),
        answering(Some(180), 486, secs(2)),
    );
    sim.start(&msgs::invite("z9hG4bKn2", 1, None));
    sim.run(secs(100));
    let up: Vec<&str> = sim.uac_log.up.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(up, ["180", "486"]);
    assert_eq!(kinds(&sim.uac_log.sent, TransmitKind::Ack), [2020]);
    // The server absorbed the ACK: no stray ACK reached its TU, no G retransmission needed
    // beyond the first interval.
    assert!(sim.uas_log.up.iter().all(|(_, m)| m == "INVITE"));
    assert!(sim.uas_log.absorbed >= 1);
    assert!(kinds(&sim.uas_log.sent, TransmitKind::ResponseRetransmission).is_empty());
    // D (32 s) on the client, I (5 s) on the server, then both tables are empty.
    assert!(sim
        .uac_log
        .events
        .contains(&(ms(2020) + secs(32), TxnEvent::Terminated)));
    assert!(sim
        .uas_log
        .events
        .contains(&(ms(2030) + secs(5), TxnEvent::Terminated)));
    assert!(sim.uac.is_empty() && sim.uas.is_empty());
}

#[test]
fn retransmitted_request_answered_with_last_response() {
    // A non-INVITE answered with 100 at once and the final only after 6 s: E keeps
    // retransmitting in Proceeding and every retransmission is answered with the 100.
    let mut sim = Sim::new(
        5,
        NetConfig::perfect(),
        TimerConfig::default(),
        answering(Some(100), 200, secs(6)),
    );
    sim.start(&msgs::request("OPTIONS", "z9hG4bKr", 1, None));
    sim.run(secs(60));
    let retrans = kinds(&sim.uac_log.sent, TransmitKind::RequestRetransmission);
    assert_eq!(retrans, [500, 4500]);
    assert_eq!(
        kinds(&sim.uas_log.sent, TransmitKind::ResponseRetransmission),
        [510, 4510]
    );
    let up: Vec<&str> = sim.uac_log.up.iter().map(|(_, s)| s.as_str()).collect();
    // Provisionals in Proceeding go up (17.1.2.2); only the request reached the UAS's TU.
    assert_eq!(up, ["100", "100", "100", "200"]);
    assert_eq!(sim.uas_log.up.len(), 1);
}

#[test]
fn timer_j_absorbs_request_retransmissions() {
    let t0 = Instant::now();
    let req = msgs::request("BYE", "z9hG4bKj", 2, Some("t"));
    let msg = parse(&req).unwrap();
    let mut s = ServerTransaction::new(t0, &TimerConfig::default(), &msg, false).unwrap();
    // Trying: retransmissions are absorbed silently.
    assert_eq!(s.handle_request(t0, &msg), Disposition::Absorbed);
    assert!(sent_server(&mut s).is_empty());
    s.send_response(t0, &msgs::response(&req, 200, None))
        .unwrap();
    sent_server(&mut s);
    assert_eq!(s.handle_request(t0 + secs(5), &msg), Disposition::Absorbed);
    assert_eq!(
        sent_server(&mut s)[0].0,
        TransmitKind::ResponseRetransmission
    );
    assert_eq!(
        s.send_response(t0, &msgs::response(&req, 500, None)),
        Err(TxnError::AlreadyFinal)
    );
    assert_eq!(s.next_deadline(), Some(t0 + secs(32)));
    s.handle_timeout(t0 + secs(32));
    assert!(s.is_terminated());
}

#[test]
fn trying_100_after_200ms_unless_off() {
    let t0 = Instant::now();
    let req = msgs::invite("z9hG4bKt", 1, None);
    let inv = parse(&req).unwrap();
    let mut s = ServerTransaction::new(t0, &TimerConfig::default(), &inv, false).unwrap();
    assert_eq!(s.next_deadline(), Some(t0 + ms(200)));
    s.handle_timeout(t0 + ms(200));
    let out = sent_server(&mut s);
    assert_eq!(out[0].0, TransmitKind::Trying);
    let trying = parse(&out[0].1).unwrap();
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to().unwrap().tag, None);
    // A retransmitted INVITE gets the 100 again.
    assert_eq!(s.handle_request(t0 + ms(500), &inv), Disposition::Absorbed);
    assert_eq!(
        sent_server(&mut s)[0].0,
        TransmitKind::ResponseRetransmission
    );
    // The TU answering first cancels the automatic 100.
    let mut s = ServerTransaction::new(t0, &TimerConfig::default(), &inv, false).unwrap();
    s.send_response(t0 + ms(50), &msgs::response(&req, 180, Some("t")))
        .unwrap();
    assert_eq!(s.next_deadline(), None);
    // 2xx terminates the INVITE server transaction (RFC 3261, no RFC 6026 Accepted state).
    s.send_response(t0 + ms(60), &msgs::response(&req, 200, Some("t")))
        .unwrap();
    assert!(s.is_terminated());
    assert_eq!(
        s.handle_request(
            t0 + ms(70),
            &parse(&msgs::ack_for("z9hG4bKt", 1, Some("t"))).unwrap()
        ),
        Disposition::NotMatched
    );
}

#[test]
fn rfc2543_exchange_without_magic_cookie() {
    let mut sim = Sim::new(
        6,
        NetConfig::perfect(),
        TimerConfig::default(),
        answering(None, 404, ms(100)),
    );
    sim.start(&msgs::invite("old2543branch", 1, None));
    sim.run(secs(100));
    let up: Vec<&str> = sim.uac_log.up.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(up, ["404"]);
    assert_eq!(sim.uas_log.absorbed, 1, "the ACK matched by the 2543 rule");
    assert!(sim.uas.is_empty());

    // An ACK whose To tag differs from the response's does not match.
    let t0 = Instant::now();
    let req = msgs::invite("old", 1, None);
    let inv = parse(&req).unwrap();
    let mut s = ServerTransaction::new(t0, &TimerConfig::default(), &inv, false).unwrap();
    assert!(s.key().is_rfc2543());
    s.send_response(t0, &msgs::response(&req, 404, Some("right")))
        .unwrap();
    let wrong = msgs::ack_for("old", 1, Some("wrong"));
    assert_eq!(Key::server(&parse(&wrong).unwrap()).unwrap(), *s.key());
    assert_eq!(
        s.handle_request(t0, &parse(&wrong).unwrap()),
        Disposition::NotMatched
    );
    let right = msgs::ack_for("old", 1, Some("right"));
    assert_eq!(
        s.handle_request(t0, &parse(&right).unwrap()),
        Disposition::Absorbed
    );
}

#[test]
fn table_capacity_keys_and_lazy_timer_index() {
    let t0 = Instant::now();
    let cfg = TimerConfig::default();
    let mut table: Table<Transaction> = Table::new(2);
    let key_of =
        |b: &str| Key::client(&parse(&msgs::request("OPTIONS", b, 1, None)).unwrap()).unwrap();
    let mut ids = Vec::new();
    for b in ["z9hG4bK1", "z9hG4bK2"] {
        let c = ClientTransaction::start(t0, &cfg, &msgs::request("OPTIONS", b, 1, None), false)
            .unwrap();
        let key = c.key().clone();
        let id = table.insert(Transaction::Client(c)).unwrap();
        table.index(key, id, 7).unwrap();
        ids.push(id);
    }
    let c = ClientTransaction::start(
        t0,
        &cfg,
        &msgs::request("OPTIONS", "z9hG4bK3", 1, None),
        false,
    )
    .unwrap();
    assert_eq!(
        table.insert(Transaction::Client(c)).err(),
        Some(TableError::Full)
    );
    assert_eq!(
        table.index(key_of("z9hG4bK1"), ids[1], 0),
        Err(TableError::Exists)
    );
    assert_eq!(table.len(), 2);
    assert_eq!(table.lookup(&key_of("z9hG4bK1")), Some((ids[0], 7)));
    assert_eq!(table.next_deadline(), Some(t0 + ms(500)));
    // Answer the first: its E deadline becomes stale and is skipped; K takes over.
    let ok = msgs::response(
        &msgs::request("OPTIONS", "z9hG4bK1", 1, None),
        200,
        Some("x"),
    );
    let d = match table.get_mut(ids[0]) {
        Some(Transaction::Client(c)) => c.handle_response(t0 + ms(100), &parse(&ok).unwrap()),
        _ => Disposition::NotMatched,
    };
    table.rearm(ids[0]);
    assert_eq!(d, Disposition::PassUp);
    assert!(table.get(ids[0]).is_some_and(Transaction::is_completed));
    let mut now = t0;
    let mut fired = 0;
    while let Some(dl) = table.next_deadline() {
        now = dl;
        while let Some(id) = table.pop_due(now) {
            fired += 1;
            let done = table.get_mut(id).is_some_and(|t| {
                t.handle_timeout(now);
                while t.poll_transmit().is_some() {}
                while t.poll_event().is_some() {}
                t.is_terminated()
            });
            if done {
                table.remove(id);
            } else {
                table.rearm(id);
            }
        }
    }
    assert!(fired >= 2);
    assert_eq!(now, t0 + secs(32), "F ends the second");
    assert!(table.is_empty());
    // Removing an entry forgets its keys; its old id answers nothing.
    assert_eq!(table.lookup(&key_of("z9hG4bK1")), None);
    assert!(table.no_keys());
    assert!(table.get(ids[0]).is_none());
    let c = ClientTransaction::start(
        t0,
        &cfg,
        &msgs::request("OPTIONS", "z9hG4bK9", 1, None),
        false,
    )
    .unwrap();
    let reused = table.insert(Transaction::Client(c)).unwrap();
    assert_ne!(reused, ids[0], "a reused slot has a new generation");
    assert_ne!(reused, ids[1]);
}

/// Every RFC 3261 rule for reliable transports at once, on each of the four machines:
/// no A/E/G retransmissions (17.1.1.2, 17.1.2.2, 17.2.1), and D, I, J, K zero (the
/// transaction terminates the moment its final / ACK is handled).
#[test]
fn reliable_transport_rules_hold_on_all_four_machines() {
    let t0 = Instant::now();
    let cfg = TimerConfig::default();
    let drain = |c: &mut ClientTransaction| {
        sent_client(c)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };

    // INVITE client: only B is armed; no A; a 486 is ACKed and D is zero.
    let inv = msgs::invite("z9hG4bKri", 1, None);
    let mut c = ClientTransaction::start(t0, &cfg, &inv, true).unwrap();
    assert_eq!(drain(&mut c), [TransmitKind::Request]);
    assert_eq!(c.next_deadline(), Some(t0 + secs(32)), "B only, no A");
    c.handle_response(
        t0 + ms(10),
        &parse(&msgs::response(&inv, 180, Some("t"))).unwrap(),
    );
    assert!(drain(&mut c).is_empty());
    c.handle_response(
        t0 + ms(20),
        &parse(&msgs::response(&inv, 486, Some("t"))).unwrap(),
    );
    assert_eq!(drain(&mut c), [TransmitKind::Ack]);
    assert!(c.is_terminated(), "D = 0");
    // ... and with no answer at all, B fires once with nothing sent before it.
    let mut c = ClientTransaction::start(t0, &cfg, &inv, true).unwrap();
    drain(&mut c);
    c.handle_timeout(t0 + secs(31));
    assert!(drain(&mut c).is_empty(), "no timer A");
    c.handle_timeout(t0 + secs(32));
    assert!(drain(&mut c).is_empty());
    assert_eq!(
        events_client(&mut c),
        [TxnEvent::Timeout(TimerName::B), TxnEvent::Terminated]
    );

    // Non-INVITE client: no E in Trying or Proceeding; K is zero.
    let opt = msgs::request("OPTIONS", "z9hG4bKrn", 1, None);
    let mut c = ClientTransaction::start(t0, &cfg, &opt, true).unwrap();
    drain(&mut c);
    assert_eq!(c.next_deadline(), Some(t0 + secs(32)), "F only, no E");
    c.handle_response(
        t0 + ms(5),
        &parse(&msgs::response(&opt, 100, None)).unwrap(),
    );
    assert_eq!(
        c.next_deadline(),
        Some(t0 + secs(32)),
        "no E in Proceeding either"
    );
    c.handle_response(
        t0 + ms(9),
        &parse(&msgs::response(&opt, 200, Some("t"))).unwrap(),
    );
    assert!(c.is_terminated(), "K = 0");

    // INVITE server: no G; H waits for the ACK; I is zero.
    let mut s = ServerTransaction::new(t0, &cfg, &parse(&inv).unwrap(), true).unwrap();
    s.send_response(t0, &msgs::response(&inv, 486, Some("u")))
        .unwrap();
    assert_eq!(sent_server(&mut s).len(), 1);
    assert_eq!(s.next_deadline(), Some(t0 + secs(32)), "H only, no G");
    let ack = msgs::ack_for("z9hG4bKri", 1, Some("u"));
    assert_eq!(
        s.handle_request(t0 + ms(30), &parse(&ack).unwrap()),
        Disposition::Absorbed
    );
    assert!(s.is_terminated(), "I = 0");
    assert!(sent_server(&mut s).is_empty());

    // Non-INVITE server: J is zero.
    let mut s = ServerTransaction::new(t0, &cfg, &parse(&opt).unwrap(), true).unwrap();
    s.send_response(t0, &msgs::response(&opt, 200, Some("u")))
        .unwrap();
    assert!(s.is_terminated(), "J = 0");

    // The same exchanges on UDP keep their timers (the contrast the rules are about).
    let mut c = ClientTransaction::start(t0, &cfg, &opt, false).unwrap();
    assert_eq!(c.next_deadline(), Some(t0 + ms(500)), "E on UDP");
    c.handle_response(
        t0 + ms(9),
        &parse(&msgs::response(&opt, 200, Some("t"))).unwrap(),
    );
    assert_eq!(
        c.next_deadline(),
        Some(t0 + ms(9) + secs(5)),
        "K = T4 on UDP"
    );
    let mut s = ServerTransaction::new(t0, &cfg, &parse(&opt).unwrap(), false).unwrap();
    s.send_response(t0, &msgs::response(&opt, 200, Some("u")))
        .unwrap();
    assert_eq!(s.next_deadline(), Some(t0 + secs(32)), "J = 64*T1 on UDP");
}

/// The whole reliable exchange in the simulator: nothing is ever retransmitted.
#[test]
fn reliable_sim_sends_no_retransmissions() {
    for (script, answered) in [
        (answering(Some(180), 486, ms(300)), true),
        (answering(None, 200, ms(50)), true),
        (silent(), false),
    ] {
        let mut sim = Sim::new(3, NetConfig::default(), TimerConfig::default(), script);
        sim.reliable = true;
        sim.start(&msgs::invite("z9hG4bKrs", 1, None));
        sim.start(&msgs::request("MESSAGE", "z9hG4bKrm", 2, None));
        // Past fr_inv_timer (180 s) and the wait after it: a silent UAS's 100 started it.
        sim.run(secs(400));
        for kind in [
            TransmitKind::RequestRetransmission,
            TransmitKind::ResponseRetransmission,
        ] {
            assert!(kinds(&sim.uac_log.sent, kind).is_empty(), "{kind:?}");
            assert!(kinds(&sim.uas_log.sent, kind).is_empty(), "{kind:?}");
        }
        // A server transaction whose TU never answers waits for it (no timer of its own).
        assert!(sim.uac.is_empty() && (sim.uas.is_empty() || !answered));
    }
}

/// A lingering INVITE client (a proxy's branch) after timer B: a late 486 is ACKed and
/// absorbed (its retransmission too), a late 2xx passes up; wt_timer ends it.
#[test]
fn lingering_invite_client_absorbs_late_negative_and_passes_late_2xx() {
    let t0 = Instant::now();
    let mut cfg = TimerConfig::ser();
    cfg.fr_timer = secs(2);
    let inv = msgs::invite("z9hG4bKlate", 1, None);
    let mut c = ClientTransaction::start(t0, &cfg, &inv, false)
        .unwrap()
        .lingering();
    sent_client(&mut c);
    let mut now = t0;
    while let Some(d) = c.next_deadline().filter(|d| *d <= t0 + secs(2)) {
        now = d;
        c.handle_timeout(now);
    }
    assert_eq!(now, t0 + secs(2));
    assert_eq!(
        events_client(&mut c),
        [TxnEvent::Timeout(TimerName::B)],
        "not terminated"
    );
    assert!(matches!(
        c.state(),
        ClientState::Invite(InviteClientState::TimedOut { until }) if until == t0 + secs(7)
    ));
    sent_client(&mut c);
    let busy_bytes = msgs::response(&inv, 486, Some("late"));
    let busy = parse(&busy_bytes).unwrap();
    assert_eq!(
        c.handle_response(t0 + ms(3500), &busy),
        Disposition::Absorbed
    );
    let acks = sent_client(&mut c);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0, TransmitKind::Ack);
    assert!(acks[0]
        .1
        .starts_with(b"ACK sip:bob@uas.example.com SIP/2.0\r\n"));
    assert!(String::from_utf8_lossy(&acks[0].1).contains("tag=late"));
    assert_eq!(
        c.handle_response(t0 + ms(4000), &busy),
        Disposition::Absorbed
    );
    assert_eq!(
        sent_client(&mut c).len(),
        1,
        "a retransmitted 486 is ACKed again"
    );
    let provisional_bytes = msgs::response(&inv, 180, Some("late"));
    let provisional = parse(&provisional_bytes).unwrap();
    assert_eq!(
        c.handle_response(t0 + ms(4100), &provisional),
        Disposition::Absorbed
    );
    c.handle_timeout(t0 + secs(7));
    assert!(c.is_terminated(), "wt_timer after the timeout ends it");

    let mut c = ClientTransaction::start(t0, &cfg, &inv, false)
        .unwrap()
        .lingering();
    c.handle_timeout(t0 + secs(2));
    let ok_bytes = msgs::response(&inv, 200, Some("late"));
    let ok = parse(&ok_bytes).unwrap();
    assert_eq!(c.handle_response(t0 + secs(3), &ok), Disposition::PassUp);
    assert!(c.is_terminated());
    assert!(
        sent_client(&mut c)
            .iter()
            .all(|(k, _)| *k != TransmitKind::Ack),
        "no ACK for a 2xx"
    );
}

/// A lingering non-INVITE client after timer F absorbs every late response; without
/// lingering (RFC 3261) F terminates at once.
#[test]
fn lingering_non_invite_client_absorbs_late_finals() {
    let t0 = Instant::now();
    let mut cfg = TimerConfig::ser();
    cfg.fr_timer = secs(2);
    let req = msgs::request("MESSAGE", "z9hG4bKlm", 1, None);
    let mut c = ClientTransaction::start(t0, &cfg, &req, false)
        .unwrap()
        .lingering();
    while let Some(d) = c.next_deadline().filter(|d| *d <= t0 + secs(2)) {
        c.handle_timeout(d);
    }
    assert_eq!(events_client(&mut c), [TxnEvent::Timeout(TimerName::F)]);
    sent_client(&mut c);
    let late_bytes = msgs::response(&req, 404, Some("x"));
    let late = parse(&late_bytes).unwrap();
    assert_eq!(
        c.handle_response(t0 + ms(3500), &late),
        Disposition::Absorbed
    );
    assert!(sent_client(&mut c).is_empty(), "absorbed: nothing sent");
    assert_eq!(c.next_deadline(), Some(t0 + secs(7)));
    c.handle_timeout(t0 + secs(7));
    assert!(c.is_terminated());

    let mut plain = ClientTransaction::start(t0, &cfg, &req, false).unwrap();
    plain.handle_timeout(t0 + secs(2));
    assert!(plain.is_terminated());
}
