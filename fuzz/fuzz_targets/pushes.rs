//! Fuzz target: arbitrary bytes as a push from the server, through the client's
//! reading of the canonical push layout (`PushFrame::parse`), which the receive path
//! of every client runs on every frame. It must never panic, and whatever it reads,
//! the envelope parse (serde_json, an independent reading) must read the same way:
//! a fast path may decline a frame, never misread one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moechat::protocol::reply::PushFrame;
use moechat::protocol::{ChatMessage, Envelope, Status};

fuzz_target!(|line: &[u8]| {
    let parsed = ChatMessage::parse_push(line);
    let Some(frame) = PushFrame::parse(line) else {
        return;
    };
    let message = frame.to_message();
    let (from, to, text) = frame.utf8_strings();
    assert_eq!(from, message.from.as_bytes());
    assert_eq!(to, message.to.as_deref().map(str::as_bytes));
    assert_eq!(text, message.text.as_bytes());
    assert_eq!(frame.is_direct(), message.to.is_some());
    assert_eq!(parsed.as_ref(), Some(&message));
    let envelope = Envelope::parse(line).expect("a frame read as a push is a valid envelope");
    assert_eq!(envelope.status, Status::Message);
    assert!(envelope.id.is_none());
    let info: ChatMessage = serde_json::from_value(serde_json::Value::Object(envelope.info))
        .expect("the info of a frame read as a push is a message");
    assert_eq!(info, message);
});
