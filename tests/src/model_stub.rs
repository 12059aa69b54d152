//! A stand-in for the Anthropic Messages API, so the real Claude Code CLI runs offline.
//!
//! [`ModelStub`] is an HTTP/1.1 server on 127.0.0.1 that answers each `POST /v1/messages` with
//! what a [`Script`] decides for the [`Request`]: a text, a tool call or an API error, streamed as
//! server-sent events the way the real API streams them. It records every request for the test to
//! read. [`default_reply`] follows directives in the prompt (`WRITE`, `BASH`, `FAIL`, `SLEEP`), so
//! most tests only choose a prompt. Any GET or HEAD answers 200 (the CLI probes `HEAD /`), a
//! request the stub cannot parse answers 400, and the server stops when its handle drops.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const MAX_LINE_BYTES: u64 = 16 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Decides the answer to one request.
pub type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// The stub's answer to one `POST /v1/messages`.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// An assistant message with one text block; stop reason `end_turn`.
    Text(String),
    /// A call of one tool; stop reason `tool_use`, tool use id `toolu_<n>`.
    ToolUse {
        /// The tool's name, as the request's `tools` list spells it (`Write`, `Bash`).
        name: String,
        /// The tool's input, matching its input schema.
        input: Value,
    },
    /// An API error: `{"type":"error","error":{"type":kind,"message":message}}` with HTTP `status`.
    Error {
        /// HTTP status: 429, 529, 401, 400...
        status: u16,
        /// Error type: `rate_limit_error`, `overloaded_error`, `authentication_error`...
        kind: String,
        /// Human-readable message.
        message: String,
        /// Seconds, sent as `retry-after` and as an RFC 3339 `anthropic-ratelimit-requests-reset`.
        retry_after: Option<u64>,
    },
    /// Another reply, sent after a delay.
    Delayed {
        /// How long to wait before answering.
        delay: Duration,
        /// What to answer then.
        then: Box<Reply>,
    },
}

/// One recorded `POST /v1/messages`.
#[derive(Clone, Debug)]
pub struct Request {
    /// The JSON body, as sent.
    pub body: Value,
}

impl Request {
    /// Returns the text of the first user message (the prompt), skipping the `<system-reminder>`
    /// blocks the CLI adds; several text blocks are joined by newlines.
    pub fn prompt(&self) -> String {
        let mut user_texts = self.conversation().filter(|message| role(message) == "user").map(user_text);
        user_texts.next().unwrap_or_default()
    }

    /// Returns the text of the last user message that has any: the newest prompt of a resumed
    /// conversation (tool results carry no text).
    pub fn latest_prompt(&self) -> String {
        let mut user_texts = self.conversation().rev().filter(|message| role(message) == "user").map(user_text);
        user_texts.find(|text| !text.is_empty()).unwrap_or_default()
    }

    /// Tells whether the last user or assistant message carries a `tool_result` block.
    pub fn has_tool_result(&self) -> bool {
        let last_content = self.conversation().next_back().and_then(|message| message.get("content"));
        let blocks = last_content.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        blocks.iter().any(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
    }

    /// Returns the number of model turns this request makes: the assistant messages already in
    /// the conversation, plus this one.
    pub fn turns(&self) -> usize {
        1 + self.conversation().filter(|message| role(message) == "assistant").count()
    }

    /// Returns the working folder the system prompt names (`Primary working directory: <cwd>`).
    pub fn cwd(&self) -> Option<PathBuf> {
        let system_messages = self.messages().iter().filter(|message| role(message) == "system");
        let contents = self.body.get("system").into_iter().chain(system_messages.filter_map(|m| m.get("content")));
        let mut lines = contents.flat_map(texts).flat_map(str::lines);
        let cwd = lines.find_map(|line| Some(line.split_once("Primary working directory: ")?.1))?;
        Some(PathBuf::from(cwd.trim()))
    }

    /// Tells whether the client asked for server-sent events (`"stream": true`).
    pub fn is_streaming(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool).unwrap_or(false)
    }

    fn messages(&self) -> &[Value] {
        self.body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
    }

    /// The user and assistant messages: the CLI puts `role: "system"` entries among them.
    fn conversation(&self) -> impl DoubleEndedIterator<Item = &Value> {
        self.messages().iter().filter(|message| role(message) != "system")
    }
}

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or_default()
}

