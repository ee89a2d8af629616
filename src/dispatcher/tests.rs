//! The dispatcher as the shards and the FIFO use it: a list read from a file, selection
//! with fail-over candidates, reload keeping health, the operator's states, probe targets,
//! `ds_is_from_list`.

use super::*;

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ser-ds-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self { dir }
    }

    fn dispatcher(&self, list: &str, extra: &[(&str, ser_script::Value)]) -> Dispatcher {
        std::fs::write(self.dir.join("ds.list"), list).expect("write list");
        let mut p = Params::default();
        p.set(
            "dispatcher",
            "ds_list_file",
            ser_script::Value::Str("ds.list".into()),
        );
        for (k, v) in extra {
            p.set("dispatcher", k, v.clone());
        }
        let d = Dispatcher {
            cfg: Some(Config::from_params(&p, &self.dir)),
            ..Dispatcher::default()
        };
        d.reload().expect("list loads");
        d
    }

    fn write(&self, list: &str) {
        std::fs::write(self.dir.join("ds.list"), list).expect("write list");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const FARM: &str = "\
1 sip:127.0.0.1:5071
1 sip:127.0.0.1:5072 0 5
1 sip:127.0.0.1:5073;transport=tcp
2 sip:127.0.0.1:6000 1
";

fn uris(v: &[Arc<Dest>]) -> Vec<&str> {
    v.iter().map(|d| d.uri.as_str()).collect()
}

#[test]
fn selects_by_priority_then_fails_over_in_order() {
    let fx = Fixture::new("prio");
    let d = fx.dispatcher(FARM, &[]);
    let order = d.select(1, Alg::Priority, 0).expect("a destination");
    assert_eq!(
        uris(&order),
        [
            "sip:127.0.0.1:5072",
            "sip:127.0.0.1:5071",
            "sip:127.0.0.1:5073;transport=tcp"
        ]
    );
    // Round robin over the sorted set, one step per selection.
    let picks: Vec<String> = (0..6)
        .map(|_| {
            d.select(1, Alg::RoundRobin, 0)
                .and_then(|v| v.first().map(|x| x.uri.clone()))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(picks[0..3], picks[3..6]);
    // Set 2's only destination is inactive (flag 1): nothing to select; no set 3 at all.
    assert!(d.select(2, Alg::RoundRobin, 0).is_none());
    assert!(d.select(3, Alg::RoundRobin, 0).is_none());
}

#[test]
fn reload_keeps_health_and_load_and_refuses_bad_lists() {
    let fx = Fixture::new("reload");
    let d = fx.dispatcher(FARM, &[]);
    d.set_state(1, "sip:127.0.0.1:5071", State::Probing)
        .expect("known destination");
    assert!(d.set_state(1, "sip:127.0.0.1:9999", State::Active).is_err());
    let st = d.sets().find_state(1, "sip:127.0.0.1:5072").expect("state");
    st.load.fetch_add(2, Ordering::Relaxed);
    fx.write("1 sip:127.0.0.1:5071\n1 sip:127.0.0.1:5072\n1 sip:127.0.0.1:5074\n");
    d.reload().expect("reloads");
    let sets = d.sets();
    let s = sets.set(1).expect("set 1");
    let state = |u: &str| {
        s.dests.iter().find(|x| x.uri == u).map(|x| {
            (
                x.state.health.get().state,
                x.state.load.load(Ordering::Relaxed),
            )
        })
    };
    assert_eq!(state("sip:127.0.0.1:5071"), Some((State::Probing, 0)));
    assert_eq!(state("sip:127.0.0.1:5072"), Some((State::Active, 2)));
    assert_eq!(state("sip:127.0.0.1:5074"), Some((State::Active, 0)));
    assert!(sets.set(2).is_none());
    drop(sets);
    // A broken list is refused with its line and column; the running sets stay.
    fx.write("1 sip:127.0.0.1:5071\n1 sip:127.0.0.1:5072 x\n");
    let e = d.reload().err().unwrap_or_default();
    assert!(
        e.ends_with("ds.list:2:22: flags \"x\" are not a number"),
        "{e}"
    );
    assert_eq!(d.sets().dests().count(), 3);
}

#[test]
fn probe_targets_follow_the_mode() {
    let fx = Fixture::new("probe");
    let d = fx.dispatcher(FARM, &[]);
    assert!(d.probe_targets().is_empty());
    d.set_state(1, "sip:127.0.0.1:5073;transport=tcp", State::Probing)
        .expect("known");
    assert_eq!(
        uris(&d.probe_targets()),
        ["sip:127.0.0.1:5073;transport=tcp"]
    );
    let all = fx.dispatcher(FARM, &[("ds_probing_mode", ser_script::Value::Int(1))]);
    // Every destination but the inactive one of set 2.
    assert_eq!(all.probe_targets().len(), 3);
}

#[test]
fn failures_from_the_script_count_to_the_threshold() {
    let fx = Fixture::new("mark");
    let d = fx.dispatcher(FARM, &[("ds_probing_threshold", ser_script::Value::Int(2))]);
    let st = d.sets().find_state(1, "sip:127.0.0.1:5071").expect("state");
    d.event(&st, Event::Failure, "test");
    assert!(st.health.is_active());
    d.event(&st, Event::Failure, "test");
    assert!(!st.health.is_active());
    let order = d.select(1, Alg::RoundRobin, 0).expect("others");
    assert!(!uris(&order).contains(&"sip:127.0.0.1:5071"));
}

#[test]
fn is_from_list_matches_address_port_and_transport() {
    let fx = Fixture::new("from");
    let d = fx.dispatcher(FARM, &[]);
    let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
    assert!(d.is_from(None, Transport::Udp, a("127.0.0.1:5071")));
    assert!(d.is_from(Some(1), Transport::Udp, a("127.0.0.1:5072")));
    assert!(!d.is_from(Some(2), Transport::Udp, a("127.0.0.1:5072")));
    assert!(!d.is_from(None, Transport::Udp, a("127.0.0.1:5079")));
    assert!(!d.is_from(None, Transport::Udp, a("127.0.0.1:5073")));
    assert!(d.is_from(None, Transport::Tcp, a("127.0.0.1:5073")));
    // An IPv4 peer on a dual-stack socket.
    assert!(d.is_from(None, Transport::Udp, a("[::ffff:127.0.0.1]:5071")));
    // Inactive destinations are still the farm's own.
    assert!(d.is_from(Some(2), Transport::Udp, a("127.0.0.1:6000")));
}

#[test]
fn parameters_are_checked() {
    use ser_script::Value as V;
    assert!(check_param("ds_probing_mode", &V::Int(2)).is_err());
    assert!(check_param("ds_probing_mode", &V::Int(1)).is_ok());
    assert!(check_param("ds_probing_threshold", &V::Int(0)).is_err());
    assert!(check_param("ds_ping_interval", &V::Int(-1)).is_err());
    assert!(check_param("ds_ping_method", &V::Str("INVITE".into())).is_err());
    assert!(check_param("ds_ping_method", &V::Str("INFO".into())).is_ok());
    assert!(check_param("ds_ping_from", &V::Str("not a uri".into())).is_err());
    assert!(check_param("ds_table", &V::Str("x; drop".into())).is_err());
    let p = Params::default();
    let c = Config::from_params(&p, Path::new("/srv"));
    assert_eq!(c.source, Source::File(PathBuf::from(DEFAULT_LIST_FILE)));
    assert_eq!(c.ping_interval, Duration::ZERO);
    assert_eq!(c.ping_method, "OPTIONS");
    assert_eq!(c.probing_mode, ProbingMode::Probing);
}

#[cfg(feature = "sqlite")]
#[test]
fn sets_from_the_dispatcher_table() {
    let fx = Fixture::new("table");
    let url = format!("sqlite://{}", fx.dir.join("ser.db").display());
    let db = crate::db::Db::open(&url, 1).expect("open sqlite");
    db.init_schema().expect("schema");
    let insert = |setid: i64, dest: &str, flags: i64, prio: i64, attrs: &str| {
        db.with_conn(|c| {
            c.exec(
                "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) \
                 VALUES (?, ?, ?, ?, ?, '')",
                &[
                    crate::db::Value::Int(setid),
                    crate::db::Value::Text(dest.to_string()),
                    crate::db::Value::Int(flags),
                    crate::db::Value::Int(prio),
                    crate::db::Value::Text(attrs.to_string()),
                ],
            )
        })
        .expect("insert");
    };
    insert(7, "sip:10.1.0.1:5060", 0, 1, "weight=10");
    insert(7, "sip:10.1.0.2:5060", 0, 9, "");
    insert(8, "sip:10.1.0.3:5060", 4, 0, "");
    let mut p = Params::default();
    p.set("dispatcher", "db_url", ser_script::Value::Str(url.clone()));
    let d = Dispatcher {
        cfg: Some(Config::from_params(&p, &fx.dir)),
        db: Some(Arc::clone(&db)),
        ..Dispatcher::default()
    };
    let msg = d.reload().expect("reads the table");
    assert!(
        msg.starts_with("3 destination(s) in 2 set(s) from table dispatcher"),
        "{msg}"
    );
    let order = d.select(7, Alg::Priority, 0).expect("set 7");
    assert_eq!(uris(&order), ["sip:10.1.0.2:5060", "sip:10.1.0.1:5060"]);
    assert_eq!(order[1].attrs.weight, Some(10));
    assert!(d.select(8, Alg::Priority, 0).is_none(), "disabled");
    // A bad row is named by its id; the running sets stay.
    insert(7, "http://nope", 0, 0, "");
    let e = d.reload().err().unwrap_or_default();
    assert!(
        e.contains("table dispatcher, id 4: bad destination URI"),
        "{e}"
    );
    assert_eq!(d.sets().dests().count(), 3);
    db.close();
}
