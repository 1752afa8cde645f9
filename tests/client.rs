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

/// A scripted server: accepts one connection and hands the test its lines.
async fn scripted() -> (
    u16,
    tokio::task::JoinHandle<(
        tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
        tokio::net::tcp::OwnedWriteHalf,
    )>,
) {
    use tokio::io::AsyncBufReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, wr) = stream.into_split();
        (tokio::io::BufReader::new(rd).lines(), wr)
    });
    (port, accepted)
}

/// A client of a scripted server that has sent a ping: its pending answer, its
/// pushes, the ping frame as the server read it, and the server's writing half.
async fn pinging_a_scripted_server() -> (
    tokio::task::JoinHandle<Result<Client, ClientError>>,
    moechat::Incoming,
    serde_json::Value,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let (port, accepted) = scripted().await;
    let (c, incoming) =
        Client::connect_with("127.0.0.1", port, moechat::ClientOptions::no_reconnect())
            .await
            .unwrap();
    let ping = tokio::spawn(async move { c.ping().await.map(|_| c) });
    let (mut lines, wr) = accepted.await.unwrap();
    let sent = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    (ping, incoming, sent, wr)
}

/// One reading of pushes: an `m` frame with an `id` is neither a push nor an answer.
/// Before, a third reading in the client delivered the first frame below as a
/// message, and the second answered the ping.
#[tokio::test]
async fn message_frames_with_an_id_are_neither_pushes_nor_answers() {
    use tokio::io::AsyncWriteExt;
    let (ping, mut incoming, sent, mut wr) = pinging_a_scripted_server().await;
    let id = &sent["id"];
    let push = |msg_id: u64| {
        serde_json::json!({"status":"m","status_code":80,
            "info":{"msg_id":msg_id,"from":"a","to":"b","text":"t","ts":1}})
    };
    let mut with_string_id = push(1);
    with_string_id["id"] = serde_json::json!("x");
    let mut with_request_id = push(3);
    with_request_id["id"] = id.clone();
    let pong = serde_json::json!({"status":"r","status_code":30,"info":{"req":"pong"},"id":id});
    for frame in [with_string_id, with_request_id, pong, push(2)] {
        wr.write_all(format!("{frame}\n").as_bytes()).await.unwrap();
    }
    let c = ping.await.unwrap().expect("the pong answers the ping");
    let m = incoming.recv().await.unwrap();
    assert_eq!(m.msg_id, 2, "only the real push is a message");
    drop(c);
}

/// `r`/24 (busy) is retried with backoff until the server can check the password.
#[tokio::test]
async fn a_busy_login_is_sent_again() {
    use tokio::io::AsyncWriteExt;
    let (port, accepted) = scripted().await;
    let (c, _incoming) =
        Client::connect_with("127.0.0.1", port, moechat::ClientOptions::no_reconnect())
            .await
            .unwrap();
    let login = tokio::spawn(async move { c.login("alice", "wonderland").await });
    let (mut lines, mut wr) = accepted.await.unwrap();
    let mut logins = 0;
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the client sends the login again")
            .unwrap()
            .unwrap();
        let frame: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(frame["info"]["req"], "login", "{frame}");
        logins += 1;
        let answer = if logins < 3 {
            serde_json::json!({"status":"r","status_code":24,
                "info":{"error":"too busy"},"id":frame["id"]})
        } else {
            serde_json::json!({"status":"r","status_code":10,"info":{"user":"alice",
                "session":"a".repeat(24),"port":port,"heartbeat":60},"id":frame["id"]})
        };
        wr.write_all(format!("{answer}\n").as_bytes())
            .await
            .unwrap();
        if logins == 3 {
            break;
        }
    }
    let ok = login
        .await
        .unwrap()
        .expect("logged in after two busy answers");
    assert_eq!(ok.user, "alice");
}

/// Many answers and pushes arriving together: the connection task takes up to 64
/// lines a turn, and none past a turn's end may be lost (one was, in a draft of the
/// single-task client: a request then waited forever).
#[tokio::test]
async fn hundreds_of_answers_and_pushes_at_once_all_arrive() {
    let s = TestServer::with_users().await;
    let (alice, _a_in) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    alice.login("alice", "wonderland").await.unwrap();
    // A backlog for bob, pushed in a burst right after his login.
    let mut sends = Vec::new();
    for i in 0..3000 {
        let a = alice.clone();
        sends.push(tokio::spawn(async move {
            a.send("bob", &format!("m{i}")).await
        }));
    }
    for t in sends {
        t.await.unwrap().unwrap();
    }
    let (bob, mut incoming) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    bob.login("bob", "builder").await.unwrap();
    // Hundreds of pipelined requests whose answers come back together.
    let mut pings = Vec::new();
    for _ in 0..2000 {
        let b = bob.clone();
        pings.push(tokio::spawn(async move { b.ping().await }));
    }
    // Read the pushes meanwhile: a full Incoming queue stops the reading of answers too.
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..3000 {
            ids.push(incoming.recv().await.unwrap().msg_id);
        }
        ids
    });
    let all = async {
        for t in pings {
            t.await.unwrap().unwrap();
        }
        reader.await.unwrap()
    };
    let ids = tokio::time::timeout(WAIT, all)
        .await
        .expect("every answer and push arrives");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, once each");
    s.stop().await;
}

/// The same, deterministic: a scripted server writes 200 pushes and the answer to a
/// ping in one write, so the client finds far more than one turn's lines ready.
#[tokio::test]
async fn a_single_write_of_hundreds_of_lines_loses_none() {
    use tokio::io::AsyncWriteExt;
    let (ping, mut incoming, sent, mut wr) = pinging_a_scripted_server().await;
    let mut burst = String::new();
    for msg_id in 1..=200u64 {
        let push = serde_json::json!({"status":"m","status_code":90,
            "info":{"msg_id":msg_id,"from":"a","text":"t","ts":1}});
        burst.push_str(&format!("{push}\n"));
    }
    let pong =
        serde_json::json!({"status":"r","status_code":30,"info":{"req":"pong"},"id":sent["id"]});
    burst.push_str(&format!("{pong}\n"));
    wr.write_all(burst.as_bytes()).await.unwrap();
    let got = tokio::time::timeout(WAIT, async {
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(incoming.recv().await.unwrap().msg_id);
        }
        ids
    })
    .await
    .expect("every push arrives");
    assert_eq!(got, (1..=200).collect::<Vec<u64>>());
    tokio::time::timeout(WAIT, ping)
        .await
        .expect("the answer after them arrives")
        .unwrap()
        .unwrap();
}
