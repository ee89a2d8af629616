//! The HTTP side: the shared state, the router, the guard every request passes (session
//! lookup, CSRF check of every POST, security headers), the extractors that make a handler
//! require a logged-in user ([`User`]) or an administrator ([`Admin`]), and rendering.
//!
//! The guard reads the body of every POST (at most [`MAX_FORM`] bytes) and refuses it with
//! 403 unless its `csrf` field equals the session's token; before login the token is a
//! double-submit cookie (`serweb_login`) set by the login page. So no handler can forget the
//! check. Cookies are HttpOnly and SameSite=Strict, Secure when serweb serves TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{context, Environment, Value};

use crate::metrics::History;
use crate::session::{self, LoginLimiter, Session, Sessions};

/// Largest form body accepted.
pub const MAX_FORM: usize = 64 * 1024;
/// The session cookie.
pub const COOKIE: &str = "serweb";
/// The login form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "serweb_login";

/// Everything the handlers share.
pub struct App {
    pub db: Arc<ser::db::Db>,
    pub fifo: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// ser's `capture_file`, for the last messages page.
    pub capture: Option<PathBuf>,
    /// Where requests to a user's own address go (`host[:port]`), when not their domain.
    pub ser_sip: Option<String>,
    /// Served over TLS: cookies get `Secure`.
    pub tls: bool,
    pub sessions: Mutex<Sessions>,
    pub limiter: Mutex<LoginLimiter>,
    pub history: Mutex<History>,
    pub started: Instant,
    env: Environment<'static>,
}

impl App {
    pub fn new(
        db: Arc<ser::db::Db>,
        fifo: PathBuf,
        metrics: Option<SocketAddr>,
        capture: Option<PathBuf>,
        ser_sip: Option<String>,
        tls: bool,
    ) -> Arc<App> {
        Arc::new(App {
            db,
            fifo,
            metrics,
            capture,
            ser_sip,
            tls,
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(LoginLimiter::default()),
            history: Mutex::new(History::default()),
            started: Instant::now(),
            env: templates(),
        })
    }

    /// Runs `f` with the database on tokio's blocking pool.
    pub async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&ser::db::Db) -> Result<T, String> + Send + 'static,
    ) -> Result<T, Response> {
        let app = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&app.db)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                Err(self.error(StatusCode::INTERNAL_SERVER_ERROR, &format!("database: {e}")))
            }
            Err(_) => Err(self.error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
        }
    }

    /// Runs a FIFO command of the running ser on the blocking pool.
    pub async fn fifo(
        self: &Arc<Self>,
        cmd: &'static str,
        lines: Vec<String>,
        end: &'static str,
        wait: std::time::Duration,
    ) -> Result<crate::fifo::Reply, String> {
        let path = self.fifo.clone();
        tokio::task::spawn_blocking(move || crate::fifo::call(&path, cmd, &lines, end, wait))
            .await
            .unwrap_or_else(|_| Err(String::from("internal error")))
    }

    /// A page: template `name` with `ctx` and the session's user, role and CSRF token.
    pub fn page(&self, name: &str, who: Option<&Session>, ctx: Value) -> Response {
        let base = match who {
            Some(s) => context! {
                me => context! { user => s.user, domain => s.domain, admin => s.admin },
                csrf => s.csrf,
            },
            None => context! {},
        };
        let tmpl = match self.env.get_template(name) {
            Ok(t) => t,
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("template: {e}")),
        };
        match tmpl.render(context! { ..ctx, ..base }) {
            Ok(html) => html_response(StatusCode::OK, html),
            Err(e) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("template: {e:#}"),
            ),
        }
    }

    /// An error page (escaped like every page).
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        let tmpl = self.env.get_template("error.html");
        match tmpl.and_then(|t| {
            t.render(context! { status => status.as_u16(), reason => status.canonical_reason(), message })
        }) {
            Ok(html) => html_response(status, html),
            Err(_) => plain(status, message),
        }
    }

    pub fn cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        HeaderValue::from_str(&session::set_cookie(name, value, self.tls, max_age))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_string(),
    )
        .into_response()
}

/// The templates, compiled into the binary. Names ending in `.html` are auto-escaped.
fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("../templates/base.html")),
        ("error.html", include_str!("../templates/error.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("phones.html", include_str!("../templates/phones.html")),
        ("calls.html", include_str!("../templates/calls.html")),
        (
            "phonebook.html",
            include_str!("../templates/phonebook.html"),
        ),
        ("message.html", include_str!("../templates/message.html")),
        ("password.html", include_str!("../templates/password.html")),
        ("users.html", include_str!("../templates/users.html")),
        (
            "dashboard.html",
            include_str!("../templates/dashboard.html"),
        ),
        ("capture.html", include_str!("../templates/capture.html")),
    ] {
        if let Err(e) = env.add_template(name, src) {
            // Caught by the unit test that renders every template; here a broken template
            // only breaks its own pages.
            eprintln!("serweb: template {name}: {e}");
        }
    }
    env
}

