//! `e`/60 over a real socket: a store that fails mid-run makes the request fail
//! with no effect, the connection stays, and service resumes when the store does.
//! Also shows the store seam: the server runs on any `Store` implementation.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::web::http_get;
use common::*;
use moechat::config::HttpListen;
use moechat::protocol::request::Peer;
use moechat::protocol::ChatMessage;
use moechat::store::{
    CommitSink, Committing, NewMessage, SessionRecord, SqliteStore, Store, StoreError, StoreFuture,
};
use moechat::{Server, ServerConfig};
use serde_json::json;

/// Delegates to SQLite, except that appends fail while `fail` is set.
struct Flaky {
    inner: SqliteStore,
    fail: Arc<AtomicBool>,
}

impl Store for Flaky {
    fn create_user(&self, name: String, hash: String) -> StoreFuture<'_, ()> {
        self.inner.create_user(name, hash)
    }
    fn password_hash(&self, name: String) -> StoreFuture<'_, Option<String>> {
        self.inner.password_hash(name)
    }
    fn delete_user(&self, name: String) -> StoreFuture<'_, bool> {
        self.inner.delete_user(name)
    }
    fn list_users(&self) -> StoreFuture<'_, Vec<String>> {
        self.inner.list_users()
    }
    fn submit(&self, message: NewMessage) -> StoreFuture<'_, Committing> {
        if self.fail.load(Ordering::SeqCst) {
            let failed: Committing =
                Box::pin(async { Err(StoreError::Transaction("disk on fire".into())) });
            return Box::pin(async { Ok(failed) });
        }
        self.inner.submit(message)
    }
    fn undelivered(
        &self,
        user: String,
        after: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<ChatMessage>> {
        self.inner.undelivered(user, after, limit)
    }
    fn history(
        &self,
        user: String,
        peer: Peer,
        before: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<ChatMessage>> {
        self.inner.history(user, peer, before, limit)
    }
    fn advance_cursor(&self, user: &str, msg_id: u64) {
        self.inner.advance_cursor(user, msg_id)
    }
    fn create_session(
        &self,
        token_hash: String,
        user: String,
        expires_ms: i64,
    ) -> StoreFuture<'_, ()> {
        self.inner.create_session(token_hash, user, expires_ms)
    }
    fn session(&self, token_hash: String) -> StoreFuture<'_, Option<SessionRecord>> {
        self.inner.session(token_hash)
    }
    fn delete_session(&self, token_hash: String) -> StoreFuture<'_, ()> {
        self.inner.delete_session(token_hash)
    }
    fn writable(&self) -> bool {
        !self.fail.load(Ordering::SeqCst) && self.inner.writable()
    }
    fn close(&self) -> StoreFuture<'_, ()> {
        self.inner.close()
    }
}

#[tokio::test]
async fn a_failing_store_is_60_and_the_connection_stays() {
    let fail = Arc::new(AtomicBool::new(false));
    let flag = fail.clone();
    let server = Server::bind_with_store(
        ServerConfig {
            http: Some(HttpListen {
                host: "127.0.0.1".into(),
                port: 0,
            }),
            ..ServerConfig::ephemeral()
        },
        move |sink: Arc<dyn CommitSink>| {
            let inner = SqliteStore::open(":memory:", sink)?;
            Ok(Arc::new(Flaky { inner, fail: flag }) as Arc<dyn Store>)
        },
    )
    .await
    .unwrap();
    let handle = server.handle();
    let addr = server.local_addr();
    let http = server.http_addr().unwrap();
    let join = tokio::spawn(server.run());
    handle.add_user("alice", "wonderland").await.unwrap();
    handle.add_user("bob", "builder").await.unwrap();

    let mut alice = Raw::connect(addr).await;
    assert_eq!(alice.login("alice", "wonderland").await["status_code"], 10);
    fail.store(true, Ordering::SeqCst);
    let mut frame = direct("bob", "lost?");
    frame["id"] = json!(7);
    let r = alice.request(frame).await;
    assert_error(&r, "e", 60);
    assert_eq!(r["id"], 7);
    assert!(
        !r["info"]["error"]
            .as_str()
            .unwrap()
            .contains("disk on fire"),
        "internals stay in the log"
    );
    assert_error(&alice.request(broadcast("also lost?")).await, "e", 60);
    alice.assert_serving().await;
    let health = http_get(http, "/healthz").await;
    assert_eq!(health.status, 503, "{health:?}");

    fail.store(false, Ordering::SeqCst);
    assert_eq!(http_get(http, "/healthz").await.status, 200);
    assert_eq!(
        alice.request(direct("bob", "kept")).await["status_code"],
        51
    );
    // The failed requests had no effect: bob gets only the kept message.
    let mut bob = Raw::connect(addr).await;
    assert_eq!(bob.login("bob", "builder").await["status_code"], 10);
    assert_eq!(bob.recv().await["info"]["text"], "kept");
    let h = bob
        .request(query(json!({"req": "history", "with": "alice"})))
        .await;
    assert_eq!(h["info"]["messages"].as_array().unwrap().len(), 1);
    bob.assert_serving().await;
    handle.shutdown();
    join.await.unwrap().unwrap();
}
