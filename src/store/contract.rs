//! The store contract as tests: what every [`Store`] implementation must do, written
//! once against the trait and run against each implementation by
//! [`store_contract!`] (today SQLite on a file and in memory; a new backend adds
//! one line). Tests that are about one backend's machinery (SQLite's transactions,
//! its schema migrations) stay beside that backend.
//!
//! The ordering contract, which the delivery cursor relies on: a store assigns
//! `msg_id`s in increasing order, and hands every committed message to its
//! [`CommitSink`] in `msg_id` order, after the message is durable and before the
//! append's future finishes. So a connection that registered before a commit sees
//! it routed, one that registers after reads it from the log, and a recipient's
//! cursor (the highest `msg_id` written to it) never skips a message committed
//! below it. A clustered store must keep the same order per recipient.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CommitSink, NewMessage, Routed, SessionRecord, Store, StoreError};
use crate::protocol::reply::ChatMessage;
use crate::protocol::request::Peer;

/// How a contract test gets a store of the implementation under test.
pub(crate) trait Maker: Sync {
    /// A store kept in `dir`: opening the same `dir` again reopens it. `sink` gets
    /// every committed message.
    fn open(&self, dir: &Path, sink: Arc<dyn CommitSink>) -> Arc<dyn Store>;
}

/// Generates one `#[tokio::test]` per contract test for the maker `$maker`.
macro_rules! store_contract {
    ($maker:expr) => {
        $crate::store::contract::store_contract!(
            $maker;
            users_are_unique_and_listed,
            append_assigns_increasing_ids_and_checks_the_recipient,
            a_repeated_nonce_returns_the_first_message,
            repeats_at_once_share_the_first_receipt,
            cursors_hide_delivered_messages_and_never_go_back,
            a_user_made_again_does_not_inherit_a_cursor,
            deleting_a_user_removes_its_direct_messages,
            broadcasts_have_their_own_history,
            commits_reach_the_sink_in_msg_id_order,
            what_was_appended_survives_a_reopen,
            ids_are_never_handed_out_twice,
            sessions_are_kept_and_forgotten,
            a_closed_store_refuses_calls_and_says_it_is_not_writable,
        );
    };
    ($maker:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::store::contract::$name(&$maker).await;
            }
        )*
    };
}
pub(crate) use store_contract;

/// A sink that records what it was handed, in order.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<u64>>,
}

impl CommitSink for Recorder {
    fn committed(&self, message: &Arc<ChatMessage>) -> Routed {
        self.seen
            .lock()
            .expect("the recorder is never poisoned")
            .push(message.msg_id);
        Routed::default()
    }
}

fn open(maker: &dyn Maker, dir: &tempfile::TempDir) -> Arc<dyn Store> {
    maker.open(dir.path(), Arc::new(Recorder::default()))
}

async fn with_users(maker: &dyn Maker, dir: &tempfile::TempDir, users: &[&str]) -> Arc<dyn Store> {
    let s = open(maker, dir);
    for u in users {
        s.create_user((*u).into(), "hash".into()).await.unwrap();
    }
    s
}

/// A direct message from `from` to `to`, with no nonce.
pub(crate) fn dm(from: &str, to: &str, text: &str) -> NewMessage {
    NewMessage {
        from: from.into(),
        to: Some(to.into()),
        text: text.into(),
        nonce: None,
        nonce_window: Duration::from_secs(60),
    }
}

fn broadcast(from: &str, text: &str) -> NewMessage {
    NewMessage {
        to: None,
        ..dm(from, "", text)
    }
}

/// `m` with `nonce`.
pub(crate) fn with_nonce(mut m: NewMessage, nonce: &str) -> NewMessage {
    m.nonce = Some(nonce.into());
    m
}