/// The session of this request, as the guard found it.
#[derive(Clone)]
pub struct Current {
    pub token: Option<String>,
    pub session: Option<Session>,
}

/// A logged-in user (else a redirect to the login page).
pub struct User(pub Session, pub String);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Current>() {
            Some(Current {
                session: Some(s),
                token: Some(t),
            }) => Ok(User(s.clone(), t.clone())),
            _ => Err(Redirect::to("/login").into_response()),
        }
    }
}

/// A logged-in administrator (else the login page, or 403 for a user without the privilege).
pub struct Admin(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, Self::Rejection> {
        let User(s, _) = User::from_request_parts(parts, st).await?;
        if s.admin {
            Ok(Admin(s))
        } else {
            Err(plain(
                StatusCode::FORBIDDEN,
                "403 Forbidden: the admin pages need the admin privilege",
            ))
        }
    }
}

/// Every request: finds the session, checks the CSRF token of a POST, adds the security
/// headers to the response.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let cookies = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let token = session::cookie(&cookies, COOKIE).map(str::to_string);
    let login_token = session::cookie(&cookies, LOGIN_COOKIE).map(str::to_string);
    let session = token.as_deref().and_then(|t| {
        app.sessions
            .lock()
            .ok()
            .and_then(|mut s| s.get(t, Instant::now()))
    });
    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return app.error(StatusCode::PAYLOAD_TOO_LARGE, "form too large"),
        };
        let sent = form_field(&bytes, "csrf");
        let expected = match (&session, parts.uri.path()) {
            (_, "/login") => login_token.clone(),
            (Some(s), _) => Some(s.csrf.clone()),
            (None, _) => None,
        };
        let ok = matches!((&sent, &expected), (Some(a), Some(b)) if !b.is_empty() && session::same(a, b));
        if !ok {
            return with_headers(app.error(
                StatusCode::FORBIDDEN,
                "this form's security token is missing or stale: reload the page and send it again",
            ));
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(Current {
        token: if session.is_some() { token } else { None },
        session,
    });
    with_headers(next.run(Request::from_parts(parts, body)).await)
}

fn form_field(body: &Bytes, name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    // No script at all; styles and images only from serweb itself (charts are inline SVG).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let env = templates();
        let evil = "<script>alert(1)</script>";
        let me = context! { user => evil, domain => "d", admin => true };
        let call = context! { time => evil, method => "INVITE", from => evil, to => evil,
        status => evil, callid => "c", direction => "in" };
        let filter = context! { from => evil, to => "", peer => evil, page => 1 };
        let user = context! { user => evil, domain => evil, email => evil, created => "",
        groups => vec![evil], aliases => vec![evil] };
        let chart = context! { title => evil, unit => "/s", last => "1", svg => "<svg></svg>" };
        let pages = [
            (
                "error.html",
                context! { status => 403, reason => "Forbidden", message => evil },
            ),
            ("login.html", context! { login_csrf => "t", error => evil }),
            (
                "phones.html",
                context! { source => evil, aliases => vec![evil],
                contacts => vec![context! { uri => evil, q => "1.00", expires => 5,
                    transport => "UDP", user_agent => evil }] },
            ),
            (
                "calls.html",
                context! { rows => vec![call], more => true, kind => "all",
                filter, page => 1 },
            ),
            (
                "phonebook.html",
                context! { notice => evil, entries => vec![context! { id => 1,
                fname => evil, lname => evil, sip_uri => evil }] },
            ),
            (
                "message.html",
                context! { notice => evil, to => evil, stored => vec![context! {
                from => evil, stored => "", expires => "", body => evil }] },
            ),
            ("password.html", context! { error => evil, notice => evil }),
            (
                "users.html",
                context! { users => vec![user], reserved => vec![evil],
                notice => evil, default_domain => evil },
            ),
            (
                "dashboard.html",
                context! { charts => vec![chart.clone()], shards => vec![chart.clone()],
                replies => vec![chart], drops => vec![(evil, 1)], error => evil, samples => 3,
                source => evil, by_transport => vec![(evil, 2)] },
            ),
            (
                "capture.html",
                context! { q => evil, callid => "", list => vec![context! {
                time => evil, src => evil, dst => evil, transport => "UDP", first_line => evil,
                call_id => evil }] },
            ),
            (
                "capture.html",
                context! { q => "", callid => evil, parties => vec![evil, "b"],
                steps => vec![context! { from => 0, to => 1, label => evil, time => evil,
                text => evil }] },
            ),
        ];
        for (name, ctx) in pages {
            let t = env
                .get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let html = t
                .render(context! { me => me.clone(), csrf => "tok", ..ctx })
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(!html.contains(evil), "{name} shows the script unescaped");
            assert!(
                html.contains("&lt;script&gt;"),
                "{name} shows no escaped value"
            );
        }
    }
}
