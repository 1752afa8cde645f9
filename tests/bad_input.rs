//! PROTOCOL.md 3.6 and the issue's bad-input list, over real sockets: each bad
//! thing gets its exact frame back, and the connection (or, where it is
//! closed, the server) still serves the next request.

mod common;

use std::time::Duration;

use common::*;
use moechat::ServerConfig;
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_62_and_the_connection_stays() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for line in ["this is not json", "{\"status\":", "{oops}", "}"] {
        c.send(line).await;
        let r = c.recv().await;
        assert_error(&r, "e", 62);
        assert!(
            r["info"]["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed frame"),
            "{r}"
        );
        assert!(r.get("id").is_none());
        c.assert_serving().await;
    }
    s.stop().await;
}

#[tokio::test]
async fn non_utf8_bytes_are_62() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    c.send_bytes(b"{\"status\":\"q\",\"status_code\":0,\"info\":{\"req\":\"\xff\xfe\"}}\n")
        .await;
    assert_error(&c.recv().await, "e", 62);
    c.send_bytes(b"\xc3\x28\n").await;
    assert_error(&c.recv().await, "e", 62);
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn arrays_and_scalars_are_62() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for line in ["[1,2,3]", "[]", "42", "\"q\"", "true", "null", "3.5"] {
        c.send(line).await;
        assert_error(&c.recv().await, "e", 62);
    }
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn a_one_mib_line_is_61_then_closed_and_the_server_serves_on() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    let mut line = vec![b'a'; 1 << 20];
    line.push(b'\n');
    // The server may close before it has read everything; a write error is fine.
    let _ = c.try_send_bytes(&line).await;
    let r = c.recv().await;
    assert_error(&r, "e", 61);
    c.expect_closed().await;
    let mut next = s.raw().await;
    next.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn a_frame_at_the_limit_is_accepted() {
    let config = ServerConfig {
        max_frame_bytes: 200,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut c = s.raw().await;
    let base = r#"{"status":"q","status_code":0,"info":{"req":"ping","pad":""}}"#;
    let pad = "x".repeat(200 - base.len());
    let line = base.replace("\"pad\":\"\"", &format!("\"pad\":\"{pad}\""));
    assert_eq!(line.len(), 200);
    c.send(&line).await;
    assert_eq!(c.recv().await["status_code"], 30);
    c.send(format!("{line} ")).await;
    assert_error(&c.recv().await, "e", 61);
    c.expect_closed().await;
    s.stop().await;
}

#[tokio::test]
async fn invalid_envelopes_are_63_with_the_id_echoed() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    let cases = [
        json!({"status": "x", "status_code": 0, "info": {"req": "ping"}, "id": 1}),
        json!({"status": "qq", "status_code": 0, "id": 1}),
        json!({"status": 5, "status_code": 0, "id": 1}),
        json!({"status_code": 0, "id": 1}),
        json!({"status": "q", "id": 1}),
        json!({"status": "q", "status_code": -1, "id": 1}),
        json!({"status": "q", "status_code": 101, "id": 1}),
        json!({"status": "q", "status_code": 3.5, "id": 1}),
        json!({"status": "q", "status_code": "10", "id": 1}),
        json!({"status": "m", "status_code": 70, "info": {"to": "bob", "text": "x"}, "id": 1}),
        json!({"status": "q", "status_code": 0, "info": "ping", "id": 1}),
    ];
    for frame in cases {
        let r = c.request(frame.clone()).await;
        assert_error(&r, "e", 63);
        assert_eq!(r["id"], 1, "id echoed for {frame}");
        c.assert_serving().await;
    }
    // An invalid id cannot be echoed.
    let r = c
        .request(json!({"status": "q", "status_code": 0, "id": [1]}))
        .await;
    assert_error(&r, "e", 63);
    assert!(r.get("id").is_none());
    s.stop().await;
}

