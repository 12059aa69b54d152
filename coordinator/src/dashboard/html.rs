//! HTML for the dashboard's pages: every text from the database, a task or
//! an agent goes through [`escape`], so prompts, outputs and errors show as
//! text and never run.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::session::Session;

/// `text` with the characters HTML gives meaning to replaced by entities.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// How a page follows its event stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refresh {
    /// Applies the `counts` events (the overview).
    Counts,
    /// Says how many events arrived since it was read, with a link to read it again.
    Banner,
    /// Reads itself again, at most once a second, when events arrive (a page
    /// about one thing, whose stream carries only that thing's events).
    Reread,
    /// Reads itself again when events arrive and every five seconds while it
    /// is visible: for what changes without an event (the workers' CPU,
    /// memory and heartbeat age, which their heartbeats carry).
    Poll,
}

impl Refresh {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counts => "counts",
            Self::Banner => "banner",
            Self::Reread => "reread",
            Self::Poll => "poll",
        }
    }
}

/// A page: the frame (navigation, who is signed in, the live events) around
/// `body`. The page's event stream starts after event `after` (the newest
/// when the page was read, so nothing between the read and the stream is
/// missed) and follows `live` (a query string such as `task=…`).
pub(crate) fn page(title: &str, session: &Session, after: i64, live: (&str, Refresh), body: &str) -> Response {
    let (live, refresh) = live;
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Hive</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/style.css"><script src="/assets/app.js" defer></script></head>
<body data-live="{live}" data-after="{after}" data-refresh="{refresh}" data-role="{role}">
<header><a class="brand" href="/">Hive</a><nav><a href="/">Overview</a> <a href="/tasks">Tasks</a> <a href="/workers">Workers</a> <a href="/dead">Dead letters</a> <a href="/locks">Locks</a> <a href="/audit">Audit</a> <a href="/webhooks">Webhooks</a></nav>
<span class="who">{who} ({role}) <span id="live-state" class="live-state">connecting…</span>{logout}</span></header>
<p id="banner" class="banner" hidden><a href="">Events arrived since this page was read: read it again</a> (<span id="banner-count">0</span>)</p>
<div class="columns"><main id="main">{body}</main>
<aside><h2>Live</h2><ol id="events" class="events"></ol></aside></div></body></html>"#,
        title = escape(title),
        live = escape(live),
        refresh = refresh.as_str(),
        role = session.caller.role,
        who = escape(&session.caller.name),
        logout = if session.signed_in { logout_form(session) } else { String::new() },
    );
    Html(html).into_response()
}

fn logout_form(session: &Session) -> String {
    format!(
        r#" <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button>Sign out</button></form>"#,
        escape(&session.csrf)
    )
}

/// A time as pages show it, to the second (UTC).
pub(crate) fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `text` as a query value.
pub(crate) fn urlencode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// The page for a failed use case: its status from the one map of errors
/// to gRPC codes (`grpc::status`), as HTTP.
pub(crate) fn error_response(err: crate::error::Error) -> Response {
    let status = tonic::Status::from(err);
    let http = match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists | tonic::Code::Aborted => StatusCode::CONFLICT,
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_page(http, status.message())
}

/// A page that says what went wrong, with `status`.
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{status} · Hive</title>
<link rel="stylesheet" href="/assets/style.css"></head><body><main><h1>{status}</h1><p class="error">{}</p>
<p><a href="/">Overview</a></p></main></body></html>"#,
        escape(message)
    );
    (status, Html(html)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<script>alert("x&y's")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;y&#39;s&quot;)&lt;/script&gt;"
        );
    }
}
