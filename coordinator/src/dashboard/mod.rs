//! The web dashboard, served on the HTTP listener beside `/metrics`: pages
//! rendered here from the same use-case code the gRPC API calls, with their
//! script and style embedded in the binary (no build step, no Node at run
//! time).
//!
//! - [`session`]: signing in with a token (kept in an `HttpOnly`,
//!   `SameSite=Strict` cookie, never in a URL), who may read (viewer, admin)
//!   and act (admin), and the CSRF check every form post passes.
//! - [`pages`]: the overview and the task list (keyset pages, filters).
//! - [`task`]: one task: attempts, verdicts, its change, trace, output.
//! - [`output`]: a task's output as safe text, a page at a time.
//! - [`swarms`]: a swarm's progress, why it waits, and its budget.
//! - [`graph`]: a swarm's dependency graph, drawn as SVG.
//! - [`workers`]: the workers, and draining or stopping them.
//! - [`dead`]: the dead-letter queue by error.
//! - [`bulk`]: cancel or retry every task a filter matches, after a count.
//! - [`holds`]: pauses and provider cool-downs, and releasing them.
//! - [`records`]: locks held, the audit log, webhook deliveries.
//! - [`actions`]: cancel and retry, audited as the API's are.
//! - [`live`]: one server-sent-event stream per open page, fed by this
//!   coordinator's copy of the event log: an idle page costs the database
//!   nothing, and a page that reconnects resumes after the last event it saw.
//! - [`counts`]: the overview's numbers, read once per coordinator (not
//!   per page) and pushed down the overviews' streams.
//! - [`html`]: escaping and the page frame.

mod actions;
mod bulk;
pub(crate) mod counts;
mod dead;
mod graph;
mod holds;
mod html;
mod live;
mod output;
mod pages;
mod records;
mod session;
mod swarms;
mod task;
mod workers;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::app::App;

/// The dashboard's routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/tasks", get(pages::tasks))
        .route("/tasks/{id}", get(task::show))
        .route("/tasks/{id}/output", get(output::show))
        .route("/tasks/{id}/{action}", post(actions::act))
        .route("/swarms/{id}", get(swarms::show))
        .route("/swarms/{id}/budget", post(swarms::budget))
        .route("/pauses", post(holds::pause))
        .route("/pauses/resume", post(holds::resume))
        .route("/cooldowns/clear", post(holds::clear_cooldown))
        .route("/dead", get(dead::list))
        .route("/bulk", get(bulk::confirm).post(bulk::act))
        .route("/workers", get(workers::list))
        .route("/locks", get(records::locks))
        .route("/audit", get(records::audit))
        .route("/webhooks", get(records::deliveries))
        .route("/webhooks/{id}/resend", post(records::resend))
        .route("/workers/stop-all", post(workers::stop_all))
        .route("/workers/{id}/{action}", post(workers::act))
        .route("/live", get(live::stream))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/app.js"))
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("assets/style.css"))
}
