//! A task's stored output as text: a page of chunks at a time (keyset, by
//! the chunks' ids), stdout and stderr told apart, bytes that are not UTF-8
//! replaced, terminal escape sequences (colours, cursor moves) stripped and
//! other control characters shown as `�`, then HTML-escaped: whatever an
//! agent prints shows as text and never runs. A running task's page
//! follows its output: while the page is visible its script asks, once a
//! second, for the chunks after the last it shows (`?fragment=true`, one read
//! of `task_logs_task_idx`); a finished task's page asks nothing.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use hive_shared::ids::TaskId;
use serde::Deserialize;

use super::html::{Refresh, error_page, error_response, escape, page};
use super::session::Session;
use crate::app::App;
use crate::tasks;

/// Chunks on one page.
const CHUNKS: u32 = 1000;

/// Where a page of output starts.
#[derive(Debug, Deserialize)]
pub(crate) struct OutputQuery {
    /// The last chunk of the page before.
    #[serde(default)]
    after: i64,
    /// Only the chunks, as spans, for a page following the output; the
    /// last chunk's id is in the `x-hive-after` header.
    #[serde(default)]
    fragment: bool,
}

/// Header carrying the last chunk a fragment holds.
const AFTER_HEADER: &str = "x-hive-after";

/// A page of a task's output.
pub(crate) async fn show(
    session: Session,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<OutputQuery>,
) -> Response {
    let Ok(task) = TaskId::parse(&id) else {
        return error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not a task id"));
    };
    let read =
        tokio::try_join!(tasks::logs::page(&app.pool, task, None, query.after, CHUNKS), super::pages::head(&app.pool));
    let (output, head) = match read {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    if query.fragment {
        let after = output.chunks.last().map_or(query.after, |chunk| chunk.id);
        return ([(AFTER_HEADER, after.to_string())], Html(spans(&output))).into_response();
    }
    let mut body = format!(r#"<h1>Output of <a href="/tasks/{}">task {}</a></h1>"#, task.0, task.0);
    body.push_str(&render(&output, None));
    if let (true, Some(last)) = (output.more, output.chunks.last()) {
        let _ = write!(
            body,
            r#"<p><a class="next" href="/tasks/{}/output?after={}">More output →</a></p>"#,
            task.0, last.id
        );
    }
    page("Output", &session, head, (&format!("task={}", task.0), Refresh::Banner), &body)
}

/// A page of output as HTML; with `follow` (a running task), marked for
/// the script to append what arrives after it.
pub(crate) fn render(output: &tasks::logs::Page, follow: Option<uuid::Uuid>) -> String {
    if output.chunks.is_empty() && follow.is_none() {
        return r#"<p class="empty">No output stored.</p>"#.to_owned();
    }
    let mut html = String::from(r#"<pre class="output" id="output""#);
    // Past the first page there is more stored than shown: the page links to it instead.
    if let Some(task) = follow.filter(|_| !output.more) {
        let after = output.chunks.last().map_or(0, |chunk| chunk.id);
        let _ = write!(html, r#" data-follow="/tasks/{task}/output?fragment=true" data-after="{after}""#);
    }
    html.push('>');
    html.push_str(&spans(output));
    html.push_str("</pre>");
    if output.truncated {
        html.push_str(r#"<p class="hint">The output hit its cap: what followed was not kept.</p>"#);
    }
    html
}

/// Each chunk as a span marked with its stream.
fn spans(output: &tasks::logs::Page) -> String {
    let mut html = String::new();
    for chunk in &output.chunks {
        let class = match chunk.stream {
            2 => "stderr",
            tasks::logs::HIVE_STREAM => "note",
            _ => "stdout",
        };
        let _ = write!(html, r#"<span class="{class}">{}</span>"#, escape(&printable(&chunk.data)));
    }
    html
}

/// `bytes` as text a page can show: invalid UTF-8 replaced, escape
/// sequences dropped, control characters other than newline and tab shown
/// as `�`.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for next in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&next) {
                            break;
                        }
                    }
                }
                // OSC (a title, a link): up to BEL or ESC \.
                Some(']') => {
                    while let Some(next) = chars.next() {
                        if next == '\u{7}' || (next == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => shown.push(c),
            '\r' => {}
            c if c.is_control() => shown.push('\u{fffd}'),
            c => shown.push(c),
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_control_bytes_are_dropped_and_bad_utf8_replaced() {
        assert_eq!(printable(b"\x1b[1;31mred\x1b[0m plain\r\n"), "red plain\n");
        assert_eq!(printable(b"\x1b]0;title\x07after \x1b]8;;http://x\x1b\\link"), "after link");
        assert_eq!(printable(b"bell\x07 bad \xff\xfe end\tx"), "bell\u{fffd} bad \u{fffd}\u{fffd} end\tx");
    }
}
