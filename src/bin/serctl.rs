//! `serctl`: SER's management tool, talking to a running `ser` through its FIFO server.
//!
//! The FIFO is `$SER_FIFO` (default `/tmp/ser_fifo`), as with SER's serctl. Each command
//! makes a reply pipe `/tmp/ser_receiver_<pid>_<n>` (n: random, another one if that
//! name is taken: processes in other PID namespaces share /tmp and pids), writes one request
//! (`:cmd:ser_receiver_<pid>_<n>`,
//! parameter lines, an empty line) in a single write, and prints the reply: the body for a
//! `2xx` reply, the status line otherwise (with exit status 1).
//!
//! The database commands of the seeds' serctl (`add`, `passwd`, `rm`, `alias`, `acl`,
//! `showdb`, `db init`) work on `$DB_URL` (default `sqlite://ser-data/ser.db`, the server's
//! default database when started in the same directory); see `ser::ctl_db`. Aliases live in
//! a usrloc table that a running server keeps in memory: they go through its FIFO
//! (`ul_add`/`ul_rm`/`ul_show_contact`) when one answers, and to the database otherwise.
//! `ul` goes through the FIFO (usrloc's `ul_*` commands), so the server's memory
//! changes, as the seeds insist.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "\
usage: serctl <command> [args]
  * subscribers * (SIP_DOMAIN must be set to your realm)
  serctl add <username> <password> <email> .. add a new subscriber (*)
  serctl passwd <username> <passwd> ......... change user's password (*)
  serctl rm <username> ...................... delete a user (*)
  serctl alias show [<alias>] ............... show aliases
  serctl alias rm <alias> ................... remove an alias
  serctl alias add <alias> <uri> ............ add an alias
  * access control lists *
  serctl acl show [<username>] .............. show user membership
  serctl acl grant <username> <group> ....... grant user membership (*)
  serctl acl revoke <username> [<group>] .... revoke user membership(s) (*)
  * database *
  serctl showdb [<username>] ................ show online users flushed in DB
  serctl db init [<db_url>] ................. create the seeds' tables (*)
  * server health *
  serctl monitor|moni [-c cycles] [-i seconds] ... show internal status (refreshing)
  serctl ps ..................................... show running threads
  serctl fifo <cmd> [param ...] ................. send a raw command to the FIFO
  serctl reload ................................. compile the script again and swap it in
  serctl version | uptime | which ............... the FIFO commands of the same name
  serctl t_stats | sl_stats | t_hash ............ statistics
  * usrloc (through the running server, so its memory changes) *
  serctl ul show [<username>] ................... show in-RAM online users
  serctl ul rm <username> ....................... delete user's UsrLoc entries
  serctl ul add <username> <uri> ................ introduce a permanent UsrLoc entry
  serctl alias show|rm <alias> | add <alias> <uri>  the same for the aliases table
  * floods and limits (pike, ratelimit) *
  serctl pike top ............................... addresses pike blocks now
  serctl rl pipes | queues | stats .............. ratelimit's pipes, queues, counters
  serctl rl set_pipe <id> <TAILDROP|RED|NOP> <limit> .. change a pipe (limit per second)
  serctl rl set_queue <queue_id> <METHOD|*> <pipe_id> . change a queue
  * dispatcher (load balancing) *
  serctl dispatcher list ........................ destination sets with their states
  serctl dispatcher reload ...................... read the list file (or table) again
  serctl dispatcher set <state> <set> <uri> ..... active|inactive|probing|disabled
  * msilo (messages stored for offline users) *
  serctl msilo list [<user>] .................... stored messages, oldest first
  serctl msilo count [<user>] ................... stored messages per user
  serctl msilo rm <user> [<mid>] ................ delete a user's stored messages
  * jabber (the SIP-XMPP gateway) *
  serctl jabber status .......................... connected or not, queue, counters
The FIFO is $SER_FIFO (default /tmp/ser_fifo); $SERCTL_TIMEOUT (seconds) bounds each wait.
$DB_URL is the database (default sqlite://ser-data/ser.db). Commands labeled with (*) prompt
for the MySQL password when $DB_URL has none, unless the variable PW is set.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("serctl: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<i32, String> {
    let Some(cmd) = args.first() else {
        print!("{USAGE}");
        return Ok(1);
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(0)
        }
        "fifo" => {
            let Some(fifo_cmd) = args.get(1) else {
                return Err(String::from("usage: serctl fifo <cmd> [param ...]"));
            };
            print_reply(&request(fifo_cmd, args.get(2..).unwrap_or_default())?)
        }
        "ps" | "reload" | "version" | "uptime" | "which" | "t_stats" | "sl_stats" | "t_hash" => {
            print_reply(&request(cmd, &[])?)
        }
        "moni" | "monitor" => monitor(args.get(1..).unwrap_or_default()),
        "add" | "passwd" | "rm" | "alias" | "acl" | "showdb" | "db" => db_command(args),
        "ul" => user_location(cmd, args.get(1..).unwrap_or_default()),
        "pike" | "rl" => limits(cmd, args.get(1..).unwrap_or_default()),
        "dispatcher" | "ds" => dispatcher(args.get(1..).unwrap_or_default()),
        "msilo" => msilo(args.get(1..).unwrap_or_default()),
        "jabber" | "xmpp" => match args.get(1..).unwrap_or_default() {
            [] => print_reply(&request("jabber.status", &[])?),
            [s] if s == "status" => print_reply(&request("jabber.status", &[])?),
            _ => Err(String::from("usage: serctl jabber status")),
        },
        other => Err(format!("unknown command '{other}'\n{USAGE}")),
    }
}

