//! Chat behaviour over real sockets: the PROTOCOL.md section 5 session, the
//! `id` echo, offline delivery (also across a restart), history, broadcasts,
//! takeover, logout, heartbeat, shutdown and the slow-consumer rule.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use moechat::{Client, Peer, ServerConfig};
use serde_json::json;

#[tokio::test]
async fn the_protocol_walkthrough() {
    let s = TestServer::with_users().await;
    let mut bob = s.logged_in("bob").await;
    let mut alice = s.raw().await;
    let r = alice
        .request(json!({"status":"q","status_code":0,"info":{"req":"login","user":"alice","password":"wonderland"},"id":1}))
        .await;
    assert_eq!(r["status"], "r");
    assert_eq!(r["status_code"], 10);
    assert_eq!(r["id"], 1);
    assert_eq!(r["info"]["user"], "alice");
    assert_eq!(r["info"]["port"], s.port());
    assert_eq!(r["info"]["heartbeat"], 60);
    let session = r["info"]["session"].as_str().unwrap();
    assert_eq!(session.len(), 24);
    assert!(session.bytes().all(|b| b.is_ascii_alphanumeric()));

    let r = alice.request(query(json!({"req": "users"}))).await;
    assert_eq!(
        r,
        json!({"status":"r","status_code":30,"info":{"users":["alice","bob"]}})
    );

    let r = alice
        .request(
            json!({"status":"m","status_code":80,"info":{"to":"bob","text":"hi bob"},"id":"a"}),
        )
        .await;
    assert_eq!(r["status_code"], 50);
    assert_eq!(r["id"], "a");
    let msg_id = r["info"]["msg_id"].as_u64().unwrap();
    let push = bob.recv().await;
    assert_eq!(push["status"], "m");
    assert_eq!(push["status_code"], 80);
    assert!(push.get("id").is_none());
    assert_eq!(push["info"]["msg_id"], msg_id);
    assert_eq!(push["info"]["from"], "alice");
    assert_eq!(push["info"]["to"], "bob");
    assert_eq!(push["info"]["text"], "hi bob");
    assert!(push["info"]["ts"].as_i64().unwrap() > 1_700_000_000_000);

    let r = bob.request(broadcast("hello all")).await;
    assert_eq!(r["status_code"], 50);
    assert_eq!(r["info"]["recipients"], 1);
    let push = alice.recv().await;
    assert_eq!(push["status_code"], 90);
    assert_eq!(push["info"]["from"], "bob");
    assert_eq!(push["info"]["text"], "hello all");
    assert!(push["info"].get("to").is_none());
    assert!(push["info"]["msg_id"].as_u64().unwrap() > msg_id);

    alice.send("this is not json").await;
    assert_error(&alice.recv().await, "e", 62);
    s.stop().await;
}

#[tokio::test]
async fn ids_are_echoed_unchanged() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for id in [
        json!(0),
        json!(-7),
        json!(18446744073709551615u64),
        json!("x"),
        json!("é".repeat(64)),
    ] {
        let r = c
            .request(json!({"status":"q","status_code":0,"info":{"req":"ping"},"id":id}))
            .await;
        assert_eq!(r["id"], id);
    }
    let r = c
        .request(json!({"status":"q","status_code":0,"info":{"req":"users"},"id":"u"}))
        .await;
    assert_error(&r, "r", 41);
    assert_eq!(r["id"], "u");
    s.stop().await;
}

#[tokio::test]
async fn register_then_login() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    let r = c
        .request(query(
            json!({"req":"register","user":"dave","password":"pw"}),
        ))
        .await;
    assert_eq!(
        r,
        json!({"status":"r","status_code":30,"info":{"user":"dave"}})
    );
    assert_eq!(c.login("dave", "pw").await["status_code"], 10);
    let r = c
        .request(query(
            json!({"req":"register","user":"erin","password":"pw"}),
        ))
        .await;
    assert_error(&r, "r", 40);
    s.stop().await;
}