#[tokio::test]
async fn unknown_requests() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    let r = c.request(query(json!({"req": "dance"}))).await;
    assert_error(&r, "r", 41);
    let mut c = s.logged_in("alice").await;
    let r = c.request(query(json!({"req": "dance"}))).await;
    assert_error(&r, "r", 40);
    let r = c.request(query(json!({}))).await;
    assert_error(&r, "r", 40);
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn requests_before_login() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for req in ["users", "history", "logout"] {
        let r = c.request(query(json!({"req": req, "with": "bob"}))).await;
        assert_error(&r, "r", 41);
    }
    assert_error(&c.request(direct("bob", "hi")).await, "e", 70);
    assert_error(&c.request(broadcast("hi")).await, "e", 70);
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn message_errors() {
    let config = ServerConfig {
        max_text_bytes: 16,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut c = s.logged_in("alice").await;
    assert_error(&c.request(direct("nobody", "hi")).await, "e", 71);
    assert_error(&c.request(direct("bob", "")).await, "e", 73);
    assert_error(&c.request(direct("bob", &"x".repeat(17))).await, "e", 73);
    assert_error(&c.request(broadcast("")).await, "e", 73);
    assert_error(&c.request(broadcast(&"x".repeat(17))).await, "e", 73);
    assert_error(&c.request(direct("Bob", "hi")).await, "e", 72);
    assert_error(&c.request(direct("bob smith", "hi")).await, "e", 72);
    let no_to = json!({"status":"m","status_code":80,"info":{"text":"hi"}});
    assert_error(&c.request(no_to).await, "e", 72);
    let bad_text = json!({"status":"m","status_code":80,"info":{"to":"bob","text":5}});
    assert_error(&c.request(bad_text).await, "e", 72);
    let long_nonce = json!({"status":"m","status_code":80,"info":{"to":"bob","text":"hi","nonce":"n".repeat(65)}});
    assert_error(&c.request(long_nonce).await, "e", 72);
    // The limit is in bytes: 16 bytes of UTF-8 pass, 17 do not.
    let r = c.request(direct("bob", &"é".repeat(8))).await;
    assert_eq!(r["status_code"], 51, "{r}");
    assert_error(
        &c.request(direct("bob", &format!("x{}", "é".repeat(8))))
            .await,
        "e",
        73,
    );
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn names_with_uppercase_or_spaces() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for name in ["Alice", "al ice", "", &"a".repeat(33)] {
        let r = c.login(name, "wonderland").await;
        assert_error(&r, "r", 21);
        let r = c
            .request(query(
                json!({"req": "register", "user": name, "password": "pw"}),
            ))
            .await;
        assert_error(&r, "r", 42);
    }
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn login_and_register_argument_errors() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    assert_error(
        &c.request(query(json!({"req": "login", "user": "alice"})))
            .await,
        "r",
        21,
    );
    assert_error(
        &c.request(query(
            json!({"req": "login", "user": "alice", "password": 5}),
        ))
        .await,
        "r",
        21,
    );
    assert_error(
        &c.request(query(json!({"req": "register", "user": "dave"})))
            .await,
        "r",
        42,
    );
    let r = c
        .request(query(
            json!({"req": "register", "user": "alice", "password": "x"}),
        ))
        .await;
    assert_error(&r, "r", 43);
    // A malformed login is not a failed attempt: five of them do not close the connection.
    for _ in 0..6 {
        assert_error(&c.request(query(json!({"req": "login"}))).await, "r", 21);
    }
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn history_argument_errors() {
    let s = TestServer::with_users().await;
    let mut c = s.logged_in("alice").await;
    for info in [
        json!({"req": "history"}),
        json!({"req": "history", "with": "Bob"}),
        json!({"req": "history", "with": "bob", "limit": 0}),
        json!({"req": "history", "with": "bob", "limit": 501}),
        json!({"req": "history", "with": "bob", "limit": "5"}),
        json!({"req": "history", "with": "bob", "before": -1}),
    ] {
        assert_error(&c.request(query(info)).await, "r", 42);
    }
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn too_many_failed_logins_is_22_then_closed() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for _ in 0..4 {
        assert_error(&c.login("alice", "wrong").await, "r", 20);
    }
    // The unknown user gets the same answer as the wrong password.
    let mut d = s.raw().await;
    assert_eq!(d.login("nobody", "wrong").await, c_login_20());
    let mut frame = query(json!({"req": "login", "user": "alice", "password": "wrong"}));
    frame["id"] = json!("last");
    let r = c.request(frame).await;
    assert_error(&r, "r", 22);
    assert_eq!(r["id"], "last");
    c.expect_closed().await;
    let mut next = s.raw().await;
    assert_eq!(next.login("alice", "wonderland").await["status_code"], 10);
    s.stop().await;
}

fn c_login_20() -> serde_json::Value {
    json!({"status":"r","status_code":20,"info":{"error":"wrong name or password"}})
}

#[tokio::test]
async fn login_twice_is_23() {
    let s = TestServer::with_users().await;
    let mut c = s.logged_in("alice").await;
    assert_error(&c.login("alice", "wonderland").await, "r", 23);
    assert_error(&c.login("bob", "builder").await, "r", 23);
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn registration_closed_is_44() {
    let config = ServerConfig {
        registration_open: false,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut c = s.raw().await;
    let r = c
        .request(query(
            json!({"req": "register", "user": "dave", "password": "x"}),
        ))
        .await;
    assert_error(&r, "r", 44);
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn client_disconnecting_mid_frame_harms_nobody() {
    let s = TestServer::with_users().await;
    let mut watcher = s.logged_in("bob").await;
    for _ in 0..20 {
        let mut c = s.logged_in("alice").await;
        c.send_bytes(b"{\"status\":\"m\",\"status_code\":80,\"info\":{\"to\":\"bob\",\"te")
            .await;
        drop(c);
    }
    let mut c = s.logged_in("alice").await;
    assert_eq!(
        c.request(direct("bob", "still here")).await["status_code"],
        50
    );
    let push = watcher.recv().await;
    assert_eq!(
        push["info"]["text"], "still here",
        "the half frames delivered nothing"
    );
    watcher.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn a_thousand_connections_open_and_close_at_once() {
    let s = TestServer::with_users().await;
    let addr = s.addr;
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Raw::connect(addr).await;
                if i % 2 == 0 {
                    c.assert_serving().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("connection task");
    }
    let mut c = s.logged_in("alice").await;
    c.assert_serving().await;
    let r = c.request(query(json!({"req": "users"}))).await;
    assert_eq!(r["info"]["users"], json!(["alice"]));
    s.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_68() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut a = s.raw().await;
    let mut b = s.raw().await;
    a.assert_serving().await;
    b.assert_serving().await;
    let mut c = s.raw().await;
    assert_error(&c.recv().await, "e", 68);
    c.expect_closed().await;
    drop(a);
    // The freed slot is usable again once the server has noticed the close.
    let mut ok = false;
    for _ in 0..50 {
        let mut d = s.raw().await;
        d.send(r#"{"status":"q","status_code":0,"info":{"req":"ping"}}"#)
            .await;
        if d.recv().await["status_code"] == 30 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot frees up after a client leaves");
    b.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn client_r_and_e_frames_get_no_reply() {
    let s = TestServer::with_users().await;
    let mut c = s.logged_in("alice").await;
    c.send(r#"{"status":"r","status_code":30,"info":{"req":"pong"},"id":5}"#)
        .await;
    c.send(r#"{"status":"r","status_code":50,"info":{"ack":3}}"#)
        .await;
    c.send(r#"{"status":"e","status_code":60,"info":{"error":"client-side"}}"#)
        .await;
    // The next frame is the answer to the ping, nothing else came first.
    c.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_is_74_and_costs_only_the_flooder() {
    let config = ServerConfig {
        rate_limit: 5.0,
        rate_burst: 3,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut flooder = s.logged_in("alice").await;
    let mut other = s.logged_in("carol").await;
    for _ in 0..3 {
        assert_eq!(flooder.request(direct("bob", "x")).await["status_code"], 51);
    }
    let mut frame = direct("bob", "one too many");
    frame["id"] = json!("f");
    let r = flooder.request(frame).await;
    assert_error(&r, "e", 74);
    assert_eq!(r["id"], "f");
    assert_error(&flooder.request(broadcast("also")).await, "e", 74);
    // Queries are not messages: they still work, and so does everyone else.
    flooder.assert_serving().await;
    assert_eq!(
        other.request(direct("bob", "fine")).await["status_code"],
        51
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        flooder.request(direct("bob", "later")).await["status_code"],
        51
    );
    // The refused messages were not stored: bob gets exactly the accepted ones.
    let mut bob = s.logged_in("bob").await;
    let mut texts = Vec::new();
    while let Some(f) = bob.recv_within(Duration::from_millis(300)).await {
        texts.push(f["info"]["text"].as_str().unwrap().to_string());
    }
    assert_eq!(texts, vec!["x", "x", "x", "fine", "later"]);
    s.stop().await;
}

/// A client that sends requests and never reads the answers fills both sockets'
/// buffers; the server then stops reading it (it owes at most 256 answers), keeps
/// serving everyone else, and closes it after two silent heartbeat intervals, though
/// no goodbye can reach it.
#[tokio::test]
async fn a_client_that_never_reads_is_no_longer_read_then_closed() {
    let s = TestServer::with_heartbeat(Duration::from_millis(500)).await;
    let mut c = s.logged_in("alice").await;
    let ping = format!("{}\n", query(json!({"req": "ping"})));
    // 64 MiB of pings: far more answers than the socket buffers can hold.
    let burst = ping.repeat((64 << 20) / ping.len());
    let writer = tokio::spawn(async move { c.try_send_bytes(burst.as_bytes()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !writer.is_finished(),
        "the server stopped reading the burst"
    );
    // Fresh connections each time: with a half-second heartbeat, an idle one would
    // see the server's ping before its pong.
    s.logged_in("bob").await.assert_serving().await;
    let written = tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .expect("the server closed the connection")
        .unwrap();
    assert!(written.is_err(), "the write ends in a closed connection");
    s.logged_in("bob").await.assert_serving().await;
    s.stop().await;
}