fn texts(messages: &[ChatMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

pub(crate) async fn users_are_unique_and_listed(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(maker, &dir);
    s.create_user("bob".into(), "h1".into()).await.unwrap();
    s.create_user("alice".into(), "h2".into()).await.unwrap();
    assert!(matches!(
        s.create_user("bob".into(), "h3".into()).await,
        Err(StoreError::UserExists(_))
    ));
    assert_eq!(s.list_users().await.unwrap(), vec!["alice", "bob"]);
    assert_eq!(
        s.password_hash("bob".into()).await.unwrap().as_deref(),
        Some("h1")
    );
    assert!(s.delete_user("bob".into()).await.unwrap());
    assert!(!s.delete_user("bob".into()).await.unwrap());
    assert_eq!(s.password_hash("bob".into()).await.unwrap(), None);
}

pub(crate) async fn append_assigns_increasing_ids_and_checks_the_recipient(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let m1 = s.append(dm("a", "b", "one")).await.unwrap();
    let m2 = s.append(dm("b", "a", "two")).await.unwrap();
    assert!(m2.message.msg_id > m1.message.msg_id);
    assert!(!m1.duplicate);
    assert!(matches!(
        s.append(dm("a", "nobody", "x")).await,
        Err(StoreError::NoSuchUser(_))
    ));
    let h = s
        .history("a".into(), Peer::User("b".into()), None, 50)
        .await
        .unwrap();
    assert_eq!(texts(&h), ["one", "two"]);
    let before = s
        .history(
            "a".into(),
            Peer::User("b".into()),
            Some(m2.message.msg_id),
            50,
        )
        .await
        .unwrap();
    assert_eq!(texts(&before), ["one"]);
    let newest = s
        .history("b".into(), Peer::User("a".into()), None, 1)
        .await
        .unwrap();
    assert_eq!(texts(&newest), ["two"], "a limit keeps the newest");
}

pub(crate) async fn a_repeated_nonce_returns_the_first_message(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let first = s
        .append(with_nonce(dm("a", "b", "one"), "n1"))
        .await
        .unwrap();
    let again = s
        .append(with_nonce(dm("a", "b", "changed"), "n1"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message, "the first message wins");
    // Another sender's nonce is its own; a fresh nonce is a new message.
    let other = s.append(with_nonce(dm("b", "a", "x"), "n1")).await.unwrap();
    assert!(!other.duplicate);
    let h = s
        .history("a".into(), Peer::User("b".into()), None, 50)
        .await
        .unwrap();
    assert_eq!(
        texts(&h),
        ["one", "x"],
        "nothing new was stored for the repeat"
    );
    // Outside the window the nonce is free again.
    let mut late = with_nonce(dm("a", "b", "late"), "n1");
    late.nonce_window = Duration::ZERO;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!s.append(late).await.unwrap().duplicate);
}

pub(crate) async fn repeats_at_once_share_the_first_receipt(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.append(with_nonce(dm("a", "b", &i.to_string()), "same"))
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut firsts = 0;
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        firsts += usize::from(!a.duplicate);
        ids.push(a.message.msg_id);
    }
    assert_eq!(firsts, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "every repeat names the same msg_id");
}

pub(crate) async fn cursors_hide_delivered_messages_and_never_go_back(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.append(dm("a", "b", &i.to_string()))
                .await
                .unwrap()
                .message
                .msg_id,
        );
    }
    assert_eq!(s.undelivered("b".into(), None, 100).await.unwrap().len(), 5);
    s.advance_cursor("b", ids[2]);
    let rest = s.undelivered("b".into(), None, 100).await.unwrap();
    assert_eq!(
        rest.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    s.advance_cursor("b", ids[0]);
    assert_eq!(s.undelivered("b".into(), None, 100).await.unwrap().len(), 2);
    // `after` reads from a given id instead of the cursor, in pages.
    let page = s.undelivered("b".into(), Some(ids[0]), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
        ids[1..3].to_vec()
    );
    // A cursor survives a reopen.
    s.close().await.unwrap();
    let s = open(maker, &dir);
    assert_eq!(s.undelivered("b".into(), None, 100).await.unwrap().len(), 2);
}

pub(crate) async fn a_user_made_again_does_not_inherit_a_cursor(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let id = s.append(dm("a", "b", "old")).await.unwrap().message.msg_id;
    s.advance_cursor("b", id + 100);
    assert!(s.delete_user("b".into()).await.unwrap());
    s.create_user("b".into(), "h".into()).await.unwrap();
    let fresh = s.append(dm("a", "b", "new")).await.unwrap().message;
    let got = s.undelivered("b".into(), None, 10).await.unwrap();
    assert_eq!(got, vec![(*fresh).clone()]);
}

pub(crate) async fn deleting_a_user_removes_its_direct_messages(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b", "c"]).await;
    s.append(dm("a", "b", "to b")).await.unwrap();
    s.append(dm("b", "a", "from b")).await.unwrap();
    s.append(dm("a", "c", "to c")).await.unwrap();
    assert!(s.delete_user("b".into()).await.unwrap());
    let with_b = s
        .history("a".into(), Peer::User("b".into()), None, 50)
        .await
        .unwrap();
    assert!(with_b.is_empty(), "{with_b:?}");
    assert!(s
        .undelivered("a".into(), None, 50)
        .await
        .unwrap()
        .is_empty());
    let with_c = s
        .history("a".into(), Peer::User("c".into()), None, 50)
        .await
        .unwrap();
    assert_eq!(texts(&with_c), ["to c"], "others' messages stay");
}