fn user_text(message: &Value) -> String {
    let texts = message.get("content").map(texts).unwrap_or_default();
    let texts: Vec<&str> = texts.into_iter().filter(|text| !text.starts_with("<system-reminder>")).collect();
    texts.join("\n")
}

/// The texts of a content that is a string or an array of blocks.
fn texts(content: &Value) -> Vec<&str> {
    match content {
        Value::String(text) => vec![text],
        Value::Array(blocks) => blocks.iter().filter_map(|block| block.get("text")?.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// Returns [`default_reply`] as a [`Script`].
pub fn default_script() -> Script {
    Arc::new(default_reply)
}

/// Answers by the directives in the latest prompt, each on a line of its own:
///
/// - `WRITE <relative path> <content>`: a `Write` call of that file under the cwd, with the rest of
///   the line as its content;
/// - `BASH <command>`: a `Bash` call;
/// - `FAIL <status> [<retry after seconds>]`: that API error (429, 529, 401, 400, ...);
/// - `SLEEP <ms>`: whatever else the prompt asks, that much later.
///
/// After a tool result it answers `done`; without a directive, `echo: <latest prompt>`.
pub fn default_reply(request: &Request) -> Reply {
    let prompt = request.latest_prompt();
    let reply = if request.has_tool_result() {
        Reply::Text("done".to_owned())
    } else if let Some(failure) = directive(&prompt, "FAIL").and_then(failure) {
        failure
    } else if let Some(write) = directive(&prompt, "WRITE") {
        let (path, content) = write.split_once(' ').unwrap_or((write, ""));
        let file_path = request.cwd().map(|cwd| cwd.join(path)).unwrap_or_else(|| PathBuf::from(path));
        Reply::ToolUse { name: "Write".to_owned(), input: json!({ "file_path": file_path, "content": content }) }
    } else if let Some(command) = directive(&prompt, "BASH") {
        Reply::ToolUse { name: "Bash".to_owned(), input: json!({ "command": command }) }
    } else {
        Reply::Text(format!("echo: {prompt}"))
    };
    match directive(&prompt, "SLEEP").and_then(|ms| ms.parse().ok()) {
        Some(ms) => Reply::Delayed { delay: Duration::from_millis(ms), then: Box::new(reply) },
        None => reply,
    }
}

/// The rest of the first line that starts with `keyword` and a space.
fn directive<'prompt>(prompt: &'prompt str, keyword: &str) -> Option<&'prompt str> {
    let mut lines = prompt.lines().map(str::trim);
    lines.find_map(|line| line.strip_prefix(keyword)?.strip_prefix(' ')).map(str::trim)
}

fn failure(arguments: &str) -> Option<Reply> {
    let mut words = arguments.split_whitespace();
    let status: u16 = words.next()?.parse().ok()?;
    let retry_after = words.next().and_then(|seconds| seconds.parse().ok());
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    Some(Reply::Error { status, kind: kind.to_owned(), message: format!("stub failure {status}"), retry_after })
}

/// A running stub; the server stops when this drops.
pub struct ModelStub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    script: Mutex<Script>,
    requests: Mutex<Vec<Request>>,
    next_id: AtomicU64,
}

impl ModelStub {
    /// Starts a stub on 127.0.0.1 and a free port, answering with [`default_reply`].
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), default_script()).await
    }

    /// Starts a stub on `addr`, answering with `script`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr, script: Script) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, server })
    }

    /// Returns the base URL, for `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns every `POST /v1/messages` with a JSON body received so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Returns how many requests have been received so far.
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Counts the requests so far whose prompt is `prompt`.
    pub fn requests_with_prompt(&self, prompt: &str) -> usize {
        let requests = self.shared.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.iter().filter(|request| request.prompt() == prompt).count()
    }

    /// Answers the requests from now on with `script`.
    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap_or_else(PoisonError::into_inner) = script;
    }
}

impl Drop for ModelStub {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.server.abort();
    }
}

