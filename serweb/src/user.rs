//! The pages of a SIP user: login and logout, my phones (live contacts from ser's FIFO), call
//! history and missed calls, phonebook (with click-to-call), instant messages and stored
//! offline messages, password change. Every query is scoped to the session's own user and
//! domain; an id that is not theirs is refused (403), never shown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;

use crate::fifo;
use crate::store::{self, CallFilter, CallTable};
use crate::web::{App, User, COOKIE, LOGIN_COOKIE};

/// How long a t_uac_from may take: ser answers within fr_timer (30 s by default) plus margin.
const UAC_WAIT: Duration = Duration::from_secs(40);
const FIFO_WAIT: Duration = Duration::from_secs(5);

type Page = Result<Response, Response>;

pub async fn home(cur: Option<axum::Extension<crate::web::Current>>) -> Redirect {
    match cur {
        Some(axum::Extension(c)) if c.session.is_some() => Redirect::to("/phones"),
        _ => Redirect::to("/login"),
    }
}

pub async fn login_page(State(app): State<Arc<App>>) -> Response {
    login_form(&app, StatusCode::OK, None)
}

/// The login form with a fresh double-submit token (cookie and hidden field).
fn login_form(app: &App, status: StatusCode, error: Option<&str>) -> Response {
    let t = crate::session::token();
    let mut r = app.page("login.html", None, context! { login_csrf => t, error });
    *r.status_mut() = status;
    r.headers_mut()
        .append(header::SET_COOKIE, app.cookie(LOGIN_COOKIE, &t, None));
    r
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    password: String,
}

pub async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Page {
    let ip = peer.ip();
    let allowed = app
        .limiter
        .lock()
        .map(|mut l| l.allowed(ip, Instant::now()))
        .unwrap_or(false);
    if !allowed {
        return Ok(login_form(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            Some("too many failed logins from your address: wait a minute"),
        ));
    }
    let (user, domain, pw) = (
        f.user.trim().to_string(),
        f.domain.trim().to_string(),
        f.password,
    );
    let result = app
        .db(move |db| store::check_login(db, &user, &domain, &pw).map(|r| (r, user, domain)))
        .await?;
    match result {
        (Some(admin), user, domain) => {
            let token = app
                .sessions
                .lock()
                .map(|mut s| s.create(&user, &domain, admin, Instant::now()))
                .map_err(|_| app.error(StatusCode::INTERNAL_SERVER_ERROR, "sessions"))?;
            let mut r =
                Redirect::to(if admin { "/admin/users" } else { "/phones" }).into_response();
            let h = r.headers_mut();
            h.append(header::SET_COOKIE, app.cookie(COOKIE, &token, None));
            h.append(header::SET_COOKIE, app.cookie(LOGIN_COOKIE, "", Some(0)));
            Ok(r)
        }
        (None, _, _) => {
            if let Ok(mut l) = app.limiter.lock() {
                l.failed(ip, Instant::now());
            }
            Ok(login_form(
                &app,
                StatusCode::UNAUTHORIZED,
                Some("wrong user name, domain or password"),
            ))
        }
    }
}

pub async fn logout(State(app): State<Arc<App>>, User(_, token): User) -> Response {
    if let Ok(mut s) = app.sessions.lock() {
        s.remove(&token);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, app.cookie(COOKIE, "", Some(0)));
    r
}

pub async fn phones(State(app): State<Arc<App>>, User(me, _): User) -> Page {
    // usrloc names users `user` (or `user@domain` with use_domain): try both.
    let mut live = Err(String::new());
    for name in [me.user.clone(), format!("{}@{}", me.user, me.domain)] {
        live = app
            .fifo(
                "ul_show_contact",
                vec![String::from("location"), name],
                "\n",
                FIFO_WAIT,
            )
            .await;
        if matches!(&live, Ok(r) if r.is_ok()) {
            break;
        }
    }
    let (u, d) = (me.user.clone(), me.domain.clone());
    let (agents, stored, aliases) = app
        .db(move |db| {
            Ok((
                store::user_agents(db, &u, &d)?,
                store::stored_contacts(db, &u, &d)?,
                store::aliases_of(db, &u, &d)?,
            ))
        })
        .await?;
    let (contacts, source) = match live {
        Ok(r) if r.is_ok() => {
            let mut c = fifo::parse_contacts(&r.body);
            for x in &mut c {
                x.user_agent = agents.get(&x.uri).cloned().unwrap_or_default();
            }
            (c, String::from("live from ser"))
        }
        Ok(r) if r.code == 404 => (Vec::new(), String::from("live from ser")),
        Ok(r) => (Vec::new(), format!("ser answered: {}", r.status)),
        Err(e) => {
            let c = stored
                .into_iter()
                .map(|(uri, expires, ua)| fifo::Contact {
                    transport: fifo::transport_of(&uri),
                    uri,
                    q: String::new(),
                    expires: 0,
                    user_agent: format!("{ua} (expires {expires})"),
                })
                .collect();
            (c, format!("from the database: {e}"))
        }
    };
    Ok(app.page(
        "phones.html",
        Some(&me),
        context! { contacts, source, aliases },
    ))
}

