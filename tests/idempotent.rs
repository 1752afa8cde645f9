//! Idempotent sends (PROTOCOL.md 3.2): a repeated nonce stores and delivers
//! nothing new and gets the first message's receipt with `"duplicate": true`,
//! also after a server restart.

mod common;

use std::time::Duration;

use common::*;
use moechat::ServerConfig;
use serde_json::{json, Value};

fn dm_nonce(to: &str, text: &str, nonce: &str) -> Value {
    json!({"status": "m", "status_code": 80, "info": {"to": to, "text": text, "nonce": nonce}})
}

#[tokio::test]
async fn a_repeat_is_answered_like_the_first_and_delivered_once() {
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = s.logged_in("bob").await;
    let first = alice.request(dm_nonce("bob", "hello", "k1")).await;
    assert_eq!(first["status_code"], 50);
    assert!(first["info"].get("duplicate").is_none());
    let again = alice.request(dm_nonce("bob", "hello, edited", "k1")).await;
    assert_eq!(again["status_code"], 50);
    assert_eq!(again["info"]["msg_id"], first["info"]["msg_id"]);
    assert_eq!(again["info"]["duplicate"], true);
    let push = bob.recv().await;
    assert_eq!(push["info"]["text"], "hello");
    assert!(
        bob.recv_within(Duration::from_millis(300)).await.is_none(),
        "delivered once"
    );
    // Offline: the repeat is r/51 like the first.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stored = alice.request(dm_nonce("bob", "later", "k2")).await;
    assert_eq!(stored["status_code"], 51);
    let again = alice.request(dm_nonce("carol", "other", "k2")).await;
    assert_eq!(
        (
            again["status_code"].clone(),
            again["info"]["duplicate"].clone()
        ),
        (json!(51), json!(true))
    );
    assert_eq!(again["info"]["msg_id"], stored["info"]["msg_id"]);
    // A broadcast repeat names the first's recipients.
    let b1 = alice
        .request(json!({"status":"m","status_code":90,"info":{"text":"all","nonce":"k3"}}))
        .await;
    let b2 = alice
        .request(json!({"status":"m","status_code":90,"info":{"text":"all","nonce":"k3"}}))
        .await;
    assert_eq!(b2["info"]["msg_id"], b1["info"]["msg_id"]);
    assert_eq!(b2["info"]["recipients"], b1["info"]["recipients"]);
    assert_eq!(b2["info"]["duplicate"], true);
    let h = alice
        .request(query(json!({"req":"history","with":"carol"})))
        .await;
    assert_eq!(
        h["info"]["messages"],
        json!([]),
        "the repeat stored nothing"
    );
    s.stop().await;
}

#[tokio::test]
async fn nonces_hold_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nonce.db").to_string_lossy().into_owned();
    let config = ServerConfig {
        db,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config.clone()).await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = s.logged_in("bob").await;
    let online = alice.request(dm_nonce("bob", "while online", "r1")).await;
    assert_eq!(online["status_code"], 50);
    bob.recv().await;
    let offline = alice.request(dm_nonce("carol", "while away", "r2")).await;
    assert_eq!(offline["status_code"], 51);
    s.stop().await;
    let s = TestServer::start(config).await;
    let mut alice = s.logged_in("alice").await;
    let again = alice.request(dm_nonce("bob", "while online", "r1")).await;
    assert_eq!(again["status_code"], 50, "{again}");
    assert_eq!(again["info"]["msg_id"], online["info"]["msg_id"]);
    assert_eq!(again["info"]["duplicate"], true);
    let again = alice.request(dm_nonce("carol", "while away", "r2")).await;
    assert_eq!(again["status_code"], 51, "{again}");
    assert_eq!(again["info"]["msg_id"], offline["info"]["msg_id"]);
    let mut carol = s.logged_in("carol").await;
    assert_eq!(carol.recv().await["info"]["text"], "while away");
    assert!(
        carol
            .recv_within(Duration::from_millis(300))
            .await
            .is_none(),
        "stored once"
    );
    s.stop().await;
}
