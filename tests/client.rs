//! The async Rust client against a real server: typed errors carrying the
//! server's code and sentence, pushes, heartbeat answered by itself, and the
//! closing codes surfacing as `ClientError::Closed`.

mod common;

use std::time::Duration;

use common::*;
use moechat::{Client, ClientError, Code, Peer, ServerConfig};

#[tokio::test]
async fn every_call_and_its_typed_errors() {
    let s = TestServer::with_users().await;
    let (c, mut incoming) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    let err = c.users().await.unwrap_err();
    assert_eq!(err.named_code(), Some(Code::NotLoggedIn));
    let err = c.login("alice", "nope").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Server { code: 20, message } if message == "wrong name or password"),
        "{err:?}"
    );
    c.register("dave", "pw").await.unwrap();
    assert_eq!(c.register("dave", "pw").await.unwrap_err().code(), Some(43));
    let info = c.login("dave", "pw").await.unwrap();
    assert_eq!(info.user, "dave");
    assert_eq!(info.port, s.port());
    assert_eq!(info.session.len(), 24);
    assert_eq!(c.users().await.unwrap(), vec!["dave"]);
    let sent = c.send("bob", "hi").await.unwrap();
    assert!(sent.stored);
    assert_eq!(
        c.send("nobody", "hi").await.unwrap_err().named_code(),
        Some(Code::NoSuchUser)
    );
    assert_eq!(
        c.send("bob", "").await.unwrap_err().named_code(),
        Some(Code::BadText)
    );
    let (bob, mut bob_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    bob.login("bob", "builder").await.unwrap();
    let m = bob_in.recv().await.unwrap();
    assert_eq!(
        (m.msg_id, m.from.as_str(), m.text.as_str()),
        (sent.msg_id, "dave", "hi")
    );
    let b = c.broadcast("all").await.unwrap();
    assert_eq!(b.recipients, Some(1));
    assert!(!b.stored);
    assert_eq!(bob_in.recv().await.unwrap().to, None);
    let live = bob.send("dave", "back").await.unwrap();
    assert!(!live.stored);
    assert_eq!(incoming.recv().await.unwrap().text, "back");
    let h = c.history(Peer::User("bob".into()), 10, None).await.unwrap();
    assert_eq!(
        h.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        vec!["hi", "back"]
    );
    assert!(c.ping().await.unwrap() < Duration::from_secs(5));
    c.logout().await.unwrap();
    let err = incoming.recv().await.unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
    assert!(matches!(
        c.users().await.unwrap_err(),
        ClientError::Closed { .. }
    ));
    s.stop().await;
}

#[tokio::test]
async fn the_client_answers_heartbeats_by_itself() {
    let config = ServerConfig {
        heartbeat: Duration::from_millis(300),
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let (c, _incoming) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    c.login("alice", "wonderland").await.unwrap();
    // Idle for many heartbeat intervals: a client that did not answer would get e/66.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.users().await.unwrap(), vec!["alice"]);
    s.stop().await;
}

#[tokio::test]
async fn closing_codes_surface_as_closed_errors() {
    let s = TestServer::with_users().await;
    let (old, mut old_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    old.login("alice", "wonderland").await.unwrap();
    let (new, _new_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    new.login("alice", "wonderland").await.unwrap();
    let err = old_in.recv().await.unwrap_err();
    assert_eq!(err.named_code(), Some(Code::TakenOver), "{err:?}");
    assert_eq!(
        old.ping().await.unwrap_err().named_code(),
        Some(Code::TakenOver)
    );
    let (c, mut c_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    c.ping().await.unwrap(); // accepted and served, not still in the listen backlog
    s.stop().await;
    assert_eq!(
        c_in.recv().await.unwrap_err().named_code(),
        Some(Code::ShuttingDown)
    );
}

#[tokio::test]
async fn connect_refused_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Client::connect("127.0.0.1", port).await.err().unwrap();
    assert!(
        matches!(
            err,
            ClientError::Connect {
                kind: std::io::ErrorKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let s = TestServer::with_users().await;
    let (c, incoming) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    c.login("alice", "wonderland").await.unwrap();
    assert_eq!(s.handle.online_users(), vec!["alice"]);
    let c2 = c.clone();
    drop(c);
    drop(incoming);
    // One clone still holds it open.
    assert_eq!(c2.users().await.unwrap(), vec!["alice"]);
    drop(c2);
    let mut gone = false;
    for _ in 0..100 {
        if s.handle.online_users().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the server saw the connection close");
    s.stop().await;
}
