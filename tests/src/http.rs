//! Plain HTTP/1.1 over real TCP connections: a GET, for the coordinator's
//! and the worker's HTTP listeners (`/metrics`), and a [`Receiver`] that
//! takes webhook posts and answers as scripted.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response: its status code, headers (lower-cased names) and body.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body, as text.
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// GETs `path` from `addr`, with `authorization: Bearer TOKEN` when a token is given.
///
/// # Panics
/// When the connection fails or the reply is not HTTP.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect to the HTTP listener");
    exchange(stream, addr, path, token).await
}

/// [`get`], or `None` while nothing listens on `addr` yet (a process still starting).
///
/// # Panics
/// When the reply is not HTTP.
pub async fn try_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.ok()?;
    Some(exchange(stream, addr, path, token).await)
}

async fn exchange(mut stream: TcpStream, addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let authorization = token.map(|token| format!("authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{authorization}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read the reply");
    let text = String::from_utf8(raw).expect("a text reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers, then a body");
    let mut lines = head.lines();
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|code| code.parse().ok());
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply { status: status.expect("a status line"), headers, body: body.to_owned() }
}

/// How a [`Receiver`] answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// With this status (and a short body).
    Status(u16),
    /// Never: it reads the request and holds the connection open.
    Hang,
}

/// One request a [`Receiver`] took.
#[derive(Debug, Clone)]
pub struct Received {
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body, as text.
    pub body: String,
}

impl Received {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// An HTTP server on loopback that records every request and answers the
/// n-th with the n-th of its answers (the last one for the rest): a
/// webhook receiver for tests.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts one answering with `answers` in turn, then the last forever.
    ///
    /// # Panics
    /// When it cannot bind, or `answers` is empty.
    pub async fn start(answers: Vec<Answer>) -> Self {
        assert!(!answers.is_empty(), "a receiver needs an answer");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a receiver");
        let addr = listener.local_addr().expect("its address");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = std::sync::Arc::clone(&log);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(stream).await else { return };
                    let (mut stream, request) = request;
                    let turn = {
                        let mut log = log.lock().expect("the receiver's log");
                        log.push(request);
                        log.len() - 1
                    };
                    match answers[turn.min(answers.len() - 1)] {
                        Answer::Status(status) => {
                            let reply = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: 8\r\nconnection: close\r\n\r\nanswered"
                            );
                            let _ = stream.write_all(reply.as_bytes()).await;
                        }
                        // Holds the connection until the test ends.
                        Answer::Hang => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Self { addr, received }
    }

    /// `http://ADDR/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request taken so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("the receiver's log").clone()
    }
}

async fn read_request(mut stream: TcpStream) -> Option<(TcpStream, Received)> {
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.iter().find(|(name, _)| name == "content-length")?.1.parse().ok()?;
    while raw.len() < head_end + 4 + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end + 4..head_end + 4 + length]).into_owned();
    Some((stream, Received { headers, body }))
}
