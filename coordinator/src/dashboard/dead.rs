//! The dead-letter queue: dead tasks grouped by the start of their error,
//! each group with a bulk retry by its error text ([`super::bulk`]), which
//! says how many tasks it would retry and asks before it does.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::html::{Refresh, error_response, escape, page, urlencode};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::error::Error;

/// Characters of an error that make its group.
const GROUP_CHARS: i32 = 200;
/// Groups shown.
const GROUPS: i64 = 50;

/// The dead tasks by error.
pub(crate) async fn list(session: Session, State(app): State<Arc<App>>) -> Response {
    let read =
        tokio::try_join!(db::filters::dead_by_error(&app.pool, GROUP_CHARS, GROUPS), db::events::head(&app.pool));
    let (groups, head) = match read {
        Ok(read) => read,
        Err(err) => return error_response(Error::from(err)),
    };
    let mut body = String::from(
        "<h1>Dead letters</h1><table id=\"dead\"><tr><th>tasks</th><th>error (its start)</th><th></th></tr>",
    );
    for group in &groups {
        let retry = if session.may_act() && !group.error.is_empty() {
            format!(
                r#"<a class="retry" href="/bulk?action=retry&error={}">Retry…</a>"#,
                escape(&urlencode(&group.error))
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr><td class="n">{}</td><td class="error">{}</td><td>{retry}</td></tr>"#,
            group.tasks,
            escape(&group.error)
        );
    }
    body.push_str("</table>");
    if groups.is_empty() {
        body.push_str(r#"<p class="empty">No dead tasks.</p>"#);
    }
    page("Dead letters", &session, head.last_seq, ("kinds=task.dead,task.retried", Refresh::Banner), &body)
}
