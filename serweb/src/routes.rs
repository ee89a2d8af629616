//! The routes: every page of [`crate::user`] and [`crate::admin`], the stylesheet and icon,
//! behind [`crate::web::guard`]. Kept apart from `web` so that the pages depend on `web` and
//! not the other way round.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::web::{guard, App};

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../static/serweb.css"),
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../static/favicon.svg"),
    )
        .into_response()
}

/// All of serweb's routes, behind the guard.
pub fn router(app: Arc<App>) -> Router {
    use crate::{admin, user};
    Router::new()
        .route("/", get(user::home))
        .route("/login", get(user::login_page).post(user::login))
        .route("/logout", post(user::logout))
        .route("/phones", get(user::phones))
        .route("/calls", get(user::calls))
        .route("/phonebook", get(user::phonebook))
        .route("/phonebook/add", post(user::phonebook_add))
        .route("/phonebook/{id}/edit", post(user::phonebook_edit))
        .route("/phonebook/{id}/delete", post(user::phonebook_delete))
        .route("/phonebook/{id}/call", post(user::phonebook_call))
        .route("/message", get(user::message_page).post(user::message_send))
        .route(
            "/password",
            get(user::password_page).post(user::password_change),
        )
        .route("/admin", get(|| async { Redirect::to("/admin/users") }))
        .route("/admin/users", get(admin::users))
        .route("/admin/users/add", post(admin::user_add))
        .route("/admin/users/remove", post(admin::user_remove))
        .route("/admin/users/password", post(admin::user_password))
        .route("/admin/users/group", post(admin::user_group))
        .route("/admin/aliases", post(admin::alias))
        .route("/admin/reserved", post(admin::reserved))
        .route("/admin/dashboard", get(admin::dashboard))
        .route("/admin/capture", get(admin::capture))
        .route("/static/serweb.css", get(stylesheet))
        .route("/favicon.ico", get(favicon))
        .fallback(|State(app): State<Arc<App>>| async move {
            app.error(StatusCode::NOT_FOUND, "no such page")
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            guard,
        ))
        .with_state(app)
}
