//! Helpers for the HTTP listener's tests: a raw WebSocket client that speaks
//! protocol frames as text messages, and a one-request HTTP/1.1 client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{password_of, query, Frames, WAIT};

/// Any byte stream a WebSocket can run over (plain TCP, or TLS).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A WebSocket carrying protocol frames, one per text message.
pub(crate) struct Ws {
    ws: WebSocketStream<Box<dyn Stream>>,
    calls: u64,
}

/// Why a handshake failed: the HTTP status, if the server answered one.
pub(crate) fn refused_status(e: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => Some(r.status().as_u16()),
        _ => None,
    }
}

impl Ws {
    /// Opens `ws://addr/ws` (no `Origin`, as a program would).
    pub(crate) async fn connect(addr: SocketAddr) -> Ws {
        Ws::try_connect(addr, None).await.expect("WebSocket opens")
    }

    /// Opens `ws://addr/ws` sending `origin`, as a browser page would.
    pub(crate) async fn try_connect(
        addr: SocketAddr,
        origin: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Ws::over(Box::new(stream), &format!("ws://{addr}/ws"), origin).await
    }

    /// A WebSocket handshake for `url` over `stream`.
    pub(crate) async fn over(
        stream: Box<dyn Stream>,
        url: &str,
        origin: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(o) = origin {
            request
                .headers_mut()
                .insert("origin", HeaderValue::from_str(o).unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("handshake in time")?;
        Ok(Ws { ws, calls: 0 })
    }

    pub(crate) async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("WebSocket send");
    }

    pub(crate) async fn send_json(&mut self, frame: Value) {
        self.send_message(Message::text(frame.to_string())).await;
    }

    /// The next frame, as JSON; fails the test after [`WAIT`].
    pub(crate) async fn recv(&mut self) -> Value {
        self.recv_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no frame within {WAIT:?} (or the WebSocket closed)"))
    }

    /// The next frame, or `None` if the WebSocket closes or nothing comes within `wait`.
    pub(crate) async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let next = tokio::time::timeout(wait, self.ws.next()).await.ok()??;
            match next.ok()? {
                Message::Text(t) => {
                    assert!(!t.contains('\n'), "one frame per message: {t:?}");
                    return Some(serde_json::from_str(&t).expect("a JSON frame"));
                }
                Message::Close(_) => return None,
                Message::Binary(b) => panic!("the server sent a binary message: {b:?}"),
                _ => continue,
            }
        }
    }

    /// Asserts the server closes the WebSocket without another frame.
    pub(crate) async fn expect_closed(&mut self) {
        if let Some(f) = self.recv_within(WAIT).await {
            panic!("unexpected frame before close: {f}");
        }
    }

    pub(crate) async fn request(&mut self, frame: Value) -> Value {
        self.send_json(frame).await;
        self.recv().await
    }

    pub(crate) async fn login(&mut self, user: &str) -> Value {
        let password = password_of(user);
        self.request(query(
            json!({"req": "login", "user": user, "password": password}),
        ))
        .await
    }
}

impl Frames for Ws {
    async fn send_frame(&mut self, frame: Value) {
        self.send_json(frame).await;
    }

    async fn next_frame(&mut self) -> Value {
        self.recv().await
    }

    fn call_id(&mut self) -> String {
        self.calls += 1;
        format!("ws-call-{}", self.calls)
    }
}

/// A response to [`http_get`].
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `GET path` on its own connection (`Connection: close`), read to the end.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The value of the metric line starting with `prefix` (name and labels).
pub(crate) fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}
