//! usrloc's management commands (the seeds' FIFO table: `ul_stats`, `ul_rm`,
//! `ul_rm_contact`, `ul_dump`, `ul_flush`, `ul_add`, `ul_show_contact`) and its metrics.
//! They run on the FIFO/HTTP threads and may block on the database; never on a shard.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Command, Mgmt, Params, Reply};
use crate::usrloc::rfc3261::{parse_q, Binding, PERMANENT};
use crate::usrloc::{now, Usrloc};

const COMMANDS: &[Command] = &[
    Command {
        name: "ul_stats",
        module: "usrloc",
        params: Params::Lines,
        help: "usrloc statistics: per table, AORs registered and contacts expired",
        slow: false,
        run: ul_stats,
    },
    Command {
        name: "ul_rm",
        module: "usrloc",
        params: Params::Lines,
        help: "remove all of a user's contacts: <table> <user>",
        slow: true,
        run: ul_rm,
    },
    Command {
        name: "ul_rm_contact",
        module: "usrloc",
        params: Params::Lines,
        help: "remove one contact of a user: <table> <user> <contact>",
        slow: true,
        run: ul_rm_contact,
    },
    Command {
        name: "ul_dump",
        module: "usrloc",
        params: Params::Lines,
        help: "print every table's users and contacts",
        slow: true,
        run: ul_dump,
    },
    Command {
        name: "ul_flush",
        module: "usrloc",
        params: Params::Lines,
        help: "write the in-memory cache to the database (db_mode 2)",
        slow: true,
        run: ul_flush,
    },
    Command {
        name: "ul_add",
        module: "usrloc",
        params: Params::Lines,
        help: "add a contact: <table> <user> <contact> <expires (0: permanent)> <q>",
        slow: true,
        run: ul_add,
    },
    Command {
        name: "ul_show_contact",
        module: "usrloc",
        params: Params::Lines,
        help: "show a user's contacts: <table> <user>",
        slow: true,
        run: ul_show_contact,
    },
];

/// Adds usrloc's commands (main calls it when usrloc is loaded).
pub fn register(m: &mut Mgmt) {
    for c in COMMANDS {
        m.register(*c);
    }
}

fn ul(m: &Mgmt) -> Arc<Usrloc> {
    Arc::clone(&m.live.current().core.usrloc)
}

fn table_arg(p: &[String], i: usize) -> Result<&str, Reply> {
    let t = p.get(i).map(|s| s.trim()).unwrap_or_default();
    if crate::db::schema::is_identifier(t) {
        Ok(t)
    } else {
        Err(Reply::error(400, format!("bad table name '{t}'")))
    }
}

fn arg(p: &[String], i: usize, what: &str) -> Result<String, Reply> {
    match p.get(i).map(|s| s.trim()) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(Reply::error(400, format!("missing parameter: {what}"))),
    }
}

fn db_err(e: crate::db::DbError) -> Reply {
    Reply::error(500, format!("database error: {e}"))
}

fn ul_stats(m: &Mgmt, _: &[String]) -> Reply {
    let ul = ul(m);
    let mut body = vec![String::from("Domain Registered Expired")];
    for t in ul.tables() {
        let (aors, _) = t.counts();
        body.push(format!(
            "'{}' {} {}",
            t.name,
            aors,
            t.expired.load(Ordering::Relaxed)
        ));
    }
    Reply::ok(body)
}

fn ul_rm(m: &Mgmt, p: &[String]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let table = table_arg(p, 0)?;
        let user = arg(p, 1, "user name")?;
        let ul = ul(m);
        let aor = ul.aor_of_name(&user);
        let found = ul.remove_blocking(table, &aor, None).map_err(db_err)?;
        Ok(if found {
            Reply::error(200, format!("user ({table}, {user}) deleted"))
        } else {
            Reply::error(404, format!("Username {user} in table {table} not found"))
        })
    };
    run().unwrap_or_else(|e| e)
}

fn ul_rm_contact(m: &Mgmt, p: &[String]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let table = table_arg(p, 0)?;
        let user = arg(p, 1, "user name")?;
        let contact = arg(p, 2, "contact")?;
        let ul = ul(m);
        let aor = ul.aor_of_name(&user);
        let found = ul
            .remove_blocking(table, &aor, Some(&contact))
            .map_err(db_err)?;
        Ok(if found {
            Reply::error(200, format!("contact ({table}, {user}, {contact}) deleted"))
        } else {
            Reply::error(
                404,
                format!("Contact {contact} of {user} in table {table} not found"),
            )
        })
    };
    run().unwrap_or_else(|e| e)
}