#[tokio::test]
async fn offline_messages_arrive_after_login_oldest_first() {
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut ids = Vec::new();
    for i in 0..600 {
        let r = alice.request(direct("bob", &format!("m{i}"))).await;
        assert_eq!(r["status_code"], 51, "{r}");
        ids.push(r["info"]["msg_id"].as_u64().unwrap());
    }
    let mut bob = s.raw().await;
    assert_eq!(bob.login("bob", "builder").await["status_code"], 10);
    for (i, id) in ids.iter().enumerate() {
        let push = bob.recv().await;
        assert_eq!(push["info"]["msg_id"], *id);
        assert_eq!(push["info"]["text"], format!("m{i}"));
    }
    bob.assert_serving().await;
    drop(bob);
    // Delivered once: the next login brings nothing old.
    let mut bob = s.raw().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bob.login("bob", "builder").await["status_code"], 10);
    bob.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn offline_delivery_survives_a_restart_on_the_same_db() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db").to_string_lossy().into_owned();
    let config = ServerConfig {
        db: db.clone(),
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config.clone()).await;
    let mut alice = s.logged_in("alice").await;
    let r = alice.request(direct("bob", "while you were out")).await;
    assert_eq!(r["status_code"], 51);
    let id = r["info"]["msg_id"].as_u64().unwrap();
    s.stop().await;

    let s = TestServer::start(config).await;
    let mut bob = s.logged_in("bob").await;
    let push = bob.recv().await;
    assert_eq!(push["info"]["msg_id"], id);
    assert_eq!(push["info"]["text"], "while you were out");
    // msg_ids keep increasing across restarts.
    let r = bob.request(direct("alice", "thanks")).await;
    assert!(r["info"]["msg_id"].as_u64().unwrap() > id);
    s.stop().await;
}

