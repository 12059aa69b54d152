//! Headless Chromium (Debian's package, installed by `scripts/setup`),
//! driven over the DevTools protocol on a pipe: Chromium's
//! `--remote-debugging-pipe` reads requests on its fd 3 and writes replies
//! on fd 4, each a JSON message ended by a NUL byte. A shell maps them to
//! the child's stdin and stdout, so no websocket client is needed. One page
//! per browser; calls wait for their reply and skip the events between.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, mpsc};

use crate::wait::eventually;

/// A headless Chromium with one page open.
pub struct Browser {
    child: Child,
    requests: Mutex<ChildStdin>,
    replies: Mutex<mpsc::UnboundedReceiver<Value>>,
    next: AtomicU64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and opens a blank page.
    ///
    /// # Panics
    /// When Chromium is missing or does not answer.
    pub async fn launch() -> Self {
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg("sh")
            .arg("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium (scripts/setup installs it)");
        let requests = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let (sender, replies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut message = Vec::new();
            while stdout.read_until(0, &mut message).await.is_ok_and(|read| read > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && sender.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        let mut browser = Self {
            child,
            requests: Mutex::new(requests),
            replies: Mutex::new(replies),
            next: AtomicU64::new(1),
            session: String::new(),
            _profile: profile,
        };
        let target = browser.send(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached =
            browser.send(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await;
        browser.session = attached["sessionId"].as_str().expect("a session id").to_owned();
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Calls `method` on the page; its result.
    ///
    /// # Panics
    /// When the browser answers with an error or goes away.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.send(Some(&self.session), method, params).await
    }

    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&request).expect("JSON");
        bytes.push(0);
        self.requests.lock().await.write_all(&bytes).await.expect("write to chromium");
        let mut replies = self.replies.lock().await;
        let reply = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message = replies.recv().await.expect("chromium went away");
                if message["id"].as_u64() == Some(id) {
                    return message;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn open(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        self.wait_for(
            &format!("opening {url}"),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
            Duration::from_secs(10),
        )
        .await;
    }

    /// The value of the JavaScript expression `expression` on the page
    /// (awaited when it is a promise).
    pub async fn eval(&self, expression: &str) -> Value {
        let params = json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params).await;
        assert!(result.get("exceptionDetails").is_none(), "`{expression}` threw: {result}");
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true on the page.
    pub async fn wait_for(&self, what: &str, expression: &str, timeout: Duration) {
        let check = format!("(() => {{ try {{ return Boolean({expression}); }} catch (_) {{ return false; }} }})()");
        eventually(what, timeout, || async { self.eval(&check).await == json!(true) }).await;
    }
}

/// The pages of Hive's dashboard.
impl Browser {
    /// Signs in with `token` on the page's login form (opening it first when
    /// elsewhere) and waits for the answer: the overview, or the form again
    /// saying why not.
    pub async fn sign_in(&self, token: &str) {
        if self.eval("location.pathname").await != json!("/login") {
            self.eval("location.href = '/login'").await;
            let login = "location.pathname === '/login' && document.readyState === 'complete'";
            self.wait_for("the login form", login, Duration::from_secs(10)).await;
        }
        let before = self.eval("performance.timeOrigin").await;
        let submit = format!(
            "document.querySelector('input[name=token]').value = {}; document.querySelector('form').submit()",
            json!(token)
        );
        self.eval(&submit).await;
        let answered = format!("performance.timeOrigin !== {before} && document.readyState === 'complete'");
        self.wait_for("the login's answer", &answered, Duration::from_secs(10)).await;
    }

    /// Waits until the page's event stream is connected.
    pub async fn wait_live(&self) {
        let live = "document.getElementById('live-state').textContent === 'live'";
        self.wait_for("the live stream", live, Duration::from_secs(10)).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
