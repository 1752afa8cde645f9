//! TLS end to end: a CA and certificates made at run time with rcgen, a TLS server,
//! the Rust client verifying it, and every way verification must fail.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Frames, TestServer, WAIT};
use moechat::client::{ClientError, ClientOptions, TlsOptions};
use moechat::{Client, Server, ServerConfig, ServerError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A throwaway CA in a temporary directory, issuing server certificates as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca: PathBuf,
}

/// A certificate and its key, as files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs must not look like the same issuer.
        let name = format!("MoeChat test CA {}", dir.path().display());
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            dir,
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// A certificate for `names`, valid now unless `expired`.
    fn leaf(&self, file: &str, names: &[&str], expired: bool) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

fn tls_config(leaf: &Leaf) -> ServerConfig {
    ServerConfig {
        tls_cert: Some(leaf.cert.clone()),
        tls_key: Some(leaf.key.clone()),
        ..ServerConfig::ephemeral()
    }
}

fn trusting(ca: &std::path::Path) -> ClientOptions {
    ClientOptions {
        tls: Some(TlsOptions {
            ca: Some(ca.to_path_buf()),
            server_name: None,
        }),
        ..ClientOptions::no_reconnect()
    }
}

async fn connect(host: &str, port: u16, options: ClientOptions) -> Result<Client, ClientError> {
    tokio::time::timeout(WAIT, Client::connect_with(host, port, options))
        .await
        .expect("connect finishes")
        .map(|(client, _)| client)
}

fn tls_reason(result: Result<Client, ClientError>) -> String {
    match result {
        Err(e @ ClientError::Tls { .. }) => {
            eprintln!("{e}");
            e.to_string()
        }
        Err(other) => panic!("expected a TLS error, got {other:?}"),
        Ok(_) => panic!("expected a TLS error, got a connection"),
    }
}

