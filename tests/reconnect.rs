//! The reconnecting client (`ClientOptions::reconnect`): a TCP connection cut
//! without a clean close, and a server restart, are survived with nothing lost
//! and nothing doubled; takeover and logout end the client for good.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use moechat::{Client, ClientOptions, Code, ConnectionEvent, Peer, ServerConfig};

fn resilient() -> ClientOptions {
    ClientOptions {
        reconnect: true,
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn a_cut_connection_resumes_and_loses_nothing() {
    let s = TestServer::with_users().await;
    let proxy = Proxy::start(s.addr).await;
    let (bob, mut bob_in) = Client::connect_with("127.0.0.1", proxy.port, resilient())
        .await
        .unwrap();
    bob.login("bob", "builder").await.unwrap();
    let (alice, _a_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    alice.login("alice", "wonderland").await.unwrap();

    // alice → bob over a stable connection; bob → carol (offline) through the flaky proxy.
    let to_bob = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(alice.send("bob", &format!("a{i}")).await.unwrap().msg_id);
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ids
    });
    let sender = bob.clone();
    let from_bob = tokio::spawn(async move {
        for i in 0..100 {
            let sent = sender
                .send("carol", &format!("b{i}"))
                .await
                .expect("every send gets its receipt");
            assert!(sent.stored);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        proxy.cut();
    }
    let sent = to_bob.await.unwrap();
    from_bob.await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let m = tokio::time::timeout(WAIT, bob_in.recv())
            .await
            .expect("message in time")
            .unwrap();
        got.push(m.msg_id);
    }
    assert_eq!(got, sent, "every message exactly once, in order");
    // carol finds each of bob's 100 messages once: the nonces made resends harmless.
    let (carol, _c_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    carol.login("carol", "singer").await.unwrap();
    let h = carol
        .history(Peer::User("bob".into()), 500, None)
        .await
        .unwrap();
    let texts: BTreeSet<String> = h.iter().map(|m| m.text.clone()).collect();
    assert_eq!(h.len(), 100);
    assert_eq!(texts.len(), 100);
    assert!(bob.ping().await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn a_server_restart_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db").to_string_lossy().into_owned();
    let config = ServerConfig {
        db,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config.clone()).await;
    let proxy = Proxy::start(s.addr).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let options = ClientOptions {
        on_event: Some(Arc::new(move |e: ConnectionEvent| {
            seen.lock().unwrap().push(match e {
                ConnectionEvent::Disconnected(err) => format!("disconnected {:?}", err.code()),
                ConnectionEvent::Reconnected => "reconnected".to_string(),
            })
        })),
        ..resilient()
    };
    let (bob, mut bob_in) = Client::connect_with("127.0.0.1", proxy.port, options)
        .await
        .unwrap();
    bob.login("bob", "builder").await.unwrap();
    s.stop().await; // bob gets e/65 and starts reconnecting
    let s = TestServer::start(config).await;
    *proxy.backend.lock().unwrap() = s.addr;
    let (alice, _a_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    alice.login("alice", "wonderland").await.unwrap();
    let sent = alice.send("bob", "after the restart").await.unwrap();
    let m = tokio::time::timeout(WAIT, bob_in.recv())
        .await
        .expect("delivered")
        .unwrap();
    assert_eq!(
        (m.msg_id, m.text.as_str()),
        (sent.msg_id, "after the restart")
    );
    assert_eq!(bob.users().await.unwrap(), vec!["alice", "bob"]);
    assert_eq!(
        *events.lock().unwrap(),
        vec!["disconnected Some(65)", "reconnected"]
    );
    s.stop().await;
}

#[tokio::test]
async fn takeover_and_logout_end_the_client() {
    let s = TestServer::with_users().await;
    let (bob, mut bob_in) = Client::connect_with("127.0.0.1", s.port(), resilient())
        .await
        .unwrap();
    bob.login("bob", "builder").await.unwrap();
    let (newer, _n_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    newer.login("bob", "builder").await.unwrap();
    let err = bob_in.recv().await.unwrap_err();
    assert_eq!(err.named_code(), Some(Code::TakenOver));
    assert_eq!(
        bob.ping().await.unwrap_err().named_code(),
        Some(Code::TakenOver)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.handle.online_users(),
        vec!["bob"],
        "no reconnection took the session back"
    );

    let (alice, mut a_in) = Client::connect_with("127.0.0.1", s.port(), resilient())
        .await
        .unwrap();
    alice.login("alice", "wonderland").await.unwrap();
    alice.logout().await.unwrap();
    assert!(a_in.recv().await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.handle.online_users(), vec!["bob"]);
    s.stop().await;
}