impl Shared {
    fn record(&self, request: Request) {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner).push(request);
    }

    fn script(&self) -> Script {
        Arc::clone(&self.script.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors, for example: once a connection
                // ends there is one again. With none open, accepting cannot
                // recover: the stub stops, and its clients see why.
                Err(err) => {
                    if connections.join_next().await.is_none() {
                        eprintln!("model stub: cannot accept connections: {err}");
                        return;
                    }
                }
            },
            // An io error is the client hanging up; a panicking script was reported by the panic hook.
            Some(_finished) = connections.join_next() => {}
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let (read_half, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    loop {
        let request = match read_request(&mut reader).await {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(err)) => return Err(err),
            Err(ReadError::Malformed(why)) => {
                let response = Response::error(400, "invalid_request_error", why, None);
                return writer.write_all(&response.into_bytes(false)).await;
            }
        };
        let keep_alive = request.keep_alive();
        let response = respond(&shared, request).await;
        writer.write_all(&response.into_bytes(keep_alive)).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

async fn respond(shared: &Shared, http: HttpRequest) -> Response {
    let path = http.target.split('?').next().unwrap_or_default();
    match (http.method.as_str(), path) {
        ("GET" | "HEAD", _) => Response { status: 200, headers: Vec::new(), body: Vec::new() },
        ("POST", "/v1/messages") => answer_messages(shared, &http.body).await,
        _ => Response::error(404, "not_found_error", "no such endpoint", None),
    }
}

async fn answer_messages(shared: &Shared, body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Response::error(400, "invalid_request_error", "body is not JSON", None);
    };
    if !body.get("messages").is_some_and(Value::is_array) {
        return Response::error(400, "invalid_request_error", "messages: field required", None);
    }
    let request = Request { body };
    shared.record(request.clone());
    let mut reply = shared.script()(&request);
    loop {
        match reply {
            Reply::Delayed { delay, then } => {
                tokio::time::sleep(delay).await;
                reply = *then;
            }
            Reply::Error { status, kind, message, retry_after } => {
                return Response::error(status, &kind, &message, retry_after);
            }
            Reply::Text(text) => {
                return message(shared, &request, json!({ "type": "text", "text": text }), "end_turn");
            }
            Reply::ToolUse { name, input } => {
                let id = format!("toolu_{}", shared.next_id());
                let block = json!({ "type": "tool_use", "id": id, "name": name, "input": input });
                return message(shared, &request, block, "tool_use");
            }
        }
    }
}

/// An assistant message with one content block, as server-sent events or as one JSON object.
fn message(shared: &Shared, request: &Request, block: Value, stop_reason: &str) -> Response {
    let id = format!("msg_{}", shared.next_id());
    let model = request.body.get("model").cloned().unwrap_or(Value::Null);
    let usage = json!({ "input_tokens": 10, "output_tokens": 5,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0 });
    if !request.is_streaming() {
        let message = json!({ "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage });
        return Response::json(200, &message);
    }
    let (start, delta) = if block["type"] == "tool_use" {
        let partial_json = block["input"].to_string();
        let start = json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} });
        (start, json!({ "type": "input_json_delta", "partial_json": partial_json }))
    } else {
        (json!({ "type": "text", "text": "" }), json!({ "type": "text_delta", "text": block["text"] }))
    };
    let events = [
        json!({ "type": "message_start", "message": { "id": id, "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": 10, "output_tokens": 1 } } }),
        json!({ "type": "ping" }),
        json!({ "type": "content_block_start", "index": 0, "content_block": start }),
        json!({ "type": "content_block_delta", "index": 0, "delta": delta }),
        json!({ "type": "content_block_stop", "index": 0 }),
        json!({ "type": "message_delta", "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": { "output_tokens": usage["output_tokens"] } }),
        json!({ "type": "message_stop" }),
    ];
    let body: String = events
        .iter()
        .map(|event| format!("event: {}\ndata: {event}\n\n", event["type"].as_str().unwrap_or_default()))
        .collect();
    let headers = vec![("content-type", "text/event-stream".to_owned()), ("cache-control", "no-cache".to_owned())];
    Response { status: 200, headers, body: body.into_bytes() }
}