#[tokio::test]
async fn chat_works_the_same_over_tls() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost", "127.0.0.1"], false);
    let server = TestServer::with_users_config(tls_config(&leaf)).await;
    let (alice, _) = Client::connect_with("localhost", server.port(), trusting(&pki.ca))
        .await
        .expect("TLS connection to localhost");
    let (bob, mut bob_in) = Client::connect_with("127.0.0.1", server.port(), trusting(&pki.ca))
        .await
        .expect("TLS connection to 127.0.0.1");
    alice.login("alice", "wonderland").await.unwrap();
    bob.login("bob", "builder").await.unwrap();
    let sent = alice.send("bob", "over TLS").await.unwrap();
    assert!(!sent.stored);
    let got = tokio::time::timeout(WAIT, bob_in.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.from.as_str(), got.text.as_str()),
        ("alice", "over TLS")
    );
    assert_eq!(got.msg_id, sent.msg_id);
    assert_eq!(server.handle.online_users(), ["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let leaf = pki.leaf("other", &["chat.example.org"], false);
    let server = TestServer::start(tls_config(&leaf)).await;
    let reason = tls_reason(connect("localhost", server.port(), trusting(&pki.ca)).await);
    assert!(reason.contains("not valid for name"), "{reason}");
    // The name can be given when it is not the host dialled.
    let mut options = trusting(&pki.ca);
    options.tls.as_mut().unwrap().server_name = Some("chat.example.org".into());
    let client = connect("localhost", server.port(), options).await.unwrap();
    client.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let leaf = pki.leaf("old", &["localhost"], true);
    let server = TestServer::start(tls_config(&leaf)).await;
    let reason = tls_reason(connect("localhost", server.port(), trusting(&pki.ca)).await);
    assert!(reason.contains("expired"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let leaf = stranger.leaf("server", &["localhost"], false);
    let server = TestServer::start(tls_config(&leaf)).await;
    let reason = tls_reason(connect("localhost", server.port(), trusting(&pki.ca)).await);
    assert!(reason.contains("not from a trusted CA"), "{reason}");
    // Nor do the system's roots know a CA made a moment ago.
    let system = ClientOptions {
        tls: Some(TlsOptions::default()),
        ..ClientOptions::no_reconnect()
    };
    tls_reason(connect("localhost", server.port(), system).await);
    // The server is unharmed by failed handshakes.
    let ok = connect("localhost", server.port(), trusting(&stranger.ca))
        .await
        .unwrap();
    ok.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_plain_client_is_told_the_port_speaks_tls() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost"], false);
    let server = TestServer::start(tls_config(&leaf)).await;
    let mut raw = server.raw().await;
    raw.send(r#"{"status":"q","status_code":10,"info":{"user":"alice","password":"x"}}"#)
        .await;
    let frame = raw.recv().await;
    common::assert_error(&frame, "e", 62);
    assert!(
        frame["info"]["error"].as_str().unwrap().contains("TLS"),
        "{frame}"
    );
    raw.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_to_a_plain_server_fails_clearly() {
    let server = TestServer::start(ServerConfig::ephemeral()).await;
    let pki = Pki::new();
    let reason = tls_reason(connect("127.0.0.1", server.port(), trusting(&pki.ca)).await);
    assert!(
        reason.contains("does the server speak TLS") || reason.contains("closed the connection"),
        "{reason}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_silent_connection_does_not_hold_the_handshake_forever() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost"], false);
    let server = TestServer::start(tls_config(&leaf)).await;
    // A connection that sends nothing must not stop others from being served meanwhile.
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let client = connect("localhost", server.port(), trusting(&pki.ca))
        .await
        .unwrap();
    client.ping().await.unwrap();
    // And shutdown is not held up by it.
    tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("shutdown with a silent connection open");
}

#[tokio::test]
async fn bad_tls_material_stops_the_server_from_starting() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["localhost"], false);
    let b = pki.leaf("b", &["localhost"], false);
    let mismatched = ServerConfig {
        tls_cert: Some(a.cert.clone()),
        tls_key: Some(b.key.clone()),
        ..ServerConfig::ephemeral()
    };
    let err = Server::bind(mismatched).await.err().expect("refused");
    assert!(matches!(err, ServerError::Tls(_)), "{err}");
    let swapped = ServerConfig {
        tls_cert: Some(a.key.clone()),
        tls_key: Some(a.cert.clone()),
        ..ServerConfig::ephemeral()
    };
    let err = Server::bind(swapped).await.err().expect("refused");
    assert!(err.to_string().contains("no certificate in it"), "{err}");
    let half = ServerConfig {
        tls_cert: Some(a.cert.clone()),
        ..ServerConfig::ephemeral()
    };
    let err = Server::bind(half).await.err().expect("refused");
    assert!(matches!(err, ServerError::Config(_)), "{err}");
}

#[tokio::test]
async fn frames_over_tls_are_byte_for_byte_the_protocol() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost"], false);
    let server = TestServer::start(tls_config(&leaf)).await;
    let connector = moechat::tls::connector(Some(&pki.ca)).unwrap();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = moechat::tls::server_name("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (rd, mut wr) = tokio::io::split(tls);
    wr.write_all(b"{\"status\":\"q\",\"status_code\":0,\"info\":{\"req\":\"ping\"},\"id\":7}\n")
        .await
        .unwrap();
    let mut line = String::new();
    let mut rd = BufReader::new(rd);
    tokio::time::timeout(WAIT, rd.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let frame: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(frame["status"], "r");
    assert_eq!(frame["status_code"], 30);
    assert_eq!(frame["info"]["req"], "pong");
    assert_eq!(frame["id"], 7);
    assert!(line.ends_with('\n'));
    server.stop().await;
}

#[tokio::test]
async fn a_tls_client_reconnects_over_tls_and_resumes() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost"], false);
    let server = TestServer::with_users_config(tls_config(&leaf)).await;
    let proxy = common::Proxy::start(server.addr).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let options = ClientOptions {
        reconnect: true,
        on_event: Some(Arc::new(move |e| {
            seen.lock().unwrap().push(format!("{e:?}"))
        })),
        ..trusting(&pki.ca)
    };
    let (bob, mut bob_in) = Client::connect_with("localhost", proxy.port, options)
        .await
        .unwrap();
    bob.login("bob", "builder").await.unwrap();
    let (alice, _) = Client::connect_with("localhost", server.port(), trusting(&pki.ca))
        .await
        .unwrap();
    alice.login("alice", "wonderland").await.unwrap();
    proxy.cut();
    alice.send("bob", "after the cut").await.unwrap();
    let got = tokio::time::timeout(WAIT, bob_in.recv())
        .await
        .expect("delivered after the reconnect")
        .unwrap();
    assert_eq!(got.text, "after the cut");
    // The resumed connection is TLS too: it still answers.
    bob.ping().await.unwrap();
    let events = events.lock().unwrap().clone();
    assert!(events.iter().any(|e| e == "Reconnected"), "{events:?}");
    server.stop().await;
}

/// Connections over the limit to a TLS server are each told `e`/68 after a handshake,
/// and a silent one holds its refusal task for up to 2 s. Those tasks are capped:
/// past `REFUSALS_AT_ONCE` a connection is closed at once. Before, every one of the
/// silent connections below held a task for the full 2 s.
#[tokio::test]
async fn refusals_over_the_connection_limit_are_capped() {
    use moechat::server::REFUSALS_AT_ONCE;
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost"], false);
    let server = TestServer::start(ServerConfig {
        max_connections: 1,
        ..tls_config(&leaf)
    })
    .await;
    let _only = TcpStream::connect(server.addr).await.unwrap();
    let extra = REFUSALS_AT_ONCE + 36;
    let mut silent = Vec::new();
    for _ in 0..extra {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Closed at once: EOF (or a reset) well before the 2 s a held refusal lasts.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let reads = silent.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout_at(deadline, s.read(&mut byte)).await,
                Ok(Ok(0) | Err(_))
            )
        })
    });
    let mut closed = 0;
    for r in reads.collect::<Vec<_>>() {
        closed += usize::from(r.await.unwrap());
    }
    assert!(
        closed >= extra - REFUSALS_AT_ONCE,
        "{closed} of {extra} closed at once"
    );
    assert!(
        closed < extra,
        "the first {REFUSALS_AT_ONCE} are held for a goodbye"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_http_listener_speaks_https_and_wss_with_the_same_certificate() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", &["localhost"], false);
    let server = TestServer::with_users_config(ServerConfig {
        http: Some(moechat::config::HttpListen {
            host: "127.0.0.1".into(),
            port: 0,
        }),
        ..tls_config(&leaf)
    })
    .await;
    let http = server.handle.http_addr().unwrap();
    let connector = moechat::tls::connector(Some(&pki.ca)).unwrap();
    let name = moechat::tls::server_name("localhost").unwrap();
    let tls = connector
        .connect(name, tokio::net::TcpStream::connect(http).await.unwrap())
        .await
        .expect("HTTPS handshake");
    let url = format!("wss://localhost:{}/ws", http.port());
    // A browser page of this server would send its own https origin.
    let origin = format!("https://localhost:{}", http.port());
    let mut ws = common::web::Ws::over(Box::new(tls), &url, Some(&origin))
        .await
        .expect("WebSocket over TLS");
    assert_eq!(ws.login("alice").await["status_code"], 10);
    let sent = ws.call(common::direct("bob", "over wss")).await;
    assert_eq!(sent["status_code"], 51, "{sent}");
    // A plain-text request to the HTTPS port gets no page.
    let mut plain = tokio::net::TcpStream::connect(http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut got)).await;
    assert!(
        !String::from_utf8_lossy(&got).contains("<html"),
        "no page over plain HTTP"
    );
    server.stop().await;
}
