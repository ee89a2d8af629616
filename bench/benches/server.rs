//! The server's per-message pieces, each on its own: the script VM running the seeds' default
//! `ser.cfg` over an INVITE (through ser's route glue and transaction layer), the transaction
//! table (insert, match, remove), the user location (save, lookup) and digest verification.
//!
//! Short measurement times (1 s per function) so `cargo bench -p bench` stays within minutes;
//! the figures are in bench/RESULTS.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use ser::config::Config;
use ser::core::Core;
use ser::modules::action::run_request;
use ser::modules::ctx::{MsgCtx, Scratch};
use ser::modules::digest;
use ser::modules::tm::TmShard;
use ser::sip::{Arrival, Listen};
use ser::stats::Stats;
use ser::txn::{Key, ServerTransaction, Table, TimerConfig, Transaction};
use ser::usrloc::rfc3261::{process, ContactParam, Contacts, Policy, SaveRequest};
use ser::usrloc::{Binding, Usrloc};

const DEFAULT_CFG: &str = include_str!("../../tests/data/seeds/default.cfg");
const ME: &str = "127.0.0.1:5060";

fn invite(ruri: &str, n: u64) -> Vec<u8> {
    format!(
        "INVITE {ruri} SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-bench-{n};rport\r\n\
Max-Forwards: 70\r\n\
To: <{ruri}>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: bench-{n}@192.0.2.9\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.9:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The seeds' default script, loaded as `ser` loads it, with `bob` registered.
fn default_script() -> (Arc<Core>, Arc<ser::modules::Script>) {
    let loaded = ser::loader::load("default.cfg", DEFAULT_CFG, &Config::default())
        .expect("the seeds' default.cfg loads");
    let me: SocketAddr = ME.parse().expect("addr");
    let mut core = Core::new(&loaded.config, vec![Listen::udp(me)], None);
    core.params = loaded.params.clone();
    // db_mode 0 (the script's): bindings in memory only, no database.
    core.usrloc = Arc::new(Usrloc::new(ser::usrloc::Config::default(), None));
    let now = ser::usrloc::now();
    core.usrloc.table("location").update("bob", |v| {
        v.push(Binding {
            contact: "sip:bob@192.0.2.20:5060".into(),
            expires: now + 3600,
            q: 1000,
            callid: "reg".into(),
            cseq: 1,
            last_modified: now,
            user_agent: String::new(),
            flow: None,
            received: None,
            flags: 0,
        })
    });
    (Arc::new(core), loaded.script)
}

fn bench_vm(c: &mut Criterion) {
    let (core, script) = default_script();
    let stats = Arc::new(Stats::default());
    let at = Arrival::udp(
        "192.0.2.9:5060".parse().expect("addr"),
        ME.parse().expect("addr"),
        0,
        0,
    );
    let mut g = c.benchmark_group("vm_default_cfg");
    // Outbound (R-URI not ours): maxfwd, msg:len, record_route, loose_route, uri==myself,
    // append_hf, t_relay. Local user: the same plus lookup("aliases") and lookup("location").
    for (name, ruri) in [
        ("invite_outbound", "sip:carol@192.0.2.30"),
        ("invite_to_registered_user", "sip:bob@127.0.0.1"),
    ] {
        let mut scratch = Scratch::default();
        let mut n = 0u64;
        // A fresh transaction layer per iteration (built outside the timing), so every run
        // creates its transaction in an empty table instead of growing one without bound.
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let tm = TmShard::new(
                        Arc::clone(&core),
                        Arc::clone(&script),
                        Arc::clone(&stats),
                        0,
                        1,
                    );
                    (tm, invite(ruri, n))
                },
                |(mut tm, buf)| {
                    let msg = ser_parser::parse(&buf).expect("valid");
                    let mut m = MsgCtx::new(&core, &stats, &msg, at, &mut scratch);
                    m.tm = Some(&mut tm);
                    m.t.now = Some(Instant::now());
                    let out = run_request(&script, &mut m);
                    assert!(!scratch.out.sends.is_empty(), "the INVITE was relayed");
                    (black_box(out), tm)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_txn(c: &mut Criterion) {
    let cfg = TimerConfig::ser();
    let t0 = Instant::now();
    // 10 000 requests with distinct branches, parsed once.
    let bufs: Vec<Vec<u8>> = (0..10_000)
        .map(|i| invite("sip:bob@192.0.2.20", i))
        .collect();
    let msgs: Vec<_> = bufs
        .iter()
        .map(|b| ser_parser::parse(b).expect("valid"))
        .collect();
    let keys: Vec<Key> = msgs.iter().map(|m| Key::server(m).expect("key")).collect();
    let mut g = c.benchmark_group("txn_table");
    // The table in steady state: 10 000 transactions; each iteration inserts one more,
    // matches it by a key built from the request (as a retransmission would be), removes it.
    let mut table: Table<Transaction> = Table::new(100_000);
    for m in &msgs[1..] {
        let t = ServerTransaction::new(t0, &cfg, m, false).expect("txn");
        let key = t.key().clone();
        let id = table.insert(Transaction::Server(t)).expect("insert");
        table.index(key, id, 0).expect("index");
    }
    g.bench_function("insert_match_remove_in_10k", |b| {
        b.iter(|| {
            let t = ServerTransaction::new(t0, &cfg, &msgs[0], false).expect("txn");
            let id = table.insert(Transaction::Server(t)).expect("insert");
            table.index(keys[0].clone(), id, 0).expect("index");
            let key = Key::server(black_box(&msgs[0])).expect("key");
            let hit = table.lookup(&key).map(|(id, _)| id);
            hit.and_then(|id| table.remove(id)).is_some()
        })
    });
    g.bench_function("match_only_in_10k", |b| {
        let mut i = 1usize;
        b.iter(|| {
            i = if i + 1 >= msgs.len() { 1 } else { i + 1 };
            let key = Key::server(&msgs[i]).expect("key");
            table.contains(&key)
        })
    });
    g.finish();
}

fn bench_usrloc(c: &mut Criterion) {
    const AORS: usize = 10_000;
    let ul = Usrloc::new(ser::usrloc::Config::default(), None);
    let t = ul.table("location");
    let now = ser::usrloc::now();
    let pol = Policy::default();
    let save = |i: usize, cseq: u32| {
        let req = SaveRequest {
            contacts: Contacts::List(vec![ContactParam {
                uri: format!("sip:user{i}@10.0.0.1:5060"),
                expires: Some(3600),
                q: None,
            }]),
            expires: None,
            callid: format!("c{i}"),
            cseq,
            user_agent: String::new(),
            flow: None,
            received: None,
            flags: 0,
        };
        t.update(&format!("user{i}"), |v| match process(v, &req, &pol, now) {
            Ok(o) => {
                *v = o.bindings;
                true
            }
            Err(_) => false,
        })
    };
    for i in 0..AORS {
        save(i, 1);
    }
    let mut g = c.benchmark_group("usrloc");
    let mut i = 0usize;
    let mut cseq = 1u32;
    g.bench_function("save_refresh_in_10k_aors", |b| {
        b.iter(|| {
            i = (i + 7919) % AORS;
            cseq += 1;
            save(i, cseq)
        })
    });
    let names: Vec<String> = (0..AORS).map(|i| format!("user{i}")).collect();
    g.bench_function("lookup_in_10k_aors", |b| {
        b.iter(|| {
            i = (i + 7919) % AORS;
            t.lookup(&names[i], now).len()
        })
    });
    g.finish();
}

fn bench_digest(c: &mut Criterion) {
    let secret = "alsdkhglaksdhfkloiwr";
    let nonce = digest::make_nonce(4_000_000_000, 0x1234_5678, secret);
    let ha1 = digest::ha1("u1", "anchor.test", "pw1");
    let r = digest::Response {
        method: "REGISTER",
        uri: "sip:anchor.test",
        nonce: &nonce,
        qop: Some(("auth", "00000001", "0a4f113b")),
    };
    let resp = digest::expected_response(&ha1, &r);
    let mut g = c.benchmark_group("digest");
    g.bench_function("check_nonce", |b| {
        b.iter(|| digest::check_nonce(black_box(&nonce), secret, 1_000_000))
    });
    g.bench_function("ha1_and_check_response_qop", |b| {
        b.iter(|| {
            // What www_authorize does per REGISTER with a plain-text password column.
            let ha1 = digest::ha1("u1", "anchor.test", black_box("pw1"));
            digest::check_response(&ha1, &r, &resp)
        })
    });
    g.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = short();
    targets = bench_vm, bench_txn, bench_usrloc, bench_digest
}
criterion_main!(benches);