/// The call lists' query string. Its fields are spelled out (no `serde(flatten)`: through a
/// flattened struct the page number would arrive as text and be refused).
#[derive(Deserialize)]
pub struct CallsQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    peer: String,
    #[serde(default)]
    page: usize,
}

pub async fn calls(
    State(app): State<Arc<App>>,
    User(me, _): User,
    Query(q): Query<CallsQuery>,
) -> Page {
    let table = if q.kind == "all" {
        CallTable::Acc
    } else {
        CallTable::Missed
    };
    let filter = CallFilter {
        from: q.from,
        to: q.to,
        peer: q.peer,
        page: q.page,
    };
    let (u, d, f) = (me.user.clone(), me.domain.clone(), filter.clone());
    let (rows, more) = app
        .db(move |db| store::calls(db, table, &u, &d, &f))
        .await?;
    let kind = if table == CallTable::Acc {
        "all"
    } else {
        "missed"
    };
    Ok(app.page(
        "calls.html",
        Some(&me),
        context! { rows, more, kind, page => filter.page, filter },
    ))
}

pub async fn phonebook(State(app): State<Arc<App>>, User(me, _): User) -> Page {
    phonebook_view(&app, &me, None).await
}

async fn phonebook_view(
    app: &Arc<App>,
    me: &crate::session::Session,
    notice: Option<String>,
) -> Page {
    let (u, d) = (me.user.clone(), me.domain.clone());
    let entries = app.db(move |db| store::phonebook(db, &u, &d)).await?;
    Ok(app.page("phonebook.html", Some(me), context! { entries, notice }))
}

#[derive(Deserialize)]
pub struct EntryForm {
    #[serde(default)]
    fname: String,
    #[serde(default)]
    lname: String,
    #[serde(default)]
    sip_uri: String,
}

/// A SIP address as a form gives it: `sip:` or `sips:`, no spaces or line breaks, 255 bytes
/// at most; a bare `user@host` gets `sip:`.
pub fn sip_address(s: &str) -> Result<String, String> {
    let s = s.trim();
    let s = if s.contains(':') {
        s.to_string()
    } else {
        format!("sip:{s}")
    };
    let lower = s.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:"))
        || s.len() > 255
        || s.len() < 5
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == '"')
    {
        return Err(format!("'{s}' is not a SIP address"));
    }
    Ok(s)
}

fn short(s: &str, max: usize, what: &str) -> Result<String, String> {
    let s = s.trim();
    if s.chars().count() > max || s.chars().any(char::is_control) {
        Err(format!("{what}: at most {max} characters, no line breaks"))
    } else {
        Ok(s.to_string())
    }
}

impl EntryForm {
    /// The entry's first name, last name and SIP address, checked as the phonebook keeps them.
    fn checked(&self) -> Result<(String, String, String), String> {
        Ok((
            short(&self.fname, 32, "first name")?,
            short(&self.lname, 32, "last name")?,
            sip_address(&self.sip_uri)?,
        ))
    }
}

pub async fn phonebook_add(
    State(app): State<Arc<App>>,
    User(me, _): User,
    Form(f): Form<EntryForm>,
) -> Page {
    let (fname, lname, uri) = match f.checked() {
        Ok(x) => x,
        Err(e) => return phonebook_view(&app, &me, Some(e)).await,
    };
    let (u, d) = (me.user.clone(), me.domain.clone());
    app.db(move |db| store::phonebook_add(db, &u, &d, &fname, &lname, &uri))
        .await?;
    Ok(Redirect::to("/phonebook").into_response())
}

fn not_yours(app: &App) -> Response {
    app.error(StatusCode::FORBIDDEN, "that phonebook entry is not yours")
}

pub async fn phonebook_edit(
    State(app): State<Arc<App>>,
    User(me, _): User,
    Path(id): Path<i64>,
    Form(f): Form<EntryForm>,
) -> Page {
    let (fname, lname, uri) = match f.checked() {
        Ok(x) => x,
        Err(e) => return phonebook_view(&app, &me, Some(e)).await,
    };
    let (u, d) = (me.user.clone(), me.domain.clone());
    if app
        .db(move |db| store::phonebook_edit(db, &u, &d, id, &fname, &lname, &uri))
        .await?
    {
        Ok(Redirect::to("/phonebook").into_response())
    } else {
        Err(not_yours(&app))
    }
}

pub async fn phonebook_delete(
    State(app): State<Arc<App>>,
    User(me, _): User,
    Path(id): Path<i64>,
) -> Page {
    let (u, d) = (me.user.clone(), me.domain.clone());
    if app
        .db(move |db| store::phonebook_delete(db, &u, &d, id))
        .await?
    {
        Ok(Redirect::to("/phonebook").into_response())
    } else {
        Err(not_yours(&app))
    }
}

