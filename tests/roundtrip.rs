//! Property tests: every typed frame survives encode → line codec → envelope → parse,
//! for arbitrary valid values (names, texts with any Unicode, ids, nonces).

use bytes::BytesMut;
use moechat::protocol::envelope::{Envelope, Id};
use moechat::protocol::reply::ChatMessage;
use moechat::protocol::request::{Broadcast, Credential, Direct, History, Login, Peer, Register};
use moechat::protocol::{LineCodec, Request, RequestKind};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_.-]{1,32}"
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, newlines and quotes included: JSON escaping must keep it on one line.
    any::<String>().prop_filter("non-empty, within the text limit", |t| {
        !t.is_empty() && t.len() <= 8192
    })
}

fn nonce() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ -~]{1,64}")
}

fn id() -> impl Strategy<Value = Option<Id>> {
    proptest::option::of(prop_oneof![
        any::<i64>().prop_map(Id::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Id::UInt),
        "[^\\u{0}]{0,64}".prop_map(Id::Str),
    ])
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (name(), "[ -~]{1,64}", any::<bool>(), any::<bool>()).prop_map(
            |(user, secret, session, acks)| {
                let credential = if session {
                    Credential::Session(secret)
                } else {
                    Credential::Password(secret)
                };
                Request::Login(Login {
                    user,
                    credential,
                    acks,
                })
            }
        ),
        (name(), "[ -~]{1,100}")
            .prop_map(|(user, password)| Request::Register(Register { user, password })),
        Just(Request::Ping),
        Just(Request::Users),
        Just(Request::Logout),
        (
            proptest::option::of(name()),
            1u32..=500,
            proptest::option::of(1u64..)
        )
            .prop_map(|(with, limit, before)| Request::History(History {
                with: with.map_or(Peer::Broadcasts, Peer::User),
                limit,
                before,
            })),
        (name(), text(), nonce()).prop_map(|(to, text, nonce)| Request::Direct(Direct {
            to,
            text,
            nonce
        })),
        (text(), nonce()).prop_map(|(text, nonce)| Request::Broadcast(Broadcast { text, nonce })),
    ]
}

/// Runs `frame` through the line codec as a server would receive it.
fn one_line(frame: &[u8]) -> Vec<u8> {
    let mut codec = LineCodec::new(1 << 20);
    let mut buf = BytesMut::from(frame);
    let line = codec.decode(&mut buf).unwrap().expect("one complete line");
    assert!(buf.is_empty(), "exactly one line");
    line.to_vec()
}

proptest! {
    #[test]
    fn requests_round_trip(req in request(), id in id()) {
        let frame = req.encode(id.as_ref());
        prop_assert_eq!(frame.iter().filter(|&&b| b == b'\n').count(), 1);
        let env = Envelope::parse(&one_line(&frame)).unwrap();
        prop_assert_eq!(&env.id, &id);
        let kind = RequestKind::of(&env).unwrap();
        prop_assert_eq!(Request::parse(kind, &env.info, 8192).unwrap(), req);
    }

    #[test]
    fn pushes_round_trip(msg_id in 1u64.., from in name(), to in proptest::option::of(name()),
                         text in text(), ts in any::<i64>()) {
        let m = ChatMessage { msg_id, from, to, text, ts };
        let env = Envelope::parse(&one_line(&m.encode_push())).unwrap();
        prop_assert_eq!(env.code, m.code().number());
        let back: ChatMessage = serde_json::from_value(serde_json::Value::Object(env.info)).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = LineCodec::new(256);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(line)) = codec.decode(&mut buf) {
            if let Ok(env) = Envelope::parse(&line) {
                if let Some(kind) = RequestKind::of(&env) {
                    let _ = Request::parse(kind, &env.info, 8192);
                }
            }
        }
    }
}
