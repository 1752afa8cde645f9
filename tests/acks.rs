//! At-least-once delivery (PROTOCOL.md 3.4): with `"acks": true` a direct message
//! stays undelivered until the client's cumulative ack covers it, across
//! reconnects and server restarts; bad acks change nothing.

mod common;

use std::time::Duration;

use common::*;
use moechat::ServerConfig;
use serde_json::{json, Value};

async fn login_acks(s: &TestServer, user: &str) -> Raw {
    let mut c = s.raw().await;
    let r = c
        .request(query(
            json!({"req": "login", "user": user, "password": password_of(user), "acks": true}),
        ))
        .await;
    assert_eq!(r["status_code"], 10, "{r}");
    c
}

/// Drops `old` and logs bob in again with acks (the old connection is gone or taken over).
async fn relogin(s: &TestServer, old: Raw) -> Raw {
    drop(old);
    tokio::time::sleep(Duration::from_millis(100)).await;
    login_acks(s, "bob").await
}

async fn ack(c: &mut Raw, id: u64) {
    c.send_json(json!({"status": "r", "status_code": 50, "info": {"ack": id}}))
        .await;
    // Client r frames get no reply; a ping behind it proves it was read.
    c.assert_serving().await;
}

/// Pushes until the connection is quiet; their msg_ids.
async fn drain(c: &mut Raw) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Some(f) = c.recv_within(Duration::from_millis(300)).await {
        assert_eq!(f["status"], "m", "{f}");
        ids.push(f["info"]["msg_id"].as_u64().unwrap());
    }
    ids
}

fn msg_id(r: &Value) -> u64 {
    r["info"]["msg_id"].as_u64().unwrap()
}

#[tokio::test]
async fn unacknowledged_messages_come_again_after_the_next_login() {
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = login_acks(&s, "bob").await;
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(msg_id(
                &alice.request(direct("bob", &format!("m{i}"))).await,
            ));
        }
        v
    };
    assert_eq!(drain(&mut bob).await, ids);
    ack(&mut bob, ids[1]).await;
    let mut bob = relogin(&s, bob).await;
    assert_eq!(
        drain(&mut bob).await,
        vec![ids[2]],
        "only the unacknowledged one again, oldest first"
    );
    ack(&mut bob, ids[2]).await;
    let mut bob = relogin(&s, bob).await;
    assert!(drain(&mut bob).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn acks_for_unsent_ids_or_going_backwards_change_nothing() {
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = login_acks(&s, "bob").await;
    ack(&mut bob, 1_000_000).await; // nothing was sent yet
    let first = msg_id(&alice.request(direct("bob", "first")).await);
    assert_eq!(drain(&mut bob).await, vec![first]);
    let mut bob = relogin(&s, bob).await;
    assert_eq!(
        drain(&mut bob).await,
        vec![first],
        "the early ack did not cover it"
    );
    ack(&mut bob, first).await;
    ack(&mut bob, 1).await; // backwards: ignored
    let bad = [
        json!({"ack": "7"}),
        json!({"ack": -1}),
        json!({}),
        json!({"ack": 1.5}),
    ];
    for info in bad {
        bob.send_json(json!({"status": "r", "status_code": 50, "info": info}))
            .await;
    }
    bob.assert_serving().await;
    let mut bob = relogin(&s, bob).await;
    assert!(drain(&mut bob).await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn acks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("acks.db").to_string_lossy().into_owned();
    let config = ServerConfig {
        db,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config.clone()).await;
    let mut alice = s.logged_in("alice").await;
    let a = msg_id(&alice.request(direct("bob", "a")).await);
    let b = msg_id(&alice.request(direct("bob", "b")).await);
    let mut bob = login_acks(&s, "bob").await;
    assert_eq!(drain(&mut bob).await, vec![a, b]);
    ack(&mut bob, a).await;
    s.stop().await;
    let s = TestServer::start(config).await;
    let mut bob = login_acks(&s, "bob").await;
    assert_eq!(drain(&mut bob).await, vec![b]);
    s.stop().await;
}

#[tokio::test]
async fn without_acks_a_written_message_counts_as_delivered() {
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = s.logged_in("bob").await;
    let a = msg_id(&alice.request(direct("bob", "a")).await);
    assert_eq!(drain(&mut bob).await, vec![a]);
    let mut bob = relogin(&s, bob).await;
    assert!(drain(&mut bob).await.is_empty());
    s.stop().await;
}

/// The Rust client sends at most one ack per writer wake-up: a fast reader's acks
/// coalesce. However they coalesce, and across a cut connection, what the
/// application took and came back from ends up acknowledged.
#[tokio::test]
async fn the_clients_coalesced_acks_cover_what_was_taken() {
    use moechat::{Client, ClientOptions, Incoming};
    let s = TestServer::with_users().await;
    let (alice, _a_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    alice.login("alice", "wonderland").await.unwrap();
    let proxy = Proxy::start(s.addr).await;
    async fn take(incoming: &mut Incoming, n: usize) -> Vec<u64> {
        let mut got = Vec::new();
        for _ in 0..n {
            let m = tokio::time::timeout(WAIT, incoming.recv()).await;
            got.push(m.expect("in time").unwrap().msg_id);
        }
        got
    }
    for cut in [false, true] {
        let mut sent = Vec::new();
        for i in 0..400 {
            sent.push(alice.send("bob", &format!("m{i}")).await.unwrap().msg_id);
        }
        let options = ClientOptions {
            reconnect: true,
            ..ClientOptions::default()
        };
        let (bob, mut bob_in) = Client::connect_with("127.0.0.1", proxy.port, options)
            .await
            .unwrap();
        bob.login("bob", "builder").await.unwrap();
        let mut got = take(&mut bob_in, 200).await;
        if cut {
            proxy.cut();
        }
        got.extend(take(&mut bob_in, 200).await);
        assert_eq!(got, sent, "every message once, in order (cut: {cut})");
        // Time for a resumed connection to write its catch-up: an ack is honoured
        // only for what its connection has written.
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Logging out is coming back: the last message is acknowledged too.
        bob.logout().await.unwrap();
        let mut again = login_acks(&s, "bob").await;
        assert!(drain(&mut again).await.is_empty(), "cut: {cut}");
        drop(again);
    }
    s.stop().await;
}