#[tokio::test]
async fn history_pages_backwards() {
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = s.logged_in("bob").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (from, to) = if i % 2 == 0 {
            (&mut alice, "bob")
        } else {
            (&mut bob, "alice")
        };
        let r = from.call(direct(to, &format!("t{i}"))).await;
        ids.push(r["info"]["msg_id"].as_u64().unwrap());
    }
    // The carol conversation is not part of it.
    let mut carol = s.logged_in("carol").await;
    carol.call(direct("alice", "other")).await;
    carol.call(broadcast("to all")).await;
    // Drain pushes so the history reply is the next frame.
    let mut h = s.logged_in("alice").await;
    let r = h
        .request(query(json!({"req":"history","with":"bob","limit":4})))
        .await;
    let texts: Vec<_> = r["info"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec!["t6", "t7", "t8", "t9"]);
    let r = h
        .request(query(
            json!({"req":"history","with":"bob","limit":4,"before":ids[6]}),
        ))
        .await;
    let got: Vec<u64> = r["info"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg_id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[2..6].to_vec());
    let first = &r["info"]["messages"][0];
    assert_eq!(first["from"], "alice");
    assert_eq!(first["to"], "bob");
    let r = h.request(query(json!({"req":"history","with":"*"}))).await;
    let all = r["info"]["messages"].as_array().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["text"], "to all");
    assert!(all[0].get("to").is_none());
    let r = h
        .request(query(json!({"req":"history","with":"nobody"})))
        .await;
    assert_eq!(r["info"]["messages"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn broadcasts_reach_everyone_online_but_the_sender() {
    let s = TestServer::with_users().await;
    let mut a = s.logged_in("alice").await;
    let mut b = s.logged_in("bob").await;
    let mut c = s.logged_in("carol").await;
    let r = a.request(broadcast("hey")).await;
    assert_eq!(r["info"]["recipients"], 2);
    assert_eq!(b.recv().await["info"]["text"], "hey");
    assert_eq!(c.recv().await["info"]["text"], "hey");
    a.assert_serving().await; // nothing pushed to the sender
    s.stop().await;
}

#[tokio::test]
async fn a_newer_login_takes_over() {
    let s = TestServer::with_users().await;
    let mut old = s.logged_in("alice").await;
    let mut new = s.logged_in("alice").await;
    let r = old.recv().await;
    assert_error(&r, "e", 64);
    old.expect_closed().await;
    let mut bob = s.logged_in("bob").await;
    assert_eq!(
        bob.request(direct("alice", "to the new one")).await["status_code"],
        50
    );
    assert_eq!(new.recv().await["info"]["text"], "to the new one");
    let r = bob.request(query(json!({"req":"users"}))).await;
    assert_eq!(r["info"]["users"], json!(["alice", "bob"]));
    s.stop().await;
}

#[tokio::test]
async fn logout_answers_then_closes() {
    let s = TestServer::with_users().await;
    let mut c = s.logged_in("alice").await;
    let r = c
        .request(json!({"status":"q","status_code":0,"info":{"req":"logout"},"id":9}))
        .await;
    assert_eq!(
        r,
        json!({"status":"r","status_code":30,"info":{"req":"logout"},"id":9})
    );
    c.expect_closed().await;
    let mut bob = s.logged_in("bob").await;
    let r = bob.request(query(json!({"req":"users"}))).await;
    assert_eq!(r["info"]["users"], json!(["bob"]));
    assert_eq!(
        bob.request(direct("alice", "gone")).await["status_code"],
        51
    );
    s.stop().await;
}

#[tokio::test]
async fn heartbeat_pings_then_closes_a_silent_client() {
    let config = ServerConfig {
        heartbeat: Duration::from_secs(1),
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut c = s.logged_in("alice").await;
    let ping = c.recv().await;
    assert_eq!(
        ping,
        json!({"status":"q","status_code":0,"info":{"req":"ping"}})
    );
    // Answering keeps the connection alive past the second interval.
    c.send(r#"{"status":"r","status_code":30,"info":{"req":"pong"}}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ping = c.recv().await;
    assert_eq!(ping["status"], "q");
    c.assert_serving().await;
    // Now stay silent: one ping after H seconds, then e/66 after another H.
    assert_eq!(c.recv().await["status"], "q");
    let started = std::time::Instant::now();
    assert_error(&c.recv().await, "e", 66);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed too early"
    );
    c.expect_closed().await;
    let mut bob = s.logged_in("bob").await;
    assert_eq!(
        bob.request(query(json!({"req":"users"}))).await["info"]["users"],
        json!(["bob"])
    );
    s.stop().await;
}

#[tokio::test]
async fn shutdown_says_65_to_everyone() {
    let s = TestServer::with_users().await;
    let mut a = s.logged_in("alice").await;
    let mut anon = s.raw().await;
    anon.assert_serving().await;
    s.stop().await;
    assert_error(&a.recv().await, "e", 65);
    a.expect_closed().await;
    assert_error(&anon.recv().await, "e", 65);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_and_loses_no_direct_message() {
    let config = ServerConfig {
        outbound_queue: 8,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut bob = s.logged_in("bob").await; // never reads while alice sends
    let mut alice = s.logged_in("alice").await;
    let text = "x".repeat(8000);
    let mut delivered = 0;
    let mut stored = 0;
    let mut ids = Vec::new();
    for _ in 0..1500 {
        let r = alice.request(direct("bob", &text)).await;
        match r["status_code"].as_u64() {
            Some(50) => delivered += 1,
            Some(51) => stored += 1,
            _ => panic!("unexpected {r}"),
        }
        ids.push(r["info"]["msg_id"].as_u64().unwrap());
    }
    assert!(
        stored > 0,
        "bob's socket never filled up (delivered {delivered})"
    );
    // Bob's connection ends with e/67 after what fitted.
    let mut seen = Vec::new();
    loop {
        let Some(f) = bob.recv_within(Duration::from_secs(5)).await else {
            break;
        };
        if f["status"] == "e" {
            assert_eq!(f["status_code"], 67, "{f}");
            break;
        }
        seen.push(f["info"]["msg_id"].as_u64().unwrap());
    }
    // The rest arrives at the next login, in order, with nothing missing.
    let mut bob = s.logged_in("bob").await;
    let last_seen = seen.last().copied().unwrap_or(0);
    let rest: Vec<u64> = ids.iter().copied().filter(|&i| i > last_seen).collect();
    for id in &rest {
        let push = bob.recv().await;
        assert_eq!(push["info"]["msg_id"], *id);
    }
    assert_eq!(seen.len() + rest.len(), ids.len());
    s.stop().await;
}

#[tokio::test]
async fn direct_messages_keep_per_sender_order_under_concurrent_load() {
    let s = TestServer::with_users().await;
    let senders: Vec<String> = (0..10).map(|i| format!("sender{i}")).collect();
    for name in &senders {
        s.handle.add_user(name, "password").await.unwrap();
    }
    let (rx_client, mut incoming) = Client::connect("127.0.0.1", s.port()).await.unwrap();
    rx_client.login("carol", "singer").await.unwrap();
    const PER_SENDER: usize = 1000;
    let port = s.port();
    let tasks: Vec<_> = senders
        .iter()
        .cloned()
        .map(|name| {
            tokio::spawn(async move {
                let (c, _in) = Client::connect("127.0.0.1", port).await.unwrap();
                c.login(&name, "password").await.unwrap();
                // Each sender's order is the order its sends were answered.
                for i in 0..PER_SENDER {
                    c.send("carol", &format!("{name}:{i}")).await.unwrap();
                }
            })
        })
        .collect();
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    let mut last_id = 0;
    while total < senders.len() * PER_SENDER {
        let m = tokio::time::timeout(WAIT, incoming.recv())
            .await
            .expect("message in time")
            .unwrap();
        let (who, n) = m.text.split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        let expected = next.entry(who.to_string()).or_insert(0);
        assert_eq!(n, *expected, "messages from {who} arrive in the order sent");
        assert!(m.msg_id > last_id, "msg_ids increase for one recipient");
        last_id = m.msg_id;
        *expected += 1;
        total += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    for name in &senders {
        assert_eq!(next[name], PER_SENDER, "{name}");
    }
    // The history of each pair shows every message exactly once.
    let h = rx_client
        .history(Peer::User("sender3".into()), 500, None)
        .await
        .unwrap();
    assert_eq!(h.len(), 500);
    s.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    // One write holding sends, a send to nobody, queries and more sends: the answers
    // come back in request order even though the sends are committed together.
    let s = TestServer::with_users().await;
    let mut alice = s.logged_in("alice").await;
    let mut bob = s.logged_in("bob").await;
    let mut batch = String::new();
    let mut expected = Vec::new();
    for i in 0..300 {
        let frame = match i % 50 {
            7 => {
                expected.push("e71");
                direct("nobody", "lost")
            }
            13 => {
                expected.push("pong");
                json!({"status":"q","status_code":0,"info":{"req":"ping"}})
            }
            29 => {
                expected.push("broadcast");
                broadcast(&format!("b{i}"))
            }
            _ => {
                expected.push("direct");
                direct("bob", &format!("d{i}"))
            }
        };
        batch.push_str(&frame.to_string());
        batch.push('\n');
    }
    alice.send_bytes(batch.as_bytes()).await;
    let mut last_id = 0;
    for want in &expected {
        let got = alice.recv().await;
        if got["status"] == "m" {
            // alice's own broadcasts come back to her too; they are not answers.
            continue;
        }
        match *want {
            "e71" => assert_error(&got, "e", 71),
            "pong" => assert_eq!(got["info"]["req"], "pong", "{got}"),
            _ => {
                assert_eq!(got["status_code"], 50, "{got}");
                let id = got["info"]["msg_id"].as_u64().unwrap();
                assert!(
                    id > last_id,
                    "receipts in msg_id order: {id} after {last_id}"
                );
                last_id = id;
            }
        }
    }
    // bob gets his direct messages in the order they were sent.
    let mut texts = Vec::new();
    while texts.len() < 282 {
        let m = bob.recv().await;
        if m["status_code"] == 80 {
            texts.push(m["info"]["text"].as_str().unwrap().to_string());
        }
    }
    let sent: Vec<String> = (0..300)
        .filter(|i| ![7, 13, 29].contains(&(i % 50)))
        .map(|i| format!("d{i}"))
        .collect();
    assert_eq!(texts, sent);
    alice.assert_serving().await;
    s.stop().await;
}

#[tokio::test]
async fn requests_pipelined_behind_a_login_are_answered_at_once() {
    // Regression: answers queued behind the login's delivery start waited for the
    // next event (up to a heartbeat) instead of leaving after the catch-up.
    let s = TestServer::with_users().await;
    let mut alice = s.raw().await;
    let login = query(json!({"req": "login", "user": "alice", "password": "wonderland"}));
    let ping = json!({"status":"q","status_code":0,"info":{"req":"ping"},"id":"p"});
    alice
        .send_bytes(format!("{login}\n{ping}\n").as_bytes())
        .await;
    let first = alice.recv().await;
    assert_eq!(first["status_code"], 10, "{first}");
    let second = alice
        .recv_within(Duration::from_secs(2))
        .await
        .expect("the ping is answered right after the login");
    assert_eq!(second["id"], "p", "{second}");
    s.stop().await;
}
