//! Signing in to the dashboard and checking each request.
//!
//! The login form posts a token; the dashboard keeps it in an `HttpOnly`,
//! `SameSite=Strict` cookie (never in a URL or a log) and checks it on every
//! request as the gRPC API checks its bearer token, so revoking a token
//! signs its sessions out. Viewer and admin tokens may read; only admin
//! tokens see and use the controls. Every form post carries a CSRF token
//! derived from the signed-in token (so any coordinator can check it) and
//! is refused when its `Origin` is another site. With auth off nobody signs
//! in and everyone is admin, as on the API.

use std::sync::{Arc, OnceLock};

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use hive_shared::tokens::Role;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::html::{error_page, escape};
use crate::app::App;
use crate::auth::Caller;
use crate::error::Error;

/// The cookie holding the signed-in token.
const COOKIE: &str = "hive_token";

/// Who is asking, for one request.
#[derive(Debug)]
pub(crate) struct Session {
    /// As the API would see them.
    pub caller: Caller,
    /// What each form must carry back (see [`Session::check_post`]).
    pub csrf: String,
    /// Whether a token signed in (not with auth off).
    pub signed_in: bool,
}

impl Session {
    /// Whether the controls are theirs to use.
    pub(crate) fn may_act(&self) -> bool {
        self.caller.role == Role::Admin
    }

    /// Lets a form post through when it comes from this site, carries this
    /// session's CSRF token, and the session may act; else why not (a 403).
    pub(crate) fn check_post(&self, headers: &HeaderMap, csrf: &str) -> Result<(), String> {
        if cross_site(headers) {
            return Err("a form posted from another site is refused".into());
        }
        if !same(csrf.as_bytes(), self.csrf.as_bytes()) {
            return Err("the form's CSRF token is missing or stale: reload the page and try again".into());
        }
        if !self.may_act() {
            return Err(format!("a {} token may not change anything (an admin token may)", self.caller.role));
        }
        Ok(())
    }
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let Some(book) = &app.tokens else {
            return Ok(Self { caller: Caller::anonymous(), csrf: csrf_of(anonymous_key()), signed_in: false });
        };
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(Redirect::to("/login").into_response());
        };
        let caller = match book.authenticate(token).await {
            // Kept, so that a long-lived stream can check it again (`TokenBook::recheck`).
            Ok(caller) => Caller { credential: Some(hive_shared::config::Secret::new(token.to_owned())), ..caller },
            Err(Error::Unauthenticated(_)) => return Err(signed_out(Redirect::to("/login"))),
            Err(err) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &err.to_string())),
        };
        if let Some(refusal) = refusal(caller.role) {
            return Err(error_page(StatusCode::FORBIDDEN, &refusal));
        }
        Ok(Self { caller, csrf: csrf_of(token.as_bytes()), signed_in: true })
    }
}

/// Why a token of `role` may not use the dashboard; `None` when it may.
fn refusal(role: Role) -> Option<String> {
    (!matches!(role, Role::Admin | Role::Viewer))
        .then(|| format!("a {role} token may not use the dashboard (a viewer or admin token may)"))
}

/// The login form.
pub(crate) async fn login_page(State(app): State<Arc<App>>) -> Response {
    if app.tokens.is_none() {
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, None)
}

/// What the login form posts.
#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    token: String,
}

/// Checks the posted token and keeps it in the session cookie.
pub(crate) async fn login(State(app): State<Arc<App>>, headers: HeaderMap, Form(form): Form<Login>) -> Response {
    let Some(book) = &app.tokens else { return Redirect::to("/").into_response() };
    if cross_site(&headers) {
        return error_page(StatusCode::FORBIDDEN, "a form posted from another site is refused");
    }
    let token = form.token.trim();
    let caller = match book.authenticate(token).await {
        Ok(caller) => caller,
        Err(Error::Unauthenticated(reason)) => return login_form(StatusCode::UNAUTHORIZED, Some(&reason)),
        Err(err) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    };
    if let Some(refusal) = refusal(caller.role) {
        return login_form(StatusCode::FORBIDDEN, Some(&refusal));
    }
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// What the sign-out form posts.
#[derive(Debug, Deserialize)]
pub(crate) struct Logout {
    #[serde(default)]
    csrf: String,
}

/// Forgets the session cookie.
pub(crate) async fn logout(session: Session, headers: HeaderMap, Form(form): Form<Logout>) -> Response {
    if cross_site(&headers) || !same(form.csrf.as_bytes(), session.csrf.as_bytes()) {
        return error_page(StatusCode::FORBIDDEN, "the form's CSRF token is missing or stale: reload the page");
    }
    signed_out(Redirect::to("/login"))
}

fn signed_out(response: impl IntoResponse) -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], response).into_response()
}

fn login_form(status: StatusCode, problem: Option<&str>) -> Response {
    let problem = problem.map(|problem| format!(r#"<p class="error">{}</p>"#, escape(problem))).unwrap_or_default();
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · Hive</title>
<link rel="stylesheet" href="/assets/style.css"></head><body><main class="login"><h1>Hive</h1>{problem}
<form method="post" action="/login"><label>Token <input type="password" name="token" autocomplete="off" autofocus></label>
<button>Sign in</button></form><p class="hint">A viewer token reads; an admin token also acts. <code>hivectl up</code> prints one.</p>
</main></body></html>"#
    );
    (status, Html(html)).into_response()
}

/// Whether the request says it comes from another site (`Sec-Fetch-Site`,
/// or an `Origin` whose host is not the one asked).
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if text("sec-fetch-site").is_some_and(|site| site == "cross-site" || site == "same-site") {
        return true;
    }
    match (text("origin"), text("host")) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_none_or(|(_, origin_host)| origin_host != host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name && !value.is_empty()).then_some(value))
}

/// The CSRF token of a session signed in with `secret`.
fn csrf_of(secret: &[u8]) -> String {
    hive_shared::tokens::hex(&Sha256::new().chain_update(b"hive dashboard csrf\n").chain_update(secret).finalize())
}

/// With auth off, what the CSRF token is derived from: random, per process.
fn anonymous_key() -> &'static [u8] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (header::HeaderName::from_static(name), value.parse().unwrap())).collect()
    }

    #[test]
    fn posts_from_another_site_are_told_apart() {
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let found = headers(&[("cookie", "a=1; hive_token=hive_v_00; b=2")]);
        assert_eq!(cookie(&found, COOKIE), Some("hive_v_00"));
        assert_eq!(cookie(&headers(&[("cookie", "hive_token=")]), COOKIE), None);
    }

    #[test]
    fn csrf_tokens_differ_by_secret() {
        assert_ne!(csrf_of(b"one"), csrf_of(b"two"));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
