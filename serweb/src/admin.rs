//! The administrator's pages (members of the `admin` group, see [`crate::store::ADMIN_GROUP`]):
//! users (add, remove, reset password, `grp` groups, aliases, reserved names) and the live
//! dashboard. Account changes are serctl's own functions (`ser::ctl_db`); aliases and a
//! removed user's contacts go through ser's FIFO when it answers (its memory is the truth,
//! as the seeds insist), else to the database, as serctl does.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use crate::metrics;
use crate::store;
use crate::user::{sip_address, MIN_PASSWORD};
use crate::web::{Admin, App};

type Page = Result<Response, Response>;

const FIFO_WAIT: Duration = Duration::from_secs(5);

pub async fn users(State(app): State<Arc<App>>, Admin(me): Admin) -> Page {
    users_view(&app, &me, None, StatusCode::OK).await
}

async fn users_view(
    app: &Arc<App>,
    me: &crate::session::Session,
    notice: Option<String>,
    status: StatusCode,
) -> Page {
    let (list, reserved) = app
        .db(|db| Ok((store::subscribers(db)?, store::reserved(db)?)))
        .await?;
    let mut r = app.page(
        "users.html",
        Some(me),
        context! { users => list, reserved, notice, default_domain => me.domain },
    );
    *r.status_mut() = status;
    Ok(r)
}

/// After a change: the list again, with what happened.
async fn done(app: &Arc<App>, me: &crate::session::Session, r: Result<String, String>) -> Page {
    match r {
        Ok(_) => Ok(Redirect::to("/admin/users").into_response()),
        Err(e) => users_view(app, me, Some(e), StatusCode::BAD_REQUEST).await,
    }
}

/// A user name and domain from a form, checked as serctl checks them.
fn account(user: &str, domain: &str) -> Result<(String, String), String> {
    let (user, domain) = (user.trim(), domain.trim());
    if user.contains('@') || user.len() > 64 {
        return Err(format!("'{user}' is not a user name"));
    }
    if domain.is_empty()
        || domain.len() > 128
        || domain
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(format!("'{domain}' is not a domain"));
    }
    ser::ctl_db::split_user(&format!("{user}@{domain}"), None)
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    admin: Option<String>,
}

pub async fn user_add(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    Form(f): Form<AddForm>,
) -> Page {
    let r = app
        .db(move |db| {
            Ok((|| {
                let (u, d) = account(&f.user, &f.domain)?;
                if f.password.chars().count() < MIN_PASSWORD || f.password.len() > 64 {
                    return Err(String::from("a password has 6 to 64 characters"));
                }
                if f.email.len() > 128 || f.email.chars().any(char::is_control) {
                    return Err(String::from("bad e-mail address"));
                }
                if store::is_reserved(db, &u)? {
                    return Err(format!("'{u}' is a reserved name"));
                }
                ser::ctl_db::add(db, &u, &d, &f.password, f.email.trim())?;
                if f.admin.is_some() {
                    ser::ctl_db::acl_grant(db, &u, &d, store::ADMIN_GROUP)?;
                }
                Ok(String::new())
            })())
        })
        .await?;
    done(&app, &me, r).await
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    action: String,
}

pub async fn user_remove(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    Form(f): Form<UserForm>,
) -> Page {
    let (u, d) = match account(&f.user, &f.domain) {
        Ok(x) => x,
        Err(e) => return done(&app, &me, Err(e)).await,
    };
    if u == me.user && d == me.domain {
        return done(&app, &me, Err(String::from("you cannot remove yourself"))).await;
    }
    let (u2, d2) = (u.clone(), d.clone());
    let r = app.db(move |db| Ok(ser::ctl_db::rm(db, &u2, &d2))).await?;
    if let Ok(mut s) = app.sessions.lock() {
        s.remove_user(&u, &d, None);
    }
    if r.is_ok() {
        // Their contacts: in ser's memory (and its database) through the FIFO, else in the
        // database.
        let p = vec![String::from("location"), u.clone()];
        let via_fifo = app.fifo("ul_rm", p, "\n", FIFO_WAIT).await;
        if via_fifo.is_err() {
            let u3 = u.clone();
            app.db(move |db| ser::ctl_db::rm_contacts(db, "location", &u3))
                .await?;
        }
    }
    done(&app, &me, r).await
}