/// Click to call: ser sends a REFER to the user's own phone(s) (`t_uac_from`, routed by ser's
/// script like any request to the user), asking it to call the entry; the phone places the
/// call (serweb's click-to-dial did the same through t_uac).
pub async fn phonebook_call(
    State(app): State<Arc<App>>,
    User(me, _): User,
    Path(id): Path<i64>,
) -> Page {
    let (u, d) = (me.user.clone(), me.domain.clone());
    let Some(entry) = app
        .db(move |db| store::phonebook_entry(db, &u, &d, id))
        .await?
    else {
        return Err(not_yours(&app));
    };
    let mine = format!("sip:{}@{}", me.user, me.domain);
    // To the user's address, through ser (`--ser-sip`) when the domain does not lead there.
    let target = match &app.ser_sip {
        Some(hp) => format!("sip:{}@{hp}", me.user),
        None => mine.clone(),
    };
    let lines = vec![
        String::from("REFER"),
        mine.clone(),
        target,
        format!("Refer-To: <{}>", entry.sip_uri),
        format!("Referred-By: <{mine}>"),
        String::from("Contact: <") + &mine + ">",
        String::new(),
    ];
    let notice = match app.fifo("t_uac_from", lines, ".\n", UAC_WAIT).await {
        Ok(r) if r.is_ok() => format!(
            "your phone was asked to call {} ({})",
            entry.sip_uri, r.status
        ),
        Ok(r) => format!("the call could not be started: {}", r.status),
        Err(e) => format!("the call could not be started: {e}"),
    };
    phonebook_view(&app, &me, Some(notice)).await
}

pub async fn message_page(State(app): State<Arc<App>>, User(me, _): User) -> Page {
    message_view(&app, &me, None, "").await
}

async fn message_view(
    app: &Arc<App>,
    me: &crate::session::Session,
    notice: Option<String>,
    to: &str,
) -> Page {
    let (u, d) = (me.user.clone(), me.domain.clone());
    let stored = app.db(move |db| store::silo(db, &u, &d)).await?;
    Ok(app.page("message.html", Some(me), context! { stored, notice, to }))
}

#[derive(Deserialize)]
pub struct MessageForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    text: String,
}

/// Sends an instant message through ser: `t_uac_from` MESSAGE from the user's address to any
/// SIP address; ser routes it by its script (to a registered phone, msilo, or out).
pub async fn message_send(
    State(app): State<Arc<App>>,
    User(me, _): User,
    Form(f): Form<MessageForm>,
) -> Page {
    let to = match sip_address(&f.to) {
        Ok(t) => t,
        Err(e) => return message_view(&app, &me, Some(e), &f.to).await,
    };
    if f.text.trim().is_empty() || f.text.len() > 2000 {
        return message_view(
            &app,
            &me,
            Some(String::from("the message must have 1 to 2000 bytes")),
            &to,
        )
        .await;
    }
    let mut lines = vec![
        String::from("MESSAGE"),
        format!("sip:{}@{}", me.user, me.domain),
        to.clone(),
        String::from("Content-Type: text/plain; charset=UTF-8"),
        String::new(),
    ];
    lines.extend(fifo::body_lines(&f.text));
    let notice = match app.fifo("t_uac_from", lines, ".\n", UAC_WAIT).await {
        Ok(r) if r.is_ok() => format!("delivered to {to} ({})", r.status),
        Ok(r) => format!("not delivered to {to}: {}", r.status),
        Err(e) => format!("not sent: {e}"),
    };
    message_view(&app, &me, Some(notice), &to).await
}

pub async fn password_page(State(app): State<Arc<App>>, User(me, _): User) -> Response {
    app.page("password.html", Some(&me), context! {})
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// Minimum password length for new passwords.
pub const MIN_PASSWORD: usize = 6;

pub async fn password_change(
    State(app): State<Arc<App>>,
    User(me, token): User,
    Form(f): Form<PasswordForm>,
) -> Page {
    let bad = |msg: &str| {
        let mut r = app.page("password.html", Some(&me), context! { error => msg });
        *r.status_mut() = StatusCode::BAD_REQUEST;
        Ok(r)
    };
    if f.new != f.confirm {
        return bad("the new passwords differ");
    }
    if f.new.chars().count() < MIN_PASSWORD || f.new.len() > 64 {
        return bad("a password has 6 to 64 characters");
    }
    let (u, d) = (me.user.clone(), me.domain.clone());
    let ok = app
        .db(move |db| {
            if store::check_login(db, &u, &d, &f.current)?.is_none() {
                return Ok(false);
            }
            ser::ctl_db::passwd(db, &u, &d, &f.new).map(|_| true)
        })
        .await?;
    if !ok {
        return bad("the current password is wrong");
    }
    // Other sessions of this user end: whoever knew the old password is out.
    if let Ok(mut s) = app.sessions.lock() {
        s.remove_user(&me.user, &me.domain, Some(&token));
    }
    Ok(app.page(
        "password.html",
        Some(&me),
        context! { notice => "password changed (HA1 and HA1B recomputed)" },
    ))
}
