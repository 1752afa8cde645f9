//! Fuzz target: arbitrary bytes through the line codec, the envelope parser and the
//! request parser, exactly as the server runs them on what a client sends. Any panic
//! is a bug: the server must answer every input with a frame, never crash. The
//! shortcut for common frames (`protocol::fast`) must read every line it accepts
//! exactly as the full parse does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moechat::protocol::fast::{self, Fast};
use moechat::protocol::{Envelope, LineCodec, Request, RequestKind};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // A small limit so the too-long path is exercised too.
    let mut codec = LineCodec::new(512);
    // Feed in two parts, as a socket may deliver them.
    let cut = data.len() / 2;
    let mut buf = BytesMut::from(&data[..cut]);
    for chunk in [&data[cut..], &[][..]] {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    agrees(&line);
                    if let Ok(env) = Envelope::parse(&line) {
                        if let Some(kind) = RequestKind::of(&env) {
                            let _ = Request::parse(kind, &env.info, 8192);
                        }
                        let _ = env.id.as_ref().map(|id| id.as_u64());
                    }
                }
                Ok(None) => break,
                Err(_) => return, // the server closes the connection here (e/61)
            }
        }
        buf.extend_from_slice(chunk);
    }
    let _ = codec.decode_eof(&mut buf);
});

/// The shortcut, where it reads a line, reads what the full parse reads.
fn agrees(line: &[u8]) {
    let Some(short) = fast::read(line) else {
        return;
    };
    let env = Envelope::parse(line).expect("a line the shortcut reads is a valid frame");
    match short {
        Fast::Ack(n) => {
            assert_eq!(env.info.get("ack").and_then(|v| v.as_u64()), Some(n));
            assert_eq!(env.info.len(), 1);
        }
        Fast::Direct { to, text, nonce, id } => {
            assert_eq!(env.id, id);
            assert_eq!(
                Request::parse(RequestKind::of(&env).expect("a message"), &env.info, 8192),
                Request::direct(Some(to), Some(text), Ok(nonce), 8192)
            );
        }
    }
}