pub(crate) async fn broadcasts_have_their_own_history(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let sent = s.append(broadcast("a", "all")).await.unwrap();
    assert_eq!(sent.message.to, None);
    let h = s
        .history("b".into(), Peer::Broadcasts, None, 10)
        .await
        .unwrap();
    assert_eq!(texts(&h), ["all"]);
    assert_eq!(h[0].to, None);
    assert!(
        s.undelivered("b".into(), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "broadcasts are not stored for offline users"
    );
    assert!(s
        .history("a".into(), Peer::User("b".into()), None, 10)
        .await
        .unwrap()
        .is_empty());
}

pub(crate) async fn commits_reach_the_sink_in_msg_id_order(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let s = maker.open(dir.path(), recorder.clone());
    for u in ["a", "b"] {
        s.create_user(u.into(), "h".into()).await.unwrap();
    }
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let m = if i % 7 == 0 {
                    broadcast("a", "all")
                } else {
                    dm("a", "b", &i.to_string())
                };
                s.append(m).await.unwrap().message.msg_id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        let id = t.await.unwrap();
        // By the time an append finishes, the sink has seen its message.
        assert!(recorder.seen.lock().unwrap().contains(&id));
        ids.push(id);
    }
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the sink saw msg_ids out of order: {seen:?}"
    );
    ids.sort_unstable();
    assert_eq!(ids, seen);
}

pub(crate) async fn what_was_appended_survives_a_reopen(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b"]).await;
    let kept = s.append(dm("a", "b", "kept")).await.unwrap().message;
    s.append(broadcast("b", "all")).await.unwrap();
    s.close().await.unwrap();
    let s = open(maker, &dir);
    assert_eq!(s.list_users().await.unwrap(), ["a", "b"]);
    assert_eq!(
        s.undelivered("b".into(), None, 10).await.unwrap(),
        vec![(*kept).clone()]
    );
    assert_eq!(
        texts(
            &s.history("a".into(), Peer::Broadcasts, None, 10)
                .await
                .unwrap()
        ),
        ["all"]
    );
}

pub(crate) async fn ids_are_never_handed_out_twice(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a", "b", "c"]).await;
    s.append(dm("a", "b", "kept")).await.unwrap();
    let newest = s.append(dm("c", "b", "gone")).await.unwrap().message.msg_id;
    // Deleting c deletes the newest message; its id stays used, restart or not.
    assert!(s.delete_user("c".into()).await.unwrap());
    let after_delete = s.append(dm("a", "b", "next")).await.unwrap().message.msg_id;
    assert!(after_delete > newest);
    assert!(s.delete_user("a".into()).await.unwrap());
    s.close().await.unwrap();
    let s = open(maker, &dir);
    s.create_user("a".into(), "h".into()).await.unwrap();
    let reopened = s
        .append(dm("a", "b", "later"))
        .await
        .unwrap()
        .message
        .msg_id;
    assert!(reopened > after_delete);
}

pub(crate) async fn sessions_are_kept_and_forgotten(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = with_users(maker, &dir, &["a"]).await;
    let later = crate::store::now_ms() + 60_000;
    s.create_session("t1".into(), "a".into(), later)
        .await
        .unwrap();
    assert_eq!(
        s.session("t1".into()).await.unwrap(),
        Some(SessionRecord {
            user: "a".into(),
            expires_ms: later
        })
    );
    assert_eq!(s.session("t2".into()).await.unwrap(), None);
    s.delete_session("t1".into()).await.unwrap();
    assert_eq!(s.session("t1".into()).await.unwrap(), None);
    // Deleting a user forgets its sessions.
    s.create_session("t3".into(), "a".into(), later)
        .await
        .unwrap();
    assert!(s.delete_user("a".into()).await.unwrap());
    assert_eq!(s.session("t3".into()).await.unwrap(), None);
}

pub(crate) async fn a_closed_store_refuses_calls_and_says_it_is_not_writable(maker: &dyn Maker) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(maker, &dir);
    assert!(s.writable());
    s.close().await.unwrap();
    assert!(matches!(s.list_users().await, Err(StoreError::Closed)));
    s.close().await.unwrap();
    // The store's own thread notices the close a moment after it answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.writable() {
        assert!(std::time::Instant::now() < deadline, "still writable");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