type FifoReply = ser::ctl_fifo::Reply;

fn print_reply(r: &FifoReply) -> Result<i32, String> {
    if (200..300).contains(&r.code) {
        print!("{}", r.body);
        Ok(0)
    } else {
        println!("{}", r.status);
        print!("{}", r.body);
        Ok(1)
    }
}

fn fifo_path() -> PathBuf {
    PathBuf::from(std::env::var("SER_FIFO").unwrap_or_else(|_| String::from("/tmp/ser_fifo")))
}

fn timeout_for(cmd: &str) -> Duration {
    if let Some(s) = std::env::var("SERCTL_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_secs(s);
    }
    // t_uac_from waits for the final reply of a transaction (fr_timer).
    if cmd.starts_with("t_uac") {
        Duration::from_secs(45)
    } else {
        Duration::from_secs(5)
    }
}

/// Sends `:cmd:reply\nparams...\n\n` and waits for the reply (reply pipe
/// `/tmp/ser_receiver_<pid>_<n>`, as SER's serctl named it).
fn request(cmd: &str, params: &[String]) -> Result<FifoReply, String> {
    let fifo = fifo_path();
    let wait = timeout_for(cmd);
    let req = ser::ctl_fifo::Request {
        cmd,
        lines: params,
        end: "\n",
        prefix: "ser_receiver",
        wait,
        max_len: None,
    };
    ser::ctl_fifo::call(&fifo, &req).map_err(|e| match e {
        ser::ctl_fifo::Error::Unreachable(e) => format!(
            "cannot reach ser through {} ({e}); is it running with fifo=\"{}\"?",
            fifo.display(),
            fifo.display()
        ),
        ser::ctl_fifo::Error::NoReply(w) => {
            format!("no reply from ser within {w:?} (FIFO {})", fifo.display())
        }
        ser::ctl_fifo::Error::Other(e) => e,
    })
}

