//! The HTTP listener over real sockets: the protocol over WebSocket (a WS user and
//! a TCP user chatting, bad messages answered as TCP lines are, limits, shutdown),
//! the origin check, `/metrics`, `/healthz` and the page's headers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::web::{http_get, metric, refused_status, Ws};
use common::*;
use moechat::config::HttpListen;
use moechat::ServerConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn with_http(config: ServerConfig) -> ServerConfig {
    ServerConfig {
        http: Some(HttpListen {
            host: "127.0.0.1".into(),
            port: 0,
        }),
        ..config
    }
}

async fn web_server() -> (TestServer, SocketAddr) {
    web_server_with(ServerConfig::ephemeral()).await
}

async fn web_server_with(config: ServerConfig) -> (TestServer, SocketAddr) {
    let server = TestServer::with_users_config(with_http(config)).await;
    let http = server.handle.http_addr().expect("the HTTP listener is on");
    (server, http)
}

#[tokio::test]
async fn a_websocket_user_and_a_tcp_user_chat() {
    let (server, http) = web_server().await;
    let mut alice = Ws::connect(http).await;
    let login = alice.login("alice").await;
    assert_eq!(login["status_code"], 10, "{login}");
    let mut bob = server.logged_in("bob").await;

    let sent = alice.call(direct("bob", "hi from the browser")).await;
    assert_eq!(sent["status_code"], 50, "{sent}");
    let push = bob.recv().await;
    assert_eq!(push["info"]["from"], "alice");
    assert_eq!(push["info"]["text"], "hi from the browser");

    let sent = bob.call(direct("alice", "hi from a socket")).await;
    assert_eq!(sent["status_code"], 50, "{sent}");
    let push = alice.recv().await;
    assert_eq!(push["status"], "m");
    assert_eq!(push["info"]["from"], "bob");
    assert_eq!(push["info"]["text"], "hi from a socket");

    let users = alice.call(query(json!({"req": "users"}))).await;
    assert_eq!(users["info"]["users"], json!(["alice", "bob"]));
    server.stop().await;
}

#[tokio::test]
async fn a_message_is_one_frame_whatever_its_layout() {
    let (server, http) = web_server().await;
    let mut ws = Ws::connect(http).await;
    // Pretty-printed JSON: its newlines are whitespace, not frame ends.
    let pretty = "{\n  \"status\": \"q\",\n  \"status_code\": 0,\n  \"info\": {\"req\": \"ping\"},\n  \"id\": 7\n}\n";
    ws.send_message(Message::text(pretty)).await;
    assert_eq!(
        ws.recv().await,
        json!({"status":"r","status_code":30,"info":{"req":"pong"},"id":7})
    );
    // Two frames in one message are one malformed frame, not two requests.
    let two = "{\"status\":\"q\",\"status_code\":0,\"info\":{\"req\":\"ping\"}}\n{\"status\":\"q\",\"status_code\":0,\"info\":{\"req\":\"ping\"}}";
    ws.send_message(Message::text(two)).await;
    assert_error(&ws.recv().await, "e", 62);
    // A raw newline inside a string is as malformed as it is on TCP.
    ws.send_message(Message::text(
        "{\"status\":\"q\",\"status_code\":0,\"info\":{\"req\":\"pi\nng\"}}",
    ))
    .await;
    assert_error(&ws.recv().await, "e", 62);
    // An empty message is an empty line: ignored.
    ws.send_message(Message::text("")).await;
    assert!(ws.recv_within(Duration::from_millis(300)).await.is_none());
    let pong = ws.call(query(json!({"req": "ping"}))).await;
    assert_eq!(pong["status_code"], 30);
    server.stop().await;
}

#[tokio::test]
async fn a_binary_message_is_62_and_the_connection_stays() {
    let (server, http) = web_server().await;
    let mut ws = Ws::connect(http).await;
    let frame = query(json!({"req": "ping"})).to_string();
    ws.send_message(Message::binary(frame.into_bytes())).await;
    let refused = ws.recv().await;
    assert_error(&refused, "e", 62);
    assert!(
        refused["info"]["error"]
            .as_str()
            .unwrap()
            .contains("binary"),
        "{refused}"
    );
    assert_eq!(ws.login("alice").await["status_code"], 10);
    server.stop().await;
}

#[tokio::test]
async fn a_message_over_the_frame_limit_is_61_and_closes() {
    for extra in [1, 10_000] {
        let (server, http) = web_server_with(ServerConfig {
            max_frame_bytes: 1024,
            ..ServerConfig::ephemeral()
        })
        .await;
        let mut ws = Ws::connect(http).await;
        // Exactly at the limit is fine (a malformed frame, answered, connection kept).
        ws.send_message(Message::text("x".repeat(1024))).await;
        assert_error(&ws.recv().await, "e", 62);
        ws.send_message(Message::text("x".repeat(1024 + extra)))
            .await;
        assert_error(&ws.recv().await, "e", 61);
        ws.expect_closed().await;
        server.stop().await;
    }
}

