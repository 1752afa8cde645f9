//! The login path under load and under attack, over real sockets: the caps count
//! failures only (per connection, per address, per account), and password hashing
//! runs on a bounded pool that answers `r`/24 when it is full.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use moechat::ServerConfig;
use serde_json::json;

/// A raw connection from another loopback address, as from another machine.
async fn from(addr: &str, server: SocketAddr) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(addr.parse().unwrap()).unwrap();
    Raw::from_stream(socket.connect(server).await.unwrap())
}

fn reason(frame: &serde_json::Value) -> &str {
    frame["info"]["error"].as_str().unwrap_or_default()
}

/// `n` connections, each sending the frame `frame(i)` at once.
async fn all_at_once(
    s: &TestServer,
    n: usize,
    frame: impl Fn(usize) -> serde_json::Value,
) -> Vec<Raw> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(s.raw().await);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.send_json(frame(i)).await;
    }
    conns
}

/// The answer on `c` once it is not `r`/24 (busy), sending `frame` again after each
/// busy one, which must leave the connection serving; and how many were busy.
async fn past_busy(
    c: &mut Raw,
    first: serde_json::Value,
    frame: &serde_json::Value,
) -> (serde_json::Value, usize) {
    let mut r = first;
    let mut busy = 0;
    while r["status_code"] == 24 {
        busy += 1;
        assert_eq!(r["status"], "r", "{r}");
        assert!(reason(&r).contains("try again"), "{r}");
        c.assert_serving().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = c.request(frame.clone()).await;
    }
    (r, busy)
}

/// The reconnect storm of the issue: users behind one address all log back in.
/// Before, every login and resume counted, and the fourth here was refused `r`/22.
#[tokio::test]
async fn successful_logins_and_resumes_never_count_against_the_address() {
    let config = ServerConfig {
        login_rate: 3,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        for user in ["alice", "bob", "carol"] {
            let mut c = s.raw().await;
            let r = c.login(user, password_of(user)).await;
            assert_eq!(r["status_code"], 10, "{r}");
            tokens.push((user, r["info"]["session"].as_str().unwrap().to_string()));
        }
    }
    for (user, token) in &tokens[tokens.len() - 3..] {
        let mut c = s.raw().await;
        let r = c
            .request(query(
                json!({"req": "login", "user": user, "session": token}),
            ))
            .await;
        assert_eq!(r["status_code"], 10, "a resume never counts: {r}");
    }
    s.stop().await;
}