pub async fn user_password(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    Form(f): Form<UserForm>,
) -> Page {
    let (u, d) = match account(&f.user, &f.domain) {
        Ok(x) => x,
        Err(e) => return done(&app, &me, Err(e)).await,
    };
    if f.password.chars().count() < MIN_PASSWORD || f.password.len() > 64 {
        return done(
            &app,
            &me,
            Err(String::from("a password has 6 to 64 characters")),
        )
        .await;
    }
    let (u2, d2) = (u.clone(), d.clone());
    let r = app
        .db(move |db| Ok(ser::ctl_db::passwd(db, &u2, &d2, &f.password)))
        .await?;
    if r.is_ok() {
        if let Ok(mut s) = app.sessions.lock() {
            s.remove_user(&u, &d, None);
        }
    }
    done(&app, &me, r).await
}

pub async fn user_group(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    Form(f): Form<UserForm>,
) -> Page {
    let (u, d) = match account(&f.user, &f.domain) {
        Ok(x) => x,
        Err(e) => return done(&app, &me, Err(e)).await,
    };
    let g = f.group.trim().to_string();
    if g.is_empty()
        || g.len() > 64
        || !g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return done(&app, &me, Err(format!("'{g}' is not a group name"))).await;
    }
    let grant = f.action != "revoke";
    // The privilege is read at login: a change of the admin group ends the user's sessions,
    // so it takes effect at once.
    if g == store::ADMIN_GROUP {
        if let Ok(mut s) = app.sessions.lock() {
            s.remove_user(&u, &d, None);
        }
    }
    let r = app
        .db(move |db| {
            Ok(if grant {
                ser::ctl_db::acl_grant(db, &u, &d, &g)
            } else {
                // serctl's revoke is by user name; keep other domains' rows of the same name.
                db.with_conn(|c| {
                    c.exec(
                        "DELETE FROM grp WHERE username = ? AND grp = ? AND (domain = ? OR domain = '')",
                        &[u.as_str().into(), g.as_str().into(), d.as_str().into()],
                    )
                })
                .map(|_| String::new())
                .map_err(|e| e.to_string())
            })
        })
        .await?;
    done(&app, &me, r).await
}

#[derive(Deserialize)]
pub struct AliasForm {
    #[serde(default)]
    alias: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    action: String,
}

/// Adds or removes an alias: through ser's FIFO (`ul_add aliases` / `ul_rm aliases`, as
/// serctl alias), or in the database when ser does not answer.
pub async fn alias(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    Form(f): Form<AliasForm>,
) -> Page {
    let alias = f.alias.trim().to_string();
    if alias.is_empty()
        || alias.len() > 64
        || alias.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return done(&app, &me, Err(format!("'{alias}' is not an alias"))).await;
    }
    let r = if f.action == "rm" {
        match app
            .fifo(
                "ul_rm",
                vec![String::from("aliases"), alias.clone()],
                "\n",
                FIFO_WAIT,
            )
            .await
        {
            Ok(r) if r.is_ok() || r.code == 404 => Ok(String::new()),
            Ok(r) => Err(r.status),
            Err(_) => {
                app.db(move |db| Ok(ser::ctl_db::alias_rm(db, &alias)))
                    .await?
            }
        }
    } else {
        let uri = match sip_address(&f.uri) {
            Ok(u) => u,
            Err(e) => return done(&app, &me, Err(e)).await,
        };
        let p = vec![
            String::from("aliases"),
            alias.clone(),
            uri.clone(),
            String::from("567993600"),
            String::from("1"),
        ];
        match app.fifo("ul_add", p, "\n", FIFO_WAIT).await {
            Ok(r) if r.is_ok() => Ok(String::new()),
            Ok(r) => Err(r.status),
            Err(_) => {
                app.db(move |db| Ok(ser::ctl_db::alias_add(db, &alias, &uri)))
                    .await?
            }
        }
    };
    done(&app, &me, r).await
}

#[derive(Deserialize)]
pub struct ReservedForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    action: String,
}

pub async fn reserved(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    Form(f): Form<ReservedForm>,
) -> Page {
    let name = f.name.trim().to_string();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return done(&app, &me, Err(String::from("bad name"))).await;
    }
    let add = f.action != "rm";
    let r = app
        .db(move |db| Ok(store::reserve(db, &name, add).map(|_| String::new())))
        .await?;
    done(&app, &me, r).await
}

/// One chart of the dashboard.
#[derive(serde::Serialize)]
struct Chart {
    title: String,
    unit: &'static str,
    last: String,
    svg: String,
}