#[tokio::test]
async fn another_sites_page_is_refused_with_403() {
    let (server, http) = web_server_with(ServerConfig {
        http_origins: vec!["https://chat.example.com".into()],
        ..ServerConfig::ephemeral()
    })
    .await;
    let refused = Ws::try_connect(http, Some("https://evil.example"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused_status(&refused), Some(403), "{refused}");
    // Another port of the same host is another origin.
    let refused = Ws::try_connect(http, Some("http://127.0.0.1:1"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused_status(&refused), Some(403));
    let own = format!("http://{http}");
    for origin in [own.as_str(), "https://chat.example.com"] {
        let mut ws = Ws::try_connect(http, Some(origin)).await.expect("allowed");
        assert_eq!(
            ws.call(query(json!({"req": "ping"}))).await["status_code"],
            30
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn websockets_count_toward_max_connections() {
    let (server, http) = web_server_with(ServerConfig {
        max_connections: 1,
        ..ServerConfig::ephemeral()
    })
    .await;
    let mut first = Ws::connect(http).await;
    assert_eq!(
        first.call(query(json!({"req": "ping"}))).await["status_code"],
        30
    );
    let mut second = Ws::connect(http).await;
    assert_error(&second.recv().await, "e", 68);
    second.expect_closed().await;
    // A TCP connection is refused too: one limit for both transports.
    let mut tcp = server.raw().await;
    assert_error(&tcp.recv().await, "e", 68);
    drop(first);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_says_65_to_websockets_and_waits_for_them() {
    let (server, http) = web_server().await;
    let mut ws = Ws::connect(http).await;
    assert_eq!(ws.login("alice").await["status_code"], 10);
    server.handle.shutdown();
    assert_error(&ws.recv().await, "e", 65);
    ws.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn the_heartbeat_runs_over_websockets_too() {
    let (server, http) = web_server_with(ServerConfig {
        heartbeat: Duration::from_millis(200),
        ..ServerConfig::ephemeral()
    })
    .await;
    let mut ws = Ws::connect(http).await;
    let ping = ws.recv().await;
    assert_eq!(ping["status"], "q");
    assert_eq!(ping["info"]["req"], "ping");
    // Silence after the ping: closed with 66.
    assert_error(&ws.recv().await, "e", 66);
    ws.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn a_newer_websocket_login_takes_over_a_tcp_session() {
    let (server, http) = web_server().await;
    let mut tcp = server.logged_in("alice").await;
    let mut ws = Ws::connect(http).await;
    assert_eq!(ws.login("alice").await["status_code"], 10);
    assert_error(&tcp.recv().await, "e", 64);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_connections_logins_messages_and_deliveries() {
    let (server, http) = web_server().await;
    let mut ws = Ws::connect(http).await;
    assert_eq!(ws.login("alice").await["status_code"], 10);
    let mut bob = server.logged_in("bob").await;
    let mut wrong = server.raw().await;
    assert_error(&wrong.login("carol", "nope").await, "r", 20);
    assert_eq!(ws.call(direct("bob", "one")).await["status_code"], 50);
    bob.recv().await;
    assert_eq!(ws.call(direct("carol", "later")).await["status_code"], 51);
    assert_eq!(ws.call(broadcast("all")).await["status_code"], 50);
    bob.recv().await;

    let reply = http_get(http, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = &reply.body;
    assert_eq!(
        metric(text, "moechat_connections_open{transport=\"ws\"}"),
        1.0
    );
    assert_eq!(
        metric(text, "moechat_connections_open{transport=\"tcp\"}"),
        2.0
    );
    assert_eq!(metric(text, "moechat_logins_total{outcome=\"ok\"}"), 2.0);
    assert_eq!(
        metric(text, "moechat_logins_total{outcome=\"failed\"}"),
        1.0
    );
    let accepted = |kind: &str, outcome: &str| {
        let name =
            format!("moechat_messages_accepted_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}");
        metric(text, &name)
    };
    assert_eq!(accepted("direct", "delivered"), 1.0);
    assert_eq!(accepted("direct", "stored"), 1.0);
    assert_eq!(accepted("broadcast", "delivered"), 1.0);
    assert_eq!(metric(text, "moechat_deliveries_total"), 2.0);
    assert_eq!(metric(text, "moechat_users_online"), 2.0);
    // Three appends, each durable before its answer: at least one commit observed.
    assert!(metric(text, "moechat_store_commit_seconds_count") >= 1.0);
    assert_eq!(metric(text, "moechat_store_batch_messages_sum"), 3.0);
    assert!(text.contains("moechat_build_info{version=\""), "{text}");
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn slow_consumers_and_rate_limits_are_counted() {
    let (server, http) = web_server_with(ServerConfig {
        rate_limit: 1.0,
        rate_burst: 1,
        ..ServerConfig::ephemeral()
    })
    .await;
    let mut alice = server.logged_in("alice").await;
    assert_eq!(alice.call(direct("bob", "1")).await["status_code"], 51);
    assert_error(&alice.call(direct("bob", "2")).await, "e", 74);
    let text = http_get(http, "/metrics").await.body;
    assert_eq!(metric(&text, "moechat_rate_limited_frames_total"), 1.0);
    assert_eq!(metric(&text, "moechat_slow_consumers_closed_total"), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn healthz_is_200_while_the_store_takes_writes() {
    let (server, http) = web_server().await;
    let ok = http_get(http, "/healthz").await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    server.stop().await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let (server, http) = web_server().await;
    let page = http_get(http, "/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(
        page.body.contains("<title>MoeChat</title>"),
        "the page names itself"
    );
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/moechat.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let r = http_get(http, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!r.body.trim().is_empty(), "{path}");
    }
    assert_eq!(http_get(http, "/nothing-here").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn http_off_means_no_listener() {
    let server = TestServer::with_users().await;
    assert_eq!(server.handle.http_addr(), None);
    server.stop().await;
}