struct HttpRequest {
    method: String,
    target: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(header, _)| header == name).map(|(_, value)| value.as_str())
    }

    fn keep_alive(&self) -> bool {
        !self.header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

enum ReadError {
    Io(io::Error),
    Malformed(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
async fn read_request(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Option<HttpRequest>, ReadError> {
    let Some(request_line) = read_line(reader).await? else {
        return Ok(None);
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ReadError::Malformed("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() {
        return Err(ReadError::Malformed("not an HTTP/1 request"));
    }
    let mut request =
        HttpRequest { method: method.to_owned(), target: target.to_owned(), headers: Vec::new(), body: Vec::new() };
    loop {
        let line = read_line(reader).await?.ok_or(ReadError::Malformed("connection closed in the headers"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(ReadError::Malformed("malformed header"))?;
        if request.headers.len() == MAX_HEADERS {
            return Err(ReadError::Malformed("too many headers"));
        }
        request.headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    request.body = if request.header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        read_chunked(reader).await?
    } else {
        let length = request.header("content-length").map_or(Ok(0), str::parse::<usize>);
        let length = length.map_err(|_| ReadError::Malformed("malformed content-length"))?;
        read_exactly(reader, length).await?
    };
    Ok(Some(request))
}

async fn read_chunked(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader).await?.ok_or(ReadError::Malformed("connection closed in a chunk"))?;
        let size = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| ReadError::Malformed("malformed chunk size"))?;
        if size == 0 {
            break;
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ReadError::Malformed("body too large"));
        }
        body.extend(read_exactly(reader, size).await?);
        if read_line(reader).await?.is_none_or(|rest| !rest.is_empty()) {
            return Err(ReadError::Malformed("chunk longer than its size"));
        }
    }
    // Trailer fields, up to the blank line.
    while read_line(reader).await?.is_some_and(|line| !line.is_empty()) {}
    Ok(body)
}

async fn read_exactly(reader: &mut (impl AsyncBufRead + Unpin), length: usize) -> Result<Vec<u8>, ReadError> {
    if length > MAX_BODY_BYTES {
        return Err(ReadError::Malformed("body too large"));
    }
    let mut bytes = vec![0; length];
    reader.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Reads a line without its CRLF; `None` at the end of the stream.
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let read = (&mut *reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut line).await?;
    if read == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(ReadError::Malformed("line too long or cut short"));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map(Some).map_err(|_| ReadError::Malformed("header is not UTF-8"))
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: &Value) -> Self {
        Self { status, headers: vec![("content-type", "application/json".to_owned())], body: body.to_string().into() }
    }

    fn error(status: u16, kind: &str, message: &str, retry_after: Option<u64>) -> Self {
        let mut response =
            Self::json(status, &json!({ "type": "error", "error": { "type": kind, "message": message } }));
        if let Some(seconds) = retry_after {
            let reset = Utc::now() + Duration::from_secs(seconds);
            response.headers.push(("retry-after", seconds.to_string()));
            let reset = reset.to_rfc3339_opts(SecondsFormat::Secs, true);
            response.headers.push(("anthropic-ratelimit-requests-reset", reset));
        }
        response
    }

    fn into_bytes(self, keep_alive: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            529 => "Overloaded",
            _ => "Status",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        head.push_str(&format!("content-length: {}\r\nconnection: {connection}\r\n\r\n", self.body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend(self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::eventually;

    fn request(messages: Value) -> Request {
        let system = [json!({ "type": "text", "text": "env\n - Primary working directory: /work/a\n" })];
        Request { body: json!({ "stream": true, "system": system, "messages": messages }) }
    }

    fn post(body: &str) -> Vec<u8> {
        let head = format!(
            "POST /v1/messages?beta=true HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        [head.as_bytes(), body.as_bytes()].concat()
    }

    async fn exchange(stub: &ModelStub, raw: &[u8]) -> String {
        let mut stream = TcpStream::connect(stub.addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[test]
    fn prompts_skip_system_reminders_and_system_messages() {
        let reminder = "<system-reminder>\ncontext\n</system-reminder>\n";
        let request = request(json!([
            { "role": "user", "content": [{ "type": "text", "text": reminder }, { "type": "text", "text": "first" }] },
            { "role": "system", "content": "agents" },
            { "role": "assistant", "content": [{ "type": "text", "text": "echo: first" }] },
            { "role": "user", "content": "second" },
            { "role": "system", "content": "more agents" },
        ]));
        assert_eq!(request.prompt(), "first");
        assert_eq!(request.latest_prompt(), "second");
        assert_eq!(request.turns(), 2);
        assert!(!request.has_tool_result());
        assert_eq!(request.cwd(), Some(PathBuf::from("/work/a")));
        assert_eq!(default_reply(&request), Reply::Text("echo: second".to_owned()));
    }

    #[test]
    fn write_directive_asks_for_an_absolute_path_then_says_done() {
        let write = request(json!([{ "role": "user", "content": "please\nWRITE out/a.txt hello there" }]));
        let input = json!({ "file_path": "/work/a/out/a.txt", "content": "hello there" });
        assert_eq!(default_reply(&write), Reply::ToolUse { name: "Write".to_owned(), input });
        let tool_result = json!([{ "type": "tool_result", "tool_use_id": "toolu_1", "content": "ok" }]);
        let after = request(json!([
            { "role": "user", "content": "WRITE out/a.txt hello" },
            { "role": "assistant", "content": [] },
            { "role": "user", "content": tool_result },
        ]));
        assert!(after.has_tool_result());
        assert_eq!(default_reply(&after), Reply::Text("done".to_owned()));
    }

    #[test]
    fn sleep_directive_delays_the_failure() {
        let failing = request(json!([{ "role": "user", "content": "SLEEP 20\nFAIL 429 30" }]));
        let Reply::Delayed { delay, then } = default_reply(&failing) else { panic!("the reply is not delayed") };
        assert_eq!(delay, Duration::from_millis(20));
        let Reply::Error { status: 429, kind, retry_after: Some(30), .. } = *then else {
            panic!("not a 429: {then:?}")
        };
        assert_eq!(kind, "rate_limit_error");
    }

    #[tokio::test]
    async fn streams_a_text_reply_and_records_the_request() {
        let stub = ModelStub::start().await.unwrap();
        let answer = exchange(&stub, &post(r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("content-type: text/event-stream\r\n"), "{answer}");
        assert!(answer.contains(r#""text":"echo: hi""#), "{answer}");
        assert!(answer.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), "{answer}");
        assert_eq!(stub.requests_with_prompt("hi"), 1);
    }

    #[tokio::test]
    async fn reads_a_chunked_body_and_keeps_the_connection_alive() {
        let stub = ModelStub::start().await.unwrap();
        let body = r#"{"stream":true,"messages":[{"role":"user","content":"FAIL 429 30"}]}"#;
        let (first, second) = body.split_at(10);
        let (first_size, second_size) = (first.len(), second.len());
        let chunked = format!(
            "POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
             {first_size:x}\r\n{first}\r\n{second_size:x}\r\n{second}\r\n0\r\n\r\n\
             HEAD / HTTP/1.1\r\nconnection: close\r\n\r\n"
        );
        let answer = exchange(&stub, chunked.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{answer}");
        assert!(answer.contains("retry-after: 30\r\n"), "{answer}");
        assert!(answer.contains("anthropic-ratelimit-requests-reset: "), "{answer}");
        assert!(answer.contains("\r\n\r\n{\"error\":{\"message\":\"stub failure 429\""), "{answer}");
        assert!(answer.contains("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(stub.request_count(), 1);
    }

    #[tokio::test]
    async fn answers_malformed_requests_with_400_and_keeps_serving() {
        let stub = ModelStub::start().await.unwrap();
        let bad_length = b"POST /v1/messages HTTP/1.1\r\ncontent-length: x\r\n\r\n".to_vec();
        for raw in [b"nonsense\r\n\r\n".to_vec(), bad_length, post("{not json"), post("{}")] {
            let answer = exchange(&stub, &raw).await;
            assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        }
        stub.set_script(Arc::new(|_| Reply::Text("scripted".to_owned())));
        let answer = exchange(&stub, &post(r#"{"messages":[{"role":"user","content":"hi"}]}"#)).await;
        assert!(answer.contains(r#""content":[{"text":"scripted","type":"text"}]"#), "{answer}");
    }

    #[tokio::test]
    async fn stops_serving_when_dropped() {
        let stub = ModelStub::start().await.unwrap();
        let addr = stub.addr;
        drop(stub);
        eventually("the stub to stop", Duration::from_secs(5), || async { TcpStream::connect(addr).await.is_err() })
            .await;
    }
}