fn ul_dump(m: &Mgmt, _: &[String]) -> Reply {
    let ul = ul(m);
    let now = now();
    match ul.dump_blocking() {
        Ok(tables) => {
            let mut body = Vec::new();
            for (name, aors) in tables {
                body.push(format!("Domain: '{name}' ({} AORs)", aors.len()));
                for (aor, bindings) in aors {
                    body.push(format!("  AOR: '{aor}'"));
                    for b in bindings.iter().filter(|b| b.alive(now)) {
                        body.push(format!(
                            "    {};callid={};cseq={}",
                            b.show(now),
                            b.callid,
                            b.cseq
                        ));
                    }
                }
            }
            Reply::ok(body)
        }
        Err(e) => db_err(e),
    }
}

fn ul_flush(m: &Mgmt, _: &[String]) -> Reply {
    match ul(m).flush() {
        Ok(n) => Reply::ok(vec![format!("{n} AOR(s) flushed")]),
        Err(e) => db_err(e),
    }
}

fn ul_add(m: &Mgmt, p: &[String]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let table = table_arg(p, 0)?;
        let user = arg(p, 1, "user name")?;
        let contact = arg(p, 2, "contact")?;
        if ser_parser::parse_uri(&contact).is_err() {
            return Err(Reply::error(400, format!("bad contact URI '{contact}'")));
        }
        let expires: u64 = match p.get(3).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => 0,
            Some(s) => s
                .parse()
                .map_err(|_| Reply::error(400, format!("bad expires '{s}'")))?,
        };
        let q = match p.get(4).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => 1000,
            Some(s) => parse_q(s).ok_or_else(|| Reply::error(400, format!("bad q '{s}'")))?,
        };
        let ul = ul(m);
        let aor = ul.aor_of_name(&user);
        let now = now();
        let b = Binding {
            contact: contact.clone(),
            expires: now + if expires == 0 { PERMANENT } else { expires },
            q,
            callid: String::from("fifo-ul_add"),
            cseq: 1,
            last_modified: now,
            user_agent: String::from("serctl"),
            flow: None,
            received: None,
            flags: 0,
        };
        ul.add_blocking(table, &aor, b).map_err(db_err)?;
        Ok(Reply {
            code: 200,
            reason: String::from("Added to table"),
            body: vec![format!("('{user}','{contact}') to '{table}'")],
        })
    };
    run().unwrap_or_else(|e| e)
}

fn ul_show_contact(m: &Mgmt, p: &[String]) -> Reply {
    let run = || -> Result<Reply, Reply> {
        let table = table_arg(p, 0)?;
        let user = arg(p, 1, "user name")?;
        let ul = ul(m);
        let aor = ul.aor_of_name(&user);
        let now = now();
        let bindings = ul.get_blocking(table, &aor).map_err(db_err)?;
        let lines: Vec<String> = crate::usrloc::rfc3261::lookup_order(&bindings, now)
            .iter()
            .map(|b| b.show(now))
            .collect();
        Ok(if lines.is_empty() {
            Reply::error(404, format!("Username {user} in table {table} not found"))
        } else {
            Reply::ok(lines)
        })
    };
    run().unwrap_or_else(|e| e)
}

/// usrloc's metrics: AORs and contacts per table (gauges), expired contacts and saves
/// (counters).
pub fn collector(ul: Arc<Usrloc>) -> crate::metrics::Collector {
    use crate::metrics::Family;
    Arc::new(move |v: &mut Vec<Family>| {
        let mut aors = Family::gauge("ser_usrloc_aors", "Addresses-of-record with contacts.");
        let mut contacts = Family::gauge("ser_usrloc_contacts", "Registered contacts.");
        let mut expired = Family::counter(
            "ser_usrloc_expired_total",
            "Contacts removed because they expired.",
        );
        let mut saved = Family::counter(
            "ser_usrloc_registrations_total",
            "REGISTERs that changed a table.",
        );
        for t in ul.tables() {
            let (a, c) = t.counts();
            let l = [("table", t.name.as_str())];
            aors.sample(&l, a);
            contacts.sample(&l, c);
            expired.sample(&l, t.expired.load(Ordering::Relaxed));
            saved.sample(&l, t.saved.load(Ordering::Relaxed));
        }
        v.extend([aors, contacts, expired, saved]);
    })
}
