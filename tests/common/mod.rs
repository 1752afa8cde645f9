//! Shared helpers for the integration tests: an in-process server on port 0 and
//! a raw line client that speaks JSON frames over a real socket.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moechat::{Server, ServerConfig, ServerError, ServerHandle};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub(crate) mod web;

/// How long a test waits for a frame before failing instead of hanging.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    join: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    pub(crate) async fn start(config: ServerConfig) -> TestServer {
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let handle = server.handle();
        let join = tokio::spawn(server.run());
        TestServer { addr, handle, join }
    }

    /// A server on a free port with an in-memory store and users alice, bob and carol.
    pub(crate) async fn with_users() -> TestServer {
        TestServer::with_users_config(ServerConfig::ephemeral()).await
    }

    pub(crate) async fn with_users_config(config: ServerConfig) -> TestServer {
        let s = TestServer::start(config).await;
        for (u, p) in [
            ("alice", "wonderland"),
            ("bob", "builder"),
            ("carol", "singer"),
        ] {
            s.handle.add_user(u, p).await.expect("user created");
        }
        s
    }

    /// [`TestServer::with_users`] with a heartbeat of `interval`.
    pub(crate) async fn with_heartbeat(interval: Duration) -> TestServer {
        TestServer::with_users_config(ServerConfig {
            heartbeat: interval,
            ..ServerConfig::ephemeral()
        })
        .await
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    pub(crate) async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    /// A raw connection logged in as `user` (password as in [`TestServer::with_users`]).
    pub(crate) async fn logged_in(&self, user: &str) -> Raw {
        let mut r = self.raw().await;
        let reply = r.login(user, password_of(user)).await;
        assert_eq!(reply["status_code"], 10, "{reply}");
        r
    }

    pub(crate) async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(WAIT, self.join)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server run");
    }
}

pub(crate) fn password_of(user: &str) -> &'static str {
    match user {
        "alice" => "wonderland",
        "bob" => "builder",
        "carol" => "singer",
        _ => "password",
    }
}

pub(crate) struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Bytes of a line whose read was cut short by a timeout; kept for the next read.
    partial: Vec<u8>,
    calls: u64,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).await.expect("connect"))
    }

    pub(crate) fn from_stream(stream: TcpStream) -> Raw {
        let (r, w) = stream.into_split();
        Raw {
            reader: BufReader::new(r),
            writer: w,
            partial: Vec::new(),
            calls: 0,
        }
    }

    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    pub(crate) async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await
    }

    pub(crate) async fn send(&mut self, line: impl AsRef<str>) {
        let mut bytes = line.as_ref().as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_bytes(&bytes).await;
    }

    pub(crate) async fn send_json(&mut self, frame: Value) {
        self.send(frame.to_string()).await;
    }

    /// The next frame, as JSON; fails the test after [`WAIT`].
    pub(crate) async fn recv(&mut self) -> Value {
        match self.recv_within(WAIT).await {
            Some(v) => v,
            None => panic!("no frame within {WAIT:?} (or the connection closed)"),
        }
    }

    /// The next frame, or `None` if the connection closes or nothing arrives within `wait`.
    pub(crate) async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let read =
            tokio::time::timeout(wait, self.reader.read_until(b'\n', &mut self.partial)).await;
        match read {
            Ok(Ok(_)) if self.partial.ends_with(b"\n") => {
                let line = std::mem::take(&mut self.partial);
                let v = serde_json::from_slice(&line).unwrap_or_else(|e| {
                    panic!(
                        "server sent invalid JSON {:?}: {e}",
                        String::from_utf8_lossy(&line)
                    )
                });
                Some(v)
            }
            Ok(Ok(_)) => {
                assert!(self.partial.is_empty(), "connection closed mid-frame");
                None
            }
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Asserts the server closes the connection (EOF or reset) without sending more.
    pub(crate) async fn expect_closed(&mut self) {
        let mut rest = std::mem::take(&mut self.partial);
        let r = tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest))
            .await
            .expect("connection closes in time");
        if r.is_ok() {
            assert!(
                rest.is_empty(),
                "unexpected bytes before close: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
    }

    pub(crate) async fn request(&mut self, frame: Value) -> Value {
        self.send_json(frame).await;
        self.recv().await
    }

    pub(crate) async fn login(&mut self, user: &str, password: &str) -> Value {
        self.request(query(
            json!({"req": "login", "user": user, "password": password}),
        ))
        .await
    }

    /// Sends a ping and checks the pong: the connection still serves requests.
    pub(crate) async fn assert_serving(&mut self) {
        let r = self
            .request(json!({"status":"q","status_code":0,"info":{"req":"ping"},"id":"alive"}))
            .await;
        assert_eq!(
            r,
            json!({"status":"r","status_code":30,"info":{"req":"pong"},"id":"alive"})
        );
    }
}

/// A connection carrying frames (a TCP socket, a WebSocket), and requests on top.
pub(crate) trait Frames {
    async fn send_frame(&mut self, frame: Value);
    /// The next frame; fails the test after [`WAIT`].
    async fn next_frame(&mut self) -> Value;
    /// A fresh `id` for [`Frames::call`].
    fn call_id(&mut self) -> String;

    /// Sends `frame` with a fresh `id` and returns the frame carrying that id,
    /// skipping pushes that arrive first.
    async fn call(&mut self, mut frame: Value) -> Value {
        let id = self.call_id();
        frame["id"] = json!(id);
        self.send_frame(frame).await;
        loop {
            let f = self.next_frame().await;
            if f["id"] == json!(id) {
                return f;
            }
            assert_eq!(
                f["status"], "m",
                "only pushes may come before the reply: {f}"
            );
        }
    }
}

impl Frames for Raw {
    async fn send_frame(&mut self, frame: Value) {
        self.send_json(frame).await;
    }

    async fn next_frame(&mut self) -> Value {
        self.recv().await
    }

    fn call_id(&mut self) -> String {
        self.calls += 1;
        format!("call-{}", self.calls)
    }
}

pub(crate) fn query(info: Value) -> Value {
    json!({"status": "q", "status_code": 0, "info": info})
}

pub(crate) fn direct(to: &str, text: &str) -> Value {
    json!({"status": "m", "status_code": 80, "info": {"to": to, "text": text}})
}

pub(crate) fn broadcast(text: &str) -> Value {
    json!({"status": "m", "status_code": 90, "info": {"text": text}})
}

/// Asserts `frame` has `status`/`code` and a non-empty `error` sentence.
pub(crate) fn assert_error(frame: &Value, status: &str, code: u64) {
    assert_eq!(frame["status"], status, "{frame}");
    assert_eq!(frame["status_code"], code, "{frame}");
    let error = frame["info"]["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "error sentence missing: {frame}");
}

/// A loopback proxy in front of the server whose connections the test can cut
/// (reset, not closed) and whose backend it can switch.
pub(crate) struct Proxy {
    pub port: u16,
    cut: broadcast::Sender<()>,
    pub backend: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    pub(crate) async fn start(backend: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = broadcast::channel(16);
        let backend = Arc::new(Mutex::new(backend));
        let (cut_tx, target) = (cut.clone(), backend.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let addr = *target.lock().unwrap();
                let mut cut = cut_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(addr).await else {
                        let _ = client.set_zero_linger();
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.recv() => {
                            // SO_LINGER 0: the client sees a reset, as when a network drops.
                            let _ = client.set_zero_linger();
                        }
                    }
                });
            }
        });
        Proxy { port, cut, backend }
    }

    pub(crate) fn cut(&self) {
        let _ = self.cut.send(());
    }
}
