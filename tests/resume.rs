//! Session resume (PROTOCOL.md 3.1): `login` with `session` instead of `password`
//! while the token is valid; void after logout, after its TTL, for another user.

mod common;

use std::time::Duration;

use common::*;
use moechat::ServerConfig;
use serde_json::{json, Value};

fn resume(user: &str, token: &str) -> Value {
    query(json!({"req": "login", "user": user, "session": token}))
}

async fn token_of(c: &mut Raw, user: &str) -> String {
    let r = c.login(user, password_of(user)).await;
    assert_eq!(r["status_code"], 10, "{r}");
    r["info"]["session"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_token_resumes_the_session_and_takes_over() {
    let s = TestServer::with_users().await;
    let mut first = s.raw().await;
    let token = token_of(&mut first, "alice").await;
    let mut second = s.raw().await;
    let r = second.request(resume("alice", &token)).await;
    assert_eq!(r["status_code"], 10, "{r}");
    assert_eq!(r["info"]["session"], token, "the same token");
    assert_eq!(r["info"]["user"], "alice");
    assert_error(&first.recv().await, "e", 64);
    // The resumed session is a full login: messages reach it.
    let mut bob = s.logged_in("bob").await;
    assert_eq!(bob.request(direct("alice", "hi")).await["status_code"], 50);
    assert_eq!(second.recv().await["info"]["text"], "hi");
    s.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_20_and_count_as_failures() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    let alice_token = token_of(&mut c, "alice").await;
    let mut d = s.raw().await;
    assert_error(&d.request(resume("bob", &alice_token)).await, "r", 20);
    assert_error(
        &d.request(resume("alice", "AAAAAAAAAAAAAAAAAAAAAAAA")).await,
        "r",
        20,
    );
    assert_error(&d.request(resume("alice", "")).await, "r", 21);
    assert_error(&d.request(resume("alice", &"x".repeat(65))).await, "r", 21);
    for _ in 0..2 {
        assert_error(&d.request(resume("alice", "nope")).await, "r", 20);
    }
    assert_error(&d.request(resume("alice", "nope")).await, "r", 22);
    d.expect_closed().await;
    s.stop().await;
}

#[tokio::test]
async fn logout_voids_the_token() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    let token = token_of(&mut c, "alice").await;
    assert_eq!(
        c.request(query(json!({"req": "logout"}))).await["status_code"],
        30
    );
    let mut d = s.raw().await;
    assert_error(&d.request(resume("alice", &token)).await, "r", 20);
    s.stop().await;
}

#[tokio::test]
async fn a_token_expires_after_its_ttl() {
    let config = ServerConfig {
        session_ttl: Duration::from_millis(300),
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut c = s.raw().await;
    let token = token_of(&mut c, "alice").await;
    let mut d = s.raw().await;
    assert_eq!(d.request(resume("alice", &token)).await["status_code"], 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut e = s.raw().await;
    assert_error(&e.request(resume("alice", &token)).await, "r", 20);
    s.stop().await;
}

#[tokio::test]
async fn a_token_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir
        .path()
        .join("sessions.db")
        .to_string_lossy()
        .into_owned();
    let config = ServerConfig {
        db,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config.clone()).await;
    let mut c = s.raw().await;
    let token = token_of(&mut c, "alice").await;
    s.stop().await;
    let s = TestServer::start(config).await;
    let mut d = s.raw().await;
    assert_eq!(d.request(resume("alice", &token)).await["status_code"], 10);
    // The token is not in the database file as itself.
    s.stop().await;
    let raw = std::fs::read(dir.path().join("sessions.db")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(&token));
}