/// The seeds' `serctl moni`: a refreshing status screen.
fn monitor(args: &[String]) -> Result<i32, String> {
    let mut cycles: Option<u64> = None;
    let mut interval = Duration::from_secs(3);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => {
                cycles = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("-c needs a number of cycles")?,
                )
            }
            "-i" => {
                interval = Duration::from_secs_f64(
                    it.next()
                        .and_then(|v| v.parse::<f64>().ok())
                        .filter(|v| *v > 0.0)
                        .ok_or("-i needs seconds")?,
                )
            }
            other => return Err(format!("monitor: unknown option '{other}'")),
        }
    }
    let tty = std::env::var_os("TERM").is_some() && cycles.is_none();
    let mut n = 0u64;
    loop {
        n += 1;
        let mut screen = String::new();
        if tty {
            screen.push_str("\x1b[2J\x1b[H");
        }
        screen.push_str(&format!(
            "[cycle #: {n}; if constant make sure server lives and fifo is on]\n"
        ));
        for (title, cmd) in [
            ("", "version"),
            ("", "uptime"),
            ("Transaction Statistics", "t_stats"),
            ("Stateless Server Statistics", "sl_stats"),
            ("UsrLoc Stats", "ul_stats"),
        ] {
            let r = request(cmd, &[]);
            // A server without usrloc has no ul_stats: no section then.
            if matches!(&r, Ok(r) if r.status.contains("not available")) {
                continue;
            }
            if !title.is_empty() {
                screen.push_str(title);
                screen.push('\n');
            }
            match r {
                Ok(r) if (200..300).contains(&r.code) => screen.push_str(&r.body),
                Ok(r) => {
                    screen.push_str(&r.status);
                    screen.push('\n');
                }
                Err(e) => {
                    screen.push_str(&format!("{e}\n"));
                    break;
                }
            }
        }
        print!("{screen}");
        let _ = io::stdout().flush();
        if cycles.is_some_and(|c| n >= c) {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}

// ---- database commands ----

/// The database of `$DB_URL`; `ask` (the commands marked (*)): a MySQL URL without a
/// password takes `$PW`, or asks on the terminal without echo.
fn open_db(ask: bool) -> Result<std::sync::Arc<ser::db::Db>, String> {
    let mut url = std::env::var("DB_URL").unwrap_or_else(|_| ser::db::default_url("ser-data"));
    if let Ok(ser::db::Url::Mysql {
        user,
        password,
        host,
        port,
        db,
    }) = ser::db::parse_url(&url)
    {
        if password.is_empty() && ask {
            let pw = match std::env::var("PW") {
                Ok(pw) => pw,
                Err(_) => rpassword::prompt_password("MySql Password: ")
                    .map_err(|e| format!("cannot read the password: {e}"))?,
            };
            url = format!("mysql://{user}:{pw}@{host}:{port}/{db}");
        }
    }
    if let Ok(ser::db::Url::Sqlite(path)) = ser::db::parse_url(&url) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    let db = ser::db::Db::open(&url, 0).map_err(|e| e.to_string())?;
    if db.dialect() == ser::db::Dialect::Sqlite {
        // An embedded database serctl just created has no tables yet.
        db.init_schema().map_err(|e| e.to_string())?;
    }
    Ok(db)
}

/// A FIFO command for the running server: None when no server answers (or it lacks the
/// command: then nothing holds the table in memory and the database is the truth).
fn fifo_try(cmd: &str, params: &[String]) -> Option<FifoReply> {
    match request(cmd, params) {
        Ok(r) if r.status.contains("not available") => None,
        Ok(r) => Some(r),
        Err(_) => None,
    }
}

fn db_command(args: &[String]) -> Result<i32, String> {
    let a = |i: usize| args.get(i).map(String::as_str);
    let sip_domain = std::env::var("SIP_DOMAIN").ok();
    let out = match (a(0).unwrap_or(""), a(1), a(2), a(3)) {
        ("add", Some(u), Some(pw), Some(email)) if args.len() == 4 => {
            let (u, d) = ser::ctl_db::split_user(u, sip_domain.as_deref())?;
            ser::ctl_db::add(&*open_db(true)?, &u, &d, pw, email)
        }
        ("passwd", Some(u), Some(pw), None) => {
            let (u, d) = ser::ctl_db::split_user(u, sip_domain.as_deref())?;
            ser::ctl_db::passwd(&*open_db(true)?, &u, &d, pw)
        }
        ("rm", Some(u), None, None) => {
            let (u, d) = ser::ctl_db::split_user(u, sip_domain.as_deref())?;
            let db = open_db(true)?;
            let r = ser::ctl_db::rm(&db, &u, &d);
            if r.is_ok() {
                // And the user's contacts: in the server's memory, or in the database.
                let p = [String::from("location"), u.clone()];
                if fifo_try("ul_rm", &p).is_none() {
                    ser::ctl_db::rm_contacts(&db, "location", &u)?;
                }
            }
            r
        }
        ("db", Some("init"), url, None) => {
            // `serctl db init [db_url]`: the URL given, else $DB_URL, else the default.
            let db = match url {
                Some(u) => ser::db::Db::open(u, 0).map_err(|e| e.to_string())?,
                None => open_db(true)?,
            };
            db.init_schema().map_err(|e| e.to_string())?;
            Ok(format!("tables created in {}\n", db.name()))
        }
        ("showdb", u, None, None) => ser::ctl_db::showdb(&*open_db(false)?, u),
        ("acl", Some("show"), u, None) => ser::ctl_db::acl_show(&*open_db(false)?, u),
        ("acl", Some("grant"), Some(u), Some(g)) if args.len() == 4 => {
            let domain = sip_domain.unwrap_or_default();
            ser::ctl_db::acl_grant(&*open_db(true)?, u, &domain, g)
        }
        ("acl", Some("revoke"), Some(u), g) if args.len() <= 4 => {
            ser::ctl_db::acl_revoke(&*open_db(true)?, u, g)
        }
        ("alias", Some("add"), Some(alias), Some(uri)) if args.len() == 4 => {
            let p = [
                String::from("aliases"),
                alias.to_string(),
                uri.to_string(),
                String::from("567993600"),
                String::from("1"),
            ];
            match fifo_try("ul_add", &p) {
                // As the seed's session shows (and `serctl ul add`): the URI, the status
                // line, then what was added.
                Some(r) => {
                    println!("{uri}");
                    return print_status(&r);
                }
                None => ser::ctl_db::alias_add(&*open_db(false)?, alias, uri),
            }
        }
        ("alias", Some("rm"), Some(alias), None) => {
            let p = [String::from("aliases"), alias.to_string()];
            match fifo_try("ul_rm", &p) {
                // "200 user (aliases, john) deleted", as in the seed.
                Some(r) => return print_status(&r),
                None => ser::ctl_db::alias_rm(&*open_db(false)?, alias),
            }
        }
        ("alias", Some("show"), alias, None) => {
            let fifo = alias.and_then(|al| {
                fifo_try(
                    "ul_show_contact",
                    &[String::from("aliases"), al.to_string()],
                )
            });
            match fifo {
                Some(r) => return print_reply(&r),
                None => ser::ctl_db::alias_show(&*open_db(false)?, alias),
            }
        }
        _ => return Err(format!("bad arguments: serctl {}\n{USAGE}", args.join(" "))),
    };
    match out {
        Ok(text) => {
            print!("{text}");
            Ok(0)
        }
        Err(e) => {
            println!("{e}");
            Ok(1)
        }
    }
}
/// The seeds' `serctl ul ...` and `serctl alias ...`: usrloc's FIFO commands on the
/// `location` (`aliases`) table of the running server.
fn user_location(cmd: &str, args: &[String]) -> Result<i32, String> {
    let table = if cmd == "alias" {
        "aliases"
    } else {
        "location"
    };
    let usage = || format!("usage: serctl {cmd} show [<user>] | rm <user> | add <user> <uri>");
    let sub = args.first().map(String::as_str).unwrap_or("show");
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match (sub, args.get(1), args.get(2)) {
        ("show", None, None) => print_reply(&request("ul_dump", &[])?),
        ("show", Some(user), None) => print_reply(&request("ul_show_contact", &p(&[table, user]))?),
        ("rm", Some(user), None) => print_status(&request("ul_rm", &p(&[table, user]))?),
        ("add", Some(user), Some(uri)) => {
            // A permanent contact (expires 0), q 1.00.
            println!("{uri}");
            print_status(&request("ul_add", &p(&[table, user, uri, "0", "1.00"]))?)
        }
        _ => Err(usage()),
    }
}

/// `serctl pike top` and `serctl rl ...`: pike's and ratelimit's FIFO commands.
fn limits(cmd: &str, args: &[String]) -> Result<i32, String> {
    let sub = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or_default();
    let fifo_cmd = match (cmd, sub, rest.len()) {
        ("pike", "top", 0) => "pike.top",
        ("rl", "pipes", 0) => "rl.get_pipes",
        ("rl", "queues", 0) => "rl.get_queues",
        ("rl", "stats", 0) => "rl.stats",
        ("rl", "set_pipe", 3) => "rl.set_pipe",
        ("rl", "set_queue", 3) => "rl.set_queue",
        _ => {
            return Err(String::from(
                "usage: serctl pike top | serctl rl pipes|queues|stats | \
                 serctl rl set_pipe <id> <algorithm> <limit> | \
                 serctl rl set_queue <queue_id> <method> <pipe_id>",
            ))
        }
    };
    print_reply(&request(fifo_cmd, rest)?)
}

/// `serctl dispatcher list|reload|set <state> <set> <uri>`: the dispatcher's FIFO commands.
fn dispatcher(args: &[String]) -> Result<i32, String> {
    let usage = || {
        String::from("usage: serctl dispatcher list | reload | set <active|inactive|probing|disabled> <set> <uri>")
    };
    match (
        args.first().map(String::as_str),
        args.get(1..).unwrap_or_default(),
    ) {
        (Some("list") | None, []) => print_reply(&request("ds_list", &[])?),
        (Some("reload"), []) => print_reply(&request("ds_reload", &[])?),
        (Some("set"), [state, set, uri]) => print_reply(&request(
            "ds_set_state",
            &[state.clone(), set.clone(), uri.clone()],
        )?),
        _ => Err(usage()),
    }
}

/// `serctl msilo list|count [<user>] | rm <user> [<mid>]`: msilo's FIFO commands.
fn msilo(args: &[String]) -> Result<i32, String> {
    let usage =
        || String::from("usage: serctl msilo list [<user>] | count [<user>] | rm <user> [<mid>]");
    let sub = args.first().map(String::as_str);
    let rest = args.get(1..).unwrap_or_default();
    let cmd = match (sub, rest.len()) {
        (Some("list") | None, 0 | 1) => "msilo.list",
        (Some("count"), 0 | 1) => "msilo.count",
        (Some("rm" | "delete"), 1 | 2) => "msilo.delete",
        _ => return Err(usage()),
    };
    print_reply(&request(cmd, rest)?)
}

/// Prints the status line and the body (what SER's serctl showed for ul add/rm).
fn print_status(r: &FifoReply) -> Result<i32, String> {
    println!("{}", r.status);
    print!("{}", r.body);
    Ok(if (200..300).contains(&r.code) { 0 } else { 1 })
}
