//! Lookups per second on the user location while other threads register: the shared
//! store's read path under write load (no criterion: a plain timed loop, one figure per
//! configuration). `cargo run --release --example usrloc_bench [readers] [writers] [secs]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ser::usrloc::rfc3261::{process, ContactParam, Contacts, Policy, SaveRequest};
use ser::usrloc::{Binding, Config, Usrloc};

const AORS: usize = 100_000;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let readers = args.first().copied().unwrap_or(1);
    let writers = args.get(1).copied().unwrap_or(1);
    let secs = args.get(2).copied().unwrap_or(3) as u64;
    let ul = Arc::new(Usrloc::new(Config::default(), None));
    let t = ul.table("location");
    let now = ser::usrloc::now();
    for i in 0..AORS {
        t.update(&format!("user{i}"), |v| {
            for k in 0..2u16 {
                v.push(Binding {
                    contact: format!("sip:user{i}@10.0.{k}.1:5060"),
                    expires: now + 3600,
                    q: 500 + k * 100,
                    callid: format!("c{i}"),
                    cseq: 1,
                    last_modified: now,
                    user_agent: String::new(),
                    flow: None,
                    received: None,
                    flags: 0,
                });
            }
        });
    }
    for (r, w) in [(readers, 0), (readers, writers)] {
        let stop = Arc::new(AtomicBool::new(false));
        let lookups = Arc::new(AtomicU64::new(0));
        let saves = Arc::new(AtomicU64::new(0));
        let mut hs = Vec::new();
        for id in 0..r {
            let (t, stop, lookups) = (Arc::clone(&t), Arc::clone(&stop), Arc::clone(&lookups));
            hs.push(std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_u64.wrapping_mul(id as u64 + 1);
                let mut n = 0u64;
                let mut found = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let aor = format!("user{}", x as usize % AORS);
                        found += t.lookup(&aor, now).len();
                        n += 1;
                    }
                }
                assert!(found > 0);
                lookups.fetch_add(n, Ordering::Relaxed);
            }));
        }
        for id in 0..w {
            let (t, stop, saves) = (Arc::clone(&t), Arc::clone(&stop), Arc::clone(&saves));
            hs.push(std::thread::spawn(move || {
                let pol = Policy::default();
                let mut i = id;
                let mut cseq = 1;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7919) % AORS;
                    cseq += 1;
                    let req = SaveRequest {
                        contacts: Contacts::List(vec![ContactParam {
                            uri: format!("sip:user{i}@10.0.0.1:5060"),
                            expires: Some(3600),
                            q: None,
                        }]),
                        expires: None,
                        callid: format!("w{id}"),
                        cseq,
                        user_agent: String::new(),
                        flow: None,
                        received: None,
                        flags: 0,
                    };
                    t.update(&format!("user{i}"), |v| {
                        if let Ok(o) = process(v, &req, &pol, now) {
                            *v = o.bindings;
                        }
                    });
                    saves.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            let _ = h.join();
        }
        let el = start.elapsed().as_secs_f64();
        println!(
            "{r} reader(s), {w} writer(s): {:.0} lookups/s, {:.0} saves/s ({AORS} AORs)",
            lookups.load(Ordering::Relaxed) as f64 / el,
            saves.load(Ordering::Relaxed) as f64 / el
        );
    }
}