#[tokio::test]
async fn failures_from_one_address_are_capped_across_connections() {
    let config = ServerConfig {
        login_rate: 3,
        account_failures: 0,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut logged_in = s.logged_in("alice").await;
    // Three failures spread over connections and kinds: a wrong password, an unknown
    // user, a bad token.
    let mut a = s.raw().await;
    assert_error(&a.login("bob", "wrong").await, "r", 20);
    assert_error(&a.login("nobody", "x").await, "r", 20);
    let mut b = s.raw().await;
    let bad_token = query(json!({"req": "login", "user": "bob", "session": "x".repeat(24)}));
    assert_error(&b.request(bad_token).await, "r", 20);
    // The address is capped now, even for the right password.
    let mut c = s.raw().await;
    let r = c.login("carol", "singer").await;
    assert_error(&r, "r", 22);
    assert!(reason(&r).contains("this address"), "{r}");
    c.expect_closed().await;
    // Logged-in connections are not touched, and another address has its own count.
    logged_in.assert_serving().await;
    let mut other = from("127.0.0.2:0", s.addr).await;
    assert_eq!(other.login("carol", "singer").await["status_code"], 10);
    s.stop().await;
}

/// A guesser spreading over addresses is stopped by the account's cap; other
/// accounts and the account's live sessions are not.
#[tokio::test]
async fn failed_passwords_for_one_account_are_capped_across_addresses() {
    let config = ServerConfig {
        login_rate: 0,
        account_failures: 3,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let mut alice = s.raw().await;
    let token = alice.login("alice", "wonderland").await["info"]["session"]
        .as_str()
        .unwrap()
        .to_string();
    for addr in ["127.0.0.2:0", "127.0.0.3:0", "127.0.0.4:0"] {
        let mut g = from(addr, s.addr).await;
        assert_error(&g.login("alice", "guess").await, "r", 20);
    }
    let mut g = from("127.0.0.5:0", s.addr).await;
    let r = g.login("alice", "wonderland").await;
    assert_error(&r, "r", 22);
    assert!(reason(&r).contains("this account"), "{r}");
    g.expect_closed().await;
    let mut bob = from("127.0.0.5:0", s.addr).await;
    assert_eq!(bob.login("bob", "builder").await["status_code"], 10);
    let mut resume = s.raw().await;
    let r = resume
        .request(query(
            json!({"req": "login", "user": "alice", "session": token}),
        ))
        .await;
    assert_eq!(r["status_code"], 10, "a session resumes: {r}");
    // The resume is the newer login: it takes over, as any login does.
    assert_error(&alice.recv().await, "e", 64);
    s.stop().await;
}

#[tokio::test]
async fn the_fifth_failure_on_a_connection_still_closes_it() {
    let s = TestServer::with_users().await;
    let mut c = s.raw().await;
    for _ in 0..4 {
        assert_error(&c.login("alice", "wrong").await, "r", 20);
    }
    assert_error(&c.login("alice", "wrong").await, "r", 22);
    c.expect_closed().await;
    s.stop().await;
}

/// One hashing slot and no room to wait: logins that arrive while a hash runs are
/// answered `r`/24 at once, on a connection that stays open, with nothing counted
/// (a single failure allowed per connection, and none is spent).
#[tokio::test]
async fn a_full_hashing_pool_answers_busy_and_counts_nothing() {
    let config = ServerConfig {
        hash_workers: 1,
        hash_queue: 0,
        max_failed_logins: 1,
        login_rate: 1,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let login = query(json!({"req": "login", "user": "alice", "password": "wonderland"}));
    let mut conns = all_at_once(&s, 16, |_| login.clone()).await;
    let mut busy = 0;
    for c in &mut conns {
        let first = c.recv().await;
        let (r, b) = past_busy(c, first, &login).await;
        busy += b;
        // Each login takes over the one before: alice ends up on the last one.
        assert_eq!(r["status_code"], 10, "{r}");
    }
    assert!(busy > 0, "sixteen logins at once fill one slot");
    s.stop().await;
}

/// Registration hashes on the same pool: when it is full the answer is `r`/24 too
/// (our reading, docs/protocol.md), nothing is created, and a retry gets the name.
#[tokio::test]
async fn a_full_hashing_pool_answers_busy_to_register_and_creates_nothing() {
    let config = ServerConfig {
        hash_workers: 1,
        hash_queue: 0,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::start(config).await;
    let register =
        |i: usize| query(json!({"req": "register", "user": format!("user{i}"), "password": "pw"}));
    let mut conns = all_at_once(&s, 16, register).await;
    let mut busy = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        let first = c.recv().await;
        let (r, b) = past_busy(c, first, &register(i)).await;
        busy += b;
        assert_eq!(
            r["status_code"], 30,
            "created on the retry, not before: {r}"
        );
    }
    assert!(busy > 0, "sixteen registrations at once fill one slot");
    s.stop().await;
}

/// Guesses sent at once over many connections: attempts in flight count against the
/// account's room, so no more than the cap's worth are ever checked; the rest are told
/// `r`/24 until the cap is reached, then `r`/22. Before, all twenty passed the cap's
/// check while the first were still being hashed, and each got a verdict (`r`/20).
#[tokio::test]
async fn guesses_sent_at_once_get_no_more_verdicts_than_the_account_cap() {
    let config = ServerConfig {
        login_rate: 0,
        account_failures: 3,
        hash_workers: 1,
        ..ServerConfig::ephemeral()
    };
    let s = TestServer::with_users_config(config).await;
    let guess = query(json!({"req": "login", "user": "alice", "password": "guess"}));
    let mut conns = all_at_once(&s, 20, |_| guess.clone()).await;
    let mut verdicts = 0;
    for c in &mut conns {
        // In flight beyond the cap: busy, try again (nothing counted, nothing told).
        let first = c.recv().await;
        let (r, _) = past_busy(c, first, &guess).await;
        match r["status_code"].as_u64() {
            Some(20) => verdicts += 1,
            Some(22) => assert!(reason(&r).contains("this account"), "{r}"),
            _ => panic!("{r}"),
        }
    }
    assert_eq!(verdicts, 3, "only the cap's worth of guesses got a verdict");
    s.stop().await;
}