pub async fn dashboard(State(app): State<Arc<App>>, Admin(me): Admin) -> Page {
    let now = app.started.elapsed().as_secs_f64();
    let (charts, shards, replies, drops, error, samples) = {
        let h = app
            .history
            .lock()
            .map_err(|_| app.error(StatusCode::INTERNAL_SERVER_ERROR, "history"))?;
        let span = metrics::span(h.points.front().map(|p| p.t), now);
        let chart = |key: &str, title: &str, unit: &'static str| {
            let s = h.series(key);
            Chart {
                title: title.to_string(),
                unit,
                last: s
                    .last()
                    .map_or_else(|| String::from("–"), |p| metrics::number(p.1)),
                svg: metrics::svg(&s, now, span),
            }
        };
        let charts = vec![
            chart("calls", "Calls (INVITEs received)", "/s"),
            chart("registrations", "Registrations (REGISTERs received)", "/s"),
            chart("messages", "Instant messages (MESSAGEs received)", "/s"),
            chart("transactions", "Transactions in flight", ""),
            chart("connections", "TCP/TLS connections open", ""),
            chart("contacts", "Registered contacts", ""),
            chart("drops", "Drops", "/s"),
        ];
        let shards: Vec<Chart> = h
            .keys("shard ")
            .iter()
            .map(|k| chart(k, &format!("{k}: datagrams and events"), "/s"))
            .collect();
        let replies: Vec<Chart> = h
            .keys("replies ")
            .iter()
            .map(|k| chart(k, &k.replace("replies ", "Replies sent "), "/s"))
            .collect();
        let drops: Vec<(String, String)> = h
            .points
            .iter()
            .rev()
            .find_map(|p| p.values.as_ref())
            .map(|v| {
                v.iter()
                    .filter_map(|(k, n)| {
                        k.strip_prefix("drops ")
                            .map(|r| (r.to_string(), metrics::number(*n)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            charts,
            shards,
            replies,
            drops,
            h.last_error.clone(),
            h.points.len(),
        )
    };
    // Connections by transport, from ser's `tcp_list` (one line per connection, the
    // transport second).
    let by_transport: Vec<(String, usize)> =
        match app.fifo("tcp_list", Vec::new(), "\n", FIFO_WAIT).await {
            Ok(r) if r.is_ok() => {
                let mut m = std::collections::BTreeMap::<String, usize>::new();
                for l in r.body.lines() {
                    if let Some(t) = l.split_whitespace().nth(1) {
                        *m.entry(t.to_string()).or_default() += 1;
                    }
                }
                m.into_iter().collect()
            }
            _ => Vec::new(),
        };
    let source = app
        .metrics
        .map_or_else(|| String::from("off"), |a| a.to_string());
    Ok(app.page(
        "dashboard.html",
        Some(&me),
        context! { charts, shards, replies, drops, error, samples, source, by_transport },
    ))
}

#[derive(Deserialize)]
pub struct CaptureQuery {
    /// One Call-ID: its ladder.
    #[serde(default)]
    callid: String,
    /// Text the listed messages must contain (case-insensitive).
    #[serde(default)]
    q: String,
}

/// Messages kept from the capture's tail for a page.
const CAPTURE_KEEP: usize = 5000;
/// Messages listed at most.
const CAPTURE_LIST: usize = 200;

/// The last messages ser captured (newest first), or the ladder of one Call-ID.
pub async fn capture(
    State(app): State<Arc<App>>,
    Admin(me): Admin,
    axum::extract::Query(q): axum::extract::Query<CaptureQuery>,
) -> Page {
    let Some(path) = app.capture.clone() else {
        return Ok(app.page(
            "capture.html",
            Some(&me),
            context! { off => true, callid => q.callid, q => q.q },
        ));
    };
    let read = tokio::task::spawn_blocking(move || crate::capture::read(&path, CAPTURE_KEEP))
        .await
        .unwrap_or_else(|_| Err(String::from("internal error")));
    let msgs = match read {
        Ok(m) => m,
        Err(e) => {
            return Ok(app.page(
                "capture.html",
                Some(&me),
                context! { error => e, callid => q.callid, q => q.q },
            ))
        }
    };
    let callid = q.callid.trim().to_string();
    if !callid.is_empty() {
        let of_call: Vec<&crate::capture::Message> =
            msgs.iter().filter(|m| m.call_id == callid).collect();
        let (parties, steps) = crate::capture::ladder(&of_call);
        return Ok(app.page(
            "capture.html",
            Some(&me),
            context! { callid, parties, steps, q => q.q },
        ));
    }
    let needle = q.q.trim().to_lowercase();
    let list: Vec<&crate::capture::Message> = msgs
        .iter()
        .rev()
        .filter(|m| needle.is_empty() || m.text.to_lowercase().contains(&needle))
        .take(CAPTURE_LIST)
        .collect();
    Ok(app.page(
        "capture.html",
        Some(&me),
        context! { list, q => q.q, callid => "" },
    ))
}
